/* SPDX-License-Identifier: MIT */
/* The D-Bus face of the NFS root of diskless nodes: org.pureboot.Controller1.NfsRoot. */
#pragma once

#include "manager.h"

int bus_nfsroot_register(Manager *m);
