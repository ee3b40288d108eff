# SPDX-License-Identifier: MIT
"""Staged clones against real servers: nfs-ganesha and tgtd in namespaces of their own on the test's bridge,
reached by the controller and the agents in userspace (libnfs, libiscsi)."""

import itertools
import json
import os
import re

import pytest

from harness import Bridge, Controller, stop_all, wait_for
from nodes import (Agent, Clone, Network, ca_fingerprint, check_files, check_root_last_disk, cmdline,
                   make_blank_disk, make_random_disk, make_root_last_disk, make_source_disk, sh)
from storage_servers import IscsiServer, NfsServer

TAGS = itertools.count(10)

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
    c.stop()  # checks it ended as it should


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


@pytest.fixture
def bridge(controller, tmp_path, servers):
    b = Bridge(controller.bus, tmp_path, address=servers.network.address).start()
    yield b
    b.stop()  # checks it ended as it should


@pytest.fixture
def staged(tmp_path, ctl, api, servers, bridge):
    """Makes staged sessions between two new nodes on the servers' network; stops their agents and detaches
    their disks at the end."""
    made, loops = [], []

    def make(storage, target_size=None, **kw):
        source, files = make_source_disk(tmp_path)
        loops.append(source)
        target = make_random_disk(tmp_path, "target", target_size or os.path.getsize(source.backing))
        loops.append(target)
        c = Clone(tmp_path, ctl, api, servers.network, bridge, source.device, target.device, mode="staged",
                  storage=storage, tag=f"{next(TAGS)}", **kw)
        made.append(c)
        return c, source, target, files
    yield make
    try:
        stop_all(made)
    finally:
        for loop in loops:
            loop.detach()


def session_dirs(servers):
    top = servers.nfs.export / "pureboot"
    return sorted(p.name for p in top.iterdir()) if top.exists() else []


def test_nfs_staged_clone_end_to_end(staged, ctl, api, servers, tmp_path):
    add_storage(ctl, "ganesha", "nfs", servers.nfs.config())
    c, source, target, files = staged("ganesha")
    c.source.start()
    # The source uploads, and its part ends there; the staging holds the image and its manifest.
    assert c.source.wait(120) == 0, c.source.text()
    assert c.prop("StagingStatus") == "ready", c.prop("Error")
    staged_dir = servers.nfs.export / "pureboot" / c.id
    manifest = json.loads((staged_dir / "manifest.json").read_text())
    assert manifest["size"] == os.path.getsize(source.backing)
    assert manifest["sectorSize"] == 512 and manifest["compression"] == "zstd"
    assert len(manifest["chunkHashes"]) == manifest["size"] // (1 << 20) * 32
    assert [p["number"] for p in manifest["partitionTable"]["partitions"]] == [1, 2]
    assert sorted(p.name for p in staged_dir.iterdir()) == ["disk.img.zst", "manifest.json"]
    # What the upload takes on the export, as the source counted it: the compressed image and its manifest.
    assert c.prop("StoredBytes") == sum(p.stat().st_size for p in staged_dir.iterdir())
    assert c.prop("StoredBytes") < manifest["size"] // 2
    # The image is plain zstd with checksums: the zstd tool itself reads it back to the source's chunks,
    # but for those no filesystem uses, which the manifest lists and the image leaves out.
    assert manifest["version"] == 2 and manifest["skipped"], manifest.get("skipped")
    sh("zstd", "-d", "-q", "-f", staged_dir / "disk.img.zst", "-o", tmp_path / "unpacked.img")
    skipped = [(o, o + n) for o, n in manifest["skipped"]]
    with open(tmp_path / "unpacked.img", "rb") as unpacked, open(source.device, "rb") as disk:
        for offset in range(0, manifest["size"], 1 << 20):
            if any(a <= offset < b for a, b in skipped):
                continue
            disk.seek(offset)
            assert unpacked.read(1 << 20) == disk.read(1 << 20), offset
        assert unpacked.read(1) == b""
    (tmp_path / "unpacked.img").unlink()
    assert c.prop("BytesUploaded") == manifest["size"]

    c.target.start()
    assert c.target.wait(120) == 0, c.target.text()
    c.wait_status("completed")
    assert c.prop("SourceDigest") == c.prop("TargetDigest") == manifest["digest"]
    sh("cmp", source.device, target.device)
    check_files(target, files, tmp_path)
    # Once it completed, the staging area is removed.
    wait_for(lambda: c.prop("StagingStatus") == "deleted", what="the staging to be removed")
    assert c.id not in session_dirs(servers)
    status = ctl("clone", "status", c.id, check=True).stdout
    assert "completed" in status


