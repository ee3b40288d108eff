/* SPDX-License-Identifier: MIT */
/* The controller's model without a bus: nodes, clone sessions and their state machine, storage backends,
 * what lands in the store, and what a restart loads back. */
#include <systemd/sd-event.h>

#include "ca.h"
#include "chain.h"
#include "clone.h"
#include "disk.h"
#include "image.h"
#include "node.h"
#include "pureboot-errors.h"
#include "storage.h"
#include "tests.h"
#include "throttle.h"
#include "util.h"

static Manager *start(const char *dir) {
        Manager *m;
        ASSERT_OK(manager_new("/nonexistent/controller.conf", dir, &m));
        ASSERT_OK(manager_load(m));
        return m;
}

static long long count(Manager *m, const char *sql) {
        sqlite3_stmt *stmt;
        ASSERT_OK(store_query(m->store, &stmt, sql, ""));
        ASSERT_INT(sqlite3_step(stmt), SQLITE_ROW);
        long long n = sqlite3_column_int64(stmt, 0);
        sqlite3_finalize(stmt);
        return n;
}

/* Expects a call to fail with the named error, and checks the message says something. */
#define ASSERT_BUS_ERROR(call, expected)                                                                    \
        do {                                                                                                \
                sd_bus_error _e = SD_BUS_ERROR_NULL;                                                        \
                int _r = (call);                                                                            \
                (void) _r;                                                                                  \
                ASSERT_TRUE(_r < 0);                                                                        \
                ASSERT_STR(_e.name, expected);                                                              \
                ASSERT_TRUE(_e.message &&strlen(_e.message) > 20);                                          \
                sd_bus_error_free(&_e);                                                                     \
        } while (0)
#define E (&_e)

static void test_nodes(Manager *m) {
        Node *a, *b, *found;
        sd_bus_error e = SD_BUS_ERROR_NULL;

        ASSERT_OK(node_register(m, "web-01", "AA:BB:CC:DD:EE:01", "x86_64", NULL, NODE_READY, &a, &e));
        ASSERT_STR(a->mac, "aa:bb:cc:dd:ee:01");
        ASSERT_OK(node_register(m, "pi-01", "aa:bb:cc:dd:ee:02", "aarch64", "ABCDEF01", NODE_READY, &b, &e));
        ASSERT_STR(b->arch, "arm64");
        ASSERT_STR(b->serial, "abcdef01");
        ASSERT_BUS_ERROR(node_register(m, "web-02", "aa:bb:cc:dd:ee:01", "x86_64", NULL, NODE_READY, &a, E),
                         PB_ERROR_ALREADY_EXISTS);
        ASSERT_BUS_ERROR(node_register(m, "WEB-01", "aa:bb:cc:dd:ee:09", "x86_64", NULL, NODE_READY, &a, E),
                         PB_ERROR_ALREADY_EXISTS);
        ASSERT_BUS_ERROR(node_register(m, "x'; DROP TABLE nodes; --", "aa:bb:cc:dd:ee:03", "x86_64", NULL,
                                       NODE_READY, &a, E),
                         PB_ERROR_INVALID_ARGUMENT);
        ASSERT_BUS_ERROR(node_register(m, "web-03", "aa:bb:cc:dd:ee", "x86_64", NULL, NODE_READY, &a, E),
                         PB_ERROR_INVALID_ARGUMENT);
        ASSERT_BUS_ERROR(node_register(m, "web-03", "aa:bb:cc:dd:ee:03", "sparc", NULL, NODE_READY, &a, E),
                         PB_ERROR_INVALID_ARGUMENT);
        ASSERT_BUS_ERROR(
                node_register(m, "web-03", "aa:bb:cc:dd:ee:03", "x86_64", "../etc", NODE_READY, &a, E),
                PB_ERROR_INVALID_ARGUMENT);
        ASSERT_INT(count(m, "SELECT COUNT(*) FROM nodes"), 2);

        ASSERT_OK(node_resolve(m, "web-01", &found, &e));
        ASSERT_OK(node_resolve(m, "aa-bb-cc-dd-ee-02", &found, &e));
        ASSERT_STR(found->hostname, "pi-01");
        ASSERT_BUS_ERROR(node_resolve(m, "nope", &found, E), PB_ERROR_NO_SUCH_NODE);

        /* A write that fails changes nothing in memory either: the node is as the store says. */
        ASSERT_OK(node_set_boot_mode(b, BOOT_NFS, "pi-diskless", &e));
        ASSERT_OK(store_exec(
                m->store,
                "CREATE TRIGGER refuse BEFORE UPDATE ON nodes BEGIN SELECT RAISE(ABORT, 'refused'); END",
                ""));
        sd_bus_error refused = SD_BUS_ERROR_NULL;
        ASSERT_TRUE(node_set_boot_mode(b, BOOT_LOCAL, NULL, &refused) < 0);
        sd_bus_error_free(&refused);
        ASSERT_INT(b->boot_mode, BOOT_NFS);
        ASSERT_STR(b->boot_workflow, "pi-diskless");
        ASSERT_OK(store_exec(m->store, "DROP TRIGGER refuse", ""));
        ASSERT_OK(node_set_boot_mode(b, BOOT_LOCAL, NULL, &e));
        ASSERT_INT(b->boot_mode, BOOT_LOCAL);
        ASSERT_TRUE(b->boot_workflow == NULL);
}

