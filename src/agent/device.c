/* SPDX-License-Identifier: MIT */
/* Opening, sizing, zeroing and flushing the disk of a job. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "device.h"
#include "frame.h"
#include "log.h"
#include "util.h"

/* The sysfs directory of a block device: /sys/devices/…/loop0, and its partitions below it. */
static char *sysfs_dir(dev_t dev) {
        char path[64];
        snprintf(path, sizeof(path), "/sys/dev/block/%u:%u", major(dev), minor(dev));
        return realpath(path, NULL);
}

char *device_mounted_at(const char *path) {
        _cleanup_free_ char *ours = NULL;
        _cleanup_fclose_ FILE *f = NULL;
        char line[4096];
        struct stat st;

        if (stat(path, &st) < 0 || !S_ISBLK(st.st_mode) || !(ours = sysfs_dir(st.st_rdev)))
                return NULL;
        f = fopen("/proc/self/mountinfo", "re");
        if (!f)
                return NULL;
        while (fgets(line, sizeof(line), f)) {
                unsigned maj, min;
                char mountpoint[4096];
                /* id parent maj:min root mountpoint … */
                if (sscanf(line, "%*u %*u %u:%u %*s %4095s", &maj, &min, mountpoint) != 3)
                        continue;
                _cleanup_free_ char *theirs = sysfs_dir(makedev(maj, min));
                const char *rest = theirs ? startswith(theirs, ours) : NULL;
                if (rest && (*rest == 0 || *rest == '/'))
                        return strdup(mountpoint);
        }
        return NULL;
}

int device_mount(const char *node, const char *fs, unsigned long flags, const char *options, DeviceMount *ret) {
        _cleanup_free_ char *dir = device_mounted_at(node);

        if (dir) {
                *ret = (DeviceMount){ .dir = TAKE_PTR(dir) };
                return 0;
        }
        if (!(dir = strdup("/tmp/pureboot-mount.XXXXXX")))
                return -ENOMEM;
        if (!mkdtemp(dir))
                return -errno;
        if (mount(node, dir, fs, flags, options) < 0) {
                int r = -errno;
                (void) rmdir(dir);
                return r;
        }
        *ret = (DeviceMount){ .dir = TAKE_PTR(dir), .ours = true };
        return 0;
}

void device_umount(DeviceMount *m) {
        if (m->ours) {
                if (umount2(m->dir, 0) < 0)
                        log_warning_errno(errno, "Failed to unmount %s: %m", m->dir);
                (void) rmdir(m->dir);
        }
        free(m->dir);
        *m = (DeviceMount){};
}

int device_lock_table(const char *path) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);

        if (fd < 0)
                return -errno;
        /* udev holds an exclusive lock only while it re-reads the table: a moment. */
        for (unsigned i = 0; flock(fd, LOCK_SH | LOCK_NB) < 0; i++) {
                if (errno != EWOULDBLOCK)
                        return -errno;
                if (i == 200) {
                        log_warning("%s stays locked by another program; going on without the lock.", path);
                        return -EWOULDBLOCK;
                }
                usleep(50 * 1000);
        }
        return TAKE_FD(fd);
}

int device_adopt(int fd, const char *path, Device *ret) {
        _cleanup_close_ int owned = fd;
        char target[PATH_MAX] = "(a descriptor)";
        struct stat st;
        uint64_t size;
        unsigned sector = 512;

        if (fstat(fd, &st) < 0)
                return -errno;
        if (S_ISBLK(st.st_mode)) {
                if (ioctl(fd, BLKGETSIZE64, &size) < 0)
                        return -errno;
                (void) ioctl(fd, BLKSSZGET, &sector);
        } else if (S_ISREG(st.st_mode))
                size = (uint64_t) st.st_size;
        else
                return -ENOTBLK;
        if (!path) { /* what it was opened as */
                char link[64];
                snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
                ssize_t n = readlink(link, target, sizeof(target) - 1);
                if (n > 0)
                        target[n] = 0;
        }
        *ret = (Device){ .fd = TAKE_FD(owned),
                         .direct_fd = -EBADF,
                         .sector_size = sector,
                         .is_block = S_ISBLK(st.st_mode),
                         .size = size,
                         .path = strdup(path ?: target) };
        if (!ret->path) {
                device_close(ret);
                return -ENOMEM;
        }
        return 0;
}

