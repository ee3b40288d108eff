/* SPDX-License-Identifier: MIT */
/* Clone sessions: what makes a session valid, and the state machine. Every status change goes through
 * clone_transition() and its table; nothing else writes c->status. */
#include <stdarg.h>

#include <assert.h>

#include "bus-gateway.h"
#include "bus-manager.h"
#include "bus-util.h"
#include "clone.h"
#include "disk.h"
#include "identity.h"
#include "log.h"
#include "node.h"
#include "plan.h"
#include "pureboot-errors.h"
#include "staging.h"
#include "storage.h"
#include "token.h"
#include "util.h"

/* transitions[from][to]: the whole state machine. A failed session may be started again (a retry). */
static const bool transitions[_CLONE_STATUS_MAX][_CLONE_STATUS_MAX] = {
        [CLONE_PENDING] = { [CLONE_WAITING] = true, [CLONE_CANCELLED] = true },
        [CLONE_WAITING] = { [CLONE_SOURCE_READY] = true, [CLONE_FAILED] = true, [CLONE_CANCELLED] = true },
        [CLONE_SOURCE_READY] = { [CLONE_CLONING] = true, [CLONE_FAILED] = true, [CLONE_CANCELLED] = true },
        [CLONE_CLONING] = { [CLONE_COMPLETED] = true, [CLONE_FAILED] = true, [CLONE_CANCELLED] = true },
        [CLONE_FAILED] = { [CLONE_WAITING] = true },
};

CloneSession *clone_free(CloneSession *c) {
        if (!c)
                return NULL;
        throttle_done(&c->progress);
        char **strings[] = { &c->id,
                             &c->name,
                             &c->source_node,
                             &c->target_node,
                             &c->source_device,
                             &c->target_device,
                             &c->source_address,
                             &c->staging_backend,
                             &c->staging_path,
                             &c->staging_resources,
                             &c->plan_json,
                             &c->source_disk_json,
                             &c->target_disk_json,
                             &c->follows,
                             &c->error,
                             &c->problem,
                             &c->idempotency_key,
                             &c->source_digest,
                             &c->target_digest };
        for (size_t i = 0; i < ELEMENTSOF(strings); i++)
                free(*strings[i]);
        strv_free(c->refused_claims);
        free(c);
        return NULL;
}

const char *clone_certificate(CloneSession *c, const char *role) {
        _cleanup_free_ char *cn = NULL;
        const Identity *i;
        if (identity_name(NULL, streq(role, "source") ? clone_owner(c)->id : c->id, role, &cn) < 0)
                return NULL;
        i = hashmap_get(c->manager->identities, cn);
        return i ? i->serial : NULL;
}

/* The last REFUSED_CLAIMS_MAX claims refused for the session's roles, newest last, for the operator. */
#define REFUSED_CLAIMS_MAX 16

