/* SPDX-License-Identifier: MIT */
/* Nodes: the machines PureBoot knows, by MAC and hostname. */
#pragma once

#include "domain.h"

#include <systemd/sd-bus.h>

#include "manager.h"

typedef struct Disk Disk;

typedef struct Node {
        Manager *manager;
        char *id, *hostname, *mac, *arch, *serial;
        NodeState state;
        BootMode boot_mode;
        char *boot_workflow; /* boot_mode nfs: the diskless workflow it boots */
        uint64_t last_seen, created_at;
        uint64_t scan_requested_at; /* the last RequestScan; the node scans again when it sees it change */
        uint64_t report_sequence;   /* the last node report applied (disks, operations) */
        Disk **disks;               /* as the node last reported them */
        size_t n_disks;
        json_object *hardware; /* the machine as its agent last reported it (Hardware), or NULL */
        uint64_t hardware_at;  /* when */
        PowerDriver power_driver;
        json_object *power_settings; /* the driver's, {key: value}, or NULL (power.c) */
        char *power_secret;          /* its password, never shown */
} Node;

Node *node_free(Node *n);
char *node_path(const Node *n);

/* state: NODE_READY for nodes an administrator adds, NODE_DISCOVERED for machines that just PXE-booted.
 * ret NULL: only checks the arguments (as the bus method does before polkit), registers nothing. */
int node_register(Manager *m, const char *hostname, const char *mac, const char *arch, const char *serial,
                  NodeState state, Node **ret, sd_bus_error *error);
/* A Raspberry Pi serial: exactly 8 hex digits, returned lowercase. */
int node_serial_normalize(const char *s, char **ret);
/* What the node's next network boot does: "local" (its own disk), "partition" (the partition workflow) or
 * "nfs" (diskless, from the NFS root, with workflow: default pi-diskless-nfs). */
int node_set_boot_mode(Node *n, BootMode mode, const char *workflow, sd_bus_error *error);
/* What the node is asked to do, as the node protocol's NodeOrders record (GetNode, WatchNode). */
json_object *node_orders(Node *n);
void node_emit_changed(Node *n, const char *first, ...) _sentinel_;
/* Asks the node, through its WatchNode stream, to scan its disks again and report them. */
int node_request_scan(Node *n, sd_bus_error *error);
/* Records the machine's inventory (the node protocol's Hardware, checked against the IDL) as reported now;
 * sequence: the node's report sequence this applies (0: a clone role's report, which has its own). */
int node_set_hardware(Node *n, json_object *hardware, uint64_t sequence);
/* The disk device of n's last inventory, or NULL (no inventory, or no such disk). */
json_object *node_hardware_disk(Node *n, const char *device);
/* Persists and announces changed State and LastSeen. */
int node_save(Node *n);
/* Removes the node; refused while clone sessions name it. */
int node_delete(Node *n, sd_bus_error *error);
/* Finds a node by id, unique id prefix, hostname or MAC. */
int node_resolve(Manager *m, const char *name, Node **ret, sd_bus_error *error);
/* Puts a node loaded from the store into the manager's maps. */
int node_attach(Manager *m, Node *n);
