/* SPDX-License-Identifier: MIT */
/* The D-Bus face of storage backends: org.pureboot.Controller1.StorageBackend. */
#pragma once

#include "manager.h"

int bus_storage_register(Manager *m);