def test_nfs_staged_clone_to_a_larger_disk_grows(ctl, api, servers, bridge, tmp_path):
    """grow_target through staging: the source waits for the plan (made once the target reported its disk),
    uploads all of itself, and the target moves the GPT backup to its own end and grows the root (the last
    partition; the ESP before it is kept) up to 1535 MiB."""
    add_storage(ctl, "ganesha-grow", "nfs", servers.nfs.config())
    loops = []
    try:
        source, files = make_root_last_disk(tmp_path, loops)
        target = make_blank_disk(tmp_path, loops, "large", 1536 << 20)
        c = Clone(tmp_path, ctl, api, servers.network, bridge, source.device, target.device, mode="staged",
                  storage="ganesha-grow", tag=f"{next(TAGS)}", resize="grow_target")
        try:
            c.source.start()
            c.target.start()
            c.wait_status("completed", "failed", timeout=240)
            assert c.status() == "completed", (c.prop("Error"), c.source.text()[-2000:], c.target.text()[-2000:])
            assert c.target.wait(60) == 0, c.target.text()
        finally:
            c.stop()
        plan = json.loads(c.prop("Plan"))
        assert plan["feasible"] and plan["copyBytes"] == 1 << 30 and plan["source"] == [], plan
        assert plan["target"] == [{"operation": "resize", "parameters": {"partition": 2,
                                                                         "new_size_bytes": (1535 - 65) << 20}}]
        check_root_last_disk(target, files, tmp_path, (1535 - 65) << 20)
    finally:
        for loop in loops:
            loop.detach()


def test_one_source_to_a_smaller_and_a_larger_target(ctl, api, servers, bridge, tmp_path):
    """One upload, two targets: the session's own target is 0.75x the source (shrink_source: the source's root
    shrinks before the upload, and only 767 MiB are staged), the added one 1.5x (grow_target: its plan is made
    from what is uploaded, and it grows the root to its end). Each target has its own status, progress, plan
    and digest check; the session completes, and the staging goes, only once both are done."""
    add_storage(ctl, "ganesha-two", "nfs", servers.nfs.config())
    loops = []
    try:
        source, files = make_root_last_disk(tmp_path, loops)
        small = make_blank_disk(tmp_path, loops, "small", 768 << 20)
        large = make_blank_disk(tmp_path, loops, "large", 1536 << 20)
        c = Clone(tmp_path, ctl, api, servers.network, bridge, source.device, small.device, mode="staged",
                  storage="ganesha-two", tag=f"{next(TAGS)}", resize="shrink_source")
        try:
            path, agent = c.add_target(large.device, resize="grow_target")
            assert path == f"{c.path}/target/2"
            assert api.prop(path, "CloneTarget", "Session") == c.path
            assert api.prop(path, "CloneTarget", "Index") == 2
            assert api.prop(path, "CloneTarget", "Status") == "waiting", "it started with its session"
            assert c.prop("Targets") == [f"{c.path}/target/1", path]
            c.source.start()
            c.target.start()
            agent.start()
            c.wait_status("completed", "failed", timeout=240)
            assert c.status() == "completed", (c.prop("Error"), c.source.text()[-2000:], c.target.text()[-2000:],
                                               agent.text()[-3000:])
            assert api.prop(path, "CloneTarget", "Status") == "completed"
            assert api.prop(f"{c.path}/target/1", "CloneTarget", "Status") == "completed"
            for a in (c.target, agent, c.source):
                assert a.wait(60) == 0, a.text()
            # One upload of the shrunk source; each target checked its own copy against it.
            assert c.prop("BytesTotal") == 767 << 20
            assert api.prop(path, "CloneTarget", "BytesTransferred") == 767 << 20
            digest = c.prop("SourceDigest")
            assert c.prop("TargetDigest") == digest
            assert api.prop(path, "CloneTarget", "Digest") == digest
            small_plan, large_plan = json.loads(c.prop("Plan")), json.loads(api.prop(path, "CloneTarget", "Plan"))
            assert [p["action"] for p in small_plan["partitions"]] == ["keep", "shrink"], small_plan
            assert [p["action"] for p in large_plan["partitions"]] == ["keep", "grow"], large_plan
            assert large_plan["target"][0]["parameters"] == {"partition": 2, "new_size_bytes": (1535 - 65) << 20}
            # Once both are over, the staging goes.
            wait_for(lambda: c.prop("StagingStatus") == "deleted", what="the staging to be removed")
            assert c.id not in session_dirs(servers)
            status = ctl("clone", "status", c.id, check=True).stdout
            assert "target 1" in status and "target 2" in status and "/dev/" in status, status
            ctl("clone", "delete", c.id, check=True)
        finally:
            c.stop()
        check_root_last_disk(small, files, tmp_path, (767 - 65) << 20)
        check_root_last_disk(large, files, tmp_path, (1535 - 65) << 20)
    finally:
        for loop in loops:
            loop.detach()


