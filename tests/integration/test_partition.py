# SPDX-License-Identifier: MIT
"""Partition management end to end: pureboot-agent in partition mode scans loop devices and reports them,
operations are queued through purebootctl (checked by the controller), applied by the agent with the real
filesystem tools, and their results checked from outside: the table with sfdisk, the filesystems with their
own fsck, the files by checksum."""

import json
import os
import re
import signal
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness import DEST, REPO, ROOT, TEST_USER, stop_all, wait_for
from nodes import Agent, Loop, Network, ca_fingerprint, make_source_disk, partition_agent, random_file, sh, sha256

MIB = 1 << 20
GIB = 1 << 30


@pytest.fixture
def loops(tmp_path):
    made = []

    def make(name, size=GIB, sector_size=None):
        image = tmp_path / f"{name}.img"
        with open(image, "wb") as f:
            f.truncate(size)
        loop = Loop(image, sector_size)
        made.append(loop)
        return loop
    yield make
    for loop in made:
        for target in mounts_of(loop.device):
            sh("umount", "-l", target, check=False)
        loop.detach()


def mounts_of(device):
    out = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        src, target = line.split()[:2]
        if src.startswith(device):
            out.append(target)
    return out


class PartNode:
    """A node in partition mode, its agent and the operations queued on its disks through purebootctl."""

    def __init__(self, ctl, api, hostname, agent):
        self.ctl, self.api, self.hostname, self.agent = ctl, api, hostname, agent

    def disk_path(self, device):
        node = self.api.ok(ROOT, "Manager", "GetNode", "s", self.hostname)[0]
        for path in self.api.prop(node, "Node", "Disks"):
            if self.api.prop(path, "Disk", "Device") == device:
                return path
        return None

    def prop(self, device, name):
        return self.api.prop(self.disk_path(device), "Disk", name)

    def partitions(self, device):
        keys = ("number", "start", "size", "type", "type_name", "filesystem", "label", "uuid", "mountpoint",
                "flags", "used", "minimum", "can_shrink")
        return {p[0]: dict(zip(keys, p)) for p in self.prop(device, "Partitions")}

    def queue(self, device, op, *params, check=True):
        r = self.ctl("partition", "queue", self.hostname, device, op, *params)
        if check:
            assert r.returncode == 0, f"queue {op} {params}: {r.stderr}"
        return r

    def operations(self, device):
        return self.prop(device, "Operations")

    def apply(self, device, expect_ok=True):
        """Applies with --follow and waits for the scan the agent sends afterwards."""
        before = self.prop(device, "ScannedAt")
        r = self.ctl("partition", "apply", self.hostname, device, "--follow")
        assert (r.returncode == 0) == expect_ok, f"apply: {r.stdout}{r.stderr}\nagent:\n{self.agent.text()[-4000:]}"
        wait_for(lambda: self.prop(device, "ScannedAt") > before, timeout=60, what="the scan after the apply")
        return r


@pytest.fixture
def partition_node(controller, bridge, ctl, api, tmp_path):
    made = []

    def make(devices, hostname="part-01", mac="aa:bb:cc:00:20:01", netns=None, server=None):
        agent = partition_agent(tmp_path, ctl, api, bridge, devices, hostname, mac, netns, server)
        made.append(agent)
        return PartNode(ctl, api, hostname, agent)
    yield make
    stop_all(made)


# Filesystems from outside: files in and out, fsck, size — each with its own tools.

def write_files(node, fs, directory, count=3):
    staging = directory / "staging"
    staging.mkdir(exist_ok=True)
    files = {}
    for i in range(count):
        p = staging / f"file-{i}.bin"
        random_file(p, (4 + 3 * i) * MIB)
        files[p.name] = sha256(p)
    with mounted(node, fs, directory) as mnt:
        for name in files:
            if mnt:
                sh("cp", staging / name, Path(mnt) / name)
            else:
                sh("mcopy", "-i", node, staging / name, "::/")
    for name in files:
        (staging / name).unlink()
    return files


def check_files(node, fs, files, directory):
    out = directory / "out"
    out.mkdir(exist_ok=True)
    with mounted(node, fs, directory) as mnt:
        for name, digest in files.items():
            if mnt:
                assert sha256(Path(mnt) / name) == digest, f"{name} on the {fs} differs"
            else:
                sh("mcopy", "-n", "-i", node, f"::/{name}", out / name)
                assert sha256(out / name) == digest, f"{name} on the vfat differs"
                (out / name).unlink()