static void test_sessions(Manager *m) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        CloneSession *c, *again;
        CloneSpec spec = {
                .name = "web-01 to pi-01",
                .mode = "direct",
                .source_node = "web-01",
                .target_node = "pi-01",
                .source_device = "/dev/sda",
                .target_device = "/dev/mmcblk0",
                .idempotency_key = "k-1",
        };
        char big[10 * 1024 + 1];

        ASSERT_INT(clone_create(m, &spec, 1000, &c, &e), 0);
        ASSERT_INT(c->status, CLONE_PENDING);
        ASSERT_INT(c->resize_mode, RESIZE_NONE);
        ASSERT_INT(c->created_by, 1000);
        ASSERT_INT(clone_create(m, &spec, 1000, &again, &e), 1); /* same key, same session */
        ASSERT_TRUE(again == c);
        ASSERT_INT(count(m, "SELECT COUNT(*) FROM clone_sessions"), 1);

        /* Each refused spec leaves the table as it was. */
        CloneSpec bad = spec;
        bad.idempotency_key = NULL;
        bad.source_device = "/dev/../etc/shadow";
        ASSERT_BUS_ERROR(clone_create(m, &bad, 0, &again, E), PB_ERROR_INVALID_ARGUMENT);
        bad = spec, bad.idempotency_key = NULL, bad.target_node = "ghost";
        ASSERT_BUS_ERROR(clone_create(m, &bad, 0, &again, E), PB_ERROR_NO_SUCH_NODE);
        bad = spec, bad.idempotency_key = NULL, bad.target_node = NULL;
        ASSERT_BUS_ERROR(clone_create(m, &bad, 0, &again, E), PB_ERROR_INVALID_ARGUMENT);
        bad = spec, bad.idempotency_key = NULL, bad.mode = "staged";
        ASSERT_BUS_ERROR(clone_create(m, &bad, 0, &again, E), PB_ERROR_INVALID_ARGUMENT);
        bad = spec, bad.idempotency_key = NULL, bad.storage = "nothere", bad.mode = "staged";
        ASSERT_BUS_ERROR(clone_create(m, &bad, 0, &again, E), PB_ERROR_NO_SUCH_STORAGE);
        bad = spec, bad.idempotency_key = NULL, bad.target_node = "web-01";
        ASSERT_BUS_ERROR(clone_create(m, &bad, 0, &again, E), PB_ERROR_INVALID_ARGUMENT);
        memset(big, 'x', sizeof(big) - 1);
        big[sizeof(big) - 1] = 0;
        bad = spec, bad.idempotency_key = NULL, bad.name = big;
        ASSERT_BUS_ERROR(clone_create(m, &bad, 0, &again, E), PB_ERROR_INVALID_ARGUMENT);
        ASSERT_INT(count(m, "SELECT COUNT(*) FROM clone_sessions"), 1);

        /* Update while pending, then Start mints two hashed tokens and Update is refused. */
        CloneSpec change = { .target_device = "/dev/mmcblk1" };
        ASSERT_OK(clone_update(c, &change, false, &e));
        ASSERT_STR(clone_first_target(c)->device, "/dev/mmcblk1");
        change.target_device = "relative";
        ASSERT_BUS_ERROR(clone_update(c, &change, false, E), PB_ERROR_INVALID_ARGUMENT);
        ASSERT_STR(clone_first_target(c)->device, "/dev/mmcblk1");
        ASSERT_INT(count(m, "SELECT COUNT(*) FROM clone_targets WHERE device = '/dev/mmcblk1'"), 1);

        ASSERT_OK(clone_start(c, &e));
        ASSERT_INT(c->status, CLONE_WAITING);
        ASSERT_TRUE(c->started_at > 0);
        /* Tokens are minted when asked for, one good one per role: a second retires the first. */
        ASSERT_INT(count(m, "SELECT COUNT(*) FROM enrolment_tokens"), 0);
        char *token = NULL, *token2 = NULL, sql[256];
        ASSERT_OK(clone_issue_token(c, "source", &token, &e));
        ASSERT_OK(clone_issue_token(c, "source", &token2, &e));
        ASSERT_TRUE(strlen(token) == 48 && !streq(token, token2));
        ASSERT_INT(count(m, "SELECT COUNT(*) FROM enrolment_tokens WHERE length(hash) = 64"), 2);
        ASSERT_INT(count(m, "SELECT COUNT(*) FROM enrolment_tokens WHERE role = 'source' AND used_at = 0"),
                   1);
        snprintf(sql, sizeof(sql), "SELECT COUNT(*) FROM enrolment_tokens WHERE hash = '%s'", token);
        ASSERT_INT(count(m, sql), 0); /* only the hash is stored */
        free(token);
        free(token2);
        ASSERT_INT(count(m, "SELECT COUNT(*) FROM clone_sessions WHERE status = 'waiting'"), 1);
        ASSERT_BUS_ERROR(clone_start(c, E), PB_ERROR_INVALID_STATE);
        change.target_device = "/dev/sdz";
        ASSERT_BUS_ERROR(clone_update(c, &change, false, E), PB_ERROR_INVALID_STATE);
        CloneTarget *t = clone_first_target(c);
        ASSERT_BUS_ERROR(clone_target_transition(t, CLONE_COMPLETED, NULL, E), PB_ERROR_INVALID_STATE);
        ASSERT_INT(count(m, "SELECT COUNT(*) FROM clone_sessions WHERE status = 'waiting'"), 1);
        ASSERT_INT(count(m, "SELECT COUNT(*) FROM clone_targets WHERE status = 'waiting'"), 1);

        /* A node in an active session cannot start another. */
        CloneSpec second = spec;
        second.idempotency_key = NULL;
        ASSERT_INT(clone_create(m, &second, 0, &again, &e), 0);
        ASSERT_BUS_ERROR(clone_start(again, E), PB_ERROR_IN_USE);

        /* The walk to completion, then failure and retry on the second. */
        ASSERT_OK(clone_target_transition(t, CLONE_SOURCE_READY, NULL, &e));
        ASSERT_INT(c->status, CLONE_SOURCE_READY); /* the session follows its target */
        ASSERT_OK(clone_target_transition(t, CLONE_CLONING, NULL, &e));
        ASSERT_OK(clone_target_transition(t, CLONE_COMPLETED, NULL, &e));
        ASSERT_INT(c->status, CLONE_COMPLETED);
        ASSERT_INT(count(m, "SELECT COUNT(*) FROM clone_sessions WHERE status = 'completed'"), 1);
        ASSERT_TRUE(c->completed_at >= c->started_at);
        ASSERT_BUS_ERROR(clone_cancel(c, E), PB_ERROR_INVALID_STATE);
        ASSERT_OK(clone_start(again, &e));
        ASSERT_OK(clone_end(again, CLONE_FAILED, "Target disk vanished.", &e));
        ASSERT_INT(again->status, CLONE_FAILED);
        ASSERT_STR(clone_error(again), "Target disk vanished.");
        ASSERT_OK(clone_start(again, &e)); /* a retry */
        ASSERT_TRUE(clone_error(again) == NULL);
        ASSERT_INT(again->status, CLONE_WAITING);

        /* Delete cancels an active session, removes a finished one and its tokens. */
        bool cancelled = false;
        ASSERT_OK(clone_delete(again, &cancelled, &e));
        ASSERT_TRUE(cancelled);
        ASSERT_INT(again->status, CLONE_CANCELLED);
        char *id = strdup(c->id);
        ASSERT_OK(clone_delete(c, &cancelled, &e));
        ASSERT_TRUE(!cancelled);
        ASSERT_TRUE(hashmap_get(m->sessions, id) == NULL);
        snprintf(sql, sizeof(sql), "SELECT COUNT(*) FROM enrolment_tokens WHERE session_id = '%s'", id);
        ASSERT_INT(count(m, sql), 0);
        free(id);

        /* A node named by a session stays. */
        Node *n;
        ASSERT_OK(node_resolve(m, "web-01", &n, &e));
        ASSERT_BUS_ERROR(node_delete(n, E), PB_ERROR_IN_USE);
}

static void test_restart(const char *dir, Manager **m) {
        char fingerprint[65], id[33];
        CloneSession *c = NULL, *v;
        snprintf(fingerprint, sizeof(fingerprint), "%s", ca_fingerprint((*m)->ca));
        HASHMAP_FOREACH (v, (*m)->sessions, i)
                c = v;
        snprintf(id, sizeof(id), "%s", c->id);
        CloneStatus status = c->status;
        manager_free(*m);

        *m = start(dir);
        ASSERT_STR(ca_fingerprint((*m)->ca), fingerprint);
        ASSERT_INT(hashmap_size((*m)->nodes), 2);
        c = hashmap_get((*m)->sessions, id);
        ASSERT_TRUE(c);
        ASSERT_INT(c->status, status);
        ASSERT_INT(store_schema_version((*m)->store), 15);
        ASSERT_INT(c->n_targets, 1);
        ASSERT_INT(clone_first_target(c)->index, 1);
}

static int take_session(void *userdata, void *record) {
        CloneSession **found = userdata, *c = record;
        if (streq(c->id, "5e551011000000000000000000000001") && !*found)
                *found = c;
        else
                clone_free(c);
        return 0;
}

static int take_target(void *userdata, void *record) {
        CloneTarget **found = userdata, *t = record;
        if (streq(t->session_id, "5e551011000000000000000000000001") && t->index == 2 && !*found)
                *found = t;
        else
                clone_target_free(t);
        return 0;
}

/* Every stored field of a session and of a target, each set to a value of its own, saved and loaded back: a
 * column that a statement leaves out (as the load once left out follows) shows here. */
