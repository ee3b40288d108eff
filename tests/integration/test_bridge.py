# SPDX-License-Identifier: MIT
"""pureboot-bridge end to end: the real controller behind it, curl in front of it as a node would be,
with keys and CSRs made by certtool."""

import json
import socket
import subprocess
import time

import pytest

from harness import REPO, ROOT, Bridge, free_port, make_key_and_csr, wait_for

NODE = "org.pureboot.Node."


def curl(bridge, method, body=None, cert=None, headers=(), raw=None, extra=()):
    """POSTs to /call/<method>; returns (HTTP status, parsed JSON body)."""
    argv = ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "--cacert", bridge.ca, "-X", "POST",
            f"{bridge.url}/call/{method}", *extra]
    if cert:
        argv += ["--cert", cert[0], "--key", cert[1]]
    for h in headers:
        argv += ["-H", h]
    argv += ["--data-binary", "@-"]
    data = raw if raw is not None else json.dumps(body or {})
    r = subprocess.run([str(a) for a in argv], input=data, capture_output=True, text=True, timeout=30)
    out, _, status = r.stdout.rpartition("\n")
    return int(status or 0), (json.loads(out) if out.strip() else None)


@pytest.fixture
def session(api):
    api.node("web-01", "aa:bb:cc:00:00:01")
    api.node("web-02", "aa:bb:cc:00:00:02")
    path = api.session("bridged")
    api.ok(path, "CloneSession", "Start", "a{sv}", "0")
    return path.rsplit("/", 1)[1]


def enrol(bridge, api, sid, role, tmp_path, name=None):
    """A node's enrolment: its own key and CSR, a token, the certificate back. Returns (cert, key) paths."""
    name = name or role
    key, csr = make_key_and_csr(tmp_path, name)
    token = api.ok(f"{ROOT}/clone/{sid}", "CloneSession", "IssueBootToken", "sa{sv}", role, "0")[0]
    status, reply = curl(bridge, NODE + "Enrol", {"token": token, "csr": csr.read_text()})
    assert status == 200, reply
    cert = tmp_path / f"{name}.crt"
    cert.write_text(reply["certificate"])
    return cert, key


def test_varlink_service_interface(bridge):
    status, info = curl(bridge, "org.varlink.service.GetInfo")
    assert status == 200 and info["interfaces"] == ["org.varlink.service", "org.pureboot.Node"]
    status, d = curl(bridge, "org.varlink.service.GetInterfaceDescription", {"interface": "org.pureboot.Node"})
    assert status == 200
    assert d["description"] == (REPO / "src/shared/org.pureboot.Node.varlink").read_text()
    status, e = curl(bridge, "org.varlink.service.GetInterfaceDescription", {"interface": "org.example.None"})
    assert status == 404 and e["error"] == "org.varlink.service.InterfaceNotFound"


def test_enrolment_and_calls_with_the_certificate(bridge, api, session, tmp_path):
    cert = enrol(bridge, api, session, "target", tmp_path)
    status, reply = curl(bridge, NODE + "GetSession", {"session": session}, cert=cert)
    assert status == 200 and reply["session"]["role"] == "target" and reply["session"]["status"] == "waiting"

    key, csr = make_key_and_csr(tmp_path, "again")
    status, reply = curl(bridge, NODE + "Enrol", {"token": "f" * 48, "csr": csr.read_text()})
    assert status == 403 and reply["error"] == NODE + "InvalidToken"


def test_calls_without_a_certificate_are_refused(bridge, session):
    for method, body in (("GetSession", {"session": session}),
                         ("ReportProgress", {"session": session, "role": "target", "sequence": 1,
                                             "bytesTransferred": 1, "rateBps": 1, "phase": "transferring"})):
        status, reply = curl(bridge, NODE + method, body)
        assert status == 401, reply
        assert reply == {"error": NODE + "PermissionDenied",
                         "parameters": {"reason": "no client certificate was presented"}}


