/* SPDX-License-Identifier: MIT */
/* Staged clones: the source uploads its disk to the staging area the controller provisioned, through the
 * area's transport (staged-nfs.c, staged-iscsi.c), in a thread of its own while the event loop keeps
 * following the session and sending reports. Targets read the image back as their upstream (store-stream.c),
 * and an image is verified (staged_verify) through the Writer here, which checks every chunk against the
 * manifest. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/time.h>
#include <unistd.h>

#include "agent.h"
#include "chunk-reader.h"
#include "device.h"
#include "domain.h"
#include "format.h"
#include "frame.h"
#include "job.h"
#include "log.h"
#include "queue.h"
#include "scan.h"
#include "staged.h"
#include "storage-io.h"
#include "util.h"

void stager_pace(Stager *s, uint64_t bytes) {
        uint64_t rate = s->agent ? s->agent->settings.max_rate : 0;
        while (rate > 0 && !s->cancel) {
                uint64_t due = s->started_at + bytes * USEC_PER_SEC / rate, now = now_monotonic_usec();
                if (due <= now)
                        return;
                (void) usleep((useconds_t) MIN(due - now, USEC_PER_SEC / 10));
        }
}

int stager_fail(Stager *s, int r, const char *format, ...) {
        va_list ap;
        va_start(ap, format);
        r = reason_firstv(&s->why, r < 0 ? r : -EIO, format, ap);
        va_end(ap);
        return r;
}

static StorageLocation location(const Stager *s, json_object *config) {
        json_object *st = s->staging;
        int type = backend_type_from_string(json_get_string(st, "backend"));
        bool nfs = type != BACKEND_ISCSI; /* a local backend's keys are an export's: where and its path */
        json_object_object_add(config, nfs ? "server" : "portal", json_object_new_string(json_get_string(st, "server")));
        json_object_object_add(config, nfs ? "export" : "target", json_object_new_string(json_get_string(st, "path")));
        if (json_get_string(st, "options"))
                json_object_object_add(config, "options", json_object_new_string(json_get_string(st, "options")));
        if (json_get_string(st, "chapUser"))
                json_object_object_add(config, "chap_user", json_object_new_string(json_get_string(st, "chapUser")));
        return (StorageLocation){ .type = type >= 0 ? (BackendType) type : BACKEND_NFS,
                                  .config = config,
                                  .secret = json_get_string(st, "chapSecret") };
}

int stager_connect(Stager *s, const char *initiator, const StagingTransport **ret_transport,
                   void **ret_conn) {
        _cleanup_(json_object_unrefp) json_object *config = json_object_new_object();
        StorageLocation l;

        if (!config)
                return -ENOMEM;
        l = location(s, config);
        *ret_transport = l.type == BACKEND_ISCSI   ? &staging_transport_iscsi
                         : l.type == BACKEND_LOCAL ? &staging_transport_local
                                                   : &staging_transport_nfs;
        return (*ret_transport)->connect(s, &l, initiator, ret_conn);
}

char *stager_path(Stager *s, const char *name, bool partial) {
        char *p;
        return asprintf(&p, "%s/%s%s", json_get_string(s->staging, "directory"), name, partial ? STAGING_PARTIAL : "") < 0
                       ? NULL
                       : p;
}

json_object *manifest_new(Stager *s, const char *digest, const char *hashes, json_object *segments) {
        json_object *m = json_object_new_object();
        DiskInfo info = {};
        int sector = 512;

        if (s->dev.is_block)
                (void) ioctl(s->dev.fd, BLKSSZGET, &sector);
        /* Version 2 leaves out the chunks no filesystem uses: they are listed, their hash is the marker's.
         */
        json_object_object_add(m, "version", json_object_new_int(s->skipped.n_unused > 0 ? 2 : 1));
        json_object_object_add(m, "size", json_object_new_int64((int64_t) s->dev.size));
        json_object_object_add(m, "sectorSize", json_object_new_int(sector));
        json_object_object_add(m, "chunkSize", json_object_new_int64((int64_t) FRAME_CHUNK));
        json_object_object_add(m, "digest", json_object_new_string(digest));
        json_object_object_add(m, "chunkHashes", json_object_new_string(hashes));
        json_object_object_add(m, "compression", json_object_new_string(segments ? "zstd" : "none"));
        if (s->skipped.n_unused > 0)
                json_object_object_add(m, "skipped", used_map_extents_to_json(&s->skipped));
        if (segments) {
                json_object_object_add(m, "segmentSize", json_object_new_int64((int64_t) STAGING_SEGMENT));
                json_object_object_add(m, "segments", segments);
        }
        /* The partition table as a scan reads it, for whoever looks at the image later. */
        json_object_object_add(m, "partitionTable",
                               scan_disk(s->dev.path, &info) >= 0 ? disk_info_to_json(&info) : NULL);
        disk_info_done(&info);
        json_object_object_add(m, "createdAt", json_object_new_int64((int64_t) now_realtime_usec()));
        return m;
}

