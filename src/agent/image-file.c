/* SPDX-License-Identifier: MIT */
/* An image as one file: written from a staging area through the transports' Writer (each chunk checked
 * against the manifest on the way), read back into a raw disk file with each frame checked as a target
 * checks a peer's. */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "device.h"
#include "format.h"
#include "frame.h"
#include "gpt.h"
#include "image-file.h"
#include "log.h"
#include "staged.h"
#include "util.h"

#define IMAGE_FILE_ZSTD_LEVEL 3

typedef struct Export {
        int out;
        Device disk;   /* out is a disk (a desktop's, opened by udisks2): the image is written to it as it is
                        */
        uint8_t *head; /* its first chunk, as written: where its partition table is */
        uint64_t size;
        ZSTD_CCtx *cctx;
        Digest digest; /* of what was read, to hold against the manifest's */
        uint8_t *frame;
} Export;

static int put_run(Export *x, FrameType type, uint64_t offset, uint64_t length) {
        for (uint64_t done = 0; done < length;) {
                uint64_t n = MIN(length - done, frame_run_max(type));
                int r = write_full(x->out, x->frame, frame_build_run(type, offset + done, n, x->frame));
                if (r < 0)
                        return r;
                done += n;
        }
        return 0;
}

/* A chunk checked against the manifest (or a run of skipped ones, data NULL) becomes a frame in the file. */
static int export_emit(Writer *w, const uint8_t *data, uint64_t offset, uint64_t length,
                       XXH128_hash_t content) {
        Export *x = w->userdata;
        int r;

        if (!data) {
                digest_feed_run(&x->digest, FRAME_SKIP, length, x->size);
                r = put_run(x, FRAME_SKIP, offset, length);
        } else {
                digest_feed(&x->digest, content);
                r = frame_is_zero(data, length)
                            ? put_run(x, FRAME_ZERO, offset, length)
                            : write_full(x->out, x->frame,
                                         frame_build_chunk(x->cctx, IMAGE_FILE_ZSTD_LEVEL, data, length,
                                                           offset, content, x->frame));
        }
        return r < 0 ? stager_fail(w->s, r, "writing the file failed: %s", strerror(-r)) : 0;
}

/* A checked chunk onto the disk; a run of zeroes or of chunks no filesystem used made to read as zeroes. */
static int disk_emit(Writer *w, const uint8_t *data, uint64_t offset, uint64_t length,
                     XXH128_hash_t content) {
        Export *x = w->userdata;
        int r;

        if (!data)
                digest_feed_run(&x->digest, FRAME_SKIP, length, x->size);
        else
                digest_feed(&x->digest, content);
        if (data && offset == 0)
                memcpy(x->head, data, MIN(length, (uint64_t) FRAME_CHUNK));
        r = !data || frame_is_zero(data, length) ? device_zero(&x->disk, offset, length)
                                                 : device_pwrite(&x->disk, data, length, offset);
        return r < 0 ? stager_fail(w->s, r, "writing %s at %" PRIu64 " failed: %s", x->disk.path, offset,
                                   strerror(-r))
                     : 0;
}

/* Copies what was written into the sparse file from onto the disk, extent by extent. */
static int copy_extents(int from, Device *to) {
        _cleanup_free_ uint8_t *buf = malloc(FRAME_CHUNK);
        off_t at = 0, end;
        int r;

        if (!buf)
                return -ENOMEM;
        while ((at = lseek(from, at, SEEK_DATA)) >= 0) {
                end = lseek(from, at, SEEK_HOLE);
                if (end < 0)
                        return -errno;
                for (; at < end; at += (off_t) MIN((uint64_t) (end - at), (uint64_t) FRAME_CHUNK)) {
                        size_t n = (size_t) MIN((uint64_t) (end - at), (uint64_t) FRAME_CHUNK);
                        r = pread_full(from, buf, n, (uint64_t) at);
                        if (r >= 0)
                                r = device_pwrite(to, buf, n, (uint64_t) at);
                        if (r < 0)
                                return r;
                }
        }
        return errno == ENXIO ? 0 : -errno;
}

/* The disk written whole: made durable, its GPT's backup moved to its end when it is larger than the image.
 * udisks2 opens a disk for restoring write-only, so the table is moved in a sparse file of the disk's size
 * holding the image's first chunk (all the move reads), and what the move wrote there goes onto the disk. */
