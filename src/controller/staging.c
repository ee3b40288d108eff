/* SPDX-License-Identifier: MIT */
/* Staging areas: checked, created and removed in workers; recorded on the session as a JSON array of what
 * was created ({"kind": "nfs-directory", "path"}, {"kind": "file", "path"}, {"kind": "tgt-lun", "tid",
 * "lun"}, {"kind": "pool-lun", "lun"}), undone last to first. Undoing is idempotent: what is gone already
 * is fine, so a retry or a second cleanup after a crash does no harm. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <nfsc/libnfs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "format.h"
#include "json-util.h"
#include "log.h"
#include "pureboot-errors.h"
#include "staging.h"
#include "storage.h"
#include "tool.h"
#include "util.h"
#include "worker.h"

typedef struct StagingJob {
        StorageBackend *backend; /* read in the child only */
        char *session;
        uint64_t size;
        json_object *undo; /* what an earlier try left, removed first */
        int *busy;         /* pool LUNs other sessions hold */
        size_t n_busy;
        bool provision;
} StagingJob;

static void job_free(StagingJob *j) {
        free(j->session);
        json_object_put(j->undo);
        free(j->busy);
        free(j);
}

/* A job for session c on backend b: what an earlier try left is undone first. */
static StagingJob *job_new(CloneSession *c, StorageBackend *b, bool provision) {
        StagingJob *j = calloc(1, sizeof(StagingJob));
        if (!j || !(j->session = strdup(c->id))) {
                free(j);
                return NULL;
        }
        j->backend = b;
        j->size = c->bytes_total;
        j->provision = provision;
        j->undo = c->staging_resources ? json_tokener_parse(c->staging_resources) : NULL;
        return j;
}

static char *session_dir(const char *session) {
        char *p;
        return asprintf(&p, "/pureboot/%s", session) < 0 ? NULL : p;
}

/* In the child: removes each resource of the array, last first. */
static int undo(const StorageBackend *b, json_object *resources, char **ret_why) {
        StorageLocation l = storage_location(b);
        struct nfs_context *nfs = NULL;
        int r = 0;

        for (size_t i = resources ? json_object_array_length(resources) : 0; r >= 0 && i > 0; i--) {
                json_object *res = json_object_array_get_idx(resources, i - 1);
                const char *kind = json_get_string(res, "kind");
                if (streq_ptr(kind, "nfs-directory")) {
                        if (!nfs)
                                r = storage_nfs_connect(&l, true, &nfs, ret_why);
                        if (r >= 0)
                                r = storage_nfs_rm_rf(nfs, json_get_string(res, "path"), ret_why);
                } else if (streq_ptr(kind, "file")) {
                        if (unlink(json_get_string(res, "path")) < 0 && errno != ENOENT) {
                                r = -errno;
                                (void) asprintf(ret_why, "removing %s failed: %m", json_get_string(res, "path"));
                        }
                } else if (streq_ptr(kind, "tgt-lun")) {
                        char tid[16], lun[16];
                        _cleanup_free_ char *out = NULL;
                        snprintf(tid, sizeof(tid), "%" PRId64, json_get_int(res, "tid"));
                        snprintf(lun, sizeof(lun), "%" PRId64, json_get_int(res, "lun"));
                        if (tool_runl(&out, "tgtadm", "--lld", "iscsi", "--mode", "logicalunit", "--op", "delete",
                                      "--tid", tid, "--lun", lun, NULL) != 0 &&
                            !strstr(strempty(out), "can't find")) {
                                r = -EIO;
                                (void) asprintf(ret_why, "tgtadm could not delete LUN %s of target %s: %s", lun, tid,
                                                out ? tool_last_line(out) : "it did not run");
                        }
                } /* a pool LUN stays; the next upload clears its manifest first */
        }
        if (nfs)
                nfs_destroy_context(nfs);
        return r;
}

static int add_resource(json_object *created, const char *kind, const char *path, int tid, int lun) {
        json_object *o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        json_object_object_add(o, "kind", json_object_new_string(kind));
        if (path)
                json_object_object_add(o, "path", json_object_new_string(path));
        if (tid >= 0)
                json_object_object_add(o, "tid", json_object_new_int(tid));
        if (lun >= 0)
                json_object_object_add(o, "lun", json_object_new_int(lun));
        return json_object_array_add(created, o) < 0 ? -ENOMEM : 0;
}

