# SPDX-License-Identifier: MIT
"""Bad input gets a named error with a sentence a person can act on, and the database is left exactly as
it was."""

import dbus
import pytest

from harness import DEST, ROOT

ERR = "org.pureboot.Controller1.Error."


@pytest.fixture
def populated(controller, api):
    api.node("web-01", "aa:bb:cc:00:00:01")
    api.node("web-02", "aa:bb:cc:00:00:02")
    session = api.session("existing")
    return controller, session


def to_dbus(sig, args):
    """busctl-style arguments → python-dbus values, for the signatures these tests use."""
    out, args = [], list(args)
    for t in dbus.Signature(sig):
        if t == "s":
            out.append(dbus.String(args.pop(0)))
        elif t == "a{sv}":
            n, d = int(args.pop(0)), {}
            for _ in range(n):
                k, vt, v = args.pop(0), args.pop(0), args.pop(0)
                d[k] = {"s": dbus.String, "u": dbus.UInt32, "b": lambda x: dbus.Boolean(x == "true")}[vt](v)
            out.append(dbus.Dictionary(d, signature="sv"))
    return out


def assert_error_name(controller, call, expected):
    """busctl prints only the message; python-dbus shows the error's name."""
    path, iface, method, sig, *args = call
    bus = dbus.bus.BusConnection(controller.bus.address)
    try:
        obj = bus.get_object(DEST, path)
        getattr(obj, method)(*to_dbus(sig, args), dbus_interface=f"{DEST}.{iface}")
    except dbus.exceptions.DBusException as e:
        assert e.get_dbus_name() == expected, e.get_dbus_name()
    else:
        raise AssertionError(f"{method} succeeded")
    finally:
        bus.close()


def create(*fields, options=("0",)):
    return (ROOT, "Manager", "CreateCloneSession", "ssssssa{sv}", *fields, *options)


BAD_CALLS = [
    ("bad device path", create("x", "direct", "web-01", "web-02", "/dev/../etc/shadow", "/dev/sdb"),
     ERR + "InvalidArgument", "absolute path under /dev/"),
    ("relative device", create("x", "direct", "web-01", "web-02", "sda", "/dev/sdb"),
     ERR + "InvalidArgument", "/dev/sda"),
    ("unknown node", create("x", "direct", "web-01", "web-99", "/dev/sda", "/dev/sdb"),
     ERR + "NoSuchNode", "purebootctl node list"),
    ("staged without backend", create("x", "staged", "web-01", "", "/dev/sda", "/dev/sdb"),
     ERR + "InvalidArgument", "storage backend"),
    ("direct without target", create("x", "direct", "web-01", "", "/dev/sda", "/dev/sdb"),
     ERR + "InvalidArgument", "needs a target node"),
    ("same node twice", create("x", "direct", "web-01", "web-01", "/dev/sda", "/dev/sdb"),
     ERR + "InvalidArgument", "same node"),
    ("10 KB name", create("n" * 10240, "direct", "web-01", "web-02", "/dev/sda", "/dev/sdb"),
     ERR + "InvalidArgument", "10240 bytes"),
    ("unknown mode", create("x", "multicast", "web-01", "web-02", "/dev/sda", "/dev/sdb"),
     ERR + "InvalidArgument", "direct or staged"),
    ("unknown resize mode", create("x", "direct", "web-01", "web-02", "/dev/sda", "/dev/sdb",
                                   options=("1", "resize_mode", "s", "shrink_everything")),
     ERR + "InvalidArgument", "grow_target"),
    ("unknown option", create("x", "direct", "web-01", "web-02", "/dev/sda", "/dev/sdb",
                              options=("1", "colour", "s", "red")),
     "org.freedesktop.DBus.Error.InvalidArgs", "Unknown option"),
    ("SQL in a host name", (ROOT, "Manager", "RegisterNode", "sssa{sv}", "x'); DROP TABLE nodes; --",
                            "aa:bb:cc:00:00:09", "x86_64", "0"),
     ERR + "InvalidArgument", "not a valid host name"),
    ("duplicate MAC", (ROOT, "Manager", "RegisterNode", "sssa{sv}", "web-03", "AA:BB:CC:00:00:01", "x86_64", "0"),
     ERR + "AlreadyExists", "web-01"),
    ("bad MAC", (ROOT, "Manager", "RegisterNode", "sssa{sv}", "web-03", "aa:bb:cc:00:00", "x86_64", "0"),
     ERR + "InvalidArgument", "aa:bb:cc:dd:ee:ff"),
    ("bad Pi serial", (ROOT, "Manager", "RegisterNode", "sssa{sv}", "pi-1", "aa:bb:cc:00:00:07", "arm64", "1",
                       "serial", "s", "../etc"),
     ERR + "InvalidArgument", "8 hex digits"),
    ("NFS without export", (ROOT, "Manager", "CreateStorageBackend", "ssa{sv}a{sv}", "n1", "nfs", "1",
                            "server", "s", "127.0.0.1", "0"),
     ERR + "InvalidArgument", "export=PATH"),
    ("iSCSI with a bad IQN", (ROOT, "Manager", "CreateStorageBackend", "ssa{sv}a{sv}", "i1", "iscsi", "2",
                              "portal", "s", "127.0.0.1:3260", "target", "s", "not-an-iqn", "0"),
     ERR + "InvalidArgument", "iqn."),
    ("CHAP user without secret", (ROOT, "Manager", "CreateStorageBackend", "ssa{sv}a{sv}", "i1", "iscsi", "3",
                                  "portal", "s", "127.0.0.1", "target", "s", "iqn.2026-01.org.x:y",
                                  "chap_user", "s", "u", "0"),
     ERR + "InvalidArgument", "both chap_user and chap_secret"),
    ("NFS setting on iSCSI", (ROOT, "Manager", "CreateStorageBackend", "ssa{sv}a{sv}", "i1", "iscsi", "3",
                              "portal", "s", "127.0.0.1", "target", "s", "iqn.2026-01.org.x:y",
                              "export", "s", "/x", "0"),
     ERR + "InvalidArgument", "not a setting of iscsi"),
    ("unknown backend type", (ROOT, "Manager", "CreateStorageBackend", "ssa{sv}a{sv}", "c1", "cifs", "0", "0"),
     ERR + "InvalidArgument", "nfs, iscsi or local"),
    ("unknown session", (ROOT, "Manager", "GetCloneSession", "s", "nope"),
     ERR + "NoSuchSession", "purebootctl clone list"),
    ("bad CSR", (f"{ROOT}/ca", "CertificateAuthority", "IssueCertificate", "sssa{sv}", "not a csr", "node",
                 "web-01", "0"),
     ERR + "BadCertificateRequest", "certtool --generate-request"),
    ("revoke unknown serial", (f"{ROOT}/ca", "CertificateAuthority", "Revoke", "sa{sv}", "00ff" * 8, "0"),
     ERR + "NoSuchCertificate", "list-issued"),
    ("revoke no serial", (f"{ROOT}/ca", "CertificateAuthority", "Revoke", "sa{sv}", "00ff", "0"),
     ERR + "InvalidArgument", "is not a certificate serial"),
]


