/* SPDX-License-Identifier: MIT */
/* purebootctl clone …: create and drive clone sessions, and follow their progress. */
#include <sys/ioctl.h>

#include "ctl.h"
#include "domain.h"
#include "format.h"
#include "json-util.h"
#include "log.h"
#include "table.h"
#include "util.h"

static int add_string_option(sd_bus_message *m, const char *key, const char *value) {
        return value ? sd_bus_message_append(m, "{sv}", key, "s", value) : 0;
}

/* --set-file PATH=CONTENT…, as the option files (a{ss}); none, nothing. */
static int add_files_option(sd_bus_message *m) {
        int r;
        if (strv_length(arg.set_files) == 0)
                return 0;
        r = sd_bus_message_open_container(m, 'e', "sv");
        if (r >= 0)
                r = sd_bus_message_append(m, "s", "files");
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'v', "a{ss}");
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "{ss}");
        STRV_FOREACH(f, arg.set_files) {
                _cleanup_free_ char *path = strndup(*f, strcspn(*f, "="));
                if (r >= 0)
                        r = path ? sd_bus_message_append(m, "{ss}", path, *f + strlen(path) + 1) : -ENOMEM;
        }
        for (int i = 0; r >= 0 && i < 3; i++)
                r = sd_bus_message_close_container(m);
        return r;
}

int clone_append_target_options(sd_bus_message *m) {
        int r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0)
                r = add_string_option(m, "resize_mode", arg.resize);
        if (r >= 0)
                r = add_files_option(m);
        return r < 0 ? r : sd_bus_message_close_container(m);
}

static int clone_create(sd_bus *bus) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        if (!ctl_require(arg.source, "--source NODE", "clone create") ||
            !ctl_require(arg.mode, "--mode direct|staged", "clone create") ||
            !ctl_require(arg.source_device, "--source-device DEV", "clone create") ||
            !ctl_require(arg.target_device, "--target-device DEV", "clone create"))
                return EXIT_USAGE;
        r = ctl_new_call(bus, PB_ROOT_PATH, PB_IFACE("Manager"), "CreateCloneSession", &m);
        if (r >= 0)
                r = sd_bus_message_append(m, "ssssss", arg.name ?: "clone", arg.mode, arg.source,
                                          strempty(arg.target), arg.source_device, arg.target_device);
        if (r >= 0)
                r = clone_append_options(m, NULL);
        if (r < 0)
                return EXIT_FAILED;
        return ctl_call_print_id(bus, m, "create the clone session");
}

int clone_append_options(sd_bus_message *m, const char *image) {
        const struct {
                const char *key, *value;
        } options[] = {
                { "storage", arg.storage }, { "resize_mode", arg.resize },  { "identity", arg.identity },
                { "unused", arg.unused },   { "idempotency_key", arg.key }, { "keep_as", arg.keep_as },
                { "image", image },
        };
        int r = sd_bus_message_open_container(m, 'a', "{sv}");
        for (size_t i = 0; r >= 0 && i < ELEMENTSOF(options); i++)
                r = add_string_option(m, options[i].key, options[i].value);
        if (r >= 0)
                r = add_files_option(m);
        if (r >= 0 && arg.power_cycle)
                r = sd_bus_message_append(m, "{sv}", "power_cycle", "b", 1);
        if (r >= 0 && arg.power_off)
                r = sd_bus_message_append(m, "{sv}", "power_off", "b", 1);
        return r < 0 ? r : sd_bus_message_close_container(m);
}

/* Node ids as host names, for tables people read. */
static json_object *node_names(sd_bus *bus) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        json_object *names = json_object_new_object();
        const char *id, *hostname, *mac, *arch, *state, *serial, *path;
        uint64_t last_seen;
        int r;

        r = sd_bus_call_method(bus, PB_BUS_NAME, PB_ROOT_PATH, PB_IFACE("Manager"), "ListNodes", NULL,
                               &reply, NULL);
        if (r >= 0)
                r = sd_bus_message_enter_container(reply, 'a', "(ssssssto)");
        while (r >= 0 && (r = sd_bus_message_read(reply, "(ssssssto)", &id, &hostname, &mac, &arch, &state,
                                                  &serial, &last_seen, &path)) > 0)
                json_object_object_add(names, id, json_object_new_string(hostname));
        return names;
}