class mounted:
    """The filesystem mounted for a moment (ntfs through ntfs-3g; vfat not at all: this kernel has no
    driver, so mtools reads and writes it)."""

    def __init__(self, node, fs, directory):
        self.node, self.fs, self.dir = node, fs, directory / "mnt"

    def __enter__(self):
        if self.fs == "vfat":
            return None
        self.dir.mkdir(exist_ok=True)
        if self.fs == "ntfs":
            sh("ntfs-3g", self.node, self.dir)
        else:
            sh("mount", self.node, self.dir)
        return str(self.dir)

    def __exit__(self, *exc):
        if self.fs != "vfat":
            sh("umount", self.dir)


def fsck(node, fs):
    argv = {"ext4": ["e2fsck", "-f", "-n"], "xfs": ["xfs_repair", "-n"], "btrfs": ["btrfs", "check"],
            "ntfs": ["ntfsfix", "-n"], "vfat": ["fsck.fat", "-n"]}[fs]
    r = sh(*argv, node, check=False)
    assert r.returncode == 0, f"{' '.join(argv)} {node}: {r.stdout}{r.stderr}"


def fs_size(node, fs):
    if fs == "ext4":
        out = sh("dumpe2fs", "-h", node).stdout
        field = lambda k: int(next(l for l in out.splitlines() if l.startswith(k)).split(":")[1])
        return field("Block count") * field("Block size")
    if fs == "xfs":
        out = sh("xfs_db", "-r", "-c", "sb 0", "-c", "p dblocks blocksize", node).stdout
        values = dict(l.split(" = ") for l in out.splitlines())
        return int(values["dblocks"]) * int(values["blocksize"])
    if fs == "btrfs":
        out = sh("btrfs", "inspect-internal", "dump-super", node).stdout
        return int(next(l for l in out.splitlines() if l.startswith("total_bytes")).split()[1])
    if fs == "ntfs":
        out = sh("ntfsresize", "--info", "--force", "--no-progress-bar", node).stdout
        return int(next(l for l in out.splitlines() if l.startswith("Current volume size")).split(":")[1].split()[0])
    out = sh("fsck.fat", "-n", "-v", node).stdout
    sectors = int(next(l for l in out.splitlines() if "sectors total" in l).split()[0])
    return sectors * 512


def table(device):
    return json.loads(sh("sfdisk", "-J", device).stdout)["partitiontable"]


def test_scan_reports_the_disk_and_shows_its_map(partition_node, ctl, api, busctl, tmp_path, controller):
    loop, files = make_source_disk(tmp_path)
    try:
        n = partition_node([loop.device])
        parts = n.partitions(loop.device)
        assert n.prop(loop.device, "PartitionTable") == "gpt"
        assert n.prop(loop.device, "Size") == 256 * MIB
        assert parts[1]["filesystem"] == "ext4" and parts[1]["label"] == "root"
        assert parts[1]["type"] == "0fc63daf-8483-4772-8e79-3d69d8477de4"
        assert parts[1]["type_name"] == "Linux filesystem"
        # 36 MiB of files: used is what dumpe2fs says, the minimum 100 MiB above it
        assert 36 * MIB < parts[1]["used"] < 60 * MIB
        assert parts[1]["minimum"] >= parts[1]["used"] + 100 * MIB and parts[1]["can_shrink"]
        assert parts[2]["filesystem"] == "vfat" and parts[2]["label"] == "ESP"
        assert parts[2]["type_name"] == "EFI System" and "esp" in parts[2]["flags"]
        assert 12 * MIB < parts[2]["used"] < 20 * MIB

        listing = ctl("disk", "list", "part-01", check=True).stdout
        assert loop.device in listing and "gpt" in listing and "256.0 MiB" in listing
        show = ctl("disk", "show", "part-01", loop.device, check=True).stdout
        bar = next(l for l in show.splitlines() if l.startswith("["))
        assert len(bar) == 72 and bar.startswith("[1#") and "[2" in bar and "." in bar, show
        # the map is proportional: partition 1 (160 of 256 MiB) takes about 5/8 of it, and less than a
        # quarter of it is used
        assert 40 <= bar.index("[2") <= 50, bar
        assert 8 <= bar[:bar.index("[2")].count("#") <= 20, bar
        assert "root" in show and "ESP" in show and "ext4" in show
        shown = json.loads(ctl("--json=short", "disk", "show", "part-01", loop.device, check=True).stdout)
        assert [p["number"] for p in shown] == [1, 2]

        # The D-Bus face matches its contract.
        path = n.disk_path(loop.device)
        xml = ET.parse(REPO / "dbus" / f"{DEST}.Disk.xml").getroot().find("interface")
        live = ET.fromstring(busctl("introspect", "--xml-interface", DEST, path, check=True).stdout)
        iface = [i for i in live.findall("interface") if i.get("name") == f"{DEST}.Disk"][0]
        assert {m.get("name") for m in iface.findall("method")} == {m.get("name") for m in xml.findall("method")}
        assert ({(p.get("name"), p.get("type")) for p in iface.findall("property")} ==
                {(p.get("name"), p.get("type")) for p in xml.findall("property")})
        # The scan is kept: a restarted controller still has the disk, as it was.
        fingerprint = n.prop(loop.device, "Fingerprint")
        assert len(fingerprint) == 32
        controller.restart()
        assert n.prop(loop.device, "Fingerprint") == fingerprint
        assert n.partitions(loop.device) == parts
        assert n.prop(loop.device, "Size") == 256 * MIB
    finally:
        loop.detach()


