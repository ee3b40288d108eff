/* SPDX-License-Identifier: MIT */
/* A clone's own identity: after a target's copy (and grow), each Linux root filesystem on it gets its node's
 * host name, an empty /etc/machine-id (systemd makes a new one at its first boot), new SSH host keys and the
 * files the session gave it, so that two clones of one machine do not claim to be the same. */
#pragma once

#include <json-c/json.h>

/* Gives each Linux root filesystem (ext2/3/4, xfs or btrfs holding /etc and an os-release) on disk the
 * identity of hostname, and writes files ({absolute path: content}, NULL: none) there, each with mode 0644
 * and the directories above it made (0755) where missing. *ret_summary says what was done, or that nothing
 * was found; a root that cannot be changed is an error, with why in *ret_error. */
int machine_identity_apply(const char *disk, const char *hostname, json_object *files, char **ret_summary,
                           char **ret_error);