void clone_note_refused_claim(CloneSession *c, const char *message) {
        size_t n = strv_length(c->refused_claims);
        if (n >= REFUSED_CLAIMS_MAX) {
                free(c->refused_claims[0]);
                memmove(c->refused_claims, c->refused_claims + 1, n * sizeof(char *)); /* with the NULL */
        }
        if (strv_extend(&c->refused_claims, message) < 0)
                return (void) log_oom();
        clone_emit_changed(c, "RefusedClaims", NULL);
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

CloneSession *clone_followed(CloneSession *c) {
        return c->follows ? hashmap_get(c->manager->sessions, c->follows) : NULL;
}

CloneSession *clone_owner(CloneSession *c) {
        return clone_followed(c) ?: c;
}

const char *clone_source_digest(CloneSession *c) {
        return clone_owner(c)->source_digest;
}

/* Every session following c (the targets added to it). */
#define FOREACH_FOLLOWER(o, c)                                                                              \
        HASHMAP_FOREACH (o, (c)->manager->sessions, _f)                                                     \
                if (!streq_ptr((o)->follows, (c)->id)) {                                                    \
                } else

static bool same_family(CloneSession *a, CloneSession *b) {
        return streq_ptr(a->follows, b->id) || streq_ptr(b->follows, a->id) ||
               (a->follows && streq_ptr(a->follows, b->follows));
}

void clone_emit_followers(CloneSession *c, const char *property) {
        CloneSession *o;
        FOREACH_FOLLOWER (o, c)
                clone_emit_changed(o, property, NULL);
}

static void emit_progress(void *userdata) {
        clone_emit_changed(userdata, "BytesTransferred", "TransferRate", "Progress", "BytesUploaded", NULL);
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

static void detach(CloneSession *c) {
        hashmap_remove(c->manager->sessions, c->id);
        if (c->idempotency_key)
                hashmap_remove(c->manager->session_keys, c->idempotency_key);
}

/* The checked, resolved form of a CloneSpec. */
typedef struct Resolved {
        Node *source, *target;
        StorageBackend *storage;
        CloneSession *follows;
        CloneMode mode;
        ResizeMode resize_mode;
} Resolved;

static int validate(Manager *m, const CloneSpec *s, Resolved *ret, sd_bus_error *error) {
        Resolved res = {};
        int r;

        if (!name_is_valid(s->name, 255))
                return sd_bus_error_setf(
                        error, PB_ERROR_INVALID_ARGUMENT,
                        "A session name is 1 to 255 bytes without control characters; this one "
                        "has %zu bytes.",
                        s->name ? strlen(s->name) : 0);
        r = clone_mode_from_string(s->mode);
        if (r < 0)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "Unknown clone mode \"%.32s\"; use direct or staged.",
                                         strempty(s->mode));
        res.mode = (CloneMode) r;
        r = resize_mode_from_string(s->resize_mode);
        if (r < 0)
                return sd_bus_error_setf(
                        error, PB_ERROR_INVALID_ARGUMENT,
                        "Unknown resize mode \"%.32s\"; use none, shrink_source or grow_target.",
                        strempty(s->resize_mode));
        res.resize_mode = (ResizeMode) r;
        if (!device_path_is_valid(s->source_device))
                return sd_bus_error_setf(
                        error, PB_ERROR_INVALID_ARGUMENT,
                        "Source device \"%.64s\" is not a device path: give an absolute path "
                        "under /dev/ without \"..\", such as /dev/sda.",
                        strempty(s->source_device));
        if (!device_path_is_valid(s->target_device))
                return sd_bus_error_setf(
                        error, PB_ERROR_INVALID_ARGUMENT,
                        "Target device \"%.64s\" is not a device path: give an absolute path "
                        "under /dev/ without \"..\", such as /dev/sda.",
                        strempty(s->target_device));
        r = node_resolve(m, s->source_node, &res.source, error);
        if (r < 0)
                return r;
        if (!isempty(s->target_node)) {
                r = node_resolve(m, s->target_node, &res.target, error);
                if (r < 0)
                        return r;
        }
        if (s->follows) {
                res.follows = hashmap_get(m->sessions, s->follows);
                if (!res.follows || res.follows->follows || res.follows->mode != CLONE_MODE_STAGED)
                        return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                                 "Only a staged session with a source of its own takes more "
                                                 "targets; %s is not one.",
                                                 s->follows);
                if (!res.target)
                        return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT, "Name the target node to add.");
                if (res.target == res.source)
                        return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                                 "%s is the source of session %s; a target must be another node.",
                                                 res.source->hostname, s->follows);
        }
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
        } else {
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
        }
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
        if (free_and_strdup(&c->name, s->name) < 0 ||
            free_and_strdup(&c->source_node, res->source->id) < 0 ||
            free_and_strdup(&c->target_node, res->target ? res->target->id : NULL) < 0 ||
            free_and_strdup(&c->source_device, s->source_device) < 0 ||
            free_and_strdup(&c->target_device, s->target_device) < 0 ||
            free_and_strdup(&c->staging_backend, res->storage ? res->storage->id : NULL) < 0 ||
            free_and_strdup(&c->follows, res->follows ? res->follows->id : NULL) < 0)
                return -ENOMEM;
        return 0;
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
        c->status = CLONE_PENDING;
        c->staging_status = res.mode == CLONE_MODE_STAGED ? STAGING_PENDING : STAGING_NONE;
        c->created_at = now_realtime_usec();
        c->created_by = uid;
        if (dup_fields(c, &s, &res) < 0 || free_and_strdup(&c->id, id) < 0 ||
            free_and_strdup(&c->idempotency_key, isempty(s.idempotency_key) ? NULL : s.idempotency_key) <
                    0) {
                clone_free(c);
                return -ENOMEM;
        }
        r = store_session_insert(m->store, c);
        if (r < 0) {
                clone_free(c);
                return bus_store_error(error, r, "create the session");
        }
        r = clone_attach(m, c);
        if (r < 0) {
                (void) store_session_delete(m->store, c->id);
                clone_free(c);
                return r;
        }
        *ret = c;
        return 0;
}

