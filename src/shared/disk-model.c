/* SPDX-License-Identifier: MIT */
/* The disk model: varlink Disk records in and out, and partition operations checked and applied on paper. */
#include <ctype.h>
#include <errno.h>
#include <gnutls/crypto.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "disk-model.h"
#include "domain.h"
#include "format.h"
#include "util.h"

static const FilesystemKind filesystems[] = {
        /*  name     shrink grow   grow_on shrink_on needs_mount */
        { "ext4", true, true, true, false, false },
        { "ext3", true, true, true, false, false },
        { "ext2", true, true, false, false, false },
        { "xfs", false, true, true, false, true },
        { "btrfs", true, true, true, true, true },
        { "ntfs", true, true, false, false, false },
        { "vfat", true, true, false, false, false },
        { "swap", true, true, false, false, false }, /* made again with its UUID and label */
};

/* The smallest each mkfs makes without complaint. */
static uint64_t filesystem_minimum_size(const char *fs) {
        return streq(fs, "xfs") ? 300 * MIB : streq(fs, "btrfs") ? 128 * MIB : streq(fs, "vfat") ? 33 * MIB : MIB;
}

static const PartitionType partition_types[] = {
        { "linux", "0fc63daf-8483-4772-8e79-3d69d8477de4", "0x83", "Linux filesystem" },
        { "efi", "c12a7328-f81f-11d2-ba4b-00a0c93ec93b", "0xef", "EFI System" },
        { "swap", "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f", "0x82", "Linux swap" },
        { "msdata", "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7", "0x07", "Microsoft basic data" },
        { "fat32", "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7", "0x0c", "W95 FAT32 (LBA)" },
        { "lvm", "e6d6d379-f507-44c2-a23c-238f2a3df928", "0x8e", "Linux LVM" },
        { "raid", "a19d880f-05fc-4d3b-a006-743f0f84911e", "0xfd", "Linux RAID" },
        { "bios-boot", "21686148-6449-6e6f-744e-656564454649", NULL, "BIOS boot" },
        { "home", "933ac7e1-2eb4-4f13-b844-0e14e2aef915", NULL, "Linux home" },
};

/* libparted's flag names, as each table takes them. */
static const char *const gpt_flags[] = { "boot", "esp", "bios_grub", "legacy_boot", "msftdata", "msftres",
                                         "hidden", "diag", "lvm", "raid", "swap", "irst", "linux-home",
                                         "no_automount", NULL };
static const char *const msdos_flags[] = { "boot", "hidden", "raid", "lvm", "lba", "diag", "esp", "irst",
                                           "prep", NULL };

const FilesystemKind *filesystem_kind(const char *name) {
        if (!name)
                return NULL;
        if (STR_IN_SET(name, "fat32", "fat16", "fat"))
                name = "vfat";
        for (size_t i = 0; i < ELEMENTSOF(filesystems); i++)
                if (streq(filesystems[i].name, name))
                        return &filesystems[i];
        return NULL;
}

const char *filesystem_kinds_list(void) {
        return "ext4, ext3, ext2, xfs, btrfs, ntfs, vfat, swap";
}

const PartitionType *partition_type_find(const char *s) {
        if (!s)
                return NULL;
        for (size_t i = 0; i < ELEMENTSOF(partition_types); i++) {
                const PartitionType *t = &partition_types[i];
                if (streq(t->name, s) || strcaseeq_ptr(t->guid, s) || strcaseeq_ptr(t->mbr, s))
                        return t;
        }
        return NULL;
}

const PartitionType *partition_type_default(const char *fs) {
        return partition_type_find(streq_ptr(fs, "swap")                    ? "swap"
                                   : fs && STR_IN_SET(fs, "vfat", "fat32") ? "fat32"
                                   : streq_ptr(fs, "ntfs")                  ? "msdata"
                                                                            : "linux");
}

bool disk_name_is_inventoried(const char *name) {
        if (!name)
                return false;
        if (startswith(name, "mmcblk"))
                return !strstr(name, "boot") && !strstr(name, "rpmb") && !strchr(name, 'p');
        if (startswith(name, "nvme"))
                return !strchr(name + 4, 'p');
        return (startswith(name, "sd") || startswith(name, "vd") || startswith(name, "xvd")) &&
               !isdigit((unsigned char) name[strlen(name) - 1]);
}

