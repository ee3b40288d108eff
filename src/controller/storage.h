/* SPDX-License-Identifier: MIT */
/* Storage backends for staged clones: NFS exports and iSCSI targets, validated configuration. */
#pragma once

#include <json-c/json.h>
#include <systemd/sd-bus.h>

#include "manager.h"

typedef struct StorageBackend {
        Manager *manager;
        char *id, *name, *type;
        json_object *config; /* public fields only */
        char *secret;        /* CHAP secret: write-only over D-Bus */
        uint64_t total_bytes, available_bytes;
        int enabled;
        uint64_t created_at;
} StorageBackend;

StorageBackend *storage_free(StorageBackend *b);
char *storage_path(const StorageBackend *b);

/* config is positioned at an a{sv} of the type's fields. */
int storage_create(Manager *m, const char *name, const char *type, sd_bus_message *config,
                   StorageBackend **ret, sd_bus_error *error);
/* changes: a{sv} with "name", "enabled" and any of the type's fields. */
int storage_update(StorageBackend *b, sd_bus_message *changes, sd_bus_error *error);
int storage_delete(StorageBackend *b, sd_bus_error *error);
int storage_resolve(Manager *m, const char *name, StorageBackend **ret, sd_bus_error *error);
int storage_attach(Manager *m, StorageBackend *b);
