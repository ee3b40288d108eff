/* SPDX-License-Identifier: MIT */
/* libcurl's multi interface in our sd-event loop. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "curl-glue.h"
#include "log.h"
#include "macro.h"

typedef struct Transfer Transfer;

struct CurlGlue {
        sd_event *event;
        CURLM *multi;
        sd_event_source *timer;
        Transfer *transfers; /* the running ones */
};

struct Transfer {
        CURL *easy;
        CurlDone done;
        CurlRelease release;
        void *userdata;
        Transfer *prev, *next;
};

static void transfer_unlink(CurlGlue *g, Transfer *t) {
        if (t->prev)
                t->prev->next = t->next;
        else
                g->transfers = t->next;
        if (t->next)
                t->next->prev = t->prev;
        free(t);
}

static void check_done(CurlGlue *g) {
        CURLMsg *msg;
        int left;

        while ((msg = curl_multi_info_read(g->multi, &left))) {
                Transfer *t = NULL;
                CURL *easy = msg->easy_handle;
                CURLcode result = msg->data.result;

                if (msg->msg != CURLMSG_DONE)
                        continue;
                (void) curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **) &t);
                curl_multi_remove_handle(g->multi, easy);
                (void) curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
                if (t) {
                        CurlDone done = t->done;
                        void *userdata = t->userdata;
                        transfer_unlink(g, t);
                        done(easy, result, userdata);
                }
        }
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        CurlGlue *g = userdata;
        int action = 0, running;
        (void) s;

        if (revents & (EPOLLIN | EPOLLPRI))
                action |= CURL_CSELECT_IN;
        if (revents & EPOLLOUT)
                action |= CURL_CSELECT_OUT;
        if (revents & (EPOLLERR | EPOLLHUP))
                action |= CURL_CSELECT_ERR;
        (void) curl_multi_socket_action(g->multi, fd, action, &running);
        check_done(g);
        return 0;
}

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
        CurlGlue *g = userp;
        sd_event_source *s = socketp;
        uint32_t events = 0;
        (void) easy;

        if (what == CURL_POLL_REMOVE) {
                sd_event_source_disable_unref(s);
                return curl_multi_assign(g->multi, fd, NULL) == CURLM_OK ? 0 : -1;
        }
        if (what & CURL_POLL_IN)
                events |= EPOLLIN;
        if (what & CURL_POLL_OUT)
                events |= EPOLLOUT;
        if (s)
                return sd_event_source_set_io_events(s, events) < 0 ? -1 : 0;
        if (sd_event_add_io(g->event, &s, fd, events, on_io, g) < 0)
                return -1;
        return curl_multi_assign(g->multi, fd, s) == CURLM_OK ? 0 : -1;
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        CurlGlue *g = userdata;
        int running;
        (void) s, (void) usec;
        (void) curl_multi_socket_action(g->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        check_done(g);
        return 0;
}

static int on_timer_change(CURLM *multi, long timeout_ms, void *userp) {
        CurlGlue *g = userp;
        uint64_t now;
        (void) multi;

        if (timeout_ms < 0)
                return sd_event_source_set_enabled(g->timer, SD_EVENT_OFF) < 0 ? -1 : 0;
        if (sd_event_now(g->event, CLOCK_MONOTONIC, &now) < 0 ||
            sd_event_source_set_time(g->timer, now + (uint64_t) timeout_ms * USEC_PER_MSEC) < 0 ||
            sd_event_source_set_enabled(g->timer, SD_EVENT_ONESHOT) < 0)
                return -1;
        return 0;
}

int curl_glue_new(sd_event *event, CurlGlue **ret) {
        CurlGlue *g = calloc(1, sizeof(CurlGlue));
        int r;

        if (!g)
                return -ENOMEM;
        g->event = sd_event_ref(event);
        g->multi = curl_multi_init();
        if (!g->multi) {
                curl_glue_free(g);
                return -ENOMEM;
        }
        r = sd_event_add_time(event, &g->timer, CLOCK_MONOTONIC, UINT64_MAX, 1, on_timer, g);
        if (r >= 0)
                r = sd_event_source_set_enabled(g->timer, SD_EVENT_OFF);
        if (r < 0 || curl_multi_setopt(g->multi, CURLMOPT_SOCKETFUNCTION, on_socket) != CURLM_OK ||
            curl_multi_setopt(g->multi, CURLMOPT_SOCKETDATA, g) != CURLM_OK ||
            curl_multi_setopt(g->multi, CURLMOPT_TIMERFUNCTION, on_timer_change) != CURLM_OK ||
            curl_multi_setopt(g->multi, CURLMOPT_TIMERDATA, g) != CURLM_OK) {
                curl_glue_free(g);
                return r < 0 ? r : -EIO;
        }
        *ret = g;
        return 0;
}

CurlGlue *curl_glue_free(CurlGlue *g) {
        if (!g)
                return NULL;
        while (g->transfers) {
                Transfer *t = g->transfers;
                CurlRelease release = t->release;
                void *userdata = t->userdata;
                curl_multi_remove_handle(g->multi, t->easy);
                (void) curl_easy_setopt(t->easy, CURLOPT_PRIVATE, NULL);
                transfer_unlink(g, t);
                if (release)
                        release(userdata);
        }
        if (g->multi)
                curl_multi_cleanup(g->multi);
        sd_event_source_disable_unref(g->timer);
        sd_event_unref(g->event);
        free(g);
        return NULL;
}

int curl_glue_add(CurlGlue *g, CURL *easy, CurlDone done, CurlRelease release, void *userdata) {
        Transfer *t = calloc(1, sizeof(Transfer));
        if (!t)
                return -ENOMEM;
        *t = (Transfer){ .easy = easy, .done = done, .release = release, .userdata = userdata };
        if (curl_easy_setopt(easy, CURLOPT_PRIVATE, t) != CURLE_OK ||
            curl_multi_add_handle(g->multi, easy) != CURLM_OK) {
                (void) curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
                free(t);
                return -EIO;
        }
        t->next = g->transfers;
        if (t->next)
                t->next->prev = t;
        g->transfers = t;
        return 0;
}

void curl_glue_remove(CurlGlue *g, CURL *easy) {
        Transfer *t = NULL;
        if (!easy)
                return;
        (void) curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **) &t);
        if (t)
                transfer_unlink(g, t);
        (void) curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
        curl_multi_remove_handle(g->multi, easy);
}

size_t curl_glue_collect(char **buf, size_t *len, size_t max, const char *p, size_t n) {
        char *b;
        if (*len + n > max)
                return 0;
        b = realloc(*buf, *len + n + 1);
        if (!b)
                return 0;
        memcpy(b + *len, p, n);
        *len += n;
        b[*len] = 0;
        *buf = b;
        return n;
}
