# SPDX-License-Identifier: MIT
"""Simulated nodes for the clone tests: network namespaces joined by a Linux bridge, disks on loop devices,
and pureboot-agent run the way its unit runs it (a kernel command line with the boot answer's settings).
Everything made here is recorded and removed by name, PID and device, also when a test fails."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from harness import AGENT, Started, stop_all, wait_for

FIXTURE_TAG = f"{os.getpid() % 10000}"


def sh(*argv, check=True, **kw):
    return subprocess.run([str(a) for a in argv], check=check, capture_output=True, text=True, **kw)


class Network:
    """A Linux bridge and one namespace per node on it. The bridge is in the root namespace (the controller's
    side), or, with isolated=True, in a namespace of its own (ns) together with everything that joins it: then
    nothing on it reaches anything else, and the controller's side runs in ns too."""

    def __init__(self, index=0, isolated=False):
        self.tag = f"pb{FIXTURE_TAG}{index}"
        self.index = index
        self.bridge = f"{self.tag}br"
        self.subnet = f"10.213.{(os.getpid() + index) % 250}"
        self.address = f"{self.subnet}.1"
        self.ns = f"{self.tag}-net" if isolated else None
        self.namespaces = []
        self.links = {}  # namespace: its end of the veth

    def ip(self, *args, check=True):
        """ip(8) in the bridge's namespace."""
        return sh("ip", *(("-n", self.ns) if self.ns else ()), *args, check=check)

    def __enter__(self):
        try:
            if self.ns:
                sh("ip", "netns", "add", self.ns)
                self.ip("link", "set", "lo", "up")
            # An address of its own: a bridge otherwise takes the lowest of its ports', so a node added later
            # could change it under the nodes' ARP caches, and their traffic to the bridge's address would go
            # nowhere until those entries expire (tens of seconds).
            self.ip("link", "add", self.bridge, "address", f"02:50:42:{(os.getpid() >> 8) & 0xff:02x}:"
                    f"{os.getpid() & 0xff:02x}:{self.index:02x}", "type", "bridge")
            self.ip("addr", "add", f"{self.address}/24", "dev", self.bridge)
            self.ip("link", "set", self.bridge, "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def node(self, name):
        """A namespace with a veth on the bridge; returns (namespace, address)."""
        ns = f"{self.tag}-{name}"
        # Named by their place on the network, not by the node's name: two names may share a prefix.
        host_if, node_if = f"{self.tag}v{len(self.namespaces)}h", f"{self.tag}v{len(self.namespaces)}n"
        address = f"{self.subnet}.{len(self.namespaces) + 2}"
        sh("ip", "netns", "add", ns)
        self.namespaces.append(ns)
        self.links[ns] = node_if
        self.ip("link", "add", host_if, "type", "veth", "peer", "name", node_if, "netns", ns)
        self.ip("link", "set", host_if, "master", self.bridge, "up")
        sh("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", node_if)
        sh("ip", "-n", ns, "link", "set", node_if, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        return ns, address

    def data_link(self, a, b):
        """A second link straight between the nodes in namespaces a and b, on a subnet of its own (a data network
        beside the management one the bridge is on). Returns (subnet, address in a, address in b, link name in a).
        It goes with the namespaces."""
        subnet = f"10.214.{int(self.subnet.rsplit('.', 1)[1])}"
        if_a, if_b = f"{self.tag}da", f"{self.tag}db"
        sh("ip", "-n", a, "link", "add", if_a, "type", "veth", "peer", "name", if_b, "netns", b)
        for ns, link, address in ((a, if_a, f"{subnet}.1"), (b, if_b, f"{subnet}.2")):
            sh("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", link)
            sh("ip", "-n", ns, "link", "set", link, "up")
        return f"{subnet}.0/24", f"{subnet}.1", f"{subnet}.2", if_a

    def tx_bytes(self, ns, link=None):
        """Bytes sent so far by the node in namespace ns onto the network (or onto link): counted by the kernel."""
        out = sh("ip", "-n", ns, "-s", "-j", "link", "show", "dev", link or self.links[ns]).stdout
        return json.loads(out)[0]["stats64"]["tx"]["bytes"]

    def __exit__(self, *exc):
        for ns in self.namespaces:
            sh("ip", "netns", "del", ns, check=False)  # takes its veth end, and so the pair, with it
        if self.ns:
            sh("ip", "netns", "del", self.ns, check=False)  # the bridge, and all still on it, with it
        else:
            sh("ip", "link", "del", self.bridge, check=False)


class Loop:
    """A loop device over a file (with partition scanning), detached by its name at the end."""

    def __init__(self, backing, sector_size=None):
        self.backing = Path(backing)
        sector = ("--sector-size", str(sector_size)) if sector_size else ()
        self.device = sh("losetup", "--find", "--show", "--partscan", *sector, self.backing).stdout.strip()

    def scan_partitions(self):
        """Tells the kernel about the partitions. This machine's kernel parses no partition tables at all
        (CONFIG_MSDOS_PARTITION and CONFIG_EFI_PARTITION are off), so the agent's BLKRRPART finds nothing
        here; partx reads the table in userspace and adds the partitions with BLKPG, as udisks would."""
        sh("partx", "-u", self.device, check=False)
        if not Path(self.partition(1)).exists():
            sh("partx", "-a", self.device, check=False)

    def partition(self, n):
        return f"{self.device}p{n}"

    def detach(self):
        """Detaches it, waiting up to 10 s for whatever still has it open (an agent that is ending, udev, a
        partition scan): a busy loop device is only marked to go at its last close, which may not come."""
        backing = Path(f"/sys/block/{Path(self.device).name}/loop/backing_file")
        deadline = time.monotonic() + 10
        while True:
            sh("losetup", "-d", self.device, check=False)
            if not backing.exists() or Path(backing.read_text().strip()) != self.backing.resolve() \
                    or time.monotonic() > deadline:
                return
            time.sleep(0.2)


def sha256(path, limit=None):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        left = limit
        while left is None or left > 0:
            block = f.read(1 << 20 if left is None else min(1 << 20, left))
            if not block:
                break
            h.update(block)
            if left is not None:
                left -= len(block)
    return h.hexdigest()


def random_file(path, size):
    with open(path, "wb") as f, open("/dev/urandom", "rb") as r:
        left = size
        while left:
            n = min(left, 4 << 20)
            f.write(r.read(n))
            left -= n


def make_half_zero_disk(directory, name, size):
    """A disk of 1 MiB random and 1 MiB zero chunks in turn: half of it zeroes, as the stream frames it."""
    image = directory / f"{name}.img"
    with open(image, "wb") as f, open("/dev/urandom", "rb") as r:
        for offset in range(0, size, 2 << 20):
            f.seek(offset)
            f.write(r.read(1 << 20))
        f.truncate(size)
    return Loop(image)


def data_bytes(path, chunk=1 << 20):
    """The bytes of path in chunks that are not all zeroes: what a stream sends as DATA frames."""
    zero, n = bytes(chunk), 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            n += len(block) if block != zero[:len(block)] else 0
    return n


def make_source_disk(directory, size=256 << 20, data_mib=48):
    """A GPT disk with an ext4 and a vfat partition holding known files, the rest zeroes. Returns
    (Loop, {"<partition>/<name>": sha256}). This kernel has no vfat driver, so the ESP's files go in and
    come out with mtools, in userspace."""
    image = directory / "source.img"
    with open(image, "wb") as f:
        f.truncate(size)
    sh("sfdisk", "--quiet", image, input="label: gpt\nstart=1MiB, size=160MiB, type=linux, name=root\n"
                                          "size=64MiB, type=uefi, name=esp\n")
    loop = Loop(image)
    loop.scan_partitions()
    files = {}
    mnt, staging = directory / "mnt", directory / "files"
    mnt.mkdir(exist_ok=True)
    staging.mkdir(exist_ok=True)
    try:
        wait_for(lambda: Path(loop.partition(2)).exists(), what="partitions to appear")
        sh("mkfs.ext4", "-q", "-F", "-L", "root", loop.partition(1))
        sh("mkfs.vfat", "-n", "ESP", loop.partition(2))
        for part, name, count in ((1, "root", 3), (2, "esp", 1)):
            made = []
            for i in range(count):
                p = staging / f"{name}-{i}.bin"
                random_file(p, (data_mib << 20) // 4)
                made.append(p)
            p = staging / f"{name}.txt"
            p.write_text(f"hello from {name}\n")
            made.append(p)
            for p in made:
                files[f"{part}/{p.name}"] = sha256(p)
            if part == 1:
                sh("mount", loop.partition(1), mnt)
                try:
                    for p in made:
                        sh("cp", p, mnt / p.name)
                finally:
                    sh("umount", mnt)
            else:
                sh("mcopy", "-i", loop.partition(2), *made, "::/")
            for p in made:
                p.unlink()
    except Exception:
        loop.detach()
        raise
    return loop, files


def make_root_last_disk(tmp_path, loops, size=1 << 30, swap_mib=0, data_files=8):
    """A GPT disk as installers make them: an ESP (vfat, 1–65 MiB) and an ext4 root from 65 MiB to the end (or to
    a swap partition of swap_mib at the end), with data_files known files of 48 MiB (8: 40 % of 1 GiB). Returns
    (Loop, {name: sha256}) with the Loop added to loops."""
    image = tmp_path / "source.img"
    with open(image, "wb") as f:
        f.truncate(size)
    root_mib = (size >> 20) - 1 - 65 - swap_mib
    sh("sfdisk", "--quiet", image, input="label: gpt\nstart=1MiB, size=64MiB, type=uefi, name=esp\n"
                                          f"start=65MiB, size={root_mib}MiB, type=linux, name=root\n" +
                                          ("type=swap, name=swap\n" if swap_mib else ""))
    loop = Loop(image)
    loops.append(loop)
    loop.scan_partitions()
    wait_for(lambda: Path(loop.partition(2)).exists(), what="partitions to appear")
    sh("mkfs.vfat", "-n", "ESP", loop.partition(1))
    sh("mkfs.ext4", "-q", "-F", "-L", "root", loop.partition(2))
    if swap_mib:
        wait_for(lambda: Path(loop.partition(3)).exists(), what="the swap partition to appear")
        sh("mkswap", "-L", "swap", loop.partition(3))
    files, staging, mnt = {}, tmp_path / "files", tmp_path / "mnt"
    staging.mkdir()
    mnt.mkdir()
    sh("mount", loop.partition(2), mnt)
    try:
        for i in range(data_files):
            p = staging / f"data-{i}.bin"
            random_file(p, 48 << 20)
            files[p.name] = sha256(p)
            sh("cp", p, mnt / p.name)
            p.unlink()
    finally:
        sh("umount", mnt)
    hello = staging / "hello.txt"
    hello.write_text("hello from the ESP\n")
    sh("mcopy", "-i", loop.partition(1), hello, "::/")
    return loop, files


def make_blank_disk(tmp_path, loops, name, size):
    """A sparse, all-zero disk of size bytes."""
    image = tmp_path / f"{name}.img"
    with open(image, "wb") as f:
        f.truncate(size)
    loop = Loop(image)
    loops.append(loop)
    return loop


def gpt_layout(loop):
    """The table as sfdisk reads it: {"lastlba", "partitions": [{"start", "size"} in sectors]}."""
    return json.loads(sh("sfdisk", "--json", loop.device).stdout)["partitiontable"]


def check_root_last_disk(loop, files, tmp_path, root_bytes):
    """The GPT is whole at this disk's end, fsck is clean, every file is there, the root is as planned."""
    sh("sfdisk", "--verify", loop.device)
    table = gpt_layout(loop)
    size = Path(f"/sys/class/block/{Path(loop.device).name}/size").read_text().strip()
    assert table["lastlba"] == int(size) - 34, table
    assert table["partitions"][1]["size"] * 512 == root_bytes, table
    loop.scan_partitions()
    wait_for(lambda: Path(loop.partition(2)).exists(), timeout=5, what=f"{loop.partition(2)} to appear")
    sh("e2fsck", "-f", "-n", loop.partition(2))
    sh("fsck.vfat", "-n", loop.partition(1))
    blocks = sh("dumpe2fs", "-h", loop.partition(2)).stdout
    block_count = int(next(l for l in blocks.splitlines() if l.startswith("Block count:")).split()[-1])
    block_size = int(next(l for l in blocks.splitlines() if l.startswith("Block size:")).split()[-1])
    assert block_count * block_size == root_bytes, "the filesystem fills its partition"
    mnt = tmp_path / "check"
    mnt.mkdir(exist_ok=True)
    sh("mount", "-o", "ro", loop.partition(2), mnt)
    try:
        for name, digest in files.items():
            assert sha256(mnt / name) == digest, name
    finally:
        sh("umount", mnt)
    assert "hello from the ESP" in sh("mtype", "-i", loop.partition(1), "::/hello.txt").stdout


def stream_bytes(agent):
    """A source agent's own count of the stream bytes it sent, summed over its runs (a killed run's last
    stream is not in it)."""
    total = 0
    for run in agent.text().split("--- run ")[1:]:
        counts = re.findall(r"\((\d+) bytes in all streams so far\)", run)
        total += int(counts[-1]) if counts else 0
    return total


def make_random_disk(directory, name, size):
    image = directory / f"{name}.img"
    random_file(image, size)
    return Loop(image)


def check_files(loop, files, directory):
    """fsck is clean on both filesystems and every file has its checksum."""
    loop.scan_partitions()
    wait_for(lambda: Path(loop.partition(2)).exists(), timeout=5, what=f"{loop.partition(2)} to appear")
    sh("e2fsck", "-f", "-n", loop.partition(1))
    sh("fsck.vfat", "-n", loop.partition(2))
    mnt, out = directory / "check", directory / "out"
    mnt.mkdir(exist_ok=True)
    out.mkdir(exist_ok=True)
    sh("mount", "-o", "ro", loop.partition(1), mnt)
    try:
        for key, digest in files.items():
            part, name = key.split("/", 1)
            if part == "1":
                assert sha256(mnt / name) == digest, f"{key} differs"
            else:
                sh("mcopy", "-n", "-i", loop.partition(2), f"::/{name}", out / name)
                assert sha256(out / name) == digest, f"{key} differs"
    finally:
        sh("umount", mnt)


class Agent(Started):
    """pureboot-agent in a node's namespace, started from a kernel command line file as its unit would."""

    group = True
    # Interrupted, it says so (AGENT_EXIT_FAILURE: what it has queued stays for the next run); one that was
    # finishing its job just then ends with the job's own status (AGENT_EXIT_*). A crash or a sanitizer
    # report is a signal.
    term_status = (0, 1, 2, 3, 4)

    def own_exit_ok(self, rc):
        return 0 <= rc <= 4  # one of its documented statuses (AGENT_EXIT_*): no crash, no sanitizer report

    def __init__(self, directory, name, netns, cmdline, *args):
        self.what = f"the {name} agent"
        self.dir = directory / name
        self.dir.mkdir(exist_ok=True)
        self.state = self.dir / "state"
        self.cmdline = self.dir / "cmdline"
        self.cmdline.write_text(cmdline + "\n")
        self.netns = netns
        self.args = list(args)
        self.log = self.dir / "agent.log"
        self.proc = None
        self.runs = 0

    def start(self, env=None, binary=AGENT):
        """Runs it (binary: another build's agent, for a test that needs one)."""
        assert self.proc is None or self.stop() is not None  # the previous run's end checked
        self.seen = False
        self.runs += 1
        argv = [str(binary), "run", f"--cmdline-file={self.cmdline}", f"--state-dir={self.state}", "--log-level=debug",
                *self.args]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        with open(self.log, "a") as log:
            log.write(f"--- run {self.runs}\n")
        env = {**os.environ, **(env or {})}
        if "ASAN_OPTIONS" in env:
            # libparted is built without frame pointers: only a full unwind shows LeakSanitizer the libparted
            # function a leak of its own comes from (tests/lsan.supp). The agent allocates little.
            env["ASAN_OPTIONS"] += ":fast_unwind_on_malloc=0"
        self.proc = subprocess.Popen(argv, stdout=open(self.log, "a"), stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        return self

    def text(self):
        return self.log.read_text() if self.log.exists() else ""


def cmdline(mode, session, node, server, token, ca, device):
    return (f"console=ttyS0 pureboot.mode={mode} pureboot.session={session} pureboot.node={node} "
            f"pureboot.server={server} pureboot.token={token} pureboot.ca=sha256:{ca} pureboot.device={device}")


def ca_fingerprint(pem_path):
    out = sh("certtool", "--fingerprint", "--hash=sha256", "--infile", pem_path).stdout
    return re.sub(r"[^0-9a-f]", "", out.strip().lower())


class Clone:
    """One session between two simulated nodes, with their agents: direct, or staged on a storage backend.
    Node namespaces are named from tag, unique on the network."""

    def __init__(self, tmp_path, ctl, api, network, bridge, source_dev, target_dev, source_args=(), target_args=(),
                 mode="direct", storage=None, tag="", resize=None, create_args=(), start=True, session=None):
        """start False: the session is left pending, for the test to start it its own way. session: the id of
        one made elsewhere (the Cockpit wizard), whose agents these are."""
        self.ctl, self.api = ctl, api
        self.tmp = tmp_path
        self.network, self.bridge, self.tag, self.mode = network, bridge, tag, mode
        self.added = []
        for hostname, mac in (("src-node", "aa:bb:cc:00:10:01"), ("tgt-node", "aa:bb:cc:00:10:02")):
            r = api.call("/org/pureboot/Controller1", "Manager", "RegisterNode", "sssa{sv}", hostname, mac, "x86_64", "0")
            assert r.returncode == 0 or "already has this MAC" in r.stderr, r.stderr  # a second session: known
        if session:
            self.id = session
        else:
            r = ctl("clone", "create", "--name=e2e", f"--mode={mode}", "--source=src-node", "--target=tgt-node",
                    f"--source-device={source_dev}", f"--target-device={target_dev}",
                    *([f"--storage={storage}"] if storage else []), *([f"--resize={resize}"] if resize else []),
                    *create_args, check=True)
            self.id = r.stdout.strip().split()[-1]
        if start and not session:
            ctl("clone", "start", self.id, check=True)
        self.path = f"/org/pureboot/Controller1/clone/{self.id}"
        fingerprint = ca_fingerprint(bridge.ca)
        self.agents = {}
        for role, dev, args in (("source", source_dev, source_args), ("target", target_dev, target_args)):
            ns, _ = network.node(f"{role[0]}{tag}" if tag else role[:3])
            token = ctl("clone", "token", self.id, f"--role={role}", check=True).stdout.strip()
            node = "src-node" if role == "source" else "tgt-node"
            self.agents[role] = Agent(tmp_path, role, ns,
                                      cmdline(f"clone_{role}_{mode}", self.id, node, bridge.url, token, fingerprint,
                                              dev), *args)
        # What the source's link has carried before its agent runs: the tests count the stream from there.
        self.source_tx_at_start = network.tx_bytes(self.source.netns)

    def add_target(self, device, resize=None, hostname="tgt2-node", mac="aa:bb:cc:00:10:03", args=()):
        """One more target of this (staged) session, and an agent for it in a namespace of its own (not
        started). Returns (the target's object path, Agent)."""
        r = self.api.call("/org/pureboot/Controller1", "Manager", "RegisterNode", "sssa{sv}", hostname, mac, "x86_64", "0")
        assert r.returncode == 0 or "already has this MAC" in r.stderr, r.stderr
        r = self.ctl("clone", "add-target", self.id, f"--target={hostname}", f"--target-device={device}",
                     *([f"--resize={resize}"] if resize else []), check=True)
        index = r.stdout.strip().split()[-1]
        ns, _ = self.network.node(f"a{len(self.added)}{self.tag}")
        token = self.ctl("clone", "token", self.id, f"--target={index}", check=True).stdout.strip()
        agent = Agent(self.tmp, f"added-{len(self.added)}", ns,
                      cmdline(f"clone_target_{self.mode}", self.id, hostname, self.bridge.url, token,
                              ca_fingerprint(self.bridge.ca), device), *args)
        self.added.append(agent)
        self.agents[f"added-{len(self.added) - 1}"] = agent
        return f"{self.path}/target/{index}", agent

    @property
    def source(self):
        return self.agents["source"]

    @property
    def target(self):
        return self.agents["target"]

    def prop(self, name):
        return self.api.prop(self.path, "CloneSession", name)

    def status(self):
        return self.prop("Status")

    def wait_status(self, *statuses, timeout=120):
        def reached():
            for role, a in self.agents.items():
                code = a.proc.poll() if a.proc else None
                if code is not None and code < 0:
                    raise AssertionError(f"the {role} agent died of signal {-code}:\n{a.text()[-3000:]}")
            return self.status() in statuses
        wait_for(reached, timeout=timeout,
                 what=f"session {self.id} to become {'/'.join(statuses)} (is {self.status()}); source:\n"
                      f"{self.source.text()[-3000:]}\ntarget:\n{self.target.text()[-3000:]}")

    def stop(self):
        stop_all(self.agents.values())


def partition_agent(tmp_path, ctl, api, bridge, devices, hostname, mac, netns=None, server=None):
    """A node booted into partition mode: registered, its next boot set, its agent started with a node token,
    and waited for until it reported every disk of devices. Returns the Agent (the caller stops it)."""
    node_path = api.node(hostname, mac)
    node_id = node_path.rsplit("/", 1)[1]
    ctl("node", "set-mode", hostname, "partition", check=True)
    token = ctl("node", "token", hostname, check=True).stdout.strip()
    line = (f"console=ttyS0 pureboot.mode=partition pureboot.node={node_id} "
            f"pureboot.server={server or bridge.url} pureboot.token={token} "
            f"pureboot.ca=sha256:{ca_fingerprint(bridge.ca)} pureboot.devices={','.join(devices)}")
    agent = Agent(tmp_path, hostname, netns, line).start()
    try:
        wait_for(lambda: len(api.prop(node_path, "Node", "Disks")) == len(devices), timeout=60,
                 what=f"the scan of {devices}; agent:\n{agent.text()[-3000:]}")
    except BaseException:
        agent.stop()
        raise
    return agent


def busybox_root(directory):
    """A small root filesystem: busybox with its applets as symlinks, /etc, a file with an owner, a mode and
    an extended attribute to keep."""
    root = directory / "rootfs"
    for d in ("bin", "sbin", "etc", "proc", "sys", "dev", "run", "tmp", "var/lib"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy("/usr/bin/busybox", root / "bin/busybox")
    for applet in ("sh", "ls", "cat", "mount"):
        (root / "bin" / applet).symlink_to("busybox")
    (root / "sbin/init").symlink_to("../bin/busybox")
    (root / "etc/os-release").write_text("NAME=PureBoot test root\n")
    secret = root / "etc/secret"
    secret.write_text("kept\n")
    os.chown(secret, 1234, 5678)
    os.chmod(secret, 0o640)
    os.chmod(root / "tmp", 0o1777)
    os.setxattr(secret, "user.pureboot", b"xattr-kept")
    return root


def tar_of(root, path, compress=""):
    flags = {"": [], "gz": ["--gzip"], "zst": ["--zstd"]}[compress]
    subprocess.run(["tar", "--xattrs", "--xattrs-include=user.*", "--numeric-owner", *flags, "-cf", path, "-C", root,
                    "."], check=True)
    return path
