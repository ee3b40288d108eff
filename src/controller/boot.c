/* SPDX-License-Identifier: MIT */
/* What a machine that network-boots is told: boot its own disk, wait, or boot the deploy image for its
 * part in a clone or in partition mode, with an enrolment token; unknown machines are registered as
 * discovered. The bridge asks for each iPXE or Pi boot (Gateway.Boot). */
#include "boot.h"
#include "clone.h"
#include "format.h"
#include "identity.h"
#include "log.h"
#include "nfsroot.h"
#include "node.h"
#include "pureboot-errors.h"
#include "token.h"
#include "util.h"

void boot_answer_done(BootAnswer *a) {
        free(a->workflow);
        free(a->node);
        free(a->state);
        json_object_put(a->parameters);
        *a = (BootAnswer){};
}

/* The session a node takes part in, if any is not finished: the running one first, else a pending one; and
 * its target there, if it is not the source. A target that is over boots from its own disk even while the
 * session goes on for others. */
static CloneSession *session_of_node(Manager *m, const Node *n, bool *ret_active, CloneTarget **ret_target) {
        CloneSession *c, *pending = NULL;
        HASHMAP_FOREACH (c, m->sessions, i) {
                bool source = streq_ptr(c->source_node, n->id);
                CloneTarget *t = source ? NULL : clone_target_of_node(c, n->id);
                if (!source && !t)
                        continue;
                if (clone_status_is_active(c->status) && (source || clone_status_is_active(t->status))) {
                        *ret_active = true;
                        *ret_target = t;
                        return c;
                }
                if (c->status == CLONE_PENDING)
                        pending = c;
        }
        *ret_active = false;
        *ret_target = NULL;
        return pending;
}

/* When unknown machines were registered in the last minute (CLOCK_MONOTONIC µs, oldest first): a window
 * that slides, so that no 60 seconds ever see more than the limit (a window per calendar minute would let
 * twice as many through across its edge). */
typedef struct Recent {
        uint64_t *times;
        size_t n;
} Recent;

typedef struct Discoveries {
        char *address;
        Recent recent;
} Discoveries;

static void recent_done(Recent *r) {
        free(r->times);
        *r = (Recent){};
}

/* How many of r fall in the minute before now, once the older ones are forgotten. */
static size_t recent_count(Recent *r, uint64_t now) {
        size_t old = 0;
        while (old < r->n && now - r->times[old] >= 60 * USEC_PER_SEC)
                old++;
        if (old > 0) {
                memmove(r->times, r->times + old, (r->n - old) * sizeof(uint64_t));
                r->n -= old;
        }
        return r->n;
}

static int recent_add(Recent *r, uint64_t now) {
        uint64_t *t = reallocarray(r->times, r->n + 1, sizeof(uint64_t));
        if (!t)
                return -ENOMEM;
        r->times = t;
        r->times[r->n++] = now;
        return 0;
}

void boot_done(Manager *m) {
        Discoveries *d;
        HASHMAP_FOREACH (d, m->discoveries, i) {
                hashmap_remove(m->discoveries, d->address);
                free(d->address);
                recent_done(&d->recent);
                free(d);
        }
        m->discoveries = hashmap_free(m->discoveries);
        if (m->discovered_recently)
                recent_done(m->discovered_recently);
        m->discovered_recently = mfree(m->discovered_recently);
}

/* Whether an unknown machine at address may be registered now: [Discovery] limits the registrations per
 * address and in all in any minute, and the number of discovered nodes, so that a flood of made-up MACs
 * fills neither the database nor the operator's node list. Returns 1 (and counts it), 0, or < 0. */
static int discovery_allowed(Manager *m, const char *address, const char **ret_why) {
        uint64_t now = now_monotonic_usec(), discovered = 0;
        Discoveries *d;
        Node *n;

        if ((!m->discoveries && !(m->discoveries = hashmap_new())) ||
            (!m->discovered_recently && !(m->discovered_recently = calloc(1, sizeof(Recent)))))
                return -ENOMEM;
        HASHMAP_FOREACH (n, m->nodes, i)
                discovered += n->state == NODE_DISCOVERED;
        /* Addresses not heard from in the last minute are forgotten: the map holds no more than a minute's.
         */
        HASHMAP_FOREACH (d, m->discoveries, i)
                if (recent_count(&d->recent, now) == 0) {
                        hashmap_remove(m->discoveries, d->address);
                        free(d->address);
                        recent_done(&d->recent);
                        free(d);
                }
        d = hashmap_get(m->discoveries, strempty(address));
        if (discovered >= m->config.max_discovered)
                *ret_why = "MaxDiscoveredNodes";
        else if (recent_count(m->discovered_recently, now) >= m->config.discover_per_minute)
                *ret_why = "PerMinute";
        else if (d && recent_count(&d->recent, now) >= m->config.discover_per_address)
                *ret_why = "PerAddressPerMinute";
        else
                *ret_why = NULL;
        if (*ret_why)
                return 0;
        if (!d) {
                d = calloc(1, sizeof(Discoveries));
                if (!d || !(d->address = strdup(strempty(address))) ||
                    hashmap_put(m->discoveries, d->address, d) < 0) {
                        if (d)
                                free(d->address);
                        free(d);
                        return -ENOMEM;
                }
        }
        if (recent_add(&d->recent, now) < 0 || recent_add(m->discovered_recently, now) < 0)
                return -ENOMEM;
        return 1;
}

