# SPDX-License-Identifier: MIT
"""What a machine on the provisioning network, or an unprivileged local user, must not be able to do (the
threat model in the README): each case here was once possible, and each test fails on the code that
allowed it."""

import io
import json
import os
import re
import shutil
import stat
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import dbus

import pytest

from harness import (BRIDGE_USER, DEST, ROOT, Bridge, Controller, make_key_and_csr, private_system_bus,
                     stop_process, wait_for)
from test_bridge import NODE, curl, enrol, session  # noqa: F401 (session is a fixture)


def raw_post(bridge, path, data, method="POST", cert=None):
    """Sends data (bytes) as is; returns (HTTP status, body text)."""
    argv = ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "--cacert", bridge.ca, "-X", method,
            f"{bridge.url}{path}", "--data-binary", "@-"]
    if cert:
        argv += ["--cert", cert[0], "--key", cert[1]]
    r = subprocess.run([str(a) for a in argv], input=data, capture_output=True, timeout=30)
    out, _, status = r.stdout.decode(errors="replace").rpartition("\n")
    return int(status or 0), out


def test_a_body_that_is_not_utf8_is_bad_input_not_an_outage(bridge, api, session, tmp_path):  # noqa: F811
    cert = enrol(bridge, api, session, "target", tmp_path)
    status, body = raw_post(bridge, f"/call/{NODE}GetSession", b'{"session": "\xff\xfe"}', cert=cert)
    assert status == 400, (status, body)
    reply = json.loads(body)
    assert reply["error"] == "org.varlink.service.InvalidParameter", reply
    # Enrol needs no certificate: the same answer there.
    status, body = raw_post(bridge, f"/call/{NODE}Enrol", b'{"token": "\xc3\x28", "csr": ""}')
    assert status == 400, (status, body)
    # And the bridge goes on answering.
    assert curl(bridge, NODE + "GetSession", {"session": session}, cert=cert)[0] == 200


@pytest.mark.parametrize("method", ["PUT", "POST", "DELETE"])
def test_the_ca_certificate_is_read_only(bridge, method):
    status, body = raw_post(bridge, "/ca.crt", b"-----BEGIN CERTIFICATE-----\n", method=method)
    assert status == 405, (status, body)
    status, body = raw_post(bridge, "/ca.crt", b"", method="GET")
    assert status == 200 and body == bridge.ca.read_text()


@pytest.mark.parametrize("path", ["/boot/files/deploy%00.txt", f"/call/{NODE}GetSession%00x", "/ca.crt%00"])
def test_an_encoded_nul_in_a_path_is_refused(bridge, path):
    status, body = raw_post(bridge, path, b"", method="GET" if "/call/" not in path else "POST")
    assert status == 400, (status, body)
    assert "NUL" in json.loads(body)["parameters"]["reason"], body


@pytest.mark.parametrize("curve", ["secp192r1", "secp224r1"])
def test_weak_curves_are_not_signed(bridge, api, session, tmp_path, curve):  # noqa: F811
    key, csr = make_key_and_csr(tmp_path, curve, curve=curve)
    token = api.ok(f"{ROOT}/clone/{session}", "CloneSession", "IssueBootToken", "sa{sv}", "target", "0")[0]
    status, reply = curl(bridge, NODE + "Enrol", {"token": token, "csr": csr.read_text()})
    assert status == 400 and reply["error"] == NODE + "BadCertificateRequest", reply
    assert "P-256" in reply["parameters"]["reason"], reply
    # The token was not spent on the refusal: a P-256 request with it is signed.
    key, csr = make_key_and_csr(tmp_path, "p256", curve="secp256r1")
    status, reply = curl(bridge, NODE + "Enrol", {"token": token, "csr": csr.read_text()})
    assert status == 200, reply


def sign_server(busctl, csr, hostname):
    return busctl("--json=short", "call", DEST, ROOT, f"{DEST}.Gateway", "SignServerCertificate", "ssas",
                  csr.read_text(), hostname, "1", "127.0.0.1", user=BRIDGE_USER)


