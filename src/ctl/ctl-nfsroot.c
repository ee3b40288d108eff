/* SPDX-License-Identifier: MIT */
/* purebootctl nfsroot …: base images and per-Pi overlays of the diskless nodes' NFS root. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include "ctl.h"
#include "format.h"
#include "log.h"
#include "table.h"
#include "util.h"

#define NFSROOT_PATH PB_ROOT_PATH "/nfsroot"

static int get_list(sd_bus *bus, const char *property, char ***ret) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        int r = sd_bus_get_property_strv(bus, PB_BUS_NAME, NFSROOT_PATH, PB_IFACE("NfsRoot"), property,
                                         &error, ret);
        return r < 0 ? ctl_error(&error, r, "read the NFS root") : 0;
}

static int nfsroot_list(sd_bus *bus) {
        _cleanup_(table_freep) Table *t = table_new("KIND", "NAME", NULL);
        _cleanup_strv_free_ char **bases = NULL, **nodes = NULL;
        int r;

        if (!t)
                return log_oom(), EXIT_FAILED;
        if ((r = get_list(bus, "BaseImages", &bases)) != 0 || (r = get_list(bus, "Nodes", &nodes)) != 0)
                return r;
        STRV_FOREACH (b, bases)
                if (table_add_row(t, "ss", "base", *b) < 0)
                        return EXIT_FAILED;
        STRV_FOREACH (n, nodes)
                if (table_add_row(t, "ss", "overlay", *n) < 0)
                        return EXIT_FAILED;
        ctl_pager_open();
        table_print(t, "entries", arg.no_legend, arg.json);
        return EXIT_OK;
}

/* The archive goes over the bus as a file descriptor: the controller reads what we may read. */
static int nfsroot_import(sd_bus *bus, const char *name, const char *file) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_close_ int fd = open(file, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        int r;

        if (fd < 0)
                return log_error_errno(errno, "Cannot open %s: %m", file), EXIT_FAILED;
        const char *summary;

        r = ctl_new_call(bus, NFSROOT_PATH, PB_IFACE("NfsRoot"), "ImportBaseImage", &m);
        if (r >= 0)
                r = arg.keep_setuid ? sd_bus_message_append(m, "sha{sv}", name, fd, 1, "keep_setuid", "b", 1)
                                    : sd_bus_message_append(m, "sha{sv}", name, fd, 0);
        if (r < 0)
                return EXIT_FAILED;
        /* A root filesystem takes a while: no timeout. */
        r = sd_bus_call(bus, m, UINT64_MAX, &error, &reply);
        if (r < 0)
                return ctl_error(&error, r, "import the base image");
        if (sd_bus_message_read(reply, "s", &summary) < 0)
                return EXIT_FAILED;
        printf("%s\n", summary);
        return EXIT_OK;
}

static int nfsroot_create(sd_bus *bus, const char *serial, const char *base, const char *hostname) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r = ctl_new_call(bus, NFSROOT_PATH, PB_IFACE("NfsRoot"), "CreateNodeOverlay", &m);
        if (r >= 0)
                r = sd_bus_message_append(m, "sssa{sv}", serial, strempty(base), strempty(hostname), 0);
        if (r < 0)
                return EXIT_FAILED;
        r = ctl_call(bus, m, NULL, "create the overlay");
        return r < 0 ? -r : EXIT_OK;
}

static int nfsroot_delete(sd_bus *bus, const char *serial) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r = ctl_new_call(bus, NFSROOT_PATH, PB_IFACE("NfsRoot"), "DeleteNodeOverlay", &m);
        if (r >= 0)
                r = sd_bus_message_append(m, "sa{sv}", serial, 0);
        if (r < 0)
                return EXIT_FAILED;
        r = ctl_call(bus, m, NULL, "delete the overlay");
        return r < 0 ? -r : EXIT_OK;
}

static int nfsroot_show(sd_bus *bus, const char *serial) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL, *options_reply = NULL;
        const char *s, *base, *hostname, *machine_id, *options;
        uint64_t created;
        int r;

        r = sd_bus_call_method(bus, PB_BUS_NAME, NFSROOT_PATH, PB_IFACE("NfsRoot"), "GetNodeInfo", &error,
                               &reply, "s", serial);
        if (r < 0)
                return ctl_error(&error, r, "read the overlay");
        r = sd_bus_message_read(reply, "sssst", &s, &base, &hostname, &machine_id, &created);
        if (r < 0)
                return EXIT_FAILED;
        r = sd_bus_call_method(bus, PB_BUS_NAME, NFSROOT_PATH, PB_IFACE("NfsRoot"), "GetOverlayMountOptions",
                               &error, &options_reply, "ss", s, base);
        if (r < 0)
                return ctl_error(&error, r, "read the overlay's mount options");
        if (sd_bus_message_read(options_reply, "s", &options) < 0)
                return EXIT_FAILED;
        if (arg.json != JSON_OFF) {
                json_object *o = json_object_new_object();
                json_object_object_add(o, "serial", json_object_new_string(s));
                json_object_object_add(o, "base", json_object_new_string(base));
                json_object_object_add(o, "hostname", json_object_new_string(hostname));
                json_object_object_add(o, "machine_id", json_object_new_string(machine_id));
                json_object_object_add(o, "created", json_object_new_uint64(created));
                json_object_object_add(o, "mount_options", json_object_new_string(options));
                ctl_print_json(o);
                json_object_put(o);
                return EXIT_OK;
        }
        printf("       Serial: %s\n"
               "   Base image: %s\n"
               "    Host name: %s\n"
               "   Machine ID: %s\n"
               "      Created: %s\n"
               "Mount options: %s\n",
               s, base, hostname, machine_id, format_timestamp((char[FORMAT_TIMESTAMP_MAX]){}, created), options);
        return EXIT_OK;
}

int verb_nfsroot(sd_bus *bus, int argc, char **argv) {
        const char *verb = argc > 0 ? argv[0] : "list";
        if (streq(verb, "list") && argc <= 1)
                return nfsroot_list(bus);
        if (streq(verb, "import") && argc == 3)
                return nfsroot_import(bus, argv[1], argv[2]);
        if (streq(verb, "create") && argc >= 2 && argc <= 4)
                return nfsroot_create(bus, argv[1], argc > 2 ? argv[2] : NULL, argc > 3 ? argv[3] : arg.hostname);
        if (streq(verb, "delete") && argc == 2)
                return nfsroot_delete(bus, argv[1]);
        if (streq(verb, "show") && argc == 2)
                return nfsroot_show(bus, argv[1]);
        log_error("Usage: purebootctl nfsroot list | nfsroot import NAME ARCHIVE | nfsroot create SERIAL [BASE "
                  "[HOSTNAME]] | nfsroot delete SERIAL | nfsroot show SERIAL");
        return EXIT_USAGE;
}
