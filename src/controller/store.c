/* SPDX-License-Identifier: MIT */
/* The SQLite state: the schema as a list of migrations keyed by PRAGMA user_version, and every statement
 * the controller runs, each prepared with bound parameters. */
#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <sys/stat.h>

#include "clone.h"
#include "disk.h"
#include "hashmap.h"
#include "image.h"
#include "log.h"
#include "node.h"
#include "storage.h"
#include "store.h"
#include "util.h"

struct Store {
        sqlite3 *db;
        /* Told when a transaction ends, committed or not (store_set_end_hook). */
        void (*on_end)(void *userdata, bool committed);
        void *on_end_userdata;
        /* Statements store_exec ran, kept prepared, keyed by their SQL text. */
        Hashmap *statements;
};

/* Never edit a released migration: append a new one. */
static const char *const migrations[] = {
        /* 1: the seed's tables, made strict */
        "CREATE TABLE nodes ("
        "  id TEXT PRIMARY KEY NOT NULL,"
        "  hostname TEXT NOT NULL UNIQUE,"
        "  mac TEXT NOT NULL UNIQUE,"
        "  arch TEXT NOT NULL,"
        "  serial TEXT,"
        "  state TEXT NOT NULL DEFAULT 'discovered',"
        "  boot_mode TEXT NOT NULL DEFAULT 'local',"
        "  last_seen INTEGER NOT NULL DEFAULT 0,"
        "  created_at INTEGER NOT NULL);"
        "CREATE UNIQUE INDEX nodes_serial ON nodes(serial) WHERE serial IS NOT NULL;"
        "CREATE TABLE storage_backends ("
        "  id TEXT PRIMARY KEY NOT NULL,"
        "  name TEXT NOT NULL UNIQUE,"
        "  type TEXT NOT NULL CHECK (type IN ('nfs', 'iscsi')),"
        "  config TEXT NOT NULL,"
        "  secret TEXT,"
        "  total_bytes INTEGER NOT NULL DEFAULT 0,"
        "  available_bytes INTEGER NOT NULL DEFAULT 0,"
        "  enabled INTEGER NOT NULL DEFAULT 1,"
        "  created_at INTEGER NOT NULL);"
        "CREATE TABLE clone_sessions ("
        "  id TEXT PRIMARY KEY NOT NULL,"
        "  name TEXT NOT NULL,"
        "  status TEXT NOT NULL,"
        "  clone_mode TEXT NOT NULL CHECK (clone_mode IN ('direct', 'staged')),"
        "  source_node_id TEXT NOT NULL REFERENCES nodes(id) ON DELETE RESTRICT,"
        "  target_node_id TEXT REFERENCES nodes(id) ON DELETE RESTRICT,"
        "  source_device TEXT NOT NULL,"
        "  target_device TEXT NOT NULL,"
        "  source_ip TEXT,"
        "  source_port INTEGER NOT NULL DEFAULT 0,"
        "  staging_backend_id TEXT REFERENCES storage_backends(id) ON DELETE RESTRICT,"
        "  staging_path TEXT,"
        "  staging_status TEXT,"
        "  resize_mode TEXT NOT NULL DEFAULT 'none',"
        "  partition_plan_json TEXT,"
        "  bytes_total INTEGER NOT NULL DEFAULT 0,"
        "  bytes_transferred INTEGER NOT NULL DEFAULT 0,"
        "  transfer_rate_bps INTEGER NOT NULL DEFAULT 0,"
        "  error_message TEXT,"
        "  created_at INTEGER NOT NULL,"
        "  started_at INTEGER NOT NULL DEFAULT 0,"
        "  completed_at INTEGER NOT NULL DEFAULT 0,"
        "  created_by INTEGER NOT NULL,"
        "  idempotency_key TEXT UNIQUE);"
        "CREATE TABLE disk_info ("
        "  node_id TEXT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,"
        "  device TEXT NOT NULL,"
        "  size_bytes INTEGER NOT NULL,"
        "  model TEXT, serial TEXT,"
        "  logical_sector_size INTEGER NOT NULL DEFAULT 512,"
        "  physical_sector_size INTEGER NOT NULL DEFAULT 512,"
        "  partition_table TEXT,"
        "  partitions_json TEXT NOT NULL DEFAULT '[]',"
        "  scanned_at INTEGER NOT NULL,"
        "  PRIMARY KEY (node_id, device));"
        "CREATE TABLE partition_operations ("
        "  id TEXT PRIMARY KEY NOT NULL,"
        "  node_id TEXT NOT NULL,"
        "  device TEXT NOT NULL,"
        "  position INTEGER NOT NULL,"
        "  operation TEXT NOT NULL,"
        "  params_json TEXT NOT NULL,"
        "  status TEXT NOT NULL DEFAULT 'pending',"
        "  error_message TEXT,"
        "  created_at INTEGER NOT NULL,"
        "  started_at INTEGER NOT NULL DEFAULT 0,"
        "  completed_at INTEGER NOT NULL DEFAULT 0,"
        "  FOREIGN KEY (node_id, device) REFERENCES disk_info(node_id, device) ON DELETE CASCADE);"
        "CREATE TABLE certificates ("
        "  serial TEXT PRIMARY KEY NOT NULL,"
        "  subject TEXT NOT NULL,"
        "  role TEXT NOT NULL,"
        "  node_id TEXT,"
        "  session_id TEXT,"
        "  not_before INTEGER NOT NULL,"
        "  not_after INTEGER NOT NULL,"
        "  revoked_at INTEGER NOT NULL DEFAULT 0,"
        "  created_at INTEGER NOT NULL);"
        "CREATE TABLE enrolment_tokens ("
        "  hash TEXT PRIMARY KEY NOT NULL,"
        "  node_id TEXT,"
        "  session_id TEXT REFERENCES clone_sessions(id) ON DELETE CASCADE,"
        "  role TEXT NOT NULL,"
        "  created_at INTEGER NOT NULL,"
        "  expires_at INTEGER NOT NULL,"
        "  used_at INTEGER NOT NULL DEFAULT 0);"
        "CREATE TABLE report_sequences ("
        "  session_id TEXT NOT NULL REFERENCES clone_sessions(id) ON DELETE CASCADE,"
        "  role TEXT NOT NULL,"
        "  last_sequence INTEGER NOT NULL,"
        "  PRIMARY KEY (session_id, role));"
        "CREATE TABLE events ("
        "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
        "  time INTEGER NOT NULL,"
        "  uid INTEGER NOT NULL,"
        "  action TEXT NOT NULL,"
        "  object TEXT NOT NULL,"
        "  result TEXT NOT NULL);",
        /* 2: what each role read or wrote, compared before a session completes */
        "ALTER TABLE clone_sessions ADD COLUMN source_digest TEXT;"
        "ALTER TABLE clone_sessions ADD COLUMN target_digest TEXT;",
        /* 3: partitioning — what the node last reported, when it was asked to scan or apply, the table's
         * fingerprint to tell a changed disk */
        "ALTER TABLE nodes ADD COLUMN scan_requested_at INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE nodes ADD COLUMN report_sequence INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE disk_info ADD COLUMN fingerprint TEXT NOT NULL DEFAULT '';"
        "ALTER TABLE disk_info ADD COLUMN apply_requested_at INTEGER NOT NULL DEFAULT 0;"
        "CREATE INDEX partition_operations_disk ON partition_operations(node_id, device, position);",
        /* 4: diskless nodes boot the workflow named here (boot_mode nfs) */
        "ALTER TABLE nodes ADD COLUMN boot_workflow TEXT;",
        /* 5: staged clones — what provisioning created (JSON, undone in reverse order), the upload's
           progress */
        "ALTER TABLE clone_sessions ADD COLUMN staging_resources TEXT;"
        "ALTER TABLE clone_sessions ADD COLUMN bytes_uploaded INTEGER NOT NULL DEFAULT 0;",
        /* 6: resize plans — the disks the session's agents scanned (Disk JSON), which the plan is made from
         */
        "ALTER TABLE clone_sessions ADD COLUMN source_disk_json TEXT;"
        "ALTER TABLE clone_sessions ADD COLUMN target_disk_json TEXT;",
        /* 7: one source to several targets — a session that downloads another staged session's image */
        "ALTER TABLE clone_sessions ADD COLUMN follows TEXT;",
        /* 8: one live identity per name — a boot answer's token is bound to the address that asked for it,
         * and a name's earlier tokens are retired when a new one is minted */
        "ALTER TABLE enrolment_tokens ADD COLUMN address TEXT;"
        "CREATE INDEX enrolment_tokens_name ON enrolment_tokens(node_id, session_id, role);",
        /* 9: a session has one source and N targets, each a row of its own: a session's own target becomes
         * its target 1, and a session that followed another (same source and staging, another target)
         * that one's next target, in the order they were created. Report sequences, unused tokens and
         * certificate names of targets are named target-<n> from now on. Run with foreign keys off
         * (migrate()), as rebuilding clone_sessions without the target's columns needs. */
        "CREATE TABLE clone_targets ("
        "  session_id TEXT NOT NULL REFERENCES clone_sessions(id) ON DELETE CASCADE,"
        "  target_index INTEGER NOT NULL,"
        "  status TEXT NOT NULL,"
        "  node_id TEXT NOT NULL REFERENCES nodes(id) ON DELETE RESTRICT,"
        "  device TEXT NOT NULL,"
        "  resize_mode TEXT NOT NULL DEFAULT 'none',"
        "  partition_plan_json TEXT,"
        "  disk_json TEXT,"
        "  bytes_transferred INTEGER NOT NULL DEFAULT 0,"
        "  transfer_rate_bps INTEGER NOT NULL DEFAULT 0,"
        "  digest TEXT,"
        "  error_message TEXT,"
        "  started_at INTEGER NOT NULL DEFAULT 0,"
        "  completed_at INTEGER NOT NULL DEFAULT 0,"
        "  PRIMARY KEY (session_id, target_index));"
        "CREATE INDEX clone_targets_node ON clone_targets(node_id);"
        "CREATE TEMP TABLE moved_targets AS"
        "  SELECT id AS old_id, id AS session_id, 1 AS target_index FROM clone_sessions"
        "    WHERE follows IS NULL AND target_node_id IS NOT NULL"
        "  UNION ALL"
        "  SELECT f.id, f.follows, ROW_NUMBER() OVER (PARTITION BY f.follows ORDER BY f.created_at, f.id) +"
        "    (SELECT COUNT(*) FROM clone_sessions o WHERE o.id = f.follows AND o.target_node_id IS NOT NULL)"
        "    FROM clone_sessions f WHERE f.follows IN (SELECT id FROM clone_sessions) AND f.target_node_id "
        "IS NOT NULL;"
        "INSERT INTO clone_targets (session_id, target_index, status, node_id, device, resize_mode,"
        "    partition_plan_json, disk_json, bytes_transferred, transfer_rate_bps, digest, error_message,"
        "    started_at, completed_at)"
        "  SELECT m.session_id, m.target_index, s.status, s.target_node_id, s.target_device, s.resize_mode,"
        "    s.partition_plan_json, s.target_disk_json, s.bytes_transferred, s.transfer_rate_bps, "
        "s.target_digest,"
        "    s.error_message, s.started_at, s.completed_at"
        "  FROM moved_targets m JOIN clone_sessions s ON s.id = m.old_id;"
        "INSERT OR REPLACE INTO report_sequences (session_id, role, last_sequence)"
        "  SELECT m.session_id, 'target-' || m.target_index, q.last_sequence"
        "  FROM moved_targets m JOIN report_sequences q ON q.session_id = m.old_id AND q.role = 'target';"
        "UPDATE enrolment_tokens SET role = 'target-1' WHERE role = 'target' AND session_id IN"
        "  (SELECT old_id FROM moved_targets WHERE old_id = session_id);"
        "UPDATE certificates SET subject = subject || '-1' WHERE role = 'target' AND subject ="
        "  'clone-' || session_id || '-target' AND session_id IN (SELECT old_id FROM moved_targets WHERE "
        "old_id = session_id);"
        "DELETE FROM report_sequences WHERE role = 'target' OR session_id IN (SELECT id FROM clone_sessions "
        "WHERE follows IS NOT NULL);"
        "DELETE FROM enrolment_tokens WHERE session_id IN (SELECT id FROM clone_sessions WHERE follows IS "
        "NOT NULL);"
        "DELETE FROM clone_sessions WHERE follows IS NOT NULL;"
        "DROP TABLE moved_targets;"
        /* The session keeps the source's and the staging's columns; the status it derives from its targets'.
         */
        "CREATE TABLE clone_sessions_new ("
        "  id TEXT PRIMARY KEY NOT NULL,"
        "  name TEXT NOT NULL,"
        "  status TEXT NOT NULL,"
        "  clone_mode TEXT NOT NULL CHECK (clone_mode IN ('direct', 'staged')),"
        "  source_node_id TEXT NOT NULL REFERENCES nodes(id) ON DELETE RESTRICT,"
        "  source_device TEXT NOT NULL,"
        "  source_ip TEXT,"
        "  source_port INTEGER NOT NULL DEFAULT 0,"
        "  staging_backend_id TEXT REFERENCES storage_backends(id) ON DELETE RESTRICT,"
        "  staging_path TEXT,"
        "  staging_status TEXT,"
        "  staging_resources TEXT,"
        "  bytes_uploaded INTEGER NOT NULL DEFAULT 0,"
        "  resize_mode TEXT NOT NULL DEFAULT 'none',"
        "  source_disk_json TEXT,"
        "  bytes_total INTEGER NOT NULL DEFAULT 0,"
        "  source_digest TEXT,"
        "  created_at INTEGER NOT NULL,"
        "  started_at INTEGER NOT NULL DEFAULT 0,"
        "  completed_at INTEGER NOT NULL DEFAULT 0,"
        "  created_by INTEGER NOT NULL,"
        "  idempotency_key TEXT UNIQUE);"
        "INSERT INTO clone_sessions_new SELECT id, name, status, clone_mode, source_node_id, source_device,"
        "  source_ip, source_port, staging_backend_id, staging_path, staging_status, staging_resources,"
        "  bytes_uploaded, resize_mode, source_disk_json, bytes_total, source_digest, created_at, "
        "started_at,"
        "  completed_at, created_by, idempotency_key FROM clone_sessions;"
        "DROP TABLE clone_sessions;"
        "ALTER TABLE clone_sessions_new RENAME TO clone_sessions;",
        /* 10: whether a target's clone of a Linux system gets its own identity (auto) or stays a copy (none)
         */
        "ALTER TABLE clone_sessions ADD COLUMN identity TEXT NOT NULL DEFAULT 'auto';",
        /* 11: what targets do with the ranges the source's filesystems do not use (discard, zero, keep) */
        "ALTER TABLE clone_sessions ADD COLUMN unused TEXT NOT NULL DEFAULT 'discard';"
        /* and what the agents said of the disks: what the source copies whole, the targets' checks */
        "ALTER TABLE clone_sessions ADD COLUMN source_notes_json TEXT;"
        "ALTER TABLE clone_targets ADD COLUMN notes_json TEXT;",
        /* 12: the image library — a staged upload kept under a name, where it is on which backend and what
         * it holds — and sessions whose source is an image: no source node or device then; and a session's
         * own error, for one that captures an image without targets. Rebuilds clone_sessions (foreign keys
         * off, as in 9) to make those two columns optional. */
        "CREATE TABLE images ("
        "  id TEXT PRIMARY KEY NOT NULL,"
        "  name TEXT NOT NULL UNIQUE,"
        "  description TEXT NOT NULL DEFAULT '',"
        "  state TEXT NOT NULL,"
        "  backend_id TEXT NOT NULL REFERENCES storage_backends(id) ON DELETE RESTRICT,"
        "  area TEXT NOT NULL,"
        "  resources TEXT,"
        "  location TEXT,"
        "  source_node_id TEXT,"
        "  source_hostname TEXT,"
        "  source_device TEXT,"
        "  layout_json TEXT,"
        "  size_bytes INTEGER NOT NULL DEFAULT 0,"
        "  digest TEXT,"
        "  capture_session_id TEXT,"
        "  created_at INTEGER NOT NULL,"
        "  created_by INTEGER NOT NULL,"
        "  verified_at INTEGER NOT NULL DEFAULT 0,"
        "  verify_error TEXT);"
        "CREATE TABLE clone_sessions_new ("
        "  id TEXT PRIMARY KEY NOT NULL,"
        "  name TEXT NOT NULL,"
        "  status TEXT NOT NULL,"
        "  clone_mode TEXT NOT NULL CHECK (clone_mode IN ('direct', 'staged')),"
        "  source_node_id TEXT REFERENCES nodes(id) ON DELETE RESTRICT,"
        "  source_device TEXT,"
        "  source_ip TEXT,"
        "  source_port INTEGER NOT NULL DEFAULT 0,"
        "  staging_backend_id TEXT REFERENCES storage_backends(id) ON DELETE RESTRICT,"
        "  staging_path TEXT,"
        "  staging_status TEXT,"
        "  staging_resources TEXT,"
        "  bytes_uploaded INTEGER NOT NULL DEFAULT 0,"
        "  resize_mode TEXT NOT NULL DEFAULT 'none',"
        "  source_disk_json TEXT,"
        "  bytes_total INTEGER NOT NULL DEFAULT 0,"
        "  source_digest TEXT,"
        "  created_at INTEGER NOT NULL,"
        "  started_at INTEGER NOT NULL DEFAULT 0,"
        "  completed_at INTEGER NOT NULL DEFAULT 0,"
        "  created_by INTEGER NOT NULL,"
        "  idempotency_key TEXT UNIQUE,"
        "  identity TEXT NOT NULL DEFAULT 'auto',"
        "  unused TEXT NOT NULL DEFAULT 'discard',"
        "  source_notes_json TEXT,"
        "  image_id TEXT REFERENCES images(id) ON DELETE SET NULL,"
        "  error_message TEXT);"
        "INSERT INTO clone_sessions_new SELECT id, name, status, clone_mode, source_node_id, source_device,"
        "  source_ip, source_port, staging_backend_id, staging_path, staging_status, staging_resources,"
        "  bytes_uploaded, resize_mode, source_disk_json, bytes_total, source_digest, created_at, "
        "started_at,"
        "  completed_at, created_by, idempotency_key, identity, unused, source_notes_json, NULL, NULL"
        "  FROM clone_sessions;"
        "DROP TABLE clone_sessions;"
        "ALTER TABLE clone_sessions_new RENAME TO clone_sessions;",
        /* 13: chains — where a target forwards what it wrote to the next one, its place in the chain (its
         * index, until it was dropped and rejoined at the tail) and whether it was lost and has not been
         * heard of since */
        "ALTER TABLE clone_targets ADD COLUMN relay_ip TEXT;"
        "ALTER TABLE clone_targets ADD COLUMN relay_port INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE clone_targets ADD COLUMN chain_rank INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE clone_targets ADD COLUMN chain_lost INTEGER NOT NULL DEFAULT 0;",
        /* 14: local backends, a directory on the controller's host. Rebuilds storage_backends (foreign keys
         * off, as in 9) for its CHECK on the type. */
        "CREATE TABLE storage_backends_new ("
        "  id TEXT PRIMARY KEY NOT NULL,"
        "  name TEXT NOT NULL UNIQUE,"
        "  type TEXT NOT NULL CHECK (type IN ('nfs', 'iscsi', 'local')),"
        "  config TEXT NOT NULL,"
        "  secret TEXT,"
        "  total_bytes INTEGER NOT NULL DEFAULT 0,"
        "  available_bytes INTEGER NOT NULL DEFAULT 0,"
        "  enabled INTEGER NOT NULL DEFAULT 1,"
        "  created_at INTEGER NOT NULL);"
        "INSERT INTO storage_backends_new SELECT id, name, type, config, secret, total_bytes, "
        "available_bytes,"
        "  enabled, created_at FROM storage_backends;"
        "DROP TABLE storage_backends;"
        "ALTER TABLE storage_backends_new RENAME TO storage_backends;",
        /* 15: what a staged upload, and so an image, takes on its storage; the files a target's clone gets
         * with its identity */
        "ALTER TABLE clone_sessions ADD COLUMN stored_bytes INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE clone_sessions ADD COLUMN power_cycle INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE clone_sessions ADD COLUMN power_off INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE images ADD COLUMN stored_bytes INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE clone_targets ADD COLUMN files_json TEXT;"
        /* and what each machine is, as its agent last reported */
        "ALTER TABLE nodes ADD COLUMN hardware_json TEXT;"
        "ALTER TABLE nodes ADD COLUMN hardware_at INTEGER NOT NULL DEFAULT 0;"
        /* and how the controller switches its power */
        "ALTER TABLE nodes ADD COLUMN power_driver TEXT NOT NULL DEFAULT 'none';"
        "ALTER TABLE nodes ADD COLUMN power_settings TEXT;"
        "ALTER TABLE nodes ADD COLUMN power_secret TEXT;",
};

