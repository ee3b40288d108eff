/* SPDX-License-Identifier: MIT */
/* Nodes: registration, lookup by any name an operator would use, removal. */
#include <assert.h>

#include "bus-gateway.h"
#include "bus-util.h"
#include "clone.h"
#include "disk.h"
#include "log.h"
#include "node.h"
#include "pureboot-errors.h"
#include "util.h"

Node *node_free(Node *n) {
        if (!n)
                return NULL;
        free(n->id);
        free(n->hostname);
        free(n->mac);
        free(n->arch);
        free(n->serial);
        free(n->boot_workflow);
        json_object_put(n->hardware);
        json_object_put(n->power_settings);
        if (n->power_secret)
                explicit_bzero(n->power_secret, strlen(n->power_secret));
        free(n->power_secret);
        for (size_t i = 0; i < n->n_disks; i++)
                disk_free(n->disks[i]);
        free(n->disks);
        free(n);
        return NULL;
}

char *node_path(const Node *n) {
        char *p;
        return asprintf(&p, PB_ROOT_PATH "/node/%s", n->id) < 0 ? NULL : p;
}

int node_attach(Manager *m, Node *n) {
        n->manager = m;
        return hashmap_put(m->nodes, n->id, n);
}

static const char *arch_normalize(const char *arch) {
        if (STR_IN_SET(arch, "x86_64", "amd64"))
                return "x86_64";
        if (STR_IN_SET(arch, "arm64", "aarch64"))
                return "arm64";
        if (STR_IN_SET(arch, "armhf", "armv7l"))
                return "armhf";
        if (STR_IN_SET(arch, "riscv64"))
                return "riscv64";
        return NULL;
}

/* A Raspberry Pi serial: 8 hex digits, stored lowercase. */
int node_serial_normalize(const char *s, char **ret) {
        if (strlen(s) != 8)
                return -EINVAL;
        char *t = strdup(s);
        if (!t)
                return -ENOMEM;
        for (char *p = t; *p; p++) {
                if (!strchr("0123456789abcdefABCDEF", *p)) {
                        free(t);
                        return -EINVAL;
                }
                if (*p >= 'A' && *p <= 'F')
                        *p = (char) (*p - 'A' + 'a');
        }
        *ret = t;
        return 0;
}

static Node *find_by(Manager *m, const char *mac, const char *hostname, const char *serial) {
        Node *n;
        HASHMAP_FOREACH (n, m->nodes, i)
                if ((mac && streq(n->mac, mac)) || (hostname && strcasecmp(n->hostname, hostname) == 0) ||
                    (serial && streq_ptr(n->serial, serial)))
                        return n;
        return NULL;
}

int node_register(Manager *m, const char *hostname, const char *mac, const char *arch, const char *serial,
                  NodeState state, Node **ret, sd_bus_error *error) {
        _cleanup_free_ char *canonical_mac = NULL, *canonical_serial = NULL;
        char id[PB_ID_LEN + 1];
        const char *a = arch_normalize(arch);
        Node *n, *other;
        int r;

        if (!hostname_is_valid(hostname))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "\"%.64s\" is not a valid host name: use letters, digits and inner "
                                         "hyphens, dot-separated labels of at most 63 bytes, 253 in all.",
                                         hostname);
        if (mac_normalize(mac, &canonical_mac) < 0)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "\"%.64s\" is not a MAC address; write it as aa:bb:cc:dd:ee:ff.",
                                         mac);
        if (!a)
                return sd_bus_error_setf(
                        error, PB_ERROR_INVALID_ARGUMENT,
                        "Unknown architecture \"%.64s\"; use x86_64, arm64, armhf or riscv64.", arch);
        if (!isempty(serial) && node_serial_normalize(serial, &canonical_serial) < 0)
                return sd_bus_error_setf(
                        error, PB_ERROR_INVALID_ARGUMENT,
                        "\"%.64s\" is not a Raspberry Pi serial: it has exactly 8 hex digits.", serial);
        other = find_by(m, canonical_mac, hostname, canonical_serial);
        if (other)
                return sd_bus_error_setf(
                        error, PB_ERROR_ALREADY_EXISTS,
                        "Node %s (%s, MAC %s%s%s) already has this %s. Remove it first or pick "
                        "another.",
                        other->hostname, other->id, other->mac, other->serial ? ", serial " : "",
                        strempty(other->serial),
                        streq(other->mac, canonical_mac)             ? "MAC address"
                        : strcasecmp(other->hostname, hostname) == 0 ? "host name"
                                                                     : "serial");
        if (!ret)
                return 0;
        r = id_new(id);
        if (r < 0)
                return r;

        n = calloc(1, sizeof(Node));
        if (!n)
                return -ENOMEM;
        n->id = strdup(id);
        n->hostname = strdup(hostname);
        n->mac = TAKE_PTR(canonical_mac);
        n->arch = strdup(a);
        n->serial = TAKE_PTR(canonical_serial);
        n->state = state;
        n->boot_mode = BOOT_LOCAL;
        n->created_at = now_realtime_usec();
        if (!n->id || !n->hostname || !n->arch) {
                node_free(n);
                return -ENOMEM;
        }
        r = store_node_insert(m->store, n);
        if (r < 0) {
                node_free(n);
                return bus_store_error(error, r, "register the node");
        }
        r = node_attach(m, n);
        if (r < 0) {
                (void) store_node_delete(m->store, n->id);
                node_free(n);
                return r;
        }
        *ret = n;
        return 0;
}