static int session_disk(CloneSession *c, const char *role, DiskInfo *ret, sd_bus_error *error);

/* The plan again from what is known now, if anything is: quietly, a missing disk is no error here. */
static void replan(CloneSession *c) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        if (c->plan_json || (clone_owner(c)->source_disk_json && c->target_disk_json))
                (void) clone_plan(c, NULL, false, &e);
        sd_bus_error_free(&e);
}

int clone_update(CloneSession *c, const CloneSpec *changes, bool check_only, sd_bus_error *error) {
        Manager *m = c->manager;
        CloneSession updated = *c;
        Resolved res = {};
        int r;
        assert(c && changes);

        if (c->status != CLONE_PENDING)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_STATE,
                                         "Session %s is %s; only pending sessions can be changed.", c->id,
                                         clone_status_to_string(c->status));
        if ((c->follows || clone_has_followers(c)) &&
            (changes->mode || changes->source_node || changes->source_device || changes->storage))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_STATE,
                                         "Session %s shares its source and staging with %s; change those before "
                                         "adding targets, or delete the added targets first.",
                                         c->id, c->follows ?: "its added targets");

        CloneSpec s = {
                .name = changes->name ?: c->name,
                .mode = changes->mode ?: clone_mode_to_string(c->mode),
                .source_node = changes->source_node ?: c->source_node,
                .target_node = changes->target_node ?: c->target_node,
                .source_device = changes->source_device ?: c->source_device,
                .target_device = changes->target_device ?: c->target_device,
                .storage = changes->storage ?: c->staging_backend,
                .resize_mode = changes->resize_mode ?: resize_mode_to_string(c->resize_mode),
        };
        /* Switching to direct mode drops the backend unless one was asked for explicitly. */
        if (changes->mode && streq(changes->mode, "direct") && !changes->storage)
                s.storage = NULL;
        r = validate(m, &s, &res, error);
        if (r < 0 || check_only)
                return r;

        /* Build the new values in fresh strings so a failure leaves c untouched. */
        updated.name = updated.source_node = updated.target_node = NULL;
        updated.source_device = updated.target_device = updated.staging_backend = NULL;
        r = dup_fields(&updated, &s, &res);
        if (r >= 0)
                r = store_session_update(m->store, &updated, "pending");
        char **old[] = { &c->name,          &c->source_node,   &c->target_node,
                         &c->source_device, &c->target_device, &c->staging_backend };
        char **new[] = { &updated.name,          &updated.source_node,   &updated.target_node,
                         &updated.source_device, &updated.target_device, &updated.staging_backend };
        for (size_t i = 0; i < ELEMENTSOF(old); i++) {
                if (r >= 0) {
                        free(*old[i]);
                        *old[i] = *new[i];
                } else
                        free(*new[i]);
        }
        if (r < 0)
                return r == -ENOMEM ? r : bus_store_error(error, r, "update the session");
        c->mode = updated.mode;
        c->resize_mode = updated.resize_mode;
        clone_emit_changed(c, "Name", "Mode", "SourceNode", "TargetNode", "SourceDevice", "TargetDevice",
                           "StagingBackend", "ResizeMode", NULL);
        replan(c);
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

bool clone_has_followers(CloneSession *c) {
        CloneSession *o;
        FOREACH_FOLLOWER (o, c)
                return true;
        return false;
}

/* Whether the session with the staging, or a target following it, still runs. */
static bool family_running(CloneSession *owner) {
        CloneSession *o;
        if (clone_status_is_active(owner->status))
                return true;
        FOREACH_FOLLOWER (o, owner)
                if (clone_status_is_active(o->status))
                        return true;
        return false;
}

/* A following target takes its source's steps: ready once the source reported, the source's digest once it
 * read everything (completing or failing the target against its own), and the end if the source's session
 * failed or was cancelled. */
