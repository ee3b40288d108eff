/* SPDX-License-Identifier: MIT */
/* Fuzzes CSR signing: the request text comes from nodes, so any bytes must give a clean refusal or a
 * certificate, never a crash. */
#include <gnutls/gnutls.h>

#include "ca.h"
#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static CA *ca;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_free_ char *csr = strndup((const char *) data, size);
        IssuedCertificate cert = {};

        if (!ca) {
                char dir[] = "/tmp/pureboot-fuzz-ca-XXXXXX";
                log_set_max_level(LOG_CRIT);
                if (!mkdtemp(dir) || ca_load_or_create(dir, "ecdsa-p256", 1, &ca) < 0)
                        abort();
                /* The key stays in memory; the files are not needed after loading. */
                char path[64];
                snprintf(path, sizeof(path), "%s/ca.key", dir);
                unlink(path);
                snprintf(path, sizeof(path), "%s/ca.crt", dir);
                unlink(path);
                rmdir(dir);
        }
        if (!csr)
                return 0;
        if (ca_sign_request(ca, csr, CERT_ROLE_NODE, "node-0123", (const char *const[]){ "127.0.0.1", NULL },
                            3600 * USEC_PER_SEC, &cert) >= 0)
                issued_certificate_done(&cert);
        return 0;
}
