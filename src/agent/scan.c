/* SPDX-License-Identifier: MIT */
/* pureboot-agent scan: what the node's disks hold. libparted reads the table and flags, libblkid the types
 * and filesystems (probing the disk at each partition's offset, so a partition the kernel does not know is
 * still seen), and the filesystems' own tools how full each one is and how far it can shrink. */
#include <blkid/blkid.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "device.h"
#include "format.h"
#include "log.h"
#include "scan.h"
#include "tool.h"
#include "util.h"

static char last_error[512];

static PedExceptionOption on_parted_exception(PedException *e) {
        snprintf(last_error, sizeof(last_error), "%s", e->message);
        log_debug("libparted: %s", e->message);
        /* Nobody can answer: fix what libparted offers to fix (a GPT backup header not at the end of a grown
         * disk), ignore warnings, cancel errors. */
        if (e->options & PED_EXCEPTION_FIX)
                return PED_EXCEPTION_FIX;
        if (e->type < PED_EXCEPTION_ERROR && (e->options & PED_EXCEPTION_IGNORE))
                return PED_EXCEPTION_IGNORE;
        return (e->options & PED_EXCEPTION_CANCEL) ? PED_EXCEPTION_CANCEL : PED_EXCEPTION_UNHANDLED;
}

void parted_exceptions_init(void) {
        ped_exception_set_handler(on_parted_exception);
}

const char *parted_last_error(void) {
        return last_error[0] ? last_error : "libparted gave no reason";
}

uint64_t parted_fat_minimum(PedGeometry *geom) {
        PedFileSystem *fs = ped_file_system_open(geom);
        PedConstraint *c;
        uint64_t min = 0;
        if (!fs)
                return 0;
        c = ped_file_system_get_resize_constraint(fs);
        if (c) {
                min = (uint64_t) c->min_size * (uint64_t) geom->dev->sector_size;
                ped_constraint_destroy(c);
        }
        ped_file_system_close(fs);
        return min;
}

int scan_tell_kernel(const char *disk) {
        PedDevice *dev = ped_device_get(disk);
        PedDisk *table;
        int ok;

        if (!dev)
                return -ENODEV;
        table = ped_disk_new(dev);
        ok = !table || ped_disk_commit_to_os(table); /* no table: no partitions to tell of */
        if (table)
                ped_disk_destroy(table);
        ped_device_destroy(dev);
        return ok ? 0 : -EIO;
}

char *partition_node_wait(const char *disk, unsigned number) {
        for (unsigned i = 0;; i++) {
                char *node = partition_node(disk, number);
                if (node || i == 100)
                        return node;
                usleep(50 * 1000);
        }
}

char *partition_node(const char *disk, unsigned number) {
        _cleanup_free_ char *dir = NULL;
        _cleanup_(closedirp) DIR *d = NULL;
        char sys[64], buf[32];
        struct stat st;

        if (stat(disk, &st) < 0 || !S_ISBLK(st.st_mode))
                return NULL;
        snprintf(sys, sizeof(sys), "/sys/dev/block/%u:%u", major(st.st_rdev), minor(st.st_rdev));
        dir = realpath(sys, NULL);
        d = dir ? opendir(dir) : NULL;
        if (!d)
                return NULL;
        for (struct dirent *e; (e = readdir(d));) {
                _cleanup_free_ char *sub = NULL, *node = NULL;
                unsigned maj, min;
                struct stat pst;
                if (e->d_name[0] == '.' || asprintf(&sub, "%s/%s", dir, e->d_name) < 0)
                        continue;
                if (read_attribute(sub, "partition", buf, sizeof(buf)) < 0 ||
                    strtoul(buf, NULL, 10) != number)
                        continue;
                if (read_attribute(sub, "dev", buf, sizeof(buf)) < 0 ||
                    sscanf(buf, "%u:%u", &maj, &min) != 2 || asprintf(&node, "/dev/%s", e->d_name) < 0)
                        return NULL;
                /* The node udev (or devtmpfs) made must be that very device. */
                if (stat(node, &pst) < 0 || !S_ISBLK(pst.st_mode) || pst.st_rdev != makedev(maj, min))
                        return NULL;
                return TAKE_PTR(node);
        }
        return NULL;
}