void manifest_done(Manifest *m) {
        json_object_put(m->root);
        used_map_done(&m->skipped);
        *m = (Manifest){};
}

/* The skipped chunks, each a whole chunk (or the disk's last) in the disk. */
static bool skipped_valid(const Manifest *m) {
        for (size_t i = 0; i < m->skipped.n_unused; i++) {
                const Extent *e = &m->skipped.unused[i];
                if (e->offset % FRAME_CHUNK != 0 || e->offset > m->size || e->length > m->size - e->offset ||
                    (e->length % FRAME_CHUNK != 0 && e->offset + e->length != m->size))
                        return false;
        }
        return true;
}

int manifest_parse(Stager *s, const char *text, Manifest *ret) {
        Manifest m = { .root = json_tokener_parse(text) };
        json_object *v;

        if (!m.root)
                return stager_fail(s, -EBADMSG, "the manifest is not JSON");
        m.size = (uint64_t) json_get_int(m.root, "size");
        m.sector_size = (uint64_t) json_get_int(m.root, "sectorSize");
        m.digest = json_get_string(m.root, "digest");
        m.hashes = json_get_string(m.root, "chunkHashes");
        if (json_object_object_get_ex(m.root, "segments", &v))
                m.segments = v;
        if (m.size == 0 || !m.digest || !m.hashes || (uint64_t) json_get_int(m.root, "chunkSize") != FRAME_CHUNK ||
            strlen(m.hashes) != (m.size + FRAME_CHUNK - 1) / FRAME_CHUNK * 32) {
                manifest_done(&m);
                return stager_fail(s, -EBADMSG, "the manifest lacks its size, digest or chunk hashes");
        }
        if (json_object_object_get_ex(m.root, "skipped", &v) &&
            (used_map_add_json(&m.skipped, v) < 0 || !skipped_valid(&m))) {
                manifest_done(&m);
                return stager_fail(s, -EBADMSG,
                                   "the manifest's list of skipped chunks does not fit the disk");
        }
        *ret = m;
        return 0;
}

/* The disk read ahead in a thread of the chunk reader's (as the direct source does), here without its
 * compression: the NFS image is compressed by segment, the LUN holds the chunks raw. */
