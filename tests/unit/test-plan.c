/* SPDX-License-Identifier: MIT */
/* src/controller/plan.c: resize plans for smaller and larger targets, and every reason one is refused. */
#include <stdio.h>

#include "plan.h"
#include "tests.h"
#include "util.h"

/* A 1 GiB GPT source: 1 vfat ESP 1–101 MiB, 2 ext4 101 MiB–1023 MiB with 400 MiB used (minimum 500 MiB). */
static void source_disk(DiskInfo *d, const char *root_fs, uint32_t sector) {
        char text[2048];
        const char *bad = NULL;
        snprintf(text, sizeof(text),
                 "{\"device\": \"/dev/vda\", \"sizeBytes\": 1073741824, \"logicalSectorSize\": %u,"
                 " \"physicalSectorSize\": 4096, \"table\": \"gpt\", \"partitions\": ["
                 "  {\"number\": 1, \"startBytes\": 1048576, \"sizeBytes\": 104857600, \"type\": "
                 "\"c12a7328-f81f-11d2-ba4b-00a0c93ec93b\", \"filesystem\": \"vfat\", \"flags\": [\"esp\"],"
                 " \"usedBytes\": 1048576, \"minimumBytes\": 34603008, \"canShrink\": true},"
                 "  {\"number\": 2, \"startBytes\": 105906176, \"sizeBytes\": 966787072, \"type\": "
                 "\"0fc63daf-8483-4772-8e79-3d69d8477de4\", \"filesystem\": \"%s\", \"flags\": [],"
                 " \"usedBytes\": 419430400, \"minimumBytes\": 524288000, \"canShrink\": %s}]}",
                 sector, root_fs, streq(root_fs, "xfs") ? "false" : "true");
        json_object *o = json_tokener_parse(text);
        ASSERT_TRUE(o);
        ASSERT_OK(disk_info_from_json(o, d, &bad));
        json_object_put(o);
}

static void target_disk(DiskInfo *d, uint64_t size, uint32_t sector) {
        *d = (DiskInfo){ .device = strdup("/dev/vdb"),
                         .size = size,
                         .logical_sector_size = sector,
                         .physical_sector_size = 4096,
                         .table = strdup("none") };
        ASSERT_TRUE(d->device && d->table);
}

static json_object *plan_for(const char *fs, uint64_t target_size, uint32_t target_sector, const char *mode,
                             const char *edits) {
        DiskInfo s = {}, t = {};
        json_object *e = edits ? json_tokener_parse(edits) : NULL, *plan;
        source_disk(&s, fs, 512);
        target_disk(&t, target_size, target_sector);
        plan = plan_compute(&s, &t, (ResizeMode) resize_mode_from_string(mode), e);
        ASSERT_TRUE(plan);
        json_object_put(e);
        disk_info_done(&s);
        disk_info_done(&t);
        return plan;
}

static json_object *member(json_object *o, const char *key) {
        json_object *v = NULL;
        ASSERT_TRUE(json_object_object_get_ex(o, key, &v));
        return v;
}

static void expect_infeasible(json_object *plan, const char *words) {
        const char *reason = json_get_string(plan, "reason");
        ASSERT_TRUE(!plan_is_feasible(plan));
        ASSERT_TRUE(reason);
        if (!strstr(reason, words)) {
                fprintf(stderr, "reason \"%s\" lacks \"%s\"\n", reason, words);
                abort();
        }
        ASSERT_INT(json_object_array_length(member(plan, "source")), 0);
        ASSERT_INT(json_object_array_length(member(plan, "target")), 0);
        json_object_put(plan);
}

/* The one operation of side: resize partition n to size. */
static void expect_resize(json_object *plan, const char *side, unsigned n, uint64_t size) {
        json_object *ops = member(plan, side), *params;
        ASSERT_INT(json_object_array_length(ops), 1);
        ASSERT_STR(json_get_string(json_object_array_get_idx(ops, 0), "operation"), "resize");
        params = member(json_object_array_get_idx(ops, 0), "parameters");
        ASSERT_INT(json_get_int(params, "partition"), n);
        ASSERT_INT(json_get_int(params, "new_size_bytes"), size);
}

