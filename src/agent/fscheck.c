/* SPDX-License-Identifier: MIT */
/* Read-only filesystem checks with each filesystem's own tool, run the way its authors document for "look,
 * do not touch": e2fsck -fn, xfs_repair -n, btrfs check --readonly, ntfsfix -n, fsck.vfat -n, fsck.exfat -n.
 * Each says 0 for a filesystem without errors. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device.h"
#include "disk-model.h"
#include "fscheck.h"
#include "log.h"
#include "scan.h"
#include "tool.h"
#include "util.h"

typedef struct Checker {
        const char *filesystem;
        const char *argv[4]; /* the partition's node follows */
} Checker;

static const Checker checkers[] = {
        { "ext2", { "e2fsck", "-fn" } },
        { "ext3", { "e2fsck", "-fn" } },
        { "ext4", { "e2fsck", "-fn" } },
        { "xfs", { "xfs_repair", "-n" } },
        { "btrfs", { "btrfs", "check", "--readonly" } },
        { "ntfs", { "ntfsfix", "-n" } },
        { "vfat", { "fsck.vfat", "-n" } },
        { "exfat", { "fsck.exfat", "-n" } },
};

static const Checker *checker_of(const char *fs) {
        for (size_t i = 0; fs && i < ELEMENTSOF(checkers); i++)
                if (streq(checkers[i].filesystem, fs))
                        return &checkers[i];
        return NULL;
}

/* Runs c on node: 0 and a verdict if it found no error, 1 and one that says what it found (or why it could
 * not look), or -ENOMEM. */
static int check_one(const Checker *c, const PartitionInfo *p, const char *node, char **ret_verdict) {
        _cleanup_free_ char *out = NULL;
        char *argv[ELEMENTSOF(c->argv) + 2] = {}, command[128] = "";
        size_t n = 0;
        int r;

        for (; n < ELEMENTSOF(c->argv) && c->argv[n]; n++) {
                argv[n] = (char *) c->argv[n];
                strcat(strcat(command, c->argv[n]), " ");
        }
        argv[n] = (char *) node;
        r = tool_run(argv, &out);
        bool passed = r == 0;
        if (r == 0)
                r = asprintf(ret_verdict, "partition %u (%s): %sfound no errors", p->number, p->filesystem,
                             command);
        else if (r > 0)
                r = asprintf(ret_verdict, "partition %u (%s): %sfound errors (exit status %d): %s",
                             p->number, p->filesystem, command, r,
                             out ? tool_last_line(out) : "it said nothing");
        else
                r = asprintf(ret_verdict, "partition %u (%s): %scould not run (%s); install it", p->number,
                             p->filesystem, command, strerror(-r));
        if (r < 0)
                return -ENOMEM;
        return passed ? 0 : 1;
}

int fs_check_disk(const char *disk, char ***ret_verdicts) {
        _cleanup_(disk_info_done) DiskInfo info = {};
        char **verdicts = NULL;
        int r, failed = 0;

        /* After a resize udev re-reads the table, taking the partitions' nodes away for a moment: once it
         * is done, the lock keeps it from doing so again while we look. */
        _cleanup_close_ _unused_ int lock = device_lock_table(disk);
        r = scan_disk(disk, &info);
        if (r < 0)
                return r;
        if (info.n_partitions > 0 && (r = scan_tell_kernel(disk)) < 0) /* its nodes, as they are now */
                return r;
        for (size_t i = 0; i < info.n_partitions; i++) {
                const PartitionInfo *p = &info.partitions[i];
                const Checker *c = checker_of(p->filesystem);
                _cleanup_free_ char *node = NULL, *verdict = NULL;

                if (!c)
                        continue; /* swap, space without a filesystem, one without a checker */
                node = partition_node_wait(disk, p->number);
                if (!node) {
                        if (asprintf(&verdict,
                                     "partition %u (%s): not checked, the kernel has no device for it",
                                     p->number, p->filesystem) < 0)
                                r = -ENOMEM;
                        else
                                r = 1;
                } else
                        r = check_one(c, p, node, &verdict);
                if (r < 0 || strv_extend(&verdicts, verdict) < 0) {
                        strv_free(verdicts);
                        return -ENOMEM;
                }
                log_info("Filesystem check: %s.", verdict);
                failed += r;
        }
        *ret_verdicts = verdicts;
        return failed;
}
