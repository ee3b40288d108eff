/* SPDX-License-Identifier: MIT */
/* pureboot-agent VERB [OPTIONS…]: settings from the kernel command line (pureboot.*), then from flags. */
#include <curl/curl.h>
#include <getopt.h>
#include <gnutls/gnutls.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"
#include "cmdline.h"
#include "ini.h"
#include "log.h"
#include "queue.h"
#include "util.h"

#define DEFAULT_STATE_DIR "/var/lib/pureboot-agent"

static void help(void) {
        printf("pureboot-agent VERB [OPTIONS...]\n\n"
               "Does a node's PureBoot job in the deploy image.\n\n"
               "Verbs:\n"
               "  clone-source             Serve this node's disk to the session's target\n"
               "  clone-target             Write this node's disk from the session's source\n"
               "  upload                   Staged source: write this node's disk to the session's staging area\n"
               "  download                 Staged target: write this node's disk from the staging area\n"
               "  partition                Report this node's disks and apply the partition operations\n"
               "                           queued on them, as the controller asks\n"
               "  scan                     Report this node's disks once (with --json: print them)\n"
               "  run                      The verb named by pureboot.mode= (as the units start it)\n\n"
               "Options (each defaults to the pureboot.* setting of the same name on the command line):\n"
               "  -h --help                Show this help\n"
               "     --cmdline-file=FILE   Read settings from FILE instead of /proc/cmdline\n"
               "     --mode=MODE           clone_source_direct, clone_target_direct, …\n"
               "     --session=ID --node=ID --token=TOKEN --device=PATH\n"
               "     --devices=DEV[,DEV...] The disks partition mode and scan look at (default: every\n"
               "                           sd*, nvme*, vd* and mmcblk* disk); loop devices are allowed here\n"
               "     --json                scan: print the disks as JSON instead of reporting them\n"
               "     --server=URL          The bridge, https://HOST:PORT\n"
               "     --ca=sha256:HEX       Fingerprint of the PureBoot CA the bridge must present\n"
               "     --state-dir=DIR       Key, certificate, journal and report queue (default " DEFAULT_STATE_DIR ")\n"
               "     --port=PORT           Where the source serves (default 9999)\n"
               "     --address=IP          The address the source reports (default: ours towards the bridge)\n"
               "     --max-rate=BYTES      The most the target reads, or a staged transfer moves, per second\n"
               "                           (default: no limit)\n"
               "     --ack-timeout=SEC     How long to wait for the controller to take the last reports\n"
               "                           (default: infinity)\n"
               "     --reboot              Reboot once the job is done and reported\n"
               "     --log-level=LEVEL     debug, info, notice, warning, err\n");
}

static int setting(char **field, const char *cmdline, const char *key) {
        _cleanup_free_ char *v = NULL;
        int r;
        if (*field)
                return 0; /* a flag said it */
        r = cmdline_get(cmdline, key, &v);
        if (r <= 0)
                return r;
        *field = TAKE_PTR(v);
        return 0;
}

static int parse_size(const char *s, uint64_t *ret) {
        char *end;
        uint64_t v, k = 1;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno || end == s)
                return -EINVAL;
        switch (*end) {
        case 'K': k = 1024; end++; break;
        case 'M': k = 1024 * 1024; end++; break;
        case 'G': k = UINT64_C(1024) * 1024 * 1024; end++; break;
        }
        if (*end)
                return -EINVAL;
        *ret = v * k;
        return 0;
}

static const char *verb_of_mode(const char *mode) {
        if (STR_IN_SET(mode, "clone_source_direct", "clone-source"))
                return "clone-source";
        if (STR_IN_SET(mode, "clone_target_direct", "clone-target"))
                return "clone-target";
        if (STR_IN_SET(mode, "clone_source_staged", "upload"))
                return "upload";
        if (STR_IN_SET(mode, "clone_target_staged", "download"))
                return "download";
        if (STR_IN_SET(mode, "partition", "scan"))
                return mode;
        return NULL;
}

