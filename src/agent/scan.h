/* SPDX-License-Identifier: MIT */
/* Scanning the node's disks: the table with libparted, types and filesystems with libblkid, and used and
 * minimum sizes from each filesystem's own tools. */
#pragma once

#include <parted/parted.h>

#include "disk-model.h"

/* One disk (a block device, or a disk image file: its filesystems are not measured then), as the node
 * protocol's Disk. */
int scan_disk(const char *path, DiskInfo *ret);
/* Every disk of the node (sd*, nvme*, vd*, mmcblk*), or the devices named, as a JSON array of Disk. */
int scan_disks(char **devices, json_object **ret);
/* The whole disks of the kinds nodes boot from (sd*, nvme*, vd*, xvd*, mmcblk*), not empty, as /dev paths.
 */
int scan_list_disks(char ***ret);
/* Has the kernel take disk's partition table through BLKPG (which works where the kernel parses no tables
 * of its own, and for loop devices): its partitions get their nodes. */
int scan_tell_kernel(const char *disk);
/* The kernel's node for partition number of disk (/dev/sda1, /dev/loop0p1), or NULL if it has none. */
char *partition_node(const char *disk, unsigned number);
/* The same, waiting up to 5 s for udev to make it (after a table was written or told to the kernel). */
char *partition_node_wait(const char *disk, unsigned number);
/* A filesystem's used bytes, minimum size and whether it can shrink, from its tools. node is the partition;
 * a filesystem that is not mounted may be mounted read-only for a moment under a temporary directory. */
int scan_filesystem_usage(PartitionInfo *p, const char *node);

/* libparted asks questions through exceptions: answered here without a terminal, the last message kept. */
void parted_exceptions_init(void);
const char *parted_last_error(void);
/* libparted's FAT resize constraint: the smallest the filesystem in geom can be, in bytes (0 if unknown). */
uint64_t parted_fat_minimum(PedGeometry *geom);
