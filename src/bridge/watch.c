/* SPDX-License-Identifier: MIT */
/* WatchSession and WatchNode as streams of application/json-seq records (RS, JSON, LF): the Get call's
 * answer first — as a plain error reply if it is one — then again each time the object (or, for a node,
 * one of its disks) announces a change.
 *
 * All streams share one subscription to the controller's Gateway.Changed signal, which names what changed
 * as the node protocol knows it (a session, a node, the trust), not as the controller's objects are laid
 * out: a match rule per stream ran into dbus-daemon's limit of rules per connection at about 510
 * streams, and the bus then dropped the bridge. Streams are capped in total and per certificate (429
 * beyond), and every stream is checked again every WATCH_RECHECK_USEC and whenever the CRL changes: a
 * revoked certificate or a session that ended closes it, and a keep-alive line shows the node (and the
 * kernel) that the connection lives. */
#include <gnutls/gnutls.h>

#include "domain.h"
#include "hashmap.h"
#include "json-util.h"
#include "log.h"
#include "pureboot-bus.h"
#include "request.h"
#include "tls.h"
#include "util.h"

#define WATCH_RECHECK_USEC (30 * USEC_PER_SEC)
/* A client that stops reading is not kept in memory without end. */
#define WATCH_MAX_BUFFERED (1024 * 1024)

typedef struct Watch Watch;
struct Watch {
        Request *req;
        Bridge *bridge;
        Peer peer;           /* the caller's name and address, copied: the stream outlives no request */
        gnutls_datum_t cert; /* the caller's certificate (DER), verified again when the CRL changes */
        const char *get;     /* GetSession or GetNode */
        char *path;          /* what it follows, as Gateway.Changed names it: session/ID or node/ID */
        json_object *params;
        sd_bus_slot *call;
        sd_event_source *timer;
        bool refresh, done, waiting, streaming, keepalive;
        char *buf, *last; /* last: the previous record, so an unchanged answer is not sent twice */
        size_t len, pos;
        Watch *next_same, *prev_same; /* the other streams of the same path */
        Watch *next, *prev;           /* every stream, in b->watches */
};

static void watch_unlink(Watch *w) {
        Bridge *b = w->bridge;

        if (!w->path || !w->bridge->watched)
                return;
        if (w->prev_same)
                w->prev_same->next_same = w->next_same;
        else {
                /* The first of its path: the map's key is its path, so the next one takes its place. */
                (void) hashmap_remove(b->watched, w->path);
                if (w->next_same && hashmap_put(b->watched, w->next_same->path, w->next_same) < 0)
                        log_oom();
        }
        if (w->next_same)
                w->next_same->prev_same = w->prev_same;
        if (w->prev)
                w->prev->next = w->next;
        else
                b->watches = w->next;
        if (w->next)
                w->next->prev = w->prev;
        w->next = w->prev = w->next_same = w->prev_same = NULL;
        b->n_watches--;
        w->path = mfree(w->path);
}

static int watch_link(Watch *w, const char *path) {
        Bridge *b = w->bridge;
        Watch *first;
        int r;

        w->path = strdup(path);
        if (!w->path)
                return -ENOMEM;
        first = hashmap_get(b->watched, path);
        if (first) {
                w->next_same = first->next_same;
                w->prev_same = first;
                if (first->next_same)
                        first->next_same->prev_same = w;
                first->next_same = w;
        } else if ((r = hashmap_put(b->watched, w->path, w)) < 0) {
                w->path = mfree(w->path);
                return r;
        }
        w->next = b->watches;
        if (b->watches)
                b->watches->prev = w;
        b->watches = w;
        b->n_watches++;
        return 0;
}

static void watch_free(Watch *w) {
        if (!w)
                return;
        watch_unlink(w);
        sd_bus_slot_unref(w->call);
        sd_event_source_disable_unref(w->timer);
        json_object_put(w->params);
        free(w->peer.cn);
        gnutls_free(w->cert.data);
        free(w->buf);
        free(w->last);
        free(w);
}

static void watch_wake(Watch *w) {
        if (w->waiting && w->req) {
                w->waiting = false;
                request_resume(w->req);
        }
}

