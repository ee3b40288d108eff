# SPDX-License-Identifier: MIT
"""The Gateway interface as pureboot-bridge calls it: enrolment with single-use tokens, who may report
what, sequences applied once, the state machine guarded, replies that follow org.pureboot.Node.varlink."""

import json
import subprocess
import threading
import time

import pytest

from harness import DEST, ROOT, TEST_USER, Controller, private_system_bus, run, wait_for



def csr(tmp_path, name):
    key = tmp_path / f"{name}.key"
    subprocess.run(["certtool", "--generate-privkey", "--key-type=ecdsa", "--outfile", key], check=True,
                   capture_output=True)
    (tmp_path / f"{name}.cfg").write_text('cn = "whatever"\n')
    subprocess.run(["certtool", "--generate-request", "--load-privkey", key, "--template", tmp_path / f"{name}.cfg",
                    "--outfile", tmp_path / f"{name}.csr"], check=True, capture_output=True)
    return (tmp_path / f"{name}.csr").read_text()


@pytest.fixture
def started(controller, api):
    api.node("web-01", "aa:bb:cc:00:00:01")
    api.node("web-02", "aa:bb:cc:00:00:02")
    path = api.session("gw")
    api.ok(path, "CloneSession", "Start", "a{sv}", "0")
    sid = path.rsplit("/", 1)[1]
    return {"path": path, "sid": sid, "source": f"clone-{sid}-source", "target": f"clone-{sid}-target-1"}


def token(api, path, role):
    return api.ok(path, "CloneSession", "IssueBootToken", "sa{sv}", role, "0")[0]


def test_only_the_bridge_user_may_call(controller, busctl):
    for user in (None, TEST_USER):
        r = busctl("call", DEST, ROOT, f"{DEST}.Gateway", "Call", "ssss", "GetSession", "", "", "{}", user=user)
        assert r.returncode != 0 and "Access denied" in r.stderr, r.stderr


def test_the_controller_checks_the_caller_itself(tmp_path):
    """With a hole in the bus policy, the controller still refuses everyone but the bridge's user."""
    allow = f'<allow send_destination="{DEST}" send_interface="{DEST}.Gateway"/>'
    # After ours, so these win over our root deny and our default deny.
    hole = f'<policy context="default">{allow}</policy><policy user="root">{allow}</policy>'

    with private_system_bus(extra_policy=hole) as bus:
        c = Controller(bus, tmp_path).start()
        try:
            for user in (None, TEST_USER):
                r = run(["busctl", "--system", "call", DEST, ROOT, f"{DEST}.Gateway", "Call", "ssss", "GetSession",
                         "", "", "{}"], bus, user=user)
                assert r.returncode != 0
                assert "Only the pureboot-bridge user may call the Gateway interface" in r.stderr, r.stderr
        finally:
            assert c.stop() == 0


def test_enrolment(started, api, gateway, tmp_path, controller):
    t = token(api, started["path"], "source")
    request = csr(tmp_path, "source")

    error, reply = gateway("Enrol", params={"token": t, "csr": "garbage"})
    assert error == "org.pureboot.Node.BadCertificateRequest"
    # A refused request leaves the token usable.
    error, reply = gateway("Enrol", params={"token": t, "csr": request}, address="127.0.0.2")
    assert error == "", reply
    assert reply["session"] == started["sid"] and reply["role"] == "source"
    assert "BEGIN CERTIFICATE" in reply["ca"]
    (tmp_path / "cert.pem").write_text(reply["certificate"])
    info = subprocess.run(["certtool", "--certificate-info", "--infile", tmp_path / "cert.pem"], capture_output=True,
                          text=True, check=True).stdout
    assert f"CN={started['source']}" in info and "IPAddress: 127.0.0.2" in info

    error, reply = gateway("Enrol", params={"token": t, "csr": request})
    assert error == "org.pureboot.Node.InvalidToken" and "used already" in reply["reason"]
    error, reply = gateway("Enrol", params={"token": "0" * 48, "csr": request})
    assert error == "org.pureboot.Node.InvalidToken" and "unknown" in reply["reason"]
    with controller.db() as db:
        assert db.execute("SELECT COUNT(*) FROM enrolment_tokens WHERE used_at > 0").fetchone()[0] == 1
        assert db.execute("SELECT role FROM certificates").fetchall() == [("source",)]


def test_expired_token(system_bus, tmp_path, api, gateway):
    c = Controller(system_bus, tmp_path)
    c.config.write_text("[Enrolment]\nTokenLifetimeSec=1\n")
    c.start()
    try:
        api.node("web-01", "aa:bb:cc:00:00:01")
        api.node("web-02", "aa:bb:cc:00:00:02")
        path = api.session("gw")
        api.ok(path, "CloneSession", "Start", "a{sv}", "0")
        t = token(api, path, "target")
        time.sleep(2.1)
        error, reply = gateway("Enrol", params={"token": t, "csr": csr(tmp_path, "t")})
        assert error == "org.pureboot.Node.InvalidToken" and "expired" in reply["reason"]
    finally:
        assert c.stop() == 0


