/* SPDX-License-Identifier: MIT */
/* The disk read ahead of a stream: a ring of slots claimed in order by reader threads, filled by each at
 * its own pace, and taken in order by the stream. A thread claims the next chunk (or run of unused chunks)
 * under the lock and fills its slot outside it; the stream waits for the slot it takes next to be ready.
 * A thread blocks when the ring is full, the stream when its next slot is not ready; nothing else is
 * shared. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>
#include <zstd.h>

#include "chunk-reader.h"
#include "util.h"

#define READERS_MAX 4
/* Slots per reader: one being filled, one ready, and the stream's one more. */
#define SLOTS_PER_READER 2

typedef struct Reader {
        ChunkReader *owner;
        pthread_t thread;
        bool started;
        ZSTD_CCtx *cctx; /* NULL: nothing is compressed */
} Reader;

struct ChunkReader {
        Device *dev;
        const UsedMap *map;
        size_t packed_max;
        ChunkSlot *slots;
        bool *ready;
        size_t n_slots;
        Reader readers[READERS_MAX];
        size_t n_readers;

        pthread_mutex_t lock;
        pthread_cond_t cond;
        uint64_t next;           /* the offset claimed next */
        uint64_t claimed, taken; /* slots claimed by the readers and popped by the stream so far */
        int level, lowest, highest;
        bool starved; /* the stream waited for its next slot since the last claim */
        bool stop, failed;
};

/* Claims what lies at r->next for slot (under the lock): a run of unused chunks, or one chunk to read. */
static void claim(ChunkReader *r, ChunkSlot *slot) {
        uint64_t size = r->dev->size, pos = r->next;
        size_t n = (size_t) MIN(FRAME_CHUNK, size - pos);
        uint64_t unused = r->map ? used_map_unused_from(r->map, pos) : 0;

        slot->offset = pos;
        slot->error = 0;
        slot->packed_size = 0;
        if (unused >= n) { /* whole chunks, or to the end of the disk */
                uint64_t run = unused >= size - pos ? size - pos : unused / FRAME_CHUNK * FRAME_CHUNK;
                slot->type = FRAME_SKIP;
                slot->length = MIN(run, frame_run_max(FRAME_SKIP));
        } else {
                slot->type = FRAME_DATA;
                slot->length = n;
        }
        r->next = pos + slot->length;
}

/* One level up when the ring was full (the stream is the slower), one down when the stream waited. */
static void adapt(ChunkReader *r, bool waited) {
        if (waited)
                r->level = MIN(r->level + 1, CHUNK_READER_LEVEL_MAX);
        else if (r->starved)
                r->level = MAX(r->level - 1, CHUNK_READER_LEVEL_MIN);
        r->starved = false;
}

static void *run(void *userdata) {
        Reader *self = userdata;
        ChunkReader *r = self->owner;

        pthread_mutex_lock(&r->lock);
        for (;;) {
                bool waited = false;
                while (r->claimed - r->taken == r->n_slots && !r->stop) {
                        waited = true;
                        pthread_cond_wait(&r->cond, &r->lock);
                }
                if (r->stop || r->failed || r->next >= r->dev->size)
                        break;
                adapt(r, waited);
                int level = r->level;
                size_t i = r->claimed++ % r->n_slots;
                ChunkSlot *slot = &r->slots[i];
                r->ready[i] = false;
                claim(r, slot);
                pthread_mutex_unlock(&r->lock);

                if (slot->type == FRAME_DATA) {
                        slot->error = device_read_chunk(r->dev, r->map, slot->offset, slot->length,
                                                        slot->chunk, &slot->type, &slot->hash);
                        if (slot->error >= 0 && slot->type == FRAME_DATA && self->cctx &&
                            (slot->packed_size = frame_pack(self->cctx, slot->chunk, (size_t) slot->length,
                                                            slot->packed, r->packed_max, level)) > 0)
                                slot->type = FRAME_ZSTD;
                }

                pthread_mutex_lock(&r->lock);
                r->ready[i] = true;
                if (slot->error < 0)
                        r->failed = true; /* nothing is claimed after it; what was still comes first */
                if (slot->type == FRAME_ZSTD) {
                        r->lowest = r->lowest ? MIN(r->lowest, level) : level;
                        r->highest = MAX(r->highest, level);
                }
                pthread_cond_broadcast(&r->cond);
        }
        pthread_cond_broadcast(&r->cond); /* the stream may be waiting for the end */
        pthread_mutex_unlock(&r->lock);
        return NULL;
}

