/* SPDX-License-Identifier: MIT */
/* The D-Bus face of the image library: org.pureboot.Controller1.Image. */
#pragma once

#include "manager.h"

int bus_image_register(Manager *m);
