/* SPDX-License-Identifier: MIT */
/* The disk a job reads or writes: a block device in the field, a block device or a plain file in tests. */
#pragma once

#include "domain.h"
#include "frame.h"
#include "macro.h"
#include "usedmap.h"

typedef struct Device {
        char *path;
        int fd;
        int direct_fd; /* a block device opened again with O_DIRECT, for whole aligned chunks */
        bool direct_broken; /* it refused: the page cache from now on */
        bool cannot_discard; /* device_unused() found so, and said it once */
        unsigned sector_size;
        bool is_block;
        uint64_t size;
} Device;

/* A Device that holds nothing (device_close() does nothing with it). */
#define DEVICE_NULL ((Device){ .fd = -EBADF, .direct_fd = -EBADF })

/* Memory for chunks that device_pread() and device_pwrite() can move without the page cache. */
#define DEVICE_ALIGN 4096
void *device_buffer_new(size_t size);

/* Opens path (O_RDONLY or O_RDWR); a block device opened for writing is claimed exclusively, so the kernel
 * refuses while something has it mounted. -EBUSY says it is mounted or held, with *ret_holder naming by
 * what if known. */
int device_open(const char *path, int flags, Device *ret, char **ret_holder);
void device_close(Device *d);
/* A Device of fd (taken, even on failure), a block device or a file someone else opened (udisks2 for a
 * desktop user); path names it, or NULL for what the kernel says it is. Without O_DIRECT. */
int device_adopt(int fd, const char *path, Device *ret);
/* A shared BSD lock on the whole disk at path (systemd's block device locking). While it is held, udev does
 * not re-read the partition table, which it does after anyone closed the disk opened for writing, taking
 * every partition node away for a moment; udev's own event processing goes on. Not an exclusive lock:
 * libparted (Debian's) waits for udev to settle, and udev holds back events of an exclusively locked disk.
 * Returns the fd to close to unlock; waits up to 10 s while udev re-reads the table. */
int device_lock_table(const char *path);
/* The mount point of the device or one of its partitions, if any (malloc'd), else NULL. */
char *device_mounted_at(const char *path);
/* A filesystem to look into or resize: where it is mounted already, or a mount of node made for the moment
 * under /tmp (fs, flags and options as for mount(2)). */
typedef struct DeviceMount {
        char *dir;
        bool ours;
} DeviceMount;
int device_mount(const char *node, const char *fs, unsigned long flags, const char *options, DeviceMount *ret);
/* Unmounts and removes a mount of our own; leaves one that was there before. */
void device_umount(DeviceMount *m);
/* Makes [offset, offset + length) read as zeroes, as cheaply as the device allows: a punched hole (a file's
 * blocks freed, a disk's unmapped where it promises zeroes after), else BLKZEROOUT, else plain writes. */
int device_zero(Device *d, uint64_t offset, uint64_t length);
/* Tells the device [offset, offset + length) holds nothing worth keeping (BLKDISCARD; a punched hole in a
 * file): 1 if it took it, 0 if it cannot discard (the bytes stay as they were), else -errno. */
int device_discard(Device *d, uint64_t offset, uint64_t length);
/* Does with [offset, offset + length), which no filesystem uses and which was not sent, what mode says:
 * discard it (where the device can: else it stays as it was, d->cannot_discard is set and logged once),
 * make it read as zeroes, or leave it. 0 or -errno. */
int device_unused(Device *d, CloneUnused mode, uint64_t offset, uint64_t length);
/* Reads the chunk at offset (size bytes) into buf as the stream sends it: one map says no filesystem uses
 * is not read (FRAME_SKIP); else its unused bytes are cleared, and it is FRAME_ZERO or FRAME_DATA. Sets its
 * content hash for the digest. map NULL: every chunk is read as it is. */
int device_read_chunk(Device *d, const UsedMap *map, uint64_t offset, size_t size, uint8_t *buf,
                      FrameType *ret_type, XXH128_hash_t *ret_hash);
/* Reads and writes: straight between buf and the disk (O_DIRECT) where buf is a device_buffer_new() one
 * and offset and size fall on sectors, else through the page cache. */
int device_pwrite(Device *d, const void *buf, size_t size, uint64_t offset);
int device_pread(Device *d, void *buf, size_t size, uint64_t offset);
/* Brings the digest up to offset by reading the device from where the digest stands (scratch holds a
 * chunk), chunk by chunk as device_read_chunk() with map: after a restart, what was read or written before
 * counts again. */
int device_digest(Device *d, Digest *digest, uint64_t offset, uint8_t *scratch, const UsedMap *map);
/* Makes everything written durable: fsync and, for block devices, drop the buffer cache and have the
 * kernel read the partition table again. */
int device_finish(Device *d);
