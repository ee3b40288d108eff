/* SPDX-License-Identifier: MIT */
/* /staging/NAME: a local backend's files, for the clone certificates of the session that uses them (the
 * staging area is the session's, or its image's). GET (with a Range) and HEAD read, PUT ?offset=N writes a
 * piece (&create=1: the file anew, empty), POST ?commit=1 makes a written file durable under its name,
 * DELETE removes one. The controller decides and opens the file (Gateway.OpenStagingFile,
 * ChangeStagingFile); the bridge only moves bytes between the connection and what it was handed. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <unistd.h>

#include "log.h"
#include "pureboot-bus.h"
#include "pureboot-errors.h"
#include "request.h"
#include "util.h"

typedef struct StagingCall {
        Request *req;
        enum { OP_READ, OP_WRITE, OP_CHANGE } op;
        uint64_t offset, length; /* a read's range (length 0: to the end); a write's offset */
        bool ranged;
} StagingCall;

static unsigned error_status(const sd_bus_error *e) {
        return sd_bus_error_has_name(e, PB_ERROR_NOT_AUTHORIZED) ? MHD_HTTP_FORBIDDEN
               : sd_bus_error_has_names(e, PB_ERROR_NO_SUCH_SESSION, PB_ERROR_NO_SUCH_IMAGE)
                       ? MHD_HTTP_NOT_FOUND
               : sd_bus_error_has_name(e, PB_ERROR_INVALID_STATE)    ? MHD_HTTP_CONFLICT
               : sd_bus_error_has_name(e, PB_ERROR_INVALID_ARGUMENT) ? MHD_HTTP_BAD_REQUEST
               : sd_bus_error_has_names(e, SD_BUS_ERROR_NO_REPLY, SD_BUS_ERROR_SERVICE_UNKNOWN,
                                        SD_BUS_ERROR_NAME_HAS_NO_OWNER, SD_BUS_ERROR_DISCONNECTED)
                       ? MHD_HTTP_SERVICE_UNAVAILABLE
               : sd_bus_error_get_errno(e) == ENOSPC ? MHD_HTTP_INSUFFICIENT_STORAGE
                                                     : MHD_HTTP_INTERNAL_SERVER_ERROR;
}

static int reply_empty(Request *req, unsigned status) {
        req->response = MHD_create_response_from_buffer(0, (void *) "", MHD_RESPMEM_PERSISTENT);
        if (!req->response)
                return -ENOMEM;
        req->status = status;
        return 0;
}

/* The read: the range asked for of what the controller opened, or the whole file. */
static int reply_file(StagingCall *sc, int fd, uint64_t size) {
        Request *req = sc->req;
        uint64_t length = sc->length;
        char range[96];

        if (sc->ranged && sc->offset >= size) {
                snprintf(range, sizeof(range), "bytes */%" PRIu64, size);
                int r = reply_empty(req, MHD_HTTP_RANGE_NOT_SATISFIABLE);
                if (r >= 0)
                        MHD_add_response_header(req->response, MHD_HTTP_HEADER_CONTENT_RANGE, range);
                return r;
        }
        if (!sc->ranged)
                sc->offset = 0, length = size;
        else if (length == 0 || length > size - sc->offset)
                length = size - sc->offset;
        int copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (copy < 0)
                return -errno;
        req->response = MHD_create_response_from_fd_at_offset64(length, copy, sc->offset);
        if (!req->response) {
                close(copy);
                return -ENOMEM;
        }
        MHD_add_response_header(req->response, MHD_HTTP_HEADER_CONTENT_TYPE, "application/octet-stream");
        if (sc->ranged) {
                snprintf(range, sizeof(range), "bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64, sc->offset,
                         sc->offset + length - 1, size);
                MHD_add_response_header(req->response, MHD_HTTP_HEADER_CONTENT_RANGE, range);
        }
        req->status = sc->ranged ? MHD_HTTP_PARTIAL_CONTENT : MHD_HTTP_OK;
        return 0;
}

/* The write: the piece that came with the request, at its offset. */
static int write_piece(StagingCall *sc, int fd) {
        Request *req = sc->req;
        int r = req->size > 0 ? pwrite_full(fd, req->body, req->size, sc->offset) : 0;
        if (r < 0)
                return request_reply_error(
                        req, r == -ENOSPC ? MHD_HTTP_INSUFFICIENT_STORAGE : MHD_HTTP_INTERNAL_SERVER_ERROR,
                        PB_NODE_PREFIX "StagingFailed", "reason", strerror(-r), NULL);
        return reply_empty(req, MHD_HTTP_NO_CONTENT);
}

static int parse_offset(const char *s, uint64_t *ret) {
        unsigned long long v;
        int n = 0;
        if (!s || sscanf(s, "%llu%n", &v, &n) != 1 || s[n] != 0 || s[0] == '-' || s[0] == '+')
                return -EINVAL;
        *ret = v;
        return 0;
}

