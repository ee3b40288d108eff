/* SPDX-License-Identifier: MIT */
/* GnuTLS chores shared by the bridge and the agent: making a key and its certificate request, building a
 * trust list from our CA, checking a peer's certificate against it, and fingerprints. */
#pragma once

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "macro.h"

/* A new ECDSA P-256 key and a PKCS#10 request for it naming cn, both PEM. */
int tls_make_key_and_request(const char *cn, char **ret_key_pem, char **ret_csr_pem);

/* A trust list holding the CA certificate and, if given, its CRL (both PEM). */
int tls_trust_new(const char *ca_pem, const char *crl_pem, gnutls_x509_trust_list_t *ret);

/* Verifies a DER certificate against the trust list and for a purpose (GNUTLS_KP_TLS_WWW_CLIENT for a
 * peer that connected to us, GNUTLS_KP_TLS_WWW_SERVER for one we connected to); returns its CN (malloc'd),
 * and its IP addresses (a NUL-separated list ending in an empty string, malloc'd) if ret_ips is given; or
 * -EPERM with a reason a person can act on. */
int tls_verify_peer(gnutls_x509_trust_list_t trust, const gnutls_datum_t *der, const char *purpose,
                    char **ret_cn, char **ret_ips, const char **ret_reason);

/* The SHA-256 fingerprint of the first certificate in a PEM text, as lowercase hex. */
/* The serial of a DER certificate, as lowercase hex (as the CA writes it). */
int tls_certificate_serial(const gnutls_datum_t *der, char **ret);
int tls_fingerprint_pem(const char *pem, char **ret_hex);
