/* SPDX-License-Identifier: MIT */
/* The report queue, kept on disk: <state>/queue/<sequence>.json each holding {"method", "parameters"}. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backoff.h"
#include "log.h"
#include "queue.h"
#include "util.h"

typedef struct Report {
        uint64_t sequence;
        char *method, *path;
        json_object *params;
        struct Report *next;
} Report;

struct ReportQueue {
        Agent *agent;
        char *dir;
        Report *head;
        Report *in_flight;
        uint64_t last_sequence;
        Backoff backoff;
        sd_event_source *retry, *kick;
        ReportAnswered answered;
};

static void report_free(Report *r) {
        if (!r)
                return;
        free(r->method);
        free(r->path);
        json_object_put(r->params);
        free(r);
}

/* A session's progress, or how far a long partition operation (an erase) is: a newer one says it all. */
static bool is_progress(const Report *r) {
        return streq(r->method, "ReportProgress") ||
               (streq(r->method, "ReportOperation") && json_object_object_get_ex(r->params, "done", NULL));
}

static bool same_progress(const Report *a, const Report *b) {
        return streq(a->method, b->method) &&
               streq_ptr(json_get_string(a->params, "operation"), json_get_string(b->params, "operation"));
}

static void unlink_report(ReportQueue *q, Report *r) {
        for (Report **p = &q->head; *p; p = &(*p)->next)
                if (*p == r) {
                        *p = r->next;
                        break;
                }
        if (unlink(r->path) < 0 && errno != ENOENT)
                log_warning_errno(errno, "Failed to remove %s: %m", r->path);
        report_free(r);
}

static void send_next(ReportQueue *q);
static void send_head(ReportQueue *q);

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        ReportQueue *q = userdata;
        (void) s, (void) usec;
        q->retry = sd_event_source_disable_unref(q->retry);
        send_next(q);
        return 0;
}


static void on_answer(Agent *a, const char *error, json_object *reply, void *userdata) {
        ReportQueue *q = userdata;
        Report *r = q->in_flight;
        (void) reply;

        q->in_flight = NULL;
        if (error && strstr(error, "ControllerUnavailable")) {
                uint64_t delay = backoff_next(&q->backoff);
                log_info("The controller is unreachable; %s (sequence %" PRIu64 ") stays queued, next try in "
                         "%.1f s.",
                         r->method, r->sequence, (double) delay / USEC_PER_SEC);
                q->retry = sd_event_source_disable_unref(q->retry);
                if (sd_event_add_time_relative(a->event, &q->retry, CLOCK_MONOTONIC, delay, 0, on_retry, q) < 0)
                        log_error("Failed to schedule the next try; the report stays queued on disk.");
                return;
        }
        backoff_reset(&q->backoff);
        if (error)
                log_warning("The controller refused %s (sequence %" PRIu64 "): %s.", r->method, r->sequence, error);
        else
                log_debug("The controller took %s (sequence %" PRIu64 ").", r->method, r->sequence);
        /* Out of the queue first: the callback may push the next report. */
        json_object *params = json_object_get(r->params);
        _cleanup_free_ char *method = strdup(r->method);
        unlink_report(q, r);
        if (q->answered && method)
                q->answered(a, method, params, error);
        json_object_put(params);
        send_next(q);
        agent_check_finished(a);
}

/* Sending starts from the loop: a report may be pushed from inside a curl callback, where curl takes no
 * new transfers. */
static void send_next(ReportQueue *q) {
        (void) sd_event_source_set_enabled(q->kick, SD_EVENT_ONESHOT);
}

static int on_kick(sd_event_source *s, void *userdata) {
        (void) s;
        send_head(userdata);
        return 0;
}

static void send_head(ReportQueue *q) {
        Report *r = q->head;
        if (!r || q->in_flight || q->retry)
                return;
        q->in_flight = r;
        if (client_call(q->agent, r->method, json_object_get(r->params), on_answer, q) < 0) {
                q->in_flight = NULL;
                log_warning("Failed to send %s; it stays queued.", r->method);
        }
}

void queue_kick(ReportQueue *q) {
        if (!q->retry)
                return;
        q->retry = sd_event_source_disable_unref(q->retry);
        send_next(q);
}

static void append(ReportQueue *q, Report *r) {
        Report **p = &q->head;
        while (*p && (*p)->sequence < r->sequence)
                p = &(*p)->next;
        r->next = *p;
        *p = r;
}