/* Registers a machine nobody registered, as discovered: Pis by serial (with a locally administered MAC made
 * from it if they named none), others by MAC. *ret is NULL when the limits say no. */
static int discover(Manager *m, const char *kind, const char *mac, const char *serial, const char *address,
                    Node **ret, sd_bus_error *error) {
        _cleanup_free_ char *made_mac = NULL, *hostname = NULL, *path = NULL;
        const char *why;
        Node *n;
        int r;

        r = discovery_allowed(m, address, &why);
        if (r < 0)
                return r;
        if (r == 0) {
                log_warning("Not registering the unknown machine %s%s at %s: [Discovery] %s= is reached; it "
                            "boots "
                            "its own disk.",
                            serial ? "with serial " : "", serial ?: mac, strna(address), why);
                *ret = NULL;
                return 0;
        }
        if (!mac &&
            asprintf(&made_mac, "02:00:%.2s:%.2s:%.2s:%.2s", serial, serial + 2, serial + 4, serial + 6) < 0)
                return -ENOMEM;
        mac = mac ?: made_mac;
        if (serial ? asprintf(&hostname, "pi-%s", serial) < 0
                   : asprintf(&hostname, "node-%.2s%.2s%.2s%.2s%.2s%.2s", mac, mac + 3, mac + 6, mac + 9,
                              mac + 12, mac + 15) < 0)
                return -ENOMEM;
        r = node_register(m, hostname, mac, streq(kind, "pi") ? "arm64" : "x86_64", serial, NODE_DISCOVERED,
                          &n, error);
        if (r < 0)
                return r;
        path = node_path(n);
        if (path && m->bus) {
                (void) sd_bus_emit_object_added(m->bus, path);
                (void) sd_bus_emit_signal(m->bus, PB_ROOT_PATH, PB_IFACE("Manager"), "NodeNew", "so", n->id,
                                          path);
        }
        log_info("Discovered %s (MAC %s%s%s) at its first network boot, from %s.", n->hostname, n->mac,
                 n->serial ? ", serial " : "", strempty(n->serial), strna(address));
        /* A diskless fleet: new Pis boot from the NFS root at once. */
        if (serial && m->config.nfsroot_workflow) {
                r = node_set_boot_mode(n, BOOT_NFS, m->config.nfsroot_workflow, error);
                if (r < 0)
                        return r;
        }
        *ret = n;
        return 0;
}

/* A machine asks to be the node n, or n's role in session c: it gets a token for that name (bound to its
 * address; the name's earlier token and certificate revoked) unless the name's certificate is live — then
 * it is another machine claiming a name in use, and is refused, in the log, the audit trail and on the
 * session. Returns 1 with *ret_token, 0 when refused, < 0 on failure. */
static int claim(Manager *m, Node *n, CloneSession *c, const char *role, const char *address,
                 char **ret_token) {
        _cleanup_free_ char *cn = NULL, *message = NULL;
        const Identity *live;
        int r;

        r = identity_name(n->id, c ? c->id : NULL, role, &cn);
        if (r < 0)
                return r;
        if (identity_is_live(m, cn, &live)) {
                if (asprintf(&message,
                             "%s: a boot answer for %s was asked for from %s (MAC %s) while its certificate "
                             "%s, "
                             "enrolled from %s, is in use; refused",
                             format_timestamp((char[FORMAT_TIMESTAMP_MAX]){}, now_realtime_usec()), cn,
                             strna(address), n->mac, live->serial, strna(live->address)) < 0)
                        return -ENOMEM;
                log_warning("Refused a second claim on %s: boot answer asked for from %s (MAC %s) while its "
                            "certificate %s is in use. If that machine is being replaced, revoke the "
                            "certificate "
                            "(purebootctl ca revoke %s).",
                            cn, strna(address), n->mac, live->serial, live->serial);
                (void) store_event(m->store, m->bridge_uid, "RefusedClaim", cn, strna(address));
                if (c)
                        clone_note_refused_claim(c, message);
                return 0;
        }
        r = identity_revoke(m, cn);
        if (r >= 0)
                r = token_mint(m, n->id, c ? c->id : NULL, role, address, ret_token);
        return r < 0 ? r : 1;
}

