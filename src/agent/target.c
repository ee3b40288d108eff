/* SPDX-License-Identifier: MIT */
/* clone-target: waits for the source through WatchSession, checks its disk can take the source's before
 * writing a byte, then pulls the frame stream from its upstream — the source, or in a chain the target
 * before it (relay.c), over mutual TLS; or a staged session's staging area, read in a thread of its own
 * (store-stream.c) — verifies every frame before writing it, writes zero runs as zeroes,
 * does with skipped (unused) runs what the session's unused option says, and keeps a durable resume point in
 * its journal — with the runs it skipped — so that a lost connection or a restart of either agent goes on
 * from there. At the end it flushes everything and reports the digest of what it wrote. */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <zstd.h>

#include "agent.h"
#include "backoff.h"
#include "curl-glue.h"
#include "device.h"
#include "domain.h"
#include "format.h"
#include "frame.h"
#include "job.h"
#include "journal.h"
#include "log.h"
#include "queue.h"
#include "relay.h"
#include "store-stream.h"
#include "tls.h"
#include "util.h"

#define SYNC_MAX (UINT64_C(256) << 20)
#define SYNC_MIN (UINT64_C(16) << 20)
#define SYNC_INTERVAL_USEC (5 * USEC_PER_SEC)
#define MAX_BAD_FRAMES 5
/* An upstream target that gives no stream for this long is reported lost: the controller relinks us. */
#define UPSTREAM_LOST_USEC (3 * USEC_PER_SEC)
/* An upstream target that does not say where it forwards for this long is reported lost too. */
#define UPSTREAM_SILENT_USEC (10 * USEC_PER_SEC)
/* What the staging area's name is as an upstream. */
#define UPSTREAM_STORE "store"
#define STORE_READ (1U << 20)

typedef enum Phase { PHASE_WAITING, PHASE_TRANSFERRING, PHASE_VERIFYING, PHASE_DONE } Phase;

struct Target {
        Agent *agent;
        Device dev;
        Phase phase;
        uint64_t size;   /* the source's */
        uint64_t offset; /* everything before it is written and verified */
        uint64_t synced; /* everything before it is durable and in the journal */
        uint64_t written_back; /* writeback started up to here */
        uint64_t synced_at;
        uint64_t sync_every;
        Digest digest;
        UsedMap skipped; /* the runs before offset the source skipped, as the journal keeps them */
        CloneUnused unused;
        char *journal_path;
        char *source_cn;
        /* In a chain: what we forward to the next target, while the session says one needs it. */
        Relay *relay;
        bool forward;
        char *held; /* the digest of what was written, while what follows the copy waits for the chain */

        /* The stream, from the upstream the session names: its address, port and certificate's name */
        CURL *easy;
        char *address;
        int64_t port;
        char *upstream_cn;
        bool upstream_lost_reported;
        char *awaited; /* an upstream target the session names that has not said where it forwards */
        sd_event_source *upstream_wait;
        bool peer_checked;
        /* Or the staging area: its record (GetStaging), and the thread reading it. */
        bool from_store, staging_asked;
        json_object *staging;
        StoreStream *store;
        sd_event_source *store_source;
        uint8_t *store_buffer;
        const char *abort_reason; /* why we cut the stream, if we did */
        enum { CUT_NONE, CUT_BAD_FRAME, CUT_BAD_PEER, CUT_WRITE_FAILED } cut;
        unsigned features;        /* what the source said this stream carries */
        uint8_t *frame; /* header + payload being received: the payload on a DEVICE_ALIGN boundary */
        uint8_t *frame_buffer;
        uint8_t *chunk;           /* a ZSTD frame's chunk */
        ZSTD_DCtx *dctx;
        size_t have;
        FrameHeader header;
        uint64_t bad_offset;
        unsigned bad_frames;
        Backoff backoff;
        sd_event_source *retry, *progress_timer;
        char errbuf[CURL_ERROR_SIZE];
        /* Since when no attempt got a verified stream (0: the last one did), and what the controller was
         * told keeps us from the source (pureboot.peer-failure=wait), NULL if nothing. */
        uint64_t failing_since;
        char *problem;

        /* What it cost */
        uint64_t received, received_again, zeroed, skipped_bytes,
                high_water; /* received_again: sent twice */
        ProgressMeter progress;
        Phase last_progress_phase;
        uint64_t started_at;
};

static int start_stream(Target *t);

#define report_failed(t, code, ...) agent_report_failed((t)->agent, "target", code, __VA_ARGS__)

static bool upstream_is_source(Target *t) {
        return streq_ptr(t->upstream_cn, t->source_cn);
}

static void stop_stream(Target *t) {
        t->store_source = sd_event_source_disable_unref(t->store_source);
        t->store = store_stream_free(t->store);
        if (!t->easy)
                return;
        curl_glue_remove(t->agent->curl, t->easy);
        curl_easy_cleanup(t->easy);
        t->easy = NULL;
}

/* The journal: where to resume for this session, device and size (and the digest, once done). */
static ResumePoint resume_point(Target *t, const char *digest) {
        return (ResumePoint){ .session = t->agent->settings.session,
                              .device = t->dev.path,
                              .size = t->size,
                              .offset = t->offset,
                              .digest = digest,
                              .skipped = &t->skipped };
}

static int journal_save(Target *t, const char *digest) {
        ResumePoint p = resume_point(t, digest);
        int r = journal_save_resume(t->journal_path, &p);
        if (r < 0)
                return log_error_errno(r, "Failed to write the journal %s: %m", t->journal_path);
        return 0;
}

