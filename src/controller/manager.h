/* SPDX-License-Identifier: MIT */
/* The Manager owns everything: event loop, bus, store, CA and the live objects. */
#pragma once

#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "config.h"
#include "hashmap.h"
#include "pureboot-bus.h"
#include "store.h"

typedef struct CA CA;
typedef struct PolkitQuery PolkitQuery;

typedef struct Manager {
        sd_event *event;
        sd_bus *bus;
        Store *store;
        CA *ca;
        Config config;
        char *state_dir;
        char *version;

        Hashmap *nodes;        /* id → Node */
        Hashmap *sessions;     /* id → CloneSession */
        Hashmap *session_keys; /* idempotency key → CloneSession */
        Hashmap *storages;     /* id → StorageBackend */
        Hashmap *images;       /* id → Image */

        PolkitQuery *polkit_queries;
        struct Worker *workers; /* child processes doing blocking work */

        /* The node interface, parsed from the IDL compiled in, and the progress flush timer. */
        struct VarlinkInterface *node_interface;
        sd_event_source *flush_timer;
        Hashmap *identities;  /* certificate name → Identity (identity.c) */
        Hashmap *discoveries; /* address → recent registrations of unknown machines (boot.c) */
        struct Recent *discovered_recently; /* the same, of every address */
        uid_t bridge_uid;    /* (uid_t) -1 until the bridge's user has been looked up */
        char *bridge_sender; /* the unique bus name last verified as the bridge's */
        /* PropertiesChanged asked for inside a transaction: "path\tinterface" → property names (strv),
         * sent once it commits, dropped if it rolls back, so no client sees a state that was not kept. */
        Hashmap *pending_changes;
        /* Follow-on work waiting for the transaction to commit (manager_after_commit). */
        struct AfterCommit *after_commit;
        size_t n_after_commit;
        /* What the bridge is told changed ("kind\tid", bus-gateway.c), sent once per turn of the loop. */
        Hashmap *gateway_changes;
        sd_event_source *gateway_flush;
} Manager;

int manager_new(const char *config_path, const char *state_dir, Manager **ret);
Manager *manager_free(Manager *m);
/* Opens the store and the CA and loads the live objects. */
int manager_load(Manager *m);
/* Connects to the system bus, registers the objects and takes the name. */
int manager_connect_bus(Manager *m);
int manager_run(Manager *m);

/* PropertiesChanged for the named properties (NULL-terminated list ap) of interface at path: now, or,
 * inside a transaction, once it commits. */
void manager_emit_changed_strv(Manager *m, const char *path, const char *interface, char **names);
void manager_emit_changed_va(Manager *m, const char *path, const char *interface, const char *first,
                             va_list ap);

/* Runs fn(m, id) once the transaction in progress commits, dropped if it rolls back; outside a transaction,
 * now. For follow-on work that must build on what was kept (another record's state, a node's release): it
 * looks its record up again by id, which may be gone by then. */
typedef void (*AfterCommitFn)(Manager *m, const char *id);
void manager_after_commit(Manager *m, AfterCommitFn fn, const char *id);

/* Records an audit event for a change made on behalf of the sender of message. */
void manager_audit(Manager *m, sd_bus_message *message, const char *action, const char *object,
                   const char *result);

static inline void manager_freep(Manager **m) {
        manager_free(*m);
}
