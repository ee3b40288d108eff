/* SPDX-License-Identifier: MIT */
/* The agent's side of the node protocol: varlink calls over HTTPS to the bridge (POST /call/…), and the
 * WatchSession stream, reconnected with backoff when the bridge or controller goes away. Until the CA is
 * known nothing here runs: enrol.c fetches and checks it first. */
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "address.h"
#include "agent.h"
#include "backoff.h"
#include "curl-glue.h"
#include "log.h"
#include "pureboot-bus.h"
#include "queue.h"
#include "util.h"

#define MAX_REPLY (4U * 1024 * 1024)

typedef struct Call {
        Agent *agent;
        CURL *easy;
        struct curl_slist *headers;
        char *body, *reply;
        size_t reply_len;
        CallDone done;
        void *userdata;
} Call;

static size_t on_reply_data(char *p, size_t size, size_t n, void *userdata) {
        Call *c = userdata;
        return curl_glue_collect(&c->reply, &c->reply_len, MAX_REPLY, p, size * n);
}

static void call_free(Call *c) {
        if (!c)
                return;
        if (c->easy)
                curl_easy_cleanup(c->easy);
        curl_slist_free_all(c->headers);
        free(c->body);
        free(c->reply);
        free(c);
}

/* A call still in flight when the agent exits: its report stays queued on disk for the next run. */
static void call_release(void *userdata) {
        call_free(userdata);
}

CURL *client_easy_new_url(Agent *a, const char *url) {
        CURL *e = curl_easy_init();

        if (!e)
                return NULL;
        if (curl_easy_setopt(e, CURLOPT_URL, url) != CURLE_OK ||
            curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
            curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, 10L) != CURLE_OK ||
            curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L) != CURLE_OK ||
            curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https") != CURLE_OK ||
            /* Our CA only: not the system's store, which is not ours to trust (and costs a megabyte a
             * connection to load). */
            curl_easy_setopt(e, CURLOPT_CAPATH, NULL) != CURLE_OK ||
            (a->ca_path && curl_easy_setopt(e, CURLOPT_CAINFO, a->ca_path) != CURLE_OK) ||
            (a->cert_pem && (curl_easy_setopt(e, CURLOPT_SSLCERT, a->cert_path) != CURLE_OK ||
                             curl_easy_setopt(e, CURLOPT_SSLKEY, a->key_path) != CURLE_OK))) {
                curl_easy_cleanup(e);
                return NULL;
        }
        return e;
}

CURL *client_easy_new(Agent *a, const char *path) {
        _cleanup_free_ char *url = NULL;
        if (asprintf(&url, "%s%s", a->settings.server, path) < 0)
                return NULL;
        return client_easy_new_url(a, url);
}

static void watch_kick(Agent *a);

void client_note_address(Agent *a, CURL *easy) {
        char *ip = NULL;
        if (curl_easy_getinfo(easy, CURLINFO_LOCAL_IP, &ip) == CURLE_OK && !isempty(ip))
                (void) free_and_strdup(&a->local_address, ip);
}

/* The bridge answered: whatever waits out a backoff may go now. */
static void reachable(Agent *a) {
        if (a->queue)
                queue_kick(a->queue);
        watch_kick(a);
}

