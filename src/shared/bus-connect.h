/* SPDX-License-Identifier: MIT */
/* The system bus for our daemons: attached to their event loop, and their end if it goes away. */
#pragma once

#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

/* Connects to the system bus ($DBUS_SYSTEM_BUS_ADDRESS honoured) and attaches it to e. If the connection is
 * lost later, the loop ends with -ECONNRESET, so that the daemon exits non-zero and systemd starts it
 * again: a daemon without its bus can only fail every request. */
int bus_connect_system(sd_event *e, sd_bus **ret);
