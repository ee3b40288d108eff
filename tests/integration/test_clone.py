# SPDX-License-Identifier: MIT
"""Direct clones end to end: controller and bridge in the root namespace, a source and a target node each in
its own network namespace, disks on loop devices, pureboot-agent started the way its unit starts it."""

import json
import re
import subprocess
import time

import pytest

from harness import PUREBOOTCTL, RELEASE_BUILD, REPO, make_key_and_csr, stop_all, wait_for
from nodes import (Clone, check_files, data_bytes, make_half_zero_disk, make_random_disk, make_source_disk, sha256, sh,
                   stream_bytes)

DISK = 256 << 20


@pytest.fixture
def disks(tmp_path):
    made = []

    def source():
        loop, files = make_source_disk(tmp_path)
        made.append(loop)
        return loop, files

    def random(name, size=DISK):
        loop = make_random_disk(tmp_path, name, size)
        made.append(loop)
        return loop

    def half_zero(name, size=DISK):
        loop = make_half_zero_disk(tmp_path, name, size)
        made.append(loop)
        return loop
    yield type("Disks", (), {"source": staticmethod(source), "random": staticmethod(random),
                             "half_zero": staticmethod(half_zero)})
    for loop in made:
        loop.detach()


@pytest.fixture
def clone_of(tmp_path, ctl, api, network, bridge_on_network):
    made = []

    def make(source_dev, target_dev, **kw):
        c = Clone(tmp_path, ctl, api, network, bridge_on_network, source_dev, target_dev, **kw)
        made.append(c)
        return c
    yield make
    stop_all(made)


def test_direct_clone_end_to_end(clone_of, disks, ctl, tmp_path, system_bus):
    source, files = disks.source()
    target = disks.random("target")
    c = clone_of(source.device, target.device)
    c.source.start()
    c.target.start()
    follow = subprocess.run([str(PUREBOOTCTL), "--no-pager", "clone", "status", "--follow", c.id],
                            env=system_bus.env, capture_output=True, text=True, timeout=90)
    assert c.target.wait(60) == 0, c.target.text()
    assert c.source.wait(60) == 0, c.source.text()
    assert c.status() == "completed", c.prop("Error")
    assert follow.returncode == 0, follow.stderr
    assert "completed" in follow.stdout
    sh("cmp", source.device, target.device)
    check_files(target, files, tmp_path)
    assert c.prop("SourceDigest").startswith("xxh3-128:")
    assert c.prop("SourceDigest") == c.prop("TargetDigest")


