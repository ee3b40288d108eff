/* SPDX-License-Identifier: MIT */
/* clone-source: serves the device, read-only, over HTTPS to the one certificate allowed to read it — the
 * session's target — as a stream of frames (frame.h) starting at the offset the target asks for. Before it
 * serves it maps which ranges the disk's filesystems use (usedmap.h): a target that takes SKIP frames gets
 * only those, and one that takes ZSTD frames gets each chunk that compresses compressed. It reports where
 * it serves, its progress, and once every chunk was read the digest of what it read. */
#include <assert.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "chunk-reader.h"
#include "device.h"
#include "format.h"
#include "frame.h"
#include "job.h"
#include "log.h"
#include "peer-server.h"
#include "queue.h"
#include "scan.h"
#include "tls.h"
#include "usedmap.h"
#include "util.h"

#define MAX_STREAMS 4

struct Source {
        Agent *agent;
        Device dev;
        PeerServer server;
        UsedMap map;   /* what the disk's filesystems do not use */
        Digest digest; /* over chunks in order, from the start of the disk */
        bool digest_skips; /* the digest is of the stream with SKIP frames */
        bool complete_reported;
        uint64_t served_to; /* the furthest offset served */
        uint64_t bytes_sent; /* stream bytes handed to TLS, all streams: what the wire carries, less TLS */
        ProgressMeter progress;
        sd_event_source *progress_timer;
        unsigned streams;
#if PB_FAULT_INJECTION
        uint64_t corrupt_offset; /* test builds: damage the DATA frame at this offset once */
#endif
};

typedef struct Stream {
        Source *source;
        uint64_t pos;  /* the next offset to frame */
        uint64_t sent; /* stream bytes handed to TLS */
        PeerCheck peer;                /* the target's certificate */
        unsigned features;             /* agreed with the target */
        const UsedMap *map;            /* the source's, if the target takes SKIP frames */
        ChunkReader *reader;           /* the disk, read ahead from pos */
        bool holding;                  /* the reader's next slot is the chunk being sent */
        /* What goes out next: a run's header, a chunk's header (and compressed size), the chunk. */
        uint8_t headers[2 * FRAME_HEADER_SIZE + FRAME_ZSTD_PREFIX];
        struct {
                const uint8_t *data;
                size_t len;
        } out[3];
        size_t n_out, out_i, out_off;
} Stream;

static uint64_t total_chunks(const Source *s) {
        return (s->dev.size + FRAME_CHUNK - 1) / FRAME_CHUNK;
}

static void report_complete(Source *s) {
        _cleanup_free_ char *digest = digest_string(&s->digest);
        json_object *p;

        if (!digest) {
                log_oom();
                return;
        }
        p = agent_report_new(s->agent, "source");
        json_object_object_add(p, "digest", json_object_new_string(digest));
        if (queue_push(s->agent->queue, "ReportComplete", p) >= 0) {
                s->complete_reported = true;
                log_info("Read all of %s (%s); its digest is %s.", s->dev.path, FORMAT_BYTES(s->dev.size), digest);
        }
}

/* A chunk's content hash joins the digest only in order; a chunk served again is already in it. */
static void digest_chunk(Source *s, uint64_t offset, XXH128_hash_t hash) {
        if (offset / FRAME_CHUNK == s->digest.chunks)
                digest_feed(&s->digest, hash);
}

/* After a restart the target resumes where it was: read what lies before, so the digest still covers
 * the whole disk — as this stream sends it, with SKIP frames or without. */
static int catch_up(Source *s, Stream *st, uint64_t offset) {
        _cleanup_free_ uint8_t *scratch = NULL;
        int r;

        if (s->digest_skips != (st->map != NULL) && s->digest.chunks > 0) {
                log_info("The target now takes %s: computing the digest again from the start.",
                         st->map ? "SKIP frames" : "whole-disk frames");
                digest_done(&s->digest);
                r = digest_init(&s->digest);
                if (r < 0)
                        return r;
        }
        s->digest_skips = st->map != NULL;
        if (s->digest.chunks * FRAME_CHUNK >= offset)
                return 0;
        log_info("Reading %s up to %s for the digest before serving from there.", s->dev.path,
                 FORMAT_BYTES(offset));
        scratch = device_buffer_new(FRAME_CHUNK);
        if (!scratch)
                return -ENOMEM;
        return device_digest(&s->dev, &s->digest, offset, scratch, st->map);
}

