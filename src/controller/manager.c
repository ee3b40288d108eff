/* SPDX-License-Identifier: MIT */
/* The Manager: loads the state, puts it on the bus and runs the event loop. */
#include <inttypes.h>
#include <signal.h>
#include <systemd/sd-daemon.h>

#include "boot.h"
#include "bus-ca.h"
#include "bus-connect.h"
#include "bus-gateway.h"
#include "bus-manager.h"
#include "bus-util.h"
#include "ca.h"
#include "clone.h"
#include "disk.h"
#include "gateway.h"
#include "identity.h"
#include "image-file.h"
#include "image.h"
#include "log.h"
#include "nfsroot.h"
#include "node.h"
#include "polkit.h"
#include "progress.h"
#include "storage.h"
#include "util.h"
#include "worker.h"

int manager_new(const char *config_path, const char *state_dir, Manager **ret) {
        _cleanup_(manager_freep) Manager *m = calloc(1, sizeof(Manager));
        int r;

        if (!m)
                return -ENOMEM;
        config_init(&m->config);
        m->state_dir = strdup(state_dir);
        m->version = strdup(PACKAGE_VERSION);
        m->nodes = hashmap_new();
        m->sessions = hashmap_new();
        m->session_keys = hashmap_new();
        m->storages = hashmap_new();
        m->images = hashmap_new();
        m->bridge_uid = (uid_t) -1;
        if (!m->state_dir || !m->version || !m->nodes || !m->sessions || !m->session_keys || !m->storages ||
            !m->images)
                return -ENOMEM;
        r = config_load(&m->config, config_path);
        if (r < 0)
                return log_error_errno(r, "Failed to load the configuration %s: %m", config_path);
        r = sd_event_default(&m->event);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(m);
        return 0;
}

/* A PropertiesChanged waiting for its transaction to commit (manager_emit_changed_va). */
typedef struct PendingChange {
        char *key; /* "path\tinterface" */
        char *path, *interface;
        char **names;
} PendingChange;

static void pending_change_free(PendingChange *p) {
        if (!p)
                return;
        free(p->key);
        free(p->path);
        free(p->interface);
        strv_free(p->names);
        free(p);
}

static void emit_now(Manager *m, const char *path, const char *interface, char **names) {
        if (m->bus)
                (void) sd_bus_emit_properties_changed_strv(m->bus, path, interface, names);
}

static int defer_change(Manager *m, const char *path, const char *interface, char **names) {
        _cleanup_free_ char *key = NULL;
        PendingChange *p;

        if (asprintf(&key, "%s\t%s", path, interface) < 0)
                return -ENOMEM;
        if (!m->pending_changes && !(m->pending_changes = hashmap_new()))
                return -ENOMEM;
        p = hashmap_get(m->pending_changes, key);
        if (!p) {
                p = calloc(1, sizeof(PendingChange));
                if (!p || !(p->path = strdup(path)) || !(p->interface = strdup(interface)) ||
                    !(p->names = strv_new(NULL))) {
                        pending_change_free(p);
                        return -ENOMEM;
                }
                p->key = TAKE_PTR(key);
                if (hashmap_put(m->pending_changes, p->key, p) < 0) {
                        pending_change_free(p);
                        return -ENOMEM;
                }
        }
        STRV_FOREACH(n, names)
        if (!strv_contains((const char *const *) p->names, *n) && strv_extend(&p->names, *n) < 0)
                return -ENOMEM;
        return 0;
}

void manager_emit_changed_va(Manager *m, const char *path, const char *interface, const char *first,
                             va_list ap) {
        _cleanup_strv_free_ char **names = strv_new(NULL);

        if (!names)
                return (void) log_oom();
        for (const char *p = first; p; p = va_arg(ap, const char *))
                if (strv_extend(&names, p) < 0)
                        return (void) log_oom();
        manager_emit_changed_strv(m, path, interface, names);
}

void manager_emit_changed_strv(Manager *m, const char *path, const char *interface, char **names) {
        if (!m->bus || !path || strv_length(names) == 0)
                return;
        /* Inside a transaction the change may still be rolled back: clients hear of it once it is kept. */
        if (!store_in_transaction(m->store))
                emit_now(m, path, interface, names);
        else if (defer_change(m, path, interface, names) < 0)
                log_oom();
}

typedef struct AfterCommit {
        AfterCommitFn fn;
        char *id;
} AfterCommit;

void manager_after_commit(Manager *m, AfterCommitFn fn, const char *id) {
        AfterCommit *a;
        char *copy;

        if (!store_in_transaction(m->store))
                return fn(m, id);
        copy = strdup(id);
        a = copy ? reallocarray(m->after_commit, m->n_after_commit + 1, sizeof(AfterCommit)) : NULL;
        if (!a) {
                free(copy);
                return (void) log_oom();
        }
        m->after_commit = a;
        m->after_commit[m->n_after_commit++] = (AfterCommit){ fn, copy };
}