static json_object *insufficient(const StorageBackend *b, uint64_t need, uint64_t size, uint64_t available,
                                 bool lun, char **ret_why) {
        json_object *o = json_object_new_object();
        if (lun)
                (void) asprintf(ret_why,
                                "staging on %s needs a free LUN of at least %s for the %s disk; the largest free one "
                                "has %s. Add a larger LUN to luns=, or wait for a session to free one",
                                b->name, FORMAT_BYTES(need), FORMAT_BYTES(size), FORMAT_BYTES(available));
        else
                (void) asprintf(ret_why,
                                "staging on %s needs %s (the %s disk plus a %d %% margin); %s is available. Free at "
                                "least %s there, or pick another backend",
                                b->name, FORMAT_BYTES(need), FORMAT_BYTES(size), STAGING_MARGIN_PERCENT,
                                FORMAT_BYTES(available), FORMAT_BYTES(need - available));
        if (o)
                json_object_object_add(o, "insufficient", json_object_new_boolean(true));
        return o;
}

int staging_check_space(CloneSession *c, uint64_t size, sd_bus_error *error) {
        StorageBackend *b = c->staging_backend ? hashmap_get(c->manager->storages, c->staging_backend) : NULL;
        uint64_t need = size + size / 100 * STAGING_MARGIN_PERCENT;
        _cleanup_free_ char *why = NULL;

        /* A pool's free LUNs are counted when provisioning; unmeasured space is not guessed at. */
        if (!b || size == 0 || b->total_bytes == 0 || (b->type == BACKEND_ISCSI && !storage_is_managed(b)) ||
            b->available_bytes >= need)
                return 0;
        json_object_put(insufficient(b, need, size, b->available_bytes, false, &why));
        return sd_bus_error_setf(error, PB_ERROR_INSUFFICIENT_SPACE,
                                 "Session %s: %s. (Space as last measured; purebootctl storage space %s measures "
                                 "again.)",
                                 c->id, why ?: "not enough staging space", b->name);
}

/* Creates a LUN of its own for the session on the local tgtd. */
static int provision_managed(const StagingJob *j, json_object *created, int *ret_lun, char **ret_why) {
        const StorageBackend *b = j->backend;
        _cleanup_free_ char *file = NULL, *out = NULL;
        _cleanup_free_ TgtLun *luns = NULL;
        char tid_s[16], lun_s[16];
        size_t n = 0;
        int tid, lun = 1, fd, r;

        if (asprintf(&file, "%s/pureboot-%s.img", json_get_string(b->config, "backing_dir"), j->session) < 0)
                return -ENOMEM;
        r = storage_tgt_find(json_get_string(b->config, "target"), &tid, &luns, &n, ret_why);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) /* a LUN a crashed try left on our file goes first */
                if (streq(luns[i].path, file)) {
                        snprintf(tid_s, sizeof(tid_s), "%d", tid);
                        snprintf(lun_s, sizeof(lun_s), "%d", luns[i].lun);
                        (void) tool_runl(NULL, "tgtadm", "--lld", "iscsi", "--mode", "logicalunit", "--op", "delete",
                                         "--tid", tid_s, "--lun", lun_s, NULL);
                        luns[i].lun = -1;
                }
        for (bool taken = true; taken; lun += taken) {
                taken = false;
                for (size_t i = 0; i < n; i++)
                        taken = taken || luns[i].lun == lun;
        }
        (void) unlink(file);
        fd = open(file, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
        if (fd < 0) {
                r = -errno;
                (void) asprintf(ret_why, "creating the LUN file %s failed: %m.%s", file,
                                config_write_hint(r));
                return r;
        }
        r = add_resource(created, "file", file, -1, -1);
        if (r >= 0 && ftruncate(fd, (off_t) staging_lun_size(j->size)) < 0) {
                r = -errno;
                (void) asprintf(ret_why, "sizing the LUN file %s failed: %m", file);
        }
        close(fd);
        if (r < 0)
                return r;
        snprintf(tid_s, sizeof(tid_s), "%d", tid);
        snprintf(lun_s, sizeof(lun_s), "%d", lun);
        if (tool_runl(&out, "tgtadm", "--lld", "iscsi", "--mode", "logicalunit", "--op", "new", "--tid", tid_s,
                      "--lun", lun_s, "--backing-store", file, NULL) != 0) {
                (void) asprintf(ret_why, "tgtadm could not add LUN %d to target %d: %s", lun, tid,
                                out ? tool_last_line(out) : "it did not run");
                return -EIO;
        }
        *ret_lun = lun;
        return add_resource(created, "tgt-lun", NULL, tid, lun);
}

