# SPDX-License-Identifier: MIT
"""The boot chains as machines ship. UEFI machines' network cards have no iPXE in ROM, so OVMF's own PXE
fetches the first boot file by TFTP from the bridge: with Secure Boot enforced (Microsoft's keys enrolled),
Debian's signed shim, then Debian's signed GRUB network image, which asks the bridge for the machine's
answer by TFTP and loads Debian's signed kernel and the deploy initrd; for machines that use iPXE, Debian's
snponly.efi and pureboot.ipxe, by PXE or by UEFI HTTP boot. BIOS machines through undionly.kpxe; proxy
DHCP; the README's ISC dhcpd example. Every result is checked on the disk files from the host."""

import json
import os
import re
import subprocess

from harness import REPO, wait_for
from nodes import Loop, sh
from test_fleet import boot_to_agents, check_target, clone_pair, step_of, wait_session_end
from vm import Dnsmasq, debian_efi_loaders

MIB = 1 << 20
ROOT = "/org/pureboot/Controller1"


def hardware(api, path):
    """The inventory the node's agent last reported (Node.Hardware), {} before it did."""
    text = api.prop(path, "Node", "Hardware")
    return json.loads(text) if text else {}


def blank_disk(path, mib, gpt=False):
    """A disk file of mib MiB, zeros, with an empty GPT if gpt."""
    with open(path, "wb") as f:
        f.truncate(mib * MIB)
    if gpt:
        sh("sfdisk", "--quiet", path, input="label: gpt\n")
    return path


def tftp_sent(fleet):
    """The files the bridge's TFTP sent whole, in order."""
    return re.findall(r'TFTP: sent "([^"]+)"', fleet.server.log.read_text())


def test_secure_boot_through_shim_and_grub_into_partition_mode(fleet, api, ctl, tmp_path):
    disk = blank_disk(tmp_path / "sb.img", 256, gpt=True)
    node = api.node("vm-sb", "52:54:00:50:48:01")
    ctl("node", "set-mode", "vm-sb", "partition", check=True)
    vm = fleet.vm("vm-sb", "52:54:00:50:48:01", disk, firmware="secureboot", rom=False).start()
    with step_of("Secure Boot") as s:
        s["step"] = "OVMF's PXE loading shim, and shim loading GRUB, by TFTP"
        vm.wait_console("Fetching Netboot Image grubx64.efi", 300, "shim fetching GRUB")
        s["step"] = "GRUB asking the bridge for this machine's answer"
        vm.wait_console("PureBoot: booting the deploy image for", 120, "GRUB running the bridge's answer")
        s["step"] = "Debian's signed kernel and the deploy image, to the agent"
        boot = vm.wait_console("PureBoot agent (partition)", 400, "systemd starting the agent the generator picked")
        s["step"] = "the agent's hardware report"
        wait_for(lambda: hardware(api, node).get("firmware"), timeout=120, interval=1,
                 what=f"the VM's hardware report; console:\n{vm.text()[-3000:]}")
        system = hardware(api, node)
        assert system["firmware"] == "uefi" and system["secureBoot"] is True, system
        # The kernel's EFI stub, started by GRUB through shim's check, says so too.
        assert "EFI stub: UEFI Secure Boot is enabled." in vm.text()
        s["step"] = "the first scan"
        wait_for(lambda: "/dev/vda" in ctl("disk", "list", "vm-sb").stdout, timeout=120, interval=0.5,
                 what=f"the VM's disk in the controller; console:\n{vm.text()[-3000:]}")
        s["step"] = "queueing a create and applying it"
        ctl("partition", "queue", "vm-sb", "vda", "create", "start_bytes=1M", "size_bytes=64M", "filesystem=ext4",
            "label=secure", check=True)
        r = ctl("partition", "apply", "vm-sb", "vda", "--follow")
        assert r.returncode == 0, (r.stdout, r.stderr, vm.text()[-3000:])
    console = vm.text()
    print(f"VM suite ({fleet.accel}): Secure Boot enforced, shim → GRUB → Debian's kernel by TFTP from the bridge; "
          f"the agent ran {boot:.1f} s after power-on and reported {system['firmware']}, Secure Boot "
          f"{'on' if system['secureBoot'] else 'off'}")
    vm.stop()
    # The chain as it ran: shim fetched GRUB, GRUB asked the bridge (grub/grub.cfg) and booted its answer.
    order = [console.index(words) for words in ("Fetching Netboot Image grubx64.efi", "PureBoot: asking",
                                                "PureBoot: booting the deploy image", "EFI stub: UEFI Secure Boot")]
    assert order == sorted(order), order
    loop = Loop(disk)
    try:
        loop.scan_partitions()
        wait_for(lambda: os.path.exists(loop.partition(1)), timeout=5, what="the new partition")
        assert sh("blkid", "-o", "value", "-s", "LABEL", loop.partition(1)).stdout.strip() == "secure"
        assert sh("fsck.ext4", "-n", loop.partition(1), check=False).returncode == 0
    finally:
        loop.detach()
    disk.unlink()