/* Returns 1 and sets the resume point if the journal is for this very job. */
static int journal_load(Target *t, char **ret_digest) {
        ResumePoint p = resume_point(t, NULL);
        uint64_t offset;
        int r;

        used_map_done(&t->skipped);
        r = journal_load_resume(t->journal_path, &p, &offset, ret_digest);
        if (r <= 0)
                return r;
        if (offset > t->size || (offset % FRAME_CHUNK != 0 && offset != t->size) ||
            (t->skipped.n_unused > 0 && t->skipped.unused[t->skipped.n_unused - 1].offset +
                                                        t->skipped.unused[t->skipped.n_unused - 1].length >
                                                offset)) {
                log_warning("The journal %s does not make sense; starting from the beginning.", t->journal_path);
                *ret_digest = mfree(*ret_digest);
                used_map_done(&t->skipped);
                return 0;
        }
        /* The digest covers what is on the disk, and where the source skipped: read back what an earlier run
         * wrote. */
        r = device_digest(&t->dev, &t->digest, offset, t->frame, &t->skipped);
        if (r < 0)
                return r;
        t->offset = t->synced = t->written_back = offset;
        return 1;
}

static int sync_now(Target *t) {
        int r;
        if (fdatasync(t->dev.fd) < 0)
                return log_error_errno(errno, "Failed to flush %s: %m", t->dev.path);
        r = journal_save(t, NULL);
        if (r < 0)
                return r;
        t->synced = t->offset;
        t->synced_at = now_monotonic_usec();
        return 0;
}

static int maybe_sync(Target *t) {
        /* Start writing back what is written so far, so the flush at the next sync point has little left
         * to do and the page cache does not fill up with the disk. */
        if (t->offset - t->written_back >= SYNC_MIN / 2) {
                (void) sync_file_range(t->dev.fd, (off_t) t->written_back, (off_t) (t->offset - t->written_back),
                                       SYNC_FILE_RANGE_WRITE);
                t->written_back = t->offset;
        }
        if (t->offset - t->synced < t->sync_every && now_monotonic_usec() - t->synced_at < SYNC_INTERVAL_USEC)
                return 0;
        return sync_now(t);
}

static void push_progress(Target *t) {
        static const char *const phases[] = { [PHASE_WAITING] = "transferring", [PHASE_TRANSFERRING] = "transferring",
                                              [PHASE_VERIFYING] = "verifying", [PHASE_DONE] = "verifying" };

        if (t->offset == t->progress.bytes && t->phase == t->last_progress_phase)
                return;
        t->last_progress_phase = t->phase;
        agent_report_progress(t->agent, &t->progress, "target", t->offset, phases[t->phase], t->problem);
}

static int on_progress(sd_event_source *es, uint64_t usec, void *userdata) {
        Target *t = userdata;
        (void) usec;
        (void) sd_event_source_set_time_relative(es, USEC_PER_SEC);
        if (t->phase == PHASE_TRANSFERRING || t->phase == PHASE_VERIFYING)
                push_progress(t);
        return 0;
}

/* Whether the session has a target after us in the chain that is not done: then we forward what we write
 * (relay.c) for as long as it says so. */
static void update_forward(Target *t, json_object *session) {
        int r;

        t->forward = json_get_bool(session, "forward");
        store_stream_compress(t->store, t->forward);
        if (!t->forward || t->relay || t->dev.fd < 0)
                return;
        r = relay_new(t->agent, &t->dev, t->size, t->offset, &t->skipped, &t->relay);
        if (r >= 0)
                r = relay_start(t->relay);
        if (r < 0) {
                log_warning_errno(r,
                                  "Cannot forward to the next target (%m); it will pull from the source.");
                t->relay = relay_free(t->relay);
                t->forward = false;
        }
}

/* What the copy took: time, rate, and where the disk's bytes came from. */
static void log_written(const Target *t, const char *digest) {
        uint64_t usec = MAX(now_monotonic_usec() - t->started_at, (uint64_t) 1);
        log_info("Wrote %s to %s in %.2f s (%.0f MB/s): %s of data received, %" PRIu64
                 " bytes of it again after "
                 "interruptions; %s zeroed; %s unused by any filesystem, not sent (%s). Digest %s",
                 FORMAT_BYTES(t->size), t->dev.path, (double) usec / USEC_PER_SEC,
                 (double) t->size / (double) usec, FORMAT_BYTES(t->received), t->received_again,
                 FORMAT_BYTES(t->zeroed), FORMAT_BYTES(t->skipped_bytes),
                 t->unused == CLONE_UNUSED_DISCARD && t->dev.cannot_discard
                         ? "kept: the disk cannot discard"
                         : clone_unused_to_string(t->unused),
                 digest);
}

/* The end: make it durable, then report what we wrote. */
static void complete(Target *t, const char *digest);

static void finish(Target *t, const char *known_digest) {
        _cleanup_free_ char *digest = NULL;
        int r;

        t->phase = PHASE_VERIFYING;
        push_progress(t);
        r = device_finish(&t->dev);
        if (r < 0) {
                report_failed(t, "WriteFailed", "Failed to flush %s to the disk: %s", t->dev.path, strerror(-r));
                agent_finish(t->agent, AGENT_EXIT_FAILURE);
                return;
        }
        digest = known_digest ? strdup(known_digest) : digest_string(&t->digest);
        if (!digest || journal_save(t, digest) < 0) {
                agent_exit(t->agent, AGENT_EXIT_FAILURE);
                return;
        }
        if (known_digest)
                log_info("%s holds the whole copy from an earlier run. Digest %s", t->dev.path, digest);
        else
                log_written(t, digest);
        t->phase = PHASE_DONE;
        /* An earlier run may have queued it already, before it was stopped: what follows the copy has
         * changed the disk since, and it is not forwarded any more. */
        if (queue_contains(t->agent->queue, "ReportComplete", NULL, NULL)) {
                t->relay = relay_free(t->relay);
                agent_finish(t->agent, AGENT_EXIT_SUCCESS);
                return;
        }
        if (t->forward) {
                /* The resize and identity steps change the disk, which the next target may still read: they
                 * wait until it is done. */
                log_info("Forwarding what was written to the next target of the chain until it is done; "
                         "what follows the copy waits until then.");
                t->held = TAKE_PTR(digest);
                update_forward(t, t->agent->watched);
                return;
        }
        complete(t, digest);
}

