/* SPDX-License-Identifier: MIT */
/* The staging area of a staged clone: the space check, provisioning and cleanup. Each runs in a worker
 * (they talk to storage servers and tgtadm); what provisioning created is recorded on the session
 * (staging_resources) and undone in reverse order by cleanup, and by the next try of a failed session. */
#pragma once

#include "clone.h"
#include "image.h"
#include "worker.h"

/* After the source reported its disk's size: checks space (size + 15 %, or a LUN large enough) and
 * creates the staging area. The session moves on to staging "provisioned", or fails with the reason. */
int staging_provision(CloneSession *c);
/* At Start, when the source's size is already known (size > 0): refuses with InsufficientSpace if the
 * backend's space as last measured cannot take it with the margin. Provisioning measures again. */
int staging_check_space(CloneSession *c, uint64_t size, sd_bus_error *error);
/* -ENOSPC, with why in words an operator can act on: staging a size-byte disk on b needs need bytes (a LUN
 * of at least need, if lun) and available is what there is. */
int staging_no_space(const StorageBackend *b, uint64_t need, uint64_t size, uint64_t available, bool lun,
                     char **ret_why);
/* The same for an image being imported (image-file.c): area (its name on b) for a size-byte disk, in a
 * worker whose outcome done is told: {"resources", "lun"?}, {"insufficient": true}, or why it failed. */
int staging_provision_area(Manager *m, StorageBackend *b, const char *area, uint64_t size, WorkerDone done,
                           void *userdata);
/* The session ended: removes what provisioning created (staging "cleanup", then "deleted"). */
int staging_cleanup(CloneSession *c);
/* Whether the session still has staging to remove (or is removing it), or to say an image kept it. */
bool staging_is_left(CloneSession *c);
/* The Staging record of the node protocol, for the session's agents; and of an image, for its check. */
json_object *staging_json(CloneSession *c);
json_object *staging_image_json(Image *i);
/* A staging status reported by an agent: uploading, ready or downloading, in that order. */
int staging_report(CloneSession *c, StagingStatus status, const char **ret_reason);