def test_one_live_source_to_two_targets(clone_of, disks, api, tmp_path, system_bus):
    """A direct session with a second target: the targets form a chain. The first pulls from the source and
    forwards what it verified and wrote to the second (only the session's target certificates, each checked
    against the serial the session names for it); each target checks its own digest, the session completes
    once both did, and the source sent its disk once."""
    source, files = disks.source()
    first = disks.random("first")
    second = disks.random("second")
    c = clone_of(source.device, first.device)
    path, agent = c.add_target(second.device)
    assert api.prop(path, "CloneTarget", "Status") == "waiting"
    follow = subprocess.Popen([str(PUREBOOTCTL), "--no-pager", "clone", "status", "--follow", c.id],
                              env=system_bus.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    c.source.start()
    c.target.start()
    wait_for(lambda: api.prop(path, "CloneTarget", "Upstream") == 1, timeout=60,
             what="the first target to forward to the second:\n" + c.target.text()[-2000:])
    agent.start()
    c.wait_status("completed", "failed", timeout=120)
    out, err = follow.communicate(timeout=30)
    assert follow.returncode == 0, err
    # Each target's steps as they happen, and where each ended.
    for n in (1, 2):
        lines = [line for line in out.splitlines() if re.match(rf"\s+target {n}\s", line)]
        assert any("cloning" in line for line in lines) or len(lines) > 1, out
        assert "completed" in lines[-1] and "100.0%" in lines[-1], out
    assert c.status() == "completed", (c.prop("Error"), c.source.text()[-2000:], agent.text()[-2000:])
    for a in (c.target, agent, c.source):
        assert a.wait(60) == 0, a.text()
    digest = c.prop("SourceDigest")
    assert c.prop("TargetDigest") == digest and api.prop(path, "CloneTarget", "Digest") == digest
    for target in (first, second):
        sh("cmp", source.device, target.device)
        check_files(target, files, tmp_path)
    # The source read its disk once for the digest and served one stream; the first target served the
    # second the whole disk, and stayed until it was done.
    assert len(re.findall(r"A stream ended at", c.source.text())) == 1, c.source.text()[-3000:]
    assert "A downstream starts at 0 B" in c.target.text(), c.target.text()[-3000:]
    assert re.search(r"A downstream's stream ended at 256.0 MiB", c.target.text()), c.target.text()[-3000:]
    assert "Now pulling from" not in agent.text(), agent.text()[-3000:]


def wire_bytes(c):
    """What the source node has sent on its link since the session's agents were made."""
    return c.network.tx_bytes(c.source.netns) - c.source_tx_at_start


def test_zero_runs_are_not_sent(clone_of, disks):
    source = disks.half_zero("half-zero")
    target = disks.random("target")
    data = data_bytes(source.device)
    assert data == DISK // 2
    c = clone_of(source.device, target.device)
    c.source.start()
    c.target.start()
    assert c.target.wait(60) == 0, c.target.text()
    assert c.source.wait(60) == 0, c.source.text()
    assert c.status() == "completed", c.prop("Error")
    sh("cmp", source.device, target.device)
    # The source's own count: the DATA chunks and a 40-byte header per frame, nothing for the zero runs.
    sent = stream_bytes(c.source)
    assert data < sent < data + 256 * 2 * 40 + 4096, (sent, data)
    # The link agrees: what left the source's namespace (TLS, TCP/IP, enrolment and reports included) is
    # the data and a little, well under the disk.
    wire = wire_bytes(c)
    assert sent < wire < data * 1.06, (wire, sent, data)


@pytest.fixture
def serving(clone_of, disks):
    """A clone of the source disk onto a random one whose source serves, its target not started:
    (clone, source loop, target loop, files, source address, source port)."""
    source, files = disks.source()
    target = disks.random("target")
    c = clone_of(source.device, target.device)
    c.source.start()
    c.wait_status("source_ready", timeout=30)
    return c, source, target, files, c.prop("SourceAddress"), c.prop("SourcePort")


@pytest.fixture
def under_way(clone_of, disks):
    """A clone of the source disk onto a random one, the target reading at most max_rate, returned once it
    has written past `past` bytes: (clone, source loop, target loop, files)."""
    def start(max_rate, past):
        source, files = disks.source()
        target = disks.random("target")
        c = clone_of(source.device, target.device, target_args=[f"--max-rate={max_rate}"])
        c.source.start()
        c.target.start()
        wait_for(lambda: target_offset(c) > past, timeout=60, what="the clone to be under way")
        return c, source, target, files
    return start


def target_offset(c):
    return c.prop("BytesTransferred")


def finish(c, source, target, files, tmp_path):
    c.wait_status("completed", timeout=150)
    # Reports wait out their backoff (up to a minute) after an outage.
    assert c.target.wait(90) == 0, c.target.text()
    assert c.source.wait(90) == 0, c.source.text()
    assert c.prop("SourceDigest") == c.prop("TargetDigest")
    sh("cmp", source.device, target.device)
    check_files(target, files, tmp_path)


def test_source_killed_mid_stream_resumes(under_way, tmp_path):
    c, source, target, files = under_way("12M", 40 << 20)
    c.source.kill()
    time.sleep(1)
    c.source.start()
    finish(c, source, target, files, tmp_path)
    assert "Lost the stream" in c.target.text()
    assert "The target resumes at" in c.source.text()
    # Counted on the source's link: the data once, and what was in flight when it died, not the disk again.
    wire = wire_bytes(c)
    assert wire < data_bytes(source.device) + DISK // 10, wire


def test_target_killed_resumes_from_its_journal(under_way, tmp_path):
    # Slow enough that the kill comes well before the ~50 MiB of data are all written: at 12 MB/s the whole
    # copy took 4 s, and the progress the test waits for can come a second late.
    c, source, target, files = under_way("4M", 30 << 20)
    c.target.kill()
    c.target.start()
    finish(c, source, target, files, tmp_path)
    m = re.search(r"Resuming at offset (\d+)", c.target.text())
    assert m and int(m.group(1)) > 0, c.target.text()
    wire = wire_bytes(c)
    assert wire < data_bytes(source.device) + DISK // 10, wire


def test_controller_and_bridge_down_mid_clone(under_way, tmp_path, controller, bridge_on_network):
    c, source, target, files = under_way("8M", 20 << 20)
    bridge_on_network.stop()
    assert controller.stop() == 0
    before = wire_bytes(c)
    time.sleep(30)
    # The copy went on while the controller was away: counted on the source's link.
    assert wire_bytes(c) - before > 10 << 20, (before, wire_bytes(c))
    # Meanwhile the clone went on peer to peer, and newer progress replaced older in the queue.
    queued = list((c.target.state / "queue").iterdir())
    assert sum(1 for q in queued if "ReportProgress" in q.read_text()) <= 2, [q.read_text() for q in queued]
    controller.start()
    bridge_on_network.start()
    finish(c, source, target, files, tmp_path)
    for agent in c.agents.values():
        assert not list((agent.state / "queue").iterdir()), f"reports left in {agent.state}/queue"
        assert "stays queued" in agent.text()


def test_corrupted_frame_is_rejected_and_fetched_again(clone_of, disks, tmp_path):
    source, files = disks.source()
    target = disks.random("target")
    c = clone_of(source.device, target.device, target_args=["--reboot"])
    # Chunk 0 holds the protective MBR and the GPT: a DATA frame. Damaged after hashing, on the wire.
    c.source.start(env={"PUREBOOT_AGENT_FAULT_CORRUPT_OFFSET": "0"})
    # --reboot runs systemctl reboot once the completion was taken: a stand-in records that it was asked.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "systemctl").write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path}/reboot-asked\n")
    (fake / "systemctl").chmod(0o755)
    c.target.start(env={"PATH": f"{fake}:/usr/sbin:/usr/bin:/sbin:/bin"})
    finish(c, source, target, files, tmp_path)
    assert (tmp_path / "reboot-asked").read_text().strip() == "reboot --no-block"
    assert "Fault injection: damaging the frame at offset 0" in c.source.text(), "not a fault-injection build?"
    assert "Frame at offset 0 rejected (hash mismatch)" in c.target.text()


def test_a_release_build_ignores_the_fault_injection_variable(clone_of, disks, tmp_path):
    assert RELEASE_BUILD, "PUREBOOT_RELEASE_BUILD names no build without -Dfault-injection (tests/run sets it)"
    options = json.loads(sh("meson", "introspect", "--buildoptions", RELEASE_BUILD).stdout)
    assert {o["name"]: o["value"] for o in options}["fault-injection"] is False
    source, files = disks.source()
    target = disks.random("target")
    c = clone_of(source.device, target.device)
    # That build is under ASan too: it needs tests/asan.supp for libparted, and its leak checker is not asked.
    c.source.start(env={"PUREBOOT_AGENT_FAULT_CORRUPT_OFFSET": "0",
                        "ASAN_OPTIONS": f"detect_leaks=0:abort_on_error=1:suppressions={REPO}/tests/asan.supp"},
                   binary=RELEASE_BUILD / "src/agent/pureboot-agent")
    c.target.start()
    finish(c, source, target, files, tmp_path)
    assert "Fault injection" not in c.source.text()
    assert "rejected" not in c.target.text()


def enrol_with_token(bridge, ctl, session, tmp_path, name):
    """A target certificate of session, enrolled with curl from a key of our own: (certificate, key)."""
    token = ctl("clone", "token", session, "--role=target", check=True).stdout.strip()
    key, csr = make_key_and_csr(tmp_path, name)
    r = subprocess.run(["curl", "-sS", "--cacert", str(bridge.ca), "-H", "Content-Type: application/json",
                        "--data", json.dumps({"token": token, "csr": csr.read_text()}),
                        f"{bridge.url}/call/org.pureboot.Node.Enrol"], capture_output=True, text=True, check=True)
    cert = tmp_path / f"{name}.crt"
    cert.write_text(json.loads(r.stdout)["certificate"])
    return cert, key


def another_sessions_target(api, ctl, bridge, tmp_path):
    """A second session whose target enrols for real: (its id, certificate, key)."""
    api.node("other-a", "aa:bb:cc:00:20:01")
    api.node("other-b", "aa:bb:cc:00:20:02")
    other = ctl("clone", "create", "--name=other", "--mode=direct", "--source=other-a", "--target=other-b",
                "--source-device=/dev/sda", "--target-device=/dev/sdb", check=True).stdout.split()[-1]
    ctl("clone", "start", other, check=True)
    cert, key = enrol_with_token(bridge, ctl, other, tmp_path, "intruder")
    return other, cert, key


def test_a_certificate_of_another_session_is_refused(serving, tmp_path, api, ctl, bridge_on_network):
    c, source, target, _, address, port = serving
    # A second session's target knocks on the first session's source.
    other, cert, key = another_sessions_target(api, ctl, bridge_on_network, tmp_path)
    r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", str(bridge_on_network.ca),
                        "--cert", str(cert), "--key", str(key), f"https://{address}:{port}/disk?offset=0"],
                       capture_output=True, text=True)
    assert r.stdout == "403", (r.stdout, r.stderr)
    assert f"Refused a peer with certificate clone-{other}-target" in c.source.text()
    # Without any certificate: refused, by the source itself (403), not by a source that is gone.
    r = subprocess.run(["curl", "-sS", "-w", "%{http_code}", "--cacert", str(bridge_on_network.ca),
                        f"https://{address}:{port}/disk?offset=0"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.endswith("403"), (r.returncode, r.stdout, r.stderr)
    assert "no client certificate was presented" in r.stdout, r.stdout
    # And the source, still up, serves the session's own target all the same.
    assert c.source.proc.poll() is None, c.source.text()
    c.target.start()
    assert c.target.wait(60) == 0, c.target.text()
    assert c.source.wait(60) == 0, c.source.text()
    sh("cmp", source.device, target.device)


def test_a_smaller_target_fails_before_writing(clone_of, disks, tmp_path):
    source, _ = disks.source()
    target = disks.random("small", size=128 << 20)
    before = sha256(target.device)
    c = clone_of(source.device, target.device)
    c.source.start()
    c.target.start()
    assert c.target.wait(60) == 3, c.target.text()
    c.wait_status("failed", timeout=30)
    error = c.prop("Error")
    assert "128.0 MiB (134217728 bytes)" in error and "256.0 MiB (268435456 bytes)" in error, error
    assert sha256(target.device) == before
    assert c.source.wait(30) == 4, c.source.text()


def test_cancel_stops_both_agents_quickly(under_way, ctl):
    c, source, target, _ = under_way("4M", 8 << 20)
    ctl("clone", "cancel", c.id, check=True)
    started = time.monotonic()
    assert c.target.wait(10) == 4, c.target.text()
    assert c.source.wait(10) == 4, c.source.text()
    assert time.monotonic() - started < 5


def test_the_source_serves_only_the_live_target_certificate(serving, tmp_path, ctl, bridge_on_network):
    """Source and target pin each other: the session names the serial of each role's live certificate, and
    the source serves only that one. A second enrolment of the target role revokes the first certificate,
    which the source then refuses at once (and by the CRL, which it fetches every 30 s); a certificate the
    operator revokes is refused within that time."""
    c, _, _, _, address, port = serving

    def read(cert):
        r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-filesize", "1000000",
                            "--cacert", str(bridge_on_network.ca), "--cert", str(cert[0]), "--key", str(cert[1]),
                            f"https://{address}:{port}/disk?offset=0", "--max-time", "2"],
                           capture_output=True, text=True)
        return r.stdout

    first = enrol_with_token(bridge_on_network, ctl, c.id, tmp_path, "first")
    wait_for(lambda: read(first) == "200", timeout=15, what="the source to serve the enrolled target")
    second = enrol_with_token(bridge_on_network, ctl, c.id, tmp_path, "second")
    assert c.prop("TargetCertificate") != ""
    wait_for(lambda: read(first) in ("403", "503"), timeout=15, what="the source to refuse the replaced certificate")
    assert read(second) == "200"
    assert "Refused to serve the disk (503): this is not the certificate the session names" in c.source.text() or \
        "Refused to serve the disk (403): the certificate is revoked." in c.source.text()
    serial = c.prop("TargetCertificate")
    ctl("ca", "revoke", serial, check=True)
    wait_for(lambda: read(second) == "403", timeout=45, what="the source to refuse a revoked certificate")
    assert "Refused to serve the disk (403): the certificate is revoked." in c.source.text()
    assert c.source.proc.poll() is None


def test_half_open_connections_keep_no_one_out(serving, tmp_path):
    """50 TCP connections to the source that never start TLS, from one address: a few are held (the cap per
    address) and only for the handshake timeout, the source keeps listening, and the real target gets the
    disk. (The source used to stop accepting for good once 8 such connections reached its limit.)"""
    import socket
    c, source, target, files, address, port = serving
    idle = []
    for _ in range(50):
        try:
            idle.append(socket.create_connection((address, port), timeout=5))
        except OSError:
            pass  # refused once the cap per address is reached: also fine
    c.target.start()
    finish(c, source, target, files, tmp_path)
    # Every one of them was closed by the source by now (5 s to hand-shake), none is left waiting.
    for s in idle:
        s.settimeout(10)
        try:
            assert s.recv(1) == b""
        except ConnectionResetError:
            pass
        s.close()
    assert c.source.wait(30) == 0