static void test_session_round_trip(Manager *m) {
        CloneSession c = {
                .id = (char *) "5e551011000000000000000000000001",
                .name = (char *) "round trip",
                .status = CLONE_CLONING,
                .mode = CLONE_MODE_STAGED,
                .source_device = (char *) "/dev/sda",
                .source_address = (char *) "10.0.0.7",
                .source_port = 9998,
                .staging_backend = (char *) "b0000000000000000000000000000001",
                .staging_path = (char *) "pureboot/5e55",
                .staging_status = STAGING_UPLOADING,
                .staging_resources = (char *) "[{\"kind\":\"dir\"}]",
                .bytes_uploaded = 11,
                .resize_mode = RESIZE_GROW_TARGET,
                .identity = CLONE_IDENTITY_NONE,
                .unused = CLONE_UNUSED_KEEP,
                .source_disk_json = (char *) "{\"disk\":\"s\"}",
                .bytes_total = 12,
                .created_at = 15,
                .started_at = 16,
                .completed_at = 17,
                .created_by = 18,
                .idempotency_key = (char *) "key-19",
                .source_digest = (char *) "xxh3-128:s",
                .source_notes = json_tokener_parse("[\"partition 3 (swap) is copied whole\"]"),
                .image = (char *) "1a9e0000000000000000000000000001",
                .error = (char *) "The source failed: its own error",
                .stored_bytes = 23,
                .power_cycle = 1,
                .power_off = 1,
        };
        CloneTarget t = {
                .session_id = c.id,
                .index = 2,
                .status = CLONE_FAILED,
                .device = (char *) "/dev/sdb",
                .resize_mode = RESIZE_SHRINK_SOURCE,
                .plan_json = (char *) "{\"plan\":1}",
                .disk_json = (char *) "{\"disk\":\"t\"}",
                .bytes_transferred = 13,
                .transfer_rate = 14,
                .digest = (char *) "xxh3-128:t",
                .notes = json_tokener_parse("[\"partition 1 (ext4): e2fsck -fn found no errors\"]"),
                .error = (char *) "an error",
                .started_at = 20,
                .completed_at = 21,
                .relay_address = (char *) "192.0.2.7",
                .relay_port = 9999,
                .chain_rank = 5,
                .chain_lost = 1,
                .files = json_tokener_parse("{\"/etc/motd\":\"Lab 3\\n\"}"),
        };
        CloneSession *l = NULL;
        CloneTarget *lt = NULL;
        Node *source, *target;
        sd_bus_error e = SD_BUS_ERROR_NULL;

        ASSERT_OK(node_resolve(m, "web-01", &source, &e));
        ASSERT_OK(node_resolve(m, "pi-01", &target, &e));
        c.source_node = source->id;
        t.node = target->id;
        ASSERT_OK(store_exec(m->store,
                             "INSERT INTO storage_backends (id, name, type, config, created_at) "
                             "VALUES (?, 'rt', 'nfs', '{}', 1)",
                             "s", c.staging_backend));
        ASSERT_OK(
                store_exec(m->store,
                           "INSERT INTO images (id, name, state, backend_id, area, created_at, created_by) "
                           "VALUES (?, 'rt-image', 'ready', ?, 'a', 1, 0)",
                           "ss", c.image, c.staging_backend));
        ASSERT_OK(store_session_insert(m->store, &c));
        ASSERT_OK(store_session_update(m->store, &c, "cloning"));
        ASSERT_OK(store_target_insert(m->store, &t));
        t.bytes_transferred = 22;
        ASSERT_OK(store_target_update(m->store, &t));

        ASSERT_OK(store_sessions_load(m->store, take_session, &l));
        ASSERT_TRUE(l);
        ASSERT_OK(store_targets_load(m->store, take_target, &lt));
        ASSERT_TRUE(lt);
#define SAME_STR(f) ASSERT_STR(l->f, c.f)
#define SAME_INT(f) ASSERT_INT(l->f, c.f)
        SAME_STR(id);
        SAME_STR(name);
        SAME_INT(status);
        SAME_INT(mode);
        SAME_STR(source_node);
        SAME_STR(source_device);
        SAME_STR(source_address);
        SAME_INT(source_port);
        SAME_STR(staging_backend);
        SAME_STR(staging_path);
        SAME_INT(staging_status);
        SAME_STR(staging_resources);
        SAME_INT(bytes_uploaded);
        SAME_INT(resize_mode);
        SAME_INT(identity);
        SAME_INT(unused);
        SAME_STR(source_disk_json);
        SAME_INT(bytes_total);
        SAME_INT(created_at);
        SAME_INT(started_at);
        SAME_INT(completed_at);
        SAME_INT(created_by);
        SAME_STR(idempotency_key);
        SAME_STR(source_digest);
        SAME_STR(image);
        SAME_STR(error);
        SAME_INT(stored_bytes);
        SAME_INT(power_cycle);
        SAME_INT(power_off);
        ASSERT_STR(json_object_to_json_string(l->source_notes), json_object_to_json_string(c.source_notes));
#undef SAME_STR
#undef SAME_INT
#define SAME_STR(f) ASSERT_STR(lt->f, t.f)
#define SAME_INT(f) ASSERT_INT(lt->f, t.f)
        SAME_STR(session_id);
        SAME_INT(index);
        SAME_INT(status);
        SAME_STR(node);
        SAME_STR(device);
        SAME_INT(resize_mode);
        SAME_STR(plan_json);
        SAME_STR(disk_json);
        SAME_INT(bytes_transferred);
        SAME_INT(transfer_rate);
        SAME_STR(digest);
        SAME_STR(error);
        SAME_INT(started_at);
        SAME_INT(completed_at);
        SAME_STR(relay_address);
        SAME_INT(relay_port);
        SAME_INT(chain_rank);
        ASSERT_STR(json_object_to_json_string(lt->files), json_object_to_json_string(t.files));
        SAME_INT(chain_lost);
        ASSERT_STR(json_object_to_json_string(lt->notes), json_object_to_json_string(t.notes));
#undef SAME_STR
#undef SAME_INT
        clone_free(l);
        clone_target_free(lt);
        json_object_put(c.source_notes);
        json_object_put(t.notes);
        json_object_put(t.files);
        ASSERT_OK(store_session_delete(m->store, c.id));
        ASSERT_INT(count(m, "SELECT COUNT(*) FROM clone_targets WHERE session_id = '5e551011000000000000000000000001'"),
                   0); /* its targets go with it */
        ASSERT_OK(store_image_delete(m->store, c.image));
        ASSERT_OK(store_exec(m->store, "DELETE FROM storage_backends WHERE id = ?", "s", c.staging_backend));
}

/* A target's transition table, the session's status derived from its targets', and target names. */
/* Who pulls from whom: the nearest target before that forwards, else the source; a lost one rejoins at the
 * tail. */
static void test_chain(void) {
        CloneTarget t[4] = {}, *targets[4] = { &t[0], &t[1], &t[2], &t[3] };
        CloneSession c = { .id = (char *) "s",
                           .mode = CLONE_MODE_DIRECT,
                           .targets = targets,
                           .n_targets = 1,
                           .bytes_total = 100 };
        char *name = NULL;

        for (uint32_t i = 0; i < 4; i++)
                t[i] = (CloneTarget){
                        .session = &c, .session_id = c.id, .index = i + 1, .status = CLONE_CLONING
                };
        ASSERT_TRUE(!chain_of(&c)); /* one target: no chain */
        ASSERT_TRUE(!chain_forwards(&t[0]));
        c.n_targets = 4;
        ASSERT_TRUE(chain_of(&c));
        /* Target 1 has not said where it forwards: target 2 waits for it; a target not started yet is not
         * waited for. */
        ASSERT_TRUE(chain_upstream(&t[1]) == &t[0]);
        t[0].status = CLONE_PENDING;
        ASSERT_TRUE(!chain_upstream(&t[1]));
        ASSERT_OK(chain_upstream_name(&t[1], &name));
        ASSERT_STR(name, "clone-s-source");
        name = mfree(name);
        t[0].status = CLONE_CLONING;
        for (int i = 0; i < 3; i++)
                ASSERT_OK(chain_relay_ready(&t[i], "192.0.2.1", 9999));
        ASSERT_TRUE(chain_upstream(&t[1]) == &t[0]);
        ASSERT_TRUE(chain_upstream(&t[3]) == &t[2]);
        ASSERT_OK(chain_upstream_name(&t[3], &name));
        ASSERT_STR(name, "clone-s-target-3");
        ASSERT_TRUE(chain_forwards(&t[2]) && !chain_forwards(&t[3]));
        /* Target 3 is lost to target 4: 4 pulls from 2; 3 leaves the line and comes last. */
        ASSERT_INT(chain_drop(&t[3], "clone-s-target-2", "a stale report"), 0);
        ASSERT_INT(chain_drop(&t[3], name, "connection refused"), 1);
        name = mfree(name);
        ASSERT_TRUE(chain_upstream(&t[3]) == &t[1]);
        ASSERT_TRUE(!t[2].relay_address && t[2].chain_rank == 5);
        ASSERT_TRUE(chain_upstream(&t[2]) == &t[3]); /* back, it waits for 4 to forward to it */
        ASSERT_TRUE(!chain_forwards(&t[3]));         /* which no one asks of 4 while 3 is lost */
        ASSERT_TRUE(chain_heard_of(&t[2]) && !chain_heard_of(&t[2]));
        ASSERT_TRUE(chain_forwards(&t[3]));
        ASSERT_OK(chain_relay_ready(&t[3], "192.0.2.4", 9999));
        ASSERT_TRUE(chain_upstream(&t[2]) == &t[3]);
        /* A target that fails or ends forwards no more; the one before the last done is not needed. */
        t[3].status = CLONE_FAILED;
        ASSERT_TRUE(chain_upstream(&t[2]) == &t[1]);
        t[2].status = CLONE_COMPLETED;
        ASSERT_TRUE(!chain_forwards(&t[1])); /* 3 is done and 4 failed */
        ASSERT_TRUE(chain_forwards(&t[0]));  /* target 2 has not written everything */
        t[1].bytes_transferred = 100;        /* it has: its upstream may end, before its verdict */
        ASSERT_TRUE(!chain_forwards(&t[0]));
        /* The source's first target pulls from the source whatever its place. */
        ASSERT_TRUE(!chain_upstream(&t[0]));
        /* A staged session chains the same way; its head reads the staging area. */
        c.mode = CLONE_MODE_STAGED;
        ASSERT_TRUE(chain_of(&c) && chain_upstream(&t[2]) == &t[1] && !chain_upstream(&t[0]));
        ASSERT_OK(chain_upstream_name(&t[0], &name));
        ASSERT_STR(name, "store");
        name = mfree(name);
        ASSERT_INT(chain_drop(&t[0], "store", "a report that cannot be"), 0);
        for (int i = 0; i < 4; i++)
                free(t[i].relay_address);
}

