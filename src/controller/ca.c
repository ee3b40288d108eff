/* SPDX-License-Identifier: MIT */
/* The certificate authority. The key is generated here, written with mode 0600 atomically, and never
 * leaves this process; certificates are minted from CSRs whose public key is the only thing we take. */
#include <assert.h>
#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <sys/stat.h>
#include <time.h>

#include "address.h"
#include "ca.h"
#include "log.h"
#include "util.h"

struct CA {
        gnutls_x509_crt_t crt;
        gnutls_x509_privkey_t key;
        char *cert_pem, *fingerprint, *algorithm, *crl_pem;
        uint64_t not_after;
};

static const char *const role_names[_CERT_ROLE_MAX] = {
        [CERT_ROLE_NODE] = "node",
        [CERT_ROLE_SOURCE] = "source",
        [CERT_ROLE_TARGET] = "target",
        [CERT_ROLE_SERVER] = "server",
};

const char *cert_role_to_string(CertRole r) {
        return r < _CERT_ROLE_MAX ? role_names[r] : NULL;
}

int cert_role_from_string(const char *s) {
        for (size_t i = 0; s && i < _CERT_ROLE_MAX; i++)
                if (streq(s, role_names[i]))
                        return (int) i;
        return -EINVAL;
}

void issued_certificate_done(IssuedCertificate *c) {
        free(c->pem);
        free(c->serial);
        *c = (IssuedCertificate){};
}

static int gnutls_to_errno(int g) {
        switch (g) {
        case GNUTLS_E_MEMORY_ERROR:
                return -ENOMEM;
        case GNUTLS_E_BASE64_DECODING_ERROR:
        case GNUTLS_E_ASN1_DER_ERROR:
        case GNUTLS_E_ASN1_ELEMENT_NOT_FOUND:
        case GNUTLS_E_BASE64_UNEXPECTED_HEADER_ERROR:
                return -EBADMSG;
        default:
                return -EIO;
        }
}

#define GNUTLS_CHECK(expr, what)                                                                            \
        do {                                                                                                \
                int _g = (expr);                                                                            \
                if (_g < 0) {                                                                               \
                        log_debug("GnuTLS: %s failed: %s", (what), gnutls_strerror(_g));                    \
                        return gnutls_to_errno(_g);                                                         \
                }                                                                                           \
        } while (0)

static int random_serial(uint8_t serial[static 16]) {
        GNUTLS_CHECK(gnutls_rnd(GNUTLS_RND_NONCE, serial, 16), "random serial");
        /* Positive, and with a non-zero first byte so its DER form keeps all 16 bytes. */
        serial[0] = (uint8_t) ((serial[0] & 0x3f) | 0x40);
        return 0;
}

