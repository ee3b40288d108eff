/* SPDX-License-Identifier: MIT */
/* The Agent: loop, settings, and how a job ends — only once the controller has taken every report. */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "curl-glue.h"
#include "domain.h"
#include "log.h"
#include "queue.h"
#include "util.h"

void agent_settings_done(AgentSettings *s) {
        char **strings[] = { &s->mode, &s->session, &s->node,      &s->server,  &s->token,
                             &s->ca,   &s->device,  &s->state_dir, &s->address, &s->data_interface };
        for (size_t i = 0; i < ELEMENTSOF(strings); i++) {
                free(*strings[i]);
                *strings[i] = NULL;
        }
        strv_free(s->devices);
        s->devices = NULL;
}

int agent_new(AgentSettings *settings, Agent **ret) {
        Agent *a = calloc(1, sizeof(Agent));
        int r;

        if (!a)
                return -ENOMEM;
        a->settings = *settings;
        *settings = (AgentSettings){};
        r = sd_event_default(&a->event);
        if (r < 0) {
                agent_free(a);
                return log_error_errno(r, "Failed to get an event loop: %m");
        }
        r = curl_glue_new(a->event, &a->curl);
        if (r < 0) {
                agent_free(a);
                return log_error_errno(r, "Failed to set up libcurl on the event loop: %m");
        }
        *ret = a;
        return 0;
}

Agent *agent_free(Agent *a) {
        if (!a)
                return NULL;
        client_watch_stop(a);
        source_free(a->source);
        target_free(a->target);
        partitioner_free(a->partitioner);
        stager_free(a->stager);
        trust_stop(a);
        queue_free(a->queue);
        curl_glue_free(a->curl);
        sd_event_source_disable_unref(a->ack_timer);
        sd_event_unref(a->event);
        json_object_put(a->watched);
        strv_free(a->notes);
        agent_settings_done(&a->settings);
        char **strings[] = { &a->ca_path, &a->cert_path,     &a->key_path,
                             &a->ca_pem,  &a->cert_pem,      &a->key_pem,
                             &a->role,    &a->local_address, &a->disk_fingerprint };
        for (size_t i = 0; i < ELEMENTSOF(strings); i++)
                free(*strings[i]);
        free(a);
        return NULL;
}

void agent_exit(Agent *a, int exit_code) {
        a->exit_code = exit_code;
        (void) sd_event_exit(a->event, exit_code);
}

static int on_ack_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Agent *a = userdata;
        (void) s, (void) usec;
        log_error("The controller has not taken our last reports in time; they stay queued in %s for the next "
                  "run.",
                  a->settings.state_dir);
        agent_exit(a, AGENT_EXIT_FAILURE);
        return 0;
}

/* Called when the queue changed: a finishing agent leaves once it is empty. */
void agent_check_finished(Agent *a) {
        if (a->finishing && queue_is_empty(a->queue))
                (void) sd_event_exit(a->event, a->exit_code);
}

void agent_finish(Agent *a, int exit_code) {
        if (a->finishing)
                return;
        a->finishing = true;
        a->exit_code = exit_code;
        if (!queue_is_empty(a->queue) && a->settings.ack_timeout_usec != USEC_INFINITY)
                (void) sd_event_add_time_relative(a->event, &a->ack_timer, CLOCK_MONOTONIC,
                                                  a->settings.ack_timeout_usec, 0, on_ack_timeout, a);
        if (!queue_is_empty(a->queue))
                log_info("Waiting for the controller to take our last reports.");
        agent_check_finished(a);
}

int session_status(json_object *session) {
        return clone_status_from_string(json_get_string(session, "status"));
}

bool session_is_final(json_object *session) {
        return clone_status_name_is_final(json_get_string(session, "status"));
}

json_object *agent_report_new(Agent *a, const char *role) {
        json_object *p = json_object_new_object();
        json_object_object_add(p, "session", json_object_new_string(a->settings.session));
        if (role)
                json_object_object_add(p, "role", json_object_new_string(role));
        return p;
}

void agent_report_add_notes(json_object *p, char **notes) {
        json_object *a;
        if (strv_length(notes) == 0 || !(a = json_object_new_array()))
                return;
        for (char **n = notes; *n; n++)
                json_object_array_add(a, json_object_new_string(*n));
        json_object_object_add(p, "notes", a);
}

int agent_add_progress_timer(Agent *a, sd_event_source **ret, sd_event_time_handler_t handler,
                             void *userdata) {
        int r = sd_event_add_time_relative(a->event, ret, CLOCK_MONOTONIC, USEC_PER_SEC, 0, handler,
                                           userdata);
        if (r >= 0)
                r = sd_event_source_set_enabled(*ret, SD_EVENT_ON); /* again and again, not once */
        if (r < 0)
                return log_error_errno(r, "Failed to add the progress timer: %m");
        return 0;
}

void agent_report_failed(Agent *a, const char *role, const char *code, const char *format, ...) {
        _cleanup_free_ char *message = NULL;
        json_object *p;
        va_list ap;

        va_start(ap, format);
        if (vasprintf(&message, format, ap) < 0)
                message = NULL;
        va_end(ap);
        log_error("%s", strna(message));
        p = agent_report_new(a, role);
        json_object_object_add(p, "error", json_object_new_string(strna(message)));
        json_object_object_add(p, "code", json_object_new_string(code));
        (void) queue_push(a->queue, "ReportFailed", p);
}

void agent_report_progress(Agent *a, ProgressMeter *m, const char *role, uint64_t bytes, const char *phase,
                           const char *problem) {
        uint64_t now = now_monotonic_usec();
        uint64_t rate = m->at && bytes >= m->bytes
                                ? (bytes - m->bytes) * USEC_PER_SEC / MAX(now - m->at, (uint64_t) 1)
                                : 0;
        json_object *p = agent_report_new(a, role);

        m->bytes = bytes;
        m->at = now;
        json_object_object_add(p, "bytesTransferred", json_object_new_int64((int64_t) bytes));
        json_object_object_add(p, "rateBps", json_object_new_int64((int64_t) rate));
        json_object_object_add(p, "phase", json_object_new_string(phase));
        if (problem)
                json_object_object_add(p, "problem", json_object_new_string(problem));
        (void) queue_push(a->queue, "ReportProgress", p);
}