static int on_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        StagingCall *sc = userdata;
        Request *req = sc->req;
        const sd_bus_error *e = sd_bus_message_get_error(m);
        uint64_t size = 0;
        int fd = -EBADF, r;
        (void) ret_error;

        if (e)
                r = request_reply_error(req, error_status(e), PB_NODE_PREFIX "StagingRefused", "reason",
                                        e->message ?: e->name, NULL);
        else if (sc->op == OP_CHANGE)
                r = reply_empty(req, MHD_HTTP_NO_CONTENT);
        else if ((r = sd_bus_message_read(m, "ht", &fd, &size)) >= 0)
                r = sc->op == OP_READ ? reply_file(sc, fd, size) : write_piece(sc, fd);
        if (r < 0) {
                log_error_errno(r, "Failed to answer %s: %m", req->url);
                if (!req->response)
                        (void) request_reply_error(req, MHD_HTTP_INTERNAL_SERVER_ERROR,
                                                   PB_NODE_PREFIX "StagingFailed", "reason",
                                                   "internal error", NULL);
        }
        request_resume(req);
        req->slot = sd_bus_slot_unref(req->slot); /* last: frees sc */
        return 0;
}

/* "bytes=A-B" or "bytes=A-": 0 and the range; -EINVAL for anything else (several ranges included). */
static int parse_range(const char *s, uint64_t *ret_offset, uint64_t *ret_length) {
        unsigned long long a, b;
        int n = 0;

        if (sscanf(s, "bytes=%llu-%n", &a, &n) != 1 || n == 0)
                return -EINVAL;
        if (s[n] == 0) {
                *ret_offset = a;
                *ret_length = 0;
                return 0;
        }
        int m = 0;
        if (sscanf(s + n, "%llu%n", &b, &m) != 1 || s[n + m] != 0 || b < a)
                return -EINVAL;
        *ret_offset = a;
        *ret_length = b - a + 1;
        return 0;
}

int staging_file_answer(Request *req, const char *method, const char *name) {
        Bridge *b = req->bridge;
        const char *offset = MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, "offset"),
                   *range = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_RANGE);
        bool create = MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, "create") != NULL,
             commit = MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, "commit") != NULL;
        StagingCall *sc;
        const char *how;
        int r;

        if (!req->peer || !req->peer->cn)
                return request_reply_error(req, MHD_HTTP_UNAUTHORIZED, PB_NODE_PREFIX "PermissionDenied",
                                           "reason", req->peer ? req->peer->reason : "no client certificate",
                                           NULL);
        if (req->too_large)
                return request_reply_error(req, MHD_HTTP_CONTENT_TOO_LARGE, PB_NODE_PREFIX "StagingRefused",
                                           "reason", "a piece is at most 16 MiB", NULL);
        sc = calloc(1, sizeof(StagingCall));
        if (!sc)
                return -ENOMEM;
        sc->req = req;
        if (STR_IN_SET(method, MHD_HTTP_METHOD_GET, MHD_HTTP_METHOD_HEAD)) {
                sc->op = OP_READ;
                how = "read";
                sc->ranged = range != NULL;
                if (range && parse_range(range, &sc->offset, &sc->length) < 0) {
                        free(sc);
                        return request_reply_error(req, MHD_HTTP_RANGE_NOT_SATISFIABLE,
                                                   PB_NODE_PREFIX "StagingRefused", "reason",
                                                   "one range of bytes=A-B or bytes=A- is served", NULL);
                }
        } else if (streq(method, MHD_HTTP_METHOD_PUT) && parse_offset(offset, &sc->offset) >= 0) {
                sc->op = OP_WRITE;
                how = create ? "create" : "write";
        } else if ((streq(method, MHD_HTTP_METHOD_POST) && commit) ||
                   streq(method, MHD_HTTP_METHOD_DELETE)) {
                sc->op = OP_CHANGE;
                how = commit ? "commit" : "remove";
        } else {
                free(sc);
                return request_reply_error(req, MHD_HTTP_BAD_REQUEST, PB_NODE_PREFIX "StagingRefused",
                                           "reason", "GET or HEAD, PUT ?offset=N, POST ?commit=1 or DELETE",
                                           NULL);
        }
        r = sd_bus_call_method_async(b->bus, &req->slot, PB_BUS_NAME, PB_ROOT_PATH, PB_IFACE("Gateway"),
                                     sc->op == OP_CHANGE ? "ChangeStagingFile" : "OpenStagingFile", on_reply,
                                     sc, "sss", req->peer->cn, name, how);
        if (r >= 0)
                r = sd_bus_slot_set_destroy_callback(req->slot, free);
        if (r < 0) {
                if (!req->slot)
                        free(sc);
                return request_reply_error(req, MHD_HTTP_SERVICE_UNAVAILABLE,
                                           PB_NODE_PREFIX "ControllerUnavailable", "reason",
                                           "the controller cannot be reached", NULL);
        }
        request_suspend(req);
        return 0;
}