def test_the_node_reports_its_hardware(partition_node, loops, api, ctl, controller):
    """At every boot, whatever the mode, the agent says what the machine is: the controller keeps it (across
    a restart), node show and node list --json show it. Every figure is the kernel's own (sysfs, /proc), read
    here again; the disks are those the agent looks at, a 4K-native one among them."""
    plain, native = loops("plain", 256 << 20), loops("native", 512 << 20, sector_size=4096)
    n = partition_node([plain.device, native.device])
    node = api.ok(ROOT, "Manager", "GetNode", "s", n.hostname)[0]
    wait_for(lambda: api.prop(node, "Node", "Hardware"), timeout=30, what="the hardware report")
    hw = json.loads(api.prop(node, "Node", "Hardware"))
    assert api.prop(node, "Node", "HardwareReportedAt") > 0
    dmi = Path("/sys/class/dmi/id")
    if (dmi / "sys_vendor").exists():
        assert hw["vendor"] == (dmi / "sys_vendor").read_text().strip()
        assert hw["product"] == (dmi / "product_name").read_text().strip()
    assert hw["firmware"] == ("uefi" if Path("/sys/firmware/efi").exists() else "bios")
    assert hw["cpuThreads"] == os.cpu_count() and 1 <= hw["cpuCores"] <= hw["cpuThreads"]
    meminfo = Path("/proc/meminfo").read_text()
    assert hw["memoryBytes"] == int(re.search(r"MemTotal:\s+(\d+) kB", meminfo).group(1)) * 1024
    disks = {d["device"]: d for d in hw["disks"]}
    # Every disk of the kinds machines boot from, and those it was told to look at.
    kinds = re.compile(r"(sd|vd|xvd)[a-z]+|nvme\d+n\d+|mmcblk\d+")
    machine = [f"/dev/{b.name}" for b in Path("/sys/block").iterdir()
               if kinds.fullmatch(b.name) and (b / "size").read_text().strip() != "0"]
    assert sorted(disks) == sorted([*machine, plain.device, native.device]), disks
    assert disks[plain.device]["sizeBytes"] == 256 << 20 and disks[plain.device]["logicalSectorSize"] == 512
    assert disks[native.device]["sizeBytes"] == 512 << 20 and disks[native.device]["logicalSectorSize"] == 4096
    assert disks[native.device]["transport"] == "loop" and not disks[native.device]["removable"]
    sysfs = Path("/sys/block") / Path(native.device).name
    assert disks[native.device]["rotational"] == ((sysfs / "queue/rotational").read_text().strip() == "1")
    # Every Ethernet interface of the machine, with its MAC.
    net = Path("/sys/class/net")
    ethernet = {i.name: (i / "address").read_text().strip() for i in net.iterdir()
                if i.name != "lo" and (i / "type").read_text().strip() == "1"}
    assert {i["name"]: i["mac"] for i in hw["interfaces"]} == ethernet

    shown = ctl("node", "show", n.hostname, check=True).stdout
    kind = "rotational" if disks[native.device]["rotational"] else "solid state"
    assert f"disk {native.device}: 512.0 MiB, 4096/4096-byte sectors, {kind}, loop" in shown, shown
    assert f"{hw['cpuThreads']} threads" in shown, shown
    listed = json.loads(ctl("node", "list", "--json=short", check=True).stdout)
    assert [x["hardware"] for x in listed if x["hostname"] == n.hostname] == [hw]
    controller.restart()
    assert json.loads(api.prop(node, "Node", "Hardware")) == hw

    # The inventories decide before anyone boots: a disk not there, too small, or of other sectors.
    big = loops("big", 1 << 30)
    partition_node([big.device], hostname="part-02", mac="aa:bb:cc:00:20:02")
    wait_for(lambda: api.prop(api.ok(ROOT, "Manager", "GetNode", "s", "part-02")[0], "Node", "Hardware"),
             timeout=30, what="the second node's hardware report")
    create = ("clone", "create", "--name=inv", "--mode=direct", "--source=part-02", f"--source-device={big.device}",
              "--target=part-01")
    refusals = {"/dev/sdzz": "Node part-01 had no disk /dev/sdzz at its last boot (it had /dev/",
                plain.device: f"{plain.device} on part-01 has 256.0 MiB, the source disk 1.0 GiB: use resize mode "
                              "shrink_source",
                native.device: f"{native.device} on part-01 has 4096-byte sectors, the source disk 512-byte ones"}
    for device, why in refusals.items():
        r = ctl(*create, f"--target-device={device}")
        assert r.returncode != 0 and why in r.stderr, (device, r.stderr)
        assert device != "/dev/sdzz" or all(d in r.stderr for d in disks), r.stderr
    assert ctl("clone", "list", "--json=short", check=True).stdout.strip() in ("", "[]")
    # Shrinking the source to fit is the plan's to decide, once the agents scanned.
    session = ctl(*create, f"--target-device={plain.device}", "--resize=shrink_source", check=True).stdout.strip()
    ctl("clone", "delete", session, check=True)