/* Picks the smallest free LUN of the pool that holds the image. */
static int provision_pool(const StagingJob *j, json_object *created, int *ret_lun, uint64_t *ret_largest,
                          char **ret_why) {
        const StorageBackend *b = j->backend;
        StorageLocation l = storage_location(b);
        _cleanup_free_ int *luns = NULL;
        uint64_t need = staging_lun_size(j->size), best_size = UINT64_MAX;
        int n = storage_pool(b, &luns), best = -1, r;

        *ret_largest = 0;
        for (int i = 0; i < n; i++) {
                IscsiLun lun = {};
                bool held = false;
                for (size_t k = 0; k < j->n_busy; k++)
                        held = held || j->busy[k] == luns[i];
                if (held)
                        continue;
                r = storage_iscsi_connect(&l, luns[i], "controller", &lun, ret_why);
                if (r >= 0)
                        r = storage_iscsi_capacity(&lun, ret_why);
                if (r >= 0 && lun.size >= need && lun.size < best_size) {
                        /* The next upload must not find an old manifest: clear its header now. */
                        _cleanup_free_ uint8_t *zero = calloc(1, lun.block_size);
                        r = zero ? storage_iscsi_pwrite(&lun, zero, lun.block_size,
                                                        staging_manifest_offset(j->size), ret_why)
                                 : -ENOMEM;
                        if (r >= 0) {
                                best = luns[i];
                                best_size = lun.size;
                        }
                }
                storage_iscsi_disconnect(&lun);
                if (r < 0)
                        return r;
                *ret_largest = MAX(*ret_largest, lun.size);
        }
        if (best < 0)
                return 0;
        *ret_lun = best;
        return add_resource(created, "pool-lun", NULL, -1, best) < 0 ? -ENOMEM : 1;
}

static json_object *staging_child(void *data, char **ret_why) {
        StagingJob *j = data;
        const StorageBackend *b = j->backend;
        uint64_t total, available, need = j->size + j->size / 100 * STAGING_MARGIN_PERCENT;
        _cleanup_free_ char *dir = session_dir(j->session);
        json_object *created = json_object_new_array(), *result;
        StorageLocation l = storage_location(b);
        bool pool = b->type == BACKEND_ISCSI && !storage_is_managed(b);
        int lun = -1, r;

        if (!dir || !created || undo(b, j->undo, ret_why) < 0 || !j->provision) {
                json_object_put(created);
                return NULL;
        }
        if (pool) {
                r = provision_pool(j, created, &lun, &available, ret_why);
                if (r == 0) {
                        json_object_put(created);
                        return insufficient(b, staging_lun_size(j->size), j->size, available, true, ret_why);
                }
        } else {
                r = storage_measure(b, NULL, 0, &total, &available, ret_why);
                if (r >= 0 && available < need) {
                        json_object_put(created);
                        return insufficient(b, need, j->size, available, false, ret_why);
                }
                if (r >= 0 && b->type == BACKEND_NFS) {
                        struct nfs_context *nfs;
                        r = storage_nfs_connect(&l, true, &nfs, ret_why);
                        if (r >= 0) {
                                r = storage_nfs_rm_rf(nfs, dir, ret_why); /* what a crashed try left */
                                if (r >= 0)
                                        r = storage_nfs_mkdir_p(nfs, dir, ret_why);
                                nfs_destroy_context(nfs);
                        }
                        if (r >= 0)
                                r = add_resource(created, "nfs-directory", dir, -1, -1);
                } else if (r >= 0)
                        r = provision_managed(j, created, &lun, ret_why);
        }
        if (r < 0) {
                _cleanup_free_ char *also = NULL;
                (void) undo(b, created, &also);
                json_object_put(created);
                return NULL;
        }
        result = json_object_new_object();
        json_object_object_add(result, "resources", created);
        if (lun >= 0)
                json_object_object_add(result, "lun", json_object_new_int(lun));
        return result;
}

