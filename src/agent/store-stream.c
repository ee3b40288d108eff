/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "format.h"
#include "frame.h"
#include "log.h"
#include "staged.h"
#include "store-stream.h"
#include "util.h"

/* As a direct source compresses: the frames go on down the chain as they are. */
#define STORE_ZSTD_LEVEL 1

struct StoreStream {
        Stager s; /* the area, the cancel flag, and why it failed */
        uint64_t size, sector_size, from;
        int fd, peer_fd; /* ours (the thread writes), the target's */
        pthread_t thread;
        bool thread_started;
        _Atomic bool compress;
        ZSTD_CCtx *cctx;
        uint8_t *frame;
        int result;
};

static int send_frame(StoreStream *ss, size_t len) {
        for (size_t done = 0; done < len;) {
                ssize_t n = send(ss->fd, ss->frame + done, len - done, MSG_NOSIGNAL);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return ss->s.cancel ? stager_fail(&ss->s, -ECANCELED, "stopped")
                                            : stager_fail(&ss->s, -errno, "the target stopped reading: %m");
                done += (size_t) n;
        }
        return 0;
}

/* A checked chunk, or a run of skipped ones, as the frames a peer would send; what is before ss->from (the
 * reading starts at a segment's start) is passed over. */
static int emit(Writer *w, const uint8_t *data, uint64_t offset, uint64_t length, XXH128_hash_t content) {
        StoreStream *ss = w->userdata;

        if (offset + length <= ss->from)
                return 0;
        if (offset < ss->from) {
                length -= ss->from - offset;
                offset = ss->from;
        }
        if (data) {
                size_t len = frame_is_zero(data, length)
                                     ? frame_build_run(FRAME_ZERO, offset, length, ss->frame)
                                     : frame_build_chunk(ss->compress ? ss->cctx : NULL, STORE_ZSTD_LEVEL,
                                                         data, length, offset, content, ss->frame);
                return send_frame(ss, len);
        }
        while (length > 0) {
                uint64_t n = MIN(length, frame_run_max(FRAME_SKIP));
                int r = send_frame(ss, frame_build_run(FRAME_SKIP, offset, n, ss->frame));
                if (r < 0)
                        return r;
                offset += n;
                length -= n;
        }
        return 0;
}

/* The manifest must be of the disk the session copies, and fit ours. */
static int check_manifest(StoreStream *ss, const Manifest *m) {
        if (m->size != ss->size)
                return stager_fail(&ss->s, -EBADMSG,
                                   "the image's manifest says it is %s (%" PRIu64
                                   " bytes), the session %s (%" PRIu64
                                   " bytes); the staging area does not hold this session's image",
                                   FORMAT_BYTES(m->size), m->size, FORMAT_BYTES(ss->size), ss->size);
        if (m->sector_size && ss->sector_size && m->sector_size != ss->sector_size)
                return stager_fail(&ss->s, -EINVAL,
                                   "this disk has %" PRIu64 "-byte sectors, the image's %" PRIu64
                                   "-byte ones; pick a target disk with %" PRIu64 "-byte sectors",
                                   ss->sector_size, m->sector_size, m->sector_size);
        return 0;
}

static void *run(void *userdata) {
        StoreStream *ss = userdata;
        Stager *s = &ss->s;
        _cleanup_free_ char *initiator = NULL;
        const StagingTransport *t = NULL;
        void *conn = NULL;
        Manifest m = {};
        Writer w = { .s = s, .m = &m, .emit = emit, .userdata = ss };
        int r;

        if (asprintf(&initiator, "clone-%s-target", s->agent->settings.session) < 0)
                r = -ENOMEM;
        else
                r = stager_connect(s, initiator, &t, &conn);
        if (r >= 0)
                r = t->read_manifest(s, conn, &m);
        if (r >= 0)
                r = check_manifest(ss, &m);
        if (r >= 0 && !(w.chunk = device_buffer_new(FRAME_CHUNK)))
                r = -ENOMEM;
        if (r >= 0) {
                /* The NFS image is read by segment: from the start of the one that holds ss->from. */
                w.offset = w.synced = s->resume = ss->from / STAGING_SEGMENT * STAGING_SEGMENT;
                s->started_at = now_monotonic_usec();
                r = t->download(s, conn, &m, &w);
        }
        if (r >= 0)
                r = writer_finish(&w);
        if (r < 0 && !s->why)
                (void) stager_fail(s, r, "%s", strerror(-r));
        if (conn)
                t->disconnect(conn);
        free(w.chunk);
        manifest_done(&m);
        ss->result = r;
        (void) shutdown(ss->fd, SHUT_WR); /* the end of the frames */
        return NULL;
}

int store_stream_new(Agent *a, json_object *staging, uint64_t size, uint64_t sector_size, uint64_t from,
                     bool compress, StoreStream **ret, int *ret_fd) {
        StoreStream *ss = calloc(1, sizeof(StoreStream));
        int fds[2], r;

        if (!ss)
                return -ENOMEM;
        ss->s = (Stager){
                .agent = a, .dev = DEVICE_NULL, .event_fd = -EBADF, .staging = json_object_get(staging)
        };
        ss->size = size;
        ss->sector_size = sector_size;
        ss->from = from;
        ss->compress = compress;
        ss->fd = ss->peer_fd = -EBADF;
        ss->cctx = ZSTD_createCCtx();
        ss->frame = malloc(FRAME_WIRE_MAX);
        if (!ss->cctx || !ss->frame) {
                store_stream_free(ss);
                return -ENOMEM;
        }
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0) {
                r = -errno;
                store_stream_free(ss);
                return r;
        }
        ss->fd = fds[0];
        ss->peer_fd = fds[1];
        /* Room for a few frames in flight: the reading goes on while the target writes. */
        int buffer = 4 << 20;
        (void) setsockopt(ss->fd, SOL_SOCKET, SO_SNDBUF, &buffer, sizeof(buffer));
        r = -pthread_create(&ss->thread, NULL, run, ss);
        if (r < 0) {
                store_stream_free(ss);
                return r;
        }
        ss->thread_started = true;
        *ret = ss;
        *ret_fd = ss->peer_fd;
        return 0;
}

void store_stream_compress(StoreStream *ss, bool compress) {
        if (ss)
                ss->compress = compress;
}

int store_stream_end(StoreStream *ss, const char **ret_why) {
        if (ss->thread_started) {
                (void) pthread_join(ss->thread, NULL);
                ss->thread_started = false;
        }
        *ret_why = ss->s.why;
        return ss->result;
}

StoreStream *store_stream_free(StoreStream *ss) {
        if (!ss)
                return NULL;
        if (ss->thread_started) {
                ss->s.cancel = true;
                if (ss->peer_fd >= 0)
                        (void) shutdown(ss->peer_fd, SHUT_RDWR); /* a blocked send() returns */
                (void) pthread_join(ss->thread, NULL);
        }
        closep(&ss->fd);
        closep(&ss->peer_fd);
        ZSTD_freeCCtx(ss->cctx);
        free(ss->frame);
        json_object_put(ss->s.staging);
        free(ss->s.why);
        free(ss->s.digest);
        free(ss);
        return NULL;
}