static int client_local_address(Agent *a, char **ret) {
        _cleanup_free_ char *host = NULL;
        const char *p = startswith(a->settings.server, "https://"), *port = "443";
        struct addrinfo hints = { .ai_socktype = SOCK_DGRAM }, *ai = NULL;
        SocketAddress local;
        socklen_t len = sizeof(local);
        char text[INET6_ADDRSTRLEN];
        int fd, r;

        if (!p)
                return -EINVAL;
        if (*p == '[') { /* [v6]:port */
                const char *end = strchr(p, ']');
                if (!end)
                        return -EINVAL;
                host = strndup(p + 1, (size_t) (end - p - 1));
                p = end + 1;
        } else {
                size_t n = strcspn(p, ":/");
                host = strndup(p, n);
                p += n;
        }
        if (!host)
                return -ENOMEM;
        _cleanup_free_ char *portbuf = NULL;
        if (*p == ':' && !(port = portbuf = strndup(p + 1, strcspn(p + 1, "/"))))
                return -ENOMEM;
        r = getaddrinfo(host, port, &hints, &ai);
        if (r != 0)
                return -EADDRNOTAVAIL;
        /* Connecting a datagram socket sends nothing; it only picks the route, and so our address. */
        fd = socket(ai->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        r = fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 || getsockname(fd, &local.sa, &len) < 0 ? -errno : 0;
        freeaddrinfo(ai);
        if (fd >= 0)
                close(fd);
        if (r < 0)
                return r;
        r = socket_address_ip(&local, text, sizeof(text));
        if (r < 0)
                return r;
        *ret = strdup(text);
        return *ret ? 0 : -ENOMEM;
}

/* The interface's first IPv4 address, else its first IPv6 address that is not link-local (a peer could
 * not reach that without knowing the interface). */
static int interface_address(const char *name, char **ret) {
        struct ifaddrs *list = NULL;
        char text[INET6_ADDRSTRLEN] = "";

        if (if_nametoindex(name) == 0)
                return -ENODEV;
        if (getifaddrs(&list) < 0)
                return -errno;
        for (struct ifaddrs *i = list; i; i = i->ifa_next) {
                const SocketAddress *sa = (const SocketAddress *) i->ifa_addr;
                if (!sa || !streq(i->ifa_name, name))
                        continue;
                if (sa->sa.sa_family == AF_INET) {
                        (void) socket_address_ip(sa, text, sizeof(text));
                        break;
                }
                if (sa->sa.sa_family == AF_INET6 && !IN6_IS_ADDR_LINKLOCAL(&sa->in6.sin6_addr) && !text[0])
                        (void) socket_address_ip(sa, text, sizeof(text));
        }
        freeifaddrs(list);
        if (!text[0])
                return -EADDRNOTAVAIL;
        *ret = strdup(text);
        return *ret ? 0 : -ENOMEM;
}

int client_data_address(Agent *a, char **ret) {
        int r;

        *ret = NULL;
        if (a->settings.address)
                return (*ret = strdup(a->settings.address)) ? 1 : -ENOMEM;
        if (!a->settings.data_interface)
                return 0;
        r = interface_address(a->settings.data_interface, ret);
        return r < 0 ? r : 1;
}

int client_own_address(Agent *a, char **ret) {
        int r = client_data_address(a, ret);
        if (r != 0)
                return r < 0 ? r : 0;
        if (!isempty(a->local_address))
                return (*ret = strdup(a->local_address)) ? 0 : -ENOMEM;
        return client_local_address(a, ret);
}

static void on_call_done(CURL *easy, CURLcode result, void *userdata) {
        Call *c = userdata;
        Agent *a = c->agent;
        _cleanup_(json_object_unrefp) json_object *o = NULL;
        const char *error = NULL;
        json_object *e, *params = NULL;
        long status = 0;

        (void) curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
        if (result == CURLE_OK)
                o = c->reply ? json_tokener_parse(c->reply) : NULL;
        if (result != CURLE_OK || !o || status == 502 || status == 503 || status == 504) {
                log_debug("Call to %s failed: %s (HTTP %ld).", a->settings.server,
                          result != CURLE_OK ? curl_easy_strerror(result) : "no JSON answer", status);
                error = PB_NODE_PREFIX "ControllerUnavailable";
        } else if (status != 200) {
                error = json_object_object_get_ex(o, "error", &e) ? json_object_get_string(e)
                                                                   : "org.varlink.service.InvalidParameter";
                (void) json_object_object_get_ex(o, "parameters", &params);
        } else {
                params = o;
                client_note_address(a, easy);
                reachable(a);
        }
        c->done(a, error, params, c->userdata);
        call_free(c);
}

int client_call(Agent *a, const char *method, json_object *params, CallDone done, void *userdata) {
        _cleanup_free_ char *path = NULL;
        Call *c;
        int r;

        c = calloc(1, sizeof(Call));
        if (!c || asprintf(&path, "/call/" PB_NODE_PREFIX "%s", method) < 0) {
                json_object_put(params);
                free(c);
                return -ENOMEM;
        }
        *c = (Call){ .agent = a, .done = done, .userdata = userdata };
        c->body = strdup(json_object_to_json_string_ext(params, JSON_C_TO_STRING_PLAIN));
        json_object_put(params);
        c->easy = client_easy_new(a, path);
        c->headers = curl_slist_append(NULL, "Content-Type: application/json");
        if (!c->body || !c->easy || !c->headers ||
            curl_easy_setopt(c->easy, CURLOPT_HTTPHEADER, c->headers) != CURLE_OK ||
            curl_easy_setopt(c->easy, CURLOPT_POSTFIELDS, c->body) != CURLE_OK ||
            curl_easy_setopt(c->easy, CURLOPT_TIMEOUT, 60L) != CURLE_OK ||
            curl_easy_setopt(c->easy, CURLOPT_WRITEFUNCTION, on_reply_data) != CURLE_OK ||
            curl_easy_setopt(c->easy, CURLOPT_WRITEDATA, c) != CURLE_OK) {
                call_free(c);
                return -ENOMEM;
        }
        r = curl_glue_add(a->curl, c->easy, on_call_done, call_release, c);
        if (r < 0)
                call_free(c);
        return r;
}

/* WatchSession or WatchNode: one long request; each record is RS, JSON, LF. */
typedef struct Watch {
        Agent *agent;
        char *method, *path;
        CURL *easy;
        struct curl_slist *headers;
        char *body, *buf;
        size_t len;
        Backoff backoff;
        sd_event_source *retry, *dispatch;
        bool got_record;
} Watch;

/* The verb hears of a change from the loop, not from inside curl's callback: it may start transfers. */
static int on_dispatch(sd_event_source *s, void *userdata) {
        Watch *w = userdata;
        Agent *a = w->agent;
        (void) s;
        if (a->on_watched && a->watched)
                a->on_watched(a, a->watched);
        return 0;
}

static void watch_record(Watch *w, const char *text) {
        Agent *a = w->agent;
        json_object *o = json_tokener_parse(text), *e;

        if (!o)
                return;
        if (json_object_object_get_ex(o, "error", &e))
                log_warning("%s answered %s.", w->method, json_object_get_string(e));
        else {
                /* The record's one member: the Session or the NodeOrders. */
                json_object_object_foreach(o, key, value) {
                        (void) key;
                        if (!json_object_is_type(value, json_type_object))
                                continue;
                        if (!w->got_record)
                                reachable(a);
                        w->got_record = true;
                        json_object_put(a->watched);
                        a->watched = json_object_get(value);
                        a->watched_generation++;
                        (void) sd_event_source_set_enabled(w->dispatch, SD_EVENT_ONESHOT);
                        break;
                }
        }
        json_object_put(o);
}

static size_t on_watch_data(char *p, size_t size, size_t n, void *userdata) {
        Watch *w = userdata;
        size_t len = size * n;
        char *start, *end;

        if (curl_glue_collect(&w->buf, &w->len, MAX_REPLY, p, len) == 0)
                return 0;
        /* Each complete record, then keep what is left. */
        for (start = w->buf; (end = memchr(start, '\n', w->len - (size_t) (start - w->buf))); start = end + 1) {
                *end = 0;
                watch_record(w, start[0] == 0x1e ? start + 1 : start);
        }
        w->len -= (size_t) (start - w->buf);
        memmove(w->buf, start, w->len);
        return len;
}

static int watch_connect(Watch *w);

static int on_watch_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        Watch *w = userdata;
        (void) s, (void) usec;
        w->retry = sd_event_source_disable_unref(w->retry);
        if (watch_connect(w) < 0)
                log_warning("Failed to reconnect to the %s stream; trying again.", w->method);
        return 0;
}

