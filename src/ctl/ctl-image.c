/* SPDX-License-Identifier: MIT */
/* purebootctl image …: the image library — list, show, rename, describe and delete images, and deploy one to
 * several machines in one session. An image is made by a staged session with --keep-as NAME, by capture, or
 * by import (of an exported image, or of a Clonezilla or FOG image directory). */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "ctl-udisks.h"
#include "ctl.h"
#include "log.h"
#include "table.h"
#include "util.h"

static int image_list(sd_bus *bus) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(table_freep) Table *t =
                table_new("ID", "NAME", "STATE", "STORAGE", "SIZE", "CREATED", NULL);
        const char *id, *name, *state, *backend, *path;
        uint64_t size, created;
        int r;

        if (!t)
                return log_oom(), EXIT_FAILED;
        r = sd_bus_call_method(bus, PB_BUS_NAME, PB_ROOT_PATH, PB_IFACE("Manager"), "ListImages", &error,
                               &reply, NULL);
        if (r < 0)
                return ctl_error(&error, r, "list images");
        r = sd_bus_message_enter_container(reply, 'a', "(sssstto)");
        while (r >= 0 && (r = sd_bus_message_read(reply, "(sssstto)", &id, &name, &state, &backend, &size,
                                                  &created, &path)) > 0)
                if (table_add_row(t, "sssszT", id, name, state, backend, size, created) < 0)
                        r = -ENOMEM;
        if (r < 0)
                return log_error_errno(r, "Bad reply: %m"), EXIT_FAILED;
        ctl_pager_open();
        table_print(t, "images", arg.no_legend, arg.json);
        return EXIT_OK;
}

/* An Image method taking one string (or none) and options. */
static int image_call(sd_bus *bus, const char *path, const char *method, const char *value,
                      const char *what) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r = ctl_new_call(bus, path, PB_IFACE("Image"), method, &m);
        if (r >= 0 && value)
                r = sd_bus_message_append(m, "s", value);
        if (r >= 0)
                r = sd_bus_message_append(m, "a{sv}", 0);
        if (r < 0)
                return EXIT_FAILED;
        r = ctl_call(bus, m, NULL, what);
        return r < 0 ? -r : EXIT_OK;
}

/* A session call taking options only, whose failure is already reported. */
static int session_call(sd_bus *bus, const char *path, const char *method) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r = ctl_new_call(bus, path, PB_IFACE("CloneSession"), method, &m);
        if (r >= 0)
                r = sd_bus_message_append(m, "a{sv}", 0);
        return r < 0 ? -EXIT_FAILED
                     : ctl_call(bus, m, NULL,
                                streq(method, "Start") ? "start the session" : "remove the session");
}

/* image deploy NAME --target NODE… --target-device DEV: one session, each node a target, started. If a
 * target is refused the session is removed again: nothing is left half made. */
static int image_deploy(sd_bus *bus, const char *image) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_free_ char *path = NULL;
        const char *p;
        int r;

        size_t n = strv_length(arg.targets), n_devices = strv_length(arg.target_devices);

        if (n == 0 || !IN_SET(n_devices, 1u, n)) {
                log_error("image deploy needs --target NODE once per machine, and --target-device DEV once "
                          "for all "
                          "of them or once per --target, in the same order.");
                return EXIT_USAGE;
        }
        r = ctl_new_call(bus, PB_ROOT_PATH, PB_IFACE("Manager"), "CreateCloneSession", &m);
        if (r >= 0)
                r = sd_bus_message_append(m, "ssssss", arg.name ?: image, "staged", "", arg.targets[0], "",
                                          arg.target_devices[0]);
        if (r >= 0)
                r = clone_append_options(m, image);
        if (r < 0)
                return EXIT_FAILED;
        r = ctl_call(bus, m, &reply, "create the session");
        if (r < 0)
                return -r;
        if (sd_bus_message_read(reply, "o", &p) < 0 || !(path = strdup(p)))
                return EXIT_FAILED;
        for (size_t i = 1; r >= 0 && i < n; i++) {
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *add = NULL;
                const char *device = arg.target_devices[n_devices == 1 ? 0 : i];
                r = ctl_new_call(bus, path, PB_IFACE("CloneSession"), "AddTarget", &add);
                if (r >= 0)
                        r = sd_bus_message_append(add, "ss", arg.targets[i], device);
                if (r >= 0)
                        r = clone_append_target_options(add);
                if (r >= 0)
                        r = ctl_call(bus, add, NULL, "add the target");
        }
        if (r >= 0)
                r = session_call(bus, path, "Start");
        if (r < 0) {
                if (session_call(bus, path, "Delete") >= 0)
                        log_error("The session was removed again.");
                return -r <= EXIT_UNAVAILABLE ? -r : EXIT_FAILED;
        }
        printf("%s\n", strrchr(path, '/') + 1);
        return EXIT_OK;
}

