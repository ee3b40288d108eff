# SPDX-License-Identifier: MIT
"""Staged clones against real servers: nfs-ganesha and tgtd in namespaces of their own on the test's bridge,
reached by the controller and the agents in userspace (libnfs, libiscsi)."""

import json

import pytest

from harness import Controller
from nodes import Network
from storage_servers import IscsiServer, NfsServer

CHAP_USER, CHAP_SECRET = "pureboot", "s3cret-for-staging"


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    directory = tmp_path_factory.mktemp("servers")
    with Network(index=7) as net, NfsServer(net, directory) as nfs, IscsiServer(net, directory) as iscsi:
        iscsi.add_lun(1, 64 << 20)
        iscsi.add_lun(2, 512 << 20)
        yield type("Servers", (), {"network": net, "nfs": nfs, "iscsi": iscsi, "dir": directory})


@pytest.fixture(autouse=True)
def controller(system_bus, tmp_path, servers):
    """The controller, able to drive the test's tgtd with tgtadm (manage=tgtadm)."""
    c = Controller(system_bus, tmp_path)
    c.env = {"TGT_IPC_SOCKET": servers.iscsi.env["TGT_IPC_SOCKET"]}
    c.start()
    yield c
    if c.proc.poll() is None:
        assert c.stop() == 0, c.log.read_text()


def add_storage(ctl, name, kind, settings):
    return ctl("storage", "add", name, f"--type={kind}", *settings, check=True).stdout.strip().split()[-1]


def test_nfs_backend_test_and_space(ctl, api, servers):
    add_storage(ctl, "ganesha", "nfs", servers.nfs.config())
    r = ctl("storage", "test", "ganesha", check=True)
    assert f"Mounted {servers.nfs.address}:{servers.nfs.export} over NFSv3" in r.stdout, r.stdout
    assert "probe file was written, read back and removed" in r.stdout
    assert list(servers.nfs.export.iterdir()) == []  # the probe is gone
    r = ctl("storage", "space", "ganesha", check=True)
    assert "available of" in r.stdout
    backend = json.loads(ctl("--json=short", "storage", "list", check=True).stdout)[0]
    import os
    st = os.statvfs(servers.nfs.export)
    # What the server said over FSSTAT is what the host's own statvfs says of the exported directory.
    assert abs(backend["available"] - st.f_bavail * st.f_frsize) < 64 << 20, backend
    assert backend["total"] == st.f_blocks * st.f_frsize


def test_nfs_backend_test_says_what_failed(ctl, servers):
    add_storage(ctl, "wrong", "nfs", servers.nfs.config(export="/no/such/export"))
    r = ctl("storage", "test", "wrong")
    assert r.returncode != 0
    assert "mounting" in r.stderr and "/no/such/export" in r.stderr, r.stderr


def test_iscsi_backend_lun_and_pool(ctl, servers):
    add_storage(ctl, "tgt-one", "iscsi", servers.iscsi.config(lun=2))
    r = ctl("storage", "test", "tgt-one", check=True)
    assert f"Logged in to {servers.iscsi.iqn}" in r.stdout, r.stdout
    assert "512.0 MiB available of 512.0 MiB" in r.stdout, r.stdout
    add_storage(ctl, "tgt-pool", "iscsi", servers.iscsi.config(luns="1-2"))
    r = ctl("storage", "space", "tgt-pool", check=True)
    assert r.stdout.strip() == "512.0 MiB available of 576.0 MiB.", r.stdout


def test_iscsi_backend_chap(ctl, servers):
    servers.iscsi.chap(CHAP_USER, CHAP_SECRET)
    try:
        add_storage(ctl, "chap-ok", "iscsi", servers.iscsi.config(lun=1, chap_user=CHAP_USER, chap_secret=CHAP_SECRET))
        r = ctl("storage", "test", "chap-ok", check=True)
        assert "with CHAP" in r.stdout
        add_storage(ctl, "chap-bad", "iscsi",
                    servers.iscsi.config(lun=1, chap_user=CHAP_USER, chap_secret="not-the-secret-at-all"))
        r = ctl("storage", "test", "chap-bad")
        assert r.returncode != 0
        assert "logging in to" in r.stderr and "check chap_user and chap_secret" in r.stderr, r.stderr
        # The secret is never shown.
        shown = ctl("storage", "show", "chap-ok", check=True).stdout
        assert CHAP_SECRET not in shown and "chap_secret_set" in shown
    finally:
        servers.iscsi.tgtadm("--mode", "account", "--op", "unbind", "--tid", 1, "--user", CHAP_USER, check=False)
        servers.iscsi.tgtadm("--mode", "account", "--op", "delete", "--user", CHAP_USER, check=False)


def test_iscsi_managed_backend(ctl, servers, tmp_path):
    luns = tmp_path / "luns"
    luns.mkdir()
    add_storage(ctl, "managed", "iscsi", servers.iscsi.config(manage="tgtadm", backing_dir=luns))
    r = ctl("storage", "test", "managed", check=True)
    assert "tgtd on this host serves it" in r.stdout, r.stdout
    r = ctl("storage", "add", "bad", "--type=iscsi", *servers.iscsi.config(manage="tgtadm"))
    assert r.returncode != 0 and "backing_dir" in r.stderr
