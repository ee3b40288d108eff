/* SPDX-License-Identifier: MIT */
/* A clone's boot entry in a UEFI machine's NVRAM (efi-boot.c). */
#pragma once

/* On a UEFI machine, makes (or finds) the Boot#### entry for the OS loader on disk's EFI system partition
 * and puts it first in BootOrder after the network entries. *ret_summary says what was done, or why nothing
 * was (no UEFI, no loader); an entry that cannot be made is an error, with why in *ret_error. */
int efi_boot_entry_ensure(const char *disk, char **ret_summary, char **ret_error);