def test_uefi_without_a_rom_chains_snponly_to_the_bridge(fleet, api, tmp_path):
    disk = blank_disk(tmp_path / "ipxe.img", 64)
    mac = "52:54:00:50:49:01"  # UEFI_IPXE_MACS: dnsmasq hands it snponly.efi
    vm = fleet.vm("vm-snp", mac, disk, firmware="uefi", rom=False).start()
    with step_of("UEFI with iPXE") as s:
        s["step"] = "OVMF's PXE loading snponly.efi by TFTP"
        vm.wait_console("iPXE", 300, "snponly.efi starting")
        s["step"] = "iPXE running pureboot.ipxe and the bridge's answer"
        seconds = vm.wait_console("nothing to do for this machine", 120, "the bridge's answer for an unknown machine")
        nodes = {n[1]: n for n in api.ok(ROOT, "Manager", "ListNodes")[0]}
        node = nodes.get("node-525400504901")
        assert node and node[2] == mac and node[4] == "discovered", nodes
    # The bridge's TFTP sent iPXE, then its script, to this machine (the only one in the fleet).
    assert tftp_sent(fleet)[:2] == ["snponly.efi", "pureboot.ipxe"], tftp_sent(fleet)
    vm.stop()
    print(f"VM suite ({fleet.accel}): UEFI without a ROM: OVMF → snponly.efi → pureboot.ipxe → the bridge, "
          f"{seconds:.1f} s after power-on")
    disk.unlink()


def test_bios_pxe_rom_loads_undionly_kpxe_from_the_bridge(fleet, api, tmp_path):
    """BIOS through undionly.kpxe, as on a machine whose card has a vendor's PXE ROM: the ROM's PXE fetches
    undionly.kpxe by TFTP from the bridge, undionly.kpxe runs iPXE on that ROM's UNDI driver and takes
    pureboot.ipxe, and the bridge answers. SeaBIOS has no PXE of its own, and every network ROM Debian's qemu
    has is iPXE, whose DHCP request is byte for byte that of undionly.kpxe (same user class, architecture and
    option 175); so the card's iPXE ROM plays the vendor's ROM: a dnsmasq that hands out undionly.kpxe and
    nothing else answers its DHCP, and once the bridge sent undionly.kpxe, dnsmasq with dnsmasq.conf answers
    undionly.kpxe's (iPXE asks until it has an answer)."""
    disk = blank_disk(tmp_path / "undi.img", 64)
    mac = "52:54:00:50:48:61"
    fleet.restart_dnsmasq(fleet.dhcp_site[0], "--dhcp-boot=undionly.kpxe", conf=None)
    vm = fleet.vm("vm-undi", mac, disk, firmware="bios", rom=True).start()
    with step_of("BIOS PXE ROM") as s:
        s["step"] = "the ROM's PXE fetching undionly.kpxe from the bridge"
        wait_for(lambda: "undionly.kpxe" in tftp_sent(fleet), timeout=300, interval=0.1,
                 what=f"undionly.kpxe sent; console:\n{vm.text()[-3000:]}")
        fleet.restart_dnsmasq(*fleet.dhcp_site)
        s["step"] = "undionly.kpxe on the ROM's UNDI driver, pureboot.ipxe, the bridge's answer"
        seconds = vm.wait_console("nothing to do for this machine", 300, "the bridge's answer through undionly.kpxe")
    console, sent = vm.text(), tftp_sent(fleet)
    vm.stop()
    assert "undionly.kpxe : " in console and "UNDI device is PCI" in console, console[-3000:]
    assert "using undionly" in console.split("pureboot.ipxe :")[0].rsplit("undionly.kpxe :", 1)[1], console[-3000:]
    assert sent[0] == "undionly.kpxe" and sent[-1] == "pureboot.ipxe", sent
    nodes = {n[2]: n for n in api.ok(ROOT, "Manager", "ListNodes")[0]}
    assert mac in nodes and nodes[mac][4] == "discovered", nodes
    print(f"VM suite ({fleet.accel}): BIOS, a PXE ROM → undionly.kpxe from the bridge → pureboot.ipxe → the "
          f"bridge's answer {seconds:.1f} s after power-on (qemu's iPXE ROM playing the vendor's PXE ROM; "
          f"undionly.kpxe sent {sent.count('undionly.kpxe')} time(s))")
    disk.unlink()


