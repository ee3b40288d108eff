# SPDX-License-Identifier: MIT
"""The units as shipped, run by systemd in a booted machine (machine.py): the controller started by bus
activation and the bridge by its socket, both under every sandboxing setting of their units, doing what
those settings once broke — staging through NFS and iSCSI servers, LUN files tgtadm serves, NFS root imports
that keep their owners, image imports through sfdisk and partclone — and the bridge started again after it
loses the bus."""

import json
import os
import subprocess
import time

import pytest

from harness import DEST, ROOT, free_port, make_key_and_csr, run, wait_for
from machine import Machine, wait_active
from nodes import Clone, Network, check_files, make_random_disk, make_source_disk, sh
from storage_servers import IscsiServer, NfsServer
from test_images import clonezilla_image
from test_nfsroot import busybox_root
from test_staging import add_storage

CAP = {"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_FOWNER": 3, "CAP_FSETID": 4, "CAP_SETFCAP": 31}


@pytest.fixture(scope="module")
def machine(tmp_path_factory):
    directory = tmp_path_factory.mktemp("servers")
    with Network(index=8) as net, NfsServer(net, directory) as nfs, IscsiServer(net, directory) as iscsi:
        # tgtadm in the machine finds the test's tgtd where it finds a packaged one: /run/tgtd/socket.0.
        with Machine(net, free_port(), binds=[(iscsi.socket_dir, "/run/tgtd")]) as m:
            m.nfs, m.iscsi = nfs, iscsi
            m.ca = directory / "ca.pem"
            m.restarted = set()  # units a test restarted on purpose
            yield m
            m.check_units(allow_restarts=m.restarted)


@pytest.fixture(scope="module")
def system_bus(machine):
    """The machine's own system bus: ctl, api and busctl talk to it."""
    return machine.bus


@pytest.fixture(scope="module", autouse=True)
def ca(machine, system_bus):
    r = run(["busctl", "--system", "--json=short", "get-property", DEST, f"{ROOT}/ca",
             f"{DEST}.CertificateAuthority", "Certificate"], system_bus, check=True)
    machine.ca.write_text(json.loads(r.stdout)["data"])


def status_of(pid):
    return dict(line.split(":", 1) for line in open(f"/proc/{pid}/status").read().splitlines() if ":" in line)


def test_units_run_sandboxed(machine):
    """The controller came up by bus activation (the ca fixture's call), the bridge by its socket; each runs
    with the bounding set, no_new_privs and system call filter its unit says."""
    wait_active(machine, "pureboot-controller.service")
    controller = status_of(machine.main_pid("pureboot-controller.service"))
    assert int(controller["CapBnd"], 16) == sum(1 << c for c in CAP.values()), controller["CapBnd"]
    assert controller["NoNewPrivs"].strip() == "1" and controller["Seccomp"].strip() == "2"
    # The bridge starts at its socket's first connection.
    sh("curl", "-sf", "--cacert", machine.ca, "-X", "POST", f"{machine.url}/call/org.varlink.service.GetInfo")
    wait_active(machine, "pureboot-bridge.service")
    bridge = status_of(machine.main_pid("pureboot-bridge.service"))
    assert int(bridge["CapBnd"], 16) == 0 and int(bridge["CapEff"], 16) == 0
    assert bridge["NoNewPrivs"].strip() == "1" and bridge["Seccomp"].strip() == "2"
    uid = machine.run("id", "-u", "pureboot-bridge", check=True).stdout.strip()
    assert bridge["Uid"].split()[0] == uid
    # What systemd-analyze says of the units it runs (the README quotes the offline figures).
    for unit in ("pureboot-controller.service", "pureboot-bridge.service"):
        out = machine.run("systemd-analyze", "security", "--no-pager", unit, check=True).stdout
        score = float(out.rsplit("Overall exposure level for", 1)[1].split(":")[1].split()[0])
        print(f"\nsystemd-analyze security (running): {unit} exposure {score}")
        assert score <= 3.0


