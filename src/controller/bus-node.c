/* SPDX-License-Identifier: MIT */
/* org.pureboot.Controller1.Node on /org/pureboot/Controller1/node/<id>. */
#include "bus-node.h"
#include "bus-manager.h"
#include "bus-util.h"
#include "disk.h"
#include "log.h"
#include "node.h"
#include "polkit.h"
#include "power.h"
#include "pureboot-errors.h"
#include "token.h"

#define NODE_PREFIX PB_ROOT_PATH "/node"

static int method_delete(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Node *n = userdata;
        Manager *m = n->manager;
        _cleanup_free_ char *id = strdup(n->id), *path = node_path(n);
        _cleanup_(bus_options_done) BusOptions o = {};
        int r;

        if (!id || !path)
                return -ENOMEM;
        r = bus_read_options(msg, &o, error);
        if (r < 0)
                return r;
        r = polkit_verify(m, msg, PB_POLKIT_ACTION("manage-nodes"),
                          (const char *const[]){ "node", n->id, "hostname", n->hostname, NULL },
                          bus_interactive(msg, &o), error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = node_delete(n, error);
        if (r < 0)
                return r;
        manager_audit(m, msg, "DeleteNode", id, "ok");
        bus_manager_emit_removed(m, "NodeRemoved", id, path);
        return sd_bus_reply_method_return(msg, NULL);
}

static int authorize(Node *n, sd_bus_message *msg, const char *verb, sd_bus_error *error) {
        _cleanup_(bus_options_done) BusOptions o = {};
        int r = bus_read_options(msg, &o, error);
        if (r < 0)
                return r;
        return polkit_verify(
                n->manager, msg, PB_POLKIT_ACTION("manage-nodes"),
                (const char *const[]){ "node", n->id, "hostname", n->hostname, "verb", verb, NULL },
                bus_interactive(msg, &o), error);
}

static int property_get_enum(sd_bus *bus, const char *path, const char *interface, const char *property,
                             sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Node *n = userdata;
        (void) bus, (void) path, (void) interface, (void) error;
        return sd_bus_message_append(reply, "s",
                                     streq(property, "State") ? node_state_to_string(n->state)
                                     : streq(property, "PowerDriver")
                                             ? power_driver_to_string(n->power_driver)
                                             : boot_mode_to_string(n->boot_mode));
}

static int method_set_boot_mode(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Node *n = userdata;
        const char *mode;
        _cleanup_(bus_options_done) BusOptions o = {};
        int r;

        r = sd_bus_message_read(msg, "s", &mode);
        if (r >= 0)
                r = bus_read_options(msg, &o, error);
        if (r < 0)
                return r;
        /* Arguments first: a bad one is refused without asking anyone to authenticate. */
        int boot_mode = boot_mode_from_string(mode);
        if (boot_mode < 0)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "Boot mode \"%.32s\" is not local, partition or nfs.", mode);
        r = polkit_verify(n->manager, msg, PB_POLKIT_ACTION("manage-nodes"),
                          (const char *const[]){ "node", n->id, "hostname", n->hostname, "verb",
                                                 "set-boot-mode", NULL },
                          bus_interactive(msg, &o), error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = node_set_boot_mode(n, (BootMode) boot_mode, o.workflow, error);
        if (r < 0)
                return r;
        manager_audit(n->manager, msg, "SetBootMode", n->id, mode);
        return sd_bus_reply_method_return(msg, NULL);
}

static int method_issue_boot_token(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Node *n = userdata;
        _cleanup_free_ char *token = NULL;
        int r;

        r = authorize(n, msg, "issue-token", error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = token_mint(n->manager, n->id, NULL, "node", NULL, &token);
        if (r < 0)
                return r == -ENOMEM ? r : bus_store_error(error, r, "mint the token");
        manager_audit(n->manager, msg, "IssueBootToken", n->id, "node");
        return sd_bus_reply_method_return(msg, "s", token);
}

static int method_request_scan(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Node *n = userdata;
        int r = authorize(n, msg, "scan", error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = node_request_scan(n, error);
        if (r < 0)
                return r;
        manager_audit(n->manager, msg, "RequestScan", n->id, "ok");
        return sd_bus_reply_method_return(msg, NULL);
}

static int method_set_power(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(json_object_unrefp) json_object *settings = NULL;
        Node *n = userdata;
        const char *driver;
        int r;

        r = sd_bus_message_read(msg, "s", &driver);
        if (r >= 0)
                r = bus_message_read_string_dict(msg, &settings);
        if (r >= 0) /* arguments first: a bad one is refused without asking anyone to authenticate */
                r = power_configure(n, driver, settings, true, error);
        if (r < 0)
                return r;
        r = authorize(n, msg, "set-power", error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = power_configure(n, driver, settings, false, error);
        if (r < 0)
                return r;
        manager_audit(n->manager, msg, "SetPower", n->id, driver);
        return sd_bus_reply_method_return(msg, NULL);
}

static void on_powered(Manager *m, const char *node, const char *outcome, const char *why, void *userdata) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *msg = userdata;
        (void) node;
        if (why)
                (void) sd_bus_reply_method_errorf(msg, PB_ERROR_OPERATION_REFUSED, "%s.", why);
        else
                (void) sd_bus_reply_method_return(msg, "s", outcome);
        manager_audit(m, msg, "Power", node, why ? "failed" : "ok");
}

static int method_power(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_free_ char *verb = NULL;
        Node *n = userdata;
        const char *action;
        int r;

        r = sd_bus_message_read(msg, "s", &action);
        if (r < 0)
                return r;
        if (power_action_from_string(action) < 0) /* before anyone is asked to authenticate */
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "Power action \"%.32s\" is not on, off, cycle, status or netboot.",
                                         action);
        if (asprintf(&verb, "power-%s", action) < 0)
                return -ENOMEM;
        r = authorize(n, msg, verb, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = power_act(n, action, on_powered, sd_bus_message_ref(msg), error);
        if (r < 0)
                sd_bus_message_unref(msg);
        return r < 0 ? r : 1; /* answered once it is done */
}

static int property_get_power_settings(sd_bus *bus, const char *path, const char *interface,
                                       const char *property, sd_bus_message *reply, void *userdata,
                                       sd_bus_error *error) {
        Node *n = userdata;
        int r;
        (void) bus, (void) path, (void) interface, (void) property, (void) error;
        r = sd_bus_message_open_container(reply, 'a', "{ss}");
        if (n->power_settings) {
                json_object_object_foreach (n->power_settings, key, value) {
                        if (r >= 0)
                                r = sd_bus_message_append(reply, "{ss}", key, json_object_get_string(value));
                }
        }
        return r < 0 ? r : sd_bus_message_close_container(reply);
}

/* Whether a password is kept for its power driver; the password itself is never read back. */
static int property_get_credentials_set(sd_bus *bus, const char *path, const char *interface,
                                        const char *property, sd_bus_message *reply, void *userdata,
                                        sd_bus_error *error) {
        Node *n = userdata;
        (void) bus, (void) path, (void) interface, (void) property, (void) error;
        return sd_bus_message_append(reply, "b", n->power_secret != NULL);
}

static int property_get_disks(sd_bus *bus, const char *path, const char *interface, const char *property,
                              sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Node *n = userdata;
        int r;
        (void) bus, (void) path, (void) interface, (void) property, (void) error;
        r = sd_bus_message_open_container(reply, 'a', "o");
        for (size_t i = 0; r >= 0 && i < n->n_disks; i++) {
                _cleanup_free_ char *p = disk_path(n->disks[i]);
                r = p ? sd_bus_message_append(reply, "o", p) : -ENOMEM;
        }
        return r < 0 ? r : sd_bus_message_close_container(reply);
}

/* The machine's inventory as JSON (the node protocol's Hardware), "" until its agent reported one. */
static int property_get_hardware(sd_bus *bus, const char *path, const char *interface, const char *property,
                                 sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Node *n = userdata;
        (void) bus, (void) path, (void) interface, (void) property, (void) error;
        return sd_bus_message_append(
                reply, "s",
                n->hardware ? json_object_to_json_string_ext(n->hardware, JSON_C_TO_STRING_PLAIN) : "");
}

#define P(name, sig, field)                                                                                 \
        SD_BUS_PROPERTY(name, sig, NULL, offsetof(Node, field), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE)

static const sd_bus_vtable node_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Id", "s", NULL, offsetof(Node, id), SD_BUS_VTABLE_PROPERTY_CONST),
        P("Hostname", "s", hostname),
        P("MAC", "s", mac),
        P("Arch", "s", arch),
        P("Serial", "s", serial),
        SD_BUS_PROPERTY("State", "s", property_get_enum, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("BootMode", "s", property_get_enum, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        P("BootWorkflow", "s", boot_workflow),
        P("LastSeen", "t", last_seen),
        P("ScanRequestedAt", "t", scan_requested_at),
        SD_BUS_PROPERTY("Disks", "ao", property_get_disks, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Hardware", "s", property_get_hardware, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        P("HardwareReportedAt", "t", hardware_at),
        SD_BUS_PROPERTY("PowerDriver", "s", property_get_enum, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("PowerSettings", "a{ss}", property_get_power_settings, 0,
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("PowerCredentialsSet", "b", property_get_credentials_set, 0,
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("CreatedAt", "t", NULL, offsetof(Node, created_at), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_METHOD_WITH_ARGS("Delete", SD_BUS_ARGS("a{sv}", options), SD_BUS_NO_RESULT, method_delete,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("SetBootMode", SD_BUS_ARGS("s", mode, "a{sv}", options), SD_BUS_NO_RESULT,
                                method_set_boot_mode, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("RequestScan", SD_BUS_ARGS("a{sv}", options), SD_BUS_NO_RESULT,
                                method_request_scan, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("IssueBootToken", SD_BUS_ARGS("a{sv}", options), SD_BUS_RESULT("s", token),
                                method_issue_boot_token, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("SetPower", SD_BUS_ARGS("s", driver, "a{ss}", settings, "a{sv}", options),
                                SD_BUS_NO_RESULT, method_set_power, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Power", SD_BUS_ARGS("s", action, "a{sv}", options),
                                SD_BUS_RESULT("s", outcome), method_power, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END,
};

static int find(sd_bus *bus, const char *path, const char *interface, void *userdata, void **found,
                sd_bus_error *error) {
        Manager *m = userdata;
        (void) bus, (void) interface, (void) error;
        return bus_find_object(m->nodes, NODE_PREFIX, path, found);
}

static int enumerate(sd_bus *bus, const char *path, void *userdata, char ***nodes, sd_bus_error *error) {
        Manager *m = userdata;
        (void) bus, (void) path, (void) error;
        return bus_enumerate_objects(m->nodes, NODE_PREFIX, nodes);
}

int bus_node_register(Manager *m) {
        int r = sd_bus_add_fallback_vtable(m->bus, NULL, NODE_PREFIX, PB_IFACE("Node"), node_vtable, find,
                                           m);
        if (r >= 0)
                r = sd_bus_add_node_enumerator(m->bus, NULL, NODE_PREFIX, enumerate, m);
        if (r < 0)
                return log_error_errno(r, "Failed to register node objects: %m");
        return 0;
}