static int disk_finish(Stager *s, Export *x) {
        _cleanup_free_ char *why = NULL;
        _cleanup_close_ int copy = -EBADF;
        int r = device_finish(&x->disk);
        if (r < 0)
                return stager_fail(s, r, "writing %s failed: %s", x->disk.path, strerror(-r));
        if (x->disk.size == x->size)
                return 0;
        copy = memfd_create("pureboot-gpt", MFD_CLOEXEC);
        if (copy < 0 || ftruncate(copy, (off_t) x->disk.size) < 0)
                return stager_fail(s, -errno, "cannot make a copy of the partition table: %m");
        r = pwrite_full(copy, x->head, FRAME_CHUNK, 0);
        if (r >= 0)
                r = gpt_relocate_backup(copy, x->disk.sector_size, x->disk.size, NULL, 0, &why);
        if (r == 0)
                r = copy_extents(copy, &x->disk);
        if (r >= 0)
                r = device_finish(&x->disk);
        if (r < 0)
                return stager_fail(s, r,
                                   "the image is on %s, but its partition table could not be moved to the "
                                   "disk's end: %s",
                                   x->disk.path, why ?: strerror(-r));
        return 0;
}

static int write_header(int out, json_object *header) {
        const char *text = json_object_to_json_string_ext(header, JSON_C_TO_STRING_PLAIN);
        uint32_t len = htole32((uint32_t) strlen(text));
        int r = write_full(out, IMAGE_FILE_MAGIC, strlen(IMAGE_FILE_MAGIC));
        if (r >= 0)
                r = write_full(out, &len, sizeof(len));
        return r < 0 ? r : write_full(out, text, strlen(text));
}

int image_file_export(json_object *staging, json_object *header, int out, ImageProgress progress,
                      char **ret_why) {
        _cleanup_(json_object_unrefp) json_object *h = header;
        Stager s = { .staging = staging, .dev = DEVICE_NULL, .event_fd = -EBADF, .tell = progress };
        Export x = { .out = out, .disk = DEVICE_NULL };
        Manifest m = {};
        Writer w = { .s = &s, .m = &m, .emit = export_emit, .userdata = &x };
        struct stat st;
        const StagingTransport *t = NULL;
        _cleanup_free_ char *digest = NULL;
        void *conn = NULL;
        int r;

        r = stager_connect(&s, "pureboot-export", &t, &conn);
        if (r >= 0)
                r = t->read_manifest(&s, conn, &m);
        if (r >= 0 && fstat(out, &st) >= 0 && S_ISBLK(st.st_mode)) {
                r = device_adopt(fcntl(out, F_DUPFD_CLOEXEC, 3), NULL, &x.disk);
                if (r < 0)
                        r = stager_fail(&s, r, "the disk cannot be written: %s", strerror(-r));
                else if (x.disk.size < m.size)
                        r = stager_fail(
                                &s, -ENOSPC,
                                "%s is %s; the image is %s. Restore it onto a disk at least that large.",
                                x.disk.path, FORMAT_BYTES(x.disk.size), FORMAT_BYTES(m.size));
                else if (x.disk.sector_size != m.sector_size && m.sector_size > 0)
                        r = stager_fail(
                                &s, -EINVAL,
                                "%s has %u-byte sectors; the image was taken from a disk with %" PRIu64
                                "-byte sectors, whose partition table would not fit it.",
                                x.disk.path, x.disk.sector_size, m.sector_size);
                w.emit = disk_emit;
                if (r >= 0 && !(x.head = calloc(1, FRAME_CHUNK)))
                        r = -ENOMEM;
        }
        if (r >= 0) {
                x.size = m.size;
                json_object_object_add(h, "size", json_object_new_int64((int64_t) m.size));
                json_object_object_add(h, "sectorSize", json_object_new_int64((int64_t) m.sector_size));
                json_object_object_add(h, "digest", json_object_new_string(m.digest));
                x.cctx = ZSTD_createCCtx();
                x.frame = malloc(FRAME_WIRE_MAX);
                w.chunk = device_buffer_new(FRAME_CHUNK);
                if (!x.cctx || !x.frame || !w.chunk || digest_init(&x.digest) < 0)
                        r = -ENOMEM;
        }
        if (r >= 0 && x.disk.fd < 0 && (r = write_header(out, h)) < 0)
                r = stager_fail(&s, r, "writing the file failed: %s", strerror(-r));
        if (r >= 0)
                r = t->download(&s, conn, &m, &w);
        if (r >= 0)
                r = writer_finish(&w);
        if (r >= 0 && !(digest = digest_string(&x.digest)))
                r = -ENOMEM;
        if (r >= 0 && !streq(digest, m.digest))
                r = stager_fail(&s, -EBADMSG, "what was read has digest %s, the manifest %s", digest,
                                m.digest);
        if (r >= 0 && x.disk.fd >= 0)
                r = disk_finish(&s, &x);
        else if (r >= 0 && fsync(out) < 0 && !IN_SET(errno, EINVAL, EROFS)) /* a pipe or a socket cannot */
                r = stager_fail(&s, -errno, "writing the file failed: %m");
        if (r >= 0 && progress)
                progress(m.size, m.size);
        if (conn)
                t->disconnect(conn);
        if (r < 0 && !s.why)
                (void) stager_fail(&s, r, "%s", strerror(-r));
        device_close(&x.disk);
        free(x.head);
        ZSTD_freeCCtx(x.cctx);
        free(x.frame);
        free(w.chunk);
        digest_done(&x.digest);
        manifest_done(&m);
        *ret_why = TAKE_PTR(s.why);
        return r;
}

