/* SPDX-License-Identifier: MIT */
/* pureboot-agent partition and scan: the node's side of partition mode. It scans its disks and reports
 * them, then follows WatchNode: it scans again when asked, and when the controller says a disk's queued
 * operations are to be applied, it fetches them, checks that the disk is still the one they were checked
 * against, and runs them in order, reporting each. `scan` reports (or prints) one scan and exits. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "agent.h"
#include "apply.h"
#include "erase.h"
#include "job.h"
#include "log.h"
#include "queue.h"
#include "scan.h"
#include "usedmap.h"
#include "util.h"

struct Partitioner {
        Agent *agent;
        bool once;            /* scan: report one scan and finish */
        uint64_t scan_seen;   /* the scanRequestedAt acted on; UINT64_MAX until the first record */
        char *fetching;       /* the device whose operations are being fetched or applied */
        json_object *operations; /* those being applied, from next on; an erase runs in eraser */
        size_t next;
        Eraser *eraser;
};

Partitioner *partitioner_free(Partitioner *p) {
        if (!p)
                return NULL;
        erase_free(p->eraser);
        json_object_put(p->operations);
        free(p->fetching);
        free(p);
        return NULL;
}

static int report_scan(Agent *a) {
        json_object *disks = NULL, *p;
        int r = scan_disks(a->settings.devices, &disks);
        if (r < 0)
                return r;
        p = json_object_new_object();
        json_object_object_add(p, "disks", disks);
        return queue_push(a->queue, "ReportDisks", p);
}

static json_object *operation_report(const char *device, const char *id, const char *status) {
        json_object *p = json_object_new_object();
        json_object_object_add(p, "device", json_object_new_string(device));
        json_object_object_add(p, "operation", json_object_new_string(id));
        json_object_object_add(p, "status", json_object_new_string(status));
        return p;
}

static void report_operation(Agent *a, const char *device, const char *id, const char *status,
                             const char *error) {
        json_object *p = operation_report(device, id, status);
        json_object_object_add(p, "error", error ? json_object_new_string(error) : NULL);
        (void) queue_push(a->queue, "ReportOperation", p);
}

static json_object *current_operation(Partitioner *p) {
        return json_object_array_get_idx(p->operations, p->next);
}

/* The run is over (done, or stopped at a failure): the controller gets the disks as they are now. */
static void apply_finished(Agent *a) {
        Partitioner *p = a->partitioner;
        json_object_put(p->operations);
        p->operations = NULL;
        p->fetching = mfree(p->fetching);
        if (report_scan(a) < 0)
                log_error("Failed to scan the disks after applying.");
}

static void on_erase_progress(Agent *a, Eraser *e, uint64_t done, uint64_t total) {
        Partitioner *p = a->partitioner;
        json_object *r =
                operation_report(p->fetching, json_get_string(current_operation(p), "id"), "running");
        (void) e;
        json_object_object_add(r, "done", json_object_new_int64((int64_t) done));
        json_object_object_add(r, "total", json_object_new_int64((int64_t) total));
        (void) queue_push(a->queue, "ReportOperation", r);
}

/* The current operation is over: reported as failed (why) or completed (what it did, if it says). */
static void operation_ended(Agent *a, const char *error, const char *result) {
        Partitioner *p = a->partitioner;
        json_object *o = current_operation(p);
        const char *id = json_get_string(o, "id"), *op = json_get_string(o, "operation");
        json_object *r = operation_report(p->fetching, id, error ? "failed" : "completed");

        if (error) {
                log_error("Operation %s (%s) on %s failed: %s", id, op, p->fetching, error);
                json_object_object_add(r, "error", json_object_new_string(error));
        } else if (result) {
                log_info("%s", result);
                json_object_object_add(r, "result", json_object_new_string(result));
        }
        (void) queue_push(a->queue, "ReportOperation", r);
}

static void apply_next(Agent *a);

