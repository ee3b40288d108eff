# SPDX-License-Identifier: MIT
"""Virtual machines for the VM suite, booted as a fleet boots: a network namespace of the test's own with a
Linux bridge in it, dnsmasq there answering DHCP and TFTP (iPXE and deploy/pxe's chain script), the bridge
server there serving boot scripts and the deploy image (deploy/build-image) over plain HTTP to iPXE and the
node protocol over HTTPS to the agents, and qemu machines on tap devices of that bridge, PXE-booting from
their virtio network card's iPXE ROM. Nothing leaves the namespace. Everything started here is stopped by
PID, and the namespace (with the bridge and the taps in it) removed by name, also when a test fails; serial
consoles stay in the test's directory."""

import json
import lzma
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from harness import BUILD, REPO, Bridge, Started, stop_all, wait_for
from nodes import sh

_accel = None
# MACs of the suite's UEFI machines that get iPXE (snponly.efi) rather than shim.
UEFI_IPXE_MACS = "52:54:00:50:49:*"


def image():
    """The deploy image for this build, where the bridge serves it from (--boot-dir=BUILD/boot, the workflows'
    deploy/vmlinuz and deploy/initrd.img); built once and cached in the build directory."""
    out = BUILD / "boot/deploy"
    r = subprocess.run([str(REPO / "deploy/build-image"), str(BUILD), str(out)], capture_output=True, text=True,
                       timeout=1200)
    assert r.returncode == 0, f"deploy/build-image failed:\n{r.stdout}\n{r.stderr}"
    return out / "vmlinuz", out / "initrd.img"


