/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "address.h"
#include "format.h"
#include "frame.h"
#include "log.h"
#include "peer-server.h"
#include "tls.h"
#include "util.h"

#define HANDSHAKE_TIMEOUT_SEC 5U

enum MHD_Result peer_server_reply(struct MHD_Connection *conn, unsigned status, const char *text) {
        struct MHD_Response *resp =
                MHD_create_response_from_buffer(strlen(text), (void *) text, MHD_RESPMEM_MUST_COPY);
        enum MHD_Result r;
        if (!resp)
                return MHD_NO;
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
        r = MHD_queue_response(conn, status, resp);
        MHD_destroy_response(resp);
        return r;
}

unsigned peer_server_check(PeerServer *p, Agent *a, const gnutls_datum_t *cert, const char **ret_reason) {
        bool retry;

        if (!cert)
                return *ret_reason = "no client certificate was presented", MHD_HTTP_FORBIDDEN;
        *ret_reason = trust_check_peer(a, cert, GNUTLS_KP_TLS_WWW_CLIENT, p->expected_cn, true,
                                       "targetCertificates", NULL, &retry);
        return !*ret_reason ? 0 : retry ? MHD_HTTP_SERVICE_UNAVAILABLE : MHD_HTTP_FORBIDDEN;
}

int peer_check_init(PeerCheck *c, Agent *a, const gnutls_datum_t *cert) {
        c->trust_gen = a->trust_generation;
        c->watch_gen = a->watched_generation;
        c->cert.size = cert->size;
        c->cert.data = malloc(cert->size);
        if (!c->cert.data)
                return -ENOMEM;
        memcpy(c->cert.data, cert->data, cert->size);
        return 0;
}

void peer_check_done(PeerCheck *c) {
        c->cert.data = mfree(c->cert.data);
}

bool peer_check_still_good(PeerServer *p, Agent *a, PeerCheck *c, const char *whom, uint64_t pos) {
        const char *reason;

        if (c->trust_gen == a->trust_generation && c->watch_gen == a->watched_generation)
                return true;
        c->trust_gen = a->trust_generation;
        c->watch_gen = a->watched_generation;
        if (peer_server_check(p, a, &c->cert, &reason) == 0)
                return true;
        log_warning("Ending the stream to %s at %s: %s.", whom, FORMAT_BYTES(pos), reason);
        return false;
}

const gnutls_datum_t *peer_server_certificate(struct MHD_Connection *conn) {
        const union MHD_ConnectionInfo *ci =
                MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
        const gnutls_datum_t *certs;
        unsigned n = 0;

        if (!ci || !ci->tls_session ||
            !(certs = gnutls_certificate_get_peers((gnutls_session_t) ci->tls_session, &n)) || n == 0)
                return NULL;
        return &certs[0];
}

bool peer_server_request_begins(struct MHD_Connection *conn, void **req_cls, void *cls) {
        if (*req_cls)
                return false;
        *req_cls = cls;
        (void) MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT, PEER_SERVER_IDLE_TIMEOUT_SEC);
        return true;
}

int peer_server_disk_request(PeerServer *p, Agent *a, struct MHD_Connection *conn, const char *url,
                             const char *method, uint64_t size, const gnutls_datum_t **ret_cert,
                             uint64_t *ret_offset, unsigned *ret_features, enum MHD_Result *ret_result) {
        const char *refusal, *arg;
        unsigned status;
        char *end;

        if (!streq(url, "/disk"))
                return *ret_result =
                               peer_server_reply(conn, MHD_HTTP_NOT_FOUND, "Only /disk is served here.\n"),
                       0;
        if (!streq(method, MHD_HTTP_METHOD_GET))
                return *ret_result = peer_server_reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
                                                       "Use GET /disk?offset=N.\n"),
                       0;
        *ret_cert = peer_server_certificate(conn);
        status = peer_server_check(p, a, *ret_cert, &refusal);
        if (status != 0) {
                log_warning("Refused to serve the disk (%u): %s.", status, refusal);
                return *ret_result = peer_server_reply(conn, status, refusal), 0;
        }
        arg = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "offset");
        errno = 0;
        *ret_offset = arg ? strtoull(arg, &end, 10) : 0;
        if ((arg && (errno || *end || !*arg)) || *ret_offset % FRAME_CHUNK != 0 || *ret_offset > size)
                return *ret_result =
                               peer_server_reply(conn, MHD_HTTP_BAD_REQUEST,
                                                 "offset must be a multiple of 1 MiB within the disk.\n"),
                       0;
        *ret_features =
                frame_features_parse(MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "features"));
        return 1;
}

