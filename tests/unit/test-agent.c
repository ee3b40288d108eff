/* SPDX-License-Identifier: MIT */
/* The agent's pieces that need no network: frames (round trip, every way a header can be wrong, the hash
 * binding bytes to their offset), digests (zero runs fed by length equal zero bytes fed by content), the
 * backoff's bounds, the device helpers on a plain file (size, zeroing by punched hole, digest by reading
 * back), and the resume journals (whose they are, what they say, garbage). */
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zstd.h>

#include "backoff.h"
#include "chunk-reader.h"
#include "device.h"
#include "frame.h"
#include "journal.h"
#include "tests.h"
#include "usedmap.h"
#include "util.h"

static void test_frame_round_trip(void) {
        static uint8_t chunk[FRAME_CHUNK];
        uint8_t buf[FRAME_HEADER_SIZE];
        const char *reason;
        FrameHeader h, back;

        for (size_t i = 0; i < sizeof(chunk); i++)
                chunk[i] = (uint8_t) (i * 7 + 3);
        XXH128_hash_t content = frame_chunk_hash(chunk, sizeof(chunk));
        h = (FrameHeader){ .type = FRAME_DATA, .offset = 3 * FRAME_CHUNK, .length = FRAME_CHUNK };
        h.hash = frame_hash(FRAME_DATA, h.offset, h.length, content);
        frame_header_write(&h, buf);
        ASSERT_OK(frame_header_read(buf, 8 * FRAME_CHUNK, 0, &back, &reason));
        ASSERT_INT(back.type, FRAME_DATA);
        ASSERT_INT(back.offset, 3 * FRAME_CHUNK);
        ASSERT_INT(back.length, FRAME_CHUNK);
        ASSERT_TRUE(XXH128_isEqual(back.hash, h.hash));

        /* The same bytes at another offset, or one byte changed, do not verify. */
        ASSERT_TRUE(!XXH128_isEqual(frame_hash(FRAME_DATA, 4 * FRAME_CHUNK, FRAME_CHUNK, content), h.hash));
        chunk[12345] ^= 1;
        ASSERT_TRUE(!XXH128_isEqual(frame_hash(FRAME_DATA, h.offset, h.length, frame_chunk_hash(chunk, sizeof(chunk))),
                                    h.hash));
        /* A ZERO frame's hash covers its length. */
        ASSERT_TRUE(!XXH128_isEqual(frame_hash(FRAME_ZERO, 0, FRAME_CHUNK, (XXH128_hash_t){}),
                                    frame_hash(FRAME_ZERO, 0, 2 * FRAME_CHUNK, (XXH128_hash_t){})));
}

static void expect_refused_with(FrameType type, uint64_t offset, uint64_t length, uint64_t disk,
                                uint32_t magic, unsigned features) {
        FrameHeader h = { .type = type, .offset = offset, .length = length }, back;
        uint8_t buf[FRAME_HEADER_SIZE];
        const char *reason = NULL;

        frame_header_write(&h, buf);
        if (magic != FRAME_MAGIC)
                memcpy(buf, &magic, 4);
        ASSERT_INT(frame_header_read(buf, disk, features, &back, &reason), -EBADMSG);
        ASSERT_TRUE(reason != NULL);
}

static void expect_refused(FrameType type, uint64_t offset, uint64_t length, uint64_t disk, uint32_t magic) {
        expect_refused_with(type, offset, length, disk, magic, FRAME_FEATURES_ALL);
}