int read_disk(Stager *s, ChunkSink sink, void *ctx, char **ret_hashes, char **ret_digest) {
        uint64_t chunks = (s->dev.size + FRAME_CHUNK - 1) / FRAME_CHUNK;
        _cleanup_free_ char *hashes = malloc(chunks * 32 + 1);
        ChunkReader *reader = NULL;
        Digest digest = {};
        int r;

        if (!hashes || digest_init(&digest) < 0)
                return -ENOMEM;
        r = chunk_reader_new(&s->dev, s->map.size > 0 ? &s->map : NULL, false, 1, 0, &reader);
        if (r < 0) {
                r = stager_fail(s, r, "reading %s failed: %s", s->dev.path, strerror(-r));
                goto out;
        }
        for (uint64_t off = 0; off < s->dev.size;) {
                const ChunkSlot *slot = chunk_reader_peek(reader);
                if (s->cancel) {
                        r = stager_fail(s, -ECANCELED, "stopped");
                        goto out;
                }
                if (!slot || slot->error < 0) {
                        r = slot ? slot->error : -EIO;
                        r = stager_fail(s, r, "reading %s at %" PRIu64 " failed: %s", s->dev.path, off,
                                        strerror(-r));
                        goto out;
                }
                /* A SKIP slot is a run of chunks: each goes to the sink and into the manifest on its own. */
                for (uint64_t o = slot->offset; o < slot->offset + slot->length; o += FRAME_CHUNK) {
                        size_t n = (size_t) MIN(FRAME_CHUNK, slot->offset + slot->length - o);
                        XXH128_hash_t h = chunk_slot_hash(slot, n);
                        if (slot->type == FRAME_SKIP && used_map_add(&s->skipped, o, n) < 0) {
                                r = -ENOMEM;
                                goto out;
                        }
                        frame_hash_hex(h, hashes + o / FRAME_CHUNK * 32);
                        digest_feed(&digest, h);
                        r = sink(s, ctx, slot->chunk, n, o, slot->type);
                        if (r < 0)
                                goto out;
                        s->bytes = o + n;
                        stager_pace(s, o + n);
                        if (s->tell && (o + n) % STAGING_SEGMENT == 0)
                                s->tell(o + n, s->dev.size);
                }
                off = slot->offset + slot->length;
                chunk_reader_pop(reader);
        }
        hashes[chunks * 32] = 0;
        *ret_digest = digest_string(&digest);
        *ret_hashes = TAKE_PTR(hashes);
        r = *ret_digest ? 0 : -ENOMEM;
out:
        chunk_reader_free(reader);
        digest_done(&digest);
        return r;
}

/* Past a segment's start: a check tells how far it has got. Skipped runs may carry the writer over segment
 * starts, so it is checked after each step. */
static void writer_progress(Writer *w) {
        Stager *s = w->s;
        uint64_t boundary = w->offset / STAGING_SEGMENT * STAGING_SEGMENT;

        if (boundary <= w->synced)
                return;
        w->synced = boundary;
        if (s->tell)
                s->tell(boundary, w->m->size);
}

bool writer_skips(const Writer *w, uint64_t offset, size_t n) {
        return used_map_is_unused(&w->m->skipped, offset, n);
}

/* The chunks left out of the image from w->offset on: in the digest, or handed on as a run. */
static int writer_skip(Writer *w) {
        uint64_t size = w->m->size;

        if (w->have > 0 || w->offset >= size)
                return 0;
        uint64_t run = MIN(used_map_unused_from(&w->m->skipped, w->offset), size - w->offset);
        if (run == 0)
                return 0;
        if (w->emit) {
                int r = w->emit(w, NULL, w->offset, run, (XXH128_hash_t){});
                if (r < 0)
                        return r;
        } else
                digest_feed_run(&w->digest, FRAME_SKIP, run, size);
        w->offset += run;
        w->s->bytes = w->offset;
        writer_progress(w);
        return 0;
}

/* A whole chunk (or the disk's last) is in w->chunk: check it, hand it on. */
static int writer_put(Writer *w) {
        Stager *s = w->s;
        size_t n = w->have;
        uint64_t index = w->offset / FRAME_CHUNK;
        XXH128_hash_t h = frame_chunk_hash(w->chunk, n);
        char hex[33];
        int r;

        frame_hash_hex(h, hex);
        if (strncmp(hex, w->m->hashes + index * 32, 32) != 0)
                return stager_fail(s, -EBADMSG,
                                   "the chunk at %" PRIu64 " does not match the manifest's hash; the staged "
                                   "image is damaged. Start the session again to upload it anew",
                                   w->offset);
        if (w->emit) {
                r = w->emit(w, w->chunk, w->offset, n, h);
                if (r < 0)
                        return r;
        } else
                digest_feed(&w->digest, h);
        w->offset += n;
        w->have = 0;
        s->bytes = w->offset;
        stager_pace(s, w->offset - s->resume);
        writer_progress(w);
        return 0;
}

