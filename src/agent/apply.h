/* SPDX-License-Identifier: MIT */
/* Applying one partition operation to a disk: the table with libparted, the filesystem with its own tool
 * (shrinking it before the partition, growing it after), and undoing the table — and what a move overwrote —
 * if any step fails. */
#pragma once

#include "json-util.h"
#include "macro.h"

/* Runs op (resize, create, delete, format, move, set_flag) with params on device. On failure the disk's
 * table is as it was before, and *ret_error says what failed, with the tool's own words. scratch_dir holds
 * what a move overwrites until the move is done. */
int apply_operation(const char *device, const char *id, const char *op, json_object *params,
                    const char *scratch_dir, char **ret_error);

/* A move interrupted by a crash (its journal in scratch_dir) is finished — or, if it cannot be, undone from
 * what it saved — before anything else touches the disk. Returns 0 if there was none; 1 with the device,
 * the operation's id (NULL if it had none) and NULL or why it failed; < 0 if it could not be handled. */
int apply_recover(const char *scratch_dir, char **ret_device, char **ret_id, char **ret_error);
