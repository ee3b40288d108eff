/* SPDX-License-Identifier: MIT */
/* Local backends: a directory on the controller's host (path=), for a site with no storage server. Each
 * session stages in a directory of its own, <path>/<session>, recorded as {"kind": "local-directory",
 * "path"}. Nodes reach its files through the bridge: for each request the controller opens the one file the
 * node's certificate may use (storage_local_open) and hands the bridge the open file, so neither the
 * bridge nor a node ever names a path. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "format.h"
#include "pureboot-errors.h"
#include "storage-driver.h"
#include "storage-io.h"
#include "util.h"

static const StorageField local_fields[] = {
        { "path", 's' },
};

static char *area_dir(const StorageBackend *b, const char *area) {
        char *p;
        return asprintf(&p, "%s/%s", json_get_string(b->config, "path"), area) < 0 ? NULL : p;
}

static int local_validate(json_object *config, const char *secret, sd_bus_error *error) {
        const char *v = json_get_string(config, "path");
        (void) secret;
        if (!path_is_safe(v, 1024) || streq(v, "/"))
                return sd_bus_error_setf(
                        error, PB_ERROR_INVALID_ARGUMENT,
                        "A local backend needs path=DIRECTORY, an absolute path on the "
                        "controller's host without \"..\", such as /var/lib/pureboot/images.");
        return 0;
}

static bool local_space_is_measured(const StorageBackend *b) {
        (void) b;
        return true;
}

/* The directory, made if it is not there yet (the controller's alone). */
static int top_dir(const StorageBackend *b, char **ret_why) {
        const char *top = json_get_string(b->config, "path");
        int r = mkdir_p(top, 0700);
        if (r < 0)
                return asprintf(ret_why, "cannot create %s: %s", top, strerror(-r)) < 0 ? -ENOMEM : r;
        return 0;
}

static int local_measure(const StorageBackend *b, const int *busy, size_t n_busy, uint64_t *ret_total,
                         uint64_t *ret_available, char **ret_why) {
        const char *top = json_get_string(b->config, "path");
        struct statvfs st;
        int r;
        (void) busy, (void) n_busy;

        r = top_dir(b, ret_why);
        if (r < 0)
                return r;
        if (statvfs(top, &st) < 0)
                return r = -errno, asprintf(ret_why, "cannot measure %s: %m", top) < 0 ? -ENOMEM : r;
        *ret_total = (uint64_t) st.f_blocks * st.f_frsize;
        *ret_available = (uint64_t) st.f_bavail * st.f_frsize;
        return 0;
}

static int local_test(const StorageBackend *b, char **ret_report, char **ret_why) {
        const char *top = json_get_string(b->config, "path");
        _cleanup_free_ char *probe = NULL;
        static const char text[] = "pureboot probe\n";
        char back[sizeof(text)] = {};
        uint64_t total, available;
        int r, fd;

        r = local_measure(b, NULL, 0, &total, &available, ret_why);
        if (r < 0)
                return r;
        if (asprintf(&probe, "%s/.pureboot-probe", top) < 0)
                return -ENOMEM;
        fd = open(probe, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0 || pwrite(fd, text, sizeof(text) - 1, 0) != (ssize_t) sizeof(text) - 1 ||
            pread(fd, back, sizeof(text) - 1, 0) != (ssize_t) sizeof(text) - 1 || !streq(back, text)) {
                r = -errno ?: -EIO;
                if (fd >= 0)
                        close(fd);
                (void) unlink(probe);
                return asprintf(ret_why, "cannot write and read back a probe file in %s: %s", top,
                                strerror(-r)) < 0
                               ? -ENOMEM
                               : r;
        }
        close(fd);
        (void) unlink(probe);
        return asprintf(ret_report, "A probe file was written, read back and removed in %s (%s free of %s).",
                        top, FORMAT_BYTES(available), FORMAT_BYTES(total)) < 0
                       ? -ENOMEM
                       : 0;
}

static int remove_dir(const char *path, char **ret_why) {
        int r = rm_rf(path);
        if (r < 0 && r != -ENOENT)
                return asprintf(ret_why, "cannot remove %s: %s", path, strerror(-r)) < 0 ? -ENOMEM : r;
        return 0;
}

static int local_provision(const StagingRequest *q, json_object *created, int *ret_lun, char **ret_why) {
        _cleanup_free_ char *dir = area_dir(q->backend, q->session);
        json_object *o;
        int r;

        *ret_lun = -1;
        if (!dir)
                return -ENOMEM;
        r = top_dir(q->backend, ret_why);
        if (r >= 0)
                r = remove_dir(dir, ret_why); /* what a crashed try left */
        if (r >= 0 && mkdir(dir, 0700) < 0)
                r = -errno, (void) asprintf(ret_why, "cannot create %s: %m", dir);
        if (r < 0)
                return r;
        o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        json_object_object_add(o, "kind", json_object_new_string("local-directory"));
        json_object_object_add(o, "path", json_object_new_string(dir));
        return json_object_array_add(created, o) < 0 ? -ENOMEM : 0;
}

