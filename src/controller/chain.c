/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "chain.h"
#include "identity.h"
#include "log.h"
#include "util.h"

bool chain_of(CloneSession *c) {
        return c->n_targets > 1;
}

static uint32_t rank_of(const CloneTarget *t) {
        return t->chain_rank ?: t->index;
}

/* Whether t forwards, or is about to: it is copying or waiting to, and was not lost. Its downstream waits
 * for it to say where rather than pull from the source meanwhile. */
static bool may_forward(const CloneTarget *t) {
        return !t->chain_lost && IN_SET(t->status, CLONE_WAITING, CLONE_SOURCE_READY, CLONE_CLONING);
}

/* Whether a comes before b in the line. */
static bool before(const CloneTarget *a, const CloneTarget *b) {
        return rank_of(a) < rank_of(b) || (rank_of(a) == rank_of(b) && a->index < b->index);
}

CloneTarget *chain_upstream(CloneTarget *t) {
        CloneSession *c = t->session;
        CloneTarget *best = NULL;

        if (!chain_of(c))
                return NULL;
        for (size_t i = 0; i < c->n_targets; i++) {
                CloneTarget *u = c->targets[i];
                if (u != t && may_forward(u) && before(u, t) && (!best || before(best, u)))
                        best = u;
        }
        return best;
}

/* Whether u may still pull from the targets before it: it is not done, has not written everything, and was
 * not lost without being heard of since (one that comes back can always pull from the source). */
static bool still_pulls(const CloneTarget *u) {
        return !clone_status_is_final(u->status) && !u->chain_lost &&
               u->bytes_transferred < u->session->bytes_total;
}

bool chain_forwards(CloneTarget *t) {
        CloneSession *c = t->session;

        if (!chain_of(c) || clone_status_is_final(t->status) || t->status == CLONE_PENDING)
                return false;
        for (size_t i = 0; i < c->n_targets; i++) {
                CloneTarget *u = c->targets[i];
                if (u != t && before(t, u) && still_pulls(u))
                        return true;
        }
        return false;
}

bool chain_heard_of(CloneTarget *t) {
        if (!t->chain_lost)
                return false;
        t->chain_lost = false;
        log_info("Clone session %s: target %" PRIu32 ", lost before, is back.", t->session_id, t->index);
        return true;
}

int chain_relay_ready(CloneTarget *t, const char *address, uint16_t port) {
        if (free_and_strdup(&t->relay_address, address) < 0)
                return -ENOMEM;
        t->relay_port = port;
        log_info("Clone session %s, target %" PRIu32 " forwards on %s:%u.", t->session_id, t->index, address,
                 port);
        return 0;
}

int chain_upstream_name(CloneTarget *t, char **ret) {
        CloneTarget *u = chain_upstream(t);
        _cleanup_free_ char *role = NULL;

        if (!u && t->session->mode == CLONE_MODE_STAGED)
                return (*ret = strdup(CHAIN_STORE)) ? 0 : -ENOMEM;
        if (u && clone_target_role(u->index, &role) < 0)
                return -ENOMEM;
        return identity_name(NULL, t->session_id, role ?: "source", ret);
}

int chain_drop(CloneTarget *downstream, const char *upstream_name, const char *why) {
        CloneSession *c = downstream->session;
        CloneTarget *u = chain_upstream(downstream);
        _cleanup_free_ char *name = NULL;
        uint32_t last = 0;

        if (!u)
                return 0; /* the source or the staging area: nothing to relink to */
        if (chain_upstream_name(downstream, &name) < 0)
                return -ENOMEM;
        if (!streq(name, upstream_name))
                return 0; /* relinked already */
        for (size_t i = 0; i < c->n_targets; i++)
                last = MAX(last, rank_of(c->targets[i]));
        log_warning("Clone session %s: target %" PRIu32 " lost target %" PRIu32
                    ", its upstream (%s); target %" PRIu32
                    " leaves the chain and rejoins at its tail when it forwards again.",
                    c->id, downstream->index, u->index, why, u->index);
        u->relay_address = mfree(u->relay_address);
        u->relay_port = 0;
        u->chain_rank = last + 1;
        u->chain_lost = true;
        return 1;
}
