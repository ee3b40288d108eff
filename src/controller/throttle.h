/* SPDX-License-Identifier: MIT */
/* Rate-limits a notification: at most one call of the callback per interval, the last change never lost. */
#pragma once

#include <systemd/sd-event.h>

#include "macro.h"

typedef struct Throttle {
        sd_event *event;
        sd_event_source *timer;
        uint64_t interval, last;
        void (*callback)(void *userdata);
        void *userdata;
} Throttle;

void throttle_init(Throttle *t, sd_event *e, uint64_t interval, void (*callback)(void *), void *userdata);
void throttle_done(Throttle *t);
/* Something changed: calls back now if the interval since the last call has passed, else once when it has.
 */
int throttle_kick(Throttle *t);
