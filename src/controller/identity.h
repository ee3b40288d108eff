/* SPDX-License-Identifier: MIT */
/* Identities: the one certificate that speaks for each name (node-<id>, clone-<session>-<role>). */
#pragma once

#include "manager.h"
#include "util.h"

/* What a certificate name says: node-<id>, clone-<session>-source, clone-<session>-target-<n> (or -target,
 * target 1's name before sessions had several), or no identity at all. */
typedef enum IdentityKind { IDENTITY_NONE, IDENTITY_NODE, IDENTITY_CLONE } IdentityKind;

typedef struct IdentityName {
        IdentityKind kind;
        char node[PB_ID_LEN + 1], session[PB_ID_LEN + 1], role[8]; /* role: source or target */
        uint32_t target;                                           /* which target, from 1; 0 for the source */
        const char *cn;
} IdentityName;

/* Parses a certificate name (empty: no identity); -EINVAL if it is none of ours. */
int identity_parse(const char *cn, IdentityName *ret);

typedef struct Identity {
        char *cn;
        char *serial;      /* its live certificate; NULL when it has none */
        char *address;     /* where that certificate enrolled from */
        uint64_t heard_at; /* CLOCK_MONOTONIC µs of its last call through the bridge */
} Identity;

/* Loads each name's newest certificate that is neither revoked nor expired. */
int identity_load(Manager *m);
void identity_done(Manager *m);

/* The certificate name of a clone role or (session NULL) of a node. */
int identity_name(const char *node_id, const char *session_id, const char *role, char **ret);

/* A call by the certificate named cn went through: it is alive. */
void identity_heard(Manager *m, const char *cn);
/* Whether cn has a certificate that was heard from within [Enrolment] IdentityIdleSec: then a machine
 * asking to be cn is a second claim, not the same machine booting again. */
bool identity_is_live(Manager *m, const char *cn, const Identity **ret);
/* A new certificate for cn: every earlier one of cn is revoked (and the CRL published) in the same
 * store transaction as the caller's, so at most one certificate of a name is ever good. */
int identity_enrolled(Manager *m, const char *cn, const char *serial, const char *address);
/* Revokes cn's certificate, if it has one (a new token for cn was minted: the old holder is gone). */
int identity_revoke(Manager *m, const char *cn);
