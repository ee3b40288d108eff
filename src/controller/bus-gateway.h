/* SPDX-License-Identifier: MIT */
/* The D-Bus face of the node gateway: org.pureboot.Controller1.Gateway. */
#pragma once

#include "manager.h"

int bus_gateway_register(Manager *m);