def accelerator(kernel, initrd, directory):
    """kvm if a guest really runs under it here (a nested /dev/kvm may open and yet never run a guest: seen on
    this machine), else tcg. Decided once, by booting the image for at most 15 s."""
    global _accel
    if _accel:
        return _accel
    _accel = "tcg"
    if os.access("/dev/kvm", os.R_OK | os.W_OK):
        console = directory / "kvm-probe.log"
        proc = subprocess.Popen(["qemu-system-x86_64", "-accel", "kvm", "-m", "256", "-display", "none",
                                 "-monitor", "none", "-no-reboot", "-kernel", str(kernel), "-initrd", str(initrd),
                                 "-append", "console=ttyS0 panic=-1", "-serial", f"file:{console}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and proc.poll() is None:
                if console.exists() and "Linux version" in console.read_text(errors="replace"):
                    _accel = "kvm"
                    break
                time.sleep(0.2)
        finally:
            proc.kill()
            proc.wait()
    print(f"VM suite: qemu runs with {_accel}"
          f"{'' if _accel == 'kvm' else ' (no guest ran under /dev/kvm here)'}")
    return _accel


class Dnsmasq(Started):
    what = "dnsmasq"
    term_status = (0, -signal.SIGTERM)  # dnsmasq's own handler, or the signal before it set one

    def __init__(self, proc, log):
        self.proc, self.log = proc, log


class Dhcpd(Dnsmasq):
    what = "dhcpd"


class Fleet:
    """On network (a Network(isolated=True), the controller already in its namespace): dnsmasq and
    pureboot-bridge, and the VMs made with vm(), all stopped at the end."""

    def __init__(self, controller, network, directory):
        self.controller, self.network, self.dir = controller, network, directory
        self.ns, self.tag, self.bridge, self.address = network.ns, network.tag, network.bridge, network.address
        self.vms, self.dhcp, self.server, self.tftp = [], None, None, None

    def __enter__(self):
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self):
        self.kernel, self.initrd = image()
        self.accel = accelerator(self.kernel, self.initrd, self.dir)
        # The bridge serves TFTP too (deploy/pxe/dnsmasq.conf): what setup-tftp lays out, read as the bridge's
        # unprivileged user, and each machine's GRUB answer.
        self.tftp = Path(tempfile.mkdtemp(prefix="pureboot-tftp-"))
        self.tftp.chmod(0o755)
        self.server = Bridge(self.controller.bus, self.dir, f"--boot-dir={BUILD / 'boot'}", f"--tftp-root={self.tftp}",
                             address=self.address, http=True, tftp=69, netns=self.ns)
        sh(REPO / "deploy/pxe/setup-tftp", self.tftp, self.server.http_url)
        self.server.start()
        self.dhcp_site = (f"--dhcp-range={self.network.subnet}.100,{self.network.subnet}.199,255.255.255.0,1h",
                          # The site's line for UEFI HTTP boot (dnsmasq.conf), whose boot file is a URL.
                          f"--dhcp-boot=tag:httpboot,tag:!ipxe,{self.server.http_url}/boot/snponly.efi")
        self.start_dnsmasq(*self.dhcp_site)

    def start_dnsmasq(self, *args, conf=REPO / "deploy/pxe/dnsmasq.conf"):
        """dnsmasq with conf (deploy/pxe/dnsmasq.conf, or None) and args, the site's own settings (a DHCP
        range, or proxy DHCP)."""
        self.log = self.dir / "dnsmasq.log"
        start = self.log.stat().st_size if self.log.exists() else 0
        self.dhcp = Dnsmasq(subprocess.Popen(
            ["ip", "netns", "exec", self.ns, "dnsmasq", "--no-daemon", f"--conf-file={conf or '/dev/null'}",
             f"--interface={self.bridge}", "--bind-interfaces", "--port=0", "--log-dhcp",
             # The suite's UEFI machines that boot iPXE rather than shim (dnsmasq.conf's tag uefi-ipxe).
             f"--dhcp-mac=set:uefi-ipxe,{UEFI_IPXE_MACS}", *args,
             f"--dhcp-leasefile={self.dir / 'dnsmasq.leases'}", f"--pid-file={self.dir / 'dnsmasq.pid'}"],
            stdout=open(self.log, "a"), stderr=subprocess.STDOUT), self.log)
        # Up: a machine started next finds it.
        wait_for(lambda: "dnsmasq: started" in self.log.read_text(errors="replace")[start:] or self.dhcp.proc.poll(),
                 timeout=30, interval=0.05, what=f"dnsmasq starting; its log:\n{self.log.read_text()[start:]}")
        assert self.dhcp.proc.poll() is None, self.log.read_text()[start:]

    def restart_dnsmasq(self, *args, conf=REPO / "deploy/pxe/dnsmasq.conf"):
        """dnsmasq again, with args instead of the fleet's DHCP range (and conf)."""
        self.dhcp.stop()
        self.start_dnsmasq(*args, conf=conf)

    def use_dhcpd(self, config):
        """ISC dhcpd with config (a dhcpd.conf) instead of dnsmasq, as on a site that keeps its own DHCP server."""
        self.dhcp.stop()
        (self.dir / "dhcpd.conf").write_text(config)
        (self.dir / "dhcpd.leases").touch()
        self.log = self.dir / "dhcpd.log"
        self.dhcp = Dhcpd(subprocess.Popen(
            ["ip", "netns", "exec", self.ns, "dhcpd", "-4", "-f", "-d", "-cf", self.dir / "dhcpd.conf",
             "-lf", self.dir / "dhcpd.leases", "-pf", self.dir / "dhcpd.pid", self.bridge],
            stdout=open(self.log, "w"), stderr=subprocess.STDOUT), self.log)

    def vm(self, name, mac, disk, firmware="bios", rom=True, http=False, stick=False):
        vm = Vm(self, name, mac, disk, firmware, rom, http, stick)
        self.vms.append(vm)
        return vm

    def __exit__(self, *exc):
        try:
            stop_all([*self.vms, *(p for p in (self.dhcp, self.server) if p)])
        finally:
            if self.tftp:
                shutil.rmtree(self.tftp, ignore_errors=True)


# Debian's OVMF (package ovmf): code and the variables a new machine starts with.
OVMF = {"uefi": ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"),
        # Secure Boot enforced, with Microsoft's keys enrolled (which signed Debian's shim).
        "secureboot": ("OVMF_CODE_4M.secboot.fd", "OVMF_VARS_4M.ms.fd")}


class Vm(Started):
    """A qemu machine with a virtio disk backed by a file, on a tap device of the fleet's bridge, that
    PXE-boots (network first, then its disk) with its serial console, firmware included, in console.log.
    firmware: bios (SeaBIOS), uefi or secureboot (OVMF, with its variables in the VM's directory, kept across
    its boots as a machine's NVRAM); rom=False: a network card without iPXE in its ROM, so the firmware's own
    PXE fetches the first boot file by TFTP (OVMF has one; SeaBIOS has none); http=True: UEFI HTTP boot
    instead, the firmware's PXE switched off in its settings; stick=True: its disk is a boot stick, booted
    first (the network card comes after it in the boot order, as on a machine set to boot USB first)."""

    def __init__(self, fleet, name, mac, disk, firmware="bios", rom=True, http=False, stick=False):
        self.fleet, self.name, self.mac, self.disk = fleet, name, mac, disk
        self.firmware, self.rom, self.http, self.stick = firmware, rom, http, stick
        self.what = f"qemu ({name})"
        self.dir = fleet.dir / name
        self.log = self.dir / "qemu.log"
        self.dir.mkdir(exist_ok=True)
        self.tap = f"{fleet.tag}{name[-4:]}t"
        self.console = self.dir / "console.log"
        self.proc = None
        self.vars = self.dir / "OVMF_VARS.fd"
        if firmware != "bios" and not self.vars.exists():
            shutil.copy(Path("/usr/share/OVMF") / OVMF[firmware][1], self.vars)

    def add_tap(self):
        sh("ip", "-n", self.fleet.ns, "tuntap", "add", self.tap, "mode", "tap")
        sh("ip", "-n", self.fleet.ns, "link", "set", self.tap, "master", self.fleet.bridge, "up")

    def command(self, console, boot=(), network=True):
        """qemu's command line, run inside the fleet's namespace; boot: how it boots (default: the network
        first); network=False: without its network card."""
        accel = self.fleet.accel
        rom = "" if self.rom else ",romfile="
        if self.firmware == "bios":
            machine = ["-machine", "graphics=off", *(boot or ("-boot", "c" if self.stick else "n"))]
            disk = ["-drive", f"file={self.disk},if=virtio,format=raw,cache=unsafe"]
            nic = f"virtio-net-pci,netdev=n0,mac={self.mac}{rom}"
        else:
            # OVMF boots in the order of bootindex: the network card, then the disk.
            secure = self.firmware == "secureboot"
            machine = ["-machine", f"q35,graphics=off{',smm=on' if secure else ''}",
                       *(("-global", "driver=cfi.pflash01,property=secure,value=on") if secure else ()),
                       "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/{OVMF[self.firmware][0]}",
                       "-drive", f"if=pflash,format=raw,unit=1,file={self.vars}",
                       # IPv4 PXE only: a machine sent back to its firmware (boot locally) goes on to its disk
                       # without first waiting for a DHCPv6 server the fleet does not have.
                       "-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n",
                       *(("-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n") if self.http else ()), *boot]
            # (OVMF connects only the devices in that order: the card is in it after a stick too.)
            nic_index, disk_index = (",bootindex=2", ",bootindex=1") if self.stick else (",bootindex=1", ",bootindex=2")
            disk = ["-drive", f"file={self.disk},if=none,id=d0,format=raw,cache=unsafe",
                    "-device", f"virtio-blk-pci,drive=d0{disk_index}"]
            nic = f"virtio-net-pci,netdev=n0,mac={self.mac}{rom}{'' if boot else nic_index}"
        return ["qemu-system-x86_64", "-accel", accel, "-m", "1024",
                "-smp", "2" if accel == "kvm" else "1", "-display", "none", "-vga", "none", *machine,
                "-monitor", "none", "-no-reboot",
                *(("-netdev", f"tap,id=n0,ifname={self.tap},script=no,downscript=no", "-device", nic) if network
                  else ("-nic", "none")), *disk,
                "-serial", f"file:{console}"]

    def start(self):
        self.add_tap()
        self.started = time.monotonic()
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.fleet.ns, *self.command(self.console)],
                                     stdout=open(self.log, "w"), stderr=subprocess.STDOUT)
        return self

    def boot_again(self, console, network=True):
        """Switches the machine on again after it powered off (same disk, same NVRAM), its console now in the
        file console of its directory; network=False: with its network card taken out."""
        assert self.proc.poll() is not None, f"{self.name} still runs"
        self.console = self.dir / console
        self.started = time.monotonic()
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.fleet.ns,
                                      *self.command(self.console, network=network)],
                                     stdout=open(self.log, "a"), stderr=subprocess.STDOUT)
        return self

    def text(self):
        return self.console.read_text(errors="replace") if self.console.exists() else ""

    def wait_console(self, words, timeout, what):
        """Seconds from power-on until words are on the console."""
        def seen():
            if words in self.text():
                return True
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} stopped ({self.proc.returncode}) while waiting for {what}:\n"
                                     f"{self.text()[-4000:]}")
            return False
        wait_for(seen, timeout=timeout, interval=0.5, what=f"{self.name}: {what}; console:\n{self.text()[-3000:]}")
        return time.monotonic() - self.started

    def wait_exit(self, timeout, what):
        """The guest powered off or rebooted (qemu runs with -no-reboot); returns qemu's exit status."""
        wait_for(lambda: self.proc.poll() is not None, timeout=timeout, interval=0.5,
                 what=f"{self.name}: {what}; console:\n{self.text()[-3000:]}")
        self.seen = True
        return self.proc.returncode

    def stop(self):
        try:
            return super().stop()
        finally:
            sh("ip", "-n", self.fleet.ns, "link", "del", self.tap, check=False)  # else it goes with the namespace


