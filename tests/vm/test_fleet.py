# SPDX-License-Identifier: MIT
"""The whole product as a fleet uses it: virtual machines PXE-boot (their card's iPXE ROM, dnsmasq's DHCP
and TFTP, deploy/pxe's chain script) from the bridge's plain HTTP listener into the deploy image
deploy/build-image made, whose systemd runs pureboot-generator and the agent unit it picks; the agents talk
HTTPS to the bridge and, in a direct clone, to each other. The scenarios: an unknown machine is registered
and boots its own disk; partition mode applies a queued resize and create; a direct clone with grow_target
between two VMs; a staged one through nfs-ganesha on the fleet's network, kept as an image that one
session then deploys to three more VMs; a direct clone with the controller stopped for 60 s in the middle;
a session that switches its VMs on and off through ipmi_sim, whose clone then boots as itself. Every result is checked
on the disk files from the host, and each failure names the step it was on."""

import contextlib
import os
import re
import sqlite3
import struct
import time
from collections import Counter

from bmc import Bmc
from harness import wait_for
from nodes import Loop, check_root_last_disk, make_root_last_disk, random_file, sha256, sh
from storage_servers import NfsServer
from vm import VM_CHASSIS, PoweredVm, root_boot

MIB = 1 << 20
LOCAL_BOOT = "PureBoot test: booted from the local disk"


@contextlib.contextmanager
def step_of(scenario):
    """Names the step a scenario failed at: set it with state['step'] = …."""
    state = {"step": "setting up"}
    try:
        yield state
    except AssertionError as e:
        raise AssertionError(f"VM scenario {scenario!r} failed at: {state['step']}\n{e}") from None


def boot_sector(message):
    """A 512-byte BIOS boot sector that writes message to the first serial port and halts: proof that the
    machine went on to boot its own disk."""
    text = message.encode() + b"\r\n\0"
    code = bytes([0xFA, 0x31, 0xC0, 0x8E, 0xD8,             # cli; xor ax,ax; mov ds,ax
                  0xBE]) + struct.pack("<H", 0x7C00 + 22) + \
        bytes([0xBA, 0xF8, 0x03,                              # mov dx,0x3f8
               0xAC, 0x84, 0xC0, 0x74, 0x03, 0xEE, 0xEB, 0xF8,  # lodsb; test al,al; jz done; out dx,al; jmp
               0xF4, 0xEB, 0xFD])                             # done: hlt; jmp done
    sector = code + text
    return sector + bytes(510 - len(sector)) + b"\x55\xaa"


def node_of(api, hostname):
    nodes = {n[1]: n for n in api.ok("/org/pureboot/Controller1", "Manager", "ListNodes")[0]}
    return nodes.get(hostname)


def test_unknown_machine_is_discovered_and_boots_locally(fleet, api, tmp_path):
    disk = tmp_path / "stranger.img"
    with open(disk, "wb") as f:
        f.write(boot_sector(LOCAL_BOOT))
        f.truncate(64 * MIB)
    vm = fleet.vm("stranger", "52:54:00:50:42:99", disk).start()
    with step_of("unknown machine") as s:
        s["step"] = "the boot script for a machine the controller does not know"
        vm.wait_console("nothing to do for this machine", 120, "iPXE running the bridge's answer")
        s["step"] = "booting its own disk after iPXE exits"
        seconds = vm.wait_console(LOCAL_BOOT, 60, "the BIOS booting the local disk")
        s["step"] = "the controller's record of it"
        node = node_of(api, "node-525400504299")
        assert node and node[2] == "52:54:00:50:42:99" and node[4] == "discovered", node
    vm.stop()
    disk.unlink()  # kept only when the test fails, with the consoles
    print(f"VM suite ({fleet.accel}): an unknown machine was registered and booted its own disk "
          f"{seconds:.1f} s after power-on")


