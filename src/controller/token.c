/* SPDX-License-Identifier: MIT */
/* Enrolment tokens. The plaintext goes on a node's kernel command line; we keep only its SHA-256. */
#include <gnutls/crypto.h>

#include "log.h"
#include "token.h"
#include "util.h"

int token_hash(const char *token, char **ret) {
        uint8_t digest[32];
        if (gnutls_hash_fast(GNUTLS_DIG_SHA256, token, strlen(token), digest) < 0)
                return -EIO;
        *ret = hexmem(digest, sizeof(digest));
        return *ret ? 0 : -ENOMEM;
}

int token_mint(Manager *m, const char *node_id, const char *session_id, const char *role,
               const char *address, char **ret) {
        _cleanup_free_ char *token = NULL, *hash = NULL;
        uint64_t now = now_realtime_usec();
        uint8_t raw[24];
        int r;

        if (gnutls_rnd(GNUTLS_RND_KEY, raw, sizeof(raw)) < 0)
                return -EIO;
        token = hexmem(raw, sizeof(raw));
        explicit_bzero(raw, sizeof(raw));
        if (!token)
                return -ENOMEM;
        r = token_hash(token, &hash);
        if (r < 0)
                return r;
        /* One token per name at a time: the newest. Expired ones are of no use to anyone. */
        r = store_tokens_retire(m->store, node_id, session_id, role, now);
        if (r >= 0)
                r = store_tokens_purge(m->store, now);
        if (r >= 0)
                r = store_token_insert(m->store, hash, node_id, session_id, role, address,
                                       now + m->config.token_lifetime_usec);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(token);
        return 0;
}
