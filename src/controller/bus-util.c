/* SPDX-License-Identifier: MIT */
#include "bus-util.h"
#include "pureboot-errors.h"

int bus_message_read_string_dict(sd_bus_message *m, json_object **ret) {
        _cleanup_(json_object_unrefp) json_object *o = json_object_new_object();
        const char *key, *value;
        int r;

        if (!o)
                return -ENOMEM;
        r = sd_bus_message_enter_container(m, 'a', "{ss}");
        while (r >= 0 && (r = sd_bus_message_read(m, "{ss}", &key, &value)) > 0)
                json_object_object_add(o, key, json_object_new_string(value));
        if (r >= 0)
                r = sd_bus_message_exit_container(m);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(o);
        return 0;
}

/* An option's a{ss}, inside its variant. */
static int read_string_dict(sd_bus_message *m, json_object **ret) {
        int r = sd_bus_message_enter_container(m, 'v', "a{ss}");
        if (r >= 0)
                r = bus_message_read_string_dict(m, ret);
        return r < 0 ? r : sd_bus_message_exit_container(m);
}

void bus_options_done(BusOptions *o) {
        json_object_put(o->files);
        o->files = NULL;
}

int bus_read_options(sd_bus_message *m, BusOptions *ret, sd_bus_error *error) {
        _cleanup_(bus_options_done) BusOptions o = {};
        int r;

        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                const char *key, *contents, **target = NULL;
                r = sd_bus_message_read(m, "s", &key);
                if (r < 0)
                        return r;
                r = sd_bus_message_peek_type(m, NULL, &contents);
                if (r < 0)
                        return r;
                if (STR_IN_SET(key, "auth.no_user_interaction", "keep_setuid", "power_cycle", "power_off")) {
                        int b;
                        if (!streq(contents, "b"))
                                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                         "Option %s must be a boolean (b), not %s.", key,
                                                         contents);
                        r = sd_bus_message_read(m, "v", "b", &b);
                        if (r < 0)
                                return r;
                        *(streq(key, "keep_setuid")   ? &o.keep_setuid
                          : streq(key, "power_cycle") ? &o.power_cycle
                          : streq(key, "power_off")   ? &o.power_off
                                                      : &o.no_user_interaction) = b;
                } else if (streq(key, "files")) {
                        if (!streq(contents, "a{ss}"))
                                return sd_bus_error_setf(
                                        error, SD_BUS_ERROR_INVALID_ARGS,
                                        "Option files must be a{ss} (path to content), not %s.", contents);
                        json_object_put(o.files);
                        o.files = NULL;
                        r = read_string_dict(m, &o.files);
                        if (r < 0)
                                return r;
                } else {
                        if (streq(key, "idempotency_key"))
                                target = &o.idempotency_key;
                        else if (streq(key, "storage"))
                                target = &o.storage;
                        else if (streq(key, "resize_mode"))
                                target = &o.resize_mode;
                        else if (streq(key, "identity"))
                                target = &o.identity;
                        else if (streq(key, "unused"))
                                target = &o.unused;
                        else if (streq(key, "ip"))
                                target = &o.ip;
                        else if (streq(key, "serial"))
                                target = &o.serial;
                        else if (streq(key, "workflow"))
                                target = &o.workflow;
                        else if (streq(key, "image"))
                                target = &o.image;
                        else if (streq(key, "keep_as"))
                                target = &o.keep_as;
                        else if (streq(key, "description"))
                                target = &o.description;
                        else
                                return sd_bus_error_setf(
                                        error, SD_BUS_ERROR_INVALID_ARGS,
                                        "Unknown option \"%s\". Known options: "
                                        "auth.no_user_interaction, keep_setuid, idempotency_key, storage, "
                                        "resize_mode, identity, unused, ip, serial, workflow, image, "
                                        "keep_as, description, files, power_cycle, power_off.",
                                        key);
                        if (!streq(contents, "s"))
                                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                         "Option %s must be a string (s), not %s.", key,
                                                         contents);
                        r = sd_bus_message_read(m, "v", "s", target);
                        if (r < 0)
                                return r;
                }
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        r = sd_bus_message_exit_container(m);
        if (r < 0)
                return r;
        *ret = o;
        o = (BusOptions){};
        return 0;
}

bool bus_interactive(sd_bus_message *m, const BusOptions *o) {
        return sd_bus_message_get_allow_interactive_authorization(m) > 0 && !o->no_user_interaction;
}

int bus_sender_uid(sd_bus_message *m, uint32_t *ret) {
        _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *creds = NULL;
        uid_t uid;
        int r;

        r = sd_bus_query_sender_creds(m, SD_BUS_CREDS_EUID | SD_BUS_CREDS_UID, &creds);
        if (r < 0)
                return r;
        /* Augmented credentials come from /proc and can race with the sender: not good enough to decide. */
        uint64_t augmented = sd_bus_creds_get_augmented_mask(creds);
        if ((sd_bus_creds_get_euid(creds, &uid) < 0 || (augmented & SD_BUS_CREDS_EUID)) &&
            (sd_bus_creds_get_uid(creds, &uid) < 0 || (augmented & SD_BUS_CREDS_UID)))
                return -EPERM;
        *ret = uid;
        return 0;
}

