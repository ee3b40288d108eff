# SPDX-License-Identifier: MIT
"""The deploy image booted for real: qemu on the test's bridge, the kernel and initramfs deploy/build-image
made, systemd in the image running pureboot-generator and the agent unit it picks, DHCP from dnsmasq. This
is the partition scenario of the VM suite booted straight from the kernel (PXE through iPXE comes next):
the VM's disk shows up in the controller, a queued create and format are applied, the next scan has them,
and the disk file itself has the new filesystem."""

import os
import time

import pytest

from harness import Bridge, wait_for
from nodes import Loop, Network, ca_fingerprint, sh
from vm import Dhcp, Vm, accelerator, image

MIB = 1 << 20


@pytest.fixture
def fleet(controller, tmp_path):
    """The test's bridge with dnsmasq on it, the bridge server on its address, and the VMs, all stopped and
    removed at the end."""
    with Network(index=9) as net, Dhcp(net, tmp_path):
        server = Bridge(controller.bus, tmp_path, address=net.address).start()
        vms = []
        try:
            yield net, server, vms
        finally:
            for vm in vms:
                vm.stop()
            server.stop()


def test_partition_mode_in_a_vm(fleet, ctl, api, tmp_path):
    net, server, vms = fleet
    kernel, initrd = image()
    accel = accelerator(kernel, initrd, tmp_path)
    disk = tmp_path / "vm-a.img"
    with open(disk, "wb") as f:
        f.truncate(512 * MIB)
    mac = "52:54:00:50:42:01"
    node = api.node("vm-a", mac).rsplit("/", 1)[1]
    token = ctl("node", "token", "vm-a", check=True).stdout.strip()
    line = (f"pureboot.mode=partition pureboot.node={node} pureboot.server={server.url} pureboot.token={token} "
            f"pureboot.ca=sha256:{ca_fingerprint(server.ca)} pureboot.devices=/dev/vda")
    vm = Vm(tmp_path, "vm-a", net, mac, disk, kernel, initrd, line, accel)
    vms.append(vm)
    vm.start()

    step = "booting to the agent"
    try:
        boot = vm.wait_console("PureBoot agent (partition)", 240, "systemd starting the agent the generator picked")
        step = "the first scan"
        wait_for(lambda: "/dev/vda" in ctl("disk", "list", "vm-a").stdout, timeout=120, interval=0.5,
                 what=f"the VM's disk in the controller; console:\n{vm.text()[-3000:]}")
        scanned = time.monotonic() - vm.started
        print(f"VM suite ({accel}): agent started {boot:.1f} s after power-on, disk reported at {scanned:.1f} s")
        step = "applying a create and a format"
        ctl("partition", "queue", "vm-a", "vda", "create", "start_bytes=1M", "size_bytes=128M", "filesystem=ext4",
            "label=fromvm", "table=gpt", check=True)
        r = ctl("partition", "apply", "vm-a", "vda", "--follow")
        assert r.returncode == 0, (r.stdout, r.stderr, vm.text()[-3000:])
        step = "the scan after the apply"
        wait_for(lambda: "fromvm" in ctl("disk", "show", "vm-a", "vda").stdout, timeout=60, interval=0.5,
                 what="the new partition in the next scan")
    except AssertionError as e:
        raise AssertionError(f"VM scenario failed at: {step}\n{e}") from None
    vm.stop()

    # The disk file, seen from the host: a GPT with the new ext4 partition, clean.
    loop = Loop(disk)
    try:
        loop.scan_partitions()
        wait_for(lambda: os.path.exists(loop.partition(1)), timeout=5, what="the partition node")
        assert sh("blkid", "-o", "value", "-s", "LABEL", loop.partition(1)).stdout.strip() == "fromvm"
        sh("e2fsck", "-f", "-n", loop.partition(1))
    finally:
        loop.detach()