/* After the copy: the disk's resize and identity steps, then the report of what was written. */
static void complete(Target *t, const char *digest) {
        json_object *p;

        t->relay = relay_free(t->relay);
        if (resize_finish_target(t->agent, &t->dev, "copied") < 0)
                return;
        p = agent_report_new(t->agent, "target");
        json_object_object_add(p, "digest", json_object_new_string(digest));
        agent_report_add_notes(p, t->agent->notes);
        if (queue_push(t->agent->queue, "ReportComplete", p) < 0) {
                agent_exit(t->agent, AGENT_EXIT_FAILURE);
                return;
        }
        /* Done only once the controller has taken it. */
        agent_finish(t->agent, AGENT_EXIT_SUCCESS);
}

static bool frame_verifies(Target *t, XXH128_hash_t content) {
        XXH128_hash_t h = frame_hash(t->header.type, t->header.offset, t->header.length, content);
        return XXH128_isEqual(h, t->header.hash);
}

/* A frame that does not verify is not written: cut the stream and fetch again from it. */
static size_t reject(Target *t, const char *reason) {
        t->abort_reason = reason;
        t->cut = CUT_BAD_FRAME;
        log_warning("Frame at offset %" PRIu64 " rejected (%s); fetching again from there.", t->offset, reason);
        return 0; /* curl ends the transfer with CURLE_WRITE_ERROR */
}

/* A run no filesystem uses: discarded, zeroed or left, as the session says. */
static int apply_skip(Target *t, uint64_t offset, uint64_t length) {
        int r = device_unused(&t->dev, t->unused, offset, length);
        if (r < 0)
                return r;
        t->skipped_bytes += length;
        return used_map_add(&t->skipped, offset, length);
}

/* The chunk a DATA or ZSTD frame carries (decompressed into t->chunk), or NULL with *ret_reason. */
static const uint8_t *frame_chunk(Target *t, const char **ret_reason) {
        const uint8_t *payload = t->frame + FRAME_HEADER_SIZE;
        uint32_t size;

        if (t->header.type == FRAME_DATA)
                return payload;
        memcpy(&size, payload, FRAME_ZSTD_PREFIX);
        size_t n = ZSTD_decompressDCtx(t->dctx, t->chunk, FRAME_CHUNK, payload + FRAME_ZSTD_PREFIX,
                                       le32toh(size));
        if (ZSTD_isError(n) || n != t->header.length) {
                *ret_reason = "compressed frame does not decompress to its chunk";
                return NULL;
        }
        return t->chunk;
}

static size_t apply_frame(Target *t) {
        const FrameHeader *h = &t->header;
        const char *reason = NULL;
        int r;

        if (h->type == FRAME_ZERO || h->type == FRAME_SKIP) {
                if (!frame_verifies(t, (XXH128_hash_t){}))
                        return reject(t, "hash mismatch");
                r = h->type == FRAME_ZERO ? device_zero(&t->dev, h->offset, h->length)
                                          : apply_skip(t, h->offset, h->length);
                if (r >= 0)
                        digest_feed_run(&t->digest, h->type, h->length, t->size);
                if (h->type == FRAME_ZERO)
                        t->zeroed += h->length;
        } else {
                const uint8_t *chunk = frame_chunk(t, &reason);
                if (!chunk)
                        return reject(t, reason);
                XXH128_hash_t content = frame_chunk_hash(chunk, h->length);
                if (!frame_verifies(t, content))
                        return reject(t, "hash mismatch");
                r = device_pwrite(&t->dev, chunk, h->length, h->offset);
                if (r >= 0)
                        digest_feed(&t->digest, content);
                size_t wire = t->have - FRAME_HEADER_SIZE;
                t->received += wire;
                if (h->offset < t->high_water)
                        t->received_again += wire;
        }
        if (r < 0) {
                t->abort_reason = "write failed";
                t->cut = CUT_WRITE_FAILED;
                report_failed(t, "WriteFailed", "Failed to write %s at offset %" PRIu64 ": %s", t->dev.path,
                              h->offset, strerror(-r));
                agent_finish(t->agent, AGENT_EXIT_FAILURE);
                return 0;
        }
        t->offset = h->offset + h->length;
        t->high_water = MAX(t->high_water, t->offset);
        relay_frame(t->relay, h, t->frame, t->have);
        t->have = 0;
        return maybe_sync(t) < 0 ? 0 : 1;
}

/* How many bytes after the header the frame has, as far as known: a ZSTD frame's first say how many more
 * follow. UINT64_MAX with *ret_reason if that cannot be. */
static uint64_t payload_size(Target *t, const char **ret_reason) {
        uint32_t size;

        switch (t->header.type) {
        case FRAME_DATA:
                return t->header.length;
        case FRAME_ZSTD:
                if (t->have < FRAME_HEADER_SIZE + FRAME_ZSTD_PREFIX)
                        return FRAME_ZSTD_PREFIX;
                memcpy(&size, t->frame + FRAME_HEADER_SIZE, FRAME_ZSTD_PREFIX);
                size = le32toh(size);
                if (size == 0 || size >= t->header.length) {
                        *ret_reason = "compressed frame of a size that cannot be";
                        return UINT64_MAX;
                }
                return FRAME_ZSTD_PREFIX + (uint64_t) size;
        default:
                return 0;
        }
}

