/* SPDX-License-Identifier: MIT */
/* purebootctl: the admin command line, a pure D-Bus client of org.pureboot.Controller1. This file holds
 * option parsing, verb dispatch, the pager and polkit agent, and the helpers every verb file uses. */
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>

#include "ctl.h"
#include "format.h"
#include "json-util.h"
#include "log.h"
#include "util.h"

Args arg;
static pid_t pager_pid = -1, agent_pid = -1;

int ctl_parse_size(const char *s, uint64_t *ret) {
        char *end;
        uint64_t n, k = 1;
        errno = 0;
        n = strtoull(s, &end, 10);
        switch (*end) {
        case 'K': k = UINT64_C(1) << 10; end++; break;
        case 'M': k = UINT64_C(1) << 20; end++; break;
        case 'G': k = UINT64_C(1) << 30; end++; break;
        case 'T': k = UINT64_C(1) << 40; end++; break;
        }
        if (errno || *end || end == s || *s == '-' || n > UINT64_MAX / k)
                return -EINVAL;
        *ret = n * k;
        return 0;
}

int ctl_error(const sd_bus_error *error, int r, const char *what) {
        const char *name = error && error->name ? error->name : "";

        if (error && error->message)
                log_error("Failed to %s: %s", what, error->message);
        else
                log_error_errno(r, "Failed to %s: %m", what);
        if (strstr(name, ".Error.NoSuch") || streq(name, SD_BUS_ERROR_UNKNOWN_OBJECT))
                return EXIT_NOT_FOUND;
        if (strstr(name, "NotAuthorized") || streq(name, SD_BUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED) ||
            streq(name, SD_BUS_ERROR_ACCESS_DENIED))
                return EXIT_NOT_AUTHORIZED;
        if (STR_IN_SET(name, SD_BUS_ERROR_SERVICE_UNKNOWN, SD_BUS_ERROR_NAME_HAS_NO_OWNER,
                       SD_BUS_ERROR_NO_REPLY, SD_BUS_ERROR_DISCONNECTED)) {
                log_error("Is the controller running? Start it with: systemctl start "
                          "pureboot-controller.service");
                return EXIT_UNAVAILABLE;
        }
        return EXIT_FAILED;
}

int ctl_new_call(sd_bus *bus, const char *path, const char *iface, const char *method,
                 sd_bus_message **ret) {
        int r = sd_bus_message_new_method_call(bus, ret, PB_BUS_NAME, path, iface, method);
        if (r >= 0)
                r = sd_bus_message_set_allow_interactive_authorization(*ret, !arg.no_ask_password);
        return r;
}

int ctl_call(sd_bus *bus, sd_bus_message *m, sd_bus_message **reply, const char *what) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        /* Long enough for a person to type a password at the polkit agent. */
        int r = sd_bus_call(bus, m, arg.no_ask_password ? 0 : 300 * USEC_PER_SEC, &error, reply);
        return r < 0 ? -ctl_error(&error, r, what) : 0;
}

int ctl_call_print_id(sd_bus *bus, sd_bus_message *m, const char *what) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *path;
        int r = ctl_call(bus, m, &reply, what);
        if (r < 0)
                return -r;
        if (sd_bus_message_read(reply, "o", &path) < 0)
                return EXIT_FAILED;
        printf("%s\n", strrchr(path, '/') + 1);
        return EXIT_OK;
}

int ctl_resolve(sd_bus *bus, const char *method, const char *name, char **ret_path) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        const char *path;
        int r;

        r = ctl_new_call(bus, PB_ROOT_PATH, PB_IFACE("Manager"), method, &m);
        if (r >= 0)
                r = sd_bus_message_append(m, "s", name);
        if (r < 0)
                return -EXIT_FAILED;
        r = ctl_call(bus, m, &reply, "look it up");
        if (r < 0)
                return r;
        r = sd_bus_message_read(reply, "o", &path);
        if (r < 0 || !(*ret_path = strdup(path)))
                return -EXIT_FAILED;
        return 0;
}

bool ctl_require(const char *value, const char *option, const char *verb) {
        if (!isempty(value))
                return true;
        log_error("%s needs %s.", verb, option);
        return false;
}

