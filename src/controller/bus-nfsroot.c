/* SPDX-License-Identifier: MIT */
/* org.pureboot.Controller1.NfsRoot on /org/pureboot/Controller1/nfsroot. */
#include <fcntl.h>
#include <unistd.h>

#include "bus-nfsroot.h"
#include "bus-util.h"
#include "log.h"
#include "nfsroot.h"
#include "polkit.h"
#include "pureboot-errors.h"
#include "util.h"

#define NFSROOT_PATH PB_ROOT_PATH "/nfsroot"

static int property_get_list(sd_bus *bus, const char *path, const char *interface, const char *property,
                             sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        _cleanup_strv_free_ char **l = NULL;
        int r;
        (void) bus, (void) path, (void) interface, (void) error;
        r = streq(property, "BaseImages") ? nfsroot_list_bases(m, &l) : nfsroot_list_nodes(m, &l);
        return r < 0 ? r : sd_bus_message_append_strv(reply, l);
}

static int property_get_string(sd_bus *bus, const char *path, const char *interface, const char *property,
                               sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        (void) bus, (void) path, (void) interface, (void) error;
        return sd_bus_message_append(reply, "s", streq(property, "Path") ? m->config.nfsroot_path
                                                                         : strempty(m->config.nfsroot_default_base));
}

static int authorize_with(Manager *m, sd_bus_message *msg, const char *verb, const char *what,
                          BusOptions *ret, sd_bus_error *error) {
        _cleanup_(bus_options_done) BusOptions o = {};
        int r = bus_read_options(msg, &o, error);
        if (r < 0)
                return r;
        r = polkit_verify(m, msg, PB_POLKIT_ACTION("manage-nfsroot"),
                          (const char *const[]){ "verb", verb, "name", what, NULL },
                          bus_interactive(msg, &o), error);
        if (ret) {
                *ret = o;
                o = (BusOptions){};
        }
        return r;
}

static void emit(Manager *m, const char *property) {
        if (m->bus)
                (void) sd_bus_emit_properties_changed(m->bus, NFSROOT_PATH, PB_IFACE("NfsRoot"), property, NULL);
}

static int method_list_base_images(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_strv_free_ char **l = NULL;
        int r = nfsroot_list_bases(userdata, &l);
        (void) error;
        if (r >= 0)
                r = sd_bus_message_new_method_return(msg, &reply);
        if (r >= 0)
                r = sd_bus_message_append_strv(reply, l);
        return r < 0 ? r : sd_bus_send(NULL, reply, NULL);
}

static int authorize(Manager *m, sd_bus_message *msg, const char *verb, const char *what,
                     sd_bus_error *error) {
        return authorize_with(m, msg, verb, what, NULL, error);
}

/* The import's answer goes to the caller when the child is done. */
static void on_imported(Manager *m, const char *name, const char *why, const char *summary, void *userdata) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *msg = userdata;
        if (why) {
                (void) sd_bus_reply_method_errorf(msg, PB_ERROR_INVALID_ARGUMENT,
                                                  "Base image %s was not imported: %s. Nothing of it was kept.", name,
                                                  why);
                manager_audit(m, msg, "ImportBaseImage", name, why);
                return;
        }
        emit(m, "BaseImages");
        manager_audit(m, msg, "ImportBaseImage", name, "ok");
        (void) sd_bus_reply_method_return(msg, "s", strempty(summary));
}

static int check_name(const char *name, sd_bus_error *error) {
        if (!nfsroot_name_is_valid(name))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "\"%.64s\" is not a base image name: a letter or digit, then letters, "
                                         "digits, '.', '_' or '-', at most 64.", name);
        return 0;
}

static int import(sd_bus_message *msg, Manager *m, const char *name, int fd, const BusOptions *o,
                  sd_bus_error *error) {
        int r = nfsroot_import(m, name, fd, o->keep_setuid, on_imported, sd_bus_message_ref(msg), error);
        if (r < 0)
                sd_bus_message_unref(msg);
        return r < 0 ? r : 1; /* answered when the import ends */
}

