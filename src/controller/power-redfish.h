/* SPDX-License-Identifier: MIT */
/* The power driver redfish (power-redfish.c): a node's BMC through the DMTF Redfish API over HTTPS. */
#pragma once

#include <json-c/json.h>

#include "domain.h"

/* A Redfish resource path of the BMC's own: /redfish/v1/…, printable, no "..", no query. */
bool redfish_path_is_valid(const char *s);

/* Does action at the BMC the settings name (address, port, user, system, ca-file, verify), as user with
 * password. Blocks: for the power worker. Returns what was done in a sentence (for status: "on" or "off"),
 * or NULL with why in *ret_why. */
char *redfish_act(const char *hostname, json_object *settings, const char *password, PowerAction action,
                  char **ret_why);
