# SPDX-License-Identifier: MIT
"""Authorisation through the real polkitd: an unprivileged user reads everything, changes nothing unless a
polkit rule says so, and each refusal names the action."""

import time
import xml.etree.ElementTree as ET

import pytest

from harness import DEST, POLKIT_RULES, REPO, ROOT, TEST_USER, add_image_row, run


@pytest.fixture
def objects(controller, api, tmp_path):
    api.node("web-01", "aa:bb:cc:00:00:01")
    api.node("web-02", "aa:bb:cc:00:00:02")
    session = api.session("guarded")
    backend = api.ok(ROOT, "Manager", "CreateStorageBackend", "ssa{sv}a{sv}", "nfs1", "nfs", "2",
                     "server", "s", "127.0.0.1", "export", "s", "/srv/x", "0")[0]
    node = api.ok(ROOT, "Manager", "GetNode", "s", "web-02")[0]
    image = f"{ROOT}/image/{add_image_row(controller, backend.rsplit('/', 1)[1])}"
    return {"session": session, "backend": backend, "node": node, "image": image}


MUTATIONS = [
    ("RegisterNode", lambda o: (ROOT, "Manager", "RegisterNode", "sssa{sv}", "x-1", "aa:bb:cc:00:00:05", "x86_64", "0"),
     "manage-nodes"),
    ("CreateCloneSession", lambda o: (ROOT, "Manager", "CreateCloneSession", "ssssssa{sv}", "n", "direct", "web-01",
                                      "web-02", "/dev/sda", "/dev/sdb", "0"), "manage-clones"),
    # Keeping the upload adds to the image library: its own right.
    ("CreateCloneSession keep_as", lambda o: (ROOT, "Manager", "CreateCloneSession", "ssssssa{sv}", "n", "staged",
                                              "web-01", "web-02", "/dev/sda", "/dev/sdb", "2", "storage", "s", "nfs1",
                                              "keep_as", "s", "golden"), "manage-images"),
    ("CaptureImage", lambda o: (ROOT, "Manager", "CaptureImage", "ssssa{sv}", "golden", "web-01", "/dev/sda", "nfs1",
                                "0"), "manage-images"),
    ("CreateStorageBackend", lambda o: (ROOT, "Manager", "CreateStorageBackend", "ssa{sv}a{sv}", "n2", "nfs", "2",
                                        "server", "s", "h", "export", "s", "/e", "0"), "manage-storage"),
    ("Start", lambda o: (o["session"], "CloneSession", "Start", "a{sv}", "0"), "manage-clones"),
    ("Cancel", lambda o: (o["session"], "CloneSession", "Cancel", "a{sv}", "0"), "manage-clones"),
    ("Delete session", lambda o: (o["session"], "CloneSession", "Delete", "a{sv}", "0"), "manage-clones"),
    ("Update session", lambda o: (o["session"], "CloneSession", "Update", "a{sv}a{sv}", "1", "name", "s", "z", "0"),
     "manage-clones"),
    ("IssueBootToken", lambda o: (o["session"], "CloneSession", "IssueBootToken", "sa{sv}", "source", "0"),
     "manage-clones"),
    ("Delete node", lambda o: (o["node"], "Node", "Delete", "a{sv}", "0"), "manage-nodes"),
    ("SetBootMode", lambda o: (o["node"], "Node", "SetBootMode", "sa{sv}", "partition", "0"), "manage-nodes"),
    ("Node token", lambda o: (o["node"], "Node", "IssueBootToken", "a{sv}", "0"), "manage-nodes"),
    ("Update backend", lambda o: (o["backend"], "StorageBackend", "Update", "a{sv}a{sv}", "0", "0"), "manage-storage"),
    ("Delete backend", lambda o: (o["backend"], "StorageBackend", "Delete", "a{sv}", "0"), "manage-storage"),
    ("Verify image", lambda o: (o["image"], "Image", "Verify", "a{sv}", "0"), "manage-images"),
    ("Rename image", lambda o: (o["image"], "Image", "Rename", "sa{sv}", "img9", "0"), "manage-images"),
    ("Describe image", lambda o: (o["image"], "Image", "SetDescription", "sa{sv}", "x", "0"), "manage-images"),
    ("Delete image", lambda o: (o["image"], "Image", "Delete", "a{sv}", "0"), "manage-images"),
    ("Revoke", lambda o: (f"{ROOT}/ca", "CertificateAuthority", "Revoke", "sa{sv}", "0" * 32, "0"), "manage-ca"),
    ("IssueCertificate", lambda o: (f"{ROOT}/ca", "CertificateAuthority", "IssueCertificate", "sssa{sv}", "x", "node",
                                    "web-01", "0"), "manage-ca"),
]


