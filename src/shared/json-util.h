/* SPDX-License-Identifier: MIT */
/* json-c with cleanup attributes. */
#pragma once

#include <json-c/json.h>

static inline void json_object_unrefp(json_object **o) {
        json_object_put(*o);
}