static void on_erased(Agent *a, Eraser *e, const char *error, const char *result) {
        Partitioner *p = a->partitioner;
        (void) e;

        operation_ended(a, error, result);
        p->eraser = erase_free(p->eraser);
        if (error)
                return apply_finished(a);
        p->next++;
        apply_next(a);
}

/* Runs the operations in order from p->next; the first failure ends the run and leaves the rest pending.
 * An erase goes on in its thread, and the run with it when it is done. */
static void apply_next(Agent *a) {
        Partitioner *p = a->partitioner;
        const char *device = p->fetching;

        for (; p->next < json_object_array_length(p->operations); p->next++) {
                json_object *o = current_operation(p), *params;
                const char *id = json_get_string(o, "id"), *op = json_get_string(o, "operation");
                _cleanup_free_ char *error = NULL;
                int r;

                /* Done already, its report not yet taken: never twice. */
                if (queue_contains(a->queue, "ReportOperation", "operation", id))
                        continue;
                json_object_object_get_ex(o, "parameters", &params);
                log_info("Applying %s %s to %s.", op, json_object_to_json_string_ext(params, JSON_C_TO_STRING_PLAIN),
                         device);
                report_operation(a, device, id, "running", NULL);
                if (streq(op, "erase")) {
                        int method = erase_method_from_string(json_get_string(params, "method"));
                        r = method < 0 ? -EINVAL
                                       : erase_start(a, device, method, on_erase_progress, on_erased,
                                                     &p->eraser);
                        if (r >= 0)
                                return;
                        error = strdup(method < 0 ? "Unknown erase method." : "Could not start the erase.");
                } else if (apply_operation(device, id, op, params, a->settings.state_dir, &error) >= 0) {
                        operation_ended(a, NULL, NULL);
                        continue;
                }
                operation_ended(a, error ?: "failed for an unknown reason", NULL);
                break;
        }
        apply_finished(a);
}

/* Before anything else: a move a crash interrupted is finished (or undone), and the controller hears which.
 */
static void recover(Agent *a) {
        _cleanup_free_ char *device = NULL, *id = NULL, *error = NULL, *message = NULL;
        int r = apply_recover(a->settings.state_dir, &device, &id, &error);

        if (r <= 0 || !id)
                return;
        if (error && asprintf(&message, "Interrupted (the agent stopped in the middle of it) and undone: %s",
                              error) < 0)
                return (void) log_oom();
        report_operation(a, device, id, error ? "failed" : "completed", message);
}

static void on_fetched(Agent *a, const char *error, json_object *reply, void *userdata) {
        Partitioner *p = a->partitioner;
        _cleanup_(disk_info_done) DiskInfo d = {};
        _cleanup_free_ char *fingerprint = NULL;
        const char *device = p->fetching;
        json_object *operations = NULL;
        (void) userdata;

        if (error) {
                log_warning("FetchOperations for %s was refused: %s", device, error);
                p->fetching = mfree(p->fetching);
                return;
        }
        if (!json_object_object_get_ex(reply, "operations", &operations) ||
            json_object_array_length(operations) == 0) {
                p->fetching = mfree(p->fetching);
                return;
        }
        /* The operations were checked against the scan the controller has: only that disk may get them. */
        if (scan_disk(device, &d) < 0 || !(fingerprint = disk_info_fingerprint(&d)) ||
            !streq_ptr(fingerprint, json_get_string(reply, "fingerprint"))) {
                const char *id = json_get_string(json_object_array_get_idx(operations, 0), "id");
                log_error("%s changed since the scan the operations were checked against; applying nothing.", device);
                report_operation(a, device, id, "failed",
                                 "The disk changed since the scan these operations were checked against. It has "
                                 "been scanned again; queue what fits now.");
                return apply_finished(a);
        }
        p->operations = json_object_get(operations);
        p->next = 0;
        apply_next(a);
}