bool partition_flag_is_valid(const char *table, const char *flag) {
        return flag && strv_contains(streq_ptr(table, "msdos") ? msdos_flags : gpt_flags, flag);
}

const char *partition_flags_list(const char *table) {
        return streq_ptr(table, "msdos") ? "boot, hidden, raid, lvm, lba, diag, esp, irst, prep"
                                         : "boot, esp, bios_grub, legacy_boot, msftdata, msftres, hidden, diag, "
                                           "lvm, raid, swap, irst, linux-home, no_automount";
}

static void partition_info_done(PartitionInfo *p) {
        free(p->type);
        free(p->type_name);
        free(p->filesystem);
        free(p->label);
        free(p->uuid);
        free(p->mountpoint);
        strv_free(p->flags);
        *p = (PartitionInfo){};
}

void disk_info_done(DiskInfo *d) {
        free(d->device);
        free(d->model);
        free(d->serial);
        free(d->table);
        for (size_t i = 0; i < d->n_partitions; i++)
                partition_info_done(&d->partitions[i]);
        free(d->partitions);
        *d = (DiskInfo){};
}

static int dup_member(json_object *o, const char *key, char **ret) {
        const char *s = json_get_string(o, key);
        *ret = NULL;
        if (!s)
                return 0;
        *ret = strdup(s);
        return *ret ? 0 : -ENOMEM;
}

static bool get_u64(json_object *o, const char *key, uint64_t *ret) {
        json_object *v;
        if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int) ||
            json_object_get_int64(v) < 0)
                return false;
        *ret = (uint64_t) json_object_get_int64(v);
        return true;
}

static int partition_from_json(json_object *o, PartitionInfo *p, const char **bad) {
        json_object *flags, *v;
        uint64_t n;
        int r;

        if (!json_object_is_type(o, json_type_object))
                return *bad = "partitions", -EINVAL;
        if (!get_u64(o, "number", &n) || n == 0 || n > 256)
                return *bad = "number", -EINVAL;
        p->number = (unsigned) n;
        if (!get_u64(o, "startBytes", &p->start))
                return *bad = "startBytes", -EINVAL;
        if (!get_u64(o, "sizeBytes", &p->size) || p->size == 0)
                return *bad = "sizeBytes", -EINVAL;
        if (!json_get_string(o, "type"))
                return *bad = "type", -EINVAL;
        if ((r = dup_member(o, "type", &p->type)) < 0 || (r = dup_member(o, "typeName", &p->type_name)) < 0 ||
            (r = dup_member(o, "filesystem", &p->filesystem)) < 0 || (r = dup_member(o, "label", &p->label)) < 0 ||
            (r = dup_member(o, "uuid", &p->uuid)) < 0 || (r = dup_member(o, "mountpoint", &p->mountpoint)) < 0)
                return r;
        (void) get_u64(o, "usedBytes", &p->used);
        (void) get_u64(o, "minimumBytes", &p->minimum);
        p->can_shrink = json_object_object_get_ex(o, "canShrink", &v) && json_object_get_boolean(v);
        p->flags = strv_new(NULL);
        if (!p->flags)
                return -ENOMEM;
        if (json_object_object_get_ex(o, "flags", &flags) && json_object_is_type(flags, json_type_array))
                for (size_t i = 0; i < json_object_array_length(flags); i++) {
                        const char *f = json_object_get_string(json_object_array_get_idx(flags, i));
                        if (f && strv_extend(&p->flags, f) < 0)
                                return -ENOMEM;
                }
        return 0;
}

static int compare_start(const void *a, const void *b) {
        const PartitionInfo *x = a, *y = b;
        return x->start < y->start ? -1 : x->start > y->start;
}