/* image capture NAME --source NODE --source-device DEV --storage BACKEND: prints the capturing session's id,
 * which clone token and clone status take. */
static int image_capture(sd_bus *bus, const char *name) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        const char *image, *session;
        int r;

        if (!ctl_require(arg.source, "--source NODE", "image capture") ||
            !ctl_require(arg.source_device, "--source-device DEV", "image capture") ||
            !ctl_require(arg.storage, "--storage BACKEND", "image capture"))
                return EXIT_USAGE;
        r = ctl_new_call(bus, PB_ROOT_PATH, PB_IFACE("Manager"), "CaptureImage", &m);
        if (r >= 0)
                r = sd_bus_message_append(m, "ssssa{sv}", name, arg.source, arg.source_device, arg.storage,
                                          0);
        if (r < 0)
                return EXIT_FAILED;
        r = ctl_call(bus, m, &reply, "capture the image");
        if (r < 0)
                return -r;
        if (sd_bus_message_read(reply, "oo", &image, &session) < 0)
                return EXIT_FAILED;
        printf("%s\n", strrchr(session, '/') + 1);
        return EXIT_OK;
}

/* A call that takes as long as the disk does: no timeout (the caller's ^C stops waiting). */
static int long_call(sd_bus *bus, sd_bus_message *m, sd_bus_message **reply, const char *what) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        int r = sd_bus_call(bus, m, UINT64_MAX, &error, reply);
        return r < 0 ? ctl_error(&error, r, what) : EXIT_OK;
}

/* Export to fd (taken): a file the image file format goes into, or a disk it is written onto as it is. */
static int image_export_fd(sd_bus *bus, const char *path, int file) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_close_ int fd = file;
        int r = ctl_new_call(bus, path, PB_IFACE("Image"), "Export", &m);
        if (r >= 0)
                r = sd_bus_message_append(m, "ha{sv}", fd, 0);
        if (r < 0)
                return EXIT_FAILED;
        return long_call(bus, m, NULL, "export the image");
}

/* image export NAME FILE: the file is made here, new, and handed over; removed again if the export fails. */
static int image_export(sd_bus *bus, const char *path, const char *file) {
        int fd = ctl_create_new(file), r;

        if (fd < 0)
                return EXIT_FAILED;
        r = image_export_fd(bus, path, fd);
        if (r != EXIT_OK)
                (void) unlink(file);
        return r;
}

/* Import from fd (taken): an exported image, a Clonezilla or FOG directory, or a disk. Prints its id. The
 * caller checked --storage before opening anything. */
static int image_import_fd(sd_bus *bus, const char *name, int source) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_close_ int fd = source;
        const char *path;
        int r;

        r = ctl_new_call(bus, PB_ROOT_PATH, PB_IFACE("Manager"), "ImportImage", &m);
        if (r >= 0)
                r = arg.description ? sd_bus_message_append(m, "ssha{sv}", name, arg.storage, fd, 1,
                                                            "description", "s", arg.description)
                                    : sd_bus_message_append(m, "ssha{sv}", name, arg.storage, fd, 0);
        if (r < 0)
                return EXIT_FAILED;
        r = long_call(bus, m, &reply, "import the image");
        if (r != EXIT_OK)
                return r;
        if (sd_bus_message_read(reply, "o", &path) < 0)
                return EXIT_FAILED;
        printf("%s\n", strrchr(path, '/') + 1);
        return EXIT_OK;
}

/* image import NAME PATH --storage BACKEND: an exported image file, or a Clonezilla or FOG image directory,
 * opened here (what we may read) and handed over. */
