/* SPDX-License-Identifier: MIT */
/* The fuzz input as a JSON document, parsed with a bounded depth as the controller's callers parse theirs. */
#pragma once

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json-util.h"

static inline json_object *fuzz_json(const uint8_t *data, size_t size, int depth) {
        char *text = strndup((const char *) data, size);
        json_tokener *tok = text ? json_tokener_new_ex(depth) : NULL;
        json_object *o = tok ? json_tokener_parse_ex(tok, text, (int) strlen(text)) : NULL;
        if (tok)
                json_tokener_free(tok);
        free(text);
        return o;
}