int ctl_create_new(const char *file) {
        int fd = open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0644);
        if (fd < 0)
                return log_error_errno(errno,
                                       errno == EEXIST ? "%s exists; remove it or name another file."
                                                       : "Cannot create %s: %m",
                                       file);
        return fd;
}

void ctl_print_json(json_object *o) {
        puts(json_object_to_json_string_ext(o, arg.json == JSON_PRETTY
                                                       ? JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED
                                                       : JSON_C_TO_STRING_PLAIN));
}

/* A D-Bus value at the current position as JSON. */
static int read_json(sd_bus_message *m, json_object **ret) {
        const char *contents;
        char type;
        int r = sd_bus_message_peek_type(m, &type, &contents);
        if (r <= 0)
                return r; /* 0: the end of the container */

        if (type == 'v' || type == 'r' || type == 'e') {
                r = sd_bus_message_enter_container(m, type, contents);
                if (r < 0)
                        return r;
                if (type == 'v') {
                        r = read_json(m, ret);
                } else {
                        json_object *a = json_object_new_array();
                        json_object *v;
                        while ((r = read_json(m, &v)) > 0)
                                json_object_array_add(a, v);
                        *ret = a;
                }
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(m);
                return r < 0 ? r : 1;
        }
        if (type == 'a') {
                bool dict = contents[0] == '{';
                json_object *o = dict ? json_object_new_object() : json_object_new_array();
                char entry[64] = "";
                if (dict) /* "{sv}" → "sv" */
                        snprintf(entry, sizeof(entry), "%.*s", (int) strlen(contents) - 2, contents + 1);
                r = sd_bus_message_enter_container(m, 'a', contents);
                while (r >= 0) {
                        json_object *v = NULL;
                        const char *key;
                        if (dict) {
                                r = sd_bus_message_enter_container(m, 'e', entry);
                                if (r <= 0)
                                        break;
                                r = sd_bus_message_read_basic(m, 's', &key);
                                if (r >= 0)
                                        r = read_json(m, &v);
                                if (r >= 0)
                                        json_object_object_add(o, key, v);
                                if (r >= 0)
                                        r = sd_bus_message_exit_container(m);
                        } else {
                                r = read_json(m, &v);
                                if (r <= 0)
                                        break;
                                json_object_array_add(o, v);
                        }
                }
                if (r < 0) {
                        json_object_put(o);
                        return r;
                }
                *ret = o;
                r = sd_bus_message_exit_container(m);
                return r < 0 ? r : 1;
        }

        union {
                uint64_t t;
                int64_t x;
                uint32_t u;
                int32_t i;
                uint16_t q;
                int16_t n;
                uint8_t y;
                int b;
                double d;
                const char *s;
        } v;
        r = sd_bus_message_read_basic(m, type, &v);
        if (r < 0)
                return r;
        switch (type) {
        case 's':
        case 'o':
        case 'g':
                *ret = json_object_new_string(v.s);
                break;
        case 't':
                *ret = json_object_new_uint64(v.t);
                break;
        case 'x':
                *ret = json_object_new_int64(v.x);
                break;
        case 'u':
                *ret = json_object_new_int64(v.u);
                break;
        case 'i':
                *ret = json_object_new_int64(v.i);
                break;
        case 'q':
                *ret = json_object_new_int64(v.q);
                break;
        case 'n':
                *ret = json_object_new_int64(v.n);
                break;
        case 'y':
                *ret = json_object_new_int64(v.y);
                break;
        case 'b':
                *ret = json_object_new_boolean(v.b);
                break;
        case 'd':
                *ret = json_object_new_double(v.d);
                break;
        default:
                return -EINVAL;
        }
        return 1;
}

/* A node's Hardware (the node protocol's JSON) for people: the machine, then a line per disk and interface.
 */
