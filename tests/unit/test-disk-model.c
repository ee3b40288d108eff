/* SPDX-License-Identifier: MIT */
/* src/shared/disk-model.c: Disk records in and out, and each operation's checks on paper. */
#include <errno.h>

#include "disk-model.h"
#include "tests.h"
#include "util.h"

#define GIB (UINT64_C(1) << 30)

/* A 10 GiB GPT disk: 1 ext4 1–4 GiB (shrinks to 1.5 GiB), 2 xfs 4–6 GiB, free 6 GiB to the end. */
static const char *disk_json =
        "{\"device\": \"/dev/sda\", \"sizeBytes\": 10737418240, \"model\": null, \"serial\": \"S1\","
        " \"logicalSectorSize\": 512, \"physicalSectorSize\": 4096, \"table\": \"gpt\", \"partitions\": ["
        "  {\"number\": 2, \"startBytes\": 4294967296, \"sizeBytes\": 2147483648, \"type\": "
        "\"0fc63daf-8483-4772-8e79-3d69d8477de4\", \"filesystem\": \"xfs\", \"flags\": [], \"usedBytes\": 100,"
        " \"minimumBytes\": 2147483648, \"canShrink\": false},"
        "  {\"number\": 1, \"startBytes\": 1048576, \"sizeBytes\": 4293918720, \"type\": "
        "\"0fc63daf-8483-4772-8e79-3d69d8477de4\", \"filesystem\": \"ext4\", \"label\": \"root\", \"flags\": "
        "[\"boot\"], \"usedBytes\": 1000000, \"minimumBytes\": 1610612736, \"canShrink\": true}]}";

static void load(DiskInfo *d) {
        json_object *o = json_tokener_parse(disk_json);
        const char *bad = NULL;
        ASSERT_TRUE(o);
        ASSERT_OK(disk_info_from_json(o, d, &bad));
        json_object_put(o);
}

/* Applies op with params given as JSON text; returns the result and the message (or NULL). */
static int apply(DiskInfo *d, const char *op, const char *params, char **msg) {
        json_object *p = json_tokener_parse(params);
        int r;
        ASSERT_TRUE(p);
        r = disk_info_apply(d, op, p, msg);
        json_object_put(p);
        return r;
}

static void expect_refusal(const char *op, const char *params, int err, const char *words) {
        DiskInfo d = {};
        char *msg = NULL, *before, *after;
        load(&d);
        before = disk_info_fingerprint(&d);
        ASSERT_INT(apply(&d, op, params, &msg), err);
        ASSERT_TRUE(msg);
        if (!strstr(msg, words)) {
                fprintf(stderr, "message \"%s\" lacks \"%s\"\n", msg, words);
                abort();
        }
        after = disk_info_fingerprint(&d);
        ASSERT_STR(after, before); /* a refusal changes nothing */
        free(msg);
        free(before);
        free(after);
        disk_info_done(&d);
}

static void test_parse(void) {
        DiskInfo d = {};
        const char *bad = NULL;
        load(&d);
        ASSERT_INT(d.n_partitions, 2);
        ASSERT_INT(d.partitions[0].number, 1); /* sorted by start */
        ASSERT_STR(d.partitions[0].label, "root");
        ASSERT_STR(d.partitions[0].flags[0], "boot");
        ASSERT_INT(d.physical_sector_size, 4096);

        json_object *o = disk_info_to_json(&d);
        DiskInfo again = {};
        ASSERT_OK(disk_info_from_json(o, &again, &bad));
        char *f1 = disk_info_fingerprint(&d), *f2 = disk_info_fingerprint(&again);
        ASSERT_STR(f1, f2);
        ASSERT_INT(strlen(f1), 32);
        free(f1);
        free(f2);
        json_object_put(o);
        disk_info_done(&again);

        o = json_tokener_parse("{\"device\": \"sda\", \"sizeBytes\": 1}");
        ASSERT_INT(disk_info_from_json(o, &again, &bad), -EINVAL);
        ASSERT_STR(bad, "device");
        json_object_put(o);
        o = json_tokener_parse("{\"device\": \"/dev/sda\", \"sizeBytes\": 1048576, \"logicalSectorSize\": 512, "
                               "\"physicalSectorSize\": 512, \"table\": \"gpt\", \"partitions\": [{\"number\": 1, "
                               "\"startBytes\": 0, \"sizeBytes\": 2097152, \"type\": \"x\"}]}");
        ASSERT_INT(disk_info_from_json(o, &again, &bad), -EINVAL); /* a partition beyond the disk */
        json_object_put(o);
        disk_info_done(&d);
}

