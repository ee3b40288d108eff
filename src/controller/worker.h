/* SPDX-License-Identifier: MIT */
/* Work that may block — a round trip to a storage server, tgtadm, extracting an archive of gigabytes —
 * runs in a child process, so the bus and the event loop never wait for it. The child's answer comes back
 * through a pipe when it exits: a JSON result (also on failure, such as what it created before it failed)
 * and, on failure, a sentence saying why. */
#pragma once

#include <json-c/json.h>

#include "manager.h"

typedef struct Worker Worker;

/* Runs in the child: returns its result (may be NULL) and sets *ret_why on failure. */
typedef json_object *(*WorkerFunction)(void *data, char **ret_why);
/* Runs in the controller when the child has exited; why is NULL on success. */
typedef void (*WorkerDone)(Manager *m, json_object *result, const char *why, void *userdata);

/* what names the work in logs ("import of base image x"). */
int worker_start(Manager *m, const char *what, WorkerFunction fn, void *data, WorkerDone done, void *userdata,
                 Worker **ret);
/* Whether a worker for what is running. */
bool worker_running(Manager *m, const char *what);
/* Stops every worker (SIGTERM, then waits): the controller is shutting down. */
void workers_free(Manager *m);