/* DEV[,DEV...]: each a device path, as the device is named to the controller. */
static int parse_devices(const char *s, char ***ret) {
        _cleanup_strv_free_ char **l = strv_new(NULL);
        _cleanup_free_ char *copy = strdup(s);
        char *save = NULL;

        if (!l || !copy)
                return -ENOMEM;
        for (char *d = strtok_r(copy, ",", &save); d; d = strtok_r(NULL, ",", &save)) {
                if (!device_path_is_valid(d))
                        return log_error_errno(EINVAL, "%s is not a device path (/dev/...).", d);
                if (strv_extend(&l, d) < 0)
                        return -ENOMEM;
        }
        strv_free(*ret);
        *ret = TAKE_PTR(l);
        return 0;
}

static bool arg_json = false;

static int parse_argv(int argc, char *argv[], AgentSettings *s, const char **ret_verb) {
        enum {
                ARG_CMDLINE_FILE = 0x100, ARG_MODE, ARG_SESSION, ARG_NODE, ARG_TOKEN, ARG_DEVICE, ARG_SERVER, ARG_CA,
                ARG_STATE_DIR, ARG_PORT, ARG_ADDRESS, ARG_MAX_RATE, ARG_ACK_TIMEOUT, ARG_REBOOT, ARG_LOG_LEVEL,
                ARG_DEVICES, ARG_JSON,
        };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "cmdline-file", required_argument, NULL, ARG_CMDLINE_FILE },
                { "mode", required_argument, NULL, ARG_MODE },
                { "session", required_argument, NULL, ARG_SESSION },
                { "node", required_argument, NULL, ARG_NODE },
                { "token", required_argument, NULL, ARG_TOKEN },
                { "device", required_argument, NULL, ARG_DEVICE },
                { "devices", required_argument, NULL, ARG_DEVICES },
                { "json", no_argument, NULL, ARG_JSON },
                { "server", required_argument, NULL, ARG_SERVER },
                { "ca", required_argument, NULL, ARG_CA },
                { "state-dir", required_argument, NULL, ARG_STATE_DIR },
                { "port", required_argument, NULL, ARG_PORT },
                { "address", required_argument, NULL, ARG_ADDRESS },
                { "max-rate", required_argument, NULL, ARG_MAX_RATE },
                { "ack-timeout", required_argument, NULL, ARG_ACK_TIMEOUT },
                { "reboot", no_argument, NULL, ARG_REBOOT },
                { "log-level", required_argument, NULL, ARG_LOG_LEVEL },
                {},
        };
        _cleanup_free_ char *cmdline = NULL;
        const char *cmdline_file = "/proc/cmdline";
        uint64_t u;
        int c, r;

        s->port = 9999;
        s->ack_timeout_usec = USEC_INFINITY;
        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
                char **field = NULL;
                switch (c) {
                case 'h': help(); return 0;
                case ARG_CMDLINE_FILE: cmdline_file = optarg; break;
                case ARG_MODE: field = &s->mode; break;
                case ARG_SESSION: field = &s->session; break;
                case ARG_NODE: field = &s->node; break;
                case ARG_TOKEN: field = &s->token; break;
                case ARG_DEVICE: field = &s->device; break;
                case ARG_SERVER: field = &s->server; break;
                case ARG_CA: field = &s->ca; break;
                case ARG_STATE_DIR: field = &s->state_dir; break;
                case ARG_ADDRESS: field = &s->address; break;
                case ARG_PORT:
                        if (parse_uint64(optarg, &u) < 0 || u == 0 || u > 65535)
                                return log_error_errno(EINVAL, "--port=%s is not a port number.", optarg);
                        s->port = (uint16_t) u;
                        break;
                case ARG_MAX_RATE:
                        if (parse_size(optarg, &s->max_rate) < 0)
                                return log_error_errno(EINVAL, "--max-rate=%s is not a size (like 50M).", optarg);
                        break;
                case ARG_ACK_TIMEOUT:
                        if (streq(optarg, "infinity"))
                                s->ack_timeout_usec = USEC_INFINITY;
                        else if (parse_uint64(optarg, &u) < 0)
                                return log_error_errno(EINVAL, "--ack-timeout=%s is not a number of seconds.", optarg);
                        else
                                s->ack_timeout_usec = u * USEC_PER_SEC;
                        break;
                case ARG_REBOOT: s->reboot = true; break;
                case ARG_JSON: arg_json = true; break;
                case ARG_DEVICES:
                        r = parse_devices(optarg, &s->devices);
                        if (r < 0)
                                return r;
                        break;
                case ARG_LOG_LEVEL:
                        r = log_parse_level(optarg);
                        if (r < 0)
                                return log_error_errno(EINVAL, "Unknown log level %s.", optarg);
                        log_set_max_level(r);
                        break;
                default: return -EINVAL;
                }
                if (field && free_and_strdup(field, optarg) < 0)
                        return log_oom();
        }
        if (optind + 1 != argc)
                return log_error_errno(EINVAL, "Give one verb: clone-source, clone-target, upload, download, partition, scan "
                                       "or run "
                                       "(see --help).");

        r = cmdline_read(cmdline_file, &cmdline);
        if (r < 0)
                return log_error_errno(r, "Failed to read the kernel command line from %s: %m", cmdline_file);
        const struct {
                char **field;
                const char *key;
        } keys[] = {
                { &s->mode, "pureboot.mode" },     { &s->session, "pureboot.session" },
                { &s->node, "pureboot.node" },     { &s->token, "pureboot.token" },
                { &s->device, "pureboot.device" }, { &s->server, "pureboot.server" },
                { &s->ca, "pureboot.ca" },
        };
        for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
                r = setting(keys[i].field, cmdline, keys[i].key);
                if (r < 0)
                        return log_oom();
        }
        if (!s->devices) {
                _cleanup_free_ char *devices = NULL;
                r = cmdline_get(cmdline, "pureboot.devices", &devices);
                if (r < 0)
                        return log_oom();
                if (r > 0 && parse_devices(devices, &s->devices) < 0)
                        return -EINVAL;
        }
        if (!s->state_dir && !(s->state_dir = strdup(getenv("STATE_DIRECTORY") ?: DEFAULT_STATE_DIR)))
                return log_oom();

        const char *verb = argv[optind];
        if (streq(verb, "run")) {
                verb = s->mode ? verb_of_mode(s->mode) : NULL;
                if (!verb)
                        return log_error_errno(EINVAL, "pureboot.mode=%s is not a mode this agent runs.", strna(s->mode));
        } else if (!verb_of_mode(verb))
                return log_error_errno(EINVAL, "Unknown verb %s (see --help).", verb);
        bool clone = startswith(verb, "clone-") || STR_IN_SET(verb, "upload", "download");
        if (streq(verb, "scan") && arg_json) {
                *ret_verb = verb;
                return 1; /* nothing leaves the machine */
        }
        const struct {
                const char *value, *name;
        } required[] = {
                { clone ? s->session : "-", "pureboot.session= (--session)" },
                { s->server, "pureboot.server= (--server)" },
                { clone ? s->device : "-", "pureboot.device= (--device)" },
        };
        for (size_t i = 0; i < ELEMENTSOF(required); i++)
                if (isempty(required[i].value))
                        return log_error_errno(EINVAL, "%s needs %s.", verb, required[i].name);
        if (clone && !id_is_valid(s->session))
                return log_error_errno(EINVAL, "pureboot.session=%s is not a session id.", s->session);
        if (!startswith(s->server, "https://"))
                return log_error_errno(EINVAL, "pureboot.server=%s must be an https:// URL.", s->server);
        *ret_verb = verb;
        return 1;
}