int disk_info_from_json(json_object *o, DiskInfo *ret, const char **ret_bad) {
        _cleanup_(disk_info_done) DiskInfo d = {};
        const char *bad = NULL, *table = json_get_string(o, "table");
        json_object *parts;
        uint64_t v;
        int r;

        if (!device_path_is_valid(json_get_string(o, "device")))
                bad = "device";
        else if (!get_u64(o, "sizeBytes", &d.size) || d.size == 0)
                bad = "sizeBytes";
        else if (!get_u64(o, "logicalSectorSize", &v) || v < 512 || v > 65536 || (v & (v - 1)))
                bad = "logicalSectorSize";
        else if ((d.logical_sector_size = (uint32_t) v), !get_u64(o, "physicalSectorSize", &v) || v < 512 ||
                 v > 65536)
                bad = "physicalSectorSize";
        else if (!table || !STR_IN_SET(table, "gpt", "msdos", "none"))
                bad = "table";
        else if (!json_object_object_get_ex(o, "partitions", &parts) || !json_object_is_type(parts, json_type_array))
                bad = "partitions";
        if (bad) {
                *ret_bad = bad;
                return -EINVAL;
        }
        d.physical_sector_size = (uint32_t) v;
        if ((r = dup_member(o, "device", &d.device)) < 0 || (r = dup_member(o, "model", &d.model)) < 0 ||
            (r = dup_member(o, "serial", &d.serial)) < 0 || (r = dup_member(o, "table", &d.table)) < 0)
                return r;
        size_t n = json_object_array_length(parts);
        d.partitions = calloc(n ?: 1, sizeof(PartitionInfo));
        if (!d.partitions)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                d.n_partitions++;
                r = partition_from_json(json_object_array_get_idx(parts, i), &d.partitions[i], ret_bad);
                if (r < 0)
                        return r;
                if (d.partitions[i].start + d.partitions[i].size > d.size)
                        return *ret_bad = "partitions", -EINVAL;
        }
        qsort(d.partitions, d.n_partitions, sizeof(PartitionInfo), compare_start);
        *ret = d;
        d = (DiskInfo){};
        return 0;
}

static json_object *string_or_null(const char *s) {
        return s ? json_object_new_string(s) : NULL;
}

static json_object *partition_to_json(const PartitionInfo *p) {
        json_object *o = json_object_new_object(), *flags = json_object_new_array();
#define ADD(k, v) json_object_object_add(o, k, v)
        ADD("number", json_object_new_int((int) p->number));
        ADD("startBytes", json_object_new_int64((int64_t) p->start));
        ADD("sizeBytes", json_object_new_int64((int64_t) p->size));
        ADD("type", json_object_new_string(strempty(p->type)));
        ADD("typeName", string_or_null(p->type_name));
        ADD("filesystem", string_or_null(p->filesystem));
        ADD("label", string_or_null(p->label));
        ADD("uuid", string_or_null(p->uuid));
        STRV_FOREACH (f, p->flags)
                json_object_array_add(flags, json_object_new_string(*f));
        ADD("flags", flags);
        ADD("mountpoint", string_or_null(p->mountpoint));
        ADD("usedBytes", p->used ? json_object_new_int64((int64_t) p->used) : NULL);
        ADD("minimumBytes", p->minimum ? json_object_new_int64((int64_t) p->minimum) : NULL);
        ADD("canShrink", json_object_new_boolean(p->can_shrink));
#undef ADD
        return o;
}

json_object *disk_info_to_json(const DiskInfo *d) {
        json_object *o = json_object_new_object(), *parts = json_object_new_array();
        json_object_object_add(o, "device", json_object_new_string(d->device));
        json_object_object_add(o, "sizeBytes", json_object_new_int64((int64_t) d->size));
        json_object_object_add(o, "model", string_or_null(d->model));
        json_object_object_add(o, "serial", string_or_null(d->serial));
        json_object_object_add(o, "logicalSectorSize", json_object_new_int((int) d->logical_sector_size));
        json_object_object_add(o, "physicalSectorSize", json_object_new_int((int) d->physical_sector_size));
        json_object_object_add(o, "table", json_object_new_string(strempty(d->table)));
        for (size_t i = 0; i < d->n_partitions; i++)
                json_object_array_add(parts, partition_to_json(&d->partitions[i]));
        json_object_object_add(o, "partitions", parts);
        return o;
}

