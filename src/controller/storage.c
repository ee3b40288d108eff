/* SPDX-License-Identifier: MIT */
/* Storage backends: the records, the settings each kind takes (its driver says which and checks them), the
 * secret that never leaves, and Test and RefreshSpace in workers. */
#include <assert.h>
#include <ctype.h>
#include <stdio.h>
#include <sys/time.h>

#include "address.h"
#include "bus-manager.h"
#include "bus-util.h"
#include "format.h"
#include "image.h"
#include "ini.h"
#include "log.h"
#include "pureboot-errors.h"
#include "storage-driver.h"
#include "storage.h"
#include "util.h"
#include "worker.h"

StorageBackend *storage_free(StorageBackend *b) {
        if (!b)
                return NULL;
        free(b->id);
        free(b->name);
        json_object_put(b->config);
        if (b->secret)
                explicit_bzero(b->secret, strlen(b->secret));
        free(b->secret);
        free(b);
        return NULL;
}

char *storage_path(const StorageBackend *b) {
        char *p;
        return asprintf(&p, PB_ROOT_PATH "/storage/%s", b->id) < 0 ? NULL : p;
}

int storage_attach(Manager *m, StorageBackend *b) {
        b->manager = m;
        return hashmap_put(m->storages, b->id, b);
}

static bool storage_name_is_valid(const char *s) {
        if (isempty(s) || strlen(s) > 64)
                return false;
        for (const char *p = s; *p; p++)
                if (!isalnum((unsigned char) *p) && !strchr("._-", *p))
                        return false;
        return true;
}

/* Reads an a{sv} of fields into config (and *secret), checking each against the table. Fields that are not
 * of this backend type are refused by name. "name" and "enabled" are accepted only when allow_common. */
static int read_fields(sd_bus_message *msg, BackendType type, bool allow_common, json_object *config,
                       char **secret, const char **ret_name, int *ret_enabled, sd_bus_error *error) {
        const StorageDriver *d = storage_driver(type);
        int r;

        r = sd_bus_message_enter_container(msg, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(msg, 'e', "sv")) > 0) {
                const char *key, *contents;
                const StorageField *f = NULL;

                r = sd_bus_message_read(msg, "s", &key);
                if (r >= 0)
                        r = sd_bus_message_peek_type(msg, NULL, &contents);
                if (r < 0)
                        return r;

                if (allow_common && (streq(key, "name") || streq(key, "enabled"))) {
                        bool is_name = streq(key, "name");
                        if (!streq(contents, is_name ? "s" : "b"))
                                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                         "%s must be of type %s.", key, is_name ? "s" : "b");
                        r = is_name ? sd_bus_message_read(msg, "v", "s", ret_name)
                                    : sd_bus_message_read(msg, "v", "b", ret_enabled);
                        if (r < 0)
                                return r;
                        goto next;
                }
                for (size_t i = 0; i < d->n_fields; i++)
                        if (streq(d->fields[i].name, key))
                                f = &d->fields[i];
                if (!f)
                        return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                                 "\"%.64s\" is not a setting of %s backends. %s", key,
                                                 backend_type_to_string(type), d->fields_help);
                if (contents[0] != f->type || contents[1])
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "%s must be of type %c, not %s.", key, f->type, contents);
                if (f->type == 'u') {
                        uint32_t u;
                        r = sd_bus_message_read(msg, "v", "u", &u);
                        if (r >= 0)
                                r = json_object_object_add(config, key, json_object_new_int64(u)) < 0
                                            ? -ENOMEM
                                            : 0;
                } else {
                        const char *s;
                        r = sd_bus_message_read(msg, "v", "s", &s);
                        if (r >= 0 && f->secret)
                                r = free_and_strdup(secret, isempty(s) ? NULL : s);
                        else if (r >= 0 && isempty(s))
                                json_object_object_del(config, key); /* an empty value clears the setting */
                        else if (r >= 0)
                                r = json_object_object_add(config, key, json_object_new_string(s)) < 0
                                            ? -ENOMEM
                                            : 0;
                }
                if (r < 0)
                        return r;
        next:
                r = sd_bus_message_exit_container(msg);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(msg);
}

static StorageBackend *find_by_name(Manager *m, const char *name) {
        StorageBackend *b;
        HASHMAP_FOREACH (b, m->storages, i)
                if (streq(b->name, name))
                        return b;
        return NULL;
}

