/* SPDX-License-Identifier: MIT */
/* The SQLite state: the schema as a list of migrations keyed by PRAGMA user_version, and every statement
 * the controller runs, each prepared with bound parameters. */
#include <inttypes.h>
#include <stdarg.h>

#include "clone.h"
#include "disk.h"
#include "hashmap.h"
#include "log.h"
#include "node.h"
#include "storage.h"
#include "store.h"
#include "util.h"

struct Store {
        sqlite3 *db;
        /* Statements store_exec ran, kept prepared: keyed by the SQL text's address, which is a literal. */
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

static int migrate(Store *s) {
        int version = store_schema_version(s), r;
        if (version < 0)
                return version;
        if ((size_t) version > ELEMENTSOF(migrations))
                return log_error_errno(
                        EPROTO,
                        "Database schema version %d is newer than this controller knows (%zu); "
                        "refusing to touch it. Run a newer pureboot-controller.",
                        version, ELEMENTSOF(migrations));
        for (size_t i = (size_t) version; i < ELEMENTSOF(migrations); i++) {
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
        return 0;
}

int store_open(const char *path, Store **ret) {
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
        sqlite3_busy_timeout(s->db, 5000);
        r = exec_plain(s, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;");
        if (r >= 0)
                r = migrate(s);
        if (r < 0) {
                store_close(s);
                return r;
        }
        *ret = s;
        return 0;
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
        return exec_plain(s, "COMMIT");
}

void store_rollback(Store *s) {
        (void) exec_plain(s, "ROLLBACK");
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

/* The cache key: the SQL text's address, printed. Every caller passes a string literal, so one text has one
 * address for the life of the program. */
static int statement_for(Store *s, const char *sql, sqlite3_stmt **ret) {
        char key[2 + 2 * sizeof(void *) + 1];
        sqlite3_stmt *stmt;
        char *k;

        snprintf(key, sizeof(key), "%p", (const void *) sql);
        stmt = hashmap_get(s->statements, key);
        if (stmt) {
                *ret = stmt;
                return 0;
        }
        if (sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, NULL) != SQLITE_OK)
                return log_error_errno(EIO, "SQLite cannot prepare \"%s\": %s", sql, sqlite3_errmsg(s->db));
        /* The map borrows its keys: this copy lives as long as the statement. */
        k = strdup(key);
        if (!k || hashmap_put(s->statements, k, stmt) < 0) {
                free(k);
                sqlite3_finalize(stmt);
                return -ENOMEM;
        }
        *ret = stmt;
        return 0;
}

int store_exec(Store *s, const char *sql, const char *types, ...) {
        sqlite3_stmt *stmt = NULL;
        va_list ap;
        int r, rc;

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
        while ((rc = sqlite3_step(stmt)) == SQLITE_ROW)
                ;
        sqlite3_reset(stmt);
        sqlite3_clear_bindings(stmt);
        if (rc == SQLITE_CONSTRAINT || (rc & 0xff) == SQLITE_CONSTRAINT)
                return -EEXIST;
        if (rc != SQLITE_DONE)
                return log_error_errno(EIO, "SQLite failed on \"%s\": %s", sql, sqlite3_errmsg(s->db));
        return sqlite3_changes(s->db);
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

/* Nodes */

int store_node_insert(Store *s, const Node *n) {
        int r = store_exec(
                s,
                "INSERT INTO nodes (id, hostname, mac, arch, serial, state, boot_mode, boot_workflow, last_seen, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                "sssssssstt", n->id, n->hostname, n->mac, n->arch, n->serial, n->state, n->boot_mode,
                n->boot_workflow, n->last_seen, n->created_at);
        return r < 0 ? r : 0;
}

int store_node_update(Store *s, const Node *n) {
        int r = store_exec(
                s,
                "UPDATE nodes SET hostname = ?, mac = ?, arch = ?, serial = ?, state = ?, boot_mode = ?, "
                "boot_workflow = ?, last_seen = ?, scan_requested_at = ?, report_sequence = ? WHERE id = ?",
                "sssssssttts", n->hostname, n->mac, n->arch, n->serial, n->state,
                n->boot_mode, n->boot_workflow, n->last_seen, n->scan_requested_at, n->report_sequence, n->id);
        return r < 0 ? r : r == 1 ? 0 : -ENOENT;
}

int store_node_delete(Store *s, const char *id) {
        int r = store_exec(s, "DELETE FROM nodes WHERE id = ?", "s", id);
        return r < 0 ? r : r == 1 ? 0 : -ENOENT;
}

int store_nodes_load(Store *s, int (*add)(void *userdata, Node *n), void *userdata) {
        _cleanup_finalize_ sqlite3_stmt *stmt = NULL;
        int r, rc;

        r = store_query(s, &stmt,
                        "SELECT id, hostname, mac, arch, serial, state, boot_mode, last_seen, created_at, "
                        "scan_requested_at, report_sequence, boot_workflow FROM nodes",
                        "");
        if (r < 0)
                return r;
        while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
                bool oom = false;
                Node *n = calloc(1, sizeof(Node));
                if (!n)
                        return -ENOMEM;
                n->id = store_column_strdup(stmt, 0, &oom);
                n->hostname = store_column_strdup(stmt, 1, &oom);
                n->mac = store_column_strdup(stmt, 2, &oom);
                n->arch = store_column_strdup(stmt, 3, &oom);
                n->serial = store_column_strdup(stmt, 4, &oom);
                n->state = store_column_strdup(stmt, 5, &oom);
                n->boot_mode = store_column_strdup(stmt, 6, &oom);
                n->last_seen = column_u64(stmt, 7);
                n->created_at = column_u64(stmt, 8);
                n->scan_requested_at = column_u64(stmt, 9);
                n->report_sequence = column_u64(stmt, 10);
                n->boot_workflow = store_column_strdup(stmt, 11, &oom);
                if (oom) {
                        node_free(n);
                        return -ENOMEM;
                }
                r = add(userdata, n);
                if (r < 0)
                        return r;
        }
        return rc == SQLITE_DONE ? 0 : -EIO;
}

int store_node_sessions(Store *s, const char *id, char **ret) {
        return collect_ids(s,
                           "SELECT id FROM clone_sessions WHERE source_node_id = ?1 OR target_node_id = ?1 "
                           "ORDER BY created_at",
                           id, ret);
}

/* Disks and partition operations */

int store_disk_upsert(Store *s, const char *node_id, const DiskInfo *d, const char *fingerprint,
                      uint64_t scanned_at) {
        _cleanup_(json_object_unrefp) json_object *o = disk_info_to_json(d);
        json_object *parts;
        int r;

        if (!o || !json_object_object_get_ex(o, "partitions", &parts))
                return -ENOMEM;
        r = store_exec(s,
                       "INSERT INTO disk_info (node_id, device, size_bytes, model, serial, logical_sector_size, "
                       "physical_sector_size, partition_table, partitions_json, scanned_at, fingerprint) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (node_id, device) DO UPDATE SET "
                       "size_bytes = excluded.size_bytes, model = excluded.model, serial = excluded.serial, "
                       "logical_sector_size = excluded.logical_sector_size, "
                       "physical_sector_size = excluded.physical_sector_size, "
                       "partition_table = excluded.partition_table, partitions_json = excluded.partitions_json, "
                       "scanned_at = excluded.scanned_at, fingerprint = excluded.fingerprint",
                       "sstssuussts", node_id, d->device, d->size, d->model, d->serial, d->logical_sector_size,
                       d->physical_sector_size, d->table,
                       json_object_to_json_string_ext(parts, JSON_C_TO_STRING_PLAIN), scanned_at, fingerprint);
        return r < 0 ? r : 0;
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

int store_disks_load(Store *s, int (*add)(void *userdata, const char *node_id, json_object *disk,
                                          uint64_t scanned_at, uint64_t apply_requested_at),
                     void *userdata) {
        _cleanup_finalize_ sqlite3_stmt *stmt = NULL;
        int r, rc;

        r = store_query(s, &stmt,
                        "SELECT node_id, device, size_bytes, model, serial, logical_sector_size, "
                        "physical_sector_size, partition_table, partitions_json, scanned_at, apply_requested_at "
                        "FROM disk_info ORDER BY node_id, device",
                        "");
        if (r < 0)
                return r;
        while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
                _cleanup_(json_object_unrefp) json_object *o = json_object_new_object();
                const char *model = (const char *) sqlite3_column_text(stmt, 3),
                           *serial = (const char *) sqlite3_column_text(stmt, 4);
                json_object_object_add(o, "device", json_object_new_string((const char *) sqlite3_column_text(stmt, 1)));
                json_object_object_add(o, "sizeBytes", json_object_new_int64(sqlite3_column_int64(stmt, 2)));
                json_object_object_add(o, "model", model ? json_object_new_string(model) : NULL);
                json_object_object_add(o, "serial", serial ? json_object_new_string(serial) : NULL);
                json_object_object_add(o, "logicalSectorSize", json_object_new_int64(sqlite3_column_int64(stmt, 5)));
                json_object_object_add(o, "physicalSectorSize", json_object_new_int64(sqlite3_column_int64(stmt, 6)));
                json_object_object_add(o, "table", json_object_new_string((const char *) sqlite3_column_text(stmt, 7)));
                json_object_object_add(o, "partitions",
                                       json_tokener_parse((const char *) sqlite3_column_text(stmt, 8)));
                r = add(userdata, (const char *) sqlite3_column_text(stmt, 0), o, column_u64(stmt, 9),
                        column_u64(stmt, 10));
                if (r < 0)
                        return r;
        }
        return rc == SQLITE_DONE ? 0 : -EIO;
}

int store_operation_insert(Store *s, const char *node_id, const char *device, const PartitionOperation *op) {
        int r = store_exec(s,
                           "INSERT INTO partition_operations (id, node_id, device, position, operation, params_json, "
                           "status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           "ssstssst", op->id, node_id, device, op->position, op->operation,
                           json_object_to_json_string_ext(op->params, JSON_C_TO_STRING_PLAIN),
                           operation_status_to_string(op->status), op->created_at);
        return r < 0 ? r : 0;
}

int store_operation_update(Store *s, const PartitionOperation *op) {
        int r = store_exec(s,
                           "UPDATE partition_operations SET status = ?, error_message = ?, started_at = ?, "
                           "completed_at = ? WHERE id = ?",
                           "sstts", operation_status_to_string(op->status), op->error, op->started_at,
                           op->completed_at, op->id);
        return r < 0 ? r : r == 1 ? 0 : -ENOENT;
}

int store_operation_delete(Store *s, const char *id) {
        int r = store_exec(s, "DELETE FROM partition_operations WHERE id = ?", "s", id);
        return r < 0 ? r : r == 1 ? 0 : -ENOENT;
}

int store_operations_load(Store *s, int (*add)(void *userdata, const char *node_id, const char *device,
                                               PartitionOperation *op),
                          void *userdata) {
        _cleanup_finalize_ sqlite3_stmt *stmt = NULL;
        int r, rc;

        r = store_query(s, &stmt,
                        "SELECT node_id, device, id, position, operation, params_json, status, error_message, "
                        "created_at, started_at, completed_at FROM partition_operations ORDER BY position",
                        "");
        if (r < 0)
                return r;
        while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
                bool oom = false;
                PartitionOperation *op = calloc(1, sizeof(PartitionOperation));
                if (!op)
                        return -ENOMEM;
                op->id = store_column_strdup(stmt, 2, &oom);
                op->position = column_u64(stmt, 3);
                op->operation = store_column_strdup(stmt, 4, &oom);
                op->params = json_tokener_parse((const char *) sqlite3_column_text(stmt, 5));
                op->status = operation_status_from_string((const char *) sqlite3_column_text(stmt, 6));
                op->error = store_column_strdup(stmt, 7, &oom);
                op->created_at = column_u64(stmt, 8);
                op->started_at = column_u64(stmt, 9);
                op->completed_at = column_u64(stmt, 10);
                if (oom || !op->params) {
                        partition_operation_free(op);
                        return oom ? -ENOMEM : -EBADMSG;
                }
                r = add(userdata, (const char *) sqlite3_column_text(stmt, 0),
                        (const char *) sqlite3_column_text(stmt, 1), op);
                if (r < 0)
                        return r;
        }
        return rc == SQLITE_DONE ? 0 : -EIO;
}

/* Clone sessions */

int store_session_insert(Store *s, const CloneSession *c) {
        int r = store_exec(
                s,
                "INSERT INTO clone_sessions (id, name, status, clone_mode, source_node_id, target_node_id, "
                "source_device, target_device, staging_backend_id, resize_mode, created_at, created_by, "
                "idempotency_key, follows) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                "sssssssssstuss", c->id, c->name, clone_status_to_string(c->status), c->mode, c->source_node,
                c->target_node, c->source_device, c->target_device, c->staging_backend, c->resize_mode,
                c->created_at, c->created_by, c->idempotency_key, c->follows);
        return r < 0 ? r : 0;
}

int store_session_update(Store *s, const CloneSession *c, const char *expected_status) {
        int r = store_exec(
                s,
                "UPDATE clone_sessions SET name = ?, status = ?, clone_mode = ?, source_node_id = ?, "
                "target_node_id = ?, source_device = ?, target_device = ?, source_ip = ?, source_port = ?, "
                "staging_backend_id = ?, staging_path = ?, staging_status = ?, resize_mode = ?, "
                "partition_plan_json = ?, bytes_total = ?, bytes_transferred = ?, transfer_rate_bps = ?, "
                "error_message = ?, started_at = ?, completed_at = ?, source_digest = ?, target_digest = ?, "
                "staging_resources = ?, bytes_uploaded = ?, source_disk_json = ?, target_disk_json = ? "
                "WHERE id = ? AND status = ?",
                "ssssssssussssstttsttssstssss", c->name, clone_status_to_string(c->status), c->mode,
                c->source_node, c->target_node, c->source_device, c->target_device, c->source_address,
                (uint32_t) c->source_port, c->staging_backend, c->staging_path, c->staging_status,
                c->resize_mode, c->plan_json, c->bytes_total, c->bytes_transferred, c->transfer_rate,
                c->error, c->started_at, c->completed_at, c->source_digest, c->target_digest,
                c->staging_resources, c->bytes_uploaded, c->source_disk_json, c->target_disk_json, c->id,
                expected_status);
        return r < 0 ? r : r == 1 ? 0 : -ESTALE;
}

int store_session_progress(Store *s, const CloneSession *c) {
        int r = store_exec(s, "UPDATE clone_sessions SET bytes_transferred = ?, transfer_rate_bps = ?, bytes_uploaded = ? "
                           "WHERE id = ?",
                           "ttts", c->bytes_transferred, c->transfer_rate, c->bytes_uploaded, c->id);
        return r < 0 ? r : r == 1 ? 0 : -ENOENT;
}

int store_set_durable(Store *s, bool durable) {
        return exec_plain(s, durable ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL");
}

int store_session_delete(Store *s, const char *id) {
        int r = store_exec(s, "DELETE FROM clone_sessions WHERE id = ?", "s", id);
        return r < 0 ? r : r == 1 ? 0 : -ENOENT;
}

int store_sessions_load(Store *s, int (*add)(void *userdata, CloneSession *c), void *userdata) {
        _cleanup_finalize_ sqlite3_stmt *stmt = NULL;
        int r, rc;

        r = store_query(
                s, &stmt,
                "SELECT id, name, status, clone_mode, source_node_id, target_node_id, source_device, "
                "target_device, source_ip, source_port, staging_backend_id, staging_path, staging_status, "
                "resize_mode, partition_plan_json, bytes_total, bytes_transferred, transfer_rate_bps, "
                "error_message, created_at, started_at, completed_at, created_by, idempotency_key, "
                "source_digest, target_digest, staging_resources, bytes_uploaded, source_disk_json, "
                "target_disk_json, follows FROM clone_sessions",
                "");
        if (r < 0)
                return r;
        while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
                bool oom = false;
                _cleanup_free_ char *status = NULL;
                CloneSession *c = calloc(1, sizeof(CloneSession));
                if (!c)
                        return -ENOMEM;
                c->id = store_column_strdup(stmt, 0, &oom);
                c->name = store_column_strdup(stmt, 1, &oom);
                status = store_column_strdup(stmt, 2, &oom);
                c->mode = store_column_strdup(stmt, 3, &oom);
                c->source_node = store_column_strdup(stmt, 4, &oom);
                c->target_node = store_column_strdup(stmt, 5, &oom);
                c->source_device = store_column_strdup(stmt, 6, &oom);
                c->target_device = store_column_strdup(stmt, 7, &oom);
                c->source_address = store_column_strdup(stmt, 8, &oom);
                c->source_port = (uint16_t) sqlite3_column_int(stmt, 9);
                c->staging_backend = store_column_strdup(stmt, 10, &oom);
                c->staging_path = store_column_strdup(stmt, 11, &oom);
                c->staging_status = store_column_strdup(stmt, 12, &oom);
                c->resize_mode = store_column_strdup(stmt, 13, &oom);
                c->plan_json = store_column_strdup(stmt, 14, &oom);
                c->bytes_total = column_u64(stmt, 15);
                c->bytes_transferred = column_u64(stmt, 16);
                c->transfer_rate = column_u64(stmt, 17);
                c->error = store_column_strdup(stmt, 18, &oom);
                c->created_at = column_u64(stmt, 19);
                c->started_at = column_u64(stmt, 20);
                c->completed_at = column_u64(stmt, 21);
                c->created_by = (uint32_t) sqlite3_column_int64(stmt, 22);
                c->idempotency_key = store_column_strdup(stmt, 23, &oom);
                c->source_digest = store_column_strdup(stmt, 24, &oom);
                c->target_digest = store_column_strdup(stmt, 25, &oom);
                c->staging_resources = store_column_strdup(stmt, 26, &oom);
                c->bytes_uploaded = column_u64(stmt, 27);
                c->source_disk_json = store_column_strdup(stmt, 28, &oom);
                c->target_disk_json = store_column_strdup(stmt, 29, &oom);
                c->follows = store_column_strdup(stmt, 30, &oom);
                r = status ? clone_status_from_string(status) : -EINVAL;
                if (oom || r < 0) {
                        clone_free(c);
                        return oom ? -ENOMEM
                                   : log_error_errno(EBADMSG, "Session has unknown status \"%s\".",
                                                     strna(status));
                }
                c->status = (CloneStatus) r;
                r = add(userdata, c);
                if (r < 0)
                        return r;
        }
        return rc == SQLITE_DONE ? 0 : -EIO;
}

/* Storage backends */

int store_storage_insert(Store *s, const StorageBackend *b) {
        int r = store_exec(s,
                           "INSERT INTO storage_backends (id, name, type, config, secret, total_bytes, "
                           "available_bytes, enabled, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           "sssssttbt", b->id, b->name, b->type, json_object_to_json_string(b->config),
                           b->secret, b->total_bytes, b->available_bytes, b->enabled, b->created_at);
        return r < 0 ? r : 0;
}

int store_storage_update(Store *s, const StorageBackend *b) {
        int r = store_exec(s,
                           "UPDATE storage_backends SET name = ?, config = ?, secret = ?, total_bytes = ?, "
                           "available_bytes = ?, enabled = ? WHERE id = ?",
                           "sssttbs", b->name, json_object_to_json_string(b->config), b->secret,
                           b->total_bytes, b->available_bytes, b->enabled, b->id);
        return r < 0 ? r : r == 1 ? 0 : -ENOENT;
}

int store_storage_delete(Store *s, const char *id) {
        int r = store_exec(s, "DELETE FROM storage_backends WHERE id = ?", "s", id);
        return r < 0 ? r : r == 1 ? 0 : -ENOENT;
}

int store_storages_load(Store *s, int (*add)(void *userdata, StorageBackend *b), void *userdata) {
        _cleanup_finalize_ sqlite3_stmt *stmt = NULL;
        int r, rc;

        r = store_query(
                s, &stmt,
                "SELECT id, name, type, config, secret, total_bytes, available_bytes, enabled, created_at "
                "FROM storage_backends",
                "");
        if (r < 0)
                return r;
        while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
                bool oom = false;
                StorageBackend *b = calloc(1, sizeof(StorageBackend));
                if (!b)
                        return -ENOMEM;
                b->id = store_column_strdup(stmt, 0, &oom);
                b->name = store_column_strdup(stmt, 1, &oom);
                b->type = store_column_strdup(stmt, 2, &oom);
                b->config = json_tokener_parse((const char *) sqlite3_column_text(stmt, 3));
                b->secret = store_column_strdup(stmt, 4, &oom);
                b->total_bytes = column_u64(stmt, 5);
                b->available_bytes = column_u64(stmt, 6);
                b->enabled = sqlite3_column_int(stmt, 7);
                b->created_at = column_u64(stmt, 8);
                if (oom || !b->config) {
                        storage_free(b);
                        return oom ? -ENOMEM
                                   : log_error_errno(EBADMSG, "Storage backend has unreadable config.");
                }
                r = add(userdata, b);
                if (r < 0)
                        return r;
        }
        return rc == SQLITE_DONE ? 0 : -EIO;
}

int store_storage_sessions(Store *s, const char *id, char **ret) {
        return collect_ids(s,
                           "SELECT id FROM clone_sessions WHERE staging_backend_id = ? ORDER BY created_at",
                           id, ret);
}

/* Certificates and tokens */

int store_certificate_insert(Store *s, const char *serial, const char *subject, const char *role,
                             const char *node_id, const char *session_id, uint64_t not_before,
                             uint64_t not_after) {
        int r = store_exec(
                s,
                "INSERT INTO certificates (serial, subject, role, node_id, session_id, not_before, "
                "not_after, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                "sssssttt", serial, subject, role, node_id, session_id, not_before, not_after,
                now_realtime_usec());
        return r < 0 ? r : 0;
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

int store_certificates_foreach(Store *s, bool revoked_only,
                               int (*cb)(void *userdata, const CertificateRow *row), void *userdata) {
        _cleanup_finalize_ sqlite3_stmt *stmt = NULL;
        int r, rc;

        r = store_query(
                s, &stmt,
                "SELECT serial, subject, role, node_id, session_id, not_before, not_after, revoked_at "
                "FROM certificates WHERE revoked_at > 0 OR NOT ? ORDER BY created_at, serial",
                "b", revoked_only);
        if (r < 0)
                return r;
        while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
                CertificateRow row = {
                        .serial = (const char *) sqlite3_column_text(stmt, 0),
                        .subject = (const char *) sqlite3_column_text(stmt, 1),
                        .role = (const char *) sqlite3_column_text(stmt, 2),
                        .node_id = (const char *) sqlite3_column_text(stmt, 3),
                        .session_id = (const char *) sqlite3_column_text(stmt, 4),
                        .not_before = column_u64(stmt, 5),
                        .not_after = column_u64(stmt, 6),
                        .revoked_at = column_u64(stmt, 7),
                };
                r = cb(userdata, &row);
                if (r < 0)
                        return r;
        }
        return rc == SQLITE_DONE ? 0 : -EIO;
}

int store_token_insert(Store *s, const char *hash, const char *node_id, const char *session_id,
                       const char *role, const char *address, uint64_t expires_at) {
        int r = store_exec(s,
                           "INSERT INTO enrolment_tokens (hash, node_id, session_id, role, address, "
                           "created_at, expires_at) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?)",
                           "ssssstt", hash, node_id, session_id, role, address, now_realtime_usec(),
                           expires_at);
        return r < 0 ? r : 0;
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

int store_token_lookup(Store *s, const char *hash, TokenRow *ret) {
        _cleanup_finalize_ sqlite3_stmt *stmt = NULL;
        bool oom = false;
        int r;

        r = store_query(
                s, &stmt,
                "SELECT node_id, session_id, role, expires_at, used_at, address FROM enrolment_tokens "
                "WHERE hash = ?",
                "s", hash);
        if (r < 0)
                return r;
        r = sqlite3_step(stmt);
        if (r == SQLITE_DONE)
                return -ENOENT;
        if (r != SQLITE_ROW)
                return -EIO;
        TokenRow t = {
                .node_id = store_column_strdup(stmt, 0, &oom),
                .session_id = store_column_strdup(stmt, 1, &oom),
                .role = store_column_strdup(stmt, 2, &oom),
                .expires_at = column_u64(stmt, 3),
                .used_at = column_u64(stmt, 4),
                .address = store_column_strdup(stmt, 5, &oom),
        };
        if (oom) {
                token_row_done(&t);
                return -ENOMEM;
        }
        *ret = t;
        return 0;
}

void token_row_done(TokenRow *t) {
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