static void on_watch_done(CURL *easy, CURLcode result, void *userdata) {
        Watch *w = userdata;
        Agent *a = w->agent;

        if (result == CURLE_OK)
                client_note_address(a, easy);
        curl_easy_cleanup(w->easy);
        w->easy = NULL;
        w->len = 0;
        if (a->watched && session_is_final(a->watched))
                return; /* the stream ended with the session */
        if (w->got_record)
                backoff_reset(&w->backoff);
        uint64_t delay = backoff_next(&w->backoff);
        log_debug("The %s stream ended (%s); reconnecting in %.1f s.", w->method, curl_easy_strerror(result),
                  (double) delay / USEC_PER_SEC);
        (void) sd_event_add_time_relative(a->event, &w->retry, CLOCK_MONOTONIC, delay, 0, on_watch_retry, w);
}

static int watch_connect(Watch *w) {
        Agent *a = w->agent;
        w->got_record = false;
        w->easy = client_easy_new(a, w->path);
        if (!w->easy || curl_easy_setopt(w->easy, CURLOPT_HTTPHEADER, w->headers) != CURLE_OK ||
            curl_easy_setopt(w->easy, CURLOPT_POSTFIELDS, w->body) != CURLE_OK ||
            curl_easy_setopt(w->easy, CURLOPT_WRITEFUNCTION, on_watch_data) != CURLE_OK ||
            curl_easy_setopt(w->easy, CURLOPT_WRITEDATA, w) != CURLE_OK ||
            /* a stream that says nothing for this long is a dead connection */
            curl_easy_setopt(w->easy, CURLOPT_LOW_SPEED_LIMIT, 1L) != CURLE_OK ||
            curl_easy_setopt(w->easy, CURLOPT_LOW_SPEED_TIME, 120L) != CURLE_OK)
                return -ENOMEM;
        return curl_glue_add(a->curl, w->easy, on_watch_done, NULL, w); /* client_watch_stop ends it */
}

