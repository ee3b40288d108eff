/* SPDX-License-Identifier: MIT */
/* The image library: a staged upload kept under a name instead of removed when its session ends — where it
 * is (a storage backend, and what staging made there), what it holds (the source's layout as uploaded, its
 * size and digest) and where it came from. A session captures one (keep_as) or deploys one (image); the
 * image, not the session, removes the data when it is deleted. */
#pragma once

#include <json-c/json.h>
#include <signal.h>
#include <systemd/sd-bus.h>

#include "domain.h"
#include "manager.h"

typedef struct CloneSession CloneSession;
typedef struct ImageTask ImageTask;
typedef struct ImageImport ImageImport;

typedef struct Image {
        Manager *manager;
        char *id, *name, *description;
        ImageState state;
        char *backend;          /* the storage backend's id */
        char *area;             /* the staging area's name there: the id of the session that captured it */
        json_object *resources; /* what staging made there (staging.c), once the capture is whole */
        char *location;         /* where, for people: the capture's StagingPath */
        char *source_node, *source_hostname, *source_device;
        json_object *layout; /* the source's disk as uploaded (Disk JSON): what deploys plan from */
        uint64_t size;
        uint64_t
                stored; /* what its data takes on the backend (0: not known, for an image older than that) */
        char *digest;
        char *capture_session; /* the session that captured it */
        uint64_t created_at;
        uint32_t created_by;
        uint64_t verified_at;     /* when a check last found it whole */
        char *verify_error;       /* what the last check found, if it did not */
        bool removing;            /* its data is being removed (Delete) */
        ImageTask *task;          /* the agent's work on it (verify, export, import), while it runs */
        ImageImport *import;      /* ImportImage, while it runs (image-file.c) */
} Image;

Image *image_free(Image *i);
char *image_path(const Image *i);
int image_attach(Manager *m, Image *i);
void image_emit_changed(Image *i, const char *first, ...);
/* ImageNew and InterfacesAdded for a new image object, or ImageRemoved and InterfacesRemoved. */
void image_announce(Image *i, bool added);
/* By id, unique id prefix (4 digits or more) or name. */
int image_resolve(Manager *m, const char *name, Image **ret, sd_bus_error *error);

/* Refused (InvalidArgument, InUse) unless name can name a new image. */
int image_name_check(Manager *m, const char *name, sd_bus_error *error);
/* Session c (being created, inside its transaction) keeps its upload as image name: the name is reserved
 * by an image in state capturing, which takes the staging area once the upload is whole. */
int image_capture_new(CloneSession *c, const char *name, Image **ret, sd_bus_error *error);
/* Captures node's device as image name on storage: a staged session without targets, created and started
 * (its source boots and uploads; the session completes once the image is ready). check_only: refused as it
 * would be, nothing made. */
int image_capture(Manager *m, const char *name, const char *node, const char *device, const char *storage,
                  uint32_t uid, bool check_only, CloneSession **ret, sd_bus_error *error);
/* Refused (InvalidState, saying why) unless a session may deploy i now: ready, not being deleted. */
int image_check_deployable(Image *i, sd_bus_error *error);
/* The image c captures (in any state), or NULL. */
Image *image_captured_by(CloneSession *c);
/* The image whose data c reads: the one it deploys, or the one it captured once that is ready. */
Image *image_of_session(CloneSession *c);
/* After a change of session id (its staging, its source's digest, its status): once the upload is whole
 * (staging ready and the source's digest known) the capturing image takes the staging area and is ready;
 * once the session can no longer make it (cancelled, completed or deleted without it), the name is freed.
 * Idempotent; also run for every session at start, for a controller that stopped between the two. */
void image_capture_changed(Manager *m, const char *id);
/* The ids of sessions that use i and may still run (pending, running, or failed and so retried),
 * comma-separated, or NULL. */
char *image_users(Image *i);

/* What State shows: verifying while a check runs, else the stored state. */
ImageState image_state(const Image *i);
/* The agent's work on the image on this host (pureboot-agent VERB, [Images] Verifier=), one at a time: the
 * request on its stdin, fd (if any) as its fd 3, its progress in Progress; done is told its verdict (its
 * last line that was not progress, or NULL) when it has exited, or (verdict and si NULL) that the
 * controller stops first and stopped it: then it only lets go of userdata. Refused (InUse) while another
 * runs. */
typedef void (*ImageTaskDone)(Image *i, json_object *verdict, const siginfo_t *si, void *userdata);
int image_task_start(Image *i, const char *verb, json_object *request, int fd, ImageTaskDone done,
                     void *userdata, sd_bus_error *error);
/* 0 to 1 while a task runs, else 0. */
double image_progress(const Image *i);
/* Verify: the image's data read back and checked against its manifest in a child process (the agent's
 * verify-image, [Images] Verifier=), its progress in VerifyProgress; ready if whole, broken if damaged (with
 * where, in VerifyError); an image that could not be read keeps its state and says why. */
int image_verify(Image *i, sd_bus_error *error);

int image_rename(Image *i, const char *name, sd_bus_error *error);
int image_set_description(Image *i, const char *description, sd_bus_error *error);
/* Removes the image's data in a worker, then its record; done is told the outcome (why NULL: deleted, i
 * is freed by then). Refused while a session uses it or it is being captured. */
typedef void (*ImageDone)(Manager *m, const char *why, void *userdata);
int image_delete(Image *i, ImageDone done, void *userdata, sd_bus_error *error);
/* The same without Delete's refusals (-ENOENT if its backend is gone): a failed import goes. */
int image_remove(Image *i, ImageDone done, void *userdata);
