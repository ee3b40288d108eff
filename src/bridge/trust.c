/* SPDX-License-Identifier: MIT */
/* The CA certificate and CRL, asked of the controller's Gateway (GetTrust) and asked again when it says the
 * trust changed; client certificates are checked against them (tls_verify_peer). */
#include <gnutls/gnutls.h>

#include "bridge.h"
#include "log.h"
#include "pureboot-bus.h"
#include "tls.h"
#include "util.h"

static int get_trust(Bridge *b, char **ret_ca, char **ret_crl) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *ca, *crl;
        int r;

        r = sd_bus_call_method(b->bus, PB_BUS_NAME, PB_ROOT_PATH, PB_IFACE("Gateway"), "GetTrust", &error,
                               &reply, NULL);
        if (r >= 0)
                r = sd_bus_message_read(reply, "ss", &ca, &crl);
        if (r < 0)
                return log_error_errno(r, "Failed to get the CA and CRL from the controller: %s",
                                       error.message ?: strerror(-r));
        *ret_ca = strdup(ca);
        *ret_crl = strdup(crl);
        return *ret_ca && *ret_crl ? 0 : -ENOMEM;
}

int trust_load(Bridge *b) {
        _cleanup_free_ char *ca = NULL, *crl = NULL, *fingerprint = NULL;
        gnutls_x509_trust_list_t tl;
        int r;

        r = get_trust(b, &ca, &crl);
        if (r < 0)
                return r;
        r = tls_fingerprint_pem(ca, &fingerprint);
        if (r >= 0)
                r = tls_trust_new(ca, crl, &tl);
        if (r < 0)
                return log_error_errno(r, "The controller's CA certificate or CRL does not parse.");
        if (b->trust)
                gnutls_x509_trust_list_deinit(b->trust, 1);
        b->trust = tl;
        /* Connections verified under the old list verify again on their next request. */
        b->trust_generation++;
        free(b->ca_fingerprint);
        b->ca_fingerprint = TAKE_PTR(fingerprint);
        free(b->ca_pem);
        free(b->crl_pem);
        b->ca_pem = TAKE_PTR(ca);
        b->crl_pem = TAKE_PTR(crl);
        return 0;
}
