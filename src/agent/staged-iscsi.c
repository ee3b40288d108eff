/* SPDX-License-Identifier: MIT */
/* Staging on iSCSI, with libiscsi: the raw disk on the LUN (zero chunks left unwritten where the LUN is
 * known to be zeroed), the manifest behind it with a header written last; the download reads ahead in a
 * thread of its own and skips what the manifest says is zeroes. Both keep QUEUE_DEPTH commands in flight:
 * one at a time waits out a round trip and the target's work per chunk. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "domain.h"
#include "format.h"
#include "log.h"
#include "staged.h"
#include "util.h"

#define QUEUE_DEPTH 8

typedef struct IscsiUpload {
        IscsiLun *lun;
        bool zeroed;
        IscsiIo io[QUEUE_DEPTH]; /* used in turn */
        uint64_t used;
} IscsiUpload;

/* n bytes in whole blocks of the LUN. */
static size_t in_blocks(const IscsiLun *lun, uint64_t n) {
        return (size_t) ((n + lun->block_size - 1) / lun->block_size * lun->block_size);
}

static int iscsi_write_padded(Stager *s, IscsiLun *lun, const uint8_t *data, size_t n, uint64_t offset,
                              uint8_t *pad) {
        _cleanup_free_ char *why = NULL;
        size_t whole = n / lun->block_size * lun->block_size;
        int r = whole ? storage_iscsi_pwrite(lun, data, whole, offset, &why) : 0;
        if (r >= 0 && whole < n) { /* the last block, filled up with zeroes */
                memset(pad, 0, lun->block_size);
                memcpy(pad, data + whole, n - whole);
                r = storage_iscsi_pwrite(lun, pad, lun->block_size, offset + whole, &why);
        }
        return r < 0 ? stager_fail(s, r, "%s", strna(why)) : 0;
}

/* Waits for io to finish, if it is in flight, and says how it did. */
static int iscsi_reap(Stager *s, IscsiLun *lun, IscsiIo *io) {
        _cleanup_free_ char *why = NULL;
        while (io->in_flight) {
                int r = storage_iscsi_service(lun, &why);
                if (r < 0)
                        return stager_fail(s, r, "%s", strna(why));
        }
        return io->error < 0 ? stager_fail(s, io->error, "%s", strna(io->why)) : 0;
}

static int iscsi_chunk(Stager *s, void *ctx, const uint8_t *chunk, size_t n, uint64_t offset,
                       FrameType type) {
        _cleanup_free_ char *why = NULL;
        IscsiUpload *u = ctx;
        IscsiIo *io = &u->io[u->used++ % QUEUE_DEPTH];
        int r;

        if (type == FRAME_SKIP ||
            (type == FRAME_ZERO && u->zeroed)) /* left out; the LUN reads zeroes there */
                return 0;
        r = iscsi_reap(s, u->lun, io);
        if (r < 0)
                return r;
        /* The last chunk of a disk of odd size is filled up with zeroes to a block. */
        io->size = in_blocks(u->lun, n);
        memcpy(io->buf, chunk, n);
        memset((uint8_t *) io->buf + n, 0, io->size - n);
        io->offset = offset;
        io->write = true;
        r = storage_iscsi_submit(u->lun, io, &why);
        return r < 0 ? stager_fail(s, r, "%s", strna(why)) : 0;
}

/* Writes the chunks of the disk, the commands in flight all finished and fine. */
static int upload_image(Stager *s, IscsiUpload *u, char **ret_hashes, char **ret_digest) {
        int r = 0;

        for (size_t i = 0; i < QUEUE_DEPTH; i++)
                if (!(u->io[i].buf = malloc(FRAME_CHUNK)))
                        r = -ENOMEM;
        if (r >= 0)
                r = read_disk(s, iscsi_chunk, u, ret_hashes, ret_digest);
        for (size_t i = 0; r >= 0 && i < QUEUE_DEPTH; i++)
                r = iscsi_reap(s, u->lun, &u->io[i]);
        storage_iscsi_drain(u->lun);
        for (size_t i = 0; i < QUEUE_DEPTH; i++) {
                free(u->io[i].buf);
                free(u->io[i].why);
        }
        return r;
}

static int upload_iscsi(Stager *s, void *conn) {
        IscsiLun *lun = conn;
        _cleanup_free_ char *hashes = NULL, *digest = NULL;
        _cleanup_free_ uint8_t *block = calloc(1, lun->block_size);
        uint64_t at = staging_manifest_offset(s->dev.size);
        IscsiUpload u = { .lun = lun };
        json_object *zeroed;
        int r;

        if (!block)
                return -ENOMEM;
        u.zeroed =
                json_object_object_get_ex(s->staging, "zeroed", &zeroed) && json_object_get_boolean(zeroed);
        if (lun->size < staging_lun_size(s->dev.size))
                return stager_fail(s, -ENOSPC, "LUN %d has %s; this disk needs %s with its manifest",
                                   lun->lun, FORMAT_BYTES(lun->size),
                                   FORMAT_BYTES(staging_lun_size(s->dev.size)));
        /* No manifest header until the image below it is whole. */
        r = iscsi_write_padded(s, lun, block, lun->block_size, at, block);
        if (r >= 0)
                r = upload_image(s, &u, &hashes, &digest);
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
        if (r >= 0) {
                s->digest = TAKE_PTR(digest);
                s->stored = lun->size; /* the LUN is the image's, whatever its blocks hold */
        }
        return r;
}