bool image_file_is_one(const void *head, size_t n) {
        return n >= strlen(IMAGE_FILE_MAGIC) &&
               memcmp(head, IMAGE_FILE_MAGIC, strlen(IMAGE_FILE_MAGIC)) == 0;
}

typedef struct Restore {
        int in, raw;
        uint64_t at; /* bytes of the file read */
        char *why;
} Restore;

static int restore_fail(Restore *x, int r, const char *format, ...) _printf_(3, 4);
static int restore_fail(Restore *x, int r, const char *format, ...) {
        va_list ap;
        va_start(ap, format);
        r = reason_firstv(&x->why, r, format, ap);
        va_end(ap);
        return r;
}

/* Exactly n bytes of the file, or -EBADMSG if it ends first (what is said names what was cut). */
static int take(Restore *x, void *buf, size_t n, const char *what) {
        size_t got = 0;
        while (got < n) {
                ssize_t k = read(x->in, (uint8_t *) buf + got, n - got);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return restore_fail(x, -errno, "reading the file at %" PRIu64 " failed: %m",
                                            x->at + got);
                if (k == 0)
                        return restore_fail(x, -EBADMSG,
                                            "the file ends at %" PRIu64 " in %s: it is cut short",
                                            x->at + got, what);
                got += (size_t) k;
        }
        x->at += n;
        return 0;
}

static int read_header(Restore *x, json_object **ret) {
        char magic[sizeof(IMAGE_FILE_MAGIC) - 1];
        _cleanup_free_ char *text = NULL;
        uint32_t len;
        int r;

        r = take(x, magic, sizeof(magic), "its first line");
        if (r < 0)
                return r;
        if (!image_file_is_one(magic, sizeof(magic)))
                return restore_fail(x, -EBADMSG, "it is not an image PureBoot exported");
        r = take(x, &len, sizeof(len), "its header");
        if (r < 0)
                return r;
        len = le32toh(len);
        if (len == 0 || len > IMAGE_FILE_HEADER_MAX || !(text = malloc(len + 1)))
                return len == 0 || len > IMAGE_FILE_HEADER_MAX
                               ? restore_fail(x, -EBADMSG, "its header says it is %" PRIu32 " bytes long",
                                              len)
                               : -ENOMEM;
        r = take(x, text, len, "its header");
        if (r < 0)
                return r;
        text[len] = 0;
        *ret = json_tokener_parse(text);
        return *ret ? 0 : restore_fail(x, -EBADMSG, "its header is not JSON");
}

