/* SPDX-License-Identifier: MIT */
#include "progress.h"
#include "log.h"
#include "store.h"
#include "util.h"

int progress_flush(Manager *m) {
        CloneSession *c = NULL;
        bool any = false;
        int r;

        HASHMAP_FOREACH (c, m->sessions, i)
                any = any || c->progress_dirty;
        if (!any)
                return 0;
        /* Losing the last second of progress to a power cut is harmless: skip the fsync. */
        (void) store_set_durable(m->store, false);
        r = store_begin(m->store);
        if (r < 0) {
                (void) store_set_durable(m->store, true);
                return r;
        }
        HASHMAP_FOREACH (c, m->sessions, i) {
                if (!c->progress_dirty)
                        continue;
                r = store_session_progress(m->store, c);
                if (r >= 0 && c->source_sequence > 0)
                        r = store_sequence_set(m->store, c->id, "source", c->source_sequence);
                for (size_t k = 0; r >= 0 && k < c->n_targets; k++) {
                        _cleanup_free_ char *role = NULL;
                        CloneTarget *t = c->targets[k];
                        if (t->sequence > 0)
                                r = clone_target_role(t->index, &role) < 0 ? -ENOMEM
                                                                           : store_sequence_set(m->store, c->id, role,
                                                                                                t->sequence);
                }
                if (r < 0) {
                        store_rollback(m->store);
                        (void) store_set_durable(m->store, true);
                        return log_error_errno(r, "Failed to write progress of session %s: %m", c->id);
                }
        }
        r = store_commit(m->store);
        if (r < 0)
                store_rollback(m->store);
        (void) store_set_durable(m->store, true);
        if (r < 0)
                return r;
        HASHMAP_FOREACH (c, m->sessions, i)
                c->progress_dirty = false;
        return 0;
}

static int on_flush(sd_event_source *s, uint64_t usec, void *userdata) {
        (void) s, (void) usec;
        (void) progress_flush(userdata);
        return 0;
}

/* The timer is armed only while there is progress to write, so an idle controller sleeps. */
static int schedule_flush(Manager *m) {
        uint64_t now;
        int enabled, r;

        r = sd_event_source_get_enabled(m->flush_timer, &enabled);
        if (r < 0 || enabled != SD_EVENT_OFF)
                return r;
        r = sd_event_now(m->event, CLOCK_MONOTONIC, &now);
        if (r < 0)
                return r;
        r = sd_event_source_set_time(m->flush_timer, now + USEC_PER_SEC);
        if (r < 0)
                return r;
        return sd_event_source_set_enabled(m->flush_timer, SD_EVENT_ONESHOT);
}

int progress_changed(CloneSession *c) {
        c->progress_dirty = true;
        return schedule_flush(c->manager);
}

int progress_init(Manager *m) {
        int r = sd_event_add_time(m->event, &m->flush_timer, CLOCK_MONOTONIC, UINT64_MAX, 0, on_flush, m);
        if (r < 0)
                return r;
        return sd_event_source_set_enabled(m->flush_timer, SD_EVENT_OFF);
}

void progress_done(Manager *m) {
        if (m->store && m->flush_timer)
                (void) progress_flush(m);
        m->flush_timer = sd_event_source_disable_unref(m->flush_timer);
}
