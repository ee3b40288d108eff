/* SPDX-License-Identifier: MIT */
/* The image library: names reserved by a capturing session, the staging area handed from the session to the
 * image once the upload is whole, and the data removed by the storage driver when the image is deleted. */
#include <assert.h>
#include <ctype.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bus-manager.h"
#include "bus-util.h"
#include "clone.h"
#include "image-file.h"
#include "image.h"
#include "log.h"
#include "node.h"
#include "pureboot-errors.h"
#include "staging.h"
#include "storage-driver.h"
#include "storage.h"
#include "util.h"
#include "worker.h"

struct ImageTask {
        const char *verb;
        ImageTaskDone done;
        void *userdata;
        pid_t pid;
        int fd; /* its stdout: JSON lines */
        sd_event_source *io, *child;
        char *line; /* what it said since its last whole line */
        size_t have, allocated;
        uint64_t offset, size;
        json_object *verdict; /* its last line that was not progress */
};

/* The longest line a task may write: an import's verdict lists the chunks its image skips. */
#define TASK_LINE_MAX (UINT32_C(16) << 20)

static void task_free(ImageTask *k) {
        if (!k)
                return;
        sd_event_source_disable_unref(k->io);
        sd_event_source_disable_unref(k->child);
        if (k->pid > 0) { /* still running: the controller is going away, or it could not be watched */
                (void) kill(k->pid, SIGTERM);
                (void) waitpid(k->pid, NULL, 0);
        }
        if (k->fd >= 0)
                close(k->fd);
        free(k->line);
        json_object_put(k->verdict);
        free(k);
}

Image *image_free(Image *i) {
        if (!i)
                return NULL;
        if (i->task) { /* the controller stops first: done lets go of what it holds */
                ImageTask *k = TAKE_PTR(i->task);
                ImageTaskDone done = k->done;
                void *userdata = k->userdata;
                task_free(k);
                done(i, NULL, NULL, userdata);
        }
        image_import_stop(i->manager, TAKE_PTR(i->import));
        free(i->verify_error);
        char **strings[] = { &i->id,
                             &i->name,
                             &i->description,
                             &i->backend,
                             &i->area,
                             &i->location,
                             &i->source_node,
                             &i->source_hostname,
                             &i->source_device,
                             &i->digest,
                             &i->capture_session };
        for (size_t k = 0; k < ELEMENTSOF(strings); k++)
                free(*strings[k]);
        json_object_put(i->resources);
        json_object_put(i->layout);
        free(i);
        return NULL;
}

char *image_path(const Image *i) {
        char *p;
        return asprintf(&p, PB_ROOT_PATH "/image/%s", i->id) < 0 ? NULL : p;
}

int image_attach(Manager *m, Image *i) {
        i->manager = m;
        return hashmap_put(m->images, i->id, i);
}

void image_emit_changed(Image *i, const char *first, ...) {
        _cleanup_free_ char *path = image_path(i);
        va_list ap;

        va_start(ap, first);
        manager_emit_changed_va(i->manager, path, PB_IFACE("Image"), first, ap);
        va_end(ap);
}

static Image *find_by_name(Manager *m, const char *name) {
        Image *i;
        HASHMAP_FOREACH (i, m->images, k)
                if (streq(i->name, name))
                        return i;
        return NULL;
}

int image_resolve(Manager *m, const char *name, Image **ret, sd_bus_error *error) {
        Image *i, *found = NULL;
        size_t matches = 0;

        if (isempty(name))
                return sd_bus_error_setf(error, PB_ERROR_NO_SUCH_IMAGE, "No image given.");
        i = hashmap_get(m->images, name) ?: find_by_name(m, name);
        if (i) {
                *ret = i;
                return 0;
        }
        HASHMAP_FOREACH (i, m->images, k)
                if (strlen(name) >= 4 && startswith(i->id, name)) {
                        found = i;
                        matches++;
                }
        if (matches == 1) {
                *ret = found;
                return 0;
        }
        return sd_bus_error_setf(
                error, PB_ERROR_NO_SUCH_IMAGE,
                matches > 1 ? "\"%.64s\" matches several images; use the image's id."
                            : "No image \"%.64s\": give a name, an id or a unique id prefix of at "
                              "least 4 digits (purebootctl image list shows them).",
                name);
}