static int export_pem(int (*export2)(void *, gnutls_x509_crt_fmt_t, gnutls_datum_t *), void *obj,
                      char **ret) {
        gnutls_datum_t d = {};
        GNUTLS_CHECK(export2(obj, GNUTLS_X509_FMT_PEM, &d), "PEM export");
        char *s = strndup((const char *) d.data, d.size);
        gnutls_free(d.data);
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

static int crt_export_pem(gnutls_x509_crt_t crt, char **ret) {
        return export_pem((int (*)(void *, gnutls_x509_crt_fmt_t, gnutls_datum_t *)) gnutls_x509_crt_export2,
                          crt, ret);
}

static int compute_metadata(CA *ca) {
        uint8_t digest[32];
        size_t size = sizeof(digest);
        int r;

        r = crt_export_pem(ca->crt, &ca->cert_pem);
        if (r < 0)
                return r;
        GNUTLS_CHECK(gnutls_x509_crt_get_fingerprint(ca->crt, GNUTLS_DIG_SHA256, digest, &size),
                     "fingerprint");
        ca->fingerprint = hexmem(digest, size);
        if (!ca->fingerprint)
                return -ENOMEM;
        ca->not_after = (uint64_t) gnutls_x509_crt_get_expiration_time(ca->crt) * USEC_PER_SEC;

        unsigned bits = 0;
        int pk = gnutls_x509_privkey_get_pk_algorithm2(ca->key, &bits);
        if (pk == GNUTLS_PK_ECDSA)
                r = asprintf(&ca->algorithm, "ecdsa-p%u", bits);
        else
                r = asprintf(&ca->algorithm, "%s-%u", pk == GNUTLS_PK_RSA ? "rsa" : "unknown", bits);
        return r < 0 ? -ENOMEM : 0;
}

static int generate(CA *ca, const char *algorithm, unsigned validity_years) {
        uint8_t serial[16], keyid[64];
        size_t keyid_size = sizeof(keyid);
        time_t now = time(NULL);
        int r;

        GNUTLS_CHECK(gnutls_x509_privkey_init(&ca->key), "key init");
        if (streq(algorithm, "ecdsa-p256"))
                GNUTLS_CHECK(gnutls_x509_privkey_generate2(ca->key, GNUTLS_PK_ECDSA,
                                                           GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1),
                                                           0, NULL, 0),
                             "ECDSA key generation");
        else if (streq(algorithm, "rsa-2048") || streq(algorithm, "rsa-4096"))
                GNUTLS_CHECK(gnutls_x509_privkey_generate2(ca->key, GNUTLS_PK_RSA,
                                                           streq(algorithm, "rsa-2048") ? 2048 : 4096, 0,
                                                           NULL, 0),
                             "RSA key generation");
        else
                return -EINVAL;

        r = random_serial(serial);
        if (r < 0)
                return r;
        GNUTLS_CHECK(gnutls_x509_crt_init(&ca->crt), "certificate init");
        GNUTLS_CHECK(gnutls_x509_crt_set_version(ca->crt, 3), "version");
        GNUTLS_CHECK(gnutls_x509_crt_set_serial(ca->crt, serial, sizeof(serial)), "serial");
        GNUTLS_CHECK(
                gnutls_x509_crt_set_dn_by_oid(ca->crt, GNUTLS_OID_X520_COMMON_NAME, 0, "PureBoot CA", 11),
                "CN");
        GNUTLS_CHECK(
                gnutls_x509_crt_set_dn_by_oid(ca->crt, GNUTLS_OID_X520_ORGANIZATION_NAME, 0, "PureBoot", 8),
                "O");
        GNUTLS_CHECK(gnutls_x509_crt_set_activation_time(ca->crt, now - 60), "activation time");
        GNUTLS_CHECK(
                gnutls_x509_crt_set_expiration_time(ca->crt, now + (time_t) validity_years * 365 * 86400 +
                                                                     (time_t) (validity_years / 4) * 86400),
                "expiration time");
        GNUTLS_CHECK(gnutls_x509_crt_set_key(ca->crt, ca->key), "key");
        /* CA:TRUE, pathlen 0: it signs leaf certificates only. Both extensions are marked critical. */
        GNUTLS_CHECK(gnutls_x509_crt_set_basic_constraints(ca->crt, 1, 0), "basic constraints");
        GNUTLS_CHECK(gnutls_x509_crt_set_key_usage(ca->crt, GNUTLS_KEY_KEY_CERT_SIGN | GNUTLS_KEY_CRL_SIGN),
                     "key usage");
        GNUTLS_CHECK(gnutls_x509_privkey_get_key_id(ca->key, GNUTLS_KEYID_USE_SHA1, keyid, &keyid_size),
                     "key id");
        GNUTLS_CHECK(gnutls_x509_crt_set_subject_key_id(ca->crt, keyid, keyid_size), "subject key id");
        GNUTLS_CHECK(gnutls_x509_crt_sign2(ca->crt, ca->crt, ca->key, GNUTLS_DIG_SHA256, 0),
                     "self-signature");
        return 0;
}

