/* SPDX-License-Identifier: MIT */
/* The certificate authority: its key and certificate under the state directory, CSR signing and the CRL. */
#pragma once

#include "macro.h"
#include "store.h"

typedef struct CA CA;

typedef enum CertRole {
        CERT_ROLE_NODE,   /* node-<id>: client and server */
        CERT_ROLE_SOURCE, /* clone-<session>-source: serves the disk */
        CERT_ROLE_TARGET, /* clone-<session>-target: fetches it */
        CERT_ROLE_SERVER, /* the bridge */
        _CERT_ROLE_MAX,
} CertRole;

const char *cert_role_to_string(CertRole r);
int cert_role_from_string(const char *s);

typedef struct IssuedCertificate {
        char *pem, *serial; /* serial: lowercase hex */
        uint64_t not_before, not_after;
} IssuedCertificate;

void issued_certificate_done(IssuedCertificate *c);

typedef struct RevokedSerial {
        const char *serial;
        uint64_t revoked_at;
} RevokedSerial;

/* Loads dir/ca.crt and dir/ca.key, or creates both (algorithm: ecdsa-p256, rsa-2048, rsa-4096). */
int ca_load_or_create(const char *dir, const char *algorithm, unsigned validity_years, CA **ret);
CA *ca_free(CA *ca);

const char *ca_certificate_pem(const CA *ca);
const char *ca_fingerprint(const CA *ca); /* SHA-256 of the DER certificate, lowercase hex */
const char *ca_algorithm(const CA *ca);
uint64_t ca_not_after(const CA *ca);
const char *ca_crl_pem(const CA *ca);

/* Signs a PKCS#10 request: its self-signature must verify; only its public key is used, subject and
 * extensions are ours. Each of ips (a NULL-terminated list, may be NULL) becomes an IP SAN. -EBADMSG:
 * unparsable; -EKEYREJECTED: bad signature or weak key; -EINVAL: bad cn or ip. */
int ca_sign_request(CA *ca, const char *csr_pem, CertRole role, const char *cn, const char *const *ips,
                    uint64_t validity_usec, IssuedCertificate *ret);
/* The bridge's server certificate, for 30 days: hostname and addresses (those nodes reach it at) as its
 * names. Recorded in store like every certificate issued. */
int ca_sign_server(CA *ca, Store *store, const char *csr_pem, const char *hostname, char **addresses,
                   char **ret_pem);
/* Re-signs the CRL with these revoked serials. */
int ca_update_crl(CA *ca, const RevokedSerial *revoked, size_t n);
