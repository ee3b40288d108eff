/* SPDX-License-Identifier: MIT */
/* One job skeleton for every verb: enrol, check that the certificate is for the verb's role, report the
 * disk (clone roles, for the resize plan), follow the session (or the node's orders), and end with the
 * session's final status. A verb fills in a JobKind with what is its own. */
#pragma once

#include "agent.h"

typedef struct JobKind {
        const char *role; /* what the certificate must be for: source, target or node */
        /* Clone roles report their disk once enrolled (its fingerprint in a->disk_fingerprint, which the
         * resize plan must be made from); node jobs report their own scans. */
        bool report_disk;
        /* After the disk report, before the watch starts: <0 fails the job, >0 means it is done without a
         * watch (a one-off scan). May be NULL. */
        int (*started)(Agent *a);
        /* Each record of the watch (WatchSession, or WatchNode for node jobs) while the session goes on. */
        WatchChanged changed;
        /* The session ended: the verb stops its work; true if it ends the job itself (later, or already),
         * false to have it ended now with the session's status. May be NULL. */
        bool (*ended)(Agent *a, json_object *session);
} JobKind;

/* Runs kind's job: enrols (or goes on with the identity from an earlier run) and goes from there. */
int job_start(Agent *a, const JobKind *kind);