static int write_files(CA *ca, const char *key_path, const char *crt_path) {
        _cleanup_free_ char *key_pem = NULL, *crt_pem = NULL;
        int r;

        r = export_pem(
                (int (*)(void *, gnutls_x509_crt_fmt_t, gnutls_datum_t *)) gnutls_x509_privkey_export2,
                ca->key, &key_pem);
        if (r >= 0)
                r = crt_export_pem(ca->crt, &crt_pem);
        if (r < 0)
                return r;
        /* Key first: a certificate without its key on disk would be useless at the next start. */
        r = write_file_atomic(key_path, key_pem, strlen(key_pem), 0600);
        if (r < 0)
                return log_error_errno(r, "Failed to write %s: %m", key_path);
        explicit_bzero(key_pem, strlen(key_pem));
        r = write_file_atomic(crt_path, crt_pem, strlen(crt_pem), 0644);
        if (r < 0)
                return log_error_errno(r, "Failed to write %s: %m", crt_path);
        return 0;
}

static int load(CA *ca, const char *key_path, const char *crt_path) {
        _cleanup_free_ char *key_pem = NULL, *crt_pem = NULL;
        uint8_t id1[64], id2[64];
        size_t s1 = sizeof(id1), s2 = sizeof(id2);
        struct stat st;
        int r;

        if (stat(key_path, &st) < 0)
                return -errno;
        if (st.st_mode & 0077) {
                log_warning("%s was readable by others (mode %04o); setting mode 0600.", key_path,
                            (unsigned) (st.st_mode & 07777));
                if (chmod(key_path, 0600) < 0)
                        return log_error_errno(errno, "Failed to restrict %s: %m", key_path);
        }
        r = read_full_file(key_path, &key_pem, NULL);
        if (r < 0)
                return r;
        r = read_full_file(crt_path, &crt_pem, NULL);
        if (r < 0)
                return r;

        gnutls_datum_t kd = { (unsigned char *) key_pem, (unsigned) strlen(key_pem) };
        gnutls_datum_t cd = { (unsigned char *) crt_pem, (unsigned) strlen(crt_pem) };
        GNUTLS_CHECK(gnutls_x509_privkey_init(&ca->key), "key init");
        GNUTLS_CHECK(gnutls_x509_privkey_import(ca->key, &kd, GNUTLS_X509_FMT_PEM), "CA key import");
        explicit_bzero(key_pem, strlen(key_pem));
        GNUTLS_CHECK(gnutls_x509_crt_init(&ca->crt), "certificate init");
        GNUTLS_CHECK(gnutls_x509_crt_import(ca->crt, &cd, GNUTLS_X509_FMT_PEM), "CA certificate import");
        GNUTLS_CHECK(gnutls_x509_crt_get_key_id(ca->crt, GNUTLS_KEYID_USE_SHA256, id1, &s1), "key id");
        GNUTLS_CHECK(gnutls_x509_privkey_get_key_id(ca->key, GNUTLS_KEYID_USE_SHA256, id2, &s2), "key id");
        if (s1 != s2 || memcmp(id1, id2, s1) != 0)
                return log_error_errno(EBADMSG, "%s does not belong to %s; restore the matching pair.",
                                       key_path, crt_path);
        return 0;
}

int ca_load_or_create(const char *dir, const char *algorithm, unsigned validity_years, CA **ret) {
        _cleanup_free_ char *key_path = NULL, *crt_path = NULL;
        CA *ca;
        int r;

        if (asprintf(&key_path, "%s/ca.key", dir) < 0 || asprintf(&crt_path, "%s/ca.crt", dir) < 0)
                return -ENOMEM;
        r = mkdir_p(dir, 0700);
        if (r < 0)
                return log_error_errno(r, "Failed to create %s: %m", dir);
        ca = calloc(1, sizeof(CA));
        if (!ca)
                return -ENOMEM;

        if (access(crt_path, F_OK) == 0 && access(key_path, F_OK) == 0)
                r = load(ca, key_path, crt_path);
        else {
                log_info("Creating the PureBoot CA (%s, %u years) in %s.", algorithm, validity_years, dir);
                r = generate(ca, algorithm, validity_years);
                if (r >= 0)
                        r = write_files(ca, key_path, crt_path);
        }
        if (r >= 0)
                r = compute_metadata(ca);
        if (r >= 0)
                r = ca_update_crl(ca, NULL, 0);
        if (r < 0) {
                ca_free(ca);
                return log_error_errno(r, "Failed to set up the CA in %s: %m", dir);
        }
        *ret = ca;
        return 0;
}