static const char *node_name(json_object *names, const char *id) {
        json_object *v;
        return json_object_object_get_ex(names, id, &v) ? json_object_get_string(v) : id;
}

static int clone_list(sd_bus *bus) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(table_freep) Table *t = table_new("ID", "NAME", "STATUS", "MODE", "SOURCE", "TARGET",
                                                    "SIZE", "TRANSFERRED", "CREATED", NULL);
        const char *id, *name, *status, *mode, *source, *target, *path;
        uint64_t total, transferred, created;
        int r;

        if (!t)
                return log_oom(), EXIT_FAILED;
        json_object *names = arg.json == JSON_OFF ? node_names(bus) : NULL;
        r = sd_bus_call_method(bus, PB_BUS_NAME, PB_ROOT_PATH, PB_IFACE("Manager"), "ListCloneSessions",
                               &error, &reply, NULL);
        if (r < 0)
                return ctl_error(&error, r, "list clone sessions");
        r = sd_bus_message_enter_container(reply, 'a', "(ssssssttto)");
        while (r >= 0 && (r = sd_bus_message_read(reply, "(ssssssttto)", &id, &name, &status, &mode, &source,
                                                  &target, &total, &transferred, &created, &path)) > 0)
                if (table_add_row(t, "sssssszzT", id, name, status, mode, node_name(names, source),
                                  node_name(names, target), total, transferred, created) < 0)
                        r = -ENOMEM;
        json_object_put(names);
        if (r < 0)
                return log_error_errno(r, "Bad reply: %m"), EXIT_FAILED;
        ctl_pager_open();
        table_print(t, "sessions", arg.no_legend, arg.json);
        return EXIT_OK;
}

/* A session method taking only a{sv} options. */
static int clone_simple_call(sd_bus *bus, const char *path, const char *method, const char *what,
                             sd_bus_message **reply) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r = ctl_new_call(bus, path, PB_IFACE("CloneSession"), method, &m);
        if (r >= 0)
                r = sd_bus_message_append(m, "a{sv}", 0);
        if (r < 0)
                return EXIT_FAILED;
        r = ctl_call(bus, m, reply, what);
        return r < 0 ? -r : EXIT_OK;
}

static int clone_update(sd_bus *bus, const char *path) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        const struct {
                const char *key, *value;
        } changes[] = {
                { "name", arg.name },
                { "mode", arg.mode },
                { "source_node", arg.source },
                { "target_node", arg.target },
                { "source_device", arg.source_device },
                { "target_device", arg.target_device },
                { "storage", arg.storage },
                { "resize_mode", arg.resize },
                { "identity", arg.identity },
                { "unused", arg.unused },
        };
        int r = ctl_new_call(bus, path, PB_IFACE("CloneSession"), "Update", &m);
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "{sv}");
        for (size_t i = 0; r >= 0 && i < ELEMENTSOF(changes); i++)
                r = add_string_option(m, changes[i].key, changes[i].value);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r >= 0)
                r = sd_bus_message_append(m, "a{sv}", 0);
        if (r < 0)
                return EXIT_FAILED;
        r = ctl_call(bus, m, NULL, "update the session");
        return r < 0 ? -r : EXIT_OK;
}

/* clone token ID --role source|target [--target N]: a token for the source, or for the session's first or
 * Nth target. */
static int clone_token(sd_bus *bus, const char *path) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_free_ char *role = NULL;
        const char *token;
        int r;

        if (arg.target && clone_role_from_string(arg.role) != CLONE_ROLE_SOURCE) {
                if (asprintf(&role, "target-%s", arg.target) < 0)
                        return EXIT_FAILED;
                if (clone_target_index(role) == 0)
                        return log_error("--target is a target's number (1, 2, …; purebootctl clone status lists "
                                         "them), not \"%s\".",
                                         arg.target),
                               EXIT_USAGE;
        } else if (!ctl_require(arg.role, "--role source|target [--target N]", "clone token"))
                return EXIT_USAGE;
        r = ctl_new_call(bus, path, PB_IFACE("CloneSession"), "IssueBootToken", &m);
        if (r >= 0)
                r = sd_bus_message_append(m, "sa{sv}", role ?: arg.role, 0);
        if (r < 0)
                return EXIT_FAILED;
        r = ctl_call(bus, m, &reply, "issue a boot token");
        if (r < 0)
                return -r;
        if (sd_bus_message_read(reply, "s", &token) < 0)
                return EXIT_FAILED;
        printf("%s\n", token);
        return EXIT_OK;
}