/* A run's chunks, or a chunk, join the digest. */
static void digest_slot(Source *s, const ChunkSlot *slot) {
        for (uint64_t o = slot->offset; o < slot->offset + slot->length; o += FRAME_CHUNK) {
                size_t n = (size_t) MIN(FRAME_CHUNK, slot->offset + slot->length - o);
                digest_chunk(s, o, chunk_slot_hash(slot, n));
        }
}

static void stream_out(Stream *st, const void *data, size_t len) {
        assert(st->n_out < ELEMENTSOF(st->out));
        st->out[st->n_out].data = data;
        st->out[st->n_out++].len = len;
}

/* The frame of the chunk in slot: DATA, or ZSTD with its compressed size first. */
static void emit_chunk(Stream *st, const ChunkSlot *slot) {
        uint8_t *header = st->headers + FRAME_HEADER_SIZE;
        size_t n = (size_t) slot->length;
        FrameHeader h = { .type = slot->type, .offset = slot->offset, .length = n };

        h.hash = frame_hash(h.type, slot->offset, n, slot->hash);
        frame_header_write(&h, header);
#if PB_FAULT_INJECTION
        Source *s = st->source;
        if (s->corrupt_offset == slot->offset + 1) {
                log_warning("Fault injection: damaging the frame at offset %" PRIu64 " after hashing.",
                            slot->offset);
                uint8_t *bytes = slot->type == FRAME_ZSTD ? slot->packed : slot->chunk;
                bytes[(slot->type == FRAME_ZSTD ? slot->packed_size : n) / 2] ^= 0x5a;
                s->corrupt_offset = 0;
        }
#endif
        if (slot->type == FRAME_DATA) {
                stream_out(st, header, FRAME_HEADER_SIZE);
                stream_out(st, slot->chunk, n);
                return;
        }
        uint32_t size = htole32((uint32_t) slot->packed_size);
        memcpy(header + FRAME_HEADER_SIZE, &size, FRAME_ZSTD_PREFIX);
        stream_out(st, header, FRAME_HEADER_SIZE + FRAME_ZSTD_PREFIX);
        stream_out(st, slot->packed, slot->packed_size);
}

/* Fills the stream with its next frames: a ZERO or SKIP frame for the run of zero or unused chunks from pos
 * on (if any), then the frame of the chunk with data that ended it (if any). The chunks come from the
 * stream's reader, read ahead in its thread; the one being sent stays its until the next call. */
static int produce(Stream *st) {
        Source *s = st->source;
        uint64_t start = st->pos, pos = start;
        const ChunkSlot *slot = NULL;
        FrameType run = 0;
        int r;

        if (st->holding) {
                chunk_reader_pop(st->reader);
                st->holding = false;
        }
        if (!st->reader) {
                r = catch_up(s, st, start);
                if (r < 0)
                        return r;
                r = chunk_reader_new(&s->dev, st->map, st->features & FRAME_FEATURE_ZSTD, 0, start,
                                     &st->reader);
                if (r < 0)
                        return log_error_errno(r, "Failed to start reading %s: %m", s->dev.path);
        }
        st->n_out = st->out_i = st->out_off = 0;
        while (pos < s->dev.size) {
                slot = chunk_reader_peek(st->reader);
                if (!slot || slot->error < 0)
                        return slot ? slot->error : -EIO; /* device_read_chunk() said why */
                if (slot->type == FRAME_DATA || slot->type == FRAME_ZSTD)
                        break;
                if (run && (slot->type != run || pos - start + slot->length > frame_run_max(run))) {
                        slot = NULL; /* the next run's */
                        break;
                }
                run = slot->type;
                digest_slot(s, slot);
                pos += slot->length;
                chunk_reader_pop(st->reader);
                slot = NULL;
        }
        if (run) {
                FrameHeader h = { .type = run, .offset = start, .length = pos - start };
                h.hash = frame_hash(run, h.offset, h.length, (XXH128_hash_t){});
                frame_header_write(&h, st->headers);
                stream_out(st, st->headers, FRAME_HEADER_SIZE);
        }
        if (slot) {
                emit_chunk(st, slot);
                digest_slot(s, slot);
                pos += slot->length;
                st->holding = true;
        }
        st->pos = pos;
        s->served_to = MAX(s->served_to, pos);
        if (!s->complete_reported && s->digest.chunks == total_chunks(s))
                report_complete(s);
        return 0;
}