static int image_import(sd_bus *bus, const char *name, const char *source) {
        int fd;
        if (!ctl_require(arg.storage, "--storage BACKEND", "image import"))
                return EXIT_USAGE;
        fd = open(source, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return log_error_errno(errno, "Cannot open %s: %m", source), EXIT_FAILED;
        return image_import_fd(bus, name, fd);
}

/* capture-local and restore-local: a disk of this machine, which udisks2 opens for the caller. */
static int image_local(sd_bus *bus, const char *verb, const char *name, const char *device) {
        bool restore = streq(verb, "restore-local");
        _cleanup_free_ char *path = NULL, *why = NULL;
        int fd, r;

        if (!restore && !ctl_require(arg.storage, "--storage BACKEND", "image capture-local"))
                return EXIT_USAGE;
        if (restore) { /* the image first: a typo costs no udisks2 prompt */
                r = ctl_resolve(bus, "GetImage", name, &path);
                if (r < 0)
                        return -r;
        }
        r = udisks_open_disk(device, restore, !arg.no_ask_password, &fd, &why);
        if (r < 0)
                return log_error_errno(r, "%s", why), r == -EACCES ? EXIT_NOT_AUTHORIZED : EXIT_FAILED;
        return restore ? image_export_fd(bus, path, fd) : image_import_fd(bus, name, fd);
}

/* image verify NAME: starts the check and follows it to its end; exits 0 if the image is whole. */
static int image_verify(sd_bus *bus, const char *path, const char *name) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_free_ char *state = NULL, *why = NULL;
        double progress = 0, shown = -1;
        int r = image_call(bus, path, "Verify", NULL, "verify the image");
        if (r != EXIT_OK)
                return r;
        for (;;) {
                state = mfree(state);
                r = sd_bus_get_property_string(bus, PB_BUS_NAME, path, PB_IFACE("Image"), "State", &error,
                                               &state);
                if (r >= 0 && streq(state, "verifying"))
                        r = sd_bus_get_property_trivial(bus, PB_BUS_NAME, path, PB_IFACE("Image"),
                                                        "VerifyProgress", &error, 'd', &progress);
                if (r < 0)
                        return ctl_error(&error, r, "follow the check");
                if (!streq(state, "verifying"))
                        break;
                if (progress - shown >= 0.1) {
                        printf("Verifying %s: %.0f %%\n", name, progress * 100);
                        fflush(stdout);
                        shown = progress;
                }
                (void) usleep(250 * 1000);
        }
        r = sd_bus_get_property_string(bus, PB_BUS_NAME, path, PB_IFACE("Image"), "VerifyError", &error,
                                       &why);
        if (r < 0)
                return ctl_error(&error, r, "read the verdict");
        if (streq(state, "ready") && isempty(why)) {
                printf("Image %s is whole: every chunk matches its manifest.\n", name);
                return EXIT_OK;
        }
        log_error("Image %s is %s: %s", name, state, why);
        return EXIT_FAILED;
}

int verb_image(sd_bus *bus, int argc, char **argv) {
        _cleanup_free_ char *path = NULL;
        const char *verb = argc > 0 ? argv[0] : "list";
        int r;

        if (streq(verb, "list") && argc <= 1)
                return image_list(bus);
        if (!(STR_IN_SET(verb, "show", "delete", "deploy", "capture", "verify") && argc == 2) &&
            !(STR_IN_SET(verb, "rename", "describe", "export", "import", "capture-local", "restore-local") &&
              argc == 3)) {
                log_error("Usage: purebootctl image list|show NAME|capture NAME …|deploy NAME …|verify "
                          "NAME|rename NAME NEW|describe NAME TEXT|export NAME FILE|import NAME PATH "
                          "--storage BACKEND|capture-local NAME DEVICE --storage BACKEND|restore-local NAME "
                          "DEVICE|delete NAME; see purebootctl --help.");
                return EXIT_USAGE;
        }
        if (STR_IN_SET(verb, "capture-local", "restore-local"))
                return image_local(bus, verb, argv[1], argv[2]);
        if (streq(verb, "import"))
                return image_import(bus, argv[1], argv[2]);
        if (streq(verb, "deploy"))
                return image_deploy(bus, argv[1]);
        if (streq(verb, "capture"))
                return image_capture(bus, argv[1]);
        r = ctl_resolve(bus, "GetImage", argv[1], &path);
        if (r < 0)
                return -r;
        if (streq(verb, "show")) {
                ctl_pager_open();
                return ctl_show_object(bus, path, PB_IFACE("Image"));
        }
        if (streq(verb, "verify"))
                return image_verify(bus, path, argv[1]);
        if (streq(verb, "rename"))
                return image_call(bus, path, "Rename", argv[2], "rename the image");
        if (streq(verb, "describe"))
                return image_call(bus, path, "SetDescription", argv[2], "describe the image");
        if (streq(verb, "export"))
                return image_export(bus, path, argv[2]);
        return image_call(bus, path, "Delete", NULL, "delete the image");
}