static int exec_plain(Store *s, const char *sql) {
        char *msg = NULL;
        if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
                log_error("SQLite: %s", msg ?: sqlite3_errmsg(s->db));
                sqlite3_free(msg);
                return -EIO;
        }
        return 0;
}

int store_schema_version(Store *s) {
        _cleanup_finalize_ sqlite3_stmt *stmt = NULL;
        if (store_query(s, &stmt, "PRAGMA user_version", "") < 0 || sqlite3_step(stmt) != SQLITE_ROW)
                return -EIO;
        return sqlite3_column_int(stmt, 0);
}

/* -EBADMSG, with the first offending row logged, if a row refers to one that is not there. */
static int foreign_keys_check(Store *s) {
        _cleanup_finalize_ sqlite3_stmt *stmt = NULL;
        int r = store_query(s, &stmt, "PRAGMA foreign_key_check", "");
        if (r < 0)
                return r;
        if (sqlite3_step(stmt) == SQLITE_ROW)
                return log_error_errno(EBADMSG, "Row %lld of table %s refers to a missing row of %s.",
                                       (long long) sqlite3_column_int64(stmt, 1), sqlite3_column_text(stmt, 0),
                                       sqlite3_column_text(stmt, 2));
        return 0;
}

static int migrate(Store *s, size_t to) {
        int version = store_schema_version(s), r;
        if (version < 0)
                return version;
        if ((size_t) version > ELEMENTSOF(migrations))
                return log_error_errno(
                        EPROTO,
                        "Database schema version %d is newer than this controller knows (%zu); "
                        "refusing to touch it. Run a newer pureboot-controller.",
                        version, ELEMENTSOF(migrations));
        /* Off while migrating, so that a table can be rebuilt (a new one filled, the old one dropped, the new
         * one renamed) without the drop's cascades; each migration's result is checked before it commits. */
        r = exec_plain(s, "PRAGMA foreign_keys = OFF");
        if (r < 0)
                return r;
        for (size_t i = (size_t) version; i < to; i++) {
                _cleanup_free_ char *pragma = NULL;
                r = store_begin(s);
                if (r < 0)
                        return r;
                if (asprintf(&pragma, "PRAGMA user_version = %zu", i + 1) < 0) {
                        store_rollback(s);
                        return -ENOMEM;
                }
                r = exec_plain(s, migrations[i]);
                if (r >= 0)
                        r = foreign_keys_check(s);
                if (r >= 0)
                        r = exec_plain(s, pragma);
                if (r < 0) {
                        store_rollback(s);
                        return log_error_errno(r, "Failed to migrate the database to version %zu.", i + 1);
                }
                r = store_commit(s);
                if (r < 0)
                        return r;
                log_debug("Database migrated to schema version %zu.", i + 1);
        }
        return exec_plain(s, "PRAGMA foreign_keys = ON");
}

