/* SPDX-License-Identifier: MIT */
/* The CA: creation and reload, key file mode, CSR signing with our subject and extensions only, refusal of
 * forged or weak requests, certtool verification, a real mutual-TLS handshake, and the CRL. */
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "ca.h"
#include "tests.h"
#include "util.h"

static void make_key(gnutls_x509_privkey_t *key, gnutls_pk_algorithm_t pk, unsigned bits) {
        ASSERT_OK(gnutls_x509_privkey_init(key));
        ASSERT_OK(gnutls_x509_privkey_generate2(*key, pk, bits, 0, NULL, 0));
}

/* A CSR for key that asks for a subject and is signed by signer (normally the same key). */
static char *make_csr(gnutls_x509_privkey_t key, gnutls_x509_privkey_t signer, const char *cn) {
        gnutls_x509_crq_t crq;
        gnutls_datum_t d;
        ASSERT_OK(gnutls_x509_crq_init(&crq));
        ASSERT_OK(gnutls_x509_crq_set_dn_by_oid(crq, GNUTLS_OID_X520_COMMON_NAME, 0, cn,
                                                (unsigned) strlen(cn)));
        ASSERT_OK(gnutls_x509_crq_set_key(crq, key));
        ASSERT_OK(gnutls_x509_crq_sign2(crq, signer, GNUTLS_DIG_SHA256, 0));
        ASSERT_OK(gnutls_x509_crq_export2(crq, GNUTLS_X509_FMT_PEM, &d));
        char *s = strndup((char *) d.data, d.size);
        gnutls_free(d.data);
        gnutls_x509_crq_deinit(crq);
        return s;
}

static char *key_pem(gnutls_x509_privkey_t key) {
        gnutls_datum_t d;
        ASSERT_OK(gnutls_x509_privkey_export2(key, GNUTLS_X509_FMT_PEM, &d));
        char *s = strndup((char *) d.data, d.size);
        gnutls_free(d.data);
        return s;
}

static void write_file(const char *dir, const char *name, const char *text) {
        char path[512];
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        ASSERT_OK(write_file_atomic(path, text, strlen(text), 0600));
}

static void cert_cn(const char *pem, char *cn, size_t size) {
        gnutls_x509_crt_t crt;
        gnutls_datum_t d = { (unsigned char *) pem, (unsigned) strlen(pem) };
        ASSERT_OK(gnutls_x509_crt_init(&crt));
        ASSERT_OK(gnutls_x509_crt_import(crt, &d, GNUTLS_X509_FMT_PEM));
        ASSERT_OK(gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0, cn, &size));
        gnutls_x509_crt_deinit(crt);
}

static gnutls_session_t tls_session(const char *dir, const char *cert, const char *key, bool server, int fd,
                                    gnutls_certificate_credentials_t *cred) {
        char c[512], k[512], ca[512];
        gnutls_session_t s;
        snprintf(c, sizeof(c), "%s/%s", dir, cert);
        snprintf(k, sizeof(k), "%s/%s", dir, key);
        snprintf(ca, sizeof(ca), "%s/ca.crt", dir);
        ASSERT_OK(gnutls_certificate_allocate_credentials(cred));
        ASSERT_TRUE(gnutls_certificate_set_x509_trust_file(*cred, ca, GNUTLS_X509_FMT_PEM) == 1);
        ASSERT_OK(gnutls_certificate_set_x509_key_file(*cred, c, k, GNUTLS_X509_FMT_PEM));
        ASSERT_OK(gnutls_init(&s, server ? GNUTLS_SERVER : GNUTLS_CLIENT));
        ASSERT_OK(gnutls_priority_set_direct(s, "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2", NULL));
        ASSERT_OK(gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, *cred));
        gnutls_transport_set_int(s, fd);
        return s;
}

