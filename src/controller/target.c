/* SPDX-License-Identifier: MIT */
/* A clone session's targets: the record, its transition table and how a session's status follows from its
 * targets'. clone.c moves them; nothing else writes t->status. */
#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>

#include "bus-gateway.h"
#include "clone.h"
#include "log.h"
#include "pureboot-bus.h"
#include "pureboot-errors.h"
#include "target.h"
#include "util.h"

/* transitions[from][to]: a target's whole state machine. A failed one may be started again (a retry). */
static const bool transitions[_CLONE_STATUS_MAX][_CLONE_STATUS_MAX] = {
        [CLONE_PENDING] = { [CLONE_WAITING] = true, [CLONE_CANCELLED] = true },
        [CLONE_WAITING] = { [CLONE_SOURCE_READY] = true, [CLONE_FAILED] = true, [CLONE_CANCELLED] = true },
        [CLONE_SOURCE_READY] = { [CLONE_CLONING] = true, [CLONE_FAILED] = true, [CLONE_CANCELLED] = true },
        [CLONE_CLONING] = { [CLONE_COMPLETED] = true, [CLONE_FAILED] = true, [CLONE_CANCELLED] = true },
        [CLONE_FAILED] = { [CLONE_WAITING] = true },
};

bool clone_target_can_become(CloneStatus from, CloneStatus to) {
        return from < _CLONE_STATUS_MAX && to < _CLONE_STATUS_MAX && transitions[from][to];
}

CloneStatus clone_status_of_targets(CloneTarget *const *targets, size_t n) {
        /* The order of the steps a running target takes. */
        static const CloneStatus steps[] = { CLONE_WAITING, CLONE_SOURCE_READY, CLONE_CLONING };
        size_t furthest = 0;
        bool active = false, completed = false, failed = false, cancelled = false;

        for (size_t i = 0; i < n; i++) {
                CloneStatus s = targets[i]->status;
                for (size_t k = 0; k < ELEMENTSOF(steps); k++)
                        if (s == steps[k]) {
                                active = true;
                                furthest = MAX(furthest, k);
                        }
                completed = completed || s == CLONE_COMPLETED;
                failed = failed || s == CLONE_FAILED;
                cancelled = cancelled || s == CLONE_CANCELLED;
        }
        return active      ? steps[furthest]
               : failed    ? CLONE_FAILED
               : cancelled ? CLONE_CANCELLED
               : completed ? CLONE_COMPLETED
                           : CLONE_PENDING;
}

CloneTarget *clone_target_free(CloneTarget *t) {
        if (!t)
                return NULL;
        throttle_done(&t->progress);
        json_object_put(t->notes);
        json_object_put(t->files);
        char **strings[] = { &t->session_id, &t->node,  &t->device,  &t->plan_json,    &t->disk_json,
                             &t->digest,     &t->error, &t->problem, &t->relay_address };
        for (size_t i = 0; i < ELEMENTSOF(strings); i++)
                free(*strings[i]);
        free(t);
        return NULL;
}

/* Whether path is one of the machine's own trees, which hold nothing of the disk. */
static bool in_virtual_tree(const char *path) {
        static const char *const trees[] = { "/proc", "/sys", "/dev", "/run" };
        for (size_t i = 0; i < ELEMENTSOF(trees); i++) {
                const char *rest = startswith(path, trees[i]);
                if (rest && IN_SET(*rest, '/', 0))
                        return true;
        }
        return false;
}

int clone_target_files_check(json_object *files, sd_bus_error *error) {
        uint64_t total = 0;

        if (!files)
                return 0;
        if (json_object_object_length(files) > CLONE_TARGET_FILES_MAX)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "A target takes at most %d files; put the rest in one (an archive, "
                                         "a cloud-init seed).",
                                         CLONE_TARGET_FILES_MAX);
        json_object_object_foreach (files, path, content) {
                const char *rest = path_is_safe(path, 255) ? path + 1 : NULL;
                if (!rest || isempty(rest) || strstr(path, "//") || endswith(path, "/") ||
                    in_virtual_tree(path))
                        return sd_bus_error_setf(
                                error, PB_ERROR_INVALID_ARGUMENT,
                                "\"%.64s\" cannot be a file on the clone: give an absolute path "
                                "of a file, without \"..\", outside /proc, /sys, /dev and "
                                "/run.",
                                path);
                total += strlen(path) + strlen(json_object_get_string(content));
        }
        if (total > CLONE_TARGET_FILES_BYTES)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "The files for a target hold %" PRIu64 " bytes; at most %" PRIu64
                                         " are taken. Write larger ones with a first-boot script that "
                                         "fetches them.",
                                         total, CLONE_TARGET_FILES_BYTES);
        return 0;
}

char *clone_target_path(const CloneTarget *t) {
        char *p;
        return asprintf(&p, PB_ROOT_PATH "/clone/%s/target/%" PRIu32, t->session_id, t->index) < 0 ? NULL : p;
}

/* The session's own properties that show its first target's (named so before sessions had several). */
static const char *session_name_of(const char *property) {
        static const char *const names[][2] = {
                { "Node", "TargetNode" },
                { "Device", "TargetDevice" },
                { "Digest", "TargetDigest" },
                { "Certificate", "TargetCertificate" },
                { "Plan", "Plan" },
                { "BytesTransferred", "BytesTransferred" },
                { "TransferRate", "TransferRate" },
                { "Progress", "Progress" },
                { "Problem", "Problem" },
        };
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (streq(names[i][0], property))
                        return names[i][1];
        return NULL;
}

void clone_target_emit_changed(CloneTarget *t, const char *first, ...) {
        _cleanup_strv_free_ char **names = strv_new(NULL), **session = strv_new(NULL);
        _cleanup_free_ char *path = clone_target_path(t), *session_path = clone_path(t->session);
        bool is_first = clone_first_target(t->session) == t;
        va_list ap;

        if (!names || !session)
                return (void) log_oom();
        va_start(ap, first);
        for (const char *p = first; p; p = va_arg(ap, const char *)) {
                const char *s = is_first ? session_name_of(p) : NULL;
                if (strv_extend(&names, p) < 0 || (s && strv_extend(&session, s) < 0)) {
                        va_end(ap);
                        return (void) log_oom();
                }
        }
        va_end(ap);
        manager_emit_changed_strv(t->session->manager, path, PB_IFACE("CloneTarget"), names);
        manager_emit_changed_strv(t->session->manager, session_path, PB_IFACE("CloneSession"), session);
        bus_gateway_notify(t->session->manager, "session", t->session_id);
}
