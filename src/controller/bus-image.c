/* SPDX-License-Identifier: MIT */
/* org.pureboot.Controller1.Image on /org/pureboot/Controller1/image/<id>. */
#include <fcntl.h>
#include <unistd.h>

#include "bus-image.h"
#include "bus-util.h"
#include "clone.h"
#include "image-file.h"
#include "image.h"
#include "log.h"
#include "polkit.h"
#include "pureboot-errors.h"
#include "storage.h"

#define IMAGE_PREFIX PB_ROOT_PATH "/image"

static int property_get_state(sd_bus *bus, const char *path, const char *interface, const char *property,
                              sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Image *i = userdata;
        (void) bus, (void) path, (void) interface, (void) property, (void) error;
        return sd_bus_message_append(reply, "s", image_state_to_string(image_state(i)));
}

static int property_get_layout(sd_bus *bus, const char *path, const char *interface, const char *property,
                               sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Image *i = userdata;
        (void) bus, (void) path, (void) interface, (void) property, (void) error;
        return sd_bus_message_append(
                reply, "s",
                i->layout ? json_object_to_json_string_ext(i->layout, JSON_C_TO_STRING_PLAIN) : "");
}

static int property_get_backend(sd_bus *bus, const char *path, const char *interface, const char *property,
                                sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Image *i = userdata;
        StorageBackend *b = hashmap_get(i->manager->storages, i->backend);
        _cleanup_free_ char *p = b ? storage_path(b) : strdup("/");
        (void) bus, (void) path, (void) interface, (void) property, (void) error;
        return p ? sd_bus_message_append(reply, "o", p) : -ENOMEM;
}

/* The sessions that capture or deploy it, as object paths. */
static int property_get_sessions(sd_bus *bus, const char *path, const char *interface, const char *property,
                                 sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Image *i = userdata;
        CloneSession *c;
        int r;
        (void) bus, (void) path, (void) interface, (void) property, (void) error;

        r = sd_bus_message_open_container(reply, 'a', "o");
        HASHMAP_FOREACH (c, i->manager->sessions, k) {
                if (r < 0)
                        break;
                if (!streq_ptr(c->image, i->id) && !streq_ptr(i->capture_session, c->id))
                        continue;
                _cleanup_free_ char *p = clone_path(c);
                r = p ? sd_bus_message_append(reply, "o", p) : -ENOMEM;
        }
        return r < 0 ? r : sd_bus_message_close_container(reply);
}

static int authorize(Image *i, sd_bus_message *msg, sd_bus_error *error) {
        _cleanup_(bus_options_done) BusOptions o = {};
        int r = bus_read_options(msg, &o, error);
        if (r < 0)
                return r;
        return polkit_verify(i->manager, msg, PB_POLKIT_ACTION("manage-images"),
                             (const char *const[]){ "image", i->id, "name", i->name, NULL },
                             bus_interactive(msg, &o), error);
}

/* The answer of Delete goes to the caller once the worker removed the data. */
static void on_deleted(Manager *m, const char *why, void *userdata) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *msg = userdata;
        const char *path = sd_bus_message_get_path(msg);
        manager_audit(m, msg, "DeleteImage", strrchr(path, '/') + 1, why ?: "ok");
        if (why)
                (void) sd_bus_reply_method_errorf(
                        msg, PB_ERROR_STORAGE_UNAVAILABLE,
                        "The image's data could not be removed, so it is kept: %s. Try "
                        "again once its storage is reachable.",
                        why);
        else
                (void) sd_bus_reply_method_return(msg, NULL);
}

