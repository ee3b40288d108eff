/* SPDX-License-Identifier: MIT */
/* Export and import of images as files, each step the agent's on this host (image_task_start): export-image
 * writes the caller's file; restore-image, then upload-image, bring a file or directory in. */
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bus-util.h"
#include "image-file.h"
#include "json-util.h"
#include "log.h"
#include "pureboot-errors.h"
#include "staging.h"
#include "storage-driver.h"
#include "storage.h"
#include "util.h"

struct ImageImport {
        char *id;              /* the image's */
        char *work;            /* its work directory */
        json_object *restored; /* what restore-image said */
        char *why;             /* once it failed */
        ImageFileDone done;
        void *userdata;
};

void image_import_free(ImageImport *x) {
        if (!x)
                return;
        free(x->id);
        free(x->work);
        json_object_put(x->restored);
        free(x->why);
        free(x);
}

/* What a tool that failed said, or how it ended. */
static char *verdict_why(json_object *v, const siginfo_t *si) {
        char *s;
        if (json_get_string(v, "error"))
                return strdup(json_get_string(v, "error"));
        return asprintf(
                       &s,
                       "the agent ended (%s %d) without a verdict; its messages are in the controller's log",
                       si->si_code == CLD_EXITED ? "status" : "signal", si->si_status) < 0
                       ? NULL
                       : s;
}

typedef struct Export {
        int out;
        ImageFileDone done;
        void *userdata;
} Export;

static void on_exported(Image *i, json_object *v, const siginfo_t *si, void *userdata) {
        Export *x = userdata;
        _cleanup_free_ char *why = json_get_bool(v, "ok") || !si ? NULL : verdict_why(v, si);

        close(x->out);
        if (!si) {
                x->done(i->manager, i->id, "the controller stopped", x->userdata);
                return free(x);
        }
        if (why)
                log_warning("Image %s was not exported: %s", i->name, why);
        else
                log_info("Image %s exported.", i->name);
        x->done(i->manager, i->id, json_get_bool(v, "ok") ? NULL : why ?: "out of memory", x->userdata);
        free(x);
}

int image_export(Image *i, int out, ImageFileDone done, void *userdata, sd_bus_error *error) {
        _cleanup_(json_object_unrefp) json_object *request = json_object_new_object(),
                                                  *header = json_object_new_object();
        json_object *staging;
        Export *x;
        int r;

        if (i->state != IMAGE_READY || i->removing)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_STATE,
                                         "Image %s is %s; export it once it is ready.", i->name,
                                         i->removing ? "being deleted" : image_state_to_string(i->state));
        staging = staging_image_json(i);
        if (!request || !header || !staging)
                return json_object_put(staging), -ENOMEM;
        json_object_object_add(request, "staging", staging);
        json_object_object_add(header, "name", json_object_new_string(i->name));
        json_object_object_add(header, "description", json_object_new_string(strempty(i->description)));
        if (i->layout)
                json_object_object_add(header, "layout", json_object_get(i->layout));
        if (i->source_hostname)
                json_object_object_add(header, "sourceHostname", json_object_new_string(i->source_hostname));
        if (i->source_device)
                json_object_object_add(header, "sourceDevice", json_object_new_string(i->source_device));
        json_object_object_add(header, "createdAt", json_object_new_int64((int64_t) i->created_at));
        json_object_object_add(request, "header", TAKE_PTR(header));
        x = calloc(1, sizeof(Export));
        if (!x)
                return -ENOMEM;
        *x = (Export){ .out = out, .done = done, .userdata = userdata };
        r = image_task_start(i, "export-image", request, out, on_exported, x, error);
        if (r < 0)
                free(x);
        return r;
}

static char *work_dir(Manager *m, const char *id) {
        char *p;
        return asprintf(&p, "%s/pureboot-import-%s", m->config.image_work_dir, id) < 0 ? NULL : p;
}

/* The failed import's data is gone with its record, or (said so) kept as a broken image to delete later. */
static void on_import_removed(Manager *m, const char *why, void *userdata) {
        ImageImport *x = userdata;
        Image *i = hashmap_get(m->images, x->id);
        _cleanup_free_ char *said = NULL;

        if (why && i) {
                free(i->verify_error);
                i->state = IMAGE_BROKEN;
                if (asprintf(&i->verify_error,
                             "Its import failed (%s), and what it had written could not be removed (%s). "
                             "Delete "
                             "it to try again.",
                             x->why, why) < 0)
                        i->verify_error = NULL;
                if (store_image_update(m->store, i) < 0)
                        log_warning("Failed to record that image %s is broken.", i->name);
                image_emit_changed(i, "State", "VerifyError", NULL);
                (void) asprintf(&said,
                                "%s; what it had written could not be removed (%s), so it is kept as a "
                                "broken image to delete",
                                x->why, why);
        }
        x->done(m, x->id, said ?: x->why, x->userdata);
        image_import_free(x);
}