static int read_manifest_iscsi(Stager *s, void *conn, Manifest *ret) {
        IscsiLun *lun = conn;
        uint64_t at = staging_manifest_offset(json_get_int(s->staging, "sizeBytes")), len = 0;
        _cleanup_free_ uint8_t *block = malloc(lun->block_size);
        _cleanup_free_ char *text = NULL, *why = NULL;
        int r;

        if (!block)
                return -ENOMEM;
        r = storage_iscsi_pread(lun, block, lun->block_size, at, &why);
        if (r < 0)
                return stager_fail(s, r, "%s", strna(why));
        if (memcmp(block, STAGING_MANIFEST_MAGIC, 8) != 0)
                return stager_fail(s, -ENOENT, "the LUN holds no complete image (no manifest)");
        for (int i = 0; i < 8; i++)
                len |= (uint64_t) block[8 + i] << (8 * i);
        /* len is the LUN's word: bounded before any arithmetic on it. */
        if (len == 0 || len > lun->size)
                return stager_fail(s, -EBADMSG, "the manifest on the LUN has a bad length");
        uint64_t whole = in_blocks(lun, len);
        if (at + lun->block_size + whole > lun->size || !(text = calloc(1, whole + 1)))
                return stager_fail(s, -EBADMSG, "the manifest on the LUN has a bad length");
        r = storage_iscsi_pread(lun, text, whole, at + lun->block_size, &why);
        if (r < 0)
                return stager_fail(s, r, "%s", strna(why));
        text[len] = 0;
        s->stored = lun->size;
        return manifest_parse(s, text, ret);
}

/* The iSCSI download reads ahead in a thread of its own, QUEUE_DEPTH reads in flight, while the chunks
 * before are checked and written, and does not read at all what the manifest says is zeroes. Chunk i lies in
 * slot i % READ_AHEAD: the thread issues it when the writer has taken chunk i - READ_AHEAD, and the writer
 * takes it once ready. */
#define READ_AHEAD (QUEUE_DEPTH + 2)