def test_uefi_http_boot_into_the_deploy_image(fleet, api, ctl, tmp_path):
    """UEFI HTTP boot (the firmware's PXE switched off): dnsmasq answers the HTTPClient vendor class with a
    URL, the bridge's plain HTTP serves snponly.efi from its TFTP root, and iPXE goes on as after PXE. Secure
    Boot is off: Debian's shim does fetch its GRUB over HTTP, but that GRUB has no HTTP to read its answer with
    (tried with OVMF: it stops at its prompt)."""
    disk = blank_disk(tmp_path / "http.img", 64, gpt=True)
    node = api.node("vm-http", "52:54:00:50:48:31")
    ctl("node", "set-mode", "vm-http", "partition", check=True)
    vm = fleet.vm("vm-http", "52:54:00:50:48:31", disk, firmware="uefi", rom=False, http=True).start()
    with step_of("UEFI HTTP boot") as s:
        s["step"] = "the firmware's HTTP boot fetching snponly.efi from the bridge"
        vm.wait_console(f"URI: {fleet.server.http_url}/boot/snponly.efi", 300, "the firmware's HTTP boot")
        s["step"] = "iPXE, the bridge's answer, the deploy image, to the agent"
        seconds = vm.wait_console("PureBoot agent (partition)", 400, "systemd starting the agent the generator picked")
        s["step"] = "the agent's hardware report and first scan"
        wait_for(lambda: hardware(api, node).get("firmware"), timeout=120, interval=1,
                 what=f"the VM's hardware report; console:\n{vm.text()[-3000:]}")
        assert hardware(api, node)["firmware"] == "uefi" and hardware(api, node)["secureBoot"] is False
        wait_for(lambda: "/dev/vda" in ctl("disk", "list", "vm-http").stdout, timeout=120, interval=0.5,
                 what=f"the VM's disk in the controller; console:\n{vm.text()[-3000:]}")
    # iPXE came over HTTP: the bridge's TFTP sent only what iPXE asked for after it.
    assert tftp_sent(fleet)[0] == "pureboot.ipxe", tftp_sent(fleet)
    assert "snponly.efi" not in tftp_sent(fleet)
    vm.stop()
    print(f"VM suite ({fleet.accel}): UEFI HTTP boot: OVMF → snponly.efi over HTTP → pureboot.ipxe → the deploy "
          f"image; the agent ran {seconds:.1f} s after power-on")
    disk.unlink()


