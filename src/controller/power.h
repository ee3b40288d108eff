/* SPDX-License-Identifier: MIT */
/* A node's power: the driver that switches it and that driver's settings (Node.SetPower), and the actions
 * (Node.Power), each in a worker, since a machine's controller may take its time to answer. */
#pragma once

#include <json-c/json.h>
#include <systemd/sd-bus.h>

#include "domain.h"
#include "node.h"

/* Checks driver (a PowerDriver's name) and its settings ({key: value}), and stores them as n's. Refused
 * (InvalidArgument, saying which settings the driver takes) otherwise. check_only: nothing stored. */
int power_configure(Node *n, const char *driver, json_object *settings, bool check_only,
                    sd_bus_error *error);

/* What action does, once done: why NULL and a sentence of what was done (or the power state, for status);
 * else why it failed. The node may have been deleted meanwhile (n NULL then). */
typedef void (*PowerDone)(Manager *m, const char *node, const char *outcome, const char *why,
                          void *userdata);
/* Refused (InvalidState) when n's driver cannot do action, saying what to do instead; else starts it. */
int power_act(Node *n, const char *action, PowerDone done, void *userdata, sd_bus_error *error);