typedef struct ReadAhead {
        Stager *s;
        IscsiLun *lun;
        const Manifest *m;
        IscsiIo io[READ_AHEAD];
        bool ready[READ_AHEAD];
        uint64_t next, end; /* chunk indexes: the first to read, and past the last */
        /* chunk indexes: the next the thread issues, and the next the writer takes */
        uint64_t issued, taken;
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

/* Issues chunk i (unlocked: its slot is the thread's until ready): a read, or nothing to read. */
static int read_ahead_issue(ReadAhead *ra, uint64_t i, bool *ret_ready, char **ret_why) {
        uint64_t off = i * FRAME_CHUNK;
        size_t n = (size_t) MIN(FRAME_CHUNK, ra->m->size - off);
        IscsiIo *io = &ra->io[i % READ_AHEAD];

        *ret_ready = true;
        if (used_map_is_unused(&ra->m->skipped, off, n))
                return 0; /* not in the image: the writer passes over it */
        if (manifest_says_zero(ra, i, n, io->buf)) {
                memset(io->buf, 0, n); /* checked against the manifest all the same */
                return 0;
        }
        io->size = in_blocks(ra->lun, n);
        io->offset = off;
        io->write = false;
        *ret_ready = false;
        return storage_iscsi_submit(ra->lun, io, ret_why);
}

/* Marks the reads that finished ready (under the lock); the first that failed stops everything. */
static void read_ahead_finished(ReadAhead *ra) {
        for (size_t k = 0; k < READ_AHEAD; k++) {
                IscsiIo *io = &ra->io[k];
                if (!io->done)
                        continue;
                io->done = false;
                ra->ready[k] = true;
                if (io->error < 0 && ra->error >= 0) {
                        ra->error = io->error;
                        ra->why = TAKE_PTR(io->why);
                }
        }
}

static void *read_ahead_run(void *data) {
        ReadAhead *ra = data;
        char *why = NULL;
        int r = 0;

        pthread_mutex_lock(&ra->lock);
        while (!ra->stop && ra->error >= 0) {
                if (ra->issued < ra->end && ra->issued < ra->taken + READ_AHEAD &&
                    ra->lun->in_flight < QUEUE_DEPTH) {
                        uint64_t i = ra->issued++;
                        bool ready;
                        ra->ready[i % READ_AHEAD] = false;
                        pthread_mutex_unlock(&ra->lock);
                        r = read_ahead_issue(ra, i, &ready, &why);
                        pthread_mutex_lock(&ra->lock);
                        ra->ready[i % READ_AHEAD] = ready;
                } else if (ra->lun->in_flight > 0) {
                        pthread_mutex_unlock(&ra->lock);
                        r = storage_iscsi_service(ra->lun, &why);
                        pthread_mutex_lock(&ra->lock);
                        read_ahead_finished(ra);
                } else if (ra->issued < ra->end)
                        pthread_cond_wait(&ra->cond, &ra->lock); /* for the writer to take a chunk */
                else
                        break;
                if (r < 0 && ra->error >= 0) {
                        ra->error = r;
                        ra->why = TAKE_PTR(why);
                }
                pthread_cond_broadcast(&ra->cond);
        }
        pthread_mutex_unlock(&ra->lock);
        storage_iscsi_drain(ra->lun); /* nothing in flight into buffers about to be freed */
        free(why);
        return NULL;
}

static int download_iscsi(Stager *s, void *conn, const Manifest *m, Writer *w) {
        IscsiLun *lun = conn;
        ReadAhead ra = { .s = s,
                         .lun = lun,
                         .m = m,
                         .next = w->offset / FRAME_CHUNK,
                         .end = (m->size + FRAME_CHUNK - 1) / FRAME_CHUNK,
                         .lock = PTHREAD_MUTEX_INITIALIZER,
                         .cond = PTHREAD_COND_INITIALIZER };
        pthread_t thread;
        int r = 0;

        ra.issued = ra.taken = ra.next;
        for (size_t i = 0; i < READ_AHEAD; i++)
                if (!(ra.io[i].buf = malloc(FRAME_CHUNK)))
                        r = -ENOMEM;
        if (r >= 0) {
                memset(ra.io[0].buf, 0, FRAME_CHUNK);
                frame_hash_hex(frame_chunk_hash(ra.io[0].buf, FRAME_CHUNK), ra.zero_hex);
                r = -pthread_create(&thread, NULL, read_ahead_run, &ra);
        }
        if (r < 0) {
                for (size_t i = 0; i < READ_AHEAD; i++)
                        free(ra.io[i].buf);
                return r;
        }
        for (uint64_t i = ra.next; r >= 0 && i < ra.end; i++) {
                size_t n = (size_t) MIN(FRAME_CHUNK, m->size - i * FRAME_CHUNK);
                pthread_mutex_lock(&ra.lock);
                while ((ra.issued <= i || !ra.ready[i % READ_AHEAD]) && !ra.error && !s->cancel)
                        pthread_cond_wait(&ra.cond, &ra.lock);
                r = ra.error;
                pthread_mutex_unlock(&ra.lock);
                if (r < 0)
                        r = stager_fail(s, r, "%s", strna(ra.why));
                else if (s->cancel)
                        r = stager_fail(s, -ECANCELED, "stopped");
                else if (!writer_skips(w, i * FRAME_CHUNK, n))
                        r = writer_feed(w, ra.io[i % READ_AHEAD].buf, n);
                pthread_mutex_lock(&ra.lock);
                ra.taken = i + 1;
                pthread_cond_broadcast(&ra.cond);
                pthread_mutex_unlock(&ra.lock);
        }
        pthread_mutex_lock(&ra.lock);
        ra.stop = true;
        pthread_cond_broadcast(&ra.cond);
        pthread_mutex_unlock(&ra.lock);
        (void) pthread_join(thread, NULL);
        for (size_t i = 0; i < READ_AHEAD; i++) {
                free(ra.io[i].buf);
                free(ra.io[i].why);
        }
        free(ra.why);
        return r;
}

static int iscsi_connect(Stager *s, const StorageLocation *l, const char *initiator, void **ret_conn) {
        _cleanup_free_ char *why = NULL;
        IscsiLun *lun = calloc(1, sizeof(IscsiLun));
        int r;

        if (!lun)
                return -ENOMEM;
        r = storage_iscsi_connect(l, (int) json_get_int(s->staging, "lun"), initiator, lun, &why);
        if (r >= 0)
                r = storage_iscsi_capacity(lun, &why);
        if (r < 0) {
                storage_iscsi_disconnect(lun);
                free(lun);
                return stager_fail(s, r, "%s", strna(why));
        }
        *ret_conn = lun;
        return 0;
}

static void iscsi_disconnect(void *conn) {
        storage_iscsi_disconnect(conn);
        free(conn);
}

const StagingTransport staging_transport_iscsi = {
        .type = BACKEND_ISCSI,
        .connect = iscsi_connect,
        .disconnect = iscsi_disconnect,
        .upload = upload_iscsi,
        .read_manifest = read_manifest_iscsi,
        .download = download_iscsi,
};
