/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "format.h"
#include "log.h"
#include "peer-server.h"
#include "queue.h"
#include "relay.h"
#include "util.h"

/* The window of frames kept to forward as received: about 32 chunks of data, and at most so many frames. */
#define RELAY_WINDOW_BYTES (UINT64_C(32) << 20)
#define RELAY_WINDOW_FRAMES 4096U
#define MAX_STREAMS 4
/* A chunk read back from the disk is compressed cheaply: the catch-up path, not the stream's. */
#define RELAY_ZSTD_LEVEL 1

typedef struct WindowFrame {
        FrameHeader h;
        uint8_t *wire;
        size_t len;
} WindowFrame;

typedef struct RelayStream RelayStream;

struct Relay {
        Agent *agent;
        Device *dev;
        uint64_t size, written;
        UsedMap skipped;
        /* The kinds of frame the chain has carried so far: a downstream must take them all. */
        unsigned features;
        WindowFrame window[RELAY_WINDOW_FRAMES]; /* a ring: first, then n_window in order */
        size_t first, n_window;
        uint64_t window_bytes;
        ZSTD_CCtx *cctx;
        PeerServer server;
        RelayStream *streams;
        unsigned n_streams;
        uint64_t from_window, from_disk; /* what streams were served from each, for the log */
};

struct RelayStream {
        Relay *relay;
        struct MHD_Connection *conn;
        uint64_t pos, sent;
        unsigned features;
        PeerCheck peer; /* the downstream's certificate */
        bool suspended;
        uint8_t *frame; /* the frame going out: header, payload */
        uint8_t *chunk; /* a chunk read back from the disk */
        size_t len, off;
        RelayStream *next, *prev;
};

static unsigned frame_feature(FrameType type) {
        return type == FRAME_SKIP ? FRAME_FEATURE_SKIP : type == FRAME_ZSTD ? FRAME_FEATURE_ZSTD : 0;
}

static void window_drop_first(Relay *r) {
        WindowFrame *f = &r->window[r->first];
        r->window_bytes -= f->len;
        f->wire = mfree(f->wire);
        r->first = (r->first + 1) % RELAY_WINDOW_FRAMES;
        r->n_window--;
}

static WindowFrame *window_at(Relay *r, size_t i) {
        return &r->window[(r->first + i) % RELAY_WINDOW_FRAMES];
}

/* The frame of the window that holds pos, or NULL. Frames follow each other without gaps. */
static const WindowFrame *window_find(Relay *r, uint64_t pos) {
        size_t lo = 0, hi = r->n_window;
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                const WindowFrame *f = window_at(r, mid);
                if (pos < f->h.offset)
                        hi = mid;
                else if (pos >= f->h.offset + f->h.length)
                        lo = mid + 1;
                else
                        return f;
        }
        return NULL;
}

void relay_frame(Relay *r, const FrameHeader *h, const uint8_t *wire, size_t len) {
        if (!r)
                return;
        r->features |= frame_feature(h->type);
        if (h->type == FRAME_SKIP && used_map_add(&r->skipped, h->offset, h->length) < 0)
                log_oom();
        /* A frame that does not follow the window (the target started over) starts it again. */
        if (r->n_window > 0) {
                const WindowFrame *last = window_at(r, r->n_window - 1);
                if (last->h.offset + last->h.length != h->offset)
                        while (r->n_window > 0)
                                window_drop_first(r);
        }
        while (r->n_window > 0 &&
               (r->n_window == RELAY_WINDOW_FRAMES || r->window_bytes + len > RELAY_WINDOW_BYTES))
                window_drop_first(r);
        uint8_t *copy = malloc(len);
        if (copy) {
                memcpy(copy, wire, len);
                *window_at(r, r->n_window) = (WindowFrame){ .h = *h, .wire = copy, .len = len };
                r->n_window++;
                r->window_bytes += len;
        }
        r->written = h->offset + h->length;
        /* Streams that waited for it go on. */
        bool resumed = false;
        for (RelayStream *st = r->streams; st; st = st->next)
                if (st->suspended) {
                        st->suspended = false;
                        MHD_resume_connection(st->conn);
                        resumed = true;
                }
        if (resumed)
                mhd_event_kick(r->server.mhd);
}

/* A ZERO or SKIP run's header for [pos, pos + length). */
static void stream_run(RelayStream *st, FrameType type, uint64_t pos, uint64_t length) {
        st->len = frame_build_run(type, pos, length, st->frame);
        st->pos = pos + length;
}