/* 1 to 64 letters, digits, ".", "_" and "-", not starting with "." or "-": it names files when exported. */
static bool image_name_is_valid(const char *s) {
        if (isempty(s) || strlen(s) > 64 || IN_SET(*s, '.', '-'))
                return false;
        for (const char *p = s; *p; p++)
                if (!isalnum((unsigned char) *p) && !strchr("._-", *p))
                        return false;
        return true;
}

int image_name_check(Manager *m, const char *name, sd_bus_error *error) {
        Image *other;
        if (!image_name_is_valid(name))
                return sd_bus_error_setf(
                        error, PB_ERROR_INVALID_ARGUMENT,
                        "An image name is 1 to 64 letters, digits, \".\", \"_\" and \"-\", not "
                        "starting with \".\" or \"-\"; \"%.64s\" is not.",
                        strempty(name));
        other = find_by_name(m, name);
        if (other)
                return sd_bus_error_setf(
                        error, PB_ERROR_ALREADY_EXISTS,
                        "There is an image named %s already (%s); pick another name, or delete "
                        "that one first.",
                        name, image_state_to_string(other->state));
        return 0;
}

int image_capture_new(CloneSession *c, const char *name, Image **ret, sd_bus_error *error) {
        Manager *m = c->manager;
        Node *source = hashmap_get(m->nodes, c->source_node);
        char id[PB_ID_LEN + 1];
        Image *i;
        int r;

        r = image_name_check(m, name, error);
        if (r < 0)
                return r;
        r = id_new(id);
        if (r < 0)
                return r;
        i = calloc(1, sizeof(Image));
        if (!i)
                return -ENOMEM;
        i->state = IMAGE_CAPTURING;
        i->created_at = now_realtime_usec();
        i->created_by = c->created_by;
        if (!(i->id = strdup(id)) || !(i->name = strdup(name)) || !(i->description = strdup("")) ||
            !(i->backend = strdup(c->staging_backend)) || !(i->area = strdup(c->id)) ||
            !(i->capture_session = strdup(c->id)) || !(i->source_node = strdup(c->source_node)) ||
            !(i->source_device = strdup(c->source_device)) ||
            (source && !(i->source_hostname = strdup(source->hostname)))) {
                image_free(i);
                return -ENOMEM;
        }
        r = store_image_insert(m->store, i);
        if (r < 0) {
                image_free(i);
                return bus_store_error(error, r, "reserve the image's name");
        }
        *ret = i;
        return 0;
}

int image_capture(Manager *m, const char *name, const char *node, const char *device, const char *storage,
                  uint32_t uid, bool check_only, CloneSession **ret, sd_bus_error *error) {
        _cleanup_free_ char *session_name = NULL;
        CloneSession *c;
        bool cancelled;
        int r;

        if (asprintf(&session_name, "capture of %s", strempty(name)) < 0)
                return -ENOMEM;
        CloneSpec spec = {
                .name = session_name,
                .mode = "staged",
                .source_node = node,
                .source_device = device,
                .storage = storage,
                .keep_as = name,
                .resize_mode = "none",
        };
        if (isempty(storage)) /* say it in the words of this call */
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "Name the storage backend the image is to be kept on.");
        if (check_only)
                return clone_check(m, &spec, error);
        r = clone_create(m, &spec, uid, &c, error);
        if (r < 0)
                return r;
        r = clone_start(c, error);
        if (r < 0) { /* nothing half made: the session and its reserved name go again */
                sd_bus_error e = SD_BUS_ERROR_NULL;
                (void) clone_delete(c, &cancelled, &e);
                sd_bus_error_free(&e);
                return r;
        }
        *ret = c;
        return 0;
}

/* The image session id captures (one at most), in any state. */
static Image *captured_by(Manager *m, const char *id) {
        Image *i;
        HASHMAP_FOREACH (i, m->images, k)
                if (streq_ptr(i->capture_session, id))
                        return i;
        return NULL;
}

