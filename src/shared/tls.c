/* SPDX-License-Identifier: MIT */
/* GnuTLS chores shared by the bridge and the agent. */
#include <arpa/inet.h>

#include "tls.h"
#include "util.h"

static int export_pem(int (*export2)(void *, gnutls_x509_crt_fmt_t, gnutls_datum_t *), void *obj, char **ret) {
        gnutls_datum_t d = {};
        if (export2(obj, GNUTLS_X509_FMT_PEM, &d) < 0)
                return -EIO;
        *ret = strndup((const char *) d.data, d.size);
        gnutls_free(d.data);
        return *ret ? 0 : -ENOMEM;
}

int tls_make_key_and_request(const char *cn, char **ret_key_pem, char **ret_csr_pem) {
        gnutls_x509_privkey_t key = NULL;
        gnutls_x509_crq_t crq = NULL;
        _cleanup_free_ char *key_pem = NULL, *csr_pem = NULL;
        int r = -EIO;

        if (gnutls_x509_privkey_init(&key) >= 0 &&
            gnutls_x509_privkey_generate2(key, GNUTLS_PK_ECDSA, GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0,
                                          NULL, 0) >= 0 &&
            gnutls_x509_crq_init(&crq) >= 0 &&
            gnutls_x509_crq_set_dn_by_oid(crq, GNUTLS_OID_X520_COMMON_NAME, 0, cn, (unsigned) strlen(cn)) >= 0 &&
            gnutls_x509_crq_set_key(crq, key) >= 0 && gnutls_x509_crq_sign2(crq, key, GNUTLS_DIG_SHA256, 0) >= 0)
                r = export_pem((int (*)(void *, gnutls_x509_crt_fmt_t, gnutls_datum_t *)) gnutls_x509_crq_export2,
                               crq, &csr_pem);
        if (r >= 0)
                r = export_pem((int (*)(void *, gnutls_x509_crt_fmt_t,
                                        gnutls_datum_t *)) gnutls_x509_privkey_export2,
                               key, &key_pem);
        if (crq)
                gnutls_x509_crq_deinit(crq);
        if (key)
                gnutls_x509_privkey_deinit(key);
        if (r < 0)
                return r;
        *ret_key_pem = TAKE_PTR(key_pem);
        *ret_csr_pem = TAKE_PTR(csr_pem);
        return 0;
}

int tls_trust_new(const char *ca_pem, const char *crl_pem, gnutls_x509_trust_list_t *ret) {
        gnutls_x509_trust_list_t tl;
        gnutls_datum_t cad = { (unsigned char *) ca_pem, (unsigned) strlen(ca_pem) };
        gnutls_datum_t crld = { (unsigned char *) crl_pem, crl_pem ? (unsigned) strlen(crl_pem) : 0 };

        if (gnutls_x509_trust_list_init(&tl, 0) < 0)
                return -ENOMEM;
        if (gnutls_x509_trust_list_add_trust_mem(tl, &cad, crl_pem ? &crld : NULL, GNUTLS_X509_FMT_PEM, 0, 0) <= 0) {
                gnutls_x509_trust_list_deinit(tl, 1);
                return -EBADMSG;
        }
        *ret = tl;
        return 0;
}

/* The certificate's IP SANs in text form, NUL-separated, ending in an empty string. */
static char *ip_sans(gnutls_x509_crt_t crt) {
        _cleanup_free_ char *list = strdup("");
        size_t len = 0;

        for (unsigned i = 0; list; i++) {
                unsigned char ip[1024]; /* large enough for the DNS names before the addresses */
                char text[INET6_ADDRSTRLEN];
                size_t size = sizeof(ip);
                int type = gnutls_x509_crt_get_subject_alt_name(crt, i, ip, &size, NULL);
                if (type == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE)
                        break;
                if (type < 0)
                        continue;
                if (type != GNUTLS_SAN_IPADDRESS || (size != 4 && size != 16) ||
                    !inet_ntop(size == 4 ? AF_INET : AF_INET6, ip, text, sizeof(text)))
                        continue;
                char *n = realloc(list, len + strlen(text) + 2);
                if (!n)
                        return NULL;
                list = n;
                strcpy(list + len, text);
                len += strlen(text) + 1;
                list[len] = 0;
        }
        return TAKE_PTR(list);
}

