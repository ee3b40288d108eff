/* SPDX-License-Identifier: MIT */
/* Clone sessions: what makes a session valid, its targets' steps and what follows from them. Every status
 * change of a target goes through clone_target_transition() and its table (target.c); a session's status
 * follows from its targets'. */
#include <stdarg.h>

#include <assert.h>

#include "bus-gateway.h"
#include "bus-manager.h"
#include "bus-target.h"
#include "bus-util.h"
#include "chain.h"
#include "clone.h"
#include "disk.h"
#include "format.h"
#include "identity.h"
#include "image.h"
#include "log.h"
#include "node.h"
#include "plan.h"
#include "power.h"
#include "pureboot-errors.h"
#include "staging.h"
#include "storage.h"
#include "token.h"
#include "util.h"

CloneSession *clone_free(CloneSession *c) {
        if (!c)
                return NULL;
        throttle_done(&c->progress);
        for (size_t i = 0; i < c->n_targets; i++)
                clone_target_free(c->targets[i]);
        free(c->targets);
        char **strings[] = { &c->id,
                             &c->name,
                             &c->source_node,
                             &c->source_device,
                             &c->image,
                             &c->source_address,
                             &c->staging_backend,
                             &c->staging_path,
                             &c->staging_resources,
                             &c->source_disk_json,
                             &c->idempotency_key,
                             &c->source_digest,
                             &c->error };
        for (size_t i = 0; i < ELEMENTSOF(strings); i++)
                free(*strings[i]);
        strv_free(c->refused_claims);
        strv_free(c->power_notes);
        json_object_put(c->source_notes);
        free(c);
        return NULL;
}

CloneTarget *clone_target(CloneSession *c, uint32_t index) {
        return index >= 1 && index <= c->n_targets ? c->targets[index - 1] : NULL;
}

CloneTarget *clone_first_target(CloneSession *c) {
        return clone_target(c, 1);
}

CloneTarget *clone_target_of_node(CloneSession *c, const char *node_id) {
        for (size_t i = 0; node_id && i < c->n_targets; i++)
                if (streq(c->targets[i]->node, node_id))
                        return c->targets[i];
        return NULL;
}

const char *clone_error(CloneSession *c) {
        if (!IN_SET(c->status, CLONE_FAILED, CLONE_CANCELLED))
                return NULL;
        if (c->error)
                return c->error;
        for (size_t i = 0; i < c->n_targets; i++)
                if (c->targets[i]->status == c->status)
                        return c->targets[i]->error;
        return NULL;
}

const char *clone_certificate(CloneSession *c, CloneTarget *t) {
        _cleanup_free_ char *cn = NULL, *role = NULL;
        const Identity *i;
        if ((t && clone_target_role(t->index, &role) < 0) || identity_name(NULL, c->id, role ?: "source", &cn) < 0)
                return NULL;
        i = hashmap_get(c->manager->identities, cn);
        return i ? i->serial : NULL;
}

/* The last REFUSED_CLAIMS_MAX claims refused for the session's roles, newest last, for the operator. */
#define REFUSED_CLAIMS_MAX 16

/* Appends message to *l, which keeps its last REFUSED_CLAIMS_MAX. */
static int note_bounded(char ***l, const char *message) {
        size_t n = strv_length(*l);
        if (n >= REFUSED_CLAIMS_MAX) {
                free((*l)[0]);
                memmove(*l, *l + 1, n * sizeof(char *)); /* with the NULL */
        }
        return strv_extend(l, message);
}

void clone_note_refused_claim(CloneSession *c, const char *message) {
        if (note_bounded(&c->refused_claims, message) < 0)
                return (void) log_oom();
        clone_emit_changed(c, "RefusedClaims", NULL);
}

static void note_power(CloneSession *c, const char *hostname, const char *what) {
        _cleanup_free_ char *line = NULL;
        if (asprintf(&line, "%s: %s", hostname, what) < 0 || note_bounded(&c->power_notes, line) < 0)
                return (void) log_oom();
        log_info("Clone session %s: power of %s", c->id, line);
        clone_emit_changed(c, "PowerNotes", NULL);
}

static void on_node_powered(Manager *m, const char *node, const char *outcome, const char *why,
                            void *userdata) {
        _cleanup_free_ char *id = userdata;
        CloneSession *c = hashmap_get(m->sessions, id);
        Node *n = hashmap_get(m->nodes, node);
        if (c)
                note_power(c, n ? n->hostname : node, why ?: outcome);
}

void clone_power_nodes(CloneSession *c, const char *action) {
        for (size_t i = 0; i <= c->n_targets; i++) { /* the source, then each target */
                const char *id = i == 0 ? c->source_node : c->targets[i - 1]->node;
                _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
                Node *n = id ? hashmap_get(c->manager->nodes, id) : NULL;
                char *session = n ? strdup(c->id) : NULL;
                if (!n)
                        continue;
                int r = session ? power_act(n, action, on_node_powered, session, &e) : -ENOMEM;
                if (r < 0) {
                        free(session);
                        note_power(c, n->hostname, e.message ?: strerror(-r));
                }
        }
}

char *clone_path(const CloneSession *c) {
        char *p;
        return asprintf(&p, PB_ROOT_PATH "/clone/%s", c->id) < 0 ? NULL : p;
}

void clone_emit_changed(CloneSession *c, const char *first, ...) {
        _cleanup_free_ char *path = clone_path(c);
        va_list ap;

        va_start(ap, first);
        manager_emit_changed_va(c->manager, path, PB_IFACE("CloneSession"), first, ap);
        va_end(ap);
        bus_gateway_notify(c->manager, "session", c->id);
}

static void emit_progress(void *userdata) {
        clone_emit_changed(userdata, "BytesUploaded", NULL);
}

static void emit_target_progress(void *userdata) {
        clone_target_emit_changed(userdata, "BytesTransferred", "TransferRate", "Progress", NULL);
}

int clone_attach(Manager *m, CloneSession *c) {
        int r;
        assert(m && c);
        c->manager = m;
        throttle_init(&c->progress, m->event, USEC_PER_SEC / 4, emit_progress, c);
        r = hashmap_put(m->sessions, c->id, c);
        if (r < 0)
                return r;
        if (c->idempotency_key) {
                r = hashmap_put(m->session_keys, c->idempotency_key, c);
                if (r < 0) {
                        hashmap_remove(m->sessions, c->id);
                        return r;
                }
        }
        return 0;
}

int clone_attach_target(CloneSession *c, CloneTarget *t) {
        CloneTarget **targets;
        assert(c && t);

        if (t->index != c->n_targets + 1) {
                log_error("Session %s has target %" PRIu32 " after %zu: its targets are numbered from 1 without "
                          "gaps.",
                          c->id, t->index, c->n_targets);
                clone_target_free(t);
                return -EBADMSG;
        }
        targets = reallocarray(c->targets, c->n_targets + 1, sizeof(CloneTarget *));
        if (!targets) {
                clone_target_free(t);
                return -ENOMEM;
        }
        c->targets = targets;
        c->targets[c->n_targets++] = t;
        t->session = c;
        throttle_init(&t->progress, c->manager->event, USEC_PER_SEC / 4, emit_target_progress, t);
        return 0;
}

/* Takes the last target back out of c (one added in a transaction that did not commit). */
static void detach_last_target(CloneSession *c) {
        assert(c->n_targets > 0);
        clone_target_free(c->targets[--c->n_targets]);
}

static void detach(CloneSession *c) {
        hashmap_remove(c->manager->sessions, c->id);
        if (c->idempotency_key)
                hashmap_remove(c->manager->session_keys, c->idempotency_key);
}

static CloneTarget *target_new(CloneSession *c, uint32_t index, const char *node, const char *device,
                               ResizeMode resize_mode, json_object *files) {
        CloneTarget *t = calloc(1, sizeof(CloneTarget));
        if (!t)
                return NULL;
        t->index = index;
        t->status = CLONE_PENDING;
        t->resize_mode = resize_mode;
        t->files = json_object_get(files);
        if (!(t->session_id = strdup(c->id)) || !(t->node = strdup(node)) || !(t->device = strdup(device)))
                return clone_target_free(t);
        return t;
}

/* Snapshots of what memory holds of a session's statuses, put back when their transaction rolls back. */
typedef struct TargetSnapshot {
        CloneStatus status;
        char *error;
        uint64_t started_at, completed_at, bytes_transferred;
} TargetSnapshot;

typedef struct Snapshot {
        CloneStatus status;
        char *error;
        StagingStatus staging_status;
        uint64_t started_at, completed_at, bytes_uploaded;
        size_t n_targets;
        TargetSnapshot *targets;
} Snapshot;

static void snapshot_done(Snapshot *s) {
        free(s->error);
        for (size_t i = 0; i < s->n_targets; i++)
                free(s->targets[i].error);
        free(s->targets);
        *s = (Snapshot){};
}