def test_identity_decides_what_may_be_reported(started, gateway):
    sid, source, target = started["sid"], started["source"], started["target"]
    ready = {"session": sid, "sequence": 1, "address": "127.0.0.1", "port": 9999, "sizeBytes": 1 << 20,
             "device": "/dev/sda"}
    assert gateway("ReportSourceReady", target, ready)[0] == "org.pureboot.Node.PermissionDenied"
    assert gateway("ReportSourceReady", "", ready)[0] == "org.pureboot.Node.PermissionDenied"
    other = "clone-" + "f" * 32 + "-source"
    assert gateway("ReportSourceReady", other, ready)[0] == "org.pureboot.Node.PermissionDenied"
    assert gateway("ReportSourceReady", "not-our-cn", ready)[0] == "org.pureboot.Node.PermissionDenied"
    progress = {"session": sid, "role": "target", "sequence": 1, "bytesTransferred": 1, "rateBps": 1,
                "phase": "transferring"}
    assert gateway("ReportProgress", source, progress)[0] == "org.pureboot.Node.PermissionDenied"
    assert gateway("GetSession", "node-" + "e" * 32, {"session": sid})[0] == "org.pureboot.Node.PermissionDenied"
    # What a machine is: only for its own node, or the node of its own role in its own session.
    machine = {"firmware": "bios", "cpuCores": 1, "cpuThreads": 1, "disks": [], "interfaces": []}
    for peer, params in ((other, {"session": sid, "sequence": 1, "hardware": machine}),
                         ("", {"session": sid, "sequence": 1, "hardware": machine}),
                         ("node-" + "e" * 32, {"sequence": 1, "hardware": machine})):
        assert gateway("ReportHardware", peer, params)[0] == "org.pureboot.Node.PermissionDenied", peer


def test_parameters_follow_the_contract(started, gateway):
    sid, source = started["sid"], started["source"]
    error, reply = gateway("ReportSourceReady", source, {"session": sid, "sequence": "1", "address": "127.0.0.1",
                                                         "port": 9999, "sizeBytes": 1, "device": "/dev/sda"})
    assert error == "org.varlink.service.InvalidParameter" and reply == {"parameter": "sequence"}
    error, reply = gateway("ReportSourceReady", source, {"session": sid, "sequence": 1, "address": "127.0.0.1",
                                                         "port": 9999, "size": 1, "device": "/dev/sda"})
    assert error == "org.varlink.service.InvalidParameter" and reply["parameter"] in ("size", "sizeBytes")
    error, reply = gateway("ReportSourceReady", source, {"session": sid, "sequence": 1, "address": "not-an-ip",
                                                         "port": 9999, "sizeBytes": 1, "device": "/dev/sda"})
    assert error == "org.varlink.service.InvalidParameter" and reply == {"parameter": "address"}
    assert gateway("Frobnicate", source, {})[0] == "org.varlink.service.MethodNotFound"
    error, reply = gateway("GetStaging", source, {"session": sid})
    assert error == "org.pureboot.Node.InvalidState" and reply["reason"] == "a direct session"
    # No plan before both disks are known (test_resize.py makes them).
    error, reply = gateway("GetResizePlan", source, {"session": sid})
    assert error == "" and reply.get("plan") is None, (error, reply)
    # Node calls need the certificate of a node that exists.
    error, reply = gateway("ReportDisks", "node-" + "a" * 32, {"sequence": 1, "disks": []})
    assert error == "org.pureboot.Node.PermissionDenied" and reply == {"reason": "this node has been deleted"}
    error, reply = gateway("GetNode", source, {})
    assert error == "org.pureboot.Node.PermissionDenied" and "node certificate" in reply["reason"]