int bus_store_error(sd_bus_error *error, int r, const char *what) {
        if (r == -ENOMEM)
                return r;
        return sd_bus_error_setf(
                error, PB_ERROR_STORE,
                "Could not %s: the state database refused the change (%s). Nothing was changed; "
                "check the controller's log and the disk holding /var/lib/pureboot.",
                what, strerror(-r));
}

int bus_find_object(Hashmap *map, const char *prefix, const char *path, void **found) {
        const char *rest = startswith(path, prefix);
        void *o;

        if (!rest || rest[0] != '/')
                return 0;
        o = hashmap_get(map, rest + 1);
        if (!o)
                return 0;
        *found = o;
        return 1;
}

int bus_enumerate_objects(Hashmap *map, const char *prefix, char ***nodes) {
        char **l = calloc(hashmap_size(map) + 1, sizeof(char *));
        size_t k = 0;
        const char *id;
        void *o;

        if (!l)
                return -ENOMEM;
        for (size_t i = 0; hashmap_iterate(map, &i, &o, &id);) {
                if (asprintf(&l[k], "%s/%s", prefix, id) < 0) {
                        strv_free(l);
                        return -ENOMEM;
                }
                k++;
        }
        *nodes = l;
        return 1;
}

static int read_json_value(sd_bus_message *m, const char *key, const char *type, json_object **ret,
                           sd_bus_error *error) {
        union {
                const char *s;
                int b;
                uint8_t y;
                int16_t n;
                uint16_t q;
                int32_t i;
                uint32_t u;
                int64_t x;
                uint64_t t;
        } v;
        int r;

        if (strlen(type) != 1 || !strchr("sbynqiuxt", type[0]))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Parameter %s is of type %s; give a string, boolean or integer.", key, type);
        r = sd_bus_message_read(m, "v", type, &v);
        if (r < 0)
                return r;
        switch (type[0]) {
        case 's': *ret = json_object_new_string(v.s); break;
        case 'b': *ret = json_object_new_boolean(v.b); break;
        case 'y': *ret = json_object_new_int64(v.y); break;
        case 'n': *ret = json_object_new_int64(v.n); break;
        case 'q': *ret = json_object_new_int64(v.q); break;
        case 'i': *ret = json_object_new_int64(v.i); break;
        case 'u': *ret = json_object_new_int64(v.u); break;
        case 'x': *ret = json_object_new_int64(v.x); break;
        default:
                if (v.t > INT64_MAX)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Parameter %s is too large.", key);
                *ret = json_object_new_int64((int64_t) v.t);
        }
        return *ret ? 0 : -ENOMEM;
}

int bus_message_read_json_dict(sd_bus_message *m, json_object **ret, sd_bus_error *error) {
        _cleanup_(json_object_unrefp) json_object *o = json_object_new_object();
        int r;

        if (!o)
                return -ENOMEM;
        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                const char *key, *type;
                json_object *v = NULL;
                r = sd_bus_message_read(m, "s", &key);
                if (r >= 0)
                        r = sd_bus_message_peek_type(m, NULL, &type);
                if (r >= 0)
                        r = read_json_value(m, key, type, &v, error);
                if (r < 0)
                        return r;
                json_object_object_add(o, key, v);
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        r = sd_bus_message_exit_container(m);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(o);
        return 0;
}

int bus_message_append_json_strv(sd_bus_message *m, json_object *array) {
        size_t n = json_object_is_type(array, json_type_array) ? json_object_array_length(array) : 0;
        int r = sd_bus_message_open_container(m, 'a', "s");
        for (size_t i = 0; r >= 0 && i < n; i++)
                r = sd_bus_message_append(
                        m, "s", strempty(json_object_get_string(json_object_array_get_idx(array, i))));
        return r < 0 ? r : sd_bus_message_close_container(m);
}

int bus_message_append_json_dict(sd_bus_message *m, json_object *o) {
        int r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        json_object_object_foreach(o, key, v) {
                if (json_object_is_type(v, json_type_boolean))
                        r = sd_bus_message_append(m, "{sv}", key, "b", (int) json_object_get_boolean(v));
                else if (json_object_is_type(v, json_type_int))
                        r = sd_bus_message_append(m, "{sv}", key, "x", json_object_get_int64(v));
                else
                        r = sd_bus_message_append(m, "{sv}", key, "s", json_object_get_string(v));
                if (r < 0)
                        return r;
        }
        return sd_bus_message_close_container(m);
}