@pytest.fixture
def staged(tmp_path, ctl, api, machine):
    made, loops = [], []

    def make(storage, tag):
        source, files = make_source_disk(tmp_path)
        loops.append(source)
        target = make_random_disk(tmp_path, "target", os.path.getsize(source.backing))
        loops.append(target)
        c = Clone(tmp_path, ctl, api, machine.network, machine, source.device, target.device, mode="staged",
                  storage=storage, tag=tag)
        made.append(c)
        return c, source, target, files
    yield make
    try:
        for c in made:
            c.stop()
    finally:
        for loop in loops:
            loop.detach()


def test_staged_clone_through_nfs(staged, ctl, machine, tmp_path):
    """The controller's own NFS client (libnfs) reaches the server from inside the sandbox, and the agents
    reach the socket-activated bridge: a staged clone end to end."""
    add_storage(ctl, "ganesha", "nfs", machine.nfs.config())
    r = ctl("storage", "test", "ganesha", check=True)
    assert "probe file was written, read back and removed" in r.stdout
    c, source, target, files = staged("ganesha", "n")
    c.source.start()
    assert c.source.wait(120) == 0, c.source.text()
    c.target.start()
    assert c.target.wait(120) == 0, c.target.text()
    c.wait_status("completed")
    sh("cmp", source.device, target.device)
    check_files(target, files, tmp_path)


def test_managed_luns_need_a_writable_backing_dir(staged, ctl, machine):
    """A backing_dir outside the unit's ReadWritePaths= is refused with what to do; once the operator's
    drop-in adds it, tgtadm (run from the sandbox, talking to tgtd's socket) serves a LUN on a file there."""
    luns = machine.shared / "luns"
    luns.mkdir()
    add_storage(ctl, "tgt", "iscsi", machine.iscsi.config(manage="tgtadm", backing_dir=luns))
    r = ctl("storage", "test", "tgt", check=True)
    assert "tgtd on this host serves it" in r.stdout, r.stdout
    before = machine.iscsi.luns()
    c, source, target, files = staged("tgt", "i")
    c.source.start()
    c.wait_status("failed")
    error = c.prop("Error")
    assert "Read-only file system" in error and "ReadWritePaths=" in error, error
    assert list(luns.iterdir()) == [] and machine.iscsi.luns() == before
    c.stop()

    machine.write("/etc/systemd/system/pureboot-controller.service.d/50-luns.conf",
                  f"[Service]\nReadWritePaths={luns}\n")
    machine.run("systemctl", "daemon-reload", check=True)
    machine.run("systemctl", "restart", "pureboot-controller.service", check=True)
    c, source, target, files = staged("tgt", "j")
    c.source.start()
    assert c.source.wait(120) == 0, c.source.text()
    assert [p.name for p in luns.iterdir()] == [f"pureboot-{c.id}.img"]
    assert len(machine.iscsi.luns()) == len(before) + 1
    c.target.start()
    assert c.target.wait(120) == 0, c.target.text()
    c.wait_status("completed")
    sh("cmp", source.device, target.device)
    wait_for(lambda: c.prop("StagingStatus") == "deleted", what="the staging to be removed")
    assert list(luns.iterdir()) == [] and machine.iscsi.luns() == before


def test_image_import_and_export_in_the_sandbox(ctl, machine, tmp_path):
    """ImportImage under the unit's sandbox: the agent it runs restores a Clonezilla image with sfdisk and
    partclone.restore in the unit's private /var/tmp and uploads it through libnfs; Verify reads it back, and
    Export writes it into a file purebootctl made on the host."""
    add_storage(ctl, "shelf", "nfs", machine.nfs.config())
    source, _ = make_source_disk(tmp_path)
    try:
        cz = clonezilla_image(tmp_path / "clonezilla", source)
        ctl("image", "import", "sandboxed", cz, "--storage=shelf", check=True)
        assert "is whole" in ctl("image", "verify", "sandboxed", check=True).stdout
        exported = tmp_path / "sandboxed.pbimg"
        ctl("image", "export", "sandboxed", exported, check=True)
        assert exported.read_bytes().startswith(b"PureBoot image 1\n")
        ctl("image", "delete", "sandboxed", check=True)
    finally:
        source.detach()