static void on_orders(Agent *a, json_object *orders) {
        Partitioner *p = a->partitioner;
        uint64_t requested = (uint64_t) json_get_int(orders, "scanRequestedAt");
        json_object *apply;

        if (p->scan_seen == UINT64_MAX) /* we scanned at the start: what was asked before is answered */
                p->scan_seen = requested;
        if (requested > p->scan_seen) {
                p->scan_seen = requested;
                log_info("The controller asked for a scan.");
                if (report_scan(a) < 0)
                        log_error("Failed to scan the disks.");
        }
        if (p->fetching || !json_object_object_get_ex(orders, "apply", &apply))
                return;
        /* One disk at a time; the next record lists the others again. A disk whose operation reports are
         * still queued is being applied already (or was): the controller has not heard all of it yet, and
         * what it would hand out now is stale. Each report it takes brings a new record. */
        const char *device = NULL;
        for (size_t i = 0; !device && i < json_object_array_length(apply); i++) {
                const char *d = json_object_get_string(json_object_array_get_idx(apply, i));
                if (!queue_contains(a->queue, "ReportOperation", "device", d))
                        device = d;
        }
        if (!device)
                return;
        json_object *params = json_object_new_object();
        json_object_object_add(params, "device", json_object_new_string(device));
        p->fetching = strdup(device);
        if (!p->fetching || client_call(a, "FetchOperations", params, on_fetched, NULL) < 0) {
                free(p->fetching);
                p->fetching = NULL;
                log_error("Failed to ask for the operations of %s.", device);
        }
}

/* A move a killed run left half done is finished (or undone) first, then the disks are reported: once
 * (scan), or as the controller asks (partition mode). */
static int on_started(Agent *a) {
        Partitioner *p = a->partitioner;
        int r;

        recover(a);
        r = report_scan(a);
        if (r < 0)
                return r;
        if (p->once) {
                agent_finish(a, AGENT_EXIT_SUCCESS);
                return 1;
        }
        p->scan_seen = UINT64_MAX;
        log_info("In partition mode; waiting for the controller's orders.");
        return 0;
}

static const JobKind partition_job = {
        .role = "node",
        .started = on_started,
        .changed = on_orders,
};

int partition_start(Agent *a, bool once) {
        Partitioner *p = calloc(1, sizeof(Partitioner));
        if (!p)
                return -ENOMEM;
        p->agent = a;
        p->once = once;
        a->partitioner = p;
        parted_exceptions_init();
        return job_start(a, &partition_job);
}

/* The used-block map of each of devices, as {"device", "usedMap"}. */
static int used_maps(char **devices, json_object **ret) {
        _cleanup_(json_object_unrefp) json_object *maps = json_object_new_array();
        int r;

        if (!devices)
                return log_error_errno(EINVAL, "--used-map needs --devices=DEV: the disks to map.");
        for (char **d = devices; *d; d++) {
                _cleanup_(disk_info_done) DiskInfo info = {};
                _cleanup_(used_map_done) UsedMap m = {};
                json_object *o = json_object_new_object();
                if (!o)
                        return -ENOMEM;
                json_object_array_add(maps, o);
                r = scan_disk(*d, &info);
                if (r < 0)
                        return log_error_errno(r, "Failed to scan %s: %m", *d);
                r = used_map_build(*d, &info, &m);
                if (r < 0)
                        return r;
                json_object_object_add(o, "device", json_object_new_string(*d));
                json_object_object_add(o, "usedMap", used_map_to_json(&m));
        }
        *ret = TAKE_PTR(maps);
        return 0;
}

int scan_print(char **devices, bool used_map) {
        _cleanup_(json_object_unrefp) json_object *disks = NULL;
        int r;

        parted_exceptions_init();
        r = used_map ? used_maps(devices, &disks) : scan_disks(devices, &disks);
        if (r < 0)
                return r;
        puts(json_object_to_json_string_ext(disks, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
        return 0;
}
