/* SPDX-License-Identifier: MIT */
/* pureboot-controller: command line, then hand over to the Manager. */
#include <getopt.h>

#include "log.h"
#include "manager.h"

static void help(void) {
        printf("pureboot-controller [OPTIONS...]\n\n"
               "The PureBoot controller daemon on the system bus (%s).\n\n"
               "  -h --help              Show this help\n"
               "     --version           Show the version\n"
               "     --config=PATH       Configuration file (default /etc/pureboot/controller.conf)\n"
               "     --state-dir=PATH    State directory (default $STATE_DIRECTORY or /var/lib/pureboot)\n"
               "     --log-level=LEVEL   err, warning, notice, info or debug\n",
               PB_BUS_NAME);
}

int main(int argc, char *argv[]) {
        enum { ARG_VERSION = 0x100, ARG_CONFIG, ARG_STATE_DIR, ARG_LOG_LEVEL };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "config", required_argument, NULL, ARG_CONFIG },
                { "state-dir", required_argument, NULL, ARG_STATE_DIR },
                { "log-level", required_argument, NULL, ARG_LOG_LEVEL },
                {},
        };
        const char *config = "/etc/pureboot/controller.conf", *state_dir = NULL;
        _cleanup_(manager_freep) Manager *m = NULL;
        int c, r;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("pureboot-controller %s\n", PACKAGE_VERSION);
                        return 0;
                case ARG_CONFIG:
                        config = optarg;
                        break;
                case ARG_STATE_DIR:
                        state_dir = optarg;
                        break;
                case ARG_LOG_LEVEL:
                        r = log_parse_level(optarg);
                        if (r < 0) {
                                log_error("Unknown log level \"%s\".", optarg);
                                return 2;
                        }
                        log_set_max_level(r);
                        break;
                default:
                        return 2;
                }
        if (optind < argc) {
                log_error("This program takes no positional arguments.");
                return 2;
        }
        if (!state_dir) {
                /* systemd may pass several directories, colon-separated: ours is the first. */
                const char *e = getenv("STATE_DIRECTORY");
                static char first[4096];
                if (e) {
                        snprintf(first, sizeof(first), "%.*s", (int) strcspn(e, ":"), e);
                        state_dir = first;
                } else
                        state_dir = "/var/lib/pureboot";
        }

        /* Each step says what failed itself. */
        r = manager_new(config, state_dir, &m);
        if (r < 0)
                return log_error_errno(r, "Failed to set up: %m"), 1;
        r = manager_load(m);
        if (r < 0)
                return log_error_errno(r, "Failed to load the state from %s: %m", state_dir), 1;
        r = manager_connect_bus(m);
        if (r < 0)
                return log_error_errno(r, "Failed to connect to the system bus: %m"), 1;
        r = manager_run(m);
        if (r < 0)
                return log_error_errno(r, "pureboot-controller failed: %m"), 1;
        return 0;
}