static void print_hardware(const char *name, json_object *hw, int width) {
        char size[FORMAT_BYTES_MAX];
        const char *vendor = json_get_string(hw, "vendor"), *product = json_get_string(hw, "product");
        printf("%*s: %s%s%s%s%s\n", width, name, strempty(vendor), vendor && product ? " " : "",
               product
                       ?: vendor ? ""
                                 : "a machine without DMI",
               json_get_string(hw, "serial") ? ", serial " : "", strempty(json_get_string(hw, "serial")));
        if (json_get_string(hw, "uuid"))
                printf("%*s  UUID %s\n", width, "", json_get_string(hw, "uuid"));
        printf("%*s  firmware %s%s%s%s\n", width, "", strna(json_get_string(hw, "firmware")),
               json_get_string(hw, "firmwareVersion") ? " " : "",
               strempty(json_get_string(hw, "firmwareVersion")),
               !json_object_object_get_ex(hw, "secureBoot", NULL) ? ""
               : json_get_bool(hw, "secureBoot")                  ? ", Secure Boot on"
                                                                  : ", Secure Boot off");
        printf("%*s  %s: %" PRIi64 " cores, %" PRIi64 " threads; memory %s\n", width, "",
               strna(json_get_string(hw, "cpuModel")), json_get_int(hw, "cpuCores"),
               json_get_int(hw, "cpuThreads"),
               format_bytes(size, (uint64_t) json_get_int(hw, "memoryBytes")));
        json_object *disks = json_object_object_get(hw, "disks"),
                    *ifaces = json_object_object_get(hw, "interfaces");
        for (size_t i = 0; i < json_object_array_length(disks); i++) {
                json_object *d = json_object_array_get_idx(disks, i);
                printf("%*s  disk %s: %s, %" PRIi64 "/%" PRIi64 "-byte sectors, %s, %s%s%s%s%s\n", width, "",
                       strna(json_get_string(d, "device")),
                       format_bytes(size, (uint64_t) json_get_int(d, "sizeBytes")),
                       json_get_int(d, "logicalSectorSize"), json_get_int(d, "physicalSectorSize"),
                       json_get_bool(d, "rotational") ? "rotational" : "solid state",
                       strna(json_get_string(d, "transport")), json_get_string(d, "model") ? ", " : "",
                       strempty(json_get_string(d, "model")),
                       json_get_string(d, "serial") ? ", serial " : "",
                       strempty(json_get_string(d, "serial")));
        }
        for (size_t i = 0; i < json_object_array_length(ifaces); i++) {
                json_object *n = json_object_array_get_idx(ifaces, i);
                printf("%*s  interface %s: %s, %s, ", width, "", strna(json_get_string(n, "name")),
                       strna(json_get_string(n, "mac")), strna(json_get_string(n, "driver")));
                if (json_get_int(n, "speedMbps") > 0)
                        printf("%" PRIi64 " Mb/s, ", json_get_int(n, "speedMbps"));
                printf("link %s\n", json_get_bool(n, "link") ? "up" : "down");
        }
}

/* One property for people: times, sizes and rates by their name, multi-line PEM indented. */
static void print_property(const char *name, json_object *v, int width) {
        char buf[FORMAT_TIMESTAMP_MAX];
        const char *s = NULL;

        if (streq(name, "Hardware") && !isempty(json_object_get_string(v))) {
                _cleanup_(json_object_unrefp) json_object *hw =
                        json_tokener_parse(json_object_get_string(v));
                if (hw)
                        return print_hardware(name, hw, width);
        }

        if (json_object_is_type(v, json_type_int)) {
                uint64_t u = json_object_get_uint64(v);
                if (endswith(name, "At") || STR_IN_SET(name, "LastSeen", "NotAfter"))
                        s = format_timestamp(buf, u);
                else if (startswith(name, "Bytes") || endswith(name, "Bytes"))
                        s = format_bytes(buf, u);
                else if (streq(name, "TransferRate")) {
                        format_bytes(buf, u);
                        strcat(buf, "/s");
                        s = buf;
                }
        } else if (json_object_is_type(v, json_type_double)) {
                snprintf(buf, sizeof(buf), "%.1f%%", json_object_get_double(v) * 100.0);
                s = buf;
        } else if (json_object_is_type(v, json_type_boolean))
                s = json_object_get_boolean(v) ? "yes" : "no";
        else if (json_object_is_type(v, json_type_array) && json_object_array_length(v) == 0)
                s = "-";
        else if (json_object_is_type(v, json_type_array)) {
                /* One element a line: object paths, or a struct's fields as JSON. */
                for (size_t i = 0; i < json_object_array_length(v); i++)
                        printf("%*s%s %s\n", width, i == 0 ? name : "", i == 0 ? ":" : " ",
                               json_object_to_json_string_ext(json_object_array_get_idx(v, i), JSON_C_TO_STRING_PLAIN));
                return;
        } else if (json_object_is_type(v, json_type_object)) {
                printf("%*s:", width, name);
                json_object_object_foreach (v, key, value)
                        printf(" %s=%s", key, json_object_get_string(value));
                printf("\n");
                return;
        }
        if (!s)
                s = json_object_get_string(v);
        if (isempty(s))
                s = "-";
        if (strchr(s, '\n')) {
                printf("%*s:\n", width, name);
                for (const char *p = s; *p;) {
                        size_t n = strcspn(p, "\n");
                        printf("%*s  %.*s\n", width, "", (int) n, p);
                        p += n + (p[n] == '\n');
                }
                return;
        }
        printf("%*s: %s\n", width, name, s);
}