enum MHD_Result peer_server_queue_stream(struct MHD_Connection *conn, uint64_t disk_size, unsigned features,
                                         MHD_ContentReaderCallback read, void *cls,
                                         MHD_ContentReaderFreeCallback free_cb) {
        struct MHD_Response *resp =
                MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, PEER_SERVER_BLOCK, read, cls, free_cb);
        char size[32], names[16];
        enum MHD_Result r;

        if (!resp) {
                free_cb(cls);
                return MHD_NO;
        }
        snprintf(size, sizeof(size), "%" PRIu64, disk_size);
        MHD_add_response_header(resp, "X-PureBoot-Disk-Size", size);
        /* What this stream carries; an older target never asked and ignores it. */
        MHD_add_response_header(resp, "X-PureBoot-Features", frame_features_string(features, names));
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/x-pureboot-frames");
        r = MHD_queue_response(conn, MHD_HTTP_OK, resp);
        MHD_destroy_response(resp);
        return r;
}

/* A connection gets a few seconds for its TLS handshake and request (set back at the request): one that
 * connects and says nothing holds a slot no longer. */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
        (void) cls, (void) socket_context;
        if (code == MHD_CONNECTION_NOTIFY_STARTED)
                (void) MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT, HANDSHAKE_TIMEOUT_SEC);
}

/* Told an address to serve on (a data network's), the server listens there only: the disk is not offered
 * on the other networks. Else on every address. */
static int listen_address(Agent *a, unsigned *flags, SocketAddress *ret, bool *ret_given) {
        _cleanup_free_ char *address = NULL;
        int r;

        *ret_given = false;
        r = client_data_address(a, &address);
        if (r == -ENODEV || r == -EADDRNOTAVAIL)
                return log_error_errno(r, "Cannot serve on %s: %s.", a->settings.data_interface,
                                       r == -ENODEV ? "there is no such interface" : "it has no address");
        if (r < 0)
                return r;
        if (r == 0) {
                *flags |= MHD_USE_DUAL_STACK;
                return 0;
        }
        socklen_t len;
        if (socket_address_from_ip(address, a->settings.port, ret, &len) < 0)
                return -EINVAL;
        if (ret->sa.sa_family == AF_INET6)
                *flags |= MHD_USE_IPv6;
        *ret_given = true;
        return 0;
}

int peer_server_start(PeerServer *p, Agent *a, MHD_AccessHandlerCallback handler, void *cls, bool suspend) {
        unsigned flags =
                MHD_USE_TLS | MHD_USE_EPOLL | MHD_USE_ERROR_LOG | (suspend ? MHD_ALLOW_SUSPEND_RESUME : 0);
        SocketAddress bind_to;
        bool given;
        int r;

        if (!p->expected_cn && asprintf(&p->expected_cn, "clone-%s-target-", a->settings.session) < 0)
                return -ENOMEM;
        r = listen_address(a, &flags, &bind_to, &given);
        if (r < 0)
                return r;
        p->daemon = MHD_start_daemon(
                flags, a->settings.port, NULL, NULL, handler, cls, MHD_OPTION_SOCK_ADDR,
                given ? &bind_to.sa : (const struct sockaddr *) NULL, MHD_OPTION_HTTPS_MEM_KEY, a->key_pem,
                MHD_OPTION_HTTPS_MEM_CERT, a->cert_pem, MHD_OPTION_HTTPS_MEM_TRUST, a->ca_pem,
                MHD_OPTION_HTTPS_PRIORITIES, "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2",
                /* Room for the targets' resumes, and not much for anyone else: per address, a few. */
                MHD_OPTION_CONNECTION_LIMIT, (unsigned) 64, MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned) 4,
                MHD_OPTION_NOTIFY_CONNECTION, on_connection, NULL,
                /* Room for large chunks of the stream: fewer, fuller TLS writes. */
                MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) PEER_SERVER_BLOCK + 64 * 1024,
                MHD_OPTION_CONNECTION_TIMEOUT, PEER_SERVER_IDLE_TIMEOUT_SEC, MHD_OPTION_END);
        if (!p->daemon)
                return log_error_errno(EADDRINUSE, "Failed to serve on port %u (in use?).",
                                       a->settings.port);
        r = mhd_event_attach(a->event, p->daemon, &p->mhd);
        if (r < 0)
                return log_error_errno(r, "Failed to serve from the event loop: %m");
        return 0;
}

void peer_server_stop(PeerServer *p) {
        p->mhd = mhd_event_detach(p->mhd);
        if (p->daemon)
                MHD_stop_daemon(p->daemon);
        p->daemon = NULL;
        p->expected_cn = mfree(p->expected_cn);
}
