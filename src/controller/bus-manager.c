/* SPDX-License-Identifier: MIT */
/* org.pureboot.Controller1.Manager on /org/pureboot/Controller1: creating, listing and finding the
 * objects, plus the ObjectManager that announces them. */
#include <fcntl.h>

#include "bus-ca.h"
#include "bus-clone.h"
#include "bus-disk.h"
#include "bus-gateway.h"
#include "bus-image.h"
#include "bus-manager.h"
#include "bus-nfsroot.h"
#include "bus-node.h"
#include "bus-storage.h"
#include "bus-target.h"
#include "bus-util.h"
#include "clone.h"
#include "image-file.h"
#include "image.h"
#include "log.h"
#include "node.h"
#include "polkit.h"
#include "pureboot-errors.h"
#include "storage.h"

void bus_manager_emit_added(Manager *m, const char *signal, const char *id, const char *path) {
        if (!m->bus)
                return;
        (void) sd_bus_emit_object_added(m->bus, path);
        if (signal)
                (void) sd_bus_emit_signal(m->bus, PB_ROOT_PATH, PB_IFACE("Manager"), signal, "so", id, path);
}

void bus_manager_emit_removed(Manager *m, const char *signal, const char *id, const char *path) {
        if (!m->bus)
                return;
        (void) sd_bus_emit_object_removed(m->bus, path);
        if (signal)
                (void) sd_bus_emit_signal(m->bus, PB_ROOT_PATH, PB_IFACE("Manager"), signal, "so", id, path);
}

static int reply_path(sd_bus_message *msg, char *path) {
        _cleanup_free_ char *p = path;
        if (!p)
                return -ENOMEM;
        return sd_bus_reply_method_return(msg, "o", p);
}

