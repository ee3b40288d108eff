/* SPDX-License-Identifier: MIT */
/* systemd-style INI files: [Section] headers, Key=Value lines, '#' and ';' comments, drop-ins. */
#pragma once

#include "macro.h"

typedef int (*ini_handler_t)(const char *file, unsigned line, const char *section, const char *key,
                             const char *value, void *userdata);

/* Parses text (named file in messages); returns the first negative handler result or -EBADMSG on a
 * syntax error, having logged where. */
int ini_parse_string(const char *file, const char *text, ini_handler_t handler, void *userdata);
int ini_parse_file(const char *path, ini_handler_t handler, void *userdata);
/* path itself (missing is fine) and then path.d/ *.conf in lexical order, later values overriding. */
int ini_parse_with_dropins(const char *path, ini_handler_t handler, void *userdata);

int parse_boolean(const char *s);
int parse_uint64(const char *s, uint64_t *ret);