/* A number after label in the tool's output, e.g. "Block size:  4096". */
static bool parse_after(const char *out, const char *label, uint64_t *ret) {
        const char *p = out ? strstr(out, label) : NULL;
        if (!p)
                return false;
        p += strlen(label);
        p += strspn(p, " \t:");
        char *end;
        errno = 0;
        unsigned long long v = strtoull(p, &end, 10);
        if (errno || end == p)
                return false;
        *ret = v;
        return true;
}

static int usage_ext(PartitionInfo *p, const char *node) {
        _cleanup_free_ char *out = NULL, *est = NULL;
        uint64_t blocks, free_blocks, block_size, min_blocks;

        if (tool_runl(&out, "dumpe2fs", "-h", node, NULL) != 0 || !parse_after(out, "Block count:", &blocks) ||
            !parse_after(out, "Free blocks:", &free_blocks) || !parse_after(out, "Block size:", &block_size))
                return log_warning_errno(EIO, "dumpe2fs -h %s: %s", node, out ? tool_last_line(out) : "did not run");
        p->used = (blocks - free_blocks) * block_size;
        if (tool_runl(&est, "resize2fs", "-P", node, NULL) != 0 ||
            !parse_after(est, "Estimated minimum size of the filesystem:", &min_blocks))
                return log_warning_errno(EIO, "resize2fs -P %s: %s", node, est ? tool_last_line(est) : "did not run");
        p->minimum = min_blocks * block_size;
        return 0;
}

static int usage_ntfs(PartitionInfo *p, const char *node) {
        _cleanup_free_ char *out = NULL;
        uint64_t min, used_mb;
        if (tool_runl(&out, "ntfsresize", "--info", "--force", "--no-progress-bar", node, NULL) != 0 ||
            !parse_after(out, "You might resize at", &min) || !parse_after(out, "Space in use", &used_mb))
                return -EIO;
        p->used = used_mb * 1000 * 1000; /* ntfsresize counts MB, not MiB */
        p->minimum = min;
        return 0;
}

static int usage_vfat(PartitionInfo *p, const char *node) {
        _cleanup_free_ char *out = NULL;
        uint64_t data_start, cluster, used = 0;
        const char *files;

        /* "… 4096 bytes per cluster … Data area starts at byte 630784 … /dev/x: 3 files, 5/76643 clusters" */
        if (tool_runl(&out, "fsck.fat", "-n", "-v", node, NULL) != 0 ||
            !parse_after(out, "Data area starts at byte", &data_start) || !(files = strstr(out, " files, ")) ||
            sscanf(files, " files, %" SCNu64 "/", &used) != 1)
                return -EIO;
        const char *c = strstr(out, " bytes per cluster");
        if (!c)
                return -EIO;
        while (c > out && c[-1] >= '0' && c[-1] <= '9')
                c--;
        cluster = strtoull(c, NULL, 10);
        p->used = data_start + used * cluster;
        return 0;
}

/* xfs and btrfs tell how full they are only mounted: use the mount there is, or make a read-only one
 * (norecovery: looking must not replay an xfs log; btrfs takes plain ro). */
static int with_mount(PartitionInfo *p, const char *node, int (*fn)(PartitionInfo *p, const char *dir)) {
        DeviceMount m;
        int r = device_mount(node, p->filesystem, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                             streq(p->filesystem, "xfs") ? "norecovery" : NULL, &m);
        if (r < 0)
                return log_debug_errno(r, "Failed to mount %s read-only to measure it: %m", node);
        r = fn(p, m.dir);
        device_umount(&m);
        return r;
}

static int statvfs_used(PartitionInfo *p, const char *dir) {
        struct statvfs sv;
        if (statvfs(dir, &sv) < 0)
                return -errno;
        p->used = (uint64_t) (sv.f_blocks - sv.f_bfree) * sv.f_frsize;
        return 0;
}