static int snapshot_take(CloneSession *c, Snapshot *ret) {
        Snapshot s = { c->status,         NULL,
                       c->staging_status, c->started_at,
                       c->completed_at,   c->bytes_uploaded,
                       c->n_targets,      calloc(MAX(c->n_targets, 1u), sizeof(TargetSnapshot)) };
        if (!s.targets || (c->error && !(s.error = strdup(c->error)))) {
                snapshot_done(&s);
                return -ENOMEM;
        }
        for (size_t i = 0; i < c->n_targets; i++) {
                CloneTarget *t = c->targets[i];
                s.targets[i] = (TargetSnapshot){ t->status, NULL, t->started_at, t->completed_at,
                                                 t->bytes_transferred };
                if (t->error && !(s.targets[i].error = strdup(t->error))) {
                        snapshot_done(&s);
                        return -ENOMEM;
                }
        }
        *ret = s;
        return 0;
}

static void snapshot_restore(CloneSession *c, Snapshot *s) {
        c->status = s->status;
        free_and_replace(c->error, s->error);
        c->staging_status = s->staging_status;
        c->started_at = s->started_at;
        c->completed_at = s->completed_at;
        c->bytes_uploaded = s->bytes_uploaded;
        assert(c->n_targets == s->n_targets); /* targets are attached and detached outside transactions */
        for (size_t i = 0; i < c->n_targets; i++) {
                CloneTarget *t = c->targets[i];
                t->status = s->targets[i].status;
                free_and_replace(t->error, s->targets[i].error);
                t->started_at = s->targets[i].started_at;
                t->completed_at = s->targets[i].completed_at;
                t->bytes_transferred = s->targets[i].bytes_transferred;
        }
}

int clone_transact(CloneSession *c, CloneStep step, void *userdata, sd_bus_error *error) {
        Store *store = c->manager->store;
        _cleanup_(snapshot_done) Snapshot snapshot = {};
        int r;
        assert(c && step);

        if (store_in_transaction(store)) /* the caller's: it commits or rolls back */
                return step(c, userdata, error);
        r = snapshot_take(c, &snapshot);
        if (r < 0)
                return r;
        r = store_begin(store);
        if (r < 0)
                return bus_store_error(error, r, "change the session");
        r = step(c, userdata, error);
        if (r >= 0) {
                int k = store_commit(store);
                if (k < 0)
                        r = bus_store_error(error, k, "change the session");
        }
        if (r < 0) {
                store_rollback(store);
                snapshot_restore(c, &snapshot);
        }
        return r;
}

/* The checked, resolved form of a CloneSpec. */
typedef struct Resolved {
        Node *source, *target;
        Image *image; /* the source, if not a node */
        StorageBackend *storage;
        CloneMode mode;
        ResizeMode resize_mode;
        CloneIdentity identity;
        CloneUnused unused;
} Resolved;

/* A session option that names one of a table's values (fallback if not given) into *ret (an enum). */
static int option_parse(const StringTable *table, const char *what, const char *value, unsigned fallback,
                        const char *choices, void *ret, sd_bus_error *error) {
        int r = value ? string_table_from_string(table, value) : (int) fallback;
        if (r < 0)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT, "Unknown %s \"%.32s\"; use %s.",
                                         what, value, choices);
        *(unsigned *) ret = (unsigned) r;
        return 0;
}

static int resize_mode_parse(const char *s, ResizeMode *ret, sd_bus_error *error) {
        int r = resize_mode_from_string(s);
        if (r < 0)
                return sd_bus_error_setf(
                        error, PB_ERROR_INVALID_ARGUMENT,
                        "Unknown resize mode \"%.32s\"; use none, shrink_source or grow_target.", strempty(s));
        *ret = (ResizeMode) r;
        return 0;
}

static int device_check(const char *device, const char *role, sd_bus_error *error) {
        if (!device_path_is_valid(device))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "%s device \"%.64s\" is not a device path: give an absolute path "
                                         "under /dev/ without \"..\", such as /dev/sda.",
                                         role, strempty(device));
        return 0;
}

/* A session whose source is image s->image: staged through the image's own backend, no source node. */
static int validate_image_source(Manager *m, const CloneSpec *s, Resolved *res, sd_bus_error *error) {
        StorageBackend *b;
        int r;

        r = image_resolve(m, s->image, &res->image, error);
        if (r < 0)
                return r;
        if (!isempty(s->source_node) || !isempty(s->source_device))
                return sd_bus_error_setf(
                        error, PB_ERROR_INVALID_ARGUMENT,
                        "A session that deploys image %s has the image as its source; leave the "
                        "source node and device out.",
                        res->image->name);
        if (!isempty(s->keep_as))
                return sd_bus_error_setf(
                        error, PB_ERROR_INVALID_ARGUMENT,
                        "A session that deploys image %s uploads nothing to keep; drop keep_as.",
                        res->image->name);
        if (!isempty(s->mode) && !streq(s->mode, "staged"))
                return sd_bus_error_setf(
                        error, PB_ERROR_INVALID_ARGUMENT,
                        "An image is deployed from its storage: use staged mode, or leave the "
                        "mode out.");
        r = image_check_deployable(res->image, error);
        if (r < 0)
                return r;
        b = hashmap_get(m->storages, res->image->backend);
        if (!isempty(s->storage) &&
            (storage_resolve(m, s->storage, &res->storage, error) < 0 || res->storage != b))
                return sd_bus_error_setf(
                        error, PB_ERROR_INVALID_ARGUMENT,
                        "Image %s is on storage backend %s; drop the storage option, or name that "
                        "one.",
                        res->image->name, b ? b->name : res->image->backend);
        if (!b || !b->enabled)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_STATE,
                                         "Image %s is on storage backend %s, which is %s; enable it first.",
                                         res->image->name, b ? b->name : res->image->backend,
                                         b ? "disabled" : "gone");
        if (res->resize_mode == RESIZE_SHRINK_SOURCE)
                return sd_bus_error_setf(
                        error, PB_ERROR_INVALID_ARGUMENT,
                        "Image %s does not change: use resize mode grow_target or none, with "
                        "targets at least %s large.",
                        res->image->name, FORMAT_BYTES(res->image->size));
        res->storage = b;
        res->mode = CLONE_MODE_STAGED;
        return 0;
}

/* A disk as a machine's last inventory (or an image's layout) has it; size 0: not known. */
typedef struct KnownDisk {
        uint64_t size;
        uint32_t sector;
} KnownDisk;

static KnownDisk known_disk(json_object *d) {
        return (KnownDisk){ d ? (uint64_t) json_get_int(d, "sizeBytes") : 0,
                            d ? (uint32_t) json_get_int(d, "logicalSectorSize") : 0 };
}

/* Refused before anyone boots, by what the machines' last inventories say: the target's disk is not there,
 * is smaller than the source's (unless the source is to shrink to fit), or has sectors of another size.
 * Silent where an inventory is missing: the agents' own scans decide then. */
static int inventory_check(Node *source, const char *source_device, Image *image, Node *target,
                           const char *device, ResizeMode resize, sd_bus_error *error) {
        _cleanup_free_ char *devices = NULL;
        json_object *found;

        if (!target || !target->hardware)
                return 0;
        found = node_hardware_disk(target, device);
        /* Only a disk of the kinds every inventory lists is known to be missing (not a by-id link, a loop).
         */
        const char *name = startswith(device, "/dev/");
        if (!found && disk_name_is_inventoried(name)) {
                json_object *disks = json_object_object_get(target->hardware, "disks");
                for (size_t i = 0; i < json_object_array_length(disks); i++)
                        if (strextend_printf(&devices, "%s%s", devices ? ", " : "",
                                             strna(json_get_string(json_object_array_get_idx(disks, i),
                                                                   "device"))) < 0)
                                return -ENOMEM;
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "Node %s had no disk %s at its last boot (it had %s): name one of "
                                         "those, or boot it again once the disk is there.",
                                         target->hostname, device, devices ?: "none");
        }
        KnownDisk t = known_disk(found),
                  s = image    ? (KnownDisk){ image->size,
                                           image->layout ? (uint32_t) json_get_int(image->layout,
                                                                                      "logicalSectorSize")
                                                            : 0 }
                      : source ? known_disk(node_hardware_disk(source, source_device))
                               : (KnownDisk){};
        char have[FORMAT_BYTES_MAX], need[FORMAT_BYTES_MAX];
        if (s.sector > 0 && t.sector > 0 && s.sector != t.sector)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "%s on %s has %" PRIu32 "-byte sectors, the source disk %" PRIu32
                                         "-byte ones, and a partition table is not converted between sector "
                                         "sizes: pick a target disk with %" PRIu32 "-byte sectors.",
                                         device, target->hostname, t.sector, s.sector, s.sector);
        if (s.size > 0 && t.size > 0 && t.size < s.size && resize != RESIZE_SHRINK_SOURCE)
                return sd_bus_error_setf(
                        error, PB_ERROR_INVALID_ARGUMENT, "%s on %s has %s, the source disk %s: %s", device,
                        target->hostname, format_bytes(have, t.size), format_bytes(need, s.size),
                        image ? "pick a disk at least as large as the image's."
                              : "use resize mode shrink_source (the source's last partition "
                                "shrunk to fit), or a disk at least as large.");
        return 0;
}