int writer_feed(Writer *w, const uint8_t *data, size_t n) {
        while (n > 0) {
                int k = writer_skip(w);
                if (k < 0)
                        return k;
                size_t want = (size_t) MIN(FRAME_CHUNK, w->m->size - w->offset) - w->have;
                size_t take = MIN(want, n);
                if (w->offset >= w->m->size)
                        return stager_fail(w->s, -EBADMSG, "the image is longer than the manifest says");
                memcpy(w->chunk + w->have, data, take);
                w->have += take;
                data += take;
                n -= take;
                if (w->have == MIN(FRAME_CHUNK, w->m->size - w->offset)) {
                        int r = writer_put(w);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

int writer_finish(Writer *w) {
        int r = writer_skip(w); /* those after the last chunk in the image */
        if (r >= 0 && w->offset != w->m->size)
                r = stager_fail(w->s, -EBADMSG, "the image ends at %" PRIu64 ", the manifest says %" PRIu64,
                                w->offset, w->m->size);
        return r;
}

/* Reads the whole image, checking each chunk against the manifest and the whole against its digest. */
static int verify(Stager *s, const StagingTransport *t, void *conn) {
        Manifest m = {};
        Writer w = { .s = s, .m = &m };
        int r;

        r = t->read_manifest(s, conn, &m);
        if (r < 0)
                return r;
        if (!(w.chunk = device_buffer_new(FRAME_CHUNK)))
                r = -ENOMEM;
        if (r >= 0)
                r = digest_init(&w.digest);
        if (r >= 0)
                r = t->download(s, conn, &m, &w);
        if (r >= 0)
                r = writer_finish(&w);
        if (r >= 0) {
                s->digest = digest_string(&w.digest);
                if (!s->digest)
                        r = -ENOMEM;
                else if (!streq(s->digest, m.digest))
                        r = stager_fail(s, -EBADMSG, "what was read has digest %s, the manifest %s",
                                        s->digest, m.digest);
                else if (s->tell)
                        s->tell(m.size, m.size);
        }
        digest_done(&w.digest);
        free(w.chunk);
        manifest_done(&m);
        return r;
}

void staged_outcome_done(StagedOutcome *o) {
        free(o->digest);
        free(o->why);
        *o = (StagedOutcome){};
}

/* What s found, handed to the caller. */
static int outcome(Stager *s, int r, StagedOutcome *ret) {
        if (r < 0 && !s->why)
                (void) stager_fail(s, r, "%s", strerror(-r));
        *ret = (StagedOutcome){ .digest = TAKE_PTR(s->digest),
                                .why = TAKE_PTR(s->why),
                                .stored = s->stored };
        return r;
}

int staged_verify(json_object *staging, void (*verified)(uint64_t offset, uint64_t size),
                  StagedOutcome *ret) {
        Stager s = { .staging = staging, .dev = DEVICE_NULL, .event_fd = -EBADF, .tell = verified };
        const StagingTransport *t = NULL;
        void *conn = NULL;
        int r;

        r = stager_connect(&s, "pureboot-verify", &t, &conn);
        if (r >= 0)
                r = verify(&s, t, conn);
        if (conn)
                t->disconnect(conn);
        return outcome(&s, r, ret);
}

int staged_upload_file(json_object *staging, const char *path, UsedMap *skipped,
                       void (*uploaded)(uint64_t offset, uint64_t size), StagedOutcome *ret) {
        Stager s = { .staging = staging, .dev = DEVICE_NULL, .event_fd = -EBADF, .tell = uploaded };
        const StagingTransport *t = NULL;
        _cleanup_free_ char *holder = NULL;
        void *conn = NULL;
        int r;

        r = device_open(path, O_RDONLY, &s.dev, &holder);
        if (r < 0)
                (void) stager_fail(&s, r, "cannot open %s: %s", path, strerror(-r));
        else if (skipped) {
                s.map = *skipped;
                *skipped = (UsedMap){};
        } else
                r = used_map_of_disk(path, &s.map);
        if (r >= 0)
                r = stager_connect(&s, "pureboot-import", &t, &conn);
        if (r >= 0)
                r = t->upload(&s, conn);
        if (conn)
                t->disconnect(conn);
        if (r >= 0 && s.tell)
                s.tell(s.dev.size, s.dev.size);
        device_close(&s.dev);
        used_map_done(&s.map);
        used_map_done(&s.skipped);
        return outcome(&s, r, ret);
}

static void *run_thread(void *userdata) {
        Stager *s = userdata;
        const StagingTransport *t = NULL;
        _cleanup_free_ char *initiator = NULL;
        void *conn = NULL;
        int r;

        if (asprintf(&initiator, "clone-%s-source", s->agent->settings.session) < 0)
                r = -ENOMEM;
        else
                r = stager_connect(s, initiator, &t, &conn);
        if (r >= 0)
                r = t->upload(s, conn);
        if (r < 0 && !s->why)
                (void) stager_fail(s, r, "%s", strerror(-r));
        if (conn)
                t->disconnect(conn);
        uint64_t one = 1;
        (void) write(s->event_fd, &one, sizeof(one));
        return NULL;
}

static int on_progress(sd_event_source *es, uint64_t usec, void *userdata) {
        Stager *s = userdata;
        (void) usec;
        (void) sd_event_source_set_time_relative(es, USEC_PER_SEC);
        if (s->bytes != s->progress.bytes)
                agent_report_progress(s->agent, &s->progress, "source", s->bytes, "uploading", NULL);
        return 0;
}

void staged_report_status(Agent *a, const char *status) {
        json_object *p = agent_report_new(a, NULL);
        json_object_object_add(p, "status", json_object_new_string(status));
        (void) queue_push(a->queue, "ReportStagingStatus", p);
}

/* The thread is done: the result goes into the queue. */
static int on_thread_done(sd_event_source *es, int fd, uint32_t revents, void *userdata) {
        Stager *s = userdata;
        Agent *a = s->agent;
        json_object *p;
        (void) es, (void) fd, (void) revents;

        (void) pthread_join(s->thread, NULL);
        s->thread_started = false;
        s->event_source = sd_event_source_disable_unref(s->event_source);
        s->progress_timer = sd_event_source_disable_unref(s->progress_timer);
        if (s->cancel) { /* the session ended under us: nothing to report */
                log_info("Session %s ended; stopped the upload.", a->settings.session);
                agent_finish(a, AGENT_EXIT_SESSION_FAILED);
                return 0;
        }
        agent_report_progress(a, &s->progress, "source", s->bytes, "uploading", NULL);
        p = agent_report_new(a, "source");
        if (s->why) {
                log_error("The upload failed: %s", s->why);
                json_object_object_add(p, "error", json_object_new_string(s->why));
                json_object_object_add(p, "code", json_object_new_string("upload-failed"));
                (void) queue_push(a->queue, "ReportFailed", p);
                agent_finish(a, AGENT_EXIT_FAILURE);
                return 0;
        }
        staged_report_status(a, "ready");
        json_object_object_add(p, "digest", json_object_new_string(s->digest));
        json_object_object_add(p, "storedBytes", json_object_new_int64((int64_t) s->stored));
        agent_report_add_notes(p, a->notes);
        (void) queue_push(a->queue, "ReportComplete", p);
        s->reported_done = true;
        log_info("Uploaded %s (%s); its digest is %s.", a->settings.device, FORMAT_BYTES(s->dev.size),
                 s->digest);
        /* The source's part ends with the upload. */
        agent_finish(a, AGENT_EXIT_SUCCESS);
        return 0;
}

static int start_transfer(Stager *s) {
        Agent *a = s->agent;
        int r;

        s->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (s->event_fd < 0)
                return -errno;
        r = sd_event_add_io(a->event, &s->event_source, s->event_fd, EPOLLIN, on_thread_done, s);
        if (r < 0)
                return log_error_errno(r, "Failed to watch the transfer thread: %m");
        r = agent_add_progress_timer(a, &s->progress_timer, on_progress, s);
        if (r < 0)
                return r;
        s->started_at = now_monotonic_usec();
        r = -pthread_create(&s->thread, NULL, run_thread, s);
        if (r < 0)
                return r;
        s->thread_started = true;
        log_info("Uploading %s to %s.", s->dev.path, strna(json_get_string(s->staging, "backend")));
        return 0;
}

static void on_staging(Agent *a, const char *error, json_object *reply, void *userdata) {
        Stager *s = userdata;
        json_object *staging;
        (void) a;

        s->asked = false;
        if (error || !json_object_object_get_ex(reply, "staging", &staging)) {
                log_warning("GetStaging failed: %s; asking again when the session changes.", strna(error));
                return;
        }
        json_object_put(s->staging);
        s->staging = json_object_get(staging);
        if (staging_status_from_string(json_get_string(staging, "status")) == STAGING_PROVISIONED)
                staged_report_status(s->agent, "uploading");
        if (start_transfer(s) < 0)
                agent_exit(s->agent, AGENT_EXIT_FAILURE);
}

static int report_ready(Stager *s) {
        Agent *a = s->agent;
        _cleanup_free_ char *address = NULL;
        json_object *p = agent_report_new(a, NULL);

        (void) client_own_address(a, &address); /* for the record only: nothing connects to it */
        json_object_object_add(p, "address", json_object_new_string(strempty(address)));
        json_object_object_add(p, "port", json_object_new_int(0));
        json_object_object_add(p, "sizeBytes", json_object_new_int64((int64_t) s->dev.size));
        json_object_object_add(p, "device", json_object_new_string(a->settings.device));
        agent_report_add_notes(p, s->map.whole);
        return queue_push(a->queue, "ReportSourceReady", p);
}

static bool on_ended(Agent *a, json_object *session) {
        Stager *s = a->stager;
        (void) session;
        s->cancel = true;
        return s->thread_started; /* then it finishes when the thread has stopped */
}

static void on_session(Agent *a, json_object *session) {
        Stager *s = a->stager;
        const char *staging = json_get_string(session, "stagingStatus");

        if (!s->ready_reported && !a->finishing) {
                /* The size to stage is the plan's: the disk up to its last partition once shrunk. */
                int r = resize_prepare_source(a, session, a->disk_fingerprint, &s->dev.size);
                /* The image leaves out what the filesystems do not use, as they are after the resize. */
                if (r > 0 && (frame_features_ours() & FRAME_FEATURE_SKIP) &&
                    (r = used_map_of_disk(s->dev.path, &s->map)) >= 0)
                        r = 1;
                if (r > 0) {
                        s->ready_reported = true;
                        r = report_ready(s);
                }
                if (r < 0)
                        agent_exit(a, AGENT_EXIT_FAILURE);
                return;
        }
        if (s->thread_started || s->asked || s->reported_done || !staging || a->finishing)
                return;
        /* The source uploads once the area exists. */
        if (STR_IN_SET(staging, "provisioned", "uploading")) {
                s->asked = true;
                if (client_call(a, "GetStaging", agent_report_new(a, NULL), on_staging, s) < 0)
                        s->asked = false;
        }
}

/* The source reports ready once the session says how (on_session): after its resize steps. */
static const JobKind upload_job = {
        .role = "source",
        .report_disk = true,
        .changed = on_session,
        .ended = on_ended,
};

int staged_start(Agent *a) {
        _cleanup_free_ char *holder = NULL;
        Stager *s = calloc(1, sizeof(Stager));
        int r;

        if (!s)
                return -ENOMEM;
        s->agent = a;
        s->dev = DEVICE_NULL;
        s->event_fd = -EBADF;
        a->stager = s;
        r = device_open(a->settings.device, O_RDONLY, &s->dev, &holder);
        if (r == -EBUSY)
                return log_error_errno(r, "%s is in use%s%s; unmount it first.", a->settings.device,
                                       holder ? " by " : "", strempty(holder));
        if (r < 0)
                return log_error_errno(r, "Failed to open %s: %m", a->settings.device);
        return job_start(a, &upload_job);
}

Stager *stager_free(Stager *s) {
        if (!s)
                return NULL;
        if (s->thread_started) {
                s->cancel = true;
                (void) pthread_join(s->thread, NULL);
        }
        sd_event_source_disable_unref(s->event_source);
        sd_event_source_disable_unref(s->progress_timer);
        if (s->event_fd >= 0)
                close(s->event_fd);
        device_close(&s->dev);
        used_map_done(&s->map);
        used_map_done(&s->skipped);
        json_object_put(s->staging);
        free(s->why);
        free(s->digest);
        free(s);
        return NULL;
}