int node_set_boot_mode(Node *n, BootMode mode, const char *workflow, sd_bus_error *error) {
        _cleanup_free_ char *new_workflow = NULL;
        int r;

        assert(mode < _BOOT_MODE_MAX);
        if (workflow && mode != BOOT_NFS)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "Only the nfs boot mode takes a workflow; %s boots its own.",
                                         boot_mode_to_string(mode));
        if (mode == BOOT_NFS && !workflow)
                workflow = "pi-diskless-nfs";
        if (workflow && !name_is_valid(workflow, 64))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT, "\"%.64s\" is not a workflow id.",
                                         workflow);
        if (workflow && !(new_workflow = strdup(workflow)))
                return -ENOMEM;
        /* The row first, from a copy; the node itself once it is stored. */
        Node updated = *n;
        updated.boot_mode = mode;
        updated.boot_workflow = new_workflow;
        r = store_node_update(n->manager->store, &updated);
        if (r < 0)
                return bus_store_error(error, r, "change the boot mode");
        n->boot_mode = mode;
        free_and_replace(n->boot_workflow, new_workflow);
        node_emit_changed(n, "BootMode", "BootWorkflow", NULL);
        return 0;
}

json_object *node_orders(Node *n) {
        json_object *orders = json_object_new_object(), *apply = json_object_new_array();
        for (size_t i = 0; i < n->n_disks; i++)
                if (n->disks[i]->apply_requested_at)
                        json_object_array_add(apply, json_object_new_string(n->disks[i]->info.device));
        json_object_object_add(orders, "node", json_object_new_string(n->id));
        json_object_object_add(orders, "scanRequestedAt",
                               json_object_new_int64((int64_t) n->scan_requested_at));
        json_object_object_add(orders, "apply", apply);
        return orders;
}

void node_emit_changed(Node *n, const char *first, ...) {
        _cleanup_free_ char *path = node_path(n);
        va_list ap;

        va_start(ap, first);
        manager_emit_changed_va(n->manager, path, PB_IFACE("Node"), first, ap);
        va_end(ap);
        bus_gateway_notify(n->manager, "node", n->id);
}

int node_request_scan(Node *n, sd_bus_error *error) {
        uint64_t old = n->scan_requested_at;
        int r;

        n->scan_requested_at = now_realtime_usec();
        r = store_node_update(n->manager->store, n);
        if (r < 0) {
                n->scan_requested_at = old;
                return bus_store_error(error, r, "request the scan");
        }
        node_emit_changed(n, "ScanRequestedAt", NULL);
        return 0;
}

int node_set_hardware(Node *n, json_object *hardware, uint64_t sequence) {
        json_object *old = n->hardware;
        uint64_t old_at = n->hardware_at, old_sequence = n->report_sequence;
        int r;

        n->hardware = json_object_get(hardware);
        n->hardware_at = now_realtime_usec();
        if (sequence > 0)
                n->report_sequence = sequence;
        r = store_node_update(n->manager->store, n);
        if (r < 0) {
                json_object_put(n->hardware);
                n->hardware = old;
                n->hardware_at = old_at;
                n->report_sequence = old_sequence;
                return r;
        }
        json_object_put(old);
        node_emit_changed(n, "Hardware", "HardwareReportedAt", NULL);
        return 0;
}

json_object *node_hardware_disk(Node *n, const char *device) {
        json_object *disks = n->hardware ? json_object_object_get(n->hardware, "disks") : NULL;
        for (size_t i = 0; device && i < json_object_array_length(disks); i++) {
                json_object *d = json_object_array_get_idx(disks, i);
                if (streq_ptr(json_get_string(d, "device"), device))
                        return d;
        }
        return NULL;
}

int node_save(Node *n) {
        int r = store_node_update(n->manager->store, n);
        if (r < 0)
                return r;
        node_emit_changed(n, "State", "LastSeen", NULL);
        return 0;
}

int node_delete(Node *n, sd_bus_error *error) {
        Manager *m = n->manager;
        _cleanup_free_ char *sessions = NULL;
        int r;

        r = store_node_sessions(m->store, n->id, &sessions);
        if (r < 0)
                return r;
        if (sessions)
                return sd_bus_error_setf(
                        error, PB_ERROR_IN_USE,
                        "Node %s is named by clone sessions %s; delete those sessions first.", n->hostname,
                        sessions);
        r = store_node_delete(m->store, n->id);
        if (r < 0)
                return r;
        hashmap_remove(m->nodes, n->id);
        node_free(n);
        return 0;
}

int node_resolve(Manager *m, const char *name, Node **ret, sd_bus_error *error) {
        _cleanup_free_ char *mac = NULL;
        Node *n, *found = NULL;
        size_t matches = 0;

        if (isempty(name))
                return sd_bus_error_setf(error, PB_ERROR_NO_SUCH_NODE, "No node given.");
        n = hashmap_get(m->nodes, name);
        if (n) {
                *ret = n;
                return 0;
        }
        (void) mac_normalize(name, &mac);
        HASHMAP_FOREACH (n, m->nodes, i) {
                if (strcasecmp(n->hostname, name) == 0 || (mac && streq(n->mac, mac))) {
                        *ret = n;
                        return 0;
                }
                if (strlen(name) >= 4 && startswith(n->id, name)) {
                        found = n;
                        matches++;
                }
        }
        if (matches == 1) {
                *ret = found;
                return 0;
        }
        if (matches > 1)
                return sd_bus_error_setf(
                        error, PB_ERROR_NO_SUCH_NODE,
                        "\"%.64s\" matches %zu node ids; give more digits or the host name.", name, matches);
        return sd_bus_error_setf(
                error, PB_ERROR_NO_SUCH_NODE,
                "No node \"%.64s\": give an id, a unique id prefix of at least 4 digits, a host "
                "name or a MAC address (purebootctl node list shows them).",
                name);
}
