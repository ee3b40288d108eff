/* SPDX-License-Identifier: MIT */
/* controller.conf: the controller's settings and their defaults. */
#pragma once

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
        /* [Bridge] */
        char *bridge_user; /* the only user allowed on the Gateway interface */
        /* [NfsRoot] */
        char *nfsroot_path, *nfsroot_base_dir, *nfsroot_nodes_dir, *nfsroot_default_base;
        char *nfsroot_workflow; /* given to Pis at their first boot: they boot diskless from the start */
} Config;

void config_init(Config *c);
void config_done(Config *c);
/* Loads path and path.d/ *.conf over the defaults. Unknown keys are warned about, bad values are errors. */
int config_load(Config *c, const char *path);