static void watch_write(Watch *w, const char *text, bool record) {
        size_t n = strlen(text), extra = record ? 2 : 0;
        char *nb;

        if (w->len - w->pos + n > WATCH_MAX_BUFFERED) {
                log_warning("%s does not read its %s stream; closing it.", w->peer.cn, w->get);
                w->done = true;
                return watch_wake(w);
        }
        nb = realloc(w->buf, w->len + n + extra);
        if (!nb)
                return (void) log_oom();
        w->buf = nb;
        if (record)
                w->buf[w->len++] = 0x1e;
        memcpy(w->buf + w->len, text, n);
        w->len += n;
        if (record)
                w->buf[w->len++] = '\n';
        watch_wake(w);
}

/* Appends o as a record unless it says what the last one said; returns whether it did. */
static bool watch_append(Watch *w, json_object *o) {
        const char *text =
                json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
        if (streq_ptr(w->last, text))
                return false;
        (void) free_and_strdup(&w->last, text);
        watch_write(w, text, true);
        return true;
}

/* The last record of a stream that must end: a varlink error, as the call would have answered. */
static void watch_end_with_error(Watch *w, const char *error, const char *reason) {
        json_object *o = json_object_new_object(), *params = json_object_new_object();
        json_object_object_add(params, "reason", json_object_new_string(reason));
        json_object_object_add(o, "error", json_object_new_string(error));
        json_object_object_add(o, "parameters", params);
        (void) watch_append(w, o);
        json_object_put(o);
        w->done = true;
        w->call = sd_bus_slot_unref(w->call);
        watch_wake(w);
}

static ssize_t watch_read(void *cls, uint64_t pos, char *buf, size_t max) {
        Watch *w = cls;
        (void) pos;
        if (w->pos < w->len) {
                size_t n = MIN(max, w->len - w->pos);
                memcpy(buf, w->buf + w->pos, n);
                w->pos += n;
                if (w->pos == w->len)
                        w->pos = w->len = 0;
                return (ssize_t) n;
        }
        if (w->done || !w->req)
                return MHD_CONTENT_READER_END_OF_STREAM;
        /* Nothing to send yet: park the connection rather than have MHD ask again at once. */
        w->waiting = true;
        request_suspend(w->req);
        return 0;
}

static void watch_response_free(void *cls) {
        Watch *w = cls;
        if (w->req)
                w->req->watch = NULL;
        watch_free(w);
}

static bool record_is_final(json_object *o) {
        json_object *session, *status;
        return json_object_object_get_ex(o, "session", &session) &&
               json_object_object_get_ex(session, "status", &status) &&
               clone_status_name_is_final(json_object_get_string(status));
}

/* The first answer decides the reply: an error is an ordinary error reply, anything else starts the
 * stream with it. */
static void watch_first_reply(Watch *w, unsigned code, json_object *o) {
        Request *req = w->req;
        int r;

        if (code != MHD_HTTP_OK) {
                req->watch = NULL;
                r = request_reply_json(req, code, json_object_get(o));
                watch_free(w);
        } else {
                w->streaming = true;
                (void) watch_append(w, o);
                w->done = record_is_final(o);
                req->response = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, watch_read, w,
                                                                  watch_response_free);
                r = req->response ? 0 : -ENOMEM;
                if (r >= 0) {
                        MHD_add_response_header(req->response, MHD_HTTP_HEADER_CONTENT_TYPE,
                                                "application/json-seq");
                        req->status = MHD_HTTP_OK;
                } else {
                        req->watch = NULL;
                        watch_free(w);
                        r = request_reply_error(req, MHD_HTTP_INTERNAL_SERVER_ERROR,
                                                PB_NODE_PREFIX "ControllerUnavailable", "reason",
                                                "the bridge is out of memory", NULL);
                }
        }
        if (r < 0)
                log_error_errno(r, "Failed to answer a watch: %m");
        request_resume(req);
}

static int watch_refresh(Watch *w);

