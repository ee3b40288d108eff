# SPDX-License-Identifier: MIT
"""Diskless nodes against the real controller: base images imported from real tarballs (and hostile ones
refused with nothing written outside the root), overlays per Pi serial, the Pi boot answer through the bridge,
and deploy/pi-nfsroot run in a private mount namespace against the NFS root directory."""

import io
import json
import os
import shutil
import subprocess
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import dbus
import pytest

from harness import BRIDGE, DEST, REPO, ROOT, Bridge
from nodes import busybox_root, tar_of
from test_boot import get

NFSROOT = f"{ROOT}/nfsroot"
SCRIPT = REPO / "deploy/pi-nfsroot/pureboot-nfsroot"


@pytest.fixture
def nfs(controller, system_bus):
    """The NfsRoot object through python-dbus (which can pass file descriptors, as purebootctl does)."""
    bus = dbus.bus.BusConnection(system_bus.env["DBUS_SYSTEM_BUS_ADDRESS"])
    obj = bus.get_object(DEST, NFSROOT)
    iface = dbus.Interface(obj, f"{DEST}.NfsRoot")
    iface.path = Path(controller.dir / "nfsroot")
    iface.props = lambda name: obj.Get(f"{DEST}.NfsRoot", name, dbus_interface="org.freedesktop.DBus.Properties")
    yield iface
    bus.close()


def hostile(path, members):
    """A tar with the members given as (TarInfo fields, data)."""
    with tarfile.open(path, "w") as t:
        for fields, data in members:
            info = tarfile.TarInfo(fields.pop("name"))
            for k, v in fields.items():
                setattr(info, k, v)
            info.size = len(data or b"")
            t.addfile(info, io.BytesIO(data) if data else None)
    return path


def import_fd(nfs, name, path):
    with open(path, "rb") as f:
        nfs.ImportBaseImage(name, dbus.types.UnixFd(f), dbus.Dictionary({}, signature="sv"), timeout=120)


def test_serials_are_checked(nfs, tmp_path):
    import_fd(nfs, "base1", tar_of(busybox_root(tmp_path), tmp_path / "r.tar"))
    bad = ["../etc", "1234567", "123456789", "1234567g", "", "12 34567", "/1234567", "1234abc\n", "ABCDEF1/"]
    for serial in bad:
        with pytest.raises(dbus.DBusException) as e:
            nfs.CreateNodeOverlay(serial, "base1", "", dbus.Dictionary({}, signature="sv"))
        assert e.value.get_dbus_name() == f"{DEST}.Error.InvalidArgument" and "8 hex digits" in str(e.value), serial
    assert list(nfs.props("Nodes")) == []
    assert not any((nfs.path / "nodes").iterdir())
    nfs.CreateNodeOverlay("1234ABCD", "base1", "", dbus.Dictionary({}, signature="sv"))
    assert list(nfs.props("Nodes")) == ["1234abcd"]
    with pytest.raises(dbus.DBusException) as e:
        nfs.CreateNodeOverlay("1234abcd", "base1", "", dbus.Dictionary({}, signature="sv"))
    assert "AlreadyExists" in e.value.get_dbus_name()
    with pytest.raises(dbus.DBusException) as e:
        nfs.CreateNodeOverlay("1234abce", "nope", "", dbus.Dictionary({}, signature="sv"))
    assert "NoSuchBaseImage" in e.value.get_dbus_name()
    with pytest.raises(dbus.DBusException) as e:
        nfs.CreateNodeOverlay("1234abce", "base1", "bad_host!", dbus.Dictionary({}, signature="sv"))
    assert "not a host name" in str(e.value)


@pytest.mark.parametrize("compress", ["", "gz", "zst"])
def test_import_a_real_root(nfs, ctl, tmp_path, compress):
    archive = tar_of(busybox_root(tmp_path), tmp_path / f"root.tar{'.' + compress if compress else ''}", compress)
    # Through purebootctl, which passes the file as a descriptor.
    r = ctl("nfsroot", "import", "bookworm-min", archive)
    assert r.returncode == 0, r.stderr
    image = nfs.path / "base/bookworm-min"
    assert (image / "bin/busybox").stat().st_mode & 0o111
    assert os.readlink(image / "bin/sh") == "busybox" and os.readlink(image / "sbin/init") == "../bin/busybox"
    secret = image / "etc/secret"
    st = secret.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1234, 5678, 0o640)
    assert os.getxattr(secret, "user.pureboot") == b"xattr-kept"
    assert (image / "tmp").stat().st_mode & 0o7777 == 0o1777
    assert list(nfs.ListBaseImages()) == ["bookworm-min"] == list(nfs.props("BaseImages"))
    assert subprocess.run([image / "bin/busybox", "true"]).returncode == 0
    # A name is never replaced.
    r = ctl("nfsroot", "import", "bookworm-min", archive)
    assert r.returncode != 0 and "exists already" in r.stderr
    assert not [p for p in (nfs.path / "base").iterdir() if p.name.startswith(".import-")]


