/* SPDX-License-Identifier: MIT */
/* The HTTP servers: libmicrohttpd on GnuTLS in our sd-event loop through MHD's epoll fd, the limits that
 * keep one client from hurting the others, client certificate checks, and routing. The HTTPS listener
 * serves everything; the plain HTTP one (if configured) only the boot answers and files, for firmware
 * that speaks no TLS. */
#include <gnutls/gnutls.h>
#include <stdarg.h>

#include "address.h"
#include "log.h"
#include "mhd-event.h"
#include "request.h"
#include "tls.h"

int request_reply_json(Request *req, unsigned status, json_object *o) {
        const char *text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
        req->response = MHD_create_response_from_buffer(strlen(text), (void *) text, MHD_RESPMEM_MUST_COPY);
        json_object_put(o);
        if (!req->response)
                return -ENOMEM;
        MHD_add_response_header(req->response, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
        req->status = status;
        return 0;
}

int request_reply_error(Request *req, unsigned status, const char *error, ...) {
        json_object *o = json_object_new_object(), *params = json_object_new_object();
        va_list ap;

        va_start(ap, error);
        for (const char *k = va_arg(ap, const char *); k; k = va_arg(ap, const char *))
                json_object_object_add(params, k, json_object_new_string(va_arg(ap, const char *)));
        va_end(ap);
        json_object_object_add(o, "error", json_object_new_string(error));
        json_object_object_add(o, "parameters", params);
        return request_reply_json(req, status, o);
}

void request_suspend(Request *req) {
        Bridge *b = req->bridge;
        MHD_suspend_connection(req->conn);
        req->suspended = true;
        req->prev = NULL;
        req->next = b->suspended;
        if (b->suspended)
                b->suspended->prev = req;
        b->suspended = req;
}

void request_resume(Request *req) {
        Bridge *b = req->bridge;
        if (!req->suspended)
                return;
        if (req->prev)
                req->prev->next = req->next;
        else
                b->suspended = req->next;
        if (req->next)
                req->next->prev = req->prev;
        req->prev = req->next = NULL;
        req->suspended = false;
        MHD_resume_connection(req->conn);
        mhd_event_kick(req->listener->mhd);
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
        Peer *p = *socket_context;
        (void) cls;

        if (code == MHD_CONNECTION_NOTIFY_STARTED) {
                const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
                p = calloc(1, sizeof(Peer));
                if (p && ci && ci->client_addr)
                        (void) socket_address_ip((const SocketAddress *) ci->client_addr, p->address,
                                                 sizeof(p->address));
                *socket_context = p;
        } else if (p) {
                free(p->cn);
                free(p);
                *socket_context = NULL;
        }
}

/* The client certificate, verified against the CA and CRL once per connection (and again when the CRL
 * changed). MHD only requests certificates, so a connection without one is fine until a call needs it. */
static void check_peer(Bridge *b, Request *req) {
        Peer *p = req->peer;
        const union MHD_ConnectionInfo *ci;
        const gnutls_datum_t *certs;
        unsigned n = 0;

        if (!p || (p->checked && p->generation == b->trust_generation))
                return;
        free(p->cn);
        p->cn = NULL;
        p->reason = "no client certificate was presented";
        p->checked = true;
        p->generation = b->trust_generation;
        ci = MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
        if (!ci || !ci->tls_session)
                return;
        certs = gnutls_certificate_get_peers((gnutls_session_t) ci->tls_session, &n);
        if (!certs || n == 0)
                return;
        if (tls_verify_peer(b->trust, &certs[0], GNUTLS_KP_TLS_WWW_CLIENT, &p->cn, NULL, &p->reason) < 0)
                p->cn = NULL;
}

static enum MHD_Result queue(Request *req) {
        enum MHD_Result r = MHD_queue_response(req->conn, req->status, req->response);
        MHD_destroy_response(req->response);
        req->response = NULL;
        return r;
}

/* A path with %00 stays escaped (unescape_url): decoded, it would end the name early. */
static int refuse_nul(Request *req) {
        return request_reply_error(req, MHD_HTTP_BAD_REQUEST, "org.varlink.service.InvalidParameter",
                                   "parameter", "path", "reason", "the path holds an encoded NUL (%00)",
                                   NULL);
}

static int refuse_method(Request *req) {
        return request_reply_error(req, MHD_HTTP_METHOD_NOT_ALLOWED, "org.varlink.service.MethodNotFound",
                                   "method", req->url, NULL);
}

static enum MHD_Result route(Request *req, const char *method) {
        bool get = STR_IN_SET(method, MHD_HTTP_METHOD_GET, MHD_HTTP_METHOD_HEAD);
        const char *name;
        int r;

        if (strstr(req->url, "%00"))
                r = refuse_nul(req);
        else if (!req->listener->tls && !startswith(req->url, "/boot/"))
                r = request_reply_error(req, MHD_HTTP_NOT_FOUND, "org.varlink.service.MethodNotFound", "method",
                                        req->url, "reason", "only /boot/ is served over plain HTTP; use HTTPS",
                                        NULL);
        else if ((name = startswith(req->url, "/call/"))) {
                if (!streq(method, MHD_HTTP_METHOD_POST))
                        r = refuse_method(req);
                else if (req->too_large)
                        r = request_reply_error(req, MHD_HTTP_CONTENT_TOO_LARGE, "org.varlink.service.InvalidParameter",
                                                "parameter", "parameters", NULL);
                else
                        r = varlink_http_call(req, name);
        } else if (STR_IN_SET(req->url, "/ca.crt", "/ca.crl") && !get)
                r = refuse_method(req);
        else if (STR_IN_SET(req->url, "/ca.crt", "/ca.crl")) {
                /* Public: a node fetches the CA before it has anything else, and checks it against the
                 * pureboot.ca= fingerprint on its command line before it sends its token; clone agents
                 * fetch the CRL (signed by the CA) to check their peer against. */
                const char *pem =
                        streq(req->url, "/ca.crt") ? req->bridge->ca_pem : strempty(req->bridge->crl_pem);
                req->response =
                        MHD_create_response_from_buffer(strlen(pem), (void *) pem, MHD_RESPMEM_MUST_COPY);
                if (!req->response)
                        return MHD_NO;
                MHD_add_response_header(req->response, MHD_HTTP_HEADER_CONTENT_TYPE, "application/x-pem-file");
                req->status = MHD_HTTP_OK;
                r = 0;
        } else if (STR_IN_SET(req->url, "/boot/ipxe", "/boot/grub", "/boot/pi"))
                r = streq(method, MHD_HTTP_METHOD_GET) ? boot_answer(req, req->url + strlen("/boot/"))
                                                       : refuse_method(req);
        else if ((name = startswith(req->url, "/staging/")))
                r = staging_file_answer(req, method, name);
        else if ((name = startswith(req->url, "/boot/")))
                /* /boot/files/PATH, and the TFTP root's files as /boot/NAME: for UEFI HTTP boot, whose boot
                 * file is a URL, and the rest of its chain. */
                r = get ? boot_file_answer(req, startswith(name, "files/") ? req->url + 1 : name)
                        : refuse_method(req);
        else
                r = request_reply_error(req, MHD_HTTP_NOT_FOUND, "org.varlink.service.MethodNotFound", "method",
                                        req->url, NULL);
        if (r < 0) {
                log_error_errno(r, "Failed to handle %s %s: %m", method, req->url);
                return MHD_NO;
        }
        return req->response ? queue(req) : MHD_YES; /* else suspended or streaming */
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                 const char *version, const char *data, size_t *data_size, void **req_cls) {
        Listener *l = cls;
        Bridge *b = l->bridge;
        Request *req = *req_cls;
        (void) version;

        if (!req) {
                const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
                req = calloc(1, sizeof(Request));
                if (!req || !(req->url = strdup(url))) {
                        free(req);
                        return MHD_NO;
                }
                req->bridge = b;
                req->listener = l;
                req->conn = conn;
                req->peer = ci ? ci->socket_context : NULL;
                *req_cls = req;
                return MHD_YES;
        }
        if (*data_size > 0) {
                /* Bodies over the limit are read and dropped, then refused with 413. */
                size_t max = b->config.max_body;
                if (l->tls && startswith(req->url, "/staging/")) {
                        /* A piece of an image, and only from a client certificate: nobody else makes the
                         * bridge hold 16 MiB. */
                        check_peer(b, req);
                        if (req->peer && req->peer->cn)
                                max = STAGING_PIECE_MAX;
                }
                if (req->too_large || req->size + *data_size > max) {
                        req->too_large = true;
                        free(req->body);
                        req->body = NULL;
                        req->allocated = 0;
                } else {
                        /* It comes a few KiB at a time: room for twice as much each time it runs out, so a
                         * piece of 16 MiB is not copied over and over. */
                        if (req->size + *data_size + 1 > req->allocated) {
                                size_t want =
                                        MAX(req->size + *data_size + 1, MIN(2 * req->allocated, max + 1));
                                char *n = realloc(req->body, want);
                                if (!n)
                                        return MHD_NO;
                                req->body = n;
                                req->allocated = want;
                        }
                        memcpy(req->body + req->size, data, *data_size);
                        req->size += *data_size;
                        req->body[req->size] = 0;
                }
                *data_size = 0;
                return MHD_YES;
        }
        if (req->response) /* resumed with the controller's answer */
                return queue(req);
        if (req->slot || req->watch)
                return MHD_YES;
        if (l->tls)
                check_peer(b, req);
        return route(req, method);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                         enum MHD_RequestTerminationCode code) {
        Request *req = *req_cls;
        (void) cls, (void) conn, (void) code;
        if (!req)
                return;
        if (req->watch)
                watch_detach(req->watch);
        sd_bus_slot_unref(req->slot);
        if (req->response)
                MHD_destroy_response(req->response);
        json_object_put(req->params);
        free(req->method);
        free(req->url);
        free(req->body);
        free(req);
        *req_cls = NULL;
}

_printf_(2, 0) static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
        _cleanup_free_ char *s = NULL;
        (void) cls;
        if (vasprintf(&s, fmt, ap) >= 0)
                log_debug("microhttpd: %s", s);
}