def test_scan_verb_prints_json(loops):
    loop = loops("blank", 64 * MIB)
    from harness import AGENT
    out = sh(AGENT, "scan", "--json", f"--devices={loop.device}").stdout
    disks = json.loads(out)
    assert disks[0]["device"] == loop.device and disks[0]["table"] == "none" and disks[0]["partitions"] == []
    assert disks[0]["sizeBytes"] == 64 * MIB and disks[0]["logicalSectorSize"] == 512


FILESYSTEMS = ["ext4", "xfs", "btrfs", "ntfs", "vfat"]


@pytest.mark.parametrize("fs", FILESYSTEMS)
def test_filesystem_create_grow_shrink(fs, partition_node, loops, tmp_path):
    """On a blank 1 GiB disk: create a partition with the filesystem, fill it with files, grow it, shrink it
    (xfs: refused), and after each step fsck is clean, every file is intact and the filesystem has the size."""
    loop = loops("disk")
    n = partition_node([loop.device])
    node = f"{loop.device}p1"
    timings = {}

    t = time.monotonic()
    n.queue(loop.device, "create", "start_bytes=1M", "size_bytes=600M", f"filesystem={fs}", "label=data")
    n.apply(loop.device)
    timings["create"] = time.monotonic() - t
    assert table(loop.device)["label"] == "gpt"
    fsck(node, fs)
    files = write_files(node, fs, tmp_path)

    parts = n.partitions(loop.device)
    assert parts[1]["filesystem"] == fs and parts[1]["size"] == 600 * MIB

    t = time.monotonic()
    n.queue(loop.device, "resize", "partition=1", "new_size_bytes=900M")
    n.apply(loop.device)
    timings["grow"] = time.monotonic() - t
    assert table(loop.device)["partitions"][0]["size"] * 512 == 900 * MIB
    fsck(node, fs)
    check_files(node, fs, files, tmp_path)
    assert 850 * MIB < fs_size(node, fs) <= 900 * MIB, "the filesystem did not grow with its partition"

    if fs == "xfs":
        r = n.queue(loop.device, "resize", "partition=1", "new_size_bytes=650M", check=False)
        assert r.returncode != 0 and "xfs, which cannot shrink" in r.stderr
        assert n.operations(loop.device)[-1][3] == "completed"  # nothing queued
    else:
        minimum = n.partitions(loop.device)[1]["minimum"]
        assert 0 < minimum <= 650 * MIB, f"{fs}: minimum {minimum}"
        t = time.monotonic()
        n.queue(loop.device, "resize", "partition=1", "new_size_bytes=650M")
        n.apply(loop.device)
        timings["shrink"] = time.monotonic() - t
        assert table(loop.device)["partitions"][0]["size"] * 512 == 650 * MIB
        fsck(node, fs)
        check_files(node, fs, files, tmp_path)
        assert fs_size(node, fs) <= 650 * MIB
    print(f"{fs} on 1 GiB: " + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()))