static void test_targets(void) {
        ASSERT_TRUE(clone_target_can_become(CLONE_PENDING, CLONE_WAITING));
        ASSERT_TRUE(clone_target_can_become(CLONE_FAILED, CLONE_WAITING));
        ASSERT_TRUE(clone_target_can_become(CLONE_CLONING, CLONE_COMPLETED));
        ASSERT_TRUE(!clone_target_can_become(CLONE_SOURCE_READY, CLONE_COMPLETED));
        ASSERT_TRUE(!clone_target_can_become(CLONE_COMPLETED, CLONE_WAITING));
        ASSERT_TRUE(!clone_target_can_become(CLONE_CANCELLED, CLONE_WAITING));
        ASSERT_TRUE(!clone_target_can_become(CLONE_PENDING, CLONE_FAILED));
        for (unsigned to = 0; to < _CLONE_STATUS_MAX; to++) { /* nothing leaves the ends but a retry */
                ASSERT_TRUE(!clone_target_can_become(CLONE_COMPLETED, to));
                ASSERT_TRUE(!clone_target_can_become(CLONE_CANCELLED, to));
                ASSERT_TRUE(!clone_target_can_become(to, _CLONE_STATUS_MAX));
        }

        static const struct {
                CloneStatus targets[3];
                size_t n;
                CloneStatus session;
        } cases[] = {
                { {}, 0, CLONE_PENDING },
                { { CLONE_PENDING, CLONE_PENDING }, 2, CLONE_PENDING },
                { { CLONE_WAITING, CLONE_PENDING }, 2, CLONE_WAITING },
                { { CLONE_CLONING, CLONE_WAITING, CLONE_SOURCE_READY }, 3, CLONE_CLONING },
                { { CLONE_COMPLETED, CLONE_SOURCE_READY }, 2, CLONE_SOURCE_READY },
                { { CLONE_COMPLETED, CLONE_FAILED, CLONE_CLONING }, 3, CLONE_CLONING },
                { { CLONE_COMPLETED, CLONE_COMPLETED }, 2, CLONE_COMPLETED },
                { { CLONE_COMPLETED, CLONE_FAILED, CLONE_CANCELLED }, 3, CLONE_FAILED },
                { { CLONE_COMPLETED, CLONE_CANCELLED }, 2, CLONE_CANCELLED },
                { { CLONE_FAILED, CLONE_PENDING }, 2, CLONE_FAILED }, /* a target added to a failed session */
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                CloneTarget t[3] = {}, *targets[3] = { &t[0], &t[1], &t[2] };
                for (size_t k = 0; k < cases[i].n; k++)
                        t[k].status = cases[i].targets[k];
                ASSERT_INT(clone_status_of_targets(targets, cases[i].n), cases[i].session);
        }

        char *role = NULL;
        ASSERT_OK(clone_target_role(7, &role));
        ASSERT_STR(role, "target-7");
        ASSERT_INT(clone_target_index(role), 7);
        free(role);
        ASSERT_INT(clone_target_index("target"), 1); /* the first one's name before there were several */
        ASSERT_INT(clone_target_index("source"), 0);
        ASSERT_INT(clone_target_index("target-0"), 0);
        ASSERT_INT(clone_target_index("target-01"), 0);
        ASSERT_INT(clone_target_index("target-1x"), 0);
        ASSERT_INT(clone_target_index("target-"), 0);
        ASSERT_INT(clone_target_index("target-1001"), 0);
        ASSERT_INT(clone_target_index(NULL), 0);
        uint32_t index = 99;
        ASSERT_INT(clone_role_parse("source", &index), CLONE_ROLE_SOURCE);
        ASSERT_INT(index, 0);
        ASSERT_INT(clone_role_parse("target-12", &index), CLONE_ROLE_TARGET);
        ASSERT_INT(index, 12);
        ASSERT_INT(clone_role_parse("target", &index), CLONE_ROLE_TARGET);
        ASSERT_INT(index, 1);
        ASSERT_INT(clone_role_parse("node", &index), -EINVAL);
        ASSERT_INT(clone_role_parse("target-0", &index), -EINVAL);
}

/* A staged session with two targets: added, refused twice, each moving on its own while the session's status
 * follows, a retry of only the failed one, and writes that fail leaving memory as the store is. */
static void test_staged_targets(Manager *m) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        StorageBackend *b = calloc(1, sizeof(StorageBackend));
        CloneSession *c;
        CloneTarget *t1, *t2;
        Node *n;

        ASSERT_OK(node_register(m, "web-02", "aa:bb:cc:dd:ee:12", "x86_64", NULL, NODE_READY, &n, &e));
        ASSERT_OK(node_register(m, "web-03", "aa:bb:cc:dd:ee:13", "x86_64", NULL, NODE_READY, &n, &e));
        ASSERT_TRUE(b);
        b->id = strdup("5705a6e0000000000000000000000002");
        b->name = strdup("nfs-targets");
        b->type = BACKEND_NFS;
        b->config = json_object_new_object();
        b->enabled = 1;
        ASSERT_OK(store_storage_insert(m->store, b));
        ASSERT_OK(storage_attach(m, b));
        CloneSpec spec = { .name = "fan-out",
                           .mode = "staged",
                           .source_node = "web-02",
                           .target_node = "web-03",
                           .source_device = "/dev/sda",
                           .target_device = "/dev/sdb",
                           .storage = "nfs-targets" };
        ASSERT_OK(clone_create(m, &spec, 0, &c, &e));
        t1 = clone_first_target(c);
        ASSERT_TRUE(t1 && t1->index == 1 && c->n_targets == 1);

        ASSERT_OK(clone_add_target(c, &(TargetSpec){ "web-01", "/dev/sdc", "grow_target" }, &t2, &e));
        ASSERT_TRUE(t2 == clone_target(c, 2) && t2->status == CLONE_PENDING &&
                    t2->resize_mode == RESIZE_GROW_TARGET);
        ASSERT_BUS_ERROR(clone_add_target(c, &(TargetSpec){ "web-01", "/dev/sdd", NULL }, &t2, E),
                         PB_ERROR_INVALID_ARGUMENT);
        ASSERT_BUS_ERROR(clone_add_target(c, &(TargetSpec){ "web-02", "/dev/sdd", NULL }, &t2, E),
                         PB_ERROR_INVALID_ARGUMENT);
        ASSERT_BUS_ERROR(clone_add_target(c, &(TargetSpec){ "pi-01", "sdd", NULL }, &t2, E),
                         PB_ERROR_INVALID_ARGUMENT);
        /* A target whose row cannot be written is not added, in memory either. */
        ASSERT_OK(store_exec(
                m->store,
                "CREATE TRIGGER refuse BEFORE INSERT ON clone_targets BEGIN SELECT RAISE(ABORT, 'no'); END",
                ""));
        sd_bus_error refused = SD_BUS_ERROR_NULL;
        ASSERT_TRUE(clone_add_target(c, &(TargetSpec){ "pi-01", "/dev/sdd", NULL }, &t2, &refused) < 0);
        sd_bus_error_free(&refused);
        ASSERT_OK(store_exec(m->store, "DROP TRIGGER refuse", ""));
        ASSERT_INT(c->n_targets, 2);
        t2 = clone_target(c, 2);
        ASSERT_INT(
                count(m,
                      "SELECT COUNT(*) FROM clone_targets WHERE session_id = (SELECT id FROM clone_sessions "
                      "WHERE name = 'fan-out')"),
                2);

        /* A start whose writes fail starts nothing: every target and the session as they were. */
        ASSERT_OK(
                store_exec(m->store,
                           "CREATE TRIGGER refuse BEFORE UPDATE ON clone_targets WHEN NEW.target_index = 2 "
                           "BEGIN SELECT RAISE(ABORT, 'no'); END",
                           ""));
        refused = (sd_bus_error) SD_BUS_ERROR_NULL;
        ASSERT_TRUE(clone_start(c, &refused) < 0);
        sd_bus_error_free(&refused);
        ASSERT_OK(store_exec(m->store, "DROP TRIGGER refuse", ""));
        ASSERT_INT(c->status, CLONE_PENDING);
        ASSERT_INT(t1->status, CLONE_PENDING);
        ASSERT_INT(t2->status, CLONE_PENDING);
        ASSERT_INT(count(m, "SELECT COUNT(*) FROM clone_targets WHERE status = 'pending'"), 2);

        ASSERT_OK(clone_start(c, &e));
        ASSERT_INT(c->status, CLONE_WAITING);
        ASSERT_INT(t2->status, CLONE_WAITING);
        ASSERT_OK(clone_targets_transition(c, CLONE_SOURCE_READY, NULL, &e));
        ASSERT_INT(c->status, CLONE_SOURCE_READY);
        ASSERT_OK(clone_target_transition(t1, CLONE_CLONING, NULL, &e));
        ASSERT_INT(c->status, CLONE_CLONING);
        ASSERT_OK(clone_target_transition(t1, CLONE_COMPLETED, NULL, &e));
        ASSERT_INT(c->status, CLONE_SOURCE_READY); /* the other one goes on */
        ASSERT_OK(clone_target_transition(t2, CLONE_FAILED, "The target failed: disk gone", &e));
        ASSERT_INT(c->status, CLONE_FAILED);
        ASSERT_STR(clone_error(c), "The target failed: disk gone");
        ASSERT_INT(
                count(m, "SELECT COUNT(*) FROM clone_sessions WHERE name = 'fan-out' AND status = 'failed'"),
                1);

        /* A retry starts the failed target only. */
        ASSERT_OK(clone_start(c, &e));
        ASSERT_INT(t1->status, CLONE_COMPLETED);
        ASSERT_INT(t2->status, CLONE_WAITING);
        ASSERT_INT(c->status, CLONE_WAITING);
        ASSERT_OK(clone_cancel(c, &e));
        ASSERT_INT(t1->status, CLONE_COMPLETED);
        ASSERT_INT(t2->status, CLONE_CANCELLED);
        ASSERT_INT(c->status, CLONE_CANCELLED);
        ASSERT_BUS_ERROR(clone_add_target(c, &(TargetSpec){ "pi-01", "/dev/sdd", NULL }, &t2, E),
                         PB_ERROR_INVALID_STATE);

        char *token = NULL;
        ASSERT_BUS_ERROR(clone_issue_token(c, "target-2", &token, E), PB_ERROR_INVALID_STATE);
        ASSERT_BUS_ERROR(clone_issue_token(c, "target-x", NULL, E), PB_ERROR_INVALID_ARGUMENT);
}

