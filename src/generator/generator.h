/* SPDX-License-Identifier: MIT */
/* pureboot-generator: turns pureboot.mode= on the kernel command line into the agent unit to start. */
#pragma once

#include "cmdline.h"
#include "macro.h"

/* The modes of the deploy image, as the boot answers write them. */
bool generator_mode_is_valid(const char *mode);

/* Links pureboot-agent@<mode>.service into dir/multi-user.target.wants. Returns 1 if linked, 0 if the
 * command line names no (known) mode. */
int generator_run(const char *cmdline, const char *dir, const char *unit_dir);
