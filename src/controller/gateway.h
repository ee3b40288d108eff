/* SPDX-License-Identifier: MIT */
/* The node-facing calls of org.pureboot.Node, as the bridge forwards them: who may make each call, report
 * sequences applied once, and the session changes the reports cause. */
#pragma once

#include <json-c/json.h>

#include "manager.h"

typedef struct GatewayReply {
        char *error;             /* a varlink error name, or NULL on success */
        json_object *parameters; /* the reply's or the error's parameters */
} GatewayReply;

void gateway_reply_done(GatewayReply *r);

int gateway_init(Manager *m);
void gateway_done(Manager *m);

/* Runs method for the peer whose verified certificate CN is peer ("" for none) from address, with the
 * JSON parameters. Failures the node should hear about are varlink errors in *ret; < 0 only for
 * failures of the controller itself. */
int gateway_call(Manager *m, const char *method, const char *peer, const char *address,
                 const char *parameters, GatewayReply *ret);

/* A local backend's file for the node whose verified certificate CN is peer (the bridge's /staging/NAME):
 * how is read, write or create (then *ret_fd and *ret_size), commit or remove. The area is that of the
 * session the certificate is of; its targets read it once the upload is whole, its source writes it while
 * it uploads. */
int gateway_staging_file(Manager *m, const char *peer, const char *name, const char *how, int *ret_fd,
                         uint64_t *ret_size, sd_bus_error *error);
