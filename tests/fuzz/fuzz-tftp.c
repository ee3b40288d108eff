/* SPDX-License-Identifier: MIT */
/* Fuzzes the bridge's parser of TFTP read requests, which anyone on the boot network can send. */
#include <string.h>

#include "log.h"
#include "macro.h"
#include "tftp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        TftpRequest request;
        const char *error = NULL;

        log_set_max_level(LOG_CRIT);
        if (tftp_request_parse(data, size, &request, &error) < 0) {
                /* Every refusal says why, for the client. */
                if (!error || !*error)
                        __builtin_trap();
                return 0;
        }
        /* A request taken names a file under the roots, with the options in their bounds. */
        if (request.name[0] == '\0' || request.name[0] == '/' || strlen(request.name) >= sizeof(request.name) ||
            request.blksize < 8 || request.blksize > TFTP_BLKSIZE_MAX || request.timeout_sec < 1 ||
            request.timeout_sec > 255)
                __builtin_trap();
        return 0;
}
