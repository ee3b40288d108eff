/* SPDX-License-Identifier: MIT */
/* A TFTP read request, parsed (tftp.c); apart so that it can be fuzzed. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define TFTP_BLKSIZE_DEFAULT 512U
#define TFTP_BLKSIZE_MAX 65464U

enum {
        TFTP_OPTION_BLKSIZE = 1 << 0,
        TFTP_OPTION_TIMEOUT = 1 << 1,
        TFTP_OPTION_TSIZE = 1 << 2,
};

typedef struct TftpRequest {
        uint16_t opcode;
        char name[256]; /* without leading slashes */
        uint32_t blksize;
        unsigned timeout_sec;
        unsigned options; /* TFTP_OPTION_*: those the client asked for and the server takes */
} TftpRequest;

/* packet as a read request (RRQ, octet mode) into ret; -EBADMSG for a malformed one and -EOPNOTSUPP for
 * another opcode or mode, with *ret_error saying what is wrong, for the client. */
int tftp_request_parse(const uint8_t *packet, size_t size, TftpRequest *ret, const char **ret_error);