typedef struct Progress {
        char status[32], staging[32];
        char error[512], problem[512];
        uint64_t total, transferred, rate, uploaded;
} Progress;

static int read_progress(sd_bus *bus, const char *path, Progress *p) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        r = sd_bus_call_method(bus, PB_BUS_NAME, path, "org.freedesktop.DBus.Properties", "GetAll", &error,
                               &reply, "s", PB_IFACE("CloneSession"));
        if (r < 0)
                return -ctl_error(&error, r, "read the session");
        r = sd_bus_message_enter_container(reply, 'a', "{sv}");
        while (r >= 0 && (r = sd_bus_message_enter_container(reply, 'e', "sv")) > 0) {
                const char *name, *s;
                r = sd_bus_message_read(reply, "s", &name);
                if (r >= 0 && STR_IN_SET(name, "Status", "Error", "Problem", "StagingStatus")) {
                        bool text = STR_IN_SET(name, "Error", "Problem");
                        r = sd_bus_message_read(reply, "v", "s", &s);
                        if (r >= 0)
                                snprintf(streq(name, "Status")    ? p->status
                                         : streq(name, "Error")   ? p->error
                                         : streq(name, "Problem") ? p->problem
                                                                  : p->staging,
                                         text ? sizeof(p->error) : sizeof(p->status), "%s", s);
                } else if (r >= 0 && STR_IN_SET(name, "BytesTotal", "BytesTransferred", "TransferRate",
                                                "BytesUploaded"))
                        r = sd_bus_message_read(reply, "v", "t",
                                                streq(name, "BytesTotal")         ? &p->total
                                                : streq(name, "BytesTransferred") ? &p->transferred
                                                : streq(name, "BytesUploaded")    ? &p->uploaded
                                                                                  : &p->rate);
                else if (r >= 0)
                        r = sd_bus_message_skip(reply, "v");
                if (r >= 0)
                        r = sd_bus_message_exit_container(reply);
        }
        return r < 0 ? -EXIT_FAILED : 0;
}

/* A staged session shows its phase while it runs: provisioning, uploading, ready, downloading, cleanup. */
static const char *phase_of(const Progress *p) {
        int staging = staging_status_from_string(p->staging);
        if (staging <= STAGING_NONE || (clone_status_name_is_final(p->status) && staging != STAGING_CLEANUP))
                return p->status;
        return staging == STAGING_PENDING ? "provisioning" : p->staging;
}

static void print_progress(const Progress *p, bool live) {
        char total[FORMAT_BYTES_MAX], done[FORMAT_BYTES_MAX], rate[FORMAT_BYTES_MAX],
                eta[FORMAT_TIMESTAMP_MAX] = "";
        double fraction = p->total > 0 ? MIN(1.0, (double) p->transferred / (double) p->total) : 0.0;
        char bar[64];
        int width = 30;

        if (clone_status_from_string(p->status) == CLONE_COMPLETED)
                fraction = 1.0;
        if (p->rate > 0 && p->total > p->transferred)
                format_duration(eta, (p->total - p->transferred) / p->rate);
        for (int i = 0; i < width; i++)
                bar[i] = i < (int) (fraction * width) ? '=' : (i == (int) (fraction * width) ? '>' : ' ');
        bar[width] = 0;
        char upload[64] = "";
        if (*p->staging && p->total > 0)
                snprintf(upload, sizeof(upload), "  uploaded %.1f%%",
                         MIN(100.0, 100.0 * (double) p->uploaded / (double) p->total));
        printf("%s%-12s [%s] %5.1f%% %s / %s  %s/s%s%s%s%s", live ? "\r" : "", phase_of(p), bar, fraction * 100.0,
               format_bytes(done, p->transferred), format_bytes(total, p->total), format_bytes(rate, p->rate),
               *eta ? "  ETA " : "", eta, upload, live ? "\033[K" : "\n");
        fflush(stdout);
}