int boot_answer(Manager *m, const char *kind, const char *mac, const char *serial, const char *address,
                BootAnswer *ret, sd_bus_error *error) {
        _cleanup_free_ char *canonical_mac = NULL, *canonical_serial = NULL, *token = NULL, *mode = NULL,
                            *workflow = NULL;
        int state = -1; /* the node's new NodeState, if it changes */
        _cleanup_(json_object_unrefp) json_object *params = NULL;
        const char *action = "local_boot";
        _cleanup_free_ char *role = NULL;
        Node *n = NULL, *v;
        CloneSession *c = NULL;
        CloneTarget *target = NULL;
        bool active = false;
        int r;

        if (!STR_IN_SET(kind, "ipxe", "pi"))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "Boot kind \"%.16s\" is not ipxe or pi.", kind);
        if (!isempty(mac) && mac_normalize(mac, &canonical_mac) < 0)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "mac=%.64s is not a MAC address (aa:bb:cc:dd:ee:ff).", mac);
        if (!isempty(serial) && node_serial_normalize(serial, &canonical_serial) < 0)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "serial=%.64s is not a Raspberry Pi serial (8 hex digits).",
                                         serial);
        if (streq(kind, "ipxe") ? !canonical_mac : !canonical_serial)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         streq(kind, "ipxe") ? "An iPXE boot names the machine by mac=."
                                                             : "A Pi boot names the machine by serial=.");
        address = isempty(address) ? NULL : address;
        HASHMAP_FOREACH (v, m->nodes, i)
                if ((canonical_serial && streq_ptr(v->serial, canonical_serial)) ||
                    (!canonical_serial && streq(v->mac, canonical_mac)))
                        n = v;
        if (!n) {
                r = discover(m, kind, canonical_mac, canonical_serial, address, &n, error);
                if (r < 0)
                        return r;
                if (!n) { /* over the limits: its own disk, and nothing recorded */
                        *ret = (BootAnswer){ .action = "local_boot",
                                             .workflow = strdup(""),
                                             .node = strdup(""),
                                             .state = strdup("unknown"),
                                             .parameters = json_object_new_object() };
                        return ret->workflow && ret->node && ret->state && ret->parameters ? 0 : -ENOMEM;
                }
        }

        params = json_object_new_object();
        if (!params)
                return -ENOMEM;
        c = session_of_node(m, n, &active, &target);
        if (active && (target ? clone_target_role(target->index, &role) : free_and_strdup(&role, "source")) < 0)
                return -ENOMEM;
        if (active) {
                const char *part = target ? "target" : "source";
                r = claim(m, n, c, role, address, &token);
                if (r < 0)
                        return r;
                if (r == 0)
                        action = "refused"; /* its name is in use: ask again later, when it may be free */
                else {
                        if (asprintf(&workflow, "clone-%s-%s", part, clone_mode_to_string(c->mode)) < 0 ||
                            asprintf(&mode, "clone_%s_%s", part, clone_mode_to_string(c->mode)) < 0)
                                return -ENOMEM;
                        state = target ? NODE_CLONING_TARGET : NODE_CLONING_SOURCE;
                        json_object_object_add(params, "mode", json_object_new_string(mode));
                        json_object_object_add(params, "session", json_object_new_string(c->id));
                        json_object_object_add(params, "node", json_object_new_string(n->id));
                        json_object_object_add(params, "token", json_object_new_string(token));
                        json_object_object_add(params, "device",
                                               json_object_new_string(target ? target->device : c->source_device));
                        action = "deploy_image";
                }
        } else if (n->boot_mode == BOOT_PARTITION) {
                r = claim(m, n, NULL, "node", address, &token);
                if (r < 0)
                        return r;
                if (r == 0)
                        action = "refused";
                else {
                        if (!(workflow = strdup("partition")))
                                return -ENOMEM;
                        state = NODE_PARTITIONING;
                        json_object_object_add(params, "mode", json_object_new_string("partition"));
                        json_object_object_add(params, "node", json_object_new_string(n->id));
                        json_object_object_add(params, "token", json_object_new_string(token));
                        action = "deploy_image";
                }
        } else if (n->boot_mode == BOOT_NFS) {
                /* Diskless: the workflow names the NFS server and root; the Pi's overlay names its base. */
                _cleanup_free_ char *base = nfsroot_base_for(m, n->serial);
                if (!(workflow = strdup(n->boot_workflow ?: "pi-diskless-nfs")))
                        return -ENOMEM;
                state = NODE_ACTIVE;
                json_object_object_add(params, "node", json_object_new_string(n->id));
                if (n->serial)
                        json_object_object_add(params, "serial", json_object_new_string(n->serial));
                if (base)
                        json_object_object_add(params, "base", json_object_new_string(base));
                json_object_object_add(params, "hostname", json_object_new_string(n->hostname));
                action = "nfs_boot";
        } else if (c)
                action = "wait"; /* its session is not started yet: ask again soon */

        n->last_seen = now_realtime_usec();
        if (state >= 0)
                n->state = (NodeState) state;
        r = node_save(n);
        if (r < 0)
                return r;
        *ret = (BootAnswer){
                .action = action,
                .workflow = workflow ? TAKE_PTR(workflow) : strdup(""),
                .node = strdup(n->id),
                .state = strdup(node_state_to_string(n->state)),
                .parameters = TAKE_PTR(params),
        };
        if (!ret->workflow || !ret->node || !ret->state) {
                boot_answer_done(ret);
                return -ENOMEM;
        }
        return 0;
}