/* Everything the import made goes: the work directory, then the staging area with the record. */
static void import_failed(Image *i, const char *why) {
        ImageImport *x = TAKE_PTR(i->import);
        int r;

        x->why = strdup(why ?: "out of memory");
        log_warning("Image %s was not imported: %s", i->name, strna(x->why));
        (void) rm_rf(x->work);
        r = image_remove(i, on_import_removed, x);
        if (r < 0)
                on_import_removed(i->manager, strerror(-r), x);
}

static void on_uploaded(Image *i, json_object *v, const siginfo_t *si, void *userdata) {
        ImageImport *x = i->import;
        json_object *header = NULL, *layout = NULL;
        const char *digest = json_get_string(v, "digest"), *expected;
        _cleanup_free_ char *why = NULL, *description = NULL;
        (void) userdata;

        if (!si)
                return; /* the controller stops: image_import_stop() ends it */
        if (!json_get_bool(v, "ok") || !digest) {
                why = verdict_why(v, si);
                return import_failed(i, why);
        }
        (void) json_object_object_get_ex(x->restored, "header", &header);
        expected = json_get_string(header, "digest");
        if (expected && !streq(expected, digest)) { /* an exported image comes back as it was */
                (void) asprintf(&why, "the image uploaded has digest %s, the file says %s", digest,
                                expected);
                return import_failed(i, why);
        }
        /* The name asked for, else the exported image's, else what the source was. */
        if (isempty(i->description)) {
                const char *d = json_get_string(header, "description");
                if (isempty(d))
                        (void) asprintf(&description, "Imported from %s.",
                                        json_get_string(header, "origin") ?: "an exported PureBoot image");
                else
                        description = strdup(d);
                if (!description || !name_is_valid(description, 4096))
                        description = mfree(description);
        }
        (void) json_object_object_get_ex(v, "layout", &layout);
        /* The layout names the disk as the source did (the agent read a file): what deploys compare with. */
        const char *device = json_get_string(x->restored, "device");
        if (layout)
                json_object_object_add(
                        layout, "device",
                        json_object_new_string(device_path_is_valid(device) ? device : "/dev/sda"));
        char *old_digest = i->digest, *old_description = i->description;
        json_object *old_layout = i->layout;
        i->digest = strdup(digest);
        i->layout = json_object_get(layout);
        i->stored = (uint64_t) json_get_int(v, "storedBytes");
        if (description)
                i->description = description;
        i->state = IMAGE_READY;
        if (!i->digest || store_image_update(i->manager->store, i) < 0) {
                free(i->digest);
                json_object_put(i->layout);
                i->digest = old_digest;
                i->layout = old_layout;
                i->description = old_description;
                i->stored = 0;
                i->state = IMAGE_IMPORTING;
                return import_failed(i, "its record could not be written");
        }
        if (description) {
                TAKE_PTR(description);
                free(old_description);
        }
        free(old_digest);
        json_object_put(old_layout);
        i->import = NULL;
        (void) rm_rf(x->work);
        log_info("Image %s imported (%s): %s, digest %s.", i->name,
                 strna(json_get_string(x->restored, "format")), strna(i->location), i->digest);
        image_emit_changed(i, "State", "Description", "Location", "Layout", "SizeBytes", "StoredBytes",
                           "Digest", NULL);
        x->done(i->manager, i->id, NULL, x->userdata);
        image_import_free(x);
}

static void on_area(Manager *m, json_object *result, const char *why, void *userdata) {
        _cleanup_free_ char *id = userdata, *location = NULL, *message = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_(json_object_unrefp) json_object *request = json_object_new_object();
        Image *i = hashmap_get(m->images, id);
        StorageBackend *b = i ? hashmap_get(m->storages, i->backend) : NULL;
        json_object *resources = NULL, *skipped = NULL;
        int r;

        if (!i || !i->import)
                return;
        if (why || !b || !json_object_object_get_ex(result, "resources", &resources)) {
                bool space = result && json_object_object_get_ex(result, "insufficient", NULL);
                (void) asprintf(&message, "%s%s",
                                space ? "not enough space: " : "its staging area could not be made: ",
                                why ?: "its storage backend is gone");
                return import_failed(i, message);
        }
        location = storage_driver(b->type)->display_path(b, i->area, (int) json_get_int(result, "lun"));
        /* Recorded first, so that a controller that stops now removes the area when it starts again. */
        i->resources = json_object_get(resources);
        free(i->location);
        i->location = TAKE_PTR(location);
        if (store_image_update(m->store, i) < 0)
                return import_failed(i, "its record could not be written");
        json_object_object_add(request, "work", json_object_new_string(i->import->work));
        json_object_object_add(request, "staging", staging_image_json(i));
        if (json_object_object_get_ex(i->import->restored, "skipped", &skipped))
                json_object_object_add(request, "skipped", json_object_get(skipped));
        r = image_task_start(i, "upload-image", request, -EBADF, on_uploaded, NULL, &e);
        if (r < 0)
                import_failed(i, e.message ?: strerror(-r));
}

