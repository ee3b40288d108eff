/* SPDX-License-Identifier: MIT */
/* Used-block maps from partclone. Why partclone and not our own reading of each filesystem: its maps are
 * what Clonezilla restores whole fleets from, for every filesystem we support, kept up to date with them by
 * their own authors' libraries (libext2fs, libxfs, the btrfs, ntfs-3g and fat code); a parser of our own
 * would be a second, less tried reading of on-disk formats, and a wrong map loses data. partclone.<fs> -D
 * reads the filesystem's allocation bitmaps and writes them as a ddrescue domain log: '+' for the ranges the
 * filesystem uses (its metadata included), '?' for the free ones. It refuses a filesystem that is not clean
 * (one that needs fsck): that partition is then copied whole, as is any the map cannot vouch for. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "scan.h"
#include "tool.h"
#include "usedmap.h"
#include "util.h"

void used_map_done(UsedMap *m) {
        free(m->unused);
        strv_free(m->whole);
        *m = (UsedMap){};
}

/* The partclone program that maps fs (as libblkid names it), or NULL. */
static const char *mapper_of(const char *fs) {
        static const char *const mappers[][2] = {
                { "ext2", "partclone.extfs" }, { "ext3", "partclone.extfs" },  { "ext4", "partclone.extfs" },
                { "xfs", "partclone.xfs" },    { "btrfs", "partclone.btrfs" }, { "ntfs", "partclone.ntfs" },
                { "vfat", "partclone.fat" },   { "exfat", "partclone.exfat" },
        };
        for (size_t i = 0; fs && i < ELEMENTSOF(mappers); i++)
                if (streq(mappers[i][0], fs))
                        return mappers[i][1];
        return NULL;
}

int used_map_add(UsedMap *m, uint64_t offset, uint64_t length) {
        Extent *last = m->n_unused > 0 ? &m->unused[m->n_unused - 1] : NULL;
        if (length == 0)
                return 0;
        if (last && offset < last->offset + last->length && last->offset < offset + length)
                return -EINVAL;
        if (last && last->offset + last->length == offset) { /* one range, as the log splits none */
                last->length += length;
                m->unused_bytes += length;
                return 0;
        }
        Extent *e = reallocarray(m->unused, m->n_unused + 1, sizeof(Extent));
        if (!e)
                return -ENOMEM;
        m->unused = e;
        m->unused[m->n_unused++] = (Extent){ offset, length };
        m->unused_bytes += length;
        return 0;
}

int used_map_add_domain_log(UsedMap *m, const char *log, uint64_t start, uint64_t size) {
        size_t n_before = m->n_unused;
        uint64_t bytes_before = m->unused_bytes, end = 0, used = 0;
        bool header = true;
        int r = 0;

        for (const char *line = log; line && *line && r >= 0;) {
                const char *next = strchr(line, '\n');
                size_t len = next ? (size_t) (next - line) : strlen(line);
                unsigned long long pos, length;
                char status;

                if (*line != '#' && len > 0) {
                        if (header) /* the first line after the comments is the current position */
                                header = false;
                        else if (sscanf(line, "%llx %llx %c", &pos, &length, &status) != 3 ||
                                 !strchr("+?", status) || pos < start || pos < end || length > size ||
                                 pos - start > size - length)
                                r = -EBADMSG;
                        else {
                                end = pos + length;
                                if (status == '+')
                                        used += length;
                                else
                                        r = used_map_add(m, pos, length);
                        }
                }
                line = next ? next + 1 : NULL;
        }
        if (r >= 0 && used == 0) /* a filesystem uses its superblock at least: no such log can be right */
                r = -EBADMSG;
        if (r < 0) { /* none of it: the partition is copied whole */
                m->n_unused = n_before;
                m->unused_bytes = bytes_before;
        }
        return r;
}