/* What the follow of a session with several targets last showed of each. */
typedef struct TargetSeen {
        char status[32];
        double progress;
        uint32_t upstream;
} TargetSeen;

/* One line per target of a session with several: its number, node, device, status, share done, the target it
 * pulls from in a chain, and why it failed. seen (n of them): only those whose status or upstream changed or
 * that moved 10 % since, which are noted. */
static int print_targets(sd_bus *bus, const char *path, TargetSeen *seen, size_t n, bool live) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_strv_free_ char **targets = NULL;
        size_t i = 0;
        int r = sd_bus_get_property_strv(bus, PB_BUS_NAME, path, PB_IFACE("CloneSession"), "Targets", &error,
                                         &targets);
        if (r < 0)
                return ctl_error(&error, r, "read the session's targets");
        if (!targets || !targets[0] || !targets[1])
                return 0;
        for (char **t = targets; *t; t++, i++) {
                _cleanup_free_ char *node = NULL, *device = NULL, *status = NULL, *failure = NULL;
                uint32_t index = 0, upstream = 0;
                double progress = 0;
                sd_bus_message *reply = NULL;
                const char *iface = PB_IFACE("CloneTarget");
                r = sd_bus_get_property_trivial(bus, PB_BUS_NAME, *t, iface, "Index", &error, 'u', &index);
                if (r >= 0)
                        r = sd_bus_get_property_string(bus, PB_BUS_NAME, *t, iface, "Node", &error, &node);
                if (r >= 0)
                        r = sd_bus_get_property_string(bus, PB_BUS_NAME, *t, iface, "Device", &error, &device);
                if (r >= 0)
                        r = sd_bus_get_property_string(bus, PB_BUS_NAME, *t, iface, "Status", &error, &status);
                if (r >= 0)
                        r = sd_bus_get_property_string(bus, PB_BUS_NAME, *t, iface, "Error", &error, &failure);
                if (r >= 0)
                        r = sd_bus_get_property_trivial(bus, PB_BUS_NAME, *t, iface, "Upstream", &error, 'u',
                                                        &upstream);
                if (r >= 0)
                        r = sd_bus_get_property(bus, PB_BUS_NAME, *t, iface, "Progress", &error, &reply, "d");
                if (r >= 0)
                        r = sd_bus_message_read(reply, "d", &progress);
                sd_bus_message_unref(reply);
                if (r < 0)
                        return ctl_error(&error, r, "read a target");
                if (seen && i < n) {
                        if (streq(seen[i].status, status) && progress - seen[i].progress < 0.1 &&
                            seen[i].upstream == upstream)
                                continue;
                        snprintf(seen[i].status, sizeof(seen[i].status), "%s", status);
                        seen[i].progress = progress;
                        seen[i].upstream = upstream;
                }
                char from[32] = "";
                if (upstream > 0)
                        snprintf(from, sizeof(from), "  from target %" PRIu32, upstream);
                printf("%s  target %-3" PRIu32 " %-12.32s %-16.64s %-12s %5.1f%%%s%s%s\n",
                       live ? "\r\033[K" : "", index, node, device, status, progress * 100.0, from,
                       *failure ? "  " : "", failure);
        }
        return 0;
}

/* What the agents said of the disks: the source's partitions copied whole, each target's filesystem checks.
 */
static int print_notes(sd_bus *bus, const char *path) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_strv_free_ char **notes = NULL, **targets = NULL;
        int r = sd_bus_get_property_strv(bus, PB_BUS_NAME, path, PB_IFACE("CloneSession"), "SourceNotes",
                                         &error, &notes);
        if (r >= 0)
                r = sd_bus_get_property_strv(bus, PB_BUS_NAME, path, PB_IFACE("CloneSession"), "Targets",
                                             &error, &targets);
        if (r < 0)
                return ctl_error(&error, r, "read the session's notes");
        for (char **n = notes; n && *n; n++)
                printf("Source: %s\n", *n);
        for (char **t = targets; t && *t; t++) {
                _cleanup_strv_free_ char **said = NULL;
                uint32_t index = 0;
                r = sd_bus_get_property_trivial(bus, PB_BUS_NAME, *t, PB_IFACE("CloneTarget"), "Index",
                                                &error, 'u', &index);
                if (r >= 0)
                        r = sd_bus_get_property_strv(bus, PB_BUS_NAME, *t, PB_IFACE("CloneTarget"), "Notes",
                                                     &error, &said);
                if (r < 0)
                        return ctl_error(&error, r, "read a target's notes");
                for (char **n = said; n && *n; n++)
                        printf("Target %" PRIu32 ": %s\n", index, *n);
        }
        return 0;
}