def test_partition_mode_applies_a_queued_resize_and_create(fleet, api, ctl, tmp_path):
    # A GPT with a 128 MiB ext4 holding a known file, on a 512 MiB disk.
    disk = tmp_path / "part.img"
    with open(disk, "wb") as f:
        f.truncate(512 * MIB)
    sh("sfdisk", "--quiet", disk, input="label: gpt\nstart=1MiB, size=128MiB, type=linux, name=data\n")
    loop = Loop(disk)
    try:
        loop.scan_partitions()
        wait_for(lambda: os.path.exists(loop.partition(1)), timeout=5, what="the partition node")
        sh("mkfs.ext4", "-q", "-F", "-L", "data", loop.partition(1))
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        random_file(tmp_path / "known.bin", 16 * MIB)
        sh("mount", loop.partition(1), mnt)
        try:
            sh("cp", tmp_path / "known.bin", mnt)
        finally:
            sh("umount", mnt)
    finally:
        loop.detach()
    known = sha256(tmp_path / "known.bin")

    api.node("vm-part", "52:54:00:50:42:01")
    ctl("node", "set-mode", "vm-part", "partition", check=True)
    vm = fleet.vm("vm-part", "52:54:00:50:42:01", disk).start()
    with step_of("partition mode") as s:
        s["step"] = "PXE-booting the deploy image to the agent"
        boot = vm.wait_console("PureBoot agent (partition)", 300, "systemd starting the agent the generator picked")
        s["step"] = "the first scan"
        wait_for(lambda: "/dev/vda" in ctl("disk", "list", "vm-part").stdout, timeout=120, interval=0.5,
                 what=f"the VM's disk in the controller; console:\n{vm.text()[-3000:]}")
        scanned = time.monotonic() - vm.started
        assert "data" in ctl("disk", "show", "vm-part", "vda").stdout
        s["step"] = "queueing a resize and a create"
        ctl("partition", "queue", "vm-part", "vda", "resize", "partition=1", "new_size_bytes=256M", check=True)
        ctl("partition", "queue", "vm-part", "vda", "create", "start_bytes=257M", "size_bytes=128M",
            "filesystem=ext4", "label=fromvm", check=True)
        s["step"] = "applying them"
        r = ctl("partition", "apply", "vm-part", "vda", "--follow")
        assert r.returncode == 0, (r.stdout, r.stderr, vm.text()[-3000:])
        s["step"] = "the scan after the apply"

        def rescanned():
            shown = ctl("disk", "show", "vm-part", "vda").stdout
            return "fromvm" in shown and "256.0 MiB" in shown
        wait_for(rescanned, timeout=60, interval=0.5, what="the resized and new partitions in the next scan")
        shown = ctl("disk", "show", "vm-part", "vda").stdout
    rows = [" ".join(w[i] for i in (0, 3, 4, 7, 8)) for w in map(str.split, shown.splitlines())
            if len(w) >= 9 and w[0].isdigit()]
    print(f"VM suite ({fleet.accel}): partition mode: agent started {boot:.1f} s after power-on (PXE), disk "
          f"reported at {scanned:.1f} s; after the apply, the next scan has: "
          + ", ".join(rows))
    vm.stop()

    # The disk file, seen from the host: partition 1 and its filesystem grown to 256 MiB with the file
    # intact, the new ext4 after it, both clean.
    loop = Loop(disk)
    try:
        loop.scan_partitions()
        wait_for(lambda: os.path.exists(loop.partition(2)), timeout=5, what="the partition nodes")
        parts = sh("sfdisk", "--json", loop.device).stdout
        sizes = [int(m) * 512 for m in re.findall(r'"size":\s*(\d+)', parts)]
        assert sizes == [256 * MIB, 128 * MIB], parts
        sh("e2fsck", "-f", "-n", loop.partition(1))
        sh("e2fsck", "-f", "-n", loop.partition(2))
        blocks = re.search(r"Block count:\s+(\d+)", sh("dumpe2fs", "-h", loop.partition(1)).stdout).group(1)
        size = re.search(r"Block size:\s+(\d+)", sh("dumpe2fs", "-h", loop.partition(1)).stdout).group(1)
        assert int(blocks) * int(size) == 256 * MIB
        assert sh("blkid", "-o", "value", "-s", "LABEL", loop.partition(2)).stdout.strip() == "fromvm"
        mnt = tmp_path / "mnt"
        sh("mount", "-o", "ro", loop.partition(1), mnt)
        try:
            assert sha256(mnt / "known.bin") == known
        finally:
            sh("umount", mnt)
    finally:
        loop.detach()
    disk.unlink()


