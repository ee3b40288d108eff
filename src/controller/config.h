/* SPDX-License-Identifier: MIT */
/* controller.conf: the controller's settings and their defaults. */
#pragma once

#include "address.h"
#include "macro.h"

typedef struct Config {
        /* [Controller] */
        uint64_t exit_on_idle_usec; /* 0: never */
        /* [CA] */
        char *ca_key_algorithm; /* ecdsa-p256, rsa-2048, rsa-4096 */
        uint64_t ca_validity_years;
        uint64_t session_cert_validity_hours;
        /* [Enrolment] */
        uint64_t token_lifetime_usec;
        uint64_t
                identity_idle_usec; /* a name's certificate heard within this long is live: claims refused */
        /* Where a source may serve its disk besides the address it enrols from (its data address). */
        Subnet *data_subnets;
        size_t n_data_subnets;
        /* [Discovery] */
        uint64_t max_discovered;       /* nodes in state discovered, at most */
        uint64_t discover_per_address; /* new machines registered per minute from one address */
        uint64_t discover_per_minute;  /* … and from all addresses together */
        /* [Bridge] */
        char *bridge_user; /* the only user allowed on the Gateway interface */
        /* [Images] */
        char *image_verifier; /* the agent binary that does the library's work on this host (verify-image, …)
                               */
        char *image_work_dir; /* where an import restores its disk before it uploads it */
        /* [NfsRoot] */
        char *nfsroot_path, *nfsroot_base_dir, *nfsroot_nodes_dir, *nfsroot_default_base;
        char *nfsroot_workflow; /* given to Pis at their first boot: they boot diskless from the start */
} Config;

void config_init(Config *c);
void config_done(Config *c);
/* Loads path and path.d/ *.conf over the defaults. Unknown keys are warned about, bad values are errors. */
int config_load(Config *c, const char *path);
/* What to add to an error writing a configured directory (err a negative errno): under the shipped unit,
 * EROFS means the directory is outside what the sandbox lets the controller write. "" otherwise. */
const char *config_write_hint(int err);