static void test_frame_refusals(void) {
        uint64_t disk = 10 * FRAME_CHUNK + 512; /* a short last chunk */
        expect_refused(FRAME_DATA, 0, FRAME_CHUNK, disk, 0x12345678);             /* magic */
        expect_refused((FrameType) 5, 0, FRAME_CHUNK, disk, FRAME_MAGIC);         /* type */
        expect_refused((FrameType) 0, 0, FRAME_CHUNK, disk, FRAME_MAGIC);
        /* SKIP and ZSTD frames only in a stream that agreed on them. */
        expect_refused_with(FRAME_SKIP, 0, FRAME_CHUNK, disk, FRAME_MAGIC, FRAME_FEATURE_ZSTD);
        expect_refused_with(FRAME_ZSTD, 0, FRAME_CHUNK, disk, FRAME_MAGIC, FRAME_FEATURE_SKIP);
        expect_refused(FRAME_ZSTD, 0, FRAME_CHUNK + 1, disk, FRAME_MAGIC);
        expect_refused(FRAME_SKIP, 0, FRAME_CHUNK + 7, disk, FRAME_MAGIC);
        expect_refused(FRAME_SKIP, 0, (FRAME_MAX_SKIP_CHUNKS + 1) * FRAME_CHUNK, UINT64_C(1) << 40,
                       FRAME_MAGIC);
        expect_refused(FRAME_DATA, 100, FRAME_CHUNK, disk, FRAME_MAGIC);          /* not on a chunk */
        expect_refused(FRAME_DATA, 0, 0, disk, FRAME_MAGIC);                      /* empty */
        expect_refused(FRAME_DATA, 0, FRAME_CHUNK + 1, disk, FRAME_MAGIC);        /* longer than a chunk */
        expect_refused(FRAME_DATA, 10 * FRAME_CHUNK, 513, disk, FRAME_MAGIC);     /* past the end */
        expect_refused(FRAME_ZERO, 0, FRAME_CHUNK + 7, disk, FRAME_MAGIC);        /* ragged zero run */
        expect_refused(FRAME_ZERO, 0, (FRAME_MAX_ZERO_CHUNKS + 1) * FRAME_CHUNK, UINT64_C(1) << 40, FRAME_MAGIC);

        /* The short last chunk is fine, as DATA or as the end of a zero run. */
        FrameHeader h = { .type = FRAME_ZERO, .offset = 8 * FRAME_CHUNK, .length = 2 * FRAME_CHUNK + 512 }, back;
        uint8_t buf[FRAME_HEADER_SIZE];
        const char *reason;
        frame_header_write(&h, buf);
        ASSERT_OK(frame_header_read(buf, disk, FRAME_FEATURES_ALL, &back, &reason));
        /* A long skipped run is one frame. */
        h = (FrameHeader){ .type = FRAME_SKIP, .offset = 0, .length = FRAME_MAX_SKIP_CHUNKS * FRAME_CHUNK };
        frame_header_write(&h, buf);
        ASSERT_OK(frame_header_read(buf, UINT64_C(1) << 40, FRAME_FEATURE_SKIP, &back, &reason));
        ASSERT_INT(back.type, FRAME_SKIP);
}

/* Features: named in a list, unknown names (a newer peer's) ignored, and written back. */
static void test_frame_features(void) {
        char buf[16];

        ASSERT_INT(frame_features_parse("skip,zstd"), FRAME_FEATURES_ALL);
        ASSERT_INT(frame_features_parse(" zstd, lz4,skip\r\n"), FRAME_FEATURES_ALL);
        ASSERT_INT(frame_features_parse("skipper,zst"), 0);
        ASSERT_INT(frame_features_parse(""), 0);
        ASSERT_INT(frame_features_parse(NULL), 0);
        ASSERT_STR(frame_features_string(FRAME_FEATURES_ALL, buf), "skip,zstd");
        ASSERT_STR(frame_features_string(FRAME_FEATURE_ZSTD, buf), "zstd");
        ASSERT_STR(frame_features_string(0, buf), "");
        /* A compressed chunk is the same frame as the chunk sent as it is; a skipped one is not a zero one.
         */
        XXH128_hash_t content = frame_chunk_hash("abc", 3);
        ASSERT_TRUE(XXH128_isEqual(frame_hash(FRAME_ZSTD, 0, 3, content),
                                   frame_hash(FRAME_DATA, 0, 3, content)));
        ASSERT_TRUE(!XXH128_isEqual(frame_skip_hash(FRAME_CHUNK), frame_zero_hash(FRAME_CHUNK)));
        ASSERT_TRUE(!XXH128_isEqual(frame_hash(FRAME_SKIP, 0, FRAME_CHUNK, content),
                                    frame_hash(FRAME_ZERO, 0, FRAME_CHUNK, content)));
}

/* The reader ahead gives the chunks in order: a run of unused ones as one slot, zero and data chunks one by
 * one, a chunk that compresses compressed (and decompressing to itself), random data as it is. */
