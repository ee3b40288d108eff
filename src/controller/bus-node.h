/* SPDX-License-Identifier: MIT */
/* The D-Bus face of nodes: org.pureboot.Controller1.Node. */
#pragma once

#include "manager.h"

int bus_node_register(Manager *m);
