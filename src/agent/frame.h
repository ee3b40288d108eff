/* SPDX-License-Identifier: MIT */
/* The direct-clone stream: a sequence of frames, each a 40-byte header (magic, type, offset, length, hash)
 * and, for DATA frames, the bytes. DATA frames hold one chunk; ZERO frames stand for a run of zero chunks
 * and carry no bytes. The hash is XXH3-128 seeded with the offset over the type, the length and the
 * content hash of the chunk (XXH3-128 of its bytes), so a frame moved, cut or altered does not verify.
 *
 * The digest of a disk is XXH3-128 over the content hashes of its chunks in order: the source computes
 * it over what it read, the target over what it wrote, and the controller compares them. */
#pragma once

#include <xxhash.h>

#include "macro.h"

#define FRAME_CHUNK (UINT64_C(1) << 20)
#define FRAME_HEADER_SIZE 40
#define FRAME_MAGIC UINT32_C(0x31464250) /* "PBF1" */
#define FRAME_MAX_ZERO_CHUNKS 256

typedef enum FrameType {
        FRAME_DATA = 1,
        FRAME_ZERO = 2,
} FrameType;

typedef struct FrameHeader {
        FrameType type;
        uint64_t offset, length;
        XXH128_hash_t hash;
} FrameHeader;

/* The content hash of one chunk's bytes. */
XXH128_hash_t frame_chunk_hash(const void *data, size_t size);
/* The content hash of a chunk of zeroes of this size (cached for whole chunks). */
XXH128_hash_t frame_zero_hash(size_t size);
/* The frame hash, from the content hash (of the DATA chunk; ignored for ZERO). */
XXH128_hash_t frame_hash(FrameType type, uint64_t offset, uint64_t length, XXH128_hash_t content);

void frame_header_write(const FrameHeader *h, uint8_t out[FRAME_HEADER_SIZE]);
/* Parses a header and checks it against the disk: -EBADMSG with *ret_reason if it cannot be right. */
int frame_header_read(const uint8_t in[FRAME_HEADER_SIZE], uint64_t disk_size, FrameHeader *ret,
                      const char **ret_reason);

bool frame_is_zero(const void *data, size_t size);

/* The running digest: chunk content hashes fed in order. */
typedef struct Digest {
        XXH3_state_t *state;
        uint64_t chunks; /* how many chunks it covers: the next one expected is chunks × FRAME_CHUNK */
} Digest;

int digest_init(Digest *d);
void digest_done(Digest *d);
void digest_feed(Digest *d, XXH128_hash_t chunk_hash);
/* Feeds the zero chunks of [offset, offset + length) (offset at d's position). */
void digest_feed_zero(Digest *d, uint64_t length, uint64_t disk_size);
/* "xxh3-128:<32 hex digits>" */
char *digest_string(const Digest *d);
/* A hash as 32 hex digits of its canonical (big-endian) form. */
void frame_hash_hex(XXH128_hash_t h, char out[static 33]);