def clone_pair(fleet, api, ctl, tmp_path, name, macs, resize, target_mib, mode="direct", storage=None,
               create_args=(), **machine):
    """A 512 MiB source disk as installers make them (GPT, ESP, ext4 root of known files) and a blank target,
    two nodes and a started session; returns (session path, id, files, target file, VMs). machine: the VMs'
    firmware and rom (Fleet.vm)."""
    loops = []
    source, files = make_root_last_disk(tmp_path, loops, size=512 * MIB, data_files=2)
    for loop in loops:
        loop.detach()
    target = tmp_path / f"{name}-target.img"
    with open(target, "wb") as f:
        f.truncate(target_mib * MIB)
    for role, mac in zip(("src", "tgt"), macs):
        api.node(f"{name}-{role}", mac)
    sid = ctl("clone", "create", f"--name={name}", f"--mode={mode}", f"--resize={resize}", f"--source={name}-src",
              f"--target={name}-tgt", "--source-device=/dev/vda", "--target-device=/dev/vda",
              *([f"--storage={storage}"] if storage else []), *create_args, check=True).stdout.split()[-1]
    ctl("clone", "start", sid, check=True)
    vms = [fleet.vm(f"{name}-src", macs[0], source.backing, **machine),
           fleet.vm(f"{name}-tgt", macs[1], target, **machine)]
    return f"/org/pureboot/Controller1/clone/{sid}", sid, files, target, vms


def boot_to_agents(vms, modes, timeout=300):
    """Switches vms on and waits until each runs the agent of its mode; returns the seconds each took."""
    for vm in vms:
        vm.start()
    return [vm.wait_console(f"PureBoot agent ({mode})", timeout, f"systemd starting the agent ({mode})")
            for vm, mode in zip(vms, modes)]


def wait_session_end(api, path, vms, timeout):
    def done():
        return api.prop(path, "CloneSession", "Status") in ("completed", "failed", "cancelled")
    wait_for(done, timeout=timeout, interval=1, what=f"the session to end; target console:\n{vms[1].text()[-3000:]}")
    status = api.prop(path, "CloneSession", "Status")
    assert status == "completed", (api.prop(path, "CloneSession", "Error"), vms[0].text()[-3000:],
                                   vms[1].text()[-3000:])
    assert api.prop(path, "CloneSession", "SourceDigest") == api.prop(path, "CloneSession", "TargetDigest")


def check_target(target, files, tmp_path, root_bytes, vms):
    """The target's disk, seen from the host: everything copied, the root root_bytes; then both disk files
    go (they are kept only when the test fails)."""
    loop = Loop(target)
    try:
        check_root_last_disk(loop, files, tmp_path, root_bytes)
    finally:
        loop.detach()
    for vm in vms:
        vm.disk.unlink()


def target_summary(vm):
    return next((line.split("]: ", 1)[-1] for line in vm.text().splitlines() if "Wrote 512.0 MiB" in line),
                "(the target's summary was not on its console)")