/* The next len bytes of the stream, from a peer or the staging area: len, or 0 if the stream is cut. */
static size_t consume(Target *t, const uint8_t *p, size_t len) {
        size_t used = 0;
        const char *reason;

        while (used < len) {
                if (t->have < FRAME_HEADER_SIZE) {
                        size_t k = MIN(FRAME_HEADER_SIZE - t->have, len - used);
                        memcpy(t->frame + t->have, p + used, k);
                        t->have += k;
                        used += k;
                        if (t->have < FRAME_HEADER_SIZE)
                                break;
                        if (frame_header_read(t->frame, t->size, t->features, &t->header, &reason) < 0)
                                return reject(t, reason);
                        if (t->header.offset != t->offset)
                                return reject(t, "frame out of order");
                }
                uint64_t want = payload_size(t, &reason);
                if (want == UINT64_MAX)
                        return reject(t, reason);
                size_t k = (size_t) MIN(want - (t->have - FRAME_HEADER_SIZE), (uint64_t) (len - used));
                memcpy(t->frame + t->have, p + used, k);
                t->have += k;
                used += k;
                if (t->have - FRAME_HEADER_SIZE < want ||
                    (t->header.type == FRAME_ZSTD && want == FRAME_ZSTD_PREFIX))
                        continue; /* more to come (a ZSTD frame's size only now known) */
                if (apply_frame(t) == 0)
                        return 0;
        }
        return len;
}

static size_t on_data(char *p, size_t size, size_t n, void *userdata) {
        Target *t = userdata;

        if (!t->peer_checked) {
                t->abort_reason = "the source's certificate was not checked";
                t->cut = CUT_BAD_PEER;
                return 0;
        }
        return consume(t, (const uint8_t *) p, size * n);
}

/* Before the first byte of the body: is this the session's source, at the address it reported? */
static size_t on_header(char *p, size_t size, size_t n, void *userdata) {
        Target *t = userdata;
        struct curl_tlssessioninfo *info = NULL;
        const gnutls_datum_t *certs;
        _cleanup_free_ char *ips = NULL;
        const char *reason = NULL;
        unsigned count = 0;

        if (t->peer_checked) {
                static const char features[] = "X-PureBoot-Features:";
                if (size * n > strlen(features) && strncasecmp(p, features, strlen(features)) == 0) {
                        _cleanup_free_ char *value =
                                strndup(p + strlen(features), size * n - strlen(features));
                        if (!value)
                                return 0;
                        t->features = frame_features_parse(value) & frame_features_ours();
                }
                return size * n;
        }
        if (curl_easy_getinfo(t->easy, CURLINFO_TLS_SSL_PTR, &info) != CURLE_OK || !info ||
            info->backend != CURLSSLBACKEND_GNUTLS || !info->internals ||
            !(certs = gnutls_certificate_get_peers(info->internals, &count)) || count == 0) {
                t->abort_reason = "the source presented no certificate";
                t->cut = CUT_BAD_PEER;
                return 0;
        }
        bool retry;
        reason = trust_check_peer(t->agent, &certs[0], GNUTLS_KP_TLS_WWW_SERVER, t->upstream_cn, false,
                                  upstream_is_source(t) ? "sourceCertificate" : "upstreamCertificate", &ips,
                                  &retry);
        if (reason) {
                /* A source the session does not name (yet): our record may be older than its enrolment. */
                t->abort_reason = reason;
                t->cut = retry ? CUT_NONE : CUT_BAD_PEER;
                return 0;
        }
        bool address_ok = false;
        for (const char *ip = ips; ip && *ip; ip += strlen(ip) + 1)
                address_ok = address_ok || streq(ip, t->address);
        if (!address_ok) {
                /* The source may report again from where its certificate says: tried on, within bounds. */
                t->abort_reason =
                        "certificate name/address mismatch: the source's certificate does not name the "
                        "address it reported";
                return 0;
        }
        t->peer_checked = true;
        backoff_reset(&t->backoff);
        t->failing_since = 0;
        if (t->problem) {
                log_info("Streaming from %s again.", t->address);
                t->problem = mfree(t->problem);
                agent_report_progress(t->agent, &t->progress, "target", t->offset, "transferring", NULL);
        }
        return size * n;
}

/* Why an attempt got no verified stream, in words an operator can act on. */
static char *attempt_failure(Target *t, CURL *easy, CURLcode result, long status) {
        long os_errno = 0;
        char *s = NULL;
        int r;

        (void) curl_easy_getinfo(easy, CURLINFO_OS_ERRNO, &os_errno);
        if (t->abort_reason)
                r = asprintf(&s, "%s", t->abort_reason);
        else if (result == CURLE_PEER_FAILED_VERIFICATION && strstr(t->errbuf, "does not match"))
                r = asprintf(
                        &s,
                        "certificate name/address mismatch: the certificate served at %s does not name that "
                        "address (%s); the source must serve on an address it enrolled with",
                        t->address, t->errbuf);
        else if (IN_SET(result, CURLE_PEER_FAILED_VERIFICATION, CURLE_SSL_CACERT_BADFILE,
                        CURLE_SSL_CONNECT_ERROR))
                r = asprintf(&s, "the TLS handshake with %s failed: %s", t->address,
                             t->errbuf[0] ? t->errbuf : curl_easy_strerror(result));
        else if (result == CURLE_COULDNT_CONNECT && os_errno == ECONNREFUSED)
                r = asprintf(&s, "connection refused at %s:%" PRIi64 ": nothing serves there", t->address,
                             t->port);
        else if (result == CURLE_COULDNT_CONNECT && IN_SET(os_errno, EHOSTUNREACH, ENETUNREACH))
                r = asprintf(&s, "%s is unreachable from here (%s)", t->address, strerror((int) os_errno));
        else if (result == CURLE_OPERATION_TIMEDOUT ||
                 (result == CURLE_COULDNT_CONNECT && os_errno == ETIMEDOUT))
                r = asprintf(&s, "no answer from %s:%" PRIi64, t->address, t->port);
        else if (result == CURLE_OK && status == 403)
                r = asprintf(&s, "the source refused our certificate");
        else if (result == CURLE_OK)
                r = asprintf(&s, "the source answered HTTP %ld", status);
        else
                r = asprintf(&s, "%s%s%s", curl_easy_strerror(result), t->errbuf[0] ? ": " : "", t->errbuf);
        return r < 0 ? NULL : s;
}

