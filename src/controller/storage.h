/* SPDX-License-Identifier: MIT */
/* Storage backends for staged clones: NFS exports and iSCSI targets, validated configuration. */
#pragma once

#include "domain.h"

#include <json-c/json.h>
#include <systemd/sd-bus.h>

#include "manager.h"
#include "storage-io.h"

typedef struct StorageBackend {
        Manager *manager;
        char *id, *name;
        BackendType type;
        json_object *config; /* public fields only */
        char *secret;        /* CHAP secret: write-only over D-Bus */
        uint64_t total_bytes, available_bytes;
        int enabled;
        uint64_t created_at;
} StorageBackend;

StorageBackend *storage_free(StorageBackend *b);
char *storage_path(const StorageBackend *b);

/* config is positioned at an a{sv} of the type's fields. ret NULL: only checks (reading config). */
int storage_create(Manager *m, const char *name, const char *type, sd_bus_message *config,
                   StorageBackend **ret, sd_bus_error *error);
/* changes: a{sv} with "name", "enabled" and any of the type's fields. check_only: read and checked, not
 * applied. */
int storage_update(StorageBackend *b, sd_bus_message *changes, bool check_only, sd_bus_error *error);
int storage_delete(StorageBackend *b, sd_bus_error *error);
int storage_resolve(Manager *m, const char *name, StorageBackend **ret, sd_bus_error *error);
int storage_attach(Manager *m, StorageBackend *b);

/* "1-4,7": the LUN numbers listed (in order given); returns how many, or < 0 if it does not parse. */
int storage_parse_luns(const char *s, int **ret_luns);
/* manage=tgtadm: the controller creates a LUN per session on the tgtd of its own host. */
bool storage_is_managed(const StorageBackend *b);
StorageLocation storage_location(const StorageBackend *b);
/* The LUNs a backend stages on (luns=, or the one lun=); returns how many. */
int storage_pool(const StorageBackend *b, int **ret_luns);
/* From tgtadm: the tid of target iqn on this host's tgtd and the LUNs it has, with their backing files. */
typedef struct TgtLun {
        int lun;
        char path[512];
} TgtLun;
int storage_tgt_find(const char *iqn, int *ret_tid, TgtLun **ret_luns, size_t *ret_n, char **ret_why);
/* In a worker (it blocks): total and available bytes; busy lists pool LUNs that sessions hold. */
int storage_measure(const StorageBackend *b, const int *busy, size_t n_busy, uint64_t *ret_total,
                    uint64_t *ret_available, char **ret_why);

/* Test connects for real (NFS: mount, probe file; iSCSI: login, READ CAPACITY) and measures; RefreshSpace
 * only measures. Both run in a worker, store the space and call done with a report, or why not; b is NULL
 * if the backend was deleted meanwhile. */
typedef void (*StorageDone)(Manager *m, StorageBackend *b, const char *report, const char *why, void *userdata);
int storage_test(StorageBackend *b, StorageDone done, void *userdata);
int storage_refresh_space(StorageBackend *b, StorageDone done, void *userdata);
