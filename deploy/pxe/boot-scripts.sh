# SPDX-License-Identifier: MIT
# shellcheck shell=bash
# Sourced by deploy/pxe/setup-tftp and deploy/pxe/make-boot-media: what a machine runs to ask the bridge
# for its boot answer, the same on the network and on a boot stick, and where Debian's signed loaders are.

# The bridge's host in URL (http://HOST:PORT), or exits saying what URL must be.
bridge_host() {
        case $1 in
        http://* | https://*) ;;
        *) echo "${0##*/}: URL must be http://HOST:PORT (the bridge's plain HTTP listener), not \"$1\"." >&2; exit 1 ;;
        esac
        local host=${1#*://}
        host=${host%%/*}
        printf '%s\n' "${host%:*}"
}

# Sets shim and grub to Debian's Microsoft-signed shim and Debian-signed GRUB network image (grubnetx64.efi:
# Debian's GRUB image for disks has no TFTP, so sticks carry it too): the installed shim-signed and
# grub-efi-amd64-signed packages' files, or else these packages downloaded (apt-get download) and unpacked
# in $1, never installed: installing them changes this machine's own boot loader.
signed_loaders() {
        shim=/usr/lib/shim/shimx64.efi.signed
        grub=/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed
        [ -f "$shim" ] && [ -f "$grub" ] && return 0
        if ! (cd "$1" && apt-get download -q shim-signed grub-efi-amd64-signed >/dev/null 2>&1); then
                echo "${0##*/}: cannot download shim-signed and grub-efi-amd64-signed; run apt-get update, or install them." >&2
                exit 1
        fi
        local d
        for d in "$1"/*.deb; do dpkg-deb -x "$d" "$1/root"; done
        shim=$1/root$shim grub=$1/root$grub
}

# GRUB's script that asks the bridge at $1 (a host) by TFTP what the machine whose MAC is in the variable $2
# boots, and runs the answer.
grub_ask_script() {
        echo "echo \"PureBoot: asking $1 what \$$2 boots\""
        echo "source (tftp,$1)/boot/grub/\$$2"
        echo 'echo "PureBoot: the network boot failed (see above); booting from the local disk in 10 s"'
        echo 'sleep 10'
        echo 'exit'
}

# iPXE's script that asks the bridge at $1 (its URL) what this machine boots and chains to the answer; with
# $2 (yes), it starts the network first (on a stick: iPXE did not come from the network).
ipxe_ask_script() {
        echo '#!ipxe'
        echo "# PureBoot: ask the bridge what this machine boots (made by ${0##*/})."
        [ -n "${2:-}" ] && echo 'dhcp || goto failed'
        # ${netX/mac} is the card iPXE booted from (or configured last); ${net0/mac} would be the first card.
        echo "echo PureBoot: asking ${1%/} what \${netX/mac} boots"
        echo "chain --autofree ${1%/}/boot/ipxe?mac=\${netX/mac} || goto failed"
        echo 'exit'
        echo ':failed'
        echo 'echo PureBoot: the network boot failed (see above); booting from the local disk in 10 s'
        echo 'sleep 10'
        echo 'exit'
}
