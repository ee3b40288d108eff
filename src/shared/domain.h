/* SPDX-License-Identifier: MIT */
/* PureBoot's domain values, each an enum with its one string table: the spelling the bus API, the node
 * protocol, the database and purebootctl share. Every *_from_string returns the value, or -EINVAL for a
 * name that is none of them; every *_to_string returns NULL for a value out of range. */
#pragma once

#include <stdint.h>
#include <stdbool.h>

/* An enum's names, indexed by value, for code that handles any of them (the store's columns). */
typedef struct StringTable {
        const char *const *names;
        unsigned n;
} StringTable;
const char *string_table_to_string(const StringTable *t, unsigned v);
int string_table_from_string(const StringTable *t, const char *s);

#define DECLARE_STRING_TABLE(name, type)                                                                    \
        extern const StringTable name##_strings;                                                            \
        const char *name##_to_string(type v);                                                               \
        int name##_from_string(const char *s)

/* A clone session's status. */
typedef enum CloneStatus {
        CLONE_PENDING,
        CLONE_WAITING, /* started, waiting for the source agent */
        CLONE_SOURCE_READY,
        CLONE_CLONING,
        CLONE_COMPLETED,
        CLONE_FAILED,
        CLONE_CANCELLED,
        _CLONE_STATUS_MAX,
} CloneStatus;
DECLARE_STRING_TABLE(clone_status, CloneStatus);
/* Started and not over: waiting, source_ready, cloning. */
bool clone_status_is_active(CloneStatus s);
/* Over: completed, failed, cancelled (a failed session may be started again). */
bool clone_status_is_final(CloneStatus s);
/* The same of a status as the bus or the node protocol spells it; an unknown name is not final. */
bool clone_status_name_is_final(const char *s);

typedef enum CloneMode {
        CLONE_MODE_DIRECT, /* peer to peer over mutual TLS */
        CLONE_MODE_STAGED, /* through an NFS or iSCSI staging area */
        _CLONE_MODE_MAX,
} CloneMode;
DECLARE_STRING_TABLE(clone_mode, CloneMode);

/* A role in a clone session. */
typedef enum CloneRole {
        CLONE_ROLE_SOURCE,
        CLONE_ROLE_TARGET,
        _CLONE_ROLE_MAX,
} CloneRole;
DECLARE_STRING_TABLE(clone_role, CloneRole);

/* A session's targets at most: its certificate names and report sequences number them. */
#define CLONE_TARGETS_MAX 1000

/* The name of target index in tokens, report sequences and certificates ("target-<n>"), and back:
 * "target" alone is target 1 (certificates issued before sessions had several targets). 0 if role names
 * no target. */
int clone_target_role(uint32_t index, char **ret);
/* A role's name as certificates, tokens and report sequences spell it: source, or a target (its index in
 * *ret_index, 0 for the source). -EINVAL for anything else. */
int clone_role_parse(const char *name, uint32_t *ret_index);
uint32_t clone_target_index(const char *role);

/* Where a staged session's staging area is (a direct session's is "": none). */
typedef enum StagingStatus {
        STAGING_NONE,
        STAGING_PENDING,
        STAGING_PROVISIONED,
        STAGING_UPLOADING,
        STAGING_READY,
        STAGING_DOWNLOADING,
        STAGING_CLEANUP,
        STAGING_DELETED,
        STAGING_KEPT, /* it is an image's (deployed from one, or kept as one): the image removes it */
        _STAGING_STATUS_MAX,
} StagingStatus;
DECLARE_STRING_TABLE(staging_status, StagingStatus);

/* An image in the library: being captured (its session uploads it), ready to deploy, being verified (never
 * stored: a check that stopped with the controller did not say), or broken (a check found it damaged). */
typedef enum ImageState {
        IMAGE_CAPTURING,
        IMAGE_READY,
        IMAGE_VERIFYING,
        IMAGE_BROKEN,
        IMAGE_IMPORTING,
        _IMAGE_STATE_MAX,
} ImageState;
DECLARE_STRING_TABLE(image_state, ImageState);