/* Files for a target's clone, which it writes with the clone's identity. */
static int files_check(json_object *files, CloneIdentity identity, sd_bus_error *error) {
        if (files && identity == CLONE_IDENTITY_NONE)
                return sd_bus_error_setf(
                        error, PB_ERROR_INVALID_ARGUMENT,
                        "Files are written with the clone's own identity, and identity none "
                        "keeps the clone an exact copy: use identity auto, or give no files.");
        return clone_target_files_check(files, error);
}

static int validate(Manager *m, const CloneSpec *s, Resolved *ret, sd_bus_error *error) {
        Resolved res = {};
        int r;

        if (!name_is_valid(s->name, 255))
                return sd_bus_error_setf(
                        error, PB_ERROR_INVALID_ARGUMENT,
                        "A session name is 1 to 255 bytes without control characters; this one "
                        "has %zu bytes.",
                        s->name ? strlen(s->name) : 0);
        r = resize_mode_parse(s->resize_mode, &res.resize_mode, error);
        if (r >= 0)
                r = option_parse(
                        &clone_identity_strings, "identity", s->identity, CLONE_IDENTITY_AUTO,
                        "auto (a clone of a Linux system gets its node's host name, a new machine-id "
                        "and new SSH host keys) or none (an exact copy)",
                        &res.identity, error);
        if (r >= 0)
                r = option_parse(&clone_unused_strings, "unused", s->unused, CLONE_UNUSED_DISCARD,
                                 "discard (what no filesystem uses is not sent and the target discards it "
                                 "where it can), zero (the target writes zeroes there) or keep (the target "
                                 "leaves it as it is)",
                                 &res.unused, error);
        if (r >= 0 && !isempty(s->target_node))
                r = device_check(s->target_device, "Target", error);
        if (r >= 0 && s->files && isempty(s->target_node))
                r = sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                      "Files are written on a target's clone: name the target node too.");
        if (r >= 0)
                r = files_check(s->files, res.identity, error);
        if (r >= 0 && !isempty(s->target_node))
                r = node_resolve(m, s->target_node, &res.target, error);
        if (r >= 0 && !isempty(s->image)) {
                r = validate_image_source(m, s, &res, error);
                if (r >= 0)
                        *ret = res;
                return r;
        }
        if (r < 0)
                return r;
        r = clone_mode_from_string(s->mode);
        if (r < 0)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "Unknown clone mode \"%.32s\"; use direct or staged.",
                                         strempty(s->mode));
        res.mode = (CloneMode) r;
        r = device_check(s->source_device, "Source", error);
        if (r >= 0)
                r = node_resolve(m, s->source_node, &res.source, error);
        if (r < 0)
                return r;
        if (res.mode == CLONE_MODE_DIRECT) {
                if (!res.target)
                        return sd_bus_error_setf(
                                error, PB_ERROR_INVALID_ARGUMENT,
                                "A direct clone needs a target node: name one, or use staged mode "
                                "with a storage backend.");
                if (res.target == res.source)
                        return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                                 "Source and target are the same node (%s); a direct clone "
                                                 "copies between two machines.",
                                                 res.source->hostname);
                if (!isempty(s->storage))
                        return sd_bus_error_setf(
                                error, PB_ERROR_INVALID_ARGUMENT,
                                "A direct clone does not use a storage backend; drop the storage "
                                "option or use staged mode.");
                if (!isempty(s->keep_as))
                        return sd_bus_error_setf(
                                error, PB_ERROR_INVALID_ARGUMENT,
                                "A direct clone stores nothing to keep as an image; use staged "
                                "mode with keep_as.");
        } else {
                if (res.target == res.source)
                        return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                                 "%s is the source; a target must be another node.",
                                                 res.source->hostname);
                if (isempty(s->storage))
                        return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                                 "A staged clone needs a storage backend: add one with "
                                                 "purebootctl storage add and name it with --storage.");
                r = storage_resolve(m, s->storage, &res.storage, error);
                if (r < 0)
                        return r;
                if (!res.storage->enabled)
                        return sd_bus_error_setf(
                                error, PB_ERROR_INVALID_ARGUMENT,
                                "Storage backend %s is disabled; enable it or pick another.",
                                res.storage->name);
                if (!isempty(s->keep_as) && (r = image_name_check(m, s->keep_as, error)) < 0)
                        return r;
        }
        r = inventory_check(res.source, s->source_device, res.image, res.target, s->target_device,
                            res.resize_mode, error);
        if (r < 0)
                return r;
        *ret = res;
        return 0;
}

int clone_check(Manager *m, const CloneSpec *spec, sd_bus_error *error) {
        CloneSpec s = *spec;
        Resolved res;
        assert(m && spec);
        if (!s.resize_mode)
                s.resize_mode = "none";
        return validate(m, &s, &res, error);
}

static int dup_fields(CloneSession *c, const CloneSpec *s, const Resolved *res) {
        c->mode = res->mode;
        c->resize_mode = res->resize_mode;
        c->identity = res->identity;
        c->unused = res->unused;
        if (free_and_strdup(&c->name, s->name) < 0 ||
            free_and_strdup(&c->source_node, res->source ? res->source->id : NULL) < 0 ||
            free_and_strdup(&c->source_device, res->source ? s->source_device : NULL) < 0 ||
            free_and_strdup(&c->staging_backend, res->storage ? res->storage->id : NULL) < 0)
                return -ENOMEM;
        return 0;
}

/* A session deploying image i reads what it holds: its layout is the source's disk, its digest the source's.
 */
static int take_image(CloneSession *c, Image *i) {
        const char *layout =
                i->layout ? json_object_to_json_string_ext(i->layout, JSON_C_TO_STRING_PLAIN) : NULL;
        c->bytes_total = i->size;
        if (free_and_strdup(&c->image, i->id) < 0 || free_and_strdup(&c->source_disk_json, layout) < 0 ||
            free_and_strdup(&c->staging_path, i->location) < 0)
                return -ENOMEM;
        return 0;
}

typedef struct Creation {
        const char *keep_as;
        Image *image; /* the image it captures, reserved in the transaction */
} Creation;

static int insert_rows(CloneSession *c, void *userdata, sd_bus_error *error) {
        Creation *x = userdata;
        int r = store_session_insert(c->manager->store, c);
        for (size_t i = 0; r >= 0 && i < c->n_targets; i++)
                r = store_target_insert(c->manager->store, c->targets[i]);
        if (r < 0)
                return bus_store_error(error, r, "create the session");
        return x->keep_as ? image_capture_new(c, x->keep_as, &x->image, error) : 0;
}

int clone_create(Manager *m, const CloneSpec *spec, uint32_t uid, CloneSession **ret, sd_bus_error *error) {
        CloneSpec s = *spec;
        char id[PB_ID_LEN + 1];
        Resolved res = {};
        CloneSession *c;
        int r;
        assert(m && spec && ret);

        if (!isempty(s.idempotency_key)) {
                if (!name_is_valid(s.idempotency_key, 255))
                        return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                                 "An idempotency key is 1 to 255 bytes without control "
                                                 "characters.");
                c = hashmap_get(m->session_keys, s.idempotency_key);
                if (c) {
                        *ret = c;
                        return 1;
                }
        }
        if (!s.resize_mode)
                s.resize_mode = "none";
        r = validate(m, &s, &res, error);
        if (r < 0)
                return r;
        r = id_new(id);
        if (r < 0)
                return r;

        c = calloc(1, sizeof(CloneSession));
        if (!c)
                return -ENOMEM;
        c->manager = m;
        c->status = CLONE_PENDING;
        c->staging_status = res.mode == CLONE_MODE_STAGED ? STAGING_PENDING : STAGING_NONE;
        c->created_at = now_realtime_usec();
        c->created_by = uid;
        c->power_cycle = s.power_cycle;
        c->power_off = s.power_off;
        if (dup_fields(c, &s, &res) < 0 || free_and_strdup(&c->id, id) < 0 ||
            free_and_strdup(&c->idempotency_key, isempty(s.idempotency_key) ? NULL : s.idempotency_key) <
                    0 ||
            (res.image && take_image(c, res.image) < 0)) {
                clone_free(c);
                return -ENOMEM;
        }
        if (res.target) {
                CloneTarget *t = target_new(c, 1, res.target->id, s.target_device, res.resize_mode, s.files);
                r = t ? clone_attach_target(c, t) : -ENOMEM;
                if (r < 0) {
                        clone_free(c);
                        return r;
                }
        }
        Creation creation = { isempty(s.keep_as) ? NULL : s.keep_as, NULL };
        r = clone_transact(c, insert_rows, &creation, error);
        if (r >= 0) {
                r = clone_attach(m, c);
                if (r >= 0 && creation.image && (r = image_attach(m, creation.image)) < 0)
                        detach(c);
                if (r < 0) { /* as if never made */
                        (void) store_session_delete(m->store, c->id);
                        if (creation.image)
                                (void) store_image_delete(m->store, creation.image->id);
                }
        }
        if (r < 0) {
                image_free(creation.image);
                clone_free(c);
                return r;
        }
        if (creation.image)
                image_announce(creation.image, true);
        *ret = c;
        return 0;
}

