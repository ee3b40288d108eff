/* SPDX-License-Identifier: MIT */
/* Disks of the machine purebootctl runs on, through udisks2. */
#pragma once

#include <stdbool.h>

/* Opens device (/dev/sdb) through udisks2's Block.OpenForBackup (to read) or OpenForRestore (to write it
 * whole), as udisks2's polkit rules allow the caller: *ret_fd is the open disk. On failure -errno and
 * *ret_why, what to tell the user (free() it). */
int udisks_open_disk(const char *device, bool restore, bool interactive, int *ret_fd, char **ret_why);