static int report_upstream_lost(Target *t, const char *name, const char *why) {
        json_object *p = agent_report_new(t->agent, NULL);

        json_object_object_add(p, "upstream", json_object_new_string(name));
        json_object_object_add(p, "reason", json_object_new_string(why));
        log_error("Lost %s, our upstream in the chain: %s. Asking the controller to relink us.", name, why);
        return queue_push(t->agent->queue, "ReportUpstreamLost", p);
}

static int on_upstream_silent(sd_event_source *s, uint64_t usec, void *userdata) {
        Target *t = userdata;
        (void) s, (void) usec;
        t->upstream_wait = sd_event_source_disable_unref(t->upstream_wait);
        if (t->awaited)
                (void) report_upstream_lost(t, t->awaited, "it did not say where it forwards");
        return 0;
}

/* The session names an upstream target that has not said where it forwards yet: we wait for it (going on
 * with a stream we have meanwhile), and report it lost if it stays silent. NULL: it is not so any more. */
static void await_upstream(Target *t, const char *name) {
        if (streq_ptr(t->awaited, name))
                return;
        t->upstream_wait = sd_event_source_disable_unref(t->upstream_wait);
        if (free_and_strdup(&t->awaited, name) < 0)
                return (void) log_oom();
        if (name && sd_event_add_time_relative(t->agent->event, &t->upstream_wait, CLOCK_MONOTONIC,
                                               UPSTREAM_SILENT_USEC, 0, on_upstream_silent, t) < 0)
                log_oom();
}

/* An attempt failed. Within pureboot.peer-timeout= of the first failure we try again; after it the
 * controller hears why, and the session fails (pureboot.peer-failure=fail) or shows the problem while we go
 * on trying (wait). Returns the delay to the next attempt, or USEC_INFINITY when we gave up. */
static uint64_t attempt_failed(Target *t, const char *why) {
        uint64_t now = now_monotonic_usec(), delay = backoff_next(&t->backoff);
        char took[FORMAT_TIMESTAMP_MAX];

        if (t->failing_since == 0)
                t->failing_since = now;
        if (!upstream_is_source(t)) {
                /* A target before us in the chain: the controller relinks us (to its upstream) once it
                 * hears; until then we try on. */
                if (now - t->failing_since >= UPSTREAM_LOST_USEC && !t->upstream_lost_reported &&
                    report_upstream_lost(t, t->upstream_cn, why) >= 0)
                        t->upstream_lost_reported = true;
                log_warning("No stream from %s at %s:%" PRIi64 " (%s); trying again in %.1f s.",
                            t->upstream_cn, t->address, t->port, why, (double) delay / USEC_PER_SEC);
                return delay;
        }
        uint64_t deadline = t->failing_since + t->agent->settings.peer_timeout_usec;
        if (now < deadline) {
                log_warning("No stream from %s:%" PRIi64 " at %s (%s); trying again in %.1f s.", t->address,
                            t->port, FORMAT_BYTES(t->offset), why,
                            (double) MIN(delay, deadline - now) / USEC_PER_SEC);
                return MIN(delay, deadline - now); /* the deadline is not passed by a long wait */
        }
        format_duration(took, (now - t->failing_since) / USEC_PER_SEC);
        if (!t->agent->settings.peer_wait) {
                report_failed(t, "PeerUnreachable",
                              "No stream from the source at %s:%" PRIi64 " for %s: %s.", t->address, t->port,
                              took, why);
                agent_finish(t->agent, AGENT_EXIT_FAILURE);
                return USEC_INFINITY;
        }
        if (!streq_ptr(t->problem, why)) {
                log_error("No stream from the source at %s:%" PRIi64 " for %s: %s. Trying on, as "
                          "pureboot.peer-failure=wait says.",
                          t->address, t->port, took, why);
                if (free_and_strdup(&t->problem, why) < 0)
                        return log_oom(), delay;
                agent_report_progress(t->agent, &t->progress, "target", t->offset, "transferring",
                                      t->problem);
        }
        return delay;
}

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        Target *t = userdata;
        (void) s, (void) usec;
        t->retry = sd_event_source_disable_unref(t->retry);
        if (start_stream(t) < 0)
                agent_exit(t->agent, AGENT_EXIT_FAILURE);
        return 0;
}

/* A frame failed verification: whether to fetch again from it, unless it keeps failing. */
static bool bad_frame_again(Target *t, const char *why) {
        if (t->bad_offset != t->offset)
                t->bad_frames = 0;
        t->bad_offset = t->offset;
        if (++t->bad_frames <= MAX_BAD_FRAMES)
                return true;
        report_failed(
                t, "VerificationFailed",
                "The frame at offset %" PRIu64 " failed verification %u times (%s); the link or the %s "
                "corrupts data.",
                t->offset, t->bad_frames, why, t->from_store ? "reading of the image" : "source's disk");
        agent_finish(t->agent, AGENT_EXIT_FAILURE);
        return false;
}