def test_server_certificates_are_only_for_bridge_names_and_only_serve(bridge, api, session, busctl,  # noqa: F811
                                                                      tmp_path):
    node = api.ok(ROOT, "Manager", "GetNode", "s", "web-01")[0].rsplit("/", 1)[1]
    key, csr = make_key_and_csr(tmp_path, "server")
    for name in (f"node-{node}", f"clone-{session}-source", f"clone-{session}-target-1"):
        r = sign_server(busctl, csr, name)
        assert r.returncode != 0 and "names were refused" in r.stderr, (name, r.stdout, r.stderr)
    # A bridge name is signed, for serving only: as a client certificate the bridge refuses it.
    r = sign_server(busctl, csr, "other-bridge.test")
    assert r.returncode == 0, r.stderr
    cert = tmp_path / "server.crt"
    cert.write_text(json.loads(r.stdout)["data"][0])
    text = subprocess.run(["certtool", "-i", "--infile", cert], capture_output=True, text=True, check=True).stdout
    assert "TLS WWW Server" in text and "TLS WWW Client" not in text, text
    status, reply = curl(bridge, NODE + "GetSession", {"session": session}, cert=(cert, key))
    assert status == 401 and "not one for a client" in reply["parameters"]["reason"], reply


class Node:
    """A node identity made in-process (python3-cryptography): key, CSR, enrolment with a node token."""

    def __init__(self, bridge, api, directory, n):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
        path = api.node(f"load-{n:04d}", f"aa:bb:cc:{n >> 16 & 255:02x}:{n >> 8 & 255:02x}:{n & 255:02x}")
        token = api.ok(path, "Node", "IssueBootToken", "a{sv}", "0")[0]
        key = ec.generate_private_key(ec.SECP256R1())
        csr = x509.CertificateSigningRequestBuilder().subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "load")])).sign(key, hashes.SHA256())
        self.key, self.cert = directory / f"load-{n}.key", directory / f"load-{n}.crt"
        self.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        status, reply = curl(bridge, NODE + "Enrol", {"token": token, "csr": csr.public_bytes(
            serialization.Encoding.PEM).decode()})
        assert status == 200, reply
        self.cert.write_text(reply["certificate"])
        self.serial = f"{x509.load_pem_x509_certificate(reply['certificate'].encode()).serial_number:032x}"
        self.path = path
        import ssl
        self.context = ssl.create_default_context(cafile=str(bridge.ca))
        self.context.check_hostname = False
        self.context.load_cert_chain(self.cert, self.key)


class Stream:
    """A WatchNode stream held open: its HTTP status and what it sent so far."""

    def __init__(self, bridge, node):
        import socket
        raw = socket.create_connection(("127.0.0.1", bridge.port), timeout=20)
        self.sock = node.context.wrap_socket(raw)
        self.sock.sendall(b"POST /call/" + NODE.encode() + b"WatchNode HTTP/1.1\r\nHost: bridge\r\n"
                          b"Content-Type: application/json\r\nAccept: application/json-seq\r\n"
                          b"Content-Length: 2\r\n\r\n{}")
        self.data = b""
        self.read_until(b"\r\n\r\n")
        self.status = int(self.data.split(b" ", 2)[1])
        if self.status == 200:
            self.read_until(b"\x1e", b"\n")  # the first record
        else:
            self.read_until(b"}}")

    def read_until(self, *marks):
        start = 0
        for mark in marks:
            while (i := self.data.find(mark, start)) < 0:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise AssertionError(f"the stream ended: {self.data!r}")
                self.data += chunk
            start = i + len(mark)

    def records(self):
        return self.data.count(b"\x1e")

    def wait_records(self, n):
        """Reads until the stream has sent more than n records, the last one whole."""
        while self.records() <= n or not self.data.rstrip(b"\r\n0").endswith(b"}"):
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError(f"the stream ended: {self.data!r}")
            self.data += chunk

    def close(self):
        self.sock.close()


