/* SPDX-License-Identifier: MIT */
/* The report queue: every report to the controller goes through it. Reports are files in the state
 * directory until the controller took them, sent one at a time in order, retried with backoff while it is
 * unreachable. A newer progress report replaces older unsent ones; completions and failures are never
 * merged. Sequence numbers make a resend harmless. */
#pragma once

#include "agent.h"

/* Runs when the controller answered a report: error NULL if it took it, else the error it refused it
 * with. Not called for reports that are only retried. */
typedef void (*ReportAnswered)(Agent *a, const char *method, json_object *params, const char *error);

int queue_new(Agent *a, const char *dir, ReportAnswered answered, ReportQueue **ret);
ReportQueue *queue_free(ReportQueue *q);
/* Queues method(params), giving params its "sequence" (params is taken). */
int queue_push(ReportQueue *q, const char *method, json_object *params);
bool queue_is_empty(ReportQueue *q);
/* Whether a report of this method (whose parameter key is value, if key is given) waits in the queue,
 * from this run or an earlier one. */
bool queue_contains(ReportQueue *q, const char *method, const char *key, const char *value);
/* Sends now instead of waiting out a backoff: the bridge was seen to answer again. */
void queue_kick(ReportQueue *q);
