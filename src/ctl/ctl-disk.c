/* SPDX-License-Identifier: MIT */
/* purebootctl disk … and partition …: a node's disks as scanned, with a map of each, and the partition
 * operations queued on them. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "ctl.h"
#include "domain.h"
#include "format.h"
#include "log.h"
#include "table.h"
#include "util.h"

#define MAP_WIDTH 72

typedef struct Part {
        uint32_t number;
        uint64_t start, size, used, minimum;
        const char *type_name, *fs, *label, *mountpoint;
        char **flags;
        int can_shrink;
} Part;

typedef struct DiskView {
        sd_bus_message *reply; /* the Partitions property; the strings point into it */
        char *device, *table, *model;
        uint64_t size, scanned_at;
        Part *parts;
        size_t n_parts;
} DiskView;

static void disk_view_done(DiskView *v) {
        for (size_t i = 0; i < v->n_parts; i++)
                strv_free(v->parts[i].flags);
        free(v->parts);
        free(v->device);
        free(v->table);
        free(v->model);
        sd_bus_message_unref(v->reply);
}

static int get_string(sd_bus *bus, const char *path, const char *name, char **ret) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        int r = sd_bus_get_property_string(bus, PB_BUS_NAME, path, PB_IFACE("Disk"), name, &error, ret);
        return r < 0 ? ctl_error(&error, r, "read the disk") : 0;
}

static int get_u64(sd_bus *bus, const char *path, const char *name, uint64_t *ret) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        int r = sd_bus_get_property_trivial(bus, PB_BUS_NAME, path, PB_IFACE("Disk"), name, &error, 't',
                                            ret);
        return r < 0 ? ctl_error(&error, r, "read the disk") : 0;
}

/* The disk objects of a node: its Disks property. */
static int node_disks(sd_bus *bus, const char *node, char ***ret) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_free_ char *path = NULL;
        int r = ctl_resolve(bus, "GetNode", node, &path);
        if (r < 0)
                return -r;
        r = sd_bus_get_property_strv(bus, PB_BUS_NAME, path, PB_IFACE("Node"), "Disks", &error, ret);
        if (r < 0)
                return ctl_error(&error, r, "read the node's disks");
        return 0;
}

/* The disk of node named by device path or kernel name. */
static int resolve_disk(sd_bus *bus, const char *node, const char *device, char **ret) {
        _cleanup_strv_free_ char **disks = NULL;
        int r = node_disks(bus, node, &disks);
        if (r != 0)
                return r;
        STRV_FOREACH (p, disks) {
                _cleanup_free_ char *dev = NULL;
                if (get_string(bus, *p, "Device", &dev) != 0)
                        return EXIT_FAILED;
                const char *name = strrchr(dev, '/');
                if (streq(dev, device) || (name && streq(name + 1, device))) {
                        *ret = strdup(*p);
                        return *ret ? 0 : EXIT_FAILED;
                }
        }
        log_error("Node %s has no disk %s in its last scan; purebootctl disk list %s shows what it has.", node, device,
                  node);
        return EXIT_NOT_FOUND;
}

static int load_view(sd_bus *bus, const char *path, DiskView *v) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        int r;

        if (get_string(bus, path, "Device", &v->device) || get_string(bus, path, "PartitionTable", &v->table) ||
            get_string(bus, path, "Model", &v->model) || get_u64(bus, path, "Size", &v->size) ||
            get_u64(bus, path, "ScannedAt", &v->scanned_at))
                return EXIT_FAILED;
        r = sd_bus_get_property(bus, PB_BUS_NAME, path, PB_IFACE("Disk"), "Partitions", &error, &v->reply,
                                "a(uttssssssasttb)");
        if (r < 0)
                return ctl_error(&error, r, "read the partitions");
        r = sd_bus_message_enter_container(v->reply, 'a', "(uttssssssasttb)");
        while (r >= 0 && (r = sd_bus_message_enter_container(v->reply, 'r', "uttssssssasttb")) > 0) {
                Part *a = reallocarray(v->parts, v->n_parts + 1, sizeof(Part)), *p;
                const char *type, *uuid;
                if (!a)
                        return log_oom(), EXIT_FAILED;
                v->parts = a;
                p = &v->parts[v->n_parts++];
                *p = (Part){};
                r = sd_bus_message_read(v->reply, "uttssssss", &p->number, &p->start, &p->size, &type, &p->type_name,
                                        &p->fs, &p->label, &uuid, &p->mountpoint);
                if (r >= 0)
                        r = sd_bus_message_read_strv(v->reply, &p->flags);
                if (r >= 0)
                        r = sd_bus_message_read(v->reply, "ttb", &p->used, &p->minimum, &p->can_shrink);
                if (r >= 0)
                        r = sd_bus_message_exit_container(v->reply);
        }
        if (r < 0)
                return log_error_errno(r, "Bad reply: %m"), EXIT_FAILED;
        return 0;
}