CA *ca_free(CA *ca) {
        if (!ca)
                return NULL;
        if (ca->crt)
                gnutls_x509_crt_deinit(ca->crt);
        if (ca->key)
                gnutls_x509_privkey_deinit(ca->key);
        free(ca->cert_pem);
        free(ca->fingerprint);
        free(ca->algorithm);
        free(ca->crl_pem);
        free(ca);
        return NULL;
}

const char *ca_certificate_pem(const CA *ca) {
        return ca->cert_pem;
}
const char *ca_fingerprint(const CA *ca) {
        return ca->fingerprint;
}
const char *ca_algorithm(const CA *ca) {
        return ca->algorithm;
}
uint64_t ca_not_after(const CA *ca) {
        return ca->not_after;
}
const char *ca_crl_pem(const CA *ca) {
        return ca->crl_pem;
}

static bool cn_is_valid(const char *cn) {
        /* Our CNs are node-<id> and clone-<id>-<role>, and the bridge's host name: DNS-name shaped. */
        return hostname_is_valid(cn) && strlen(cn) <= 64;
}

static int set_san_ip(gnutls_x509_crt_t crt, const char *ip) {
        uint8_t buf[16];
        int family;
        if (ip_address_parse(ip, &family, buf) < 0)
                return -EINVAL;
        unsigned size = family == AF_INET ? 4 : 16;
        GNUTLS_CHECK(gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_IPADDRESS, buf, size,
                                                          GNUTLS_FSAN_APPEND),
                     "IP SAN");
        return 0;
}

/* What the CA signs: RSA of 2048 bits or more, ECDSA on P-256 or a larger NIST curve, Ed25519, Ed448. */
static int check_public_key(gnutls_pubkey_t pub) {
        gnutls_ecc_curve_t curve;
        unsigned bits = 0;

        switch (gnutls_pubkey_get_pk_algorithm(pub, &bits)) {
        case GNUTLS_PK_RSA:
                return bits >= 2048 ? 0 : -EKEYREJECTED;
        case GNUTLS_PK_ECDSA:
                if (gnutls_pubkey_export_ecc_raw2(pub, &curve, NULL, NULL, 0) < 0)
                        return -EKEYREJECTED;
                return curve == GNUTLS_ECC_CURVE_SECP256R1 || curve == GNUTLS_ECC_CURVE_SECP384R1 ||
                                       curve == GNUTLS_ECC_CURVE_SECP521R1
                               ? 0
                               : -EKEYREJECTED;
        case GNUTLS_PK_EDDSA_ED25519:
        case GNUTLS_PK_EDDSA_ED448:
                return 0;
        default:
                return -EKEYREJECTED;
        }
}

/* node-… and clone-… are the names of node and session identities, which only the controller gives out:
 * a server certificate (the bridge's) with such a name could pass for one. */
static bool name_is_for_role(const char *cn, CertRole role) {
        bool identity = startswith(cn, "node-") || startswith(cn, "clone-");
        return role == CERT_ROLE_SERVER ? !identity : true;
}

