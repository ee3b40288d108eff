/* SPDX-License-Identifier: MIT */
/* org.pureboot.Controller1.Manager: the root object, its collections and their signals. */
#pragma once

#include "manager.h"

int bus_manager_register(Manager *m);
/* Announces an object: ObjectManager InterfacesAdded plus, where given, a Manager signal (id, path). */
void bus_manager_emit_added(Manager *m, const char *signal, const char *id, const char *path);
void bus_manager_emit_removed(Manager *m, const char *signal, const char *id, const char *path);
