/* SPDX-License-Identifier: MIT */
/* json-c with cleanup attributes, and reading a member without the ceremony. */
#pragma once

#include <json-c/json.h>
#include <stdbool.h>

static inline void json_object_unrefp(json_object **o) {
        json_object_put(*o);
}

/* The string member key of o, or NULL if o has none (or it is not a string). */
static inline const char *json_get_string(json_object *o, const char *key) {
        json_object *v;
        return o && json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string)
                       ? json_object_get_string(v)
                       : NULL;
}

/* The boolean member key of o, false if o has none. */
static inline bool json_get_bool(json_object *o, const char *key) {
        json_object *v;
        return o && json_object_object_get_ex(o, key, &v) && json_object_get_boolean(v);
}

/* The integer member key of o, 0 if o has none. */
static inline int64_t json_get_int(json_object *o, const char *key) {
        json_object *v;
        return o && json_object_object_get_ex(o, key, &v) ? json_object_get_int64(v) : 0;
}
