/* SPDX-License-Identifier: MIT */
/* The direct-clone stream: a sequence of frames, each a 40-byte header (magic, type, offset, length, hash)
 * and, for DATA and ZSTD frames, the bytes. DATA frames hold one chunk; ZSTD frames one chunk compressed
 * (a 4-byte little-endian compressed size, then a zstd frame of it); ZERO frames stand for a run of zero
 * chunks and SKIP frames for a run of chunks no filesystem uses (used-block copying), both carrying no
 * bytes. The hash is XXH3-128 seeded with the offset over the type, the length and the content hash of the
 * chunk (XXH3-128 of its bytes; a ZSTD frame hashes as the DATA frame of the same bytes), so a frame
 * moved, cut or altered does not verify.
 *
 * SKIP and ZSTD are features both ends agree on when a stream starts (the target asks, the source says
 * which it uses): a peer that knows neither gets and sends DATA and ZERO frames only.
 *
 * The digest of a disk is XXH3-128 over the content hashes of its chunks in order, a skipped chunk's being
 * a fixed marker of its length: the source computes it over what it read, the target over what it wrote,
 * and the controller compares them. It covers every chunk that was copied — in a chunk a filesystem uses
 * in part, the used bytes, its unused ones sent as zeroes — and where the skipped ones lie. */
#pragma once

#include <xxhash.h>
#include <zstd.h>

#include "macro.h"

#define FRAME_CHUNK (UINT64_C(1) << 20)
#define FRAME_HEADER_SIZE 40
#define FRAME_MAGIC UINT32_C(0x31464250) /* "PBF1" */
#define FRAME_MAX_ZERO_CHUNKS 256
#define FRAME_MAX_SKIP_CHUNKS 16384
#define FRAME_ZSTD_PREFIX 4

typedef enum FrameType {
        FRAME_DATA = 1,
        FRAME_ZERO = 2,
        FRAME_SKIP = 3,
        FRAME_ZSTD = 4,
} FrameType;

/* What a stream may carry beyond DATA and ZERO frames. */
typedef enum FrameFeature {
        FRAME_FEATURE_SKIP = 1 << 0,
        FRAME_FEATURE_ZSTD = 1 << 1,
        FRAME_FEATURES_ALL = FRAME_FEATURE_SKIP | FRAME_FEATURE_ZSTD,
} FrameFeature;

/* "skip,zstd" ↔ the bits; names this build does not know are ignored (a newer peer's). */
unsigned frame_features_parse(const char *s);
/* Into buf, "" for none. */
const char *frame_features_string(unsigned features, char buf[static 16]);

typedef struct FrameHeader {
        FrameType type;
        uint64_t offset, length;
        XXH128_hash_t hash;
} FrameHeader;

/* The content hash of one chunk's bytes. */
XXH128_hash_t frame_chunk_hash(const void *data, size_t size);
/* The content hash of a chunk of zeroes of this size (cached for whole chunks). */
XXH128_hash_t frame_zero_hash(size_t size);
/* What stands for a skipped chunk of this size in the digest. */
XXH128_hash_t frame_skip_hash(size_t size);
/* The frame hash, from the content hash (of the DATA or ZSTD chunk; ignored for ZERO and SKIP). */
XXH128_hash_t frame_hash(FrameType type, uint64_t offset, uint64_t length, XXH128_hash_t content);

void frame_header_write(const FrameHeader *h, uint8_t out[FRAME_HEADER_SIZE]);
/* Parses a header and checks it against the disk and the stream's features: -EBADMSG with *ret_reason if
 * it cannot be right. */
int frame_header_read(const uint8_t in[FRAME_HEADER_SIZE], uint64_t disk_size, unsigned features,
                      FrameHeader *ret, const char **ret_reason);

bool frame_is_zero(const void *data, size_t size);

/* The chunk (n bytes) compressed into out (max bytes) at level, if that is worth a ZSTD frame: a sample of
 * it compresses first (random data costs a sample's work, not a chunk's), and the whole, with its size
 * prefix, saves more than a sixteenth. Its compressed size, else 0. */
size_t frame_pack(ZSTD_CCtx *cctx, const uint8_t *chunk, size_t n, uint8_t *out, size_t max, int level);

/* The most one frame takes on the wire. */
#define FRAME_WIRE_MAX (FRAME_HEADER_SIZE + FRAME_ZSTD_PREFIX + ZSTD_COMPRESSBOUND(FRAME_CHUNK))
/* A ZERO or SKIP run's frame into out: its length, FRAME_HEADER_SIZE. */
size_t frame_build_run(FrameType type, uint64_t offset, uint64_t length, uint8_t *out);
/* The frame of one chunk (n bytes at offset, content its hash) into out (FRAME_WIRE_MAX bytes): ZSTD at
 * level if cctx is given and frame_pack() finds it worth it, else DATA. Its length. */
size_t frame_build_chunk(ZSTD_CCtx *cctx, int level, const uint8_t *chunk, size_t n, uint64_t offset,
                         XXH128_hash_t content, uint8_t *out);

/* The running digest: chunk content hashes fed in order. */
typedef struct Digest {
        XXH3_state_t *state;
        uint64_t chunks; /* how many chunks it covers: the next one expected is chunks × FRAME_CHUNK */
} Digest;

int digest_init(Digest *d);
void digest_done(Digest *d);
void digest_feed(Digest *d, XXH128_hash_t chunk_hash);
/* Feeds the chunks of a ZERO or SKIP run of this length at d's position. */
void digest_feed_run(Digest *d, FrameType type, uint64_t length, uint64_t disk_size);
/* "xxh3-128:<32 hex digits>" */
char *digest_string(const Digest *d);
/* A hash as 32 hex digits of its canonical (big-endian) form. */
void frame_hash_hex(XXH128_hash_t h, char out[static 33]);

/* The longest run a ZERO or SKIP frame may stand for. */
uint64_t frame_run_max(FrameType type);
/* The features this build speaks (test builds: PUREBOOT_AGENT_FAULT_FEATURES= plays an older peer). */
unsigned frame_features_ours(void);
