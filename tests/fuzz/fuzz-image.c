/* SPDX-License-Identifier: MIT */
/* Fuzzes what ImportImage reads from a file someone hands it: an exported image (its first line, header and
 * frames) restored into a disk file in memory, every frame checked as a target checks a peer's. */
#include <sys/mman.h>
#include <unistd.h>

#include "image-file.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_close_ int in = memfd_create("image", MFD_CLOEXEC), raw = memfd_create("disk", MFD_CLOEXEC);
        _cleanup_free_ char *why = NULL;
        json_object *header = NULL;
        UsedMap skipped = {};

        if (in < 0 || raw < 0 || write_full(in, data, size) < 0 || lseek(in, 0, SEEK_SET) != 0)
                return 0;
        if (image_file_restore(in, raw, &header, &skipped, NULL, &why) >= 0) {
                json_object_put(header);
                used_map_done(&skipped);
        }
        return 0;
}
