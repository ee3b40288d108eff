/* SPDX-License-Identifier: MIT */
/* libmicrohttpd in an sd-event loop. */
#include <errno.h>
#include <stdlib.h>

#include "macro.h"
#include "mhd-event.h"

struct MhdEvent {
        sd_event *event;
        struct MHD_Daemon *daemon;
        sd_event_source *io, *timer, *kick;
};

static void update_timer(MhdEvent *m) {
        MHD_UNSIGNED_LONG_LONG timeout;
        uint64_t now;

        if (MHD_get_timeout(m->daemon, &timeout) != MHD_YES) {
                (void) sd_event_source_set_enabled(m->timer, SD_EVENT_OFF);
                return;
        }
        if (sd_event_now(m->event, CLOCK_MONOTONIC, &now) < 0)
                return;
        (void) sd_event_source_set_time(m->timer, now + timeout * USEC_PER_MSEC);
        (void) sd_event_source_set_enabled(m->timer, SD_EVENT_ONESHOT);
}

/* MHD sends one TLS record per run; while it says there is more to do at once, go on here rather than
 * through a loop iteration (and a timerfd) per record. */
static unsigned connections(MhdEvent *m) {
        const union MHD_DaemonInfo *info =
                MHD_get_daemon_info(m->daemon, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
        return info ? info->num_connections : 0;
}

static void run(MhdEvent *m) {
        unsigned before = connections(m);
        for (unsigned i = 0; i < 64; i++) {
                MHD_UNSIGNED_LONG_LONG timeout;
                (void) MHD_run(m->daemon);
                if (MHD_get_timeout(m->daemon, &timeout) != MHD_YES || timeout > 0)
                        break;
        }
        /* At its connection limit MHD takes the listening socket out of its epoll set, and puts it back only
         * in the run after a connection closed: give it that run, or nothing wakes it for new connections
         * again (a source that had its limit reached stopped accepting for good). */
        if (connections(m) < before)
                (void) MHD_run(m->daemon);
        update_timer(m);
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        (void) s, (void) fd, (void) revents;
        run(userdata);
        return 0;
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        (void) s, (void) usec;
        run(userdata);
        return 0;
}

static int on_kick(sd_event_source *s, void *userdata) {
        (void) s;
        run(userdata);
        return 0;
}

void mhd_event_kick(MhdEvent *m) {
        (void) sd_event_source_set_enabled(m->kick, SD_EVENT_ONESHOT);
}

int mhd_event_attach(sd_event *event, struct MHD_Daemon *daemon, MhdEvent **ret) {
        const union MHD_DaemonInfo *info = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_EPOLL_FD);
        MhdEvent *m;
        int r;

        if (!info)
                return -EINVAL;
        m = calloc(1, sizeof(MhdEvent));
        if (!m)
                return -ENOMEM;
        m->event = sd_event_ref(event);
        m->daemon = daemon;
        r = sd_event_add_io(event, &m->io, info->epoll_fd, EPOLLIN, on_io, m);
        if (r >= 0)
                r = sd_event_add_time(event, &m->timer, CLOCK_MONOTONIC, UINT64_MAX, 1, on_timer, m);
        if (r >= 0)
                r = sd_event_add_defer(event, &m->kick, on_kick, m);
        if (r >= 0)
                r = sd_event_source_set_enabled(m->kick, SD_EVENT_OFF);
        if (r < 0) {
                mhd_event_detach(m);
                return r;
        }
        run(m);
        *ret = m;
        return 0;
}

MhdEvent *mhd_event_detach(MhdEvent *m) {
        if (!m)
                return NULL;
        sd_event_source_disable_unref(m->io);
        sd_event_source_disable_unref(m->timer);
        sd_event_source_disable_unref(m->kick);
        sd_event_unref(m->event);
        free(m);
        return NULL;
}