int disk_info_copy(const DiskInfo *d, DiskInfo *ret) {
        _cleanup_(json_object_unrefp) json_object *o = disk_info_to_json(d);
        const char *bad;
        return o ? disk_info_from_json(o, ret, &bad) : -ENOMEM;
}

PartitionInfo *disk_info_partition(const DiskInfo *d, unsigned number) {
        for (size_t i = 0; i < d->n_partitions; i++)
                if (d->partitions[i].number == number)
                        return &d->partitions[i];
        return NULL;
}

char *disk_info_fingerprint(const DiskInfo *d) {
        _cleanup_free_ char *text = NULL;
        uint8_t digest[32];

        if (strextend_printf(&text, "%" PRIu64 " %u %u %s\n", d->size, d->logical_sector_size,
                             d->physical_sector_size, strempty(d->table)) < 0)
                return NULL;
        for (size_t i = 0; i < d->n_partitions; i++) {
                const PartitionInfo *p = &d->partitions[i];
                if (strextend_printf(&text, "%u %" PRIu64 " %" PRIu64 " %s %s\n", p->number, p->start, p->size,
                                     strempty(p->type), strempty(p->filesystem)) < 0)
                        return NULL;
        }
        if (gnutls_hash_fast(GNUTLS_DIG_SHA256, text, strlen(text), digest) < 0)
                return NULL;
        return hexmem(digest, 16);
}

void disk_info_usable(const DiskInfo *d, uint64_t *ret_first, uint64_t *ret_end) {
        uint64_t end = d->size;
        if (streq_ptr(d->table, "gpt") || streq_ptr(d->table, "none"))
                end -= MIN(end, d->logical_sector_size + UINT64_C(16384)); /* backup header and entries */
        else if (streq_ptr(d->table, "msdos"))
                end = MIN(end, (UINT64_C(1) << 32) * d->logical_sector_size);
        *ret_first = MIB;
        *ret_end = end / MIB * MIB;
}

/* Refuses with a sentence; returns err. */
_printf_(3, 4) static int refuse(char **ret_message, int err, const char *format, ...) {
        va_list ap;
        va_start(ap, format);
        if (vasprintf(ret_message, format, ap) < 0)
                *ret_message = NULL;
        va_end(ap);
        return *ret_message ? err : -ENOMEM;
}

static bool param_u64(json_object *params, const char *key, uint64_t *ret) {
        json_object *v;
        if (!json_object_object_get_ex(params, key, &v) ||
            !(json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_string)))
                return false;
        /* D-Bus callers send numbers; purebootctl may send "10G"-free plain integers as strings. */
        errno = 0;
        int64_t i = json_object_get_int64(v);
        if (errno != 0 || i < 0)
                return false;
        *ret = (uint64_t) i;
        return true;
}

static int partition_param(DiskInfo *d, json_object *params, PartitionInfo **ret, char **msg) {
        uint64_t n;
        if (!param_u64(params, "partition", &n) || n == 0)
                return refuse(msg, -EINVAL, "The parameter \"partition\" (the partition's number) is missing.");
        *ret = n <= UINT_MAX ? disk_info_partition(d, (unsigned) n) : NULL;
        if (!*ret)
                return refuse(msg, -ERANGE, "%s has no partition %" PRIu64 "; it has %zu (see purebootctl disk "
                              "show).", d->device, n, d->n_partitions);
        return 0;
}

/* The first partition other than skip that [start, end) overlaps, or NULL. */
static const PartitionInfo *overlapping(const DiskInfo *d, const PartitionInfo *skip, uint64_t start, uint64_t end) {
        for (size_t i = 0; i < d->n_partitions; i++) {
                const PartitionInfo *p = &d->partitions[i];
                if (p != skip && start < p->start + p->size && p->start < end)
                        return p;
        }
        return NULL;
}

/* The end the partition (or a new one at start) may reach: the next partition's start or the usable end. */
static uint64_t room_until(const DiskInfo *d, const PartitionInfo *skip, uint64_t start) {
        uint64_t first, end;
        disk_info_usable(d, &first, &end);
        for (size_t i = 0; i < d->n_partitions; i++) {
                const PartitionInfo *p = &d->partitions[i];
                if (p != skip && p->start >= start)
                        end = MIN(end, p->start);
        }
        return end;
}