/* Records the staging status, and the resources (replace: NULL for none) and path if given. */
static int set_staging(CloneSession *c, StagingStatus status, bool replace, json_object *resources,
                       const char *path) {
        Manager *m = c->manager;
        CloneSession updated = *c;
        _cleanup_free_ char *res = NULL, *p = path ? strdup(path) : NULL;
        int r;

        if (path && !p)
                return -ENOMEM;
        if (resources && !(res = strdup(json_object_to_json_string_ext(resources, JSON_C_TO_STRING_PLAIN))))
                return -ENOMEM;
        updated.staging_status = status;
        if (replace)
                updated.staging_resources = res;
        if (path)
                updated.staging_path = p;
        r = store_session_update(m->store, &updated, clone_status_to_string(c->status));
        if (r < 0)
                return log_error_errno(r, "Failed to record staging of session %s: %m", c->id);
        c->staging_status = status;
        if (replace) {
                free(c->staging_resources);
                c->staging_resources = TAKE_PTR(res);
        }
        if (path) {
                free(c->staging_path);
                c->staging_path = TAKE_PTR(p);
        }
        clone_emit_changed(c, "StagingStatus", "StagingPath", NULL);
        clone_emit_followers(c, "StagingStatus");
        return 0;
}

static char *display_path(const StorageBackend *b, const char *session, int lun) {
        char *p;
        if (b->type == BACKEND_NFS)
                return asprintf(&p, "nfs://%s%s/pureboot/%s", json_get_string(b->config, "server"),
                                json_get_string(b->config, "export"), session) < 0 ? NULL : p;
        return asprintf(&p, "iscsi://%s/%s/%d", json_get_string(b->config, "portal"),
                        json_get_string(b->config, "target"), lun) < 0 ? NULL : p;
}

static void on_provisioned(Manager *m, json_object *result, const char *why, void *userdata) {
        StagingJob *j = userdata;
        CloneSession *c = hashmap_get(m->sessions, j->session);
        StorageBackend *b = c ? hashmap_get(m->storages, c->staging_backend) : NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        json_object *resources = NULL;

        if (!c || !b) {
                job_free(j);
                return;
        }
        if (!why && !clone_status_is_active(c->status)) {
                /* Cancelled meanwhile: what was just made goes at once. */
                (void) json_object_object_get_ex(result, "resources", &resources);
                if (set_staging(c, STAGING_CLEANUP, true, resources, NULL) >= 0)
                        (void) staging_cleanup(c);
        } else if (!why) {
                _cleanup_free_ char *path = display_path(b, c->id, (int) json_get_int(result, "lun"));
                (void) json_object_object_get_ex(result, "resources", &resources);
                if (set_staging(c, STAGING_PROVISIONED, true, resources, path) >= 0)
                        log_info("Staging of session %s is ready at %s.", c->id, strna(path));
        } else if (clone_status_is_active(c->status)) {
                _cleanup_free_ char *message = NULL;
                bool space = result && json_object_object_get_ex(result, "insufficient", NULL);
                if (asprintf(&message, "%s%s.%s", space ? "Not enough staging space: " : "Staging failed: ", why,
                             space ? " Nothing was copied." : "") >= 0)
                        (void) clone_transition(c, CLONE_FAILED, message, &e);
        }
        job_free(j);
}

int staging_provision(CloneSession *c) {
        Manager *m = c->manager;
        StorageBackend *b = c->staging_backend ? hashmap_get(m->storages, c->staging_backend) : NULL;
        _cleanup_free_ char *what = NULL;
        StagingJob *j;
        CloneSession *o;
        int r;

        if (!b)
                return -ENOENT;
        if (asprintf(&what, "staging setup of session %s", c->id) < 0)
                return -ENOMEM;
        if (worker_running(m, what))
                return 0; /* one setup at a time; the source reports again if it restarts */
        j = job_new(c, b, true);
        if (!j)
                return -ENOMEM;
        HASHMAP_FOREACH (o, m->sessions, i) { /* pool LUNs held by others */
                json_object *res = o != c && o->staging_resources && streq_ptr(o->staging_backend, b->id)
                                           ? json_tokener_parse(o->staging_resources)
                                           : NULL;
                for (size_t k = 0; res && k < json_object_array_length(res); k++) {
                        json_object *x = json_object_array_get_idx(res, k);
                        int *busy = streq_ptr(json_get_string(x, "kind"), "pool-lun")
                                            ? realloc(j->busy, (j->n_busy + 1) * sizeof(int))
                                            : NULL;
                        if (busy) {
                                j->busy = busy;
                                j->busy[j->n_busy++] = (int) json_get_int(x, "lun");
                        }
                }
                json_object_put(res);
        }
        r = worker_start(m, what, staging_child, j, on_provisioned, j, NULL);
        if (r < 0)
                job_free(j);
        return r;
}