static void on_stream_done(CURL *easy, CURLcode result, void *userdata) {
        Target *t = userdata;
        const char *why = t->abort_reason ?: curl_easy_strerror(result);
        _cleanup_free_ char *failure = NULL;
        long status = 0;

        (void) curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
        if (!t->peer_checked)
                failure = attempt_failure(t, easy, result, status);
        curl_easy_cleanup(t->easy);
        t->easy = NULL;
        /* A frame cut off, or rejected, is sent again: count it as such. */
        if (t->have > FRAME_HEADER_SIZE)
                t->received_again += t->have - FRAME_HEADER_SIZE;
        t->have = 0;
        if (t->phase != PHASE_TRANSFERRING || t->cut == CUT_WRITE_FAILED)
                return;
        if (result == CURLE_OK && status == 200 && t->offset == t->size) {
                finish(t, NULL);
                return;
        }
        if (t->cut == CUT_BAD_PEER) {
                report_failed(t, "PeerRejected", "Refusing the source at %s: %s.", t->address, why);
                agent_finish(t->agent, AGENT_EXIT_REFUSED);
                return;
        }
        if (t->cut == CUT_BAD_FRAME) {
                if (bad_frame_again(t, why) && start_stream(t) < 0)
                        agent_exit(t->agent, AGENT_EXIT_FAILURE);
                return;
        }
        uint64_t delay;
        if (!t->peer_checked) {
                delay = attempt_failed(t, failure ?: why);
                if (delay == USEC_INFINITY)
                        return;
        } else {
                /* A stream that was ours broke off: resume, and count from here should it not come back. */
                if (result == CURLE_OK && status != 200)
                        why = "the source answered an error";
                delay = backoff_next(&t->backoff);
                t->failing_since = now_monotonic_usec();
                log_warning("Lost the stream from %s:%" PRIi64 " at %s (%s); resuming there in %.1f s.",
                            t->address, t->port, FORMAT_BYTES(t->offset), why,
                            (double) delay / USEC_PER_SEC);
        }
        (void) sd_event_add_time_relative(t->agent->event, &t->retry, CLOCK_MONOTONIC, delay, 0, on_retry, t);
}

/* The staging area could not be read to the end: a damaged image, or one not for this disk, fails the
 * target; else we try again, within pureboot.peer-timeout= of the first failure. */
static void store_failed(Target *t, int r, const char *why) {
        uint64_t now = now_monotonic_usec(), delay;

        if (IN_SET(r, -EBADMSG, -EINVAL)) {
                report_failed(t, "DownloadFailed",
                              "Reading the image from the staging area failed: %s. %s of %s was written and "
                              "checked.",
                              why, FORMAT_BYTES(t->offset), t->dev.path);
                agent_finish(t->agent, AGENT_EXIT_FAILURE);
                return;
        }
        if (t->failing_since == 0)
                t->failing_since = now;
        if (now - t->failing_since >= t->agent->settings.peer_timeout_usec) {
                report_failed(t, "StoreUnreachable", "Cannot read the image from the staging area: %s.",
                              why);
                agent_finish(t->agent, AGENT_EXIT_FAILURE);
                return;
        }
        delay = backoff_next(&t->backoff);
        log_warning("Reading the image from the staging area stopped at %s (%s); trying again in %.1f s.",
                    FORMAT_BYTES(t->offset), why, (double) delay / USEC_PER_SEC);
        (void) sd_event_add_time_relative(t->agent->event, &t->retry, CLOCK_MONOTONIC, delay, 0, on_retry,
                                          t);
}

static int on_store_data(sd_event_source *es, int fd, uint32_t revents, void *userdata) {
        Target *t = userdata;
        _cleanup_free_ char *why = NULL;
        const char *reason = NULL;
        ssize_t n;
        int r;
        (void) es, (void) revents;

        n = read(fd, t->store_buffer, STORE_READ);
        if (n < 0 && IN_SET(errno, EAGAIN, EINTR))
                return 0;
        if (n > 0) {
                if (consume(t, t->store_buffer, (size_t) n) == (size_t) n) {
                        t->failing_since = 0;
                        backoff_reset(&t->backoff);
                        return 0;
                }
                /* We cut it: the reading stops. */
                stop_stream(t);
                t->have = 0;
                if (t->phase != PHASE_TRANSFERRING || t->cut == CUT_WRITE_FAILED)
                        return 0;
                if (t->cut == CUT_BAD_FRAME) {
                        if (bad_frame_again(t, t->abort_reason) && start_stream(t) < 0)
                                agent_exit(t->agent, AGENT_EXIT_FAILURE);
                        return 0;
                }
                store_failed(t, -EIO, "making what was written durable failed");
                return 0;
        }
        /* The end of its frames. */
        r = n < 0 ? -errno : store_stream_end(t->store, &reason);
        why = strdup(reason ?: n < 0 ? strerror(-r) : "the image ended before the disk's end");
        stop_stream(t);
        t->have = 0;
        if (r >= 0 && t->offset == t->size) {
                finish(t, NULL);
                return 0;
        }
        store_failed(t, r < 0 ? r : -EBADMSG, strna(why));
        return 0;
}

static int start_store(Target *t);

static void on_staging(Agent *a, const char *error, json_object *reply, void *userdata) {
        Target *t = userdata;
        json_object *staging;

        t->staging_asked = false;
        if (error || !json_object_object_get_ex(reply, "staging", &staging)) {
                uint64_t delay = backoff_next(&t->backoff);
                log_warning("GetStaging failed: %s; asking again in %.1f s.", strna(error),
                            (double) delay / USEC_PER_SEC);
                (void) sd_event_add_time_relative(a->event, &t->retry, CLOCK_MONOTONIC, delay, 0, on_retry,
                                                  t);
                return;
        }
        t->staging = json_object_get(staging);
        /* The first target to read it says so: the session shows its staging area being read. */
        if (staging_status_from_string(json_get_string(staging, "status")) == STAGING_READY)
                staged_report_status(a, "downloading");
        if (t->from_store && t->phase == PHASE_TRANSFERRING && !t->store && start_store(t) < 0)
                agent_exit(a, AGENT_EXIT_FAILURE);
}