def test_direct_clone_between_vms(fleet, api, ctl, tmp_path):
    path, sid, files, target, vms = clone_pair(fleet, api, ctl, tmp_path, "vm", ("52:54:00:50:42:11",
                                                                                 "52:54:00:50:42:12"),
                                               "grow_target", 768)
    with step_of("direct clone") as s:
        s["step"] = "PXE-booting both VMs to their agents"
        boots = boot_to_agents(vms, ("clone_source_direct", "clone_target_direct"))
        s["step"] = "the clone"
        wait_session_end(api, path, vms, 600)
        seconds = (api.prop(path, "CloneSession", "CompletedAt") - api.prop(path, "CloneSession", "StartedAt")) / 1e6
        s["step"] = "both machines rebooting once their reports are in"
        for vm in vms:
            assert vm.wait_exit(120, "the reboot after the job") == 0
    print(f"VM suite ({fleet.accel}): agents started {boots[0]:.1f} s and {boots[1]:.1f} s after power-on (PXE); "
          f"512 MiB cloned between two VMs (grow_target), completed {seconds:.1f} s after Start (both boots "
          f"included); the target: {target_summary(vms[1])[:160]}")

    # The root grown to the disk's end.
    check_target(target, files, tmp_path, (767 - 65) * MIB, vms)


def test_staged_clone_kept_as_an_image_then_deployed_to_three_vms(fleet, network, api, ctl, tmp_path):
    """The source uploads to nfs-ganesha (on the fleet's network), the target downloads from it and grows;
    the upload is kept as an image, which one session then deploys to three more PXE-booted VMs."""
    with NfsServer(network, tmp_path) as nfs:
        ctl("storage", "add", "ganesha", "--type=nfs", *nfs.config(), check=True)
        path, sid, files, target, vms = clone_pair(fleet, api, ctl, tmp_path, "stg", ("52:54:00:50:42:31",
                                                                                      "52:54:00:50:42:32"),
                                                   "grow_target", 768, mode="staged", storage="ganesha",
                                                   create_args=("--keep-as=fleet-image",))
        with step_of("staged clone") as s:
            s["step"] = "PXE-booting both VMs to their agents"
            boot_to_agents(vms, ("clone_source_staged", "clone_target_staged"))
            s["step"] = "the upload and the download"
            wait_session_end(api, path, vms, 900)
            seconds = (api.prop(path, "CloneSession", "CompletedAt") -
                       api.prop(path, "CloneSession", "StartedAt")) / 1e6
            s["step"] = "both machines rebooting once their reports are in"
            for vm in vms:
                assert vm.wait_exit(120, "the reboot after the job") == 0
            s["step"] = "the staging area kept as the image"
            wait_for(lambda: api.prop(path, "CloneSession", "StagingStatus") == "kept", timeout=60,
                     what="the session's staging to be the image's")
            image = api.ok("/org/pureboot/Controller1", "Manager", "GetImage", "s", "fleet-image")[0]
            assert api.prop(image, "Image", "State") == "ready"
            assert sorted(p.name for p in (nfs.export / "pureboot").iterdir()) == [sid]
        lines = [line.split("]: ", 1)[-1] for vm in vms for line in vm.text().splitlines()
                 if re.search(r"pureboot-agent\[\d+\]: (Uploaded [\d.]+ MiB as|Wrote [\d.]+ \S+ to )", line)]
        print(f"VM suite ({fleet.accel}): 512 MiB staged through NFS between two VMs (grow_target), completed "
              f"{seconds:.1f} s after Start (both boots included); " + "; ".join(l[:140] for l in lines))
        check_target(target, files, tmp_path, (767 - 65) * MIB, vms)

        with step_of("image deployed to three VMs") as s:
            macs = ("52:54:00:50:42:41", "52:54:00:50:42:42", "52:54:00:50:42:43")
            targets, fleet_vms = [], []
            for n, (mac, mib) in enumerate(zip(macs, (512, 512, 768)), 1):
                api.node(f"img-{n}", mac)
                disk = tmp_path / f"img-{n}.img"
                with open(disk, "wb") as f:
                    f.truncate(mib * MIB)
                targets.append((disk, mib))
                fleet_vms.append(fleet.vm(f"img-{n}", mac, disk))
            deploy = ctl("image", "deploy", "fleet-image", "--resize=grow_target", "--target=img-1",
                         "--target=img-2", "--target=img-3", "--target-device=/dev/vda", check=True).stdout.strip()
            dpath = f"/org/pureboot/Controller1/clone/{deploy}"
            s["step"] = "PXE-booting three VMs to their agents"
            boot_to_agents(fleet_vms, ["clone_target_staged"] * len(fleet_vms))
            s["step"] = "the three downloads"
            wait_for(lambda: api.prop(dpath, "CloneSession", "Status") in ("completed", "failed", "cancelled"),
                     timeout=900, interval=1, what="the deploy to end; consoles:\n" +
                     "\n".join(vm.text()[-1500:] for vm in fleet_vms))
            assert api.prop(dpath, "CloneSession", "Status") == "completed", \
                (api.prop(dpath, "CloneSession", "Error"), [vm.text()[-2000:] for vm in fleet_vms])
            seconds = (api.prop(dpath, "CloneSession", "CompletedAt") -
                       api.prop(dpath, "CloneSession", "StartedAt")) / 1e6
            digest = api.prop(image, "Image", "Digest")
            for n in (1, 2, 3):
                assert api.prop(f"{dpath}/target/{n}", "CloneTarget", "Digest") == digest
            # A chain: one machine read the store, the others pulled from the one before them (one booting
            # more than 10 s after the next is passed over, and rejoins at the tail).
            readers = [n for n, vm in enumerate(fleet_vms, 1) if "Reading the image from the staging area" in vm.text()]
            forwarders = [n for n, vm in enumerate(fleet_vms, 1) if "A downstream's stream ended at" in vm.text()]
            assert readers and len(forwarders) >= 2, (readers, forwarders, [vm.text()[-1500:] for vm in fleet_vms])
            s["step"] = "the three machines rebooting once their reports are in"
            for vm in fleet_vms:
                assert vm.wait_exit(120, "the reboot after the job") == 0
        print(f"VM suite ({fleet.accel}): the kept image deployed to three VMs in one session (one grown to "
              f"768 MiB), completed {seconds:.1f} s after Start (three PXE boots included); a chain: VM "
              f"{', '.join(map(str, readers))} read the store, VMs {', '.join(map(str, forwarders))} forwarded")
        for (disk, mib), vm in zip(targets, fleet_vms):
            check_target(disk, files, tmp_path, (mib - 1 - 65) * MIB, [vm])
        ctl("image", "delete", "fleet-image", check=True)
        assert not any((nfs.export / "pureboot").iterdir())