def test_uefi_clone_boots_by_itself_through_the_boot_entry_its_agent_made(fleet, api, ctl, tmp_path):
    """A clone between two UEFI machines with Secure Boot enforced, the source's ESP laid out as Debian
    installs it (EFI/debian: shim, GRUB, a grub.cfg beside them; nothing at EFI/BOOT/BOOTX64.EFI, so the
    firmware's entry for the disk itself finds no loader). The target's agent adds a Boot#### entry for
    shim to its NVRAM. Switched on again, the target is told by the bridge to boot locally, and GRUB starts
    the clone's shim from its disk; switched on without its network card, the firmware boots the clone by
    itself, through the new entry."""
    path, sid, files, target, vms = clone_pair(fleet, api, ctl, tmp_path, "efi", ("52:54:00:50:48:11",
                                                                                  "52:54:00:50:48:12"),
                                               "grow_target", 512, firmware="secureboot", rom=False)
    shim, grub = debian_efi_loaders(tmp_path)
    config = tmp_path / "grub.cfg"
    config.write_text(f'echo "{DISK_BOOT}"\nsleep 2\nhalt\n')
    esp = f"{vms[0].disk}@@1M"  # make_root_last_disk's ESP starts at 1 MiB
    sh("mmd", "-i", esp, "::/EFI", "::/EFI/debian")
    for source, name in ((shim, "shimx64.efi"), (grub, "grubx64.efi"), (config, "grub.cfg")):
        sh("mcopy", "-i", esp, source, f"::/EFI/debian/{name}")
    with step_of("UEFI clone") as s:
        s["step"] = "both machines through shim and GRUB to their agents"
        boot_to_agents(vms, ("clone_source_direct", "clone_target_direct"), 400)
        s["step"] = "the clone"
        wait_session_end(api, path, vms, 600)
        s["step"] = "both machines rebooting once their reports are in"
        for vm in vms:
            assert vm.wait_exit(120, "the reboot after the job") == 0
        notes = api.prop(f"{path}/target/1", "CloneTarget", "Notes")
        entry = next(filter(None, (re.fullmatch(r'UEFI: boot entry Boot([0-9A-F]{4}) "debian" for '
                                                r'\\EFI\\debian\\shimx64\.efi on partition 1 made; BootOrder (\S+)',
                                                note) for note in notes)), None)
        assert entry, notes
        # After the network entries OVMF made for the card, which the firmware tries first.
        order = entry.group(2).split(",")
        assert order.index(entry.group(1)) >= 1, order
        s["step"] = "the target switched on again: the bridge says boot locally, GRUB starts the clone's shim"
        vm = vms[1].boot_again("console-local.log")
        local = vm.wait_console(DISK_BOOT, 300, "the clone's own GRUB from its disk")
        assert vm.wait_exit(60, "the clone's GRUB halting") == 0
        steps = [vm.text().find(words) for words in ("PureBoot: nothing to do for this machine",
                                                     "PureBoot: starting /EFI/debian/shimx64.efi", DISK_BOOT)]
        assert -1 not in steps and steps == sorted(steps), (steps, vm.text()[-3000:])
        s["step"] = "the target switched on without its network card: the firmware takes the new entry"
        vm.boot_again("console-disk.log", network=False)
        alone = vm.wait_console(DISK_BOOT, 300, "the clone's own GRUB from its disk, by the NVRAM entry")
        assert vm.wait_exit(60, "the clone's GRUB halting") == 0
        assert f'BdsDxe: starting Boot{entry.group(1)} "debian"' in vm.text(), vm.text()[-3000:]
    print(f"VM suite ({fleet.accel}): UEFI clone with Secure Boot; the target's agent made Boot{entry.group(1)} "
          f"(BootOrder {','.join(order)}); switched on again, the target booted the clone's shim and GRUB from its "
          f"disk {local:.1f} s after power-on through the bridge's answer, and {alone:.1f} s after power-on by "
          f"itself without its network card")
    check_target(target, files, tmp_path, (511 - 65) * MIB, vms)


DISK_BOOT = "PureBoot test: the clone's own GRUB runs from its disk"


def test_proxy_dhcp_next_to_the_sites_own_dhcp_server(fleet, network, api, tmp_path):
    """The site's DHCP server (a dnsmasq of its own, on another machine, that knows nothing of PXE) gives
    the address; PureBoot's dnsmasq in proxy mode adds only the boot options (deploy/pxe/dnsmasq.conf's
    header: dhcp-range=…,proxy and its pxe-service= lines): OVMF's PXE fetches snponly.efi, iPXE takes the
    proxy's pureboot.ipxe, and the bridge answers. (Debian's signed GRUB 2.06 does not take its server from
    a proxy DHCP offer: tried here, it asks no one for its grub.cfg. Under proxy DHCP, UEFI machines get
    iPXE, which needs Secure Boot off.)"""
    ns, address = network.node("site-dhcp")
    subnet = network.subnet
    site_log = tmp_path / "site-dhcp.log"
    site = Dnsmasq(subprocess.Popen(
        ["ip", "netns", "exec", ns, "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0", "--log-dhcp",
         f"--interface={network.links[ns]}", "--bind-interfaces",
         f"--dhcp-range={subnet}.100,{subnet}.199,255.255.255.0,1h", f"--dhcp-leasefile={tmp_path / 'site.leases'}",
         f"--pid-file={tmp_path / 'site.pid'}"], stdout=open(site_log, "w"), stderr=subprocess.STDOUT), site_log)
    try:
        # dnsmasq.conf's header, with this fleet's address for the bridge's.
        header = (REPO / "deploy/pxe/dnsmasq.conf").read_text()
        proxy = [line[len("#   "):].replace("192.0.2.1", fleet.address).replace("192.0.2.0", f"{subnet}.0")
                 for line in header.splitlines() if re.match(r"#   (dhcp-range=.*,proxy|pxe-service=)", line)]
        assert len(proxy) == 5, proxy
        fleet.restart_dnsmasq(*(f"--{line}" for line in proxy))
        disk = blank_disk(tmp_path / "proxy.img", 64)
        vm = fleet.vm("vm-proxy", "52:54:00:50:48:21", disk, firmware="uefi", rom=False).start()
        with step_of("proxy DHCP") as s:
            s["step"] = "the firmware's PXE with the site's address and PureBoot's boot options, then iPXE's"
            seconds = vm.wait_console("nothing to do for this machine", 300, "the bridge's answer through iPXE")
        leases = (tmp_path / "site.leases").read_text()
        assert "52:54:00:50:48:21" in leases, leases  # the address came from the site's server
        assert not (fleet.dir / "dnsmasq.leases").exists() or "52:54:00:50:48:21" not in \
            (fleet.dir / "dnsmasq.leases").read_text()
        assert tftp_sent(fleet)[:2] == ["snponly.efi", "pureboot.ipxe"], tftp_sent(fleet)
        vm.stop()
        print(f"VM suite ({fleet.accel}): proxy DHCP next to the site's DHCP server: OVMF → snponly.efi → "
              f"pureboot.ipxe → the bridge's answer {seconds:.1f} s after power-on")
        disk.unlink()
    finally:
        site.stop()