static void on_transaction_end(void *userdata, bool committed) {
        Manager *m = userdata;
        Hashmap *pending = TAKE_PTR(m->pending_changes);
        AfterCommit *after = TAKE_PTR(m->after_commit);
        size_t n_after = m->n_after_commit;
        PendingChange *p;

        m->n_after_commit = 0;
        if (committed)
                HASHMAP_FOREACH (p, pending, i)
                        emit_now(m, p->path, p->interface, p->names);
        HASHMAP_FOREACH (p, pending, i)
                pending_change_free(p);
        hashmap_free(pending);
        /* In the order asked for; the work may write (and so commit) again, with a queue of its own. */
        for (size_t i = 0; i < n_after; i++) {
                if (committed)
                        after[i].fn(m, after[i].id);
                free(after[i].id);
        }
        free(after);
}

Manager *manager_free(Manager *m) {
        void *v;
        if (!m)
                return NULL;
        progress_done(m);
        on_transaction_end(m, false); /* nothing waits for a transaction any more */
        gateway_done(m);
        bus_gateway_done(m);
        identity_done(m);
        boot_done(m);
        polkit_queries_free(m);
        workers_free(m);
        HASHMAP_FOREACH (v, m->sessions, i)
                clone_free(v);
        HASHMAP_FOREACH (v, m->nodes, i)
                node_free(v);
        HASHMAP_FOREACH (v, m->storages, i)
                storage_free(v);
        HASHMAP_FOREACH (v, m->images, i)
                image_free(v);
        hashmap_free(m->images);
        hashmap_free(m->sessions);
        hashmap_free(m->session_keys);
        hashmap_free(m->nodes);
        hashmap_free(m->storages);
        sd_bus_flush_close_unref(m->bus);
        sd_event_unref(m->event);
        ca_free(m->ca);
        store_close(m->store);
        config_done(&m->config);
        free(m->state_dir);
        free(m->version);
        free(m->bridge_sender);
        free(m);
        return NULL;
}

static int add_node(void *userdata, void *record) {
        Node *n = record;
        int r = node_attach(userdata, n);
        if (r < 0)
                node_free(n);
        return r;
}

static int add_session(void *userdata, void *record) {
        CloneSession *c = record;
        int r = clone_attach(userdata, c);
        if (r < 0)
                clone_free(c);
        return r;
}

static int add_target(void *userdata, void *record) {
        Manager *m = userdata;
        CloneTarget *t = record;
        CloneSession *c = hashmap_get(m->sessions, t->session_id);
        if (!c) { /* the foreign key rules it out */
                log_error("Target %" PRIu32 " belongs to session %s, which is not there.", t->index, t->session_id);
                clone_target_free(t);
                return -EBADMSG;
        }
        return clone_attach_target(c, t);
}

static int add_image(void *userdata, void *record) {
        Image *i = record;
        int r = image_attach(userdata, i);
        if (r < 0)
                image_free(i);
        return r;
}

static int add_storage(void *userdata, void *record) {
        StorageBackend *b = record;
        int r = storage_attach(userdata, b);
        if (r < 0)
                storage_free(b);
        return r;
}