# The chassis control program of a VM's BMC (tests/integration/bmc.py): power on starts the VM's qemu, from the
# network if the boot device was set to pxe (for that boot only, as a BMC does) and else from its disk; power
# off kills it; the power is whether that qemu still runs (a guest that powers off or reboots, with
# -no-reboot, ends it). The command lines are in machine.json next to it.
VM_CHASSIS = """
def running(state):
    try:
        with open(f"/proc/{state['pid']}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (KeyError, FileNotFoundError):
        return False

def power(state):
    return "1" if running(state) else "0"

def on_set(parm, value, state):
    machine = json.load(open(os.path.join(here, "machine.json")))
    if parm == "power" and value == "1" and not running(state):
        boot = "pxe" if state.get("boot") == "pxe" else "disk"
        state["pid"] = subprocess.Popen(machine[boot], stdout=open(machine["log"], "a"), stderr=subprocess.STDOUT,
                                        start_new_session=True).pid
        state["boot"] = "default"
        with open(state_file + ".log", "a") as log:
            log.write(f"started from {boot}\\n")
    elif parm == "power" and value == "0" and running(state):
        os.kill(state["pid"], signal.SIGKILL)
"""


def debian_efi_loaders(directory):
    """Debian's signed shim and its signed GRUB for disks, as an installed Debian has them on its ESP (as
    EFI/debian/shimx64.efi and grubx64.efi): the installed packages' files, or the packages downloaded and
    unpacked in directory (never installed: they would change this machine's own boot loader)."""
    shim, grub = Path("/usr/lib/shim/shimx64.efi.signed"), Path("/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed")
    if shim.exists() and grub.exists():
        return shim, grub
    debs = directory / "debs"
    debs.mkdir(exist_ok=True)
    sh("apt-get", "download", "-q", "shim-signed", "grub-efi-amd64-signed", cwd=debs)
    for deb in debs.glob("*.deb"):
        sh("dpkg-deb", "-x", deb, debs / "root")
    return debs / "root" / shim.relative_to("/"), debs / "root" / grub.relative_to("/")