static void test_operations(void) {
        DiskInfo d = {};
        char *msg = NULL;
        uint64_t first, end;

        load(&d);
        disk_info_usable(&d, &first, &end);
        ASSERT_INT(first, MIB);
        ASSERT_INT(end, 10 * GIB - MIB); /* the backup GPT takes the last (partial) MiB */

        /* shrink 1 to 2 GiB, grow 2 into the free space, create 3 after it, flag it, format, move, delete */
        ASSERT_OK(apply(&d, "resize", "{\"partition\": 1, \"new_size_bytes\": 2146435072}", &msg));
        ASSERT_INT(disk_info_partition(&d, 1)->size, 2 * GIB - MIB);
        ASSERT_OK(apply(&d, "resize", "{\"partition\": 2, \"new_size_bytes\": 4294967296}", &msg));
        ASSERT_OK(apply(&d, "create", "{\"start_bytes\": 8589934592, \"size_bytes\": 1073741824, "
                                      "\"filesystem\": \"vfat\", \"label\": \"data\"}", &msg));
        PartitionInfo *p = disk_info_partition(&d, 3);
        ASSERT_TRUE(p);
        ASSERT_STR(p->filesystem, "vfat");
        ASSERT_STR(p->type, "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7");
        ASSERT_OK(apply(&d, "set_flag", "{\"partition\": 3, \"flag\": \"esp\", \"value\": true}", &msg));
        ASSERT_STR(disk_info_partition(&d, 3)->flags[0], "esp");
        ASSERT_OK(apply(&d, "set_flag", "{\"partition\": 1, \"flag\": \"boot\", \"value\": false}", &msg));
        ASSERT_TRUE(disk_info_partition(&d, 1)->flags[0] == NULL);
        ASSERT_OK(apply(&d, "format", "{\"partition\": 3, \"filesystem\": \"ext4\"}", &msg));
        ASSERT_STR(disk_info_partition(&d, 3)->filesystem, "ext4");
        ASSERT_OK(apply(&d, "move", "{\"partition\": 3, \"new_start_bytes\": 9126805504}", &msg));
        ASSERT_INT(disk_info_partition(&d, 3)->start, 8 * GIB + 512 * MIB);
        /* a formatted partition's minimum is not known until it is scanned */
        ASSERT_INT(apply(&d, "resize", "{\"partition\": 3, \"new_size_bytes\": 536870912}", &msg), -ERANGE);
        ASSERT_TRUE(strstr(msg, "not known"));
        free(msg);
        ASSERT_OK(apply(&d, "delete", "{\"partition\": 2}", &msg));
        ASSERT_INT(d.n_partitions, 2);
        /* the number freed is used again */
        ASSERT_OK(apply(&d, "create", "{\"start_bytes\": 2147483648, \"size_bytes\": 1073741824}", &msg));
        ASSERT_STR(disk_info_partition(&d, 2)->type_name, "Linux filesystem");
        ASSERT_TRUE(msg == NULL);
        /* an erase leaves nothing, and what follows it starts from a blank disk */
        ASSERT_OK(apply(&d, "erase", "{\"method\": \"zero\"}", &msg));
        ASSERT_STR(d.table, "none");
        ASSERT_INT(d.n_partitions, 0);
        ASSERT_OK(apply(&d, "erase", "{\"method\": \"discard\"}", &msg));
        ASSERT_OK(apply(&d, "create", "{\"start_bytes\": 1048576, \"size_bytes\": 1073741824}", &msg));
        ASSERT_STR(d.table, "gpt");
        disk_info_done(&d);
}