def test_controller_restarts_in_the_middle_of_a_one_to_two_clone(staged, ctl, api, servers, controller, tmp_path):
    """One upload, two targets, and the controller restarted twice: while the source uploads, and while the
    targets download. Both targets finish, each checked against the source, and the staging goes."""
    add_storage(ctl, "ganesha-restart", "nfs", servers.nfs.config())
    c, source, target, _ = staged("ganesha-restart", source_args=("--max-rate=60M",),
                                  target_args=("--max-rate=60M",))
    second = make_random_disk(tmp_path, "second", os.path.getsize(source.backing))
    try:
        path, agent = c.add_target(second.device, args=("--max-rate=60M",))
        for a in (c.source, c.target, agent):
            a.start()
        wait_for(lambda: c.prop("StagingStatus") == "uploading", timeout=60, what="the upload to start")
        controller.restart()
        wait_for(lambda: c.prop("StagingStatus") == "downloading", timeout=120,
                 what=f"a target to download after the restart; source:\n{c.source.text()[-2000:]}")
        controller.restart()
        c.wait_status("completed", "failed", timeout=240)
        assert c.status() == "completed", (c.prop("Error"), agent.text()[-3000:])
        assert api.prop(path, "CloneTarget", "Status") == "completed", api.prop(path, "CloneTarget", "Error")
        for a in (c.source, c.target, agent):
            assert a.wait(60) == 0, a.text()
        sh("cmp", source.device, target.device)
        sh("cmp", source.device, second.device)
        assert api.prop(path, "CloneTarget", "Digest") == c.prop("SourceDigest")
        wait_for(lambda: c.prop("StagingStatus") == "deleted", what="the staging to be removed")
    finally:
        c.stop()
        second.detach()


