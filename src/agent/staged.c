/* SPDX-License-Identifier: MIT */
/* Staged clones: the source uploads its disk to the staging area the controller provisioned, the target
 * downloads it once the upload is ready. NFS is reached with libnfs (the image as independent zstd frames of
 * 64 MiB of disk each, and a manifest with every 1 MiB chunk's hash), iSCSI with libiscsi (the raw disk on
 * the LUN, the manifest behind it). The blocking transfer runs in a thread of its own; the event loop keeps
 * following the session and sending reports. The target checks every chunk against the manifest before it
 * writes it, and keeps a durable resume point at segment boundaries in its journal. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <nfsc/libnfs.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/time.h>
#include <unistd.h>
#include <zstd.h>

#include "agent.h"
#include "device.h"
#include "domain.h"
#include "format.h"
#include "frame.h"
#include "job.h"
#include "journal.h"
#include "log.h"
#include "queue.h"
#include "scan.h"
#include "storage-io.h"
#include "util.h"

#define SYNC_EVERY STAGING_SEGMENT
#define NFS_IO (UINT64_C(4) << 20)

struct Stager {
        Agent *agent;
        bool upload; /* the source; else the target */
        Device dev;
        json_object *staging; /* from GetStaging */
        bool asked, reported_done;
        bool ready_reported; /* source: ReportSourceReady queued, with the size the plan allows */
        char *journal_path;

        pthread_t thread;
        bool thread_started;
        int event_fd;
        sd_event_source *event_source, *progress_timer;
        ProgressMeter progress;
        _Atomic uint64_t bytes;
        _Atomic bool cancel;
        uint64_t started_at;
        uint64_t resume; /* target: the offset the journal says is written */
        /* Set by the thread before it signals the end. */
        char *why, *digest;
};

/* --max-rate: holds the thread back so that it moves no more than that many bytes a second. */
static void pace(Stager *s, uint64_t bytes) {
        uint64_t rate = s->agent->settings.max_rate;
        while (rate > 0 && !s->cancel) {
                uint64_t due = s->started_at + bytes * USEC_PER_SEC / rate, now = now_monotonic_usec();
                if (due <= now)
                        return;
                (void) usleep((useconds_t) MIN(due - now, USEC_PER_SEC / 10));
        }
}

typedef struct Manifest {
        uint64_t size, sector_size;
        const char *digest, *hashes; /* hashes: 32 hex digits per chunk */
        json_object *segments;       /* nfs: [[offset, length], …] of each zstd frame */
        json_object *root;
} Manifest;

static int fail(Stager *s, int r, const char *format, ...) _printf_(3, 4);
static int fail(Stager *s, int r, const char *format, ...) {
        va_list ap;
        if (!s->why) {
                va_start(ap, format);
                if (vasprintf(&s->why, format, ap) < 0)
                        s->why = NULL;
                va_end(ap);
        }
        return r < 0 ? r : -EIO;
}

static StorageLocation location(Stager *s, json_object *config) {
        json_object *st = s->staging;
        bool nfs = backend_type_from_string(json_get_string(st, "backend")) == BACKEND_NFS;
        json_object_object_add(config, nfs ? "server" : "portal", json_object_new_string(json_get_string(st, "server")));
        json_object_object_add(config, nfs ? "export" : "target", json_object_new_string(json_get_string(st, "path")));
        if (json_get_string(st, "options"))
                json_object_object_add(config, "options", json_object_new_string(json_get_string(st, "options")));
        if (json_get_string(st, "chapUser"))
                json_object_object_add(config, "chap_user", json_object_new_string(json_get_string(st, "chapUser")));
        return (StorageLocation){ .type = nfs ? BACKEND_NFS : BACKEND_ISCSI,
                                  .config = config,
                                  .secret = json_get_string(st, "chapSecret") };
}

static char *path_in(Stager *s, const char *name, bool partial) {
        char *p;
        return asprintf(&p, "%s/%s%s", json_get_string(s->staging, "directory"), name, partial ? STAGING_PARTIAL : "") < 0
                       ? NULL
                       : p;
}

static json_object *manifest_new(Stager *s, const char *digest, const char *hashes, json_object *segments) {
        json_object *m = json_object_new_object();
        DiskInfo info = {};
        int sector = 512;

        if (s->dev.is_block)
                (void) ioctl(s->dev.fd, BLKSSZGET, &sector);
        json_object_object_add(m, "version", json_object_new_int(1));
        json_object_object_add(m, "size", json_object_new_int64((int64_t) s->dev.size));
        json_object_object_add(m, "sectorSize", json_object_new_int(sector));
        json_object_object_add(m, "chunkSize", json_object_new_int64((int64_t) FRAME_CHUNK));
        json_object_object_add(m, "digest", json_object_new_string(digest));
        json_object_object_add(m, "chunkHashes", json_object_new_string(hashes));
        json_object_object_add(m, "compression", json_object_new_string(segments ? "zstd" : "none"));
        if (segments) {
                json_object_object_add(m, "segmentSize", json_object_new_int64((int64_t) STAGING_SEGMENT));
                json_object_object_add(m, "segments", segments);
        }
        /* The partition table as a scan reads it, for whoever looks at the image later. */
        json_object_object_add(m, "partitionTable",
                               scan_disk(s->dev.path, &info) >= 0 ? disk_info_to_json(&info) : NULL);
        disk_info_done(&info);
        json_object_object_add(m, "createdAt", json_object_new_int64((int64_t) now_realtime_usec()));
        return m;
}

