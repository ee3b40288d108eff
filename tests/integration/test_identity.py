# SPDX-License-Identifier: MIT
"""A clone's own identity (issue 21, first part): after a direct clone of a disk with a Linux root, the
target's root has its node's host name, an empty machine-id and new SSH host keys, while the source is
untouched and every file is copied; with identity none the clone is an exact copy. Real loop devices,
ext4, agents in namespaces."""

import json
from pathlib import Path

from harness import wait_for
from nodes import Clone, check_root_last_disk, make_blank_disk, make_root_last_disk, sh

ROOT_FILES = {
    "etc/os-release": 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n',
    "etc/hostname": "src-node\n",
    "etc/machine-id": "0123456789abcdef0123456789abcdef\n",
    "var/lib/dbus/machine-id": "0123456789abcdef0123456789abcdef\n",
}


def make_linux_source(tmp_path, loops):
    """The installer-like disk of make_root_last_disk, its root made a Linux system's: os-release, a host
    name, a machine-id and SSH host keys."""
    source, files = make_root_last_disk(tmp_path, loops, data_files=2)
    mnt = tmp_path / "root"
    mnt.mkdir()
    sh("mount", source.partition(2), mnt)
    try:
        for path, content in ROOT_FILES.items():
            (mnt / path).parent.mkdir(parents=True, exist_ok=True)
            (mnt / path).write_text(content)
        (mnt / "etc/ssh").mkdir()
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", mnt / "etc/ssh/ssh_host_ed25519_key")
        (tmp_path / "source-keys").mkdir()
        for key in (mnt / "etc/ssh").iterdir():
            sh("cp", key, tmp_path / "source-keys" / key.name)
    finally:
        sh("umount", mnt)
    return source, files


def run(c):
    c.source.start()
    c.target.start()
    c.wait_status("completed", "failed", timeout=180)
    assert c.status() == "completed", (c.prop("Error"), c.target.text()[-3000:])
    assert c.target.wait(60) == 0, c.target.text()
    assert c.source.wait(60) == 0, c.source.text()


def read_root(loop, mnt):
    """{path: content} of the identity files, and the SSH host key files, of the disk's root."""
    loop.scan_partitions()
    wait_for(lambda: Path(loop.partition(2)).exists(), timeout=5, what=f"{loop.partition(2)} to appear")
    sh("mount", "-o", "ro", loop.partition(2), mnt)
    try:
        found = {p: (mnt / p).read_text() if (mnt / p).exists() else None for p in ROOT_FILES}
        keys = {k.name: k.read_bytes() for k in (mnt / "etc/ssh").glob("ssh_host_*")}
    finally:
        sh("umount", mnt)
    return found, keys


SEED = "instance-id: tgt-node\nlocal-hostname: tgt-node\n"


def test_a_clone_gets_its_own_identity(tmp_path, ctl, api, network, bridge_on_network, loops):
    """...and the files its session gave its target: one replacing the source's, one in directories the
    source does not have (a cloud-init seed)."""
    source, files = make_linux_source(tmp_path, loops)
    target = make_blank_disk(tmp_path, loops, "target", 1 << 30)
    c = Clone(tmp_path, ctl, api, network, bridge_on_network, source.device, target.device, tag="i",
              create_args=("--set-file=/etc/hostname=overridden by the identity\n", "--set-file=/etc/motd=Lab 3\n",
                           f"--set-file=/var/lib/cloud/seed/nocloud/meta-data={SEED}"))
    try:
        assert c.prop("Identity") == "auto"
        # The paths are shown; what they hold is for the clone alone.
        assert sorted(api.prop(f"{c.path}/target/1", "CloneTarget", "Files")) == \
            ["/etc/hostname", "/etc/motd", "/var/lib/cloud/seed/nocloud/meta-data"]
        run(c)
        assert "The clone's own identity on" in c.target.text()
        assert "host name tgt-node, machine-id emptied, new SSH host keys, 3 files written" in c.target.text()
        # Clone roles report what their machine is too, for the node their session names.
        for node, device in (("src-node", source.device), ("tgt-node", target.device)):
            path = api.ok("/org/pureboot/Controller1", "Manager", "GetNode", "s", node)[0]
            disks = json.loads(api.prop(path, "Node", "Hardware"))["disks"]
            assert device in [d["device"] for d in disks], (node, disks)
    finally:
        c.stop()
    mnt = tmp_path / "check"
    mnt.mkdir()
    target.scan_partitions()
    wait_for(lambda: Path(target.partition(2)).exists(), timeout=5, what="the target's root to appear")
    sh("mount", "-o", "ro", target.partition(2), mnt)
    try:
        assert (mnt / "etc/motd").read_text() == "Lab 3\n"
        assert (mnt / "var/lib/cloud/seed/nocloud/meta-data").read_text() == SEED
        # Modes as asked for, whatever the agent's umask: readable to the services that read them.
        assert oct((mnt / "var/lib/cloud/seed/nocloud/meta-data").stat().st_mode & 0o777) == "0o644"
        assert oct((mnt / "var/lib/cloud/seed").stat().st_mode & 0o777) == "0o755"
        assert oct((mnt / "etc/machine-id").stat().st_mode & 0o777) == "0o444"
        # The session's files come after the identity: the operator's word is the last.
        assert (mnt / "etc/hostname").read_text() == "overridden by the identity\n"
    finally:
        sh("umount", mnt)
    ident, keys = read_root(target, mnt)
    assert ident["etc/machine-id"] == ""  # a new one at first boot
    assert ident["var/lib/dbus/machine-id"] is None
    assert ident["etc/os-release"] == ROOT_FILES["etc/os-release"]
    source_keys = {k.name: k.read_bytes() for k in (tmp_path / "source-keys").iterdir()}
    assert keys and "ssh_host_ed25519_key" in keys, sorted(keys)
    assert keys["ssh_host_ed25519_key"] != source_keys["ssh_host_ed25519_key"]
    # The source is as it was, and every file was copied.
    ident, keys = read_root(source, mnt)
    assert ident == ROOT_FILES and keys == source_keys
    check_root_last_disk(target, files, tmp_path, (1024 - 66) << 20)