static void on_restored(Image *i, json_object *v, const siginfo_t *si, void *userdata) {
        ImageImport *x = i->import;
        _cleanup_free_ char *raw = NULL, *why = NULL;
        struct stat st;
        int r;
        (void) userdata;

        if (!si)
                return; /* the controller stops: image_import_stop() ends it */
        if (!json_get_bool(v, "ok")) {
                why = verdict_why(v, si);
                return import_failed(i, why);
        }
        x->restored = json_object_get(v);
        if (asprintf(&raw, "%s/disk.raw", x->work) < 0 || stat(raw, &st) < 0)
                return import_failed(i, "the restored disk is not there");
        i->size = (uint64_t) st.st_size;
        image_emit_changed(i, "SizeBytes", NULL);
        char *id = strdup(i->id);
        r = id ? staging_provision_area(i->manager, hashmap_get(i->manager->storages, i->backend), i->area,
                                        i->size, on_area, id)
               : -ENOMEM;
        if (r < 0) {
                free(id);
                import_failed(i, strerror(-r));
        }
}

int image_import(Manager *m, const char *name, const char *storage, const char *description, int source,
                 uint32_t uid, bool check_only, ImageFileDone done, void *userdata, Image **ret,
                 sd_bus_error *error) {
        _cleanup_close_ int fd = source;
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_(json_object_unrefp) json_object *request = json_object_new_object();
        char id[PB_ID_LEN + 1];
        StorageBackend *b;
        ImageImport *x;
        Image *i;
        int r;

        r = image_name_check(m, name, error);
        if (r >= 0)
                r = storage_resolve(m, storage, &b, error);
        if (r < 0)
                return r;
        if (!b->enabled)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_STATE,
                                         "Storage backend %s is disabled; enable it or pick another.",
                                         b->name);
        if (!isempty(description) && (strlen(description) > 4096 || !name_is_valid(description, 4096)))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "A description is at most 4096 bytes of text without control "
                                         "characters.");
        if (check_only)
                return 0;
        if (!request || id_new(id) < 0 || !(i = calloc(1, sizeof(Image))))
                return -ENOMEM;
        i->state = IMAGE_IMPORTING;
        i->created_at = now_realtime_usec();
        i->created_by = uid;
        if (!(i->id = strdup(id)) || !(i->name = strdup(name)) ||
            !(i->description = strdup(strempty(description))) || !(i->backend = strdup(b->id)) ||
            !(i->area = strdup(id))) {
                image_free(i);
                return -ENOMEM;
        }
        r = store_image_insert(m->store, i);
        if (r < 0) {
                image_free(i);
                return bus_store_error(error, r, "record the image");
        }
        r = image_attach(m, i);
        if (r < 0) { /* not announced: its record goes again */
                (void) store_image_delete(m->store, i->id);
                image_free(i);
                return r;
        }
        image_announce(i, true);
        x = calloc(1, sizeof(ImageImport));
        if (!x || !(x->id = strdup(id)) || !(x->work = work_dir(m, id))) {
                image_import_free(x);
                return -ENOMEM; /* the record stays importing: the next start removes it */
        }
        x->done = done;
        x->userdata = userdata;
        i->import = x;
        *ret = i;
        log_info("Importing image %s into storage backend %s.", name, b->name);
        if (mkdir(x->work, 0700) < 0) {
                _cleanup_free_ char *why = NULL;
                (void) asprintf(&why,
                                "cannot make its work directory %s: %m (WorkDirectory= in [Images] of "
                                "controller.conf names where)",
                                x->work);
                import_failed(i, why);
                return 0;
        }
        json_object_object_add(request, "work", json_object_new_string(x->work));
        r = image_task_start(i, "restore-image", request, fd, on_restored, NULL, &e);
        if (r < 0)
                import_failed(i, e.message ?: strerror(-r));
        return 0;
}

static void on_abandoned(Manager *m, const char *id, const char *why, void *userdata) {
        (void) m, (void) userdata;
        log_info("Image %s: the import the controller stopped in the middle of is taken away (%s).", id,
                 why);
}

void image_import_stop(Manager *m, ImageImport *x) {
        if (!x)
                return;
        x->done(m, x->id, "the controller stopped (what the import made goes when it starts again)",
                x->userdata);
        image_import_free(x);
}

void image_import_abandoned(Image *i) {
        ImageImport *x = calloc(1, sizeof(ImageImport));
        if (!x || !(x->id = strdup(i->id)) || !(x->work = work_dir(i->manager, i->id))) {
                image_import_free(x);
                return (void) log_oom();
        }
        x->done = on_abandoned;
        i->import = x;
        import_failed(i, "the controller stopped during the import");
}