@pytest.mark.parametrize("case", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_input_is_refused_and_changes_nothing(populated, api, case):
    controller, _ = populated
    _, call, error, words = case
    before = controller.snapshot()
    r = api.call(*call)
    assert r.returncode != 0, f"accepted: {r.stdout}"
    assert words in r.stderr, r.stderr
    assert controller.snapshot() == before
    assert_error_name(controller, call, error)


def test_sql_metacharacters_in_session_name_are_data(populated, api):
    controller, _ = populated
    name = "x'); DROP TABLE nodes; -- \"quoted\" %s ?1"
    path = api.session(name)
    assert api.prop(path, "CloneSession", "Name") == name
    with controller.db() as db:
        assert db.execute("SELECT COUNT(*) FROM nodes").fetchone()[0] == 2
        assert db.execute("SELECT name FROM clone_sessions WHERE name = ?", (name,)).fetchone()[0] == name


def test_update_of_a_non_pending_session_is_refused(populated, api):
    controller, session = populated
    api.ok(session, "CloneSession", "Start", "a{sv}", "0")
    before = controller.snapshot()
    r = api.call(session, "CloneSession", "Update", "a{sv}a{sv}", "1", "target_device", "s", "/dev/sdc", "0")
    assert r.returncode != 0 and "only pending sessions can be changed" in r.stderr
    r = api.call(session, "CloneSession", "Start", "a{sv}", "0")
    assert r.returncode != 0 and "already been started" in r.stderr
    assert controller.snapshot() == before


def test_idempotency_key_returns_the_same_session(populated, api):
    controller, _ = populated
    opts = ("idempotency_key", "s", "deploy-42")
    first = api.session("a", "direct", "web-01", "web-02", "/dev/sda", "/dev/sdb", *opts)
    second = api.session("a", "direct", "web-01", "web-02", "/dev/sda", "/dev/sdb", *opts)
    assert first == second
    with controller.db() as db:
        assert db.execute("SELECT COUNT(*) FROM clone_sessions WHERE idempotency_key = 'deploy-42'").fetchone()[0] == 1


def test_in_use_objects_cannot_be_removed(populated, api):
    controller, session = populated
    node = api.ok(ROOT, "Manager", "GetNode", "s", "web-01")[0]
    before = controller.snapshot()
    r = api.call(node, "Node", "Delete", "a{sv}", "0")
    assert r.returncode != 0 and "delete those sessions first" in r.stderr
    assert controller.snapshot() == before
