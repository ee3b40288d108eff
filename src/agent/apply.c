/* SPDX-License-Identifier: MIT */
/* One partition operation, with its undo. Before anything is written the table's sectors are saved (the
 * MBR, or both GPT headers with their entries) and, for a move, the bytes the partition will land on; a
 * failure writes them back and has the kernel read the table again. Filesystems are resized by their own
 * tools on the partition's node: shrunk before the partition is, grown after. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "apply.h"
#include "device.h"
#include "disk-model.h"
#include "format.h"
#include "journal.h"
#include "log.h"
#include "scan.h"
#include "tool.h"
#include "util.h"

#define COPY_BLOCK (4U * 1024 * 1024)

typedef struct Region {
        uint64_t offset, size;
        uint8_t *data; /* in memory: table sectors */
        char *file;    /* on disk: what a move overwrites */
} Region;

/* Everything one operation needs: the disk through libparted and through a plain descriptor, and the undo. */
typedef struct Job {
        const char *device, *scratch_dir, *id;
        json_object *params;
        PedDevice *dev;
        PedDisk *disk;
        int fd;
        uint64_t sector;
        Region saved[3];
        size_t n_saved;
        char *error;
} Job;

/* Records what failed, for the operator; returns -EIO (or r if it is an errno). */
_printf_(3, 4) static int job_fail(Job *j, int r, const char *format, ...) {
        va_list ap;
        if (j->error)
                return r < 0 ? r : -EIO;
        va_start(ap, format);
        if (vasprintf(&j->error, format, ap) < 0)
                j->error = NULL;
        va_end(ap);
        log_error("%s", strna(j->error));
        return r < 0 ? r : -EIO;
}

static int save_sectors(Job *j, uint64_t offset, uint64_t size) {
        Region *r = &j->saved[j->n_saved];
        r->data = malloc(size);
        if (!r->data)
                return -ENOMEM;
        r->offset = offset;
        r->size = size;
        j->n_saved++;
        return pread_full(j->fd, r->data, size, offset);
}

/* The table's own sectors: the MBR; for GPT also the primary header and entries and the backup ones at
 * the end. A blank disk's first and last sectors are saved too, as creating the table writes there. */
static int save_table(Job *j, const char *table) {
        uint64_t size = (uint64_t) j->dev->length * j->sector, gpt = j->sector + 16384;
        int r = save_sectors(j, 0, streq(table, "msdos") ? j->sector : j->sector + gpt);
        if (r >= 0 && !streq(table, "msdos"))
                r = save_sectors(j, size - gpt, gpt);
        return r;
}

