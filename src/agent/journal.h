/* SPDX-License-Identifier: MIT */
/* Journals: small JSON files in the state directory, each replaced atomically and durably, that say how
 * far a job got so that a restart goes on from there. The direct target's (journal.json) and the staged
 * transfer's (staged-journal.json) are resume points; a partition move's (move-journal.json) is its own
 * record, read and written through the same two calls. */
#pragma once

#include "json-util.h"
#include "macro.h"
#include "usedmap.h"

/* Writes record to path: a whole new file, flushed, in place of the old one. */
int journal_write(const char *path, json_object *record);
/* The record at path: 1 and it, 0 and NULL if there is none; -EBADMSG if it does not parse. */
int journal_read(const char *path, json_object **ret);

/* A resume point is a job's own: the session, the device and its size say whose. offset: everything before
 * it is written and durable; digest: set once the job is done, its result (to report again); skipped, if
 * the job keeps one: the ranges before offset it was told no filesystem uses (saved; loaded into it). */
typedef struct ResumePoint {
        const char *session, *device;
        uint64_t size;
        uint64_t offset;
        const char *digest;
        UsedMap *skipped;
} ResumePoint;

int journal_save_resume(const char *path, const ResumePoint *p);
/* 1 and the offset (and digest, if any, else NULL) if the journal at path is for the job p names (its
 * session, device and size), else 0: another job's journal, or none, is no resume point. */
int journal_load_resume(const char *path, const ResumePoint *p, uint64_t *ret_offset, char **ret_digest);