def test_a_thousand_streams_share_one_subscription(controller, api, busctl, tmp_path):
    """1,000 WatchNode streams from 250 node certificates (4 each, the per-certificate cap): the bridge
    keeps answering calls and passing changes on, refuses the 1,001st stream and a 5th of one certificate
    with 429, closes the streams of a revoked certificate, and ends cleanly. (With a match rule per stream,
    dbus-daemon's limit of rules per connection cut the bridge off the bus at about 510 streams.)"""
    bridge = Bridge(controller.bus, tmp_path, "--max-per-ip=2000", "--max-streams=1000").start()
    streams = []
    try:
        nodes = [Node(bridge, api, tmp_path, n) for n in range(251)]
        for node in nodes[:250]:
            for _ in range(4):
                s = Stream(bridge, node)
                assert s.status == 200, s.data
                streams.append(s)
        fifth = Stream(bridge, nodes[0])
        assert fifth.status == 429 and b"TooManyStreams" in fifth.data and b"this certificate" in fifth.data, \
            fifth.data
        over = Stream(bridge, nodes[250])
        assert over.status == 429 and b"TooManyStreams" in over.data and b"as many streams" in over.data, over.data
        # Calls are still answered, and a change still reaches the streams that follow it.
        status, reply = curl(bridge, NODE + "GetNode", {}, cert=(nodes[250].cert, nodes[250].key))
        assert status == 200, reply
        before = [s.records() for s in streams[4:8]]
        api.ok(nodes[1].path, "Node", "RequestScan", "a{sv}", "0")
        for s, n in zip(streams[4:8], before):
            s.wait_records(n)
            assert b"scanRequestedAt" in s.data.rsplit(b"\x1e", 1)[1]
        # A revoked certificate's streams end with the reason, at once.
        api.ok(f"{ROOT}/ca", "CertificateAuthority", "Revoke", "sa{sv}", nodes[2].serial, "0")
        for s in streams[8:12]:
            s.read_until(b"PermissionDenied", b"revoked")
        for s in streams:
            s.close()
        streams = []
        status, reply = curl(bridge, NODE + "GetNode", {}, cert=(nodes[3].cert, nodes[3].key))
        assert status == 200, reply
        assert "Lost the connection to the system bus" not in bridge.log.read_text()
    finally:
        for s in streams:
            s.close()
        bridge.stop()


def test_the_daemons_exit_when_they_lose_the_bus(tmp_path):
    """A bridge without the bus could answer nothing but 503, and a controller nothing at all: both exit
    non-zero, and systemd starts them again (the bridge's unit has Restart=on-failure; the controller is
    bus-activated)."""
    with private_system_bus() as bus:
        controller = Controller(bus, tmp_path).start()
        bridge = Bridge(bus, tmp_path).start()
        stop_process(bus.procs[0])  # dbus-daemon
        assert bridge.wait(10) == 1, bridge.tail()
        assert "Lost the connection to the system bus" in bridge.tail()
        assert controller.wait(10) == 1, controller.tail()
        assert "Lost the connection to the system bus" in controller.tail()


def boot(bridge, mac, source="127.0.0.1"):
    """GET /boot/ipxe as firmware at address source would: (status, script, kernel settings)."""
    r = subprocess.run(["curl", "-s", "--interface", source, "-w", "\n%{http_code}", "--cacert", str(bridge.ca),
                        f"{bridge.url}/boot/ipxe?mac={mac}"], capture_output=True, text=True, timeout=30)
    script, _, status = r.stdout.rpartition("\n")
    return int(status), script, dict(re.findall(r"pureboot\.(\w+)=(\S+)", script))


