/* SPDX-License-Identifier: MIT */
/* Varlink over HTTP: POST /call/<interface>.<method> with the parameters as the body, 200 with the output
 * parameters or an error status with {"error", "parameters"}; WatchSession streams application/json-seq
 * records while the client sends "Accept: application/json-seq". Calls are checked against the IDL here,
 * so malformed ones never reach the controller, and forwarded as one Gateway call each. */
#include <stdarg.h>

#include "log.h"
#include "pureboot-bus.h"
#include "request.h"
#include "util.h"
#include "varlink-idl.h"

static const char service_idl[] =
        "# The Varlink Service Interface is provided by every varlink service.\n"
        "interface org.varlink.service\n\n"
        "method GetInfo() -> (vendor: string, product: string, version: string, url: string, "
        "interfaces: []string)\n\n"
        "method GetInterfaceDescription(interface: string) -> (description: string)\n\n"
        "error InterfaceNotFound (interface: string)\n"
        "error MethodNotFound (method: string)\n"
        "error MethodNotImplemented (method: string)\n"
        "error InvalidParameter (parameter: string)\n";

unsigned varlink_error_status(const char *error) {
        static const struct {
                const char *suffix;
                unsigned status;
        } map[] = {
                { ".InvalidParameter", MHD_HTTP_BAD_REQUEST },
                { ".BadCertificateRequest", MHD_HTTP_BAD_REQUEST },
                { ".PermissionDenied", MHD_HTTP_FORBIDDEN },
                { ".InvalidToken", MHD_HTTP_FORBIDDEN },
                { ".NoSuchSession", MHD_HTTP_NOT_FOUND },
                { ".NoSuchDisk", MHD_HTTP_NOT_FOUND },
                { ".MethodNotFound", MHD_HTTP_NOT_FOUND },
                { ".InterfaceNotFound", MHD_HTTP_NOT_FOUND },
                { ".InvalidState", MHD_HTTP_CONFLICT },
                { ".MethodNotImplemented", MHD_HTTP_NOT_IMPLEMENTED },
                { ".ControllerUnavailable", MHD_HTTP_SERVICE_UNAVAILABLE },
                { ".TooManyStreams", MHD_HTTP_TOO_MANY_REQUESTS },
        };
        const char *dot = error ? strrchr(error, '.') : NULL;
        for (size_t i = 0; dot && i < ELEMENTSOF(map); i++)
                if (streq(dot, map[i].suffix))
                        return map[i].status;
        return MHD_HTTP_INTERNAL_SERVER_ERROR;
}

/* Parses the body as a JSON object (an empty body is {}), nested at most 32 deep. */
static json_object *parse_body(Request *req) {
        json_tokener *tok;
        json_object *o;

        if (!req->body || req->size == 0)
                return json_object_new_object();
        tok = json_tokener_new_ex(32);
        if (!tok)
                return NULL;
        /* Strings go on over D-Bus, which takes only UTF-8: a body that is not is refused here, as bad
         * input. */
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
        o = json_tokener_parse_ex(tok, req->body, (int) req->size);
        if (o && (json_tokener_get_error(tok) != json_tokener_success || json_tokener_get_parse_end(tok) != req->size ||
                  !json_object_is_type(o, json_type_object))) {
                json_object_put(o);
                o = NULL;
        }
        json_tokener_free(tok);
        return o;
}

int gateway_reply_parse(sd_bus_message *m, const sd_bus_error *e, unsigned *ret_status, json_object **ret) {
        const char *error, *text;
        json_object *params, *o;

        if (e && sd_bus_error_is_set(e)) {
                o = json_object_new_object();
                params = json_object_new_object();
                json_object_object_add(params, "reason", json_object_new_string(e->message ?: e->name));
                json_object_object_add(o, "error",
                                       json_object_new_string(PB_NODE_PREFIX "ControllerUnavailable"));
                json_object_object_add(o, "parameters", params);
                *ret_status = MHD_HTTP_SERVICE_UNAVAILABLE;
                *ret = o;
                return 0;
        }
        if (sd_bus_message_read(m, "ss", &error, &text) < 0)
                return -EBADMSG;
        params = json_tokener_parse(text);
        if (!params)
                return -EBADMSG;
        if (isempty(error)) {
                *ret_status = MHD_HTTP_OK;
                *ret = params;
                return 0;
        }
        o = json_object_new_object();
        json_object_object_add(o, "error", json_object_new_string(error));
        json_object_object_add(o, "parameters", params);
        *ret_status = varlink_error_status(error);
        *ret = o;
        return 0;
}

/* dbus-daemon allows 128 pending replies per connection by default; keep well below. */
#define MAX_IN_FLIGHT 96

static int on_gateway_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error);

static int send_call(Request *req) {
        int r = gateway_forward(req->bridge, &req->slot, req->method, req->peer, req->params,
                                on_gateway_reply, req);
        if (r >= 0)
                req->bridge->in_flight++;
        return r;
}

/* Sends waiting calls while there is room. */
static void pump(Bridge *b) {
        while (b->waiting && b->in_flight < MAX_IN_FLIGHT) {
                Request *req = b->waiting;
                b->waiting = req->wait_next;
                if (!b->waiting)
                        b->waiting_tail = NULL;
                req->wait_next = NULL;
                if (send_call(req) < 0) {
                        (void) request_reply_error(req, MHD_HTTP_SERVICE_UNAVAILABLE,
                                                   PB_NODE_PREFIX "ControllerUnavailable", "reason",
                                                   "the controller cannot be reached", NULL);
                        request_resume(req);
                }
        }
}