/* The range must lie in the usable area, 1 MiB aligned, and overlap nothing else. */
static int check_range(DiskInfo *d, const PartitionInfo *skip, const char *what, uint64_t start, uint64_t size,
                       char **msg) {
        uint64_t first, end;
        const PartitionInfo *o;

        disk_info_usable(d, &first, &end);
        if (start % MIB != 0 || size % MIB != 0)
                return refuse(msg, -ERANGE, "%s must start and end on 1 MiB boundaries (start %" PRIu64
                              ", size %" PRIu64 " bytes); round to a multiple of 1048576.", what, start, size);
        if (start < first || start + size > end || start + size < start)
                return refuse(msg, -ERANGE, "%s (%s at %s) does not fit on %s: partitions may lie between %s and "
                              "%s.", what, FORMAT_BYTES(size), FORMAT_BYTES(start), d->device, FORMAT_BYTES(first),
                              FORMAT_BYTES(end));
        o = overlapping(d, skip, start, start + size);
        if (o) {
                uint64_t room = room_until(d, skip, start);
                if (room > start && !overlapping(d, skip, start, room))
                        return refuse(msg, -ERANGE, "%s would overlap partition %u (%s–%s); %s fit%s there.", what,
                                      o->number, FORMAT_BYTES(o->start), FORMAT_BYTES(o->start + o->size),
                                      FORMAT_BYTES(room - start), room - start == 1 ? "s" : "");
                return refuse(msg, -ERANGE, "%s would overlap partition %u (%s–%s).", what, o->number,
                              FORMAT_BYTES(o->start), FORMAT_BYTES(o->start + o->size));
        }
        return 0;
}

static int check_unmounted(const PartitionInfo *p, const char *verb, char **msg) {
        if (p->mountpoint)
                return refuse(msg, -ERANGE, "Partition %u is mounted at %s; it cannot be %s while mounted. Boot the "
                              "node into partition mode (purebootctl node set-mode NODE partition).", p->number,
                              p->mountpoint, verb);
        return 0;
}

static int check_filesystem_name(const DiskInfo *d, const char *fs, uint64_t size, char **msg) {
        if (!filesystem_kind(fs))
                return refuse(msg, -ERANGE, "PureBoot makes %s, not \"%s\".", filesystem_kinds_list(), fs);
        if (size < filesystem_minimum_size(filesystem_kind(fs)->name))
                return refuse(msg, -ERANGE, "%s needs at least %s; the partition on %s has %s.", fs,
                              FORMAT_BYTES(filesystem_minimum_size(filesystem_kind(fs)->name)), d->device,
                              FORMAT_BYTES(size));
        return 0;
}