def enrol_with(bridge, token, tmp_path, name, source="127.0.0.1"):
    key, csr = make_key_and_csr(tmp_path, name)
    r = subprocess.run(["curl", "-s", "--interface", source, "--cacert", str(bridge.ca), "-X", "POST",
                        f"{bridge.url}/call/{NODE}Enrol", "--data-binary", "@-"],
                       input=json.dumps({"token": token, "csr": csr.read_text()}), capture_output=True, text=True)
    reply = json.loads(r.stdout)
    if "certificate" in reply:
        (tmp_path / f"{name}.crt").write_text(reply["certificate"])
        return (tmp_path / f"{name}.crt", key), reply
    return None, reply


@pytest.fixture
def idle_soon(controller, tmp_path):
    """The controller with a short [Enrolment] IdentityIdleSec, so a quiet identity counts as gone soon."""
    dropins = tmp_path / "controller.conf.d"
    dropins.mkdir(exist_ok=True)
    (dropins / "50-identity.conf").write_text("[Enrolment]\nIdentityIdleSec=3\n")
    controller.restart()
    return controller


def test_a_boot_answer_mints_no_second_identity(idle_soon, bridge, api, tmp_path):
    """The review's attack: anyone can fetch the boot answer of a session node's MAC (firmware has no
    credential). The first machine enrols; while its certificate is live, a second boot answer for that
    role is refused — logged, audited and shown on the session — and mints nothing. Once the identity has
    been quiet for IdentityIdleSec (the machine is booting again) a new token is minted, and enrolling with
    it revokes the old certificate."""
    api.node("web-01", "aa:bb:cc:00:00:01")
    api.node("web-02", "aa:bb:cc:00:00:02")
    session = api.session("attacked")
    sid = session.rsplit("/", 1)[1]
    api.ok(session, "CloneSession", "Start", "a{sv}", "0")
    status, script, first = boot(bridge, "aa:bb:cc:00:00:01")
    assert status == 200 and first["mode"] == "clone_source_direct", script
    real, reply = enrol_with(bridge, first["token"], tmp_path, "real")
    assert real, reply

    # While the real source calls in, every further claim on its role is refused.
    for _ in range(2):
        assert curl(bridge, NODE + "GetSession", {"session": sid}, cert=real)[0] == 200
        status, script, settings = boot(bridge, "aa:bb:cc:00:00:01", source="127.0.0.2")
        assert status == 200 and "token" not in settings and "holds this node's identity" in script, script
    claims = api.prop(session, "CloneSession", "RefusedClaims")
    assert len(claims) == 2 and all(f"clone-{sid}-source" in c and "127.0.0.2" in c for c in claims), claims
    assert "Refused a second claim on clone-" in idle_soon.tail()
    with idle_soon.db() as db:
        assert db.execute("SELECT COUNT(*) FROM events WHERE action = 'RefusedClaim'").fetchone()[0] == 2
        assert db.execute("SELECT COUNT(*) FROM enrolment_tokens WHERE session_id = ? AND role = 'source'",
                          (sid,)).fetchone()[0] == 1

    # A token is good only from the address its boot answer went to.
    time.sleep(3.5)  # the real source goes quiet: its machine may be booting again
    status, script, second = boot(bridge, "aa:bb:cc:00:00:01", source="127.0.0.2")
    assert "token" in second, script
    cert, reply = enrol_with(bridge, second["token"], tmp_path, "elsewhere", source="127.0.0.3")
    assert cert is None and reply["error"] == NODE + "InvalidToken" and "another address" in \
        reply["parameters"]["reason"], reply
    cert, reply = enrol_with(bridge, second["token"], tmp_path, "second", source="127.0.0.2")
    assert cert, reply
    # The new certificate names its address; the old one is revoked, and the bridge refuses it.
    text = subprocess.run(["certtool", "-i", "--infile", cert[0]], capture_output=True, text=True).stdout
    assert "IPAddress: 127.0.0.2" in text, text
    wait_for(lambda: curl(bridge, NODE + "GetSession", {"session": sid}, cert=real)[0] == 401, timeout=10,
             what="the bridge to refuse the replaced certificate")
    assert curl(bridge, NODE + "GetSession", {"session": sid}, cert=cert)[0] == 200


