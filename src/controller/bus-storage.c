/* SPDX-License-Identifier: MIT */
/* org.pureboot.Controller1.StorageBackend on /org/pureboot/Controller1/storage/<id>. */
#include "bus-storage.h"
#include "bus-util.h"
#include "log.h"
#include "polkit.h"
#include "pureboot-errors.h"
#include "storage.h"

#define STORAGE_PREFIX PB_ROOT_PATH "/storage"

/* The public settings as a{sv}; the CHAP secret is never among them, only whether one is set. */
static int property_get_type(sd_bus *bus, const char *path, const char *interface, const char *property,
                             sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        StorageBackend *b = userdata;
        (void) bus, (void) path, (void) interface, (void) property, (void) error;
        return sd_bus_message_append(reply, "s", backend_type_to_string(b->type));
}

static int property_get_config(sd_bus *bus, const char *path, const char *interface, const char *property,
                               sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        StorageBackend *b = userdata;
        int r;
        (void) bus, (void) path, (void) interface, (void) property, (void) error;

        r = sd_bus_message_open_container(reply, 'a', "{sv}");
        json_object_object_foreach (b->config, key, value) {
                if (r < 0)
                        break;
                if (json_object_is_type(value, json_type_int))
                        r = sd_bus_message_append(reply, "{sv}", key, "u",
                                                  (uint32_t) json_object_get_int64(value));
                else
                        r = sd_bus_message_append(reply, "{sv}", key, "s", json_object_get_string(value));
        }
        if (r >= 0 && b->type == BACKEND_ISCSI)
                r = sd_bus_message_append(reply, "{sv}", "chap_secret_set", "b", b->secret != NULL);
        if (r < 0)
                return r;
        return sd_bus_message_close_container(reply);
}

static int authorize(StorageBackend *b, sd_bus_message *msg, sd_bus_error *error) {
        _cleanup_(bus_options_done) BusOptions o = {};
        int r = bus_read_options(msg, &o, error);
        if (r < 0)
                return r;
        return polkit_verify(b->manager, msg, PB_POLKIT_ACTION("manage-storage"),
                             (const char *const[]){ "backend", b->id, "name", b->name, NULL },
                             bus_interactive(msg, &o), error);
}

static int method_update(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        StorageBackend *b = userdata;
        int r;

        /* Arguments first, then authorisation, then the changes read again and applied. */
        r = storage_update(b, msg, true, error);
        if (r >= 0)
                r = authorize(b, msg, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = sd_bus_message_rewind(msg, true);
        if (r < 0)
                return r;
        r = storage_update(b, msg, false, error);
        if (r < 0)
                return r;
        manager_audit(b->manager, msg, "UpdateStorageBackend", b->id, "ok");
        return sd_bus_reply_method_return(msg, NULL);
}

static int method_delete(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        StorageBackend *b = userdata;
        Manager *m = b->manager;
        _cleanup_free_ char *id = strdup(b->id);
        int r;

        if (!id)
                return -ENOMEM;
        r = authorize(b, msg, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = storage_delete(b, error);
        if (r < 0)
                return r;
        manager_audit(m, msg, "DeleteStorageBackend", id, "ok");
        return sd_bus_reply_method_return(msg, NULL);
}

/* The answer of Test and RefreshSpace goes to the caller when the worker is done. */
static void on_probed(Manager *m, StorageBackend *b, const char *report, const char *why, void *userdata) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *msg = userdata;
        const char *action = streq(sd_bus_message_get_member(msg), "Test") ? "TestStorageBackend"
                                                                          : "RefreshStorageSpace";
        manager_audit(m, msg, action, b ? b->id : "?", why ?: "ok");
        if (why)
                (void) sd_bus_reply_method_errorf(msg, PB_ERROR_STORAGE_UNAVAILABLE, "Storage backend %s: %s.",
                                                  b ? b->name : "?", why);
        else if (streq(action, "TestStorageBackend"))
                (void) sd_bus_reply_method_return(msg, "s", report);
        else
                (void) sd_bus_reply_method_return(msg, "tt", b->total_bytes, b->available_bytes);
}

static int method_probe(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        StorageBackend *b = userdata;
        bool test = streq(sd_bus_message_get_member(msg), "Test");
        int r;

        r = authorize(b, msg, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = (test ? storage_test : storage_refresh_space)(b, on_probed, sd_bus_message_ref(msg));
        if (r < 0)
                sd_bus_message_unref(msg);
        return r < 0 ? r : 1; /* answered when the worker is done */
}

#define P(name, sig, field)                                                                                 \
        SD_BUS_PROPERTY(name, sig, NULL, offsetof(StorageBackend, field),                                   \
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE)

static const sd_bus_vtable storage_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Id", "s", NULL, offsetof(StorageBackend, id), SD_BUS_VTABLE_PROPERTY_CONST),
        P("Name", "s", name),
        SD_BUS_PROPERTY("Type", "s", property_get_type, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Config", "a{sv}", property_get_config, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        P("TotalBytes", "t", total_bytes),
        P("AvailableBytes", "t", available_bytes),
        P("Enabled", "b", enabled),
        SD_BUS_PROPERTY("CreatedAt", "t", NULL, offsetof(StorageBackend, created_at),
                        SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_METHOD_WITH_ARGS("Update", SD_BUS_ARGS("a{sv}", changes, "a{sv}", options), SD_BUS_NO_RESULT,
                                method_update, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Delete", SD_BUS_ARGS("a{sv}", options), SD_BUS_NO_RESULT, method_delete,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Test", SD_BUS_ARGS("a{sv}", options), SD_BUS_RESULT("s", report),
                                method_probe, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("RefreshSpace", SD_BUS_ARGS("a{sv}", options),
                                SD_BUS_RESULT("t", total_bytes, "t", available_bytes), method_probe,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END,
};

static int find(sd_bus *bus, const char *path, const char *interface, void *userdata, void **found,
                sd_bus_error *error) {
        Manager *m = userdata;
        (void) bus, (void) interface, (void) error;
        return bus_find_object(m->storages, STORAGE_PREFIX, path, found);
}

static int enumerate(sd_bus *bus, const char *path, void *userdata, char ***nodes, sd_bus_error *error) {
        Manager *m = userdata;
        (void) bus, (void) path, (void) error;
        return bus_enumerate_objects(m->storages, STORAGE_PREFIX, nodes);
}

int bus_storage_register(Manager *m) {
        int r = sd_bus_add_fallback_vtable(m->bus, NULL, STORAGE_PREFIX, PB_IFACE("StorageBackend"),
                                           storage_vtable, find, m);
        if (r >= 0)
                r = sd_bus_add_node_enumerator(m->bus, NULL, STORAGE_PREFIX, enumerate, m);
        if (r < 0)
                return log_error_errno(r, "Failed to register storage backend objects: %m");
        return 0;
}
