/* SPDX-License-Identifier: MIT */
/* purebootctl node …: register, list, show and remove nodes. */
#include "ctl.h"
#include "log.h"
#include "table.h"
#include "util.h"

static int node_add(sd_bus *bus) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        if (!ctl_require(arg.mac, "--mac MAC", "node add") ||
            !ctl_require(arg.hostname, "--hostname NAME", "node add"))
                return EXIT_USAGE;
        r = ctl_new_call(bus, PB_ROOT_PATH, PB_IFACE("Manager"), "RegisterNode", &m);
        if (r >= 0)
                r = sd_bus_message_append(m, "sss", arg.hostname, arg.mac, arg.arch ?: "x86_64");
        if (r >= 0)
                r = arg.serial ? sd_bus_message_append(m, "a{sv}", 1, "serial", "s", arg.serial)
                               : sd_bus_message_append(m, "a{sv}", 0);
        if (r < 0)
                return EXIT_FAILED;
        return ctl_call_print_id(bus, m, "register the node");
}

static int node_list(sd_bus *bus) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(table_freep) Table *t =
                table_new("ID", "HOSTNAME", "MAC", "ARCH", "STATE", "SERIAL", "LAST SEEN", NULL);
        const char *id, *hostname, *mac, *arch, *state, *serial, *path;
        uint64_t last_seen;
        int r;

        if (!t)
                return log_oom(), EXIT_FAILED;
        r = sd_bus_call_method(bus, PB_BUS_NAME, PB_ROOT_PATH, PB_IFACE("Manager"), "ListNodes", &error,
                               &reply, NULL);
        if (r < 0)
                return ctl_error(&error, r, "list nodes");
        r = sd_bus_message_enter_container(reply, 'a', "(ssssssto)");
        while (r >= 0 && (r = sd_bus_message_read(reply, "(ssssssto)", &id, &hostname, &mac, &arch, &state,
                                                  &serial, &last_seen, &path)) > 0)
                if (table_add_row(t, "ssssssT", id, hostname, mac, arch, state, serial, last_seen) < 0)
                        return EXIT_FAILED;
                else if (arg.json != JSON_OFF) { /* what the machine is: too much for a table's line */
                        _cleanup_free_ char *hardware = NULL;
                        if (sd_bus_get_property_string(bus, PB_BUS_NAME, path, PB_IFACE("Node"), "Hardware",
                                                       NULL, &hardware) >= 0)
                                table_add_json(t, "hardware",
                                               isempty(hardware) ? NULL : json_tokener_parse(hardware));
                }
        if (r < 0)
                return log_error_errno(r, "Bad reply: %m"), EXIT_FAILED;
        ctl_pager_open();
        table_print(t, "nodes", arg.no_legend, arg.json);
        return EXIT_OK;
}

/* The first line of path, without its newline: a password kept in a file. */
static int read_secret(const char *path, char **ret) {
        _cleanup_free_ char *text = NULL;
        size_t size = 0;
        int r = read_full_file(path, &text, &size);
        if (r < 0)
                return r;
        text[strcspn(text, "\n")] = 0;
        if (isempty(text))
                return -ENODATA;
        *ret = TAKE_PTR(text);
        return 0;
}

/* node power NODE ACTION: what the node's power driver did. node set-power NODE --driver D KEY=VALUE…
 * (action NULL): the driver and its settings. */