static int on_signal(sd_event_source *es, const struct signalfd_siginfo *si, void *userdata) {
        Agent *a = userdata;
        (void) es;
        log_info("Received %s; what is queued stays in %s for the next run.", strsignal((int) si->ssi_signo),
                 a->settings.state_dir);
        agent_exit(a, AGENT_EXIT_FAILURE);
        return 0;
}

static void on_answered(Agent *a, const char *method, json_object *params, const char *error) {
        (void) params;
        if (!error)
                return;
        /* Progress refused (the session moved on) is harmless; a refused readiness or result is not. */
        if (streq(method, "ReportSourceReady")) {
                log_error("The controller refused our readiness (%s); is the session started?", error);
                agent_exit(a, AGENT_EXIT_FAILURE);
        } else if (streq(method, "ReportComplete") && a->exit_code == AGENT_EXIT_SUCCESS &&
                   session_status(a->watched) != CLONE_COMPLETED)
                /* Refused, and not because the session completed already (a resend after a restart). */
                a->exit_code = AGENT_EXIT_SESSION_FAILED;
}

int main(int argc, char *argv[]) {
        AgentSettings settings = {};
        _cleanup_free_ char *queue_dir = NULL;
        Agent *a = NULL;
        const char *verb = NULL;
        int r;

        r = parse_argv(argc, argv, &settings, &verb);
        if (r <= 0) {
                agent_settings_done(&settings);
                return r < 0 ? AGENT_EXIT_USAGE : AGENT_EXIT_SUCCESS;
        }
        if (streq(verb, "scan") && arg_json) {
                r = scan_print(settings.devices);
                agent_settings_done(&settings);
                return r < 0 ? AGENT_EXIT_FAILURE : AGENT_EXIT_SUCCESS;
        }
        umask(0077);
        if (gnutls_global_init() < 0 || curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
                return log_error("Failed to initialise TLS."), AGENT_EXIT_FAILURE;
        r = mkdir_p(settings.state_dir, 0700);
        if (r < 0)
                return log_error_errno(r, "Failed to create %s: %m", settings.state_dir), AGENT_EXIT_FAILURE;
        r = agent_new(&settings, &a);
        if (r < 0)
                return log_error_errno(r, "Failed to set up: %m"), AGENT_EXIT_FAILURE;

        sigset_t mask;
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        (void) sd_event_add_signal(a->event, NULL, SIGTERM, on_signal, a);
        (void) sd_event_add_signal(a->event, NULL, SIGINT, on_signal, a);

        if (asprintf(&queue_dir, "%s/queue", a->settings.state_dir) < 0)
                r = -ENOMEM;
        else
                r = queue_new(a, queue_dir, on_answered, &a->queue);
        if (r >= 0)
                r = streq(verb, "clone-source")   ? source_start(a)
                    : streq(verb, "clone-target") ? target_start(a)
                    : streq(verb, "upload")       ? staged_start(a, true)
                    : streq(verb, "download")     ? staged_start(a, false)
                                                  : partition_start(a, streq(verb, "scan"));
        if (r < 0) {
                log_error_errno(r, "Cannot start %s: %m", verb);
                a->exit_code = r == -EINVAL ? AGENT_EXIT_USAGE : AGENT_EXIT_FAILURE;
        } else {
                r = sd_event_loop(a->event);
                if (r < 0)
                        a->exit_code = AGENT_EXIT_FAILURE;
        }
        int code = a->exit_code;
        bool reboot = a->settings.reboot && code == AGENT_EXIT_SUCCESS;
        agent_free(a);
        curl_global_cleanup();
        gnutls_global_deinit();
        if (reboot) {
                log_info("Done; rebooting.");
                execlp("systemctl", "systemctl", "reboot", "--no-block", (char *) NULL);
                log_error_errno(errno, "Failed to run systemctl reboot: %m");
        }
        return code;
}
