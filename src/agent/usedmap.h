/* SPDX-License-Identifier: MIT */
/* Used-block maps: which byte ranges of a disk its filesystems do not use, so a clone need not copy them.
 * Each partition's map comes from the filesystem's own metadata, as partclone reads it for its own clones
 * (its ddrescue domain log, partclone.<fs> -D); what no map vouches for is copied whole. */
#pragma once

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

#include "disk-model.h"

typedef struct Extent {
        uint64_t offset, length;
} Extent;

typedef struct UsedMap {
        uint64_t size;  /* of the disk */
        Extent *unused; /* sorted, not overlapping: what no filesystem uses */
        size_t n_unused;
        uint64_t unused_bytes;
        char **whole; /* a sentence per partition copied whole, and why (NULL-terminated) */
} UsedMap;

void used_map_done(UsedMap *m);

/* The map of disk (a block device or an image file) whose layout scan found as info. A partition is mapped
 * when its filesystem is one partclone reads (ext2/3/4, xfs, btrfs, ntfs, vfat, exfat) and is not mounted;
 * any other, and one whose map fails to read or does not fit its partition, is copied whole, with a
 * sentence in m->whole. Fails only for lack of memory. */
int used_map_build(const char *disk, const DiskInfo *info, UsedMap *ret);

/* The map of the disk at path as it is now: its layout scanned, then used_map_build(). A disk whose layout
 * cannot be read is copied whole (an empty map, and a sentence saying why). Fails only for lack of memory.
 */
int used_map_of_disk(const char *path, UsedMap *ret);

/* Whether [offset, offset + length) lies wholly in one unused range. */
bool used_map_is_unused(const UsedMap *m, uint64_t offset, uint64_t length);
/* How many bytes from offset on are unused without a break: 0 if offset is used. */
uint64_t used_map_unused_from(const UsedMap *m, uint64_t offset);
/* Zeroes the bytes of buf (the disk's [offset, offset + size)) that no filesystem uses. */
void used_map_clear(const UsedMap *m, uint64_t offset, void *buf, size_t size);
/* Adds an unused range (after the last one, or the map is to be sorted before it is read); -EINVAL if it
 * overlaps the last. */
int used_map_add(UsedMap *m, uint64_t offset, uint64_t length);
/* The unused ranges as [[offset, length], …], and back (appended to m, which they must follow). */
json_object *used_map_extents_to_json(const UsedMap *m);
int used_map_add_json(UsedMap *m, json_object *extents);

/* Parses a ddrescue domain log for the partition at [start, start + size) of the disk (its positions
 * already offset to the disk's), adding the ranges it marks unused ('?') to m. -EBADMSG if it is not one,
 * says nothing is used, or names a range outside the partition. */
int used_map_add_domain_log(UsedMap *m, const char *log, uint64_t start, uint64_t size);

/* What partclone said went wrong (its output): its last line but the one that only says it failed. Points
 * into out. */
const char *partclone_reason(char *out);

/* {"size": N, "unusedBytes": N, "unused": [[offset, length], …], "copiedWhole": [sentence, …]} */
json_object *used_map_to_json(const UsedMap *m);