/* A target's plan again from what is known now, if anything is: quietly, a missing disk is no error here. */
static void replan(CloneTarget *t) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        if (t->plan_json || (t->session->source_disk_json && t->disk_json))
                (void) clone_plan(t, NULL, false, &e);
        sd_bus_error_free(&e);
}

typedef struct Update {
        CloneSession *updated;
        CloneTarget *target; /* the first target as it is to be, or NULL */
        bool new_target;
} Update;

static int write_update(CloneSession *c, void *userdata, sd_bus_error *error) {
        Update *u = userdata;
        Store *s = c->manager->store;
        int r = store_session_update(s, u->updated, NULL);
        if (r >= 0 && u->target)
                r = u->new_target ? store_target_insert(s, u->target) : store_target_update(s, u->target);
        return r < 0 ? bus_store_error(error, r, "update the session") : 0;
}

int clone_update(CloneSession *c, const CloneSpec *changes, bool check_only, sd_bus_error *error) {
        Manager *m = c->manager;
        CloneTarget *first = clone_first_target(c);
        Resolved res = {};
        int r;
        assert(c && changes);

        if (c->status != CLONE_PENDING)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_STATE,
                                         "Session %s is %s; only pending sessions can be changed.", c->id,
                                         clone_status_to_string(c->status));
        if (c->n_targets > 1 && (changes->mode || changes->source_node || changes->source_device || changes->storage))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_STATE,
                                         "Session %s has %zu targets sharing its source and staging; create a new "
                                         "session to change those.",
                                         c->id, c->n_targets);
        CloneSpec s = {
                .name = changes->name ?: c->name,
                .mode = changes->mode ?: clone_mode_to_string(c->mode),
                .source_node = changes->source_node ?: c->source_node,
                .target_node = changes->target_node
                                       ?: first ? first->node
                                                : NULL,
                .source_device = changes->source_device ?: c->source_device,
                .target_device = changes->target_device
                                         ?: first ? first->device
                                                  : NULL,
                .storage = changes->storage ?: c->staging_backend,
                .resize_mode = changes->resize_mode ?: resize_mode_to_string(c->resize_mode),
                .identity = changes->identity ?: clone_identity_to_string(c->identity),
                .unused = changes->unused ?: clone_unused_to_string(c->unused),
                .image = c->image,
        };
        /* Switching to direct mode drops the backend unless one was asked for explicitly. */
        if (changes->mode && clone_mode_from_string(changes->mode) == CLONE_MODE_DIRECT && !changes->storage)
                s.storage = NULL;
        r = validate(m, &s, &res, error);
        for (size_t i = 0; r >= 0 && i < c->n_targets; i++)
                r = files_check(c->targets[i]->files, res.identity, error);
        if (r >= 0 && res.target) {
                CloneTarget *other = clone_target_of_node(c, res.target->id);
                if (other && other != first)
                        r = sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                              "%s is target %" PRIu32 " of session %s already.",
                                              res.target->hostname, other->index, c->id);
        }
        if (r < 0 || check_only)
                return r;

        /* The new values in fresh strings, so that a failure leaves c untouched. */
        CloneSession updated = *c;
        CloneTarget target = {}, *fresh = NULL;
        updated.name = updated.source_node = updated.source_device = updated.staging_backend = NULL;
        updated.staging_status = res.mode == CLONE_MODE_STAGED ? STAGING_PENDING : STAGING_NONE;
        r = dup_fields(&updated, &s, &res);
        if (r >= 0 && res.target && first) {
                target = *first;
                target.node = strdup(res.target->id);
                target.device = strdup(s.target_device);
                target.resize_mode = res.resize_mode;
                if (!target.node || !target.device)
                        r = -ENOMEM;
        } else if (r >= 0 && res.target &&
                   !(fresh = target_new(c, 1, res.target->id, s.target_device, res.resize_mode, NULL)))
                r = -ENOMEM;
        if (r >= 0)
                r = clone_transact(c, write_update, &(Update){ &updated, fresh ?: res.target ? &target : NULL, fresh },
                                   error);
        char **old[] = { &c->name, &c->source_node, &c->source_device, &c->staging_backend };
        char **new[] = { &updated.name, &updated.source_node, &updated.source_device, &updated.staging_backend };
        for (size_t i = 0; i < ELEMENTSOF(old); i++) {
                if (r >= 0)
                        SWAP(*old[i], *new[i]);
                free(*new[i]);
        }
        if (r >= 0 && first && res.target) {
                SWAP(first->node, target.node);
                SWAP(first->device, target.device);
                first->resize_mode = target.resize_mode;
        }
        free(target.node);
        free(target.device);
        if (r >= 0 && fresh)
                r = clone_attach_target(c, TAKE_PTR(fresh));
        clone_target_free(fresh);
        if (r < 0)
                return r;
        c->mode = updated.mode;
        c->resize_mode = updated.resize_mode;
        c->identity = updated.identity;
        c->unused = updated.unused;
        c->staging_status = updated.staging_status;
        clone_emit_changed(c, "Name", "Mode", "SourceNode", "TargetNode", "SourceDevice", "TargetDevice",
                           "StagingBackend", "StagingStatus", "ResizeMode", "Identity", "Unused", "Targets",
                           NULL);
        if ((first = clone_first_target(c))) {
                clone_target_emit_changed(first, "Node", "Device", "ResizeMode", NULL);
                replan(first);
        }
        return 0;
}

static const char *transition_hint(CloneStatus from, CloneStatus to) {
        if (to == CLONE_WAITING)
                return from == CLONE_COMPLETED || from == CLONE_CANCELLED
                               ? "a finished session cannot be started again; create a new one"
                               : "it has already been started";
        if (to == CLONE_CANCELLED)
                return "only pending or running sessions can be cancelled";
        return "that step does not follow from this state";
}

int clone_digest_verdict(const char *source, const char *target, CloneStatus *ret_to, char **ret_message) {
        *ret_message = NULL;
        *ret_to = streq(source, target) ? CLONE_COMPLETED : CLONE_FAILED;
        if (*ret_to == CLONE_FAILED && asprintf(ret_message, "The target's digest %s differs from the source's %s: the "
                                                "copy is not what was read. Start the session again.",
                                                target, source) < 0)
                return -ENOMEM;
        return 0;
}

static int node_busy_elsewhere(CloneSession *c, const char *node_id, CloneSession **ret) {
        CloneSession *o;
        HASHMAP_FOREACH (o, c->manager->sessions, i) {
                CloneTarget *t = o != c ? clone_target_of_node(o, node_id) : NULL;
                if (o != c && clone_status_is_active(o->status) &&
                    (streq_ptr(o->source_node, node_id) || (t && clone_status_is_active(t->status)))) {
                        *ret = o;
                        return 1;
                }
        }
        return 0;
}

/* Once a session is over, its nodes are no longer cloning_source or cloning_target (the states their boot
 * answers gave them), unless another session of theirs goes on. */
static void release_node(CloneSession *c, const char *id) {
        Node *n = id ? hashmap_get(c->manager->nodes, id) : NULL;
        CloneSession *other;
        int r;

        if (!n || !IN_SET(n->state, NODE_CLONING_SOURCE, NODE_CLONING_TARGET) || node_busy_elsewhere(c, n->id, &other))
                return;
        n->state = NODE_READY;
        r = node_save(n);
        if (r < 0)
                log_warning_errno(r, "Failed to record that node %s is ready again: %m", n->hostname);
}

static void release_nodes_of(Manager *m, const char *id) {
        CloneSession *c = hashmap_get(m->sessions, id);
        if (!c || !clone_status_is_final(c->status))
                return;
        release_node(c, c->source_node);
        for (size_t i = 0; i < c->n_targets; i++)
                release_node(c, c->targets[i]->node);
        if (c->power_off)
                clone_power_nodes(c, "off");
}

