/* SPDX-License-Identifier: MIT */
/* Staging on NFS, with libnfs: the image as independent zstd frames of 64 MiB of disk each (so a download
 * can start at any segment), then the manifest with every 1 MiB chunk's hash, each written under a partial
 * name and renamed into place once whole. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <nfsc/libnfs.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

#include "domain.h"
#include "format.h"
#include "log.h"
#include "staged.h"
#include "util.h"

#define NFS_IO (UINT64_C(4) << 20)

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
                return stager_fail(s, r, "writing the image to the export failed: %s",
                                   nfs_get_error(u->nfs));
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
                        return stager_fail(s, -EIO, "zstd: %s", ZSTD_getErrorName(left));
                u->out_len += out.pos;
        } while (mode == ZSTD_e_continue ? in.pos < in.size : left != 0);
        return 0;
}

static int nfs_chunk(Stager *s, void *ctx, const uint8_t *chunk, size_t n, uint64_t offset, FrameType type) {
        NfsUpload *u = ctx;
        bool segment_end = (offset + n) % STAGING_SEGMENT == 0 || offset + n == s->dev.size;
        int r;

        /* A skipped chunk is not in the image; a segment of nothing but those is an empty frame. */
        r = zstd_feed(s, u, chunk, type == FRAME_SKIP ? 0 : n, segment_end ? ZSTD_e_end : ZSTD_e_continue);
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
        _cleanup_free_ char *partial = stager_path(s, name, true), *final = stager_path(s, name, false);
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
        return r < 0 ? stager_fail(s, r, "writing %s to the export failed: %s", final, nfs_get_error(nfs))
                     : 0;
}

