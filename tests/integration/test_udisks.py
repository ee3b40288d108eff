# SPDX-License-Identifier: MIT
"""Disks of a desktop machine through udisks2: systemd-udevd and udisksd on the private bus, loop devices as
the desktop's disks, and the test user (not root) allowed udisks2's open-device actions and the image library
by the README's rules. purebootctl image capture-local reads a disk into the library, restore-local writes an
image onto another; the controller only ever gets the descriptors udisks2 opened."""

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from harness import TEST_USER, run, wait_for
from nodes import check_files, make_blank_disk, make_source_disk, sh, sha256

UDEVD = "/lib/systemd/systemd-udevd"
UDISKSD = "/usr/libexec/udisks2/udisksd"


@pytest.fixture
def udisks(system_bus, tmp_path):
    """udisksd on the private bus, and systemd-udevd when this machine runs none (then it goes again with
    what it made under /run/udev; the loop devices' /dev/disk links go as they are detached, before it ends)."""
    started = []
    made_run_udev = not Path("/run/udev").exists()
    try:
        if not Path("/run/udev/control").exists():
            udevd = subprocess.Popen([UDEVD], stdout=open(tmp_path / "udevd.log", "w"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
            started.append(udevd)
            wait_for(lambda: Path("/run/udev/control").exists(), what="systemd-udevd to listen")
        udisksd = subprocess.Popen([UDISKSD], env=system_bus.env, stdout=open(tmp_path / "udisksd.log", "w"),
                                   stderr=subprocess.STDOUT, start_new_session=True)
        started.append(udisksd)
        wait_for(lambda: system_bus.name_has_owner("org.freedesktop.UDisks2"), what="udisksd on the bus")
        yield
    finally:
        for proc in reversed(started):
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if made_run_udev:
            sh("rm", "-rf", "/run/udev", check=False)


def blank_loop(tmp_path, loops, name, size):
    loop = make_blank_disk(tmp_path, loops, name, size)
    sh("udevadm", "settle", "--timeout=10", check=False)  # udisksd sees it once udev has
    return loop


def as_user(system_bus, *args):
    from harness import PUREBOOTCTL
    return run([PUREBOOTCTL, "--no-pager", "--no-ask-password", *args], system_bus, user=TEST_USER, timeout=120)


def partitions(device):
    return [(p["start"], p["size"], p.get("name")) for p in
            json.loads(sh("sfdisk", "--json", device).stdout)["partitiontable"]["partitions"]]


def test_capture_and_restore_a_desktop_disk_without_root(system_bus, controller, ctl, api, udisks, tmp_path, request):
    """Refused by udisks2 until the README's rules allow the user; then a 256 MiB disk is captured into the
    library and restored onto a 512 MiB one (its GPT backup moved to the end), partition by partition equal to
    the source with every file checked; a disk smaller than the image is refused and left as it was."""
    top = tmp_path / "images"
    ctl("storage", "add", "here", "--type=local", f"path={top}", check=True)
    source, files = make_source_disk(tmp_path)
    loops = [source]
    try:
        sh("udevadm", "settle", "--timeout=10", check=False)
        r = as_user(system_bus, "image", "capture-local", "golden", source.device, "--storage=here")
        assert r.returncode == 5, (r.returncode, r.stderr)
        assert f"udisks2 did not open {source.device} for reading" in r.stderr, r.stderr
        assert "org.freedesktop.udisks2.open-device" in r.stderr and "README" in r.stderr, r.stderr
        assert api.ok("/org/pureboot/Controller1", "Manager", "ListImages")[0] == []

        request.getfixturevalue("operators")  # the README's rules, the user in their group
        def captured():
            r = as_user(system_bus, "image", "capture-local", "golden", source.device, "--storage=here")
            assert r.returncode in (0, 5), r.stderr  # polkitd may take a moment to read the new rules
            return r if r.returncode == 0 else None
        wait_for(captured, timeout=20, interval=1, what="the capture as the test user")
        image = api.ok("/org/pureboot/Controller1", "Manager", "GetImage", "s", "golden")[0]
        assert api.prop(image, "Image", "State") == "ready"
        assert api.prop(image, "Image", "SizeBytes") == 256 << 20
        assert api.prop(image, "Image", "Description") == f"Imported from the disk {source.device} (256.0 MiB)."
        import pwd
        assert api.prop(image, "Image", "CreatedBy") == pwd.getpwnam(TEST_USER).pw_uid

        target = blank_loop(tmp_path, loops, "target", 512 << 20)
        r = as_user(system_bus, "image", "restore-local", "golden", target.device)
        assert r.returncode == 0, r.stderr
        sh("sfdisk", "--verify", target.device)
        assert partitions(target.device) == partitions(source.device)
        target.scan_partitions()
        for n in (1, 2):
            assert sha256(target.partition(n)) == sha256(source.partition(n)), f"partition {n} differs"
        check_files(target, files, tmp_path)
        assert "backup GPT" not in sh("sfdisk", "--list", target.device, check=False).stderr

        small = blank_loop(tmp_path, loops, "small", 128 << 20)
        r = as_user(system_bus, "image", "restore-local", "golden", small.device)
        assert r.returncode == 1, r.stderr
        assert f"{small.device} is 128.0 MiB; the image is 256.0 MiB" in r.stderr, r.stderr
        with open(small.backing, "rb") as f:
            assert f.read(1 << 20) == bytes(1 << 20), "the refused disk was written"
    finally:
        for loop in loops:
            loop.detach()


def test_desktop_disks_in_cockpit(system_bus, controller, ctl, api, udisks, tmp_path, cockpit, browser, operators):
    """The Images page lists this machine's disks as udisks2 does; Capture reads one into the library, Restore
    writes the image onto another and Write boot stick makes a third a boot stick, each through purebootctl as
    the logged-in user."""
    ctl("storage", "add", "here", "--type=local", f"path={tmp_path / 'images'}", check=True)
    source, files = make_source_disk(tmp_path)
    loops = [source]
    try:
        target = blank_loop(tmp_path, loops, "target", 256 << 20)
        stick = blank_loop(tmp_path, loops, "stick", 64 << 20)
        sh("udevadm", "settle", "--timeout=10", check=False)
        ws = cockpit()
        browser.open(ws, "images")
        src = source.device.replace("/", "-")
        browser.wait_text(f"#local-disks tr[data-device='{source.device}']", lambda t: "256 MiB" in t,
                          "the source among this machine's disks")
        browser.type(f"#local-name-{src}", "desk")
        browser.type(f"#local-storage-{src}", "here")
        browser.click(f"#local-capture{src}")
        browser.wait_text("#notice", lambda t: "Capture: done" in t, "the capture's end", timeout=120)
        browser.wait_text("tr[data-image='desk']", lambda t: "ready" in t, "the new image in the library")
        browser.shot("desktop-capture")
        tgt = target.device.replace("/", "-")
        browser.type(f"#local-image-{tgt}", "desk")
        browser.click(f"#local-restore{tgt}")
        browser.wait_text("#notice", lambda t: "Restore: done" in t, "the restore's end", timeout=120)
        target.scan_partitions()
        for n in (1, 2):
            assert sha256(target.partition(n)) == sha256(source.partition(n)), f"partition {n} differs"
        check_files(target, files, tmp_path)

        sid = stick.device.replace("/", "-")
        browser.type(f"#local-server-{sid}", "http://192.0.2.10:8080")
        browser.click(f"#local-stick{sid}")
        browser.wait_text("#notice", lambda t: "Boot stick: done" in t, "the stick written", timeout=120)
        browser.shot("desktop-boot-stick")
        table = json.loads(sh("sfdisk", "--json", stick.device).stdout)["partitiontable"]
        assert [p["type"] for p in table["partitions"]] == ["21686148-6449-6E6F-744E-656564454649",
                                                            "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"], table
    finally:
        for loop in loops:
            loop.detach()


def test_boot_stick_written_without_root(system_bus, udisks, tmp_path, request):
    """purebootctl boot-media write onto a 256 MiB loop disk that held an ext4 filesystem: refused by udisks2
    until the README's rules allow the user, then written through the descriptor udisks2 opened. The disk then
    has a GPT of its own size (the backup at its end) with the BIOS boot and EFI system partitions, GRUB's
    boot code in the MBR and core image in the BIOS boot partition, and an EFI system partition that fsck.vfat
    passes, holding shim, GRUB and the scripts that ask the bridge; the ext4 signature is gone. A partition, a
    disk too small and a URL that is not the bridge's plain HTTP listener are refused. (That the stick boots:
    the VM suite.)"""
    url = "http://192.0.2.10:8080"
    loops = []
    try:
        stick = blank_loop(tmp_path, loops, "stick", 256 << 20)
        sh("mkfs.ext4", "-q", "-F", stick.device)
        r = as_user(system_bus, "boot-media", "write", stick.device, "--server", url)
        assert r.returncode == 5, (r.returncode, r.stderr)
        assert "org.freedesktop.udisks2.open-device" in r.stderr, r.stderr

        request.getfixturevalue("operators")  # the README's rules, the user in their group
        done = []
        def written():
            r = as_user(system_bus, "boot-media", "write", stick.device, "--server", url)
            assert r.returncode in (0, 5), r.stderr  # polkitd may take a moment to read the new rules
            return r.returncode == 0 and not done.append(r)
        wait_for(written, timeout=20, interval=1, what="the stick written as the test user")
        r = done[0]
        assert f"{stick.device} boots UEFI machines" in r.stdout, r.stdout
        sh("sfdisk", "--verify", stick.device)
        assert "backup GPT" not in sh("sfdisk", "--list", stick.device, check=False).stderr
        table = json.loads(sh("sfdisk", "--json", stick.device).stdout)["partitiontable"]
        assert table["lastlba"] == (256 << 20) // 512 - 34, table
        assert [(p["start"], p["size"], p["type"], p.get("name")) for p in table["partitions"]] == [
            (2048, 2048, "21686148-6449-6E6F-744E-656564454649", "BIOS boot"),
            (4096, 81920, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "PureBoot boot")], table
        with open(stick.device, "rb") as f:
            mbr = f.read(512)
            f.seek(1 << 20)
            core = f.read(512)
        assert b"GRUB " in mbr[:440] and mbr[510:] == b"\x55\xaa", mbr
        assert b"loading" in core, core  # diskboot.img, the first sector of GRUB's core image
        assert "ext4" not in sh("blkid", "-p", "-o", "export", stick.device, check=False).stdout
        stick.scan_partitions()
        esp = stick.partition(2)
        assert sh("fsck.vfat", "-n", esp, check=False).returncode == 0
        mtools = dict(os.environ, MTOOLS_SKIP_CHECK="1")
        listing = sh("mdir", "-/", "-b", "-i", esp, "::/", env=mtools).stdout.split()
        for name in ("::/EFI/BOOT/BOOTX64.EFI", "::/EFI/BOOT/grubx64.efi", "::/grub/grub.cfg",
                     "::/pureboot/ipxe.lkrn", "::/pureboot/pureboot.ipxe"):
            assert name in listing, listing
        sh("mcopy", "-i", esp, "::/EFI/BOOT/BOOTX64.EFI", tmp_path / "shim.efi", env=mtools)
        shim = (tmp_path / "shim.efi").read_bytes()  # Debian's shim, signed by Microsoft's UEFI CA
        assert shim[:2] == b"MZ" and b"Microsoft Corporation UEFI CA" in shim
        assert "source (tftp,192.0.2.10)/boot/grub/" in sh("mtype", "-i", esp, "::/grub/grub.cfg", env=mtools).stdout
        assert f"chain --autofree {url}/boot/ipxe?mac=" in \
            sh("mtype", "-i", esp, "::/pureboot/pureboot.ipxe", env=mtools).stdout

        r = as_user(system_bus, "boot-media", "write", esp, "--server", url)
        assert r.returncode == 2 and f"{esp} is a partition; name the whole stick" in r.stderr, r.stderr
        small = blank_loop(tmp_path, loops, "small", 32 << 20)
        r = as_user(system_bus, "boot-media", "write", small.device, "--server", url)
        assert r.returncode == 1 and "is 32.0 MiB; a boot stick needs 48.0 MiB at least" in r.stderr, r.stderr
        with open(small.backing, "rb") as f:
            assert f.read() == bytes(32 << 20), "the refused disk was written"
        r = as_user(system_bus, "boot-media", "write", small.device, "--server", "https://192.0.2.10:8443")
        assert r.returncode == 2 and "plain HTTP listener" in r.stderr, r.stderr
    finally:
        for loop in loops:
            loop.detach()