def test_unknown_machines_are_registered_within_limits(controller, bridge, api, tmp_path):
    dropins = tmp_path / "controller.conf.d"
    dropins.mkdir(exist_ok=True)
    (dropins / "50-discovery.conf").write_text("[Discovery]\nPerAddressPerMinute=5\nMaxDiscoveredNodes=8\n")
    controller.restart()
    for n in range(20):
        status, script, _ = boot(bridge, f"52:54:00:00:01:{n:02x}")
        assert status == 200 and "\nexit\n" in script, script  # its own disk, registered or not
    discovered = [n for n in api.ok(ROOT, "Manager", "ListNodes")[0] if n[4] == "discovered"]
    assert len(discovered) == 5, discovered
    for n in range(20):
        boot(bridge, f"52:54:00:00:02:{n:02x}", source="127.0.0.2")
    discovered = [n for n in api.ok(ROOT, "Manager", "ListNodes")[0] if n[4] == "discovered"]
    assert len(discovered) == 8, discovered
    assert "PerAddressPerMinute= is reached" in controller.tail(20000)
    assert "MaxDiscoveredNodes= is reached" in controller.tail(20000)


def test_expired_tokens_are_purged(controller, api, tmp_path):
    dropins = tmp_path / "controller.conf.d"
    dropins.mkdir(exist_ok=True)
    (dropins / "50-tokens.conf").write_text("[Enrolment]\nTokenLifetimeSec=1\n")
    controller.restart()
    path = api.node("web-09", "aa:bb:cc:00:00:09")
    for _ in range(3):
        api.ok(path, "Node", "IssueBootToken", "a{sv}", "0")
    time.sleep(1.5)
    api.ok(path, "Node", "IssueBootToken", "a{sv}", "0")
    with controller.db() as db:
        assert db.execute("SELECT COUNT(*) FROM enrolment_tokens").fetchone()[0] == 1


def test_a_sequence_far_ahead_is_refused_not_adopted(bridge, api, session, tmp_path):  # noqa: F811
    """A report with a huge sequence made every later report of the role look like a replay: acknowledged
    and dropped. Sequences follow the controller's clock (Enrol says what time it is); one more than ten
    minutes ahead of it is refused, and the role's reports go on being applied."""
    cert = enrol(bridge, api, session, "source", tmp_path)
    path = f"{ROOT}/clone/{session}"

    def ready(sequence, port):
        return curl(bridge, NODE + "ReportSourceReady", {"session": session, "sequence": sequence,
                                                         "address": "127.0.0.1", "port": port,
                                                         "sizeBytes": 1 << 30, "device": "/dev/sda"}, cert=cert)
    status, reply = ready(1 << 62, 9001)
    assert status == 400 and reply["parameters"]["parameter"] == "sequence", reply
    assert "ahead of the controller's clock" in reply["parameters"]["reason"], reply
    assert api.prop(path, "CloneSession", "Status") == "waiting"
    now = int(time.time() * 1e6)
    assert ready(now, 9002)[0] == 200
    assert api.prop(path, "CloneSession", "SourcePort") == 9002
    assert ready(now + 1000, 9003)[0] == 200  # a source restarted on another port
    assert api.prop(path, "CloneSession", "SourcePort") == 9003


def special_tar(path):
    """A root with what must not reach an exported directory as it is: device nodes of the server, a FIFO,
    a socket, a setuid-root and a setgid program, and an ordinary file."""
    with tarfile.open(path, "w") as t:
        for name, kind, extra in (("dev", tarfile.DIRTYPE, {}), ("bin", tarfile.DIRTYPE, {}),
                                  ("dev/loop0", tarfile.BLKTYPE, {"devmajor": 7, "devminor": 0}),
                                  ("dev/mem", tarfile.CHRTYPE, {"devmajor": 1, "devminor": 1}),
                                  ("run-fifo", tarfile.FIFOTYPE, {})):
            info = tarfile.TarInfo(name)
            info.type, info.mode = kind, 0o666 if kind != tarfile.DIRTYPE else 0o755
            for k, v in extra.items():
                setattr(info, k, v)
            t.addfile(info)
        for name, mode in (("bin/su", 0o4755), ("bin/wall", 0o2755), ("bin/plain", 0o755)):
            info = tarfile.TarInfo(name)
            info.mode, info.size = mode, 4
            t.addfile(info, io.BytesIO(b"#!x\n"))
    return path


