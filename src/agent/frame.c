/* SPDX-License-Identifier: MIT */
/* Frames and digests of the direct-clone stream. */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "util.h"

XXH128_hash_t frame_chunk_hash(const void *data, size_t size) {
        return XXH3_128bits(data, size);
}

XXH128_hash_t frame_zero_hash(size_t size) {
        static XXH128_hash_t whole;
        static bool have_whole;
        static const uint8_t zeroes[FRAME_CHUNK];

        if (size != FRAME_CHUNK)
                return XXH3_128bits(zeroes, size);
        if (!have_whole) {
                whole = XXH3_128bits(zeroes, FRAME_CHUNK);
                have_whole = true;
        }
        return whole;
}

XXH128_hash_t frame_skip_hash(size_t size) {
        static const char marker[] = "pureboot: chunk skipped";
        return XXH3_128bits_withSeed(marker, sizeof(marker) - 1, size);
}

static const char *const feature_names[] = { "skip", "zstd" };

unsigned frame_features_parse(const char *s) {
        unsigned features = 0;
        for (const char *p = s; p && *p;) {
                size_t n = strcspn(p, ", \t\r\n");
                for (size_t i = 0; i < ELEMENTSOF(feature_names); i++)
                        if (n == strlen(feature_names[i]) && strncmp(p, feature_names[i], n) == 0)
                                features |= 1U << i;
                p += n;
                p += strspn(p, ", \t\r\n");
        }
        return features;
}

const char *frame_features_string(unsigned features, char buf[static 16]) {
        buf[0] = 0;
        for (size_t i = 0; i < ELEMENTSOF(feature_names); i++)
                if (features & (1U << i)) {
                        if (buf[0])
                                strcat(buf, ",");
                        strcat(buf, feature_names[i]);
                }
        return buf;
}

uint64_t frame_run_max(FrameType type) {
        return (type == FRAME_SKIP ? FRAME_MAX_SKIP_CHUNKS : FRAME_MAX_ZERO_CHUNKS) * FRAME_CHUNK;
}

unsigned frame_features_ours(void) {
#if PB_FAULT_INJECTION
        const char *e = getenv("PUREBOOT_AGENT_FAULT_FEATURES");
        if (e)
                return frame_features_parse(e);
#endif
        return FRAME_FEATURES_ALL;
}

XXH128_hash_t frame_hash(FrameType type, uint64_t offset, uint64_t length, XXH128_hash_t content) {
        uint8_t buf[32];
        size_t n = 12;
        uint32_t t = htole32((uint32_t) type);
        uint64_t l = htole64(length);

        if (type == FRAME_ZSTD) /* the same chunk, compressed or not, is the same frame */
                t = htole32((uint32_t) FRAME_DATA);
        memcpy(buf, &t, 4);
        memcpy(buf + 4, &l, 8);
        if (type == FRAME_DATA || type == FRAME_ZSTD) {
                XXH128_canonical_t c;
                XXH128_canonicalFromHash(&c, content);
                memcpy(buf + 12, c.digest, 16);
                n += 16;
        }
        return XXH3_128bits_withSeed(buf, n, offset);
}

void frame_header_write(const FrameHeader *h, uint8_t out[FRAME_HEADER_SIZE]) {
        uint32_t magic = htole32(FRAME_MAGIC), type = htole32((uint32_t) h->type);
        uint64_t offset = htole64(h->offset), length = htole64(h->length);
        XXH128_canonical_t c;

        XXH128_canonicalFromHash(&c, h->hash);
        memcpy(out, &magic, 4);
        memcpy(out + 4, &type, 4);
        memcpy(out + 8, &offset, 8);
        memcpy(out + 16, &length, 8);
        memcpy(out + 24, c.digest, 16);
}

int frame_header_read(const uint8_t in[FRAME_HEADER_SIZE], uint64_t disk_size, unsigned features,
                      FrameHeader *ret, const char **ret_reason) {
        uint32_t magic, type;
        uint64_t offset, length;
        XXH128_canonical_t c;

        memcpy(&magic, in, 4);
        memcpy(&type, in + 4, 4);
        memcpy(&offset, in + 8, 8);
        memcpy(&length, in + 16, 8);
        memcpy(c.digest, in + 24, 16);
        type = le32toh(type);
        offset = le64toh(offset);
        length = le64toh(length);
        *ret_reason = NULL;
        if (le32toh(magic) != FRAME_MAGIC)
                *ret_reason = "not a frame header";
        else if (type < FRAME_DATA || type > FRAME_ZSTD)
                *ret_reason = "unknown frame type";
        else if ((type == FRAME_SKIP && !(features & FRAME_FEATURE_SKIP)) ||
                 (type == FRAME_ZSTD && !(features & FRAME_FEATURE_ZSTD)))
                *ret_reason = "a kind of frame the stream did not agree on";
        else if (offset % FRAME_CHUNK != 0 || length == 0 || offset > disk_size || length > disk_size - offset)
                *ret_reason = "frame outside the disk or not on a chunk boundary";
        else if ((type == FRAME_DATA || type == FRAME_ZSTD) && length > FRAME_CHUNK)
                *ret_reason = "data frame longer than a chunk";
        else if ((type == FRAME_ZERO || type == FRAME_SKIP) &&
                 (length > frame_run_max(type) ||
                  (length % FRAME_CHUNK != 0 && offset + length != disk_size)))
                *ret_reason = "run of a length that cannot be";
        if (*ret_reason)
                return -EBADMSG;
        *ret = (FrameHeader){ .type = type, .offset = offset, .length = length,
                              .hash = XXH128_hashFromCanonical(&c) };
        return 0;
}