def test_identity_none_is_an_exact_copy(tmp_path, ctl, api, network, bridge_on_network, loops):
    source, _ = make_linux_source(tmp_path, loops)
    target = make_blank_disk(tmp_path, loops, "target", 1 << 30)
    r = ctl("clone", "create", "--name=bad", "--mode=direct", "--source=src-node", "--target=tgt-node",
            "--source-device=/dev/sda", "--target-device=/dev/sdb", "--identity=someone")
    assert r.returncode != 0 and "Unknown identity" in r.stderr and "use auto" in r.stderr, r.stderr
    # Files go with the identity; where they would go must be a file of the clone's own.
    create = ("clone", "create", "--name=bad", "--mode=direct", "--source=src-node", "--target=tgt-node",
              "--source-device=/dev/sda", "--target-device=/dev/sdb")
    refusals = {("--identity=none", "--set-file=/etc/motd=x"): "use identity auto, or give no files",
                ("--set-file=etc/motd=x",): "PATH absolute",
                ("--set-file=/etc/../../motd=x",): "without \"..\"",
                ("--set-file=/proc/sys/kernel/hostname=x",): "outside /proc, /sys, /dev and /run",
                ("--set-file=/etc/=x",): "absolute path of a file",
                tuple(f"--set-file=/etc/f{i}=x" for i in range(33)): "at most 32 files",
                # Eleven of 100 KiB (one argument holds at most 128 KiB).
                tuple(f"--set-file=/big{i}=" + "x" * (100 << 10) for i in range(11)): "at most 1048576 are taken"}
    for args, why in refusals.items():
        r = ctl(*create, *args)
        assert r.returncode != 0 and why in r.stderr, (args[0][:40], r.stderr)
    assert ctl("clone", "list", "--json=short", check=True).stdout.strip() in ("", "[]")
    c = Clone(tmp_path, ctl, api, network, bridge_on_network, source.device, target.device, tag="n",
              create_args=("--identity=none",))
    try:
        assert c.prop("Identity") == "none"
        run(c)
        assert "stays an exact copy (identity none)" in c.target.text()
    finally:
        c.stop()
    sh("cmp", source.device, target.device)


def test_the_clones_own_links_stay_inside_it(tmp_path, ctl, api, network, bridge_on_network, loops):
    """A root whose /etc is a symbolic link to an absolute path: the identity is written where the clone
    will find it when it boots (inside its own root), never at that path on the machine the agent runs on."""
    outside = tmp_path / "outside-etc"
    outside.mkdir()
    (outside / "hostname").write_text("not-to-be-touched\n")
    source, _ = make_root_last_disk(tmp_path, loops, data_files=1)
    mnt = tmp_path / "root"
    mnt.mkdir()
    sh("mount", source.partition(2), mnt)
    try:
        inside = mnt / str(outside).lstrip("/")
        inside.mkdir(parents=True)
        (inside / "os-release").write_text(ROOT_FILES["etc/os-release"])
        (inside / "hostname").write_text("src-node\n")
        (mnt / "etc").symlink_to(outside)  # absolute, as a root's own links are
    finally:
        sh("umount", mnt)
    target = make_blank_disk(tmp_path, loops, "target", 1 << 30)
    c = Clone(tmp_path, ctl, api, network, bridge_on_network, source.device, target.device, tag="l",
              create_args=("--set-file=/etc/issue=inside\n",))
    try:
        run(c)
    finally:
        c.stop()
    assert (outside / "hostname").read_text() == "not-to-be-touched\n"
    assert not (outside / "issue").exists()
    target.scan_partitions()
    wait_for(lambda: Path(target.partition(2)).exists(), timeout=5, what="the target's root to appear")
    sh("mount", "-o", "ro", target.partition(2), mnt)
    try:
        assert (mnt / str(outside).lstrip("/") / "hostname").read_text() == "tgt-node\n"
        assert (mnt / str(outside).lstrip("/") / "issue").read_text() == "inside\n"
    finally:
        sh("umount", mnt)