static void stream_free(Stream *st) {
        if (!st)
                return;
        chunk_reader_free(st->reader);
        peer_check_done(&st->peer);
        free(st);
}

/* A stream to the target with cert, from offset, with the features it asked for that we speak. */
static Stream *stream_new(Source *s, const gnutls_datum_t *cert, uint64_t offset, unsigned asked) {
        Stream *st = calloc(1, sizeof(Stream));

        if (!st)
                return NULL;
        st->source = s;
        st->pos = offset;
        st->features = asked & frame_features_ours();
        st->map = st->features & FRAME_FEATURE_SKIP ? &s->map : NULL;
        if (peer_check_init(&st->peer, s->agent, cert) < 0)
                return stream_free(st), NULL;
        return st;
}

static ssize_t on_read(void *cls, uint64_t unused, char *buf, size_t max) {
        Stream *st = cls;
        (void) unused;

        size_t n = 0;
        while (n < max) {
                if (st->out_i == st->n_out) {
                        if (n > 0) /* hand on what there is; the next call reads on */
                                break;
                        if (st->pos >= st->source->dev.size)
                                return MHD_CONTENT_READER_END_OF_STREAM;
                        if (!peer_check_still_good(&st->source->server, st->source->agent, &st->peer,
                                                   "the target", st->pos) ||
                            produce(st) < 0)
                                return MHD_CONTENT_READER_END_WITH_ERROR;
                        continue;
                }
                size_t k = MIN(max - n, st->out[st->out_i].len - st->out_off);
                memcpy(buf + n, st->out[st->out_i].data + st->out_off, k);
                n += k;
                st->out_off += k;
                if (st->out_off == st->out[st->out_i].len) {
                        st->out_i++;
                        st->out_off = 0;
                }
        }
        st->sent += n;
        return (ssize_t) n;
}

static void on_stream_end(void *cls) {
        Stream *st = cls;
        Source *s = st->source;

        s->streams--;
        s->bytes_sent += st->sent;
        /* What went over the wire, for the operator (and the tests, which check it against the link). */
        int now = 0, lowest = 0, highest = 0;
        if (st->reader)
                chunk_reader_levels(st->reader, &now, &lowest, &highest);
        char levels[64] = "";
        if (highest > 0)
                (void) snprintf(levels, sizeof(levels), ", compressed at zstd level %d to %d", lowest,
                                highest);
        log_info("A stream ended at %s after sending %s of frames%s (%" PRIu64
                 " bytes in all streams so far).",
                 FORMAT_BYTES(st->pos), FORMAT_BYTES(st->sent), levels, s->bytes_sent);
        stream_free(st);
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                 const char *version, const char *data, size_t *data_size, void **req_cls) {
        Source *s = cls;
        const gnutls_datum_t *cert;
        enum MHD_Result result;
        uint64_t offset;
        unsigned asked;
        int r;
        (void) version, (void) data, (void) data_size;

        if (peer_server_request_begins(conn, req_cls, s))
                return MHD_YES;
        r = peer_server_disk_request(&s->server, s->agent, conn, url, method, s->dev.size, &cert, &offset,
                                     &asked, &result);
        if (r <= 0)
                return r < 0 ? MHD_NO : result;
        if (s->streams >= MAX_STREAMS)
                return peer_server_reply(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "Too many streams at once.\n");

        Stream *st = stream_new(s, cert, offset, asked);
        if (!st)
                return MHD_NO;
        s->streams++;
        char features[16];
        log_info("The target %s at %s, taking %s frames.", offset > 0 ? "resumes" : "starts",
                 FORMAT_BYTES(offset),
                 isempty(frame_features_string(st->features, features)) ? "whole-disk" : features);
        return peer_server_queue_stream(conn, s->dev.size, st->features, on_read, st, on_stream_end);
}