static void test_chunk_reader(void) {
        char path[] = "/tmp/pureboot-test-agent-XXXXXX";
        static uint8_t text[FRAME_CHUNK], noise[FRAME_CHUNK], back[FRAME_CHUNK];
        static const uint8_t zero[FRAME_CHUNK];
        UsedMap m = { .size = 8 * FRAME_CHUNK };
        ChunkReader *r;
        char *holder = NULL;
        Device d;
        int fd = mkstemp(path);

        ASSERT_TRUE(fd >= 0);
        for (size_t i = 0; i < FRAME_CHUNK; i++)
                text[i] = (uint8_t) "the quick brown fox "[i % 20];
        int rnd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
        ASSERT_TRUE(rnd >= 0);
        ASSERT_INT(read(rnd, noise, sizeof(noise)), sizeof(noise));
        close(rnd);
        /* text, unused, unused, zero, noise, text, unused (to the end: a short chunk) */
        const uint8_t *layout[] = { text, noise, noise, zero, noise, text };
        for (size_t i = 0; i < ELEMENTSOF(layout); i++)
                ASSERT_INT(write(fd, layout[i], FRAME_CHUNK), FRAME_CHUNK);
        ASSERT_INT(write(fd, text, 4096), 4096);
        close(fd);
        ASSERT_OK(device_open(path, O_RDONLY, &d, &holder));
        ASSERT_OK(used_map_add(&m, FRAME_CHUNK, 2 * FRAME_CHUNK));
        ASSERT_OK(used_map_add(&m, 6 * FRAME_CHUNK, 4096));

        for (unsigned readers = 1; readers <= 3; readers++) {
                ASSERT_OK(chunk_reader_new(&d, &m, true, readers, 0, &r));
                static const struct {
                        FrameType type;
                        uint64_t offset, length;
                } expect[] = {
                        { FRAME_ZSTD, 0, FRAME_CHUNK },
                        { FRAME_SKIP, FRAME_CHUNK, 2 * FRAME_CHUNK },
                        { FRAME_ZERO, 3 * FRAME_CHUNK, FRAME_CHUNK },
                        { FRAME_DATA, 4 * FRAME_CHUNK, FRAME_CHUNK }, /* random: sent as it is */
                        { FRAME_ZSTD, 5 * FRAME_CHUNK, FRAME_CHUNK },
                        { FRAME_SKIP, 6 * FRAME_CHUNK, 4096 },
                };
                for (size_t i = 0; i < ELEMENTSOF(expect); i++) {
                        const ChunkSlot *s = chunk_reader_peek(r);
                        ASSERT_TRUE(s && s->error == 0);
                        ASSERT_INT(s->type, expect[i].type);
                        ASSERT_INT(s->offset, expect[i].offset);
                        ASSERT_INT(s->length, expect[i].length);
                        if (s->type == FRAME_ZSTD) {
                                size_t n = ZSTD_decompress(back, sizeof(back), s->packed, s->packed_size);
                                ASSERT_INT(n, FRAME_CHUNK);
                                ASSERT_TRUE(XXH128_isEqual(frame_chunk_hash(back, n), s->hash));
                        }
                        chunk_reader_pop(r);
                }
                ASSERT_TRUE(chunk_reader_peek(r) == NULL); /* past the end */
                chunk_reader_free(r);
        }

        /* Without a map or compression: every chunk read, sent as it is; and from an offset on. */
        ASSERT_OK(chunk_reader_new(&d, NULL, false, 2, 4 * FRAME_CHUNK, &r));
        const ChunkSlot *s = chunk_reader_peek(r);
        ASSERT_INT(s->type, FRAME_DATA);
        ASSERT_INT(s->offset, 4 * FRAME_CHUNK);
        ASSERT_TRUE(memcmp(s->chunk, noise, FRAME_CHUNK) == 0);
        chunk_reader_free(r); /* before the end: the thread stops */
        used_map_done(&m);
        device_close(&d);
        unlink(path);
}

/* The reader's zstd level follows the slower side: up to the highest while the stream is slow (here it
 * sleeps over text that compresses at any level in no time), down while the reader is (here it compresses
 * 4-bit noise, dear at high levels, for a stream that takes each chunk at once). */
