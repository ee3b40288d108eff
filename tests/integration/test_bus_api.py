# SPDX-License-Identifier: MIT
"""The D-Bus API against its contract: the introspection XML in dbus/, and every method called through
busctl on the real bus."""

import json
import subprocess
import time
import xml.etree.ElementTree as ET

from harness import DEST, REPO, ROOT, add_image_row, wait_for

INTERFACES = {
    "Manager": lambda ids: ROOT,
    "CloneSession": lambda ids: f"{ROOT}/clone/{ids['session']}",
    "CloneTarget": lambda ids: f"{ROOT}/clone/{ids['session']}/target/1",
    "Node": lambda ids: f"{ROOT}/node/{ids['node']}",
    "StorageBackend": lambda ids: f"{ROOT}/storage/{ids['storage']}",
    "Image": lambda ids: f"{ROOT}/image/{ids['image']}",
    "CertificateAuthority": lambda ids: f"{ROOT}/ca",
    "NfsRoot": lambda ids: f"{ROOT}/nfsroot",
    "Gateway": lambda ids: ROOT,
}
# What administrators call; the Gateway is the bridge's (test_gateway.py). Disks exist only once a node
# reported a scan: test_partition.py checks them.
PUBLIC = [name for name in INTERFACES if name != "Gateway"]


def members(iface):
    """A comparable description of an <interface>: methods with typed, named, directed args; properties
    with type, access and change annotation; signals with args."""
    out = set()
    for m in iface.findall("method"):
        out.add(("method", m.get("name"),
                 tuple((a.get("name"), a.get("type"), a.get("direction", "in")) for a in m.findall("arg"))))
    for s in iface.findall("signal"):
        out.add(("signal", s.get("name"), tuple((a.get("name"), a.get("type")) for a in s.findall("arg"))))
    for p in iface.findall("property"):
        emits = [a.get("value") for a in p.findall("annotation")
                 if a.get("name") == "org.freedesktop.DBus.Property.EmitsChangedSignal"]
        out.add(("property", p.get("name"), p.get("type"), p.get("access"), tuple(emits)))
    return out


def populate(api):
    node = api.node("web-01", "aa:bb:cc:00:00:01").rsplit("/", 1)[1]
    api.node("web-02", "aa:bb:cc:00:00:02")
    session = api.session("s1").rsplit("/", 1)[1]
    storage = api.ok(ROOT, "Manager", "CreateStorageBackend", "ssa{sv}a{sv}", "nfs1", "nfs", "2",
                     "server", "s", "127.0.0.1", "export", "s", "/srv/pureboot", "0")[0].rsplit("/", 1)[1]
    return {"node": node, "session": session, "storage": storage}


def test_introspection_matches_xml(controller, api, busctl):
    ids = populate(api)
    ids["image"] = add_image_row(controller, ids["storage"])
    for name, path in INTERFACES.items():
        full = f"{DEST}.{name}"
        xml_file = REPO / "dbus" / f"{full}.xml"
        expected = members(ET.parse(xml_file).getroot().find("interface"))
        live = busctl("introspect", "--xml-interface", DEST, path(ids), check=True).stdout
        found = [i for i in ET.fromstring(live).findall("interface") if i.get("name") == full]
        assert found, f"{path(ids)} does not implement {full}"
        actual = members(found[0])
        assert actual == expected, (f"{full} differs from {xml_file.name}: "
                                    f"missing {sorted(expected - actual)}, extra {sorted(actual - expected)}")


def test_busctl_introspect_shows_the_interfaces(controller, busctl):
    out = busctl("introspect", DEST, ROOT, check=True).stdout
    assert f"{DEST}.Manager" in out and "org.freedesktop.DBus.ObjectManager" in out
    tree = busctl("tree", DEST, check=True).stdout
    assert f"{ROOT}/ca" in tree