static int apply_resize(DiskInfo *d, json_object *params, char **msg) {
        PartitionInfo *p;
        uint64_t new_size;
        int r = partition_param(d, params, &p, msg);
        if (r < 0)
                return r;
        if (!param_u64(params, "new_size_bytes", &new_size) || new_size == 0)
                return refuse(msg, -EINVAL, "The parameter \"new_size_bytes\" is missing.");
        if ((p->start + new_size) % MIB != 0)
                return refuse(msg, -ERANGE, "Partition %u would end off a 1 MiB boundary; ask for %s or %s.",
                              p->number, FORMAT_BYTES((p->start + new_size) / MIB * MIB - p->start),
                              FORMAT_BYTES((p->start + new_size + MIB - 1) / MIB * MIB - p->start));
        if (new_size == p->size)
                return refuse(msg, -ERANGE, "Partition %u is %s already.", p->number, FORMAT_BYTES(new_size));

        const FilesystemKind *k = filesystem_kind(p->filesystem);
        bool grow = new_size > p->size;
        if (p->filesystem && !k)
                return refuse(msg, -ERANGE, "Partition %u holds %s, which PureBoot does not resize (it resizes %s).",
                              p->number, p->filesystem, filesystem_kinds_list());
        if (k && !(grow ? k->grow : k->shrink))
                return refuse(msg, -ERANGE, "Partition %u holds %s, which cannot %s; only %s.", p->number, k->name,
                              grow ? "grow" : "shrink", grow ? "shrinking is possible" : "growing is possible");
        if (p->mountpoint && !(k && (grow ? k->grow_online : k->shrink_online)))
                return refuse(msg, -ERANGE, "Partition %u is mounted at %s and %s %s only unmounted. Boot the node "
                              "into partition mode (purebootctl node set-mode NODE partition).", p->number,
                              p->mountpoint, k ? k->name : "a partition without a filesystem",
                              grow ? "grows" : "shrinks");
        if (grow) {
                uint64_t room = room_until(d, p, p->start), first, end;
                disk_info_usable(d, &first, &end);
                if (p->start + new_size > room)
                        return refuse(msg, -ERANGE, "Partition %u can grow to %s at most (up to %s); %s asked.",
                                      p->number, FORMAT_BYTES(room - p->start),
                                      room == end ? "the end of the disk" : "the next partition",
                                      FORMAT_BYTES(new_size));
        } else if (k) {
                if (!p->can_shrink || p->minimum == 0)
                        return refuse(msg, -ERANGE, "Partition %u (%s) cannot shrink: %s.", p->number, k->name,
                                      p->minimum == 0 ? "its minimum size is not known; apply what is queued and scan "
                                                        "again"
                                                      : "the scan found it not shrinkable (check it with fsck)");
                if (new_size < p->minimum)
                        return refuse(msg, -ERANGE, "Partition %u can shrink to %s at least; %s asked.", p->number,
                                      FORMAT_BYTES(p->minimum), FORMAT_BYTES(new_size));
        }
        p->size = new_size;
        return 0;
}

static int next_number(const DiskInfo *d) {
        unsigned max = streq_ptr(d->table, "msdos") ? 4 : 128;
        for (unsigned n = 1; n <= max; n++)
                if (!disk_info_partition(d, n))
                        return (int) n;
        return -ENOSPC;
}

static int apply_create(DiskInfo *d, json_object *params, char **msg) {
        const char *type_name = json_get_string(params, "type"), *fs = json_get_string(params, "filesystem"),
                   *label = json_get_string(params, "label"), *table = json_get_string(params, "table");
        uint64_t start, size;
        const PartitionType *type;
        int number, r;

        if (!param_u64(params, "start_bytes", &start) || !param_u64(params, "size_bytes", &size) || size == 0)
                return refuse(msg, -EINVAL, "Creating a partition needs \"start_bytes\" and \"size_bytes\".");
        if (isempty(fs) || streq(fs, "none"))
                fs = NULL;
        if (fs && (r = check_filesystem_name(d, fs, size, msg)) < 0)
                return r;
        if (label && strlen(label) > 36)
                return refuse(msg, -ERANGE, "The label \"%s\" is longer than 36 characters.", label);
        if (streq(d->table, "none")) {
                /* A blank disk gets a table with its first partition: GPT unless msdos is asked for. */
                table = table ?: "gpt";
                if (!STR_IN_SET(table, "gpt", "msdos"))
                        return refuse(msg, -ERANGE, "A partition table is gpt or msdos, not \"%s\".", table);
                if (free_and_strdup(&d->table, table) < 0)
                        return -ENOMEM;
        } else if (table && !streq(table, d->table))
                return refuse(msg, -ERANGE, "%s has a %s table already; delete its partitions and format it "
                              "elsewhere to change the table type.", d->device, d->table);
        type = type_name ? partition_type_find(type_name) : partition_type_default(fs);
        if (!type || (streq(d->table, "msdos") ? !type->mbr : !type->guid))
                return refuse(msg, -ERANGE, "\"%s\" is not a partition type PureBoot makes on %s tables; use linux, "
                              "efi, swap, msdata, fat32, lvm, raid%s.", strna(type_name), d->table,
                              streq(d->table, "msdos") ? "" : ", bios-boot or home");
        r = check_range(d, NULL, "The new partition", start, size, msg);
        if (r < 0)
                return r;
        number = next_number(d);
        if (number < 0)
                return refuse(msg, -ERANGE, "%s holds %s partitions already; PureBoot makes primary partitions "
                              "only, so use a GPT disk for more.", d->device, streq(d->table, "msdos") ? "4" : "128");

        PartitionInfo *a = reallocarray(d->partitions, d->n_partitions + 1, sizeof(PartitionInfo));
        if (!a)
                return -ENOMEM;
        d->partitions = a;
        PartitionInfo *p = &d->partitions[d->n_partitions];
        *p = (PartitionInfo){ .number = (unsigned) number, .start = start, .size = size };
        d->n_partitions++;
        p->type = strdup(streq(d->table, "msdos") ? type->mbr : type->guid);
        p->type_name = strdup(type->description);
        p->flags = strv_new(NULL);
        if (!p->type || !p->type_name || !p->flags || (fs && !(p->filesystem = strdup(filesystem_kind(fs)->name))) ||
            (label && !(p->label = strdup(label))))
                return -ENOMEM;
        qsort(d->partitions, d->n_partitions, sizeof(PartitionInfo), compare_start);
        return 0;
}

