/* SPDX-License-Identifier: MIT */
/* Staging areas: checked, created and removed in workers by the backend's driver (storage-driver.h);
 * recorded on the session as a JSON array of what was created ({"kind", …}, as the driver says), undone last
 * to first. Undoing is idempotent: what is gone already is fine, so a retry or a second cleanup after a
 * crash does no harm. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format.h"
#include "image.h"
#include "json-util.h"
#include "log.h"
#include "pureboot-errors.h"
#include "staging.h"
#include "storage-driver.h"
#include "storage.h"
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
        WorkerDone done; /* an image's area: told the outcome */
        void *userdata;
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

/* What staging a disk of size bytes takes where space is measured: the disk and the margin. */
static uint64_t space_needed(uint64_t size) {
        return size + size / 100 * STAGING_MARGIN_PERCENT;
}

int staging_no_space(const StorageBackend *b, uint64_t need, uint64_t size, uint64_t available, bool lun,
                     char **ret_why) {
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
        return -ENOSPC;
}

int staging_check_space(CloneSession *c, uint64_t size, sd_bus_error *error) {
        StorageBackend *b = c->staging_backend ? hashmap_get(c->manager->storages, c->staging_backend) : NULL;
        uint64_t need = space_needed(size);
        _cleanup_free_ char *why = NULL;

        /* A pool's free LUNs are counted when provisioning; unmeasured space is not guessed at. */
        if (!b || size == 0 || b->total_bytes == 0 || !storage_driver(b->type)->space_is_measured(b) ||
            b->available_bytes >= need)
                return 0;
        (void) staging_no_space(b, need, size, b->available_bytes, false, &why);
        return sd_bus_error_setf(error, PB_ERROR_INSUFFICIENT_SPACE,
                                 "Session %s: %s. (Space as last measured; purebootctl storage space %s measures "
                                 "again.)",
                                 c->id, why ?: "not enough staging space", b->name);
}

/* In the child: what an earlier try left goes first; then (provisioning) the area is made, if there is room,
 * and what was made is the result ({"resources", "lun"}); {"insufficient": true} says there was no room. */
static json_object *staging_child(void *data, char **ret_why) {
        StagingJob *j = data;
        const StorageBackend *b = j->backend;
        const StorageDriver *d = storage_driver(b->type);
        uint64_t total, available, need = space_needed(j->size);
        StagingRequest q = {
                .backend = b, .session = j->session, .size = j->size, .busy = j->busy, .n_busy = j->n_busy
        };
        json_object *created, *result;
        int lun = -1, r;

        if (d->undo(b, j->undo, ret_why) < 0 || !j->provision)
                return NULL;
        created = json_object_new_array();
        if (!created)
                return NULL;
        r = 0;
        if (d->space_is_measured(b)) {
                r = d->measure(b, NULL, 0, &total, &available, ret_why);
                if (r >= 0 && available < need)
                        r = staging_no_space(b, need, j->size, available, false, ret_why);
        }
        if (r >= 0)
                r = d->provision(&q, created, &lun, ret_why);
        if (r < 0) {
                _cleanup_free_ char *also = NULL;
                (void) d->undo(b, created, &also);
                json_object_put(created);
                result = r == -ENOSPC ? json_object_new_object() : NULL;
                if (result)
                        json_object_object_add(result, "insufficient", json_object_new_boolean(true));
                return result;
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
        return 0;
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
                _cleanup_free_ char *path =
                        storage_driver(b->type)->display_path(b, c->id, (int) json_get_int(result, "lun"));
                (void) json_object_object_get_ex(result, "resources", &resources);
                if (set_staging(c, STAGING_PROVISIONED, true, resources, path) >= 0)
                        log_info("Staging of session %s is ready at %s.", c->id, strna(path));
        } else if (clone_status_is_active(c->status)) {
                _cleanup_free_ char *message = NULL;
                bool space = result && json_object_object_get_ex(result, "insufficient", NULL);
                if (asprintf(&message, "%s%s.%s", space ? "Not enough staging space: " : "Staging failed: ", why,
                             space ? " Nothing was copied." : "") >= 0)
                        (void) clone_end(c, CLONE_FAILED, message, &e);
        }
        job_free(j);
}