/* Reads what an earlier run left queued. */
static int load(ReportQueue *q) {
        _cleanup_(closedirp) DIR *d = opendir(q->dir);
        struct dirent *de;

        if (!d)
                return -errno;
        while ((de = readdir(d))) {
                _cleanup_free_ char *path = NULL, *text = NULL;
                json_object *o, *method, *params;
                char *end;
                uint64_t seq = strtoull(de->d_name, &end, 10);

                if (seq == 0 || !streq(end, ".json"))
                        continue;
                if (asprintf(&path, "%s/%s", q->dir, de->d_name) < 0)
                        return -ENOMEM;
                if (read_full_file(path, &text, NULL) < 0 || !(o = json_tokener_parse(text)) ||
                    !json_object_object_get_ex(o, "method", &method) ||
                    !json_object_object_get_ex(o, "parameters", &params)) {
                        log_warning("Ignoring %s: not a report.", path);
                        continue;
                }
                Report *r = calloc(1, sizeof(Report));
                if (!r || !(r->method = strdup(json_object_get_string(method)))) {
                        free(r);
                        json_object_put(o);
                        return -ENOMEM;
                }
                r->sequence = seq;
                r->path = TAKE_PTR(path);
                r->params = json_object_get(params);
                json_object_put(o);
                append(q, r);
                q->last_sequence = MAX(q->last_sequence, seq);
        }
        return 0;
}

int queue_new(Agent *a, const char *dir, ReportAnswered answered, ReportQueue **ret) {
        ReportQueue *q = calloc(1, sizeof(ReportQueue));
        int r;

        if (!q || !(q->dir = strdup(dir))) {
                free(q);
                return -ENOMEM;
        }
        q->agent = a;
        q->answered = answered;
        backoff_init(&q->backoff);
        r = sd_event_add_defer(a->event, &q->kick, on_kick, q);
        if (r >= 0)
                r = sd_event_source_set_enabled(q->kick, SD_EVENT_OFF);
        if (r >= 0)
                r = mkdir_p(dir, 0700);
        if (r >= 0)
                r = load(q);
        if (r < 0) {
                queue_free(q);
                return log_error_errno(r, "Failed to open the report queue in %s: %m", dir);
        }
        Report *head = q->head;
        if (head)
                log_info("%zu report(s) from an earlier run are queued; sending them first.", ({
                                 size_t n = 0;
                                 for (Report *i = head; i; i = i->next)
                                         n++;
                                 n;
                         }));
        *ret = q;
        send_next(q);
        return 0;
}

ReportQueue *queue_free(ReportQueue *q) {
        if (!q)
                return NULL;
        while (q->head) {
                Report *r = q->head;
                q->head = r->next;
                report_free(r);
        }
        sd_event_source_disable_unref(q->retry);
        sd_event_source_disable_unref(q->kick);
        free(q->dir);
        free(q);
        return NULL;
}

bool queue_is_empty(ReportQueue *q) {
        return !q->head;
}

bool queue_contains(ReportQueue *q, const char *method, const char *key, const char *value) {
        for (Report *r = q->head; r; r = r->next)
                if (streq(r->method, method) && (!key || streq_ptr(json_get_string(r->params, key), value)))
                        return true;
        return false;
}

int queue_push(ReportQueue *q, const char *method, json_object *params) {
        _cleanup_(json_object_unrefp) json_object *file = json_object_new_object();
        Report *r = calloc(1, sizeof(Report));
        int k;

        if (!r || !file) {
                free(r);
                json_object_put(params);
                return -ENOMEM;
        }
        /* Sequences follow the controller's clock, so they keep rising even when the state directory was
         * lost with a reboot (the controller would take a smaller one for a replay and drop it), and a node
         * whose clock runs ahead sends none the controller must refuse as too far ahead. */
        r->sequence = MAX(q->last_sequence + 1,
                          (uint64_t) ((int64_t) now_realtime_usec() + q->agent->clock_offset));
        r->params = params;
        json_object_object_add(params, "sequence", json_object_new_int64((int64_t) r->sequence));
        if (!(r->method = strdup(method)) || asprintf(&r->path, "%s/%020" PRIu64 ".json", q->dir, r->sequence) < 0) {
                report_free(r);
                return -ENOMEM;
        }
        json_object_object_add(file, "method", json_object_new_string(method));
        json_object_object_add(file, "parameters", json_object_get(params));
        const char *text = json_object_to_json_string_ext(file, JSON_C_TO_STRING_PLAIN);
        k = write_file_atomic(r->path, text, strlen(text), 0600);
        if (k < 0) {
                log_error_errno(k, "Failed to queue %s in %s: %m", method, r->path);
                report_free(r);
                return k;
        }
        q->last_sequence = r->sequence;
        /* Only the newest progress matters: drop older ones not on their way already. */
        if (is_progress(r))
                for (Report *i = q->head, *next; i; i = next) {
                        next = i->next;
                        if (is_progress(i) && same_progress(i, r) && i != q->in_flight)
                                unlink_report(q, i);
                }
        append(q, r);
        send_next(q);
        return 0;
}