static int method_create_clone_session(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        CloneSpec spec = {};
        _cleanup_(bus_options_done) BusOptions o = {};
        CloneSession *c;
        uint32_t uid;
        int r;

        r = sd_bus_message_read(msg, "ssssss", &spec.name, &spec.mode, &spec.source_node, &spec.target_node,
                                &spec.source_device, &spec.target_device);
        if (r < 0)
                return r;
        r = bus_read_options(msg, &o, error);
        if (r < 0)
                return r;
        spec.storage = o.storage;
        spec.resize_mode = o.resize_mode;
        spec.identity = o.identity;
        spec.unused = o.unused;
        spec.idempotency_key = o.idempotency_key;
        spec.image = o.image;
        spec.keep_as = o.keep_as;
        spec.files = o.files;
        spec.power_cycle = o.power_cycle;
        spec.power_off = o.power_off;
        /* Arguments first: a bad one is refused without asking anyone to authenticate. */
        r = clone_check(m, &spec, error);
        if (r < 0)
                return r;

        /* Keeping the upload adds to the image library, which is its own right. */
        r = polkit_verify(m, msg,
                          isempty(spec.keep_as) ? PB_POLKIT_ACTION("manage-clones")
                                                : PB_POLKIT_ACTION("manage-images"),
                          (const char *const[]){ "name", spec.name, NULL }, bus_interactive(msg, &o), error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = bus_sender_uid(msg, &uid);
        if (r < 0)
                return r;
        r = clone_create(m, &spec, uid, &c, error);
        if (r < 0)
                return r;
        if (r == 0) {
                _cleanup_free_ char *path = clone_path(c);
                manager_audit(m, msg, "CreateCloneSession", c->id, "ok");
                if (path)
                        bus_manager_emit_added(m, "CloneSessionNew", c->id, path);
                bus_target_emit_all(c, true);
        }
        return reply_path(msg, clone_path(c));
}

static int cmp_sessions(const void *a, const void *b) {
        const CloneSession *x = *(CloneSession *const *) a, *y = *(CloneSession *const *) b;
        return x->created_at < y->created_at ? -1 : x->created_at > y->created_at ? 1 : strcmp(x->id, y->id);
}

static int method_list_clone_sessions(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ void **sessions = NULL;
        Manager *m = userdata;
        int r;
        (void) error;

        sessions = hashmap_sorted_values(m->sessions, cmp_sessions);
        if (!sessions)
                return -ENOMEM;
        r = sd_bus_message_new_method_return(msg, &reply);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', "(ssssssttto)");
        for (void **i = sessions; r >= 0 && *i; i++) {
                CloneSession *c = *i;
                CloneTarget *first = clone_first_target(c);
                _cleanup_free_ char *path = clone_path(c);
                if (!path)
                        return -ENOMEM;
                r = sd_bus_message_append(reply, "(ssssssttto)", c->id, c->name,
                                          clone_status_to_string(c->status), clone_mode_to_string(c->mode),
                                          strempty(c->source_node), first ? first->node : "", c->bytes_total,
                                          first ? first->bytes_transferred : 0, c->created_at, path);
        }
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_get_clone_session(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        CloneSession *c;
        const char *name;
        int r = sd_bus_message_read(msg, "s", &name);
        if (r < 0)
                return r;
        r = clone_resolve(userdata, name, &c, error);
        if (r < 0)
                return r;
        return reply_path(msg, clone_path(c));
}

static int method_register_node(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        const char *hostname, *mac, *arch;
        _cleanup_(bus_options_done) BusOptions o = {};
        Node *n;
        int r;

        r = sd_bus_message_read(msg, "sss", &hostname, &mac, &arch);
        if (r < 0)
                return r;
        r = bus_read_options(msg, &o, error);
        if (r >= 0) /* arguments first: a bad one is refused without asking anyone to authenticate */
                r = node_register(m, hostname, mac, arch, o.serial, NODE_READY, NULL, error);
        if (r < 0)
                return r;
        r = polkit_verify(m, msg, PB_POLKIT_ACTION("manage-nodes"),
                          (const char *const[]){ "hostname", hostname, "mac", mac, NULL },
                          bus_interactive(msg, &o), error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = node_register(m, hostname, mac, arch, o.serial, NODE_READY, &n, error);
        if (r < 0)
                return r;
        _cleanup_free_ char *path = node_path(n);
        if (!path)
                return -ENOMEM;
        manager_audit(m, msg, "RegisterNode", n->id, "ok");
        bus_manager_emit_added(m, "NodeNew", n->id, path);
        return sd_bus_reply_method_return(msg, "o", path);
}

static int cmp_nodes(const void *a, const void *b) {
        return strcmp((*(Node *const *) a)->hostname, (*(Node *const *) b)->hostname);
}

static int method_list_nodes(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ void **nodes = NULL;
        Manager *m = userdata;
        int r;
        (void) error;

        nodes = hashmap_sorted_values(m->nodes, cmp_nodes);
        if (!nodes)
                return -ENOMEM;
        r = sd_bus_message_new_method_return(msg, &reply);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', "(ssssssto)");
        for (void **i = nodes; r >= 0 && *i; i++) {
                Node *n = *i;
                _cleanup_free_ char *path = node_path(n);
                if (!path)
                        return -ENOMEM;
                r = sd_bus_message_append(reply, "(ssssssto)", n->id, n->hostname, n->mac, n->arch,
                                          node_state_to_string(n->state), strempty(n->serial), n->last_seen,
                                          path);
        }
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_get_node(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        const char *name;
        Node *n;
        int r = sd_bus_message_read(msg, "s", &name);
        if (r < 0)
                return r;
        r = node_resolve(userdata, name, &n, error);
        if (r < 0)
                return r;
        return reply_path(msg, node_path(n));
}

static int method_create_storage_backend(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        const char *name, *type;
        _cleanup_(bus_options_done) BusOptions o = {};
        StorageBackend *b;
        int r;

        r = sd_bus_message_read(msg, "ss", &name, &type);
        if (r < 0)
                return r;
        /* The config comes before the options: checked (arguments first), then the options, then once
         * authorised read again to create the backend. */
        r = storage_create(m, name, type, msg, NULL, error);
        if (r >= 0)
                r = bus_read_options(msg, &o, error);
        if (r < 0)
                return r;
        r = polkit_verify(m, msg, PB_POLKIT_ACTION("manage-storage"),
                          (const char *const[]){ "name", name, NULL }, bus_interactive(msg, &o), error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = sd_bus_message_rewind(msg, true);
        if (r >= 0)
                r = sd_bus_message_skip(msg, "ss");
        if (r < 0)
                return r;
        r = storage_create(m, name, type, msg, &b, error);
        if (r < 0)
                return r;
        _cleanup_free_ char *path = storage_path(b);
        if (!path)
                return -ENOMEM;
        manager_audit(m, msg, "CreateStorageBackend", b->id, "ok");
        bus_manager_emit_added(m, NULL, b->id, path);
        return sd_bus_reply_method_return(msg, "o", path);
}

static int cmp_storages(const void *a, const void *b) {
        return strcmp((*(StorageBackend *const *) a)->name, (*(StorageBackend *const *) b)->name);
}

static int method_list_storage_backends(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ void **list = NULL;
        Manager *m = userdata;
        int r;
        (void) error;

        list = hashmap_sorted_values(m->storages, cmp_storages);
        if (!list)
                return -ENOMEM;
        r = sd_bus_message_new_method_return(msg, &reply);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', "(sssbtto)");
        for (void **i = list; r >= 0 && *i; i++) {
                StorageBackend *b = *i;
                _cleanup_free_ char *path = storage_path(b);
                if (!path)
                        return -ENOMEM;
                r = sd_bus_message_append(reply, "(sssbtto)", b->id, b->name,
                                          backend_type_to_string(b->type), b->enabled, b->total_bytes,
                                          b->available_bytes, path);
        }
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_get_storage_backend(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        StorageBackend *b;
        const char *name;
        int r = sd_bus_message_read(msg, "s", &name);
        if (r < 0)
                return r;
        r = storage_resolve(userdata, name, &b, error);
        if (r < 0)
                return r;
        return reply_path(msg, storage_path(b));
}

static int method_capture_image(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        const char *name, *node, *device, *storage;
        CloneSession *c;
        _cleanup_(bus_options_done) BusOptions o = {};
        uint32_t uid;
        int r;

        r = sd_bus_message_read(msg, "ssss", &name, &node, &device, &storage);
        if (r < 0)
                return r;
        r = bus_read_options(msg, &o, error);
        if (r >= 0) /* arguments first: a bad one is refused without asking anyone to authenticate */
                r = image_capture(m, name, node, device, storage, 0, true, NULL, error);
        if (r < 0)
                return r;
        r = polkit_verify(m, msg, PB_POLKIT_ACTION("manage-images"),
                          (const char *const[]){ "name", name, NULL }, bus_interactive(msg, &o), error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = bus_sender_uid(msg, &uid);
        if (r >= 0)
                r = image_capture(m, name, node, device, storage, uid, false, &c, error);
        if (r < 0)
                return r;
        Image *i = image_captured_by(c);
        _cleanup_free_ char *session = clone_path(c), *image = i ? image_path(i) : NULL;
        if (!session || !image)
                return -ENOMEM;
        manager_audit(m, msg, "CaptureImage", i->id, c->id);
        bus_manager_emit_added(m, "CloneSessionNew", c->id, session);
        bus_target_emit_all(c, true);
        return sd_bus_reply_method_return(msg, "oo", image, session);
}

/* The answer of ImportImage goes to the caller when the import has ended. */
static void on_imported(Manager *m, const char *id, const char *why, void *userdata) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *msg = userdata;
        Image *i = why ? NULL : hashmap_get(m->images, id);
        _cleanup_free_ char *path = i ? image_path(i) : NULL;

        manager_audit(m, msg, "ImportImage", id, why ?: "ok");
        if (!path)
                (void) sd_bus_reply_method_errorf(msg, PB_ERROR_INVALID_ARGUMENT,
                                                  "The image was not imported: %s. Nothing of it was kept.",
                                                  why ?: "out of memory");
        else
                (void) sd_bus_reply_method_return(msg, "o", path);
}

static int method_import_image(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        const char *name, *storage;
        Image *i;
        _cleanup_(bus_options_done) BusOptions o = {};
        uint32_t uid;
        int fd, r;

        r = sd_bus_message_read(msg, "ssh", &name, &storage, &fd);
        if (r < 0)
                return r;
        r = bus_read_options(msg, &o, error);
        if (r >= 0) /* arguments first: a bad one is refused without asking anyone to authenticate */
                r = image_import(m, name, storage, o.description, -EBADF, 0, true, NULL, NULL, NULL, error);
        if (r < 0)
                return r;
        r = polkit_verify(m, msg, PB_POLKIT_ACTION("manage-images"),
                          (const char *const[]){ "name", name, NULL }, bus_interactive(msg, &o), error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = bus_sender_uid(msg, &uid);
        if (r < 0)
                return r;
        fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (fd < 0)
                return -errno;
        r = image_import(m, name, storage, o.description, fd, uid, false, on_imported,
                         sd_bus_message_ref(msg), &i, error);
        if (r < 0) {
                sd_bus_message_unref(msg);
                return r;
        }
        return 1; /* answered when the import has ended */
}

static int cmp_images(const void *a, const void *b) {
        return strcmp((*(Image *const *) a)->name, (*(Image *const *) b)->name);
}

static int method_list_images(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ void **list = NULL;
        Manager *m = userdata;
        int r;
        (void) error;

        list = hashmap_sorted_values(m->images, cmp_images);
        if (!list)
                return -ENOMEM;
        r = sd_bus_message_new_method_return(msg, &reply);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', "(sssstto)");
        for (void **p = list; r >= 0 && *p; p++) {
                Image *i = *p;
                StorageBackend *b = hashmap_get(m->storages, i->backend);
                _cleanup_free_ char *path = image_path(i);
                if (!path)
                        return -ENOMEM;
                r = sd_bus_message_append(reply, "(sssstto)", i->id, i->name,
                                          image_state_to_string(image_state(i)), b ? b->name : "", i->size,
                                          i->created_at, path);
        }
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_get_image(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Image *i;
        const char *name;
        int r = sd_bus_message_read(msg, "s", &name);
        if (r < 0)
                return r;
        r = image_resolve(userdata, name, &i, error);
        if (r < 0)
                return r;
        return reply_path(msg, image_path(i));
}

static const sd_bus_vtable manager_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Version", "s", NULL, offsetof(Manager, version), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_METHOD_WITH_ARGS("CreateCloneSession",
                                SD_BUS_ARGS("s", name, "s", mode, "s", source_node, "s", target_node, "s",
                                            source_device, "s", target_device, "a{sv}", options),
                                SD_BUS_RESULT("o", session), method_create_clone_session,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListCloneSessions", SD_BUS_NO_ARGS,
                                SD_BUS_RESULT("a(ssssssttto)", sessions), method_list_clone_sessions,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetCloneSession", SD_BUS_ARGS("s", name), SD_BUS_RESULT("o", session),
                                method_get_clone_session, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("RegisterNode",
                                SD_BUS_ARGS("s", hostname, "s", mac, "s", arch, "a{sv}", options),
                                SD_BUS_RESULT("o", node), method_register_node, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListNodes", SD_BUS_NO_ARGS, SD_BUS_RESULT("a(ssssssto)", nodes),
                                method_list_nodes, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetNode", SD_BUS_ARGS("s", name), SD_BUS_RESULT("o", node), method_get_node,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS(
                "CreateStorageBackend", SD_BUS_ARGS("s", name, "s", type, "a{sv}", config, "a{sv}", options),
                SD_BUS_RESULT("o", backend), method_create_storage_backend, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListStorageBackends", SD_BUS_NO_ARGS, SD_BUS_RESULT("a(sssbtto)", backends),
                                method_list_storage_backends, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetStorageBackend", SD_BUS_ARGS("s", name), SD_BUS_RESULT("o", backend),
                                method_get_storage_backend, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS(
                "CaptureImage",
                SD_BUS_ARGS("s", name, "s", node, "s", device, "s", storage, "a{sv}", options),
                SD_BUS_RESULT("o", image, "o", session), method_capture_image, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ImportImage",
                                SD_BUS_ARGS("s", name, "s", storage, "h", source, "a{sv}", options),
                                SD_BUS_RESULT("o", image), method_import_image, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListImages", SD_BUS_NO_ARGS, SD_BUS_RESULT("a(sssstto)", images),
                                method_list_images, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetImage", SD_BUS_ARGS("s", name), SD_BUS_RESULT("o", image),
                                method_get_image, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_SIGNAL_WITH_ARGS("ImageNew", SD_BUS_ARGS("s", id, "o", image), 0),
        SD_BUS_SIGNAL_WITH_ARGS("ImageRemoved", SD_BUS_ARGS("s", id, "o", image), 0),
        SD_BUS_SIGNAL_WITH_ARGS("CloneSessionNew", SD_BUS_ARGS("s", id, "o", session), 0),
        SD_BUS_SIGNAL_WITH_ARGS("CloneSessionRemoved", SD_BUS_ARGS("s", id, "o", session), 0),
        SD_BUS_SIGNAL_WITH_ARGS("NodeNew", SD_BUS_ARGS("s", id, "o", node), 0),
        SD_BUS_SIGNAL_WITH_ARGS("NodeRemoved", SD_BUS_ARGS("s", id, "o", node), 0),
        SD_BUS_VTABLE_END,
};

int bus_manager_register(Manager *m) {
        int r;

        r = sd_bus_add_object_vtable(m->bus, NULL, PB_ROOT_PATH, PB_IFACE("Manager"), manager_vtable, m);
        if (r < 0)
                return log_error_errno(r, "Failed to register the Manager object: %m");
        r = sd_bus_add_object_manager(m->bus, NULL, PB_ROOT_PATH);
        if (r < 0)
                return log_error_errno(r, "Failed to add the object manager: %m");
        r = bus_clone_register(m);
        if (r >= 0)
                r = bus_target_register(m);
        if (r >= 0)
                r = bus_node_register(m);
        if (r >= 0)
                r = bus_disk_register(m);
        if (r >= 0)
                r = bus_nfsroot_register(m);
        if (r >= 0)
                r = bus_storage_register(m);
        if (r >= 0)
                r = bus_image_register(m);
        if (r >= 0)
                r = bus_ca_register(m);
        if (r >= 0)
                r = bus_gateway_register(m);
        return r;
}
