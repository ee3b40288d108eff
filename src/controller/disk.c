/* SPDX-License-Identifier: MIT */
/* Disks and their partition operations: the scan a node reported, the queue checked on paper against it
 * (src/shared/disk-model.c), the apply the node is asked for, and each operation's report. Every change is
 * written in one transaction and only then made in memory. */
#include <inttypes.h>
#include <stdarg.h>

#include "bus-gateway.h"
#include "bus-util.h"
#include "disk.h"
#include "log.h"
#include "node.h"
#include "pureboot-errors.h"
#include "util.h"

PartitionOperation *partition_operation_free(PartitionOperation *op) {
        if (!op)
                return NULL;
        free(op->id);
        free(op->operation);
        free(op->message);
        json_object_put(op->params);
        free(op);
        return NULL;
}

Disk *disk_free(Disk *d) {
        if (!d)
                return NULL;
        disk_info_done(&d->info);
        free(d->fingerprint);
        for (size_t i = 0; i < d->n_operations; i++)
                partition_operation_free(d->operations[i]);
        free(d->operations);
        free(d);
        return NULL;
}

static const char *kernel_name(const Disk *d) {
        const char *name = strrchr(d->info.device, '/');
        return name ? name + 1 : d->info.device;
}

char *disk_path(const Disk *d) {
        _cleanup_free_ char *prefix = NULL;
        char *path = NULL;
        if (asprintf(&prefix, PB_ROOT_PATH "/node/%s/disk", d->node->id) < 0)
                return NULL;
        return sd_bus_path_encode(prefix, kernel_name(d), &path) < 0 ? NULL : path;
}

Disk *disk_find(Node *n, const char *path_name) {
        for (size_t i = 0; i < n->n_disks; i++) {
                _cleanup_free_ char *path = disk_path(n->disks[i]);
                const char *tail = path ? strrchr(path, '/') : NULL;
                if (tail && streq(tail + 1, path_name))
                        return n->disks[i];
        }
        return NULL;
}

int disk_resolve(Node *n, const char *name, Disk **ret, sd_bus_error *error) {
        for (size_t i = 0; i < n->n_disks; i++)
                if (streq(n->disks[i]->info.device, name) || streq(kernel_name(n->disks[i]), name)) {
                        *ret = n->disks[i];
                        return 0;
                }
        return sd_bus_error_setf(error, PB_ERROR_NO_SUCH_DISK,
                                 "Node %s has no disk \"%.64s\" in its last scan%s. Boot it into partition mode "
                                 "(purebootctl node set-mode %s partition) or scan it (purebootctl node scan).",
                                 n->hostname, name, n->n_disks == 0 ? " (it has not reported one yet)" : "",
                                 n->hostname);
}

PartitionOperation *disk_operation(Disk *d, const char *id) {
        for (size_t i = 0; i < d->n_operations; i++)
                if (streq(d->operations[i]->id, id) || (strlen(id) >= 4 && startswith(d->operations[i]->id, id)))
                        return d->operations[i];
        return NULL;
}

static void emit(Disk *d, const char *first, ...) {
        _cleanup_free_ char *path = disk_path(d);
        va_list ap;

        va_start(ap, first);
        manager_emit_changed_va(d->node->manager, path, PB_IFACE("Disk"), first, ap);
        va_end(ap);
        bus_gateway_notify(d->node->manager, "node", d->node->id); /* its orders name its disks */
}

/* The disk as it will be once everything not yet in the scan is done: operations completed since the
 * scan, then the pending ones, in order. Stops at the first that no longer fits, naming it. */
static int paper_disk(Disk *d, DiskInfo *ret, PartitionOperation **ret_bad, char **ret_message) {
        _cleanup_(disk_info_done) DiskInfo paper = {};
        int r = disk_info_copy(&d->info, &paper);
        if (r < 0)
                return r;
        for (size_t i = 0; i < d->n_operations; i++) {
                PartitionOperation *op = d->operations[i];
                bool counts = op->status == OPERATION_PENDING || op->status == OPERATION_RUNNING ||
                              (op->status == OPERATION_COMPLETED && op->completed_at > d->scanned_at);
                if (!counts)
                        continue;
                r = disk_info_apply(&paper, op->operation, op->params, ret_message);
                if (r < 0) {
                        *ret_bad = op;
                        return r;
                }
        }
        *ret = paper;
        paper = (DiskInfo){};
        return 0;
}

