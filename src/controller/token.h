/* SPDX-License-Identifier: MIT */
/* Single-use enrolment tokens: minted here, stored only as hashes. */
#pragma once

#include "manager.h"

/* Mints a token bound to node, session (may be NULL) and role, and to the address it may enrol from (NULL:
 * any); the name's earlier unused tokens are retired, and expired tokens forgotten. Returns the plaintext.
 */
int token_mint(Manager *m, const char *node_id, const char *session_id, const char *role,
               const char *address, char **ret);
/* SHA-256 of the token, lowercase hex. */
int token_hash(const char *token, char **ret);