static int apply_delete(DiskInfo *d, json_object *params, char **msg) {
        PartitionInfo *p;
        int r = partition_param(d, params, &p, msg);
        if (r >= 0)
                r = check_unmounted(p, "deleted", msg);
        if (r < 0)
                return r;
        size_t i = (size_t) (p - d->partitions);
        partition_info_done(p);
        memmove(p, p + 1, (d->n_partitions - i - 1) * sizeof(PartitionInfo));
        d->n_partitions--;
        return 0;
}

static int apply_format(DiskInfo *d, json_object *params, char **msg) {
        const char *fs = json_get_string(params, "filesystem"), *label = json_get_string(params, "label");
        PartitionInfo *p;
        int r = partition_param(d, params, &p, msg);
        if (r < 0)
                return r;
        if (isempty(fs))
                return refuse(msg, -EINVAL, "Formatting needs \"filesystem\" (one of %s).", filesystem_kinds_list());
        if ((r = check_filesystem_name(d, fs, p->size, msg)) < 0 || (r = check_unmounted(p, "formatted", msg)) < 0)
                return r;
        if (label && strlen(label) > 36)
                return refuse(msg, -ERANGE, "The label \"%s\" is longer than 36 characters.", label);
        free(p->uuid);
        p->uuid = NULL;
        p->used = p->minimum = 0;
        p->can_shrink = false;
        if (free_and_strdup(&p->filesystem, filesystem_kind(fs)->name) < 0 ||
            (label ? free_and_strdup(&p->label, label) : (free(p->label), p->label = NULL, 0)) < 0)
                return -ENOMEM;
        return 0;
}

static int apply_move(DiskInfo *d, json_object *params, char **msg) {
        PartitionInfo *p;
        uint64_t new_start;
        int r = partition_param(d, params, &p, msg);
        if (r < 0)
                return r;
        if (!param_u64(params, "new_start_bytes", &new_start))
                return refuse(msg, -EINVAL, "Moving needs \"new_start_bytes\".");
        if (new_start == p->start)
                return refuse(msg, -ERANGE, "Partition %u starts at %s already.", p->number, FORMAT_BYTES(new_start));
        if ((r = check_unmounted(p, "moved", msg)) < 0)
                return r;
        if (p->size % MIB != 0)
                return refuse(msg, -ERANGE, "Partition %u is not a whole number of MiB (%" PRIu64 " bytes); resize "
                              "it first.", p->number, p->size);
        r = check_range(d, p, "The moved partition", new_start, p->size, msg);
        if (r < 0)
                return r;
        p->start = new_start;
        qsort(d->partitions, d->n_partitions, sizeof(PartitionInfo), compare_start);
        return 0;
}

static int apply_set_flag(DiskInfo *d, json_object *params, char **msg) {
        const char *flag = json_get_string(params, "flag");
        json_object *value;
        PartitionInfo *p;
        int r = partition_param(d, params, &p, msg);
        if (r < 0)
                return r;
        if (!flag || !json_object_object_get_ex(params, "value", &value) ||
            !json_object_is_type(value, json_type_boolean))
                return refuse(msg, -EINVAL, "Setting a flag needs \"flag\" and \"value\" (true or false).");
        if (!partition_flag_is_valid(d->table, flag))
                return refuse(msg, -ERANGE, "\"%s\" is not a flag of %s tables; they have %s.", flag, d->table,
                              partition_flags_list(d->table));
        if (json_object_get_boolean(value))
                return strv_contains((const char *const *) p->flags, flag) ? 0 : strv_extend(&p->flags, flag);
        strv_remove(p->flags, flag);
        return 0;
}

