/* SPDX-License-Identifier: MIT */
/* The D-Bus face of a node's disks: org.pureboot.Controller1.Disk. */
#pragma once

#include "manager.h"

int bus_disk_register(Manager *m);