int store_open_version(const char *path, size_t version, Store **ret) {
        Store *s = calloc(1, sizeof(Store));
        int r;
        if (!s)
                return -ENOMEM;
        s->statements = hashmap_new();
        if (!s->statements) {
                free(s);
                return -ENOMEM;
        }
        if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                            NULL) != SQLITE_OK) {
                r = log_error_errno(EIO, "Failed to open database %s: %s", path, sqlite3_errmsg(s->db));
                store_close(s);
                return r;
        }
        /* The controller's alone: it holds secrets (CHAP, BMC passwords). SQLite gives its -wal and -shm
         * files the database's mode when it makes them. */
        const char *suffixes[] = { "", "-wal", "-shm" };
        for (size_t i = 0; i < ELEMENTSOF(suffixes); i++) {
                _cleanup_free_ char *p = NULL;
                if (asprintf(&p, "%s%s", path, suffixes[i]) < 0)
                        r = -ENOMEM;
                else if (chmod(p, 0600) < 0 && (errno != ENOENT || i == 0))
                        r = log_error_errno(errno, "Failed to make %s the controller's alone: %m", p);
                else
                        continue;
                store_close(s);
                return r;
        }
        sqlite3_busy_timeout(s->db, 5000);
        r = exec_plain(s, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;");
        if (r >= 0)
                r = migrate(s, MIN(version, ELEMENTSOF(migrations)));
        if (r < 0) {
                store_close(s);
                return r;
        }
        *ret = s;
        return 0;
}

int store_open(const char *path, Store **ret) {
        return store_open_version(path, SIZE_MAX, ret);
}

Store *store_close(Store *s) {
        sqlite3_stmt *stmt;
        const char *key;
        if (!s)
                return NULL;
        for (size_t i = 0; hashmap_iterate(s->statements, &i, (void **) &stmt, &key);) {
                sqlite3_finalize(stmt);
                free((char *) key);
        }
        hashmap_free(s->statements);
        sqlite3_close(s->db);
        free(s);
        return NULL;
}

int store_begin(Store *s) {
        return exec_plain(s, "BEGIN IMMEDIATE");
}

int store_commit(Store *s) {
        int r = exec_plain(s, "COMMIT");
        if (r >= 0 && s->on_end)
                s->on_end(s->on_end_userdata, true);
        return r;
}

void store_rollback(Store *s) {
        (void) exec_plain(s, "ROLLBACK");
        if (s->on_end)
                s->on_end(s->on_end_userdata, false);
}

bool store_in_transaction(Store *s) {
        return s && !sqlite3_get_autocommit(s->db);
}

void store_set_end_hook(Store *s, void (*on_end)(void *userdata, bool committed), void *userdata) {
        s->on_end = on_end;
        s->on_end_userdata = userdata;
}

static int bind_args(sqlite3_stmt *stmt, const char *types, va_list ap) {
        int rc = SQLITE_OK;
        for (int i = 1; *types && rc == SQLITE_OK; types++, i++) {
                switch (*types) {
                case 's': {
                        const char *v = va_arg(ap, const char *);
                        rc = v ? sqlite3_bind_text(stmt, i, v, -1, SQLITE_TRANSIENT)
                               : sqlite3_bind_null(stmt, i);
                        break;
                }
                case 't':
                        rc = sqlite3_bind_int64(stmt, i, (sqlite3_int64) va_arg(ap, uint64_t));
                        break;
                case 'i':
                        rc = sqlite3_bind_int64(stmt, i, va_arg(ap, int64_t));
                        break;
                case 'u':
                        rc = sqlite3_bind_int64(stmt, i, va_arg(ap, uint32_t));
                        break;
                case 'b':
                        rc = sqlite3_bind_int(stmt, i, va_arg(ap, int) ? 1 : 0);
                        break;
                default:
                        return -EINVAL;
                }
        }
        return rc == SQLITE_OK ? 0 : -EIO;
}