static int take_image(void *userdata, void *record) {
        Image **found = userdata, *i = record;
        if (streq(i->id, "1a9e0000000000000000000000000007") && !*found)
                *found = i;
        else
                image_free(i);
        return 0;
}

/* Every field of an image, saved (inserted, then updated) and read back. */
static void test_image_round_trip(Manager *m) {
        _cleanup_(json_object_unrefp)
                json_object *resources = json_tokener_parse("[{\"kind\":\"pool-lun\",\"lun\":2}]"),
                            *layout = json_tokener_parse("{\"device\":\"/dev/sda\"}");
        Image i = { .id = (char *) "1a9e0000000000000000000000000007",
                    .name = (char *) "lab",
                    .description = (char *) "",
                    .state = IMAGE_CAPTURING,
                    .backend = (char *) "5705a6e0000000000000000000000002",
                    .area = (char *) "aa000000000000000000000000000009",
                    .source_node = (char *) "node-x",
                    .source_hostname = (char *) "web-x",
                    .source_device = (char *) "/dev/sda",
                    .capture_session = (char *) "aa000000000000000000000000000009",
                    .created_at = 11,
                    .created_by = 12 };
        Image *loaded = NULL;

        ASSERT_OK(store_image_insert(m->store, &i));
        i.name = (char *) "lab-2";
        i.description = (char *) "the lab's";
        i.state = IMAGE_BROKEN;
        i.resources = resources;
        i.location = (char *) "iscsi://portal/iqn/2";
        i.layout = layout;
        i.size = 1 << 30;
        i.digest = (char *) "xxh3-128:ab";
        i.verified_at = 13;
        i.verify_error = (char *) "Damaged: the chunk at 0";
        i.stored = 14;
        ASSERT_OK(store_image_update(m->store, &i));
        ASSERT_OK(store_images_load(m->store, take_image, &loaded));
        ASSERT_TRUE(loaded);
        ASSERT_STR(loaded->name, "lab-2");
        ASSERT_STR(loaded->description, "the lab's");
        ASSERT_INT(loaded->state, IMAGE_BROKEN);
        ASSERT_STR(loaded->backend, i.backend);
        ASSERT_STR(loaded->area, i.area);
        ASSERT_STR(json_object_to_json_string_ext(loaded->resources, JSON_C_TO_STRING_PLAIN),
                   "[{\"kind\":\"pool-lun\",\"lun\":2}]");
        ASSERT_STR(loaded->location, i.location);
        ASSERT_STR(loaded->source_node, "node-x");
        ASSERT_STR(loaded->source_hostname, "web-x");
        ASSERT_STR(loaded->source_device, "/dev/sda");
        ASSERT_STR(json_get_string(loaded->layout, "device"), "/dev/sda");
        ASSERT_INT(loaded->size, 1 << 30);
        ASSERT_STR(loaded->digest, "xxh3-128:ab");
        ASSERT_STR(loaded->capture_session, i.capture_session);
        ASSERT_INT(loaded->created_at, 11);
        ASSERT_INT(loaded->created_by, 12);
        ASSERT_INT(loaded->verified_at, 13);
        ASSERT_STR(loaded->verify_error, "Damaged: the chunk at 0");
        ASSERT_INT(loaded->stored, 14);
        image_free(loaded);
        ASSERT_OK(store_image_delete(m->store, i.id));
}

/* As if c's source had uploaded a 1 MiB disk (its staging area made, the upload whole, its digest in). */
static void pretend_uploaded(CloneSession *c) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        free(c->staging_resources);
        ASSERT_TRUE(asprintf(&c->staging_resources,
                             "[{\"kind\":\"nfs-directory\",\"path\":\"/pureboot/%s\"}]", c->id) > 0);
        c->bytes_total = 1 << 20;
        ASSERT_TRUE(c->source_disk_json = strdup("{\"device\":\"/dev/sda\",\"sizeBytes\":1048576,"
                                                 "\"logicalSectorSize\":512,\"physicalSectorSize\":512,"
                                                 "\"table\":\"gpt\",\"partitions\":[]}"));
        ASSERT_OK(clone_targets_transition(c, CLONE_SOURCE_READY, NULL, &e));
        c->staging_status = STAGING_READY;
        ASSERT_TRUE(c->source_digest = strdup("xxh3-128:0123456789abcdef0123456789abcdef"));
        ASSERT_OK(store_session_update(c->manager->store, c, NULL));
        image_capture_changed(c->manager, c->id);
}

/* keep_as reserves a name, the image takes the upload once it is whole; a deploy of it has no source node
 * and is ready at once; in use it cannot go; a capture alone is its own target, and a cancelled one frees
 * its name. */
static void test_images(Manager *m) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        CloneSession *c, *d, *solo;
        Image *i;
        CloneSpec spec = { .name = "keeper",
                           .mode = "staged",
                           .source_node = "web-02",
                           .target_node = "web-03",
                           .source_device = "/dev/sda",
                           .target_device = "/dev/sdb",
                           .storage = "nfs-targets",
                           .keep_as = "golden" };

        ASSERT_OK(clone_create(m, &spec, 0, &c, &e));
        ASSERT_OK(image_resolve(m, "golden", &i, &e));
        ASSERT_INT(i->state, IMAGE_CAPTURING);
        ASSERT_TRUE(image_captured_by(c) == i && !image_of_session(c));
        ASSERT_BUS_ERROR(clone_create(m, &spec, 0, &d, E), PB_ERROR_ALREADY_EXISTS);
        spec.keep_as = "../golden";
        ASSERT_BUS_ERROR(clone_create(m, &spec, 0, &d, E), PB_ERROR_INVALID_ARGUMENT);
        spec.keep_as = "golden2", spec.mode = "direct";
        ASSERT_BUS_ERROR(clone_create(m, &spec, 0, &d, E), PB_ERROR_INVALID_ARGUMENT);
        ASSERT_BUS_ERROR(image_delete(i, NULL, NULL, E), PB_ERROR_IN_USE);

        ASSERT_OK(clone_start(c, &e));
        pretend_uploaded(c);
        ASSERT_INT(i->state, IMAGE_READY);
        ASSERT_TRUE(!c->staging_resources && i->resources && image_of_session(c) == i);
        ASSERT_STR(i->digest, "xxh3-128:0123456789abcdef0123456789abcdef");
        ASSERT_INT(i->size, 1 << 20);
        ASSERT_INT(
                count(m,
                      "SELECT COUNT(*) FROM images WHERE name = 'golden' AND state = 'ready' AND resources "
                      "LIKE '%nfs-directory%'"),
                1);
        ASSERT_OK(clone_cancel(c, &e)); /* the image keeps what it took */
        ASSERT_INT(c->staging_status, STAGING_KEPT);
        ASSERT_INT(i->state, IMAGE_READY);

        CloneSpec deploy = { .name = "rollout",
                             .image = "golden",
                             .target_node = "web-01",
                             .target_device = "/dev/sdc",
                             .resize_mode = "shrink_source" };
        ASSERT_BUS_ERROR(clone_create(m, &deploy, 0, &d, E), PB_ERROR_INVALID_ARGUMENT);
        deploy.resize_mode = "grow_target", deploy.source_node = "web-02";
        ASSERT_BUS_ERROR(clone_create(m, &deploy, 0, &d, E), PB_ERROR_INVALID_ARGUMENT);
        deploy.source_node = NULL;
        ASSERT_OK(clone_create(m, &deploy, 0, &d, &e));
        ASSERT_TRUE(!d->source_node && !d->source_device && streq(d->image, i->id));
        ASSERT_BUS_ERROR(clone_issue_token(d, "source", NULL, E), PB_ERROR_INVALID_ARGUMENT);
        ASSERT_OK(clone_start(d, &e));
        ASSERT_INT(d->status, CLONE_SOURCE_READY);
        ASSERT_INT(d->staging_status, STAGING_READY);
        ASSERT_STR(d->source_digest, i->digest);
        _cleanup_free_ char *users = image_users(i);
        ASSERT_STR(users, d->id);
        ASSERT_BUS_ERROR(image_delete(i, NULL, NULL, E), PB_ERROR_IN_USE);
        ASSERT_OK(clone_cancel(d, &e));
        ASSERT_TRUE(!image_users(i));

        /* A capture alone: no target, the session takes the steps itself and completes with the image. */
        ASSERT_BUS_ERROR(image_capture(m, "solo", "web-02", "/dev/sda", "", 0, false, &solo, E),
                         PB_ERROR_INVALID_ARGUMENT);
        ASSERT_OK(image_capture(m, "solo", "web-02", "/dev/sda", "nfs-targets", 0, false, &solo, &e));
        ASSERT_TRUE(solo->n_targets == 0 && clone_captures_alone(solo));
        ASSERT_INT(solo->status, CLONE_WAITING);
        pretend_uploaded(solo);
        ASSERT_INT(solo->status, CLONE_COMPLETED);
        ASSERT_OK(image_resolve(m, "solo", &i, &e));
        ASSERT_INT(i->state, IMAGE_READY);

        /* Cancelled before its upload was whole, a capture frees its name; failed, it keeps it for a retry.
         */
        ASSERT_OK(image_capture(m, "gone", "web-02", "/dev/sda", "nfs-targets", 0, false, &solo, &e));
        ASSERT_OK(clone_end(solo, CLONE_FAILED, "The source failed: gone", &e));
        ASSERT_STR(clone_error(solo), "The source failed: gone");
        ASSERT_OK(image_resolve(m, "gone", &i, &e));
        ASSERT_OK(clone_start(solo, &e));
        ASSERT_INT(solo->status, CLONE_WAITING);
        ASSERT_TRUE(!clone_error(solo));
        ASSERT_OK(clone_cancel(solo, &e));
        ASSERT_INT(solo->status, CLONE_CANCELLED);
        ASSERT_BUS_ERROR(image_resolve(m, "gone", &i, E), PB_ERROR_NO_SUCH_IMAGE);
        ASSERT_INT(count(m, "SELECT COUNT(*) FROM images WHERE name = 'gone'"), 0);
}