int ctl_show_object(sd_bus *bus, const char *path, const char *iface) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        json_object *all = NULL;
        int r, width = 0;

        r = sd_bus_call_method(bus, PB_BUS_NAME, path, "org.freedesktop.DBus.Properties", "GetAll", &error,
                               &reply, "s", iface);
        if (r < 0)
                return ctl_error(&error, r, "read its properties");
        r = read_json(reply, &all);
        if (r <= 0) {
                r = r < 0 ? r : -ENXIO;
                log_error_errno(r, "Failed to parse the properties: %m");
                return EXIT_FAILED;
        }
        if (arg.json != JSON_OFF) {
                ctl_print_json(all);
                json_object_put(all);
                return EXIT_OK;
        }
        json_object_object_foreach (all, k, v0) {
                (void) v0;
                width = MAX(width, (int) strlen(k));
        }
        json_object_object_foreach (all, key, value)
                print_property(key, value, width);
        json_object_put(all);
        return EXIT_OK;
}

/* less, when stdout is a terminal, as systemd's tools do. */
void ctl_pager_open(void) {
        int fd[2];
        if (arg.no_pager || arg.json != JSON_OFF || !isatty(STDOUT_FILENO) || pipe2(fd, O_CLOEXEC) < 0)
                return;
        pager_pid = fork();
        if (pager_pid < 0) {
                close(fd[0]);
                close(fd[1]);
                return;
        }
        if (pager_pid == 0) {
                dup2(fd[0], STDIN_FILENO);
                setenv("LESS", "FRSXMK", 0);
                execlp(getenv("PAGER") ?: "less", getenv("PAGER") ?: "less", NULL);
                execlp("cat", "cat", NULL);
                _exit(127);
        }
        dup2(fd[1], STDOUT_FILENO);
        close(fd[0]);
        close(fd[1]);
}

static void pager_close(void) {
        if (pager_pid <= 0)
                return;
        fflush(stdout);
        fclose(stdout);
        (void) waitpid(pager_pid, NULL, 0);
}

/* pkttyagent answers polkit's password questions on our terminal. */
static void polkit_agent_open(void) {
        char notify[16], pid[16];
        int fd[2];

        if (arg.no_ask_password || !isatty(STDIN_FILENO) || geteuid() == 0 || pipe2(fd, 0) < 0)
                return;
        snprintf(notify, sizeof(notify), "%d", fd[1]);
        snprintf(pid, sizeof(pid), "%d", getpid());
        agent_pid = fork();
        if (agent_pid == 0) {
                close(fd[0]);
                execl("/usr/bin/pkttyagent", "pkttyagent", "--notify-fd", notify, "--fallback", "--process",
                      pid, NULL);
                _exit(127);
        }
        close(fd[1]);
        if (agent_pid > 0) {
                struct pollfd p = { .fd = fd[0], .events = POLLIN };
                (void) poll(&p, 1, 5000); /* readable or closed once the agent is registered or gone */
        }
        close(fd[0]);
}