static void watch_kick(Agent *a) {
        Watch *w = a->watch;
        if (!w || !w->retry)
                return;
        w->retry = sd_event_source_disable_unref(w->retry);
        if (watch_connect(w) < 0)
                log_warning("Failed to reconnect to the %s stream; trying again.", w->method);
}

int client_watch_start(Agent *a, const char *method, json_object *params, WatchChanged changed) {
        _cleanup_(json_object_unrefp) json_object *p = params;
        Watch *w;

        if (a->watch)
                return 0;
        w = calloc(1, sizeof(Watch));
        if (!w)
                return -ENOMEM;
        *w = (Watch){ .agent = a };
        a->watch = w;
        a->on_watched = changed;
        backoff_init(&w->backoff);
        w->method = strdup(method);
        w->body = strdup(json_object_to_json_string_ext(p, JSON_C_TO_STRING_PLAIN));
        w->headers = curl_slist_append(NULL, "Content-Type: application/json");
        w->headers = w->headers ? curl_slist_append(w->headers, "Accept: application/json-seq") : NULL;
        if (!w->method || !w->body || !w->headers ||
            asprintf(&w->path, "/call/" PB_NODE_PREFIX "%s", method) < 0 ||
            sd_event_add_defer(a->event, &w->dispatch, on_dispatch, w) < 0 ||
            sd_event_source_set_enabled(w->dispatch, SD_EVENT_OFF) < 0) {
                client_watch_stop(a);
                return -ENOMEM;
        }
        return watch_connect(w);
}

void client_watch_stop(Agent *a) {
        Watch *w = a->watch;
        if (!w)
                return;
        if (w->easy) {
                curl_glue_remove(a->curl, w->easy);
                curl_easy_cleanup(w->easy);
        }
        sd_event_source_disable_unref(w->retry);
        sd_event_source_disable_unref(w->dispatch);
        curl_slist_free_all(w->headers);
        free(w->method);
        free(w->path);
        free(w->body);
        free(w->buf);
        free(w);
        a->watch = NULL;
}