/* The frame at st->pos made from what the disk holds there: the catch-up of a downstream behind the
 * window. */
static int stream_from_disk(RelayStream *st) {
        Relay *r = st->relay;
        uint64_t pos = st->pos, run = used_map_unused_from(&r->skipped, pos);
        size_t n = (size_t) MIN(FRAME_CHUNK, r->size - pos);
        XXH128_hash_t hash;
        FrameType type;
        int k;

        if (run > 0) {
                if (!(st->features & FRAME_FEATURE_SKIP))
                        return log_error_errno(
                                EPROTO, "The downstream does not take SKIP frames; ending its stream.");
                stream_run(st, FRAME_SKIP, pos, MIN(MIN(run, r->written - pos), frame_run_max(FRAME_SKIP)));
                return 1;
        }
        k = device_read_chunk(r->dev, NULL, pos, n, st->chunk, &type, &hash);
        if (k < 0)
                return log_error_errno(k, "Failed to read %s at %" PRIu64 " for the downstream: %m",
                                       r->dev->path, pos);
        r->from_disk += n;
        if (type == FRAME_ZERO) {
                stream_run(st, FRAME_ZERO, pos, n);
                return 1;
        }
        st->len = frame_build_chunk(st->features & FRAME_FEATURE_ZSTD ? r->cctx : NULL, RELAY_ZSTD_LEVEL,
                                    st->chunk, n, pos, hash, st->frame);
        st->pos = pos + n;
        return 1;
}

/* The next frame into st->frame: 1, or 0 if it is not written yet, or <0. */
static int stream_produce(RelayStream *st) {
        Relay *r = st->relay;
        const WindowFrame *f;

        st->off = st->len = 0;
        if (st->pos >= r->written)
                return 0;
        f = window_find(r, st->pos);
        if (!f || (frame_feature(f->h.type) & ~st->features))
                return stream_from_disk(st);
        r->from_window += f->h.offset == st->pos ? f->h.length : 0;
        if (f->h.offset != st->pos) { /* within a run: the rest of it */
                stream_run(st, f->h.type, st->pos, f->h.offset + f->h.length - st->pos);
                return 1;
        }
        memcpy(st->frame, f->wire, f->len);
        st->len = f->len;
        st->pos = f->h.offset + f->h.length;
        return 1;
}

static ssize_t on_read(void *cls, uint64_t unused, char *buf, size_t max) {
        RelayStream *st = cls;
        size_t n = 0;
        (void) unused;

        while (n < max) {
                if (st->off == st->len) {
                        if (n > 0)
                                break;
                        if (st->pos >= st->relay->size)
                                return MHD_CONTENT_READER_END_OF_STREAM;
                        if (!peer_check_still_good(&st->relay->server, st->relay->agent, &st->peer,
                                                   "the downstream", st->pos))
                                return MHD_CONTENT_READER_END_WITH_ERROR;
                        int k = stream_produce(st);
                        if (k < 0)
                                return MHD_CONTENT_READER_END_WITH_ERROR;
                        if (k == 0) { /* until relay_frame() has what it asks for */
                                st->suspended = true;
                                MHD_suspend_connection(st->conn);
                                return 0;
                        }
                        continue;
                }
                size_t k = MIN(max - n, st->len - st->off);
                memcpy(buf + n, st->frame + st->off, k);
                n += k;
                st->off += k;
        }
        st->sent += n;
        return (ssize_t) n;
}

static void stream_free(RelayStream *st) {
        if (!st)
                return;
        free(st->frame);
        free(st->chunk);
        peer_check_done(&st->peer);
        free(st);
}

static void on_stream_end(void *cls) {
        RelayStream *st = cls;
        Relay *r = st->relay;

        if (st->prev)
                st->prev->next = st->next;
        else
                r->streams = st->next;
        if (st->next)
                st->next->prev = st->prev;
        r->n_streams--;
        log_info("A downstream's stream ended at %s after %s of frames (%s forwarded as received, %s read "
                 "back "
                 "from the disk so far).",
                 FORMAT_BYTES(st->pos), FORMAT_BYTES(st->sent), FORMAT_BYTES(r->from_window),
                 FORMAT_BYTES(r->from_disk));
        stream_free(st);
}