static int manifest_parse(Stager *s, const char *text, Manifest *ret) {
        Manifest m = { .root = json_tokener_parse(text) };
        json_object *v;

        if (!m.root)
                return fail(s, -EBADMSG, "the manifest is not JSON");
        m.size = (uint64_t) json_get_int(m.root, "size");
        m.sector_size = (uint64_t) json_get_int(m.root, "sectorSize");
        m.digest = json_get_string(m.root, "digest");
        m.hashes = json_get_string(m.root, "chunkHashes");
        if (json_object_object_get_ex(m.root, "segments", &v))
                m.segments = v;
        if (m.size == 0 || !m.digest || !m.hashes || (uint64_t) json_get_int(m.root, "chunkSize") != FRAME_CHUNK ||
            strlen(m.hashes) != (m.size + FRAME_CHUNK - 1) / FRAME_CHUNK * 32) {
                json_object_put(m.root);
                return fail(s, -EBADMSG, "the manifest lacks its size, digest or chunk hashes");
        }
        *ret = m;
        return 0;
}

/* The upload: reads each chunk, hashes it for the manifest and the digest, and hands it on. */
typedef int (*ChunkSink)(Stager *s, void *ctx, const uint8_t *chunk, size_t n, uint64_t offset, bool zero);

static int read_disk(Stager *s, ChunkSink sink, void *ctx, char **ret_hashes, char **ret_digest) {
        uint64_t chunks = (s->dev.size + FRAME_CHUNK - 1) / FRAME_CHUNK;
        _cleanup_free_ uint8_t *chunk = malloc(FRAME_CHUNK);
        _cleanup_free_ char *hashes = malloc(chunks * 32 + 1);
        Digest digest = {};
        int r;

        if (!chunk || !hashes || digest_init(&digest) < 0)
                return -ENOMEM;
        for (uint64_t i = 0, off = 0; i < chunks; i++, off += FRAME_CHUNK) {
                size_t n = (size_t) MIN(FRAME_CHUNK, s->dev.size - off);
                if (s->cancel) {
                        r = fail(s, -ECANCELED, "stopped");
                        goto out;
                }
                r = device_pread(&s->dev, chunk, n, off);
                if (r < 0) {
                        r = fail(s, r, "reading %s at %" PRIu64 " failed: %s", s->dev.path, off, strerror(-r));
                        goto out;
                }
                XXH128_hash_t h = frame_chunk_hash(chunk, n);
                frame_hash_hex(h, hashes + i * 32);
                digest_feed(&digest, h);
                r = sink(s, ctx, chunk, n, off, frame_is_zero(chunk, n));
                if (r < 0)
                        goto out;
                s->bytes = off + n;
                pace(s, off + n);
        }
        hashes[chunks * 32] = 0;
        *ret_digest = digest_string(&digest);
        *ret_hashes = TAKE_PTR(hashes);
        r = *ret_digest ? 0 : -ENOMEM;
out:
        digest_done(&digest);
        return r;
}

typedef struct NfsUpload {
        struct nfs_context *nfs;
        struct nfsfh *fh;
        ZSTD_CCtx *cctx;
        uint8_t *out;
        size_t out_size, out_len;
        uint64_t written, segment_start;
        json_object *segments;
} NfsUpload;

static int nfs_flush(Stager *s, NfsUpload *u) {
        int r;
        if (u->out_len == 0)
                return 0;
        r = storage_nfs_pwrite(u->nfs, u->fh, u->out, u->out_len, u->written);
        if (r < 0)
                return fail(s, r, "writing the image to the export failed: %s", nfs_get_error(u->nfs));
        u->written += u->out_len;
        u->out_len = 0;
        return 0;
}

static int zstd_feed(Stager *s, NfsUpload *u, const void *data, size_t n, ZSTD_EndDirective mode) {
        ZSTD_inBuffer in = { data, n, 0 };
        size_t left;
        do {
                if (u->out_size - u->out_len < ZSTD_CStreamOutSize()) {
                        int r = nfs_flush(s, u);
                        if (r < 0)
                                return r;
                }
                ZSTD_outBuffer out = { u->out + u->out_len, u->out_size - u->out_len, 0 };
                left = ZSTD_compressStream2(u->cctx, &out, &in, mode);
                if (ZSTD_isError(left))
                        return fail(s, -EIO, "zstd: %s", ZSTD_getErrorName(left));
                u->out_len += out.pos;
        } while (mode == ZSTD_e_continue ? in.pos < in.size : left != 0);
        return 0;
}

static int nfs_chunk(Stager *s, void *ctx, const uint8_t *chunk, size_t n, uint64_t offset, bool zero) {
        NfsUpload *u = ctx;
        bool segment_end = (offset + n) % STAGING_SEGMENT == 0 || offset + n == s->dev.size;
        int r;
        (void) zero;

        r = zstd_feed(s, u, chunk, n, segment_end ? ZSTD_e_end : ZSTD_e_continue);
        if (r < 0 || !segment_end)
                return r;
        /* Each segment is a frame of its own, where a reader may start. */
        uint64_t end = u->written + u->out_len;
        json_object *seg = json_object_new_array();
        json_object_array_add(seg, json_object_new_int64((int64_t) u->segment_start));
        json_object_array_add(seg, json_object_new_int64((int64_t) (end - u->segment_start)));
        json_object_array_add(u->segments, seg);
        u->segment_start = end;
        return 0;
}

