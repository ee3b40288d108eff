/* SPDX-License-Identifier: MIT */
/* org.pureboot.Controller1.CloneTarget on /org/pureboot/Controller1/clone/<id>/target/<n>: read-only; a
 * session's methods act on its targets. */
#include "bus-target.h"
#include "bus-util.h"
#include "chain.h"
#include "clone.h"
#include "log.h"
#include "util.h"

#define CLONE_PREFIX PB_ROOT_PATH "/clone"

/* The properties that are a field of the record as they are. */
static const struct {
        const char *name;
        char type; /* 's' char *, 't' uint64_t, 'u' uint32_t */
        size_t offset;
} fields[] = {
        { "Index", 'u', offsetof(CloneTarget, index) },
        { "Node", 's', offsetof(CloneTarget, node) },
        { "Device", 's', offsetof(CloneTarget, device) },
        { "Plan", 's', offsetof(CloneTarget, plan_json) },
        { "BytesTransferred", 't', offsetof(CloneTarget, bytes_transferred) },
        { "TransferRate", 't', offsetof(CloneTarget, transfer_rate) },
        { "Digest", 's', offsetof(CloneTarget, digest) },
        { "Error", 's', offsetof(CloneTarget, error) },
        { "Problem", 's', offsetof(CloneTarget, problem) },
        { "StartedAt", 't', offsetof(CloneTarget, started_at) },
        { "CompletedAt", 't', offsetof(CloneTarget, completed_at) },
};

int bus_target_append(sd_bus_message *reply, CloneTarget *t, const char *name) {
        if (streq(name, "Status"))
                return sd_bus_message_append(reply, "s", t ? clone_status_to_string(t->status) : "");
        if (streq(name, "ResizeMode"))
                return sd_bus_message_append(reply, "s", t ? resize_mode_to_string(t->resize_mode) : "");
        if (streq(name, "Certificate"))
                return sd_bus_message_append(reply, "s", t ? strempty(clone_certificate(t->session, t)) : "");
        if (streq(name, "Progress")) {
                uint64_t total = t ? t->session->bytes_total : 0;
                double p = !t                            ? 0.0
                           : t->status == CLONE_COMPLETED ? 1.0
                           : total > 0                    ? MIN(1.0, (double) t->bytes_transferred / (double) total)
                                                          : 0.0;
                return sd_bus_message_append(reply, "d", p);
        }
        if (streq(name, "Upstream")) { /* in a chain: the target it pulls from; 0 is the source */
                CloneTarget *up = t ? chain_upstream(t) : NULL;
                return sd_bus_message_append(reply, "u", up ? up->index : 0);
        }
        if (streq(name, "Notes"))
                return bus_message_append_json_strv(reply, t ? t->notes : NULL);
        if (streq(name, "Files")) { /* their paths: what they hold is for the clone alone */
                int r = sd_bus_message_open_container(reply, 'a', "s");
                if (t && t->files) {
                        json_object_object_foreach (t->files, path, content) {
                                (void) content;
                                if (r >= 0)
                                        r = sd_bus_message_append(reply, "s", path);
                        }
                }
                return r < 0 ? r : sd_bus_message_close_container(reply);
        }
        if (streq(name, "Session")) {
                _cleanup_free_ char *path = t ? clone_path(t->session) : strdup("/");
                return path ? sd_bus_message_append(reply, "o", path) : -ENOMEM;
        }
        for (size_t i = 0; i < ELEMENTSOF(fields); i++) {
                if (!streq(fields[i].name, name))
                        continue;
                const uint8_t *f = t ? (const uint8_t *) t + fields[i].offset : NULL;
                switch (fields[i].type) {
                case 's':
                        return sd_bus_message_append(reply, "s", f ? strempty(*(char *const *) f) : "");
                case 't':
                        return sd_bus_message_append(reply, "t", f ? *(const uint64_t *) f : 0);
                default:
                        return sd_bus_message_append(reply, "u", f ? *(const uint32_t *) f : 0);
                }
        }
        return -ENOENT;
}