def test_every_method_through_busctl(controller, api, busctl, tmp_path):
    """Calls each method of every interface once, and checks that the list of calls covers the XML."""
    called = set()

    def ok(path, iface, method, sig="", *args):
        called.add(f"{iface}.{method}")
        return api.ok(path, iface, method, sig, *args)

    src = ok(ROOT, "Manager", "RegisterNode", "sssa{sv}", "src-01", "aa:bb:cc:00:01:01", "x86_64", "0")[0]
    ok(ROOT, "Manager", "RegisterNode", "sssa{sv}", "tgt-01", "aa:bb:cc:00:01:02", "arm64", "1",
             "serial", "s", "1234ABCD")[0]
    assert ok(ROOT, "Manager", "GetNode", "s", "src-01")[0] == src
    nodes = ok(ROOT, "Manager", "ListNodes")[0]
    assert sorted(n[1] for n in nodes) == ["src-01", "tgt-01"]
    assert [n[5] for n in nodes if n[1] == "tgt-01"] == ["1234abcd"]

    backend = ok(ROOT, "Manager", "CreateStorageBackend", "ssa{sv}a{sv}", "iscsi1", "iscsi", "5",
                 "portal", "s", "127.0.0.1:3260", "target", "s", "iqn.2026-01.org.pureboot:staging",
                 "chap_user", "s", "pb", "chap_secret", "s", "a-secret-of-16ch", "lun", "u", "1", "0")[0]
    assert ok(ROOT, "Manager", "GetStorageBackend", "s", "iscsi1")[0] == backend
    # Nothing serves iSCSI here: both connect for real and say so (test_staging.py has the real servers).
    for method in ("Test", "RefreshSpace"):
        called.add(f"StorageBackend.{method}")
        r = api.call(backend, "StorageBackend", method, "a{sv}", "0")
        assert r.returncode != 0 and "logging in to iqn.2026-01.org.pureboot:staging" in r.stderr, r.stderr
    assert [b[1] for b in ok(ROOT, "Manager", "ListStorageBackends")[0]] == ["iscsi1"]
    ok(backend, "StorageBackend", "Update", "a{sv}a{sv}", "2", "lun", "u", "3", "enabled", "b", "false", "0")
    config = api.prop(backend, "StorageBackend", "Config")
    assert config["lun"]["data"] == 3 and config["chap_secret_set"]["data"] is True
    assert "chap_secret" not in config
    assert api.prop(backend, "StorageBackend", "Enabled") is False

    session = ok(ROOT, "Manager", "CreateCloneSession", "ssssssa{sv}", "first", "direct", "src-01", "tgt-01",
                 "/dev/sda", "/dev/mmcblk0", "1", "resize_mode", "s", "grow_target")[0]
    assert ok(ROOT, "Manager", "GetCloneSession", "s", "first")[0] == session
    assert [s[1] for s in ok(ROOT, "Manager", "ListCloneSessions")[0]] == ["first"]
    ok(session, "CloneSession", "Update", "a{sv}a{sv}", "1", "target_device", "s", "/dev/mmcblk1", "0")
    assert api.prop(session, "CloneSession", "TargetDevice") == "/dev/mmcblk1"
    ok(session, "CloneSession", "Start", "a{sv}", "0")
    assert api.prop(session, "CloneSession", "Status") == "waiting"
    token = ok(session, "CloneSession", "IssueBootToken", "sa{sv}", "target", "0")[0]
    assert len(token) == 48
    # No disk was scanned or reported here: the plan calls each say what is missing (test_resize.py has disks).
    for method, sig, args, words in (("Analyze", "a{sv}", ("0",), "has no disk"),
                                     ("GetPlan", "", (), "no resize plan yet"),
                                     ("SetPlan", "sa{sv}", ('{"2": 1048576}', "0"), "has no disk")):
        called.add(f"CloneSession.{method}")
        r = api.call(session, "CloneSession", method, sig, *args)
        assert r.returncode != 0 and words in r.stderr, (method, r.stderr)
    assert api.prop(session, "CloneSession", "Plan") == ""
    # A second target (test_clone.py streams to two, test_staging.py downloads to two): it starts with its
    # session; a node takes part once.
    ok(ROOT, "Manager", "RegisterNode", "sssa{sv}", "tgt-02", "aa:bb:cc:00:01:03", "x86_64", "0")
    added = ok(session, "CloneSession", "AddTarget", "ssa{sv}", "tgt-02", "/dev/sdb", "0")[0]
    assert added == f"{session}/target/2" and api.prop(added, "CloneTarget", "Status") == "waiting"
    r = api.call(session, "CloneSession", "AddTarget", "ssa{sv}", "tgt-01", "/dev/sdb", "0")
    assert r.returncode != 0 and "is target 1 of session" in r.stderr, r.stderr
    ok(session, "CloneSession", "Cancel", "a{sv}", "0")
    assert api.prop(session, "CloneSession", "Status") == "cancelled"
    assert ok(session, "CloneSession", "Delete", "a{sv}", "0")[0] is True

    subprocess.run(["certtool", "--generate-privkey", "--key-type=ecdsa", "--outfile", tmp_path / "k.pem"],
                   check=True, capture_output=True)
    (tmp_path / "t.cfg").write_text('cn = "ignored"\n')
    subprocess.run(["certtool", "--generate-request", "--load-privkey", tmp_path / "k.pem", "--template",
                    tmp_path / "t.cfg", "--outfile", tmp_path / "req.pem"], check=True, capture_output=True)
    cert, serial = ok(f"{ROOT}/ca", "CertificateAuthority", "IssueCertificate", "sssa{sv}",
                      (tmp_path / "req.pem").read_text(), "node", "src-01", "0")
    assert "BEGIN CERTIFICATE" in cert
    assert [c[0] for c in ok(f"{ROOT}/ca", "CertificateAuthority", "ListIssued")[0]] == [serial]
    ok(f"{ROOT}/ca", "CertificateAuthority", "Revoke", "sa{sv}", serial, "0")

    # The backend is disabled by now: a capture is refused before anything is made (test_images.py captures).
    called.add("Manager.CaptureImage")
    r = api.call(ROOT, "Manager", "CaptureImage", "ssssa{sv}", "img0", "src-01", "/dev/sda", "iscsi1", "0")
    assert r.returncode != 0 and "is disabled" in r.stderr, r.stderr
    image = f"{ROOT}/image/{add_image_row(controller, backend.rsplit('/', 1)[1])}"
    assert ok(ROOT, "Manager", "GetImage", "s", "img1")[0] == image
    assert [(i[1], i[2]) for i in ok(ROOT, "Manager", "ListImages")[0]] == [("img1", "ready")]
    r = api.call(backend, "StorageBackend", "Delete", "a{sv}", "0")
    assert r.returncode != 0 and "holds image img1" in r.stderr, r.stderr
    # Nothing serves its iSCSI backend here: the check says it could not read it, and the state stays.
    ok(image, "Image", "Verify", "a{sv}", "0")
    wait_for(lambda: api.prop(image, "Image", "State") != "verifying", what="the check to end")
    assert api.prop(image, "Image", "State") == "ready"
    assert api.prop(image, "Image", "VerifyError").startswith("Could not be read, so not checked: "), \
        api.prop(image, "Image", "VerifyError")
    ok(image, "Image", "Rename", "sa{sv}", "img2", "0")
    ok(image, "Image", "SetDescription", "sa{sv}", "the lab's", "0")
    assert api.prop(image, "Image", "Name") == "img2" and api.prop(image, "Image", "Description") == "the lab's"
    ok(image, "Image", "Delete", "a{sv}", "0")
    assert ok(ROOT, "Manager", "ListImages")[0] == []

    ok(backend, "StorageBackend", "Delete", "a{sv}", "0")
    ok(src, "Node", "SetBootMode", "sa{sv}", "partition", "0")
    assert api.prop(src, "Node", "BootMode") == "partition"
    assert len(ok(src, "Node", "IssueBootToken", "a{sv}", "0")[0]) == 48
    before = api.prop(src, "Node", "ScanRequestedAt")
    ok(src, "Node", "RequestScan", "a{sv}", "0")
    assert api.prop(src, "Node", "ScanRequestedAt") > before
    # test_power.py switches machines for real; here the calls, the packet sent to this host's loopback.
    ok(src, "Node", "SetPower", "sa{ss}a{sv}", "wol", "1", "broadcast", "127.0.0.1", "0")
    assert api.prop(src, "Node", "PowerDriver") == "wol" and not api.prop(src, "Node", "PowerCredentialsSet")
    assert "magic packet for aa:bb:cc:00:01:01 went to 127.0.0.1:9" in ok(src, "Node", "Power", "sa{sv}", "on",
                                                                            "0")[0]
    ok(src, "Node", "Delete", "a{sv}", "0")

    declared = set()
    # NfsRoot's methods, ImportImage and Image.Export pass file descriptors, which busctl cannot:
    # test_nfsroot.py and test_images.py call each of them.
    for name in (n for n in PUBLIC if n != "NfsRoot"):
        iface = ET.parse(REPO / "dbus" / f"{DEST}.{name}.xml").getroot().find("interface")
        declared |= {f"{name}.{m.get('name')}" for m in iface.findall("method")
                     if "h" not in {a.get("type") for a in m.findall("arg")}}
    assert declared == called, f"not exercised: {sorted(declared - called)}"


