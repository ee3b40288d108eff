#!/bin/bash
# SPDX-License-Identifier: MIT
# dracut module of the PureBoot deploy image: the agent, its generator and unit, the tools it runs, and DHCP
# on every wired interface through systemd-networkd. The image is never switched away from: booted with
# rd.systemd.unit=multi-user.target (the deploy workflows' command line), systemd runs the agent in the
# initramfs itself, its state on the initramfs's tmpfs. deploy/build-image passes the files through PUREBOOT_AGENT, PUREBOOT_GENERATOR and
# PUREBOOT_UNIT.

check() {
        return 255 # only when asked for
}

depends() {
        echo systemd systemd-udevd systemd-journald systemd-sysusers systemd-tmpfiles kernel-modules
}

installkernel() {
        # Disks and network cards of virtual and real machines, and the filesystems the agent resizes.
        hostonly='' instmods virtio_net virtio_blk virtio_pci virtio_scsi nvme ahci sd_mod e1000 e1000e igb ixgbe \
                r8169 tg3 bnxt_en af_packet ext4 xfs btrfs vfat nls_cp437 nls_iso8859_1 loop efivarfs
}

install() {
        inst_simple "$PUREBOOT_AGENT" "$PUREBOOT_AGENT_PATH"
        inst_simple "$PUREBOOT_GENERATOR" /usr/lib/systemd/system-generators/pureboot-generator
        inst_simple "$PUREBOOT_UNIT" "$systemdsystemunitdir/pureboot-agent@.service"
        inst_multiple parted partx sfdisk blkid mke2fs mkfs.ext4 e2fsck resize2fs dumpe2fs tune2fs \
                mkfs.xfs xfs_growfs xfs_repair btrfs mkfs.btrfs mkfs.vfat fsck.vfat fsck.fat fatlabel \
                ntfsresize ntfsfix mkfs.ntfs mkswap swaplabel mount umount \
                partclone.extfs partclone.xfs partclone.btrfs partclone.ntfs partclone.fat partclone.exfat
        inst_multiple -o fatresize ssh-keygen fsck.exfat
        # disk erase --method secure: the drive's own erase (NVMe format, ATA security erase)
        inst_multiple -o nvme hdparm
        # a UEFI clone's boot entry in the target machine's NVRAM
        inst_multiple efibootmgr
        inst_multiple /usr/lib/systemd/systemd-networkd /usr/lib/systemd/systemd-networkd-wait-online \
                "$systemdsystemunitdir/systemd-networkd.service" "$systemdsystemunitdir/systemd-networkd.socket" \
                "$systemdsystemunitdir/systemd-networkd-wait-online.service" \
                "$systemdsystemunitdir/network-online.target" "$systemdsystemunitdir/network.target" \
                "$systemdsystemunitdir/network-pre.target" "$systemdsystemunitdir/multi-user.target" \
                /usr/lib/sysusers.d/systemd-network.conf /usr/lib/sysusers.d/basic.conf
        mkdir -p "$initdir/etc/systemd/network"
        # The same client identifier as the firmware's DHCP (the MAC), so the deploy image gets the address
        # the boot answer went to: enrolment tokens are bound to it.
        printf '[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n\n[DHCPv4]\nClientIdentifier=mac\n' \
                >"$initdir/etc/systemd/network/80-pureboot-dhcp.network"
        $SYSTEMCTL -q --root "$initdir" enable systemd-networkd.service systemd-networkd-wait-online.service
}