static int on_progress(sd_event_source *es, uint64_t usec, void *userdata) {
        Source *s = userdata;
        (void) usec;

        (void) sd_event_source_set_time_relative(es, USEC_PER_SEC);
        if (s->served_to != s->progress.bytes)
                agent_report_progress(s->agent, &s->progress, "source", s->served_to, "transferring", NULL);
        return 0;
}

static int report_ready(Source *s) {
        Agent *a = s->agent;
        _cleanup_free_ char *address = NULL;
        json_object *p;

        if (client_own_address(a, &address) < 0 || isempty(address))
                return log_error_errno(EADDRNOTAVAIL, "Do not know our own address towards %s; give --address=.",
                                       a->settings.server);
        p = agent_report_new(a, NULL);
        json_object_object_add(p, "address", json_object_new_string(address));
        json_object_object_add(p, "port", json_object_new_int(a->settings.port));
        json_object_object_add(p, "sizeBytes", json_object_new_int64((int64_t) s->dev.size));
        json_object_object_add(p, "device", json_object_new_string(a->settings.device));
        agent_report_add_notes(p, s->map.whole);
        log_info("Serving %s (%s) on %s:%u to %s<n>, the session's targets.", s->dev.path,
                 FORMAT_BYTES(s->dev.size), address, a->settings.port, s->server.expected_cn);
        return queue_push(a->queue, "ReportSourceReady", p);
}

/* Which ranges of the disk its filesystems use, as they are now (after the source's resize steps). */
static int map_disk(Source *s) {
        if (!(frame_features_ours() & FRAME_FEATURE_SKIP))
                return 0;
        int r = used_map_of_disk(s->dev.path, &s->map);
        if (r < 0)
                return log_error_errno(r, "Failed to map what %s uses: %m", s->dev.path);
        return 0;
}

static int serve(Source *s) {
        Agent *a = s->agent;
        int r;

        r = map_disk(s);
        if (r < 0)
                return r;
        r = trust_start(a);
        if (r < 0)
                return r;
        r = peer_server_start(&s->server, a, on_access, s, false);
        if (r < 0)
                return r;
        r = agent_add_progress_timer(a, &s->progress_timer, on_progress, s);
        if (r < 0)
                return r;
        return report_ready(s);
}

/* Serving starts once the session says how: after the source's resize steps, if the plan has any. */
static void on_session(Agent *a, json_object *session) {
        Source *s = a->source;
        int r;

        if (s->server.daemon || a->finishing)
                return;
        r = resize_prepare_source(a, session, a->disk_fingerprint, &s->dev.size);
        if (r > 0)
                r = serve(s);
        if (r < 0)
                agent_exit(a, AGENT_EXIT_FAILURE);
}

static const JobKind source_job = {
        .role = "source",
        .report_disk = true,
        .changed = on_session,
};

int source_start(Agent *a) {
        _cleanup_free_ char *holder = NULL;
        Source *s;
        int r;

        s = calloc(1, sizeof(Source));
        if (!s)
                return -ENOMEM;
        s->agent = a;
        s->dev = DEVICE_NULL;
        a->source = s;
        r = digest_init(&s->digest);
        if (r < 0)
                return r;
#if PB_FAULT_INJECTION
        const char *e = getenv("PUREBOOT_AGENT_FAULT_CORRUPT_OFFSET");
        if (e)
                s->corrupt_offset = strtoull(e, NULL, 10) + 1;
#endif
        r = device_open(a->settings.device, O_RDONLY, &s->dev, &holder);
        if (r < 0)
                return log_error_errno(r, "Failed to open %s: %m", a->settings.device);
        if (s->dev.size == 0)
                return log_error_errno(EINVAL, "%s is empty: nothing to serve.", a->settings.device);
        return job_start(a, &source_job);
}

Source *source_free(Source *s) {
        if (!s)
                return NULL;
        peer_server_stop(&s->server);
        sd_event_source_disable_unref(s->progress_timer);
        digest_done(&s->digest);
        used_map_done(&s->map);
        device_close(&s->dev);
        free(s);
        return NULL;
}