static int upload_nfs(Stager *s, void *conn) {
        struct nfs_context *nfs = conn;
        _cleanup_free_ char *image = stager_path(s, STAGING_IMAGE, true),
                            *image_final = stager_path(s, STAGING_IMAGE, false);
        _cleanup_free_ char *hashes = NULL, *digest = NULL;
        NfsUpload u = { .nfs = nfs, .out_size = NFS_IO + ZSTD_CStreamOutSize() };
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        int r;

        if (!image || !image_final)
                return -ENOMEM;
        /* A manifest left by an earlier try must not vouch for this one. */
        _cleanup_free_ char *old_manifest = stager_path(s, STAGING_MANIFEST, false);
        (void) nfs_unlink(nfs, old_manifest);
        r = nfs_open2(nfs, image, O_CREAT | O_WRONLY | O_TRUNC, 0600, &u.fh);
        if (r < 0)
                return stager_fail(s, r, "creating %s on the export failed: %s", image, nfs_get_error(nfs));
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
                r = stager_fail(s, r, "flushing the image on the export failed: %s", nfs_get_error(nfs));
        nfs_close(nfs, u.fh);
        u.fh = NULL;
        if (r >= 0 && (r = nfs_rename(nfs, image, image_final)) < 0)
                r = stager_fail(s, r, "renaming the image into place failed: %s", nfs_get_error(nfs));
        if (r >= 0) {
                json_object *m = manifest_new(s, digest, hashes, json_object_get(u.segments));
                r = nfs_write_file(s, nfs, STAGING_MANIFEST,
                                   json_object_to_json_string_ext(m, JSON_C_TO_STRING_PLAIN));
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

static int read_manifest_nfs(Stager *s, void *conn, Manifest *ret) {
        struct nfs_context *nfs = conn;
        _cleanup_free_ char *path = stager_path(s, STAGING_MANIFEST, false), *text = NULL;
        struct nfs_stat_64 st;
        struct nfsfh *fh;
        int r;

        if (!path)
                return -ENOMEM;
        r = nfs_stat64(nfs, path, &st);
        if (r < 0 || st.nfs_size == 0 || st.nfs_size > (UINT64_C(256) << 20))
                return stager_fail(s, r, "the export holds no complete image (no manifest at %s)", path);
        r = nfs_open2(nfs, path, O_RDONLY, 0, &fh);
        if (r >= 0 && !(text = calloc(1, st.nfs_size + 1)))
                r = -ENOMEM;
        if (r >= 0)
                r = storage_nfs_pread(nfs, fh, text, st.nfs_size, 0);
        if (fh)
                nfs_close(nfs, fh);
        if (r < 0)
                return stager_fail(s, r, "reading %s failed: %s", path, nfs_get_error(nfs));
        return manifest_parse(s, text, ret);
}

static int download_nfs(Stager *s, void *conn, const Manifest *m, Writer *w) {
        struct nfs_context *nfs = conn;
        _cleanup_free_ char *image = stager_path(s, STAGING_IMAGE, false);
        _cleanup_free_ uint8_t *in = malloc(NFS_IO);
        _cleanup_free_ uint8_t *out = malloc(ZSTD_DStreamOutSize());
        ZSTD_DCtx *d = ZSTD_createDCtx();
        struct nfsfh *fh = NULL;
        int r = 0;

        if (!image || !in || !out || !d) {
                ZSTD_freeDCtx(d);
                return -ENOMEM;
        }
        if (!m->segments ||
            json_object_array_length(m->segments) != (m->size + STAGING_SEGMENT - 1) / STAGING_SEGMENT) {
                ZSTD_freeDCtx(d);
                return stager_fail(s, -EBADMSG, "the manifest does not list the image's segments");
        }
        r = nfs_open2(nfs, image, O_RDONLY, 0, &fh);
        if (r < 0) {
                ZSTD_freeDCtx(d);
                return stager_fail(s, r, "opening %s on the export failed: %s", image, nfs_get_error(nfs));
        }
        for (size_t i = (size_t) (w->offset / STAGING_SEGMENT);
             r >= 0 && i < json_object_array_length(m->segments); i++) {
                json_object *seg = json_object_array_get_idx(m->segments, i);
                uint64_t pos = (uint64_t) json_object_get_int64(json_object_array_get_idx(seg, 0));
                uint64_t left = (uint64_t) json_object_get_int64(json_object_array_get_idx(seg, 1));
                size_t hint = 1;
                (void) ZSTD_DCtx_reset(d, ZSTD_reset_session_only);
                while (r >= 0 && left > 0) {
                        size_t n = (size_t) MIN(left, NFS_IO);
                        if (s->cancel)
                                return nfs_close(nfs, fh), ZSTD_freeDCtx(d),
                                       stager_fail(s, -ECANCELED, "stopped");
                        r = storage_nfs_pread(nfs, fh, in, n, pos);
                        if (r < 0) {
                                r = stager_fail(s, r, "reading the image from the export failed: %s",
                                                nfs_get_error(nfs));
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
                                        r = stager_fail(s, -EBADMSG,
                                                        "segment %zu of the image (the disk's bytes %" PRIu64
                                                        " to %" PRIu64 ") does not decompress: %s",
                                                        i, (uint64_t) i * STAGING_SEGMENT,
                                                        MIN((uint64_t) (i + 1) * STAGING_SEGMENT, m->size),
                                                        ZSTD_getErrorName(hint));
                                else
                                        r = writer_feed(w, out, ob.pos);
                                more = hint != 0 && ob.pos > 0;
                        }
                }
                if (r >= 0 && hint != 0)
                        r = stager_fail(s, -EBADMSG, "segment %zu of the image is cut short", i);
        }
        nfs_close(nfs, fh);
        ZSTD_freeDCtx(d);
        return r;
}

static int nfs_connect(Stager *s, const StorageLocation *l, const char *initiator, void **ret_conn) {
        _cleanup_free_ char *why = NULL;
        struct nfs_context *nfs = NULL;
        (void) initiator;
        int r = storage_nfs_connect(l, true, &nfs, &why);
        if (r < 0)
                return stager_fail(s, r, "%s", strna(why));
        *ret_conn = nfs;
        return 0;
}

static void nfs_disconnect(void *conn) {
        nfs_destroy_context(conn);
}

const StagingTransport staging_transport_nfs = {
        .type = BACKEND_NFS,
        .connect = nfs_connect,
        .disconnect = nfs_disconnect,
        .upload = upload_nfs,
        .read_manifest = read_manifest_nfs,
        .download = download_nfs,
};
