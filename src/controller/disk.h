/* SPDX-License-Identifier: MIT */
/* A node's disks as its last scan saw them, and the partition operations queued on each: validated on
 * paper against the scan and everything queued before, applied by the node when asked, and reported back
 * one by one. */
#pragma once

#include "domain.h"

#include <systemd/sd-bus.h>

#include "disk-model.h"
#include "manager.h"

typedef struct Node Node;

typedef struct PartitionOperation {
        char *id, *operation;
        char *message; /* why a failed one failed, or what a completed one did (an erase: how it was checked)
                        */
        OperationStatus status;
        json_object *params;
        uint64_t position, created_at, started_at, completed_at;
        uint64_t done, total; /* bytes, as a long one (erase) reports them while running; not stored */
} PartitionOperation;

/* What a node reports of one operation. */
typedef struct OperationReport {
        OperationStatus status;
        const char *error, *result;
        uint64_t done, total;
} OperationReport;

typedef struct Disk {
        Node *node;
        DiskInfo info;
        char *fingerprint;
        uint64_t scanned_at;
        uint64_t apply_requested_at; /* 0 unless the node is to apply (or is applying) the pending operations */
        PartitionOperation **operations; /* by position */
        size_t n_operations;
} Disk;

PartitionOperation *partition_operation_free(PartitionOperation *op);
Disk *disk_free(Disk *d);
char *disk_path(const Disk *d);
/* The disk of node n whose object path ends in name (the device's kernel name, bus-escaped). */
Disk *disk_find(Node *n, const char *path_name);
/* Finds a disk of n by device path (/dev/sda) or kernel name (sda). */
int disk_resolve(Node *n, const char *name, Disk **ret, sd_bus_error *error);

/* A scan from the node: the disks it lists replace the ones it listed before (a disk no longer listed goes,
 * with its operations). Emits the changes. */
int disk_report_scan(Node *n, json_object *disks, uint64_t sequence, const char **ret_bad);

/* Validates op against the scan with every pending operation applied before it, and queues it. */
/* ret_id NULL: only checks that the operation fits (as the bus method does before polkit). */
int disk_queue_operation(Disk *d, const char *op, json_object *params, char **ret_id, sd_bus_error *error);
/* Queues the erase of the whole disk by method (discard, zero, secure) and asks the node to apply it: only
 * with nothing else queued. ret_id NULL: only checks. */
int disk_erase(Disk *d, const char *method, char **ret_id, sd_bus_error *error);
/* Removes an operation that is not running. */
int disk_remove_operation(Disk *d, const char *id, sd_bus_error *error);
/* Asks the node to apply the pending operations, after checking them once more against the scan. */
int disk_apply(Disk *d, sd_bus_error *error);
/* What the node reported of one operation; sequence as in every node report. */
int disk_report_operation(Disk *d, PartitionOperation *op, const OperationReport *report, uint64_t sequence,
                          sd_bus_error *error);
PartitionOperation *disk_operation(Disk *d, const char *id);
/* The operations the node is to run now, in order: the pending ones while an apply is requested. */
json_object *disk_operations_to_apply(Disk *d);

/* Loading at start: the store's disks and operations into their nodes. */
int disk_load_all(Manager *m);