typedef enum ResizeMode {
        RESIZE_NONE,
        RESIZE_SHRINK_SOURCE, /* the source's last filesystem shrinks first, to fit a smaller target */
        RESIZE_GROW_TARGET,   /* the target's last partition grows into a larger disk */
        _RESIZE_MODE_MAX,
} ResizeMode;
DECLARE_STRING_TABLE(resize_mode, ResizeMode);

/* What a target's clone of a Linux system is given after the copy: its own identity (its node's host name,
 * a new machine-id at first boot, new SSH host keys), or nothing (an exact copy). */
typedef enum CloneIdentity {
        CLONE_IDENTITY_AUTO,
        CLONE_IDENTITY_NONE,
        _CLONE_IDENTITY_MAX,
} CloneIdentity;
DECLARE_STRING_TABLE(clone_identity, CloneIdentity);

/* What a target does with the ranges no filesystem of the source uses, which the source does not send:
 * discards them where the device can (else leaves them as they are), writes zeroes over them, or leaves
 * them as they are. */
typedef enum CloneUnused {
        CLONE_UNUSED_DISCARD,
        CLONE_UNUSED_ZERO,
        CLONE_UNUSED_KEEP,
        _CLONE_UNUSED_MAX,
} CloneUnused;
DECLARE_STRING_TABLE(clone_unused, CloneUnused);

/* A storage backend's kind. */
typedef enum BackendType {
        BACKEND_NFS,
        BACKEND_ISCSI,
        BACKEND_LOCAL, /* a directory on the controller's host, which the bridge serves to nodes */
        _BACKEND_TYPE_MAX,
} BackendType;
DECLARE_STRING_TABLE(backend_type, BackendType);

/* How the controller switches a node's power: not at all (none: nobody said), by hand (manual: the
 * operator does), with a Wake-on-LAN magic packet from the controller's host (wol: on only), or through its
 * BMC over IPMI (ipmi) or Redfish (redfish). */
typedef enum PowerDriver {
        POWER_NONE,
        POWER_MANUAL,
        POWER_WOL,
        POWER_IPMI,
        POWER_REDFISH,
        _POWER_DRIVER_MAX,
} PowerDriver;
DECLARE_STRING_TABLE(power_driver, PowerDriver);

typedef enum PowerAction {
        POWER_ON,
        POWER_OFF,
        POWER_CYCLE,
        POWER_STATUS,
        POWER_NETBOOT, /* the next boot from the network (PXE), then a cycle, or on */
        _POWER_ACTION_MAX,
} PowerAction;
DECLARE_STRING_TABLE(power_action, PowerAction);

/* How a disk is erased: every block discarded (BLKSECDISCARD where the device has it), every block written
 * with zeros, or the drive's own secure erase (NVMe format, ATA security erase). Each is checked after by
 * reading samples back. */
typedef enum EraseMethod {
        ERASE_DISCARD,
        ERASE_ZERO,
        ERASE_SECURE,
        _ERASE_METHOD_MAX,
} EraseMethod;
DECLARE_STRING_TABLE(erase_method, EraseMethod);

typedef enum NodeState {
        NODE_DISCOVERED, /* recorded at its first network boot, nobody registered it */
        NODE_READY,
        NODE_CLONING_SOURCE,
        NODE_CLONING_TARGET,
        NODE_PARTITIONING, /* booted into partition mode */
        NODE_ACTIVE,       /* booted diskless from the NFS root */
        _NODE_STATE_MAX,
} NodeState;
DECLARE_STRING_TABLE(node_state, NodeState);

/* What a node's next network boot does outside clone sessions. */
typedef enum BootMode {
        BOOT_LOCAL,     /* its own disk */
        BOOT_PARTITION, /* the deploy image in partition mode */
        BOOT_NFS,       /* diskless, from the NFS root */
        _BOOT_MODE_MAX,
} BootMode;
DECLARE_STRING_TABLE(boot_mode, BootMode);

/* A queued partition operation's status. */
typedef enum OperationStatus {
        OPERATION_PENDING,
        OPERATION_RUNNING,
        OPERATION_COMPLETED,
        OPERATION_FAILED,
        _OPERATION_STATUS_MAX,
} OperationStatus;
DECLARE_STRING_TABLE(operation_status, OperationStatus);
