/* SPDX-License-Identifier: MIT */
/* pureboot-bridge: the HTTPS face of the controller for nodes. It holds no CA key and no database; each
 * node call becomes one call of the controller's Gateway interface. */
#pragma once

#include <gnutls/x509.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "macro.h"

typedef struct Request Request;

typedef struct BridgeConfig {
        char *listen;          /* ADDR:PORT; unused with socket activation */
        char *hostname;        /* the name in the server certificate */
        char *address;         /* the IP nodes use, put in the certificate too */
        char *cert_file, *key_file;
        char *workflows_dir;
        char *boot_base_url;   /* where kernels and initrds are served from; default https://<address>:<port>/boot */
        unsigned max_connections, max_per_ip, timeout_sec;
        size_t max_body;
} BridgeConfig;

typedef struct Bridge {
        sd_event *event;
        sd_bus *bus;
        BridgeConfig config;

        struct MHD_Daemon *daemon;
        struct MhdEvent *mhd;
        int listen_fd;
        uint16_t port;

        struct VarlinkInterface *interface;
        char *ca_pem, *crl_pem, *cert_pem, *key_pem;
        char *ca_fingerprint; /* SHA-256 of the CA certificate, for pureboot.ca= on boot command lines */
        /* The CA and its CRL, for checking client certificates; rebuilt when the CRL changes. */
        gnutls_x509_trust_list_t trust;
        unsigned trust_generation;

        Request *suspended; /* requests waiting for the controller, resumed at shutdown */
        /* The bus allows a connection only so many pending replies: calls beyond in_flight's limit wait
         * here, first come first served. */
        unsigned in_flight;
        Request *waiting, *waiting_tail;
        struct Workflows *workflows;
} Bridge;

/* server.c */
int server_start(Bridge *b);
void server_stop(Bridge *b);
/* Runs MHD soon: after a connection was resumed. */
void server_kick(Bridge *b);

/* trust.c: the CA and CRL from the controller. */
int trust_load(Bridge *b);
