/* SPDX-License-Identifier: MIT */
/* Running tools (resize2fs, ntfsresize, mkfs.*, tgtadm, …): argv only, no shell, in the C locale,
 * with what they print captured for parsing and for error reports. */
#pragma once

#include <stdarg.h>

#include "macro.h"

/* Runs argv[0] (looked up in PATH) and waits. Returns its exit status (0..255), or < 0 if it could not run
 * or was killed. *ret_output (may be NULL) gets stdout and stderr together, at most 64 KiB. */
int tool_run(char *const argv[], char **ret_output);
/* The same with stdin read from input (a file, or a pipe someone else fills). */
int tool_run_input(char *const argv[], int input, char **ret_output);
/* The same with the arguments listed, NULL-terminated. */
int tool_runl(char **ret_output, const char *arg0, ...) _sentinel_;
int tool_runv(char **ret_output, const char *arg0, va_list ap);
/* The last non-empty line of a tool's output, for an error message (points into output). */
const char *tool_last_line(char *output);
