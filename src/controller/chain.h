/* SPDX-License-Identifier: MIT */
/* Chains: the targets of a session with more than one target pull from each other in a line — the first
 * from the source (a direct session) or the staging area (a staged one, an image's deploy), each one after
 * from the one before it, which forwards what it verified and wrote (the agent's relay) — so the source or
 * the store sends each byte once and every link carries it once.
 *
 * The line is the targets in the order of their place (chain_rank; their index until one is dropped).
 * A target's upstream is the nearest one before it that forwards, or is about to (it is copying or waiting
 * to, and was not lost: a target reports its end only once no one after it needs it), else the source or
 * the staging area. A
 * target whose downstream says it lost it is dropped: it stops forwarding and takes the place after the
 * last, so that, when it comes back, it rejoins at the tail and pulls from there; its downstream pulls from
 * its upstream, from where its journal says. Until it is heard of again, no one waits for it. */
#pragma once

#include "clone.h"

/* Whether c's targets form a chain. */
bool chain_of(CloneSession *c);
/* t's upstream in the chain, or NULL for the source or staging area: the nearest target before it that
 * forwards or is about to (its relay_address NULL until it says where: t waits for it, and reports it lost
 * if it does not come). */
CloneTarget *chain_upstream(CloneTarget *t);
/* Whether a target after t in the chain may still pull (it has not written everything, and it is not lost):
 * t forwards what it writes, and its agent holds what follows its copy (resize, identity: they change the
 * disk) until this is false. */
bool chain_forwards(CloneTarget *t);
/* A lost target's agent reported again: true if it was lost (it counts in the chain again). */
bool chain_heard_of(CloneTarget *t);
/* t's agent forwards at address:port. */
int chain_relay_ready(CloneTarget *t, const char *address, uint16_t port);
/* t's downstream reports it lost t (its name, as the certificate has it): t leaves the line and takes the
 * last place. 1 if it was dropped; 0 if it was not the downstream's upstream (any more). */
int chain_drop(CloneTarget *downstream, const char *upstream_name, const char *why);
/* The name of t's upstream: its certificate's, clone-<session>-source or clone-<session>-target-<n>; or
 * CHAIN_STORE, a staged session's staging area. */
#define CHAIN_STORE "store"
int chain_upstream_name(CloneTarget *t, char **ret);