int chunk_reader_new(Device *dev, const UsedMap *map, bool compress, unsigned readers, uint64_t offset,
                     ChunkReader **ret) {
        ChunkReader *r = calloc(1, sizeof(ChunkReader));
        int k;

        if (!r)
                return -ENOMEM;
        if (readers == 0) {
                long cpus = sysconf(_SC_NPROCESSORS_ONLN);
                readers = cpus > 0 ? (unsigned) cpus : 1;
        }
        *r = (ChunkReader){ .dev = dev,
                            .map = map,
                            .n_readers = MIN(readers, (unsigned) READERS_MAX),
                            .next = offset,
                            .level = CHUNK_READER_LEVEL_MIN,
                            .lock = PTHREAD_MUTEX_INITIALIZER,
                            .cond = PTHREAD_COND_INITIALIZER };
        r->n_slots = r->n_readers * SLOTS_PER_READER + 1;
        r->slots = calloc(r->n_slots, sizeof(ChunkSlot));
        r->ready = calloc(r->n_slots, sizeof(bool));
        if (!r->slots || !r->ready)
                return chunk_reader_free(r), -ENOMEM;
        if (compress)
                r->packed_max = ZSTD_compressBound(FRAME_CHUNK);
        for (size_t i = 0; i < r->n_slots; i++)
                if (!(r->slots[i].chunk = device_buffer_new(FRAME_CHUNK)) ||
                    (compress && !(r->slots[i].packed = malloc(r->packed_max))))
                        return chunk_reader_free(r), -ENOMEM;
        for (size_t i = 0; i < r->n_readers; i++) {
                Reader *t = &r->readers[i];
                t->owner = r;
                if (compress && !(t->cctx = ZSTD_createCCtx()))
                        return chunk_reader_free(r), -ENOMEM;
                k = -pthread_create(&t->thread, NULL, run, t);
                if (k < 0)
                        return chunk_reader_free(r), k;
                t->started = true;
        }
        *ret = r;
        return 0;
}

const ChunkSlot *chunk_reader_peek(ChunkReader *r) {
        const ChunkSlot *slot = NULL;

        pthread_mutex_lock(&r->lock);
        for (;;) {
                size_t i = r->taken % r->n_slots;
                if (r->taken < r->claimed && r->ready[i]) {
                        slot = &r->slots[i];
                        break;
                }
                if (r->taken == r->claimed && (r->next >= r->dev->size || r->failed || r->stop))
                        break; /* the end, or after a failure (whose slot came before) */
                r->starved = true;
                pthread_cond_wait(&r->cond, &r->lock);
        }
        pthread_mutex_unlock(&r->lock);
        return slot;
}

void chunk_reader_pop(ChunkReader *r) {
        pthread_mutex_lock(&r->lock);
        if (r->taken < r->claimed && r->ready[r->taken % r->n_slots])
                r->taken++;
        pthread_cond_broadcast(&r->cond);
        pthread_mutex_unlock(&r->lock);
}

XXH128_hash_t chunk_slot_hash(const ChunkSlot *slot, size_t n) {
        return slot->type == FRAME_SKIP ? frame_skip_hash(n) : slot->hash;
}

void chunk_reader_levels(ChunkReader *r, int *now, int *lowest, int *highest) {
        pthread_mutex_lock(&r->lock);
        *now = r->level;
        *lowest = r->lowest;
        *highest = r->highest;
        pthread_mutex_unlock(&r->lock);
}

ChunkReader *chunk_reader_free(ChunkReader *r) {
        if (!r)
                return NULL;
        pthread_mutex_lock(&r->lock);
        r->stop = true;
        pthread_cond_broadcast(&r->cond);
        pthread_mutex_unlock(&r->lock);
        for (size_t i = 0; i < r->n_readers; i++) {
                if (r->readers[i].started)
                        (void) pthread_join(r->readers[i].thread, NULL);
                ZSTD_freeCCtx(r->readers[i].cctx);
        }
        for (size_t i = 0; r->slots && i < r->n_slots; i++) {
                free(r->slots[i].chunk);
                free(r->slots[i].packed);
        }
        free(r->slots);
        free(r->ready);
        pthread_mutex_destroy(&r->lock);
        pthread_cond_destroy(&r->cond);
        free(r);
        return NULL;
}