/* The source serves, the target connects; each side verifies the other against the CA. */
static void mutual_tls(const char *dir, const char *session_id) {
        char expect_source[128], expect_target[128];
        int sv[2];
        snprintf(expect_source, sizeof(expect_source), "clone-%s-source", session_id);
        snprintf(expect_target, sizeof(expect_target), "clone-%s-target", session_id);
        ASSERT_OK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv));

        pid_t pid = fork();
        ASSERT_TRUE(pid >= 0);
        if (pid == 0) {
                gnutls_certificate_credentials_t cred;
                gnutls_session_t s = tls_session(dir, "source.crt", "source.key", true, sv[1], &cred);
                unsigned status = 1;
                gnutls_certificate_server_set_request(s, GNUTLS_CERT_REQUIRE);
                if (gnutls_handshake(s) < 0)
                        _exit(10);
                if (gnutls_certificate_verify_peers3(s, expect_target, &status) < 0 || status != 0)
                        _exit(11);
                if (gnutls_record_send(s, "ok", 2) != 2)
                        _exit(12);
                gnutls_bye(s, GNUTLS_SHUT_WR);
                _exit(0);
        }
        gnutls_certificate_credentials_t cred;
        gnutls_session_t s = tls_session(dir, "target.crt", "target.key", false, sv[0], &cred);
        unsigned status = 1;
        char buf[4] = {};
        ASSERT_OK(gnutls_server_name_set(s, GNUTLS_NAME_DNS, expect_source, strlen(expect_source)));
        ASSERT_OK(gnutls_handshake(s));
        ASSERT_OK(gnutls_certificate_verify_peers3(s, expect_source, &status));
        ASSERT_INT(status, 0);
        ASSERT_INT(gnutls_record_recv(s, buf, 2), 2);
        ASSERT_STR(buf, "ok");
        int wstatus;
        ASSERT_TRUE(waitpid(pid, &wstatus, 0) == pid);
        ASSERT_INT(WEXITSTATUS(wstatus), 0);
        gnutls_deinit(s);
        gnutls_certificate_free_credentials(cred);
        close(sv[0]);
        close(sv[1]);
}