static int nfs_write_file(Stager *s, struct nfs_context *nfs, const char *name, const char *text) {
        _cleanup_free_ char *partial = path_in(s, name, true), *final = path_in(s, name, false);
        struct nfsfh *fh;
        int r;

        if (!partial || !final)
                return -ENOMEM;
        r = nfs_open2(nfs, partial, O_CREAT | O_WRONLY | O_TRUNC, 0600, &fh);
        if (r >= 0) {
                r = storage_nfs_pwrite(nfs, fh, text, strlen(text), 0);
                if (r >= 0)
                        r = nfs_fsync(nfs, fh);
                nfs_close(nfs, fh);
        }
        if (r >= 0)
                r = nfs_rename(nfs, partial, final);
        return r < 0 ? fail(s, r, "writing %s to the export failed: %s", final, nfs_get_error(nfs)) : 0;
}

static int upload_nfs(Stager *s, struct nfs_context *nfs) {
        _cleanup_free_ char *image = path_in(s, STAGING_IMAGE, true), *image_final = path_in(s, STAGING_IMAGE, false);
        _cleanup_free_ char *hashes = NULL, *digest = NULL;
        NfsUpload u = { .nfs = nfs, .out_size = NFS_IO + ZSTD_CStreamOutSize() };
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        int r;

        if (!image || !image_final)
                return -ENOMEM;
        /* A manifest left by an earlier try must not vouch for this one. */
        _cleanup_free_ char *old_manifest = path_in(s, STAGING_MANIFEST, false);
        (void) nfs_unlink(nfs, old_manifest);
        r = nfs_open2(nfs, image, O_CREAT | O_WRONLY | O_TRUNC, 0600, &u.fh);
        if (r < 0)
                return fail(s, r, "creating %s on the export failed: %s", image, nfs_get_error(nfs));
        u.cctx = ZSTD_createCCtx();
        u.out = malloc(u.out_size);
        u.segments = json_object_new_array();
        if (!u.cctx || !u.out || !u.segments) {
                r = -ENOMEM;
                goto out;
        }
        (void) ZSTD_CCtx_setParameter(u.cctx, ZSTD_c_compressionLevel, 1);
        (void) ZSTD_CCtx_setParameter(u.cctx, ZSTD_c_checksumFlag, 1);
        (void) ZSTD_CCtx_setParameter(u.cctx, ZSTD_c_nbWorkers, (int) MAX(cpus, 1L));
        r = read_disk(s, nfs_chunk, &u, &hashes, &digest);
        if (r >= 0)
                r = nfs_flush(s, &u);
        if (r >= 0 && (r = nfs_fsync(nfs, u.fh)) < 0)
                r = fail(s, r, "flushing the image on the export failed: %s", nfs_get_error(nfs));
        nfs_close(nfs, u.fh);
        u.fh = NULL;
        if (r >= 0 && (r = nfs_rename(nfs, image, image_final)) < 0)
                r = fail(s, r, "renaming the image into place failed: %s", nfs_get_error(nfs));
        if (r >= 0) {
                json_object *m = manifest_new(s, digest, hashes, json_object_get(u.segments));
                r = nfs_write_file(s, nfs, STAGING_MANIFEST, json_object_to_json_string_ext(m, JSON_C_TO_STRING_PLAIN));
                json_object_put(m);
        }
        if (r >= 0) {
                log_info("Uploaded %s as %s of zstd (%.1f %% of the disk).", FORMAT_BYTES(s->dev.size),
                         FORMAT_BYTES(u.written), 100.0 * (double) u.written / (double) s->dev.size);
                s->digest = TAKE_PTR(digest);
        }
out:
        if (u.fh)
                nfs_close(nfs, u.fh);
        ZSTD_freeCCtx(u.cctx);
        free(u.out);
        json_object_put(u.segments);
        return r;
}

typedef struct IscsiUpload {
        IscsiLun *lun;
        bool zeroed;
        uint8_t *pad;
} IscsiUpload;

static int iscsi_write_padded(Stager *s, IscsiLun *lun, const uint8_t *data, size_t n, uint64_t offset, uint8_t *pad) {
        _cleanup_free_ char *why = NULL;
        size_t whole = n / lun->block_size * lun->block_size;
        int r = whole ? storage_iscsi_pwrite(lun, data, whole, offset, &why) : 0;
        if (r >= 0 && whole < n) { /* the last block, filled up with zeroes */
                memset(pad, 0, lun->block_size);
                memcpy(pad, data + whole, n - whole);
                r = storage_iscsi_pwrite(lun, pad, lun->block_size, offset + whole, &why);
        }
        return r < 0 ? fail(s, r, "%s", strna(why)) : 0;
}

static int iscsi_chunk(Stager *s, void *ctx, const uint8_t *chunk, size_t n, uint64_t offset, bool zero) {
        IscsiUpload *u = ctx;
        if (zero && u->zeroed) /* the LUN reads zeroes there already */
                return 0;
        return iscsi_write_padded(s, u->lun, chunk, n, offset, u->pad);
}