def import_file(nfs, name, path, **options):
    opts = dbus.Dictionary({k: dbus.Boolean(v) for k, v in options.items()}, signature="sv")
    return str(nfs.ImportBaseImageFile(name, str(path), opts, timeout=60))


def test_hostile_base_images_lose_devices_and_setuid(controller, system_bus, tmp_path):
    bus = dbus.bus.BusConnection(system_bus.env["DBUS_SYSTEM_BUS_ADDRESS"])
    nfs = dbus.Interface(bus.get_object(DEST, f"{ROOT}/nfsroot"), f"{DEST}.NfsRoot")
    root = controller.dir / "nfsroot"
    archive = special_tar(tmp_path / "special.tar")
    summary = import_file(nfs, "special", archive)
    assert "Left out 3 device nodes, FIFOs or sockets" in summary and "dev/loop0" in summary, summary
    assert "Cleared the setuid/setgid bits or file capabilities of 2 files" in summary, summary
    image = root / "base/special"
    assert sorted(p.name for p in (image / "dev").iterdir()) == [] and not (image / "run-fifo").exists()
    assert stat.S_IMODE((image / "bin/su").stat().st_mode) == 0o755
    assert stat.S_IMODE((image / "bin/wall").stat().st_mode) == 0o755
    assert stat.S_IMODE((image / "bin/plain").stat().st_mode) == 0o755
    # Only root goes into the images and overlays.
    assert stat.S_IMODE((root / "base").stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "nodes").stat().st_mode) == 0o700
    # Asked for, setuid bits stay (devices never come in).
    summary = import_file(nfs, "special-suid", archive, keep_setuid=True)
    assert "Cleared" not in summary and "Left out 3" in summary, summary
    assert stat.S_IMODE((root / "base/special-suid/bin/su").stat().st_mode) == 0o4755
    bus.close()


def test_fifos_stall_nothing(controller, system_bus, tmp_path):
    """A FIFO named where a file is expected (an import path, a boot file) is refused at once; the daemon
    goes on answering everyone."""
    bus = dbus.bus.BusConnection(system_bus.env["DBUS_SYSTEM_BUS_ADDRESS"])
    nfs = dbus.Interface(bus.get_object(DEST, f"{ROOT}/nfsroot"), f"{DEST}.NfsRoot")
    fifo = tmp_path / "archive.fifo"
    os.mkfifo(fifo)
    began = time.monotonic()
    with pytest.raises(dbus.DBusException) as e:
        import_file(nfs, "fifo", fifo)
    assert "is not a regular file" in str(e.value), str(e.value)
    assert time.monotonic() - began < 5
    assert list(nfs.ListBaseImages()) == []
    bus.close()

    boot = Path(tempfile.mkdtemp(prefix="pureboot-boot-"))
    try:
        boot.chmod(0o755)
        os.mkfifo(boot / "stuck")
        (boot / "stuck").chmod(0o644)
        (boot / "real").write_text("kernel\n")
        (boot / "real").chmod(0o644)
        b = Bridge(controller.bus, tmp_path, f"--boot-dir={boot}").start()
        try:
            def fetch(name):
                r = subprocess.run(["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "--max-time", "5",
                                    "--cacert", str(b.ca), f"{b.url}/boot/files/{name}"],
                                   capture_output=True, text=True)
                return r.stdout.rpartition("\n")[2]
            assert fetch("stuck") == "404"
            assert fetch("real") == "200"
        finally:
            b.stop()
    finally:
        shutil.rmtree(boot, ignore_errors=True)