@pytest.mark.parametrize("label", ["gpt", "msdos"])
def test_table_operations_in_one_apply(label, partition_node, loops, tmp_path):
    """create ×3, set_flag, format, move and delete queued together and applied in one go."""
    loop = loops("disk")
    n = partition_node([loop.device])
    q = lambda *a: n.queue(loop.device, *a)
    q("create", f"table={label}", "start_bytes=1M", "size_bytes=100M", "filesystem=ext4", "type=linux")
    q("create", "start_bytes=101M", "size_bytes=200M", "type=swap", "filesystem=swap")
    q("create", "start_bytes=301M", "size_bytes=100M")
    q("set_flag", "partition=1", "flag=boot", "value=true")
    q("format", "partition=3", "filesystem=vfat", "label=stuff")
    n.apply(loop.device)
    t = table(loop.device)
    assert t["label"] == {"msdos": "dos"}.get(label, label)
    assert [(p["start"] * 512, p["size"] * 512) for p in t["partitions"]] == \
        [(MIB, 100 * MIB), (101 * MIB, 200 * MIB), (301 * MIB, 100 * MIB)]
    parts = n.partitions(loop.device)
    assert parts[2]["filesystem"] == "swap" and parts[2]["type_name"] == "Linux swap"
    assert parts[3]["filesystem"] == "vfat" and parts[3]["label"] == "STUFF"
    assert "boot" in parts[1]["flags"]
    if label == "msdos":
        assert t["partitions"][0].get("bootable") is True and t["partitions"][1]["type"] == "82"
    else:
        assert t["partitions"][1]["type"].lower() == "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f"

    # Move partition 3 (with data on it) to the right, overlapping its old place, then delete partition 2.
    files = write_files(f"{loop.device}p3", "vfat", tmp_path, count=2)
    q("move", "partition=3", "new_start_bytes=351M")
    q("delete", "partition=2")
    n.apply(loop.device)
    t = table(loop.device)
    assert [(p["start"] * 512, p["size"] * 512) for p in t["partitions"]] == [(MIB, 100 * MIB), (351 * MIB, 100 * MIB)]
    fsck(f"{loop.device}p3", "vfat")
    check_files(f"{loop.device}p3", "vfat", files, tmp_path)
    assert sorted(n.partitions(loop.device)) == [1, 3]
    ops = n.operations(loop.device)
    assert [o[3] for o in ops] == ["completed"] * 7


def test_refusals_leave_the_queue_unchanged(partition_node, loops, tmp_path):
    loop = loops("disk")
    n = partition_node([loop.device])
    n.queue(loop.device, "create", "start_bytes=1M", "size_bytes=400M", "filesystem=ext4")
    n.queue(loop.device, "create", "start_bytes=401M", "size_bytes=400M", "filesystem=xfs")
    n.apply(loop.device)
    n.queue(loop.device, "set_flag", "partition=1", "flag=boot", "value=true")
    before = n.operations(loop.device)
    minimum = n.partitions(loop.device)[1]["minimum"]
    refusals = [
        (("resize", "partition=1", "new_size_bytes=101M"), "can shrink to"),
        (("resize", "partition=2", "new_size_bytes=300M"), "xfs, which cannot shrink"),
        (("create", "start_bytes=300M", "size_bytes=200M"), "would overlap partition 1"),
        (("create", "start_bytes=900M", "size_bytes=200M"), "does not fit"),
        (("set_flag", "partition=1", "flag=sparkly", "value=true"), "not a flag of gpt tables"),
        (("resize", "partition=1", "new_size_bytes=600M"), "can grow to 400.0 MiB at most"),
        (("delete", "partition=7"), "no partition 7"),
    ]
    for args, words in refusals:
        r = n.queue(loop.device, *args, check=False)
        assert r.returncode != 0, f"{args} was queued"
        assert words in r.stderr, f"{args}: {r.stderr}"
        assert n.operations(loop.device) == before
        # Refused for what it asks before anyone is asked to authenticate: the same words for a user polkit
        # would refuse.
        r = n.ctl("--no-ask-password", "partition", "queue", n.hostname, loop.device, *args, user=TEST_USER)
        assert r.returncode != 0 and words in r.stderr and "org.pureboot.controller1" not in r.stderr, r.stderr
    # The minimum in the message is the scan's.
    r = n.queue(loop.device, "resize", "partition=1", "new_size_bytes=101M", check=False)
    assert f"can shrink to {minimum / MIB:.1f} MiB at least; 101.0 MiB asked" in r.stderr, r.stderr
    # Operations see the queue before them: after a queued delete of 2, partition 1 may grow into its place.
    n.queue(loop.device, "delete", "partition=2")
    n.queue(loop.device, "resize", "partition=1", "new_size_bytes=600M")


