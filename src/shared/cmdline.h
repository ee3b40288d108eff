/* SPDX-License-Identifier: MIT */
/* Reading settings from a kernel command line: how the deploy image learns its job. */
#pragma once

#include "macro.h"

/* The value of the last key=value on a kernel command line ("" if the key has none, NULL if absent).
 * Words are separated by whitespace; double quotes group, as the kernel does. */
int cmdline_get(const char *cmdline, const char *key, char **ret);

/* The kernel command line: $SYSTEMD_PROC_CMDLINE if set (as systemd's tools allow, for tests), else path
 * (normally /proc/cmdline). */
int cmdline_read(const char *path, char **ret);
