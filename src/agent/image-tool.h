/* SPDX-License-Identifier: MIT */
/* The verbs the controller runs on its own host for the image library, each in a child process: a JSON
 * request on stdin, progress ({"offset", "size"}) and then a verdict as JSON lines on stdout. */
#pragma once

#include <stdbool.h>

/* Whether verb is one of them. */
bool image_tool_is_verb(const char *verb);
/* Runs it; the process's exit status. */
int image_tool_run(const char *verb);