static int measure_xfs(PartitionInfo *p, const char *dir) {
        p->minimum = p->size; /* xfs does not shrink */
        return statvfs_used(p, dir);
}

static int measure_btrfs(PartitionInfo *p, const char *dir) {
        _cleanup_free_ char *out = NULL;
        int r = statvfs_used(p, dir);
        if (r < 0)
                return r;
        if (tool_runl(&out, "btrfs", "inspect-internal", "min-dev-size", dir, NULL) != 0 ||
            sscanf(out, "%" SCNu64 " bytes", &p->minimum) != 1)
                return -EIO;
        return 0;
}

int scan_filesystem_usage(PartitionInfo *p, const char *node) {
        const FilesystemKind *k = filesystem_kind(p->filesystem);
        uint64_t tool_min;
        int r;

        if (!k)
                return 0;
        if (!node)
                return log_debug_errno(ENODEV, "Partition %u has no device node; its usage is not "
                                       "known.", p->number);
        if (STR_IN_SET(k->name, "ext2", "ext3", "ext4"))
                r = usage_ext(p, node);
        else if (streq(k->name, "ntfs"))
                r = usage_ntfs(p, node);
        else if (streq(k->name, "vfat"))
                r = usage_vfat(p, node);
        else if (streq(k->name, "xfs"))
                r = with_mount(p, node, measure_xfs);
        else if (streq(k->name, "btrfs"))
                r = with_mount(p, node, measure_btrfs);
        else
                r = 0; /* swap: nothing in it to keep */
        if (r < 0) {
                p->used = p->minimum = 0;
                return log_warning_errno(r, "Failed to measure the %s on %s; it will not be offered for shrinking.",
                                         p->filesystem, node);
        }
        /* What the tool needs, and never less than 100 MiB above what is used; Windows wants 500 MiB. */
        tool_min = p->minimum;
        p->minimum = MAX(tool_min, p->used + (streq(k->name, "ntfs") ? 500 : 100) * MIB);
        p->minimum = (p->minimum + MIB - 1) / MIB * MIB;
        p->can_shrink = k->shrink && p->minimum < p->size;
        if (p->minimum > p->size)
                p->minimum = p->size;
        return 0;
}

/* The partition's type as libblkid reads it from the table: the GPT type GUID or the MBR id. */
static int partition_type(blkid_partlist ls, PartitionInfo *p) {
        blkid_partition bp = ls ? blkid_partlist_get_partition_by_partno(ls, (int) p->number) : NULL;
        const char *guid = bp ? blkid_partition_get_type_string(bp) : NULL;
        const PartitionType *t;

        if (guid)
                p->type = strdup(guid);
        else if (asprintf(&p->type, "0x%02x", bp ? blkid_partition_get_type(bp) : 0) < 0)
                p->type = NULL;
        if (!p->type)
                return -ENOMEM;
        t = partition_type_find(p->type);
        /* GPT's basic data type holds FAT and NTFS alike: name it for what it holds. */
        p->type_name = strdup(t ? (streq(t->name, "fat32") && guid ? "Microsoft basic data" : t->description)
                                : "unknown");
        return p->type_name ? 0 : -ENOMEM;
}

/* The filesystem at the partition's place on the disk, probed through the disk itself. */
static int partition_filesystem(int fd, PartitionInfo *p) {
        blkid_probe pr = blkid_new_probe();
        const char *v;
        int r = -ENOMEM;

        if (!pr)
                return -ENOMEM;
        if (blkid_probe_set_device(pr, fd, (blkid_loff_t) p->start, (blkid_loff_t) p->size) < 0) {
                r = -EIO;
                goto done;
        }
        blkid_probe_enable_superblocks(pr, 1);
        blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_LABEL | BLKID_SUBLKS_UUID | BLKID_SUBLKS_TYPE);
        r = 0;
        if (blkid_do_safeprobe(pr) != 0)
                goto done; /* nothing there, or something ambiguous: no filesystem we would touch */
        if (blkid_probe_lookup_value(pr, "TYPE", &v, NULL) == 0 && !(p->filesystem = strdup(v)))
                r = -ENOMEM;
        if (blkid_probe_lookup_value(pr, "LABEL", &v, NULL) == 0 && !(p->label = strdup(v)))
                r = -ENOMEM;
        if (blkid_probe_lookup_value(pr, "UUID", &v, NULL) == 0 && !(p->uuid = strdup(v)))
                r = -ENOMEM;