void clone_changed_of(Manager *m, const char *id) {
        CloneSession *c = hashmap_get(m->sessions, id);
        int r;
        /* The staging goes once no target needs it any more, unless an image keeps it. */
        image_capture_changed(m, id);
        if (c && !clone_status_is_active(c->status) && staging_is_left(c) && (r = staging_cleanup(c)) < 0)
                log_warning_errno(r, "Failed to start removing the staging of session %s: %m", c->id);
}

/* The session's status from its targets', written if it changed. */
bool clone_captures_alone(CloneSession *c) {
        return c->n_targets == 0 && image_captured_by(c);
}

/* Writes the session's status, and its own error (that of a session that captures alone; else none). */
static int set_status(CloneSession *c, CloneStatus to, const char *error_message, sd_bus_error *error) {
        CloneStatus from = c->status;
        uint64_t completed_at = c->completed_at;
        _cleanup_free_ char *message = NULL;
        int r;

        if (to == from)
                return 0;
        if (error_message && !(message = strdup(error_message)))
                return -ENOMEM;
        c->status = to;
        if (clone_status_is_final(to))
                c->completed_at = now_realtime_usec();
        SWAP(c->error, message);
        r = store_session_update(c->manager->store, c, NULL);
        if (r < 0) {
                c->status = from;
                c->completed_at = completed_at;
                SWAP(c->error, message);
                return r == -ENOMEM ? r : bus_store_error(error, r, "record the session's new state");
        }
        log_info("Clone session %s: %s → %s", c->id, clone_status_to_string(from), clone_status_to_string(to));
        clone_emit_changed(c, "Status", "Error", "CompletedAt", NULL);
        /* What follows from it builds on what was kept: once the caller's transaction committed. */
        if (clone_status_is_final(to))
                manager_after_commit(c->manager, release_nodes_of, c->id);
        manager_after_commit(c->manager, clone_changed_of, c->id);
        return 0;
}

/* The session's status from its targets', written if it changed. A session that captures alone takes its
 * steps itself (capture_transition). */
static int refresh_status(CloneSession *c, sd_bus_error *error) {
        if (clone_captures_alone(c))
                return 0;
        return set_status(c, clone_status_of_targets(c->targets, c->n_targets), NULL, error);
}

/* A session that only captures an image is its own only target: it takes the steps by the same table. */
static int capture_transition(CloneSession *c, CloneStatus to, const char *error_message,
                              sd_bus_error *error) {
        if (!clone_target_can_become(c->status, to))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_STATE,
                                         "Session %s is %s and cannot become %s: %s.", c->id,
                                         clone_status_to_string(c->status), clone_status_to_string(to),
                                         transition_hint(c->status, to));
        return set_status(c, to, error_message, error);
}

int clone_capture_done(CloneSession *c, sd_bus_error *error) {
        int r = c->status == CLONE_SOURCE_READY ? capture_transition(c, CLONE_CLONING, NULL, error) : 0;
        return r < 0 ? r : capture_transition(c, CLONE_COMPLETED, NULL, error);
}

int clone_target_transition(CloneTarget *t, CloneStatus to, const char *error_message, sd_bus_error *error) {
        CloneSession *c = t->session;
        CloneStatus from = t->status;
        uint64_t now = now_realtime_usec();
        int r;
        assert(t && to < _CLONE_STATUS_MAX);

        if (!clone_target_can_become(from, to))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_STATE,
                                         "Target %" PRIu32 " of session %s is %s and cannot become %s: %s.",
                                         t->index, c->id, clone_status_to_string(from), clone_status_to_string(to),
                                         transition_hint(from, to));
        _cleanup_free_ char *new_error = NULL;
        if (error_message && !(new_error = strdup(error_message)))
                return -ENOMEM;
        /* The row first, from a copy with the new state; the target itself once it is stored. */
        CloneTarget updated = *t;
        updated.status = to;
        updated.error = new_error;
        if (to == CLONE_WAITING) {
                updated.started_at = now;
                updated.completed_at = 0;
                updated.bytes_transferred = updated.transfer_rate = 0;
                updated.digest = NULL; /* a retry is checked afresh */
                updated.notes = NULL;
        }
        if (clone_status_is_final(to))
                updated.completed_at = now;
        r = store_target_update(c->manager->store, &updated);
        if (r < 0)
                return r == -ENOMEM ? r : bus_store_error(error, r, "record the target's new state");
        t->status = to;
        free_and_replace(t->error, new_error);
        t->started_at = updated.started_at;
        t->completed_at = updated.completed_at;
        t->bytes_transferred = updated.bytes_transferred;
        t->transfer_rate = updated.transfer_rate;
        if (to == CLONE_WAITING) {
                t->digest = mfree(t->digest);
                json_object_put(t->notes);
                t->notes = NULL;
        }
        if (clone_status_is_final(to) || to == CLONE_WAITING)
                t->problem = mfree(t->problem);
        log_info("Clone session %s, target %" PRIu32 " (%s): %s → %s%s%s", c->id, t->index, t->device,
                 clone_status_to_string(from), clone_status_to_string(to), error_message ? ": " : "",
                 strempty(error_message));
        clone_target_emit_changed(t, "Status", "Error", "Problem", "StartedAt", "CompletedAt", "BytesTransferred",
                                  "TransferRate", "Progress", "Digest", NULL);
        clone_emit_changed(c, "Error", NULL);
        return refresh_status(c, error);
}

int clone_targets_transition(CloneSession *c, CloneStatus to, const char *error_message, sd_bus_error *error) {
        int r;
        if (clone_captures_alone(c)) {
                bool running = clone_status_is_active(c->status) ||
                               (c->status == CLONE_PENDING && to == CLONE_CANCELLED);
                return running && clone_target_can_become(c->status, to)
                               ? capture_transition(c, to, error_message, error)
                               : 0;
        }
        for (size_t i = 0; i < c->n_targets; i++) {
                CloneTarget *t = c->targets[i];
                bool running = clone_status_is_active(t->status) || (t->status == CLONE_PENDING && to == CLONE_CANCELLED);
                if (running && clone_target_can_become(t->status, to) &&
                    (r = clone_target_transition(t, to, error_message, error)) < 0)
                        return r;
        }
        return 0;
}

int clone_target_verdict(CloneTarget *t, sd_bus_error *error) {
        const char *source = t->session->source_digest;
        _cleanup_free_ char *message = NULL;
        CloneStatus to;
        int r;

        if (!source || !t->digest || !IN_SET(t->status, CLONE_SOURCE_READY, CLONE_CLONING))
                return 0;
        if (clone_digest_verdict(source, t->digest, &to, &message) < 0)
                return -ENOMEM;
        /* The table has no shortcut from source_ready to the end: take the cloning step on the way. */
        if (to == CLONE_COMPLETED && t->status == CLONE_SOURCE_READY &&
            (r = clone_target_transition(t, CLONE_CLONING, NULL, error)) < 0)
                return r;
        return clone_target_transition(t, to, message, error);
}

/* What clone_start does, inside its transaction. */
static int start_step(CloneSession *c, void *userdata, sd_bus_error *error) {
        int r;
        (void) userdata;
        /* A staged session (re)starts with its staging to be provisioned when the source reports. */
        c->started_at = now_realtime_usec();
        c->completed_at = 0;
        c->bytes_uploaded = 0;
        c->source_digest = mfree(c->source_digest);
        c->stored_bytes = 0;
        strv_free(c->power_notes);
        c->power_notes = NULL;
        json_object_put(c->source_notes);
        c->source_notes = NULL;
        if (c->mode == CLONE_MODE_STAGED)
                c->staging_status = STAGING_PENDING;
        /* An image is a source that is ready: what it holds is staged already, and its digest known. */
        Image *image = c->image ? image_of_session(c) : NULL;
        if (image) {
                c->staging_status = STAGING_READY;
                c->source_digest = strdup(image->digest);
                if (!c->source_digest)
                        return -ENOMEM;
                c->stored_bytes = image->stored;
        }
        if (clone_captures_alone(c) && (r = capture_transition(c, CLONE_WAITING, NULL, error)) < 0)
                return r;
        for (size_t i = 0; i < c->n_targets; i++) {
                CloneTarget *t = c->targets[i];
                if (IN_SET(t->status, CLONE_PENDING, CLONE_FAILED) &&
                    (r = clone_target_transition(t, CLONE_WAITING, NULL, error)) < 0)
                        return r;
                if (image && t->status == CLONE_WAITING &&
                    (r = clone_target_transition(t, CLONE_SOURCE_READY, NULL, error)) < 0)
                        return r;
        }
        r = store_session_update(c->manager->store, c, NULL);
        if (r < 0)
                return bus_store_error(error, r, "start the session");
        clone_emit_changed(c, "StartedAt", "CompletedAt", "BytesUploaded", "StagingStatus", "SourceDigest",
                           "StoredBytes", NULL);
        return 0;
}

