/* SPDX-License-Identifier: MIT */
/* The SQLite state: schema migrations and every SQL statement the controller runs. */
#pragma once

#include <sqlite3.h>

#include "json-util.h"
#include "macro.h"

typedef struct Store Store;
typedef struct Node Node;
typedef struct CloneSession CloneSession;
typedef struct CloneTarget CloneTarget;
typedef struct StorageBackend StorageBackend;
typedef struct Image Image;
typedef struct DiskInfo DiskInfo;
typedef struct PartitionOperation PartitionOperation;

int store_open(const char *path, Store **ret);
/* The same, migrating no further than schema version (tests make databases as older versions did). */
int store_open_version(const char *path, size_t version, Store **ret);
Store *store_close(Store *s);
int store_schema_version(Store *s);

/* Transactions: every multi-row change runs inside one. */
int store_begin(Store *s);
int store_commit(Store *s);
void store_rollback(Store *s);
bool store_in_transaction(Store *s);
/* on_end runs after every COMMIT (committed) and ROLLBACK (not): what waited for the outcome goes out
 * or is dropped. */
void store_set_end_hook(Store *s, void (*on_end)(void *userdata, bool committed), void *userdata);

/* Binds arguments by a type string — 's' string (NULL binds NULL), 't' uint64_t, 'i' int64_t,
 * 'u' uint32_t, 'b' bool (as int) — and runs the statement to completion. Returns the number of changed
 * rows, -EEXIST on a constraint violation, -EIO on other errors. */
int store_exec(Store *s, const char *sql, const char *types, ...);
/* Same binding; returns the prepared statement for the caller to step. */
int store_query(Store *s, sqlite3_stmt **ret, const char *sql, const char *types, ...);
static inline void sqlite3_finalizep(sqlite3_stmt **stmt) {
        sqlite3_finalize(*stmt);
}
#define _cleanup_finalize_ _cleanup_(sqlite3_finalizep)
/* sqlite3_column_text as a new string (NULL for SQL NULL); -ENOMEM through *oom. */
char *store_column_strdup(sqlite3_stmt *stmt, int column, bool *oom);

/* Nodes */
int store_node_insert(Store *s, const Node *n);
int store_node_update(Store *s, const Node *n);
int store_node_delete(Store *s, const char *id);
/* The *_load functions hand every stored record to add, which owns it from then on (and frees it if it
 * fails). */
int store_nodes_load(Store *s, int (*add)(void *userdata, void *record), void *userdata);
/* Ids of clone sessions that name node id as source or target, comma-separated, or NULL if none. */
int store_node_sessions(Store *s, const char *id, char **ret);

/* Disks and partition operations: the node's last scan, and the operations queued on each disk. */
int store_disk_upsert(Store *s, const char *node_id, const DiskInfo *d, const char *fingerprint,
                      uint64_t scanned_at);
int store_disk_delete(Store *s, const char *node_id, const char *device);
int store_disk_set_apply(Store *s, const char *node_id, const char *device, uint64_t at);
int store_disks_load(Store *s, int (*add)(void *userdata, const char *node_id, json_object *disk,
                                          uint64_t scanned_at, uint64_t apply_requested_at),
                     void *userdata);
int store_operation_insert(Store *s, const char *node_id, const char *device, const PartitionOperation *op);
/* Status, error and times. */
int store_operation_update(Store *s, const PartitionOperation *op);
int store_operation_delete(Store *s, const char *id);
int store_operations_load(Store *s, int (*add)(void *userdata, const char *node_id, const char *device,
                                               PartitionOperation *op),
                          void *userdata);

/* Clone sessions */
int store_session_insert(Store *s, const CloneSession *c);
/* Writes every mutable column, but only if the stored status is still expected_status. -ESTALE if not. */
int store_session_update(Store *s, const CloneSession *c, const char *expected_status);
int store_session_delete(Store *s, const char *id);
/* A session's targets (their key: the session's id and the target's index). */
int store_target_insert(Store *s, const CloneTarget *t);
int store_target_update(Store *s, const CloneTarget *t);
/* Every target, by session and index. */
int store_targets_load(Store *s, int (*add)(void *userdata, void *record), void *userdata);
/* Only the progress columns, for the once-a-second flush. */
int store_session_progress(Store *s, const CloneSession *c);
/* FULL (the default) fsyncs every commit; NORMAL leaves it to the WAL checkpoint — used for progress, which
 * the next report supersedes anyway. Not inside a transaction. */
int store_set_durable(Store *s, bool durable);
int store_sessions_load(Store *s, int (*add)(void *userdata, void *record), void *userdata);

/* Storage backends */
int store_storage_insert(Store *s, const StorageBackend *b);
int store_storage_update(Store *s, const StorageBackend *b);
int store_storage_delete(Store *s, const char *id);
int store_storages_load(Store *s, int (*add)(void *userdata, void *record), void *userdata);
/* Ids of sessions staging on backend id, comma-separated, or NULL if none. */
int store_storage_sessions(Store *s, const char *id, char **ret);

/* Images (the session that captures one, and those deployed from it, name it) */
int store_image_insert(Store *s, const Image *i);
int store_image_update(Store *s, const Image *i);
int store_image_delete(Store *s, const char *id);
int store_images_load(Store *s, int (*add)(void *userdata, void *record), void *userdata);

/* Certificates and enrolment tokens */
int store_certificate_insert(Store *s, const char *serial, const char *subject, const char *role,
                             const char *node_id, const char *session_id, uint64_t not_before,
                             uint64_t not_after);
/* -ENOENT if unknown, -EALREADY if already revoked. */
int store_certificate_revoke(Store *s, const char *serial, uint64_t when);
/* Revokes every certificate of subject but except_serial (NULL: all); returns how many. */
int store_certificates_revoke_subject(Store *s, const char *subject, const char *except_serial,
                                      uint64_t when);
typedef struct CertificateRow {
        char *serial, *subject, *role, *node_id, *session_id;
        uint64_t not_before, not_after, created_at, revoked_at;
} CertificateRow;
/* Calls cb for every issued certificate (only revoked ones if revoked_only), oldest first. */
int store_certificates_foreach(Store *s, bool revoked_only,
                               int (*cb)(void *userdata, const CertificateRow *row), void *userdata);
/* address: where the token may enrol from (the machine its boot answer went to), or NULL for anywhere. */
int store_token_insert(Store *s, const char *hash, const char *node_id, const char *session_id,
                       const char *role, const char *address, uint64_t expires_at);
/* Marks every unused token of a name (a session's role, or a node's) used: a newer one replaces them. */
int store_tokens_retire(Store *s, const char *node_id, const char *session_id, const char *role,
                        uint64_t when);
/* Forgets tokens that expired before `before`. */
int store_tokens_purge(Store *s, uint64_t before);

typedef struct TokenRow {
        char *hash, *node_id, *session_id, *role, *address;
        uint64_t created_at, expires_at, used_at;
} TokenRow;
/* -ENOENT if no token has this hash. */
int store_token_lookup(Store *s, const char *hash, TokenRow *ret);
void token_row_done(TokenRow *t);
/* Marks the token used; -EALREADY if it was used already (by a concurrent enrolment). */
int store_token_use(Store *s, const char *hash, uint64_t when);

/* Report sequences: the highest applied per (session, role); never lowered. */
int store_sequence_set(Store *s, const char *session_id, const char *role, uint64_t sequence);
int store_sequences_load(Store *s,
                         int (*cb)(void *userdata, const char *session_id, const char *role, uint64_t sequence),
                         void *userdata);

/* Audit log */
int store_event(Store *s, uint32_t uid, const char *action, const char *object, const char *result);
