/* SPDX-License-Identifier: MIT */
/* purebootctl storage …: staging backends, configured with KEY=VALUE settings. */
#include "ctl.h"
#include "format.h"
#include "ini.h"
#include "log.h"
#include "table.h"

/* KEY=VALUE arguments as an a{sv}: lun is a number, enabled a boolean, everything else a string. */
static int append_settings(sd_bus_message *m, int argc, char **argv) {
        int r = sd_bus_message_open_container(m, 'a', "{sv}");
        for (int i = 0; r >= 0 && i < argc; i++) {
                _cleanup_free_ char *key = NULL;
                const char *eq = strchr(argv[i], '=');
                uint64_t u;
                if (!eq || eq == argv[i]) {
                        log_error("\"%s\" is not a KEY=VALUE setting.", argv[i]);
                        return -EXIT_USAGE;
                }
                key = strndup(argv[i], (size_t) (eq - argv[i]));
                if (!key)
                        return -EXIT_FAILED;
                if (streq(key, "lun")) {
                        if (parse_uint64(eq + 1, &u) < 0 || u > UINT32_MAX) {
                                log_error("lun= takes a number, not \"%s\".", eq + 1);
                                return -EXIT_USAGE;
                        }
                        r = sd_bus_message_append(m, "{sv}", key, "u", (uint32_t) u);
                } else if (streq(key, "enabled")) {
                        int b = parse_boolean(eq + 1);
                        if (b < 0) {
                                log_error("enabled= takes yes or no, not \"%s\".", eq + 1);
                                return -EXIT_USAGE;
                        }
                        r = sd_bus_message_append(m, "{sv}", key, "b", b);
                } else
                        r = sd_bus_message_append(m, "{sv}", key, "s", eq + 1);
        }
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        return r < 0 ? -EXIT_FAILED : 0;
}

static int storage_add(sd_bus *bus, const char *name, int argc, char **argv) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        if (!ctl_require(arg.type, "--type nfs|iscsi|local", "storage add"))
                return EXIT_USAGE;
        r = ctl_new_call(bus, PB_ROOT_PATH, PB_IFACE("Manager"), "CreateStorageBackend", &m);
        if (r >= 0)
                r = sd_bus_message_append(m, "ss", name, arg.type);
        if (r < 0)
                return EXIT_FAILED;
        r = append_settings(m, argc, argv);
        if (r < 0)
                return -r;
        if (sd_bus_message_append(m, "a{sv}", 0) < 0)
                return EXIT_FAILED;
        return ctl_call_print_id(bus, m, "add the storage backend");
}

static int storage_list(sd_bus *bus) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(table_freep) Table *t =
                table_new("ID", "NAME", "TYPE", "ENABLED", "TOTAL", "AVAILABLE", NULL);
        const char *id, *name, *type, *path;
        uint64_t total, available;
        int enabled, r;

        if (!t)
                return log_oom(), EXIT_FAILED;
        r = sd_bus_call_method(bus, PB_BUS_NAME, PB_ROOT_PATH, PB_IFACE("Manager"), "ListStorageBackends",
                               &error, &reply, NULL);
        if (r < 0)
                return ctl_error(&error, r, "list storage backends");
        r = sd_bus_message_enter_container(reply, 'a', "(sssbtto)");
        while (r >= 0 && (r = sd_bus_message_read(reply, "(sssbtto)", &id, &name, &type, &enabled, &total,
                                                  &available, &path)) > 0)
                if (table_add_row(t, "sssbzz", id, name, type, enabled, total, available) < 0)
                        return EXIT_FAILED;
        if (r < 0)
                return log_error_errno(r, "Bad reply: %m"), EXIT_FAILED;
        ctl_pager_open();
        table_print(t, "storage backends", arg.no_legend, arg.json);
        return EXIT_OK;
}

/* test: connect for real and say how it went; space: measure again. */
static int storage_probe(sd_bus *bus, const char *path, bool test) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        uint64_t total, available;
        const char *report;
        int r;

        r = ctl_new_call(bus, path, PB_IFACE("StorageBackend"), test ? "Test" : "RefreshSpace", &m);
        if (r >= 0)
                r = sd_bus_message_append(m, "a{sv}", 0);
        if (r < 0)
                return EXIT_FAILED;
        r = ctl_call(bus, m, &reply, test ? "test the storage backend" : "measure the storage backend's space");
        if (r < 0)
                return -r;
        if (test) {
                r = sd_bus_message_read(reply, "s", &report);
                if (r >= 0)
                        printf("%s\n", report);
        } else {
                r = sd_bus_message_read(reply, "tt", &total, &available);
                if (r >= 0)
                        printf("%s available of %s.\n", FORMAT_BYTES(available), FORMAT_BYTES(total));
        }
        return r < 0 ? EXIT_FAILED : EXIT_OK;
}

int verb_storage(sd_bus *bus, int argc, char **argv) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_free_ char *path = NULL;
        const char *verb = argc > 0 ? argv[0] : "list";
        int r;

        if (streq(verb, "list") && argc <= 1)
                return storage_list(bus);
        if (streq(verb, "add") && argc >= 2)
                return storage_add(bus, argv[1], argc - 2, argv + 2);
        if (!(STR_IN_SET(verb, "show", "remove", "test", "space") && argc == 2) &&
            !(streq(verb, "update") && argc >= 3)) {
                log_error("Usage: purebootctl storage add NAME --type nfs|iscsi|local KEY=VALUE… | list | "
                          "show NAME | "
                          "test NAME | space NAME | remove NAME | update NAME KEY=VALUE…");
                return EXIT_USAGE;
        }
        r = ctl_resolve(bus, "GetStorageBackend", argv[1], &path);
        if (r < 0)
                return -r;
        if (streq(verb, "show")) {
                ctl_pager_open();
                return ctl_show_object(bus, path, PB_IFACE("StorageBackend"));
        }
        if (STR_IN_SET(verb, "test", "space"))
                return storage_probe(bus, path, streq(verb, "test"));
        r = ctl_new_call(bus, path, PB_IFACE("StorageBackend"), streq(verb, "update") ? "Update" : "Delete",
                         &m);
        if (r < 0)
                return EXIT_FAILED;
        if (streq(verb, "update")) {
                r = append_settings(m, argc - 2, argv + 2);
                if (r < 0)
                        return -r;
        }
        if (sd_bus_message_append(m, "a{sv}", 0) < 0)
                return EXIT_FAILED;
        r = ctl_call(bus, m, NULL,
                     streq(verb, "update") ? "update the storage backend" : "remove the storage backend");
        return r < 0 ? -r : EXIT_OK;
}