int image_file_restore(int in, int raw, json_object **ret_header, UsedMap *ret_skipped,
                       ImageProgress progress, char **ret_why) {
        _cleanup_(json_object_unrefp) json_object *header = NULL;
        Restore x = { .in = in, .raw = raw };
        UsedMap skipped = {};
        Digest digest = {};
        ZSTD_DCtx *dctx = ZSTD_createDCtx();
        uint8_t *payload = malloc(FRAME_WIRE_MAX), *chunk = malloc(FRAME_CHUNK), head[FRAME_HEADER_SIZE];
        _cleanup_free_ char *got = NULL;
        uint64_t size = 0, offset = 0;
        int r = !dctx || !payload || !chunk || digest_init(&digest) < 0 ? -ENOMEM : 0;

        if (r >= 0)
                r = read_header(&x, &header);
        if (r >= 0) {
                size = (uint64_t) json_get_int(header, "size");
                skipped.size = size;
                uint64_t sector = (uint64_t) json_get_int(header, "sectorSize");
                if (size == 0 || size % 512 != 0 || !json_get_string(header, "digest") ||
                    !IN_SET(sector, 512, 4096))
                        r = restore_fail(&x, -EBADMSG,
                                         "its header lacks the image's size, sector size or digest");
        }
        if (r >= 0 && ftruncate(raw, (off_t) size) < 0)
                r = restore_fail(&x, -errno, "making a %" PRIu64 "-byte disk file failed: %m", size);
        while (r >= 0 && offset < size) {
                FrameHeader h;
                const char *reason = NULL;
                XXH128_hash_t content = {};

                r = take(&x, head, sizeof(head), "a frame");
                if (r >= 0 && frame_header_read(head, size, FRAME_FEATURES_ALL, &h, &reason) < 0)
                        r = restore_fail(&x, -EBADMSG, "the frame at %" PRIu64 " of the file: %s", x.at,
                                         reason);
                if (r >= 0 && h.offset != offset)
                        r = restore_fail(&x, -EBADMSG,
                                         "a frame for %" PRIu64 " follows the one before %" PRIu64, h.offset,
                                         offset);
                if (r < 0)
                        break;
                if (h.type == FRAME_DATA)
                        r = take(&x, chunk, h.length, "a chunk");
                else if (h.type == FRAME_ZSTD) {
                        uint32_t n;
                        r = take(&x, &n, sizeof(n), "a chunk");
                        n = le32toh(n);
                        if (r >= 0 && n > ZSTD_COMPRESSBOUND(FRAME_CHUNK))
                                r = restore_fail(&x, -EBADMSG,
                                                 "the chunk at %" PRIu64 " says it is %" PRIu32
                                                 " bytes compressed",
                                                 h.offset, n);
                        if (r >= 0)
                                r = take(&x, payload, n, "a chunk");
                        size_t k = r >= 0 ? ZSTD_decompressDCtx(dctx, chunk, FRAME_CHUNK, payload, n) : 0;
                        if (r >= 0 && (ZSTD_isError(k) || k != h.length))
                                r = restore_fail(&x, -EBADMSG,
                                                 "the chunk at %" PRIu64 " does not decompress", h.offset);
                }
                if (r < 0)
                        break;
                if (IN_SET(h.type, FRAME_DATA, FRAME_ZSTD))
                        content = frame_chunk_hash(chunk, h.length);
                if (!XXH128_isEqual(frame_hash(h.type, h.offset, h.length, content), h.hash)) {
                        r = restore_fail(&x, -EBADMSG,
                                         "the frame for %" PRIu64 " does not match its hash: the "
                                         "file is damaged",
                                         h.offset);
                        break;
                }
                if (IN_SET(h.type, FRAME_DATA, FRAME_ZSTD)) {
                        digest_feed(&digest, content);
                        if (!frame_is_zero(chunk, h.length) &&
                            (r = pwrite_full(raw, chunk, h.length, h.offset)) < 0)
                                r = restore_fail(&x, r, "writing the disk file failed: %s", strerror(-r));
                } else {
                        digest_feed_run(&digest, h.type, h.length, size);
                        if (h.type == FRAME_SKIP && used_map_add(&skipped, h.offset, h.length) < 0)
                                r = -ENOMEM;
                }
                offset = h.offset + h.length;
                if (progress)
                        progress(offset, size);
        }
        if (r >= 0 && !(got = digest_string(&digest)))
                r = -ENOMEM;
        if (r >= 0 && !streq(got, json_get_string(header, "digest")))
                r = restore_fail(&x, -EBADMSG, "what it holds has digest %s, its header says %s", got,
                                 json_get_string(header, "digest"));
        if (r >= 0 && read(in, head, 1) != 0)
                r = restore_fail(&x, -EBADMSG, "there is more after the image's last frame");
        if (r < 0 && !x.why)
                (void) restore_fail(&x, r, "%s", strerror(-r));
        ZSTD_freeDCtx(dctx);
        free(payload);
        free(chunk);
        digest_done(&digest);
        if (r < 0) {
                used_map_done(&skipped);
                *ret_why = TAKE_PTR(x.why);
                return r;
        }
        *ret_header = TAKE_PTR(header);
        *ret_skipped = skipped;
        return 0;
}