static void test_refusals(void) {
        expect_refusal("resize", "{\"partition\": 1, \"new_size_bytes\": 1073741824}", -ERANGE,
                       "Partition 1 can shrink to 1.5 GiB at least; 1.0 GiB asked.");
        expect_refusal("resize", "{\"partition\": 2, \"new_size_bytes\": 1073741824}", -ERANGE, "xfs, which cannot shrink");
        expect_refusal("resize", "{\"partition\": 1, \"new_size_bytes\": 5368709120}", -ERANGE,
                       "can grow to 4.0 GiB at most (up to the next partition)");
        expect_refusal("resize", "{\"partition\": 2, \"new_size_bytes\": 10737418240}", -ERANGE,
                       "up to the end of the disk");
        expect_refusal("resize", "{\"partition\": 1, \"new_size_bytes\": 2147483000}", -ERANGE, "1 MiB boundary");
        expect_refusal("resize", "{\"partition\": 9, \"new_size_bytes\": 1073741824}", -ERANGE, "no partition 9");
        expect_refusal("resize", "{\"partition\": 1}", -EINVAL, "new_size_bytes");
        /* 2^32 + 1 is no partition 1 cut short, and a parameter an operation does not take is not kept. */
        expect_refusal("resize", "{\"partition\": 4294967297, \"new_size_bytes\": 1073741824}", -ERANGE,
                       "no partition 4294967297");
        expect_refusal("delete", "{\"partition\": 1, \"wipe\": true}", -EINVAL,
                       "delete takes no parameter \"wipe\"; it takes partition.");
        expect_refusal("set_flag", "{\"partition\": 1, \"flag\": \"boot\", \"value\": true, \"x\": 1}",
                       -EINVAL, "it takes partition, flag, value");
        expect_refusal("create", "{\"start_bytes\": 5368709120, \"size_bytes\": 1073741824}", -ERANGE,
                       "overlap partition 2");
        expect_refusal("create", "{\"start_bytes\": 10737418240, \"size_bytes\": 1073741824}", -ERANGE,
                       "does not fit");
        expect_refusal("create", "{\"start_bytes\": 6442450944, \"size_bytes\": 1000}", -ERANGE, "1 MiB boundaries");
        expect_refusal("create", "{\"start_bytes\": 6442450944, \"size_bytes\": 104857600, \"filesystem\": \"xfs\"}",
                       -ERANGE, "xfs needs at least 300.0 MiB");
        expect_refusal("create", "{\"start_bytes\": 6442450944, \"size_bytes\": 1073741824, \"filesystem\": \"zfs\"}",
                       -ERANGE, "not \"zfs\"");
        expect_refusal("create", "{\"start_bytes\": 6442450944, \"size_bytes\": 1073741824, \"type\": \"beos\"}",
                       -ERANGE, "not a partition type");
        expect_refusal("set_flag", "{\"partition\": 1, \"flag\": \"sparkly\", \"value\": true}", -ERANGE,
                       "not a flag of gpt tables");
        expect_refusal("set_flag", "{\"partition\": 1, \"flag\": \"lba\", \"value\": true}", -ERANGE, "not a flag");
        expect_refusal("move", "{\"partition\": 1, \"new_start_bytes\": 3221225472}", -ERANGE, "overlap partition 2");
        expect_refusal("format", "{\"partition\": 1}", -EINVAL, "needs \"filesystem\"");
        expect_refusal("explode", "{}", -EINVAL, "not an operation");
        expect_refusal("erase", "{}", -EINVAL, "discard, zero or secure");
        /* the node's own root is never erased under it */
        DiskInfo d = {};
        char *msg = NULL;
        load(&d);
        ASSERT_OK(free_and_strdup(&disk_info_partition(&d, 2)->mountpoint, "/"));
        ASSERT_INT(apply(&d, "erase", "{\"method\": \"zero\"}", &msg), -ERANGE);
        ASSERT_TRUE(strstr(msg, "Partition 2 is mounted at /; it cannot be erased"));
        ASSERT_INT(d.n_partitions, 2);
        free(msg);
        disk_info_done(&d);
        expect_refusal("erase", "{\"method\": \"shred\"}", -EINVAL, "discard, zero or secure");
        expect_refusal("erase", "{\"method\": \"zero\", \"passes\": 3}", -EINVAL, "it takes method");
}

