/* SPDX-License-Identifier: MIT */
/* Clone sessions: validation, the state machine and its one transition table. */
#pragma once

#include <systemd/sd-bus.h>

#include "domain.h"
#include "manager.h"
#include "target.h"
#include "throttle.h"

typedef struct CloneSession {
        Manager *manager;
        char *id, *name;
        /* Derived from its targets' (clone_status_of_targets), kept in the row for listings; a session that
         * captures an image without targets takes the steps itself (clone_captures_alone), with its own
         * error. */
        CloneStatus status;
        char *error;
        CloneMode mode;
        /* Its source: a node's disk, or an image (then source_node and source_device are NULL). */
        char *source_node, *source_device;
        char *image;
        char *source_address;
        uint16_t source_port;
        char *staging_backend, *staging_path;
        StagingStatus staging_status;
        char *staging_resources; /* JSON array: what provisioning created, undone in reverse order */
        uint64_t bytes_uploaded;
        ResizeMode resize_mode; /* what a target gets unless it names its own */
        CloneIdentity identity;
        CloneUnused unused;     /* what targets do with what the source's filesystems do not use */
        char *source_disk_json; /* what the source's agent scanned, as Disk JSON */
        uint64_t bytes_total;
        uint64_t created_at, started_at, completed_at;
        uint32_t created_by;
        char *idempotency_key;
        char *source_digest;
        uint64_t stored_bytes;     /* what a staged upload takes on its storage, once whole */
        json_object *source_notes; /* what the source said of its disk: what it copies whole, and why */
        /* Its nodes, through their power drivers: booted from the network when it starts, switched off when
         * it ends. What each did, in memory: PowerNotes. */
        int power_cycle, power_off;
        char **power_notes;

        /* Its targets, by index (targets[i]->index == i + 1). */
        CloneTarget **targets;
        size_t n_targets;

        /* Highest report sequence of the source applied (loaded from report_sequences). */
        uint64_t source_sequence;
        /* Progress reports change only memory; a timer writes dirty sessions once a second. */
        bool progress_dirty;

        Throttle progress;
        /* Boot answers refused because the role's certificate was live: what an operator should look at. */
        char **refused_claims;
} CloneSession;

/* What a client asks for at Create or Update; NULL fields are not given. */
typedef struct CloneSpec {
        const char *name, *mode, *source_node, *target_node, *source_device, *target_device;
        const char *storage, *resize_mode, *idempotency_key, *identity, *unused;
        const char *image;   /* the source is this image: no source node or device then */
        const char *keep_as; /* a staged session keeps its upload as an image of this name */
        json_object *files;  /* written on the target's clone (identity auto) */
        bool power_cycle, power_off;
} CloneSpec;

CloneSession *clone_free(CloneSession *c);
char *clone_path(const CloneSession *c);
/* Target index (1, 2, …) of c, or NULL. The first one is what the session's Target* properties show. */
CloneTarget *clone_target(CloneSession *c, uint32_t index);
CloneTarget *clone_first_target(CloneSession *c);
/* The target node_id is, or NULL. */
CloneTarget *clone_target_of_node(CloneSession *c, const char *node_id);
/* Whether c only captures an image: no targets, its own status. */
bool clone_captures_alone(CloneSession *c);
/* Its image has taken the upload: a session that captures alone completes (inside the caller's
 * transaction). */
int clone_capture_done(CloneSession *c, sd_bus_error *error);
/* Why the session failed or was cancelled: its first target's that did, or NULL. */
const char *clone_error(CloneSession *c);
/* The serial of the live certificate of the source (t NULL) or of target t, or NULL. */
const char *clone_certificate(CloneSession *c, CloneTarget *t);
/* Each node of c (source and targets) through its power driver (power.c): action netboot when it starts
 * (option power_cycle), off when it ends (power_off). What each did goes to PowerNotes. */
void clone_power_nodes(CloneSession *c, const char *action);
/* Records (and announces) that a boot answer for one of c's roles was refused, with why. */
void clone_note_refused_claim(CloneSession *c, const char *message);
/* PropertiesChanged for the named CloneSession properties (NULL-terminated). */
void clone_emit_changed(CloneSession *c, const char *first, ...);

/* Returns 1 and the existing session if the idempotency key is known, else creates one and returns 0. */
int clone_create(Manager *m, const CloneSpec *spec, uint32_t uid, CloneSession **ret, sd_bus_error *error);
/* What clone_create would refuse spec for, checked without creating anything: the bus methods check their
 * arguments so before polkit asks anyone to authenticate. */
int clone_check(Manager *m, const CloneSpec *spec, sd_bus_error *error);
/* check_only: refused as it would be, nothing changed (the bus methods check so before polkit). The target
 * node and device are the first target's. */