/* The disk of the source (t NULL) or of target t: what its agent reported, else the node's last scan. */
static int session_disk(CloneSession *c, CloneTarget *t, DiskInfo *ret, sd_bus_error *error) {
        const char *role = t ? "target" : "source";
        const char *reported = t ? t->disk_json : c->source_disk_json;
        const char *node_id = t ? t->node : c->source_node;
        const char *device = t ? t->device : c->source_device;
        const char *bad = NULL;
        Node *n;
        Disk *d;
        int r;

        if (reported) {
                _cleanup_(json_object_unrefp) json_object *o = json_tokener_parse(reported);
                r = o ? disk_info_from_json(o, ret, &bad) : -EINVAL;
                return r == -ENOMEM ? r : r < 0 ? log_error_errno(EBADMSG, "Session %s has a bad %s disk.", c->id, role) : 0;
        }
        n = node_id ? hashmap_get(c->manager->nodes, node_id) : NULL;
        if (!n)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_STATE,
                                         "Session %s has no %s disk to plan with yet: it has no %s node, and no %s "
                                         "agent has reported its disk. Start the session (its agents report "
                                         "their disks) and ask again.",
                                         c->id, role, role, role);
        r = disk_resolve(n, device, &d, error);
        if (r < 0)
                return r;
        return disk_info_copy(&d->info, ret);
}

int clone_start(CloneSession *c, sd_bus_error *error) {
        Manager *m = c->manager;
        CloneSession *other;
        int r;
        assert(c);

        if (!clone_target_can_become(c->status, CLONE_WAITING))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_STATE,
                                         "Session %s is %s and cannot become waiting: %s.", c->id,
                                         clone_status_to_string(c->status), transition_hint(c->status, CLONE_WAITING));
        if (c->n_targets == 0 && !clone_captures_alone(c))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_STATE,
                                         "Session %s has no target: name one (purebootctl clone update %s "
                                         "--target=NODE, or clone add-target) and start it again.",
                                         c->id, c->id);
        if (!c->source_node) {
                Image *image = c->image ? hashmap_get(m->images, c->image) : NULL;
                if (!image)
                        return sd_bus_error_setf(error, PB_ERROR_INVALID_STATE,
                                                 "Session %s deploys an image that was deleted; create a "
                                                 "session for an image that is ready.",
                                                 c->id);
                r = image_check_deployable(image, error);
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; i <= c->n_targets; i++) { /* the source, then each target */
                const char *id = i == 0 ? c->source_node : c->targets[i - 1]->node;
                Node *n = id ? hashmap_get(m->nodes, id) : NULL;
                if (n && node_busy_elsewhere(c, n->id, &other))
                        return sd_bus_error_setf(
                                error, PB_ERROR_IN_USE,
                                "Node %s is busy with clone session %s (%s); wait for it or "
                                "cancel it first.",
                                n->hostname, other->id, clone_status_to_string(other->status));
        }

        /* A disk that is not there or cannot take the copy, as the machines last said, stops it before any
         * of them boots; a plan that cannot work, before any byte moves. */
        for (size_t i = 0; i < c->n_targets; i++) {
                CloneTarget *t = c->targets[i];
                r = inventory_check(c->source_node ? hashmap_get(m->nodes, c->source_node) : NULL,
                                    c->source_device, c->image ? hashmap_get(m->images, c->image) : NULL,
                                    hashmap_get(m->nodes, t->node), t->device, t->resize_mode, error);
                if (r < 0)
                        return r;
                replan(t);
                _cleanup_(json_object_unrefp) json_object *plan = clone_plan_json(t);
                if (t->resize_mode != RESIZE_NONE && plan && !plan_is_feasible(plan))
                        return sd_bus_error_setf(error, PB_ERROR_PLAN_INFEASIBLE,
                                                 "%s Edit the plan (purebootctl clone plan %s --edit …) or change "
                                                 "the session's resize mode or disks.",
                                                 strna(json_get_string(plan, "reason")), c->id);
        }

        /* Staging space, if both the source's size and the backend's space are known already. */
        if (c->mode == CLONE_MODE_STAGED && !c->image) {
                _cleanup_(json_object_unrefp) json_object *plan = clone_plan_json(clone_first_target(c));
                _cleanup_(disk_info_done) DiskInfo scanned = {};
                sd_bus_error e = SD_BUS_ERROR_NULL;
                uint64_t size = plan && plan_is_feasible(plan) ? (uint64_t) json_get_int(plan, "copyBytes")
                                : session_disk(c, NULL, &scanned, &e) >= 0 ? scanned.size
                                                                           : 0;
                sd_bus_error_free(&e);
                r = staging_check_space(c, size, error);
                if (r < 0)
                        return r;
        }
        /* Tokens are minted when asked for: by a boot answer, or by an operator (IssueBootToken). */
        r = clone_transact(c, start_step, NULL, error);
        if (r >= 0 && c->power_cycle) /* its machines boot from the network, into the session */
                clone_power_nodes(c, "netboot");
        return r;
}

/* What clone_add_target would refuse spec for; *ret the node and the resize mode. */
static int added_target_check(CloneSession *c, const TargetSpec *spec, Node **ret_node,
                              ResizeMode *ret_resize, sd_bus_error *error) {
        Node *n;
        int r;

        if (isempty(spec->node))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT, "Name the target node to add.");
        r = device_check(spec->device, "Target", error);
        if (r >= 0)
                r = resize_mode_parse(spec->resize_mode ?: resize_mode_to_string(c->resize_mode), ret_resize,
                                      error);
        if (r >= 0)
                r = files_check(spec->files, c->identity, error);
        if (r >= 0)
                r = node_resolve(c->manager, spec->node, &n, error);
        if (r >= 0)
                r = inventory_check(c->source_node ? hashmap_get(c->manager->nodes, c->source_node) : NULL,
                                    c->source_device,
                                    c->image ? hashmap_get(c->manager->images, c->image) : NULL, n,
                                    spec->device, *ret_resize, error);
        if (r < 0)
                return r;
        if (clone_status_is_final(c->status) && c->status != CLONE_FAILED)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_STATE,
                                         "Session %s is %s; add targets to a session that can still run.", c->id,
                                         clone_status_to_string(c->status));
        if (c->n_targets >= CLONE_TARGETS_MAX)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_STATE,
                                         "Session %s has %d targets, as many as a session takes; start another "
                                         "session for more.",
                                         c->id, CLONE_TARGETS_MAX);
        if (streq_ptr(n->id, c->source_node))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "%s is the source of session %s; a target must be another node.",
                                         n->hostname, c->id);
        CloneTarget *t = clone_target_of_node(c, n->id);
        if (t)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "%s is target %" PRIu32 " of session %s already.", n->hostname, t->index,
                                         c->id);
        CloneSession *other;
        if (clone_status_is_active(c->status) &&
            node_busy_elsewhere(c, n->id, &other)) /* it would start now */
                return sd_bus_error_setf(
                        error, PB_ERROR_IN_USE,
                        "Node %s is busy with clone session %s (%s); wait for it or cancel it "
                        "first.",
                        n->hostname, other->id, clone_status_to_string(other->status));
        *ret_node = n;
        return 0;
}

int clone_add_target_check(CloneSession *c, const TargetSpec *spec, sd_bus_error *error) {
        ResizeMode resize;
        Node *n;
        return added_target_check(c, spec, &n, &resize, error);
}

/* What clone_add_target does, inside its transaction: a target added to a running session starts at once,
 * where the others are. */
static int add_step(CloneSession *c, void *userdata, sd_bus_error *error) {
        CloneTarget *t = userdata;
        CloneStatus at = c->status;
        int r = store_target_insert(c->manager->store, t);
        if (r < 0)
                return bus_store_error(error, r, "add the target");
        if (clone_status_is_active(at))
                r = clone_target_transition(t, CLONE_WAITING, NULL, error);
        if (r >= 0 && IN_SET(at, CLONE_SOURCE_READY, CLONE_CLONING))
                r = clone_target_transition(t, CLONE_SOURCE_READY, NULL, error);
        return r;
}

int clone_add_target(CloneSession *c, const TargetSpec *spec, CloneTarget **ret, sd_bus_error *error) {
        ResizeMode resize = RESIZE_NONE;
        CloneTarget *t;
        Node *n = NULL;
        int r;

        r = added_target_check(c, spec, &n, &resize, error);
        if (r < 0)
                return r;
        t = target_new(c, c->n_targets + 1, n->id, spec->device, resize, spec->files);
        r = t ? clone_attach_target(c, t) : -ENOMEM;
        if (r < 0)
                return r;
        r = clone_transact(c, add_step, t, error);
        if (r < 0) { /* as if never asked */
                detach_last_target(c);
                return r;
        }
        log_info("Clone session %s: target %" PRIu32 " added, %s on %s.", c->id, t->index, t->device, n->hostname);
        clone_emit_changed(c, "Targets", NULL);
        replan(t);
        *ret = t;
        return 0;
}