static int start_store(Target *t) {
        Agent *a = t->agent;
        int fd, sector = 0, r;

        t->phase = PHASE_TRANSFERRING;
        if (!t->staging) { /* asked once: the area does not move */
                if (t->staging_asked)
                        return 0;
                t->staging_asked = true;
                r = client_call(a, "GetStaging", agent_report_new(a, NULL), on_staging, t);
                if (r < 0)
                        t->staging_asked = false;
                return r;
        }
        if (t->dev.is_block)
                (void) ioctl(t->dev.fd, BLKSSZGET, &sector);
        r = store_stream_new(a, t->staging, t->size, (uint64_t) sector, t->offset, t->forward, &t->store,
                             &fd);
        if (r < 0)
                return log_error_errno(r, "Failed to start reading the staging area: %m");
        r = sd_event_add_io(a->event, &t->store_source, fd, EPOLLIN, on_store_data, t);
        if (r < 0)
                return log_error_errno(r, "Failed to watch the reading of the staging area: %m");
        t->have = 0;
        t->features = FRAME_FEATURES_ALL; /* the frames are made here */
        t->peer_checked = true;
        t->abort_reason = NULL;
        t->cut = CUT_NONE;
        log_info("Reading the image from the staging area (%s) from %s on.",
                 strna(json_get_string(t->staging, "backend")), FORMAT_BYTES(t->offset));
        return 0;
}

static int start_stream(Target *t) {
        Agent *a = t->agent;
        _cleanup_free_ char *url = NULL;
        char features[16];

        stop_stream(t);
        if (t->from_store)
                return start_store(t);
        bool v6 = strchr(t->address, ':') != NULL;
        /* Which kinds of frame we take; the source answers which it sends (none said: DATA and ZERO). */
        if (asprintf(&url, "https://%s%s%s:%" PRIi64 "/disk?offset=%" PRIu64 "&features=%s", v6 ? "[" : "",
                     t->address, v6 ? "]" : "", t->port, t->offset,
                     frame_features_string(frame_features_ours(), features)) < 0)
                return -ENOMEM;
        t->have = 0;
        t->features = 0;
        t->peer_checked = false;
        t->abort_reason = NULL;
        t->cut = CUT_NONE;
        t->errbuf[0] = 0;
        t->easy = client_easy_new_url(a, url);
        if (!t->easy || curl_easy_setopt(t->easy, CURLOPT_ERRORBUFFER, t->errbuf) != CURLE_OK ||
            curl_easy_setopt(t->easy, CURLOPT_LOW_SPEED_LIMIT, 1L) != CURLE_OK ||
            curl_easy_setopt(t->easy, CURLOPT_LOW_SPEED_TIME, 30L) != CURLE_OK ||
            curl_easy_setopt(t->easy, CURLOPT_BUFFERSIZE, 512L * 1024) != CURLE_OK ||
            curl_easy_setopt(t->easy, CURLOPT_HEADERFUNCTION, on_header) != CURLE_OK ||
            curl_easy_setopt(t->easy, CURLOPT_HEADERDATA, t) != CURLE_OK ||
            curl_easy_setopt(t->easy, CURLOPT_WRITEFUNCTION, on_data) != CURLE_OK ||
            curl_easy_setopt(t->easy, CURLOPT_WRITEDATA, t) != CURLE_OK ||
            (a->settings.max_rate > 0 && curl_easy_setopt(t->easy, CURLOPT_MAX_RECV_SPEED_LARGE,
                                                          (curl_off_t) a->settings.max_rate) != CURLE_OK))
                return -ENOMEM;
        t->phase = PHASE_TRANSFERRING;
        return curl_glue_add(a->curl, t->easy, on_stream_done, NULL, t); /* target_free ends it */
}

/* Before the first write: the disk must be ours to write, and large enough. */
static int preflight(Target *t, json_object *session) {
        Agent *a = t->agent;
        _cleanup_free_ char *holder = NULL, *digest = NULL;
        int r;

        t->size = (uint64_t) json_get_int(session, "sizeBytes");
        r = clone_unused_from_string(json_get_string(session, "unused") ?: "discard");
        t->unused = r >= 0 ? (CloneUnused) r : CLONE_UNUSED_DISCARD;
        r = device_open(a->settings.device, O_RDWR, &t->dev, &holder);
        if (r == -EBUSY) {
                report_failed(t, "DeviceBusy",
                              "%s is %s%s; nothing was written. Unmount it (and stop what holds it) and start the "
                              "session again.",
                              a->settings.device, holder ? "mounted at " : "in use by another program",
                              strempty(holder));
                agent_finish(a, AGENT_EXIT_REFUSED);
                return 0;
        }
        if (r < 0) {
                report_failed(t, "DeviceUnavailable", "Cannot open %s for writing: %s.", a->settings.device,
                              strerror(-r));
                agent_finish(a, AGENT_EXIT_REFUSED);
                return 0;
        }
        if (t->dev.size < t->size) {
                report_failed(t, "InsufficientSpace",
                              "%s holds %s (%" PRIu64 " bytes) but the source is %s (%" PRIu64
                              " bytes); nothing was written. Use a target at least as large as the source.",
                              a->settings.device, FORMAT_BYTES(t->dev.size), t->dev.size, FORMAT_BYTES(t->size),
                              t->size);
                agent_finish(a, AGENT_EXIT_REFUSED);
                return 0;
        }
        t->sync_every = MIN(SYNC_MAX, MAX(SYNC_MIN, t->size / 16 / FRAME_CHUNK * FRAME_CHUNK));
        r = journal_load(t, &digest);
        if (r < 0)
                return r;
        if (r > 0 && digest) {
                log_info("The journal says %s was written completely already; reporting it again.", t->dev.path);
                t->phase = PHASE_TRANSFERRING;
                finish(t, digest);
                return 0;
        }
        if (r > 0)
                log_info("Resuming at offset %" PRIu64 " (%s) from the journal.", t->offset, FORMAT_BYTES(t->offset));
        t->synced_at = t->started_at = now_monotonic_usec();
        if (t->from_store)
                log_info("Writing %s (%s) from the staging area.", t->dev.path, FORMAT_BYTES(t->dev.size));
        else
                log_info("Writing %s (%s) from %s:%" PRIi64 ".", t->dev.path, FORMAT_BYTES(t->dev.size),
                         t->address, t->port);
        return start_stream(t);
}

