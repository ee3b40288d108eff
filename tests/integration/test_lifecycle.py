# SPDX-License-Identifier: MIT
"""The daemon's life: readiness, restart with the same state and CA, clean shutdown, idle exit, settings
from controller.conf and its drop-ins."""

import os
import socket
import stat
import subprocess
import time

import pytest

from harness import CONTROLLER, DEST, ROOT, Controller, wait_for


def test_restart_keeps_sessions_nodes_and_the_ca(controller, api):
    api.node("web-01", "aa:bb:cc:00:00:01")
    api.node("web-02", "aa:bb:cc:00:00:02")
    started = api.session("kept")
    pending = api.session("also-kept")
    api.ok(started, "CloneSession", "Start", "a{sv}", "0")
    fingerprint = api.prop(f"{ROOT}/ca", "CertificateAuthority", "Fingerprint")
    before = controller.snapshot()

    controller.restart()
    assert api.prop(f"{ROOT}/ca", "CertificateAuthority", "Fingerprint") == fingerprint
    assert api.prop(started, "CloneSession", "Status") == "waiting"
    assert api.prop(pending, "CloneSession", "Status") == "pending"
    assert sorted(n[1] for n in api.ok(ROOT, "Manager", "ListNodes")[0]) == ["web-01", "web-02"]
    assert controller.snapshot() == before
    with controller.db() as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == 15


def test_state_files_are_private(controller):
    ca = controller.state / "ca"
    assert stat.S_IMODE(os.stat(ca / "ca.key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(ca).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(controller.state).st_mode) == 0o700


def test_sigterm_exits_cleanly(controller):
    assert controller.stop() == 0
    assert "shutting down" in controller.log.read_text()
    wait_for(lambda: not controller.bus.name_has_owner(DEST), what="the name to be released")


def test_ready_notification(system_bus, tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(10)
    env = dict(system_bus.env, NOTIFY_SOCKET=str(tmp_path / "notify"))
    proc = subprocess.Popen([CONTROLLER, "--config=/nonexistent", f"--state-dir={tmp_path / 'state'}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        message = sock.recv(4096).decode()
        assert "READY=1" in message
        assert system_bus.name_has_owner(DEST), "READY=1 came before the bus name was taken"
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
        sock.close()


def test_exit_on_idle(system_bus, tmp_path, api):
    c = Controller(system_bus, tmp_path)
    c.config.write_text("[Controller]\nExitOnIdleSec=1\n")
    c.start()
    try:
        api.node("web-01", "aa:bb:cc:00:00:01")
        api.node("web-02", "aa:bb:cc:00:00:02")
        api.ok(api.session("busy"), "CloneSession", "Start", "a{sv}", "0")
        # An active session keeps it running…
        with pytest.raises(subprocess.TimeoutExpired):
            c.proc.wait(2.5)
        # …and once nothing is running it goes after a second without requests.
        api.ok(api.ok(ROOT, "Manager", "GetCloneSession", "s", "busy")[0], "CloneSession", "Cancel", "a{sv}", "0")
        assert c.proc.wait(10) == 0
        assert "Idle for 1 s" in c.log.read_text()
    finally:
        c.stop()


def test_a_running_import_keeps_it_from_exiting_idle(system_bus, tmp_path):
    """A worker (here a base image import read from a slow pipe) counts as activity: the controller waits
    for it and answers before it exits idle."""
    import io
    import tarfile
    import threading

    import dbus
    c = Controller(system_bus, tmp_path)
    c.config.write_text(f"[Controller]\nExitOnIdleSec=1\n[NfsRoot]\nPath={tmp_path / 'nfsroot'}\n")
    c.start()
    try:
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as t:
            info = tarfile.TarInfo("etc/os-release")
            info.size = 5
            t.addfile(info, io.BytesIO(b"slow\n"))
        data = archive.getvalue()
        read, write = os.pipe()
        bus = dbus.bus.BusConnection(system_bus.env["DBUS_SYSTEM_BUS_ADDRESS"])
        nfs = dbus.Interface(bus.get_object(DEST, f"{ROOT}/nfsroot"), f"{DEST}.NfsRoot")
        answer = {}

        def call():
            try:
                answer["ok"] = nfs.ImportBaseImage("slow", dbus.types.UnixFd(read), dbus.Dictionary({}, signature="sv"),
                                                   timeout=60)
            except dbus.DBusException as e:
                answer["error"] = e
        caller = threading.Thread(target=call)
        caller.start()
        # Half the archive, then three idle seconds: the import is still reading.
        os.write(write, data[:512])
        with pytest.raises(subprocess.TimeoutExpired):
            c.proc.wait(3)
        os.write(write, data[512:])
        os.close(write)
        caller.join(30)
        os.close(read)
        bus.close()
        assert "error" not in answer, answer
        assert (tmp_path / "nfsroot/base/slow/etc/os-release").read_text() == "slow\n"
        assert c.proc.wait(10) == 0
        assert "Idle for 1 s" in c.log.read_text()
    finally:
        c.stop()


def test_config_dropins_and_bad_values(system_bus, tmp_path, api):
    c = Controller(system_bus, tmp_path)
    c.config.write_text("[CA]\nKeyAlgorithm=ecdsa-p256\n")
    dropins = tmp_path / "controller.conf.d"
    dropins.mkdir()
    (dropins / "50-rsa.conf").write_text("[CA]\nKeyAlgorithm=rsa-2048\nCAValidityYears=2\n")
    c.start()
    try:
        assert api.prop(f"{ROOT}/ca", "CertificateAuthority", "Algorithm") == "rsa-2048"
        not_after = api.prop(f"{ROOT}/ca", "CertificateAuthority", "NotAfter")
        years = (not_after / 1e6 - time.time()) / (365.25 * 86400)
        assert 1.9 < years < 2.1
    finally:
        assert c.stop() == 0

    (dropins / "60-bad.conf").write_text("[CA]\nKeyAlgorithm=dsa-1024\n")
    c.start(wait=False)
    assert c.proc.wait(10) == 1
    log = c.log.read_text()
    assert "60-bad.conf:2: KeyAlgorithm=dsa-1024 is not one of ecdsa-p256, rsa-2048, rsa-4096." in log
    c.seen = True

    # DataSubnets= is a list: lines add to it and a bad entry is named.
    (dropins / "60-bad.conf").write_text("[Enrolment]\nDataSubnets=10.20.0.0/16\nDataSubnets=fd00::/64 10.30.0.0/33\n")
    c.start(wait=False)
    assert c.proc.wait(10) == 1
    log = c.log.read_text()
    assert "60-bad.conf:3: DataSubnets=: 10.30.0.0/33 is not a subnet (like 10.20.0.0/16 or fd00::/64)." in log
