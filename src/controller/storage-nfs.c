/* SPDX-License-Identifier: MIT */
/* NFS backends: an export (server=, export=, options=, version=) reached with libnfs from the controller;
 * each session stages in a directory of its own, /pureboot/<session>, recorded as {"kind":
 * "nfs-directory", "path"}. */
#include <nfsc/libnfs.h>

#include "address.h"
#include "pureboot-errors.h"
#include "storage-driver.h"
#include "util.h"

static const StorageField nfs_fields[] = {
        { "server", 's' },
        { "export", 's' },
        { "options", 's' },
        { "version", 's' },
};

static char *session_dir(const char *session) {
        char *p;
        return asprintf(&p, "/pureboot/%s", session) < 0 ? NULL : p;
}

static int nfs_validate(json_object *config, const char *secret, sd_bus_error *error) {
        const char *v;
        (void) secret;

        v = json_get_string(config, "server");
        if (!v || !host_is_valid(v))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "An NFS backend needs server=HOST, a host name or IP address%s%.64s%s.",
                                         v ? " (not \"" : "", strempty(v), v ? "\")" : "");
        v = json_get_string(config, "export");
        if (!path_is_safe(v, 1024))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "An NFS backend needs export=PATH, an absolute path on the server "
                                         "without \"..\", such as /srv/pureboot.");
        v = json_get_string(config, "version");
        if (v && !STR_IN_SET(v, "3", "4", "4.1", "4.2"))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "NFS version \"%.16s\" is not one of 3, 4, 4.1, 4.2.", v);
        v = json_get_string(config, "options");
        if (v && !name_is_valid(v, 1024))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "NFS options must be printable text of at most 1024 bytes.");
        return 0;
}

static bool nfs_space_is_measured(const StorageBackend *b) {
        (void) b;
        return true;
}

static int nfs_measure(const StorageBackend *b, const int *busy, size_t n_busy, uint64_t *ret_total,
                       uint64_t *ret_available, char **ret_why) {
        StorageLocation l = storage_location(b);
        struct nfs_context *nfs;
        int r;
        (void) busy, (void) n_busy;

        r = storage_nfs_connect(&l, false, &nfs, ret_why);
        if (r < 0)
                return r;
        r = storage_nfs_space(nfs, ret_total, ret_available, ret_why);
        nfs_destroy_context(nfs);
        return r;
}

static int nfs_test(const StorageBackend *b, char **ret_report, char **ret_why) {
        StorageLocation l = storage_location(b);
        const char *version = json_get_string(b->config, "version");
        struct nfs_context *nfs;
        int r;

        r = storage_nfs_connect(&l, false, &nfs, ret_why);
        if (r < 0)
                return r;
        r = storage_nfs_probe(nfs, ret_why);
        nfs_destroy_context(nfs);
        if (r < 0)
                return r;
        return asprintf(ret_report, "Mounted %s:%s over NFSv%s; a probe file was written, read back and removed.",
                        json_get_string(b->config, "server"), json_get_string(b->config, "export"),
                        version ?: "3") < 0
                       ? -ENOMEM
                       : 0;
}

static int add_directory(json_object *created, const char *path) {
        json_object *o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        json_object_object_add(o, "kind", json_object_new_string("nfs-directory"));
        json_object_object_add(o, "path", json_object_new_string(path));
        return json_object_array_add(created, o) < 0 ? -ENOMEM : 0;
}

static int nfs_provision(const StagingRequest *q, json_object *created, int *ret_lun, char **ret_why) {
        StorageLocation l = storage_location(q->backend);
        _cleanup_free_ char *dir = session_dir(q->session);
        struct nfs_context *nfs;
        int r;

        *ret_lun = -1;
        if (!dir)
                return -ENOMEM;
        r = storage_nfs_connect(&l, true, &nfs, ret_why);
        if (r < 0)
                return r;
        r = storage_nfs_rm_rf(nfs, dir, ret_why); /* what a crashed try left */
        if (r >= 0)
                r = storage_nfs_mkdir_p(nfs, dir, ret_why);
        nfs_destroy_context(nfs);
        return r < 0 ? r : add_directory(created, dir);
}

static int nfs_undo(const StorageBackend *b, json_object *resources, char **ret_why) {
        StorageLocation l = storage_location(b);
        struct nfs_context *nfs = NULL;
        int r = 0;

        for (size_t i = resources ? json_object_array_length(resources) : 0; r >= 0 && i > 0; i--) {
                json_object *res = json_object_array_get_idx(resources, i - 1);
                if (!streq_ptr(json_get_string(res, "kind"), "nfs-directory"))
                        continue;
                if (!nfs)
                        r = storage_nfs_connect(&l, true, &nfs, ret_why);
                if (r >= 0)
                        r = storage_nfs_rm_rf(nfs, json_get_string(res, "path"), ret_why);
        }
        if (nfs)
                nfs_destroy_context(nfs);
        return r;
}

static char *nfs_display_path(const StorageBackend *b, const char *session, int lun) {
        char *p;
        (void) lun;
        return asprintf(&p, "nfs://%s%s/pureboot/%s", json_get_string(b->config, "server"),
                        json_get_string(b->config, "export"), session) < 0
                       ? NULL
                       : p;
}

static void nfs_describe(const StorageBackend *b, const char *session, json_object *resources, json_object *o) {
        _cleanup_free_ char *dir = session_dir(session);
        (void) resources;
        json_object_object_add(o, "server", json_object_new_string(json_get_string(b->config, "server")));
        json_object_object_add(o, "path", json_object_new_string(json_get_string(b->config, "export")));
        json_object_object_add(o, "directory", dir ? json_object_new_string(dir) : NULL);
        if (json_get_string(b->config, "options"))
                json_object_object_add(o, "options", json_object_new_string(json_get_string(b->config, "options")));
}

const StorageDriver storage_driver_nfs = {
        .type = BACKEND_NFS,
        .fields = nfs_fields,
        .n_fields = ELEMENTSOF(nfs_fields),
        .fields_help = "NFS takes server, export, options, version.",
        .validate = nfs_validate,
        .space_is_measured = nfs_space_is_measured,
        .measure = nfs_measure,
        .test = nfs_test,
        .provision = nfs_provision,
        .undo = nfs_undo,
        .display_path = nfs_display_path,
        .describe = nfs_describe,
};
