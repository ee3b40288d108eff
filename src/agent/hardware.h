/* SPDX-License-Identifier: MIT */
/* The machine's hardware inventory (the node protocol's Hardware), reported once per boot in every mode. */
#pragma once

#include <json-c/json.h>

#include "agent.h"

/* What the machine is; its disks: every one of the kinds machines boot from (disk_name_is_inventoried), and
 * devices and device (a clone role's own), wherever they are. NULL on lack of memory. */
json_object *hardware_collect(char **devices, const char *device);
/* Queues ReportHardware, for the node (a node job) or for the clone role the certificate speaks for. */
void hardware_report(Agent *a);