static int on_watch_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Watch *w = userdata;
        json_object *o = NULL;
        unsigned code = 0;
        (void) ret_error;

        w->call = sd_bus_slot_unref(w->call);
        if (gateway_reply_parse(m, sd_bus_message_get_error(m), &code, &o) < 0) {
                code = MHD_HTTP_INTERNAL_SERVER_ERROR;
                o = json_object_new_object();
                json_object_object_add(o, "error",
                                       json_object_new_string(PB_NODE_PREFIX "ControllerUnavailable"));
        }
        if (!w->streaming) {
                watch_first_reply(w, code, o);
                json_object_put(o);
                return 0;
        }
        if (code != MHD_HTTP_OK)
                w->done = true; /* an error is the last record */
        else
                w->done = record_is_final(o);
        if (!watch_append(w, o) && w->keepalive && !w->done)
                watch_write(w, "\n", false); /* nothing new: JSON text sequences allow whitespace */
        w->keepalive = false;
        json_object_put(o);
        if (w->done)
                watch_wake(w);
        else if (w->refresh)
                (void) watch_refresh(w);
        return 0;
}

static int watch_refresh(Watch *w) {
        if (w->done)
                return 0;
        if (w->call) { /* one at a time; the reply asks again */
                w->refresh = true;
                return 0;
        }
        w->refresh = false;
        return gateway_forward(w->bridge, &w->call, w->get, &w->peer, w->params, on_watch_reply, w);
}

static int on_watch_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Watch *w = userdata;
        (void) usec;
        (void) sd_event_source_set_time_relative(s, WATCH_RECHECK_USEC);
        w->keepalive = true;
        (void) watch_refresh(w);
        return 0;
}

/* Every stream whose certificate no longer verifies (revoked, expired) ends, with the reason. */
void watch_check_certificates(Bridge *b) {
        for (Watch *w = b->watches; w; w = w->next) {
                _cleanup_free_ char *cn = NULL;
                const char *reason = NULL;
                if (w->done || !w->streaming ||
                    tls_verify_peer(b->trust, &w->cert, GNUTLS_KP_TLS_WWW_CLIENT, &cn, NULL, &reason) >= 0)
                        continue;
                log_notice("Closing the %s stream of %s: %s.", w->get, w->peer.cn, strna(reason));
                watch_end_with_error(w, PB_NODE_PREFIX "PermissionDenied",
                                     reason ?: "the certificate does not verify");
        }
}

void watch_detach(Watch *w) {
        /* The request is going away (MHD completes it before it frees the response): the stream ends, and
         * nothing of the request is touched again. A watch whose stream never started goes now. */
        w->req = NULL;
        if (!w->streaming)
                return watch_free(w);
        w->done = true;
        w->call = sd_bus_slot_unref(w->call);
        w->timer = sd_event_source_disable_unref(w->timer);
        watch_unlink(w);
}

/* The one subscription: Gateway.Changed(kind, id). */
static int on_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Bridge *b = userdata;
        _cleanup_free_ char *key = NULL;
        const char *kind, *id;
        (void) ret_error;

        if (sd_bus_message_read(m, "ss", &kind, &id) < 0)
                return 0;
        if (streq(kind, "trust")) {
                if (trust_load(b) >= 0) {
                        log_info("The CRL changed; client certificates are checked against the new one.");
                        watch_check_certificates(b);
                }
                return 0;
        }
        if (asprintf(&key, "%s/%s", kind, id) < 0)
                return log_oom(), 0;
        for (Watch *w = hashmap_get(b->watched, key); w; w = w->next_same)
                (void) watch_refresh(w);
        return 0;
}

int watch_subscribe(Bridge *b) {
        b->watched = hashmap_new();
        if (!b->watched)
                return -ENOMEM;
        return sd_bus_match_signal_async(b->bus, &b->changes, PB_BUS_NAME, PB_ROOT_PATH, PB_IFACE("Gateway"),
                                         "Changed", on_changed, NULL, b);
}

void watch_unsubscribe(Bridge *b) {
        while (b->watches)
                watch_unlink(b->watches);
        b->changes = sd_bus_slot_unref(b->changes);
        hashmap_free(b->watched);
        b->watched = NULL;
}

