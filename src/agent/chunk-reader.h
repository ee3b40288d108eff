/* SPDX-License-Identifier: MIT */
/* Reading a disk ahead for a stream, in threads of its own: each chunk read (or, where the map says no
 * filesystem uses it, not read), classified, hashed and, where asked and worth it, compressed, while the
 * stream's thread encrypts and sends the chunks before. Two cores then share what one did in turn, and
 * more cores compress more chunks at once.
 *
 * The compression level follows whichever side is the slower, as zstd --adapt does: when the readers find
 * the ring full, the link is the slower and more CPU buys fewer bytes on it (one level up); when the stream
 * finds the next chunk not ready, the readers are the slower (one level down). */
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

/* The zstd levels the readers move between: below 1 the bytes grow faster than the time shrinks; above 6
 * a level costs about twice the CPU and the memory (3.5 → 6.5 MiB per reader) for about 1 % fewer bytes. */
#define CHUNK_READER_LEVEL_MIN 1
#define CHUNK_READER_LEVEL_MAX 6

/* Starts reading dev from offset (a chunk's start) with readers threads (0: one per CPU, at most 4): with
 * map, as device_read_chunk() does; with compress, a chunk is offered compressed (when a sample of it and
 * then the whole compress). */
int chunk_reader_new(Device *dev, const UsedMap *map, bool compress, unsigned readers, uint64_t offset,
                     ChunkReader **ret);
/* The next slot in order, waiting for it if no thread has got there yet; it stays the next until
 * chunk_reader_pop(). NULL past the end of the disk. */
const ChunkSlot *chunk_reader_peek(ChunkReader *r);
/* Done with the next slot: a thread may fill it again. */
void chunk_reader_pop(ChunkReader *r);
/* The zstd level chunks are compressed at now, and the lowest and highest used so far (0 if none was). */
void chunk_reader_levels(ChunkReader *r, int *now, int *lowest, int *highest);
/* The content hash of a chunk of n bytes in slot, for the digest and a manifest: a SKIP run's chunks each
 * hash as the marker of their length. */
XXH128_hash_t chunk_slot_hash(const ChunkSlot *slot, size_t n);
/* Stops the threads and frees everything. */
ChunkReader *chunk_reader_free(ChunkReader *r);
