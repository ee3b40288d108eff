/* SPDX-License-Identifier: MIT */
/* What the deploy image boots into is decided on the kernel command line: pureboot.mode=clone_source_direct
 * and so on, as the bridge's boot answer writes it. This generator reads it and pulls in the one agent unit
 * for that mode. An unknown mode is logged and ignored: the image then boots without an agent rather than
 * failing. */
#include <sys/stat.h>

#include "generator.h"
#include "log.h"
#include "util.h"

bool generator_mode_is_valid(const char *mode) {
        return STR_IN_SET(mode, "clone_source_direct", "clone_target_direct", "clone_source_staged",
                          "clone_target_staged", "partition");
}

int generator_run(const char *cmdline, const char *dir, const char *unit_dir) {
        _cleanup_free_ char *mode = NULL, *wants = NULL, *link = NULL, *target = NULL;
        int r;

        r = cmdline_get(cmdline, "pureboot.mode", &mode);
        if (r < 0)
                return r;
        if (r == 0)
                return 0; /* not a PureBoot boot */
        if (!generator_mode_is_valid(mode)) {
                log_warning("pureboot.mode=%.64s is not a mode of this image (clone_source_direct, "
                            "clone_target_direct, clone_source_staged, clone_target_staged, partition); "
                            "starting no agent.",
                            mode);
                return 0;
        }
        if (asprintf(&wants, "%s/multi-user.target.wants", dir) < 0 ||
            asprintf(&link, "%s/pureboot-agent@%s.service", wants, mode) < 0 ||
            asprintf(&target, "%s/pureboot-agent@.service", unit_dir) < 0)
                return -ENOMEM;
        r = mkdir_p(wants, 0755);
        if (r < 0)
                return log_error_errno(r, "Failed to create %s: %m", wants);
        if (symlink(target, link) < 0 && errno != EEXIST)
                return log_error_errno(errno, "Failed to link %s: %m", link);
        log_debug("pureboot.mode=%s: pulling in pureboot-agent@%s.service.", mode, mode);
        return 1;
}