/* What a watch follows: the session named in the call, or the node of the calling certificate. */
static int watch_path(Request *req, const char *method, json_object *params, char **ret) {
        const char *session = json_get_string(params, "session"),
                   *node = startswith(strempty(req->peer->cn), "node-");

        if (streq(method, "WatchSession")) {
                if (!id_is_valid(session))
                        return request_reply_error(req, MHD_HTTP_NOT_FOUND, PB_NODE_PREFIX "NoSuchSession",
                                                   "session", strempty(session), NULL),
                               0;
                return asprintf(ret, "session/%s", session) < 0 ? -ENOMEM : 1;
        }
        if (!node || !id_is_valid(node))
                return request_reply_error(req, MHD_HTTP_FORBIDDEN, PB_NODE_PREFIX "PermissionDenied",
                                           "reason", "WatchNode needs a node certificate", NULL),
                       0;
        return asprintf(ret, "node/%s", node) < 0 ? -ENOMEM : 1;
}

/* 429 if the bridge, or this certificate, has as many streams as it may. */
static int check_limits(Request *req, const char *method) {
        Bridge *b = req->bridge;
        unsigned mine = 0;
        char limit[32];

        for (Watch *w = b->watches; w; w = w->next)
                mine += streq_ptr(w->peer.cn, req->peer->cn);
        if (mine >= b->config.max_watches_per_peer) {
                snprintf(limit, sizeof(limit), "%u", b->config.max_watches_per_peer);
                return request_reply_error(
                               req, MHD_HTTP_TOO_MANY_REQUESTS, PB_NODE_PREFIX "TooManyStreams", "reason",
                               "this certificate has as many streams open as it may; close one first",
                               "limit", limit, NULL),
                       0;
        }
        if (b->n_watches >= b->config.max_watches) {
                snprintf(limit, sizeof(limit), "%u", b->config.max_watches);
                log_warning("Refused a %s stream of %s: %u streams are open, the most this bridge serves "
                            "(--max-streams=).",
                            method, req->peer->cn, b->n_watches);
                return request_reply_error(req, MHD_HTTP_TOO_MANY_REQUESTS, PB_NODE_PREFIX "TooManyStreams",
                                           "reason",
                                           "the bridge serves as many streams as it may; try again later",
                                           "limit", limit, NULL),
                       0;
        }
        return 1;
}

static int peer_certificate(Request *req, gnutls_datum_t *ret) {
        const union MHD_ConnectionInfo *ci =
                MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
        const gnutls_datum_t *certs;
        unsigned n = 0;

        if (!ci || !ci->tls_session || !(certs = gnutls_certificate_get_peers(ci->tls_session, &n)) ||
            n == 0)
                return -ENOKEY;
        ret->data = gnutls_malloc(certs[0].size);
        if (!ret->data)
                return -ENOMEM;
        memcpy(ret->data, certs[0].data, certs[0].size);
        ret->size = certs[0].size;
        return 0;
}

int watch_start(Request *req, const char *method, json_object *params) {
        Bridge *b = req->bridge;
        _cleanup_free_ char *path = NULL;
        Watch *w;
        int r;

        r = watch_path(req, method, params, &path);
        if (r <= 0)
                return r;
        r = check_limits(req, method);
        if (r <= 0)
                return r;
        w = calloc(1, sizeof(Watch));
        if (!w)
                return -ENOMEM;
        w->req = req;
        w->bridge = b;
        w->get = streq(method, "WatchSession") ? "GetSession" : "GetNode";
        w->params = json_object_get(params);
        snprintf(w->peer.address, sizeof(w->peer.address), "%s", req->peer->address);
        w->peer.cn = strdup(req->peer->cn);
        r = w->peer.cn ? peer_certificate(req, &w->cert) : -ENOMEM;
        if (r >= 0)
                r = watch_link(w, path);
        if (r >= 0)
                r = sd_event_add_time_relative(b->event, &w->timer, CLOCK_MONOTONIC, WATCH_RECHECK_USEC, 0,
                                               on_watch_timer, w);
        if (r >= 0) /* again and again, not once */
                r = sd_event_source_set_enabled(w->timer, SD_EVENT_ON);
        if (r >= 0)
                r = gateway_forward(b, &w->call, method, &w->peer, params, on_watch_reply, w);
        if (r < 0) {
                watch_free(w);
                return r;
        }
        req->watch = w;
        request_suspend(req);
        return 0;
}