def test_identity_comes_from_the_certificate(bridge, api, session, tmp_path, controller):
    target = enrol(bridge, api, session, "target", tmp_path)
    ready = {"session": session, "sequence": 1, "address": "127.0.0.1", "port": 9999, "sizeBytes": 1 << 20,
             "device": "/dev/sda"}
    status, reply = curl(bridge, NODE + "ReportSourceReady", ready, cert=target)
    assert status == 403 and reply["error"] == NODE + "PermissionDenied"

    # Another session's certificate.
    api.node("web-03", "aa:bb:cc:00:00:03")
    api.node("web-04", "aa:bb:cc:00:00:04")
    other = api.session("other", "direct", "web-03", "web-04")
    api.ok(other, "CloneSession", "Start", "a{sv}", "0")
    foreign = enrol(bridge, api, other.rsplit("/", 1)[1], "source", tmp_path, "foreign")
    status, reply = curl(bridge, NODE + "ReportSourceReady", ready, cert=foreign)
    assert status == 403 and "another session" in reply["parameters"]["reason"]
    before = controller.snapshot()

    # A revoked certificate is refused as soon as the CRL changes.
    issued = api.ok(f"{ROOT}/ca", "CertificateAuthority", "ListIssued")[0]
    serial = [c[0] for c in issued if c[1] == f"clone-{session}-target-1"][0]
    api.ok(f"{ROOT}/ca", "CertificateAuthority", "Revoke", "sa{sv}", serial, "0")
    wait_for(lambda: curl(bridge, NODE + "GetSession", {"session": session}, cert=target)[0] == 401, 5,
             "the revoked certificate to be refused")
    status, reply = curl(bridge, NODE + "GetSession", {"session": session}, cert=target)
    assert reply["parameters"]["reason"] == "the certificate is revoked"
    after = controller.snapshot()
    after["certificates"] = before["certificates"]  # only the revocation itself changed
    assert after == before


def test_malformed_requests(bridge, api, session, tmp_path):
    cert = enrol(bridge, api, session, "target", tmp_path)
    status, reply = curl(bridge, NODE + "GetSession", raw="{not json", cert=cert)
    assert status == 400 and reply["parameters"] == {"parameter": "parameters"}
    status, reply = curl(bridge, NODE + "GetSession", raw="[1, 2]", cert=cert)
    assert status == 400
    status, reply = curl(bridge, NODE + "GetSession", {"session": 7}, cert=cert)
    assert status == 400 and reply["parameters"] == {"parameter": "session"}
    status, reply = curl(bridge, NODE + "ReportProgress", {"session": session, "role": "target", "sequence": 1,
                                                           "bytesTransferred": 1, "rateBps": 1, "phase": "x"},
                         cert=cert)
    assert status == 400 and reply["parameters"] == {"parameter": "phase"}
    status, reply = curl(bridge, NODE + "Frobnicate", {}, cert=cert)
    assert status == 404 and reply["error"] == "org.varlink.service.MethodNotFound"
    status, reply = curl(bridge, NODE + "GetSession", raw="x" * (1024 * 1024 + 1), cert=cert)
    assert status == 413
    status, reply = curl(bridge, NODE + "ReportCloneDisk", {"session": session, "role": "target", "sequence": 1,
                                                            "disk": {"device": "/dev/sda"}}, cert=cert)
    assert status == 400 and reply["parameters"]["parameter"].startswith("disk"), reply
    # The bridge still answers everyone after all that.
    assert curl(bridge, NODE + "GetSession", {"session": session}, cert=cert)[0] == 200


def tls11_handshake(port, ca):
    """gnutls-cli offering TLS 1.1 and nothing else: (handshake completed, its output)."""
    r = subprocess.run(["gnutls-cli", "--priority=NORMAL:-VERS-ALL:+VERS-TLS1.1", f"--x509cafile={ca}", "--insecure",
                        "-p", str(port), "127.0.0.1"], input="", capture_output=True, text=True, timeout=20)
    return "Handshake was completed" in r.stdout, r.stdout + r.stderr