static void test_msdos_and_blank(void) {
        DiskInfo d = {};
        char *msg = NULL;
        const char *bad;
        json_object *o = json_tokener_parse("{\"device\": \"/dev/loop7\", \"sizeBytes\": 1073741824, "
                                            "\"logicalSectorSize\": 512, \"physicalSectorSize\": 512, "
                                            "\"table\": \"none\", \"partitions\": []}");
        ASSERT_OK(disk_info_from_json(o, &d, &bad));
        json_object_put(o);
        ASSERT_INT(apply(&d, "delete", "{\"partition\": 1}", &msg), -ERANGE);
        free(msg);
        ASSERT_OK(apply(&d, "create", "{\"table\": \"msdos\", \"start_bytes\": 1048576, \"size_bytes\": "
                                      "104857600, \"type\": \"linux\"}", &msg));
        ASSERT_STR(d.table, "msdos");
        ASSERT_STR(disk_info_partition(&d, 1)->type, "0x83");
        for (int i = 2; i <= 4; i++) {
                char params[128];
                snprintf(params, sizeof(params), "{\"start_bytes\": %d, \"size_bytes\": 104857600}", i * 200 * 1048576);
                ASSERT_OK(apply(&d, "create", params, &msg));
        }
        ASSERT_INT(apply(&d, "create", "{\"start_bytes\": 943718400, \"size_bytes\": 104857600}", &msg), -ERANGE);
        ASSERT_TRUE(strstr(msg, "primary partitions only"));
        free(msg);
        ASSERT_INT(apply(&d, "set_flag", "{\"partition\": 1, \"flag\": \"bios_grub\", \"value\": true}", &msg), -ERANGE);
        free(msg);
        ASSERT_OK(apply(&d, "set_flag", "{\"partition\": 1, \"flag\": \"lba\", \"value\": true}", &msg));
        /* the last MiB of an msdos disk is usable: no backup table there */
        uint64_t first, end;
        disk_info_usable(&d, &first, &end);
        ASSERT_INT(end, 1073741824);
        disk_info_done(&d);
}

static void test_inventoried_names(void) {
        static const char *const disks[] = { "sda", "sdab", "vda", "xvdb", "nvme0n1", "nvme12n3", "mmcblk0" };
        static const char *const others[] = { "sda1", "nvme0n1p2", "mmcblk0p1", "mmcblk0boot0", "mmcblk0rpmb",
                                              "loop3", "dm-0", "md127", "sr0", "zram0", "" };
        for (size_t i = 0; i < ELEMENTSOF(disks); i++)
                ASSERT_TRUE(disk_name_is_inventoried(disks[i]));
        for (size_t i = 0; i < ELEMENTSOF(others); i++)
                ASSERT_TRUE(!disk_name_is_inventoried(others[i]));
        ASSERT_TRUE(!disk_name_is_inventoried(NULL));
}

int main(void) {
        test_parse();
        test_operations();
        test_refusals();
        test_msdos_and_blank();
        test_inventoried_names();
        return 0;
}
