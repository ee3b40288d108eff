# SPDX-License-Identifier: MIT
"""Used-block maps and used-block clones: what of a disk its filesystems leave unused, read by partclone
from each filesystem's own metadata, and direct clones that send only the rest. Real loop devices with
ext4, xfs, btrfs, ntfs and vfat, each first filled with random data that is then deleted, then given known
files. The proof a map is right: a copy of the disk whose every unused range is overwritten with other
random bytes still passes each filesystem's own check, and every file reads back the same. The proof a
clone is right: after it, on a target that held other random bytes, every filesystem's check is clean and
every file reads back the same, while the source sent little more than what the filesystems use."""

import contextlib
import json
import os
import re
from pathlib import Path

import pytest

from harness import AGENT, wait_for
from nodes import Clone, Loop, make_random_disk, random_file, sh, sha256, stream_bytes

MIB = 1 << 20
# (filesystem, size in MiB, mkfs, read-only check)
FILESYSTEMS = [
    ("ext4", 200, ["mkfs.ext4", "-q", "-F"], ["e2fsck", "-fn"]),
    ("xfs", 320, ["mkfs.xfs", "-q", "-f"], ["xfs_repair", "-n"]),
    ("btrfs", 300, ["mkfs.btrfs", "-q", "-f"], ["btrfs", "check", "--readonly"]),
    ("ntfs", 200, ["mkfs.ntfs", "-q", "-F", "-f"], ["ntfsfix", "-n"]),
    ("vfat", 120, ["mkfs.vfat"], ["fsck.vfat", "-n"]),
]
SWAP_MIB = 40


