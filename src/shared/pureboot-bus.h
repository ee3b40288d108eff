/* SPDX-License-Identifier: MIT */
/* The names the controller has on the bus and the node protocol's interface name, defined once for the
 * controller and every client of it (bridge, purebootctl, agent). */
#pragma once

#define PB_BUS_NAME "org.pureboot.Controller1"
#define PB_ROOT_PATH "/org/pureboot/Controller1"
#define PB_CA_PATH PB_ROOT_PATH "/ca"
#define PB_IFACE(x) PB_BUS_NAME "." x
/* polkit's action ids: org.pureboot.controller1.manage-… (polkit/org.pureboot.controller1.policy). */
#define PB_POLKIT_ACTION(x) "org.pureboot.controller1." x
/* The node protocol (varlink): its methods and errors are PB_NODE_PREFIX and the member's name. */
#define PB_NODE_INTERFACE "org.pureboot.Node"
#define PB_NODE_PREFIX PB_NODE_INTERFACE "."