def test_isc_dhcpd_with_the_readmes_example(fleet, api, tmp_path):
    """The README's ISC dhcpd example in place of dnsmasq, as on a site that keeps its own DHCP server: a UEFI
    machine with Secure Boot enforced (shim, GRUB), a BIOS machine whose card runs iPXE (pureboot.ipxe) and a
    UEFI machine by HTTP boot (snponly.efi over HTTP), at once; each reaches the bridge's answer."""
    readme = (REPO / "README.md").read_text()
    example = re.search(r"In ISC dhcpd.*?```\n(.*?)```", readme, re.S).group(1)
    example = example.replace("http://192.0.2.1:8080", fleet.server.http_url).replace("192.0.2.1", fleet.address)
    subnet = fleet.network.subnet
    fleet.use_dhcpd(f"{example}\nsubnet {subnet}.0 netmask 255.255.255.0 {{\n"
                    f"        range {subnet}.100 {subnet}.199;\n}}\n")
    machines = {"52:54:00:50:48:51": dict(firmware="secureboot", rom=False),
                "52:54:00:50:48:52": dict(firmware="bios", rom=True),
                "52:54:00:50:48:53": dict(firmware="uefi", rom=False, http=True)}
    vms = []
    for n, (mac, kind) in enumerate(machines.items()):
        disk = blank_disk(tmp_path / f"isc{n}.img", 64)
        vms.append(fleet.vm(f"vm-isc{n}", mac, disk, **kind).start())
    with step_of("ISC dhcpd") as s:
        seconds = []
        for vm, words in zip(vms, ("PureBoot: asking", "PureBoot: asking", "URI: ")):
            s["step"] = f"{vm.name} ({vm.firmware}) to its first step"
            vm.wait_console(words, 300, "the boot file dhcpd named")
        for vm in vms:
            s["step"] = f"{vm.name} ({vm.firmware}) to the bridge's answer"
            seconds.append(vm.wait_console("nothing to do for this machine", 300, "the bridge's answer"))
    console = [vm.text() for vm in vms]
    assert "Fetching Netboot Image grubx64.efi" in console[0]  # shim → GRUB
    assert "pureboot.ipxe" in console[1] and "pureboot.ipxe" in console[2]
    assert f"URI: {fleet.server.http_url}/boot/snponly.efi" in console[2]
    nodes = {n[2]: n for n in api.ok(ROOT, "Manager", "ListNodes")[0]}
    leases = (fleet.dir / "dhcpd.leases").read_text()
    for mac in machines:
        assert mac in nodes and nodes[mac][4] == "discovered", nodes
        assert f"hardware ethernet {mac}" in leases, leases
    for vm in vms:
        vm.stop()
    print(f"VM suite ({fleet.accel}): the README's ISC dhcpd example: Secure Boot through shim and GRUB, "
          f"an iPXE ROM, and UEFI HTTP boot at once reached the bridge's answer {seconds[0]:.1f}, {seconds[1]:.1f} "
          f"and {seconds[2]:.1f} s after power-on")


def stick_file(stick, name):
    """A file of the boot stick's EFI system partition (at 2 MiB), read with mtools."""
    return sh("mtype", "-i", f"{stick}@@2M", f"::{name}", env=dict(os.environ, MTOOLS_SKIP_CHECK="1")).stdout


