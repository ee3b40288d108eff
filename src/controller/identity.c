/* SPDX-License-Identifier: MIT */
/* Identities. A node on the provisioning network is known by its certificate, and PXE cannot tell a
 * machine from one that answers to its MAC: so each name (node-<id>, clone-<session>-<role>) has at most
 * one good certificate. A boot answer mints a token for a name only while no certificate of that name has
 * been heard from lately — the machine is booting again — and a new enrolment revokes every certificate
 * of its name before it. What is "heard": every call the bridge forwards, including the re-check it makes
 * of each open watch stream every 30 s. */
#include "identity.h"
#include "bus-ca.h"
#include "clone.h"
#include "log.h"
#include "util.h"

static Identity *identity_free(Identity *i) {
        if (!i)
                return NULL;
        free(i->cn);
        free(i->serial);
        free(i->address);
        free(i);
        return NULL;
}

static int identity_get(Manager *m, const char *cn, Identity **ret) {
        Identity *i = hashmap_get(m->identities, cn);
        int r;

        if (!i) {
                i = calloc(1, sizeof(Identity));
                if (!i || !(i->cn = strdup(cn)))
                        return identity_free(i), -ENOMEM;
                r = hashmap_put(m->identities, i->cn, i);
                if (r < 0)
                        return identity_free(i), r;
        }
        *ret = i;
        return 0;
}

int identity_parse(const char *cn, IdentityName *ret) {
        IdentityName p = { .kind = IDENTITY_NONE, .cn = cn };
        const char *rest;
        int role;

        if (isempty(cn)) {
                *ret = p;
                return 0;
        }
        if ((rest = startswith(cn, "node-")) && id_is_valid(rest)) {
                p.kind = IDENTITY_NODE;
                memcpy(p.node, rest, PB_ID_LEN + 1);
        } else if ((rest = startswith(cn, "clone-")) && strlen(rest) > PB_ID_LEN + 1 &&
                   rest[PB_ID_LEN] == '-' &&
                   (role = clone_role_parse(rest + PB_ID_LEN + 1, &p.target)) >= 0) {
                p.kind = IDENTITY_CLONE;
                memcpy(p.session, rest, PB_ID_LEN);
                p.session[PB_ID_LEN] = 0;
                if (!id_is_valid(p.session))
                        return -EINVAL;
                snprintf(p.role, sizeof(p.role), "%s", clone_role_to_string((CloneRole) role));
        } else
                return -EINVAL;
        *ret = p;
        return 0;
}

int identity_name(const char *node_id, const char *session_id, const char *role, char **ret) {
        return (session_id ? asprintf(ret, "clone-%s-%s", session_id, role)
                           : asprintf(ret, "node-%s", node_id)) < 0
                       ? -ENOMEM
                       : 0;
}

typedef struct LoadState {
        Manager *m;
        uint64_t now;
} LoadState;

static int load_one(void *userdata, const CertificateRow *row) {
        LoadState *l = userdata;
        Identity *i;
        int r;

        if (row->revoked_at != 0 || row->not_after < l->now ||
            !(startswith(row->subject, "node-") || startswith(row->subject, "clone-")))
                return 0;
        r = identity_get(l->m, row->subject, &i);
        if (r < 0)
                return r;
        /* Oldest first: the newest good certificate of a name is its identity. */
        return free_and_strdup(&i->serial, row->serial);
}

int identity_load(Manager *m) {
        LoadState l = { .m = m, .now = now_realtime_usec() };
        Identity *i;
        int r;

        m->identities = hashmap_new();
        if (!m->identities)
                return -ENOMEM;
        r = store_certificates_foreach(m->store, false, load_one, &l);
        if (r < 0)
                return r;
        /* Nothing has been heard yet: every identity counts as live for one idle period after a start. */
        uint64_t now = now_monotonic_usec();
        HASHMAP_FOREACH (i, m->identities, it)
                i->heard_at = now;
        return 0;
}

void identity_done(Manager *m) {
        Identity *i;
        HASHMAP_FOREACH (i, m->identities, it)
                identity_free(i);
        m->identities = hashmap_free(m->identities);
}

void identity_heard(Manager *m, const char *cn) {
        Identity *i = cn ? hashmap_get(m->identities, cn) : NULL;
        if (i && i->serial)
                i->heard_at = now_monotonic_usec();
}

bool identity_is_live(Manager *m, const char *cn, const Identity **ret) {
        Identity *i = hashmap_get(m->identities, cn);
        bool live = i && i->serial && now_monotonic_usec() - i->heard_at < m->config.identity_idle_usec;
        if (ret)
                *ret = live ? i : NULL;
        return live;
}

/* The sessions show which certificates speak for their roles: a change of one is news for its session (the
 * agents' watch streams carry it to the peer, which checks against it). */
static void announce(Manager *m, const char *cn) {
        IdentityName name;
        CloneSession *c;

        if (identity_parse(cn, &name) < 0 || name.kind != IDENTITY_CLONE)
                return;
        c = hashmap_get(m->sessions, name.session);
        if (c && name.target == 0)
                clone_emit_changed(c, "SourceCertificate", NULL);
        else if (c && clone_target(c, name.target))
                clone_target_emit_changed(clone_target(c, name.target), "Certificate", NULL);
}

int identity_enrolled(Manager *m, const char *cn, const char *serial, const char *address) {
        Identity *i;
        int r;

        /* The store first: once this is committed, no other certificate of cn is good. */
        r = store_certificates_revoke_subject(m->store, cn, serial, now_realtime_usec());
        if (r < 0)
                return r;
        if (r > 0) {
                log_notice("Revoked %d earlier certificate%s of %s: a new one enrolled from %s.", r,
                           r == 1 ? "" : "s", cn, strna(address));
                r = bus_ca_refresh_crl(m);
                if (r < 0)
                        return r;
        }
        r = identity_get(m, cn, &i);
        if (r < 0)
                return r;
        r = free_and_strdup(&i->serial, serial);
        if (r >= 0)
                r = free_and_strdup(&i->address, address);
        i->heard_at = now_monotonic_usec();
        announce(m, cn);
        return r;
}

int identity_revoke(Manager *m, const char *cn) {
        Identity *i = hashmap_get(m->identities, cn);
        int r;

        r = store_certificates_revoke_subject(m->store, cn, NULL, now_realtime_usec());
        if (r < 0)
                return r;
        if (i && i->serial) {
                i->serial = mfree(i->serial);
                i->address = mfree(i->address);
                announce(m, cn);
        }
        if (r == 0)
                return 0;
        log_notice("Revoked the certificate of %s: its machine asked for a new one.", cn);
        return bus_ca_refresh_crl(m);
}