/* The session ended: what is written so far stays written, and journalled. */
static bool on_ended(Agent *a, json_object *session) {
        Target *t = a->target;

        if (t->phase == PHASE_DONE && session_status(session) == CLONE_COMPLETED)
                return true; /* our completion was taken; the queue decides when we leave */
        stop_stream(t);
        t->phase = PHASE_DONE;
        if (t->dev.fd >= 0 && t->offset > 0)
                (void) sync_now(t);
        return false;
}

static void on_session(Agent *a, json_object *session) {
        Target *t = a->target;
        /* Our upstream: the source, a staged session's staging area, or in a chain the target before us (an
         * older controller names only the source, or nothing in a staged session). */
        const char *named = json_get_string(session, "upstreamName"),
                   *staging = json_get_string(session, "stagingStatus");
        bool staged = streq_ptr(json_get_string(session, "mode"), "staged");
        bool store = staged && (!named || streq(named, UPSTREAM_STORE)), chained = named && !store;

        if (t->held) { /* written: forwarding until the next target is done */
                update_forward(t, session);
                if (!t->forward)
                        complete(t, t->held);
                return;
        }
        const char *address =
                store ? NULL : json_get_string(session, chained ? "upstreamAddress" : "sourceAddress");
        int64_t port = store ? 0 : json_get_int(session, chained ? "upstreamPort" : "sourcePort");
        const char *cn = store ? UPSTREAM_STORE : chained ? named : t->source_cn;

        if (t->phase == PHASE_DONE || a->finishing)
                return;
        update_forward(t, session); /* before the journal may say we are done already (preflight) */
        /* Nothing to pull before the source is ready, or its upload is whole: an upstream target waits too.
         */
        if (json_get_int(session, "sizeBytes") <= 0 ||
            (staged && !STR_IN_SET(strempty(staging), "ready", "downloading")))
                return;
        await_upstream(t, chained && !address && !streq(cn, t->source_cn) ? cn : NULL);
        if (!store && (!address || port <= 0))
                return;
        bool moved = t->from_store != store || !streq_ptr(t->address, address) || t->port != port ||
                     !streq_ptr(t->upstream_cn, cn);
        if (free_and_strdup(&t->address, address) < 0 || free_and_strdup(&t->upstream_cn, cn) < 0)
                return (void) log_oom();
        t->from_store = store;
        t->port = port;
        if (moved)
                t->upstream_lost_reported = false;
        if (t->phase == PHASE_WAITING) {
                if (resize_target_ready(a, session) <= 0)
                        return; /* what happens after the copy is known before it starts */
                if (preflight(t, session) < 0)
                        agent_exit(a, AGENT_EXIT_FAILURE);
                else if (t->phase == PHASE_TRANSFERRING)
                        update_forward(t, session);
        } else if (t->phase == PHASE_TRANSFERRING) {
                if (!moved)
                        return;
                /* The upstream came back elsewhere, or the chain was relinked: go there now rather than at
                 * the next retry. */
                if (store)
                        log_info("Now reading from the staging area.");
                else
                        log_info("Now pulling from %s at %s:%" PRIi64 ".", cn, address, port);
                t->retry = sd_event_source_disable_unref(t->retry);
                backoff_reset(&t->backoff);
                t->failing_since = 0;
                if (start_stream(t) < 0)
                        agent_exit(a, AGENT_EXIT_FAILURE);
        }
}

static int on_started(Agent *a) {
        Target *t = a->target;
        int r;

        r = trust_start(a);
        if (r < 0)
                return r;
        r = agent_add_progress_timer(a, &t->progress_timer, on_progress, t);
        if (r < 0)
                return r;
        log_info("Waiting for the source of session %s.", a->settings.session);
        return 0;
}

/* Our disk goes to the resize plan: its size decides whether the source shrinks or we grow. */
static const JobKind target_job = {
        .role = "target",
        .report_disk = true,
        .started = on_started,
        .changed = on_session,
        .ended = on_ended,
};

int target_start(Agent *a) {
        Target *t = calloc(1, sizeof(Target));
        int r;

        if (!t)
                return -ENOMEM;
        t->agent = a;
        t->dev = DEVICE_NULL;
        a->target = t;
        backoff_init(&t->backoff);
        /* A DATA frame's chunk is written from where it was received: aligned, it goes around the page
         * cache (device_pwrite). */
        t->frame_buffer = device_buffer_new(DEVICE_ALIGN + FRAME_ZSTD_PREFIX + FRAME_CHUNK);
        t->frame = t->frame_buffer ? t->frame_buffer + DEVICE_ALIGN - FRAME_HEADER_SIZE : NULL;
        t->chunk = device_buffer_new(FRAME_CHUNK);
        t->store_buffer = malloc(STORE_READ);
        t->dctx = ZSTD_createDCtx();
        if (!t->frame || !t->chunk || !t->store_buffer || !t->dctx ||
            asprintf(&t->source_cn, "clone-%s-source", a->settings.session) < 0 ||
            asprintf(&t->journal_path, "%s/journal.json", a->settings.state_dir) < 0)
                return -ENOMEM;
        r = digest_init(&t->digest);
        if (r < 0)
                return r;
        return job_start(a, &target_job);
}

Target *target_free(Target *t) {
        if (!t)
                return NULL;
        stop_stream(t);
        t->relay = relay_free(t->relay);
        sd_event_source_disable_unref(t->retry);
        sd_event_source_disable_unref(t->progress_timer);
        digest_done(&t->digest);
        used_map_done(&t->skipped);
        device_close(&t->dev);
        ZSTD_freeDCtx(t->dctx);
        free(t->chunk);
        free(t->store_buffer);
        json_object_put(t->staging);
        free(t->frame_buffer);
        free(t->address);
        free(t->problem);
        free(t->source_cn);
        free(t->upstream_cn);
        free(t->awaited);
        sd_event_source_disable_unref(t->upstream_wait);
        free(t->held);
        free(t->journal_path);
        free(t);
        return NULL;
}