int tls_verify_peer(gnutls_x509_trust_list_t trust, const gnutls_datum_t *der, const char *purpose,
                    char **ret_cn, char **ret_ips, const char **ret_reason) {
        gnutls_typed_vdata_st vdata = { .type = GNUTLS_DT_KEY_PURPOSE_OID,
                                        .data = (unsigned char *) purpose };
        gnutls_x509_crt_t crt;
        unsigned status = 0;
        char cn[256];
        size_t size = sizeof(cn);
        _cleanup_free_ char *ips = NULL;
        int r;

        if (gnutls_x509_crt_init(&crt) < 0)
                return -ENOMEM;
        r = gnutls_x509_crt_import(crt, der, GNUTLS_X509_FMT_DER);
        if (r >= 0)
                r = gnutls_x509_trust_list_verify_crt2(trust, &crt, 1, &vdata, 1, 0, &status, NULL);
        if (r >= 0 && status == 0)
                r = gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0, cn, &size);
        if (r >= 0 && status == 0 && ret_ips && !(ips = ip_sans(crt)))
                r = GNUTLS_E_MEMORY_ERROR;
        gnutls_x509_crt_deinit(crt);
        if (r == GNUTLS_E_MEMORY_ERROR)
                return -ENOMEM;
        if (r < 0 || status != 0) {
                *ret_reason = status & GNUTLS_CERT_REVOKED         ? "the certificate is revoked"
                              : status & GNUTLS_CERT_EXPIRED       ? "the certificate has expired"
                              : status & GNUTLS_CERT_NOT_ACTIVATED ? "the certificate is not valid yet"
                              : status & GNUTLS_CERT_PURPOSE_MISMATCH
                                      ? (streq(purpose, GNUTLS_KP_TLS_WWW_CLIENT)
                                                 ? "the certificate is not one for a client"
                                                 : "the certificate is not one for a server")
                                      : "the certificate was not issued by "
                                        "the PureBoot CA";
                return -EPERM;
        }
        *ret_cn = strdup(cn);
        if (!*ret_cn)
                return -ENOMEM;
        if (ret_ips)
                *ret_ips = TAKE_PTR(ips);
        return 0;
}

int tls_certificate_serial(const gnutls_datum_t *der, char **ret) {
        gnutls_x509_crt_t crt;
        uint8_t serial[64];
        size_t size = sizeof(serial);
        int r;

        if (gnutls_x509_crt_init(&crt) < 0)
                return -ENOMEM;
        r = gnutls_x509_crt_import(crt, der, GNUTLS_X509_FMT_DER) < 0 ||
                            gnutls_x509_crt_get_serial(crt, serial, &size) < 0
                    ? -EBADMSG
                    : 0;
        gnutls_x509_crt_deinit(crt);
        if (r < 0)
                return r;
        *ret = hexmem(serial, size);
        return *ret ? 0 : -ENOMEM;
}

int tls_fingerprint_pem(const char *pem, char **ret_hex) {
        gnutls_datum_t d = { (unsigned char *) pem, (unsigned) strlen(pem) };
        gnutls_x509_crt_t crt;
        uint8_t digest[32];
        size_t size = sizeof(digest);
        int r = -EBADMSG;

        if (gnutls_x509_crt_init(&crt) < 0)
                return -ENOMEM;
        if (gnutls_x509_crt_import(crt, &d, GNUTLS_X509_FMT_PEM) >= 0 &&
            gnutls_x509_crt_get_fingerprint(crt, GNUTLS_DIG_SHA256, digest, &size) >= 0)
                r = 0;
        gnutls_x509_crt_deinit(crt);
        if (r < 0)
                return r;
        *ret_hex = hexmem(digest, size);
        return *ret_hex ? 0 : -ENOMEM;
}