def test_iscsi_staged_clone_on_a_managed_lun(staged, ctl, servers, tmp_path):
    luns = tmp_path / "luns"
    luns.mkdir()
    add_storage(ctl, "tgt", "iscsi", servers.iscsi.config(manage="tgtadm", backing_dir=luns))
    before = servers.iscsi.luns()
    c, source, target, files = staged("tgt")
    c.source.start()
    assert c.source.wait(120) == 0, c.source.text()
    # A LUN of its own, on a sparse file sized for the disk and its manifest.
    made = [p.name for p in luns.iterdir()]
    assert made == [f"pureboot-{c.id}.img"], made
    assert len(servers.iscsi.luns()) == len(before) + 1
    assert c.prop("StagingPath").startswith(f"iscsi://{servers.iscsi.portal}/{servers.iscsi.iqn}/")
    image = luns / made[0]
    # Zero runs were not sent: the file holds little more than the data.
    assert os.stat(image).st_blocks * 512 < os.path.getsize(source.backing) * 0.6
    c.target.start()
    assert c.target.wait(120) == 0, c.target.text()
    c.wait_status("completed")
    assert c.prop("SourceDigest") == c.prop("TargetDigest")
    sh("cmp", source.device, target.device)
    check_files(target, files, tmp_path)
    wait_for(lambda: c.prop("StagingStatus") == "deleted", what="the staging to be removed")
    assert list(luns.iterdir()) == [] and servers.iscsi.luns() == before


@pytest.fixture
def small_dir(tmp_path):
    """A 128 MiB tmpfs: a backing directory too small for a 256 MiB disk plus its margin."""
    d = tmp_path / "small"
    d.mkdir()
    sh("mount", "-t", "tmpfs", "-o", "size=128m", "tmpfs", d)
    yield d
    sh("umount", "-l", d, check=False)


def test_too_little_staging_space_is_refused_before_any_byte_moves(staged, ctl, servers, small_dir):
    add_storage(ctl, "tiny", "iscsi", servers.iscsi.config(manage="tgtadm", backing_dir=small_dir))
    before = servers.iscsi.luns()
    c, source, target, files = staged("tiny")
    target_before = sh("sha256sum", target.device).stdout
    c.source.start()
    c.wait_status("failed")
    error = c.prop("Error")
    assert "Not enough staging space: staging on tiny needs 294.4 MiB (the 256.0 MiB disk plus a 15 % margin)" in error
    assert "is available. Free at least" in error and "Nothing was copied." in error, error
    assert c.source.wait(30) != 0
    assert c.prop("BytesUploaded") == 0 and list(small_dir.iterdir()) == [] and servers.iscsi.luns() == before
    assert sh("sha256sum", target.device).stdout == target_before
    # Tried again with the space measured, Start itself refuses: the source's size is known from its report.
    ctl("storage", "space", "tiny", check=True)
    r = ctl("clone", "start", c.id)
    assert r.returncode != 0 and "needs 294.4 MiB (the 256.0 MiB disk plus a 15 % margin)" in r.stderr, r.stderr
    assert "as last measured; purebootctl storage space tiny measures again" in r.stderr, r.stderr
    assert c.status() == "failed"


def test_pool_without_a_large_enough_lun(staged, ctl, servers):
    add_storage(ctl, "small-pool", "iscsi", servers.iscsi.config(luns="1"))
    c, *_ = staged("small-pool")
    c.source.start()
    c.wait_status("failed")
    assert "needs a free LUN of at least 257.0 MiB for the 256.0 MiB disk; the largest free one has 64.0 MiB" \
        in c.prop("Error"), c.prop("Error")