static RelayStream *stream_new(Relay *r, struct MHD_Connection *conn, const gnutls_datum_t *cert,
                               uint64_t offset, unsigned features) {
        RelayStream *st = calloc(1, sizeof(RelayStream));

        if (!st)
                return NULL;
        st->relay = r;
        st->conn = conn;
        st->pos = offset;
        st->features = features;
        st->frame = malloc(FRAME_WIRE_MAX);
        st->chunk = device_buffer_new(FRAME_CHUNK);
        if (!st->frame || !st->chunk || peer_check_init(&st->peer, r->agent, cert) < 0)
                return stream_free(st), NULL;
        return st;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                 const char *version, const char *data, size_t *data_size, void **req_cls) {
        Relay *r = cls;
        const gnutls_datum_t *cert;
        enum MHD_Result result;
        uint64_t offset;
        unsigned asked;
        char names[16];
        int k;
        (void) version, (void) data, (void) data_size;

        if (peer_server_request_begins(conn, req_cls, r))
                return MHD_YES;
        k = peer_server_disk_request(&r->server, r->agent, conn, url, method, r->size, &cert, &offset,
                                     &asked, &result);
        if (k <= 0)
                return k < 0 ? MHD_NO : result;
        asked &= frame_features_ours();
        if (r->features & ~asked) {
                _cleanup_free_ char *text = NULL;
                log_warning("Refused a downstream that does not take %s frames.",
                            frame_features_string(r->features & ~asked, names));
                if (asprintf(&text, "This chain carries %s frames; a downstream must take them.\n",
                             frame_features_string(r->features, names)) < 0)
                        return MHD_NO;
                return peer_server_reply(conn, MHD_HTTP_CONFLICT, text);
        }
        if (r->n_streams >= MAX_STREAMS)
                return peer_server_reply(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "Too many streams at once.\n");
        RelayStream *st = stream_new(r, conn, cert, offset, asked);
        if (!st)
                return MHD_NO;
        st->next = r->streams;
        if (r->streams)
                r->streams->prev = st;
        r->streams = st;
        r->n_streams++;
        log_info("A downstream %s at %s (written here up to %s), taking %s frames.",
                 offset > 0 ? "resumes" : "starts", FORMAT_BYTES(offset), FORMAT_BYTES(r->written),
                 frame_features_string(asked, names));
        return peer_server_queue_stream(conn, r->size, asked, on_read, st, on_stream_end);
}

int relay_new(Agent *a, Device *dev, uint64_t size, uint64_t written, const UsedMap *skipped, Relay **ret) {
        Relay *r = calloc(1, sizeof(Relay));
        int k;

        if (!r)
                return -ENOMEM;
        r->agent = a;
        r->dev = dev;
        r->size = size;
        r->written = written;
        r->cctx = ZSTD_createCCtx();
        if (!r->cctx) {
                relay_free(r);
                return -ENOMEM;
        }
        for (size_t i = 0; skipped && i < skipped->n_unused; i++) {
                k = used_map_add(&r->skipped, skipped->unused[i].offset, skipped->unused[i].length);
                if (k < 0) {
                        relay_free(r);
                        return k;
                }
        }
        if (r->skipped.n_unused > 0)
                r->features |= FRAME_FEATURE_SKIP;
        *ret = r;
        return 0;
}

int relay_start(Relay *r) {
        Agent *a = r->agent;
        _cleanup_free_ char *address = NULL;
        json_object *p;
        int k;

        if (r->server.daemon)
                return 0;
        k = peer_server_start(&r->server, a, on_access, r, true);
        if (k < 0)
                return k;
        if (client_own_address(a, &address) < 0 || isempty(address))
                return log_error_errno(EADDRNOTAVAIL,
                                       "Do not know our own address towards %s; give --address=.",
                                       a->settings.server);
        p = agent_report_new(a, NULL);
        json_object_object_add(p, "address", json_object_new_string(address));
        json_object_object_add(p, "port", json_object_new_int(a->settings.port));
        log_info("Forwarding what is written to %s on %s:%u to the next target of the chain.", r->dev->path,
                 address, a->settings.port);
        return queue_push(a->queue, "ReportRelayReady", p);
}

Relay *relay_free(Relay *r) {
        if (!r)
                return NULL;
        /* A suspended connection cannot be closed: each goes on to its end. */
        for (RelayStream *st = r->streams; st; st = st->next)
                if (st->suspended) {
                        st->suspended = false;
                        MHD_resume_connection(st->conn);
                }
        peer_server_stop(&r->server);
        while (r->n_window > 0)
                window_drop_first(r);
        ZSTD_freeCCtx(r->cctx);
        used_map_done(&r->skipped);
        free(r);
        return NULL;
}