static int disk_list(sd_bus *bus, const char *node) {
        _cleanup_(table_freep) Table *t = table_new("DEVICE", "SIZE", "TABLE", "PARTITIONS", "MODEL", "SCANNED", NULL);
        _cleanup_strv_free_ char **disks = NULL;
        int r = node_disks(bus, node, &disks);
        if (r != 0)
                return r;
        if (!t)
                return log_oom(), EXIT_FAILED;
        STRV_FOREACH (p, disks) {
                _cleanup_(disk_view_done) DiskView v = {};
                if (load_view(bus, *p, &v) != 0)
                        return EXIT_FAILED;
                if (table_add_row(t, "szsusT", v.device, v.size, v.table, (uint64_t) v.n_parts, v.model,
                                  v.scanned_at) < 0)
                        return EXIT_FAILED;
        }
        ctl_pager_open();
        table_print(t, "disks", arg.no_legend, arg.json);
        return EXIT_OK;
}

/* The disk as a bar, like GParted's map: each partition between '[' and ']' starting with its number,
 * '#' for what its filesystem uses, '=' for the rest, '.' for space outside any partition. */
static void print_map(const DiskView *v) {
        char bar[MAP_WIDTH + 1];

        for (size_t c = 0; c < MAP_WIDTH; c++) {
                uint64_t at = v->size / MAP_WIDTH * c + v->size / MAP_WIDTH / 2;
                bar[c] = '.';
                for (size_t i = 0; i < v->n_parts; i++) {
                        const Part *p = &v->parts[i];
                        if (at < p->start || at >= p->start + p->size)
                                continue;
                        bar[c] = at - p->start < p->used ? '#' : '=';
                }
        }
        /* Partition edges and numbers over the fill, so that even a small partition shows. */
        for (size_t i = 0; i < v->n_parts; i++) {
                const Part *p = &v->parts[i];
                size_t first = (size_t) ((double) p->start / (double) v->size * MAP_WIDTH),
                       last = (size_t) ((double) (p->start + p->size) / (double) v->size * MAP_WIDTH);
                last = MIN(MAX(last, first + 1), (size_t) MAP_WIDTH) - 1;
                first = MIN(first, (size_t) MAP_WIDTH - 1);
                bar[first] = '[';
                if (last > first)
                        bar[last] = ']';
                if (last > first + 1)
                        bar[first + 1] = p->number < 10 ? (char) ('0' + p->number) : '+';
        }
        bar[MAP_WIDTH] = 0;
        printf("%s\n", bar);
        printf("# used  = free in a partition  . unallocated\n\n");
}

static int disk_show(sd_bus *bus, const char *node, const char *device) {
        _cleanup_(table_freep) Table *t = table_new("NUMBER", "START", "SIZE", "TYPE", "FILESYSTEM", "LABEL", "FLAGS",
                                                     "USED", "MINIMUM", "SHRINK", "MOUNTPOINT", NULL);
        _cleanup_(disk_view_done) DiskView v = {};
        _cleanup_free_ char *path = NULL;
        int r = resolve_disk(bus, node, device, &path);
        if (r != 0)
                return r;
        if (!t || load_view(bus, path, &v) != 0)
                return EXIT_FAILED;
        for (size_t i = 0; i < v.n_parts; i++) {
                const Part *p = &v.parts[i];
                _cleanup_free_ char *flags = NULL;
                STRV_FOREACH (f, p->flags)
                        (void) strextend_printf(&flags, "%s%s", flags ? "," : "", *f);
                if (table_add_row(t, "uzzsssszzbs", (uint64_t) p->number, p->start, p->size, p->type_name, p->fs,
                                  p->label, flags, p->used, p->minimum, p->can_shrink, p->mountpoint) < 0)
                        return EXIT_FAILED;
        }
        if (arg.json == JSON_OFF) {
                printf("%s on %s: %s, %s table%s%s, scanned %s\n", v.device, node, FORMAT_BYTES(v.size), v.table,
                       isempty(v.model) ? "" : ", ", v.model, format_timestamp((char[FORMAT_TIMESTAMP_MAX]){}, v.scanned_at));
                print_map(&v);
        }
        table_print(t, "partitions", arg.no_legend, arg.json);
        return EXIT_OK;
}