# Each hostile tarball would land something in OUT (the test's directory/outside, which exists with a file
# victim in it) if extracted without libarchive's protections, and each is refused for its own reason. The
# import extracts into <nfsroot>/base/.import-<name>-XXXXXX, which is OUT/../nfsroot/base/…: three ".." from
# there is the test's directory.
HOSTILE = {
    "absolute path": ([({"name": "{out}/escaped-abs"}, b"x")], "escaped-abs", "Path is absolute"),
    "dot-dot": ([({"name": "etc"}, None), ({"name": "etc/../../../../outside/escaped-dotdot"}, b"x")],
                "escaped-dotdot", "Path contains '..'"),
    "symlink to a directory outside, then a file through it": (
        [({"name": "link", "type": tarfile.SYMTYPE, "linkname": "{out}"}, None),
         ({"name": "link/escaped-symlink"}, b"x")], "escaped-symlink", "symlink"),
    "symlink out by dot-dot, then a file through it": (
        [({"name": "up", "type": tarfile.SYMTYPE, "linkname": "../../../outside"}, None),
         ({"name": "up/escaped-up"}, b"x")], "escaped-up", "symlink"),
    "hardlink to a file outside": ([({"name": "hl", "type": tarfile.LNKTYPE, "linkname": "{out}/victim"}, None)],
                                   None, "Path is absolute"),
    "hardlink out by dot-dot": ([({"name": "hl", "type": tarfile.LNKTYPE, "linkname": "../../../outside/victim"},
                                  None)], None, "Path contains '..'"),
}


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_hostile_tarballs_are_refused(nfs, tmp_path, kind):
    members, escaped, reason = HOSTILE[kind]
    out = tmp_path / "outside"
    out.mkdir()
    assert nfs.path.parent == tmp_path  # where the ".." above lead
    victim = out / "victim"
    victim.write_text("not to be linked\n")
    members = [({k: v.format(out=out) if isinstance(v, str) else v for k, v in f.items()}, d) for f, d in members]
    archive = hostile(tmp_path / "evil.tar", members)
    with pytest.raises(dbus.DBusException) as e:
        nfs.ImportBaseImageFile("evil", str(archive), dbus.Dictionary({}, signature="sv"), timeout=60)
    assert "was not imported" in str(e.value) and "Nothing of it was kept" in str(e.value), str(e.value)
    assert reason in str(e.value), str(e.value)
    assert sorted(p.name for p in out.iterdir()) == ["victim"], "something was written outside the root"
    assert victim.stat().st_nlink == 1, "a hard link to a file outside the root was made"
    assert escaped is None or not (out / escaped).exists()
    assert list(nfs.ListBaseImages()) == []
    assert [p.name for p in (nfs.path / "base").iterdir()] == []


def test_overlays_created_listed_and_deleted(nfs, ctl, tmp_path):
    import_fd(nfs, "base1", tar_of(busybox_root(tmp_path), tmp_path / "r.tar"))
    nfs.CreateNodeOverlay("cafe0001", "", "", dbus.Dictionary({}, signature="sv"))  # the only base
    ctl("nfsroot", "create", "CAFE0002", "base1", "kitchen-pi", check=True)
    nodes = nfs.path / "nodes"
    ids = set()
    for serial, host in (("cafe0001", "pi-cafe0001"), ("cafe0002", "kitchen-pi")):
        for d in ("upper", "work", "merged"):
            assert (nodes / serial / d).is_dir()
        assert (nodes / serial / "upper/etc/hostname").read_text() == host + "\n"
        mid = (nodes / serial / "upper/etc/machine-id").read_text().strip()
        assert len(mid) == 32 and all(c in "0123456789abcdef" for c in mid)
        ids.add(mid)
        info = nfs.GetNodeInfo(serial)
        assert (str(info[0]), str(info[1]), str(info[2]), str(info[3])) == (serial, "base1", host, mid)
    assert len(ids) == 2
    assert str(nfs.GetOverlayMountOptions("CAFE0002", "base1")) == (
        f"lowerdir={nfs.path}/base/base1,upperdir={nodes}/cafe0002/upper,workdir={nodes}/cafe0002/work")
    show = ctl("nfsroot", "show", "cafe0002", check=True).stdout
    assert "kitchen-pi" in show and "lowerdir=" in show
    listing = ctl("nfsroot", "list", check=True).stdout
    assert "base1" in listing and "cafe0001" in listing and "cafe0002" in listing
    ctl("nfsroot", "delete", "cafe0001", check=True)
    assert list(nfs.props("Nodes")) == ["cafe0002"] and not (nodes / "cafe0001").exists()
    r = ctl("nfsroot", "delete", "cafe0001")
    assert r.returncode != 0 and "has no overlay" in r.stderr