static void follow_source(CloneSession *f) {
        CloneSession *p = clone_followed(f);
        _cleanup_free_ char *message = NULL;

        if (!p || !clone_status_is_active(f->status))
                return;
        if (IN_SET(p->status, CLONE_FAILED, CLONE_CANCELLED)) {
                if (asprintf(&message, "The session %s with the source is %s%s%s", p->id,
                             clone_status_to_string(p->status), p->error ? ": " : ".", strempty(p->error)) < 0)
                        return (void) log_oom();
                (void) clone_transition(f, p->status, message, NULL);
                return;
        }
        if (f->status == CLONE_WAITING && p->status != CLONE_WAITING) {
                f->bytes_total = p->bytes_total;
                (void) clone_transition(f, CLONE_SOURCE_READY, NULL, NULL);
                clone_emit_changed(f, "BytesTotal", NULL);
        }
        if (p->source_digest && !streq_ptr(f->source_digest, p->source_digest)) {
                if (free_and_strdup(&f->source_digest, p->source_digest) < 0)
                        return (void) log_oom();
                clone_emit_changed(f, "SourceDigest", NULL);
                if (f->target_digest && IN_SET(f->status, CLONE_SOURCE_READY, CLONE_CLONING)) {
                        CloneStatus to;
                        if (clone_digest_verdict(f->source_digest, f->target_digest, &to, &message) < 0)
                                return (void) log_oom();
                        if (to == CLONE_COMPLETED && f->status == CLONE_SOURCE_READY) /* the table's way there */
                                (void) clone_transition(f, CLONE_CLONING, NULL, NULL);
                        (void) clone_transition(f, to, message, NULL);
                }
        }
}

/* What a change of c means for its family: the targets following it follow its source, and the shared
 * staging goes once the session with the source and every target following it are over. */
void clone_family_changed(CloneSession *c) {
        CloneSession *owner = clone_owner(c), *o;
        int r;

        if (!c->follows) {
                FOREACH_FOLLOWER (o, c)
                        follow_source(o);
        }
        if (!family_running(owner) && staging_is_left(owner) && (r = staging_cleanup(owner)) < 0)
                log_warning_errno(r, "Failed to start removing the staging of session %s: %m", owner->id);
}

static int node_busy_elsewhere(CloneSession *c, const char *node_id, CloneSession **ret);

void clone_family_changed_of(Manager *m, const char *id) {
        CloneSession *c = hashmap_get(m->sessions, id);
        if (c)
                clone_family_changed(c);
}

/* Once a session is over, its nodes are no longer cloning_source or cloning_target (the states their boot
 * answers gave them), unless another session of theirs goes on. */
static void release_nodes(CloneSession *c) {
        const char *ids[] = { c->follows ? NULL : c->source_node, c->target_node };
        CloneSession *other;
        int r;

        for (size_t i = 0; i < ELEMENTSOF(ids); i++) {
                Node *n = ids[i] ? hashmap_get(c->manager->nodes, ids[i]) : NULL;
                if (!n || !IN_SET(n->state, NODE_CLONING_SOURCE, NODE_CLONING_TARGET) ||
                    node_busy_elsewhere(c, n->id, &other))
                        continue;
                n->state = NODE_READY;
                r = node_save(n);
                if (r < 0)
                        log_warning_errno(r, "Failed to record that node %s is ready again: %m",
                                          n->hostname);
        }
}

static void release_nodes_of(Manager *m, const char *id) {
        CloneSession *c = hashmap_get(m->sessions, id);
        if (c && clone_status_is_final(c->status))
                release_nodes(c);
}

int clone_transition(CloneSession *c, CloneStatus to, const char *error_message, sd_bus_error *error) {
        CloneStatus from = c->status;
        uint64_t now = now_realtime_usec();
        int r;
        assert(c && to < _CLONE_STATUS_MAX);

        if (to >= _CLONE_STATUS_MAX || !transitions[from][to])
                return sd_bus_error_setf(
                        error, PB_ERROR_INVALID_STATE, "Session %s is %s and cannot become %s: %s.", c->id,
                        clone_status_to_string(from), clone_status_to_string(to), transition_hint(from, to));

        _cleanup_free_ char *new_error = NULL;
        if (error_message) {
                new_error = strdup(error_message);
                if (!new_error)
                        return -ENOMEM;
        }
        /* The row first, from a copy with the new state; the session itself once it is stored. A staged
         * session (re)starts with its staging to be provisioned when the source reports. */
        CloneSession updated = *c;
        updated.status = to;
        updated.error = new_error;
        if (to == CLONE_WAITING) {
                updated.started_at = now;
                updated.completed_at = 0;
                updated.bytes_transferred = updated.transfer_rate = updated.bytes_uploaded = 0;
                if (c->mode == CLONE_MODE_STAGED && !c->follows)
                        updated.staging_status = STAGING_PENDING;
        }
        if (clone_status_is_final(to))
                updated.completed_at = now;
        r = store_session_update(c->manager->store, &updated, clone_status_to_string(from));
        if (r < 0)
                return r == -ENOMEM ? r : bus_store_error(error, r, "record the session's new state");
        c->status = to;
        free_and_replace(c->error, new_error);
        c->started_at = updated.started_at;
        c->completed_at = updated.completed_at;
        c->bytes_transferred = updated.bytes_transferred;
        c->transfer_rate = updated.transfer_rate;
        c->bytes_uploaded = updated.bytes_uploaded;
        c->staging_status = updated.staging_status;
        if (clone_status_is_final(to) || to == CLONE_WAITING)
                c->problem = mfree(c->problem);
        log_info("Clone session %s: %s → %s%s%s", c->id, clone_status_to_string(from),
                 clone_status_to_string(to), error_message ? ": " : "", strempty(error_message));
        clone_emit_changed(c, "Status", "Error", "Problem", "StartedAt", "CompletedAt", "BytesTransferred",
                           "TransferRate", "Progress", "BytesUploaded", "StagingStatus", NULL);
        /* What follows from it builds on what was kept: once the caller's transaction committed. */
        if (clone_status_is_final(to))
                manager_after_commit(c->manager, release_nodes_of, c->id);
        manager_after_commit(c->manager, clone_family_changed_of, c->id);
        return 0;
}

