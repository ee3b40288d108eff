/* SPDX-License-Identifier: MIT */
/* Staging in files: the image as independent zstd frames of 64 MiB of disk each (so a download can start
 * at any segment), then the manifest with every 1 MiB chunk's hash, each written under a partial name and
 * renamed into place once whole. The files are an NFS export's, through libnfs (here), or a local backend's,
 * through the bridge (staged-local.c): the same image either way, through a StagingFiles table. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <nfsc/libnfs.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

#include "domain.h"
#include "format.h"
#include "log.h"
#include "staged.h"
#include "util.h"

/* A connection to the area's files, with the table that reaches them. */
typedef struct FilesConn {
        const StagingFiles *ops;
        void *conn;
} FilesConn;

typedef struct FilesUpload {
        FilesConn *fc;
        void *fh;
        ZSTD_CCtx *cctx;
        uint8_t *out;
        size_t out_size, out_len;
        uint64_t written, segment_start;
        json_object *segments;
} FilesUpload;

static int files_flush(Stager *s, FilesUpload *u) {
        int r;
        if (u->out_len == 0)
                return 0;
        r = u->fc->ops->pwrite(u->fc->conn, u->fh, u->out, u->out_len, u->written);
        if (r < 0)
                return stager_fail(s, r, "writing the image to the staging area failed: %s",
                                   u->fc->ops->error(u->fc->conn));
        u->written += u->out_len;
        u->out_len = 0;
        return 0;
}