/* libmicrohttpd's own unescaping, except that a path with an encoded NUL is left as it came, for route() to
 * refuse: decoded, the NUL would cut the name short. */
static size_t unescape_url(void *cls, struct MHD_Connection *conn, char *s) {
        (void) cls, (void) conn;
        return strstr(s, "%00") ? strlen(s) : MHD_http_unescape(s);
}

static int listener_start(Listener *l) {
        Bridge *b = l->bridge;
        struct MHD_OptionItem tls[] = {
                { MHD_OPTION_HTTPS_MEM_KEY, 0, b->key_pem },
                { MHD_OPTION_HTTPS_MEM_CERT, 0, b->cert_pem },
                { MHD_OPTION_HTTPS_MEM_TRUST, 0, b->ca_pem },
                { MHD_OPTION_HTTPS_PRIORITIES, 0, (void *) "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2" },
                { MHD_OPTION_END, 0, NULL },
        };
        int r;

        l->daemon = MHD_start_daemon(
                (l->tls ? MHD_USE_TLS : 0) | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG, 0,
                NULL, NULL, on_access, l, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, b,
                MHD_OPTION_LISTEN_SOCKET, l->fd, MHD_OPTION_ARRAY, l->tls ? tls : tls + ELEMENTSOF(tls) - 1,
                MHD_OPTION_CONNECTION_LIMIT, b->config.max_connections, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
                b->config.max_per_ip, MHD_OPTION_CONNECTION_TIMEOUT, b->config.timeout_sec,
                MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) 32 * 1024, MHD_OPTION_NOTIFY_CONNECTION,
                on_connection, b, MHD_OPTION_NOTIFY_COMPLETED, on_completed, b, MHD_OPTION_UNESCAPE_CALLBACK,
                unescape_url, NULL, MHD_OPTION_END);
        if (!l->daemon)
                return log_error_errno(EIO, "Failed to start the %s server (libmicrohttpd refused its settings).",
                                       l->tls ? "HTTPS" : "HTTP");
        r = mhd_event_attach(b->event, l->daemon, &l->mhd);
        if (r < 0)
                return log_error_errno(r, "Failed to run the %s server from the event loop: %m",
                                       l->tls ? "HTTPS" : "HTTP");
        return 0;
}

static void listener_stop(Listener *l) {
        if (!l->daemon)
                return;
        MHD_stop_daemon(l->daemon);
        l->daemon = NULL;
        l->mhd = mhd_event_detach(l->mhd);
}

int server_start(Bridge *b) {
        int r = listener_start(&b->https);
        if (r >= 0 && b->http.fd >= 0)
                r = listener_start(&b->http);
        return r;
}

void server_stop(Bridge *b) {
        if (!b->https.daemon && !b->http.daemon)
                return;
        /* MHD cannot stop with connections parked: let them go first. */
        varlink_http_drop_waiting(b);
        while (b->suspended) {
                Request *req = b->suspended;
                req->slot = sd_bus_slot_unref(req->slot);
                if (req->watch) {
                        watch_detach(req->watch);
                        req->watch = NULL;
                }
                request_resume(req);
        }
        listener_stop(&b->http);
        listener_stop(&b->https);
}