def test_a_failed_operation_restores_the_table_and_leaves_the_rest_pending(partition_node, loops, tmp_path):
    loop = loops("disk")
    n = partition_node([loop.device])
    n.queue(loop.device, "create", "start_bytes=1M", "size_bytes=400M", "filesystem=ext4")
    n.queue(loop.device, "create", "start_bytes=401M", "size_bytes=300M", "filesystem=xfs")
    n.apply(loop.device)

    # A shrink that fitted when queued; then the filesystem fills up, and resize2fs itself refuses.
    minimum = n.partitions(loop.device)[1]["minimum"]
    shrink = n.queue(loop.device, "resize", "partition=1", f"new_size_bytes={minimum}").stdout.strip()
    later = n.queue(loop.device, "set_flag", "partition=1", "flag=boot", "value=true").stdout.strip()
    with mounted(f"{loop.device}p1", "ext4", tmp_path) as mnt:
        random_file(Path(mnt) / "filler.bin", 300 * MIB)
    with open(loop.device, "rb") as f:
        before = f.read(34 * 512)
        f.seek(GIB - 33 * 512)
        tail = f.read(33 * 512)
    r = n.apply(loop.device, expect_ok=False)
    assert "failed" in r.stdout
    ops = {o[0]: o for o in n.operations(loop.device)}
    assert ops[shrink][3] == "failed" and "resize2fs" in ops[shrink][4], ops[shrink]
    assert "smaller than minimum" in ops[shrink][4] or "No space left" in ops[shrink][4], ops[shrink][4]
    assert ops[shrink][4].endswith("The partition table was put back as it was before."), ops[shrink][4]
    assert ops[later][3] == "pending"
    with open(loop.device, "rb") as f:
        assert f.read(34 * 512) == before
        f.seek(GIB - 33 * 512)
        assert f.read(33 * 512) == tail
    fsck(f"{loop.device}p1", "ext4")

    # A grow whose filesystem step fails after the partition grew: the table goes back byte for byte, and
    # so does the kernel's idea of the partition. (An xfs with an incompatible feature bit this kernel
    # does not know: blkid still sees xfs, the kernel refuses to mount it for xfs_growfs.)
    n.ctl("partition", "remove", n.hostname, loop.device, later, check=True)
    sh("xfs_db", "-x", "-c", "sb 0", "-c", "write -d features_incompat 0x80000000", f"{loop.device}p2")
    n.ctl("node", "scan", n.hostname, check=True)
    wait_for(lambda: n.partitions(loop.device)[2]["used"] == 0, timeout=30, what="the rescan")
    grow = n.queue(loop.device, "resize", "partition=2", "new_size_bytes=500M").stdout.strip()
    later = n.queue(loop.device, "set_flag", "partition=1", "flag=boot", "value=true").stdout.strip()
    with open(loop.device, "rb") as f:
        before = f.read(34 * 512)
        f.seek(GIB - 33 * 512)
        tail = f.read(33 * 512)
    r = n.apply(loop.device, expect_ok=False)
    ops = {o[0]: o for o in n.operations(loop.device)}
    assert ops[grow][3] == "failed" and "Failed to mount the xfs" in ops[grow][4], ops[grow]
    assert ops[later][3] == "pending", ops[later]
    with open(loop.device, "rb") as f:
        assert f.read(34 * 512) == before, "the primary GPT was not restored"
        f.seek(GIB - 33 * 512)
        assert f.read(33 * 512) == tail, "the backup GPT was not restored"
    assert int(Path(f"/sys/class/block/{Path(loop.device).name}p2/size").read_text()) * 512 == 300 * MIB
    assert "Restored the partition table" in n.agent.text()


def erase(n, device, method, expect_ok=True):
    """purebootctl disk erase --follow, and the scan the agent sends after it."""
    before = n.prop(device, "ScannedAt")
    r = n.ctl("disk", "erase", n.hostname, device, f"--method={method}", "--follow")
    assert (r.returncode == 0) == expect_ok, f"erase: {r.stdout}{r.stderr}\nagent:\n{n.agent.text()[-4000:]}"
    wait_for(lambda: n.prop(device, "ScannedAt") > before, timeout=60, what="the scan after the erase")
    return r


def allocated(path):
    return os.stat(path).st_blocks * 512


