/* SPDX-License-Identifier: MIT */
/* Reaching a staging backend from userspace, so neither the controller nor the deploy image needs a kernel
 * NFS or iSCSI client: an NFS export through libnfs, an iSCSI LUN through libiscsi. Every failure comes
 * back as a sentence (*ret_why) that says which step failed and what the server answered. */
#pragma once

#include "domain.h"

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "macro.h"

struct nfs_context;
struct nfsfh;
struct iscsi_context;

/* Where a backend is, in the keys of its configuration: nfs {server, export, options, version}, iscsi
 * {portal, target, lun, chap_user} — the secret is given apart, as the configuration never holds it. */
typedef struct StorageLocation {
        BackendType type;
        json_object *config;
        const char *secret;
} StorageLocation;

#define STORAGE_IO_TIMEOUT_SEC 15

/* Mounts the export with the version configured (default 3); force_v3 for writing data, as libnfs 4.0's
 * NFSv4 client cannot encode writes larger than about 3.9 KiB. */
int storage_nfs_connect(const StorageLocation *l, bool force_v3, struct nfs_context **ret, char **ret_why);
/* Creates directory path and its parents (relative to the export; existing ones are fine). */
int storage_nfs_mkdir_p(struct nfs_context *nfs, const char *path, char **ret_why);
/* Removes path and everything below it; a missing path is fine. */
int storage_nfs_rm_rf(struct nfs_context *nfs, const char *path, char **ret_why);
int storage_nfs_space(struct nfs_context *nfs, uint64_t *ret_total, uint64_t *ret_available, char **ret_why);
/* Writes and reads back a small file in the export's top directory, then removes it. */
int storage_nfs_probe(struct nfs_context *nfs, char **ret_why);
int storage_nfs_pwrite(struct nfs_context *nfs, struct nfsfh *fh, const void *buf, size_t size, uint64_t offset);
int storage_nfs_pread(struct nfs_context *nfs, struct nfsfh *fh, void *buf, size_t size, uint64_t offset);

typedef struct IscsiLun {
        struct iscsi_context *iscsi;
        int lun;
        uint32_t block_size;
        uint64_t size;
        bool reads_zeroes; /* unmapped blocks read back as zeroes (LBPRZ) */
        unsigned in_flight; /* IscsiIos submitted and not finished */
} IscsiLun;

/* Logs in to the target (with CHAP if configured). lun < 0: the configured one. initiator: our IQN suffix,
 * such as "controller" or "node-<id>". */
int storage_iscsi_connect(const StorageLocation *l, int lun, const char *initiator, IscsiLun *ret, char **ret_why);
/* READ CAPACITY: fills in block_size, size and reads_zeroes. */
int storage_iscsi_capacity(IscsiLun *l, char **ret_why);
void storage_iscsi_disconnect(IscsiLun *l);
/* Whole blocks only: offset and size are multiples of the block size. */
int storage_iscsi_pwrite(IscsiLun *l, const void *buf, size_t size, uint64_t offset, char **ret_why);
int storage_iscsi_pread(IscsiLun *l, void *buf, size_t size, uint64_t offset, char **ret_why);

/* An I/O in flight: one command waits a round trip, several keep the link and the target busy. Submitted
 * with storage_iscsi_submit(), it is finished once storage_iscsi_service() has set done (with error < 0 and
 * why if it failed). Its buffer stays the caller's throughout (a READ's data lands in it when it finishes).
 * Nothing may be freed while in flight: storage_iscsi_drain() first. */
typedef struct IscsiIo {
        IscsiLun *lun; /* set by storage_iscsi_submit() */
        void *buf;
        size_t size; /* whole blocks, as for storage_iscsi_pwrite() */
        uint64_t offset;
        bool write, in_flight, done;
        int error;
        char *why;
} IscsiIo;

int storage_iscsi_submit(IscsiLun *l, IscsiIo *io, char **ret_why);
/* Serves the connection until at least one I/O in flight finishes (any number may). */
int storage_iscsi_service(IscsiLun *l, char **ret_why);
/* Until nothing is in flight; if the connection fails, what is left is cancelled (finished, failed). */
void storage_iscsi_drain(IscsiLun *l);

/* How a staged image lies on a backend. NFS: <directory>/disk.img.zst (independent zstd frames of
 * STAGING_SEGMENT bytes of disk each, so a reader can resume at any segment) and manifest.json, both written
 * under .partial names and renamed into place when complete, the manifest last. iSCSI: the raw disk from
 * LBA 0, then at staging_manifest_offset() a header ("PBMANIF1", u64 little-endian length) and the manifest
 * JSON; the header is written last. */
#define STAGING_IMAGE "disk.img.zst"
#define STAGING_MANIFEST "manifest.json"
#define STAGING_PARTIAL ".partial"
#define STAGING_SEGMENT (UINT64_C(64) << 20)
#define STAGING_MANIFEST_MAGIC "PBMANIF1"
#define STAGING_MARGIN_PERCENT 15

/* Where the manifest starts on a LUN for a disk of disk_size bytes, and the LUN size that holds both. */
uint64_t staging_manifest_offset(uint64_t disk_size);
uint64_t staging_lun_size(uint64_t disk_size);