static void test_grow(void) {
        /* 1.5 GiB: partition 2 grows up to the GPT's backup, 1 MiB aligned: ends at 1535 MiB. */
        json_object *plan = plan_for("ext4", 1536 * MIB, 512, "grow_target", NULL);
        ASSERT_TRUE(plan_is_feasible(plan));
        ASSERT_INT(json_get_int(plan, "copyBytes"), 1024 * MIB);
        ASSERT_TRUE(json_object_get_boolean(member(plan, "relocateBackup")));
        ASSERT_INT(json_object_array_length(member(plan, "source")), 0);
        expect_resize(plan, "target", 2, 1535 * MIB - 101 * MIB);
        json_object *p2 = json_object_array_get_idx(member(plan, "partitions"), 1);
        ASSERT_STR(json_get_string(p2, "action"), "grow");
        ASSERT_STR(json_get_string(json_object_array_get_idx(member(plan, "partitions"), 0), "action"),
                   "keep");
        json_object_put(plan);

        /* The same size: nothing to do, nothing to move. */
        plan = plan_for("ext4", 1024 * MIB, 512, "grow_target", NULL);
        ASSERT_TRUE(plan_is_feasible(plan));
        ASSERT_INT(json_object_array_length(member(plan, "target")), 0);
        ASSERT_TRUE(!json_object_get_boolean(member(plan, "relocateBackup")));
        json_object_put(plan);

        /* xfs grows too. */
        plan = plan_for("xfs", 2048 * MIB, 512, "grow_target", NULL);
        ASSERT_TRUE(plan_is_feasible(plan));
        expect_resize(plan, "target", 2, 2047 * MIB - 101 * MIB);
        json_object_put(plan);
}

/* The ESP is never the default to grow: with it last, grow_target keeps every partition. */
static void test_esp_last(void) {
        const char *text =
                "{\"device\": \"/dev/vda\", \"sizeBytes\": 268435456, \"logicalSectorSize\": 512,"
                " \"physicalSectorSize\": 512, \"table\": \"gpt\", \"partitions\": ["
                "  {\"number\": 1, \"startBytes\": 1048576, \"sizeBytes\": 167772160, \"type\": "
                "\"0fc63daf-8483-4772-8e79-3d69d8477de4\", \"filesystem\": \"ext4\", \"flags\": []},"
                "  {\"number\": 2, \"startBytes\": 168820736, \"sizeBytes\": 67108864, \"type\": "
                "\"c12a7328-f81f-11d2-ba4b-00a0c93ec93b\", \"filesystem\": \"vfat\", \"flags\": []}]}";
        json_object *o = json_tokener_parse(text), *plan;
        DiskInfo s = {}, t = {};
        const char *bad = NULL;
        ASSERT_OK(disk_info_from_json(o, &s, &bad));
        target_disk(&t, 384 * MIB, 512);
        plan = plan_compute(&s, &t, RESIZE_GROW_TARGET, NULL);
        ASSERT_TRUE(plan_is_feasible(plan));
        ASSERT_INT(json_object_array_length(member(plan, "target")), 0);
        json_object_put(plan);
        /* The user may still pick it. */
        json_object *edits = json_tokener_parse("{\"2\": 100663296}");
        plan = plan_compute(&s, &t, RESIZE_GROW_TARGET, edits);
        expect_resize(plan, "target", 2, 96 * MIB);
        json_object_put(plan);
        json_object_put(edits);
        json_object_put(o);
        disk_info_done(&s);
        disk_info_done(&t);
}

static void test_shrink(void) {
        /* 0.75 GiB: partition 2 shrinks on the source to end at 767 MiB; only that much is copied. */
        json_object *plan = plan_for("ext4", 768 * MIB, 512, "shrink_source", NULL);
        ASSERT_TRUE(plan_is_feasible(plan));
        expect_resize(plan, "source", 2, 767 * MIB - 101 * MIB);
        ASSERT_INT(json_object_array_length(member(plan, "target")), 0);
        ASSERT_INT(json_get_int(plan, "copyBytes"), 767 * MIB);
        ASSERT_TRUE(json_object_get_boolean(member(plan, "relocateBackup")));
        ASSERT_STR(json_get_string(json_object_array_get_idx(member(plan, "partitions"), 1), "action"),
                   "shrink");
        json_object_put(plan);

        /* The user shrinks further than needed: allowed down to the minimum. */
        plan = plan_for("ext4", 768 * MIB, 512, "shrink_source", "{\"2\": 629145600}");
        ASSERT_TRUE(plan_is_feasible(plan));
        expect_resize(plan, "source", 2, 600 * MIB);
        ASSERT_INT(json_get_int(plan, "copyBytes"), 701 * MIB);
        json_object_put(plan);

        /* A larger target with shrink_source: nothing shrinks, the whole source is copied. */
        plan = plan_for("ext4", 2048 * MIB, 512, "shrink_source", NULL);
        ASSERT_TRUE(plan_is_feasible(plan));
        ASSERT_INT(json_object_array_length(member(plan, "source")), 0);
        ASSERT_INT(json_get_int(plan, "copyBytes"), 1024 * MIB);
        json_object_put(plan);
}

/* A swap after the root: left out by the user, the root can shrink into a smaller target or grow into a
 * larger one; the target drops the swap's entry. */
