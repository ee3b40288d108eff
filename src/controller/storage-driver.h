/* SPDX-License-Identifier: MIT */
/* What differs between kinds of storage backend, as one ops table per kind: storage-nfs.c (an NFS export,
 * a directory per session) and storage-iscsi.c (an iSCSI target, a LUN per session: made on this host's
 * tgtd with manage=tgtadm, or taken from a pool of LUNs). storage.c (the records, their settings, Test
 * and RefreshSpace) and staging.c (a session's staging area) call through it and ask no backend its kind. */
#pragma once

#include "storage.h"

/* A setting of a kind of backend: its name, D-Bus type ('s', 'u') and whether it is write-only. */
typedef struct StorageField {
        const char *name;
        char type;
        bool secret;
} StorageField;

/* One staging area to make, in a worker. */
typedef struct StagingRequest {
        const StorageBackend *backend;
        const char *session;
        uint64_t size;   /* the source disk's */
        const int *busy; /* pool LUNs other sessions hold */
        size_t n_busy;
} StagingRequest;

typedef struct StorageDriver {
        BackendType type;
        const StorageField *fields;
        size_t n_fields;
        const char *fields_help; /* the settings it takes, in a sentence */
        int (*validate)(json_object *config, const char *secret, sd_bus_error *error);
        /* Whether the space to stage on is known ahead (checked at Start); a pool's free LUNs are counted
         * only when provisioning. */
        bool (*space_is_measured)(const StorageBackend *b);

        /* In a worker (they block). measure: total and available bytes (busy: pool LUNs sessions hold). test:
         * connects for real and says what it did. */
        int (*measure)(const StorageBackend *b, const int *busy, size_t n_busy, uint64_t *ret_total,
                       uint64_t *ret_available, char **ret_why);
        int (*test)(const StorageBackend *b, char **ret_report, char **ret_why);
        /* Makes the session's area, appending each thing made to created ({"kind", …}) and the LUN, if any, in
         * *ret_lun; -ENOSPC (with *ret_why) if there is no room. undo removes what provision recorded, last
         * first; what is gone already is fine. */
        int (*provision)(const StagingRequest *q, json_object *created, int *ret_lun, char **ret_why);
        int (*undo)(const StorageBackend *b, json_object *resources, char **ret_why);

        /* Where the area is: for StagingPath, and for the agents (GetStaging's server, path and the rest). */
        char *(*display_path)(const StorageBackend *b, const char *session, int lun);
        void (*describe)(const StorageBackend *b, const char *session, json_object *resources,
                         json_object *staging);
} StorageDriver;

extern const StorageDriver storage_driver_nfs, storage_driver_iscsi, storage_driver_local;

/* A local backend's files (storage-local.c), as the bridge serves them to nodes: in the area's directory
 * dir, the image and manifest to read, or their partial forms to write (CREATE: anew); commit makes a
 * written one durable and gives it its name; remove takes either away. */
typedef enum StagingFileAccess {
        STAGING_FILE_READ,
        STAGING_FILE_WRITE,
        STAGING_FILE_CREATE,
} StagingFileAccess;

int storage_local_open(const char *dir, const char *name, StagingFileAccess how, int *ret_fd,
                       uint64_t *ret_size, sd_bus_error *error);
int storage_local_commit(const char *dir, const char *name, sd_bus_error *error);
int storage_local_remove(const char *dir, const char *name, sd_bus_error *error);
const StorageDriver *storage_driver(BackendType type);
