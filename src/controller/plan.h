/* SPDX-License-Identifier: MIT */
/* Resize plans: how the partitions of a scanned source disk fit a target disk of another size. A plan
 * says per partition keep, shrink or grow (current and new size, filesystem, minimum), the partition
 * operations the source runs before the copy and the target after it (in the partition engine's terms),
 * how many bytes are copied, and whether it is feasible — or the reason it is not. Every check is the
 * partition engine's own (disk_info_apply), so a plan the user edits is held to the same rules. */
#pragma once

#include "disk-model.h"
#include "domain.h"

/* mode: RESIZE_NONE, RESIZE_SHRINK_SOURCE or RESIZE_GROW_TARGET. edits (may be NULL): {"<partition number>":
 * new size in bytes, …}, what the user asked instead of the defaults. Returns NULL only when out of memory.
 */
json_object *plan_compute(const DiskInfo *source, const DiskInfo *target, ResizeMode mode,
                          json_object *edits);

bool plan_is_feasible(json_object *plan);
/* Whether an edit's value leaves its partition out: "delete". */
bool plan_edit_is_delete(json_object *value);