Image *image_captured_by(CloneSession *c) {
        return captured_by(c->manager, c->id);
}

int image_check_deployable(Image *i, sd_bus_error *error) {
        if (i->state == IMAGE_BROKEN)
                return sd_bus_error_setf(
                        error, PB_ERROR_INVALID_STATE,
                        "Image %s is broken (%s); verify it again once its storage is repaired, or "
                        "capture it anew.",
                        i->name, strna(i->verify_error));
        if (i->state != IMAGE_READY || i->removing)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_STATE,
                                         "Image %s is %s; deploy it once it is ready.", i->name,
                                         i->removing ? "being deleted" : image_state_to_string(i->state));
        return 0;
}

Image *image_of_session(CloneSession *c) {
        Image *i = c->image ? hashmap_get(c->manager->images, c->image) : image_captured_by(c);
        /* A broken one still holds its data: a deploy under way reads on, and its own checks decide. */
        return i && i->state != IMAGE_CAPTURING ? i : NULL;
}

void image_announce(Image *i, bool added) {
        _cleanup_free_ char *path = image_path(i);
        if (path)
                (added ? bus_manager_emit_added : bus_manager_emit_removed)(
                        i->manager, added ? "ImageNew" : "ImageRemoved", i->id, path);
}

/* In take_staging's transaction: the image's row as it is now, the session's without the area, and a
 * session that captures alone completes. */
static int take_step(CloneSession *c, void *userdata, sd_bus_error *error) {
        Image *i = userdata;
        int r = store_image_update(c->manager->store, i);
        if (r >= 0)
                r = store_session_update(c->manager->store, c, NULL);
        if (r < 0)
                return bus_store_error(error, r, "hand the upload to the image");
        return clone_captures_alone(c) ? clone_capture_done(c, error) : 0;
}

/* The capturing image i takes c's staging area, in one transaction: the image ready with what the upload
 * holds, the session without the area (it is the image's to remove now). */
static int take_staging(Image *i, CloneSession *c) {
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_(json_object_unrefp) json_object *resources = json_tokener_parse(c->staging_resources),
                                                  *layout = clone_uploaded_disk(c);
        _cleanup_free_ char *location = c->staging_path ? strdup(c->staging_path) : NULL,
                            *digest = strdup(c->source_digest), *session_resources = NULL;
        uint64_t size = i->size, stored = i->stored;
        int r;

        if (!resources || !digest || (c->staging_path && !location))
                return -ENOMEM;
        if (!layout) /* deploys then plan from the targets' disks alone: resize none only */
                log_warning("Image %s: the source's disk as uploaded is not known; it is kept without its "
                            "layout.",
                            i->name);
        /* Memory first, so that what runs once the transaction commits sees the image ready; put back if it
         * does not. */
        i->state = IMAGE_READY;
        SWAP(i->resources, resources);
        SWAP(i->layout, layout);
        SWAP(i->location, location);
        SWAP(i->digest, digest);
        i->size = c->bytes_total;
        i->stored = c->stored_bytes;
        session_resources = TAKE_PTR(c->staging_resources);
        r = clone_transact(c, take_step, i, &e);
        if (r < 0) {
                c->staging_resources = TAKE_PTR(session_resources);
                i->state = IMAGE_CAPTURING;
                SWAP(i->resources, resources);
                SWAP(i->layout, layout);
                SWAP(i->location, location);
                SWAP(i->digest, digest);
                i->size = size;
                i->stored = stored;
                return log_warning_errno(r, "Image %s cannot take session %s's upload: %s", i->name, c->id,
                                         e.message ?: strerror(-r));
        }
        log_info("Image %s captured by session %s: %s at %s, digest %s.", i->name, c->id,
                 strna(c->source_device), strna(i->location), i->digest);
        image_emit_changed(i, "State", "Location", "Layout", "SizeBytes", "StoredBytes", "Digest", NULL);
        return 0;
}

