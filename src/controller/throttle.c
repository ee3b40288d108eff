/* SPDX-License-Identifier: MIT */
#include "throttle.h"

void throttle_init(Throttle *t, sd_event *e, uint64_t interval, void (*callback)(void *), void *userdata) {
        *t = (Throttle){ .event = e, .interval = interval, .callback = callback, .userdata = userdata };
}

void throttle_done(Throttle *t) {
        t->timer = sd_event_source_disable_unref(t->timer);
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Throttle *t = userdata;
        (void) s;
        t->timer = sd_event_source_disable_unref(t->timer);
        t->last = usec;
        t->callback(t->userdata);
        return 0;
}

int throttle_kick(Throttle *t) {
        uint64_t now;
        int r;

        if (t->timer) /* a call is already due: it will carry this change too */
                return 0;
        r = sd_event_now(t->event, CLOCK_MONOTONIC, &now);
        if (r < 0)
                return r;
        if (t->last == 0 || now >= t->last + t->interval) {
                t->last = now;
                t->callback(t->userdata);
                return 0;
        }
        return sd_event_add_time(t->event, &t->timer, CLOCK_MONOTONIC, t->last + t->interval, 0, on_timer,
                                 t);
}
