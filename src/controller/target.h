/* SPDX-License-Identifier: MIT */
/* A clone session's targets: each a machine's disk written from the session's one source, with its own
 * status (and transition table), certificate (clone-<session>-target-<n>), plan, progress, digest and
 * error. The session's status is derived from theirs (clone_status_of_targets). */
#pragma once

#include "domain.h"
#include "throttle.h"

typedef struct CloneSession CloneSession;

typedef struct CloneTarget {
        CloneSession *session;
        char *session_id;
        uint32_t index; /* 1, 2, …: its place in the session, in its name and its certificate's */
        CloneStatus status;
        char *node, *device;
        ResizeMode resize_mode;
        char *plan_json; /* the resize plan (plan.h), once made */
        char *disk_json; /* what its agent scanned, as Disk JSON */
        uint64_t bytes_transferred, transfer_rate;
        char *digest; /* of what it wrote */
        json_object *notes; /* what its agent said of it with its completion: its filesystem checks */
        char *error;
        /* What keeps it from its source right now, as its agent says while it goes on trying. Not stored: a
         * target with the problem says it again. */
        char *problem;
        uint64_t started_at, completed_at;
        json_object
                *files; /* {path: content}: written on its clone's Linux roots (identity auto), or NULL */
        /* In a chain (chain.h): where it forwards what it wrote, once it said so, and its place. */
        char *relay_address;
        uint16_t relay_port;
        uint32_t chain_rank;
        int chain_lost; /* reported lost, and not heard of since */
        /* Highest report sequence applied (loaded from report_sequences). */
        uint64_t sequence;
        Throttle progress;
} CloneTarget;

CloneTarget *clone_target_free(CloneTarget *t);

/* Refused (InvalidArgument, saying what to change) unless files ({path: content}, NULL: none) may be written
 * on a clone: absolute paths without "..", none under /proc, /sys, /dev or /run, at most
 * CLONE_TARGET_FILES_MAX of them and CLONE_TARGET_FILES_BYTES in all. */
#define CLONE_TARGET_FILES_MAX 32
#define CLONE_TARGET_FILES_BYTES (UINT64_C(1) << 20)
int clone_target_files_check(json_object *files, sd_bus_error *error);

/* The transition table of a target, which is also what a session may become by its targets. */
bool clone_target_can_become(CloneStatus from, CloneStatus to);

/* A session's status from its targets': pending while none started; else the furthest step an active
 * one took; once none is active, completed if every started one completed, else failed if one failed,
 * else cancelled. */
CloneStatus clone_status_of_targets(CloneTarget *const *targets, size_t n);

char *clone_target_path(const CloneTarget *t);
/* PropertiesChanged for the named CloneTarget properties (NULL-terminated), and for the session's own of
 * its first target. */
void clone_target_emit_changed(CloneTarget *t, const char *first, ...);
