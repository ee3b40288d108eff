/* SPDX-License-Identifier: MIT */
/* The GUID partition table's backup copy, moved to the end of a disk of another size than the one the
 * table was made on — what a target needs after a copy, before libparted (which refuses a header that
 * points past the end of the disk) can read the table at all. */
#pragma once

#include <stdint.h>

/* Rewrites the primary header of the GPT on fd (a disk of size bytes with sector-byte sectors) for this
 * size, and writes the backup entries and header at its end; the entries of the partitions numbered in drop
 * are cleared first. 0 if done, 1 if there is no GPT or nothing was to be done; -EUCLEAN with *ret_error
 * when the table is damaged or a partition lies past the end. */
int gpt_relocate_backup(int fd, uint32_t sector, uint64_t size, const unsigned *drop, size_t n_drop,
                        char **ret_error);