static int copied_whole(UsedMap *m, const PartitionInfo *p, const char *why, ...) _printf_(3, 4);
static int copied_whole(UsedMap *m, const PartitionInfo *p, const char *why, ...) {
        _cleanup_free_ char *reason = NULL, *sentence = NULL;
        va_list ap;

        va_start(ap, why);
        int r = vasprintf(&reason, why, ap);
        va_end(ap);
        if (r < 0 || asprintf(&sentence, "partition %u%s%s%s is copied whole: %s", p->number,
                              p->filesystem ? " (" : "", strempty(p->filesystem), p->filesystem ? ")" : "",
                              reason) < 0)
                return -ENOMEM;
        log_info("Used-block map: %s.", sentence);
        return strv_extend(&m->whole, sentence);
}

/* What partclone said went wrong: its last line but the one that only says it failed (which points at the
 * log we do not keep). Points into out. */
const char *partclone_reason(char *out) {
        const char *reason = NULL;
        for (char *line = out, *next; line && *line; line = next) {
                next = strchr(line, '\n');
                if (next)
                        *next++ = 0;
                if (*line && !startswith(line, "Partclone fail"))
                        reason = line;
        }
        return reason ?: "it said nothing";
}

/* Maps one partition: its unused ranges added to m, or a sentence in m->whole. */
static int map_partition(UsedMap *m, const char *disk, const PartitionInfo *p) {
        _cleanup_free_ char *node = NULL, *out = NULL, *log = NULL, *offset = NULL;
        const char *mapper = mapper_of(p->filesystem);
        char path[] = "/tmp/pureboot-domain-XXXXXX";
        int r, fd;

        if (!mapper)
                return copied_whole(m, p, "%s",
                                    p->filesystem ? "no map is made of this filesystem"
                                                  : "nothing on it is recognised as a filesystem");
        if (p->mountpoint)
                return copied_whole(m, p, "it is mounted at %s, so its map could change while it is read",
                                    p->mountpoint);
        node = partition_node(disk, p->number);
        if (!node)
                return copied_whole(m, p, "the kernel has no device for it");
        fd = mkstemp(path);
        if (fd < 0)
                return copied_whole(m, p, "no temporary file for its map: %m");
        close(fd);
        if (asprintf(&offset, "--offset_domain=%" PRIu64, p->start) < 0) {
                (void) unlink(path);
                return -ENOMEM;
        }
        /* -O: the temporary file exists; -L: partclone's own log goes nowhere, -q: no progress; -f 0: its
         * progress thread does not hold the exit back for its 2-second refresh. */
        r = tool_runl(&out, mapper, "-D", "-q", "-f", "0", "-s", node, "-O", path, offset, "-L", "/dev/null",
                      NULL);
        if (r == 0)
                r = read_full_file(path, &log, NULL);
        (void) unlink(path);
        if (r == -ENOMEM)
                return r;
        if (r != 0)
                return copied_whole(m, p, "%s -D %s failed: %s", mapper, node,
                                    r > 0 && out ? partclone_reason(out) : strerror(r < 0 ? -r : EIO));
        r = used_map_add_domain_log(m, log, p->start, p->size);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return copied_whole(m, p, "%s wrote a map that does not fit the partition", mapper);
        return 0;
}

static int extent_compare(const void *a, const void *b) {
        const Extent *x = a, *y = b;
        return x->offset < y->offset ? -1 : x->offset > y->offset;
}

int used_map_build(const char *disk, const DiskInfo *info, UsedMap *ret) {
        UsedMap m = { .size = info->size };
        int r;

        for (size_t i = 0; i < info->n_partitions; i++) {
                r = map_partition(&m, disk, &info->partitions[i]);
                if (r < 0) {
                        used_map_done(&m);
                        return r;
                }
        }
        /* Partitions need not lie on the disk in the order of their numbers. */
        if (m.n_unused > 1)
                qsort(m.unused, m.n_unused, sizeof(Extent), extent_compare);
        log_info("Used-block map of %s: %" PRIu64 " of %" PRIu64 " bytes unused in %zu ranges.", disk,
                 m.unused_bytes, m.size, m.n_unused);
        *ret = m;
        return 0;
}

