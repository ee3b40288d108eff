/* SPDX-License-Identifier: MIT */
/* Fuzzes what a node's ReportDisks and an administrator's QueueOperation feed the disk model:
 * {"disk": Disk, "operations": [{"operation": …, "parameters": {…}}, …]} → a DiskInfo, then each operation
 * applied on paper, as the controller validates a queue. */
#include "disk-model.h"
#include "fuzz-json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(disk_info_done) DiskInfo d = {};
        json_object *o = fuzz_json(data, size, 32), *disk, *ops;
        const char *bad = NULL;

        if (!o)
                return 0;
        if (json_object_object_get_ex(o, "disk", &disk) && disk_info_from_json(disk, &d, &bad) >= 0 &&
            json_object_object_get_ex(o, "operations", &ops) && json_object_is_type(ops, json_type_array)) {
                for (size_t i = 0; i < json_object_array_length(ops) && i < 64; i++) {
                        json_object *op = json_object_array_get_idx(ops, i), *params = NULL;
                        _cleanup_free_ char *message = NULL;
                        const char *name = json_get_string(op, "operation");
                        json_object_object_get_ex(op, "parameters", &params);
                        if (name)
                                (void) disk_info_apply(&d, name, params, &message);
                }
                free(disk_info_fingerprint(&d));
                json_object_put(disk_info_to_json(&d));
        }
        json_object_put(o);
        return 0;
}