static int prepare_v(Store *s, sqlite3_stmt **ret, const char *sql, const char *types, va_list ap) {
        sqlite3_stmt *stmt = NULL;
        int r;
        if (sqlite3_prepare_v2(s->db, sql, -1, &stmt, NULL) != SQLITE_OK)
                return log_error_errno(EIO, "SQLite cannot prepare \"%s\": %s", sql, sqlite3_errmsg(s->db));
        r = bind_args(stmt, types, ap);
        if (r < 0) {
                sqlite3_finalize(stmt);
                return log_error_errno(r, "SQLite cannot bind parameters of \"%s\".", sql);
        }
        *ret = stmt;
        return 0;
}

int store_query(Store *s, sqlite3_stmt **ret, const char *sql, const char *types, ...) {
        va_list ap;
        va_start(ap, types);
        int r = prepare_v(s, ret, sql, types, ap);
        va_end(ap);
        return r;
}

/* Statements are cached by their SQL text: literals and the statements the column tables build alike. */
static int statement_for(Store *s, const char *sql, sqlite3_stmt **ret) {
        sqlite3_stmt *stmt = hashmap_get(s->statements, sql);
        char *k;

        if (stmt) {
                *ret = stmt;
                return 0;
        }
        if (sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, NULL) != SQLITE_OK)
                return log_error_errno(EIO, "SQLite cannot prepare \"%s\": %s", sql, sqlite3_errmsg(s->db));
        /* The map borrows its keys: this copy lives as long as the statement. */
        k = strdup(sql);
        if (!k || hashmap_put(s->statements, k, stmt) < 0) {
                free(k);
                sqlite3_finalize(stmt);
                return -ENOMEM;
        }
        *ret = stmt;
        return 0;
}

/* Runs a cached statement whose parameters are bound to completion and readies it for the next use:
 * the number of changed rows, -EEXIST on a constraint violation, -EIO on other errors. */
static int run_bound(Store *s, const char *sql, sqlite3_stmt *stmt) {
        int rc;

        while ((rc = sqlite3_step(stmt)) == SQLITE_ROW)
                ;
        sqlite3_reset(stmt);
        sqlite3_clear_bindings(stmt);
        if ((rc & 0xff) == SQLITE_CONSTRAINT)
                return -EEXIST;
        if (rc != SQLITE_DONE)
                return log_error_errno(EIO, "SQLite failed on \"%s\": %s", sql, sqlite3_errmsg(s->db));
        return sqlite3_changes(s->db);
}

int store_exec(Store *s, const char *sql, const char *types, ...) {
        sqlite3_stmt *stmt = NULL;
        va_list ap;
        int r;

        r = statement_for(s, sql, &stmt);
        if (r < 0)
                return r;
        va_start(ap, types);
        r = bind_args(stmt, types, ap);
        va_end(ap);
        if (r < 0) {
                sqlite3_clear_bindings(stmt);
                return log_error_errno(r, "SQLite cannot bind parameters of \"%s\".", sql);
        }
        return run_bound(s, sql, stmt);
}

char *store_column_strdup(sqlite3_stmt *stmt, int column, bool *oom) {
        const unsigned char *t = sqlite3_column_text(stmt, column);
        char *c;
        if (!t)
                return NULL;
        c = strdup((const char *) t);
        if (!c)
                *oom = true;
        return c;
}

static uint64_t column_u64(sqlite3_stmt *stmt, int column) {
        return (uint64_t) sqlite3_column_int64(stmt, column);
}

/* Comma-separated first column of a query's rows, NULL if none. */
static int collect_ids(Store *s, const char *sql, const char *id, char **ret) {
        _cleanup_finalize_ sqlite3_stmt *stmt = NULL;
        _cleanup_free_ char *list = NULL;
        int r, rc;

        r = store_query(s, &stmt, sql, "s", id);
        if (r < 0)
                return r;
        while ((rc = sqlite3_step(stmt)) == SQLITE_ROW)
                if (strextend_printf(&list, "%s%s", list ? ", " : "", sqlite3_column_text(stmt, 0)) < 0)
                        return -ENOMEM;
        if (rc != SQLITE_DONE)
                return -EIO;
        *ret = TAKE_PTR(list);
        return 0;
}

/* Records and rows: one column table per record says which field of the struct each column holds, and
 * drives its INSERT, UPDATE and SELECT, so a column is named once and bound and read by its field's type. */

typedef enum ColumnType {
        COLUMN_STRING, /* char *, NULL is SQL NULL */
        COLUMN_U64,    /* uint64_t */
        COLUMN_U32,    /* uint32_t */
        COLUMN_U16,    /* uint16_t */
        COLUMN_INT,    /* int */
        COLUMN_JSON,   /* json_object *, stored as its text; must parse when read */
        COLUMN_ENUM,   /* a domain enum (domain.h), stored as its name */
} ColumnType;

typedef enum ColumnFlags {
        COLUMN_KEY = 1 << 0,   /* the row's identity: UPDATE's WHERE */
        COLUMN_FIXED = 1 << 1, /* written by INSERT only */
        COLUMN_GUARD = 1 << 2, /* UPDATE also checks the stored value is the one expected */
} ColumnFlags;

typedef struct Column {
        const char *name;
        ColumnType type;
        size_t offset;
        ColumnFlags flags;
        const StringTable *strings; /* COLUMN_ENUM: its names */
} Column;

typedef struct Table {
        const char *name, *what; /* the SQL table; what a row is, for messages */
        const Column *columns;
        size_t n_columns;
        size_t size;                /* of the record */
        void (*free)(void *record); /* frees a record rows_load made */
        const char *order;          /* rows_load's ORDER BY, if the order matters */
} Table;

#define FIELD(record, c) ((uint8_t *) (record) + (c)->offset)

static int bind_column(sqlite3_stmt *stmt, int i, const Column *c, const void *record) {
        const void *f = FIELD(record, c);
        const char *text;

        switch (c->type) {
        case COLUMN_STRING:
                text = *(char *const *) f;
                return text ? sqlite3_bind_text(stmt, i, text, -1, SQLITE_TRANSIENT)
                            : sqlite3_bind_null(stmt, i);
        case COLUMN_JSON:
                text = *(json_object *const *) f ? json_object_to_json_string_ext(*(json_object *const *) f,
                                                                                  JSON_C_TO_STRING_PLAIN)
                                                 : NULL;
                return text ? sqlite3_bind_text(stmt, i, text, -1, SQLITE_TRANSIENT)
                            : sqlite3_bind_null(stmt, i);
        case COLUMN_ENUM:
                /* The empty name (a direct session's staging status) is stored as NULL. */
                text = string_table_to_string(c->strings, *(const unsigned *) f);
                return !text   ? SQLITE_RANGE
                       : *text ? sqlite3_bind_text(stmt, i, text, -1, SQLITE_STATIC)
                               : sqlite3_bind_null(stmt, i);
        case COLUMN_U64:
                return sqlite3_bind_int64(stmt, i, (sqlite3_int64) * (const uint64_t *) f);
        case COLUMN_U32:
                return sqlite3_bind_int64(stmt, i, *(const uint32_t *) f);
        case COLUMN_U16:
                return sqlite3_bind_int(stmt, i, *(const uint16_t *) f);
        case COLUMN_INT:
                return sqlite3_bind_int(stmt, i, *(const int *) f);
        }
        assert_not_reached();
}

/* Reads column i of the row into the record's field: -ENOMEM, or -EBADMSG with the reason logged. */
static int read_column(sqlite3_stmt *stmt, int i, const Table *t, const Column *c, void *record) {
        void *f = FIELD(record, c);
        const char *text = (const char *) sqlite3_column_text(stmt, i);
        int r;

        switch (c->type) {
        case COLUMN_STRING:
                if (text && !(*(char **) f = strdup(text)))
                        return -ENOMEM;
                return 0;
        case COLUMN_JSON:
                if (text && !(*(json_object **) f = json_tokener_parse(text)))
                        return log_error_errno(EBADMSG, "A %s in the database has unreadable %s.", t->what,
                                               c->name);
                return 0;
        case COLUMN_ENUM:
                /* NULL reads as the empty name (a direct session's staging status). */
                r = string_table_from_string(c->strings, strempty(text));
                if (r < 0)
                        return log_error_errno(EBADMSG, "A %s in the database has unknown %s \"%s\".",
                                               t->what, c->name, strna(text));
                *(unsigned *) f = (unsigned) r;
                return 0;
        case COLUMN_U64:
                *(uint64_t *) f = (uint64_t) sqlite3_column_int64(stmt, i);
                return 0;
        case COLUMN_U32:
                *(uint32_t *) f = (uint32_t) sqlite3_column_int64(stmt, i);
                return 0;
        case COLUMN_U16:
                *(uint16_t *) f = (uint16_t) sqlite3_column_int(stmt, i);
                return 0;
        case COLUMN_INT:
                *(int *) f = sqlite3_column_int(stmt, i);
                return 0;
        }
        assert_not_reached();
}

/* Runs a statement the table built, binding the columns selected by include in order, then those selected
 * by then (the key of an UPDATE) and guard_value, if given. */
