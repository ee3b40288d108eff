/* SPDX-License-Identifier: MIT */
/* The D-Bus face of clone sessions: org.pureboot.Controller1.CloneSession. */
#pragma once

#include "manager.h"

int bus_clone_register(Manager *m);