done:
        blkid_free_probe(pr);
        return r;
}

static int partition_flags(PedPartition *part, PartitionInfo *p) {
        p->flags = strv_new(NULL);
        if (!p->flags)
                return -ENOMEM;
        for (PedPartitionFlag f = ped_partition_flag_next(0); f; f = ped_partition_flag_next(f))
                if (ped_partition_is_flag_available(part, f) && ped_partition_get_flag(part, f) &&
                    strv_extend(&p->flags, ped_partition_flag_get_name(f)) < 0)
                        return -ENOMEM;
        return 0;
}

static int scan_partitions(PedDevice *dev, const char *path, DiskInfo *d) {
        PedDisk *disk = ped_disk_new(dev);
        blkid_probe pr = NULL;
        blkid_partlist ls = NULL;
        _cleanup_close_ int fd = -EBADF;
        int r = 0;

        if (!disk)
                return log_warning_errno(EIO, "Failed to read the partition table of %s: %s", path,
                                         parted_last_error());
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
                ped_disk_destroy(disk);
                return -errno;
        }
        /* What the kernel cached of the disk may predate the last change through a partition node. */
        (void) ioctl(fd, BLKFLSBUF, 0);
        pr = blkid_new_probe_from_filename(path);
        if (pr) {
                blkid_probe_enable_partitions(pr, 1);
                blkid_probe_set_partitions_flags(pr, BLKID_PARTS_ENTRY_DETAILS);
                ls = blkid_probe_get_partitions(pr);
        }
        size_t n = 0;
        for (PedPartition *part = ped_disk_next_partition(disk, NULL); part; part = ped_disk_next_partition(disk, part))
                n += part->num > 0 && !(part->type & (PED_PARTITION_FREESPACE | PED_PARTITION_METADATA |
                                                      PED_PARTITION_EXTENDED));
        d->partitions = calloc(n ?: 1, sizeof(PartitionInfo));
        if (!d->partitions)
                r = -ENOMEM;
        for (PedPartition *part = ped_disk_next_partition(disk, NULL); r >= 0 && part;
             part = ped_disk_next_partition(disk, part)) {
                if (part->num <= 0 ||
                    (part->type & (PED_PARTITION_FREESPACE | PED_PARTITION_METADATA | PED_PARTITION_EXTENDED)))
                        continue;
                PartitionInfo *p = &d->partitions[d->n_partitions++];
                p->number = (unsigned) part->num;
                p->start = (uint64_t) part->geom.start * d->logical_sector_size;
                p->size = (uint64_t) part->geom.length * d->logical_sector_size;
                r = partition_type(ls, p);
                if (r >= 0)
                        r = partition_flags(part, p);
                if (r >= 0)
                        r = partition_filesystem(fd, p);
                if (r < 0)
                        break;
                _cleanup_free_ char *node = partition_node(path, p->number);
                if (node)
                        p->mountpoint = device_mounted_at(node);
                if (streq_ptr(p->filesystem, "vfat")) /* libparted knows FAT's own limit */
                        p->minimum = parted_fat_minimum(&part->geom);
                (void) scan_filesystem_usage(p, node);
        }
        if (pr)
                blkid_free_probe(pr);
        ped_disk_destroy(disk);
        return r;
}