int clone_update(CloneSession *c, const CloneSpec *changes, bool check_only, sd_bus_error *error);
/* Starts every target that is pending or failed (a retry); completed ones stay. */
int clone_start(CloneSession *c, sd_bus_error *error);
int clone_cancel(CloneSession *c, sd_bus_error *error);
/* Removes a finished session; an active one is cancelled instead (*ret_cancelled = true). */
int clone_delete(CloneSession *c, bool *ret_cancelled, sd_bus_error *error);
/* role: source, target (the first), or target-<n>. ret_token NULL: only checks that one could be issued. */
int clone_issue_token(CloneSession *c, const char *role, char **ret_token, sd_bus_error *error);

/* The one place a target's status changes: checks its transition table and writes the target's row, then
 * the session's status follows (clone_status_of_targets). Inside the caller's transaction, if any; what
 * follows from it (its nodes released, the staging removed) is queued for after the commit. */
int clone_target_transition(CloneTarget *t, CloneStatus to, const char *error_message, sd_bus_error *error);
/* Each active target of c that can become to does (a source's step, failure or end). */
int clone_targets_transition(CloneSession *c, CloneStatus to, const char *error_message, sd_bus_error *error);
/* Ends every running target of c as to (failed or cancelled), in one transaction. */
int clone_end(CloneSession *c, CloneStatus to, const char *message, sd_bus_error *error);
/* Progress from a target's agent; PropertiesChanged is rate-limited to 4 per second. */
int clone_target_set_progress(CloneTarget *t, uint64_t bytes_transferred, uint64_t rate);
/* Once the source's and t's digests are both known: t completes if they agree, else fails. */
int clone_target_verdict(CloneTarget *t, sd_bus_error *error);

/* Runs step(c, userdata, error) inside one store transaction, or inside the caller's if one is open: what it
 * changed is kept, or, when it or the commit fails, undone in the store and in memory (the session's and its
 * targets' statuses). */
typedef int (*CloneStep)(CloneSession *c, void *userdata, sd_bus_error *error);
int clone_transact(CloneSession *c, CloneStep step, void *userdata, sd_bus_error *error);

int clone_resolve(Manager *m, const char *name, CloneSession **ret, sd_bus_error *error);
/* The session as the node protocol's Session record shows it to the source (t NULL, source true), to target
 * t, or to a node that only reads it (source false, t NULL: as its first target). */
json_object *clone_node_view(CloneSession *c, bool source, CloneTarget *t);

/* Once both digests are known: completed if they agree, else failed with the sentence in *ret_message. */
int clone_digest_verdict(const char *source, const char *target, CloneStatus *ret_to, char **ret_message);

/* One source to several targets: another target of the session (a direct source serves each, a staged
 * upload is downloaded by each), with its own plan, progress and digest, started at once if the session
 * runs. */
typedef struct TargetSpec {
        const char *node, *device;
        const char *resize_mode; /* NULL: the session's */
        json_object *files;      /* written on its clone (identity auto), NULL: none */
} TargetSpec;
int clone_add_target(CloneSession *c, const TargetSpec *spec, CloneTarget **ret, sd_bus_error *error);
/* What clone_add_target would refuse, checked without adding anything. */
int clone_add_target_check(CloneSession *c, const TargetSpec *spec, sd_bus_error *error);
/* After a change of the session id, if it is still there, once committed (manager_after_commit): its
 * staging goes once no target is active any more. */
void clone_changed_of(Manager *m, const char *id);

/* Resize plans (plan.h) for a target's disks: those the agents reported, else the nodes' last scans. A
 * target after the first plans from the source as the first target's plan uploads it, and may not shrink
 * it further. clone_plan makes the plan with edits (NULL: the current plan's), stores it and emits Plan; an
 * infeasible plan is stored (it says why) unless refuse_infeasible, when it is a PlanInfeasible error. */
int clone_plan(CloneTarget *t, json_object *edits, bool refuse_infeasible, sd_bus_error *error);
/* A disk scan from the source's agent (t NULL) or target t's, kept for planning; the plans are made again
 * once both disks are known. */
int clone_report_disk(CloneSession *c, CloneTarget *t, json_object *disk, sd_bus_error *error);
/* The source's disk as the session uploads it (Disk JSON): the first target's shrinks applied, as long as
 * the upload. NULL if unknown or out of memory. */
json_object *clone_uploaded_disk(CloneSession *c);
/* The stored plan, or NULL. */
json_object *clone_plan_json(CloneTarget *t);
int clone_attach(Manager *m, CloneSession *c);
/* Gives c the target loaded from the store (taken, freed on failure). */
int clone_attach_target(CloneSession *c, CloneTarget *t);
