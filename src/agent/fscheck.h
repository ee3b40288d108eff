/* SPDX-License-Identifier: MIT */
/* After a clone, each filesystem the target wrote is checked by its own tool, read-only: the digests say
 * the copied ranges arrived as they were read; the checks say the filesystems made of them and of what was
 * skipped hold together. */
#pragma once

/* Checks every partition of disk that holds a filesystem with a checker (ext2/3/4, xfs, btrfs, ntfs, vfat,
 * exfat), changing nothing. *ret_verdicts gets a sentence per partition (NULL-terminated); returns how many
 * checks failed (their verdicts say how), or -errno if the disk could not be read. */
int fs_check_disk(const char *disk, char ***ret_verdicts);
