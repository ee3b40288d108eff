/* SPDX-License-Identifier: MIT */
/* The progress of running sessions: agents report it often, so a report changes memory only, and a timer
 * writes what changed within a second, in one transaction. */
#pragma once

#include "clone.h"
#include "manager.h"

int progress_init(Manager *m);
/* Writes what is pending, then stops the timer. */
void progress_done(Manager *m);
/* c's progress (or a role's report sequence with it) changed in memory: written within a second. */
int progress_changed(CloneSession *c);
/* Writes the progress that has only been applied in memory. */
int progress_flush(Manager *m);