def test_erase_zero_and_discard_checked_from_outside_and_secure_refused(partition_node, loops):
    """Each method on a real disk: every byte read back as zeros from outside, a discard releasing the loop
    file's blocks, the controller's record of what was done and how it was checked; the drive's own secure
    erase refused on a disk that has none, which stays as it was; every refusal before anything changes."""
    zeroed, discarded = loops("zeroed", 256 * MIB), loops("discarded", 256 * MIB)
    for loop in (zeroed, discarded):
        sh("sfdisk", "--quiet", loop.device, input="label: gpt\nstart=1MiB, size=100MiB\nsize=100MiB\n")
        for mib in (10, 60, 150, 250):
            sh("dd", "if=/dev/urandom", f"of={loop.device}", "bs=1M", f"seek={mib}", "count=4", "conv=fsync",
               "status=none")
    n = partition_node([zeroed.device, discarded.device])
    content = sha256(zeroed.device)

    refusals = [
        ((), "needs --method"),
        (("--method=shred",), "is not an erase method; use discard"),
    ]
    for args, words in refusals:
        r = n.ctl("disk", "erase", n.hostname, zeroed.device, *args)
        assert r.returncode != 0 and words in r.stderr, r.stderr
    r = n.queue(zeroed.device, "erase", "method=zero", check=False)
    assert r.returncode != 0 and "not queued with the partition operations" in r.stderr, r.stderr
    # Its own polkit action, asked every time: manage-partitions does not cover it.
    r = n.ctl("--no-ask-password", "disk", "erase", n.hostname, zeroed.device, "--method=zero", user=TEST_USER)
    assert r.returncode != 0 and "org.pureboot.controller1.manage-disks" in r.stderr, r.stderr
    # It takes the disk alone.
    n.queue(zeroed.device, "delete", "partition=2")
    r = n.ctl("disk", "erase", n.hostname, zeroed.device, "--method=zero")
    assert r.returncode != 0 and "an erase takes the disk alone" in r.stderr, r.stderr
    n.ctl("partition", "remove", n.hostname, zeroed.device, n.operations(zeroed.device)[0][0], check=True)
    assert n.operations(zeroed.device) == [] and sha256(zeroed.device) == content

    # A loop device has no secure erase of its own: refused on the node, nothing changed.
    r = erase(n, zeroed.device, "secure", expect_ok=False)
    assert "neither an NVMe namespace nor an ATA drive. Nothing was erased." in r.stdout, r.stdout
    assert sha256(zeroed.device) == content
    assert n.operations(zeroed.device)[-1][3] == "failed" and len(n.partitions(zeroed.device)) == 2

    r = erase(n, zeroed.device, "zero")
    assert re.search(r"Erased /dev/loop\d+ \(256\.0 MiB\) by writing zeros to every block in [\d.]+ s; checked: "
                     r"64 samples, [\d.]+ MiB in all, the first and the last MiB among them, read back from the "
                     r"device as zeros\.", r.stdout), r.stdout
    assert sh("cmp", "-n", str(256 * MIB), zeroed.device, "/dev/zero", check=False).returncode == 0
    op = n.operations(zeroed.device)[-1]
    assert (op[1], op[3], op[7], op[8]) == ("erase", "completed", 256 * MIB, 256 * MIB), op
    assert op[4].startswith("Erased ") and "read back from the device as zeros" in op[4]
    assert n.prop(zeroed.device, "PartitionTable") == "none" and n.partitions(zeroed.device) == {}

    before = allocated(discarded.backing)
    assert before > 16 * MIB
    r = erase(n, discarded.device, "discard")
    assert "by discarding every block (the device has no secure discard)" in r.stdout, r.stdout
    assert sh("cmp", "-n", str(256 * MIB), discarded.device, "/dev/zero", check=False).returncode == 0
    assert allocated(discarded.backing) < MIB, (before, allocated(discarded.backing))
    assert n.prop(discarded.device, "PartitionTable") == "none"
    # The record of it in the list: what was done, and how it was checked.
    assert "Erased" in n.ctl("partition", "list", n.hostname, discarded.device, check=True).stdout


def test_apply_while_applying_is_invalid_state(partition_node, loops, api):
    loop = loops("disk")
    n = partition_node([loop.device])
    n.queue(loop.device, "create", "start_bytes=1M", "size_bytes=100M")
    os.killpg(n.agent.proc.pid, signal.SIGSTOP)  # the node is slow to start on it
    try:
        path = n.disk_path(loop.device)
        api.ok(path, "Disk", "Apply", "a{sv}", "0")
        r = api.call(path, "Disk", "Apply", "a{sv}", "0")
        assert r.returncode != 0 and "is applying its operations" in r.stderr, r.stderr
        r = n.queue(loop.device, "create", "start_bytes=200M", "size_bytes=100M", check=False)
        assert r.returncode != 0 and "applying its operations" in r.stderr
    finally:
        os.killpg(n.agent.proc.pid, signal.SIGCONT)
    wait_for(lambda: not n.prop(loop.device, "Applying"), timeout=60, what="the apply to finish")
    assert n.operations(loop.device)[0][3] == "completed"