def test_tls_1_2_or_later_only(bridge, tmp_path):
    # Positive control: this client really offers TLS 1.1, and a server that accepts it gets a TLS 1.1
    # session (Debian's curl refuses TLS 1.1 on its own side, so it cannot show what the bridge does).
    key, cert = tmp_path / "control.key", tmp_path / "control.crt"
    subprocess.run(["certtool", "--generate-privkey", "--key-type=ecdsa", "--outfile", key], check=True,
                   capture_output=True)
    (tmp_path / "control.cfg").write_text('cn = "127.0.0.1"\nexpiration_days = 1\ntls_www_server\nsigning_key\n')
    subprocess.run(["certtool", "--generate-self-signed", "--load-privkey", key, "--template",
                    tmp_path / "control.cfg", "--outfile", cert], check=True, capture_output=True)
    port = free_port()
    control = subprocess.Popen(["gnutls-serv", "--priority=NORMAL:-VERS-ALL:+VERS-TLS1.1:+VERS-TLS1.2",
                                f"--x509keyfile={key}", f"--x509certfile={cert}", "-p", str(port), "--echo"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: tls11_handshake(port, cert)[0], timeout=10, what="the TLS 1.1 control server")
        done, text = tls11_handshake(port, cert)
        assert "(TLS1.1-" in text, text
    finally:
        control.kill()
        control.wait()
    done, text = tls11_handshake(bridge.port, bridge.ca)
    assert not done and "TLS1.1-" not in text, text
    # And TLS 1.2 itself is served.
    r = subprocess.run(["curl", "-s", "--cacert", bridge.ca, "--tlsv1.2", "--tls-max", "1.2", "-X", "POST",
                        f"{bridge.url}/call/org.varlink.service.GetInfo"], capture_output=True, text=True)
    assert r.returncode == 0 and "PureBoot" in r.stdout


def test_watch_session_streams_changes(bridge, api, session, tmp_path):
    target = enrol(bridge, api, session, "target", tmp_path)
    source = enrol(bridge, api, session, "source", tmp_path)
    watch = subprocess.Popen(["curl", "-s", "-N", "--cacert", str(bridge.ca), "--cert", str(target[0]), "--key",
                              str(target[1]), "-H", "Accept: application/json-seq", "-X", "POST",
                              f"{bridge.url}/call/{NODE}WatchSession", "-d", json.dumps({"session": session})],
                             stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    ready = {"session": session, "sequence": 1, "address": "127.0.0.1", "port": 9999, "sizeBytes": 1 << 20,
             "device": "/dev/sda"}
    assert curl(bridge, NODE + "ReportSourceReady", ready, cert=source)[0] == 200
    time.sleep(0.5)
    api.ok(f"{ROOT}/clone/{session}", "CloneSession", "Cancel", "a{sv}", "0")
    out, _ = watch.communicate(timeout=10)
    assert watch.returncode == 0
    records = [json.loads(r) for r in out.split("\x1e") if r.strip()]
    statuses = [r["session"]["status"] for r in records]
    assert statuses[0] == "waiting" and statuses[-1] == "cancelled" and "source_ready" in statuses
    assert records[statuses.index("source_ready")]["session"]["sourcePort"] == 9999


def test_controller_outage_is_503_and_recovers(bridge, api, session, tmp_path, controller):
    cert = enrol(bridge, api, session, "target", tmp_path)
    controller.stop()
    status, reply = curl(bridge, NODE + "GetSession", {"session": session}, cert=cert)
    assert status == 503 and reply["error"] == NODE + "ControllerUnavailable"
    controller.start()
    assert curl(bridge, NODE + "GetSession", {"session": session}, cert=cert)[0] == 200


def test_connection_limits(controller, tmp_path):
    """Per-address and idle limits: a client that holds connections open cannot starve the bridge."""
    b = Bridge(controller.bus, tmp_path, "--max-per-ip=3", "--timeout=2").start()
    try:
        held = [socket.create_connection(("127.0.0.1", b.port)) for _ in range(3)]
        r = subprocess.run(["curl", "-s", "--cacert", b.ca, "-X", "POST", f"{b.url}/call/org.varlink.service.GetInfo"],
                           capture_output=True, text=True)
        assert r.returncode != 0, "a fourth connection from the same address was served"
        # Idle connections are closed after the timeout, and the address is served again.
        time.sleep(3)
        for s in held:
            # The bridge closes it, with a TLS alert first: read to the end.
            s.settimeout(1)
            while s.recv(4096):
                pass
            s.close()
        r = subprocess.run(["curl", "-s", "--cacert", b.ca, "-X", "POST", f"{b.url}/call/org.varlink.service.GetInfo"],
                           capture_output=True, text=True)
        assert r.returncode == 0 and "PureBoot" in r.stdout
    finally:
        assert b.stop() == 0


def test_every_node_method_through_curl(bridge, api, session, tmp_path):
    """Each method of the IDL answered over HTTPS, with the status the contract gives it."""
    import re
    source = enrol(bridge, api, session, "source", tmp_path)
    target = enrol(bridge, api, session, "target", tmp_path)
    idl = (REPO / "src/shared/org.pureboot.Node.varlink").read_text()
    methods = re.findall(r"^method (\w+)\(", idl, re.M)
    calls = {
        "GetSession": (target, {"session": session}, 200),
        "ReportSourceReady": (source, {"session": session, "sequence": 1, "address": "127.0.0.1", "port": 9999,
                                       "sizeBytes": 4096, "device": "/dev/sda"}, 200),
        "ReportProgress": (target, {"session": session, "role": "target", "sequence": 1, "bytesTransferred": 2048,
                                    "rateBps": 10, "phase": "transferring"}, 200),
        "ReportComplete": (source, {"session": session, "role": "source", "sequence": 2,
                                    "digest": "xxh3:0011223344556677"}, 200),
        "ReportFailed": (target, {"session": session, "role": "target", "sequence": 2, "error": "disk vanished",
                                  "code": "ENODEV"}, 200),
        "WatchSession": (target, {"session": session}, 200),  # without json-seq: one answer
        # One target: no chain to forward in (test_chain.py runs chains); and only a target reports one lost.
        "ReportRelayReady": (target, {"session": session, "sequence": 1, "address": "127.0.0.1", "port": 9999}, 409),
        "ReportUpstreamLost": (source, {"session": session, "sequence": 1, "upstream": f"clone-{session}-source"},
                               403),
        # A direct session has no staging (test_staging.py calls these on staged ones).
        "GetStaging": (target, {"session": session}, 409),
        "ReportStagingStatus": (source, {"session": session, "sequence": 3, "status": "uploading"}, 409),
        "GetResizePlan": (target, {"session": session}, 200),
        # The session failed above: a disk report comes too late.
        "ReportCloneDisk": (target, {"session": session, "role": "target", "sequence": 3, "disk": {
            "device": "/dev/sdb", "sizeBytes": 4096, "logicalSectorSize": 512, "physicalSectorSize": 512,
            "table": "none", "partitions": []}}, 409),
        # Node methods need a node certificate (test_partition.py calls them with one).
        "GetNode": (target, {}, 403),
        "WatchNode": (target, {}, 403),
        "ReportDisks": (target, {"sequence": 1, "disks": []}, 403),
        "FetchOperations": (target, {"device": "/dev/sda"}, 403),
        "ReportOperation": (target, {"device": "/dev/sda", "operation": "x", "sequence": 1, "status": "running"}, 403),
        # A clone role says what its machine is, whatever became of its session.
        "ReportHardware": (target, {"session": session, "sequence": 4, "hardware": {
            "firmware": "bios", "cpuCores": 1, "cpuThreads": 2, "disks": [], "interfaces": []}}, 200),
    }
    assert set(methods) == set(calls) | {"Enrol"}, "a method of the IDL has no call here"
    for method in methods:
        if method == "Enrol":
            continue  # enrol() above
        cert, body, expected = calls[method]
        status, reply = curl(bridge, NODE + method, body, cert=cert)
        assert status == expected, (method, status, reply)
    assert api.prop(f"{ROOT}/clone/{session}", "CloneSession", "Status") == "failed"


def test_socket_activation(controller, tmp_path):
    """The socket systemd passes (here from systemd-socket-activate) is the one served."""
    from harness import BRIDGE, BRIDGE_USER, free_port, run
    port = free_port()
    log = tmp_path / "activated.log"
    proc = controller.bus.spawn(["systemd-socket-activate", "-l", f"127.0.0.1:{port}", "-E",
                                 f"DBUS_SYSTEM_BUS_ADDRESS={controller.bus.address}", "setpriv",
                                 f"--reuid={BRIDGE_USER}", f"--regid={BRIDGE_USER}", "--clear-groups", str(BRIDGE),
                                 "--address=127.0.0.1", f"--workflows={REPO / 'workflows'}"], log)
    try:
        # systemd-socket-activate starts the bridge on the first connection.
        ca = tmp_path / "ca.pem"
        r = run(["busctl", "--system", "--json=short", "get-property", "org.pureboot.Controller1",
                 f"{ROOT}/ca", "org.pureboot.Controller1.CertificateAuthority", "Certificate"], controller.bus,
                check=True)
        ca.write_text(json.loads(r.stdout)["data"])
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            r = subprocess.run(["curl", "-s", "--cacert", ca, "-X", "POST",
                                f"https://127.0.0.1:{port}/call/org.varlink.service.GetInfo"],
                               capture_output=True, text=True)
            if r.returncode == 0:
                break
            time.sleep(0.3)
        assert "pureboot-bridge" in r.stdout, log.read_text()
        assert f"on port {port}" in log.read_text()
    finally:
        proc.terminate()
        proc.wait(10)
