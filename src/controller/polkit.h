/* SPDX-License-Identifier: MIT */
/* Asynchronous polkit checks: ask CheckAuthorization, re-dispatch the method call when the answer comes. */
#pragma once

#include <systemd/sd-bus.h>

#include "manager.h"

/* Returns 1 if the sender may do action, 0 if the question is out (the handler returns 1 and is called again
 * with the same message when polkit answers), < 0 with error set if refused. Root is always allowed.
 * details is a NULL-terminated key, value, … list. */
int polkit_verify(Manager *m, sd_bus_message *message, const char *action, const char *const *details,
                  bool interactive, sd_bus_error *error);
void polkit_queries_free(Manager *m);