static bool apply_running(const Disk *d) {
        return d->apply_requested_at != 0;
}

static int refuse_while_applying(Disk *d, sd_bus_error *error) {
        return sd_bus_error_setf(error, PB_ERROR_INVALID_STATE,
                                 "%s on node %s is applying its operations; wait until they are done "
                                 "(purebootctl partition list %s %s).",
                                 d->info.device, d->node->hostname, d->node->hostname, d->info.device);
}

int disk_queue_operation(Disk *d, const char *op, json_object *params, char **ret_id, sd_bus_error *error) {
        Manager *m = d->node->manager;
        _cleanup_(disk_info_done) DiskInfo paper = {};
        _cleanup_free_ char *message = NULL;
        PartitionOperation *bad = NULL, *o, **a;
        char id[PB_ID_LEN + 1];
        int r;

        if (apply_running(d))
                return refuse_while_applying(d, error);
        r = paper_disk(d, &paper, &bad, &message);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return sd_bus_error_setf(error, PB_ERROR_OPERATION_REFUSED,
                                         "Queued operation %.8s (%s) no longer fits the disk as last scanned: %s "
                                         "Remove it first (purebootctl partition remove).",
                                         bad->id, bad->operation, strna(message));
        r = disk_info_apply(&paper, op, params, &message);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return sd_bus_error_set(error, r == -EINVAL ? PB_ERROR_INVALID_ARGUMENT : PB_ERROR_OPERATION_REFUSED,
                                        message);
        if (!ret_id)
                return 0;
        r = id_new(id);
        if (r < 0)
                return r;
        o = calloc(1, sizeof(PartitionOperation));
        a = reallocarray(d->operations, d->n_operations + 1, sizeof(PartitionOperation *));
        if (!o || !a) {
                free(o);
                return -ENOMEM;
        }
        d->operations = a;
        *o = (PartitionOperation){
                .id = strdup(id),
                .operation = strdup(op),
                .params = json_object_get(params),
                .status = OPERATION_PENDING,
                .position = d->n_operations ? d->operations[d->n_operations - 1]->position + 1 : 1,
                .created_at = now_realtime_usec(),
        };
        if (!o->id || !o->operation) {
                partition_operation_free(o);
                return -ENOMEM;
        }
        r = store_operation_insert(m->store, d->node->id, d->info.device, o);
        if (r < 0) {
                partition_operation_free(o);
                return bus_store_error(error, r, "queue the operation");
        }
        d->operations[d->n_operations++] = o;
        emit(d, "Operations", NULL);
        *ret_id = strdup(id);
        return *ret_id ? 0 : -ENOMEM;
}

int disk_erase(Disk *d, const char *method, char **ret_id, sd_bus_error *error) {
        _cleanup_(json_object_unrefp) json_object *params = json_object_new_object();
        _cleanup_free_ char *id = NULL;
        int r;

        if (!params)
                return -ENOMEM;
        if (apply_running(d))
                return refuse_while_applying(d, error);
        for (size_t i = 0; i < d->n_operations; i++)
                if (d->operations[i]->status == OPERATION_PENDING)
                        return sd_bus_error_setf(
                                error, PB_ERROR_INVALID_STATE,
                                "%s on node %s has operations queued; an erase takes the disk "
                                "alone. Remove them first (purebootctl partition list and "
                                "partition remove).",
                                d->info.device, d->node->hostname);
        json_object_object_add(params, "method", json_object_new_string(method));
        r = disk_queue_operation(d, "erase", params, ret_id ? &id : NULL, error);
        if (r < 0 || !ret_id)
                return r;
        /* Queued; if the apply cannot be requested, it stays queued for Apply or RemoveOperation. */
        r = disk_apply(d, error);
        if (r < 0)
                return r;
        *ret_id = TAKE_PTR(id);
        return 0;
}