def test_clone_survives_a_controller_outage(fleet, controller, api, ctl, tmp_path):
    path, sid, files, target, vms = clone_pair(fleet, api, ctl, tmp_path, "out", ("52:54:00:50:42:21",
                                                                                  "52:54:00:50:42:22"), "none", 512)
    with step_of("controller outage") as s:
        s["step"] = "PXE-booting both VMs to their agents"
        for vm in vms:
            vm.start()
        s["step"] = "the copy starting"
        vms[1].wait_console("Writing /dev/vda", 300, "the target starting to write")
        s["step"] = "stopping the controller"
        assert controller.stop() == 0
        stopped = time.monotonic()
        s["step"] = "the copy finishing while the controller is away"
        vms[1].wait_console("Wrote 512.0 MiB", 60, "the target finishing without the controller")
        assert time.monotonic() - stopped < 60, "the copy took longer than the outage: nothing was queued"
        time.sleep(max(0.0, 60 - (time.monotonic() - stopped)))
        queued = {}
        for vm, role in zip(vms, ("source", "target")):
            for method, seq in re.findall(r"unreachable; (\w+) \(sequence (\d+)\) stays queued", vm.text()):
                queued.setdefault(role, set()).add((method, int(seq)))
        assert "target" in queued, f"the target queued nothing:\n{vms[1].text()[-3000:]}"
        s["step"] = "starting the controller again"
        controller.start()
        s["step"] = "the queued reports arriving"
        wait_session_end(api, path, vms, 300)
        for vm in vms:
            assert vm.wait_exit(180, "the reboot once every report is taken") == 0
        db = sqlite3.connect(f"file:{controller.state / 'pureboot.db'}?mode=ro", uri=True)
        try:
            applied = dict(db.execute("SELECT role, last_sequence FROM report_sequences WHERE session_id = ?",
                                      (sid,)).fetchall())
        finally:
            db.close()
        # Report sequences are kept per source and per target (the session's target 1 here).
        for role, reports in queued.items():
            name = "target-1" if role == "target" else role
            assert applied[name] >= max(seq for _, seq in reports), (role, reports, applied)
    counts = {role: Counter(method for method, _ in reports) for role, reports in queued.items()}
    print(f"VM suite ({fleet.accel}): controller stopped 60 s during a VM clone; the copy finished meanwhile; "
          "reports queued while it was away and taken after: "
          + "; ".join(f"{role} {dict(c)}" for role, c in counts.items()))
    check_target(target, files, tmp_path, (511 - 65) * MIB, vms)