int main(void) {
        char *dir = tmpdir_new(), path[512], cn[256], cmd[2048];
        char fingerprint[128];
        gnutls_x509_privkey_t source_key, target_key, other_key, weak_key;
        IssuedCertificate source = {}, target = {};
        struct stat st;
        CA *ca;
        const char *session = "0123456789abcdef0123456789abcdef";

        gnutls_global_init();
        ASSERT_OK(ca_load_or_create(dir, "ecdsa-p256", 10, &ca));
        ASSERT_STR(ca_algorithm(ca), "ecdsa-p256");
        snprintf(fingerprint, sizeof(fingerprint), "%s", ca_fingerprint(ca));
        ASSERT_INT(strlen(fingerprint), 64);
        ASSERT_TRUE(ca_not_after(ca) > now_realtime_usec() + 9 * 365 * USEC_PER_DAY);
        snprintf(path, sizeof(path), "%s/ca.key", dir);
        ASSERT_OK(stat(path, &st));
        ASSERT_INT(st.st_mode & 0777, 0600);
        ca_free(ca);

        /* A restart loads the same CA, and repairs a key file someone made readable. */
        chmod(path, 0644);
        ASSERT_OK(ca_load_or_create(dir, "rsa-4096", 10, &ca));
        ASSERT_STR(ca_fingerprint(ca), fingerprint);
        ASSERT_OK(stat(path, &st));
        ASSERT_INT(st.st_mode & 0777, 0600);

        /* Only the public key of the request is used: the CN it asks for is ignored. */
        make_key(&source_key, GNUTLS_PK_ECDSA, GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1));
        make_key(&target_key, GNUTLS_PK_RSA, 2048);
        char *csr = make_csr(source_key, source_key, "evil-admin");
        char source_cn[128], target_cn[128];
        snprintf(source_cn, sizeof(source_cn), "clone-%s-source", session);
        snprintf(target_cn, sizeof(target_cn), "clone-%s-target", session);
        ASSERT_OK(ca_sign_request(ca, csr, CERT_ROLE_SOURCE, source_cn,
                                  (const char *const[]){ "127.0.0.1", "10.9.8.7", NULL }, 24 * USEC_PER_HOUR,
                                  &source));
        free(csr);
        cert_cn(source.pem, cn, sizeof(cn));
        ASSERT_STR(cn, source_cn);
        ASSERT_INT(strlen(source.serial), 32);
        ASSERT_TRUE(source.not_after - source.not_before <= 24 * USEC_PER_HOUR + 300 * USEC_PER_SEC);
        csr = make_csr(target_key, target_key, "whatever");
        ASSERT_OK(ca_sign_request(ca, csr, CERT_ROLE_TARGET, target_cn, NULL, 24 * USEC_PER_HOUR, &target));
        free(csr);

        /* A request signed by another key than the one it carries, a weak key, garbage, a bad IP. */
        make_key(&other_key, GNUTLS_PK_ECDSA, GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1));
        make_key(&weak_key, GNUTLS_PK_RSA, 1024);
        IssuedCertificate none = {};
        csr = make_csr(source_key, other_key, "forged");
        ASSERT_INT(ca_sign_request(ca, csr, CERT_ROLE_SOURCE, source_cn, NULL, USEC_PER_HOUR, &none),
                   -EKEYREJECTED);
        free(csr);
        csr = make_csr(weak_key, weak_key, "weak");
        ASSERT_INT(ca_sign_request(ca, csr, CERT_ROLE_NODE, "node-x", NULL, USEC_PER_HOUR, &none),
                   -EKEYREJECTED);
        ASSERT_INT(ca_sign_request(ca, csr, CERT_ROLE_NODE, "bad cn", NULL, USEC_PER_HOUR, &none), -EINVAL);
        free(csr);
        ASSERT_INT(ca_sign_request(ca, "-----BEGIN NEW CERTIFICATE REQUEST-----\nAAAA\n", CERT_ROLE_NODE,
                                   "node-x", NULL, USEC_PER_HOUR, &none),
                   -EBADMSG);
        csr = make_csr(source_key, source_key, "x");
        ASSERT_INT(ca_sign_request(ca, csr, CERT_ROLE_SOURCE, source_cn,
                                   (const char *const[]){ "127.0.0.1", "300.1.1.1", NULL }, USEC_PER_HOUR,
                                   &none),
                   -EINVAL);
        free(csr);

        /* certtool agrees, with the chain and the purposes, and the handshake works both ways. */
        char *k = key_pem(source_key);
        write_file(dir, "source.key", k);
        free(k);
        k = key_pem(target_key);
        write_file(dir, "target.key", k);
        free(k);
        write_file(dir, "source.crt", source.pem);
        write_file(dir, "target.crt", target.pem);
        snprintf(cmd, sizeof(cmd),
                 "certtool --verify --load-ca-certificate %1$s/ca.crt --infile %1$s/source.crt "
                 "--verify-hostname %2$s --verify-purpose 1.3.6.1.5.5.7.3.1 >%1$s/verify.log 2>&1 && "
                 /* Each address given is named: the enrolment address and a data address. */
                 "certtool --verify --load-ca-certificate %1$s/ca.crt --infile %1$s/source.crt "
                 "--verify-hostname 127.0.0.1 >>%1$s/verify.log 2>&1 && "
                 "certtool --verify --load-ca-certificate %1$s/ca.crt --infile %1$s/source.crt "
                 "--verify-hostname 10.9.8.7 >>%1$s/verify.log 2>&1 && "
                 "! certtool --verify --load-ca-certificate %1$s/ca.crt --infile %1$s/source.crt "
                 "--verify-hostname 10.9.8.6 >>%1$s/verify.log 2>&1 && "
                 "certtool --verify --load-ca-certificate %1$s/ca.crt --infile %1$s/target.crt "
                 "--verify-purpose 1.3.6.1.5.5.7.3.2 >>%1$s/verify.log 2>&1",
                 dir, source_cn);
        if (system(cmd) != 0) {
                snprintf(cmd, sizeof(cmd), "cat %s/verify.log >&2", dir);
                (void) system(cmd);
                ASSERT_TRUE(!"certtool --verify failed");
        }
        mutual_tls(dir, session);

        /* The CRL lists what is revoked, signed by the CA. */
        RevokedSerial revoked[] = { { source.serial, now_realtime_usec() } };
        ASSERT_OK(ca_update_crl(ca, revoked, 1));
        write_file(dir, "crl.pem", ca_crl_pem(ca));
        snprintf(cmd, sizeof(cmd),
                 "certtool --crl-info --infile %1$s/crl.pem | grep -qi '%2$s' && "
                 "certtool --verify-crl --load-ca-certificate %1$s/ca.crt --infile %1$s/crl.pem >/dev/null",
                 dir, source.serial);
        ASSERT_INT(system(cmd), 0);

        issued_certificate_done(&source);
        issued_certificate_done(&target);
        gnutls_x509_privkey_deinit(source_key);
        gnutls_x509_privkey_deinit(target_key);
        gnutls_x509_privkey_deinit(other_key);
        gnutls_x509_privkey_deinit(weak_key);
        ca_free(ca);

        /* An RSA CA when so configured. */
        char *dir2 = tmpdir_new();
        ASSERT_OK(ca_load_or_create(dir2, "rsa-2048", 1, &ca));
        ASSERT_STR(ca_algorithm(ca), "rsa-2048");
        ca_free(ca);
        tmpdir_remove(dir2);
        tmpdir_remove(dir);
        gnutls_global_deinit();
        return 0;
}