int device_open(const char *path, int flags, Device *ret, char **ret_holder) {
        _cleanup_close_ int fd = -EBADF;
        struct stat st;
        int r;

        *ret_holder = NULL;
        if (stat(path, &st) < 0)
                return -errno;
        if (flags != O_RDONLY) {
                *ret_holder = device_mounted_at(path);
                if (*ret_holder)
                        return -EBUSY;
                /* Claim a block device: the kernel refuses while a filesystem or another claimer holds it.
                 */
                if (S_ISBLK(st.st_mode))
                        flags |= O_EXCL;
        }
        fd = open(path, flags | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        r = device_adopt(TAKE_FD(fd), path, ret);
        if (r < 0)
                return r;
        /* The bulk of a clone goes around the page cache: a copy less each way, and the cache is not filled
         * with a disk nobody reads again. Not claimed again: the first open holds the claim. */
        if (ret->is_block)
                ret->direct_fd = open(path, (flags & ~O_EXCL) | O_DIRECT | O_CLOEXEC | O_NOCTTY);
        return 0;
}

void device_close(Device *d) {
        if (d->fd >= 0)
                close(d->fd);
        if (d->direct_fd >= 0)
                close(d->direct_fd);
        d->fd = d->direct_fd = -EBADF;
        free(d->path);
        d->path = NULL;
}

void *device_buffer_new(size_t size) {
        void *p = NULL;
        return posix_memalign(&p, DEVICE_ALIGN, size) == 0 ? p : NULL;
}

static bool direct_ok(Device *d, const void *buf, size_t size, uint64_t offset) {
        return d->direct_fd >= 0 && !__atomic_load_n(&d->direct_broken, __ATOMIC_RELAXED) &&
               (uintptr_t) buf % DEVICE_ALIGN == 0 && size % d->sector_size == 0 &&
               offset % d->sector_size == 0;
}

/* O_DIRECT refused after all (a device or filesystem that cannot): the page cache from now on. The
 * descriptor stays open until device_close(): a reader's thread may be using it. */
static void direct_failed(Device *d) {
        log_debug("O_DIRECT on %s failed, going through the page cache: %m", d->path);
        __atomic_store_n(&d->direct_broken, true, __ATOMIC_RELAXED); /* reader threads look at it too */
}

int device_pwrite(Device *d, const void *buf, size_t size, uint64_t offset) {
        if (direct_ok(d, buf, size, offset)) {
                int r = pwrite_full(d->direct_fd, buf, size, offset);
                if (r != -EINVAL)
                        return r;
                errno = -r;
                direct_failed(d);
        }
        return pwrite_full(d->fd, buf, size, offset);
}

int device_pread(Device *d, void *buf, size_t size, uint64_t offset) {
        if (direct_ok(d, buf, size, offset)) {
                int r = pread_full(d->direct_fd, buf, size, offset);
                if (r != -EINVAL)
                        return r;
                errno = -r;
                direct_failed(d);
        }
        return pread_full(d->fd, buf, size, offset);
}

static bool unsupported(int e) {
        return IN_SET(e, EOPNOTSUPP, EINVAL, ENOTTY, ENODEV);
}

int device_zero(Device *d, uint64_t offset, uint64_t length) {
        static const uint8_t zeroes[64 * 1024];

        /* A punched hole: a file's blocks freed; on a disk, blocks unmapped where the device promises they
         * read back as zeroes then (the kernel refuses where it does not, rather than writing). */
        if (fallocate(d->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t) offset, (off_t) length) >=
            0)
                return 0;
        if (!unsupported(errno))
                return -errno;
        if (d->is_block) { /* the device zeroes them itself (WRITE ZEROES), or the kernel writes them */
                uint64_t range[2] = { offset, length };
                if (ioctl(d->fd, BLKZEROOUT, range) >= 0)
                        return 0;
                if (!unsupported(errno))
                        return -errno;
        }
        /* Neither: write them. */
        for (uint64_t done = 0; done < length;) {
                size_t n = (size_t) MIN(length - done, (uint64_t) sizeof(zeroes));
                int r = device_pwrite(d, zeroes, n, offset + done);
                if (r < 0)
                        return r;
                done += n;
        }
        return 0;
}

int device_discard(Device *d, uint64_t offset, uint64_t length) {
        uint64_t range[2] = { offset, length };
        int r = d->is_block ? ioctl(d->fd, BLKDISCARD, range)
                            : fallocate(d->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t) offset,
                                        (off_t) length);
        if (r >= 0)
                return 1;
        return unsupported(errno) ? 0 : -errno;
}

int device_unused(Device *d, CloneUnused mode, uint64_t offset, uint64_t length) {
        int r;
        switch (mode) {
        case CLONE_UNUSED_ZERO:
                return device_zero(d, offset, length);
        case CLONE_UNUSED_DISCARD:
                r = device_discard(d, offset, length);
                if (r == 0 && !d->cannot_discard) {
                        log_info("%s cannot discard; what no filesystem uses stays as it was.", d->path);
                        d->cannot_discard = true;
                }
                return MIN(r, 0);
        default:
                return 0;
        }
}

int device_read_chunk(Device *d, const UsedMap *map, uint64_t offset, size_t size, uint8_t *buf,
                      FrameType *ret_type, XXH128_hash_t *ret_hash) {
        int r;

        if (map && used_map_is_unused(map, offset, size)) {
                *ret_type = FRAME_SKIP;
                *ret_hash = frame_skip_hash(size);
                return 0;
        }
        r = device_pread(d, buf, size, offset);
        if (r < 0)
                return log_error_errno(r, "Failed to read %s at %" PRIu64 ": %m", d->path, offset);
        if (map)
                used_map_clear(map, offset, buf, size);
        if (frame_is_zero(buf, size)) {
                *ret_type = FRAME_ZERO;
                *ret_hash = frame_zero_hash(size);
        } else {
                *ret_type = FRAME_DATA;
                *ret_hash = frame_chunk_hash(buf, size);
        }
        return 0;
}

int device_finish(Device *d) {
        if (fsync(d->fd) < 0)
                return -errno;
        if (!d->is_block)
                return 0;
        if (ioctl(d->fd, BLKFLSBUF, 0) < 0)
                log_debug_errno(errno, "BLKFLSBUF on %s failed, ignoring: %m", d->path);
        /* The new partition table is the kernel's too; a disk without partition scanning says EINVAL. */
        if (ioctl(d->fd, BLKRRPART, 0) < 0)
                log_debug_errno(errno, "Re-reading the partition table of %s failed, ignoring: %m", d->path);
        return 0;
}

int device_digest(Device *d, Digest *digest, uint64_t offset, uint8_t *scratch, const UsedMap *map) {
        while (digest->chunks * FRAME_CHUNK < offset) {
                uint64_t o = digest->chunks * FRAME_CHUNK;
                XXH128_hash_t hash;
                FrameType type;
                int r = device_read_chunk(d, map, o, (size_t) MIN(FRAME_CHUNK, d->size - o), scratch, &type,
                                          &hash);
                if (r < 0)
                        return r;
                digest_feed(digest, hash);
        }
        return 0;
}