static int run_built(Store *s, const char *sql, const Table *t, const void *record,
                     bool (*include)(const Column *), bool (*then)(const Column *), const char *guard_value) {
        sqlite3_stmt *stmt;
        int r, rc = SQLITE_OK, i = 1;

        r = statement_for(s, sql, &stmt);
        if (r < 0)
                return r;
        for (size_t k = 0; k < t->n_columns && rc == SQLITE_OK; k++)
                if (include(&t->columns[k]))
                        rc = bind_column(stmt, i++, &t->columns[k], record);
        for (size_t k = 0; then && k < t->n_columns && rc == SQLITE_OK; k++)
                if (then(&t->columns[k]))
                        rc = bind_column(stmt, i++, &t->columns[k], record);
        if (guard_value && rc == SQLITE_OK)
                rc = sqlite3_bind_text(stmt, i++, guard_value, -1, SQLITE_TRANSIENT);
        if (rc != SQLITE_OK) {
                sqlite3_clear_bindings(stmt);
                return log_error_errno(EIO, "SQLite cannot bind parameters of \"%s\".", sql);
        }
        return run_bound(s, sql, stmt);
}

static bool every_column(const Column *c) {
        (void) c;
        return true;
}

static bool updated_column(const Column *c) {
        return !(c->flags & (COLUMN_KEY | COLUMN_FIXED));
}

static bool key_column(const Column *c) {
        return c->flags & COLUMN_KEY;
}

static const Column *column_with(const Table *t, ColumnFlags flag) {
        for (size_t k = 0; k < t->n_columns; k++)
                if (t->columns[k].flags & flag)
                        return &t->columns[k];
        return NULL;
}

static int row_insert(Store *s, const Table *t, const void *record) {
        _cleanup_free_ char *names = NULL, *marks = NULL, *sql = NULL;
        int r;

        for (size_t k = 0; k < t->n_columns; k++)
                if (strextend_printf(&names, "%s%s", k ? ", " : "", t->columns[k].name) < 0 ||
                    strextend_printf(&marks, "%s?", k ? ", " : "") < 0)
                        return -ENOMEM;
        if (asprintf(&sql, "INSERT INTO %s (%s) VALUES (%s)", t->name, names, marks) < 0)
                return -ENOMEM;
        r = run_built(s, sql, t, record, every_column, NULL, NULL);
        return r < 0 ? r : 0;
}

/* Inserts the row, or where a row with its key (every COLUMN_KEY column) is stored already, writes every
 * column of it but the key and the fixed ones. */
static int row_upsert(Store *s, const Table *t, const void *record) {
        _cleanup_free_ char *names = NULL, *marks = NULL, *keys = NULL, *sets = NULL, *sql = NULL;
        int r;

        for (size_t k = 0; k < t->n_columns; k++) {
                const Column *c = &t->columns[k];
                if (strextend_printf(&names, "%s%s", k ? ", " : "", c->name) < 0 ||
                    strextend_printf(&marks, "%s?", k ? ", " : "") < 0 ||
                    (c->flags & COLUMN_KEY &&
                     strextend_printf(&keys, "%s%s", keys ? ", " : "", c->name) < 0) ||
                    (updated_column(c) &&
                     strextend_printf(&sets, "%s%s = excluded.%s", sets ? ", " : "", c->name, c->name) < 0))
                        return -ENOMEM;
        }
        assert(keys && sets);
        if (asprintf(&sql, "INSERT INTO %s (%s) VALUES (%s) ON CONFLICT (%s) DO UPDATE SET %s", t->name,
                     names, marks, keys, sets) < 0)
                return -ENOMEM;
        r = run_built(s, sql, t, record, every_column, NULL, NULL);
        return r < 0 ? r : 0;
}

/* Writes every column but the key (one column or several) and the fixed ones. With guard_value, only if the
 * guard column still holds it: -ESTALE if not. -ENOENT if there is no such row. */
static int row_update(Store *s, const Table *t, const void *record, const char *guard_value) {
        const Column *guard = column_with(t, COLUMN_GUARD);
        _cleanup_free_ char *sets = NULL, *keys = NULL, *sql = NULL;
        int r;

        assert(column_with(t, COLUMN_KEY));
        assert(!guard_value || guard);
        for (size_t k = 0; k < t->n_columns; k++) {
                const Column *c = &t->columns[k];
                if ((updated_column(c) && strextend_printf(&sets, "%s%s = ?", sets ? ", " : "", c->name) < 0) ||
                    (key_column(c) && strextend_printf(&keys, "%s%s = ?", keys ? " AND " : "", c->name) < 0))
                        return -ENOMEM;
        }
        if (asprintf(&sql, "UPDATE %s SET %s WHERE %s%s%s%s", t->name, sets, keys, guard_value ? " AND " : "",
                     guard_value ? guard->name : "", guard_value ? " = ?" : "") < 0)
                return -ENOMEM;
        r = run_built(s, sql, t, record, updated_column, key_column, guard_value);
        return r < 0 ? r : r == 1 ? 0 : guard_value ? -ESTALE : -ENOENT;
}

/* Deletes the row whose key is key: -ENOENT if there is none. */
static int row_delete(Store *s, const Table *t, const char *key) {
        const Column *k = column_with(t, COLUMN_KEY);
        _cleanup_free_ char *sql = NULL;
        int r;

        assert(k && k->type == COLUMN_STRING);
        if (asprintf(&sql, "DELETE FROM %s WHERE %s = ?", t->name, k->name) < 0)
                return -ENOMEM;
        r = store_exec(s, sql, "s", key);
        return r < 0 ? r : r == 1 ? 0 : -ENOENT;
}

/* Reads every row (where says which, if given: SQL after WHERE, its parameters typed as for store_query)
 * into a new record each and hands it to add, which owns it from then on. */
static int rows_query(Store *s, const Table *t, int (*add)(void *userdata, void *record), void *userdata,
                      const char *where, const char *types, ...) {
        _cleanup_finalize_ sqlite3_stmt *stmt = NULL;
        _cleanup_free_ char *names = NULL, *sql = NULL;
        va_list ap;
        int r, rc;

        for (size_t k = 0; k < t->n_columns; k++)
                if (strextend_printf(&names, "%s%s", k ? ", " : "", t->columns[k].name) < 0)
                        return -ENOMEM;
        if (asprintf(&sql, "SELECT %s FROM %s%s%s%s%s", names, t->name, where ? " WHERE " : "",
                     strempty(where), t->order ? " ORDER BY " : "", strempty(t->order)) < 0)
                return -ENOMEM;
        va_start(ap, types);
        r = prepare_v(s, &stmt, sql, types, ap);
        va_end(ap);
        if (r < 0)
                return r;
        while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
                void *record = calloc(1, t->size);
                if (!record)
                        return -ENOMEM;
                for (size_t k = 0; k < t->n_columns && r >= 0; k++)
                        r = read_column(stmt, (int) k, t, &t->columns[k], record);
                if (r < 0) {
                        t->free(record);
                        return r;
                }
                r = add(userdata, record);
                if (r < 0)
                        return r;
        }
        return rc == SQLITE_DONE ? 0 : -EIO;
}

static int rows_load(Store *s, const Table *t, int (*add)(void *userdata, void *record), void *userdata) {
        return rows_query(s, t, add, userdata, NULL, "");
}

#define COL(record, field, column, type, ...)                                                               \
        { column, type, offsetof(record, field), __VA_ARGS__ + 0, NULL }