static int forget(Image *i) {
        Manager *m = i->manager;
        int r = store_image_delete(m->store, i->id);
        if (r < 0)
                return r;
        image_announce(i, false);
        hashmap_remove(m->images, i->id);
        image_free(i);
        return 0;
}

void image_capture_changed(Manager *m, const char *id) {
        CloneSession *c = hashmap_get(m->sessions, id);
        Image *i = captured_by(m, id);
        int r = 0;

        if (!i || i->state != IMAGE_CAPTURING)
                return;
        if (c && IN_SET(c->staging_status, STAGING_READY, STAGING_DOWNLOADING) && c->source_digest &&
            c->staging_resources)
                r = take_staging(i, c);
        else if (!c || IN_SET(c->status, CLONE_COMPLETED, CLONE_CANCELLED)) {
                log_info("Image %s was not captured: session %s %s first.", i->name, id,
                         c ? clone_status_to_string(c->status) : "was deleted");
                r = forget(i);
        }
        if (r < 0)
                log_warning_errno(r, "Failed to record what became of image %s of session %s: %m", i->name,
                                  id);
}

char *image_users(Image *i) {
        _cleanup_strv_free_ char **ids = NULL;
        CloneSession *c;

        HASHMAP_FOREACH (c, i->manager->sessions, k)
                if (streq_ptr(c->image, i->id) && !IN_SET(c->status, CLONE_COMPLETED, CLONE_CANCELLED) &&
                    strv_extend(&ids, c->id) < 0)
                        return NULL;
        return ids ? strv_join(ids, ", ") : NULL;
}

ImageState image_state(const Image *i) {
        return i->task && streq(i->task->verb, "verify-image") ? IMAGE_VERIFYING : i->state;
}

double image_progress(const Image *i) {
        return i->task && i->task->size > 0 ? (double) i->task->offset / (double) i->task->size : 0.0;
}

/* What a running task makes of the image, for people. */
static const char *task_doing(const ImageTask *k) {
        return streq(k->verb, "verify-image")   ? "being verified"
               : streq(k->verb, "export-image") ? "being exported"
                                                : "being imported";
}

/* A line of the task: progress ({"offset", "size"}) or its verdict. */
static void task_line(Image *i, const char *text) {
        ImageTask *k = i->task;
        json_object *o = json_tokener_parse(text);
        if (!o)
                return (void) log_warning("Image %s: %s said something unreadable: %.200s", i->name, k->verb,
                                          text);
        if (json_object_object_get_ex(o, "offset", NULL)) {
                k->offset = (uint64_t) json_get_int(o, "offset");
                k->size = (uint64_t) json_get_int(o, "size");
                json_object_put(o);
                image_emit_changed(i, "Progress", "VerifyProgress", NULL);
                return;
        }
        json_object_put(k->verdict);
        k->verdict = o;
}

static int on_task_output(sd_event_source *es, int fd, uint32_t revents, void *userdata) {
        Image *i = userdata;
        ImageTask *k = i->task;
        (void) es, (void) revents;

        for (;;) {
                if (k->allocated - k->have < 4096) {
                        size_t want = MIN(MAX(k->allocated * 2, (size_t) 65536), (size_t) TASK_LINE_MAX + 1);
                        char *line = want > k->allocated ? realloc(k->line, want) : NULL;
                        if (!line) { /* a line longer than any the agent writes: dropped */
                                k->have = 0;
                                if (k->allocated == 0)
                                        return 0;
                        } else {
                                k->line = line;
                                k->allocated = want;
                        }
                }
                ssize_t n = read(fd, k->line + k->have, k->allocated - 1 - k->have);
                if (n == 0) /* its end: the exit handler takes over */
                        k->io = sd_event_source_disable_unref(k->io);
                if (n <= 0)
                        return 0;
                k->have += (size_t) n;
                k->line[k->have] = 0;
                char *start = k->line, *nl;
                while ((nl = strchr(start, '\n'))) {
                        *nl = 0;
                        task_line(i, start);
                        start = nl + 1;
                }
                k->have -= (size_t) (start - k->line);
                memmove(k->line, start, k->have + 1);
        }
}