def test_partition_mode_through_the_bridge_from_a_namespace(controller, ctl, api, loops, tmp_path):
    """The agent in its own network namespace, reaching the bridge over a veth: scan, a rescan on request
    after the disk changed behind its back, and an apply."""
    from harness import Bridge
    with Network(index=3) as net:
        bridge = Bridge(controller.bus, tmp_path, address=net.address).start()
        try:
            ns, _ = net.node("part")
            loop = loops("disk")
            node_path = api.node("ns-node", "aa:bb:cc:00:20:09")
            token = ctl("node", "token", "ns-node", check=True).stdout.strip()
            line = (f"pureboot.mode=partition pureboot.node={node_path.rsplit('/', 1)[1]} pureboot.server={bridge.url} "
                    f"pureboot.token={token} pureboot.ca=sha256:{ca_fingerprint(bridge.ca)} pureboot.devices={loop.device}")
            agent = Agent(tmp_path, "ns-node", ns, line).start()
            try:
                n = PartNode(ctl, api, "ns-node", agent)
                wait_for(lambda: n.disk_path(loop.device), timeout=60, what=f"the scan; agent:\n{agent.text()[-2000:]}")
                assert n.prop(loop.device, "PartitionTable") == "none"
                # Someone partitions the disk by hand; the node scans again when asked.
                sh("sfdisk", "--quiet", loop.device, input="label: gpt\nstart=1MiB, size=64MiB\n")
                ctl("node", "scan", "ns-node", check=True)
                wait_for(lambda: n.prop(loop.device, "PartitionTable") == "gpt", timeout=30, what="the rescan")
                n.queue(loop.device, "format", "partition=1", "filesystem=ext4", "label=fromns")
                n.apply(loop.device)
                assert sh("blkid", "-o", "value", "-s", "LABEL", f"{loop.device}p1").stdout.strip() == "fromns"
                assert "Enrolled" in agent.text() or "Going on" in agent.text()
            finally:
                agent.stop()
        finally:
            bridge.stop()


@pytest.mark.parametrize("outcome", ["finished", "undone"])
def test_a_move_killed_halfway_is_finished_or_undone_at_the_next_start(outcome, partition_node, loops, tmp_path):
    """SIGKILL in the middle of a move (a test build pauses after each block): the journal in the agent's
    state directory says how far it got, and the next start finishes the move before anything else — or, if
    the disk is not as the journal left it, puts back what the destination held — and the queue says so."""
    loop = loops("disk")
    n = partition_node([loop.device])
    n.queue(loop.device, "create", "start_bytes=1M", "size_bytes=200M", "filesystem=ext4")
    n.apply(loop.device)
    files = write_files(f"{loop.device}p1", "ext4", tmp_path, count=3)
    move = n.queue(loop.device, "move", "partition=1", "new_start_bytes=301M").stdout.strip()
    n.agent.stop()
    n.agent.start(env={"PUREBOOT_AGENT_FAULT_MOVE_BLOCK_MS": "100"})
    journal = n.agent.state / "move-journal.json"

    def halfway():
        try:
            done = json.loads(journal.read_text())["done"]
        except (OSError, ValueError):
            return False
        return 40 * MIB < done < 160 * MIB
    wait_for(lambda: n.prop(loop.device, "ScannedAt") > 0, timeout=30, what="the agent to be back")
    n.ctl("partition", "apply", n.hostname, loop.device, check=True)
    wait_for(halfway, timeout=60, what=f"the move to be half done; agent:\n{n.agent.text()[-2000:]}")
    n.agent.kill()
    state = json.loads(journal.read_text())
    assert state["operation"] == move and state["from"] == MIB and state["to"] == 301 * MIB, state
    if outcome == "undone":  # the disk is no longer what the journal says: nothing may be finished on it
        state["diskSize"] += 512
        journal.write_text(json.dumps(state))
    n.agent.start()
    ops = lambda: {o[0]: o for o in n.operations(loop.device)}
    wait_for(lambda: ops()[move][3] in ("completed", "failed"), timeout=60,
             what=f"the move's outcome; agent:\n{n.agent.text()[-3000:]}")
    assert not journal.exists() and not (n.agent.state / "move-undo.bin").exists()
    start = table(loop.device)["partitions"][0]["start"] * 512
    if outcome == "finished":
        assert ops()[move][3] == "completed", ops()[move]
        assert start == 301 * MIB
        assert "Finishing the move of partition 1" in n.agent.text()
    else:
        assert ops()[move][3] == "failed" and "Interrupted" in ops()[move][4], ops()[move]
        assert start == MIB
        assert "Undid the interrupted move" in n.agent.text()
    fsck(f"{loop.device}p1", "ext4")
    check_files(f"{loop.device}p1", "ext4", files, tmp_path)