void varlink_http_drop_waiting(Bridge *b) {
        while (b->waiting) {
                Request *req = b->waiting;
                b->waiting = req->wait_next;
                req->wait_next = NULL;
                (void) request_reply_error(req, MHD_HTTP_SERVICE_UNAVAILABLE,
                                           PB_NODE_PREFIX "ControllerUnavailable", "reason",
                                           "the bridge is stopping", NULL);
        }
        b->waiting_tail = NULL;
}

static int on_gateway_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Request *req = userdata;
        Bridge *b = req->bridge;
        unsigned status;
        json_object *o;
        int r;
        (void) ret_error;

        req->slot = sd_bus_slot_unref(req->slot);
        b->in_flight--;
        r = gateway_reply_parse(m, sd_bus_message_get_error(m), &status, &o);
        if (r < 0)
                r = request_reply_error(req, MHD_HTTP_INTERNAL_SERVER_ERROR,
                                        PB_NODE_PREFIX "ControllerUnavailable", "reason",
                                        "the controller's answer could not be read", NULL);
        else
                r = request_reply_json(req, status, o);
        if (r < 0)
                log_error_errno(r, "Failed to build a reply: %m");
        request_resume(req);
        pump(b);
        return 0;
}

int gateway_forward(Bridge *b, sd_bus_slot **slot, const char *method, const Peer *peer, json_object *params,
                    sd_bus_message_handler_t callback, void *userdata) {
        return sd_bus_call_method_async(
                b->bus, slot, PB_BUS_NAME, PB_ROOT_PATH, PB_IFACE("Gateway"), "Call", callback, userdata,
                "ssss", method, strempty(peer ? peer->cn : NULL), peer ? peer->address : "",
                json_object_to_json_string_ext(params,
                                               JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
}

static int service_call(Request *req, const char *method) {
        json_object *o = json_object_new_object(), *iface;

        if (streq(method, "GetInfo")) {
                json_object *list = json_object_new_array();
                json_object_array_add(list, json_object_new_string("org.varlink.service"));
                json_object_array_add(list, json_object_new_string(PB_NODE_INTERFACE));
                json_object_object_add(o, "vendor", json_object_new_string("PureBoot"));
                json_object_object_add(o, "product", json_object_new_string("pureboot-bridge"));
                json_object_object_add(o, "version", json_object_new_string(PACKAGE_VERSION));
                json_object_object_add(o, "url", json_object_new_string("https://github.com/pureboot"));
                json_object_object_add(o, "interfaces", list);
                return request_reply_json(req, MHD_HTTP_OK, o);
        }
        /* name points into params: it lives until the reply is built. */
        _cleanup_(json_object_unrefp) json_object *body = parse_body(req);
        const char *name = body && json_object_object_get_ex(body, "interface", &iface)
                                   ? json_object_get_string(iface)
                                   : "";
        const char *text = streq(name, PB_NODE_INTERFACE)       ? node_interface_idl
                           : streq(name, "org.varlink.service") ? service_idl
                                                                : NULL;
        if (!text) {
                json_object_put(o);
                return request_reply_error(req, MHD_HTTP_NOT_FOUND, "org.varlink.service.InterfaceNotFound",
                                           "interface", name, NULL);
        }
        json_object_object_add(o, "description", json_object_new_string(text));
        return request_reply_json(req, MHD_HTTP_OK, o);
}

int varlink_http_call(Request *req, const char *name) {
        Bridge *b = req->bridge;
        _cleanup_free_ char *bad = NULL;
        const char *method, *accept;
        const VarlinkDefinition *def;
        json_object *params;
        int r;

        if ((method = startswith(name, "org.varlink.service.")) && STR_IN_SET(method, "GetInfo", "GetInterfaceDescription"))
                return service_call(req, method);
        method = startswith(name, PB_NODE_PREFIX);
        def = method ? varlink_interface_method(b->interface, method) : NULL;
        if (!def)
                return request_reply_error(req, MHD_HTTP_NOT_FOUND, "org.varlink.service.MethodNotFound", "method",
                                           name, NULL);
        /* Identity comes from the certificate; only Enrol is open to nodes without one. */
        if (!streq(method, "Enrol") && (!req->peer || !req->peer->cn))
                return request_reply_error(req, MHD_HTTP_UNAUTHORIZED, PB_NODE_PREFIX "PermissionDenied",
                                           "reason", req->peer ? req->peer->reason : "no client certificate",
                                           NULL);
        params = parse_body(req);
        if (!params)
                return request_reply_error(req, MHD_HTTP_BAD_REQUEST, "org.varlink.service.InvalidParameter",
                                           "parameter", "parameters", NULL);
        if (varlink_validate(b->interface, def->type, params, &bad) < 0) {
                json_object_put(params);
                return request_reply_error(req, MHD_HTTP_BAD_REQUEST, "org.varlink.service.InvalidParameter",
                                           "parameter", bad ?: "parameters", NULL);
        }
        accept = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT);
        if (STR_IN_SET(method, "WatchSession", "WatchNode") && accept && strstr(accept, "application/json-seq")) {
                r = watch_start(req, method, params);
                json_object_put(params);
                return r;
        }
        req->params = params;
        req->method = strdup(method);
        if (!req->method)
                return -ENOMEM;
        if (b->in_flight >= MAX_IN_FLIGHT) {
                if (b->waiting_tail)
                        b->waiting_tail->wait_next = req;
                else
                        b->waiting = req;
                b->waiting_tail = req;
        } else if (send_call(req) < 0)
                return request_reply_error(req, MHD_HTTP_SERVICE_UNAVAILABLE,
                                           PB_NODE_PREFIX "ControllerUnavailable", "reason",
                                           "the controller cannot be reached", NULL);
        request_suspend(req);
        return 0;
}