int scan_disk(const char *path, DiskInfo *ret) {
        _cleanup_close_ _unused_ int lock = device_lock_table(path);
        _cleanup_(disk_info_done) DiskInfo d = {};
        char sys[64], buf[256];
        struct stat st;
        PedDevice *dev;
        PedDiskType *type;
        int r;

        if (stat(path, &st) < 0)
                return log_warning_errno(errno, "Failed to scan %s: %m", path);
        if (!S_ISBLK(st.st_mode) && !S_ISREG(st.st_mode)) /* a file: an image being imported */
                return log_warning_errno(ENOTBLK, "%s is not a block device.", path);
        dev = ped_device_get(path);
        if (!dev)
                return log_warning_errno(EIO, "Failed to open %s: %s", path, parted_last_error());
        d.size = (uint64_t) dev->length * (uint64_t) dev->sector_size;
        d.logical_sector_size = (uint32_t) dev->sector_size;
        d.physical_sector_size = (uint32_t) dev->phys_sector_size;
        d.device = strdup(path);
        d.model = dev->model && !streq(dev->model, "Unknown") ? strdup(dev->model) : NULL;
        snprintf(sys, sizeof(sys), "/sys/dev/block/%u:%u", major(st.st_rdev), minor(st.st_rdev));
        if (read_attribute(sys, "device/serial", buf, sizeof(buf)) >= 0 ||
            read_attribute(sys, "serial", buf, sizeof(buf)) >= 0)
                d.serial = strdup(buf);
        type = ped_disk_probe(dev);
        d.table = strdup(type && STR_IN_SET(type->name, "gpt", "msdos") ? type->name : "none");
        if (!d.device || !d.table) {
                ped_device_destroy(dev);
                return -ENOMEM;
        }
        if (type && !STR_IN_SET(type->name, "gpt", "msdos"))
                log_info("%s holds a %s table, which PureBoot does not edit; it is reported as none.", path,
                         type->name);
        r = streq(d.table, "none") ? 0 : scan_partitions(dev, path, &d);
        ped_device_destroy(dev);
        if (r < 0)
                return r;
        *ret = d;
        d = (DiskInfo){};
        return 0;
}

int scan_list_disks(char ***ret) {
        _cleanup_(closedirp) DIR *d = opendir("/sys/block");
        _cleanup_strv_free_ char **l = strv_new(NULL);
        char buf[32];

        if (!d || !l)
                return d ? -ENOMEM : -errno;
        for (struct dirent *e; (e = readdir(d));) {
                _cleanup_free_ char *sys = NULL, *path = NULL;
                if (e->d_name[0] == '.' || !disk_name_is_inventoried(e->d_name))
                        continue;
                if (asprintf(&sys, "/sys/block/%s", e->d_name) < 0 || asprintf(&path, "/dev/%s", e->d_name) < 0)
                        return -ENOMEM;
                if (read_attribute(sys, "size", buf, sizeof(buf)) < 0 || streq(buf, "0"))
                        continue; /* an empty card reader */
                if (strv_extend(&l, path) < 0)
                        return -ENOMEM;
        }
        *ret = TAKE_PTR(l);
        return 0;
}

int scan_disks(char **devices, json_object **ret) {
        _cleanup_strv_free_ char **found = NULL;
        _cleanup_(json_object_unrefp) json_object *a = json_object_new_array();
        int r;

        if (!devices) {
                r = scan_list_disks(&found);
                if (r < 0)
                        return log_error_errno(r, "Failed to list disks: %m");
                devices = found;
        }
        STRV_FOREACH (dev, devices) {
                _cleanup_(disk_info_done) DiskInfo d = {};
                uint64_t t = now_monotonic_usec();
                r = scan_disk(*dev, &d);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        continue; /* said why; the other disks still count */
                log_info("Scanned %s in %.2f s: %s, %s table, %zu partitions.", *dev,
                         (double) (now_monotonic_usec() - t) / USEC_PER_SEC, FORMAT_BYTES(d.size), d.table,
                         d.n_partitions);
                json_object_array_add(a, disk_info_to_json(&d));
        }
        *ret = TAKE_PTR(a);
        return 0;
}