/* The whole disk, every byte: afterwards it has no table and no partition. A mounted partition (the node's
 * own root, say) refuses it. */
static int apply_erase(DiskInfo *d, json_object *params, char **msg) {
        const char *method = json_get_string(params, "method");
        int r;

        if (!method)
                return refuse(msg, -EINVAL, "Erasing needs \"method\": discard, zero or secure.");
        if (erase_method_from_string(method) < 0)
                return refuse(msg, -EINVAL,
                              "\"%.40s\" is not an erase method; use discard, zero or secure: every block "
                              "discarded, every block written with zeros, or the drive's own secure erase.",
                              method);
        for (size_t i = 0; i < d->n_partitions; i++)
                if ((r = check_unmounted(&d->partitions[i], "erased", msg)) < 0)
                        return r;
        for (size_t i = 0; i < d->n_partitions; i++)
                partition_info_done(&d->partitions[i]);
        d->partitions = mfree(d->partitions);
        d->n_partitions = 0;
        return free_and_strdup(&d->table, "none") < 0 ? -ENOMEM : 0;
}

/* A parameter the operation does not take is refused, not stored: it would be silently ignored. */
static int check_param_names(const char *op, json_object *params, const char *const *known, char **msg) {
        json_object_object_foreach (params, key, value) {
                _cleanup_free_ char *list = NULL;
                (void) value;
                if (strv_contains(known, key))
                        continue;
                for (const char *const *k = known; *k; k++)
                        if (strextend_printf(&list, "%s%s", list ? ", " : "", *k) < 0)
                                return -ENOMEM;
                return refuse(msg, -EINVAL, "%s takes no parameter \"%.64s\"; it takes %s.", op, key, list);
        }
        return 0;
}

int disk_info_apply(DiskInfo *d, const char *op, json_object *params, char **ret_message) {
        static const struct {
                const char *name;
                int (*apply)(DiskInfo *d, json_object *params, char **msg);
                const char *const params[7];
        } ops[] = {
                { "resize", apply_resize, { "partition", "new_size_bytes" } },
                { "create",
                  apply_create,
                  { "start_bytes", "size_bytes", "type", "filesystem", "label", "table" } },
                { "delete", apply_delete, { "partition" } },
                { "format", apply_format, { "partition", "filesystem", "label" } },
                { "move", apply_move, { "partition", "new_start_bytes" } },
                { "set_flag", apply_set_flag, { "partition", "flag", "value" } },
                { "erase", apply_erase, { "method" } },
        };
        _cleanup_(disk_info_done) DiskInfo copy = {};
        int r;

        *ret_message = NULL;
        if (!json_object_is_type(params, json_type_object))
                return refuse(ret_message, -EINVAL, "The parameters are not an object.");
        if (streq(d->table, "none") && !streq(op, "create") && !streq(op, "erase"))
                return refuse(ret_message, -ERANGE, "%s has no partition table; create a partition first (it makes "
                              "the table).", d->device);
        for (size_t i = 0; i < ELEMENTSOF(ops); i++) {
                if (!streq(ops[i].name, op))
                        continue;
                r = check_param_names(op, params, ops[i].params, ret_message);
                if (r < 0)
                        return r;
                /* On a copy, so that a refusal half-way leaves d as it was. */
                r = disk_info_copy(d, &copy);
                if (r < 0)
                        return r;
                r = ops[i].apply(&copy, params, ret_message);
                if (r < 0)
                        return r;
                disk_info_done(d);
                *d = copy;
                copy = (DiskInfo){};
                return 0;
        }
        return refuse(ret_message, -EINVAL,
                      "\"%s\" is not an operation; use resize, create, delete, format, move, "
                      "set_flag or erase.",
                      op);
}
