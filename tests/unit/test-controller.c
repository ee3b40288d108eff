/* SPDX-License-Identifier: MIT */
/* The controller's model without a bus: nodes, clone sessions and their state machine, storage backends,
 * what lands in the store, and what a restart loads back. */
#include <systemd/sd-event.h>

#include "ca.h"
#include "clone.h"
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

        ASSERT_OK(node_register(m, "web-01", "AA:BB:CC:DD:EE:01", "x86_64", NULL, "ready", &a, &e));
        ASSERT_STR(a->mac, "aa:bb:cc:dd:ee:01");
        ASSERT_OK(node_register(m, "pi-01", "aa:bb:cc:dd:ee:02", "aarch64", "ABCDEF01", "ready", &b, &e));
        ASSERT_STR(b->arch, "arm64");
        ASSERT_STR(b->serial, "abcdef01");
        ASSERT_BUS_ERROR(node_register(m, "web-02", "aa:bb:cc:dd:ee:01", "x86_64", NULL, "ready", &a, E),
                         PB_ERROR_ALREADY_EXISTS);
        ASSERT_BUS_ERROR(node_register(m, "WEB-01", "aa:bb:cc:dd:ee:09", "x86_64", NULL, "ready", &a, E),
                         PB_ERROR_ALREADY_EXISTS);
        ASSERT_BUS_ERROR(
                node_register(m, "x'; DROP TABLE nodes; --", "aa:bb:cc:dd:ee:03", "x86_64", NULL, "ready", &a, E),
                PB_ERROR_INVALID_ARGUMENT);
        ASSERT_BUS_ERROR(node_register(m, "web-03", "aa:bb:cc:dd:ee", "x86_64", NULL, "ready", &a, E),
                         PB_ERROR_INVALID_ARGUMENT);
        ASSERT_BUS_ERROR(node_register(m, "web-03", "aa:bb:cc:dd:ee:03", "sparc", NULL, "ready", &a, E),
                         PB_ERROR_INVALID_ARGUMENT);
        ASSERT_BUS_ERROR(node_register(m, "web-03", "aa:bb:cc:dd:ee:03", "x86_64", "../etc", "ready", &a, E),
                         PB_ERROR_INVALID_ARGUMENT);
        ASSERT_INT(count(m, "SELECT COUNT(*) FROM nodes"), 2);

        ASSERT_OK(node_resolve(m, "web-01", &found, &e));
        ASSERT_OK(node_resolve(m, "aa-bb-cc-dd-ee-02", &found, &e));
        ASSERT_STR(found->hostname, "pi-01");
        ASSERT_BUS_ERROR(node_resolve(m, "nope", &found, E), PB_ERROR_NO_SUCH_NODE);
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
        ASSERT_STR(c->resize_mode, "none");
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
        ASSERT_OK(clone_update(c, &change, &e));
        ASSERT_STR(c->target_device, "/dev/mmcblk1");
        change.target_device = "relative";
        ASSERT_BUS_ERROR(clone_update(c, &change, E), PB_ERROR_INVALID_ARGUMENT);
        ASSERT_STR(c->target_device, "/dev/mmcblk1");

        ASSERT_OK(clone_start(c, &e));
        ASSERT_INT(c->status, CLONE_WAITING);
        ASSERT_TRUE(c->started_at > 0);
        ASSERT_INT(count(m, "SELECT COUNT(*) FROM enrolment_tokens WHERE length(hash) = 64"), 2);
        ASSERT_TRUE(c->source_token && c->target_token && strlen(c->source_token) == 48);
        char sql[256];
        snprintf(sql, sizeof(sql), "SELECT COUNT(*) FROM enrolment_tokens WHERE hash = '%s'",
                 c->source_token);
        ASSERT_INT(count(m, sql), 0); /* only the hash is stored */
        ASSERT_INT(count(m, "SELECT COUNT(*) FROM clone_sessions WHERE status = 'waiting'"), 1);
        ASSERT_BUS_ERROR(clone_start(c, E), PB_ERROR_INVALID_STATE);
        change.target_device = "/dev/sdz";
        ASSERT_BUS_ERROR(clone_update(c, &change, E), PB_ERROR_INVALID_STATE);
        ASSERT_BUS_ERROR(clone_transition(c, CLONE_COMPLETED, NULL, E), PB_ERROR_INVALID_STATE);
        ASSERT_INT(count(m, "SELECT COUNT(*) FROM clone_sessions WHERE status = 'waiting'"), 1);

        /* A node in an active session cannot start another. */
        CloneSpec second = spec;
        second.idempotency_key = NULL;
        ASSERT_INT(clone_create(m, &second, 0, &again, &e), 0);
        ASSERT_BUS_ERROR(clone_start(again, E), PB_ERROR_IN_USE);

        /* The walk to completion, then failure and retry on the second. */
        ASSERT_OK(clone_transition(c, CLONE_SOURCE_READY, NULL, &e));
        ASSERT_OK(clone_transition(c, CLONE_CLONING, NULL, &e));
        ASSERT_OK(clone_transition(c, CLONE_COMPLETED, NULL, &e));
        ASSERT_TRUE(c->completed_at >= c->started_at);
        ASSERT_BUS_ERROR(clone_cancel(c, E), PB_ERROR_INVALID_STATE);
        ASSERT_OK(clone_start(again, &e));
        ASSERT_OK(clone_transition(again, CLONE_FAILED, "Target disk vanished.", &e));
        ASSERT_STR(again->error, "Target disk vanished.");
        ASSERT_OK(clone_start(again, &e)); /* a retry */
        ASSERT_TRUE(again->error == NULL);

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
        ASSERT_INT(store_schema_version((*m)->store), 7);
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
        test_restart(dir, &m);
        manager_free(m);
        test_throttle();
        tmpdir_remove(dir);
        return 0;
}