int disk_remove_operation(Disk *d, const char *id, sd_bus_error *error) {
        Manager *m = d->node->manager;
        PartitionOperation *op = disk_operation(d, id);
        int r;

        if (!op)
                return sd_bus_error_setf(error, PB_ERROR_NO_SUCH_OPERATION,
                                         "%s on node %s has no operation \"%.40s\" (purebootctl partition list "
                                         "shows them).", d->info.device, d->node->hostname, id);
        if (op->status == OPERATION_RUNNING || (op->status == OPERATION_PENDING && apply_running(d)))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_STATE,
                                         "Operation %.8s is being applied; it can be removed once the apply is "
                                         "done.", op->id);
        r = store_operation_delete(m->store, op->id);
        if (r < 0)
                return bus_store_error(error, r, "remove the operation");
        size_t i = 0;
        while (d->operations[i] != op)
                i++;
        memmove(d->operations + i, d->operations + i + 1, (d->n_operations - i - 1) * sizeof(PartitionOperation *));
        d->n_operations--;
        partition_operation_free(op);
        emit(d, "Operations", NULL);
        return 0;
}

static size_t count_status(Disk *d, OperationStatus s) {
        size_t n = 0;
        for (size_t i = 0; i < d->n_operations; i++)
                n += d->operations[i]->status == s;
        return n;
}

int disk_apply(Disk *d, sd_bus_error *error) {
        Manager *m = d->node->manager;
        _cleanup_(disk_info_done) DiskInfo paper = {};
        _cleanup_free_ char *message = NULL;
        PartitionOperation *bad = NULL;
        uint64_t now = now_realtime_usec();
        int r;

        if (apply_running(d))
                return refuse_while_applying(d, error);
        if (count_status(d, OPERATION_PENDING) == 0)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_STATE,
                                         "Nothing is queued on %s of node %s; queue operations first (purebootctl "
                                         "partition queue).", d->info.device, d->node->hostname);
        for (size_t i = 0; i < d->n_operations; i++)
                if (d->operations[i]->status == OPERATION_COMPLETED && d->operations[i]->completed_at > d->scanned_at)
                        return sd_bus_error_setf(error, PB_ERROR_INVALID_STATE,
                                                 "Node %s has not reported its scan after the last apply yet; try "
                                                 "again once it has.", d->node->hostname);
        /* Once more against the scan: the disk may have changed since the operations were queued. */
        r = paper_disk(d, &paper, &bad, &message);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return sd_bus_error_setf(error, PB_ERROR_OPERATION_REFUSED,
                                         "Operation %.8s (%s) no longer fits %s as last scanned: %s Remove it and "
                                         "queue what fits now.", bad->id, bad->operation, d->info.device,
                                         strna(message));
        r = store_disk_set_apply(m->store, d->node->id, d->info.device, now);
        if (r < 0)
                return bus_store_error(error, r, "request the apply");
        d->apply_requested_at = now;
        emit(d, "Applying", NULL);
        return 0;
}

json_object *disk_operations_to_apply(Disk *d) {
        json_object *a = json_object_new_array();
        if (!apply_running(d))
                return a;
        for (size_t i = 0; i < d->n_operations; i++) {
                PartitionOperation *op = d->operations[i];
                if (op->status != OPERATION_PENDING && op->status != OPERATION_RUNNING)
                        continue;
                json_object *o = json_object_new_object();
                json_object_object_add(o, "id", json_object_new_string(op->id));
                json_object_object_add(o, "operation", json_object_new_string(op->operation));
                json_object_object_add(o, "parameters", json_object_get(op->params));
                json_object_array_add(a, o);
        }
        return a;
}

static bool transition_allowed(OperationStatus from, OperationStatus to) {
        /* a resent report of the same state is harmless; a failure may come before the start */
        return (from == OPERATION_PENDING && (to == OPERATION_RUNNING || to == OPERATION_FAILED)) ||
               (from == OPERATION_RUNNING && to != OPERATION_PENDING);
}