int storage_create(Manager *m, const char *name, const char *type, sd_bus_message *config,
                   StorageBackend **ret, sd_bus_error *error) {
        _cleanup_free_ char *secret = NULL;
        json_object *c;
        char id[PB_ID_LEN + 1];
        StorageBackend *b;
        int r;

        if (!storage_name_is_valid(name))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "A backend name is 1 to 64 letters, digits, '.', '_' or '-'.");
        int kind = backend_type_from_string(type);
        if (kind < 0)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "Unknown backend type \"%.32s\"; use nfs, iscsi or local.", type);
        if (find_by_name(m, name))
                return sd_bus_error_setf(error, PB_ERROR_ALREADY_EXISTS,
                                         "A storage backend named %s exists already; pick another name.",
                                         name);
        c = json_object_new_object();
        if (!c)
                return -ENOMEM;
        r = read_fields(config, (BackendType) kind, false, c, &secret, NULL, NULL, error);
        if (r >= 0)
                r = storage_driver(kind)->validate(c, secret, error);
        if (r >= 0 && !ret) {
                json_object_put(c);
                return 0;
        }
        if (r >= 0)
                r = id_new(id);
        if (r < 0) {
                json_object_put(c);
                return r;
        }

        b = calloc(1, sizeof(StorageBackend));
        if (!b) {
                json_object_put(c);
                return -ENOMEM;
        }
        b->config = c;
        b->id = strdup(id);
        b->name = strdup(name);
        b->type = (BackendType) kind;
        b->secret = TAKE_PTR(secret);
        b->enabled = true;
        b->created_at = now_realtime_usec();
        if (!b->id || !b->name) {
                storage_free(b);
                return -ENOMEM;
        }
        r = store_storage_insert(m->store, b);
        if (r < 0) {
                storage_free(b);
                return bus_store_error(error, r, "add the storage backend");
        }
        r = storage_attach(m, b);
        if (r < 0) {
                (void) store_storage_delete(m->store, b->id);
                storage_free(b);
                return r;
        }
        *ret = b;
        return 0;
}

int storage_update(StorageBackend *b, sd_bus_message *changes, bool check_only, sd_bus_error *error) {
        Manager *m = b->manager;
        _cleanup_free_ char *secret = NULL;
        json_object *c = NULL;
        const char *name = NULL;
        int enabled = -1, r;

        r = json_object_deep_copy(b->config, &c, NULL);
        if (r < 0)
                return -ENOMEM;
        if (b->secret && !(secret = strdup(b->secret))) {
                json_object_put(c);
                return -ENOMEM;
        }
        r = read_fields(changes, b->type, true, c, &secret, &name, &enabled, error);
        if (r >= 0 && name && !storage_name_is_valid(name))
                r = sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                      "A backend name is 1 to 64 letters, digits, '.', '_' or '-'.");
        if (r >= 0 && name && find_by_name(m, name) && find_by_name(m, name) != b)
                r = sd_bus_error_setf(error, PB_ERROR_ALREADY_EXISTS,
                                      "A storage backend named %s exists already; pick another name.", name);
        if (r >= 0)
                r = storage_driver(b->type)->validate(c, secret, error);
        if (r < 0 || check_only) {
                json_object_put(c);
                return r;
        }

        StorageBackend updated = *b;
        _cleanup_free_ char *new_name = NULL;
        if (name && !(new_name = strdup(name))) {
                json_object_put(c);
                return -ENOMEM;
        }
        updated.config = c;
        updated.secret = secret;
        updated.name = new_name ?: b->name;
        if (enabled >= 0)
                updated.enabled = enabled;
        r = store_storage_update(m->store, &updated);
        if (r < 0) {
                json_object_put(c);
                return bus_store_error(error, r, "update the storage backend");
        }
        json_object_put(b->config);
        b->config = c;
        if (b->secret)
                explicit_bzero(b->secret, strlen(b->secret));
        free(b->secret);
        b->secret = TAKE_PTR(secret);
        if (new_name) {
                free(b->name);
                b->name = TAKE_PTR(new_name);
        }
        b->enabled = updated.enabled;

        _cleanup_free_ char *path = storage_path(b);
        if (path)
                (void) sd_bus_emit_properties_changed(m->bus, path, PB_IFACE("StorageBackend"), "Name",
                                                      "Config", "Enabled", NULL);
        return 0;
}

int storage_delete(StorageBackend *b, sd_bus_error *error) {
        Manager *m = b->manager;
        _cleanup_free_ char *sessions = NULL, *path = storage_path(b), *id = strdup(b->id);
        int r;

        if (!path || !id)
                return -ENOMEM;
        r = store_storage_sessions(m->store, b->id, &sessions);
        if (r < 0)
                return r;
        if (sessions)
                return sd_bus_error_setf(
                        error, PB_ERROR_IN_USE,
                        "Storage backend %s is used by clone sessions %s; delete those first.", b->name,
                        sessions);
        Image *i;
        HASHMAP_FOREACH (i, m->images, k)
                if (streq(i->backend, b->id))
                        return sd_bus_error_setf(
                                error, PB_ERROR_IN_USE,
                                "Storage backend %s holds image %s; delete or move the images "
                                "on it first.",
                                b->name, i->name);
        r = store_storage_delete(m->store, b->id);
        if (r < 0)
                return bus_store_error(error, r, "delete the storage backend");
        hashmap_remove(m->storages, b->id);
        storage_free(b);
        bus_manager_emit_removed(m, NULL, id, path);
        return 0;
}