/* The index of the first range that ends after offset (n_unused if none). */
static size_t first_after(const UsedMap *m, uint64_t offset) {
        size_t lo = 0, hi = m->n_unused;
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (m->unused[mid].offset + m->unused[mid].length <= offset)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return lo;
}

uint64_t used_map_unused_from(const UsedMap *m, uint64_t offset) {
        size_t i = first_after(m, offset);
        if (i == m->n_unused || m->unused[i].offset > offset)
                return 0;
        return m->unused[i].offset + m->unused[i].length - offset;
}

int used_map_of_disk(const char *path, UsedMap *ret) {
        _cleanup_(disk_info_done) DiskInfo info = {};
        _cleanup_free_ char *why = NULL;
        int r;

        r = scan_disk(path, &info);
        if (r >= 0)
                return used_map_build(path, &info, ret);
        if (asprintf(&why, "the layout of %s cannot be read (%s), so all of it is copied", path,
                     strerror(-r)) < 0)
                return -ENOMEM;
        log_warning("Used-block map: %s.", why);
        *ret = (UsedMap){};
        return strv_extend(&ret->whole, why);
}

bool used_map_is_unused(const UsedMap *m, uint64_t offset, uint64_t length) {
        return used_map_unused_from(m, offset) >= length;
}

void used_map_clear(const UsedMap *m, uint64_t offset, void *buf, size_t size) {
        uint64_t end = offset + size;
        for (size_t i = first_after(m, offset); i < m->n_unused && m->unused[i].offset < end; i++) {
                uint64_t from = MAX(m->unused[i].offset, offset),
                         to = MIN(m->unused[i].offset + m->unused[i].length, end);
                memset((uint8_t *) buf + (from - offset), 0, (size_t) (to - from));
        }
}

json_object *used_map_extents_to_json(const UsedMap *m) {
        json_object *unused = json_object_new_array();
        for (size_t i = 0; unused && i < m->n_unused; i++) {
                json_object *e = json_object_new_array();
                json_object_array_add(e, json_object_new_int64((int64_t) m->unused[i].offset));
                json_object_array_add(e, json_object_new_int64((int64_t) m->unused[i].length));
                json_object_array_add(unused, e);
        }
        return unused;
}

int used_map_add_json(UsedMap *m, json_object *extents) {
        if (!json_object_is_type(extents, json_type_array))
                return -EBADMSG;
        for (size_t i = 0; i < json_object_array_length(extents); i++) {
                json_object *e = json_object_array_get_idx(extents, i);
                if (!json_object_is_type(e, json_type_array) || json_object_array_length(e) != 2)
                        return -EBADMSG;
                int64_t offset = json_object_get_int64(json_object_array_get_idx(e, 0)),
                        length = json_object_get_int64(json_object_array_get_idx(e, 1));
                if (offset < 0 || length <= 0 || used_map_add(m, (uint64_t) offset, (uint64_t) length) < 0)
                        return -EBADMSG;
        }
        return 0;
}

json_object *used_map_to_json(const UsedMap *m) {
        json_object *o = json_object_new_object(), *unused = used_map_extents_to_json(m),
                    *whole = json_object_new_array();
        if (!o || !unused || !whole) {
                json_object_put(o);
                json_object_put(unused);
                json_object_put(whole);
                return NULL;
        }
        for (char **s = m->whole; s && *s; s++)
                json_object_array_add(whole, json_object_new_string(*s));
        json_object_object_add(o, "size", json_object_new_int64((int64_t) m->size));
        json_object_object_add(o, "unusedBytes", json_object_new_int64((int64_t) m->unused_bytes));
        json_object_object_add(o, "unused", unused);
        json_object_object_add(o, "copiedWhole", whole);
        return o;
}