void bus_target_emit(CloneTarget *t, bool added) {
        sd_bus *bus = t->session->manager->bus;
        _cleanup_free_ char *path = bus ? clone_target_path(t) : NULL;
        if (path)
                (void) (added ? sd_bus_emit_object_added : sd_bus_emit_object_removed)(bus, path);
}

void bus_target_emit_all(CloneSession *c, bool added) {
        for (size_t i = 0; i < c->n_targets; i++)
                bus_target_emit(c->targets[i], added);
}

int bus_target_append_paths(sd_bus_message *reply, CloneSession *c) {
        int r = sd_bus_message_open_container(reply, 'a', "o");
        for (size_t i = 0; r >= 0 && i < c->n_targets; i++) {
                _cleanup_free_ char *path = clone_target_path(c->targets[i]);
                r = path ? sd_bus_message_append(reply, "o", path) : -ENOMEM;
        }
        return r < 0 ? r : sd_bus_message_close_container(reply);
}

static int property_get(sd_bus *bus, const char *path, const char *interface, const char *property,
                        sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        (void) bus, (void) path, (void) interface, (void) error;
        return bus_target_append(reply, userdata, property);
}

#define P(name, sig) SD_BUS_PROPERTY(name, sig, property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE)
#define C(name, sig) SD_BUS_PROPERTY(name, sig, property_get, 0, SD_BUS_VTABLE_PROPERTY_CONST)

static const sd_bus_vtable target_vtable[] = {
        SD_BUS_VTABLE_START(0), C("Session", "o"),   C("Index", "u"),
        P("Node", "s"),         P("Device", "s"),    P("Status", "s"),
        P("ResizeMode", "s"),   P("Plan", "s"),      P("BytesTransferred", "t"),
        P("TransferRate", "t"), P("Progress", "d"),  P("Digest", "s"),
        P("Error", "s"),        P("Problem", "s"),   P("Notes", "as"),
        P("Certificate", "s"),  P("StartedAt", "t"), P("CompletedAt", "t"),
        P("Upstream", "u"),     C("Files", "as"),    SD_BUS_VTABLE_END,
};

/* <prefix>/<session id>/target/<n> */
static int find(sd_bus *bus, const char *path, const char *interface, void *userdata, void **found,
                sd_bus_error *error) {
        Manager *m = userdata;
        const char *rest = startswith(path, CLONE_PREFIX "/"), *slash = rest ? strchr(rest, '/') : NULL;
        _cleanup_free_ char *id = slash ? strndup(rest, (size_t) (slash - rest)) : NULL;
        const char *index = slash ? startswith(slash, "/target/") : NULL;
        CloneSession *c = id ? hashmap_get(m->sessions, id) : NULL;
        char role[32];
        CloneTarget *t = c && index && snprintf(role, sizeof(role), "target-%s", index) < (int) sizeof(role)
                                 ? clone_target(c, clone_target_index(role))
                                 : NULL;
        (void) bus, (void) interface, (void) error;
        if (!t)
                return 0;
        *found = t;
        return 1;
}

static int enumerate(sd_bus *bus, const char *path, void *userdata, char ***nodes, sd_bus_error *error) {
        Manager *m = userdata;
        CloneSession *c;
        char **l = strv_new(NULL);
        (void) bus, (void) path, (void) error;

        if (!l)
                return -ENOMEM;
        HASHMAP_FOREACH (c, m->sessions, i)
                for (size_t k = 0; k < c->n_targets; k++) {
                        _cleanup_free_ char *p = clone_target_path(c->targets[k]);
                        if (!p || strv_extend(&l, p) < 0) {
                                strv_free(l);
                                return -ENOMEM;
                        }
                }
        *nodes = l;
        return 1;
}

int bus_target_register(Manager *m) {
        int r = sd_bus_add_fallback_vtable(m->bus, NULL, CLONE_PREFIX, PB_IFACE("CloneTarget"), target_vtable,
                                           find, m);
        if (r >= 0)
                r = sd_bus_add_node_enumerator(m->bus, NULL, CLONE_PREFIX, enumerate, m);
        if (r < 0)
                return log_error_errno(r, "Failed to register clone target objects: %m");
        return 0;
}