/* A database as schema 8 made it, with a staged session whose two added targets were sessions following it,
 * opened by this controller: they are its targets 2 and 3, in the order they were added, with their
 * progress, digests, plans and report sequences; the followers' rows are gone. */
static void test_migration_from_followers(const char *dir) {
        char path[PATH_MAX + 16], state[PATH_MAX];
        Store *s;

        snprintf(state, sizeof(state), "%s/v8", dir);
        ASSERT_OK(mkdir_p(state, 0700));
        snprintf(path, sizeof(path), "%s/pureboot.db", state);
        ASSERT_OK(store_open_version(path, 8, &s));
        ASSERT_INT(store_schema_version(s), 8);
        static const char *const rows[] = {
                "INSERT INTO nodes (id, hostname, mac, arch, state, boot_mode, created_at) VALUES "
                "('0de00000000000000000000000000001', 'src', '02:00:00:00:00:01', 'x86_64', 'ready', 'local', 1),"
                "('0de00000000000000000000000000002', 'tgt', '02:00:00:00:00:02', 'x86_64', 'ready', 'local', 1),"
                "('0de00000000000000000000000000003', 'tgt2', '02:00:00:00:00:03', 'x86_64', 'ready', 'local', 1),"
                "('0de00000000000000000000000000004', 'tgt3', '02:00:00:00:00:04', 'x86_64', 'ready', 'local', 1)",
                "INSERT INTO storage_backends (id, name, type, config, created_at) VALUES "
                "('b0000000000000000000000000000001', 'nfs', 'nfs', '{}', 1)",
                "INSERT INTO clone_sessions (id, name, status, clone_mode, source_node_id, target_node_id, "
                "source_device, target_device, staging_backend_id, staging_status, resize_mode, "
                "partition_plan_json, bytes_total, bytes_transferred, error_message, created_at, created_by, "
                "source_digest, target_digest, follows) VALUES "
                "('aa000000000000000000000000000001', 'one', 'cloning', 'staged', '0de00000000000000000000000000001', "
                "'0de00000000000000000000000000002', '/dev/sda', '/dev/sdb', 'b0000000000000000000000000000001', "
                "'ready', 'shrink_source', '{\"p\":1}', 100, 40, NULL, 10, 0, 'xxh3-128:s', NULL, NULL),"
                /* added later, though its id sorts first */
                "('aa000000000000000000000000000000', 'one+tgt3', 'failed', 'staged', "
                "'0de00000000000000000000000000001', '0de00000000000000000000000000004', '/dev/sda', '/dev/vdc', "
                "'b0000000000000000000000000000001', NULL, 'grow_target', '{\"p\":3}', 100, 7, 'it broke', 12, 0, "
                "NULL, NULL, 'aa000000000000000000000000000001'),"
                "('aa000000000000000000000000000002', 'one+tgt2', 'completed', 'staged', "
                "'0de00000000000000000000000000001', '0de00000000000000000000000000003', '/dev/sda', '/dev/vdb', "
                "'b0000000000000000000000000000001', NULL, 'grow_target', '{\"p\":2}', 100, 100, NULL, 11, 0, "
                "'xxh3-128:s', 'xxh3-128:s', 'aa000000000000000000000000000001')",
                "INSERT INTO report_sequences (session_id, role, last_sequence) VALUES "
                "('aa000000000000000000000000000001', 'source', 5), ('aa000000000000000000000000000001', 'target', 6),"
                "('aa000000000000000000000000000002', 'target', 7)",
                "INSERT INTO enrolment_tokens (hash, node_id, session_id, role, created_at, expires_at) VALUES "
                "('h1', '0de00000000000000000000000000002', 'aa000000000000000000000000000001', 'target', 1, 2),"
                "('h2', '0de00000000000000000000000000003', 'aa000000000000000000000000000002', 'target', 1, 2)",
                "INSERT INTO certificates (serial, subject, role, node_id, session_id, not_before, not_after, "
                "created_at) VALUES ('c1', 'clone-aa000000000000000000000000000001-target', 'target', "
                "'0de00000000000000000000000000002', 'aa000000000000000000000000000001', 1, 2, 1)",
        };
        for (size_t i = 0; i < ELEMENTSOF(rows); i++)
                ASSERT_TRUE(store_exec(s, rows[i], "") > 0);
        store_close(s);

        Manager *m = start(state);
        ASSERT_INT(store_schema_version(m->store), 15);
        ASSERT_INT(hashmap_size(m->sessions), 1);
        CloneSession *c = hashmap_get(m->sessions, "aa000000000000000000000000000001");
        ASSERT_TRUE(c);
        ASSERT_INT(c->n_targets, 3);
        static const struct {
                const char *node, *device, *plan, *digest, *error;
                CloneStatus status;
                ResizeMode resize;
                uint64_t bytes, sequence;
        } expected[] = {
                { "0de00000000000000000000000000002", "/dev/sdb", "{\"p\":1}", NULL, NULL, CLONE_CLONING,
                  RESIZE_SHRINK_SOURCE, 40, 6 },
                { "0de00000000000000000000000000003", "/dev/vdb", "{\"p\":2}", "xxh3-128:s", NULL, CLONE_COMPLETED,
                  RESIZE_GROW_TARGET, 100, 7 },
                { "0de00000000000000000000000000004", "/dev/vdc", "{\"p\":3}", NULL, "it broke", CLONE_FAILED,
                  RESIZE_GROW_TARGET, 7, 0 },
        };
        for (uint32_t i = 0; i < ELEMENTSOF(expected); i++) {
                CloneTarget *t = clone_target(c, i + 1);
                ASSERT_TRUE(t && t->index == i + 1 && t->session == c);
                ASSERT_STR(t->node, expected[i].node);
                ASSERT_STR(t->device, expected[i].device);
                ASSERT_STR(t->plan_json, expected[i].plan);
                ASSERT_TRUE(streq_ptr(t->digest, expected[i].digest));
                ASSERT_TRUE(streq_ptr(t->error, expected[i].error));
                ASSERT_INT(t->status, expected[i].status);
                ASSERT_INT(t->resize_mode, expected[i].resize);
                ASSERT_INT(t->bytes_transferred, expected[i].bytes);
                ASSERT_INT(t->sequence, expected[i].sequence);
        }
        ASSERT_INT(c->source_sequence, 5);
        ASSERT_STR(c->source_digest, "xxh3-128:s");
        ASSERT_INT(c->staging_status, STAGING_READY);
        /* The session's own unused token and live certificate are its first target's now; the followers'
         * tokens went with them. */
        ASSERT_INT(count(m, "SELECT COUNT(*) FROM enrolment_tokens"), 1);
        ASSERT_INT(count(m, "SELECT COUNT(*) FROM enrolment_tokens WHERE role = 'target-1'"), 1);
        ASSERT_INT(count(m, "SELECT COUNT(*) FROM certificates WHERE subject = "
                            "'clone-aa000000000000000000000000000001-target-1'"),
                   1);
        ASSERT_INT(count(m, "SELECT COUNT(*) FROM report_sequences"), 3);
        ASSERT_INT(count(m, "SELECT COUNT(*) FROM pragma_table_info('clone_sessions') WHERE name IN "
                            "('target_node_id', 'follows', 'target_digest')"),
                   0);
        /* What the session's nodes are in still counts: a target's node is in use. */
        char *ids = NULL;
        ASSERT_OK(store_node_sessions(m->store, "0de00000000000000000000000000004", &ids));
        ASSERT_STR(ids, "aa000000000000000000000000000001");
        free(ids);
        manager_free(m);
}