def test_nfsroot_interface_matches_its_xml(nfs, busctl):
    xml = ET.parse(REPO / "dbus" / f"{DEST}.NfsRoot.xml").getroot().find("interface")
    live = ET.fromstring(busctl("introspect", "--xml-interface", DEST, NFSROOT, check=True).stdout)
    iface = [i for i in live.findall("interface") if i.get("name") == f"{DEST}.NfsRoot"][0]
    sig = lambda i: {(m.get("name"), tuple((a.get("type"), a.get("direction", "in")) for a in m.findall("arg")))
                     for m in i.findall("method")} | {(p.get("name"), p.get("type")) for p in i.findall("property")}
    assert sig(iface) == sig(xml)


def run_script(nfsroot, serial, target, *extra):
    """deploy/pi-nfsroot in this (private) mount namespace: returns the CompletedProcess."""
    cmdline = target.parent / f"cmdline-{serial}"
    cmdline.write_text(f"console=serial0 pureboot.serial={serial} {' '.join(extra)}\n")
    return subprocess.run(["sh", SCRIPT, "--source", nfsroot, "--target", target, "--cmdline", cmdline,
                           "--no-switch-root", "--no-shell"], capture_output=True, text=True)


def test_initramfs_script_in_a_private_mount_namespace(nfs, tmp_path):
    import_fd(nfs, "base1", tar_of(busybox_root(tmp_path), tmp_path / "r.tar"))
    base = nfs.path / "base/base1"
    before = subprocess.run(["find", base, "-printf", "%p %s %m %U\n"], capture_output=True, text=True).stdout
    # One private mount namespace for the whole check: the mounts the script makes go with it.
    check = tmp_path / "check.py"
    check.write_text(f'''
import subprocess, sys
from pathlib import Path
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_nfsroot import run_script
subprocess.run(["mount", "--make-rprivate", "/"], check=True)
nfsroot, tmp = Path({str(nfs.path)!r}), Path({str(tmp_path)!r})
for serial in ("d00d0001", "D00D0002"):
    target = tmp / f"root-{{serial}}"
    r = run_script(nfsroot, serial, target, "pureboot.base=base1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(target)
    (target / "etc/written-by-the-pi").write_text(serial)
    assert (target / "etc/os-release").read_text() == "NAME=PureBoot test root\\n"
    assert (target / "bin/busybox").exists()
    print(serial, (target / "etc/hostname").read_text().strip(), (target / "etc/machine-id").read_text().strip())
r = run_script(nfsroot, "12345", tmp / "root-bad")
assert r.returncode == 1 and "not a Raspberry Pi serial" in r.stderr, r.stderr
r = run_script(nfsroot, "d00d0003", tmp / "root-nobase", "pureboot.base=missing")
assert r.returncode == 1 and 'no base image "missing"' in r.stderr, r.stderr
''')
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "/usr/bin/python3", check],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [l.split() for l in r.stdout.splitlines()]
    assert [l[:2] for l in lines] == [["d00d0001", "pi-d00d0001"], ["D00D0002", "pi-d00d0002"]]
    assert lines[0][2] != lines[1][2] and all(len(l[2]) == 32 for l in lines)
    # Writes landed in each Pi's upper directory; the base did not change.
    for serial in ("d00d0001", "d00d0002"):
        assert (nfs.path / f"nodes/{serial}/upper/etc/written-by-the-pi").read_text().lower() == serial
    assert not (base / "etc/written-by-the-pi").exists()
    after = subprocess.run(["find", base, "-printf", "%p %s %m %U\n"], capture_output=True, text=True).stdout
    assert after == before
    # The controller sees the overlays the Pis made for themselves.
    assert sorted(nfs.props("Nodes")) == ["d00d0001", "d00d0002"]
    assert str(nfs.GetNodeInfo("d00d0002")[2]) == "pi-d00d0002"
    # Nothing of it is left mounted here.
    assert str(tmp_path) not in Path("/proc/self/mounts").read_text()