int disk_report_operation(Disk *d, PartitionOperation *op, const OperationReport *report, uint64_t sequence,
                          sd_bus_error *error) {
        Manager *m = d->node->manager;
        Node *n = d->node;
        OperationStatus status = report->status;
        uint64_t now = now_realtime_usec(), apply = d->apply_requested_at;
        _cleanup_free_ char *message = NULL;
        int r;

        if (!transition_allowed(op->status, status))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_STATE, "Operation %s is %s; it cannot become %s.",
                                         op->id, operation_status_to_string(op->status),
                                         operation_status_to_string(status));
        if (report->done > report->total)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "Operation %s: %" PRIu64 " bytes done of %" PRIu64
                                         " is more than all.",
                                         op->id, report->done, report->total);
        if (status == OPERATION_FAILED && !(message = strndup(strempty(report->error), 1000)))
                return -ENOMEM;
        if (status == OPERATION_COMPLETED && report->result && !(message = strndup(report->result, 1000)))
                return -ENOMEM;

        /* The rows first, from copies; the objects themselves once they are stored. */
        PartitionOperation updated = *op;
        if (status == OPERATION_RUNNING && op->status == OPERATION_PENDING)
                updated.started_at = now;
        if (status == OPERATION_COMPLETED || status == OPERATION_FAILED)
                updated.completed_at = now;
        updated.status = status;
        if (message)
                updated.message = message;
        /* The apply is over at the first failure, or when nothing is left to do (this one counted done). */
        size_t left = count_status(d, OPERATION_PENDING) + count_status(d, OPERATION_RUNNING) -
                      (op->status == OPERATION_PENDING || op->status == OPERATION_RUNNING);
        if (status == OPERATION_FAILED || (status == OPERATION_COMPLETED && left == 0))
                apply = 0;
        Node node = *n;
        node.report_sequence = sequence;

        r = store_begin(m->store);
        if (r < 0)
                return r;
        r = store_operation_update(m->store, &updated);
        if (r >= 0 && apply != d->apply_requested_at)
                r = store_disk_set_apply(m->store, n->id, d->info.device, apply);
        if (r >= 0)
                r = store_node_update(m->store, &node);
        if (r >= 0)
                r = store_commit(m->store);
        if (r < 0) {
                store_rollback(m->store);
                return r;
        }
        bool applying_changed = apply != d->apply_requested_at;
        op->status = updated.status;
        op->started_at = updated.started_at;
        op->completed_at = updated.completed_at;
        if (report->total > 0) {
                op->done = report->done;
                op->total = report->total;
        }
        if (message)
                free_and_replace(op->message, message);
        d->apply_requested_at = apply;
        n->report_sequence = sequence;
        if (status == OPERATION_FAILED)
                log_warning("Operation %s (%s) on %s of %s failed: %s", op->id, op->operation,
                            d->info.device, n->hostname, op->message);
        emit(d, "Operations", applying_changed ? "Applying" : NULL, NULL);
        return 0;
}

static int disk_new(Node *n, json_object *o, Disk **ret, const char **ret_bad) {
        Disk *d = calloc(1, sizeof(Disk));
        int r;
        if (!d)
                return -ENOMEM;
        d->node = n;
        r = disk_info_from_json(o, &d->info, ret_bad);
        if (r >= 0 && !(d->fingerprint = disk_info_fingerprint(&d->info)))
                r = -ENOMEM;
        if (r < 0) {
                disk_free(d);
                return r;
        }
        *ret = d;
        return 0;
}

static Disk *disk_by_device(Node *n, const char *device) {
        for (size_t i = 0; i < n->n_disks; i++)
                if (streq(n->disks[i]->info.device, device))
                        return n->disks[i];
        return NULL;
}

static int emit_disk_set(Node *n, Disk **gone, size_t n_gone, Disk **added, size_t n_added) {
        Manager *m = n->manager;
        if (!m->bus)
                return 0;
        for (size_t i = 0; i < n_gone; i++) {
                _cleanup_free_ char *path = disk_path(gone[i]);
                if (path)
                        (void) sd_bus_emit_object_removed(m->bus, path);
        }
        for (size_t i = 0; i < n_added; i++) {
                _cleanup_free_ char *path = disk_path(added[i]);
                if (path)
                        (void) sd_bus_emit_object_added(m->bus, path);
        }
        return 0;
}