int manager_load(Manager *m) {
        _cleanup_free_ char *db = NULL, *ca_dir = NULL;
        int r;

        r = mkdir_p(m->state_dir, 0700);
        if (r < 0)
                return log_error_errno(r, "Failed to create the state directory %s: %m", m->state_dir);
        if (asprintf(&db, "%s/pureboot.db", m->state_dir) < 0 ||
            asprintf(&ca_dir, "%s/ca", m->state_dir) < 0)
                return -ENOMEM;
        r = store_open(db, &m->store);
        if (r < 0)
                return r;
        store_set_end_hook(m->store, on_transaction_end, m);
        r = ca_load_or_create(ca_dir, m->config.ca_key_algorithm, (unsigned) m->config.ca_validity_years,
                              &m->ca);
        if (r < 0)
                return r;
        r = bus_ca_refresh_crl(m);
        if (r < 0)
                return r;
        r = store_nodes_load(m->store, add_node, m);
        if (r < 0)
                return log_error_errno(r, "Failed to load the nodes from %s: %m", db);
        r = disk_load_all(m);
        if (r < 0)
                return log_error_errno(r, "Failed to load the nodes' disks from %s: %m", db);
        r = store_storages_load(m->store, add_storage, m);
        if (r < 0)
                return log_error_errno(r, "Failed to load the storage backends from %s: %m", db);
        r = store_sessions_load(m->store, add_session, m);
        if (r < 0)
                return log_error_errno(r, "Failed to load the clone sessions from %s: %m", db);
        r = store_targets_load(m->store, add_target, m);
        if (r < 0)
                return log_error_errno(r, "Failed to load the clone sessions' targets from %s: %m", db);
        r = store_images_load(m->store, add_image, m);
        if (r < 0)
                return log_error_errno(r, "Failed to load the images from %s: %m", db);
        /* A capture whose upload was whole when the controller stopped is the image's now. */
        _cleanup_strv_free_ char **capturing = NULL;
        Image *image;
        HASHMAP_FOREACH (image, m->images, i)
                if (image->state == IMAGE_CAPTURING && strv_extend(&capturing, image->capture_session) < 0)
                        return -ENOMEM;
        STRV_FOREACH(id, capturing)
        image_capture_changed(m, *id);
        /* An import the controller stopped in the middle of goes, with what it made. */
        HASHMAP_FOREACH (image, m->images, i)
                if (image->state == IMAGE_IMPORTING && !image->import)
                        image_import_abandoned(image);
        r = gateway_init(m);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the node gateway: %m");
        r = progress_init(m);
        if (r < 0)
                return log_error_errno(r, "Failed to add the progress flush timer: %m");
        r = identity_load(m);
        if (r < 0)
                return log_error_errno(r, "Failed to load the live identities from %s: %m", db);
        log_info(
                "Loaded %zu nodes, %zu clone sessions, %zu storage backends, %zu images; CA %s (sha256 %s).",
                hashmap_size(m->nodes), hashmap_size(m->sessions), hashmap_size(m->storages),
                hashmap_size(m->images), ca_algorithm(m->ca), ca_fingerprint(m->ca));
        return 0;
}

int manager_connect_bus(Manager *m) {
        int r;

        r = bus_connect_system(m->event, &m->bus);
        if (r < 0)
                return r;
        r = bus_manager_register(m);
        if (r < 0)
                return r;
        r = sd_bus_request_name(m->bus, PB_BUS_NAME, 0);
        if (r < 0)
                return log_error_errno(
                        r,
                        "Failed to own the bus name %s: %m. Is another controller running, and "
                        "is the bus policy installed?",
                        PB_BUS_NAME);
        return 0;
}

static bool manager_is_idle(Manager *m) {
        CloneSession *c;
        /* A worker (an import, a provisioning, a probe) still has a caller or a session to answer. */
        if (m->polkit_queries || m->workers)
                return false;
        HASHMAP_FOREACH (c, m->sessions, i)
                if (clone_status_is_active(c->status))
                        return false;
        return true;
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        (void) userdata;
        log_info("Received %s, shutting down.", strsignal((int) si->ssi_signo));
        return sd_event_exit(sd_event_source_get_event(s), 0);
}

int manager_run(Manager *m) {
        sigset_t mask;
        int r;

        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        static const int signals[] = { SIGTERM, SIGINT };
        for (size_t i = 0; i < ELEMENTSOF(signals); i++) {
                r = sd_event_add_signal(m->event, NULL, signals[i], on_signal, m);
                if (r < 0)
                        return log_error_errno(r, "Failed to handle %s: %m", strsignal(signals[i]));
        }

        (void) sd_notify(false, "READY=1\nSTATUS=Processing requests...");
        log_info("pureboot-controller %s ready on the system bus as %s.", PACKAGE_VERSION, PB_BUS_NAME);

        for (;;) {
                r = sd_event_get_state(m->event);
                if (r < 0)
                        return r;
                if (r == SD_EVENT_FINISHED) {
                        int code = 0;
                        (void) sd_event_get_exit_code(m->event, &code);
                        if (code < 0) /* the bus went away (bus_connect_system) */
                                return code;
                        break;
                }
                r = sd_event_run(m->event,
                                 m->config.exit_on_idle_usec > 0 ? m->config.exit_on_idle_usec : UINT64_MAX);
                if (r < 0)
                        return log_error_errno(r, "Event loop failed: %m");
                if (r == 0 && m->config.exit_on_idle_usec > 0 && manager_is_idle(m)) {
                        log_info("Idle for %" PRIu64
                                 " s with no active sessions, exiting; bus activation starts "
                                 "us again.",
                                 m->config.exit_on_idle_usec / USEC_PER_SEC);
                        (void) sd_bus_release_name(m->bus, PB_BUS_NAME);
                        break;
                }
        }
        (void) sd_notify(false, "STOPPING=1");
        return 0;
}

void manager_audit(Manager *m, sd_bus_message *message, const char *action, const char *object,
                   const char *result) {
        uint32_t uid = UINT32_MAX;
        (void) bus_sender_uid(message, &uid);
        if (store_event(m->store, uid, action, object, result) < 0)
                log_warning("Failed to record audit event %s on %s by uid %u.", action, object, uid);
}