static void test_chunk_reader_adapts(void) {
        char path[] = "/tmp/pureboot-test-agent-XXXXXX";
        static uint8_t text[FRAME_CHUNK], nibbles[FRAME_CHUNK];
        ChunkReader *r;
        char *holder = NULL;
        Device d;
        int fd = mkstemp(path), now, lowest, highest;

        ASSERT_TRUE(fd >= 0);
        int rnd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
        ASSERT_TRUE(rnd >= 0);
        ASSERT_INT(read(rnd, nibbles, sizeof(nibbles)), sizeof(nibbles));
        close(rnd);
        for (size_t i = 0; i < FRAME_CHUNK; i++) {
                text[i] = (uint8_t) "the quick brown fox "[i % 20];
                nibbles[i] = (uint8_t) ('a' + (nibbles[i] & 15));
        }
        for (size_t i = 0; i < 48; i++)
                ASSERT_INT(write(fd, i < 16 ? text : nibbles, FRAME_CHUNK), FRAME_CHUNK);
        close(fd);
        ASSERT_OK(device_open(path, O_RDONLY, &d, &holder));
        ASSERT_OK(chunk_reader_new(&d, NULL, true, 1, 0, &r));
        for (size_t i = 0; i < 16; i++) {
                ASSERT_TRUE(chunk_reader_peek(r) != NULL);
                usleep(20 * 1000);
                chunk_reader_pop(r);
        }
        chunk_reader_levels(r, &now, &lowest, &highest);
        ASSERT_INT(highest, CHUNK_READER_LEVEL_MAX);
        for (size_t i = 16; i < 48; i++) {
                const ChunkSlot *s = chunk_reader_peek(r);
                ASSERT_TRUE(s && s->type == FRAME_ZSTD);
                chunk_reader_pop(r);
        }
        ASSERT_TRUE(chunk_reader_peek(r) == NULL);
        chunk_reader_levels(r, &now, &lowest, &highest);
        ASSERT_TRUE(now < CHUNK_READER_LEVEL_MAX);
        ASSERT_INT(lowest, CHUNK_READER_LEVEL_MIN);
        ASSERT_INT(highest, CHUNK_READER_LEVEL_MAX);
        chunk_reader_free(r);
        device_close(&d);
        unlink(path);
}

/* The source reads a chunk as the map says: skipped whole, unused bytes cleared, zero once cleared. */
static void test_read_chunk(void) {
        char path[] = "/tmp/pureboot-test-agent-XXXXXX";
        static uint8_t data[FRAME_CHUNK], buf[FRAME_CHUNK], expect[FRAME_CHUNK];
        UsedMap m = { .size = 4 * FRAME_CHUNK };
        XXH128_hash_t hash;
        FrameType type;
        char *holder = NULL;
        Device d;
        int fd = mkstemp(path);

        ASSERT_TRUE(fd >= 0);
        memset(data, 0x3c, sizeof(data));
        for (int i = 0; i < 4; i++)
                ASSERT_INT(write(fd, data, sizeof(data)), sizeof(data));
        close(fd);
        ASSERT_OK(device_open(path, O_RDWR, &d, &holder));
        /* Chunk 0 used; chunk 1 half unused; chunk 2 unused whole; chunk 3 unused but for its first byte. */
        ASSERT_OK(used_map_add(&m, FRAME_CHUNK + FRAME_CHUNK / 2, FRAME_CHUNK + FRAME_CHUNK / 2));
        ASSERT_OK(used_map_add(&m, 3 * FRAME_CHUNK + 512, FRAME_CHUNK - 512));
        ASSERT_INT(used_map_add(&m, 3 * FRAME_CHUNK, 1024), -EINVAL); /* overlaps the last */
        ASSERT_INT(used_map_unused_from(&m, 2 * FRAME_CHUNK), FRAME_CHUNK);
        ASSERT_INT(used_map_unused_from(&m, FRAME_CHUNK), 0);

        ASSERT_OK(device_read_chunk(&d, &m, 0, FRAME_CHUNK, buf, &type, &hash));
        ASSERT_INT(type, FRAME_DATA);
        ASSERT_TRUE(memcmp(buf, data, FRAME_CHUNK) == 0);
        ASSERT_OK(device_read_chunk(&d, &m, FRAME_CHUNK, FRAME_CHUNK, buf, &type, &hash));
        ASSERT_INT(type, FRAME_DATA);
        memcpy(expect, data, FRAME_CHUNK / 2);
        memset(expect + FRAME_CHUNK / 2, 0, FRAME_CHUNK / 2);
        ASSERT_TRUE(memcmp(buf, expect, FRAME_CHUNK) == 0);
        ASSERT_TRUE(XXH128_isEqual(hash, frame_chunk_hash(expect, FRAME_CHUNK)));
        ASSERT_OK(device_read_chunk(&d, &m, 2 * FRAME_CHUNK, FRAME_CHUNK, buf, &type, &hash));
        ASSERT_INT(type, FRAME_SKIP);
        ASSERT_TRUE(XXH128_isEqual(hash, frame_skip_hash(FRAME_CHUNK)));
        ASSERT_OK(device_read_chunk(&d, &m, 3 * FRAME_CHUNK, FRAME_CHUNK, buf, &type, &hash));
        ASSERT_INT(type, FRAME_DATA);
        /* Without a map every chunk is read as it is. */
        ASSERT_OK(device_read_chunk(&d, NULL, 2 * FRAME_CHUNK, FRAME_CHUNK, buf, &type, &hash));
        ASSERT_INT(type, FRAME_DATA);
        ASSERT_TRUE(memcmp(buf, data, FRAME_CHUNK) == 0);
        /* A discarded range of a file reads as zeroes (a punched hole). */
        ASSERT_INT(device_discard(&d, 2 * FRAME_CHUNK, FRAME_CHUNK), 1);
        ASSERT_OK(device_read_chunk(&d, NULL, 2 * FRAME_CHUNK, FRAME_CHUNK, buf, &type, &hash));
        ASSERT_INT(type, FRAME_ZERO);

        /* The digest read back with the map equals the one fed as the stream went. */
        Digest a, b;
        ASSERT_OK(digest_init(&a));
        ASSERT_OK(digest_init(&b));
        ASSERT_OK(device_digest(&d, &a, d.size, buf, &m));
        digest_feed(&b, frame_chunk_hash(data, FRAME_CHUNK));
        digest_feed(&b, frame_chunk_hash(expect, FRAME_CHUNK));
        digest_feed_run(&b, FRAME_SKIP, FRAME_CHUNK, d.size);
        memset(expect, 0, FRAME_CHUNK);
        expect[0] = 0x3c;
        memset(expect + 1, 0x3c, 511);
        digest_feed(&b, frame_chunk_hash(expect, FRAME_CHUNK));
        char *sa = digest_string(&a), *sb = digest_string(&b);
        ASSERT_STR(sa, sb);
        free(sa);
        free(sb);
        digest_done(&a);
        digest_done(&b);
        used_map_done(&m);
        device_close(&d);
        unlink(path);
}

