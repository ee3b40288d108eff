/* SPDX-License-Identifier: MIT */
/* pureboot-generator: turns pureboot.mode= on the kernel command line into the agent unit to start. */
#pragma once

#include "macro.h"

/* The modes of the deploy image, as the boot answers write them. */
bool generator_mode_is_valid(const char *mode);

/* The value of the last key=value on a kernel command line ("" if the key has none, NULL if absent).
 * Words are separated by whitespace; double quotes group, as the kernel does. */
int cmdline_get(const char *cmdline, const char *key, char **ret);

/* Links pureboot-agent@<mode>.service into dir/multi-user.target.wants. Returns 1 if linked, 0 if the
 * command line names no (known) mode. */
int generator_run(const char *cmdline, const char *dir, const char *unit_dir);