static int node_power(sd_bus *bus, const char *node, const char *action, char **settings, int n) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_free_ char *path = NULL;
        const char *outcome;
        int r;

        if (!action && !ctl_require(arg.driver, "--driver none|manual|wol|ipmi|redfish", "node set-power"))
                return EXIT_USAGE;
        r = ctl_resolve(bus, "GetNode", node, &path);
        if (r < 0)
                return -r;
        r = ctl_new_call(bus, path, PB_IFACE("Node"), action ? "Power" : "SetPower", &m);
        if (r >= 0 && action)
                r = sd_bus_message_append(m, "s", action);
        if (r >= 0 && !action) {
                r = sd_bus_message_append(m, "s", arg.driver);
                if (r >= 0)
                        r = sd_bus_message_open_container(m, 'a', "{ss}");
                for (int i = 0; r >= 0 && i < n; i++) {
                        const char *eq = strchr(settings[i], '=');
                        if (!eq) {
                                log_error("\"%s\" is not a KEY=VALUE setting.", settings[i]);
                                return EXIT_USAGE;
                        }
                        _cleanup_free_ char *key = strndup(settings[i], (size_t) (eq - settings[i])),
                                            *secret = NULL;
                        if (key && streq(key, "password")) {
                                log_error("Give the password as password-file=FILE: on a command line every "
                                          "user "
                                          "of this machine can read it.");
                                return EXIT_USAGE;
                        }
                        if (key && streq(key, "password-file")) { /* read here, sent as password */
                                r = read_secret(eq + 1, &secret);
                                if (r < 0)
                                        return log_error_errno(r, "Cannot read the password from %s: %m",
                                                               eq + 1),
                                               EXIT_FAILED;
                        }
                        r = !key     ? -ENOMEM
                            : secret ? sd_bus_message_append(m, "{ss}", "password", secret)
                                     : sd_bus_message_append(m, "{ss}", key, eq + 1);
                        if (secret)
                                explicit_bzero(secret, strlen(secret));
                }
                if (r >= 0)
                        r = sd_bus_message_close_container(m);
        }
        if (r >= 0)
                r = sd_bus_message_append(m, "a{sv}", 0);
        if (r < 0)
                return EXIT_FAILED;
        r = ctl_call(bus, m, &reply, action ? "switch the node's power" : "set the power driver");
        if (r < 0)
                return -r;
        if (action) {
                if (sd_bus_message_read(reply, "s", &outcome) < 0)
                        return EXIT_FAILED;
                printf("%s\n", outcome);
        }
        return EXIT_OK;
}

int verb_node(sd_bus *bus, int argc, char **argv) {
        _cleanup_free_ char *path = NULL;
        const char *verb = argc > 0 ? argv[0] : "list";
        int r;

        if (streq(verb, "add") && argc == 1)
                return node_add(bus);
        if (streq(verb, "list") && argc <= 1)
                return node_list(bus);
        if (streq(verb, "scan") && argc == 2) {
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
                r = ctl_resolve(bus, "GetNode", argv[1], &path);
                if (r < 0)
                        return -r;
                r = ctl_new_call(bus, path, PB_IFACE("Node"), "RequestScan", &m);
                if (r >= 0)
                        r = sd_bus_message_append(m, "a{sv}", 0);
                if (r < 0)
                        return EXIT_FAILED;
                r = ctl_call(bus, m, NULL, "request a scan");
                return r < 0 ? -r : EXIT_OK;
        }
        if ((streq(verb, "set-mode") && argc == 3) || (streq(verb, "token") && argc == 2)) {
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
                const char *token;
                r = ctl_resolve(bus, "GetNode", argv[1], &path);
                if (r < 0)
                        return -r;
                bool set = streq(verb, "set-mode");
                r = ctl_new_call(bus, path, PB_IFACE("Node"), set ? "SetBootMode" : "IssueBootToken", &m);
                if (r >= 0 && set)
                        r = sd_bus_message_append(m, "s", argv[2]);
                if (r >= 0)
                        r = sd_bus_message_append(m, "a{sv}", 0);
                if (r < 0)
                        return EXIT_FAILED;
                r = ctl_call(bus, m, &reply, set ? "set the boot mode" : "issue a boot token");
                if (r < 0)
                        return -r;
                if (!set) {
                        if (sd_bus_message_read(reply, "s", &token) < 0)
                                return EXIT_FAILED;
                        printf("%s\n", token);
                }
                return EXIT_OK;
        }
        if (STR_IN_SET(verb, "show", "remove") && argc == 2) {
                r = ctl_resolve(bus, "GetNode", argv[1], &path);
                if (r < 0)
                        return -r;
                if (streq(verb, "show")) {
                        ctl_pager_open();
                        return ctl_show_object(bus, path, PB_IFACE("Node"));
                }
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
                r = ctl_new_call(bus, path, PB_IFACE("Node"), "Delete", &m);
                if (r >= 0)
                        r = sd_bus_message_append(m, "a{sv}", 0);
                if (r < 0)
                        return EXIT_FAILED;
                r = ctl_call(bus, m, NULL, "remove the node");
                return r < 0 ? -r : EXIT_OK;
        }
        if ((streq(verb, "power") && argc == 3) || (streq(verb, "set-power") && argc >= 2))
                return node_power(bus, argv[1], streq(verb, "power") ? argv[2] : NULL, argv + 2, argc - 2);
        log_error("Usage: purebootctl node add --mac MAC --hostname NAME [--arch ARCH] [--serial SERIAL] | "
                  "node list | node show NODE | node remove NODE | node set-mode NODE local|partition | "
                  "node token NODE | node scan NODE | node power NODE on|off|cycle|status|netboot | "
                  "node set-power NODE --driver none|manual|wol|ipmi|redfish [KEY=VALUE...]");
        return EXIT_USAGE;
}