static int node_busy_elsewhere(CloneSession *c, const char *node_id, CloneSession **ret) {
        CloneSession *o;
        HASHMAP_FOREACH (o, c->manager->sessions, i)
                if (o != c && clone_status_is_active(o->status) && !same_family(c, o) &&
                    (streq_ptr(o->source_node, node_id) || streq_ptr(o->target_node, node_id))) {
                        *ret = o;
                        return 1;
                }
        return 0;
}

int clone_start(CloneSession *c, sd_bus_error *error) {
        Manager *m = c->manager;
        CloneStatus from = c->status;
        CloneSession *other;
        int r;
        assert(c);

        if (!transitions[c->status][CLONE_WAITING])
                return clone_transition(c, CLONE_WAITING, NULL, error); /* says why not */
        CloneSession *source = clone_followed(c);
        if (c->follows && (!source || !clone_status_is_active(source->status)))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_STATE,
                                         "Session %s is a further target of session %s, which is %s: start that "
                                         "one (its targets start with it).",
                                         c->id, c->follows, source ? clone_status_to_string(source->status) : "gone");
        const char *nodes[] = { c->follows ? NULL : c->source_node, c->target_node };
        for (size_t i = 0; i < ELEMENTSOF(nodes); i++) {
                Node *n = nodes[i] ? hashmap_get(m->nodes, nodes[i]) : NULL;
                if (n && node_busy_elsewhere(c, n->id, &other))
                        return sd_bus_error_setf(
                                error, PB_ERROR_IN_USE,
                                "Node %s is busy with clone session %s (%s); wait for it or "
                                "cancel it first.",
                                n->hostname, other->id, clone_status_to_string(other->status));
        }

        /* A plan that cannot work stops the session before any byte moves. */
        replan(c);
        _cleanup_(json_object_unrefp) json_object *plan = clone_plan_json(c);
        if (c->resize_mode != RESIZE_NONE && plan && !plan_is_feasible(plan))
                return sd_bus_error_setf(error, PB_ERROR_PLAN_INFEASIBLE,
                                         "%s Edit the plan (purebootctl clone plan %s --edit …) or change the "
                                         "session's resize mode or disks.",
                                         strna(json_get_string(plan, "reason")), c->id);

        /* Staging space, if both the source's size and the backend's space are known already. */
        if (c->mode == CLONE_MODE_STAGED && !c->follows) {
                _cleanup_(disk_info_done) DiskInfo scanned = {};
                sd_bus_error e = SD_BUS_ERROR_NULL;
                uint64_t size = plan && plan_is_feasible(plan) ? (uint64_t) json_get_int(plan, "copyBytes")
                                : session_disk(c, "source", &scanned, &e) >= 0 ? scanned.size
                                                                                : 0;
                sd_bus_error_free(&e);
                r = staging_check_space(c, size, error);
                if (r < 0)
                        return r;
        }

        /* Tokens are minted when asked for: by a boot answer, or by an operator (IssueBootToken). */
        r = store_begin(m->store);
        if (r < 0)
                return bus_store_error(error, r, "start the session");
        r = clone_transition(c, CLONE_WAITING, NULL, error);
        if (r < 0) {
                store_rollback(m->store);
                return r;
        }
        r = store_commit(m->store);
        if (r < 0) {
                /* The commit failed, so the store still says the old status: follow it. */
                store_rollback(m->store);
                c->status = from;
                return bus_store_error(error, r, "start the session");
        }

        /* The targets added to it start with it; one added to a running session follows its source now. */
        if (c->follows)
                follow_source(c);
        else {
                CloneSession *o;
                FOREACH_FOLLOWER (o, c) {
                        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
                        if (IN_SET(o->status, CLONE_PENDING, CLONE_FAILED) && clone_start(o, &e) < 0)
                                log_warning("Session %s: its added target %s did not start: %s", c->id, o->id,
                                            e.message ?: "out of memory");
                }
        }
        return 0;
}