@pytest.fixture
def workflows_dir():
    """A directory the bridge's user can read (pytest's own are root's alone)."""
    import tempfile
    d = Path(tempfile.mkdtemp(prefix="pureboot-workflows-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d)


def test_pi_boot_answer_through_the_bridge(controller, nfs, api, ctl, tmp_path, workflows_dir):
    workflows = workflows_dir
    for w in list((REPO / "workflows").glob("*.yaml")) + list((REPO / "workflows/examples").glob("*.yaml")):
        shutil.copy(w, workflows / w.name)
    r = subprocess.run([BRIDGE, f"--check-workflows={REPO / 'workflows/examples'}"], capture_output=True, text=True)
    assert r.returncode == 0 and "2 workflows" in r.stdout, r.stdout + r.stderr
    import_fd(nfs, "base1", tar_of(busybox_root(tmp_path), tmp_path / "r.tar"))
    bridge = Bridge(controller.bus, tmp_path, f"--workflows={workflows}").start()
    try:
        # A known Pi set to boot diskless.
        node = api.ok(ROOT, "Manager", "RegisterNode", "sssa{sv}", "pi-lab-1", "dc:a6:32:00:00:01", "arm64", "1",
                      "serial", "s", "5EED0001")[0]
        ctl("node", "set-mode", "pi-lab-1", "nfs", check=True)
        assert api.prop(node, "Node", "BootWorkflow") == "pi-diskless-nfs"
        status, body = get(bridge, "/boot/pi?serial=5eed0001&mac=dc:a6:32:00:00:01")
        assert status == 200, body
        answer = json.loads(body)
        assert answer["action"] == "nfs_boot" and answer["workflow"] == "pi-diskless-nfs"
        assert answer["nfs_server"] == "192.0.2.10" and answer["nfs_path"] == "/srv/nfsroot"
        assert "pureboot.nfsroot=192.0.2.10:/srv/nfsroot" in answer["cmdline"]
        assert "pureboot.serial=5eed0001" in answer["cmdline"] and "pureboot.base=base1" in answer["cmdline"]
        assert answer["kernel"] == "pi/kernel8.img"
        # The k3s worker is another workflow on the same root.
        api.ok(node, "Node", "SetBootMode", "sa{sv}", "nfs", "1", "workflow", "s", "pi-k3s-worker")
        answer = json.loads(get(bridge, "/boot/pi?serial=5eed0001")[1])
        assert answer["workflow"] == "pi-k3s-worker" and "cgroup_enable=memory" in answer["cmdline"]
        # An unknown Pi is registered by its serial; it boots locally until told otherwise.
        answer = json.loads(get(bridge, "/boot/pi?serial=5EED0002")[1])
        assert answer["action"] == "local_boot"
        nodes = {n[1]: n for n in api.ok(ROOT, "Manager", "ListNodes")[0]}
        assert nodes["pi-5eed0002"][5] == "5eed0002"
    finally:
        bridge.stop()


def test_new_pis_boot_diskless_when_configured(system_bus, tmp_path, api, workflows_dir):
    from harness import Controller
    c = Controller(system_bus, tmp_path)
    c.config.write_text(f"[CA]\nKeyAlgorithm=ecdsa-p256\n[NfsRoot]\nPath={tmp_path / 'nfsroot'}\n"
                        "Workflow=pi-diskless-nfs\n")
    c.start()
    workflows = workflows_dir
    shutil.copy(REPO / "workflows/examples/pi-diskless-nfs.yaml", workflows)
    bridge = Bridge(system_bus, tmp_path, f"--workflows={workflows}").start()
    try:
        answer = json.loads(get(bridge, "/boot/pi?serial=5EED0003&mac=dc:a6:32:00:00:03")[1])
        assert answer["action"] == "nfs_boot" and "pureboot.serial=5eed0003" in answer["cmdline"]
        nodes = {n[1]: n for n in api.ok(ROOT, "Manager", "ListNodes")[0]}
        assert nodes["pi-5eed0003"][4] == "active"
    finally:
        bridge.stop()
        assert c.stop() == 0