static int sign_with(CA *ca, gnutls_x509_crt_t crt, gnutls_pubkey_t pub, CertRole role, const char *cn,
                     const char *const *ips, uint64_t validity_usec, IssuedCertificate *ret) {
        uint8_t serial[16], keyid[64];
        size_t keyid_size = sizeof(keyid);
        unsigned bits = 0, usage = GNUTLS_KEY_DIGITAL_SIGNATURE;
        time_t now = time(NULL);
        time_t not_after = now + (time_t) (validity_usec / USEC_PER_SEC);
        int r;

        r = random_serial(serial);
        if (r < 0)
                return r;
        GNUTLS_CHECK(gnutls_x509_crt_set_version(crt, 3), "version");
        GNUTLS_CHECK(gnutls_x509_crt_set_serial(crt, serial, sizeof(serial)), "serial");
        GNUTLS_CHECK(gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, cn,
                                                   (unsigned) strlen(cn)),
                     "CN");
        GNUTLS_CHECK(gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_ORGANIZATION_NAME, 0, "PureBoot", 8),
                     "O");
        /* Five minutes of slack for nodes whose clock is a little behind ours. */
        GNUTLS_CHECK(gnutls_x509_crt_set_activation_time(crt, now - 300), "activation time");
        GNUTLS_CHECK(gnutls_x509_crt_set_expiration_time(crt, not_after), "expiration time");
        GNUTLS_CHECK(gnutls_x509_crt_set_pubkey(crt, pub), "public key");
        GNUTLS_CHECK(gnutls_x509_crt_set_basic_constraints(crt, 0, -1), "basic constraints");
        if (gnutls_pubkey_get_pk_algorithm(pub, &bits) == GNUTLS_PK_RSA)
                usage |= GNUTLS_KEY_KEY_ENCIPHERMENT;
        GNUTLS_CHECK(gnutls_x509_crt_set_key_usage(crt, usage), "key usage");
        /* Peers check these (tls_verify_peer): the bridge and the source take clients, the target and the
         * agents servers. A source is both: it serves its disk and calls the bridge; so is a target, which
         * in a chain serves the next one what it wrote. */
        GNUTLS_CHECK(gnutls_x509_crt_set_key_purpose_oid(crt, GNUTLS_KP_TLS_WWW_SERVER, 0), "EKU server");
        if (role != CERT_ROLE_SERVER)
                GNUTLS_CHECK(gnutls_x509_crt_set_key_purpose_oid(crt, GNUTLS_KP_TLS_WWW_CLIENT, 0),
                             "EKU client");
        GNUTLS_CHECK(gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_DNSNAME, cn, (unsigned) strlen(cn),
                                                          GNUTLS_FSAN_APPEND),
                     "DNS SAN");
        for (const char *const *ip = ips; ip && *ip; ip++) {
                r = set_san_ip(crt, *ip);
                if (r < 0)
                        return r;
        }
        GNUTLS_CHECK(gnutls_pubkey_get_key_id(pub, GNUTLS_KEYID_USE_SHA1, keyid, &keyid_size), "key id");
        GNUTLS_CHECK(gnutls_x509_crt_set_subject_key_id(crt, keyid, keyid_size), "subject key id");
        keyid_size = sizeof(keyid);
        GNUTLS_CHECK(gnutls_x509_crt_get_subject_key_id(ca->crt, keyid, &keyid_size, NULL), "CA key id");
        GNUTLS_CHECK(gnutls_x509_crt_set_authority_key_id(crt, keyid, keyid_size), "authority key id");
        GNUTLS_CHECK(gnutls_x509_crt_sign2(crt, ca->crt, ca->key, GNUTLS_DIG_SHA256, 0), "signature");

        IssuedCertificate c = {
                .not_before = (uint64_t) (now - 300) * USEC_PER_SEC,
                .not_after = (uint64_t) not_after * USEC_PER_SEC,
        };
        c.serial = hexmem(serial, sizeof(serial));
        if (!c.serial)
                return -ENOMEM;
        r = crt_export_pem(crt, &c.pem);
        if (r < 0) {
                issued_certificate_done(&c);
                return r;
        }
        *ret = c;
        return 0;
}