def make_disk(tmp_path, loops):
    """The GPT disk: one partition per filesystem, then swap. Each filesystem is filled with random data,
    which is deleted, then given two known files. Returns (Loop, {(partition, name): sha256})."""
    image = tmp_path / "disk.img"
    total = 1 + sum(size for _, size, _, _ in FILESYSTEMS) + SWAP_MIB + 1
    with open(image, "wb") as f:
        f.truncate(total * MIB)
    table = "label: gpt\n" + "".join(f"size={size}MiB\n" for _, size, _, _ in FILESYSTEMS) + \
        f"size={SWAP_MIB}MiB, type=swap\n"
    sh("sfdisk", "--quiet", image, input=table)
    loop = Loop(image)
    loops.append(loop)
    loop.scan_partitions()
    wait_for(lambda: Path(loop.partition(len(FILESYSTEMS) + 1)).exists(), what="the partitions to appear")
    files, mnt, scratch = {}, tmp_path / "mnt", tmp_path / "scratch"
    mnt.mkdir()
    scratch.mkdir()
    for n, (fs, size, mkfs, _) in enumerate(FILESYSTEMS, 1):
        sh(*mkfs, loop.partition(n))
        # Stale data: the free space is not zeroes, as on any disk in use.
        random_file(scratch / "stale.bin", (size // 2) * MIB)
        with mounted(loop.partition(n), fs, mnt) as fs_files:
            fs_files.put(scratch / "stale.bin")
            fs_files.delete("stale.bin")
            for name, mib in (("a.bin", 17), ("b.bin", 3)):
                random_file(scratch / name, mib * MIB)
                files[(n, name)] = sha256(scratch / name)
                fs_files.put(scratch / name)
    sh("mkswap", loop.partition(len(FILESYSTEMS) + 1))
    return loop, files


class Files:
    """Files on a filesystem: through a mount, or with mtools for vfat (this machine's kernel has no vfat)."""

    def __init__(self, device, fs, mnt):
        self.device, self.fs, self.mnt = device, fs, mnt

    def put(self, path):
        if self.fs == "vfat":
            sh("mcopy", "-i", self.device, path, "::/")
        else:
            sh("cp", path, self.mnt / path.name)
            sh("sync")

    def delete(self, name):
        if self.fs == "vfat":
            sh("mdel", "-i", self.device, f"::/{name}")
        else:
            (self.mnt / name).unlink()

    def sha256(self, name, scratch):
        if self.fs != "vfat":
            return sha256(self.mnt / name)
        out = scratch / f"read-{name}"
        sh("mcopy", "-n", "-i", self.device, f"::/{name}", out)
        try:
            return sha256(out)
        finally:
            out.unlink()


@contextlib.contextmanager
def mounted(device, fs, mnt, readonly=False):
    if fs != "vfat":
        sh("mount", *(["-o", "ro"] if readonly else []), device, mnt)
    try:
        yield Files(device, fs, mnt)
    finally:
        if fs != "vfat":
            sh("umount", mnt)


def used_map(device):
    out = sh(AGENT, "scan", "--json", "--used-map", f"--devices={device}").stdout
    return json.loads(out)[0]["usedMap"]


def partition_ranges(loop):
    table = json.loads(sh("sfdisk", "--json", loop.device).stdout)["partitiontable"]
    return [(p["start"] * 512, p["size"] * 512) for p in table["partitions"]]


def test_unused_ranges_hold_nothing_the_filesystems_need(tmp_path, loops):
    loop, files = make_disk(tmp_path, loops)
    m = used_map(loop.device)
    parts = partition_ranges(loop)
    # Each filesystem mapped; only the swap (no filesystem) copied whole.
    assert m["copiedWhole"] == [f"partition {len(FILESYSTEMS) + 1} (swap) is copied whole: no map is made of "
                                "this filesystem"], m["copiedWhole"]
    assert m["size"] == os.path.getsize(loop.backing)
    for (offset, length) in m["unused"]:
        assert any(start <= offset and offset + length <= start + size
                   for start, size in parts[:len(FILESYSTEMS)]), (offset, length)
    for n, (fs, size, _, _) in enumerate(FILESYSTEMS, 1):
        start, length = parts[n - 1]
        unused = sum(max(0, min(o + l, start + length) - max(o, start)) for o, l in m["unused"])
        # 20 MiB of files and the filesystem's own metadata: most of the rest is free.
        assert unused > (size - 20) * MIB * 0.6, (fs, unused)

    # A copy whose unused ranges hold other random bytes: every check clean, every file the same.
    copy = tmp_path / "copy.img"
    # Read through the device: what the filesystems wrote, whether or not the loop device has handed all of it
    # to its backing file yet (a copy of the file once lacked an xfs log record, and xfs_repair saw a dirty log).
    sh("cp", "--sparse=always", loop.device, copy)
    with open(copy, "r+b") as f, open("/dev/urandom", "rb") as r:
        for offset, length in m["unused"]:
            f.seek(offset)
            left = length
            while left:
                n = min(left, 4 * MIB)
                f.write(r.read(n))
                left -= n
    other = Loop(copy)
    loops.append(other)
    other.scan_partitions()
    wait_for(lambda: Path(other.partition(len(FILESYSTEMS))).exists(), what="the copy's partitions to appear")
    mnt = tmp_path / "check"
    mnt.mkdir()
    for n, (fs, _, _, check) in enumerate(FILESYSTEMS, 1):
        r = sh(*check, other.partition(n), check=False)
        assert r.returncode == 0, (fs, r.stdout, r.stderr)
        with mounted(other.partition(n), fs, mnt, readonly=True) as fs_files:
            for name in ("a.bin", "b.bin"):
                assert fs_files.sha256(name, tmp_path) == files[(n, name)], (fs, name)


def test_what_no_map_vouches_for_is_copied_whole(tmp_path, loops):
    loop, _ = make_disk(tmp_path, loops)
    # An ext4 with errors (partclone maps only clean filesystems) and a mounted xfs: both copied whole, each
    # saying why.
    sh("debugfs", "-w", "-R", "ssv state 2", loop.partition(1))
    mnt = tmp_path / "busy"
    mnt.mkdir()
    sh("mount", "-o", "ro", loop.partition(2), mnt)
    try:
        m = used_map(loop.device)
    finally:
        sh("umount", mnt)
    whole = m["copiedWhole"]
    assert any(s.startswith("partition 1 (ext4) is copied whole: partclone.extfs -D ") and
               "file system with errors" in s for s in whole), whole
    assert any(s.startswith("partition 2 (xfs) is copied whole: it is mounted at ") for s in whole), whole
    parts = partition_ranges(loop)
    for n in (1, 2):
        start, size = parts[n - 1]
        assert not any(o < start + size and start < o + l for o, l in m["unused"]), (n, m["unused"])
    # The others are still mapped.
    start, size = parts[2]
    assert any(start <= o < start + size for o, _ in m["unused"])


def clone(tmp_path, ctl, api, network, bridge, source, tag, target_env=None, source_env=None, create_args=()):
    """A direct clone of source onto a disk of other random bytes, run to its end: (Clone, target Loop)."""
    target = make_random_disk(tmp_path, f"target-{tag}", os.path.getsize(source.backing))
    c = Clone(tmp_path, ctl, api, network, bridge, source.device, target.device, tag=tag,
              create_args=("--identity=none", *create_args))
    try:
        c.source.start(env=source_env)
        c.target.start(env=target_env)
        c.wait_status("completed", "failed", timeout=240)
        assert c.status() == "completed", (c.prop("Error"), c.target.text()[-3000:])
        assert c.target.wait(60) == 0, c.target.text()
        assert c.source.wait(60) == 0, c.source.text()
        assert c.prop("SourceDigest") == c.prop("TargetDigest")
    except BaseException:
        c.stop()
        target.detach()
        raise
    return c, target


def check_clone(target, files, tmp_path, skip=()):
    """Every filesystem on the clone passes its own check and holds its files."""
    target.scan_partitions()
    wait_for(lambda: Path(target.partition(len(FILESYSTEMS))).exists(), what="the clone's partitions to appear")
    mnt = tmp_path / "check"
    mnt.mkdir(exist_ok=True)
    for n, (fs, _, _, check) in enumerate(FILESYSTEMS, 1):
        if n in skip:
            continue
        r = sh(*check, target.partition(n), check=False)
        assert r.returncode == 0, (fs, r.stdout, r.stderr)
        with mounted(target.partition(n), fs, mnt, readonly=True) as fs_files:
            for name in ("a.bin", "b.bin"):
                assert fs_files.sha256(name, tmp_path) == files[(n, name)], (fs, name)


def test_a_clone_sends_only_what_the_filesystems_use(tmp_path, ctl, api, network, bridge_on_network, loops):
    source, files = make_disk(tmp_path, loops)
    used = os.path.getsize(source.backing) - used_map(source.device)["unusedBytes"]
    c, target = clone(tmp_path, ctl, api, network, bridge_on_network, source, "u")
    loops.append(target)
    try:
        sent = stream_bytes(c.source)
        text = c.target.text()
        notes = api.prop(f"{c.path}/target/1", "CloneTarget", "Notes")
        source_notes = c.prop("SourceNotes")
    finally:
        c.stop()
    # The used ranges and the frames' headers: the stale half of each filesystem stays home. Nothing here
    # compresses (random files), so the frames are about the used bytes.
    disk = os.path.getsize(source.backing)
    assert sent < used * 1.02 + (1 << 20), (sent, used, disk)
    assert sent < disk * 0.4, (sent, disk)
    assert "taking skip,zstd frames" in c.source.text()
    assert "unused by any filesystem, not sent (discard)" in text, text[-2000:]
    # The target checked each filesystem and said so; the source said what it copied whole.
    assert len(notes) == len(FILESYSTEMS) and all("found no errors" in n for n in notes), notes
    assert notes[0].startswith("partition 1 (ext4): e2fsck -fn "), notes
    assert source_notes == [f"partition {len(FILESYSTEMS) + 1} (swap) is copied whole: no map is made of this "
                            "filesystem"], source_notes
    status = ctl("clone", "status", c.id, check=True).stdout
    assert "Target 1: partition 1 (ext4): e2fsck -fn found no errors" in status, status
    assert f"Source: partition {len(FILESYSTEMS) + 1} (swap) is copied whole" in status, status
    check_clone(target, files, tmp_path)
    # What no filesystem uses was discarded: the loop device punched holes, which read as zeroes.
    m = used_map(source.device)
    offset, length = max(m["unused"], key=lambda e: e[1])
    with open(target.device, "rb") as f:
        f.seek(offset)
        assert f.read(min(length, 1 << 20)) == bytes(min(length, 1 << 20))


def test_an_unreadable_filesystem_is_copied_whole(tmp_path, ctl, api, network, bridge_on_network, loops):
    """The ext4's superblock overwritten with random bytes: nothing recognises a filesystem there, so no map
    vouches for any of it and all of it is copied, which the session says; the other filesystems still go
    by their maps."""
    source, files = make_disk(tmp_path, loops)
    with open(source.partition(1), "r+b") as f, open("/dev/urandom", "rb") as r:
        f.seek(1024)
        f.write(r.read(1024))
    start, size = partition_ranges(source)[0]
    c, target = clone(tmp_path, ctl, api, network, bridge_on_network, source, "w")
    loops.append(target)
    try:
        source_notes = c.prop("SourceNotes")
        notes = api.prop(f"{c.path}/target/1", "CloneTarget", "Notes")
    finally:
        c.stop()
    assert source_notes[0] == "partition 1 is copied whole: nothing on it is recognised as a filesystem", \
        source_notes
    assert not any(n.startswith("partition 1 ") for n in notes), notes  # nothing to check there
    with open(source.partition(1), "rb") as a, open(target.device, "rb") as b:
        b.seek(start)
        left = size
        while left:
            n = min(left, 8 << 20)
            assert a.read(n) == b.read(n), f"partition 1 differs near {size - left}"
            left -= n
    check_clone(target, files, tmp_path, skip=(1,))


@pytest.mark.parametrize("older", ["target", "source"])
def test_an_older_peer_gets_the_whole_disk(tmp_path, ctl, api, network, bridge_on_network, loops, older):
    """A peer that speaks neither SKIP nor ZSTD frames (a test build's switch plays one): the stream falls
    back to whole-disk frames, and the clone is the source byte for byte, stale free space included."""
    source, files = make_disk(tmp_path, loops)
    env = {"PUREBOOT_AGENT_FAULT_FEATURES": ""}
    c, target = clone(tmp_path, ctl, api, network, bridge_on_network, source, "o" + older[0],
                      **{f"{older}_env": env})
    loops.append(target)
    try:
        sent = stream_bytes(c.source)
        assert "taking whole-disk frames" in c.source.text()
    finally:
        c.stop()
    sh("cmp", source.device, target.device)
    assert sent > os.path.getsize(source.backing) * 0.5, sent


def test_a_used_block_stream_resumes_when_either_agent_is_killed(tmp_path, ctl, api, network, bridge_on_network,
                                                                 loops):
    """The target killed once runs were skipped (its journal keeps them), then the source killed further on:
    each goes on from where it was, the digests agree and every filesystem is whole."""
    source, files = make_disk(tmp_path, loops)
    target = make_random_disk(tmp_path, "target-k", os.path.getsize(source.backing))
    loops.append(target)
    c = Clone(tmp_path, ctl, api, network, bridge_on_network, source.device, target.device, tag="k",
              target_args=["--max-rate=16M"], create_args=("--identity=none",))
    try:
        c.source.start()
        c.target.start()
        wait_for(lambda: c.prop("BytesTransferred") > 300 * MIB, timeout=120, what="the ext4 to be copied")
        c.target.kill()
        journal = json.loads((c.target.state / "journal.json").read_text())
        assert journal["skipped"] and journal["skipped"][-1][0] + journal["skipped"][-1][1] <= journal["offset"]
        c.target.start()
        wait_for(lambda: c.prop("BytesTransferred") > 700 * MIB, timeout=120, what="the btrfs to be reached")
        c.source.kill()
        c.source.start()
        c.wait_status("completed", "failed", timeout=240)
        assert c.status() == "completed", (c.prop("Error"), c.target.text()[-3000:])
        assert c.target.wait(90) == 0, c.target.text()
        assert c.source.wait(90) == 0, c.source.text()
        assert c.prop("SourceDigest") == c.prop("TargetDigest")
        m = re.search(r"Resuming at offset (\d+)", c.target.text())
        assert m and int(m.group(1)) > 0, c.target.text()
        assert "The target resumes at" in c.source.text()
    finally:
        c.stop()
    check_clone(target, files, tmp_path)
