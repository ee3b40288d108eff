/* SPDX-License-Identifier: MIT */
/* org.pureboot.Controller1.Disk on /org/pureboot/Controller1/node/<id>/disk/<name>. */
#include "bus-disk.h"
#include "bus-util.h"
#include "disk.h"
#include "log.h"
#include "node.h"
#include "polkit.h"
#include "pureboot-errors.h"
#include "util.h"

#define NODE_PREFIX PB_ROOT_PATH "/node"

#define GETTER(name)                                                                                        \
        static int name(sd_bus *bus, const char *path, const char *interface, const char *property,          \
                        sd_bus_message *reply, void *userdata, sd_bus_error *error)

#define UNUSED_GETTER_ARGS (void) bus, (void) path, (void) interface, (void) property, (void) error

GETTER(property_get_node) {
        Disk *d = userdata;
        _cleanup_free_ char *p = node_path(d->node);
        UNUSED_GETTER_ARGS;
        return p ? sd_bus_message_append(reply, "o", p) : -ENOMEM;
}

GETTER(property_get_string) {
        Disk *d = userdata;
        const char *v = streq(property, "Device")           ? d->info.device
                        : streq(property, "Model")          ? d->info.model
                        : streq(property, "Serial")         ? d->info.serial
                        : streq(property, "PartitionTable") ? d->info.table
                                                            : d->fingerprint;
        UNUSED_GETTER_ARGS;
        return sd_bus_message_append(reply, "s", strempty(v));
}

GETTER(property_get_size) {
        Disk *d = userdata;
        UNUSED_GETTER_ARGS;
        return sd_bus_message_append(reply, "t", d->info.size);
}

GETTER(property_get_sector_size) {
        Disk *d = userdata;
        UNUSED_GETTER_ARGS;
        return sd_bus_message_append(reply, "u", streq(property, "LogicalSectorSize") ? d->info.logical_sector_size
                                                                                      : d->info.physical_sector_size);
}

GETTER(property_get_applying) {
        Disk *d = userdata;
        UNUSED_GETTER_ARGS;
        return sd_bus_message_append(reply, "b", d->apply_requested_at != 0);
}

/* (number, start, size, type, type name, filesystem, label, uuid, mountpoint, flags, used, minimum,
 * can shrink); unknown strings are empty and unknown sizes 0. */
GETTER(property_get_partitions) {
        Disk *d = userdata;
        int r;
        UNUSED_GETTER_ARGS;
        r = sd_bus_message_open_container(reply, 'a', "(uttssssssasttb)");
        for (size_t i = 0; r >= 0 && i < d->info.n_partitions; i++) {
                const PartitionInfo *p = &d->info.partitions[i];
                r = sd_bus_message_open_container(reply, 'r', "uttssssssasttb");
                if (r >= 0)
                        r = sd_bus_message_append(reply, "uttssssss", p->number, p->start, p->size, strempty(p->type),
                                                  strempty(p->type_name), strempty(p->filesystem), strempty(p->label),
                                                  strempty(p->uuid), strempty(p->mountpoint));
                if (r >= 0)
                        r = sd_bus_message_append_strv(reply, p->flags);
                if (r >= 0)
                        r = sd_bus_message_append(reply, "ttb", p->used, p->minimum, p->can_shrink);
                if (r >= 0)
                        r = sd_bus_message_close_container(reply);
        }
        return r < 0 ? r : sd_bus_message_close_container(reply);
}

/* (id, operation, parameters, status, message, started, completed, bytes done, bytes in all) in queue
 * order: the message says why a failed one failed, or what a completed one did; the bytes are those a long
 * one (erase) reported last, 0 and 0 for the others. */
