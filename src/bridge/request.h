/* SPDX-License-Identifier: MIT */
/* One HTTP request on its way through the bridge, and the connection it came on. */
#pragma once

#include <json-c/json.h>
#include <microhttpd.h>

#include "bridge.h"

/* Per TLS connection: the verified client certificate, checked once per CRL generation. */
typedef struct Peer {
        bool checked;
        unsigned generation;
        char *cn;            /* NULL: no (valid) certificate */
        const char *reason;  /* why not, for the 401 */
        char address[64];
} Peer;

struct Request {
        Bridge *bridge;
        const Listener *listener; /* the HTTPS one, or plain HTTP (then only /boot/) */
        struct MHD_Connection *conn;
        Peer *peer;
        Request *prev, *next; /* in bridge->suspended while waiting */
        bool suspended;

        char *url;
        char *body;
        size_t size, allocated;
        bool too_large;

        sd_bus_slot *slot;           /* a Gateway call in flight */
        char *method;                /* a call waiting for its turn: what to send */
        json_object *params;
        Request *wait_next;          /* in bridge->waiting */
        struct MHD_Response *response;
        unsigned status;
        struct Watch *watch;         /* a streamed WatchSession */
};

/* Sets the response to send: JSON with a status. Takes o. */
int request_reply_json(Request *req, unsigned status, json_object *o);
/* A varlink error reply: {"error": name, "parameters": {key: value, …}} (NULL-terminated pairs). */
int request_reply_error(Request *req, unsigned status, const char *error, ...);
/* Parks the connection until request_resume. */
void request_suspend(Request *req);
void request_resume(Request *req);

/* Drops the calls still waiting for their turn, answering 503 (at shutdown). */
void varlink_http_drop_waiting(Bridge *b);
/* varlink-http.c: POST /call/<interface>.<method>. */
int varlink_http_call(Request *req, const char *name);
/* boot.c: GET /boot/ipxe, /boot/grub and /boot/pi (kind: ipxe, grub, pi). */
int boot_answer(Request *req, const char *kind);
/* staging.c: /staging/NAME, a local backend's files for the clone certificates of its session. */
int staging_file_answer(Request *req, const char *method, const char *name);
/* The largest piece of a file one PUT to /staging/ carries. */
#define STAGING_PIECE_MAX (16U << 20)
/* boot.c: GET of a boot file, name as TFTP names it (boot_file_open). */
int boot_file_answer(Request *req, const char *name);
/* The Gateway call for a node call: peer's name and address, the parameters; callback gets the reply. */
int gateway_forward(Bridge *b, sd_bus_slot **slot, const char *method, const Peer *peer, json_object *params,
                    sd_bus_message_handler_t callback, void *userdata);
/* The Gateway's answer, as the HTTP status and body to send: ("", reply) → 200 and the reply, (error name,
 * parameters) → the error's status and {"error", "parameters"}, a bus error → 503 ControllerUnavailable. */
int gateway_reply_parse(sd_bus_message *m, const sd_bus_error *e, unsigned *ret_status, json_object **ret);
/* watch.c: WatchSession and WatchNode streams. */
int watch_start(Request *req, const char *method, json_object *params);
/* The HTTP status for a varlink error name. */
unsigned varlink_error_status(const char *error);
/* Called when the request a stream belongs to goes away; the response frees the stream later. */
void watch_detach(struct Watch *w);