def test_an_image_keeps_its_pool_lun(staged, ctl, api, servers, bridge, tmp_path):
    """keep_as on an iSCSI pool: the image holds the LUN its upload went to, so a later session finds no free
    LUN large enough; a deploy of the image reads that LUN; deleting the image frees it."""
    add_storage(ctl, "pool", "iscsi", servers.iscsi.config(luns="1,2"))
    c, source, target, files = staged("pool", create_args=("--keep-as=pooled",))
    c.source.start()
    c.target.start()
    c.wait_status("completed", "failed", timeout=180)
    assert c.status() == "completed", (c.prop("Error"), c.source.text()[-2000:], c.target.text()[-2000:])
    path = api.ok("/org/pureboot/Controller1", "Manager", "GetImage", "s", "pooled")[0]
    assert api.prop(path, "Image", "State") == "ready"
    assert api.prop(path, "Image", "Location") == f"iscsi://{servers.iscsi.portal}/{servers.iscsi.iqn}/2"
    wait_for(lambda: c.prop("StagingStatus") == "kept", what="the session to say its staging is kept")
    # On iSCSI the image takes its LUN, all of it.
    assert c.prop("StoredBytes") == api.prop(path, "Image", "StoredBytes") == 512 << 20

    assert "is whole" in ctl("image", "verify", "pooled", check=True).stdout
    assert api.prop(path, "Image", "StoredBytes") == 512 << 20

    # The 512 MiB LUN is the image's: a second session of the same disks finds only the 64 MiB one.
    d = Clone(tmp_path, ctl, api, servers.network, bridge, source.device, target.device, mode="staged",
              storage="pool", tag=f"{next(TAGS)}")
    try:
        d.source.start()
        d.wait_status("failed")
        assert "the largest free one has 64.0 MiB" in d.prop("Error"), d.prop("Error")
    finally:
        d.stop()

    # A deploy reads the LUN; each chunk and the digest are checked against the image's.
    session = ctl("image", "deploy", "pooled", "--target=tgt-node", f"--target-device={target.device}",
                  check=True).stdout.strip()
    ns, _ = servers.network.node(f"p{next(TAGS)}")
    token = ctl("clone", "token", session, "--target=1", check=True).stdout.strip()
    agent = Agent(tmp_path, "deploy", ns, cmdline("clone_target_staged", session, "tgt-node", bridge.url, token,
                                                   ca_fingerprint(bridge.ca), target.device)).start()
    try:
        assert agent.wait(120) == 0, agent.text()
    finally:
        stop_all([agent])
    spath = f"/org/pureboot/Controller1/clone/{session}"
    assert api.prop(spath, "CloneSession", "Status") == "completed", api.prop(spath, "CloneSession", "Error")
    check_files(target, files, tmp_path)
    # The LUN holds the chunks as they are on the disk: one damaged byte of the first is named.
    lun = servers.iscsi.dir / "iscsi-lun2.img"
    with open(lun, "r+b") as f:
        f.seek(510)
        f.write(b"\x00")
    r = ctl("image", "verify", "pooled")
    assert r.returncode == 1 and "the chunk at 0 does not match the manifest's hash" in r.stderr, r.stderr
    assert api.prop(path, "Image", "State") == "broken"
    ctl("image", "delete", "pooled", check=True)
    assert api.ok("/org/pureboot/Controller1", "Manager", "ListImages")[0] == []


def test_cancel_mid_upload_removes_the_staging(staged, ctl, servers):
    add_storage(ctl, "ganesha", "nfs", servers.nfs.config())
    c, *_ = staged("ganesha", source_args=("--max-rate=40M",))
    c.source.start()
    wait_for(lambda: 0 < c.prop("BytesUploaded") < 200 << 20 and c.prop("StagingStatus") == "uploading",
             timeout=60, what="the upload to be under way")
    assert (servers.nfs.export / "pureboot" / c.id / "disk.img.zst.partial").exists()
    ctl("clone", "cancel", c.id, check=True)
    wait_for(lambda: c.prop("StagingStatus") == "deleted", timeout=30, what="the staging to be removed")
    assert c.id not in session_dirs(servers)
    assert c.source.wait(30) == 4, c.source.text()  # AGENT_EXIT_SESSION_FAILED: it stopped, no report
    assert c.status() == "cancelled"
    # The session can go now; its staging is gone.
    ctl("clone", "delete", c.id, check=True)


