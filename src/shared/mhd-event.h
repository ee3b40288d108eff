/* SPDX-License-Identifier: MIT */
/* A libmicrohttpd daemon (MHD_USE_EPOLL, no threads of its own) driven from an sd-event loop through its
 * epoll fd and timeout, the way systemd-journal-remote runs it. */
#pragma once

#include <microhttpd.h>
#include <systemd/sd-event.h>

typedef struct MhdEvent MhdEvent;

int mhd_event_attach(sd_event *event, struct MHD_Daemon *daemon, MhdEvent **ret);
MhdEvent *mhd_event_detach(MhdEvent *m);
/* Runs MHD soon, from the loop: after a connection was resumed. */
void mhd_event_kick(MhdEvent *m);