/* What a move will overwrite: saved to a file, since it may be large. */
static int save_to_file(Job *j, uint64_t offset, uint64_t size) {
        Region *r = &j->saved[j->n_saved];
        _cleanup_free_ uint8_t *buf = malloc(COPY_BLOCK);
        _cleanup_close_ int out = -EBADF;

        if (!buf || asprintf(&r->file, "%s/move-undo.bin", j->scratch_dir) < 0)
                return -ENOMEM;
        r->offset = offset;
        r->size = size;
        j->n_saved++;
        out = open(r->file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (out < 0)
                return -errno;
        for (uint64_t done = 0; done < size;) {
                size_t n = (size_t) MIN((uint64_t) COPY_BLOCK, size - done);
                int e = pread_full(j->fd, buf, n, offset + done);
                if (e >= 0)
                        e = pwrite_full(out, buf, n, done);
                if (e < 0)
                        return e;
                done += n;
        }
        return fsync(out) < 0 ? -errno : 0;
}

static int restore_region(Job *j, Region *r) {
        _cleanup_free_ uint8_t *buf = NULL;
        _cleanup_close_ int in = -EBADF;

        if (r->data)
                return pwrite_full(j->fd, r->data, r->size, r->offset);
        if (!(buf = malloc(COPY_BLOCK)) || (in = open(r->file, O_RDONLY | O_CLOEXEC)) < 0)
                return buf ? -errno : -ENOMEM;
        for (uint64_t done = 0; done < r->size;) {
                size_t n = (size_t) MIN((uint64_t) COPY_BLOCK, r->size - done);
                int e = pread_full(in, buf, n, done);
                if (e >= 0)
                        e = pwrite_full(j->fd, buf, n, r->offset + done);
                if (e < 0)
                        return e;
                done += n;
        }
        return 0;
}

/* The kernel's partitions from the table on the disk, through BLKPG (which works where the kernel has no
 * table parsers of its own, and for loop devices). */
static int sync_kernel(Job *j) {
        PedDisk *disk;
        int ok;

        if (j->disk) {
                ped_disk_destroy(j->disk);
                j->disk = NULL;
        }
        disk = ped_disk_new(j->dev);
        if (!disk) { /* no table any more: nothing for the kernel to know */
                (void) ioctl(j->fd, BLKRRPART, 0);
                return 0;
        }
        ok = ped_disk_commit_to_os(disk);
        ped_disk_destroy(disk);
        return ok ? 0 : -EIO;
}

/* Puts back what the operation changed, and says so after the operation's error: its report shows it. */
static void rollback(Job *j) {
        const char *sep = j->error && !endswith(j->error, ".") ? "." : "";
        int r = 0;
        for (size_t i = j->n_saved; i > 0; i--) {
                int e = restore_region(j, &j->saved[i - 1]);
                if (e < 0 && r == 0)
                        r = e;
        }
        if (r >= 0 && fsync(j->fd) < 0)
                r = -errno;
        (void) ioctl(j->fd, BLKFLSBUF, 0);
        if (r < 0) {
                log_error_errno(r, "Failed to restore the partition table of %s: %m. Its saved copy was lost with "
                                "this error; check the disk before using it.", j->device);
                (void) strextend_printf(&j->error,
                                        "%s Putting the partition table back failed too (%s): check the "
                                        "disk before using it.",
                                        sep, strerror(-r));
        } else if (sync_kernel(j) < 0) {
                log_warning("Restored the partition table of %s, but the kernel did not take it: %s", j->device,
                            parted_last_error());
                (void) strextend_printf(&j->error,
                                        "%s The partition table was put back as it was; the kernel did "
                                        "not take it (%s), so reboot before using the disk.",
                                        sep, parted_last_error());
        } else {
                log_info("Restored the partition table of %s as it was before the operation.", j->device);
                (void) strextend_printf(&j->error, "%s The partition table was put back as it was before.",
                                        sep);
        }
}

static void job_done(Job *j) {
        for (size_t i = 0; i < j->n_saved; i++) {
                free(j->saved[i].data);
                if (j->saved[i].file)
                        (void) unlink(j->saved[i].file);
                free(j->saved[i].file);
        }
        if (j->disk)
                ped_disk_destroy(j->disk);
        if (j->dev)
                ped_device_destroy(j->dev);
        if (j->fd >= 0)
                close(j->fd);
        free(j->error);
}

static int commit(Job *j) {
        if (!ped_disk_commit(j->disk))
                return job_fail(j, -EIO, "Failed to write the partition table of %s: %s", j->device,
                                parted_last_error());
        (void) ioctl(j->fd, BLKFLSBUF, 0);
        return 0;
}

/* The partition's node, once the kernel has it at the size the table says (udev may take a moment). */
static int wait_for_node(Job *j, unsigned number, uint64_t size, char **ret) {
        for (unsigned i = 0; i < 100; i++) {
                _cleanup_free_ char *node = partition_node(j->device, number);
                _cleanup_close_ int fd = node ? open(node, O_RDONLY | O_CLOEXEC) : -EBADF;
                uint64_t actual = 0;
                if (fd >= 0 && ioctl(fd, BLKGETSIZE64, &actual) >= 0 && actual == size) {
                        *ret = TAKE_PTR(node);
                        return 0;
                }
                usleep(50 * 1000);
        }
        return job_fail(j, -ENODEV, "The kernel shows no partition %u of %s at %s; does this kernel support "
                        "partitions on it?", number, j->device, FORMAT_BYTES(size));
}

static PedPartition *partition(Job *j, unsigned number) {
        PedPartition *p = ped_disk_get_partition(j->disk, (int) number);
        if (!p)
                (void) job_fail(j, -ENOENT, "%s has no partition %u any more.", j->device, number);
        return p;
}

/* Runs a tool and fails the job with its last line of output unless it exits with one of the codes
 * allowed (0, and for e2fsck also 1: errors corrected). */
static int run(Job *j, int max_ok, const char *arg0, ...) {
        _cleanup_free_ char *out = NULL;
        va_list ap;
        int r;

        va_start(ap, arg0);
        r = tool_runv(&out, arg0, ap);
        va_end(ap);
        if (r < 0)
                return job_fail(j, r, "%s could not run: %s", arg0, strerror(-r));
        if (r > max_ok)
                return job_fail(j, -EIO, "%s failed (exit %d): %s", arg0, r, tool_last_line(out));
        return 0;
}

/* Resizes the filesystem on node to size bytes (the partition is at least that large by now). */
static int resize_filesystem(Job *j, const char *fs, const char *node, uint64_t size, bool grow) {
        char arg[64];
        DeviceMount m;
        int r;

        if (STR_IN_SET(fs, "ext2", "ext3", "ext4")) {
                _cleanup_free_ char *at = device_mounted_at(node);
                snprintf(arg, sizeof(arg), "%" PRIu64 "K", size / 1024);
                /* Offline resize2fs insists on a freshly checked filesystem; online growth needs no check. */
                if (!at && (r = run(j, 1, "e2fsck", "-f", "-y", node, NULL)) < 0)
                        return r;
                return run(j, 0, "resize2fs", node, arg, NULL);
        }
        if (streq(fs, "ntfs")) {
                snprintf(arg, sizeof(arg), "%" PRIu64, size);
                return run(j, 0, "ntfsresize", "--force", "--no-progress-bar", "-s", arg, node, NULL);
        }
        if (STR_IN_SET(fs, "xfs", "btrfs")) {
                /* They resize only mounted: the mount there is, or one of our own. */
                r = device_mount(node, fs, MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, &m);
                if (r < 0)
                        return job_fail(j, r, "Failed to mount the %s on %s to resize it: %s", fs, node, strerror(-r));
                snprintf(arg, sizeof(arg), "%" PRIu64, size);
                r = streq(fs, "xfs") ? run(j, 0, "xfs_growfs", m.dir, NULL)
                                     : run(j, 0, "btrfs", "filesystem", "resize", grow ? "max" : arg, m.dir, NULL);
                device_umount(&m);
                return r;
        }
        return job_fail(j, -EOPNOTSUPP, "PureBoot does not resize %s.", fs);
}

static int set_geometry(Job *j, PedPartition *part, PedSector start, PedSector end) {
        PedGeometry *g = ped_geometry_new(j->dev, start, end - start + 1);
        PedConstraint *c = g ? ped_constraint_exact(g) : NULL;
        int ok = c && ped_disk_set_partition_geom(j->disk, part, c, start, end);
        if (c)
                ped_constraint_destroy(c);
        if (g)
                ped_geometry_destroy(g);
        if (!ok)
                return job_fail(j, -EIO, "libparted refused partition %d at sectors %lld–%lld: %s", part->num,
                                (long long) start, (long long) end, parted_last_error());
        return 0;
}

/* FAT through libparted, which resizes the filesystem and knows its cluster rules. */
static int resize_fat(Job *j, PedPartition *part, PedSector end) {
        PedGeometry *g = ped_geometry_new(j->dev, part->geom.start, end - part->geom.start + 1);
        PedFileSystem *fs = ped_file_system_open(&part->geom);
        int ok = g && fs && ped_file_system_resize(fs, g, NULL);
        if (fs)
                ped_file_system_close(fs);
        if (g)
                ped_geometry_destroy(g);
        if (!ok)
                return job_fail(j, -EIO, "Failed to resize the FAT filesystem of partition %d: %s", part->num,
                                parted_last_error());
        return 0;
}

static int remake_swap(Job *j, PartitionInfo *p, const char *node) {
        return p->uuid && p->label ? run(j, 0, "mkswap", "-U", p->uuid, "-L", p->label, node, NULL)
               : p->uuid           ? run(j, 0, "mkswap", "-U", p->uuid, node, NULL)
                                   : run(j, 0, "mkswap", node, NULL);
}

static int op_resize(Job *j, PartitionInfo *p) {
        uint64_t new_size = (uint64_t) json_get_int(j->params, "new_size_bytes");
        PedSector end = (PedSector) ((p->start + new_size) / j->sector) - 1;
        const char *fs = filesystem_kind(p->filesystem) ? filesystem_kind(p->filesystem)->name : NULL;
        bool grow = new_size > p->size;
        _cleanup_free_ char *node = partition_node(j->device, p->number);
        PedPartition *part = partition(j, p->number);
        int r;

        if (!part)
                return -ENOENT;
        if (fs && !node && !streq(fs, "vfat"))
                return job_fail(j, -ENODEV, "Partition %u of %s has no device node to resize its %s through.",
                                p->number, j->device, fs);
        if (streq_ptr(fs, "vfat")) {
                r = resize_fat(j, part, end);
                if (r >= 0)
                        r = set_geometry(j, part, part->geom.start, end);
                if (r >= 0)
                        r = commit(j);
                if (r < 0 || !p->label)
                        return r;
                /* libparted writes a new boot sector without the volume label: put it back, or fsck.fat
                 * complains that it differs from the root directory's. */
                free(node);
                node = NULL;
                r = wait_for_node(j, p->number, new_size, &node);
                return r < 0 ? r : run(j, 0, "fatlabel", node, p->label, NULL);
        }
        /* Shrink the filesystem before the partition; grow the partition before the filesystem. */
        if (fs && !grow && !streq(fs, "swap") && (r = resize_filesystem(j, fs, node, new_size, false)) < 0)
                return r;
        if ((r = set_geometry(j, part, part->geom.start, end)) < 0 || (r = commit(j)) < 0)
                return r;
        if (!fs)
                return 0;
        free(node);
        node = NULL;
        r = wait_for_node(j, p->number, new_size, &node);
        if (r < 0)
                return r;
        if (streq(fs, "swap"))
                return remake_swap(j, p, node);
        return grow ? resize_filesystem(j, fs, node, new_size, true) : 0;
}

static int make_filesystem(Job *j, const char *fs, const char *label, const char *node, uint64_t start,
                           uint64_t size) {
        char start_sector[32], fat_label[12] = "";

        if (STR_IN_SET(fs, "ext2", "ext3", "ext4")) {
                char mkfs[16];
                snprintf(mkfs, sizeof(mkfs), "mkfs.%s", fs);
                return label ? run(j, 0, mkfs, "-F", "-q", "-L", label, node, NULL) : run(j, 0, mkfs, "-F", "-q", node, NULL);
        }
        if (streq(fs, "xfs"))
                return label ? run(j, 0, "mkfs.xfs", "-f", "-q", "-L", label, node, NULL)
                             : run(j, 0, "mkfs.xfs", "-f", "-q", node, NULL);
        if (streq(fs, "btrfs"))
                return label ? run(j, 0, "mkfs.btrfs", "-f", "-q", "-L", label, node, NULL)
                             : run(j, 0, "mkfs.btrfs", "-f", "-q", node, NULL);
        if (streq(fs, "ntfs")) {
                /* Where the partition starts, so that Windows can boot from it. */
                snprintf(start_sector, sizeof(start_sector), "%" PRIu64, start / 512);
                return label ? run(j, 0, "mkfs.ntfs", "-Q", "-F", "-q", "-p", start_sector, "-H", "255", "-S", "63", "-L",
                                   label, node, NULL)
                             : run(j, 0, "mkfs.ntfs", "-Q", "-F", "-q", "-p", start_sector, "-H", "255", "-S", "63",
                                   node, NULL);
        }
        if (streq(fs, "vfat")) {
                const char *fat = size >= 512 * MIB ? "32" : "16";
                for (size_t i = 0; label && label[i] && i < 11; i++)
                        fat_label[i] = (char) (label[i] >= 'a' && label[i] <= 'z' ? label[i] - 32 : label[i]);
                return label ? run(j, 0, "mkfs.fat", "-F", fat, "-n", fat_label, node, NULL)
                             : run(j, 0, "mkfs.fat", "-F", fat, node, NULL);
        }
        if (streq(fs, "swap"))
                return label ? run(j, 0, "mkswap", "-L", label, node, NULL) : run(j, 0, "mkswap", node, NULL);
        return job_fail(j, -EOPNOTSUPP, "PureBoot does not make %s.", fs);
}

/* A type by name, in libparted 3.5's terms: a filesystem type and a flag pick the GUID or MBR id. */
static void set_type(PedPartition *part, const char *table, const PartitionType *t) {
        const char *fs = streq(t->name, "swap")     ? "linux-swap"
                         : streq(t->name, "fat32")  ? "fat32"
                         : streq(t->name, "msdata") ? "ntfs"
                                                    : "ext4";
        const char *flag = streq(t->name, "efi")         ? "esp"
                           : streq(t->name, "lvm")       ? "lvm"
                           : streq(t->name, "raid")      ? "raid"
                           : streq(t->name, "bios-boot") ? "bios_grub"
                           : streq(t->name, "home")      ? "linux-home"
                           : streq(t->name, "msdata") && streq(table, "gpt") ? "msftdata"
                           : streq(t->name, "fat32") && streq(table, "msdos") ? "lba"
                                                                                : NULL;
        (void) ped_partition_set_system(part, ped_file_system_type_get(fs));
        if (flag)
                (void) ped_partition_set_flag(part, ped_partition_flag_get_by_name(flag), 1);
}

static int op_create(Job *j, const char *table) {
        uint64_t start = (uint64_t) json_get_int(j->params, "start_bytes"), size = (uint64_t) json_get_int(j->params, "size_bytes");
        const char *fs = json_get_string(j->params, "filesystem"), *label = json_get_string(j->params, "label"),
                   *type_name = json_get_string(j->params, "type");
        const PartitionType *t;
        PedPartition *part;
        PedConstraint *c;
        PedGeometry *g;
        _cleanup_free_ char *node = NULL;
        int ok, r;

        if (isempty(fs) || streq_ptr(fs, "none"))
                fs = NULL;
        fs = fs ? filesystem_kind(fs)->name : NULL;
        t = type_name ? partition_type_find(type_name) : partition_type_default(fs);
        if (!j->disk) {
                const char *new_table = json_get_string(j->params, "table") ?: "gpt";
                j->disk = ped_disk_new_fresh(j->dev, ped_disk_type_get(new_table));
                if (!j->disk)
                        return job_fail(j, -EIO, "Failed to make a %s table on %s: %s", new_table, j->device,
                                        parted_last_error());
                table = new_table;
        }
        PedSector s = (PedSector) (start / j->sector), e = (PedSector) ((start + size) / j->sector) - 1;
        part = ped_partition_new(j->disk, PED_PARTITION_NORMAL, NULL, s, e);
        if (!part)
                return job_fail(j, -EIO, "libparted refused a partition at %s: %s", FORMAT_BYTES(start),
                                parted_last_error());
        set_type(part, table, t);
        if (label && ped_disk_type_check_feature(j->disk->type, PED_DISK_TYPE_PARTITION_NAME))
                (void) ped_partition_set_name(part, label);
        g = ped_geometry_new(j->dev, s, e - s + 1);
        c = g ? ped_constraint_exact(g) : NULL;
        ok = c && ped_disk_add_partition(j->disk, part, c);
        if (c)
                ped_constraint_destroy(c);
        if (g)
                ped_geometry_destroy(g);
        if (!ok) {
                ped_partition_destroy(part);
                return job_fail(j, -EIO, "libparted refused a partition at %s: %s", FORMAT_BYTES(start),
                                parted_last_error());
        }
        unsigned number = (unsigned) part->num;
        r = commit(j);
        if (r < 0 || !fs)
                return r;
        r = wait_for_node(j, number, size, &node);
        if (r >= 0)
                r = make_filesystem(j, fs, label, node, start, size);
        if (r >= 0)
                log_info("Created partition %u of %s (%s at %s)%s%s.", number, j->device, FORMAT_BYTES(size),
                         FORMAT_BYTES(start), fs ? " with " : "", strempty(fs));
        return r;
}

static int op_format(Job *j, PartitionInfo *p) {
        _cleanup_free_ char *node = partition_node(j->device, p->number);
        const char *fs = json_get_string(j->params, "filesystem");
        if (!node)
                return job_fail(j, -ENODEV, "Partition %u of %s has no device node to format.", p->number, j->device);
        return make_filesystem(j, filesystem_kind(fs)->name, json_get_string(j->params, "label"), node, p->start, p->size);
}

static int op_delete(Job *j, PartitionInfo *p) {
        PedPartition *part = partition(j, p->number);
        if (!part)
                return -ENOENT;
        if (!ped_disk_delete_partition(j->disk, part))
                return job_fail(j, -EIO, "libparted refused to delete partition %u: %s", p->number, parted_last_error());
        return commit(j);
}

static int op_set_flag(Job *j, PartitionInfo *p) {
        const char *name = json_get_string(j->params, "flag");
        PedPartitionFlag flag = ped_partition_flag_get_by_name(name);
        PedPartition *part = partition(j, p->number);
        json_object *v;
        bool value = json_object_object_get_ex(j->params, "value", &v) && json_object_get_boolean(v);

        if (!part)
                return -ENOENT;
        if (!flag || !ped_partition_is_flag_available(part, flag))
                return job_fail(j, -EINVAL, "Partition %u of %s has no flag %s.", p->number, j->device, name);
        if (!ped_partition_set_flag(part, flag, value))
                return job_fail(j, -EIO, "libparted refused flag %s: %s", name, parted_last_error());
        return commit(j);
}

/* A move is journaled, so that a power cut or a kill in the middle of it is finished at the next start
 * (apply_recover): <scratch>/move-journal.json says which partition goes from where to where, and how many
 * bytes of it are copied; what the destination held is in move-undo.bin. Blocks are never larger than the
 * distance moved, so a block's write never touches its own source, and the journal is made durable after
 * each block (the data first), before the next block's write may overwrite the source of this one: so the
 * block in flight at a crash can always be copied again from an intact source. */
#define MOVE_JOURNAL "move-journal.json"

static char *journal_path(const char *scratch_dir) {
        char *p;
        return asprintf(&p, "%s/" MOVE_JOURNAL, scratch_dir) < 0 ? NULL : p;
}

static int journal_write_done(const char *path, json_object *journal, uint64_t done) {
        json_object_object_add(journal, "done", json_object_new_int64((int64_t) done));
        return journal_write(path, journal);
}

#if PB_FAULT_INJECTION
/* Test builds: a pause after each block of a move, so a test can kill the agent in the middle of one. */
static void move_fault_pause(void) {
        const char *e = getenv("PUREBOOT_AGENT_FAULT_MOVE_BLOCK_MS");
        if (e)
                usleep((useconds_t) atoi(e) * 1000);
}
#else
static void move_fault_pause(void) {
}
#endif

/* Copies size bytes from one offset of the disk to another, from `done` bytes on, in blocks, in the
 * direction that never reads data that is overwritten before it is read, journaling each block. */
static int copy_range(Job *j, const char *journal_file, json_object *journal, uint64_t from, uint64_t to,
                      uint64_t size, uint64_t done) {
        uint64_t distance = to > from ? to - from : from - to;
        size_t block = (size_t) MIN((uint64_t) COPY_BLOCK, distance);
        _cleanup_free_ uint8_t *buf = malloc(COPY_BLOCK);
        bool backwards = to > from;
        int r;

        if (!buf)
                return -ENOMEM;
        while (done < size) {
                size_t n = (size_t) MIN((uint64_t) block, size - done);
                uint64_t at = backwards ? size - done - n : done;
                r = pread_full(j->fd, buf, n, from + at);
                if (r >= 0)
                        r = pwrite_full(j->fd, buf, n, to + at);
                if (r >= 0 && fdatasync(j->fd) < 0)
                        r = -errno;
                if (r < 0)
                        return job_fail(j, r, "Failed to copy the partition at %s: %s", FORMAT_BYTES(from + at),
                                        strerror(-r));
                done += n;
                r = journal_write_done(journal_file, journal, done);
                if (r < 0)
                        return job_fail(j, r, "Failed to journal the move in %s: %s", journal_file,
                                        strerror(-r));
                move_fault_pause();
        }
        return 0;
}

static int op_move(Job *j, PartitionInfo *p) {
        uint64_t to = (uint64_t) json_get_int(j->params, "new_start_bytes");
        _cleanup_(json_object_unrefp) json_object *journal = json_object_new_object();
        _cleanup_free_ char *journal_file = journal_path(j->scratch_dir);
        PedPartition *part = partition(j, p->number);
        int r;

        if (!part)
                return -ENOENT;
        if (!journal || !journal_file)
                return -ENOMEM;
        /* All of the destination: where it overlaps the partition's current place, the copy overwrites data
         * the old table points at, which an undo must bring back too. */
        r = save_to_file(j, to, p->size);
        if (r < 0)
                return job_fail(j, r, "Failed to save what the move overwrites to %s: %s", j->scratch_dir,
                                strerror(-r));
        json_object_object_add(journal, "device", json_object_new_string(j->device));
        json_object_object_add(journal, "operation", j->id ? json_object_new_string(j->id) : NULL);
        json_object_object_add(journal, "diskSize",
                               json_object_new_int64((int64_t) (j->dev->length * j->sector)));
        json_object_object_add(journal, "partition", json_object_new_int64(p->number));
        json_object_object_add(journal, "from", json_object_new_int64((int64_t) p->start));
        json_object_object_add(journal, "to", json_object_new_int64((int64_t) to));
        json_object_object_add(journal, "size", json_object_new_int64((int64_t) p->size));
        r = journal_write_done(journal_file, journal, 0);
        if (r < 0)
                return job_fail(j, r, "Failed to journal the move in %s: %s", journal_file, strerror(-r));
        r = copy_range(j, journal_file, journal, p->start, to, p->size, 0);
        if (r >= 0)
                r = set_geometry(j, part, (PedSector) (to / j->sector), (PedSector) ((to + p->size) / j->sector) - 1);
        if (r >= 0)
                r = commit(j);
        /* Done, or about to be undone by the caller (the table and the destination from move-undo.bin): the
         * journal has nothing left to finish either way. */
        (void) unlink(journal_file);
        return r;
}

int apply_operation(const char *device, const char *id, const char *op, json_object *params,
                    const char *scratch_dir, char **ret_error) {
        _cleanup_(disk_info_done) DiskInfo d = {};
        _cleanup_free_ char *message = NULL;
        Job j = { .device = device, .id = id, .scratch_dir = scratch_dir, .params = params, .fd = -EBADF };
        PartitionInfo *p = NULL;
        uint64_t t = now_monotonic_usec();
        /* Held to the end: no partition node goes away under the operation. */
        _cleanup_close_ _unused_ int lock = device_lock_table(device);
        int r;

        *ret_error = NULL;
        /* The disk as it is now, and the operation checked once more against its layout (an earlier operation
         * may have come out differently than on paper). How far a filesystem shrinks now is for its own tool
         * to say: the controller checked the minimum at queue time, and the tool refuses what no longer fits. */
        r = scan_disk(device, &d);
        if (r < 0)
                return asprintf(ret_error, "Failed to read %s before changing it.", device) < 0 ? -ENOMEM : r;
        for (size_t i = 0; i < d.n_partitions; i++)
                if (filesystem_kind(d.partitions[i].filesystem) && filesystem_kind(d.partitions[i].filesystem)->shrink) {
                        d.partitions[i].minimum = MIB;
                        d.partitions[i].can_shrink = true;
                }
        {
                _cleanup_(disk_info_done) DiskInfo paper = {};
                r = disk_info_copy(&d, &paper);
                if (r >= 0)
                        r = disk_info_apply(&paper, op, params, &message);
                if (r < 0) {
                        *ret_error = TAKE_PTR(message);
                        return r == -ENOMEM ? r : -EINVAL;
                }
        }
        j.fd = open(device, O_RDWR | O_CLOEXEC);
        j.dev = j.fd >= 0 ? ped_device_get(device) : NULL;
        if (!j.dev) {
                r = job_fail(&j, j.fd < 0 ? -errno : -EIO, "Failed to open %s: %s", device,
                             j.fd < 0 ? strerror(errno) : parted_last_error());
                goto done;
        }
        j.sector = (uint64_t) j.dev->sector_size;
        if (!streq(d.table, "none") && !(j.disk = ped_disk_new(j.dev))) {
                r = job_fail(&j, -EIO, "Failed to read the table of %s: %s", device, parted_last_error());
                goto done;
        }
        /* The kernel's partitions as the table has them: a table written by a tool that did not tell the
         * kernel would leave partition nodes missing or stale. */
        if (j.disk && !ped_disk_commit_to_os(j.disk))
                log_warning("The kernel did not take the partition table of %s: %s", device, parted_last_error());
        r = save_table(&j, d.table);
        if (r < 0) {
                r = job_fail(&j, r, "Failed to save the partition table of %s: %s", device, strerror(-r));
                goto done;
        }
        if (json_object_object_get_ex(params, "partition", NULL))
                p = disk_info_partition(&d, (unsigned) json_get_int(params, "partition"));

        r = streq(op, "resize")   ? op_resize(&j, p)
            : streq(op, "create") ? op_create(&j, d.table)
            : streq(op, "delete") ? op_delete(&j, p)
            : streq(op, "format") ? op_format(&j, p)
            : streq(op, "move")   ? op_move(&j, p)
                                  : op_set_flag(&j, p);
        if (r < 0) {
                if (!j.error)
                        (void) job_fail(&j, r, "%s failed: %s", op, strerror(-r));
                rollback(&j);
        } else
                log_info("Applied %s to %s in %.2f s.", op, device, (double) (now_monotonic_usec() - t) / USEC_PER_SEC);
done:
        if (r < 0)
                *ret_error = TAKE_PTR(j.error);
        job_done(&j);
        return r;
}

/* The end of an interrupted move: the copy finished from where the journal says, and the table pointed at
 * the new place; or, if the disk is not as the journal left it, what the destination held put back. */
static int recover_move(Job *j, json_object *journal, const char *journal_file) {
        uint64_t from = (uint64_t) json_get_int(journal, "from"),
                 to = (uint64_t) json_get_int(journal, "to"),
                 size = (uint64_t) json_get_int(journal, "size"),
                 done = (uint64_t) json_get_int(journal, "done");
        unsigned number = (unsigned) json_get_int(journal, "partition");
        PedPartition *part;
        int r;

        if ((uint64_t) j->dev->length * j->sector != (uint64_t) json_get_int(journal, "diskSize"))
                return job_fail(j, -ENODEV,
                                "%s is not the disk the interrupted move was on (its size differs).",
                                j->device);
        part = partition(j, number);
        if (!part)
                return -ENOENT;
        if ((uint64_t) part->geom.start * j->sector == to) {
                log_info("The interrupted move of partition %u of %s had finished; only its journal was "
                         "left.",
                         number, j->device);
                return 0;
        }
        if ((uint64_t) part->geom.start * j->sector != from ||
            (uint64_t) part->geom.length * j->sector != size)
                return job_fail(j, -ESTALE,
                                "Partition %u of %s is no longer where the interrupted move found it.",
                                number, j->device);
        log_info("Finishing the move of partition %u of %s that was interrupted at %s of %s.", number,
                 j->device, FORMAT_BYTES(done), FORMAT_BYTES(size));
        r = copy_range(j, journal_file, journal, from, to, size, done);
        if (r >= 0)
                r = set_geometry(j, part, (PedSector) (to / j->sector),
                                 (PedSector) ((to + size) / j->sector) - 1);
        if (r >= 0)
                r = commit(j);
        return r;
}

int apply_recover(const char *scratch_dir, char **ret_device, char **ret_id, char **ret_error) {
        _cleanup_free_ char *journal_file = journal_path(scratch_dir), *undo = NULL;
        _cleanup_(json_object_unrefp) json_object *journal = NULL;
        Job j = { .scratch_dir = scratch_dir, .fd = -EBADF };
        int r;

        *ret_device = *ret_id = *ret_error = NULL;
        if (!journal_file || asprintf(&undo, "%s/move-undo.bin", scratch_dir) < 0)
                return -ENOMEM;
        r = journal_read(journal_file, &journal);
        if (r == 0)
                return 0;
        if (r < 0 || !json_get_string(journal, "device"))
                return log_error_errno(r < 0 ? r : EBADMSG,
                                       "The move journal %s cannot be read; the disk may hold "
                                       "a half-moved partition (what its destination held is in %s).",
                                       journal_file, undo);
        j.device = json_get_string(journal, "device");
        j.id = json_get_string(journal, "operation");
        _cleanup_close_ _unused_ int lock = device_lock_table(j.device);
        j.fd = open(j.device, O_RDWR | O_CLOEXEC);
        j.dev = j.fd >= 0 ? ped_device_get(j.device) : NULL;
        j.sector = j.dev ? (uint64_t) j.dev->sector_size : 512;
        if (!j.dev || !(j.disk = ped_disk_new(j.dev)))
                r = job_fail(&j, -ENODEV, "Cannot open %s to finish the interrupted move: %s", j.device,
                             j.fd < 0 ? strerror(errno) : parted_last_error());
        else
                r = recover_move(&j, journal, journal_file);
        if (r < 0 && j.dev) {
                /* Not finished: the destination as it was, from its saved copy; the table was never changed.
                 */
                Region region = { .offset = (uint64_t) json_get_int(journal, "to"),
                                  .size = (uint64_t) json_get_int(journal, "size"),
                                  .file = undo };
                int e = restore_region(&j, &region);
                if (e >= 0 && fsync(j.fd) < 0)
                        e = -errno;
                if (e < 0)
                        log_error_errno(
                                e,
                                "Failed to put back what the interrupted move overwrote on %s: %m; it is "
                                "kept in %s.",
                                j.device, undo);
                else
                        log_info("Undid the interrupted move on %s: the partition stays where it was.",
                                 j.device);
                if (e < 0)
                        undo = mfree(undo); /* keep it for the operator */
        } else if (r >= 0)
                log_info("Finished the interrupted move on %s.", j.device);
        (void) unlink(journal_file);
        if (undo)
                (void) unlink(undo);
        *ret_device = strdup(j.device);
        *ret_id = j.id ? strdup(j.id) : NULL;
        *ret_error = TAKE_PTR(j.error);
        job_done(&j);
        return *ret_device ? 1 : -ENOMEM;
}
