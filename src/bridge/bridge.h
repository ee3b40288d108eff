/* SPDX-License-Identifier: MIT */
/* pureboot-bridge: the HTTPS face of the controller for nodes. It holds no CA key and no database; each
 * node call becomes one call of the controller's Gateway interface. */
#pragma once

#include <gnutls/x509.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "macro.h"

#define BOOT_DIR_DEFAULT "/srv/pureboot/boot"

typedef struct Request Request;

typedef struct BridgeConfig {
        char *listen;          /* ADDR:PORT; unused with socket activation */
        char *hostname;        /* the name in the server certificate */
        char *address;         /* the IP nodes use, put in the certificate too */
        char *cert_file, *key_file;
        char *workflows_dir;
        char *boot_dir;        /* [Boot] Path=: the files served at /boot/files/ (kernels, initrds) */
        char *boot_base_url;   /* [Boot] BaseURL=: where boot scripts send firmware for them; default this bridge */
        char *http_listen;     /* [Boot] HTTPListen=: plain HTTP for /boot/ only, for firmware without TLS */
        char *tftp_listen;     /* [Boot] TFTPListen=: TFTP, for boot loaders that fetch nothing else */
        char *tftp_root;       /* [Boot] TFTPRoot=: what TFTP serves besides boot/ (default: Path=) */
        unsigned max_connections, max_per_ip, timeout_sec;
        unsigned max_watches,
                max_watches_per_peer; /* WatchSession/WatchNode streams: in all, per certificate */
        size_t max_body;
} BridgeConfig;

/* A listening socket and the HTTP server on it: HTTPS for nodes, or plain HTTP, which answers only /boot/
 * (stock iPXE builds have no TLS). */
typedef struct Listener {
        struct Bridge *bridge;
        bool tls;
        int fd;
        uint16_t port;
        struct MHD_Daemon *daemon;
        struct MhdEvent *mhd;
} Listener;

typedef struct Bridge {
        sd_event *event;
        sd_bus *bus;
        BridgeConfig config;

        Listener https, http; /* http.fd < 0: none */
        /* tftp.c: the TFTP socket (< 0: none) and the transfers under way. */
        int tftp_fd;
        uint16_t tftp_port;
        sd_event_source *tftp_source;
        struct TftpTransfer *transfers;
        unsigned n_transfers;

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

        /* watch.c: the streams, and the one subscription to the controller's changes they share. */
        sd_bus_slot *changes;
        struct Hashmap *watched; /* object path → first stream following it */
        struct Watch *watches;   /* every stream */
        unsigned n_watches;
} Bridge;

/* server.c: the HTTPS listener, and the plain HTTP one if there is one. */
int server_start(Bridge *b);
void server_stop(Bridge *b);

/* tftp.c: TFTP on tftp_fd, if there is one. */
int tftp_start(Bridge *b);
void tftp_stop(Bridge *b);

/* watch.c: one subscription to the controller's PropertiesChanged signals, for the CA's CRL and every
 * stream; and checking the streams' certificates again. */
int watch_subscribe(Bridge *b);
void watch_unsubscribe(Bridge *b);
void watch_check_certificates(Bridge *b);

/* trust.c: the CA and CRL from the controller. */
int trust_load(Bridge *b);