def test_a_clone_reported_end_to_end(started, gateway, api, controller, system_bus):
    sid, source, target, path = started["sid"], started["source"], started["target"], started["path"]
    error, reply = gateway("GetSession", target, {"session": sid})
    assert error == "" and reply["session"]["status"] == "waiting" and reply["session"]["role"] == "target"

    # Progress before the source is ready breaks the state machine.
    progress = {"session": sid, "role": "target", "sequence": 1, "bytesTransferred": 0, "rateBps": 0,
                "phase": "transferring"}
    error, reply = gateway("ReportProgress", target, progress)
    assert error == "org.pureboot.Node.InvalidState" and reply["status"] == "waiting"

    ready = {"session": sid, "sequence": 1, "address": "127.0.0.1", "port": 9999, "sizeBytes": 1000,
             "device": "/dev/sda"}
    assert gateway("ReportSourceReady", source, ready) == ("", {})
    assert api.prop(path, "CloneSession", "Status") == "source_ready"
    assert api.prop(path, "CloneSession", "SourcePort") == 9999
    # A replay is answered with success and changes nothing.
    ready_again = dict(ready, port=1234)
    assert gateway("ReportSourceReady", source, ready_again) == ("", {})
    assert api.prop(path, "CloneSession", "SourcePort") == 9999

    for seq in range(1, 6):
        assert gateway("ReportProgress", target, dict(progress, sequence=seq, bytesTransferred=seq * 100,
                                                      rateBps=500)) == ("", {})
    assert api.prop(path, "CloneSession", "Status") == "cloning"
    wait_for(lambda: api.prop(path, "CloneSession", "BytesTransferred") == 500, 2, "progress on the bus")
    # An old sequence after newer ones is a replay.
    assert gateway("ReportProgress", target, dict(progress, sequence=2, bytesTransferred=1)) == ("", {})
    assert api.prop(path, "CloneSession", "BytesTransferred") == 500
    # Within a second the progress is in the database.
    wait_for(lambda: controller.db().execute("SELECT bytes_transferred FROM clone_targets").fetchone()[0] == 500,
             3, "progress to be written")
    with controller.db() as db:
        assert dict(db.execute("SELECT role, last_sequence FROM report_sequences").fetchall()) == \
            {"source": 1, "target-1": 5}

    # A restart keeps the sequences: the replay stays a replay.
    controller.restart()
    assert gateway("ReportProgress", target, dict(progress, sequence=5, bytesTransferred=7)) == ("", {})
    assert api.prop(path, "CloneSession", "BytesTransferred") == 500

    assert gateway("ReportComplete", source, {"session": sid, "role": "source", "sequence": 2,
                                              "digest": "xxh3:0123456789abcdef"}) == ("", {})
    assert api.prop(path, "CloneSession", "Status") == "cloning"
    assert gateway("ReportComplete", target, {"session": sid, "role": "target", "sequence": 6,
                                              "digest": "xxh3:0123456789abcdef"}) == ("", {})
    assert api.prop(path, "CloneSession", "Status") == "completed"
    assert api.prop(path, "CloneSession", "Progress") == 1.0
    error, reply = gateway("ReportFailed", target, {"session": sid, "role": "target", "sequence": 7,
                                                    "error": "late", "code": "EIO"})
    assert error == "org.pureboot.Node.InvalidState" and reply["status"] == "completed"
    with controller.db() as db:
        actions = [r[0] for r in db.execute("SELECT action FROM events WHERE action LIKE 'Report%'")]
    assert actions.count("ReportComplete") == 2 and "ReportSourceReady" in actions


def test_digests_that_differ_fail_the_session(started, gateway, api):
    sid, source, target, path = started["sid"], started["source"], started["target"], started["path"]
    gateway("ReportSourceReady", source, {"session": sid, "sequence": 1, "address": "127.0.0.1", "port": 1,
                                          "sizeBytes": 10, "device": "/dev/sda"})
    gateway("ReportComplete", source, {"session": sid, "role": "source", "sequence": 2, "digest": "xxh3:aaaaaaaaaa"})
    gateway("ReportComplete", target, {"session": sid, "role": "target", "sequence": 1, "digest": "xxh3:bbbbbbbbbb"})
    assert api.prop(path, "CloneSession", "Status") == "failed"
    assert "differs" in api.prop(path, "CloneSession", "Error")


def test_progress_signals_are_rate_limited(started, gateway, api, system_bus):
    """Many reports a second, at most four PropertiesChanged a second, and the last value always sent."""
    sid, source, target, path = started["sid"], started["source"], started["target"], started["path"]
    gateway("ReportSourceReady", source, {"session": sid, "sequence": 1, "address": "127.0.0.1", "port": 1,
                                          "sizeBytes": 10 ** 9, "device": "/dev/sda"})
    monitor = subprocess.Popen(["busctl", "--system", "--json=short", "monitor", DEST], env=system_bus.env,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
    changes = []

    def read():
        # busctl monitor lags behind a burst of calls: collect until it has seen everything.
        for line in monitor.stdout:
            m = json.loads(line) if line.startswith("{") else {}
            if m.get("member") == "PropertiesChanged" and m.get("path") == path:
                props = m["payload"]["data"][1]
                if "BytesTransferred" in props:
                    changes.append((time.monotonic(), props["BytesTransferred"]["data"]))
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(0.5)
    begin = time.monotonic()
    seq = 0
    while time.monotonic() - begin < 2.0:
        seq += 1
        gateway("ReportProgress", target, {"session": sid, "role": "target", "sequence": seq,
                                           "bytesTransferred": seq * 1000, "rateBps": 1000, "phase": "transferring"})
    elapsed = time.monotonic() - begin
    try:
        wait_for(lambda: changes and changes[-1][1] == seq * 1000, 20, "the last progress value on the bus")
    finally:
        monitor.terminate()
        monitor.wait()
    assert seq > 20, "too few reports to say anything"
    # The first report comes with the status change (two signals), then at most one per 250 ms.
    assert len(changes) <= 4 * elapsed + 3, f"{len(changes)} signals for {seq} reports in {elapsed:.1f} s"
    assert len(changes) >= 4, f"only {len(changes)} signals in {elapsed:.1f} s"