int disk_report_scan(Node *n, json_object *disks, uint64_t sequence, const char **ret_bad) {
        Manager *m = n->manager;
        size_t count = json_object_array_length(disks);
        _cleanup_free_ Disk **fresh = calloc(count + 1, sizeof(Disk *)), **gone = calloc(n->n_disks + 1, sizeof(Disk *)),
                           **added = calloc(count + 1, sizeof(Disk *));
        size_t n_gone = 0, n_added = 0;
        uint64_t now = now_realtime_usec(), saved_seq = n->report_sequence;
        int r = 0;

        if (!fresh || !gone || !added)
                return -ENOMEM;
        for (size_t i = 0; i < count && r >= 0; i++) {
                r = disk_new(n, json_object_array_get_idx(disks, i), &fresh[i], ret_bad);
                for (size_t j = 0; r >= 0 && j < i; j++)
                        if (streq(fresh[j]->info.device, fresh[i]->info.device))
                                *ret_bad = "device", r = -EINVAL;
        }
        n->report_sequence = sequence;
        if (r >= 0)
                r = store_begin(m->store);
        for (size_t i = 0; r >= 0 && i < count; i++)
                r = store_disk_upsert(m->store, n->id, &fresh[i]->info, fresh[i]->fingerprint, now);
        for (size_t i = 0; r >= 0 && i < n->n_disks; i++) {
                bool listed = false;
                for (size_t j = 0; j < count; j++)
                        listed = listed || streq(fresh[j]->info.device, n->disks[i]->info.device);
                if (!listed) {
                        gone[n_gone++] = n->disks[i];
                        r = store_disk_delete(m->store, n->id, n->disks[i]->info.device);
                }
        }
        if (r >= 0)
                r = store_node_update(m->store, n);
        if (r >= 0)
                r = store_commit(m->store);
        if (r < 0) {
                store_rollback(m->store);
                n->report_sequence = saved_seq;
                for (size_t i = 0; i < count; i++)
                        disk_free(fresh[i]);
                return r;
        }

        /* In memory: a disk seen before keeps its object, operations and apply; its scan is replaced. */
        Disk **list = calloc(count + 1, sizeof(Disk *));
        if (!list)
                return -ENOMEM; /* the store has it; a restart loads it */
        for (size_t i = 0; i < count; i++) {
                Disk *old = disk_by_device(n, fresh[i]->info.device);
                fresh[i]->scanned_at = now;
                if (!old) {
                        list[i] = added[n_added++] = fresh[i];
                        continue;
                }
                disk_info_done(&old->info);
                old->info = fresh[i]->info;
                fresh[i]->info = (DiskInfo){};
                free(old->fingerprint);
                old->fingerprint = TAKE_PTR(fresh[i]->fingerprint);
                old->scanned_at = now;
                disk_free(fresh[i]);
                list[i] = old;
                emit(old, "Size", "Model", "Serial", "PartitionTable", "Partitions", "ScannedAt", "Fingerprint", NULL);
        }
        emit_disk_set(n, gone, n_gone, added, n_added);
        for (size_t i = 0; i < n_gone; i++)
                disk_free(gone[i]);
        free(n->disks);
        n->disks = list;
        n->n_disks = count;
        node_emit_changed(n, "Disks", NULL);
        return 0;
}

static int load_disk(void *userdata, const char *node_id, json_object *o, uint64_t scanned_at,
                     uint64_t apply_requested_at) {
        Manager *m = userdata;
        Node *n = hashmap_get(m->nodes, node_id);
        const char *bad = NULL;
        Disk *d, **a;
        int r;

        if (!n)
                return 0;
        r = disk_new(n, o, &d, &bad);
        if (r < 0)
                return r == -ENOMEM ? r
                                    : (log_warning_errno(r, "Ignoring a stored disk of node %s: bad %s.", node_id, bad), 0);
        a = reallocarray(n->disks, n->n_disks + 1, sizeof(Disk *));
        if (!a) {
                disk_free(d);
                return -ENOMEM;
        }
        d->scanned_at = scanned_at;
        d->apply_requested_at = apply_requested_at;
        n->disks = a;
        n->disks[n->n_disks++] = d;
        return 0;
}

static int load_operation(void *userdata, const char *node_id, const char *device, PartitionOperation *op) {
        Manager *m = userdata;
        Node *n = hashmap_get(m->nodes, node_id);
        Disk *d = n ? disk_by_device(n, device) : NULL;
        PartitionOperation **a;

        if (!d) {
                partition_operation_free(op);
                return 0;
        }
        a = reallocarray(d->operations, d->n_operations + 1, sizeof(PartitionOperation *));
        if (!a) {
                partition_operation_free(op);
                return -ENOMEM;
        }
        d->operations = a;
        d->operations[d->n_operations++] = op;
        return 0;
}

int disk_load_all(Manager *m) {
        int r = store_disks_load(m->store, load_disk, m);
        if (r < 0)
                return log_error_errno(r, "Failed to load disks: %m");
        r = store_operations_load(m->store, load_operation, m);
        if (r < 0)
                return log_error_errno(r, "Failed to load partition operations: %m");
        return 0;
}
