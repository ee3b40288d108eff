/* SPDX-License-Identifier: MIT */
/* pureboot-agent VERB [OPTIONS…]: settings from the kernel command line (pureboot.*), then from flags. */
#include <curl/curl.h>
#include <getopt.h>
#include <gnutls/gnutls.h>
#include <net/if.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "address.h"
#include "agent.h"
#include "cmdline.h"
#include "image-tool.h"
#include "ini.h"
#include "log.h"
#include "queue.h"
#include "staged.h"
#include "util.h"

#define DEFAULT_STATE_DIR "/var/lib/pureboot-agent"

static void help(void) {
        printf("pureboot-agent VERB [OPTIONS...]\n\n"
               "Does a node's PureBoot job in the deploy image.\n\n"
               "Verbs:\n"
               "  clone-source             Serve this node's disk to the session's target\n"
               "  clone-target             Write this node's disk from the session's source\n"
               "  upload                   Staged source: write this node's disk to the session's staging "
               "area\n"
               "  download                 Staged target: write this node's disk from the staging area\n"
               "  partition                Report this node's disks and apply the partition operations\n"
               "                           queued on them, as the controller asks\n"
               "  scan                     Report this node's disks once (with --json: print them)\n"
               "  verify-image, export-image, restore-image, upload-image\n"
               "                           The image library's work on the controller's host, which runs\n"
               "                           them: a request (JSON) on stdin, progress and the verdict as\n"
               "                           JSON lines on stdout (Image.Verify, Image.Export, ImportImage)\n"
               "  run                      The verb named by pureboot.mode= (as the units start it)\n\n"
               "Options (each but --help, --cmdline-file and --json defaults to the pureboot.* setting of\n"
               "the same name on the kernel command line: pureboot.port=9998, pureboot.reboot):\n"
               "  -h --help                Show this help\n"
               "     --cmdline-file=FILE   Read settings from FILE instead of /proc/cmdline\n"
               "     --mode=MODE           clone_source_direct, clone_target_direct, …\n"
               "     --session=ID --node=ID --token=TOKEN --device=PATH\n"
               "     --devices=DEV[,DEV...] The disks partition mode and scan look at (default: every\n"
               "                           sd*, nvme*, vd* and mmcblk* disk); loop devices are allowed "
               "here\n"
               "     --json                scan: print the disks as JSON instead of reporting them\n"
               "     --used-map            scan --json: print what of each disk its filesystems do not use\n"
               "     --server=URL          The bridge, https://HOST:PORT\n"
               "     --ca=sha256:HEX       Fingerprint of the PureBoot CA the bridge must present\n"
               "     --state-dir=DIR       Key, certificate, journal and report queue "
               "(default " DEFAULT_STATE_DIR ")\n"
               "     --port=PORT           Where the source serves (default 9999)\n"
               "     --address=IP          The address the source serves on and reports (default: ours\n"
               "                           towards the bridge, on every address)\n"
               "     --data-interface=NAME Serve on this interface's address instead (a data network)\n"
               "     --max-rate=BYTES      The most the target reads, or a staged transfer moves, per "
               "second\n"
               "                           (default: no limit)\n"
               "     --ack-timeout=SEC     How long to wait for the controller to take the last reports\n"
               "                           (default: infinity)\n"
               "     --peer-timeout=SEC    How long the target tries to reach and verify its source before\n"
               "                           it reports why it cannot (default: 120)\n"
               "     --peer-failure=fail|wait  Then fail the session, or go on trying and let the session\n"
               "                           show the problem (default: fail)\n"
               "     --reboot              Reboot once the job is done and reported\n"
               "     --log-level=LEVEL     debug, info, notice, warning, err\n");
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
static int parse_devices(const char *s, const char *origin, char ***ret) {
        _cleanup_strv_free_ char **l = strv_new(NULL);
        _cleanup_free_ char *copy = strdup(s);
        char *save = NULL;

        if (!l || !copy)
                return -ENOMEM;
        for (char *d = strtok_r(copy, ",", &save); d; d = strtok_r(NULL, ",", &save)) {
                if (!device_path_is_valid(d))
                        return log_error_errno(EINVAL, "%s=%s: %s is not a device path (/dev/...).", origin,
                                               s, d);
                if (strv_extend(&l, d) < 0)
                        return -ENOMEM;
        }
        strv_free(*ret);
        *ret = TAKE_PTR(l);
        return 0;
}

static bool arg_json = false;

/* One setting of the agent: --NAME on its command line, else pureboot.NAME= on the kernel command line
 * (unless from_cmdline is false). parse stores value (NULL for a flag given bare); origin is "--NAME" or
 * "pureboot.NAME", for the messages. */
typedef struct Option {
        const char *name;
        bool flag; /* takes no value: --NAME, or pureboot.NAME (=yes or =no on the kernel command line) */
        bool from_cmdline;
        int (*parse)(const struct Option *o, AgentSettings *s, const char *value, const char *origin);
        /* parse_string: the char * in AgentSettings, and what a value must pass (NULL: any) and the
         * words that refuse it */
        size_t offset;
        bool (*valid)(const char *value);
        const char *refusal;
} Option;

static int parse_string(const Option *o, AgentSettings *s, const char *value, const char *origin) {
        if (o->valid && (!value || !o->valid(value)))
                return log_error_errno(EINVAL, "%s=%s %s.", origin, strempty(value), o->refusal);
        if (isempty(value))
                return log_error_errno(EINVAL, "%s= needs a value.", origin);
        return free_and_strdup((char **) ((uint8_t *) s + o->offset), value) < 0 ? log_oom() : 0;
}

static bool is_absolute(const char *v) {
        return v[0] == '/';
}

static bool is_server(const char *v) {
        return startswith(v, "https://");
}

static bool is_ca(const char *v) {
        const char *hex = startswith(v, "sha256:");
        return hex && strlen(hex) == 64 && strspn(hex, "0123456789abcdefABCDEF") == 64;
}

static bool is_mode(const char *v) {
        return verb_of_mode(v);
}

static int parse_devices_option(const Option *o, AgentSettings *s, const char *value, const char *origin) {
        (void) o;
        if (isempty(value))
                return log_error_errno(EINVAL, "%s= needs a value.", origin);
        return parse_devices(value, origin, &s->devices);
}

static int parse_port(const Option *o, AgentSettings *s, const char *value, const char *origin) {
        uint64_t u;
        (void) o;
        if (!value || parse_uint64(value, &u) < 0 || u == 0 || u > 65535)
                return log_error_errno(EINVAL, "%s=%s is not a port number.", origin, strempty(value));
        s->port = (uint16_t) u;
        return 0;
}

static int parse_max_rate(const Option *o, AgentSettings *s, const char *value, const char *origin) {
        (void) o;
        if (!value || parse_size(value, &s->max_rate) < 0)
                return log_error_errno(EINVAL, "%s=%s is not a size (like 50M).", origin, strempty(value));
        return 0;
}

static int parse_ack_timeout(const Option *o, AgentSettings *s, const char *value, const char *origin) {
        uint64_t u;
        (void) o;
        if (streq_ptr(value, "infinity"))
                s->ack_timeout_usec = USEC_INFINITY;
        else if (!value || parse_uint64(value, &u) < 0)
                return log_error_errno(EINVAL, "%s=%s is not a number of seconds or infinity.", origin,
                                       strempty(value));
        else
                s->ack_timeout_usec = u * USEC_PER_SEC;
        return 0;
}

static int parse_peer_timeout(const Option *o, AgentSettings *s, const char *value, const char *origin) {
        uint64_t u;
        (void) o;
        if (!value || parse_uint64(value, &u) < 0 || u == 0 || u > 7 * 24 * 3600)
                return log_error_errno(EINVAL, "%s=%s is not a number of seconds (1 to 604800).", origin,
                                       strempty(value));
        s->peer_timeout_usec = u * USEC_PER_SEC;
        return 0;
}

static int parse_peer_failure(const Option *o, AgentSettings *s, const char *value, const char *origin) {
        (void) o;
        if (!STR_IN_SET(strempty(value), "fail", "wait"))
                return log_error_errno(EINVAL, "%s=%s is not fail or wait.", origin, strempty(value));
        s->peer_wait = streq(value, "wait");
        return 0;
}

static int parse_reboot(const Option *o, AgentSettings *s, const char *value, const char *origin) {
        (void) o;
        if (isempty(value) || STR_IN_SET(value, "yes", "1", "true"))
                s->reboot = true;
        else if (STR_IN_SET(value, "no", "0", "false"))
                s->reboot = false;
        else
                return log_error_errno(EINVAL, "%s=%s is not yes or no.", origin, value);
        return 0;
}

static int parse_log_level(const Option *o, AgentSettings *s, const char *value, const char *origin) {
        int level = value ? log_parse_level(value) : -EINVAL;
        (void) o, (void) s;
        if (level < 0)
                return log_error_errno(EINVAL,
                                       "%s=%s is not a log level (debug, info, notice, warning, err).",
                                       origin, strempty(value));
        log_set_max_level(level);
        return 0;
}

static int parse_json(const Option *o, AgentSettings *s, const char *value, const char *origin) {
        (void) o, (void) s, (void) value, (void) origin;
        arg_json = true;
        return 0;
}

static bool arg_used_map = false;

static int parse_used_map(const Option *o, AgentSettings *s, const char *value, const char *origin) {
        (void) o, (void) s, (void) value, (void) origin;
        arg_used_map = true;
        return 0;
}

#define STRING(n, f, check, words)                                                                          \
        { n, false, true, parse_string, offsetof(AgentSettings, f), check, words }
static const Option agent_options[] = {
        STRING("mode", mode, is_mode, "is not a mode this agent runs"),
        STRING("session", session, id_is_valid, "is not an id (32 hex digits)"),
        STRING("node", node, NULL, NULL),
        STRING("token", token, NULL, NULL),
        STRING("device", device, device_path_is_valid, "is not a device path (/dev/...)"),
        { "devices", false, true, parse_devices_option },
        STRING("server", server, is_server, "must be an https:// URL"),
        STRING("ca", ca, is_ca, "is not a CA fingerprint (sha256: and 64 hex digits)"),
        STRING("state-dir", state_dir, is_absolute, "is not an absolute path"),
        { "port", false, true, parse_port },
        STRING("address", address, ip_address_is_valid, "is not an IP address"),
        STRING("data-interface", data_interface, interface_name_is_valid, "is not a network interface name"),
        { "max-rate", false, true, parse_max_rate },
        { "ack-timeout", false, true, parse_ack_timeout },
        { "peer-timeout", false, true, parse_peer_timeout },
        { "peer-failure", false, true, parse_peer_failure },
        { "reboot", true, true, parse_reboot },
        { "log-level", false, true, parse_log_level },
        /* What scan prints: a question for the command line, not a setting of the node. */
        { "json", true, false, parse_json },
        { "used-map", true, false, parse_used_map },
};

static int parse_argv(int argc, char *argv[], AgentSettings *s, const char **ret_verb) {
        enum { ARG_CMDLINE_FILE = 0x100, ARG_FIRST_OPTION };
        struct option options[ELEMENTSOF(agent_options) + 3] = {
                { "help", no_argument, NULL, 'h' },
                { "cmdline-file", required_argument, NULL, ARG_CMDLINE_FILE },
        };
        bool given[ELEMENTSOF(agent_options)] = {};
        _cleanup_free_ char *cmdline = NULL;
        const char *cmdline_file = "/proc/cmdline";
        int c, r;

        for (size_t i = 0; i < ELEMENTSOF(agent_options); i++)
                options[2 + i] = (struct option){ agent_options[i].name,
                                                  agent_options[i].flag ? no_argument : required_argument,
                                                  NULL, ARG_FIRST_OPTION + (int) i };
        s->port = 9999;
        s->ack_timeout_usec = USEC_INFINITY;
        s->peer_timeout_usec = 120 * USEC_PER_SEC;
        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
                if (c == 'h') {
                        help();
                        return 0;
                }
                if (c == ARG_CMDLINE_FILE) {
                        cmdline_file = optarg;
                        continue;
                }
                if (c < ARG_FIRST_OPTION || c >= ARG_FIRST_OPTION + (int) ELEMENTSOF(agent_options))
                        return -EINVAL;
                const Option *o = &agent_options[c - ARG_FIRST_OPTION];
                _cleanup_free_ char *origin = NULL;
                if (asprintf(&origin, "--%s", o->name) < 0)
                        return log_oom();
                r = o->parse(o, s, o->flag ? NULL : optarg, origin);
                if (r < 0)
                        return r;
                given[c - ARG_FIRST_OPTION] = true;
        }
        if (optind + 1 != argc)
                return log_error_errno(EINVAL, "Give one verb: clone-source, clone-target, upload, download, partition, scan "
                                       "or run "
                                       "(see --help).");

        /* What no flag said, the kernel command line may: pureboot.NAME=, as the workflows boot it. */
        r = cmdline_read(cmdline_file, &cmdline);
        if (r < 0)
                return log_error_errno(r, "Failed to read the kernel command line from %s: %m", cmdline_file);
        for (size_t i = 0; i < ELEMENTSOF(agent_options); i++) {
                const Option *o = &agent_options[i];
                _cleanup_free_ char *key = NULL, *value = NULL;
                if (given[i] || !o->from_cmdline)
                        continue;
                if (asprintf(&key, "pureboot.%s", o->name) < 0)
                        return log_oom();
                r = cmdline_get(cmdline, key, &value);
                if (r < 0)
                        return log_oom();
                if (r == 0)
                        continue;
                r = o->parse(o, s, value, key);
                if (r < 0)
                        return r;
        }
        if (s->address && s->data_interface)
                return log_error_errno(EINVAL,
                                       "Give the source's address (pureboot.address=) or its interface "
                                       "(pureboot.data-interface=), not both.");
        if (!s->state_dir && !(s->state_dir = strdup(getenv("STATE_DIRECTORY") ?: DEFAULT_STATE_DIR)))
                return log_oom();

        const char *verb = argv[optind];
        if (streq(verb, "run")) {
                verb = s->mode ? verb_of_mode(s->mode) : NULL;
                if (!verb)
                        return log_error_errno(EINVAL, "run needs pureboot.mode= (--mode).");
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

        /* Offline: nothing of the node's settings, nothing reported. */
        if (argc == 2 && image_tool_is_verb(argv[1]))
                return image_tool_run(argv[1]);
        r = parse_argv(argc, argv, &settings, &verb);
        if (r <= 0) {
                agent_settings_done(&settings);
                return r < 0 ? AGENT_EXIT_USAGE : AGENT_EXIT_SUCCESS;
        }
        if (streq(verb, "scan") && arg_json) {
                r = scan_print(settings.devices, arg_used_map);
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
                r = streq(verb, "clone-source")                    ? source_start(a)
                    : STR_IN_SET(verb, "clone-target", "download") ? target_start(a) /* upstream as told */
                    : streq(verb, "upload")                        ? staged_start(a)
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