static int local_undo(const StorageBackend *b, json_object *resources, char **ret_why) {
        int r = 0;
        (void) b;
        for (size_t i = resources ? json_object_array_length(resources) : 0; r >= 0 && i > 0; i--) {
                json_object *res = json_object_array_get_idx(resources, i - 1);
                if (streq_ptr(json_get_string(res, "kind"), "local-directory"))
                        r = remove_dir(json_get_string(res, "path"), ret_why);
        }
        return r;
}

static char *local_display_path(const StorageBackend *b, const char *session, int lun) {
        char *p;
        (void) lun;
        return asprintf(&p, "local:%s/%s", json_get_string(b->config, "path"), session) < 0 ? NULL : p;
}

static void local_describe(const StorageBackend *b, const char *session, json_object *resources,
                           json_object *o) {
        (void) resources;
        json_object_object_add(o, "server", json_object_new_string("")); /* nodes: through the bridge */
        json_object_object_add(o, "path", json_object_new_string(json_get_string(b->config, "path")));
        json_object_object_add(o, "directory", json_object_new_string(session));
}

const StorageDriver storage_driver_local = {
        .type = BACKEND_LOCAL,
        .fields = local_fields,
        .n_fields = ELEMENTSOF(local_fields),
        .fields_help = "A local backend takes path.",
        .validate = local_validate,
        .space_is_measured = local_space_is_measured,
        .measure = local_measure,
        .test = local_test,
        .provision = local_provision,
        .undo = local_undo,
        .display_path = local_display_path,
        .describe = local_describe,
};

/* The image's files, as staged-files.c names them: nothing else is served. */
static bool file_name_is_valid(const char *name, bool partial) {
        const char *rest = startswith(name, STAGING_IMAGE) ?: startswith(name, STAGING_MANIFEST);
        return rest && streq(rest, partial ? STAGING_PARTIAL : "");
}

/* The area's directory, to name its files from. */
static int open_area(const char *dir, sd_bus_error *error) {
        int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        return fd >= 0 ? fd
                       : sd_bus_error_set_errnof(error, errno, "Cannot open the staging area %s: %m", dir);
}

int storage_local_open(const char *dir, const char *name, StagingFileAccess how, int *ret_fd,
                       uint64_t *ret_size, sd_bus_error *error) {
        _cleanup_close_ int dfd = -EBADF;
        struct stat st;
        int fd;

        if (!file_name_is_valid(name, how != STAGING_FILE_READ))
                return sd_bus_error_setf(
                        error, PB_ERROR_INVALID_ARGUMENT,
                        "There is no staging file \"%.64s\" to %s: the area holds " STAGING_IMAGE
                        " and " STAGING_MANIFEST ", each written under its " STAGING_PARTIAL " name first.",
                        name, how == STAGING_FILE_READ ? "read" : "write");
        dfd = open_area(dir, error);
        if (dfd < 0)
                return dfd;
        fd = openat(dfd, name,
                    (how == STAGING_FILE_READ ? O_RDONLY : O_WRONLY | O_CREAT) |
                            (how == STAGING_FILE_CREATE ? O_TRUNC : 0) | O_CLOEXEC | O_NOFOLLOW,
                    0600);
        if (fd < 0 && errno == ENOENT)
                return sd_bus_error_setf(error, PB_ERROR_NO_SUCH_IMAGE,
                                         "The staging area holds no %s (yet).", name);
        if (fd < 0)
                return sd_bus_error_set_errnof(error, errno, "Cannot open %s in %s: %m", name, dir);
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
                close(fd);
                return sd_bus_error_setf(error, PB_ERROR_INVALID_STATE, "%s in %s is not a regular file.",
                                         name, dir);
        }
        *ret_fd = fd;
        *ret_size = (uint64_t) st.st_size;
        return 0;
}

int storage_local_commit(const char *dir, const char *name, sd_bus_error *error) {
        _cleanup_free_ char *partial = NULL;
        _cleanup_close_ int dfd = -EBADF, fd = -EBADF;

        if (!file_name_is_valid(name, false))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "There is no staging file \"%.64s\".", name);
        if (asprintf(&partial, "%s" STAGING_PARTIAL, name) < 0)
                return -ENOMEM;
        dfd = open_area(dir, error);
        if (dfd < 0)
                return dfd;
        fd = openat(dfd, partial, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return sd_bus_error_setf(error, PB_ERROR_NO_SUCH_IMAGE, "There is no %s to make whole.",
                                         partial);
        /* Durable before it takes its name, and the name durable too. */
        if (fsync(fd) < 0 || renameat(dfd, partial, dfd, name) < 0 || fsync(dfd) < 0)
                return sd_bus_error_set_errnof(error, errno, "Cannot make %s whole in %s: %m", name, dir);
        return 0;
}

int storage_local_remove(const char *dir, const char *name, sd_bus_error *error) {
        _cleanup_close_ int dfd = -EBADF;

        if (!file_name_is_valid(name, false) && !file_name_is_valid(name, true))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "There is no staging file \"%.64s\".", name);
        dfd = open_area(dir, error);
        if (dfd < 0)
                return dfd;
        if (unlinkat(dfd, name, 0) < 0 && errno != ENOENT)
                return sd_bus_error_set_errnof(error, errno, "Cannot remove %s from %s: %m", name, dir);
        return 0;
}