GETTER(property_get_operations) {
        Disk *d = userdata;
        int r;
        UNUSED_GETTER_ARGS;
        r = sd_bus_message_open_container(reply, 'a', "(ssa{sv}sstttt)");
        for (size_t i = 0; r >= 0 && i < d->n_operations; i++) {
                const PartitionOperation *op = d->operations[i];
                r = sd_bus_message_open_container(reply, 'r', "ssa{sv}sstttt");
                if (r >= 0)
                        r = sd_bus_message_append(reply, "ss", op->id, op->operation);
                if (r >= 0)
                        r = bus_message_append_json_dict(reply, op->params);
                if (r >= 0)
                        r = sd_bus_message_append(reply, "sstttt", operation_status_to_string(op->status),
                                                  strempty(op->message), op->started_at, op->completed_at,
                                                  op->done, op->total);
                if (r >= 0)
                        r = sd_bus_message_close_container(reply);
        }
        return r < 0 ? r : sd_bus_message_close_container(reply);
}

static int authorize(Disk *d, sd_bus_message *msg, const char *verb, sd_bus_error *error) {
        _cleanup_(bus_options_done) BusOptions o = {};
        int r = bus_read_options(msg, &o, error);
        if (r < 0)
                return r;
        return polkit_verify(d->node->manager, msg, PB_POLKIT_ACTION("manage-partitions"),
                             (const char *const[]){ "node", d->node->id, "hostname", d->node->hostname,
                                                    "device", d->info.device, "verb", verb, NULL },
                             bus_interactive(msg, &o), error);
}

static int method_queue_operation(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Disk *d = userdata;
        _cleanup_(json_object_unrefp) json_object *params = NULL;
        _cleanup_free_ char *id = NULL;
        const char *op;
        int r;

        r = sd_bus_message_read(msg, "s", &op);
        if (r >= 0 && streq(op, "erase"))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "An erase is not queued with the partition operations: use Erase "
                                         "(purebootctl disk erase %s %s --method=…), which asks for its own "
                                         "authorisation.",
                                         d->node->hostname, d->info.device);
        if (r >= 0)
                r = bus_message_read_json_dict(msg, &params, error);
        if (r >= 0) /* arguments first: an operation that cannot fit is refused without a polkit question */
                r = disk_queue_operation(d, op, params, NULL, error);
        if (r < 0)
                return r;
        r = authorize(d, msg, op, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = disk_queue_operation(d, op, params, &id, error);
        if (r < 0)
                return r;
        manager_audit(d->node->manager, msg, "QueueOperation", id, op);
        return sd_bus_reply_method_return(msg, "s", id);
}

