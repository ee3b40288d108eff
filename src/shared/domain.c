/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "domain.h"
#include "macro.h"

const char *string_table_to_string(const StringTable *t, unsigned v) {
        return v < t->n ? t->names[v] : NULL;
}

int string_table_from_string(const StringTable *t, const char *s) {
        for (unsigned i = 0; s && i < t->n; i++)
                if (t->names[i] && streq(t->names[i], s))
                        return (int) i;
        return -EINVAL;
}

#define DEFINE_STRING_TABLE(name, type, ...)                                                                \
        static const char *const name##_table[] = { __VA_ARGS__ };                                          \
        const StringTable name##_strings = { name##_table, ELEMENTSOF(name##_table) };                      \
        const char *name##_to_string(type v) {                                                              \
                return string_table_to_string(&name##_strings, (unsigned) v);                               \
        }                                                                                                   \
        int name##_from_string(const char *s) {                                                             \
                return string_table_from_string(&name##_strings, s);                                        \
        }

DEFINE_STRING_TABLE(
        clone_status, CloneStatus, [CLONE_PENDING] = "pending", [CLONE_WAITING] = "waiting",
        [CLONE_SOURCE_READY] = "source_ready", [CLONE_CLONING] = "cloning", [CLONE_COMPLETED] = "completed",
        [CLONE_FAILED] = "failed", [CLONE_CANCELLED] = "cancelled")

DEFINE_STRING_TABLE(clone_mode, CloneMode, [CLONE_MODE_DIRECT] = "direct", [CLONE_MODE_STAGED] = "staged")

DEFINE_STRING_TABLE(clone_role, CloneRole, [CLONE_ROLE_SOURCE] = "source", [CLONE_ROLE_TARGET] = "target")

DEFINE_STRING_TABLE(staging_status, StagingStatus, [STAGING_NONE] = "", [STAGING_PENDING] = "pending",
                    [STAGING_PROVISIONED] = "provisioned", [STAGING_UPLOADING] = "uploading",
                    [STAGING_READY] = "ready", [STAGING_DOWNLOADING] = "downloading",
                    [STAGING_CLEANUP] = "cleanup", [STAGING_DELETED] = "deleted", [STAGING_KEPT] = "kept")

DEFINE_STRING_TABLE(
        image_state, ImageState, [IMAGE_CAPTURING] = "capturing", [IMAGE_READY] = "ready",
        [IMAGE_VERIFYING] = "verifying", [IMAGE_BROKEN] = "broken", [IMAGE_IMPORTING] = "importing")

DEFINE_STRING_TABLE(clone_identity,
                    CloneIdentity, [CLONE_IDENTITY_AUTO] = "auto", [CLONE_IDENTITY_NONE] = "none")

DEFINE_STRING_TABLE(clone_unused, CloneUnused, [CLONE_UNUSED_DISCARD] = "discard",
                    [CLONE_UNUSED_ZERO] = "zero", [CLONE_UNUSED_KEEP] = "keep")

DEFINE_STRING_TABLE(resize_mode, ResizeMode, [RESIZE_NONE] = "none",
                    [RESIZE_SHRINK_SOURCE] = "shrink_source", [RESIZE_GROW_TARGET] = "grow_target")

DEFINE_STRING_TABLE(backend_type,
                    BackendType, [BACKEND_NFS] = "nfs", [BACKEND_ISCSI] = "iscsi", [BACKEND_LOCAL] = "local")

DEFINE_STRING_TABLE(power_driver, PowerDriver, [POWER_NONE] = "none", [POWER_MANUAL] = "manual",
                    [POWER_WOL] = "wol", [POWER_IPMI] = "ipmi", [POWER_REDFISH] = "redfish")

DEFINE_STRING_TABLE(power_action, PowerAction, [POWER_ON] = "on", [POWER_OFF] = "off",
                    [POWER_CYCLE] = "cycle", [POWER_STATUS] = "status", [POWER_NETBOOT] = "netboot")

DEFINE_STRING_TABLE(
        erase_method,
        EraseMethod, [ERASE_DISCARD] = "discard", [ERASE_ZERO] = "zero", [ERASE_SECURE] = "secure")

DEFINE_STRING_TABLE(node_state, NodeState, [NODE_DISCOVERED] = "discovered", [NODE_READY] = "ready",
                    [NODE_CLONING_SOURCE] = "cloning_source", [NODE_CLONING_TARGET] = "cloning_target",
                    [NODE_PARTITIONING] = "partitioning", [NODE_ACTIVE] = "active")

DEFINE_STRING_TABLE(boot_mode,
                    BootMode, [BOOT_LOCAL] = "local", [BOOT_PARTITION] = "partition", [BOOT_NFS] = "nfs")

DEFINE_STRING_TABLE(operation_status,
                    OperationStatus, [OPERATION_PENDING] = "pending", [OPERATION_RUNNING] = "running",
                    [OPERATION_COMPLETED] = "completed", [OPERATION_FAILED] = "failed")

bool clone_status_is_active(CloneStatus s) {
        return s == CLONE_WAITING || s == CLONE_SOURCE_READY || s == CLONE_CLONING;
}

bool clone_status_is_final(CloneStatus s) {
        return s == CLONE_COMPLETED || s == CLONE_FAILED || s == CLONE_CANCELLED;
}

bool clone_status_name_is_final(const char *s) {
        int v = clone_status_from_string(s);
        return v >= 0 && clone_status_is_final((CloneStatus) v);
}

int clone_target_role(uint32_t index, char **ret) {
        assert(index > 0);
        return asprintf(ret, "target-%" PRIu32, index) < 0 ? -ENOMEM : 0;
}

uint32_t clone_target_index(const char *role) {
        const char *n;
        char *end;

        if (streq_ptr(role, "target"))
                return 1;
        n = role ? startswith(role, "target-") : NULL;
        if (!n || !*n || *n == '0')
                return 0;
        unsigned long i = strtoul(n, &end, 10);
        return *end || i > CLONE_TARGETS_MAX ? 0 : (uint32_t) i;
}

int clone_role_parse(const char *name, uint32_t *ret_index) {
        uint32_t index = clone_target_index(name);
        if (index == 0 && clone_role_from_string(name) != CLONE_ROLE_SOURCE)
                return -EINVAL;
        *ret_index = index;
        return index > 0 ? CLONE_ROLE_TARGET : CLONE_ROLE_SOURCE;
}