bool frame_is_zero(const void *data, size_t size) {
        const uint8_t *p = data;
        /* The first 16 bytes by hand, the rest compared with itself shifted: memcmp is fast. */
        for (size_t i = 0; i < MIN(size, (size_t) 16); i++)
                if (p[i])
                        return false;
        return size <= 16 || memcmp(p, p + 16, size - 16) == 0;
}

int digest_init(Digest *d) {
        *d = (Digest){ .state = XXH3_createState() };
        if (!d->state)
                return -ENOMEM;
        XXH3_128bits_reset(d->state);
        return 0;
}

void digest_done(Digest *d) {
        XXH3_freeState(d->state);
        d->state = NULL;
}

void digest_feed(Digest *d, XXH128_hash_t chunk_hash) {
        XXH128_canonical_t c;
        XXH128_canonicalFromHash(&c, chunk_hash);
        XXH3_128bits_update(d->state, c.digest, sizeof(c.digest));
        d->chunks++;
}

void digest_feed_run(Digest *d, FrameType type, uint64_t length, uint64_t disk_size) {
        uint64_t offset = d->chunks * FRAME_CHUNK, end = MIN(offset + length, disk_size);
        for (uint64_t o = offset; o < end; o += FRAME_CHUNK) {
                size_t n = (size_t) MIN(FRAME_CHUNK, end - o);
                digest_feed(d, type == FRAME_SKIP ? frame_skip_hash(n) : frame_zero_hash(n));
        }
}

char *digest_string(const Digest *d) {
        char *s = malloc(9 + 32 + 1);
        if (!s)
                return NULL;
        strcpy(s, "xxh3-128:");
        frame_hash_hex(XXH3_128bits_digest(d->state), s + 9);
        return s;
}

void frame_hash_hex(XXH128_hash_t h, char out[static 33]) {
        XXH128_canonical_t c;
        XXH128_canonicalFromHash(&c, h);
        hex_encode(c.digest, sizeof(c.digest), out);
}

/* A chunk is compressed when a sample of it compresses. */
#define ZSTD_SAMPLE (64U * 1024)

size_t frame_pack(ZSTD_CCtx *cctx, const uint8_t *chunk, size_t n, uint8_t *out, size_t max, int level) {
        size_t sample = MIN(n, ZSTD_SAMPLE), c;

        c = ZSTD_compressCCtx(cctx, out, max, chunk, sample, level);
        if (ZSTD_isError(c) || c > sample - sample / 8)
                return 0;
        c = ZSTD_compressCCtx(cctx, out, max, chunk, n, level);
        if (ZSTD_isError(c) || c + FRAME_ZSTD_PREFIX > n - n / 16)
                return 0;
        return c;
}

size_t frame_build_run(FrameType type, uint64_t offset, uint64_t length, uint8_t *out) {
        FrameHeader h = { .type = type,
                          .offset = offset,
                          .length = length,
                          .hash = frame_hash(type, offset, length, (XXH128_hash_t){}) };
        frame_header_write(&h, out);
        return FRAME_HEADER_SIZE;
}

size_t frame_build_chunk(ZSTD_CCtx *cctx, int level, const uint8_t *chunk, size_t n, uint64_t offset,
                         XXH128_hash_t content, uint8_t *out) {
        uint8_t *payload = out + FRAME_HEADER_SIZE;
        size_t c = cctx ? frame_pack(cctx, chunk, n, payload + FRAME_ZSTD_PREFIX,
                                     ZSTD_COMPRESSBOUND(FRAME_CHUNK), level)
                        : 0;
        FrameHeader h = { .type = c > 0 ? FRAME_ZSTD : FRAME_DATA, .offset = offset, .length = n };
        size_t len;

        h.hash = frame_hash(h.type, offset, n, content);
        if (c > 0) {
                uint32_t size = htole32((uint32_t) c);
                memcpy(payload, &size, FRAME_ZSTD_PREFIX);
                len = FRAME_HEADER_SIZE + FRAME_ZSTD_PREFIX + c;
        } else {
                memcpy(payload, chunk, n);
                len = FRAME_HEADER_SIZE + n;
        }
        frame_header_write(&h, out);
        return len;
}