static int on_task_exit(sd_event_source *es, const siginfo_t *si, void *userdata) {
        Image *i = userdata;
        ImageTask *k = i->task;
        (void) es;

        k->pid = 0; /* reaped */
        (void) on_task_output(NULL, k->fd, EPOLLIN, i);
        i->task = NULL;
        image_emit_changed(i, "State", "Progress", "VerifyProgress", NULL);
        k->done(i, k->verdict, si, k->userdata);
        task_free(k);
        return 0;
}

int image_task_start(Image *i, const char *verb, json_object *request, int fd, ImageTaskDone done,
                     void *userdata, sd_bus_error *error) {
        Manager *m = i->manager;
        const char *text = json_object_to_json_string_ext(request, JSON_C_TO_STRING_PLAIN);
        int in[2] = { -EBADF, -EBADF }, out[2] = { -EBADF, -EBADF }, r;
        ImageTask *k;
        sigset_t mask;

        if (i->task)
                return sd_bus_error_setf(error, PB_ERROR_IN_USE,
                                         "Image %s is %s; try again once that is done.", i->name,
                                         task_doing(i->task));
        if (access(m->config.image_verifier, X_OK) < 0)
                return sd_bus_error_setf(
                        error, PB_ERROR_INVALID_STATE,
                        "The image tool %s cannot be run (%m); install pureboot-agent there, or "
                        "name it with Verifier= in [Images] of controller.conf.",
                        m->config.image_verifier);
        k = calloc(1, sizeof(ImageTask));
        if (!k)
                return -ENOMEM;
        k->fd = -EBADF;
        k->verb = verb;
        k->done = done;
        k->userdata = userdata;
        if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0) {
                r = -errno;
                goto fail;
        }
        sigemptyset(&mask);
        sigaddset(&mask, SIGCHLD);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        k->pid = fork();
        if (k->pid < 0) {
                r = -errno;
                goto fail;
        }
        if (k->pid == 0) {
                /* Nothing of the controller's signal handling: SIGTERM stops it. */
                sigset_t none;
                sigemptyset(&none);
                sigprocmask(SIG_SETMASK, &none, NULL);
                /* fd becomes the tool's fd 3 (the file it reads or writes); stdin is the request. */
                if (dup2(in[0], STDIN_FILENO) < 0 || dup2(out[1], STDOUT_FILENO) < 0 ||
                    (fd >= 0 && dup2(fd, 3) < 0))
                        _exit(EXIT_FAILURE);
                execl(m->config.image_verifier, "pureboot-agent", verb, (char *) NULL);
                log_error_errno(errno, "Failed to run %s: %m", m->config.image_verifier);
                _exit(EXIT_FAILURE);
        }
        close(in[0]);
        close(out[1]);
        in[0] = out[1] = -EBADF;
        /* The request is small (a pipe takes 64 KiB before it blocks), and the tool reads it first. */
        r = write_full(in[1], text, strlen(text));
        close(in[1]);
        in[1] = -EBADF;
        k->fd = out[0];
        out[0] = -EBADF;
        (void) fcntl(k->fd, F_SETFL, O_NONBLOCK);
        i->task = k;
        if (r >= 0)
                r = sd_event_add_io(m->event, &k->io, k->fd, EPOLLIN, on_task_output, i);
        if (r >= 0)
                r = sd_event_add_child(m->event, &k->child, k->pid, WEXITED, on_task_exit, i);
        if (r >= 0) /* what it said is taken before its exit is handled */
                r = sd_event_source_set_priority(k->child, SD_EVENT_PRIORITY_NORMAL + 1);
        if (r < 0) {
                i->task = NULL;
                task_free(k);
                return r;
        }
        log_info("Image %s: %s (process %d).", i->name, verb, (int) k->pid);
        image_emit_changed(i, "State", "Progress", "VerifyProgress", NULL);
        return 0;
fail:
        for (size_t n = 0; n < 2; n++) {
                if (in[n] >= 0)
                        close(in[n]);
                if (out[n] >= 0)
                        close(out[n]);
        }
        task_free(k);
        return r;
}