static void test_digest_of_zeroes(void) {
        static uint8_t zero[FRAME_CHUNK];
        uint64_t disk = 3 * FRAME_CHUNK + 4096;
        Digest a, b;

        ASSERT_TRUE(frame_is_zero(zero, sizeof(zero)));
        zero[FRAME_CHUNK - 1] = 1;
        ASSERT_TRUE(!frame_is_zero(zero, sizeof(zero)));
        zero[FRAME_CHUNK - 1] = 0;

        ASSERT_OK(digest_init(&a));
        ASSERT_OK(digest_init(&b));
        digest_feed_run(&a, FRAME_ZERO, disk, disk);
        for (uint64_t o = 0; o < disk; o += FRAME_CHUNK)
                digest_feed(&b, frame_chunk_hash(zero, (size_t) MIN(FRAME_CHUNK, disk - o)));
        ASSERT_INT(a.chunks, 4);
        char *sa = digest_string(&a), *sb = digest_string(&b);
        ASSERT_STR(sa, sb);
        ASSERT_TRUE(strncmp(sa, "xxh3-128:", 9) == 0 && strlen(sa) == 9 + 32);
        free(sa);
        free(sb);
        digest_done(&a);
        digest_done(&b);
}

static void test_backoff(void) {
        Backoff b;
        uint64_t d;

        backoff_init(&b);
        d = backoff_next(&b);
        ASSERT_TRUE(d >= BACKOFF_MIN_USEC * 4 / 5 && d <= BACKOFF_MIN_USEC * 6 / 5);
        for (int i = 0; i < 20; i++)
                d = backoff_next(&b);
        ASSERT_TRUE(d >= BACKOFF_MAX_USEC * 4 / 5 && d <= BACKOFF_MAX_USEC * 6 / 5);
        backoff_reset(&b);
        ASSERT_TRUE(backoff_next(&b) <= BACKOFF_MIN_USEC * 6 / 5);
}

