/* SPDX-License-Identifier: MIT */
/* The D-Bus face of a session's targets: org.pureboot.Controller1.CloneTarget on
 * /org/pureboot/Controller1/clone/<id>/target/<n>. */
#pragma once

#include <systemd/sd-bus.h>

#include "manager.h"
#include "target.h"

/* Appends the value of CloneTarget property name of t, or with t NULL the empty value of its type (the
 * session's Target* properties of a session without a target). */
int bus_target_append(sd_bus_message *reply, CloneTarget *t, const char *name);
/* The Targets property of session c: its targets' paths. */
int bus_target_append_paths(sd_bus_message *reply, CloneSession *c);

/* Announces a target (InterfacesAdded on the root's ObjectManager), or that it goes (InterfacesRemoved,
 * while it still exists): clients such as Cockpit learn of the objects only so. _all: each target of c. */
void bus_target_emit(CloneTarget *t, bool added);
void bus_target_emit_all(CloneSession *c, bool added);

int bus_target_register(Manager *m);
