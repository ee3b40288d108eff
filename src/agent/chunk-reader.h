/* SPDX-License-Identifier: MIT */
/* Reading a disk ahead for a stream, in a thread of its own: each chunk read (or, where the map says no
 * filesystem uses it, not read), classified, hashed and, where asked and worth it, compressed, while the
 * stream's thread encrypts and sends the chunks before. Two cores then share what one did in turn. */
#pragma once

#include "device.h"
#include "frame.h"
#include "usedmap.h"

typedef struct ChunkSlot {
        FrameType type;      /* DATA or ZSTD: one chunk; ZERO: one zero chunk; SKIP: a run of unused chunks */
        uint64_t offset, length;
        XXH128_hash_t hash;  /* DATA, ZSTD and ZERO: the chunk's content hash */
        uint8_t *chunk;      /* DATA: its bytes (ZSTD: before compression) */
        uint8_t *packed;     /* ZSTD: its compressed bytes */
        size_t packed_size;
        int error;           /* < 0: reading failed here, and nothing follows */
} ChunkSlot;

typedef struct ChunkReader ChunkReader;

/* Starts reading dev from offset (a chunk's start): with map, as device_read_chunk() does; with compress,
 * a chunk is offered compressed at zstd level (when a sample of it and then the whole compress). */
int chunk_reader_new(Device *dev, const UsedMap *map, bool compress, int level, uint64_t offset,
                     ChunkReader **ret);
/* The next slot in order, waiting for it if the thread has not got there yet; it stays the next until
 * chunk_reader_pop(). NULL past the end of the disk. */
const ChunkSlot *chunk_reader_peek(ChunkReader *r);
/* Done with the next slot: the thread may fill it again. */
void chunk_reader_pop(ChunkReader *r);
/* Stops the thread and frees everything. */
ChunkReader *chunk_reader_free(ChunkReader *r);
