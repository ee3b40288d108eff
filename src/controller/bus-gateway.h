/* SPDX-License-Identifier: MIT */
/* The D-Bus face of the node gateway: org.pureboot.Controller1.Gateway. */
#pragma once

#include "manager.h"

int bus_gateway_register(Manager *m);
void bus_gateway_done(Manager *m);
/* Tells the bridge that what a node may watch changed: kind "session" (a clone session, id), "node" (a
 * node's orders or disks, id) or "trust" (the CA's CRL, id ""). Signals (Gateway.Changed) go out once the
 * loop turns, one per record however many changes it had, so after any transaction commits. */
void bus_gateway_notify(Manager *m, const char *kind, const char *id);
