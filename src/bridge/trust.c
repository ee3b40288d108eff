/* SPDX-License-Identifier: MIT */
/* The CA certificate and CRL, read from the controller's CertificateAuthority object and re-read when the
 * CRL changes, and the check of a node's certificate against them. */
#include <gnutls/gnutls.h>

#include "bridge.h"
#include "log.h"
#include "util.h"

#define DEST "org.pureboot.Controller1"
#define CA_PATH "/org/pureboot/Controller1/ca"
#define CA_IFACE "org.pureboot.Controller1.CertificateAuthority"

static int read_property(Bridge *b, const char *name, char **ret) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        int r = sd_bus_get_property_string(b->bus, DEST, CA_PATH, CA_IFACE, name, &error, ret);
        if (r < 0)
                return log_error_errno(r, "Failed to read the CA's %s from the controller: %s", name,
                                       error.message ?: strerror(-r));
        return 0;
}

int trust_load(Bridge *b) {
        _cleanup_free_ char *ca = NULL, *crl = NULL;
        gnutls_x509_trust_list_t tl;
        int r;

        r = read_property(b, "Certificate", &ca);
        if (r >= 0)
                r = read_property(b, "CRL", &crl);
        if (r < 0)
                return r;
        if (gnutls_x509_trust_list_init(&tl, 0) < 0)
                return -ENOMEM;
        gnutls_datum_t cad = { (unsigned char *) ca, (unsigned) strlen(ca) };
        gnutls_datum_t crld = { (unsigned char *) crl, (unsigned) strlen(crl) };
        r = gnutls_x509_trust_list_add_trust_mem(tl, &cad, &crld, GNUTLS_X509_FMT_PEM, 0, 0);
        if (r <= 0) {
                gnutls_x509_trust_list_deinit(tl, 1);
                return log_error_errno(EBADMSG, "The controller's CA certificate or CRL does not parse.");
        }
        if (b->trust)
                gnutls_x509_trust_list_deinit(b->trust, 1);
        b->trust = tl;
        /* Connections verified under the old list verify again on their next request. */
        b->trust_generation++;
        gnutls_x509_crt_t crt;
        uint8_t digest[32];
        size_t size = sizeof(digest);
        if (gnutls_x509_crt_init(&crt) >= 0) {
                if (gnutls_x509_crt_import(crt, &cad, GNUTLS_X509_FMT_PEM) >= 0 &&
                    gnutls_x509_crt_get_fingerprint(crt, GNUTLS_DIG_SHA256, digest, &size) >= 0) {
                        free(b->ca_fingerprint);
                        b->ca_fingerprint = hexmem(digest, size);
                }
                gnutls_x509_crt_deinit(crt);
        }
        if (!b->ca_fingerprint)
                return log_error_errno(EBADMSG, "The controller's CA certificate does not parse.");
        free(b->ca_pem);
        free(b->crl_pem);
        b->ca_pem = TAKE_PTR(ca);
        b->crl_pem = TAKE_PTR(crl);
        return 0;
}

int trust_verify(Bridge *b, const gnutls_datum_t *der, char **ret_cn, const char **ret_reason) {
        gnutls_x509_crt_t crt;
        unsigned status = 0;
        char cn[256];
        size_t size = sizeof(cn);
        int r;

        if (gnutls_x509_crt_init(&crt) < 0)
                return -ENOMEM;
        r = gnutls_x509_crt_import(crt, der, GNUTLS_X509_FMT_DER);
        if (r >= 0)
                r = gnutls_x509_trust_list_verify_crt2(b->trust, &crt, 1, NULL, 0, 0, &status, NULL);
        if (r >= 0 && status == 0)
                r = gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0, cn, &size);
        gnutls_x509_crt_deinit(crt);
        if (r < 0 || status != 0) {
                *ret_reason = status & GNUTLS_CERT_REVOKED     ? "the client certificate is revoked"
                              : status & GNUTLS_CERT_EXPIRED   ? "the client certificate has expired"
                              : status & GNUTLS_CERT_NOT_ACTIVATED ? "the client certificate is not valid yet"
                                                                  : "the client certificate was not issued by "
                                                                    "the PureBoot CA";
                return -EPERM;
        }
        *ret_cn = strdup(cn);
        return *ret_cn ? 0 : -ENOMEM;
}