/* The session an added target is, as a spec; name is freed by the caller. */
static int added_target_spec(CloneSession *c, const char *node, const char *device, const char *resize_mode,
                             CloneSpec *ret, char **ret_name, sd_bus_error *error) {
        if (clone_status_is_final(c->status) && c->status != CLONE_FAILED)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_STATE,
                                         "Session %s is %s; add targets to a session that can still run.", c->id,
                                         clone_status_to_string(c->status));
        if (asprintf(ret_name, "%s+%s", c->name, strempty(node)) < 0)
                return -ENOMEM;
        *ret = (CloneSpec){
                .name = *ret_name,
                .mode = clone_mode_to_string(c->mode),
                .source_node = c->source_node,
                .target_node = node,
                .source_device = c->source_device,
                .target_device = device,
                .storage = c->staging_backend,
                .resize_mode = resize_mode ?: resize_mode_to_string(c->resize_mode),
                .follows = c->id,
        };
        return 0;
}

int clone_add_target_check(CloneSession *c, const char *node, const char *device, const char *resize_mode,
                           sd_bus_error *error) {
        _cleanup_free_ char *name = NULL;
        CloneSpec spec;
        int r = added_target_spec(c, node, device, resize_mode, &spec, &name, error);
        return r < 0 ? r : clone_check(c->manager, &spec, error);
}

int clone_add_target(CloneSession *c, const char *node, const char *device, const char *resize_mode,
                     uint32_t uid, CloneSession **ret, sd_bus_error *error) {
        _cleanup_free_ char *name = NULL;
        CloneSpec spec;
        CloneSession *f;
        int r;

        r = added_target_spec(c, node, device, resize_mode, &spec, &name, error);
        if (r < 0)
                return r;
        r = clone_create(c->manager, &spec, uid, &f, error);
        if (r < 0)
                return r;
        if (clone_status_is_active(c->status)) {
                r = clone_start(f, error);
                if (r < 0) { /* as if never asked */
                        (void) store_session_delete(c->manager->store, f->id);
                        detach(f);
                        clone_free(f);
                        return r;
                }
        }
        *ret = f;
        return 0;
}

int clone_cancel(CloneSession *c, sd_bus_error *error) {
        assert(c);
        return clone_transition(c, CLONE_CANCELLED, "Cancelled by an administrator.", error);
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
        if (clone_has_followers(c))
                return sd_bus_error_setf(error, PB_ERROR_IN_USE,
                                         "Targets added to session %s share its staging; delete their sessions "
                                         "first (purebootctl clone list shows them, named %s+NODE).",
                                         c->id, c->name);
        if (staging_is_left(c)) {
                r = staging_cleanup(c);
                if (r < 0)
                        return r;
                return sd_bus_error_setf(error, PB_ERROR_INVALID_STATE,
                                         "The staging of session %s is being removed; delete the session again "
                                         "once StagingStatus is deleted.",
                                         c->id);
        }
        r = store_session_delete(m->store, c->id);
        if (r < 0)
                return bus_store_error(error, r, "delete the session");
        detach(c);
        clone_free(c);
        bus_manager_emit_removed(m, "CloneSessionRemoved", id, path);
        *ret_cancelled = false;
        return 0;
}