typedef struct End {
        CloneStatus to;
        const char *message;
} End;

static int end_step(CloneSession *c, void *userdata, sd_bus_error *error) {
        End *end = userdata;
        return clone_targets_transition(c, end->to, end->message, error);
}

int clone_end(CloneSession *c, CloneStatus to, const char *message, sd_bus_error *error) {
        assert(IN_SET(to, CLONE_FAILED, CLONE_CANCELLED));
        return clone_transact(c, end_step, &(End){ to, message }, error);
}

int clone_cancel(CloneSession *c, sd_bus_error *error) {
        assert(c);
        bool alone = c->n_targets == 0 && !clone_captures_alone(c);
        if (!clone_target_can_become(c->status, CLONE_CANCELLED) || alone)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_STATE,
                                         "Session %s is %s and cannot become cancelled: %s.", c->id,
                                         clone_status_to_string(c->status),
                                         alone ? "it has no target; delete it instead"
                                               : transition_hint(c->status, CLONE_CANCELLED));
        return clone_end(c, CLONE_CANCELLED, "Cancelled by an administrator.", error);
}

int clone_delete(CloneSession *c, bool *ret_cancelled, sd_bus_error *error) {
        Manager *m = c->manager;
        _cleanup_free_ char *path = clone_path(c), *id = strdup(c->id);
        int r;
        assert(c && ret_cancelled);

        if (!path || !id)
                return -ENOMEM;
        if (clone_status_is_active(c->status)) {
                r = clone_cancel(c, error);
                if (r < 0)
                        return r;
                *ret_cancelled = true;
                return 0;
        }
        if (staging_is_left(c) && (r = staging_cleanup(c)) < 0)
                return r;
        if (staging_is_left(c)) { /* still: the removal runs in a worker */
                return sd_bus_error_setf(error, PB_ERROR_INVALID_STATE,
                                         "The staging of session %s is being removed; delete the session again "
                                         "once StagingStatus is deleted.",
                                         c->id);
        }
        r = store_session_delete(m->store, c->id); /* its targets with it */
        if (r < 0)
                return bus_store_error(error, r, "delete the session");
        bus_target_emit_all(c, false);
        detach(c);
        clone_free(c);
        bus_manager_emit_removed(m, "CloneSessionRemoved", id, path);
        image_capture_changed(m, id); /* a name it reserved and did not fill is free again */
        *ret_cancelled = false;
        return 0;
}

int clone_issue_token(CloneSession *c, const char *role, char **ret_token, sd_bus_error *error) {
        _cleanup_free_ char *name = NULL;
        uint32_t index = 0;
        int r = clone_role_parse(role, &index);
        CloneTarget *t = clone_target(c, index);
        assert(c && role);

        if (r < 0)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "Unknown role \"%.32s\"; use source, target (the first) or "
                                         "target-<n>.",
                                         role);
        if (clone_status_is_final(c->status) && c->status != CLONE_FAILED)
                return sd_bus_error_setf(
                        error, PB_ERROR_INVALID_STATE,
                        "Session %s is %s; tokens are issued only for sessions that can still run.", c->id,
                        clone_status_to_string(c->status));
        if (index == 0 && !c->source_node)
                return sd_bus_error_setf(
                        error, PB_ERROR_INVALID_ARGUMENT,
                        "Session %s deploys an image: it has no source node to give a token.", c->id);
        if (index > 0 && !t)
                return c->n_targets == 0 ? sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                                             "Session %s has no target node; set one with Update "
                                                             "first.",
                                                             c->id)
                                         : sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                                             "Session %s has no target %" PRIu32 "; it has %zu.",
                                                             c->id, index, c->n_targets);
        if (!ret_token)
                return 0;
        if (t && clone_target_role(t->index, &name) < 0)
                return -ENOMEM;
        r = token_mint(c->manager, t ? t->node : c->source_node, c->id, name ?: "source", NULL, ret_token);
        return r < 0 && r != -ENOMEM ? bus_store_error(error, r, "mint the token") : r;
}

int clone_target_set_progress(CloneTarget *t, uint64_t bytes_transferred, uint64_t rate) {
        t->bytes_transferred = bytes_transferred;
        t->transfer_rate = rate;
        return throttle_kick(&t->progress);
}

json_object *clone_node_view(CloneSession *c, bool source, CloneTarget *t) {
        json_object *o = json_object_new_object();
        /* The source (and a node that only reads) sees the session with its first target. */
        CloneTarget *shown = t ?: clone_first_target(c);
        const char *error = t ? t->error : clone_error(c);
#define ADD(k, v) json_object_object_add(o, k, v)
        ADD("id", json_object_new_string(c->id));
        ADD("name", json_object_new_string(c->name));
        ADD("status", json_object_new_string(clone_status_to_string(t ? t->status : c->status)));
        ADD("mode", json_object_new_string(clone_mode_to_string(c->mode)));
        ADD("role", source ? json_object_new_string("source") : t ? json_object_new_string("target") : NULL);
        ADD("sourceDevice", c->source_device ? json_object_new_string(c->source_device) : NULL);
        ADD("image", c->image ? json_object_new_string(c->image) : NULL);
        ADD("targetDevice", shown ? json_object_new_string(shown->device) : NULL);
        ADD("sourceAddress", c->source_address ? json_object_new_string(c->source_address) : NULL);
        ADD("sourcePort", c->source_port ? json_object_new_int(c->source_port) : NULL);
        ADD("sizeBytes", json_object_new_int64((int64_t) c->bytes_total));
        ADD("bytesTransferred", json_object_new_int64((int64_t) (shown ? shown->bytes_transferred : 0)));
        ADD("resizeMode", json_object_new_string(resize_mode_to_string(shown ? shown->resize_mode : c->resize_mode)));
        ADD("identity", json_object_new_string(clone_identity_to_string(c->identity)));
        ADD("unused", json_object_new_string(clone_unused_to_string(c->unused)));
        /* A target's own name, which its clone takes (identity auto). */
        Node *node = t ? hashmap_get(c->manager->nodes, t->node) : NULL;
        ADD("targetHostname", node ? json_object_new_string(node->hostname) : NULL);
        ADD("files", t && t->files ? json_object_get(t->files) : NULL); /* its own, to it alone */
        ADD("stagingStatus", c->staging_status != STAGING_NONE
                                     ? json_object_new_string(staging_status_to_string(c->staging_status))
                                     : NULL);
        ADD("plan", shown ? clone_plan_json(shown) : NULL);
        ADD("error", error ? json_object_new_string(error) : NULL);
        const char *source_serial = clone_certificate(c, NULL), *target = shown ? clone_certificate(c, shown) : NULL;
        ADD("sourceCertificate", source_serial ? json_object_new_string(source_serial) : NULL);
        ADD("targetCertificate", target ? json_object_new_string(target) : NULL);
        if (t) {
                /* Where it pulls from: the source, or in a chain the target before it. */
                CloneTarget *up = chain_upstream(t);
                _cleanup_free_ char *up_name = NULL;
                const char *up_serial = clone_certificate(c, up);
                if (chain_upstream_name(t, &up_name) >= 0 && !up && c->mode == CLONE_MODE_STAGED)
                        ADD("upstreamName", json_object_new_string(up_name)); /* GetStaging says where */
                else if (up_name) {
                        ADD("upstreamName", json_object_new_string(up_name));
                        /* None yet: an upstream target that has not said where it forwards. */
                        const char *address = up ? up->relay_address : c->source_address;
                        uint16_t port = up ? up->relay_port : c->source_port;
                        ADD("upstreamAddress", address ? json_object_new_string(address) : NULL);
                        ADD("upstreamPort", port ? json_object_new_int(port) : NULL);
                        ADD("upstreamCertificate", up_serial ? json_object_new_string(up_serial) : NULL);
                }
                ADD("forward", json_object_new_boolean(chain_forwards(t)));
        }
        if (source || chain_of(c)) {
                json_object *serials = json_object_new_object();
                for (size_t i = 0; serials && i < c->n_targets; i++) {
                        _cleanup_free_ char *role = NULL, *cn = NULL;
                        const char *serial = clone_certificate(c, c->targets[i]);
                        if (serial && clone_target_role(c->targets[i]->index, &role) >= 0 &&
                            identity_name(NULL, c->id, role, &cn) >= 0)
                                json_object_object_add(serials, cn, json_object_new_string(serial));
                }
                ADD("targetCertificates", serials);
        }
#undef ADD
        return o;
}

