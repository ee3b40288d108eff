# SPDX-License-Identifier: MIT
"""Virtual machines for the VM suite, booted as a fleet boots: a network namespace of the test's own with a
Linux bridge in it, dnsmasq there answering DHCP and TFTP (iPXE and deploy/pxe's chain script), the bridge
server there serving boot scripts and the deploy image (deploy/build-image) over plain HTTP to iPXE and the
node protocol over HTTPS to the agents, and qemu machines on tap devices of that bridge, PXE-booting from
their virtio network card's iPXE ROM. Nothing leaves the namespace. Everything started here is stopped by
PID, and the namespace (with the bridge and the taps in it) removed by name, also when a test fails; serial
consoles stay in the test's directory."""

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from harness import BUILD, REPO, Bridge, Started, stop_all, wait_for
from nodes import sh

_accel = None


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

    def __init__(self, proc, log):
        self.proc, self.log = proc, log


class Fleet:
    """On network (a Network(isolated=True), the controller already in its namespace): dnsmasq and
    pureboot-bridge, and the VMs made with vm(), all stopped at the end."""

    def __init__(self, controller, network, directory):
        self.controller, self.network, self.dir = controller, network, directory
        self.ns, self.tag, self.bridge, self.address = network.ns, network.tag, network.bridge, network.address
        self.vms, self.dnsmasq, self.server, self.tftp = [], None, None, None

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
        self.server = Bridge(self.controller.bus, self.dir, f"--boot-dir={BUILD / 'boot'}", address=self.address,
                             http=True, netns=self.ns).start()
        # dnsmasq reads the TFTP directory as its own unprivileged user.
        self.tftp = Path(tempfile.mkdtemp(prefix="pureboot-tftp-"))
        self.tftp.chmod(0o755)
        sh(REPO / "deploy/pxe/setup-tftp", self.tftp, self.server.http_url)
        subnet = self.network.subnet
        self.log = self.dir / "dnsmasq.log"
        self.dnsmasq = Dnsmasq(subprocess.Popen(
            ["ip", "netns", "exec", self.ns, "dnsmasq", "--no-daemon", f"--conf-file={REPO / 'deploy/pxe/dnsmasq.conf'}",
             f"--interface={self.bridge}", "--bind-interfaces", "--port=0", "--log-dhcp", "--enable-tftp",
             f"--tftp-root={self.tftp}", f"--dhcp-range={subnet}.100,{subnet}.199,255.255.255.0,1h",
             f"--dhcp-leasefile={self.dir / 'dnsmasq.leases'}", f"--pid-file={self.dir / 'dnsmasq.pid'}"],
            stdout=open(self.log, "w"), stderr=subprocess.STDOUT), self.log)

    def vm(self, name, mac, disk):
        vm = Vm(self, name, mac, disk)
        self.vms.append(vm)
        return vm

    def __exit__(self, *exc):
        try:
            stop_all([*self.vms, *(p for p in (self.dnsmasq, self.server) if p)])
        finally:
            if self.tftp:
                shutil.rmtree(self.tftp, ignore_errors=True)


class Vm(Started):
    """A qemu machine with a virtio disk backed by a file, on a tap device of the fleet's bridge, that
    PXE-boots (network first, then its disk) with its serial console, firmware included, in console.log."""

    def __init__(self, fleet, name, mac, disk):
        self.fleet, self.name, self.mac, self.disk = fleet, name, mac, disk
        self.what = f"qemu ({name})"
        self.dir = fleet.dir / name
        self.log = self.dir / "qemu.log"
        self.dir.mkdir(exist_ok=True)
        self.tap = f"{fleet.tag}{name[-4:]}t"
        self.console = self.dir / "console.log"
        self.proc = None

    def start(self):
        sh("ip", "-n", self.fleet.ns, "tuntap", "add", self.tap, "mode", "tap")
        sh("ip", "-n", self.fleet.ns, "link", "set", self.tap, "master", self.fleet.bridge, "up")
        accel = self.fleet.accel
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.fleet.ns, "qemu-system-x86_64", "-accel", accel, "-m", "1024",
             "-smp", "2" if accel == "kvm" else "1", "-display", "none", "-vga", "none", "-machine", "graphics=off",
             "-monitor", "none", "-no-reboot", "-boot", "n",
             "-netdev", f"tap,id=n0,ifname={self.tap},script=no,downscript=no",
             "-device", f"virtio-net-pci,netdev=n0,mac={self.mac}",
             "-drive", f"file={self.disk},if=virtio,format=raw,cache=unsafe",
             "-serial", f"file:{self.console}"],
            stdout=open(self.log, "w"), stderr=subprocess.STDOUT)
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