@pytest.mark.parametrize("case", MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_unprivileged_user_is_refused(controller, objects, busctl, case):
    _, make, action = case
    path, iface, method, sig, *args = make(objects)
    before = controller.snapshot()
    for interactive in ("yes", "no"):
        r = busctl(f"--allow-interactive-authorization={interactive}", "call", DEST, path, f"{DEST}.{iface}",
                   method, sig, *args, user=TEST_USER)
        assert r.returncode != 0, r.stdout
        assert f"org.pureboot.controller1.{action}" in r.stderr, r.stderr
    assert controller.snapshot() == before


# Every method that takes arguments, with one it refuses (QueueOperation: test_partition.py, on a real disk).
BAD_ARGUMENTS = [
    ("CreateCloneSession", lambda o: (ROOT, "Manager", "CreateCloneSession", "ssssssa{sv}", "n", "sideways", "web-01",
                                      "web-02", "/dev/sda", "/dev/sdb", "0"), "Unknown clone mode"),
    ("RegisterNode", lambda o: (ROOT, "Manager", "RegisterNode", "sssa{sv}", "x-1", "not-a-mac", "x86_64", "0"),
     "is not a MAC address"),
    ("RegisterNode taken", lambda o: (ROOT, "Manager", "RegisterNode", "sssa{sv}", "web-01", "aa:bb:cc:00:00:09",
                                      "x86_64", "0"), "already has this host name"),
    ("CreateStorageBackend", lambda o: (ROOT, "Manager", "CreateStorageBackend", "ssa{sv}a{sv}", "n2", "nfs", "2",
                                        "server", "s", "h", "colour", "s", "blue", "0"),
     "is not a setting of nfs backends"),
    ("SetBootMode", lambda o: (o["node"], "Node", "SetBootMode", "sa{sv}", "floppy", "0"),
     "is not local, partition or nfs"),
    ("Update session", lambda o: (o["session"], "CloneSession", "Update", "a{sv}a{sv}", "1", "mode", "s", "sideways",
                                  "0"), "Unknown clone mode"),
    ("IssueBootToken", lambda o: (o["session"], "CloneSession", "IssueBootToken", "sa{sv}", "king", "0"),
     "Unknown role"),
    ("SetPlan", lambda o: (o["session"], "CloneSession", "SetPlan", "sa{sv}", "[1]", "0"), "is not a JSON object"),
    ("AddTarget", lambda o: (o["session"], "CloneSession", "AddTarget", "ssa{sv}", "web-02", "sdb", "0"),
     "is not a device path"),
    ("Update backend", lambda o: (o["backend"], "StorageBackend", "Update", "a{sv}a{sv}", "1", "export", "s",
                                  "relative", "0"), "needs export=PATH"),
    ("Revoke", lambda o: (f"{ROOT}/ca", "CertificateAuthority", "Revoke", "sa{sv}", "zz", "0"),
     "is not a certificate serial"),
    ("IssueCertificate", lambda o: (f"{ROOT}/ca", "CertificateAuthority", "IssueCertificate", "sssa{sv}", "x", "node",
                                    "no-such-node", "0"), "no-such-node"),
    ("ImportBaseImageFile", lambda o: (f"{ROOT}/nfsroot", "NfsRoot", "ImportBaseImageFile", "ssa{sv}", "base",
                                       "relative.tar", "0"), "is not an absolute path"),
    ("ImportBaseImageFile name", lambda o: (f"{ROOT}/nfsroot", "NfsRoot", "ImportBaseImageFile", "ssa{sv}", "../x",
                                            "/tmp/x.tar", "0"), "is not a base image name"),
    ("CreateNodeOverlay", lambda o: (f"{ROOT}/nfsroot", "NfsRoot", "CreateNodeOverlay", "sssa{sv}", "xyz", "", "",
                                     "0"), "is not a Raspberry Pi serial"),
    ("DeleteNodeOverlay", lambda o: (f"{ROOT}/nfsroot", "NfsRoot", "DeleteNodeOverlay", "sa{sv}", "1234abcd", "0"),
     "has no overlay"),
]


@pytest.mark.parametrize("case", BAD_ARGUMENTS, ids=[c[0] for c in BAD_ARGUMENTS])
def test_bad_arguments_are_refused_before_polkit(controller, objects, busctl, case):
    """A call that would be refused for its arguments says so, without a polkit question first (an
    administrator is not asked to authenticate for a call that cannot succeed)."""
    _, make, message = case
    path, iface, method, sig, *args = make(objects)
    r = busctl("--allow-interactive-authorization=yes", "call", DEST, path, f"{DEST}.{iface}", method, sig, *args,
               user=TEST_USER)
    assert r.returncode != 0 and message in r.stderr and "org.pureboot.controller1" not in r.stderr, r.stderr


def test_unprivileged_user_reads_properties(controller, objects, busctl, ctl):
    r = busctl("get-property", DEST, objects["session"], f"{DEST}.CloneSession", "Status", user=TEST_USER)
    assert r.returncode == 0 and r.stdout.strip() == 's "pending"'
    r = busctl("call", DEST, ROOT, f"{DEST}.Manager", "ListCloneSessions", user=TEST_USER)
    assert r.returncode == 0 and "guarded" in r.stdout
    r = ctl("clone", "list", user=TEST_USER)
    assert r.returncode == 0 and "guarded" in r.stdout
    r = ctl("ca", "show", user=TEST_USER)
    assert r.returncode == 0 and "BEGIN CERTIFICATE" in r.stdout
    r = ctl("--no-ask-password", "node", "add", "--mac", "aa:bb:cc:00:00:08", "--hostname", "x-2", user=TEST_USER)
    assert r.returncode == 5, (r.returncode, r.stderr)
    assert "Authentication is required" in r.stderr


@pytest.fixture
def polkit_rule():
    rule = POLKIT_RULES / "49-pureboot-test.rules"
    rule.write_text(
        "// Written by PureBoot's tests; removed when they end.\n"
        "polkit.addRule(function(action, subject) {\n"
        f"    if (action.id == 'org.pureboot.controller1.manage-nodes' && subject.user == '{TEST_USER}')\n"
        "        return polkit.Result.YES;\n"
        "});\n")
    rule.chmod(0o644)
    yield rule
    rule.unlink(missing_ok=True)


def test_polkit_rule_grants_the_action(controller, busctl, polkit_rule):
    """polkitd rereads its rules directory; the grant covers manage-nodes and nothing else."""
    deadline = time.monotonic() + 10
    while True:
        r = busctl("call", DEST, ROOT, f"{DEST}.Manager", "RegisterNode", "sssa{sv}", "granted-1",
                   "aa:bb:cc:00:00:0a", "x86_64", "0", user=TEST_USER)
        if r.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert r.returncode == 0, r.stderr
    with controller.db() as db:
        uid = db.execute("SELECT uid FROM events WHERE action = 'RegisterNode'").fetchone()[0]
    import pwd
    assert uid == pwd.getpwnam(TEST_USER).pw_uid
    r = busctl("call", DEST, ROOT, f"{DEST}.Manager", "CreateStorageBackend", "ssa{sv}a{sv}", "n3", "nfs", "2",
               "server", "s", "h", "export", "s", "/e", "0", user=TEST_USER)
    assert r.returncode != 0 and "manage-storage" in r.stderr


def interfaces():
    """Every interface of the API contract (dbus/*.xml): {name: [methods]}."""
    out = {}
    for xml in sorted((REPO / "dbus").glob(f"{DEST}.*.xml")):
        iface = ET.parse(xml).getroot().find("interface")
        out[iface.get("name")] = [m.get("name") for m in iface.findall("method")]
    return out


def test_bus_policy_lets_every_public_interface_through(controller, system_bus):
    """dbus-daemon passes every method of every public interface on to the controller for any user (polkit
    decides there), and the node-facing Gateway only for the bridge's user. A method called without its
    arguments is answered by the controller itself (a list, InvalidArgs…), never refused by the bus."""
    found = interfaces()
    assert f"{DEST}.Disk" in found and f"{DEST}.NfsRoot" in found, found
    for iface, methods in found.items():
        for method in methods:
            # dbus-send names the error: the bus's own refusal is AccessDenied, "Rejected send message".
            r = run(["dbus-send", "--system", "--print-reply", f"--dest={DEST}", ROOT, f"{iface}.{method}"],
                    system_bus, user=TEST_USER)
            refused_by_bus = "Rejected send message" in r.stderr
            if iface == f"{DEST}.Gateway":
                assert refused_by_bus, (iface, method, r.stderr)
            else:
                assert not refused_by_bus, (iface, method, r.stderr)
