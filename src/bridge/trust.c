/* SPDX-License-Identifier: MIT */
/* The CA certificate and CRL, read from the controller's CertificateAuthority object and re-read when the
 * CRL changes; client certificates are checked against them (tls_verify_peer). */
#include <gnutls/gnutls.h>

#include "bridge.h"
#include "log.h"
#include "pureboot-bus.h"
#include "tls.h"
#include "util.h"

static int read_property(Bridge *b, const char *name, char **ret) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        int r = sd_bus_get_property_string(b->bus, PB_BUS_NAME, PB_CA_PATH, PB_IFACE("CertificateAuthority"),
                                           name, &error, ret);
        if (r < 0)
                return log_error_errno(r, "Failed to read the CA's %s from the controller: %s", name,
                                       error.message ?: strerror(-r));
        return 0;
}

int trust_load(Bridge *b) {
        _cleanup_free_ char *ca = NULL, *crl = NULL, *fingerprint = NULL;
        gnutls_x509_trust_list_t tl;
        int r;

        r = read_property(b, "Certificate", &ca);
        if (r >= 0)
                r = read_property(b, "CRL", &crl);
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