def test_boot_stick_for_machines_that_cannot_boot_from_the_network(fleet, api, ctl, tmp_path):
    """purebootctl boot-media write: a stick for machines that cannot boot from the network. The site's DHCP
    server here knows nothing of PureBoot (addresses, no boot file) and the cards have no ROM. Two machines
    have the stick as their first disk: OVMF with Secure Boot enforced runs the stick's shim and Debian's
    signed GRUB network image, which starts the network and asks the bridge by TFTP; SeaBIOS runs the stick's GRUB, which
    starts Debian's iPXE (ipxe.lkrn) with the stick's script, which asks the bridge over HTTP. Both get what
    a network boot gets: the deploy image in partition mode, up to their agents, booted at once."""
    stick = tmp_path / "stick.img"
    r = ctl("boot-media", "write", stick, "--server", fleet.server.http_url)
    assert r.returncode == 0, r.stderr
    assert f"source (tftp,{fleet.address})/boot/grub/$pureboot_mac" in stick_file(stick, "/grub/grub.cfg")
    assert f"chain --autofree {fleet.server.http_url}/boot/ipxe?mac=${{netX/mac}}" in \
        stick_file(stick, "/pureboot/pureboot.ipxe")
    machines = {"uefi": ("vm-stu", "52:54:00:50:53:01", "secureboot"), "bios": ("vm-stb", "52:54:00:50:53:02", "bios")}
    sent_before = len(tftp_sent(fleet))
    fleet.restart_dnsmasq(fleet.dhcp_site[0], conf=None)
    try:
        vms, nodes = {}, {}
        for kind, (name, mac, firmware) in machines.items():
            nodes[kind] = api.node(name, mac)
            ctl("node", "set-mode", name, "partition", check=True)
            disk = tmp_path / f"{name}.img"
            disk.write_bytes(stick.read_bytes())
            vms[kind] = fleet.vm(name, mac, disk, firmware=firmware, rom=False, stick=True).start()
        seconds = {}
        with step_of("boot sticks") as s:
            for kind, vm in vms.items():
                s["step"] = f"{kind}: the stick's loader asking the bridge"
                vm.wait_console(f"what {vm.mac} boots", 300, f"the stick's {kind} loader asking for {vm.mac}")
                s["step"] = f"{kind}: the bridge's answer, to the agent"
                seconds[kind] = vm.wait_console("PureBoot agent (partition)", 400, "the agent the bridge's answer runs")
            for kind, vm in vms.items():
                s["step"] = f"{kind}: the agent's hardware report"
                wait_for(lambda: hardware(api, nodes[kind]).get("firmware"), timeout=120, interval=1,
                         what=f"{vm.name}'s hardware report; console:\n{vm.text()[-3000:]}")
    finally:
        fleet.restart_dnsmasq(*fleet.dhcp_site)
    consoles = {kind: vm.text() for kind, vm in vms.items()}
    for vm in vms.values():
        vm.stop()
    uefi, bios = hardware(api, nodes["uefi"]), hardware(api, nodes["bios"])
    assert uefi["firmware"] == "uefi" and uefi["secureBoot"] is True, uefi
    assert bios["firmware"] == "bios", bios
    # The chains as they ran: from the stick (the bridge's TFTP sent no loader, only answers and boot files).
    order = [consoles["uefi"].index(words) for words in (
        "PureBoot: starting the network to ask", f"PureBoot: asking {fleet.address} what 52:54:00:50:53:01 boots",
        "PureBoot: booting the deploy image", "EFI stub: UEFI Secure Boot is enabled.")]
    assert order == sorted(order), order
    order = [consoles["bios"].index(words) for words in (
        "GRUB loading", f"PureBoot: starting iPXE to ask {fleet.address}",
        f"PureBoot: asking {fleet.server.http_url} what 52:54:00:50:53:02 boots", "PureBoot agent (partition)")]
    assert order == sorted(order), order
    sent = tftp_sent(fleet)[sent_before:]
    assert not {"shimx64.efi", "grubx64.efi", "snponly.efi", "undionly.kpxe", "pureboot.ipxe"} & set(sent), sent
    assert "boot/grub/52:54:00:50:53:01" in sent, sent
    print(f"VM suite ({fleet.accel}): boot sticks (purebootctl boot-media write), no network boot: UEFI with Secure "
          f"Boot (the stick's shim and GRUB, TFTP) and BIOS (the stick's GRUB and iPXE, HTTP) ran their agents "
          f"{seconds['uefi']:.1f} and {seconds['bios']:.1f} s after power-on")
