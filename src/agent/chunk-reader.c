/* SPDX-License-Identifier: MIT */
/* The disk read ahead of a stream: a ring of slots filled in order by a thread and taken in order by the
 * stream. The thread blocks when the ring is full, the stream when it is empty; nothing else is shared. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <zstd.h>

#include "chunk-reader.h"
#include "util.h"

#define SLOTS 4
/* A chunk is compressed when a sample of it compresses: random data costs a sample's work, not a chunk's. */
#define ZSTD_SAMPLE (64U * 1024)

struct ChunkReader {
        Device *dev;
        const UsedMap *map;
        int level;
        ZSTD_CCtx *cctx; /* NULL: nothing is compressed */
        size_t packed_max;
        ChunkSlot slots[SLOTS];
        uint64_t next; /* the offset the thread reads next */

        pthread_t thread;
        bool thread_started;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        uint64_t filled, taken; /* slots filled and popped so far */
        bool stop, done;
};

/* The chunk in slot compressed, if that is worth it: its size, else 0. */
static size_t pack(ChunkReader *r, ChunkSlot *slot) {
        size_t n = (size_t) slot->length, sample = MIN(n, ZSTD_SAMPLE), c;

        c = ZSTD_compressCCtx(r->cctx, slot->packed, r->packed_max, slot->chunk, sample, r->level);
        if (ZSTD_isError(c) || c > sample - sample / 8)
                return 0;
        c = ZSTD_compressCCtx(r->cctx, slot->packed, r->packed_max, slot->chunk, n, r->level);
        if (ZSTD_isError(c) || c + FRAME_ZSTD_PREFIX > n - n / 16)
                return 0;
        return c;
}

/* Fills slot with what lies at r->next: a run of unused chunks, or one chunk read. */
static void fill(ChunkReader *r, ChunkSlot *slot) {
        uint64_t size = r->dev->size, pos = r->next;
        size_t n = (size_t) MIN(FRAME_CHUNK, size - pos);
        uint64_t unused = r->map ? used_map_unused_from(r->map, pos) : 0;

        slot->offset = pos;
        slot->error = 0;
        if (unused >= n) { /* whole chunks, or to the end of the disk */
                uint64_t run = unused >= size - pos ? size - pos : unused / FRAME_CHUNK * FRAME_CHUNK;
                slot->type = FRAME_SKIP;
                slot->length = MIN(run, frame_run_max(FRAME_SKIP));
        } else {
                slot->length = n;
                slot->error = device_read_chunk(r->dev, r->map, pos, n, slot->chunk, &slot->type, &slot->hash);
                if (slot->error >= 0 && slot->type == FRAME_DATA && r->cctx &&
                    (slot->packed_size = pack(r, slot)) > 0)
                        slot->type = FRAME_ZSTD;
        }
        r->next = pos + slot->length;
}

static void *run(void *userdata) {
        ChunkReader *r = userdata;

        while (r->next < r->dev->size) {
                pthread_mutex_lock(&r->lock);
                while (r->filled - r->taken == SLOTS && !r->stop)
                        pthread_cond_wait(&r->cond, &r->lock);
                bool stop = r->stop;
                pthread_mutex_unlock(&r->lock);
                if (stop)
                        break;
                ChunkSlot *slot = &r->slots[r->filled % SLOTS];
                fill(r, slot);
                pthread_mutex_lock(&r->lock);
                r->filled++;
                pthread_cond_broadcast(&r->cond);
                pthread_mutex_unlock(&r->lock);
                if (slot->error < 0)
                        break;
        }
        pthread_mutex_lock(&r->lock);
        r->done = true;
        pthread_cond_broadcast(&r->cond);
        pthread_mutex_unlock(&r->lock);
        return NULL;
}

int chunk_reader_new(Device *dev, const UsedMap *map, bool compress, int level, uint64_t offset,
                     ChunkReader **ret) {
        ChunkReader *r = calloc(1, sizeof(ChunkReader));
        int k;

        if (!r)
                return -ENOMEM;
        *r = (ChunkReader){ .dev = dev,
                            .map = map,
                            .level = level,
                            .next = offset,
                            .lock = PTHREAD_MUTEX_INITIALIZER,
                            .cond = PTHREAD_COND_INITIALIZER };
        if (compress) {
                r->packed_max = ZSTD_compressBound(FRAME_CHUNK);
                if (!(r->cctx = ZSTD_createCCtx()))
                        return chunk_reader_free(r), -ENOMEM;
        }
        for (size_t i = 0; i < SLOTS; i++)
                if (!(r->slots[i].chunk = device_buffer_new(FRAME_CHUNK)) ||
                    (compress && !(r->slots[i].packed = malloc(r->packed_max))))
                        return chunk_reader_free(r), -ENOMEM;
        k = -pthread_create(&r->thread, NULL, run, r);
        if (k < 0)
                return chunk_reader_free(r), k;
        r->thread_started = true;
        *ret = r;
        return 0;
}

const ChunkSlot *chunk_reader_peek(ChunkReader *r) {
        pthread_mutex_lock(&r->lock);
        while (r->filled == r->taken && !r->done)
                pthread_cond_wait(&r->cond, &r->lock);
        const ChunkSlot *slot = r->filled > r->taken ? &r->slots[r->taken % SLOTS] : NULL;
        pthread_mutex_unlock(&r->lock);
        return slot;
}

void chunk_reader_pop(ChunkReader *r) {
        pthread_mutex_lock(&r->lock);
        if (r->taken < r->filled)
                r->taken++;
        pthread_cond_broadcast(&r->cond);
        pthread_mutex_unlock(&r->lock);
}

ChunkReader *chunk_reader_free(ChunkReader *r) {
        if (!r)
                return NULL;
        if (r->thread_started) {
                pthread_mutex_lock(&r->lock);
                r->stop = true;
                pthread_cond_broadcast(&r->cond);
                pthread_mutex_unlock(&r->lock);
                (void) pthread_join(r->thread, NULL);
        }
        for (size_t i = 0; i < SLOTS; i++) {
                free(r->slots[i].chunk);
                free(r->slots[i].packed);
        }
        ZSTD_freeCCtx(r->cctx);
        pthread_mutex_destroy(&r->lock);
        pthread_cond_destroy(&r->cond);
        free(r);
        return NULL;
}