static void test_device_file(void) {
        char path[] = "/tmp/pureboot-test-agent-XXXXXX";
        static uint8_t data[FRAME_CHUNK], scratch[FRAME_CHUNK];
        char *holder = NULL;
        Device d;
        Digest a, b;
        int fd = mkstemp(path);

        ASSERT_TRUE(fd >= 0);
        memset(data, 0xa5, sizeof(data));
        for (int i = 0; i < 3; i++)
                ASSERT_INT(write(fd, data, sizeof(data)), sizeof(data));
        close(fd);

        ASSERT_OK(device_open(path, O_RDWR, &d, &holder));
        ASSERT_TRUE(!d.is_block && holder == NULL);
        ASSERT_INT(d.size, 3 * FRAME_CHUNK);
        /* The middle chunk zeroed (a punched hole in a file), then the digest read back equals the one of
         * what was "written": data, zeroes, data. */
        ASSERT_OK(device_zero(&d, FRAME_CHUNK, FRAME_CHUNK));
        ASSERT_OK(digest_init(&a));
        ASSERT_OK(digest_init(&b));
        ASSERT_OK(device_digest(&d, &a, d.size, scratch, NULL));
        digest_feed(&b, frame_chunk_hash(data, sizeof(data)));
        digest_feed_run(&b, FRAME_ZERO, FRAME_CHUNK, d.size);
        digest_feed(&b, frame_chunk_hash(data, sizeof(data)));
        char *sa = digest_string(&a), *sb = digest_string(&b);
        ASSERT_STR(sa, sb);
        free(sa);
        free(sb);
        digest_done(&a);
        digest_done(&b);
        device_close(&d);
        unlink(path);
        /* Not a disk at all. */
        ASSERT_INT(device_open("/dev/null", O_RDONLY, &d, &holder), -ENOTBLK);
}

static void test_journal(void) {
        char *dir = tmpdir_new(), path[512];
        ResumePoint p = { .session = "0123456789abcdef0123456789abcdef",
                          .device = "/dev/sdb",
                          .size = 1 << 30,
                          .offset = 64 << 20 };
        json_object *o;
        uint64_t offset;
        char *digest;

        snprintf(path, sizeof(path), "%s/journal.json", dir);
        /* None yet: no resume point, and no error. */
        ASSERT_INT(journal_read(path, &o), 0);
        ASSERT_INT(journal_load_resume(path, &p, &offset, &digest), 0);
        /* Its own job's, with and without a digest. */
        ASSERT_OK(journal_save_resume(path, &p));
        ASSERT_INT(journal_load_resume(path, &p, &offset, &digest), 1);
        ASSERT_TRUE(offset == 64 << 20 && digest == NULL);
        p.offset = p.size;
        p.digest = "xxh3-128:00ff";
        ASSERT_OK(journal_save_resume(path, &p));
        ASSERT_INT(journal_load_resume(path, &p, &offset, &digest), 1);
        ASSERT_TRUE(offset == p.size);
        ASSERT_STR(digest, "xxh3-128:00ff");
        free(digest);
        /* Another session's, another device's, another size's: not ours. */
        ResumePoint other = p;
        other.session = "fedcba9876543210fedcba9876543210";
        ASSERT_INT(journal_load_resume(path, &other, &offset, NULL), 0);
        other = p;
        other.device = "/dev/sdc";
        ASSERT_INT(journal_load_resume(path, &other, &offset, NULL), 0);
        other = p;
        other.size = p.size + 512;
        ASSERT_INT(journal_load_resume(path, &other, &offset, NULL), 0);
        ASSERT_TRUE(offset == 0);
        /* Garbage is no resume point either, and says so to whoever reads the record itself. */
        ASSERT_OK(write_file_atomic(path, "{half", 5, 0600));
        ASSERT_INT(journal_read(path, &o), -EBADMSG);
        ASSERT_INT(journal_load_resume(path, &p, &offset, NULL), 0);
        /* The file is replaced whole, with its mode. */
        struct stat st;
        ASSERT_OK(journal_save_resume(path, &p));
        ASSERT_OK(stat(path, &st));
        ASSERT_INT(st.st_mode & 0777, 0600);
        /* The runs a target skipped come back as they were saved. */
        UsedMap skipped = {}, loaded = {};
        ASSERT_OK(used_map_add(&skipped, 0, 2 << 20));
        ASSERT_OK(used_map_add(&skipped, 8 << 20, 1 << 20));
        p.skipped = &skipped;
        ASSERT_OK(journal_save_resume(path, &p));
        p.skipped = &loaded;
        ASSERT_INT(journal_load_resume(path, &p, &offset, NULL), 1);
        ASSERT_INT(loaded.n_unused, 2);
        ASSERT_INT(loaded.unused[1].offset, 8 << 20);
        ASSERT_INT(loaded.unused[1].length, 1 << 20);
        used_map_done(&loaded);
        /* Runs that overlap are garbage: no resume point. */
        ASSERT_OK(write_file_atomic(
                path,
                "{\"session\":\"0123456789abcdef0123456789abcdef\",\"device\":\"/dev/sdb\","
                "\"size\":1073741824,\"offset\":1048576,\"skipped\":[[0,8],[4,8]]}",
                strlen("{\"session\":\"0123456789abcdef0123456789abcdef\",\"device\":\"/dev/sdb\","
                       "\"size\":1073741824,\"offset\":1048576,\"skipped\":[[0,8],[4,8]]}"),
                0600));
        ASSERT_INT(journal_load_resume(path, &p, &offset, NULL), 0);
        ASSERT_INT(loaded.n_unused, 0);
        used_map_done(&skipped);
        tmpdir_remove(dir);
}