/* partition=2 → u; *_bytes=10G → t (K, M, G, T: powers of 1024); value=true → b; anything else a string. */
static int append_parameter(sd_bus_message *m, const char *kv) {
        _cleanup_free_ char *key = NULL;
        const char *eq = strchr(kv, '='), *value;
        char *end;

        if (!eq || eq == kv)
                return log_error_errno(EINVAL, "\"%s\" is not KEY=VALUE.", kv);
        key = strndup(kv, (size_t) (eq - kv));
        value = eq + 1;
        if (!key)
                return -ENOMEM;
        if (streq(key, "partition")) {
                unsigned long n = strtoul(value, &end, 10);
                if (*end || end == value || n == 0 || n > 256)
                        return log_error_errno(EINVAL, "partition=%s is not a partition number.", value);
                return sd_bus_message_append(m, "{sv}", key, "u", (uint32_t) n);
        }
        if (endswith(key, "_bytes")) {
                uint64_t n;
                if (ctl_parse_size(value, &n) < 0)
                        return log_error_errno(EINVAL, "%s=%s is not a size (bytes, or with K, M, G, T).", key, value);
                return sd_bus_message_append(m, "{sv}", key, "t", n);
        }
        if (streq(key, "value")) {
                bool yes = STR_IN_SET(value, "true", "yes", "on", "1"), no = STR_IN_SET(value, "false", "no", "off", "0");
                if (!yes && !no)
                        return log_error_errno(EINVAL, "value=%s is not true or false.", value);
                return sd_bus_message_append(m, "{sv}", key, "b", yes);
        }
        return sd_bus_message_append(m, "{sv}", key, "s", value);
}

static int partition_queue(sd_bus *bus, const char *node, const char *device, const char *op, int argc, char **argv) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_free_ char *path = NULL;
        int r = resolve_disk(bus, node, device, &path);
        if (r != 0)
                return r;
        r = ctl_new_call(bus, path, PB_IFACE("Disk"), "QueueOperation", &m);
        if (r >= 0)
                r = sd_bus_message_append(m, "s", op);
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "{sv}");
        for (int i = 0; r >= 0 && i < argc; i++)
                r = append_parameter(m, argv[i]);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r >= 0)
                r = sd_bus_message_append(m, "a{sv}", 0);
        if (r < 0)
                return r == -EINVAL ? EXIT_USAGE : EXIT_FAILED;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *id;
        r = ctl_call(bus, m, &reply, "queue the operation");
        if (r < 0)
                return -r;
        if (sd_bus_message_read(reply, "s", &id) < 0)
                return EXIT_FAILED;
        printf("%s\n", id);
        return EXIT_OK;
}

typedef struct OpRow {
        const char *id, *op, *status, *message;
        char *params;
        uint64_t started, completed, done, total;
} OpRow;

static void op_rows_free(OpRow *rows, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(rows[i].params);
        free(rows);
}

/* Reads the Operations property into rows; the strings point into *reply. */
static int read_operations(sd_bus *bus, const char *path, sd_bus_message **reply, OpRow **ret, size_t *ret_n) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        OpRow *rows = NULL;
        size_t n = 0;
        int r = sd_bus_get_property(bus, PB_BUS_NAME, path, PB_IFACE("Disk"), "Operations", &error, reply,
                                    "a(ssa{sv}sstttt)");
        if (r < 0)
                return ctl_error(&error, r, "read the operations");
        r = sd_bus_message_enter_container(*reply, 'a', "(ssa{sv}sstttt)");
        while (r >= 0 && (r = sd_bus_message_enter_container(*reply, 'r', "ssa{sv}sstttt")) > 0) {
                OpRow *a = reallocarray(rows, n + 1, sizeof(OpRow)), *o;
                if (!a)
                        break;
                rows = a;
                o = &rows[n++];
                *o = (OpRow){};
                r = sd_bus_message_read(*reply, "ss", &o->id, &o->op);
                if (r >= 0)
                        r = sd_bus_message_enter_container(*reply, 'a', "{sv}");
                while (r >= 0 && (r = sd_bus_message_enter_container(*reply, 'e', "sv")) > 0) {
                        const char *key, *type, *s;
                        uint64_t t = 0;
                        int64_t x = 0;
                        uint32_t u = 0;
                        int b = 0;
                        r = sd_bus_message_read(*reply, "s", &key);
                        if (r >= 0)
                                r = sd_bus_message_peek_type(*reply, NULL, &type);
                        if (r < 0)
                                break;
                        if (streq(type, "s") && (r = sd_bus_message_read(*reply, "v", "s", &s)) >= 0)
                                (void) strextend_printf(&o->params, "%s%s=%s", o->params ? " " : "", key, s);
                        else if (streq(type, "b") && (r = sd_bus_message_read(*reply, "v", "b", &b)) >= 0)
                                (void) strextend_printf(&o->params, "%s%s=%s", o->params ? " " : "", key, b ? "true" : "false");
                        else if (streq(type, "x") && (r = sd_bus_message_read(*reply, "v", "x", &x)) >= 0)
                                (void) strextend_printf(&o->params, "%s%s=%" PRIi64, o->params ? " " : "", key, x);
                        else if (streq(type, "t") && (r = sd_bus_message_read(*reply, "v", "t", &t)) >= 0)
                                (void) strextend_printf(&o->params, "%s%s=%" PRIu64, o->params ? " " : "", key, t);
                        else if (streq(type, "u") && (r = sd_bus_message_read(*reply, "v", "u", &u)) >= 0)
                                (void) strextend_printf(&o->params, "%s%s=%" PRIu32, o->params ? " " : "", key, u);
                        else if (r >= 0)
                                r = sd_bus_message_skip(*reply, "v");
                        if (r >= 0)
                                r = sd_bus_message_exit_container(*reply);
                }
                if (r >= 0)
                        r = sd_bus_message_exit_container(*reply);
                if (r >= 0)
                        r = sd_bus_message_read(*reply, "sstttt", &o->status, &o->message, &o->started,
                                                &o->completed, &o->done, &o->total);
                if (r >= 0)
                        r = sd_bus_message_exit_container(*reply);
        }
        if (r < 0) {
                op_rows_free(rows, n);
                return log_error_errno(r, "Bad reply: %m"), EXIT_FAILED;
        }
        *ret = rows;
        *ret_n = n;
        return 0;
}