static int upload_iscsi(Stager *s, IscsiLun *lun) {
        _cleanup_free_ char *hashes = NULL, *digest = NULL;
        _cleanup_free_ uint8_t *block = calloc(1, lun->block_size);
        uint64_t at = staging_manifest_offset(s->dev.size);
        IscsiUpload u = { .lun = lun, .pad = block };
        json_object *zeroed;
        int r;

        if (!block)
                return -ENOMEM;
        u.zeroed = json_object_object_get_ex(s->staging, "zeroed", &zeroed) && json_object_get_boolean(zeroed);
        if (lun->size < staging_lun_size(s->dev.size))
                return fail(s, -ENOSPC, "LUN %d has %s; this disk needs %s with its manifest", lun->lun,
                            FORMAT_BYTES(lun->size), FORMAT_BYTES(staging_lun_size(s->dev.size)));
        /* No manifest header until the image below it is whole. */
        r = iscsi_write_padded(s, lun, block, lun->block_size, at, block);
        if (r >= 0)
                r = read_disk(s, iscsi_chunk, &u, &hashes, &digest);
        if (r < 0)
                return r;
        json_object *m = manifest_new(s, digest, hashes, NULL);
        const char *text = json_object_to_json_string_ext(m, JSON_C_TO_STRING_PLAIN);
        uint64_t len = strlen(text);
        r = iscsi_write_padded(s, lun, (const uint8_t *) text, len, at + lun->block_size, block);
        if (r >= 0) {
                memset(block, 0, lun->block_size);
                memcpy(block, STAGING_MANIFEST_MAGIC, 8);
                for (int i = 0; i < 8; i++)
                        block[8 + i] = (uint8_t) (len >> (8 * i));
                r = iscsi_write_padded(s, lun, block, lun->block_size, at, block);
        }
        json_object_put(m);
        if (r >= 0)
                s->digest = TAKE_PTR(digest);
        return r;
}

/* The download: each chunk checked against the manifest, then written. */
typedef struct Writer {
        Stager *s;
        const Manifest *m;
        Digest digest;
        uint64_t offset, synced;
        uint8_t *chunk;
        size_t have;
} Writer;

static int journal_save(Stager *s, uint64_t offset) {
        ResumePoint p = { .session = s->agent->settings.session,
                          .device = s->dev.path,
                          .size = s->dev.size,
                          .offset = offset };
        return journal_save_resume(s->journal_path, &p);
}

/* Where the journal says to resume, at a segment's start; 0 if it is not this job's. */
static uint64_t journal_load(Stager *s) {
        ResumePoint p = { .session = s->agent->settings.session,
                          .device = s->dev.path,
                          .size = s->dev.size };
        uint64_t offset;
        if (journal_load_resume(s->journal_path, &p, &offset, NULL) <= 0)
                return 0;
        return offset / STAGING_SEGMENT * STAGING_SEGMENT;
}

/* A whole chunk (or the disk's last) is in w->chunk: check it, write it. */
static int writer_put(Writer *w) {
        Stager *s = w->s;
        size_t n = w->have;
        uint64_t index = w->offset / FRAME_CHUNK;
        XXH128_hash_t h = frame_chunk_hash(w->chunk, n);
        char hex[33];
        int r;

        frame_hash_hex(h, hex);
        if (strncmp(hex, w->m->hashes + index * 32, 32) != 0)
                return fail(s, -EBADMSG, "the chunk at %" PRIu64 " does not match the manifest's hash; the staged "
                            "image is damaged. Start the session again to upload it anew", w->offset);
        r = frame_is_zero(w->chunk, n) ? device_zero(&s->dev, w->offset, n) : device_pwrite(&s->dev, w->chunk, n, w->offset);
        if (r < 0)
                return fail(s, r, "writing %s at %" PRIu64 " failed: %s", s->dev.path, w->offset, strerror(-r));
        digest_feed(&w->digest, h);
        w->offset += n;
        w->have = 0;
        s->bytes = w->offset;
        pace(s, w->offset - s->resume);
        if (w->offset % STAGING_SEGMENT == 0 && w->offset - w->synced >= SYNC_EVERY) {
                if (fdatasync(s->dev.fd) < 0 || journal_save(s, w->offset) < 0)
                        return fail(s, -errno, "making %s durable failed: %m", s->dev.path);
                w->synced = w->offset;
        }
        return 0;
}