@pytest.mark.parametrize("backend", ["nfs", "iscsi"])
def test_target_killed_mid_download_resumes(staged, ctl, servers, tmp_path, backend):
    """NFS: zstd frames, read from the start of the segment that holds the resume point; iSCSI: the raw LUN,
    read ahead of the writes. The target resumes where its journal says, as from a peer."""
    add_storage(ctl, f"resume-{backend}", backend,
                servers.nfs.config() if backend == "nfs" else servers.iscsi.config(lun=2))
    c, source, target, files = staged(f"resume-{backend}", target_args=("--max-rate=50M",))
    c.source.start()
    assert c.source.wait(120) == 0, c.source.text()
    c.target.start()
    wait_for(lambda: c.prop("BytesTransferred") >= 150 << 20, timeout=60, what="the download to pass 150 MiB")
    c.target.kill()
    c.target.start()
    assert c.target.wait(120) == 0, c.target.text()
    # At the last sync point before the kill (every 16 MiB or 5 s): past 150 MiB less one sync, never the
    # end; the staging area is read from there.
    resumed = re.search(r"Resuming at offset (\d+) \(([\d.]+ MiB)\) from the journal\.", c.target.text())
    assert resumed and int(resumed[1]) % (1 << 20) == 0 and 128 << 20 <= int(resumed[1]) < 256 << 20, \
        c.target.text()
    assert f"Reading the image from the staging area ({backend}) from {resumed[2]} on." in c.target.text()
    c.wait_status("completed")
    sh("cmp", source.device, target.device)
    check_files(target, files, tmp_path)


def test_controller_down_during_upload(staged, ctl, servers, controller):
    add_storage(ctl, "ganesha", "nfs", servers.nfs.config())
    c, source, target, files = staged("ganesha", source_args=("--max-rate=60M",))
    c.source.start()
    wait_for(lambda: c.prop("StagingStatus") == "uploading", timeout=60, what="the upload to start")
    assert controller.stop() == 0
    # The upload goes on without the controller; its reports wait in the node's queue.
    wait_for(lambda: (servers.nfs.export / "pureboot" / c.id / "manifest.json").exists(), timeout=60,
             what="the upload to finish while the controller is down")
    controller.start()
    assert c.source.wait(120) == 0, c.source.text()
    assert c.prop("StagingStatus") == "ready" and c.prop("BytesUploaded") == 256 << 20
    assert c.prop("SourceDigest").startswith("xxh3-128:")
    c.target.start()
    assert c.target.wait(120) == 0, c.target.text()
    c.wait_status("completed")
    sh("cmp", source.device, target.device)


@pytest.mark.parametrize("backend", ["nfs", "iscsi"])
def test_a_staged_image_holds_only_the_used_blocks(ctl, api, servers, bridge, tmp_path, loops, backend):
    """The five-filesystem disk with stale free space (test_usedmap): the staged image holds what the
    filesystems use, compressed on NFS and unwritten around it on a LUN; the clone passes every check."""
    from test_usedmap import FILESYSTEMS, check_clone, make_disk, used_map
    if backend == "nfs":
        add_storage(ctl, "ganesha", "nfs", servers.nfs.config())
    else:
        luns = tmp_path / "luns"
        luns.mkdir()
        add_storage(ctl, "ganesha", "iscsi", servers.iscsi.config(manage="tgtadm", backing_dir=luns))
    source, files = make_disk(tmp_path, loops)
    size = os.path.getsize(source.backing)
    used = size - used_map(source.device)["unusedBytes"]
    target = make_random_disk(tmp_path, "target", size)
    loops.append(target)
    c = Clone(tmp_path, ctl, api, servers.network, bridge, source.device, target.device, mode="staged",
              storage="ganesha", tag=f"{next(TAGS)}", create_args=("--identity=none",))
    try:
        c.source.start()
        assert c.source.wait(180) == 0, c.source.text()
        if backend == "nfs":
            image = servers.nfs.export / "pureboot" / c.id / "disk.img.zst"
            stored = os.path.getsize(image)
        else:
            image = next(luns.iterdir())
            stored = os.stat(image).st_blocks * 512
        # The used bytes are mostly random files: they do not shrink, but nothing else is there.
        assert stored < used * 1.03, (stored, used, size)
        c.target.start()
        assert c.target.wait(180) == 0, c.target.text()
        c.wait_status("completed")
        assert c.prop("SourceDigest") == c.prop("TargetDigest")
        notes = api.prop(f"{c.path}/target/1", "CloneTarget", "Notes")
        assert len(notes) == len(FILESYSTEMS) and all("found no errors" in n for n in notes), notes
    finally:
        c.stop()
    check_clone(target, files, tmp_path)