static void on_cleaned(Manager *m, json_object *result, const char *why, void *userdata) {
        StagingJob *j = userdata;
        CloneSession *c = hashmap_get(m->sessions, j->session);
        (void) result;

        if (c && why)
                log_warning("Staging of session %s is left in place (%s); deleting the session tries again.", c->id,
                            why);
        else if (c && set_staging(c, STAGING_DELETED, true, NULL, NULL) >= 0)
                log_info("Staging of session %s removed.", c->id);
        job_free(j);
}

int staging_cleanup(CloneSession *c) {
        Manager *m = c->manager;
        StorageBackend *b = c->staging_backend ? hashmap_get(m->storages, c->staging_backend) : NULL;
        _cleanup_free_ char *what = NULL;
        StagingJob *j;
        int r;

        if (!b || !c->staging_resources)
                return c->staging_resources ? -ENOENT : set_staging(c, STAGING_DELETED, true, NULL, NULL);
        if (asprintf(&what, "staging cleanup of session %s", c->id) < 0)
                return -ENOMEM;
        if (worker_running(m, what))
                return 0;
        if (c->staging_status != STAGING_CLEANUP) {
                r = set_staging(c, STAGING_CLEANUP, false, NULL, NULL);
                if (r < 0)
                        return r;
        }
        j = job_new(c, b, false);
        if (!j)
                return -ENOMEM;
        r = worker_start(m, what, staging_child, j, on_cleaned, j, NULL);
        if (r < 0)
                job_free(j);
        return r;
}

bool staging_is_left(const CloneSession *c) {
        return c->staging_resources != NULL;
}

json_object *staging_json(CloneSession *c) {
        StorageBackend *b = hashmap_get(c->manager->storages, c->staging_backend);
        _cleanup_(json_object_unrefp) json_object *res = c->staging_resources ? json_tokener_parse(c->staging_resources)
                                                                             : NULL;
        json_object *o = json_object_new_object();
        int64_t lun = -1;
        bool fresh = false;

        if (!b || !o)
                return json_object_put(o), NULL;
        for (size_t i = 0; res && i < json_object_array_length(res); i++) {
                json_object *x = json_object_array_get_idx(res, i);
                if (STR_IN_SET(strempty(json_get_string(x, "kind")), "tgt-lun", "pool-lun")) {
                        lun = json_get_int(x, "lun");
                        fresh = streq(json_get_string(x, "kind"), "tgt-lun");
                }
        }
        bool nfs = b->type == BACKEND_NFS;
        json_object_object_add(o, "backend", json_object_new_string(backend_type_to_string(b->type)));
        json_object_object_add(o, "server", json_object_new_string(json_get_string(b->config, nfs ? "server" : "portal")));
        json_object_object_add(o, "path", json_object_new_string(json_get_string(b->config, nfs ? "export" : "target")));
        if (nfs) {
                _cleanup_free_ char *dir = session_dir(c->id);
                json_object_object_add(o, "directory", dir ? json_object_new_string(dir) : NULL);
                if (json_get_string(b->config, "options"))
                        json_object_object_add(o, "options", json_object_new_string(json_get_string(b->config, "options")));
        } else {
                json_object_object_add(o, "lun", json_object_new_int64(lun));
                /* A LUN made for this session on a sparse file reads zeroes: zero runs need not be sent. */
                json_object_object_add(o, "zeroed", json_object_new_boolean(fresh));
                if (json_get_string(b->config, "chap_user")) {
                        json_object_object_add(o, "chapUser", json_object_new_string(json_get_string(b->config, "chap_user")));
                        json_object_object_add(o, "chapSecret", json_object_new_string(strempty(b->secret)));
                }
        }
        json_object_object_add(o, "sizeBytes", json_object_new_int64((int64_t) c->bytes_total));
        json_object_object_add(o, "status",
                               json_object_new_string(staging_status_to_string(c->staging_status)));
        return o;
}

int staging_report(CloneSession *c, StagingStatus to, const char **ret_reason) {
        StagingStatus from = c->staging_status;
        bool provisioned =
                IN_SET(from, STAGING_PROVISIONED, STAGING_UPLOADING, STAGING_READY, STAGING_DOWNLOADING);

        /* provisioned → uploading → ready → downloading, one step forward, or the same again (an agent that
         * restarted says so once more). */
        if (!provisioned || !IN_SET(to, STAGING_UPLOADING, STAGING_READY, STAGING_DOWNLOADING) ||
            to < from || to > from + 1) {
                *ret_reason =
                        provisioned ? "that step does not follow" : "the staging area is not provisioned";
                return -EINVAL;
        }
        return to == from ? 0 : set_staging(c, to, false, NULL, NULL) < 0 ? -EIO : 1;
}