int clone_issue_token(CloneSession *c, const char *role, char **ret_token, sd_bus_error *error) {
        const char *node;
        int r;
        assert(c && role);

        if (!STR_IN_SET(role, "source", "target"))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "Unknown role \"%.32s\"; use source or target.", role);
        if (clone_status_is_final(c->status) && c->status != CLONE_FAILED)
                return sd_bus_error_setf(
                        error, PB_ERROR_INVALID_STATE,
                        "Session %s is %s; tokens are issued only for sessions that can still run.", c->id,
                        clone_status_to_string(c->status));
        node = streq(role, "source") ? c->source_node : c->target_node;
        if (!node)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "Session %s has no target node; set one with Update first.", c->id);
        if (!ret_token)
                return 0;
        r = token_mint(c->manager, node, c->id, role, NULL, ret_token);
        return r < 0 && r != -ENOMEM ? bus_store_error(error, r, "mint the token") : r;
}

int clone_set_progress(CloneSession *c, uint64_t bytes_transferred, uint64_t rate) {
        c->bytes_transferred = bytes_transferred;
        c->transfer_rate = rate;
        return throttle_kick(&c->progress);
}

json_object *clone_node_view(CloneSession *c, const char *role) {
        json_object *o = json_object_new_object();
#define ADD(k, v) json_object_object_add(o, k, v)
        ADD("id", json_object_new_string(c->id));
        ADD("name", json_object_new_string(c->name));
        ADD("status", json_object_new_string(clone_status_to_string(c->status)));
        ADD("mode", json_object_new_string(clone_mode_to_string(c->mode)));
        ADD("role", role ? json_object_new_string(role) : NULL);
        ADD("sourceDevice", json_object_new_string(c->source_device));
        ADD("targetDevice", json_object_new_string(c->target_device));
        ADD("sourceAddress", c->source_address ? json_object_new_string(c->source_address) : NULL);
        ADD("sourcePort", c->source_port ? json_object_new_int(c->source_port) : NULL);
        ADD("sizeBytes", json_object_new_int64((int64_t) c->bytes_total));
        ADD("bytesTransferred", json_object_new_int64((int64_t) c->bytes_transferred));
        ADD("resizeMode", json_object_new_string(resize_mode_to_string(c->resize_mode)));
        StagingStatus staging = clone_owner(c)->staging_status; /* an added target shares it */
        ADD("stagingStatus",
            staging != STAGING_NONE ? json_object_new_string(staging_status_to_string(staging)) : NULL);
        ADD("plan", clone_plan_json(c));
        ADD("error", c->error ? json_object_new_string(c->error) : NULL);
        const char *source = clone_certificate(c, "source"), *target = clone_certificate(c, "target");
        ADD("sourceCertificate", source ? json_object_new_string(source) : NULL);
        ADD("targetCertificate", target ? json_object_new_string(target) : NULL);
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

json_object *clone_plan_json(CloneSession *c) {
        return c->plan_json ? json_tokener_parse(c->plan_json) : NULL;
}

/* Replaces one string field of the session in memory and in the store (value taken), or neither. */
static int set_field(CloneSession *c, char **field, char *value, sd_bus_error *error) {
        char *old = *field;
        int r;
        *field = value;
        r = store_session_update(c->manager->store, c, clone_status_to_string(c->status));
        if (r < 0) {
                *field = old;
                free(value);
                return r == -ENOMEM ? r : bus_store_error(error, r, "record the session's plan");
        }
        free(old);
        return 0;
}

/* The disk of role: what its agent reported, else the node's last scan of the session's device. */
static int session_disk(CloneSession *c, const char *role, DiskInfo *ret, sd_bus_error *error) {
        c = streq(role, "source") ? clone_owner(c) : c; /* an added target shares the source */
        const char *reported = streq(role, "source") ? c->source_disk_json : c->target_disk_json;
        const char *node_id = streq(role, "source") ? c->source_node : c->target_node;
        const char *device = streq(role, "source") ? c->source_device : c->target_device;
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

/* For a target added to a session: the source as that session uploads it, with its plan's shrinks applied
 * and only its copyBytes long. */
static int as_uploaded(CloneSession *f, DiskInfo *source, sd_bus_error *error) {
        CloneSession *p = clone_followed(f);
        _cleanup_(json_object_unrefp) json_object *plan = p ? clone_plan_json(p) : NULL;
        json_object *ops = NULL;

        if (!plan)
                return 0; /* uploaded as it is */
        if (!plan_is_feasible(plan))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_STATE,
                                         "The plan of session %s, which has the source, is not feasible: %s",
                                         p->id, strna(json_get_string(plan, "reason")));
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

/* An added target cannot ask the shared source for shrinks of its own. */
static int refuse_source_changes(CloneSession *f, json_object *plan) {
        json_object *ops = NULL;
        _cleanup_free_ char *reason = NULL;
        if (!f->follows || !plan_is_feasible(plan) || !json_object_object_get_ex(plan, "source", &ops) ||
            json_object_array_length(ops) == 0)
                return 0;
        if (asprintf(&reason, "This target needs the source shrunk further than session %s's own plan does; it "
                     "shares that session's upload. Give that session the smallest target, or edit its plan.",
                     f->follows) < 0)
                return -ENOMEM;
        json_object_object_add(plan, "feasible", json_object_new_boolean(false));
        json_object_object_add(plan, "reason", json_object_new_string(reason));
        json_object_object_add(plan, "source", json_object_new_array());
        json_object_object_add(plan, "target", json_object_new_array());
        return 0;
}

int clone_plan(CloneSession *c, json_object *edits, bool refuse_infeasible, sd_bus_error *error) {
        _cleanup_(disk_info_done) DiskInfo source = {}, target = {};
        _cleanup_(json_object_unrefp) json_object *old = clone_plan_json(c), *plan = NULL;
        json_object *kept = NULL;
        char *text;
        int r;

        if (clone_status_is_final(c->status) && c->status != CLONE_FAILED) /* a failed one may run again */
                return sd_bus_error_setf(error, PB_ERROR_INVALID_STATE,
                                         "Session %s is %s; its plan no longer changes.", c->id,
                                         clone_status_to_string(c->status));
        if (edits && c->status == CLONE_CLONING)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_STATE,
                                         "Session %s is copying already; cancel it to change the plan.", c->id);
        r = session_disk(c, "source", &source, error);
        if (r >= 0)
                r = session_disk(c, "target", &target, error);
        if (r >= 0 && c->follows)
                r = as_uploaded(c, &source, error);
        if (r < 0)
                return r;
        if (!edits && old)
                (void) json_object_object_get_ex(old, "edits", &kept);
        plan = plan_compute(&source, &target, c->resize_mode, edits ?: kept);
        if (!plan || refuse_source_changes(c, plan) < 0)
                return -ENOMEM;
        if (refuse_infeasible && !plan_is_feasible(plan))
                return sd_bus_error_setf(error, PB_ERROR_PLAN_INFEASIBLE, "%s",
                                         strna(json_get_string(plan, "reason")));
        text = strdup(json_object_to_json_string_ext(plan, JSON_C_TO_STRING_PLAIN));
        if (!text)
                return -ENOMEM;
        if (streq_ptr(text, c->plan_json)) {
                free(text);
                return 0;
        }
        r = set_field(c, &c->plan_json, text, error);
        if (r < 0)
                return r;
        log_info("Clone session %s: resize plan %s%s%s.", c->id, plan_is_feasible(plan) ? "feasible" : "infeasible",
                 plan_is_feasible(plan) ? "" : ": ", plan_is_feasible(plan) ? "" : strna(json_get_string(plan, "reason")));
        clone_emit_changed(c, "Plan", NULL);
        /* The targets added to it plan from what it uploads. */
        CloneSession *o;
        FOREACH_FOLLOWER (o, c)
                if (o->target_disk_json)
                        replan(o);
        return 0;
}

int clone_report_disk(CloneSession *c, const char *role, json_object *disk, sd_bus_error *error) {
        _cleanup_(disk_info_done) DiskInfo info = {};
        const char *bad = NULL, *device = streq(role, "source") ? c->source_device : c->target_device;
        char *text;
        int r;
        assert(c && role && disk);

        r = disk_info_from_json(disk, &info, &bad);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT, "The disk's \"%s\" is missing or malformed.",
                                         strna(bad));
        if (!streq(info.device, device))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "The session's %s device is %s, not %s.", role, device, info.device);
        text = strdup(json_object_to_json_string_ext(disk, JSON_C_TO_STRING_PLAIN));
        if (!text)
                return -ENOMEM;
        r = set_field(c, streq(role, "source") ? &c->source_disk_json : &c->target_disk_json, text, error);
        if (r < 0 || !clone_owner(c)->source_disk_json || !c->target_disk_json)
                return r;
        /* Both disks known (again): the plan follows them, keeping the user's edits. */
        sd_bus_error e = SD_BUS_ERROR_NULL;
        r = clone_plan(c, NULL, false, &e);
        if (r < 0)
                log_warning("Clone session %s: no plan from the reported disks: %s", c->id,
                            e.message ?: strerror(-r));
        sd_bus_error_free(&e);
        return 0;
}
