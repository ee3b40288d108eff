/* SPDX-License-Identifier: MIT */
/* Fuzzes resize plans from what agents report and users edit: {"source": Disk, "target": Disk, "mode": …,
 * "edits": {…}} → plan_compute, and checks what every plan promises: a feasible one copies no more than the
 * target holds and no more than the source has; an infeasible one says why and carries no operations. */
#include <stdlib.h>

#include "fuzz-json.h"
#include "plan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static json_object *member(json_object *o, const char *key) {
        json_object *v = NULL;
        json_object_object_get_ex(o, key, &v);
        return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(disk_info_done) DiskInfo source = {}, target = {};
        json_object *o = fuzz_json(data, size, 32), *plan, *edits;
        const char *bad = NULL, *mode;

        if (!o)
                return 0;
        mode = json_get_string(o, "mode");
        edits = member(o, "edits");
        int resize = resize_mode_from_string(mode);
        if (resize >= 0 && (!edits || json_object_is_type(edits, json_type_object)) &&
            disk_info_from_json(member(o, "source"), &source, &bad) >= 0 &&
            disk_info_from_json(member(o, "target"), &target, &bad) >= 0) {
                plan = plan_compute(&source, &target, (ResizeMode) resize, edits);
                if (plan && plan_is_feasible(plan)) {
                        uint64_t copy = (uint64_t) json_get_int(plan, "copyBytes");
                        if (copy > target.size || copy > source.size)
                                abort();
                } else if (plan) {
                        if (!json_get_string(plan, "reason") ||
                            json_object_array_length(member(plan, "source")) != 0 ||
                            json_object_array_length(member(plan, "target")) != 0)
                                abort();
                }
                json_object_put(plan);
        }
        json_object_put(o);
        return 0;
}
