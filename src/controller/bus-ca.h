/* SPDX-License-Identifier: MIT */
/* The D-Bus face of the CA: org.pureboot.Controller1.CertificateAuthority. */
#pragma once

#include "manager.h"

int bus_ca_register(Manager *m);
int bus_ca_refresh_crl(Manager *m);