/* A ddrescue domain log as partclone writes it, for a partition at 1 MiB of 2 MiB. */
static void test_domain_log(void) {
        static const char log[] = "# Domain logfile created by unset_name v0.3.23\n"
                                  "# Source: /dev/loop0p1\n"
                                  "# Offset: 0x00100000\n"
                                  "# current_pos  current_status\n"
                                  "0x00300000     ?\n"
                                  "#      pos        size  status\n"
                                  "0x00100000  0x00010000  +\n"
                                  "0x00110000  0x00070000  ?\n"
                                  "0x00180000  0x00080000  ?\n"
                                  "0x00200000  0x00001000  +\n"
                                  "0x00201000  0x000FF000  ?\n";
        UsedMap m = { .size = 4 << 20 };

        ASSERT_OK(used_map_add_domain_log(&m, log, 1 << 20, 2 << 20));
        ASSERT_INT(m.n_unused, 2); /* the two adjacent free ranges are one */
        ASSERT_INT(m.unused[0].offset, 0x110000);
        ASSERT_INT(m.unused[0].length, 0xF0000);
        ASSERT_INT(m.unused[1].offset, 0x201000);
        ASSERT_INT(m.unused_bytes, 0xF0000 + 0xFF000);
        ASSERT_TRUE(used_map_is_unused(&m, 0x110000, 0xF0000));
        ASSERT_TRUE(used_map_is_unused(&m, 0x180000, 0x1000));
        ASSERT_TRUE(!used_map_is_unused(&m, 0x10F000, 0x2000)); /* starts in a used range */
        ASSERT_TRUE(!used_map_is_unused(&m, 0x1FF000, 0x2000)); /* runs into one */
        ASSERT_TRUE(!used_map_is_unused(&m, 0, 1));
        ASSERT_TRUE(!used_map_is_unused(&m, 0x300000, 1)); /* after the partition */

        /* Logs that cannot be right add nothing: outside the partition, out of order, nothing used, not a
         * log at all. */
        static const char *const bad[] = {
                "0x0 ?\n0x00100000 0x00300000 ?\n0x00400000 0x1000 +\n",
                "0x0 ?\n0x00000000 0x00001000 +\n",
                "0x0 ?\n0x00180000 0x1000 +\n0x00100000 0x1000 ?\n",
                "0x0 ?\n0x00100000 0x00100000 ?\n",
                "0x0 ?\n0x00100000 0x1000 x\n",
                "hello\nworld\n",
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                ASSERT_INT(used_map_add_domain_log(&m, bad[i], 1 << 20, 2 << 20), -EBADMSG);
                ASSERT_INT(m.n_unused, 2);
                ASSERT_INT(m.unused_bytes, 0xF0000 + 0xFF000);
        }
        used_map_done(&m);
}

int main(void) {
        test_frame_round_trip();
        test_frame_refusals();
        test_frame_features();
        test_read_chunk();
        test_chunk_reader();
        test_chunk_reader_adapts();
        test_digest_of_zeroes();
        test_backoff();
        test_device_file();
        test_journal();
        test_domain_log();
        return 0;
}
