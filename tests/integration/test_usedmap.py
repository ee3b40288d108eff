# SPDX-License-Identifier: MIT
"""Used-block maps (issue 18's first step): what of a disk its filesystems leave unused, read by partclone
from each filesystem's own metadata. Real loop devices with ext4, xfs, btrfs, ntfs and vfat, each first
filled with random data that is then deleted, then given known files. The proof a map is right: a copy of
the disk whose every unused range is overwritten with other random bytes still passes each filesystem's
own check, and every file reads back the same."""

import contextlib
import json
import os
from pathlib import Path

from harness import AGENT, wait_for
from nodes import Loop, random_file, sh, sha256

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
    sh("cp", "--sparse=always", loop.backing, copy)
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