/* Appends bytes to the current chunk, putting each as it fills. */
static int writer_feed(Writer *w, const uint8_t *data, size_t n) {
        while (n > 0) {
                size_t want = (size_t) MIN(FRAME_CHUNK, w->m->size - w->offset) - w->have;
                size_t take = MIN(want, n);
                if (w->offset >= w->m->size)
                        return fail(w->s, -EBADMSG, "the image is longer than the manifest says");
                memcpy(w->chunk + w->have, data, take);
                w->have += take;
                data += take;
                n -= take;
                if (w->have == MIN(FRAME_CHUNK, w->m->size - w->offset)) {
                        int r = writer_put(w);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

static int download_nfs(Stager *s, struct nfs_context *nfs, const Manifest *m, Writer *w) {
        _cleanup_free_ char *image = path_in(s, STAGING_IMAGE, false);
        _cleanup_free_ uint8_t *in = malloc(NFS_IO);
        _cleanup_free_ uint8_t *out = malloc(ZSTD_DStreamOutSize());
        ZSTD_DCtx *d = ZSTD_createDCtx();
        struct nfsfh *fh = NULL;
        int r = 0;

        if (!image || !in || !out || !d) {
                ZSTD_freeDCtx(d);
                return -ENOMEM;
        }
        if (!m->segments || json_object_array_length(m->segments) != (m->size + STAGING_SEGMENT - 1) / STAGING_SEGMENT) {
                ZSTD_freeDCtx(d);
                return fail(s, -EBADMSG, "the manifest does not list the image's segments");
        }
        r = nfs_open2(nfs, image, O_RDONLY, 0, &fh);
        if (r < 0) {
                ZSTD_freeDCtx(d);
                return fail(s, r, "opening %s on the export failed: %s", image, nfs_get_error(nfs));
        }
        for (size_t i = (size_t) (w->offset / STAGING_SEGMENT); r >= 0 && i < json_object_array_length(m->segments); i++) {
                json_object *seg = json_object_array_get_idx(m->segments, i);
                uint64_t pos = (uint64_t) json_object_get_int64(json_object_array_get_idx(seg, 0));
                uint64_t left = (uint64_t) json_object_get_int64(json_object_array_get_idx(seg, 1));
                size_t hint = 1;
                (void) ZSTD_DCtx_reset(d, ZSTD_reset_session_only);
                while (r >= 0 && left > 0) {
                        size_t n = (size_t) MIN(left, NFS_IO);
                        if (s->cancel)
                                return nfs_close(nfs, fh), ZSTD_freeDCtx(d), fail(s, -ECANCELED, "stopped");
                        r = storage_nfs_pread(nfs, fh, in, n, pos);
                        if (r < 0) {
                                r = fail(s, r, "reading the image from the export failed: %s", nfs_get_error(nfs));
                                break;
                        }
                        pos += n;
                        left -= n;
                        ZSTD_inBuffer ib = { in, n, 0 };
                        bool more = false; /* the last call gave output: more may be waiting without input */
                        while (r >= 0 && (ib.pos < ib.size || more)) {
                                ZSTD_outBuffer ob = { out, ZSTD_DStreamOutSize(), 0 };
                                hint = ZSTD_decompressStream(d, &ob, &ib);
                                if (ZSTD_isError(hint))
                                        r = fail(s, -EBADMSG, "the image does not decompress: %s", ZSTD_getErrorName(hint));
                                else
                                        r = writer_feed(w, out, ob.pos);
                                more = hint != 0 && ob.pos > 0;
                        }
                }
                if (r >= 0 && hint != 0)
                        r = fail(s, -EBADMSG, "segment %zu of the image is cut short", i);
        }
        nfs_close(nfs, fh);
        ZSTD_freeDCtx(d);
        return r;
}

/* The iSCSI download reads ahead in a thread of its own while the chunks before are checked and written, and
 * does not read at all what the manifest says is zeroes. */
#define READ_AHEAD 4

typedef struct ReadAhead {
        Stager *s;
        IscsiLun *lun;
        const Manifest *m;
        uint8_t *buf[READ_AHEAD];
        uint64_t next, end; /* chunk indexes */
        uint64_t produced, consumed;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        bool stop;
        int error;
        char *why;
        char zero_hex[33]; /* the hash of a whole chunk of zeroes */
} ReadAhead;

/* Whether the manifest's hash of chunk i is that of n zero bytes. */
static bool manifest_says_zero(const ReadAhead *ra, uint64_t i, size_t n, uint8_t *scratch) {
        char hex[33];
        if (n < FRAME_CHUNK) { /* the disk's last chunk, of its own length */
                memset(scratch, 0, n);
                frame_hash_hex(frame_chunk_hash(scratch, n), hex);
        }
        return strncmp(ra->m->hashes + i * 32, n < FRAME_CHUNK ? hex : ra->zero_hex, 32) == 0;
}

static void *read_ahead_run(void *data) {
        ReadAhead *ra = data;
        for (uint64_t i = ra->next; i < ra->end; i++) {
                uint64_t off = i * FRAME_CHUNK;
                size_t n = (size_t) MIN(FRAME_CHUNK, ra->m->size - off);
                size_t whole = (n + ra->lun->block_size - 1) / ra->lun->block_size * ra->lun->block_size;
                uint8_t *buf = ra->buf[i % READ_AHEAD];
                char *why = NULL;
                int r = 0;

                pthread_mutex_lock(&ra->lock);
                while (ra->produced - ra->consumed == READ_AHEAD && !ra->stop)
                        pthread_cond_wait(&ra->cond, &ra->lock);
                bool stop = ra->stop;
                pthread_mutex_unlock(&ra->lock);
                if (stop)
                        break;
                if (manifest_says_zero(ra, i, n, buf))
                        memset(buf, 0, n); /* checked against the manifest all the same */
                else
                        r = storage_iscsi_pread(ra->lun, buf, whole, off, &why);
                pthread_mutex_lock(&ra->lock);
                if (r < 0) {
                        ra->error = r;
                        ra->why = why;
                } else
                        ra->produced++;
                pthread_cond_broadcast(&ra->cond);
                pthread_mutex_unlock(&ra->lock);
                if (r < 0)
                        break;
        }
        return NULL;
}

static int download_iscsi(Stager *s, IscsiLun *lun, const Manifest *m, Writer *w) {
        ReadAhead ra = { .s = s, .lun = lun, .m = m, .next = w->offset / FRAME_CHUNK,
                         .end = (m->size + FRAME_CHUNK - 1) / FRAME_CHUNK, .lock = PTHREAD_MUTEX_INITIALIZER,
                         .cond = PTHREAD_COND_INITIALIZER };
        pthread_t thread;
        int r = 0;

        for (size_t i = 0; i < READ_AHEAD; i++)
                if (!(ra.buf[i] = malloc(FRAME_CHUNK + lun->block_size)))
                        r = -ENOMEM;
        if (r >= 0) {
                memset(ra.buf[0], 0, FRAME_CHUNK);
                frame_hash_hex(frame_chunk_hash(ra.buf[0], FRAME_CHUNK), ra.zero_hex);
                r = -pthread_create(&thread, NULL, read_ahead_run, &ra);
        }
        if (r < 0) {
                for (size_t i = 0; i < READ_AHEAD; i++)
                        free(ra.buf[i]);
                return r;
        }
        for (uint64_t i = ra.next; r >= 0 && i < ra.end; i++) {
                size_t n = (size_t) MIN(FRAME_CHUNK, m->size - i * FRAME_CHUNK);
                pthread_mutex_lock(&ra.lock);
                while (ra.consumed == ra.produced && !ra.error && !s->cancel)
                        pthread_cond_wait(&ra.cond, &ra.lock);
                r = ra.error;
                pthread_mutex_unlock(&ra.lock);
                if (r < 0)
                        r = fail(s, r, "%s", strna(ra.why));
                else if (s->cancel)
                        r = fail(s, -ECANCELED, "stopped");
                else
                        r = writer_feed(w, ra.buf[i % READ_AHEAD], n);
                pthread_mutex_lock(&ra.lock);
                ra.consumed++;
                pthread_cond_broadcast(&ra.cond);
                pthread_mutex_unlock(&ra.lock);
        }
        pthread_mutex_lock(&ra.lock);
        ra.stop = true;
        pthread_cond_broadcast(&ra.cond);
        pthread_mutex_unlock(&ra.lock);
        (void) pthread_join(thread, NULL);
        for (size_t i = 0; i < READ_AHEAD; i++)
                free(ra.buf[i]);
        free(ra.why);
        return r;
}

static int read_manifest_iscsi(Stager *s, IscsiLun *lun, Manifest *ret) {
        uint64_t at = staging_manifest_offset(json_get_int(s->staging, "sizeBytes")), len = 0;
        _cleanup_free_ uint8_t *block = malloc(lun->block_size);
        _cleanup_free_ char *text = NULL, *why = NULL;
        int r;

        if (!block)
                return -ENOMEM;
        r = storage_iscsi_pread(lun, block, lun->block_size, at, &why);
        if (r < 0)
                return fail(s, r, "%s", strna(why));
        if (memcmp(block, STAGING_MANIFEST_MAGIC, 8) != 0)
                return fail(s, -ENOENT, "the LUN holds no complete image (no manifest)");
        for (int i = 0; i < 8; i++)
                len |= (uint64_t) block[8 + i] << (8 * i);
        uint64_t whole = (len + lun->block_size - 1) / lun->block_size * lun->block_size;
        if (len == 0 || at + lun->block_size + whole > lun->size || !(text = calloc(1, whole + 1)))
                return fail(s, -EBADMSG, "the manifest on the LUN has a bad length");
        r = storage_iscsi_pread(lun, text, whole, at + lun->block_size, &why);
        if (r < 0)
                return fail(s, r, "%s", strna(why));
        text[len] = 0;
        return manifest_parse(s, text, ret);
}

static int read_manifest_nfs(Stager *s, struct nfs_context *nfs, Manifest *ret) {
        _cleanup_free_ char *path = path_in(s, STAGING_MANIFEST, false), *text = NULL;
        struct nfs_stat_64 st;
        struct nfsfh *fh;
        int r;

        if (!path)
                return -ENOMEM;
        r = nfs_stat64(nfs, path, &st);
        if (r < 0 || st.nfs_size == 0 || st.nfs_size > (UINT64_C(256) << 20))
                return fail(s, r, "the export holds no complete image (no manifest at %s)", path);
        r = nfs_open2(nfs, path, O_RDONLY, 0, &fh);
        if (r >= 0 && !(text = calloc(1, st.nfs_size + 1)))
                r = -ENOMEM;
        if (r >= 0)
                r = storage_nfs_pread(nfs, fh, text, st.nfs_size, 0);
        if (fh)
                nfs_close(nfs, fh);
        if (r < 0)
                return fail(s, r, "reading %s failed: %s", path, nfs_get_error(nfs));
        return manifest_parse(s, text, ret);
}

static int download(Stager *s, struct nfs_context *nfs, IscsiLun *lun) {
        Manifest m = {};
        Writer w = { .s = s, .m = &m };
        int r;

        r = nfs ? read_manifest_nfs(s, nfs, &m) : read_manifest_iscsi(s, lun, &m);
        if (r < 0)
                return r;
        if (m.size > s->dev.size)
                r = fail(s, -ENOSPC, "%s has %s; the staged disk needs %s. Pick a target disk at least that large",
                         s->dev.path, FORMAT_BYTES(s->dev.size), FORMAT_BYTES(m.size));
        else if (m.sector_size && s->dev.is_block) {
                int sector = 512;
                (void) ioctl(s->dev.fd, BLKSSZGET, &sector);
                if ((uint64_t) sector != m.sector_size)
                        r = fail(s, -EINVAL, "%s has %d-byte sectors, the staged disk %" PRIu64 "-byte ones", s->dev.path,
                                 sector, m.sector_size);
        }
        if (r >= 0 && !(w.chunk = malloc(FRAME_CHUNK)))
                r = -ENOMEM;
        if (r >= 0)
                r = digest_init(&w.digest);
        if (r >= 0) {
                w.offset = w.synced = MIN(s->resume, m.size / STAGING_SEGMENT * STAGING_SEGMENT);
                if (w.offset > 0)
                        log_info("Resuming at %s from the journal.", FORMAT_BYTES(w.offset));
                /* The digest covers the whole disk: what was written before counts again. */
                r = device_digest(&s->dev, &w.digest, w.offset, w.chunk);
        }
        if (r >= 0)
                r = nfs ? download_nfs(s, nfs, &m, &w) : download_iscsi(s, lun, &m, &w);
        if (r >= 0 && w.offset != m.size)
                r = fail(s, -EBADMSG, "the image ends at %" PRIu64 ", the manifest says %" PRIu64, w.offset, m.size);
        if (r >= 0 && (r = device_finish(&s->dev)) < 0)
                r = fail(s, r, "flushing %s failed: %s", s->dev.path, strerror(-r));
        if (r >= 0) {
                s->digest = digest_string(&w.digest);
                if (!s->digest)
                        r = -ENOMEM;
                else if (!streq(s->digest, m.digest))
                        r = fail(s, -EBADMSG, "what was written has digest %s, the manifest %s", s->digest, m.digest);
                else
                        (void) journal_save(s, m.size);
        }
        digest_done(&w.digest);
        free(w.chunk);
        json_object_put(m.root);
        return r;
}

static void *run_thread(void *userdata) {
        Stager *s = userdata;
        _cleanup_(json_object_unrefp) json_object *config = json_object_new_object();
        StorageLocation l = location(s, config);
        struct nfs_context *nfs = NULL;
        IscsiLun lun = {};
        _cleanup_free_ char *why = NULL, *initiator = NULL;
        int r;

        if (asprintf(&initiator, "clone-%s-%s", s->agent->settings.session, s->upload ? "source" : "target") < 0)
                r = -ENOMEM;
        else if (l.type == BACKEND_NFS)
                r = storage_nfs_connect(&l, true, &nfs, &why);
        else {
                r = storage_iscsi_connect(&l, (int) json_get_int(s->staging, "lun"), initiator, &lun, &why);
                if (r >= 0)
                        r = storage_iscsi_capacity(&lun, &why);
        }
        if (r < 0)
                (void) fail(s, r, "%s", strna(why));
        else if (s->upload)
                r = nfs ? upload_nfs(s, nfs) : upload_iscsi(s, &lun);
        else
                r = download(s, nfs, &lun);
        if (r < 0 && !s->why)
                (void) fail(s, r, "%s", strerror(-r));
        if (nfs)
                nfs_destroy_context(nfs);
        storage_iscsi_disconnect(&lun);
        uint64_t one = 1;
        (void) write(s->event_fd, &one, sizeof(one));
        return NULL;
}

static const char *phase(Stager *s) {
        return s->upload ? "uploading" : "downloading";
}

static int on_progress(sd_event_source *es, uint64_t usec, void *userdata) {
        Stager *s = userdata;
        (void) usec;
        (void) sd_event_source_set_time_relative(es, USEC_PER_SEC);
        if (s->bytes != s->progress.bytes)
                agent_report_progress(s->agent, &s->progress, s->upload ? "source" : "target", s->bytes,
                                      phase(s), NULL);
        return 0;
}

static void report_status(Agent *a, const char *status) {
        json_object *p = agent_report_new(a, NULL);
        json_object_object_add(p, "status", json_object_new_string(status));
        (void) queue_push(a->queue, "ReportStagingStatus", p);
}

/* The thread is done: the result goes into the queue. */
static int on_thread_done(sd_event_source *es, int fd, uint32_t revents, void *userdata) {
        Stager *s = userdata;
        Agent *a = s->agent;
        const char *role = s->upload ? "source" : "target";
        json_object *p;
        (void) es, (void) fd, (void) revents;

        (void) pthread_join(s->thread, NULL);
        s->thread_started = false;
        s->event_source = sd_event_source_disable_unref(s->event_source);
        s->progress_timer = sd_event_source_disable_unref(s->progress_timer);
        if (s->cancel) { /* the session ended under us: nothing to report */
                log_info("Session %s ended; stopped the %s.", a->settings.session, s->upload ? "upload" : "download");
                agent_finish(a, AGENT_EXIT_SESSION_FAILED);
                return 0;
        }
        agent_report_progress(a, &s->progress, role, s->bytes, phase(s), NULL);
        if (!s->why && !s->upload && resize_finish_target(a, &s->dev, "downloaded") < 0)
                return 0;
        p = agent_report_new(a, role);
        if (s->why) {
                log_error("The %s failed: %s", s->upload ? "upload" : "download", s->why);
                json_object_object_add(p, "error", json_object_new_string(s->why));
                json_object_object_add(p, "code", json_object_new_string(s->upload ? "upload-failed" : "download-failed"));
                (void) queue_push(a->queue, "ReportFailed", p);
                agent_finish(a, AGENT_EXIT_FAILURE);
                return 0;
        }
        if (s->upload)
                report_status(a, "ready");
        json_object_object_add(p, "digest", json_object_new_string(s->digest));
        (void) queue_push(a->queue, "ReportComplete", p);
        s->reported_done = true;
        log_info("%s %s (%s); its digest is %s.", s->upload ? "Uploaded" : "Downloaded and wrote", a->settings.device,
                 FORMAT_BYTES(s->dev.size), s->digest);
        /* The source's part ends with the upload; the target waits for the session's verdict. */
        if (s->upload)
                agent_finish(a, AGENT_EXIT_SUCCESS);
        return 0;
}

static int start_transfer(Stager *s) {
        Agent *a = s->agent;
        int r;

        s->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (s->event_fd < 0)
                return -errno;
        r = sd_event_add_io(a->event, &s->event_source, s->event_fd, EPOLLIN, on_thread_done, s);
        if (r < 0)
                return log_error_errno(r, "Failed to watch the transfer thread: %m");
        r = agent_add_progress_timer(a, &s->progress_timer, on_progress, s);
        if (r < 0)
                return r;
        s->started_at = now_monotonic_usec();
        r = -pthread_create(&s->thread, NULL, run_thread, s);
        if (r < 0)
                return r;
        s->thread_started = true;
        log_info("%s %s %s %s.", s->upload ? "Uploading" : "Downloading", s->dev.path, s->upload ? "to" : "from",
                 strna(json_get_string(s->staging, "backend")));
        return 0;
}

static void on_staging(Agent *a, const char *error, json_object *reply, void *userdata) {
        Stager *s = userdata;
        json_object *staging;
        (void) a;

        s->asked = false;
        if (error || !json_object_object_get_ex(reply, "staging", &staging)) {
                log_warning("GetStaging failed: %s; asking again when the session changes.", strna(error));
                return;
        }
        json_object_put(s->staging);
        s->staging = json_object_get(staging);
        if (s->upload &&
            staging_status_from_string(json_get_string(staging, "status")) == STAGING_PROVISIONED)
                report_status(s->agent, "uploading");
        if (!s->upload && staging_status_from_string(json_get_string(staging, "status")) == STAGING_READY)
                report_status(s->agent, "downloading");
        if (start_transfer(s) < 0)
                agent_exit(s->agent, AGENT_EXIT_FAILURE);
}

static int report_ready(Stager *s) {
        Agent *a = s->agent;
        _cleanup_free_ char *address = NULL;
        json_object *p = agent_report_new(a, NULL);

        (void) client_own_address(a, &address); /* for the record only: nothing connects to it */
        json_object_object_add(p, "address", json_object_new_string(strempty(address)));
        json_object_object_add(p, "port", json_object_new_int(0));
        json_object_object_add(p, "sizeBytes", json_object_new_int64((int64_t) s->dev.size));
        json_object_object_add(p, "device", json_object_new_string(a->settings.device));
        return queue_push(a->queue, "ReportSourceReady", p);
}

static bool on_ended(Agent *a, json_object *session) {
        Stager *s = a->stager;
        (void) session;
        s->cancel = true;
        return s->thread_started; /* then it finishes when the thread has stopped */
}

static void on_session(Agent *a, json_object *session) {
        Stager *s = a->stager;
        const char *staging = json_get_string(session, "stagingStatus");

        if (s->upload && !s->ready_reported && !a->finishing) {
                /* The size to stage is the plan's: the disk up to its last partition once shrunk. */
                int r = resize_prepare_source(a, session, a->disk_fingerprint, &s->dev.size);
                if (r > 0) {
                        s->ready_reported = true;
                        r = report_ready(s);
                }
                if (r < 0)
                        agent_exit(a, AGENT_EXIT_FAILURE);
                return;
        }
        if (s->thread_started || s->asked || s->reported_done || !staging || a->finishing)
                return;
        if (!s->upload && resize_target_ready(a, session) <= 0)
                return; /* the plan decides what happens after the download: know it first */
        /* The source uploads once the area exists; the target downloads once the upload is whole. */
        if (s->upload ? STR_IN_SET(staging, "provisioned", "uploading") : STR_IN_SET(staging, "ready", "downloading")) {
                s->asked = true;
                if (client_call(a, "GetStaging", agent_report_new(a, NULL), on_staging, s) < 0)
                        s->asked = false;
        }
}

/* The source reports ready once the session says how (on_session): after its resize steps. */
static const JobKind upload_job = {
        .role = "source",
        .report_disk = true,
        .changed = on_session,
        .ended = on_ended,
};

static const JobKind download_job = {
        .role = "target",
        .report_disk = true,
        .changed = on_session,
        .ended = on_ended,
};

int staged_start(Agent *a, bool upload) {
        _cleanup_free_ char *holder = NULL;
        Stager *s = calloc(1, sizeof(Stager));
        int r;

        if (!s)
                return -ENOMEM;
        s->agent = a;
        s->upload = upload;
        s->dev.fd = s->event_fd = -EBADF;
        a->stager = s;
        if (asprintf(&s->journal_path, "%s/staged-journal.json", a->settings.state_dir) < 0)
                return -ENOMEM;
        r = device_open(a->settings.device, upload ? O_RDONLY : O_RDWR, &s->dev, &holder);
        if (r == -EBUSY)
                return log_error_errno(r, "%s is in use%s%s; unmount it first.", a->settings.device,
                                       holder ? " by " : "", strempty(holder));
        if (r < 0)
                return log_error_errno(r, "Failed to open %s: %m", a->settings.device);
        if (!upload)
                s->resume = journal_load(s);
        return job_start(a, upload ? &upload_job : &download_job);
}

Stager *stager_free(Stager *s) {
        if (!s)
                return NULL;
        if (s->thread_started) {
                s->cancel = true;
                (void) pthread_join(s->thread, NULL);
        }
        sd_event_source_disable_unref(s->event_source);
        sd_event_source_disable_unref(s->progress_timer);
        if (s->event_fd >= 0)
                close(s->event_fd);
        device_close(&s->dev);
        json_object_put(s->staging);
        free(s->journal_path);
        free(s->why);
        free(s->digest);
        free(s);
        return NULL;
}