static void polkit_agent_close(void) {
        if (agent_pid <= 0)
                return;
        kill(agent_pid, SIGTERM);
        (void) waitpid(agent_pid, NULL, 0);
}

static void help(void) {
        printf("purebootctl [OPTIONS...] COMMAND ...\n\n"
               "Manage PureBoot nodes, clone sessions, storage and the CA.\n\n"
               "Nodes:\n"
               "  node add --mac MAC --hostname NAME [--arch ARCH] [--serial SERIAL]\n"
               "  node list | node show NODE | node remove NODE\n"
               "  node set-mode NODE local|partition   What its next network boot does\n"
               "  node token NODE                      A node enrolment token for a manual boot\n"
               "  node scan NODE                       Ask a node in partition mode to scan again\n"
               "  node power NODE on|off|cycle|status|netboot\n"
               "                                       Switch it, through its power driver (netboot: its\n"
               "                                       next boot from the network, then a cycle)\n"
               "  node set-power NODE --driver none|manual|wol|ipmi|redfish [KEY=VALUE...]\n"
               "                                       How the controller switches it. wol (on only):\n"
               "                                       broadcast=IP|interface=NAME [port=N]; ipmi:\n"
               "                                       address=HOST user=NAME password-file=FILE [port=N];\n"
               "                                       redfish: the same (port 443) [system=PATH]\n"
               "                                       [ca-file=PEM | verify=no]\n"
               "Disks and partitions (of a node in partition mode):\n"
               "  disk list NODE | disk show NODE DEV  Its disks; one with its partitions and a map\n"
               "  disk erase NODE DEV --method discard|zero|secure [--follow]\n"
               "                                       Erase every byte, then check samples read back\n"
               "  partition queue NODE DEV OP KEY=VALUE...\n"
               "      resize partition=N new_size_bytes=SIZE | create start_bytes=SIZE size_bytes=SIZE\n"
               "      [filesystem=FS] [label=L] [type=linux|efi|swap|msdata|fat32|lvm|raid|bios-boot|home]\n"
               "      [table=gpt|msdos] | delete partition=N | format partition=N filesystem=FS [label=L] "
               "|\n"
               "      move partition=N new_start_bytes=SIZE | set_flag partition=N flag=F value=true|false\n"
               "      (SIZE in bytes or with K, M, G, T)\n"
               "  partition list NODE DEV | partition remove NODE DEV ID\n"
               "  partition apply NODE DEV [--follow]  Have the node apply what is queued\n"
               "Diskless nodes (NFS root):\n"
               "  nfsroot list | nfsroot import NAME ARCHIVE.tar[.gz|.zst] [--keep-setuid] | nfsroot show "
               "SERIAL\n"
               "  nfsroot create SERIAL [BASE [HOSTNAME]] | nfsroot delete SERIAL\n"
               "  node set-mode NODE nfs               Boot it diskless (pi-diskless-nfs workflow)\n"
               "Clone sessions:\n"
               "  clone create --source NODE [--target NODE] --mode direct|staged [--storage BACKEND]\n"
               "               --source-device DEV --target-device DEV [--name NAME]\n"
               "               [--resize none|shrink_source|grow_target] [--identity auto|none]\n"
               "               [--unused discard|zero|keep] [--idempotency-key KEY]\n"
               "               [--keep-as IMAGE]  (staged: keep the upload in the image library)\n"
               "               [--set-file PATH=CONTENT]...  (written on the target's clone, identity "
               "auto)\n"
               "               [--power-cycle] [--power-off]  (its nodes booted from the network at start,\n"
               "               switched off at the end, through their power drivers)\n"
               "  clone list | show ID | start ID | cancel ID | delete ID\n"
               "  clone update ID [--name N] [--source-device DEV] [--target-device DEV] [--target NODE] "
               "...\n"
               "  clone status ID [--follow]      Progress, with a live bar when following\n"
               "  clone token ID --role source|target [--target N]\n"
               "  clone add-target ID --target NODE --target-device DEV [--resize MODE]\n"
               "               [--set-file PATH=CONTENT]...\n"
               "                                  One more target of a session, direct or staged\n"
               "  clone plan ID [--analyze] [--edit N=SIZE]... [--set JSON]\n"
               "                                  The resize plan: made again, partitions resized, or set\n"
               "Images (captured, or kept by a staged clone with --keep-as NAME):\n"
               "  image capture NAME --source NODE --source-device DEV --storage BACKEND\n"
               "                                  Keep a node's disk; prints the capturing session\n"
               "  image list | show NAME | delete NAME | rename NAME NEW | describe NAME TEXT\n"
               "  image verify NAME                Read it back and check every chunk (exit 1 if damaged)\n"
               "  image export NAME FILE           Write it to one new file (what image import reads back)\n"
               "  image import NAME PATH --storage BACKEND [--description TEXT]\n"
               "                                  Bring in an exported image, or a Clonezilla or FOG image\n"
               "                                  directory (restored with sfdisk and partclone)\n"
               "  image capture-local NAME DEVICE --storage BACKEND [--description TEXT]\n"
               "  image restore-local NAME DEVICE  A disk of this machine, opened by udisks2 (no root)\n"
               "  image deploy NAME --target NODE [--target NODE]... --target-device DEV [...]\n"
               "               (one --target-device for all, or one per --target, in order)\n"
               "               [--resize none|grow_target] [--name NAME] [--identity auto|none]\n"
               "               [--set-file PATH=CONTENT]...  (on every target's clone) [--power-cycle] "
               "[--power-off]\n"
               "                                  One session writing the image to every target\n"
               "Boot sticks (for machines that cannot boot from the network):\n"
               "  boot-media write DEVICE|FILE --server URL\n"
               "                                  A stick of this machine (through udisks2, no root), or a\n"
               "                                  new image file, that asks the bridge at URL (its plain\n"
               "                                  HTTP listener) what the machine boots\n"
               "Storage backends:\n"
               "  storage add NAME --type nfs|iscsi|local KEY=VALUE...  (nfs: server= export= [options=] "
               "[version=];\n"
               "      iscsi: portal= target= [lun=] [chap_user= chap_secret=] [manage=none|tgtadm];\n"
               "      local: path=, a directory on the controller's host, served to nodes by the bridge)\n"
               "  storage list | show BACKEND | remove BACKEND | update BACKEND KEY=VALUE...\n"
               "Certificate authority:\n"
               "  ca show | ca list-issued | ca revoke SERIAL\n"
               "  ca issue --csr FILE --role node|source|target|server SUBJECT [--ip ADDR]\n\n"
               "Options:\n"
               "  -h --help               Show this help\n"
               "     --version            Show the version\n"
               "     --no-pager           Do not pipe output into a pager\n"
               "     --no-legend          Do not print column headers and counts\n"
               "     --no-ask-password    Do not ask for a password for polkit authorization\n"
               "     --json=pretty|short|off  Print JSON\n\n"
               "Exit status: 0 ok, 1 failed, 2 usage, 4 not found, 5 not authorized, 6 controller "
               "unreachable.\n"
               "See purebootctl(1).\n");
}