static int method_import(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        const char *name;
        int fd, r;

        r = sd_bus_message_read(msg, "sh", &name, &fd);
        if (r >= 0) /* arguments first: a bad one is refused without asking anyone to authenticate */
                r = check_name(name, error);
        if (r < 0)
                return r;
        _cleanup_(bus_options_done) BusOptions o = {};
        r = authorize_with(m, msg, "import", name, &o, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        return import(msg, m, name, fd, &o, error);
}

static int method_import_file(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        _cleanup_close_ int fd = -EBADF;
        const char *name, *path;
        int r;

        r = sd_bus_message_read(msg, "ss", &name, &path);
        if (r >= 0)
                r = check_name(name, error);
        if (r >= 0 && path[0] != '/')
                r = sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                      "\"%.200s\" is not an absolute path.", path);
        if (r < 0)
                return r;
        _cleanup_(bus_options_done) BusOptions o = {};
        r = authorize_with(m, msg, "import", name, &o, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        fd = open_regular(path);
        if (fd == -EBADFD)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "%.200s is not a regular file; give the path of a tar archive.",
                                         path);
        if (fd < 0)
                return sd_bus_error_set_errnof(error, -fd, "Cannot open %s: %m", path);
        return import(msg, m, name, fd, &o, error);
}

static int method_create_overlay(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        const char *serial, *base, *hostname;
        int r;

        r = sd_bus_message_read(msg, "sss", &serial, &base, &hostname);
        if (r >= 0) /* arguments first: a bad one is refused without asking anyone to authenticate */
                r = nfsroot_create_overlay(m, serial, base, hostname, true, error);
        if (r < 0)
                return r;
        r = authorize(m, msg, "create-overlay", serial, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = nfsroot_create_overlay(m, serial, base, hostname, false, error);
        if (r < 0)
                return r;
        emit(m, "Nodes");
        manager_audit(m, msg, "CreateNodeOverlay", serial, "ok");
        return sd_bus_reply_method_return(msg, NULL);
}

static int method_delete_overlay(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        const char *serial;
        int r;

        r = sd_bus_message_read(msg, "s", &serial);
        if (r >= 0)
                r = nfsroot_delete_overlay(m, serial, true, error);
        if (r < 0)
                return r;
        r = authorize(m, msg, "delete-overlay", serial, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = nfsroot_delete_overlay(m, serial, false, error);
        if (r < 0)
                return r;
        emit(m, "Nodes");
        manager_audit(m, msg, "DeleteNodeOverlay", serial, "ok");
        return sd_bus_reply_method_return(msg, NULL);
}

static int method_get_node_info(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(nfsroot_node_done) NfsRootNode n = {};
        const char *serial;
        int r = sd_bus_message_read(msg, "s", &serial);
        if (r >= 0)
                r = nfsroot_node_info(userdata, serial, &n, error);
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(msg, "sssst", n.serial, strempty(n.base), strempty(n.hostname),
                                          strempty(n.machine_id), n.created_at);
}

static int method_get_overlay_options(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_free_ char *options = NULL;
        const char *serial, *base;
        int r = sd_bus_message_read(msg, "ss", &serial, &base);
        if (r >= 0)
                r = nfsroot_overlay_options(userdata, serial, base, &options, error);
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(msg, "s", options);
}

static const sd_bus_vtable nfsroot_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Path", "s", property_get_string, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("DefaultBaseImage", "s", property_get_string, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("BaseImages", "as", property_get_list, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Nodes", "as", property_get_list, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_METHOD_WITH_ARGS("ListBaseImages", SD_BUS_NO_ARGS, SD_BUS_RESULT("as", names),
                                method_list_base_images, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ImportBaseImage", SD_BUS_ARGS("s", name, "h", archive, "a{sv}", options),
                                SD_BUS_RESULT("s", summary), method_import, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ImportBaseImageFile", SD_BUS_ARGS("s", name, "s", path, "a{sv}", options),
                                SD_BUS_RESULT("s", summary), method_import_file, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("CreateNodeOverlay",
                                SD_BUS_ARGS("s", serial, "s", base, "s", hostname, "a{sv}", options),
                                SD_BUS_NO_RESULT, method_create_overlay, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("DeleteNodeOverlay", SD_BUS_ARGS("s", serial, "a{sv}", options),
                                SD_BUS_NO_RESULT, method_delete_overlay, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS(
                "GetNodeInfo", SD_BUS_ARGS("s", serial),
                SD_BUS_RESULT("s", serial, "s", base, "s", hostname, "s", machine_id, "t", created),
                method_get_node_info, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetOverlayMountOptions", SD_BUS_ARGS("s", serial, "s", base),
                                SD_BUS_RESULT("s", options), method_get_overlay_options,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END,
};

int bus_nfsroot_register(Manager *m) {
        int r = sd_bus_add_object_vtable(m->bus, NULL, NFSROOT_PATH, PB_IFACE("NfsRoot"), nfsroot_vtable, m);
        if (r < 0)
                return log_error_errno(r, "Failed to register the NFS root object: %m");
        return 0;
}