int ca_sign_request(CA *ca, const char *csr_pem, CertRole role, const char *cn, const char *const *ips,
                    uint64_t validity_usec, IssuedCertificate *ret) {
        gnutls_x509_crq_t crq = NULL;
        gnutls_pubkey_t pub = NULL;
        gnutls_x509_crt_t crt = NULL;
        int r;

        if (role >= _CERT_ROLE_MAX || !cn_is_valid(cn) || !name_is_for_role(cn, role) ||
            validity_usec < USEC_PER_SEC)
                return -EINVAL;
        if (!csr_pem || strlen(csr_pem) > 65536)
                return -EBADMSG;

        gnutls_datum_t d = { (unsigned char *) csr_pem, (unsigned) strlen(csr_pem) };
        if (gnutls_x509_crq_init(&crq) < 0)
                return -ENOMEM;
        if (gnutls_x509_crq_import(crq, &d, GNUTLS_X509_FMT_PEM) < 0)
                r = -EBADMSG;
        else if (gnutls_x509_crq_verify(crq, 0) < 0)
                r = -EKEYREJECTED; /* whoever sent it does not hold the private key */
        else if (gnutls_pubkey_init(&pub) < 0 || gnutls_x509_crt_init(&crt) < 0)
                r = -ENOMEM;
        else if (gnutls_pubkey_import_x509_crq(pub, crq, 0) < 0)
                r = -EBADMSG;
        else
                r = check_public_key(pub);
        if (r >= 0)
                r = sign_with(ca, crt, pub, role, cn, ips, validity_usec, ret);

        if (crt)
                gnutls_x509_crt_deinit(crt);
        if (pub)
                gnutls_pubkey_deinit(pub);
        gnutls_x509_crq_deinit(crq);
        return r;
}

static int unhex(const char *s, uint8_t *buf, size_t max, size_t *ret) {
        size_t n = strlen(s);
        if (n % 2 || n / 2 > max)
                return -EINVAL;
        for (size_t i = 0; i < n / 2; i++) {
                unsigned v;
                if (sscanf(s + 2 * i, "%2x", &v) != 1)
                        return -EINVAL;
                buf[i] = (uint8_t) v;
        }
        *ret = n / 2;
        return 0;
}

int ca_update_crl(CA *ca, const RevokedSerial *revoked, size_t n) {
        gnutls_x509_crl_t crl;
        uint8_t keyid[64], serial[32];
        size_t keyid_size = sizeof(keyid), serial_size;
        time_t now = time(NULL);
        char *pem = NULL;
        int r = 0;

        GNUTLS_CHECK(gnutls_x509_crl_init(&crl), "CRL init");
        if (gnutls_x509_crl_set_version(crl, 2) < 0 || gnutls_x509_crl_set_this_update(crl, now) < 0 ||
            gnutls_x509_crl_set_next_update(crl, now + 7 * 86400) < 0)
                r = -EIO;
        for (size_t i = 0; r >= 0 && i < n; i++) {
                r = unhex(revoked[i].serial, serial, sizeof(serial), &serial_size);
                if (r >= 0 &&
                    gnutls_x509_crl_set_crt_serial(crl, serial, serial_size,
                                                   (time_t) (revoked[i].revoked_at / USEC_PER_SEC)) < 0)
                        r = -EIO;
        }
        if (r >= 0 && gnutls_x509_crt_get_subject_key_id(ca->crt, keyid, &keyid_size, NULL) >= 0)
                (void) gnutls_x509_crl_set_authority_key_id(crl, keyid, keyid_size);
        if (r >= 0 && gnutls_x509_crl_sign2(crl, ca->crt, ca->key, GNUTLS_DIG_SHA256, 0) < 0)
                r = -EIO;
        if (r >= 0)
                r = export_pem(
                        (int (*)(void *, gnutls_x509_crt_fmt_t, gnutls_datum_t *)) gnutls_x509_crl_export2,
                        crl, &pem);
        gnutls_x509_crl_deinit(crl);
        if (r < 0)
                return r;
        free(ca->crl_pem);
        ca->crl_pem = pem;
        return 0;
}

int ca_sign_server(CA *ca, Store *store, const char *csr_pem, const char *hostname, char **addresses,
                   char **ret_pem) {
        _cleanup_(issued_certificate_done) IssuedCertificate cert = {};
        int r;

        assert(ca && store && csr_pem && hostname && ret_pem);
        r = ca_sign_request(ca, csr_pem, CERT_ROLE_SERVER, hostname, (const char *const *) addresses,
                            30 * USEC_PER_DAY, &cert);
        if (r < 0)
                return r;
        r = store_certificate_insert(store, cert.serial, hostname, cert_role_to_string(CERT_ROLE_SERVER),
                                     NULL, NULL, cert.not_before, cert.not_after);
        if (r < 0)
                return r;
        *ret_pem = TAKE_PTR(cert.pem);
        return 0;
}
