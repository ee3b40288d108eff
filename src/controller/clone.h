/* SPDX-License-Identifier: MIT */
/* Clone sessions: validation, the state machine and its one transition table. */
#pragma once

#include <systemd/sd-bus.h>

#include "domain.h"
#include "manager.h"
#include "throttle.h"

typedef struct CloneSession {
        Manager *manager;
        char *id, *name;
        CloneStatus status;
        CloneMode mode;
        char *source_node, *target_node, *source_device, *target_device;
        char *source_address;
        uint16_t source_port;
        char *staging_backend, *staging_path;
        StagingStatus staging_status;
        char *staging_resources; /* JSON array: what provisioning created, undone in reverse order */
        uint64_t bytes_uploaded;
        ResizeMode resize_mode;
        char *plan_json; /* the resize plan (plan.h), once made */
        char *source_disk_json, *target_disk_json; /* what the agents scanned, as Disk JSON */
        /* One source to several targets: the id of the staged session whose source and staging this one
         * shares (it has a target only), or NULL. */
        char *follows;
        uint64_t bytes_total, bytes_transferred, transfer_rate;
        char *error;
        /* What keeps the target from its source right now (an address its certificate does not name, a
         * refused connection), as the target said it while it goes on trying. Not stored: a target with
         * the problem still says it again. */
        char *problem;
        uint64_t created_at, started_at, completed_at;
        uint32_t created_by;
        char *idempotency_key;
        char *source_digest, *target_digest;

        /* Highest report sequence applied per role (loaded from report_sequences). */
        uint64_t source_sequence, target_sequence;
        /* Progress reports change only memory; a timer writes dirty sessions once a second. */
        bool progress_dirty;

        Throttle progress;
        /* Boot answers refused because the role's certificate was live: what an operator should look at. */
        char **refused_claims;
} CloneSession;

/* What a client asks for at Create or Update; NULL fields are not given. */
typedef struct CloneSpec {
        const char *name, *mode, *source_node, *target_node, *source_device, *target_device;
        const char *storage, *resize_mode, *idempotency_key;
        const char *follows; /* Create only: the session whose source and staging this target shares */
} CloneSpec;

CloneSession *clone_free(CloneSession *c);
char *clone_path(const CloneSession *c);
/* The serial of the live certificate of c's role (an added target's source is its session's), or NULL. */
const char *clone_certificate(CloneSession *c, const char *role);
/* Records (and announces) that a boot answer for one of c's roles was refused, with why. */
void clone_note_refused_claim(CloneSession *c, const char *message);
/* PropertiesChanged for the named CloneSession properties (NULL-terminated). */
void clone_emit_changed(CloneSession *c, const char *first, ...);

/* Returns 1 and the existing session if the idempotency key is known, else creates one and returns 0. */
int clone_create(Manager *m, const CloneSpec *spec, uint32_t uid, CloneSession **ret, sd_bus_error *error);
/* What clone_create would refuse spec for, checked without creating anything: the bus methods check their
 * arguments so before polkit asks anyone to authenticate. */
int clone_check(Manager *m, const CloneSpec *spec, sd_bus_error *error);
/* check_only: refused as it would be, nothing changed (the bus methods check so before polkit). */
int clone_update(CloneSession *c, const CloneSpec *changes, bool check_only, sd_bus_error *error);
int clone_start(CloneSession *c, sd_bus_error *error);
int clone_cancel(CloneSession *c, sd_bus_error *error);
/* Removes a finished session; an active one is cancelled instead (*ret_cancelled = true). */
int clone_delete(CloneSession *c, bool *ret_cancelled, sd_bus_error *error);
/* ret_token NULL: only checks that one could be issued. */
int clone_issue_token(CloneSession *c, const char *role, char **ret_token, sd_bus_error *error);

/* The one place status changes: checks the transition table, persists, then updates the object. */
int clone_transition(CloneSession *c, CloneStatus to, const char *error_message, sd_bus_error *error);
/* Progress from the agents; PropertiesChanged is rate-limited to 4 per second. */
int clone_set_progress(CloneSession *c, uint64_t bytes_transferred, uint64_t rate);

int clone_resolve(Manager *m, const char *name, CloneSession **ret, sd_bus_error *error);
/* The session as the node protocol's Session record shows it to role (source, target, or NULL for a node
 * that only reads it). */
json_object *clone_node_view(CloneSession *c, const char *role);

/* Once both digests are known: completed if they agree, else failed with the sentence in *ret_message. */
int clone_digest_verdict(const char *source, const char *target, CloneStatus *ret_to, char **ret_message);

/* One source to several targets. clone_add_target creates a session following c (staged, not itself a
 * follower) for another target: same source, staging and image, its own target, progress, digest and plan,
 * started at once if c is running. clone_followed is the session c follows (NULL if none); clone_source_digest
 * the digest of what c's source read. */
int clone_add_target(CloneSession *c, const char *node, const char *device, const char *resize_mode, uint32_t uid,
                     CloneSession **ret, sd_bus_error *error);
/* What clone_add_target would refuse, checked without adding anything. */
int clone_add_target_check(CloneSession *c, const char *node, const char *device, const char *resize_mode,
                           sd_bus_error *error);
CloneSession *clone_followed(CloneSession *c);
/* The session with the source and the staging: the one c follows, else c itself. */
CloneSession *clone_owner(CloneSession *c);
bool clone_has_followers(CloneSession *c);
/* After a change of c (its status, its source's digest): the targets following it take their source's steps,
 * and the shared staging is removed once the session with it and every target following it are over. */
void clone_family_changed(CloneSession *c);
/* The same for the session id, if it is still there: as follow-on work after a commit
 * (manager_after_commit). */
void clone_family_changed_of(Manager *m, const char *id);
/* PropertiesChanged for property on every session following c (StagingStatus: theirs is c's). */
void clone_emit_followers(CloneSession *c, const char *property);
const char *clone_source_digest(CloneSession *c);

/* Resize plans (plan.h) for the session's disks: those its agents reported, else the nodes' last scans.
 * clone_plan makes the plan with edits (NULL: the current plan's), stores it and emits Plan; an infeasible
 * plan is stored (it says why) unless refuse_infeasible, when it is a PlanInfeasible error instead. */
int clone_plan(CloneSession *c, json_object *edits, bool refuse_infeasible, sd_bus_error *error);
/* A disk scan from role's agent, kept for planning; the plan is made again once both disks are known. */
int clone_report_disk(CloneSession *c, const char *role, json_object *disk, sd_bus_error *error);
/* The stored plan, or NULL. */
json_object *clone_plan_json(CloneSession *c);
int clone_attach(Manager *m, CloneSession *c);
