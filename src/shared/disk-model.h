/* SPDX-License-Identifier: MIT */
/* A disk as a scan saw it, in the shape of the node protocol's Disk, and partition operations applied to
 * it on paper: the controller validates a queue this way before any node touches a disk, and the agent
 * reads the same parameters when it applies them. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "json-util.h"
#include "macro.h"

#define MIB (UINT64_C(1) << 20)

typedef struct PartitionInfo {
        unsigned number;
        uint64_t start, size; /* bytes */
        char *type;           /* GPT type GUID, or the MBR id as "0x83" */
        char *type_name;
        char *filesystem, *label, *uuid, *mountpoint;
        char **flags; /* NULL-terminated */
        uint64_t used, minimum; /* 0: unknown */
        bool can_shrink;
} PartitionInfo;

typedef struct DiskInfo {
        char *device;
        uint64_t size;
        char *model, *serial;
        uint32_t logical_sector_size, physical_sector_size;
        char *table; /* gpt, msdos, none */
        PartitionInfo *partitions; /* by start */
        size_t n_partitions;
} DiskInfo;

/* What PureBoot can do with a filesystem, after the seed's table. */
typedef struct FilesystemKind {
        const char *name;
        bool shrink, grow;
        bool grow_online, shrink_online; /* while mounted */
        bool resize_needs_mount;         /* btrfs and xfs resize only mounted */
} FilesystemKind;

/* A partition type by the name an operator uses, with what it is in each table. */
typedef struct PartitionType {
        const char *name, *guid, *mbr, *description;
} PartitionType;

/* The operations QueueOperation takes, in the order of the varlink enum. */
#define PARTITION_OPERATIONS "resize", "create", "delete", "format", "move", "set_flag", "erase"

void disk_info_done(DiskInfo *d);
/* From a varlink Disk record; -EINVAL names the bad member in *ret_bad (not allocated). */
int disk_info_from_json(json_object *o, DiskInfo *ret, const char **ret_bad);
json_object *disk_info_to_json(const DiskInfo *d);
int disk_info_copy(const DiskInfo *d, DiskInfo *ret);
PartitionInfo *disk_info_partition(const DiskInfo *d, unsigned number);
/* The table as it is laid out (size, sector sizes, table, and each partition's number, place, type and
 * filesystem), hashed: two scans of an unchanged disk give the same fingerprint. */
char *disk_info_fingerprint(const DiskInfo *d);
/* Where partitions may lie: [*ret_first, *ret_end), 1 MiB aligned, inside what the table leaves free. */
void disk_info_usable(const DiskInfo *d, uint64_t *ret_first, uint64_t *ret_end);

const FilesystemKind *filesystem_kind(const char *name);
/* "ext4, xfs, …", for messages. */
const char *filesystem_kinds_list(void);
const PartitionType *partition_type_find(const char *name_or_id);
const PartitionType *partition_type_default(const char *filesystem);
bool partition_flag_is_valid(const char *table, const char *flag);
/* Whether a block device name (sda, nvme0n1, mmcblk0) is a whole disk of the kinds nodes boot from: every
 * one of those is in a machine's inventory, so a disk of these kinds that is not there is not in the
 * machine. */
bool disk_name_is_inventoried(const char *name);
const char *partition_flags_list(const char *table);

/* Applies the operation to d on paper. 0 on success; -EINVAL when a parameter is missing or malformed,
 * -ERANGE when the disk does not allow it (outside, overlapping, below the minimum, not supported by the
 * filesystem or table), in both cases with a sentence for the operator in *ret_message and d unchanged. */
int disk_info_apply(DiskInfo *d, const char *op, json_object *params, char **ret_message);