int clone_resolve(Manager *m, const char *name, CloneSession **ret, sd_bus_error *error) {
        CloneSession *c, *found = NULL;
        size_t matches = 0;
        assert(m && ret);

        if (isempty(name))
                return sd_bus_error_setf(error, PB_ERROR_NO_SUCH_SESSION, "No session given.");
        c = hashmap_get(m->sessions, name);
        if (c) {
                *ret = c;
                return 0;
        }
        HASHMAP_FOREACH (c, m->sessions, i)
                if (streq(c->name, name) || (strlen(name) >= 4 && startswith(c->id, name))) {
                        found = c;
                        matches++;
                }
        if (matches == 1) {
                *ret = found;
                return 0;
        }
        if (matches > 1)
                return sd_bus_error_setf(error, PB_ERROR_NO_SUCH_SESSION,
                                         "\"%.64s\" matches %zu sessions; use the session id.", name,
                                         matches);
        return sd_bus_error_setf(
                error, PB_ERROR_NO_SUCH_SESSION,
                "No clone session \"%.64s\": give an id, a unique id prefix of at least 4 digits "
                "or a unique name (purebootctl clone list shows them).",
                name);
}

json_object *clone_plan_json(CloneTarget *t) {
        return t && t->plan_json ? json_tokener_parse(t->plan_json) : NULL;
}

/* Replaces one string field of the source's (t NULL) or of target t in memory and in the store (value
 * taken), or neither. */
static int set_field(CloneSession *c, CloneTarget *t, char **field, char *value, const char *what,
                     sd_bus_error *error) {
        char *old = *field;
        int r;
        *field = value;
        r = t ? store_target_update(c->manager->store, t) : store_session_update(c->manager->store, c, NULL);
        if (r < 0) {
                *field = old;
                free(value);
                return r == -ENOMEM ? r : bus_store_error(error, r, what);
        }
        free(old);
        return 0;
}

/* For a target after the first: the source as the session uploads it, with the first target's plan's
 * shrinks applied and only its copyBytes long. */
static int as_uploaded(CloneSession *c, DiskInfo *source, sd_bus_error *error) {
        _cleanup_(json_object_unrefp) json_object *plan = clone_plan_json(clone_first_target(c));
        json_object *ops = NULL;

        if (!plan)
                return 0; /* uploaded as it is */
        if (!plan_is_feasible(plan))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_STATE,
                                         "The plan of session %s's first target, which the upload follows, is "
                                         "not feasible: %s",
                                         c->id, strna(json_get_string(plan, "reason")));
        json_object_object_get_ex(plan, "source", &ops);
        for (size_t i = 0; i < json_object_array_length(ops); i++) {
                json_object *op = json_object_array_get_idx(ops, i), *params = NULL;
                _cleanup_free_ char *message = NULL;
                json_object_object_get_ex(op, "parameters", &params);
                int r = disk_info_apply(source, strna(json_get_string(op, "operation")), params, &message);
                if (r < 0)
                        return r == -ENOMEM ? r : sd_bus_error_setf(error, PB_ERROR_INVALID_STATE, "%s", strna(message));
        }
        source->size = MIN(source->size, (uint64_t) json_get_int(plan, "copyBytes"));
        return 0;
}

json_object *clone_uploaded_disk(CloneSession *c) {
        _cleanup_(disk_info_done) DiskInfo source = {};
        sd_bus_error e = SD_BUS_ERROR_NULL;
        json_object *o = NULL;

        if (session_disk(c, NULL, &source, &e) >= 0 && as_uploaded(c, &source, &e) >= 0) {
                source.size = c->bytes_total ?: source.size;
                o = disk_info_to_json(&source);
        }
        sd_bus_error_free(&e);
        return o;
}

/* A target after the first cannot ask the shared source for shrinks of its own, nor any target an image. */
static int refuse_source_changes(CloneTarget *t, json_object *plan) {
        json_object *ops = NULL;
        _cleanup_free_ char *reason = NULL;
        if ((t->index == 1 && !t->session->image) || !plan_is_feasible(plan) ||
            !json_object_object_get_ex(plan, "source", &ops) || json_object_array_length(ops) == 0)
                return 0;
        if (t->session->image
                    ? asprintf(&reason,
                               "This target needs the source shrunk, and session %s deploys an "
                               "image, which does not change. Pick a target at least as large as the "
                               "image, or grow_target.",
                               t->session_id) < 0
                    : asprintf(&reason,
                               "This target needs the source shrunk further than the plan of "
                               "session %s's first target does; it shares that upload. Make the "
                               "smallest target the first, or edit its plan.",
                               t->session_id) < 0)
                return -ENOMEM;
        json_object_object_add(plan, "feasible", json_object_new_boolean(false));
        json_object_object_add(plan, "reason", json_object_new_string(reason));
        json_object_object_add(plan, "source", json_object_new_array());
        json_object_object_add(plan, "target", json_object_new_array());
        return 0;
}

int clone_plan(CloneTarget *t, json_object *edits, bool refuse_infeasible, sd_bus_error *error) {
        CloneSession *c = t->session;
        _cleanup_(disk_info_done) DiskInfo source = {}, target = {};
        _cleanup_(json_object_unrefp) json_object *old = clone_plan_json(t), *plan = NULL;
        json_object *kept = NULL;
        char *text;
        int r;

        if (clone_status_is_final(t->status) && t->status != CLONE_FAILED) /* a failed one may run again */
                return sd_bus_error_setf(error, PB_ERROR_INVALID_STATE,
                                         "Session %s is %s; its plan no longer changes.", c->id,
                                         clone_status_to_string(t->status));
        if (edits && t->status == CLONE_CLONING)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_STATE,
                                         "Session %s is copying already; cancel it to change the plan.", c->id);
        r = session_disk(c, NULL, &source, error);
        if (r >= 0)
                r = session_disk(c, t, &target, error);
        if (r >= 0 && t->index > 1)
                r = as_uploaded(c, &source, error);
        if (r < 0)
                return r;
        if (!edits && old)
                (void) json_object_object_get_ex(old, "edits", &kept);
        plan = plan_compute(&source, &target, t->resize_mode, edits ?: kept);
        if (!plan || refuse_source_changes(t, plan) < 0)
                return -ENOMEM;
        if (refuse_infeasible && !plan_is_feasible(plan))
                return sd_bus_error_setf(error, PB_ERROR_PLAN_INFEASIBLE, "%s",
                                         strna(json_get_string(plan, "reason")));
        text = strdup(json_object_to_json_string_ext(plan, JSON_C_TO_STRING_PLAIN));
        if (!text)
                return -ENOMEM;
        if (streq_ptr(text, t->plan_json)) {
                free(text);
                return 0;
        }
        r = set_field(c, t, &t->plan_json, text, "record the session's plan", error);
        if (r < 0)
                return r;
        log_info("Clone session %s, target %" PRIu32 ": resize plan %s%s%s.", c->id, t->index,
                 plan_is_feasible(plan) ? "feasible" : "infeasible", plan_is_feasible(plan) ? "" : ": ",
                 plan_is_feasible(plan) ? "" : strna(json_get_string(plan, "reason")));
        clone_target_emit_changed(t, "Plan", NULL);
        /* The targets after the first plan from what it uploads. */
        for (size_t i = 1; t->index == 1 && i < c->n_targets; i++)
                if (c->targets[i]->disk_json)
                        replan(c->targets[i]);
        return 0;
}

int clone_report_disk(CloneSession *c, CloneTarget *t, json_object *disk, sd_bus_error *error) {
        _cleanup_(disk_info_done) DiskInfo info = {};
        const char *bad = NULL, *device = t ? t->device : c->source_device;
        char *text;
        int r;
        assert(c && disk);

        r = disk_info_from_json(disk, &info, &bad);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT, "The disk's \"%s\" is missing or malformed.",
                                         strna(bad));
        if (!streq(info.device, device))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT, "The session's %s device is %s, not %s.",
                                         t ? "target" : "source", device, info.device);
        text = strdup(json_object_to_json_string_ext(disk, JSON_C_TO_STRING_PLAIN));
        if (!text)
                return -ENOMEM;
        r = set_field(c, t, t ? &t->disk_json : &c->source_disk_json, text, "record the disk", error);
        if (r < 0 || !c->source_disk_json)
                return r;
        /* Both disks known (again): the plans follow them, keeping the user's edits. */
        for (size_t i = 0; i < c->n_targets; i++) {
                CloneTarget *p = c->targets[i];
                sd_bus_error e = SD_BUS_ERROR_NULL;
                if ((t && p != t) || !p->disk_json)
                        continue;
                r = clone_plan(p, NULL, false, &e);
                if (r < 0)
                        log_warning("Clone session %s, target %" PRIu32 ": no plan from the reported disks: %s",
                                    c->id, p->index, e.message ?: strerror(-r));
                sd_bus_error_free(&e);
        }
        return 0;
}