/* The verifier ended: what it said decides the image's state, written with what it found. */
static void on_verified(Image *i, json_object *v, const siginfo_t *si, void *userdata) {
        _cleanup_free_ char *error = NULL;
        ImageState state = i->state;
        uint64_t verified_at = i->verified_at, stored = i->stored;
        int r = 0;
        (void) userdata;

        if (!si)
                return; /* the controller stops */
        bool whole = json_get_bool(v, "whole");
        if (whole && streq_ptr(json_get_string(v, "digest"), i->digest)) {
                state = IMAGE_READY;
                verified_at = now_realtime_usec();
                stored = (uint64_t) json_get_int(v, "storedBytes"); /* as it is now, measured */
        } else if (whole || json_get_bool(v, "damaged")) {
                state = IMAGE_BROKEN;
                r = whole ? asprintf(
                                    &error,
                                    "Every chunk matches the manifest, but its digest %s is not the image's "
                                    "%s: it holds another image. Delete this one.",
                                    strna(json_get_string(v, "digest")), strna(i->digest))
                          : asprintf(&error, "Damaged: %s. Deploys are refused; capture it again.",
                                     strna(json_get_string(v, "error")));
        } else
                r = v ? asprintf(&error, "Could not be read, so not checked: %s",
                                 strna(json_get_string(v, "error")))
                      : asprintf(&error,
                                 "The verifier ended (%s %d) without a verdict; its messages are in the "
                                 "controller's log.",
                                 si->si_code == CLD_EXITED ? "status" : "signal", si->si_status);
        if (r < 0)
                error = NULL;
        ImageState old_state = i->state;
        uint64_t old_verified = i->verified_at, old_stored = i->stored;
        char *old_error = i->verify_error;
        i->state = state;
        i->verified_at = verified_at;
        i->stored = stored;
        i->verify_error = error;
        r = store_image_update(i->manager->store, i);
        if (r < 0) {
                log_warning_errno(r, "Failed to record the check of image %s: %m", i->name);
                i->state = old_state;
                i->verified_at = old_verified;
                i->stored = old_stored;
                i->verify_error = old_error;
        } else {
                TAKE_PTR(error);
                free(old_error);
        }
        log_info("Image %s checked: %s%s%s", i->name, image_state_to_string(i->state),
                 i->verify_error ? ": " : "", strempty(i->verify_error));
        image_emit_changed(i, "State", "VerifiedAt", "VerifyError", "StoredBytes", NULL);
}

int image_verify(Image *i, sd_bus_error *error) {
        _cleanup_(json_object_unrefp) json_object *staging = NULL;

        if (i->task || i->removing || !IN_SET(i->state, IMAGE_READY, IMAGE_BROKEN))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_STATE,
                                         "Image %s is %s; verify it once it is %s.", i->name,
                                         i->task       ? task_doing(i->task)
                                         : i->removing ? "being deleted"
                                                       : image_state_to_string(i->state),
                                         i->task ? "done" : "ready");
        staging = staging_image_json(i);
        if (!staging)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_STATE,
                                         "Image %s is on a storage backend that is gone.", i->name);
        return image_task_start(i, "verify-image", staging, -EBADF, on_verified, NULL, error);
}

/* Replaces one string field of i (property names it on the bus) in its row and in memory, or neither. */
static int set_field(Image *i, char **field, const char *value, const char *property, const char *what,
                     sd_bus_error *error) {
        _cleanup_free_ char *copy = strdup(value);
        char *old = *field;
        int r;

        if (!copy)
                return -ENOMEM;
        *field = copy;
        r = store_image_update(i->manager->store, i);
        if (r < 0) {
                *field = old;
                return bus_store_error(error, r, what);
        }
        TAKE_PTR(copy);
        free(old);
        image_emit_changed(i, property, NULL);
        return 0;
}

int image_rename(Image *i, const char *name, sd_bus_error *error) {
        int r;

        if (streq_ptr(i->name, name))
                return 0;
        r = image_name_check(i->manager, name, error);
        if (r < 0)
                return r;
        return set_field(i, &i->name, name, "Name", "rename the image", error);
}

