/* SPDX-License-Identifier: MIT */
/* Boot answers: what a network-booting machine should do. */
#pragma once

#include <json-c/json.h>

#include "manager.h"

typedef struct BootAnswer {
        const char *action; /* local_boot, deploy_image, nfs_boot, wait, or refused (its identity is live) */
        char *workflow;     /* for deploy_image: clone-<role>-<mode>; else empty */
        char *node, *state;
        json_object *parameters; /* pureboot.<key>=<value> for the kernel command line */
} BootAnswer;

void boot_answer_done(BootAnswer *a);

/* What a machine that network-boots from address should do: kind is "ipxe" (by MAC) or "pi" (by serial,
 * MAC optional). An unknown machine is registered as discovered (within [Discovery]'s limits) and boots
 * locally; a node with a clone to take part in, or in partition mode, gets the deploy workflow and an
 * enrolment token bound to address — unless the certificate of that role or node is live, when the claim
 * is refused and the machine told to wait. */
int boot_answer(Manager *m, const char *kind, const char *mac, const char *serial, const char *address,
                BootAnswer *ret, sd_bus_error *error);

/* Forgets the counts of recent discoveries. */
void boot_done(Manager *m);