/* Every byte of the disk, gone: its own polkit action, which never keeps an authorisation. */
static int method_erase(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(bus_options_done) BusOptions o = {};
        _cleanup_free_ char *id = NULL, *method = NULL;
        Disk *d = userdata;
        const char *arg;
        int r;

        r = sd_bus_message_read(msg, "s", &arg);
        if (r < 0)
                return r;
        if (!(method = strdup(arg)))
                return -ENOMEM;
        r = bus_read_options(msg, &o, error);
        if (r < 0)
                return r;
        r = disk_erase(d, method, NULL, error); /* the method is checked with the rest, on paper */
        if (r < 0)
                return r;
        r = polkit_verify(d->node->manager, msg, PB_POLKIT_ACTION("manage-disks"),
                          (const char *const[]){ "node", d->node->id, "hostname", d->node->hostname,
                                                 "device", d->info.device, "method", method, NULL },
                          bus_interactive(msg, &o), error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = disk_erase(d, method, &id, error);
        if (r < 0)
                return r;
        manager_audit(d->node->manager, msg, "Erase", id, method);
        return sd_bus_reply_method_return(msg, "s", id);
}

static int method_remove_operation(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Disk *d = userdata;
        _cleanup_free_ char *id = NULL;
        const char *arg;
        int r;

        r = sd_bus_message_read(msg, "s", &arg);
        if (r < 0)
                return r;
        if (!(id = strdup(arg)))
                return -ENOMEM;
        r = authorize(d, msg, "remove", error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = disk_remove_operation(d, id, error);
        if (r < 0)
                return r;
        manager_audit(d->node->manager, msg, "RemoveOperation", id, "ok");
        return sd_bus_reply_method_return(msg, NULL);
}

static int method_apply(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Disk *d = userdata;
        int r = authorize(d, msg, "apply", error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = disk_apply(d, error);
        if (r < 0)
                return r;
        manager_audit(d->node->manager, msg, "Apply", d->info.device, d->node->id);
        return sd_bus_reply_method_return(msg, NULL);
}

#define P(name, sig, getter)                                                                                \
        SD_BUS_PROPERTY(name, sig, getter, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE)

static const sd_bus_vtable disk_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Node", "o", property_get_node, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Device", "s", property_get_string, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        P("Size", "t", property_get_size),
        P("Model", "s", property_get_string),
        P("Serial", "s", property_get_string),
        P("LogicalSectorSize", "u", property_get_sector_size),
        P("PhysicalSectorSize", "u", property_get_sector_size),
        P("PartitionTable", "s", property_get_string),
        P("Partitions", "a(uttssssssasttb)", property_get_partitions),
        SD_BUS_PROPERTY("ScannedAt", "t", NULL, offsetof(Disk, scanned_at),
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        P("Fingerprint", "s", property_get_string),
        P("Applying", "b", property_get_applying),
        P("Operations", "a(ssa{sv}sstttt)", property_get_operations),
        SD_BUS_METHOD_WITH_ARGS("QueueOperation",
                                SD_BUS_ARGS("s", operation, "a{sv}", parameters, "a{sv}", options),
                                SD_BUS_RESULT("s", id), method_queue_operation, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("RemoveOperation", SD_BUS_ARGS("s", id, "a{sv}", options), SD_BUS_NO_RESULT,
                                method_remove_operation, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Apply", SD_BUS_ARGS("a{sv}", options), SD_BUS_NO_RESULT, method_apply,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Erase", SD_BUS_ARGS("s", method, "a{sv}", options), SD_BUS_RESULT("s", id),
                                method_erase, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END,
};

/* NODE_PREFIX/<node id>/disk/<name> */
static int find(sd_bus *bus, const char *path, const char *interface, void *userdata, void **found,
                sd_bus_error *error) {
        Manager *m = userdata;
        const char *rest = startswith(path, NODE_PREFIX "/"), *tail;
        char id[PB_ID_LEN + 1];
        Node *n;
        Disk *d;
        (void) bus, (void) interface, (void) error;

        if (!rest || strlen(rest) <= PB_ID_LEN || !(tail = startswith(rest + PB_ID_LEN, "/disk/")) || strchr(tail, '/'))
                return 0;
        memcpy(id, rest, PB_ID_LEN);
        id[PB_ID_LEN] = 0;
        n = hashmap_get(m->nodes, id);
        d = n ? disk_find(n, tail) : NULL;
        if (!d)
                return 0;
        *found = d;
        return 1;
}

static int enumerate(sd_bus *bus, const char *path, void *userdata, char ***nodes, sd_bus_error *error) {
        Manager *m = userdata;
        _cleanup_strv_free_ char **l = strv_new(NULL);
        Node *n;
        (void) bus, (void) path, (void) error;

        if (!l)
                return -ENOMEM;
        HASHMAP_FOREACH (n, m->nodes, i)
                for (size_t k = 0; k < n->n_disks; k++) {
                        _cleanup_free_ char *p = disk_path(n->disks[k]);
                        if (!p || strv_extend(&l, p) < 0)
                                return -ENOMEM;
                }
        *nodes = TAKE_PTR(l);
        return 1;
}

int bus_disk_register(Manager *m) {
        int r = sd_bus_add_fallback_vtable(m->bus, NULL, NODE_PREFIX, PB_IFACE("Disk"), disk_vtable, find, m);
        if (r >= 0)
                r = sd_bus_add_node_enumerator(m->bus, NULL, NODE_PREFIX, enumerate, m);
        if (r < 0)
                return log_error_errno(r, "Failed to register disk objects: %m");
        return 0;
}