static int on_changed(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        (void) m, (void) error;
        *(bool *) userdata = true;
        return 0;
}

static int clone_status(sd_bus *bus, const char *path) {
        _cleanup_(sd_bus_slot_unrefp) sd_bus_slot *slot = NULL;
        _cleanup_free_ TargetSeen *seen = NULL;
        _cleanup_free_ char *match = NULL;
        bool live = isatty(STDOUT_FILENO), changed = true;
        Progress p = {}, last = {};
        char last_problem[sizeof(p.problem)] = "";
        int r;

        if (arg.follow) {
                /* Subscribe before the first read, so no change falls between the two: the session's and its
                 * targets' (below its path). */
                if (asprintf(&match,
                             "type='signal',sender='" PB_BUS_NAME
                             "',interface='org.freedesktop.DBus.Properties',"
                             "member='PropertiesChanged',path_namespace='%s'",
                             path) < 0 ||
                    !(seen = calloc(CLONE_TARGETS_MAX, sizeof(TargetSeen))))
                        return log_oom(), EXIT_FAILED;
                r = sd_bus_add_match(bus, &slot, match, on_changed, &changed);
                if (r < 0)
                        return log_error_errno(r, "Failed to watch the session: %m"), EXIT_FAILED;
        }
        for (;;) {
                if (changed) {
                        changed = false;
                        r = read_progress(bus, path, &p);
                        if (r < 0)
                                return -r;
                        if (arg.json != JSON_OFF && !arg.follow) {
                                json_object *o = json_object_new_object();
                                json_object_object_add(o, "status", json_object_new_string(p.status));
                                json_object_object_add(o, "bytes_total", json_object_new_uint64(p.total));
                                json_object_object_add(o, "bytes_transferred",
                                                       json_object_new_uint64(p.transferred));
                                json_object_object_add(o, "transfer_rate", json_object_new_uint64(p.rate));
                                json_object_object_add(o, "error", json_object_new_string(p.error));
                                json_object_object_add(o, "problem", json_object_new_string(p.problem));
                                if (*p.staging) {
                                        json_object_object_add(o, "staging_status", json_object_new_string(p.staging));
                                        json_object_object_add(o, "bytes_uploaded", json_object_new_uint64(p.uploaded));
                                }
                                ctl_print_json(o);
                                json_object_put(o);
                                break;
                        }
                        /* Each target of several, as it moves on (above the session's progress line). */
                        if (arg.follow && (r = print_targets(bus, path, seen, CLONE_TARGETS_MAX, live)) > 0)
                                return r;
                        /* Without a terminal, one line per status change or 5 % of progress. */
                        if (live || !streq(p.status, last.status) || !streq(p.staging, last.staging) || !arg.follow ||
                            (p.total > 0 && (p.transferred - last.transferred) * 20 >= p.total)) {
                                print_progress(&p, live && arg.follow);
                                last = p;
                        }
                        /* What keeps the target from its source, each time it changes. */
                        if (*p.problem && (!arg.follow || !streq(p.problem, last_problem))) {
                                printf("%sProblem: %s\n", live && arg.follow ? "\n" : "", p.problem);
                                fflush(stdout);
                        }
                        snprintf(last_problem, sizeof(last_problem), "%s", p.problem);
                        if (!arg.follow || clone_status_name_is_final(p.status))
                                break;
                }
                r = sd_bus_process(bus, NULL);
                if (r < 0)
                        return log_error_errno(r, "Lost the bus: %m"), EXIT_UNAVAILABLE;
                if (r == 0 && (r = sd_bus_wait(bus, UINT64_MAX)) < 0)
                        return log_error_errno(r, "Lost the bus: %m"), EXIT_UNAVAILABLE;
        }
        if (live && arg.follow)
                printf("\n");
        if (arg.json == JSON_OFF && ((!arg.follow && (r = print_targets(bus, path, NULL, 0, false)) > 0) ||
                                     (r = print_notes(bus, path)) > 0))
                return r;
        if (*p.error && clone_status_name_is_final(p.status))
                log_error("Session %s: %s", p.status, p.error);
        return !arg.follow || clone_status_from_string(p.status) == CLONE_COMPLETED ? EXIT_OK : EXIT_FAILED;
}