static int method_delete(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Image *i = userdata;
        int r;

        r = authorize(i, msg, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = image_delete(i, on_deleted, sd_bus_message_ref(msg), error);
        if (r < 0)
                sd_bus_message_unref(msg);
        return r < 0 ? r : 1; /* answered when the data is gone */
}

/* Progress: of whatever runs (verify, export, import); VerifyProgress: of a check only. */
static int property_get_progress(sd_bus *bus, const char *path, const char *interface, const char *property,
                                 sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Image *i = userdata;
        (void) bus, (void) path, (void) interface, (void) error;
        return sd_bus_message_append(
                reply, "d",
                streq(property, "Progress") || image_state(i) == IMAGE_VERIFYING ? image_progress(i) : 0.0);
}

static int property_get_verify_error(sd_bus *bus, const char *path, const char *interface,
                                     const char *property, sd_bus_message *reply, void *userdata,
                                     sd_bus_error *error) {
        Image *i = userdata;
        (void) bus, (void) path, (void) interface, (void) property, (void) error;
        return sd_bus_message_append(reply, "s", strempty(i->verify_error));
}

static int method_verify(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Image *i = userdata;
        int r;

        r = authorize(i, msg, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = image_verify(i, error);
        if (r < 0)
                return r;
        manager_audit(i->manager, msg, "VerifyImage", i->id, "started");
        return sd_bus_reply_method_return(msg, NULL);
}

/* The answer of Export goes to the caller once the file is written. */
static void on_exported(Manager *m, const char *id, const char *why, void *userdata) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *msg = userdata;
        manager_audit(m, msg, "ExportImage", id, why ?: "ok");
        if (why)
                (void) sd_bus_reply_method_errorf(
                        msg, PB_ERROR_OPERATION_REFUSED,
                        "The image was not exported: %s. What was written is not the whole image: "
                        "remove the file, or restore the disk again.",
                        why);
        else
                (void) sd_bus_reply_method_return(msg, NULL);
}

static int method_export(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Image *i = userdata;
        int fd, r;

        r = sd_bus_message_read(msg, "h", &fd);
        if (r < 0)
                return r;
        r = authorize(i, msg, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (fd < 0)
                return -errno;
        r = image_export(i, fd, on_exported, sd_bus_message_ref(msg), error);
        if (r < 0) {
                close(fd);
                sd_bus_message_unref(msg);
        }
        return r < 0 ? r : 1; /* answered when the file is written */
}

/* Rename and SetDescription: one string, checked before polkit asks anyone. */
static int method_set_string(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Image *i = userdata;
        bool rename = streq(sd_bus_message_get_member(msg), "Rename");
        const char *value;
        int r;

        r = sd_bus_message_read(msg, "s", &value);
        if (r < 0)
                return r;
        if (rename && !streq(value, i->name) && (r = image_name_check(i->manager, value, error)) < 0)
                return r;
        r = authorize(i, msg, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = rename ? image_rename(i, value, error) : image_set_description(i, value, error);
        if (r < 0)
                return r;
        manager_audit(i->manager, msg, rename ? "RenameImage" : "SetImageDescription", i->id, "ok");
        return sd_bus_reply_method_return(msg, NULL);
}

#define P(name, sig, field)                                                                                 \
        SD_BUS_PROPERTY(name, sig, NULL, offsetof(Image, field), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE)
#define C(name, sig, field)                                                                                 \
        SD_BUS_PROPERTY(name, sig, NULL, offsetof(Image, field), SD_BUS_VTABLE_PROPERTY_CONST)

static const sd_bus_vtable image_vtable[] = {
        SD_BUS_VTABLE_START(0),
        C("Id", "s", id),
        P("Name", "s", name),
        P("Description", "s", description),
        SD_BUS_PROPERTY("State", "s", property_get_state, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("StorageBackend", "o", property_get_backend, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        P("Location", "s", location),
        C("SourceNode", "s", source_node),
        C("SourceHostname", "s", source_hostname),
        C("SourceDevice", "s", source_device),
        SD_BUS_PROPERTY("Layout", "s", property_get_layout, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        P("SizeBytes", "t", size),
        P("StoredBytes", "t", stored),
        P("Digest", "s", digest),
        C("CaptureSession", "s", capture_session),
        SD_BUS_PROPERTY("Sessions", "ao", property_get_sessions, 0,
                        SD_BUS_VTABLE_PROPERTY_EMITS_INVALIDATION),
        C("CreatedAt", "t", created_at),
        C("CreatedBy", "u", created_by),
        SD_BUS_PROPERTY("Progress", "d", property_get_progress, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("VerifyProgress", "d", property_get_progress, 0,
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        P("VerifiedAt", "t", verified_at),
        SD_BUS_PROPERTY("VerifyError", "s", property_get_verify_error, 0,
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_METHOD_WITH_ARGS("Delete", SD_BUS_ARGS("a{sv}", options), SD_BUS_NO_RESULT, method_delete,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Verify", SD_BUS_ARGS("a{sv}", options), SD_BUS_NO_RESULT, method_verify,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Export", SD_BUS_ARGS("h", file, "a{sv}", options), SD_BUS_NO_RESULT,
                                method_export, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Rename", SD_BUS_ARGS("s", name, "a{sv}", options), SD_BUS_NO_RESULT,
                                method_set_string, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("SetDescription", SD_BUS_ARGS("s", description, "a{sv}", options),
                                SD_BUS_NO_RESULT, method_set_string, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END,
};

static int find(sd_bus *bus, const char *path, const char *interface, void *userdata, void **found,
                sd_bus_error *error) {
        Manager *m = userdata;
        (void) bus, (void) interface, (void) error;
        return bus_find_object(m->images, IMAGE_PREFIX, path, found);
}

static int enumerate(sd_bus *bus, const char *path, void *userdata, char ***nodes, sd_bus_error *error) {
        Manager *m = userdata;
        (void) bus, (void) path, (void) error;
        return bus_enumerate_objects(m->images, IMAGE_PREFIX, nodes);
}

int bus_image_register(Manager *m) {
        int r = sd_bus_add_fallback_vtable(m->bus, NULL, IMAGE_PREFIX, PB_IFACE("Image"), image_vtable, find,
                                           m);
        if (r >= 0)
                r = sd_bus_add_node_enumerator(m->bus, NULL, IMAGE_PREFIX, enumerate, m);
        if (r < 0)
                return log_error_errno(r, "Failed to register image objects: %m");
        return 0;
}
