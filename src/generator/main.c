/* SPDX-License-Identifier: MIT */
/* pureboot-generator NORMAL_DIR [EARLY_DIR LATE_DIR], run by systemd early at boot. */
#include "generator.h"
#include "log.h"
#include "util.h"

#ifndef UNIT_DIR
#define UNIT_DIR "/usr/lib/systemd/system"
#endif

int main(int argc, char *argv[]) {
        _cleanup_free_ char *cmdline = NULL;
        int r;

        if (argc != 2 && argc != 4) {
                log_error("Usage: %s NORMAL_DIR [EARLY_DIR LATE_DIR] (run by systemd as a generator).",
                          argc > 0 ? argv[0] : "pureboot-generator");
                return 1;
        }
        if (cmdline_read("/proc/cmdline", &cmdline) < 0)
                cmdline = strdup("");
        if (!cmdline)
                return log_oom(), 1;
        r = generator_run(cmdline, argv[1], UNIT_DIR);
        /* A generator that fails holds up nothing useful: report and let the boot go on. */
        return r < 0 ? 1 : 0;
}