static int zstd_feed(Stager *s, FilesUpload *u, const void *data, size_t n, ZSTD_EndDirective mode) {
        ZSTD_inBuffer in = { data, n, 0 };
        size_t left;
        do {
                if (u->out_size - u->out_len < ZSTD_CStreamOutSize()) {
                        int r = files_flush(s, u);
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

static int files_chunk(Stager *s, void *ctx, const uint8_t *chunk, size_t n, uint64_t offset,
                       FrameType type) {
        FilesUpload *u = ctx;
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

static int write_file(Stager *s, FilesConn *fc, const char *name, const char *text) {
        _cleanup_free_ char *partial = stager_path(s, name, true), *final = stager_path(s, name, false);
        void *fh = NULL;
        int r;

        if (!partial || !final)
                return -ENOMEM;
        r = fc->ops->create(fc->conn, partial, &fh);
        if (r >= 0)
                r = fc->ops->pwrite(fc->conn, fh, text, strlen(text), 0);
        if (r >= 0)
                r = fc->ops->commit(fc->conn, fh, partial, final);
        else if (fh)
                fc->ops->close(fc->conn, fh);
        return r < 0 ? stager_fail(s, r, "writing %s to the staging area failed: %s", final,
                                   fc->ops->error(fc->conn))
                     : 0;
}

static int upload_files(Stager *s, void *conn) {
        FilesConn *fc = conn;
        _cleanup_free_ char *image = stager_path(s, STAGING_IMAGE, true),
                            *image_final = stager_path(s, STAGING_IMAGE, false);
        _cleanup_free_ char *hashes = NULL, *digest = NULL;
        FilesUpload u = { .fc = fc, .out_size = FILES_IO + ZSTD_CStreamOutSize() };
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        int r;

        if (!image || !image_final)
                return -ENOMEM;
        /* A manifest left by an earlier try must not vouch for this one. */
        _cleanup_free_ char *old_manifest = stager_path(s, STAGING_MANIFEST, false);
        if (!old_manifest)
                return -ENOMEM;
        (void) fc->ops->unlink(fc->conn, old_manifest);
        r = fc->ops->create(fc->conn, image, &u.fh);
        if (r < 0)
                return stager_fail(s, r, "creating %s in the staging area failed: %s", image,
                                   fc->ops->error(fc->conn));
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
        r = read_disk(s, files_chunk, &u, &hashes, &digest);
        if (r >= 0)
                r = files_flush(s, &u);
        if (r >= 0) {
                r = fc->ops->commit(fc->conn, u.fh, image, image_final);
                u.fh = NULL;
                if (r < 0)
                        r = stager_fail(s, r, "making the image whole in the staging area failed: %s",
                                        fc->ops->error(fc->conn));
        }
        if (r >= 0) {
                json_object *m = manifest_new(s, digest, hashes, json_object_get(u.segments));
                const char *text = json_object_to_json_string_ext(m, JSON_C_TO_STRING_PLAIN);
                r = write_file(s, fc, STAGING_MANIFEST, text);
                s->stored = u.written + strlen(text);
                json_object_put(m);
        }
        if (r >= 0) {
                log_info("Uploaded %s as %s of zstd (%.1f %% of the disk).", FORMAT_BYTES(s->dev.size),
                         FORMAT_BYTES(u.written), 100.0 * (double) u.written / (double) s->dev.size);
                s->digest = TAKE_PTR(digest);
        }
out:
        if (u.fh)
                fc->ops->close(fc->conn, u.fh);
        ZSTD_freeCCtx(u.cctx);
        free(u.out);
        json_object_put(u.segments);
        return r;
}

static int read_manifest_files(Stager *s, void *conn, Manifest *ret) {
        FilesConn *fc = conn;
        _cleanup_free_ char *path = stager_path(s, STAGING_MANIFEST, false), *text = NULL,
                            *image = stager_path(s, STAGING_IMAGE, false);
        uint64_t size = 0, image_size = 0;
        void *fh = NULL;
        int r;

        if (!path || !image)
                return -ENOMEM;
        r = fc->ops->size(fc->conn, path, &size);
        if (r < 0 && r != -ENOENT)
                return stager_fail(s, r, "reading %s failed: %s", path, fc->ops->error(fc->conn));
        if (r < 0 || size == 0 || size > (UINT64_C(256) << 20))
                return stager_fail(s, r, "the staging area holds no complete image (no manifest at %s)",
                                   path);
        r = fc->ops->open(fc->conn, path, &fh);
        if (r >= 0 && !(text = calloc(1, size + 1)))
                r = -ENOMEM;
        if (r >= 0)
                r = fc->ops->pread(fc->conn, fh, text, size, 0);
        if (fh)
                fc->ops->close(fc->conn, fh);
        if (r < 0)
                return stager_fail(s, r, "reading %s failed: %s", path, fc->ops->error(fc->conn));
        r = fc->ops->size(fc->conn, image, &image_size);
        if (r < 0)
                return stager_fail(s, r, "the staging area holds no image at %s: %s", image,
                                   fc->ops->error(fc->conn));
        s->stored = image_size + size;
        return manifest_parse(s, text, ret);
}

/* The image read ahead in a thread of its own, READ_AHEAD pieces of FILES_IO, segment by segment, while the
 * caller decompresses and checks what came before: the link stays busy while the CPU works. Only this thread
 * uses the connection while it runs. */
#define READ_AHEAD 4

typedef struct ReadAhead {
        Stager *s;
        FilesConn *fc;
        void *fh;
        const Manifest *m;
        size_t first; /* the segment to start at */
        pthread_mutex_t lock;
        pthread_cond_t cond;
        uint8_t *buf[READ_AHEAD];
        uint64_t issued, taken; /* pieces read into the ring; pieces the caller is done with */
        int error;
        char *why;
        bool stop;
} ReadAhead;

/* Segment i's place in the image file. */
static void segment_at(const Manifest *m, size_t i, uint64_t *ret_pos, uint64_t *ret_length) {
        json_object *seg = json_object_array_get_idx(m->segments, i);
        *ret_pos = (uint64_t) json_object_get_int64(json_object_array_get_idx(seg, 0));
        *ret_length = (uint64_t) json_object_get_int64(json_object_array_get_idx(seg, 1));
}

static void *read_ahead_run(void *userdata) {
        ReadAhead *ra = userdata;
        uint64_t k = 0;

        for (size_t i = ra->first; i < json_object_array_length(ra->m->segments); i++) {
                uint64_t pos, left;
                segment_at(ra->m, i, &pos, &left);
                while (left > 0) {
                        size_t n = (size_t) MIN(left, FILES_IO);
                        pthread_mutex_lock(&ra->lock);
                        while (k - ra->taken >= READ_AHEAD && !ra->stop && !ra->s->cancel)
                                pthread_cond_wait(&ra->cond, &ra->lock);
                        bool stop = ra->stop || ra->s->cancel;
                        pthread_mutex_unlock(&ra->lock);
                        if (stop)
                                return NULL;
                        int r = ra->fc->ops->pread(ra->fc->conn, ra->fh, ra->buf[k % READ_AHEAD], n, pos);
                        pthread_mutex_lock(&ra->lock);
                        if (r < 0) {
                                ra->error = r;
                                ra->why = strdup(ra->fc->ops->error(ra->fc->conn));
                        } else
                                ra->issued = ++k;
                        pthread_cond_broadcast(&ra->cond);
                        pthread_mutex_unlock(&ra->lock);
                        if (r < 0)
                                return NULL;
                        pos += n;
                        left -= n;
                }
        }
        return NULL;
}

/* Piece k, once read: 0 and *ret, or the reading's failure. */
static int read_ahead_take(ReadAhead *ra, uint64_t k, uint8_t **ret) {
        int r = 0;
        pthread_mutex_lock(&ra->lock);
        while (ra->issued <= k && ra->error >= 0 && !ra->s->cancel)
                pthread_cond_wait(&ra->cond, &ra->lock);
        if (ra->issued > k)
                *ret = ra->buf[k % READ_AHEAD];
        else if (ra->s->cancel)
                r = stager_fail(ra->s, -ECANCELED, "stopped");
        else
                r = stager_fail(ra->s, ra->error, "reading the image from the staging area failed: %s",
                                strna(ra->why));
        pthread_mutex_unlock(&ra->lock);
        return r;
}

static void read_ahead_done(ReadAhead *ra, uint64_t k, bool stop) {
        pthread_mutex_lock(&ra->lock);
        ra->taken = k + 1;
        ra->stop = ra->stop || stop;
        pthread_cond_broadcast(&ra->cond);
        pthread_mutex_unlock(&ra->lock);
}

static int download_files(Stager *s, void *conn, const Manifest *m, Writer *w) {
        FilesConn *fc = conn;
        _cleanup_free_ char *image = stager_path(s, STAGING_IMAGE, false);
        _cleanup_free_ uint8_t *out = malloc(ZSTD_DStreamOutSize());
        ReadAhead ra = { .s = s,
                         .fc = fc,
                         .m = m,
                         .first = (size_t) (w->offset / STAGING_SEGMENT),
                         .lock = PTHREAD_MUTEX_INITIALIZER,
                         .cond = PTHREAD_COND_INITIALIZER };
        ZSTD_DCtx *d = ZSTD_createDCtx();
        pthread_t thread;
        bool started = false;
        uint64_t k = 0;
        int r = 0;

        for (size_t i = 0; i < READ_AHEAD; i++)
                if (!(ra.buf[i] = malloc(FILES_IO)))
                        r = -ENOMEM;
        if (!image || !out || !d)
                r = -ENOMEM;
        if (r >= 0 && (!m->segments || json_object_array_length(m->segments) !=
                                               (m->size + STAGING_SEGMENT - 1) / STAGING_SEGMENT))
                r = stager_fail(s, -EBADMSG, "the manifest does not list the image's segments");
        if (r >= 0 && (r = fc->ops->open(fc->conn, image, &ra.fh)) < 0)
                r = stager_fail(s, r, "opening %s in the staging area failed: %s", image,
                                fc->ops->error(fc->conn));
        if (r >= 0 && (r = -pthread_create(&thread, NULL, read_ahead_run, &ra)) >= 0)
                started = true;
        for (size_t i = ra.first; r >= 0 && i < json_object_array_length(m->segments); i++) {
                uint64_t pos, left;
                size_t hint = 1;
                segment_at(m, i, &pos, &left);
                (void) ZSTD_DCtx_reset(d, ZSTD_reset_session_only);
                for (; r >= 0 && left > 0; k++) {
                        size_t n = (size_t) MIN(left, FILES_IO);
                        uint8_t *in = NULL;
                        r = read_ahead_take(&ra, k, &in);
                        if (r < 0)
                                break;
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
                        read_ahead_done(&ra, k, false);
                }
                if (r >= 0 && hint != 0)
                        r = stager_fail(s, -EBADMSG, "segment %zu of the image is cut short", i);
        }
        if (started) {
                read_ahead_done(&ra, k, true);
                (void) pthread_join(thread, NULL);
        }
        if (ra.fh)
                fc->ops->close(fc->conn, ra.fh);
        for (size_t i = 0; i < READ_AHEAD; i++)
                free(ra.buf[i]);
        free(ra.why);
        ZSTD_freeDCtx(d);
        return r;
}

int staging_files_connect(const StagingFiles *ops, void *conn, void **ret_conn) {
        FilesConn *fc = malloc(sizeof(FilesConn));
        if (!fc) {
                ops->disconnect(conn);
                return -ENOMEM;
        }
        *fc = (FilesConn){ .ops = ops, .conn = conn };
        *ret_conn = fc;
        return 0;
}

static void files_disconnect(void *conn) {
        FilesConn *fc = conn;
        fc->ops->disconnect(fc->conn);
        free(fc);
}

/* NFS, through libnfs. */
static int nfs_files_open(void *conn, const char *path, void **ret) {
        return nfs_open2(conn, path, O_RDONLY, 0, (struct nfsfh **) ret);
}

static int nfs_files_create(void *conn, const char *path, void **ret) {
        return nfs_open2(conn, path, O_CREAT | O_WRONLY | O_TRUNC, 0600, (struct nfsfh **) ret);
}

static int nfs_files_pread(void *conn, void *file, void *buf, size_t n, uint64_t offset) {
        return storage_nfs_pread(conn, file, buf, n, offset);
}

static int nfs_files_pwrite(void *conn, void *file, const void *buf, size_t n, uint64_t offset) {
        return storage_nfs_pwrite(conn, file, buf, n, offset);
}

static void nfs_files_close(void *conn, void *file) {
        nfs_close(conn, file);
}

static int nfs_files_commit(void *conn, void *file, const char *partial, const char *final) {
        int r = nfs_fsync(conn, file);
        nfs_close(conn, file);
        return r < 0 ? r : nfs_rename(conn, partial, final);
}

static int nfs_files_unlink(void *conn, const char *path) {
        return nfs_unlink(conn, path);
}

static int nfs_files_size(void *conn, const char *path, uint64_t *ret) {
        struct nfs_stat_64 st;
        int r = nfs_stat64(conn, path, &st);
        if (r < 0)
                return r;
        *ret = st.nfs_size;
        return 0;
}

static const char *nfs_files_error(void *conn) {
        return strna(nfs_get_error(conn));
}

static void nfs_files_disconnect(void *conn) {
        nfs_destroy_context(conn);
}

static const StagingFiles nfs_files = {
        .open = nfs_files_open,
        .create = nfs_files_create,
        .pread = nfs_files_pread,
        .pwrite = nfs_files_pwrite,
        .close = nfs_files_close,
        .commit = nfs_files_commit,
        .unlink = nfs_files_unlink,
        .size = nfs_files_size,
        .error = nfs_files_error,
        .disconnect = nfs_files_disconnect,
};

static int nfs_connect(Stager *s, const StorageLocation *l, const char *initiator, void **ret_conn) {
        _cleanup_free_ char *why = NULL;
        struct nfs_context *nfs = NULL;
        (void) initiator;
        int r = storage_nfs_connect(l, true, &nfs, &why);
        if (r < 0)
                return stager_fail(s, r, "%s", strna(why));
        return staging_files_connect(&nfs_files, nfs, ret_conn);
}

const StagingTransport staging_transport_nfs = {
        .type = BACKEND_NFS,
        .connect = nfs_connect,
        .disconnect = files_disconnect,
        .upload = upload_files,
        .read_manifest = read_manifest_files,
        .download = download_files,
};

/* The local backend's connect is staged-local.c's: the same image through the bridge. */
const StagingTransport staging_transport_local = {
        .type = BACKEND_LOCAL,
        .connect = staging_local_connect,
        .disconnect = files_disconnect,
        .upload = upload_files,
        .read_manifest = read_manifest_files,
        .download = download_files,
};