def root_boot(directory):
    """A kernel and a small initramfs that boot a machine into the root filesystem on its disk's second
    partition: the deploy image's Debian kernel, and busybox with that kernel's virtio and ext4 modules (in
    modprobe's order) that mounts /dev/vda2 read-only and switches to it, where the disk's own /sbin/init runs.
    The test disks have no boot loader, so qemu loads the kernel (-kernel), as one would."""
    kernel, _ = image()
    tree, root = directory / "kernel-tree", directory / "initramfs"
    deb = next((BUILD / "boot/deploy/cache").glob("linux-image-*.deb"))
    sh("dpkg-deb", "-x", deb, tree)
    kver = next((tree / "lib/modules").iterdir()).name
    sh("depmod", "-b", tree, kver)
    order = []
    for module in ("virtio_pci", "virtio_blk", "ext4"):
        for line in sh("modprobe", "-d", tree, "-S", kver, "--show-depends", module).stdout.splitlines():
            if line.startswith("insmod ") and line.split()[1] not in order:
                order.append(line.split()[1])
    (root / "bin").mkdir(parents=True)
    (root / "lib").mkdir()
    shutil.copy("/bin/busybox", root / "bin/busybox")
    names = []
    for path in order:
        name = Path(path).name
        data = Path(path).read_bytes()
        if name.endswith(".xz"):  # newer Debian kernels compress their modules
            data, name = lzma.decompress(data), name[:-3]
        (root / "lib" / name).write_bytes(data)
        names.append(name)
    (root / "modules").write_text("\n".join(names) + "\n")
    init = root / "init"
    init.write_text("""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /dev /root
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs dev /dev
for m in $(/bin/busybox cat /modules); do /bin/busybox insmod /lib/$m; done
i=0
while [ ! -b /dev/vda2 ] && [ $i -lt 100 ]; do /bin/busybox sleep 0.1; i=$((i + 1)); done
if ! /bin/busybox mount -o ro -t ext4 /dev/vda2 /root; then
        echo "PureBoot test: the root filesystem /dev/vda2 cannot be mounted"
        /bin/busybox poweroff -f
fi
/bin/busybox umount /proc
exec /bin/busybox switch_root /root /sbin/init
""")
    init.chmod(0o755)
    image_file = directory / "root-boot.cpio"
    files = sh("sh", "-c", f"cd {root} && find . | cpio --quiet -o -H newc > {image_file}")
    assert files.returncode == 0
    shutil.rmtree(tree)
    return kernel, image_file