static int take_node(void *userdata, void *record) {
        Node **found = userdata, *n = record;
        if (streq(n->id, "0de00000000000000000000000000001") && !*found)
                *found = n;
        else
                node_free(n);
        return 0;
}

static int take_storage(void *userdata, void *record) {
        StorageBackend **found = userdata, *b = record;
        if (streq(b->id, "5705a6e0000000000000000000000001") && !*found)
                *found = b;
        else
                storage_free(b);
        return 0;
}

/* Every field of a node and of a storage backend, saved (inserted, then updated) and read back. */
static void test_node_and_storage_round_trip(Manager *m) {
        Node n = {
                .id = (char *) "0de00000000000000000000000000001",
                .hostname = (char *) "round-trip",
                .mac = (char *) "02:00:00:00:0d:e1",
                .arch = (char *) "aarch64",
                .serial = (char *) "0de0feed",
                .state = NODE_CLONING_TARGET,
                .boot_mode = BOOT_NFS,
                .boot_workflow = (char *) "pi-diskless",
                .last_seen = 2,
                .created_at = 3,
                .scan_requested_at = 4,
                .report_sequence = 5,
        };
        _cleanup_(json_object_unrefp) json_object *hardware = json_tokener_parse("{\"cpuThreads\":4}"),
                                                  *power = json_tokener_parse("{\"address\":\"bmc-1\"}");
        StorageBackend b = {
                .id = (char *) "5705a6e0000000000000000000000001",
                .name = (char *) "round-trip",
                .type = BACKEND_ISCSI,
                .config = json_tokener_parse("{\"portal\":\"10.0.0.1:3260\"}"),
                .secret = (char *) "s3cret",
                .total_bytes = 6,
                .available_bytes = 7,
                .enabled = 1,
                .created_at = 8,
        };
        Node *ln = NULL;
        StorageBackend *lb = NULL;

        ASSERT_OK(store_node_insert(m->store, &n));
        n.hostname = (char *) "round-trip-2";
        n.report_sequence = 9;
        n.hardware = hardware;
        n.hardware_at = 10;
        n.power_driver = POWER_IPMI;
        n.power_settings = power;
        n.power_secret = (char *) "bmc-s3cret";
        ASSERT_OK(store_node_update(m->store, &n));
        ASSERT_OK(store_nodes_load(m->store, take_node, &ln));
        ASSERT_TRUE(ln);
#define SAME_STR(f) ASSERT_STR(ln->f, n.f)
#define SAME_INT(f) ASSERT_INT(ln->f, n.f)
        SAME_STR(id);
        SAME_STR(hostname);
        SAME_STR(mac);
        SAME_STR(arch);
        SAME_STR(serial);
        SAME_INT(state);
        SAME_INT(boot_mode);
        SAME_STR(boot_workflow);
        SAME_INT(last_seen);
        SAME_INT(created_at);
        SAME_INT(scan_requested_at);
        SAME_INT(report_sequence);
        ASSERT_STR(json_object_to_json_string(ln->hardware), json_object_to_json_string(n.hardware));
        SAME_INT(hardware_at);
        SAME_INT(power_driver);
        ASSERT_STR(json_object_to_json_string(ln->power_settings), json_object_to_json_string(n.power_settings));
        SAME_STR(power_secret);
#undef SAME_STR
#undef SAME_INT
        node_free(ln);
        ASSERT_OK(store_node_delete(m->store, n.id));

        ASSERT_OK(store_storage_insert(m->store, &b));
        b.available_bytes = 10;
        b.enabled = 0;
        ASSERT_OK(store_storage_update(m->store, &b));
        ASSERT_OK(store_storages_load(m->store, take_storage, &lb));
        ASSERT_TRUE(lb);
#define SAME_STR(f) ASSERT_STR(lb->f, b.f)
#define SAME_INT(f) ASSERT_INT(lb->f, b.f)
        SAME_STR(id);
        SAME_STR(name);
        SAME_INT(type);
        ASSERT_STR(json_object_to_json_string(lb->config), json_object_to_json_string(b.config));
        SAME_STR(secret);
        SAME_INT(total_bytes);
        SAME_INT(available_bytes);
        SAME_INT(enabled);
        SAME_INT(created_at);
#undef SAME_STR
#undef SAME_INT
        storage_free(lb);
        json_object_put(b.config);
        ASSERT_OK(store_storage_delete(m->store, b.id));
        /* An update of a row that is not there says so. */
        ASSERT_INT(store_node_update(m->store, &n), -ENOENT);
}

typedef struct LoadedDisk {
        char *json;
        uint64_t scanned_at, apply_requested_at;
        unsigned count;
} LoadedDisk;

static int take_disk(void *userdata, const char *node_id, json_object *disk, uint64_t scanned_at,
                     uint64_t apply_requested_at) {
        LoadedDisk *l = userdata;
        if (streq(node_id, "0de00000000000000000000000000002")) {
                free(l->json);
                l->json = strdup(json_object_to_json_string_ext(disk, JSON_C_TO_STRING_PLAIN));
                l->scanned_at = scanned_at;
                l->apply_requested_at = apply_requested_at;
                l->count++;
        }
        return 0; /* disk stays the store's */
}

typedef struct LoadedOperations {
        PartitionOperation *ops[4];
        unsigned count;
} LoadedOperations;

static int take_operation(void *userdata, const char *node_id, const char *device, PartitionOperation *op) {
        LoadedOperations *l = userdata;
        if (streq(node_id, "0de00000000000000000000000000002") && streq(device, "/dev/vdb") && l->count < 4)
                l->ops[l->count++] = op;
        else
                partition_operation_free(op);
        return 0;
}

/* Disks and their operations: every field back as it was saved, a new scan replacing the old one without
 * touching an apply asked for, operations in their queue's order. */
static void test_disk_and_operation_round_trip(Manager *m) {
        static const char disk_text[] =
                "{\"device\":\"/dev/vdb\",\"sizeBytes\":1073741824,\"model\":\"QEMU "
                "HARDDISK\",\"serial\":\"S1\","
                "\"logicalSectorSize\":4096,\"physicalSectorSize\":4096,\"table\":\"gpt\",\"partitions\":[{"
                "\"number\":1,\"startBytes\":1048576,\"sizeBytes\":104857600,\"type\":\"0FC63DAF-8483-4772-"
                "8E79-"
                "3D69D8477DE4\",\"filesystem\":\"ext4\",\"label\":\"root\",\"flags\":[\"boot\"],"
                "\"canShrink\":true}]}";
        Node n = { .id = (char *) "0de00000000000000000000000000002",
                   .hostname = (char *) "disk-round-trip",
                   .mac = (char *) "02:00:00:00:0d:e2",
                   .arch = (char *) "x86_64" };
        _cleanup_(json_object_unrefp) json_object *o = json_tokener_parse(disk_text);
        _cleanup_(disk_info_done) DiskInfo info = {};
        const char *bad = NULL;
        LoadedDisk ld = {};

        ASSERT_OK(store_node_insert(m->store, &n));
        ASSERT_OK(disk_info_from_json(o, &info, &bad));
        _cleanup_(json_object_unrefp) json_object *saved = disk_info_to_json(&info);
        ASSERT_OK(store_disk_upsert(m->store, n.id, &info, "fp1", 11));
        ASSERT_OK(store_disk_set_apply(m->store, n.id, info.device, 12));
        /* A new scan: the same row, its values, and the apply still asked for. */
        info.size = 2147483648;
        json_object_put(saved);
        saved = disk_info_to_json(&info);
        ASSERT_OK(store_disk_upsert(m->store, n.id, &info, "fp2", 13));
        ASSERT_OK(store_disks_load(m->store, take_disk, &ld));
        ASSERT_INT(ld.count, 1);
        ASSERT_STR(ld.json, json_object_to_json_string_ext(saved, JSON_C_TO_STRING_PLAIN));
        ASSERT_INT(ld.scanned_at, 13);
        ASSERT_INT(ld.apply_requested_at, 12);
        free(ld.json);

        PartitionOperation a = { .id = (char *) "0de0a000000000000000000000000001",
                                 .operation = (char *) "resize",
                                 .status = OPERATION_PENDING,
                                 .params = json_tokener_parse("{\"partition\":1}"),
                                 .position = 2,
                                 .created_at = 14 };
        PartitionOperation b = a;
        b.id = (char *) "0de0a000000000000000000000000002";
        b.operation = (char *) "delete";
        b.position = 1;
        ASSERT_OK(store_operation_insert(m->store, n.id, info.device, &a));
        ASSERT_OK(store_operation_insert(m->store, n.id, info.device, &b));
        a.status = OPERATION_FAILED;
        a.message = (char *) "it did not fit";
        a.started_at = 15;
        a.completed_at = 16;
        ASSERT_OK(store_operation_update(m->store, &a));
        LoadedOperations lo = {};
        ASSERT_OK(store_operations_load(m->store, take_operation, &lo));
        ASSERT_INT(lo.count, 2);
        ASSERT_STR(lo.ops[0]->id, b.id); /* by position */
        PartitionOperation *la = lo.ops[1];
        ASSERT_STR(la->id, a.id);
        ASSERT_STR(la->operation, "resize");
        ASSERT_INT(la->status, OPERATION_FAILED);
        ASSERT_STR(la->message, "it did not fit");
        ASSERT_STR(json_object_to_json_string(la->params), json_object_to_json_string(a.params));
        ASSERT_INT(la->position, 2);
        ASSERT_INT(la->created_at, 14);
        ASSERT_INT(la->started_at, 15);
        ASSERT_INT(la->completed_at, 16);
        for (unsigned i = 0; i < lo.count; i++)
                partition_operation_free(lo.ops[i]);
        ASSERT_OK(store_operation_delete(m->store, a.id));
        ASSERT_INT(store_operation_delete(m->store, a.id), -ENOENT);
        json_object_put(a.params);
        ASSERT_OK(store_node_delete(m->store, n.id)); /* its disk and operations with it */
        ld = (LoadedDisk){};
        ASSERT_OK(store_disks_load(m->store, take_disk, &ld));
        ASSERT_INT(ld.count, 0);
}