def test_nfsroot_keeps_owners_modes_and_capabilities(ctl, machine, tmp_path):
    """Imports restore owners, modes and extended attributes in /srv/nfsroot; file capabilities go unless
    asked for, like setuid bits; a Pi's overlay gets the modes a root needs whatever the unit's umask."""
    root = busybox_root(tmp_path)
    sh("setcap", "cap_net_raw+ep", root / "bin/busybox")
    archive = tmp_path / "root.tar"
    sh("tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-cf", archive, "-C", root, ".")
    r = ctl("nfsroot", "import", "plain", archive, check=True)
    assert "Cleared the setuid/setgid bits or file capabilities of 1 file" in r.stdout + r.stderr, r.stdout + r.stderr
    r = ctl("nfsroot", "import", "privileged", archive, "--keep-setuid", check=True)
    for name, caps in (("plain", ""), ("privileged", "cap_net_raw=ep")):
        image = machine.path(f"/srv/nfsroot/base/{name}")
        st = (image / "etc/secret").stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1234, 5678, 0o640)
        assert os.getxattr(image / "etc/secret", "user.pureboot") == b"xattr-kept"
        assert (image / "tmp").stat().st_mode & 0o7777 == 0o1777
        assert sh("getcap", image / "bin/busybox").stdout.split()[1:] == ([caps] if caps else []), name
    ctl("nfsroot", "create", "1234abcd", "plain", "kitchen-pi", check=True)
    node = machine.path("/srv/nfsroot/nodes/1234abcd")
    for rel, mode in (("upper", 0o755), ("work", 0o755), ("upper/etc", 0o755), ("upper/etc/hostname", 0o644),
                      ("upper/etc/machine-id", 0o644)):
        assert (node / rel).stat().st_mode & 0o7777 == mode, rel


def test_bridge_starts_again_after_losing_the_bus(ctl, machine, tmp_path):
    """The bus restarts: the bridge, which could only answer 503 without it, exits non-zero and systemd
    starts it again (Restart=on-failure); nodes are served again."""
    sh("curl", "-sf", "--cacert", machine.ca, "-X", "POST", f"{machine.url}/call/org.varlink.service.GetInfo")
    wait_active(machine, "pureboot-bridge.service")
    before = int(machine.show("pureboot-bridge.service", "NRestarts")["NRestarts"])
    machine.restarted.add("pureboot-bridge.service")
    machine.run("systemctl", "restart", "dbus.service", check=True)
    wait_for(lambda: int(machine.show("pureboot-bridge.service", "NRestarts")["NRestarts"]) > before, timeout=30,
             what="systemd to start the bridge again")
    wait_active(machine, "pureboot-bridge.service")
    # Served again, with the controller behind it (bus-activated anew if it went with the bus): an unknown
    # token is the controller's answer (403), a bridge without a bus could only say 503.
    _, csr = make_key_and_csr(tmp_path, "node")
    body = json.dumps({"token": "not-a-token-" + "0" * 32, "csr": csr.read_text()})
    deadline = time.monotonic() + 30
    while True:
        r = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", "--cacert", machine.ca, "-X", "POST", "-d", body,
                            f"{machine.url}/call/org.pureboot.Node.Enrol"], capture_output=True, text=True)
        if r.stdout.endswith("\n403") and "InvalidToken" in r.stdout:
            break
        assert time.monotonic() < deadline, f"the bridge answers {r.stdout} after the bus came back"
        time.sleep(0.5)
    assert ctl("clone", "list", check=True).returncode == 0
