/* SPDX-License-Identifier: MIT */
/* The system bus for our daemons, and their end when it goes away. */
#include <assert.h>

#include "bus-connect.h"
#include "log.h"
#include "macro.h"

static int on_disconnected(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        sd_event *e = userdata;
        (void) m, (void) ret_error;
        log_error("Lost the connection to the system bus; exiting, to be started again.");
        return sd_event_exit(e, -ECONNRESET);
}

int bus_connect_system(sd_event *e, sd_bus **ret) {
        sd_bus *bus = NULL;
        int r;

        assert(e);
        assert(ret);
        r = sd_bus_open_system(&bus);
        if (r < 0)
                return log_error_errno(r, "Failed to connect to the system bus: %m");
        r = sd_bus_attach_event(bus, e, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0) {
                sd_bus_unref(bus);
                return log_error_errno(r, "Failed to attach the system bus to the event loop: %m");
        }
        /* sd-bus makes this signal itself when the connection drops; nothing is asked of the bus. */
        r = sd_bus_match_signal(bus, NULL, NULL, "/org/freedesktop/DBus/Local", "org.freedesktop.DBus.Local",
                                "Disconnected", on_disconnected, e);
        if (r < 0) {
                sd_bus_flush_close_unref(bus);
                return log_error_errno(r, "Failed to watch the system bus connection: %m");
        }
        *ret = bus;
        return 0;
}