static int take_certificate(void *userdata, const CertificateRow *row) {
        CertificateRow *found = userdata;
        if (streq(row->serial, "0de0c000000000000000000000000001")) {
                ASSERT_STR(row->subject, "clone-x-source");
                ASSERT_STR(row->role, "source");
                ASSERT_STR(row->node_id, "0de00000000000000000000000000003");
                ASSERT_STR(row->session_id, "5e550000000000000000000000000001");
                ASSERT_INT(row->not_before, 21);
                ASSERT_INT(row->not_after, 22);
                ASSERT_TRUE(row->created_at > 0);
                found->revoked_at = row->revoked_at;
                found->not_before++; /* counts the visits */
        }
        return 0;
}

/* Certificates and enrolment tokens: every field back as written; a revocation and a use stored. */
static void test_certificate_and_token_round_trip(Manager *m) {
        CertificateRow seen = {};
        TokenRow t = {};

        ASSERT_OK(store_certificate_insert(m->store, "0de0c000000000000000000000000001", "clone-x-source",
                                           "source", "0de00000000000000000000000000003",
                                           "5e550000000000000000000000000001", 21, 22));
        ASSERT_OK(store_certificates_foreach(m->store, false, take_certificate, &seen));
        ASSERT_INT(seen.not_before, 1);
        ASSERT_INT(seen.revoked_at, 0);
        seen = (CertificateRow){};
        ASSERT_OK(store_certificates_foreach(m->store, true, take_certificate, &seen));
        ASSERT_INT(seen.not_before, 0); /* not revoked: not among the revoked */
        ASSERT_OK(store_certificate_revoke(m->store, "0de0c000000000000000000000000001", 23));
        ASSERT_INT(store_certificate_revoke(m->store, "0de0c000000000000000000000000001", 24), -EALREADY);
        ASSERT_OK(store_certificates_foreach(m->store, true, take_certificate, &seen));
        ASSERT_INT(seen.not_before, 1);
        ASSERT_INT(seen.revoked_at, 23);

        ASSERT_OK(store_token_insert(m->store, "0de0f00d", "0de00000000000000000000000000003", NULL, "node",
                                     "10.0.0.9", 25));
        ASSERT_OK(store_token_lookup(m->store, "0de0f00d", &t));
        ASSERT_STR(t.hash, "0de0f00d");
        ASSERT_STR(t.node_id, "0de00000000000000000000000000003");
        ASSERT_TRUE(t.session_id == NULL);
        ASSERT_STR(t.role, "node");
        ASSERT_STR(t.address, "10.0.0.9");
        ASSERT_INT(t.expires_at, 25);
        ASSERT_INT(t.used_at, 0);
        ASSERT_TRUE(t.created_at > 0);
        token_row_done(&t);
        ASSERT_OK(store_token_use(m->store, "0de0f00d", 26));
        ASSERT_INT(store_token_use(m->store, "0de0f00d", 27), -EALREADY);
        ASSERT_OK(store_token_lookup(m->store, "0de0f00d", &t));
        ASSERT_INT(t.used_at, 26);
        token_row_done(&t);
        ASSERT_INT(store_token_lookup(m->store, "0de0dead", &t), -ENOENT);
        ASSERT_OK(store_tokens_purge(m->store, 26));
        ASSERT_INT(store_token_lookup(m->store, "0de0f00d", &t), -ENOENT);
}

static unsigned after_commit_calls;
static char after_commit_last[64];

static void count_after_commit(Manager *m, const char *id) {
        after_commit_calls++;
        snprintf(after_commit_last, sizeof(after_commit_last), "%s", id);
        /* Work that writes and commits again, queueing more of its own: run once that commits. */
        if (streq(id, "again") && store_begin(m->store) >= 0) {
                manager_after_commit(m, count_after_commit, "nested");
                ASSERT_OK(store_commit(m->store));
        }
}

/* Follow-on work runs once what it follows is committed, never after a rollback, at once outside a
 * transaction, and may itself write and queue more. */
static void test_after_commit(Manager *m) {
        after_commit_calls = 0;
        ASSERT_OK(store_begin(m->store));
        manager_after_commit(m, count_after_commit, "first");
        ASSERT_INT(after_commit_calls, 0);
        ASSERT_OK(store_commit(m->store));
        ASSERT_INT(after_commit_calls, 1);
        ASSERT_STR(after_commit_last, "first");

        ASSERT_OK(store_begin(m->store));
        manager_after_commit(m, count_after_commit, "dropped");
        store_rollback(m->store);
        ASSERT_INT(after_commit_calls, 1);

        manager_after_commit(m, count_after_commit, "now");
        ASSERT_INT(after_commit_calls, 2);

        ASSERT_OK(store_begin(m->store));
        manager_after_commit(m, count_after_commit, "again");
        ASSERT_OK(store_commit(m->store));
        ASSERT_INT(after_commit_calls, 4);
        ASSERT_STR(after_commit_last, "nested");
}

static void note_end(void *userdata, bool committed) {
        *(int *) userdata = committed ? 1 : -1;
}

/* What waits for a transaction (PropertiesChanged, manager.c) learns how it ended; nothing is told of
 * statements outside one. */
static void test_transaction_end_hook(Manager *m) {
        int ended = 0;

        store_set_end_hook(m->store, note_end, &ended);
        ASSERT_TRUE(!store_in_transaction(m->store));
        ASSERT_OK(store_begin(m->store));
        ASSERT_TRUE(store_in_transaction(m->store));
        store_rollback(m->store);
        ASSERT_INT(ended, -1);
        ASSERT_TRUE(!store_in_transaction(m->store));
        ASSERT_OK(store_begin(m->store));
        ASSERT_OK(store_commit(m->store));
        ASSERT_INT(ended, 1);
        ended = 0;
        ASSERT_OK(store_event(m->store, 0, "Test", "hook", "ok"));
        ASSERT_INT(ended, 0);
        store_set_end_hook(m->store, NULL, NULL);
}

static void counter(void *userdata) {
        (*(int *) userdata)++;
}

/* Progress notifications: at most 4 a second, and the last change is never dropped. */
static void test_throttle(void) {
        sd_event *e;
        Throttle t;
        int calls = 0;
        uint64_t begin;

        ASSERT_OK(sd_event_new(&e));
        throttle_init(&t, e, USEC_PER_SEC / 4, counter, &calls);
        begin = now_monotonic_usec();
        while (now_monotonic_usec() - begin < USEC_PER_SEC) {
                ASSERT_OK(throttle_kick(&t));
                ASSERT_OK(sd_event_run(e, 1000));
        }
        ASSERT_TRUE(calls >= 4 && calls <= 5);
        int before = calls;
        ASSERT_OK(throttle_kick(&t));
        ASSERT_OK(sd_event_run(e, USEC_PER_SEC / 2));
        ASSERT_INT(calls, before + 1);
        throttle_done(&t);
        sd_event_unref(e);
}

int main(void) {
        char *dir = tmpdir_new();
        Manager *m = start(dir);

        test_nodes(m);
        test_sessions(m);
        test_session_round_trip(m);
        test_targets();
        test_chain();
        test_node_and_storage_round_trip(m);
        test_disk_and_operation_round_trip(m);
        test_certificate_and_token_round_trip(m);
        test_after_commit(m);
        test_transaction_end_hook(m);
        test_restart(dir, &m);
        test_staged_targets(m);
        test_image_round_trip(m);
        test_images(m);
        test_migration_from_followers(dir);
        manager_free(m);
        test_throttle();
        tmpdir_remove(dir);
        return 0;
}
