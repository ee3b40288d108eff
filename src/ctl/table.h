/* SPDX-License-Identifier: MIT */
/* Tables for listings: aligned columns with a header and a count, or a JSON array of objects. */
#pragma once

#include <json-c/json.h>

#include "macro.h"

typedef struct Table Table;

/* Column headers, NULL-terminated. JSON keys are the headers lowercased, spaces as underscores. */
Table *table_new(const char *first, ...);
Table *table_free(Table *t);
/* One row; types: 's' string, 'u' uint64_t, 'z' size in bytes, 'T' timestamp in µs, 'b' bool. */
int table_add_row(Table *t, const char *types, ...);
/* A member of the last row's JSON that the text does not show (value is taken). */
void table_add_json(Table *t, const char *key, json_object *value);
/* Prints as text (with header and "N items listed." unless no_legend) or as JSON. */
int table_print(Table *t, const char *noun, bool no_legend, int json_mode);

static inline void table_freep(Table **t) {
        table_free(*t);
}