static void test_delete(void) {
        const char *text =
                "{\"device\": \"/dev/vda\", \"sizeBytes\": 1073741824, \"logicalSectorSize\": 512,"
                " \"physicalSectorSize\": 512, \"table\": \"gpt\", \"partitions\": ["
                "  {\"number\": 1, \"startBytes\": 1048576, \"sizeBytes\": 104857600, \"type\": "
                "\"c12a7328-f81f-11d2-ba4b-00a0c93ec93b\", \"filesystem\": \"vfat\", \"flags\": [\"esp\"]},"
                "  {\"number\": 2, \"startBytes\": 105906176, \"sizeBytes\": 757071872, \"type\": "
                "\"0fc63daf-8483-4772-8e79-3d69d8477de4\", \"filesystem\": \"ext4\", \"flags\": [],"
                " \"usedBytes\": 419430400, \"minimumBytes\": 524288000, \"canShrink\": true},"
                "  {\"number\": 3, \"startBytes\": 862978048, \"sizeBytes\": 209715200, \"type\": "
                "\"0657fd6d-a4ab-43c4-84e5-0933c84b4f4f\", \"filesystem\": \"swap\", \"flags\": []}]}";
        json_object *o = json_tokener_parse(text), *plan, *edits = json_tokener_parse("{\"3\": \"delete\"}");
        DiskInfo s = {}, t = {};
        const char *bad = NULL;

        ASSERT_OK(disk_info_from_json(o, &s, &bad));
        target_disk(&t, 768 * MIB, 512);
        plan = plan_compute(&s, &t, RESIZE_SHRINK_SOURCE, NULL);
        ASSERT_TRUE(!plan_is_feasible(plan)); /* the swap's end is past the target's, and it cannot shrink */
        json_object_put(plan);
        plan = plan_compute(&s, &t, RESIZE_SHRINK_SOURCE, edits);
        ASSERT_TRUE(plan_is_feasible(plan));
        expect_resize(plan, "source", 2, 767 * MIB - 101 * MIB);
        ASSERT_INT(json_get_int(plan, "copyBytes"), 767 * MIB);
        ASSERT_INT(json_object_array_length(member(plan, "drop")), 1);
        ASSERT_STR(json_get_string(json_object_array_get_idx(member(plan, "partitions"), 2), "action"),
                   "delete");
        json_object_put(plan);

        disk_info_done(&t);
        target_disk(&t, 1536 * MIB, 512);
        plan = plan_compute(&s, &t, RESIZE_GROW_TARGET, edits);
        expect_resize(plan, "target", 2, 1535 * MIB - 101 * MIB); /* into the swap's place and beyond */
        json_object_put(plan);
        json_object_put(edits);

        /* Leaving everything out leaves nothing to copy. */
        edits = json_tokener_parse("{\"1\": \"delete\", \"2\": \"delete\", \"3\": \"delete\"}");
        plan = plan_compute(&s, &t, RESIZE_GROW_TARGET, edits);
        ASSERT_TRUE(!plan_is_feasible(plan));
        json_object_put(plan);
        json_object_put(edits);
        json_object_put(o);
        disk_info_done(&s);
        disk_info_done(&t);
}

static void test_refusals(void) {
        /* 512 MiB leaves 410 MiB for partition 2, below its 500 MiB minimum (used + 100 MiB). */
        expect_infeasible(plan_for("ext4", 512 * MIB, 512, "shrink_source", NULL),
                          "can shrink to 500.0 MiB at least");
        expect_infeasible(plan_for("xfs", 768 * MIB, 512, "shrink_source", NULL),
                          "xfs, which cannot shrink");
        expect_infeasible(plan_for("ext4", 768 * MIB, 512, "none", NULL), "Use resize mode shrink_source");
        expect_infeasible(plan_for("ext4", 768 * MIB, 512, "grow_target", NULL),
                          "Shrink it to 666.0 MiB at most");
        expect_infeasible(plan_for("ext4", 1536 * MIB, 4096, "grow_target", NULL), "4096-byte ones");
        /* Edits held to the same rules: below the minimum, past the target's end, growing past the disk. */
        expect_infeasible(plan_for("ext4", 768 * MIB, 512, "shrink_source", "{\"2\": 314572800}"),
                          "can shrink to 500.0 MiB at least");
        expect_infeasible(plan_for("ext4", 768 * MIB, 512, "shrink_source", "{\"2\": 734003200}"),
                          "Partition 2 ends at 801.0 MiB");
        expect_infeasible(plan_for("ext4", 1536 * MIB, 512, "grow_target", "{\"2\": 2147483648}"),
                          "can grow to 1.4 GiB at most");
        expect_infeasible(plan_for("ext4", 1536 * MIB, 512, "grow_target", "{\"1\": 209715200}"),
                          "up to the next partition");
        expect_infeasible(plan_for("ext4", 1536 * MIB, 512, "none", "{\"2\": 1073741824}"),
                          "Resize mode none");
}

int main(void) {
        test_grow();
        test_esp_last();
        test_shrink();
        test_delete();
        test_refusals();
        return 0;
}