static int partition_list(sd_bus *bus, const char *node, const char *device) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(table_freep) Table *t =
                table_new("ID", "OPERATION", "PARAMETERS", "STATUS", "MESSAGE", "COMPLETED", NULL);
        _cleanup_free_ char *path = NULL;
        OpRow *rows = NULL;
        size_t n = 0;
        int r = resolve_disk(bus, node, device, &path);
        if (r != 0)
                return r;
        if (!t || read_operations(bus, path, &reply, &rows, &n) != 0)
                return EXIT_FAILED;
        for (size_t i = 0; i < n; i++)
                if (table_add_row(t, "sssssT", rows[i].id, rows[i].op, rows[i].params, rows[i].status,
                                  rows[i].message, rows[i].completed) < 0)
                        break;
        op_rows_free(rows, n);
        ctl_pager_open();
        table_print(t, "operations", arg.no_legend, arg.json);
        return EXIT_OK;
}

static int partition_remove(sd_bus *bus, const char *node, const char *device, const char *id) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_free_ char *path = NULL;
        int r = resolve_disk(bus, node, device, &path);
        if (r != 0)
                return r;
        r = ctl_new_call(bus, path, PB_IFACE("Disk"), "RemoveOperation", &m);
        if (r >= 0)
                r = sd_bus_message_append(m, "sa{sv}", id, 0);
        if (r < 0)
                return EXIT_FAILED;
        r = ctl_call(bus, m, NULL, "remove the operation");
        return r < 0 ? -r : EXIT_OK;
}

/* Each operation of the apply requested at since, until the node is done: a line as each changes state
 * (and for a long one, every tenth of the way), and a failure's error or a completion's message. The exit
 * code says whether everything applied. */
