/* SPDX-License-Identifier: MIT */
/* What serves a disk to the session's targets over mutual TLS has in common, whether it is the source
 * (source.c) or a target forwarding what it wrote down the chain (relay.c): the daemon on the agent's port
 * and data address, the check of the peer's certificate, and plain-text refusals. */
#pragma once

#include <gnutls/gnutls.h>
#include <microhttpd.h>

#include "agent.h"
#include "mhd-event.h"

#define PEER_SERVER_BLOCK (256U * 1024)
#define PEER_SERVER_IDLE_TIMEOUT_SEC 120U

typedef struct PeerServer {
        struct MHD_Daemon *daemon;
        MhdEvent *mhd;
        char *expected_cn; /* clone-<session>-target-: any of the session's targets */
} PeerServer;

/* Serves handler on the agent's port: on its data address if it was given one, else on every address.
 * suspend: handler's streams may suspend their connection while nothing is there to send. */
int peer_server_start(PeerServer *p, Agent *a, MHD_AccessHandlerCallback handler, void *cls, bool suspend);
void peer_server_stop(PeerServer *p);

/* Only the session's targets may read: each one's live certificate, not revoked (trust_check_peer). Returns
 * 0, or the HTTP status to refuse with (503: the session does not name this certificate yet — a target that
 * enrolled a moment ago — so try again) and *ret_reason. */
unsigned peer_server_check(PeerServer *p, Agent *a, const gnutls_datum_t *cert, const char **ret_reason);
/* A stream's peer, checked again whenever the CRL or the session changed (a revoked certificate, a newer
 * enrolment of the peer). */
typedef struct PeerCheck {
        gnutls_datum_t cert; /* DER, copied */
        unsigned trust_gen, watch_gen;
} PeerCheck;

int peer_check_init(PeerCheck *c, Agent *a, const gnutls_datum_t *cert);
void peer_check_done(PeerCheck *c);
/* Whether the stream to the peer (whom, at pos) goes on: checked again if the CRL or the session changed
 * since, and if not, why is logged. */
bool peer_check_still_good(PeerServer *p, Agent *a, PeerCheck *c, const char *whom, uint64_t pos);

/* The client's certificate (DER) on conn, or NULL. */
const gnutls_datum_t *peer_server_certificate(struct MHD_Connection *conn);
enum MHD_Result peer_server_reply(struct MHD_Connection *conn, unsigned status, const char *text);
/* Marks the headers-only first call of a request (*req_cls NULL): the short handshake timeout is over.
 * Returns true if that was this call. */
bool peer_server_request_begins(struct MHD_Connection *conn, void **req_cls, void *cls);
/* Parses GET /disk?offset=N (a chunk's start, at most size) or answers the request itself: returns 1 with
 * *ret_offset and the features asked for, 0 if it answered (refused), else <0. */
int peer_server_disk_request(PeerServer *p, Agent *a, struct MHD_Connection *conn, const char *url,
                             const char *method, uint64_t size, const gnutls_datum_t **ret_cert,
                             uint64_t *ret_offset, unsigned *ret_features, enum MHD_Result *ret_result);
/* A frame stream's response: from the callback, with the disk's size and what the stream carries. */
enum MHD_Result peer_server_queue_stream(struct MHD_Connection *conn, uint64_t disk_size, unsigned features,
                                         MHD_ContentReaderCallback read, void *cls,
                                         MHD_ContentReaderFreeCallback free_cb);