/* clone add-target ID --target NODE --target-device DEV [--resize MODE]: one more target of a session. */
static int clone_add_target(sd_bus *bus, const char *path) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        if (!ctl_require(arg.target, "--target NODE", "clone add-target") ||
            !ctl_require(arg.target_device, "--target-device DEV", "clone add-target"))
                return EXIT_USAGE;
        r = ctl_new_call(bus, path, PB_IFACE("CloneSession"), "AddTarget", &m);
        if (r >= 0)
                r = sd_bus_message_append(m, "ss", arg.target, arg.target_device);
        if (r >= 0)
                r = clone_append_target_options(m);
        if (r < 0)
                return EXIT_FAILED;
        return ctl_call_print_id(bus, m, "add the target");
}

/* --edit N=SIZE… as SetPlan's {"N": bytes, …}. */
static int edits_json(char **ret) {
        _cleanup_(json_object_unrefp) json_object *o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        for (char **e = arg.edits; e && *e; e++) {
                const char *eq = strchr(*e, '=');
                char key[16], *end;
                unsigned long n = strtoul(*e, &end, 10);
                uint64_t size;
                bool drop = eq && streq(eq + 1, "delete");
                if (!eq || end != eq || n == 0 || n > 128 || (!drop && ctl_parse_size(eq + 1, &size) < 0))
                        return log_error_errno(EINVAL, "--edit %s is not PARTITION=SIZE or PARTITION=delete (such as "
                                               "2=600M).", *e);
                snprintf(key, sizeof(key), "%lu", n);
                json_object_object_add(o, key, drop ? json_object_new_string("delete")
                                                    : json_object_new_int64((int64_t) size));
        }
        *ret = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
        return *ret ? 0 : -ENOMEM;
}

static void print_plan(json_object *plan) {
        _cleanup_(table_freep) Table *t = table_new("PARTITION", "FILESYSTEM", "ACTION", "SIZE", "NEW SIZE",
                                                    "MINIMUM", NULL);
        json_object *parts = json_object_object_get(plan, "partitions");
        bool feasible = json_object_get_boolean(json_object_object_get(plan, "feasible"));

        for (size_t i = 0; t && i < json_object_array_length(parts); i++) {
                json_object *p = json_object_array_get_idx(parts, i);
                (void) table_add_row(t, "usszzz", (uint64_t) json_get_int(p, "number"),
                                     json_get_string(p, "filesystem") ?: "-", json_get_string(p, "action"),
                                     (uint64_t) json_get_int(p, "sizeBytes"), (uint64_t) json_get_int(p, "newSizeBytes"),
                                     (uint64_t) json_get_int(p, "minimumBytes"));
        }
        printf("Resize mode %s: %s → %s (%s → %s), copying %s.\n", strna(json_get_string(plan, "mode")),
               strna(json_get_string(plan, "sourceDevice")), strna(json_get_string(plan, "targetDevice")),
               FORMAT_BYTES((uint64_t) json_get_int(plan, "sourceBytes")),
               FORMAT_BYTES((uint64_t) json_get_int(plan, "targetBytes")),
               FORMAT_BYTES((uint64_t) json_get_int(plan, "copyBytes")));
        if (t)
                table_print(t, "partitions", arg.no_legend, JSON_OFF);
        if (feasible)
                printf("Feasible: the source runs %zu operation(s) before the copy, the target %zu after it.\n",
                       json_object_array_length(json_object_object_get(plan, "source")),
                       json_object_array_length(json_object_object_get(plan, "target")));
        else
                printf("Not feasible: %s\n", strna(json_get_string(plan, "reason")));
}