#define ENUM_COL(record, field, column, table, ...)                                                         \
        { column, COLUMN_ENUM, offsetof(record, field), __VA_ARGS__ + 0, &table##_strings }

static const Column node_columns[] = {
        COL(Node, id, "id", COLUMN_STRING, COLUMN_KEY),
        COL(Node, hostname, "hostname", COLUMN_STRING),
        COL(Node, mac, "mac", COLUMN_STRING),
        COL(Node, arch, "arch", COLUMN_STRING),
        COL(Node, serial, "serial", COLUMN_STRING),
        ENUM_COL(Node, state, "state", node_state),
        ENUM_COL(Node, boot_mode, "boot_mode", boot_mode),
        COL(Node, boot_workflow, "boot_workflow", COLUMN_STRING),
        COL(Node, last_seen, "last_seen", COLUMN_U64),
        COL(Node, created_at, "created_at", COLUMN_U64, COLUMN_FIXED),
        COL(Node, scan_requested_at, "scan_requested_at", COLUMN_U64),
        COL(Node, report_sequence, "report_sequence", COLUMN_U64),
        COL(Node, hardware, "hardware_json", COLUMN_JSON),
        COL(Node, hardware_at, "hardware_at", COLUMN_U64),
        ENUM_COL(Node, power_driver, "power_driver", power_driver),
        COL(Node, power_settings, "power_settings", COLUMN_JSON),
        COL(Node, power_secret, "power_secret", COLUMN_STRING),
};

static void node_free_record(void *record) {
        node_free(record);
}

static const Table node_table = {
        "nodes", "node", node_columns, ELEMENTSOF(node_columns), sizeof(Node), node_free_record,
};

static const Column session_columns[] = {
        COL(CloneSession, id, "id", COLUMN_STRING, COLUMN_KEY),
        COL(CloneSession, name, "name", COLUMN_STRING),
        ENUM_COL(CloneSession, status, "status", clone_status, COLUMN_GUARD),
        ENUM_COL(CloneSession, mode, "clone_mode", clone_mode),
        COL(CloneSession, source_node, "source_node_id", COLUMN_STRING),
        COL(CloneSession, source_device, "source_device", COLUMN_STRING),
        COL(CloneSession, source_address, "source_ip", COLUMN_STRING),
        COL(CloneSession, source_port, "source_port", COLUMN_U16),
        COL(CloneSession, staging_backend, "staging_backend_id", COLUMN_STRING),
        COL(CloneSession, staging_path, "staging_path", COLUMN_STRING),
        ENUM_COL(CloneSession, staging_status, "staging_status", staging_status),
        COL(CloneSession, staging_resources, "staging_resources", COLUMN_STRING),
        COL(CloneSession, bytes_uploaded, "bytes_uploaded", COLUMN_U64),
        ENUM_COL(CloneSession, resize_mode, "resize_mode", resize_mode),
        COL(CloneSession, source_disk_json, "source_disk_json", COLUMN_STRING),
        COL(CloneSession, bytes_total, "bytes_total", COLUMN_U64),
        COL(CloneSession, created_at, "created_at", COLUMN_U64, COLUMN_FIXED),
        COL(CloneSession, started_at, "started_at", COLUMN_U64),
        COL(CloneSession, completed_at, "completed_at", COLUMN_U64),
        COL(CloneSession, created_by, "created_by", COLUMN_U32, COLUMN_FIXED),
        COL(CloneSession, idempotency_key, "idempotency_key", COLUMN_STRING, COLUMN_FIXED),
        COL(CloneSession, source_digest, "source_digest", COLUMN_STRING),
        COL(CloneSession, stored_bytes, "stored_bytes", COLUMN_U64),
        COL(CloneSession, power_cycle, "power_cycle", COLUMN_INT, COLUMN_FIXED),
        COL(CloneSession, power_off, "power_off", COLUMN_INT, COLUMN_FIXED),
        ENUM_COL(CloneSession, identity, "identity", clone_identity),
        ENUM_COL(CloneSession, unused, "unused", clone_unused),
        COL(CloneSession, source_notes, "source_notes_json", COLUMN_JSON),
        COL(CloneSession, image, "image_id", COLUMN_STRING, COLUMN_FIXED),
        COL(CloneSession, error, "error_message", COLUMN_STRING),
};

static void session_free_record(void *record) {
        clone_free(record);
}

static const Table session_table = {
        "clone_sessions",     "clone session",     session_columns, ELEMENTSOF(session_columns),
        sizeof(CloneSession), session_free_record,
};

static const Column target_columns[] = {
        COL(CloneTarget, session_id, "session_id", COLUMN_STRING, COLUMN_KEY),
        COL(CloneTarget, index, "target_index", COLUMN_U32, COLUMN_KEY),
        ENUM_COL(CloneTarget, status, "status", clone_status),
        COL(CloneTarget, node, "node_id", COLUMN_STRING),
        COL(CloneTarget, device, "device", COLUMN_STRING),
        ENUM_COL(CloneTarget, resize_mode, "resize_mode", resize_mode),
        COL(CloneTarget, plan_json, "partition_plan_json", COLUMN_STRING),
        COL(CloneTarget, disk_json, "disk_json", COLUMN_STRING),
        COL(CloneTarget, bytes_transferred, "bytes_transferred", COLUMN_U64),
        COL(CloneTarget, transfer_rate, "transfer_rate_bps", COLUMN_U64),
        COL(CloneTarget, digest, "digest", COLUMN_STRING),
        COL(CloneTarget, notes, "notes_json", COLUMN_JSON),
        COL(CloneTarget, files, "files_json", COLUMN_JSON, COLUMN_FIXED),
        COL(CloneTarget, error, "error_message", COLUMN_STRING),
        COL(CloneTarget, started_at, "started_at", COLUMN_U64),
        COL(CloneTarget, completed_at, "completed_at", COLUMN_U64),
        COL(CloneTarget, relay_address, "relay_ip", COLUMN_STRING),
        COL(CloneTarget, relay_port, "relay_port", COLUMN_U16),
        COL(CloneTarget, chain_rank, "chain_rank", COLUMN_U32),
        COL(CloneTarget, chain_lost, "chain_lost", COLUMN_INT),
};

static void target_free_record(void *record) {
        clone_target_free(record);
}

static const Table target_table = {
        "clone_targets",     "clone target",      target_columns, ELEMENTSOF(target_columns),
        sizeof(CloneTarget), target_free_record,  "session_id, target_index",
};

static const Column storage_columns[] = {
        COL(StorageBackend, id, "id", COLUMN_STRING, COLUMN_KEY),
        COL(StorageBackend, name, "name", COLUMN_STRING),
        ENUM_COL(StorageBackend, type, "type", backend_type, COLUMN_FIXED),
        COL(StorageBackend, config, "config", COLUMN_JSON),
        COL(StorageBackend, secret, "secret", COLUMN_STRING),
        COL(StorageBackend, total_bytes, "total_bytes", COLUMN_U64),
        COL(StorageBackend, available_bytes, "available_bytes", COLUMN_U64),
        COL(StorageBackend, enabled, "enabled", COLUMN_INT),
        COL(StorageBackend, created_at, "created_at", COLUMN_U64, COLUMN_FIXED),
};

static void storage_free_record(void *record) {
        storage_free(record);
}

static const Table storage_table = {
        "storage_backends",          "storage backend",      storage_columns,
        ELEMENTSOF(storage_columns), sizeof(StorageBackend), storage_free_record,
};

static const Column image_columns[] = {
        COL(Image, id, "id", COLUMN_STRING, COLUMN_KEY),
        COL(Image, name, "name", COLUMN_STRING),
        COL(Image, description, "description", COLUMN_STRING),
        ENUM_COL(Image, state, "state", image_state),
        COL(Image, backend, "backend_id", COLUMN_STRING, COLUMN_FIXED),
        COL(Image, area, "area", COLUMN_STRING, COLUMN_FIXED),
        COL(Image, resources, "resources", COLUMN_JSON),
        COL(Image, location, "location", COLUMN_STRING),
        COL(Image, source_node, "source_node_id", COLUMN_STRING, COLUMN_FIXED),
        COL(Image, source_hostname, "source_hostname", COLUMN_STRING, COLUMN_FIXED),
        COL(Image, source_device, "source_device", COLUMN_STRING, COLUMN_FIXED),
        COL(Image, layout, "layout_json", COLUMN_JSON),
        COL(Image, size, "size_bytes", COLUMN_U64),
        COL(Image, stored, "stored_bytes", COLUMN_U64),
        COL(Image, digest, "digest", COLUMN_STRING),
        COL(Image, capture_session, "capture_session_id", COLUMN_STRING, COLUMN_FIXED),
        COL(Image, created_at, "created_at", COLUMN_U64, COLUMN_FIXED),
        COL(Image, created_by, "created_by", COLUMN_U32, COLUMN_FIXED),
        COL(Image, verified_at, "verified_at", COLUMN_U64),
        COL(Image, verify_error, "verify_error", COLUMN_STRING),
};

static void image_free_record(void *record) {
        image_free(record);
}

static const Table image_table = {
        "images", "image", image_columns, ELEMENTSOF(image_columns), sizeof(Image), image_free_record,
};

/* Nodes */

int store_node_insert(Store *s, const Node *n) {
        return row_insert(s, &node_table, n);
}

int store_node_update(Store *s, const Node *n) {
        return row_update(s, &node_table, n, NULL);
}

int store_node_delete(Store *s, const char *id) {
        return row_delete(s, &node_table, id);
}

int store_nodes_load(Store *s, int (*add)(void *userdata, void *record), void *userdata) {
        return rows_load(s, &node_table, add, userdata);
}

int store_node_sessions(Store *s, const char *id, char **ret) {
        return collect_ids(s,
                           "SELECT id FROM clone_sessions WHERE source_node_id = ?1 OR id IN "
                           "(SELECT session_id FROM clone_targets WHERE node_id = ?1) "
                           "ORDER BY created_at",
                           id, ret);
}

/* Disks and partition operations */

/* A disk's row: whose it is, what its last scan said (the partitions as JSON) and when. */
typedef struct DiskRow {
        char *node_id, *device, *model, *serial, *table, *fingerprint;
        uint64_t size, scanned_at, apply_requested_at;
        uint32_t logical_sector_size, physical_sector_size;
        json_object *partitions;
} DiskRow;

static void disk_row_free(void *record) {
        DiskRow *d = record;
        char **strings[] = { &d->node_id, &d->device, &d->model, &d->serial, &d->table, &d->fingerprint };
        for (size_t i = 0; i < ELEMENTSOF(strings); i++)
                free(*strings[i]);
        json_object_put(d->partitions);
        free(d);
}

static const Column disk_columns[] = {
        COL(DiskRow, node_id, "node_id", COLUMN_STRING, COLUMN_KEY),
        COL(DiskRow, device, "device", COLUMN_STRING, COLUMN_KEY),
        COL(DiskRow, size, "size_bytes", COLUMN_U64),
        COL(DiskRow, model, "model", COLUMN_STRING),
        COL(DiskRow, serial, "serial", COLUMN_STRING),
        COL(DiskRow, logical_sector_size, "logical_sector_size", COLUMN_U32),
        COL(DiskRow, physical_sector_size, "physical_sector_size", COLUMN_U32),
        COL(DiskRow, table, "partition_table", COLUMN_STRING),
        COL(DiskRow, partitions, "partitions_json", COLUMN_JSON),
        COL(DiskRow, scanned_at, "scanned_at", COLUMN_U64),
        COL(DiskRow, fingerprint, "fingerprint", COLUMN_STRING),
        /* Set apart (store_disk_set_apply): a new scan does not change it. */
        COL(DiskRow, apply_requested_at, "apply_requested_at", COLUMN_U64, COLUMN_FIXED),
};

static const Table disk_table = {
        "disk_info",     "disk",        disk_columns,      ELEMENTSOF(disk_columns),
        sizeof(DiskRow), disk_row_free, "node_id, device",
};

int store_disk_upsert(Store *s, const char *node_id, const DiskInfo *d, const char *fingerprint,
                      uint64_t scanned_at) {
        _cleanup_(json_object_unrefp) json_object *o = disk_info_to_json(d);
        json_object *parts;

        if (!o || !json_object_object_get_ex(o, "partitions", &parts))
                return -ENOMEM;
        DiskRow row = {
                .node_id = (char *) node_id,
                .device = d->device,
                .model = d->model,
                .serial = d->serial,
                .table = d->table,
                .fingerprint = (char *) fingerprint,
                .size = d->size,
                .scanned_at = scanned_at,
                .logical_sector_size = d->logical_sector_size,
                .physical_sector_size = d->physical_sector_size,
                .partitions = parts,
        };
        return row_upsert(s, &disk_table, &row);
}

int store_disk_delete(Store *s, const char *node_id, const char *device) {
        int r = store_exec(s, "DELETE FROM disk_info WHERE node_id = ? AND device = ?", "ss", node_id, device);
        return r < 0 ? r : 0;
}

int store_disk_set_apply(Store *s, const char *node_id, const char *device, uint64_t at) {
        int r = store_exec(s, "UPDATE disk_info SET apply_requested_at = ? WHERE node_id = ? AND device = ?", "tss",
                           at, node_id, device);
        return r < 0 ? r : r == 1 ? 0 : -ENOENT;
}

typedef struct DiskLoad {
        int (*add)(void *userdata, const char *node_id, json_object *disk, uint64_t scanned_at,
                   uint64_t apply_requested_at);
        void *userdata;
} DiskLoad;

/* A row as the Disk JSON a scan reports. */
static int add_disk_row(void *userdata, void *record) {
        DiskLoad *l = userdata;
        DiskRow *d = record;
        _cleanup_(json_object_unrefp) json_object *o = json_object_new_object();
        int r;

        if (!o) {
                disk_row_free(d);
                return -ENOMEM;
        }
        json_object_object_add(o, "device", json_object_new_string(d->device));
        json_object_object_add(o, "sizeBytes", json_object_new_int64((int64_t) d->size));
        json_object_object_add(o, "model", d->model ? json_object_new_string(d->model) : NULL);
        json_object_object_add(o, "serial", d->serial ? json_object_new_string(d->serial) : NULL);
        json_object_object_add(o, "logicalSectorSize", json_object_new_int64(d->logical_sector_size));
        json_object_object_add(o, "physicalSectorSize", json_object_new_int64(d->physical_sector_size));
        json_object_object_add(o, "table", d->table ? json_object_new_string(d->table) : NULL);
        json_object_object_add(o, "partitions", json_object_get(d->partitions));
        r = l->add(l->userdata, d->node_id, o, d->scanned_at, d->apply_requested_at);
        disk_row_free(d);
        return r;
}

int store_disks_load(Store *s, int (*add)(void *userdata, const char *node_id, json_object *disk,
                                          uint64_t scanned_at, uint64_t apply_requested_at),
                     void *userdata) {
        DiskLoad l = { add, userdata };
        return rows_load(s, &disk_table, add_disk_row, &l);
}

/* An operation's row: the operation, and the disk it is queued on. */
typedef struct OperationRow {
        char *node_id, *device;
        PartitionOperation op;
} OperationRow;

static void operation_row_free(void *record) {
        OperationRow *o = record;
        free(o->node_id);
        free(o->device);
        free(o->op.id);
        free(o->op.operation);
        free(o->op.message);
        json_object_put(o->op.params);
        free(o);
}

static const Column operation_columns[] = {
        COL(OperationRow, op.id, "id", COLUMN_STRING, COLUMN_KEY),
        COL(OperationRow, node_id, "node_id", COLUMN_STRING, COLUMN_FIXED),
        COL(OperationRow, device, "device", COLUMN_STRING, COLUMN_FIXED),
        COL(OperationRow, op.position, "position", COLUMN_U64, COLUMN_FIXED),
        COL(OperationRow, op.operation, "operation", COLUMN_STRING, COLUMN_FIXED),
        COL(OperationRow, op.params, "params_json", COLUMN_JSON, COLUMN_FIXED),
        COL(OperationRow, op.created_at, "created_at", COLUMN_U64, COLUMN_FIXED),
        ENUM_COL(OperationRow, op.status, "status", operation_status),
        COL(OperationRow, op.message, "error_message", COLUMN_STRING),
        COL(OperationRow, op.started_at, "started_at", COLUMN_U64),
        COL(OperationRow, op.completed_at, "completed_at", COLUMN_U64),
};

static const Table operation_table = {
        "partition_operations", "partition operation", operation_columns, ELEMENTSOF(operation_columns),
        sizeof(OperationRow),   operation_row_free,    "position",
};

int store_operation_insert(Store *s, const char *node_id, const char *device, const PartitionOperation *op) {
        OperationRow row = { .node_id = (char *) node_id, .device = (char *) device, .op = *op };
        return row_insert(s, &operation_table, &row);
}

int store_operation_update(Store *s, const PartitionOperation *op) {
        OperationRow row = { .op = *op };
        return row_update(s, &operation_table, &row, NULL);
}

int store_operation_delete(Store *s, const char *id) {
        return row_delete(s, &operation_table, id);
}

typedef struct OperationLoad {
        int (*add)(void *userdata, const char *node_id, const char *device, PartitionOperation *op);
        void *userdata;
} OperationLoad;

/* Hands on the operation (a record of its own), and drops the row around it. */
static int add_operation_row(void *userdata, void *record) {
        OperationLoad *l = userdata;
        OperationRow *o = record;
        PartitionOperation *op = malloc(sizeof(PartitionOperation));
        int r;

        if (!op || !o->op.params) {
                free(op);
                bool oom = o->op.params != NULL;
                operation_row_free(o);
                return oom ? -ENOMEM
                           : log_error_errno(EBADMSG,
                                             "A partition operation in the database has no parameters.");
        }
        *op = o->op;
        o->op = (PartitionOperation){};
        r = l->add(l->userdata, o->node_id, o->device, op);
        operation_row_free(o);
        return r;
}

int store_operations_load(Store *s, int (*add)(void *userdata, const char *node_id, const char *device,
                                               PartitionOperation *op),
                          void *userdata) {
        OperationLoad l = { add, userdata };
        return rows_load(s, &operation_table, add_operation_row, &l);
}

/* Clone sessions */

int store_session_insert(Store *s, const CloneSession *c) {
        return row_insert(s, &session_table, c);
}

int store_session_update(Store *s, const CloneSession *c, const char *expected_status) {
        return row_update(s, &session_table, c, expected_status);
}

int store_session_progress(Store *s, const CloneSession *c) {
        int r = store_exec(s, "UPDATE clone_sessions SET bytes_uploaded = ? WHERE id = ?", "ts", c->bytes_uploaded,
                           c->id);
        for (size_t i = 0; r >= 0 && i < c->n_targets; i++) {
                const CloneTarget *t = c->targets[i];
                r = store_exec(s,
                               "UPDATE clone_targets SET bytes_transferred = ?, transfer_rate_bps = ? "
                               "WHERE session_id = ? AND target_index = ?",
                               "ttsu", t->bytes_transferred, t->transfer_rate, c->id, t->index);
        }
        return r < 0 ? r : 0;
}

int store_target_insert(Store *s, const CloneTarget *t) {
        return row_insert(s, &target_table, t);
}

int store_target_update(Store *s, const CloneTarget *t) {
        return row_update(s, &target_table, t, NULL);
}

int store_targets_load(Store *s, int (*add)(void *userdata, void *record), void *userdata) {
        return rows_load(s, &target_table, add, userdata);
}

int store_set_durable(Store *s, bool durable) {
        return exec_plain(s, durable ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL");
}

int store_session_delete(Store *s, const char *id) {
        return row_delete(s, &session_table, id);
}

int store_sessions_load(Store *s, int (*add)(void *userdata, void *record), void *userdata) {
        return rows_load(s, &session_table, add, userdata);
}

/* Storage backends */

int store_storage_insert(Store *s, const StorageBackend *b) {
        return row_insert(s, &storage_table, b);
}

int store_storage_update(Store *s, const StorageBackend *b) {
        return row_update(s, &storage_table, b, NULL);
}

int store_storage_delete(Store *s, const char *id) {
        return row_delete(s, &storage_table, id);
}

int store_storages_load(Store *s, int (*add)(void *userdata, void *record), void *userdata) {
        return rows_load(s, &storage_table, add, userdata);
}

int store_storage_sessions(Store *s, const char *id, char **ret) {
        return collect_ids(s,
                           "SELECT id FROM clone_sessions WHERE staging_backend_id = ? ORDER BY created_at",
                           id, ret);
}

/* Images */

int store_image_insert(Store *s, const Image *i) {
        return row_insert(s, &image_table, i);
}

int store_image_update(Store *s, const Image *i) {
        return row_update(s, &image_table, i, NULL);
}

int store_image_delete(Store *s, const char *id) {
        return row_delete(s, &image_table, id);
}

int store_images_load(Store *s, int (*add)(void *userdata, void *record), void *userdata) {
        return rows_load(s, &image_table, add, userdata);
}

/* Certificates and tokens */

static void certificate_row_free(void *record) {
        CertificateRow *c = record;
        char **strings[] = { &c->serial, &c->subject, &c->role, &c->node_id, &c->session_id };
        for (size_t i = 0; i < ELEMENTSOF(strings); i++)
                free(*strings[i]);
        free(c);
}

static const Column certificate_columns[] = {
        COL(CertificateRow, serial, "serial", COLUMN_STRING, COLUMN_KEY),
        COL(CertificateRow, subject, "subject", COLUMN_STRING, COLUMN_FIXED),
        COL(CertificateRow, role, "role", COLUMN_STRING, COLUMN_FIXED),
        COL(CertificateRow, node_id, "node_id", COLUMN_STRING, COLUMN_FIXED),
        COL(CertificateRow, session_id, "session_id", COLUMN_STRING, COLUMN_FIXED),
        COL(CertificateRow, not_before, "not_before", COLUMN_U64, COLUMN_FIXED),
        COL(CertificateRow, not_after, "not_after", COLUMN_U64, COLUMN_FIXED),
        COL(CertificateRow, created_at, "created_at", COLUMN_U64, COLUMN_FIXED),
        COL(CertificateRow, revoked_at, "revoked_at", COLUMN_U64),
};

static const Table certificate_table = {
        "certificates",         "certificate",        certificate_columns,  ELEMENTSOF(certificate_columns),
        sizeof(CertificateRow), certificate_row_free, "created_at, serial",
};

int store_certificate_insert(Store *s, const char *serial, const char *subject, const char *role,
                             const char *node_id, const char *session_id, uint64_t not_before,
                             uint64_t not_after) {
        CertificateRow row = { .serial = (char *) serial,
                               .subject = (char *) subject,
                               .role = (char *) role,
                               .node_id = (char *) node_id,
                               .session_id = (char *) session_id,
                               .not_before = not_before,
                               .not_after = not_after,
                               .created_at = now_realtime_usec() };
        return row_insert(s, &certificate_table, &row);
}

int store_certificates_revoke_subject(Store *s, const char *subject, const char *except_serial,
                                      uint64_t when) {
        return store_exec(s,
                          "UPDATE certificates SET revoked_at = ? WHERE subject = ? AND revoked_at = 0 AND "
                          "serial IS NOT ?",
                          "tss", when, subject, except_serial);
}

int store_certificate_revoke(Store *s, const char *serial, uint64_t when) {
        _cleanup_finalize_ sqlite3_stmt *stmt = NULL;
        int r = store_query(s, &stmt, "SELECT revoked_at FROM certificates WHERE serial = ?", "s", serial);
        if (r < 0)
                return r;
        if (sqlite3_step(stmt) != SQLITE_ROW)
                return -ENOENT;
        if (sqlite3_column_int64(stmt, 0) != 0)
                return -EALREADY;
        r = store_exec(s, "UPDATE certificates SET revoked_at = ? WHERE serial = ?", "ts", when, serial);
        return r < 0 ? r : 0;
}

typedef struct CertificateVisit {
        int (*cb)(void *userdata, const CertificateRow *row);
        void *userdata;
} CertificateVisit;

static int visit_certificate(void *userdata, void *record) {
        CertificateVisit *v = userdata;
        int r = v->cb(v->userdata, record);
        certificate_row_free(record);
        return r;
}

int store_certificates_foreach(Store *s, bool revoked_only,
                               int (*cb)(void *userdata, const CertificateRow *row), void *userdata) {
        CertificateVisit v = { cb, userdata };
        return rows_query(s, &certificate_table, visit_certificate, &v,
                          revoked_only ? "revoked_at > 0" : NULL, "");
}

static void token_row_free(void *record) {
        token_row_done(record);
        free(record);
}

static const Column token_columns[] = {
        COL(TokenRow, hash, "hash", COLUMN_STRING, COLUMN_KEY),
        COL(TokenRow, node_id, "node_id", COLUMN_STRING, COLUMN_FIXED),
        COL(TokenRow, session_id, "session_id", COLUMN_STRING, COLUMN_FIXED),
        COL(TokenRow, role, "role", COLUMN_STRING, COLUMN_FIXED),
        COL(TokenRow, address, "address", COLUMN_STRING, COLUMN_FIXED),
        COL(TokenRow, created_at, "created_at", COLUMN_U64, COLUMN_FIXED),
        COL(TokenRow, expires_at, "expires_at", COLUMN_U64, COLUMN_FIXED),
        COL(TokenRow, used_at, "used_at", COLUMN_U64),
};

static const Table token_table = {
        "enrolment_tokens",        "enrolment token", token_columns,
        ELEMENTSOF(token_columns), sizeof(TokenRow),  token_row_free,
};

int store_token_insert(Store *s, const char *hash, const char *node_id, const char *session_id,
                       const char *role, const char *address, uint64_t expires_at) {
        TokenRow row = { .hash = (char *) hash,
                         .node_id = (char *) node_id,
                         .session_id = (char *) session_id,
                         .role = (char *) role,
                         .address = (char *) address,
                         .created_at = now_realtime_usec(),
                         .expires_at = expires_at };
        return row_insert(s, &token_table, &row);
}

int store_tokens_retire(Store *s, const char *node_id, const char *session_id, const char *role,
                        uint64_t when) {
        int r = session_id ? store_exec(s,
                                        "UPDATE enrolment_tokens SET used_at = ? WHERE session_id = ? AND "
                                        "role = ? "
                                        "AND used_at = 0",
                                        "tss", when, session_id, role)
                           : store_exec(s,
                                        "UPDATE enrolment_tokens SET used_at = ? WHERE node_id = ? AND "
                                        "session_id IS NULL AND role = ? AND used_at = 0",
                                        "tss", when, node_id, role);
        return r < 0 ? r : 0;
}

int store_tokens_purge(Store *s, uint64_t before) {
        int r = store_exec(s, "DELETE FROM enrolment_tokens WHERE expires_at < ?", "t", before);
        return r < 0 ? r : 0;
}

static int take_token(void *userdata, void *record) {
        TokenRow *ret = userdata, *t = record;
        token_row_done(ret); /* the hash is the key: at most one */
        *ret = *t;
        free(t);
        return 0;
}

int store_token_lookup(Store *s, const char *hash, TokenRow *ret) {
        TokenRow t = {};
        int r = rows_query(s, &token_table, take_token, &t, "hash = ?", "s", hash);
        if (r < 0) {
                token_row_done(&t);
                return r;
        }
        if (!t.hash)
                return -ENOENT;
        *ret = t;
        return 0;
}

void token_row_done(TokenRow *t) {
        free(t->hash);
        free(t->node_id);
        free(t->session_id);
        free(t->role);
        free(t->address);
        *t = (TokenRow){};
}

int store_token_use(Store *s, const char *hash, uint64_t when) {
        int r = store_exec(s, "UPDATE enrolment_tokens SET used_at = ? WHERE hash = ? AND used_at = 0", "ts", when,
                           hash);
        return r < 0 ? r : r == 1 ? 0 : -EALREADY;
}

int store_sequence_set(Store *s, const char *session_id, const char *role, uint64_t sequence) {
        int r = store_exec(s,
                           "INSERT INTO report_sequences (session_id, role, last_sequence) VALUES (?, ?, ?) "
                           "ON CONFLICT (session_id, role) DO UPDATE SET last_sequence = excluded.last_sequence "
                           "WHERE excluded.last_sequence > last_sequence",
                           "sst", session_id, role, sequence);
        return r < 0 ? r : 0;
}

int store_sequences_load(Store *s, int (*cb)(void *userdata, const char *session_id, const char *role,
                                             uint64_t sequence),
                         void *userdata) {
        _cleanup_finalize_ sqlite3_stmt *stmt = NULL;
        int r, rc;

        r = store_query(s, &stmt, "SELECT session_id, role, last_sequence FROM report_sequences", "");
        if (r < 0)
                return r;
        while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
                r = cb(userdata, (const char *) sqlite3_column_text(stmt, 0),
                       (const char *) sqlite3_column_text(stmt, 1), column_u64(stmt, 2));
                if (r < 0)
                        return r;
        }
        return rc == SQLITE_DONE ? 0 : -EIO;
}

int store_event(Store *s, uint32_t uid, const char *action, const char *object, const char *result) {
        int r = store_exec(s,
                           "INSERT INTO events (time, uid, action, object, result) VALUES (?, ?, ?, ?, ?)",
                           "tusss", now_realtime_usec(), uid, action, object, result);
        return r < 0 ? r : 0;
}