int storage_resolve(Manager *m, const char *name, StorageBackend **ret, sd_bus_error *error) {
        StorageBackend *b = hashmap_get(m->storages, name), *found = NULL;
        size_t matches = 0;

        if (!b)
                b = find_by_name(m, name);
        if (b) {
                *ret = b;
                return 0;
        }
        HASHMAP_FOREACH (b, m->storages, i)
                if (strlen(name) >= 4 && startswith(b->id, name)) {
                        found = b;
                        matches++;
                }
        if (matches == 1) {
                *ret = found;
                return 0;
        }
        return sd_bus_error_setf(
                error, PB_ERROR_NO_SUCH_STORAGE,
                "No storage backend \"%.64s\": give its name or id (purebootctl storage list "
                "shows them).",
                name);
}

StorageLocation storage_location(const StorageBackend *b) {
        return (StorageLocation){ .type = b->type, .config = b->config, .secret = b->secret };
}

const StorageDriver *storage_driver(BackendType type) {
        static const StorageDriver *const drivers[_BACKEND_TYPE_MAX] = {
                [BACKEND_NFS] = &storage_driver_nfs,
                [BACKEND_ISCSI] = &storage_driver_iscsi,
                [BACKEND_LOCAL] = &storage_driver_local,
        };
        assert(type < _BACKEND_TYPE_MAX && drivers[type]);
        return drivers[type];
}

typedef struct Probe {
        StorageBackend *backend; /* read in the child only */
        char *id;
        bool test;
        StorageDone done;
        void *userdata;
} Probe;

static json_object *probe_child(void *data, char **ret_why) {
        Probe *p = data;
        const StorageBackend *b = p->backend;
        const StorageDriver *d = storage_driver(b->type);
        _cleanup_free_ char *report = NULL;
        uint64_t total = 0, available = 0;

        if (p->test && d->test(b, &report, ret_why) < 0)
                return NULL;
        if (d->measure(b, NULL, 0, &total, &available, ret_why) < 0)
                return NULL;

        json_object *o = json_object_new_object();
        json_object_object_add(o, "total", json_object_new_int64((int64_t) total));
        json_object_object_add(o, "available", json_object_new_int64((int64_t) available));
        if (report)
                json_object_object_add(o, "report", json_object_new_string(report));
        return o;
}

static void on_probed(Manager *m, json_object *result, const char *why, void *userdata) {
        Probe *p = userdata;
        StorageBackend *b = hashmap_get(m->storages, p->id);
        _cleanup_free_ char *report = NULL;

        if (b && !why && result) {
                StorageBackend updated = *b;
                updated.total_bytes = (uint64_t) json_get_int(result, "total");
                updated.available_bytes = (uint64_t) json_get_int(result, "available");
                if (store_storage_update(m->store, &updated) >= 0) {
                        b->total_bytes = updated.total_bytes;
                        b->available_bytes = updated.available_bytes;
                        _cleanup_free_ char *path = storage_path(b);
                        if (path)
                                (void) sd_bus_emit_properties_changed(m->bus, path, PB_IFACE("StorageBackend"),
                                                                      "TotalBytes", "AvailableBytes", NULL);
                }
                const char *r = json_get_string(result, "report");
                (void) asprintf(&report, "%s%s%s available of %s.", strempty(r), r ? " " : "",
                                FORMAT_BYTES(b->available_bytes), FORMAT_BYTES(b->total_bytes));
        }
        p->done(m, b, report, why ?: b ? NULL : "the backend was deleted meanwhile", p->userdata);
        free(p->id);
        free(p);
}

static int probe(StorageBackend *b, bool test, StorageDone done, void *userdata) {
        _cleanup_free_ char *what = NULL;
        Probe *p;
        int r;

        if (asprintf(&what, "%s of storage backend %s", test ? "test" : "space check", b->name) < 0)
                return -ENOMEM;
        p = calloc(1, sizeof(Probe));
        if (!p || !(p->id = strdup(b->id))) {
                free(p);
                return -ENOMEM;
        }
        *p = (Probe){ .backend = b, .id = p->id, .test = test, .done = done, .userdata = userdata };
        r = worker_start(b->manager, what, probe_child, p, on_probed, p, NULL);
        if (r < 0) {
                free(p->id);
                free(p);
        }
        return r;
}

int storage_test(StorageBackend *b, StorageDone done, void *userdata) {
        return probe(b, true, done, userdata);
}

int storage_refresh_space(StorageBackend *b, StorageDone done, void *userdata) {
        return probe(b, false, done, userdata);
}
