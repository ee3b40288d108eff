# SPDX-License-Identifier: MIT
"""Virtual machines for the VM suite: the deploy image (deploy/build-image), qemu on a tap device of the
test's Linux bridge, and dnsmasq answering DHCP on that bridge only. Everything started here is stopped by
PID and every device removed by name, also when a test fails; serial consoles stay in the test's directory."""

import os
import signal
import subprocess
import time

from harness import BUILD, REPO, wait_for
from nodes import sh

_accel = None


def image():
    """The deploy image for this build: (vmlinuz, initrd.img), built once and cached in the build directory."""
    out = BUILD / "deploy-image"
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


class Dhcp:
    """dnsmasq giving addresses on the test's bridge only (no DNS, no other interface)."""

    def __init__(self, network, directory):
        self.network, self.dir = network, directory
        self.proc = None

    def __enter__(self):
        subnet = self.network.subnet
        self.log = self.dir / "dnsmasq.log"
        self.proc = subprocess.Popen(
            ["dnsmasq", "--no-daemon", "--conf-file=/dev/null", f"--interface={self.network.bridge}",
             "--bind-interfaces", "--except-interface=lo", "--port=0", "--log-dhcp",
             f"--dhcp-range={subnet}.100,{subnet}.199,255.255.255.0,1h",
             f"--dhcp-leasefile={self.dir / 'dnsmasq.leases'}", f"--pid-file={self.dir / 'dnsmasq.pid'}"],
            stdout=open(self.log, "w"), stderr=subprocess.STDOUT)
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Vm:
    """A qemu machine with a virtio disk backed by a file, on a tap device of the test's bridge, booted
    straight into the deploy image with cmdline, its serial console in console.log."""

    def __init__(self, directory, name, network, mac, disk, kernel, initrd, cmdline, accel):
        self.dir = directory / name
        self.dir.mkdir(exist_ok=True)
        self.name, self.network, self.mac, self.disk = name, network, mac, disk
        self.kernel, self.initrd, self.cmdline, self.accel = kernel, initrd, cmdline, accel
        self.tap = f"{network.tag}{name[:4]}t"
        self.console = self.dir / "console.log"
        self.proc = None

    def start(self):
        sh("ip", "tuntap", "add", self.tap, "mode", "tap")
        sh("ip", "link", "set", self.tap, "master", self.network.bridge, "up")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            ["qemu-system-x86_64", "-accel", self.accel, "-m", "1024", "-smp", "2" if self.accel == "kvm" else "1",
             "-display", "none",
             "-monitor", "none", "-no-reboot", "-kernel", str(self.kernel), "-initrd", str(self.initrd),
             "-append", f"console=ttyS0 panic=-1 rd.systemd.unit=multi-user.target "
                        f"systemd.journald.forward_to_console=1 {self.cmdline}",
             "-netdev", f"tap,id=n0,ifname={self.tap},script=no,downscript=no",
             "-device", f"virtio-net-pci,netdev=n0,mac={self.mac}",
             "-drive", f"file={self.disk},if=virtio,format=raw,cache=unsafe",
             "-serial", f"file:{self.console}"],
            stdout=open(self.dir / "qemu.log", "w"), stderr=subprocess.STDOUT)
        return self

    def text(self):
        return self.console.read_text(errors="replace") if self.console.exists() else ""

    def wait_console(self, words, timeout, what):
        def seen():
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} stopped ({self.proc.returncode}) while waiting for {what}:\n"
                                     f"{self.text()[-4000:]}")
            return words in self.text()
        wait_for(seen, timeout=timeout, interval=0.5, what=f"{self.name}: {what}; console:\n{self.text()[-3000:]}")
        return time.monotonic() - self.started

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        sh("ip", "link", "del", self.tap, check=False)