class PoweredVm(Vm):
    """A VM that its BMC switches (bmc.py's ipmi_sim with VM_CHASSIS): nothing here starts it. Booted from
    the network, its console is console-pxe.log; from its disk (the kernel and initramfs of root_boot),
    console-disk.log."""

    def __init__(self, fleet, name, mac, disk, bmc_dir, kernel, initramfs):
        super().__init__(fleet, name, mac, disk)
        self.bmc_dir = bmc_dir
        self.add_tap()
        self.consoles = {"pxe": self.dir / "console-pxe.log", "disk": self.dir / "console-disk.log"}
        (bmc_dir / "machine.json").write_text(json.dumps({
            "pxe": self.command(self.consoles["pxe"]),
            "disk": self.command(self.consoles["disk"], ("-kernel", str(kernel), "-initrd", str(initramfs),
                                                         "-append", "console=ttyS0 panic=-1")),
            "log": str(self.log)}))

    def pid(self):
        state = self.bmc_dir / "chassis.json"
        return json.loads(state.read_text()).get("pid") if state.exists() else None

    def text(self, boot="pxe"):
        console = self.consoles[boot]
        return console.read_text(errors="replace") if console.exists() else ""

    def wait_console(self, words, timeout, what, boot="pxe"):
        wait_for(lambda: words in self.text(boot), timeout=timeout, interval=0.5,
                 what=f"{self.name}: {what}; console:\n{self.text(boot)[-3000:]}")

    def stop(self):
        pid = self.pid()
        try:
            if pid:
                os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        sh("ip", "-n", self.fleet.ns, "link", "del", self.tap, check=False)