static int follow_apply(sd_bus *bus, const char *path, uint64_t since) {
        _cleanup_free_ char *seen = NULL;
        int r;

        for (;;) {
                _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
                _cleanup_free_ char *state = NULL;
                OpRow *rows = NULL;
                size_t n = 0;
                int applying = 0;

                r = sd_bus_get_property_trivial(bus, PB_BUS_NAME, path, PB_IFACE("Disk"), "Applying", &error,
                                                'b', &applying);
                if (r < 0)
                        return ctl_error(&error, r, "follow the apply");
                if (read_operations(bus, path, &reply, &rows, &n) != 0)
                        return EXIT_FAILED;
                for (size_t i = 0; i < n; i++) {
                        int status = operation_status_from_string(rows[i].status);
                        bool this_run = rows[i].completed >= since || status == OPERATION_RUNNING;
                        if (!this_run)
                                continue;
                        (void) strextend_printf(&state, "%s %s %s", rows[i].id, rows[i].op, rows[i].status);
                        if (status == OPERATION_RUNNING && rows[i].total > 0)
                                (void) strextend_printf(&state, " %" PRIu64 "%%",
                                                        rows[i].done * 10 / rows[i].total * 10);
                        (void) strextend_printf(&state, "\n");
                }
                /* Each line ("ID OPERATION STATUS") once, as it first appears. */
                for (char *line = state, *next; line && *line; line = next + 1) {
                        next = strchr(line, '\n');
                        *next = 0;
                        if (!seen || !strstr(seen, line))
                                printf("%s\n", line);
                        *next = '\n';
                }
                if (state) {
                        free(seen);
                        seen = TAKE_PTR(state);
                }
                op_rows_free(rows, n);
                if (!applying)
                        break;
                usleep(250 * 1000);
        }
        /* The outcome once, from the final state. */
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        OpRow *rows = NULL;
        size_t n = 0;
        bool failed = false;
        if (read_operations(bus, path, &reply, &rows, &n) != 0)
                return EXIT_FAILED;
        for (size_t i = 0; i < n; i++) {
                int status = operation_status_from_string(rows[i].status);
                if (rows[i].completed < since || isempty(rows[i].message))
                        continue;
                if (status == OPERATION_FAILED)
                        printf("Operation %s failed: %s\n", rows[i].id, rows[i].message);
                else
                        printf("%s\n", rows[i].message);
                failed = failed || status == OPERATION_FAILED;
        }
        op_rows_free(rows, n);
        return failed ? EXIT_FAILED : EXIT_OK;
}

/* Apply, and with --follow each operation's progress until the node is done. */
static int partition_apply(sd_bus *bus, const char *node, const char *device) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_free_ char *path = NULL;
        uint64_t since = now_realtime_usec();
        int r = resolve_disk(bus, node, device, &path);
        if (r != 0)
                return r;
        r = ctl_new_call(bus, path, PB_IFACE("Disk"), "Apply", &m);
        if (r >= 0)
                r = sd_bus_message_append(m, "a{sv}", 0);
        if (r < 0)
                return EXIT_FAILED;
        r = ctl_call(bus, m, NULL, "apply the operations");
        if (r < 0)
                return -r;
        return arg.follow ? follow_apply(bus, path, since) : EXIT_OK;
}

/* The erase is queued and applied at once; with --follow, until it is done and checked. */
static int disk_erase(sd_bus *bus, const char *node, const char *device) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_free_ char *path = NULL;
        uint64_t since = now_realtime_usec();
        const char *id;
        int r;

        if (!ctl_require(arg.method, "--method=discard|zero|secure", "disk erase"))
                return EXIT_USAGE;
        r = resolve_disk(bus, node, device, &path);
        if (r != 0)
                return r;
        r = ctl_new_call(bus, path, PB_IFACE("Disk"), "Erase", &m);
        if (r >= 0)
                r = sd_bus_message_append(m, "sa{sv}", arg.method, 0);
        if (r < 0)
                return EXIT_FAILED;
        r = ctl_call(bus, m, &reply, "erase the disk");
        if (r < 0)
                return -r;
        if (sd_bus_message_read(reply, "s", &id) < 0)
                return EXIT_FAILED;
        printf("%s\n", id);
        return arg.follow ? follow_apply(bus, path, since) : EXIT_OK;
}

int verb_disk(sd_bus *bus, int argc, char **argv) {
        if (argc == 2 && streq(argv[0], "list"))
                return disk_list(bus, argv[1]);
        if (argc == 3 && streq(argv[0], "show"))
                return disk_show(bus, argv[1], argv[2]);
        if (argc == 3 && streq(argv[0], "erase"))
                return disk_erase(bus, argv[1], argv[2]);
        log_error("Usage: purebootctl disk list NODE | disk show NODE DEVICE | disk erase NODE DEVICE "
                  "--method=discard|zero|secure [--follow]");
        return EXIT_USAGE;
}

int verb_partition(sd_bus *bus, int argc, char **argv) {
        const char *verb = argc > 0 ? argv[0] : "";
        if (argc >= 4 && streq(verb, "queue"))
                return partition_queue(bus, argv[1], argv[2], argv[3], argc - 4, argv + 4);
        if (argc == 3 && streq(verb, "list"))
                return partition_list(bus, argv[1], argv[2]);
        if (argc == 4 && streq(verb, "remove"))
                return partition_remove(bus, argv[1], argv[2], argv[3]);
        if (argc == 3 && streq(verb, "apply"))
                return partition_apply(bus, argv[1], argv[2]);
        log_error("Usage: purebootctl partition queue NODE DEVICE OPERATION KEY=VALUE... | partition list NODE DEVICE | "
                  "partition remove NODE DEVICE ID | partition apply NODE DEVICE [--follow]");
        return EXIT_USAGE;
}
