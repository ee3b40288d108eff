# SPDX-License-Identifier: MIT
"""The deploy image booted for real: qemu on the test's bridge, the kernel and initramfs deploy/build-image
made, systemd in the image running pureboot-generator and the agent unit it picks, DHCP from dnsmasq. The
machines boot straight from the kernel with the command line the bridge would give them (PXE through iPXE
comes next). Partition mode: the VM's disk shows up, a queued create and format are applied, the next scan
has them. Direct clone: two VMs, the target 1.5x the source, grow_target; the copy streams peer to peer
between the VMs and the target's root grows. Each result is checked on the disk files from the host."""

import os
import time

import pytest

from harness import Bridge, wait_for
from nodes import Loop, Network, ca_fingerprint, check_root_last_disk, make_root_last_disk, sh
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


def test_direct_clone_between_vms(fleet, ctl, api, tmp_path):
    net, server, vms = fleet
    kernel, initrd = image()
    accel = accelerator(kernel, initrd, tmp_path)
    loops = []
    source, files = make_root_last_disk(tmp_path, loops, size=512 * MIB, data_files=2)
    for loop in loops:
        loop.detach()
    target = tmp_path / "target.img"
    with open(target, "wb") as f:
        f.truncate(768 * MIB)
    nodes = {}
    for name, mac in (("vm-src", "52:54:00:50:42:11"), ("vm-tgt", "52:54:00:50:42:12")):
        nodes[name] = (api.node(name, mac).rsplit("/", 1)[1], mac)
    sid = ctl("clone", "create", "--name=vms", "--mode=direct", "--resize=grow_target", "--source=vm-src",
              "--target=vm-tgt", "--source-device=/dev/vda", "--target-device=/dev/vda", check=True).stdout.split()[-1]
    ctl("clone", "start", sid, check=True)
    path = f"/org/pureboot/Controller1/clone/{sid}"
    for role, name, disk in (("source", "vm-src", source.backing), ("target", "vm-tgt", target)):
        token = ctl("clone", "token", sid, f"--role={role}", check=True).stdout.strip()
        line = (f"pureboot.mode=clone_{role}_direct pureboot.session={sid} pureboot.node={nodes[name][0]} "
                f"pureboot.server={server.url} pureboot.token={token} pureboot.ca=sha256:{ca_fingerprint(server.ca)} "
                f"pureboot.device=/dev/vda")
        vm = Vm(tmp_path, name, net, nodes[name][1], disk, kernel, initrd, line, accel)
        vms.append(vm)
        vm.start()

    step = "booting both VMs to their agents"
    try:
        for vm, mode in zip(vms, ("clone_source_direct", "clone_target_direct")):
            vm.wait_console(f"PureBoot agent ({mode})", 240, "systemd starting the clone agent")
        step = "the clone"

        def done():
            return api.prop(path, "CloneSession", "Status") in ("completed", "failed", "cancelled")
        wait_for(done, timeout=600, interval=1, what=f"the session to end; target console:\n{vms[1].text()[-3000:]}")
        status = api.prop(path, "CloneSession", "Status")
        assert status == "completed", (api.prop(path, "CloneSession", "Error"), vms[0].text()[-3000:],
                                       vms[1].text()[-3000:])
        assert api.prop(path, "CloneSession", "SourceDigest") == api.prop(path, "CloneSession", "TargetDigest")
        seconds = (api.prop(path, "CloneSession", "CompletedAt") - api.prop(path, "CloneSession", "StartedAt")) / 1e6
        wrote = next((line.split("]: ", 1)[-1] for line in vms[1].text().splitlines() if "Wrote 512.0 MiB" in line),
                     "(the target's summary was not on its console)")
        print(f"VM suite ({accel}): 512 MiB cloned between two VMs (grow_target), completed {seconds:.1f} s after "
              f"Start (both boots included); the target: {wrote[:160]}")
    except AssertionError as e:
        raise AssertionError(f"VM scenario failed at: {step}\n{e}") from None
    for vm in vms:
        vm.stop()

    # The target's disk, seen from the host: everything copied, the root grown to the disk's end.
    loop = Loop(target)
    try:
        check_root_last_disk(loop, files, tmp_path, (767 - 65) * MIB)
    finally:
        loop.detach()