def test_object_manager_lists_objects(controller, api, busctl):
    ids = populate(api)
    r = busctl("--json=short", "call", DEST, ROOT, "org.freedesktop.DBus.ObjectManager", "GetManagedObjects",
               check=True)
    objects = json.loads(r.stdout)["data"][0]
    assert f"{ROOT}/clone/{ids['session']}" in objects
    assert f"{ROOT}/node/{ids['node']}" in objects
    assert f"{ROOT}/storage/{ids['storage']}" in objects
    assert f"{DEST}.CloneSession" in objects[f"{ROOT}/clone/{ids['session']}"]


def test_signals_announce_objects(controller, api, system_bus):
    monitor = subprocess.Popen(["stdbuf", "-oL", "busctl", "--system", "--json=short", "monitor", DEST], env=system_bus.env,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        time.sleep(0.5)
        node = api.node("web-01", "aa:bb:cc:00:00:01")
        api.node("web-02", "aa:bb:cc:00:00:02")
        session = api.session("sig")
        api.ok(session, "CloneSession", "Start", "a{sv}", "0")
        api.ok(session, "CloneSession", "Cancel", "a{sv}", "0")
        api.ok(session, "CloneSession", "Delete", "a{sv}", "0")
        time.sleep(0.5)
    finally:
        monitor.terminate()
    messages = [json.loads(line) for line in monitor.communicate()[0].splitlines() if line.startswith("{")]
    signals = [(m.get("member"), m.get("path")) for m in messages if m.get("type") == "signal"]
    assert ("NodeNew", ROOT) in signals
    assert ("CloneSessionNew", ROOT) in signals and ("CloneSessionRemoved", ROOT) in signals
    assert ("InterfacesAdded", ROOT) in signals and ("InterfacesRemoved", ROOT) in signals
    changed = [m for m in messages if m.get("member") == "PropertiesChanged" and m.get("path") == session]
    statuses = [m["payload"]["data"][1]["Status"]["data"] for m in changed if "Status" in m["payload"]["data"][1]]
    assert statuses == ["waiting", "cancelled"]
    assert node