/* The pool LUNs among resources (what staging made), added to j's busy ones. */
static int add_busy_luns(StagingJob *j, json_object *resources) {
        for (size_t k = 0; resources && k < json_object_array_length(resources); k++) {
                json_object *x = json_object_array_get_idx(resources, k);
                if (!streq_ptr(json_get_string(x, "kind"), "pool-lun"))
                        continue;
                int *busy = realloc(j->busy, (j->n_busy + 1) * sizeof(int));
                if (!busy)
                        return -ENOMEM;
                j->busy = busy;
                j->busy[j->n_busy++] = (int) json_get_int(x, "lun");
        }
        return 0;
}

/* The pool LUNs of b that sessions (but c) and images hold, into j. */
static int collect_busy_luns(Manager *m, StorageBackend *b, CloneSession *c, StagingJob *j) {
        CloneSession *o;
        Image *image;
        int r;

        HASHMAP_FOREACH (o, m->sessions, i) {
                json_object *res = o != c && o->staging_resources && streq_ptr(o->staging_backend, b->id)
                                           ? json_tokener_parse(o->staging_resources)
                                           : NULL;
                r = add_busy_luns(j, res);
                json_object_put(res);
                if (r < 0)
                        return r;
        }
        HASHMAP_FOREACH (image, m->images, i)
                if (streq(image->backend, b->id) && (r = add_busy_luns(j, image->resources)) < 0)
                        return r;
        return 0;
}

int staging_provision(CloneSession *c) {
        Manager *m = c->manager;
        StorageBackend *b = c->staging_backend ? hashmap_get(m->storages, c->staging_backend) : NULL;
        _cleanup_free_ char *what = NULL;
        StagingJob *j;
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
        r = collect_busy_luns(m, b, c, j);
        if (r >= 0)
                r = worker_start(m, what, staging_child, j, on_provisioned, j, NULL);
        if (r < 0)
                job_free(j);
        return r;
}

static void on_area_provisioned(Manager *m, json_object *result, const char *why, void *userdata) {
        StagingJob *j = userdata;
        j->done(m, result, why, j->userdata);
        job_free(j);
}

int staging_provision_area(Manager *m, StorageBackend *b, const char *area, uint64_t size, WorkerDone done,
                           void *userdata) {
        _cleanup_free_ char *what = NULL;
        StagingJob *j = calloc(1, sizeof(StagingJob));
        int r;

        if (!j || !(j->session = strdup(area)) ||
            asprintf(&what, "staging setup of image area %s", area) < 0) {
                if (j)
                        free(j->session);
                free(j);
                return -ENOMEM;
        }
        j->backend = b;
        j->size = size;
        j->provision = true;
        j->done = done;
        j->userdata = userdata;
        r = collect_busy_luns(m, b, NULL, j);
        if (r >= 0)
                r = worker_start(m, what, staging_child, j, on_area_provisioned, j, NULL);
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
                return c->staging_resources
                               ? -ENOENT
                               : set_staging(c, image_of_session(c) ? STAGING_KEPT : STAGING_DELETED, true,
                                             NULL, NULL);
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

bool staging_is_left(CloneSession *c) {
        /* An image's staging is the image's to remove: the session only says it kept it. */
        return c->staging_resources != NULL || (image_of_session(c) && c->staging_status != STAGING_KEPT);
}

/* The Staging record of area (with resources, as staging made it) on backend b. */
static json_object *area_json(StorageBackend *b, const char *area, json_object *resources, uint64_t size,
                              StagingStatus status) {
        json_object *o = json_object_new_object();

        if (!b || !o)
                return json_object_put(o), NULL;
        json_object_object_add(o, "backend", json_object_new_string(backend_type_to_string(b->type)));
        storage_driver(b->type)->describe(b, area, resources, o);
        json_object_object_add(o, "sizeBytes", json_object_new_int64((int64_t) size));
        json_object_object_add(o, "status", json_object_new_string(staging_status_to_string(status)));
        return o;
}

json_object *staging_json(CloneSession *c) {
        /* A session reads the staging of the image it deploys, or captured once that took it. */
        Image *image = image_of_session(c);
        if (image)
                return area_json(hashmap_get(c->manager->storages, image->backend), image->area,
                                 image->resources, c->bytes_total, c->staging_status);
        _cleanup_(json_object_unrefp) json_object *res =
                c->staging_resources ? json_tokener_parse(c->staging_resources) : NULL;
        return area_json(hashmap_get(c->manager->storages, c->staging_backend), c->id, res, c->bytes_total,
                         c->staging_status);
}

json_object *staging_image_json(Image *i) {
        return area_json(hashmap_get(i->manager->storages, i->backend), i->area, i->resources, i->size,
                         i->state == IMAGE_IMPORTING ? STAGING_PROVISIONED : STAGING_KEPT);
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