int image_set_description(Image *i, const char *description, sd_bus_error *error) {
        if (!description || strlen(description) > 4096 ||
            (*description && !name_is_valid(description, 4096)))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "A description is at most 4096 bytes of text without control "
                                         "characters.");
        return set_field(i, &i->description, description, "Description", "change the image's description",
                         error);
}

typedef struct Removal {
        StorageBackend *backend; /* read in the child only */
        json_object *resources;
        char *id;
        ImageDone done;
        void *userdata;
} Removal;

static void removal_free(Removal *x) {
        json_object_put(x->resources);
        free(x->id);
        free(x);
}

static json_object *remove_child(void *data, char **ret_why) {
        Removal *x = data;
        (void) storage_driver(x->backend->type)->undo(x->backend, x->resources, ret_why);
        return NULL;
}

static void on_removed(Manager *m, json_object *result, const char *why, void *userdata) {
        Removal *x = userdata;
        Image *i = hashmap_get(m->images, x->id);
        CloneSession *c;
        int r = 0;
        (void) result;

        if (i) {
                i->removing = false;
                if (!why) {
                        /* Finished sessions that deployed it keep their record, without the image. */
                        HASHMAP_FOREACH (c, m->sessions, k)
                                if (streq_ptr(c->image, i->id)) {
                                        c->image = mfree(c->image);
                                        clone_emit_changed(c, "Image", NULL);
                                }
                        r = forget(i);
                }
        }
        if (why)
                log_warning("Image %s is kept: its data could not be removed: %s", x->id, why);
        else if (r < 0)
                log_warning_errno(r, "Image %s: its data is gone but its record could not be removed: %m",
                                  x->id);
        else
                log_info("Image %s deleted.", x->id);
        x->done(m, why ?: r < 0 ? "its record could not be removed" : NULL, x->userdata);
        removal_free(x);
}

int image_remove(Image *i, ImageDone done, void *userdata) {
        Manager *m = i->manager;
        StorageBackend *b = hashmap_get(m->storages, i->backend);
        _cleanup_free_ char *what = NULL;
        Removal *x;
        int r;

        if (!b)
                return -ENOENT;
        if (asprintf(&what, "removal of image %s", i->name) < 0)
                return -ENOMEM;
        x = calloc(1, sizeof(Removal));
        if (!x || !(x->id = strdup(i->id))) {
                free(x);
                return -ENOMEM;
        }
        x->backend = b;
        x->resources = json_object_get(i->resources);
        x->done = done;
        x->userdata = userdata;
        r = worker_start(m, what, remove_child, x, on_removed, x, NULL);
        if (r < 0) {
                removal_free(x);
                return r;
        }
        i->removing = true;
        return 0;
}

int image_delete(Image *i, ImageDone done, void *userdata, sd_bus_error *error) {
        Manager *m = i->manager;
        StorageBackend *b = hashmap_get(m->storages, i->backend);
        _cleanup_free_ char *users = image_users(i);

        if (i->state == IMAGE_IMPORTING)
                return sd_bus_error_setf(error, PB_ERROR_IN_USE,
                                         "Image %s is being imported; the import takes it away again if it "
                                         "fails.",
                                         i->name);
        if (i->state == IMAGE_CAPTURING)
                return sd_bus_error_setf(
                        error, PB_ERROR_IN_USE,
                        "Image %s is being captured by session %s; cancel that session to stop "
                        "the capture.",
                        i->name, i->capture_session);
        if (i->task)
                return sd_bus_error_setf(error, PB_ERROR_IN_USE,
                                         "Image %s is %s; delete it once that is done.", i->name,
                                         task_doing(i->task));
        if (users)
                return sd_bus_error_setf(
                        error, PB_ERROR_IN_USE,
                        "Image %s is used by clone sessions %s; wait for them to complete, or "
                        "cancel or delete them first.",
                        i->name, users);
        if (i->removing || !b)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_STATE,
                                         i->removing ? "Image %s is being deleted already."
                                                     : "Image %s is on a storage backend that is gone.",
                                         i->name);
        return image_remove(i, done, userdata);
}