/* clone plan ID: the plan as it is (made if there is none), made again (--analyze), or changed (--edit, --set). */
static int clone_plan(sd_bus *bus, const char *path) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_(json_object_unrefp) json_object *plan = NULL;
        _cleanup_free_ char *edits = NULL;
        const char *text;
        int r;

        if (arg.set_plan && arg.edits) {
                log_error("Give --edit or --set, not both.");
                return EXIT_USAGE;
        }
        if (arg.edits && edits_json(&edits) < 0)
                return EXIT_USAGE;
        if (arg.set_plan || edits) {
                r = ctl_new_call(bus, path, PB_IFACE("CloneSession"), "SetPlan", &m);
                if (r >= 0)
                        r = sd_bus_message_append(m, "sa{sv}", arg.set_plan ?: edits, 0);
                if (r < 0)
                        return EXIT_FAILED;
                r = ctl_call(bus, m, &reply, "change the plan");
        } else if (!arg.analyze) {
                r = ctl_new_call(bus, path, PB_IFACE("CloneSession"), "GetPlan", &m);
                if (r < 0)
                        return EXIT_FAILED;
                r = sd_bus_call(bus, m, 0, NULL, &reply);
                if (r < 0) /* none yet: make one */
                        return clone_simple_call(bus, path, "Analyze", "analyze the disks", NULL) ?: clone_plan(bus, path);
        } else
                r = clone_simple_call(bus, path, "Analyze", "analyze the disks", &reply) == EXIT_OK ? 0 : -EIO;
        if (r < 0)
                return r == -EIO ? EXIT_FAILED : -r;
        if (sd_bus_message_read(reply, "s", &text) < 0 || !(plan = json_tokener_parse(text)))
                return log_error("The controller sent a plan that is not JSON."), EXIT_FAILED;
        if (arg.json != JSON_OFF)
                printf("%s\n", json_object_to_json_string_ext(plan, arg.json == JSON_PRETTY ? JSON_C_TO_STRING_PRETTY
                                                                                             : JSON_C_TO_STRING_PLAIN));
        else
                print_plan(plan);
        return EXIT_OK;
}

int verb_clone(sd_bus *bus, int argc, char **argv) {
        _cleanup_free_ char *path = NULL;
        const char *verb = argc > 0 ? argv[0] : "list";
        int r;

        if (streq(verb, "create") && argc == 1)
                return clone_create(bus);
        if (streq(verb, "list") && argc <= 1)
                return clone_list(bus);
        if (!STR_IN_SET(verb, "show", "start", "cancel", "delete", "status", "update", "token", "plan",
                       "add-target") ||
            argc != 2) {
                log_error("Usage: purebootctl clone "
                          "create|list|show|start|cancel|delete|status|update|token|plan|add-target …; "
                          "see purebootctl --help.");
                return EXIT_USAGE;
        }
        r = ctl_resolve(bus, "GetCloneSession", argv[1], &path);
        if (r < 0)
                return -r;
        if (streq(verb, "show")) {
                ctl_pager_open();
                return ctl_show_object(bus, path, PB_IFACE("CloneSession"));
        }
        if (streq(verb, "status"))
                return clone_status(bus, path);
        if (streq(verb, "update"))
                return clone_update(bus, path);
        if (streq(verb, "token"))
                return clone_token(bus, path);
        if (streq(verb, "plan"))
                return clone_plan(bus, path);
        if (streq(verb, "add-target"))
                return clone_add_target(bus, path);
        if (streq(verb, "start"))
                return clone_simple_call(bus, path, "Start", "start the session", NULL);
        if (streq(verb, "cancel"))
                return clone_simple_call(bus, path, "Cancel", "cancel the session", NULL);

        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int deleted = 0;
        r = clone_simple_call(bus, path, "Delete", "delete the session", &reply);
        if (r != EXIT_OK)
                return r;
        if (sd_bus_message_read(reply, "b", &deleted) >= 0 && !deleted)
                printf("Session %s was running; it is cancelled now. Delete it again to remove it.\n",
                       strrchr(path, '/') + 1);
        return EXIT_OK;
}
