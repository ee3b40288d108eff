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

/* Where the backend is, as libnfs and libiscsi are told (storage-io.h). */
StorageLocation storage_location(const StorageBackend *b);

/* Test connects for real (NFS: mount, probe file; iSCSI: login, READ CAPACITY) and measures; RefreshSpace
 * only measures. Both run in a worker, store the space and call done with a report, or why not; b is NULL
 * if the backend was deleted meanwhile. */
typedef void (*StorageDone)(Manager *m, StorageBackend *b, const char *report, const char *why, void *userdata);
int storage_test(StorageBackend *b, StorageDone done, void *userdata);
int storage_refresh_space(StorageBackend *b, StorageDone done, void *userdata);
