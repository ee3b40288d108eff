/* SPDX-License-Identifier: MIT */
#include <assert.h>

#include "hardware.h"
#include "job.h"
#include "log.h"
#include "util.h"

static void on_record(Agent *a, json_object *record) {
        const JobKind *k = a->job;

        if (!streq(k->role, "node") && session_is_final(record)) {
                if (k->ended && k->ended(a, record))
                        return;
                const char *error = json_get_string(record, "error");
                log_info("Session %s is %s%s%s; stopping.", a->settings.session, strna(json_get_string(record, "status")),
                         error ? ": " : "", strempty(error));
                agent_finish(a, session_status(record) == CLONE_COMPLETED ? AGENT_EXIT_SUCCESS
                                                                          : AGENT_EXIT_SESSION_FAILED);
                return;
        }
        k->changed(a, record);
}

static void on_enrolled(Agent *a) {
        const JobKind *k = a->job;
        bool node = streq(k->role, "node");
        int r;

        if (!streq_ptr(a->role, k->role)) {
                if (node)
                        log_error("Our certificate is for the %s of a clone session, not for the node; this job needs "
                                  "a node token (purebootctl node token).",
                                  strna(a->role));
                else
                        log_error("Our certificate is for the %s of the session, not its %s.", strna(a->role),
                                  k->role);
                agent_exit(a, AGENT_EXIT_REFUSED);
                return;
        }
        hardware_report(a); /* every boot, every mode */
        if (k->report_disk)
                resize_report_disk(a, k->role, &a->disk_fingerprint);
        r = k->started ? k->started(a) : 0;
        if (r > 0)
                return;
        if (r >= 0)
                r = client_watch_start(a, node ? "WatchNode" : "WatchSession",
                                       node ? json_object_new_object() : agent_report_new(a, NULL), on_record);
        if (r < 0) {
                log_error_errno(r, "Failed to start the %s job: %m", k->role);
                agent_exit(a, AGENT_EXIT_FAILURE);
        }
}

int job_start(Agent *a, const JobKind *kind) {
        assert(a && kind && kind->role && kind->changed);
        a->job = kind;
        return enrol_start(a, on_enrolled);
}