static int parse_args(int argc, char *argv[]) {
        enum {
                ARG_VERSION = 0x100,
                ARG_NO_PAGER,
                ARG_NO_LEGEND,
                ARG_NO_ASK_PASSWORD,
                ARG_JSON,
                ARG_MAC,
                ARG_HOSTNAME,
                ARG_ARCH,
                ARG_SERIAL,
                ARG_SOURCE,
                ARG_TARGET,
                ARG_MODE,
                ARG_STORAGE,
                ARG_SOURCE_DEVICE,
                ARG_TARGET_DEVICE,
                ARG_NAME,
                ARG_RESIZE,
                ARG_IDENTITY,
                ARG_UNUSED,
                ARG_KEY,
                ARG_FOLLOW,
                ARG_ROLE,
                ARG_TYPE,
                ARG_IP,
                ARG_CSR,
                ARG_ANALYZE,
                ARG_EDIT,
                ARG_SET_FILE,
                ARG_DRIVER,
                ARG_METHOD,
                ARG_POWER_CYCLE,
                ARG_POWER_OFF,
                ARG_SET,
                ARG_SERVER,
                ARG_KEEP_SETUID,
                ARG_KEEP_AS,
                ARG_DESCRIPTION,
        };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "no-pager", no_argument, NULL, ARG_NO_PAGER },
                { "no-legend", no_argument, NULL, ARG_NO_LEGEND },
                { "no-ask-password", no_argument, NULL, ARG_NO_ASK_PASSWORD },
                { "json", required_argument, NULL, ARG_JSON },
                { "mac", required_argument, NULL, ARG_MAC },
                { "hostname", required_argument, NULL, ARG_HOSTNAME },
                { "arch", required_argument, NULL, ARG_ARCH },
                { "serial", required_argument, NULL, ARG_SERIAL },
                { "source", required_argument, NULL, ARG_SOURCE },
                { "target", required_argument, NULL, ARG_TARGET },
                { "mode", required_argument, NULL, ARG_MODE },
                { "storage", required_argument, NULL, ARG_STORAGE },
                { "source-device", required_argument, NULL, ARG_SOURCE_DEVICE },
                { "target-device", required_argument, NULL, ARG_TARGET_DEVICE },
                { "name", required_argument, NULL, ARG_NAME },
                { "resize", required_argument, NULL, ARG_RESIZE },
                { "identity", required_argument, NULL, ARG_IDENTITY },
                { "unused", required_argument, NULL, ARG_UNUSED },
                { "idempotency-key", required_argument, NULL, ARG_KEY },
                { "follow", no_argument, NULL, ARG_FOLLOW },
                { "role", required_argument, NULL, ARG_ROLE },
                { "type", required_argument, NULL, ARG_TYPE },
                { "ip", required_argument, NULL, ARG_IP },
                { "analyze", no_argument, NULL, ARG_ANALYZE },
                { "edit", required_argument, NULL, ARG_EDIT },
                { "set-file", required_argument, NULL, ARG_SET_FILE },
                { "driver", required_argument, NULL, ARG_DRIVER },
                { "method", required_argument, NULL, ARG_METHOD },
                { "power-cycle", no_argument, NULL, ARG_POWER_CYCLE },
                { "power-off", no_argument, NULL, ARG_POWER_OFF },
                { "set", required_argument, NULL, ARG_SET },
                { "server", required_argument, NULL, ARG_SERVER },
                { "csr", required_argument, NULL, ARG_CSR },
                { "keep-setuid", no_argument, NULL, ARG_KEEP_SETUID },
                { "keep-as", required_argument, NULL, ARG_KEEP_AS },
                { "description", required_argument, NULL, ARG_DESCRIPTION },
                {},
        };
        int c;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("purebootctl %s\n", PACKAGE_VERSION);
                        return 0;
                case ARG_NO_PAGER:
                        arg.no_pager = true;
                        break;
                case ARG_NO_LEGEND:
                        arg.no_legend = true;
                        break;
                case ARG_NO_ASK_PASSWORD:
                        arg.no_ask_password = true;
                        break;
                case ARG_JSON:
                        if (streq(optarg, "pretty"))
                                arg.json = JSON_PRETTY;
                        else if (streq(optarg, "short"))
                                arg.json = JSON_SHORT;
                        else if (streq(optarg, "off"))
                                arg.json = JSON_OFF;
                        else {
                                log_error("--json= takes pretty, short or off, not \"%s\".", optarg);
                                return -EXIT_USAGE;
                        }
                        break;
                case ARG_MAC:
                        arg.mac = optarg;
                        break;
                case ARG_HOSTNAME:
                        arg.hostname = optarg;
                        break;
                case ARG_ARCH:
                        arg.arch = optarg;
                        break;
                case ARG_SERIAL:
                        arg.serial = optarg;
                        break;
                case ARG_SOURCE:
                        arg.source = optarg;
                        break;
                case ARG_TARGET:
                        arg.target = optarg;
                        if (strv_extend(&arg.targets, optarg) < 0)
                                return log_oom(), -EXIT_FAILED;
                        break;
                case ARG_KEEP_AS:
                        arg.keep_as = optarg;
                        break;
                case ARG_DESCRIPTION:
                        arg.description = optarg;
                        break;
                case ARG_MODE:
                        arg.mode = optarg;
                        break;
                case ARG_STORAGE:
                        arg.storage = optarg;
                        break;
                case ARG_SOURCE_DEVICE:
                        arg.source_device = optarg;
                        break;
                case ARG_TARGET_DEVICE:
                        arg.target_device = optarg;
                        if (strv_extend(&arg.target_devices, optarg) < 0)
                                return log_oom(), -EXIT_FAILED;
                        break;
                case ARG_NAME:
                        arg.name = optarg;
                        break;
                case ARG_RESIZE:
                        arg.resize = optarg;
                        break;
                case ARG_IDENTITY:
                        arg.identity = optarg;
                        break;
                case ARG_UNUSED:
                        arg.unused = optarg;
                        break;
                case ARG_KEY:
                        arg.key = optarg;
                        break;
                case ARG_FOLLOW:
                        arg.follow = true;
                        break;
                case ARG_KEEP_SETUID:
                        arg.keep_setuid = true;
                        break;
                case ARG_ROLE:
                        arg.role = optarg;
                        break;
                case ARG_TYPE:
                        arg.type = optarg;
                        break;
                case ARG_IP:
                        arg.ip = optarg;
                        break;
                case ARG_CSR:
                        arg.csr = optarg;
                        break;
                case ARG_ANALYZE:
                        arg.analyze = true;
                        break;
                case ARG_EDIT:
                        if (strv_extend(&arg.edits, optarg) < 0)
                                return -EXIT_FAILED;
                        break;
                case ARG_DRIVER:
                        arg.driver = optarg;
                        break;
                case ARG_METHOD:
                        arg.method = optarg;
                        break;
                case ARG_POWER_CYCLE:
                        arg.power_cycle = true;
                        break;
                case ARG_POWER_OFF:
                        arg.power_off = true;
                        break;
                case ARG_SET_FILE:
                        if (optarg[0] != '/' || !strchr(optarg, '=')) {
                                log_error("--set-file takes PATH=CONTENT, PATH absolute (as on the clone): "
                                          "--set-file /etc/motd=\"Lab 3\".");
                                return -EXIT_USAGE;
                        }
                        if (strv_extend(&arg.set_files, optarg) < 0)
                                return -EXIT_FAILED;
                        break;
                case ARG_SET:
                        arg.set_plan = optarg;
                        break;
                case ARG_SERVER:
                        arg.server = optarg;
                        break;
                default:
                        return -EXIT_USAGE;
                }
        return 1;
}