# What the cloned system's own init says when it runs: its host name, machine-id and SSH host keys.
ROOT_INIT = """#!/bin/busybox sh
echo "PureBoot test: up as $(/bin/busybox cat /etc/hostname) (machine-id: '$(/bin/busybox cat /etc/machine-id)'; \
SSH host key $(/bin/busybox cut -d' ' -f2 /etc/ssh/ssh_host_ed25519_key.pub))"
/bin/busybox poweroff -f
"""


def make_bootable_source(tmp_path):
    """make_root_last_disk's 512 MiB installer-like disk, its root a small Linux system of its own: busybox,
    an /sbin/init that says who it is, os-release, host name golden, a machine-id and an SSH host key.
    Returns the disk file and that key (its base64 part)."""
    loops = []
    source, _ = make_root_last_disk(tmp_path, loops, size=512 * MIB, data_files=2)
    mnt = tmp_path / "root"
    mnt.mkdir()
    try:
        sh("mount", source.partition(2), mnt)
        try:
            for path, content in (("etc/os-release", "ID=debian\n"), ("etc/hostname", "golden\n"),
                                  ("etc/machine-id", "0123456789abcdef0123456789abcdef\n"), ("sbin/init", ROOT_INIT)):
                (mnt / path).parent.mkdir(parents=True, exist_ok=True)
                (mnt / path).write_text(content)
            (mnt / "sbin/init").chmod(0o755)
            (mnt / "bin").mkdir()
            sh("cp", "/bin/busybox", mnt / "bin/busybox")
            (mnt / "etc/ssh").mkdir()
            sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", mnt / "etc/ssh/ssh_host_ed25519_key")
            key = (mnt / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[1]
        finally:
            sh("umount", mnt)
    finally:
        for loop in loops:
            loop.detach()
    return source.backing, key


def test_a_session_powers_its_vms_through_ipmi_and_the_clone_boots_as_itself(fleet, api, ctl, tmp_path):
    """--power-cycle --power-off through real BMCs: each VM's is OpenIPMI's ipmi_sim, whose chassis control
    program starts and stops the VM's qemu as a BMC switches a machine's power. The controller sets each next
    boot to PXE and switches the VMs on; they boot the deploy image and clone; at the end it switches them
    off. Then the target is switched on again: from its disk this time (the BMC's PXE boot was for one boot),
    and the cloned system's own init says it runs under the target's host name, with an empty machine-id and
    an SSH host key of its own; the source's disk still says golden, with its key."""
    source, source_key = make_bootable_source(tmp_path)
    target = tmp_path / "pwr-target.img"
    with open(target, "wb") as f:
        f.truncate(512 * MIB)
    kernel, initramfs = root_boot(tmp_path)
    bmcs, vms = [], []
    try:
        with step_of("powered by ipmi_sim") as s:
            s["step"] = "the BMCs and the nodes' power drivers"
            for port, role, mac, disk in ((9623, "src", "52:54:00:50:42:31", source),
                                          (9624, "tgt", "52:54:00:50:42:32", target)):
                bmc = Bmc(fleet.ns, fleet.address, tmp_path / f"bmc-{role}", VM_CHASSIS, port=port)
                vm = PoweredVm(fleet, f"pwr-{role}", mac, disk, bmc.dir, kernel, initramfs)
                fleet.vms.append(vm)
                bmcs.append(bmc.start())
                vms.append(vm)
                api.node(f"pwr-{role}", mac)
                ctl("node", "set-power", f"pwr-{role}", *bmc.settings(), check=True)
                assert ctl("node", "power", f"pwr-{role}", "status", check=True).stdout.strip() == "off"
            sid = ctl("clone", "create", "--name=pwr", "--mode=direct", "--resize=none", "--source=pwr-src",
                      "--target=pwr-tgt", "--source-device=/dev/vda", "--target-device=/dev/vda", "--power-cycle",
                      "--power-off", check=True).stdout.split()[-1]
            path = f"/org/pureboot/Controller1/clone/{sid}"
            s["step"] = "the session switching both VMs on, to boot from the network"
            ctl("clone", "start", sid, check=True)
            for vm, mode in zip(vms, ("clone_source_direct", "clone_target_direct")):
                vm.wait_console(f"PureBoot agent ({mode})", 300, "the BMC starting it and systemd the agent")
            s["step"] = "the clone"
            wait_session_end(api, path, vms, 600)
            seconds = (api.prop(path, "CloneSession", "CompletedAt") - api.prop(path, "CloneSession", "StartedAt")) / 1e6
            s["step"] = "the session switching both off at its end"
            wait_for(lambda: sum("told power off" in n for n in api.prop(path, "CloneSession", "PowerNotes")) == 2,
                     timeout=120, what=f"both to be switched off: {api.prop(path, 'CloneSession', 'PowerNotes')}")
            for bmc in bmcs:
                assert bmc.log()[:3] == ["boot pxe", "power 1", "started from pxe"], bmc.log()
                assert bmc.log()[-1] == "power 0" and bmc.state()["power"] == "0", bmc.log()
            s["step"] = "the target switched on again, booting the clone from its disk"
            ctl("node", "power", "pwr-tgt", "on", check=True)
            vms[1].wait_console("PureBoot test: up as", 180, "the cloned system's init", boot="disk")
            said = next(line for line in vms[1].text("disk").splitlines() if "PureBoot test: up as" in line)
            m = re.fullmatch(r"PureBoot test: up as pwr-tgt \(machine-id: ''; SSH host key (\S+)\)", said.strip())
            assert m and m.group(1) != source_key, (said, source_key)
            assert bmcs[1].log()[-2:] == ["power 1", "started from disk"], bmcs[1].log()
        s["step"] = "the source's disk, untouched"
        loop = Loop(source)
        try:
            loop.scan_partitions()
            mnt = tmp_path / "source-root"
            mnt.mkdir()
            sh("mount", "-o", "ro", loop.partition(2), mnt)
            try:
                assert (mnt / "etc/hostname").read_text() == "golden\n"
                assert (mnt / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[1] == source_key
            finally:
                sh("umount", mnt)
        finally:
            loop.detach()
    finally:
        for bmc in bmcs:
            bmc.stop()
    print(f"VM suite ({fleet.accel}): a session switched its two VMs on through ipmi_sim (PXE for one boot) and "
          f"cloned in {seconds:.1f} s from Start (both boots included), then switched them off; the target then "
          f"booted the clone from its disk, whose init said: {said.strip()[15:]}")
    for disk in (source, target):
        disk.unlink()