int main(int argc, char *argv[]) {
        static const struct {
                const char *name;
                int (*run)(sd_bus *bus, int argc, char **argv);
                bool local; /* needs no controller: runs without the bus */
        } groups[] = {
                { "node", verb_node },
                { "clone", verb_clone },
                { "storage", verb_storage },
                { "ca", verb_ca },
                { "disk", verb_disk },
                { "partition", verb_partition },
                { "nfsroot", verb_nfsroot },
                { "image", verb_image },
                { "boot-media", verb_boot_media, .local = true },
        };
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        int r;

        r = parse_args(argc, argv);
        if (r <= 0)
                return -r;
        if (optind >= argc) {
                log_error("Missing command; see purebootctl --help.");
                return EXIT_USAGE;
        }
        for (size_t i = 0; i < ELEMENTSOF(groups); i++) {
                if (!streq(argv[optind], groups[i].name))
                        continue;
                r = groups[i].local ? 0 : sd_bus_open_system(&bus);
                if (r < 0) {
                        log_error_errno(r, "Failed to connect to the system bus: %m");
                        return EXIT_UNAVAILABLE;
                }
                polkit_agent_open();
                r = groups[i].run(bus, argc - optind - 1, argv + optind + 1);
                pager_close();
                polkit_agent_close();
                return r;
        }
        log_error("Unknown command \"%s\"; see purebootctl --help.", argv[optind]);
        return EXIT_USAGE;
}
