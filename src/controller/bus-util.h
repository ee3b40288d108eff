/* SPDX-License-Identifier: MIT */
/* Helpers shared by the bus-*.c files: the a{sv} options argument, the caller's uid, error mapping. */
#pragma once

#include <stdarg.h>
#include <systemd/sd-bus.h>

#include "hashmap.h"
#include "json-util.h"
#include "macro.h"

typedef struct BusOptions {
        bool no_user_interaction; /* auth.no_user_interaction */
        bool keep_setuid;         /* keep_setuid: base image imports keep setuid/setgid bits */
        bool power_cycle,
                power_off; /* CreateCloneSession: its nodes booted from the network, switched off after */
        const char *idempotency_key, *storage, *resize_mode, *identity, *unused, *ip, *serial, *workflow;
        const char *image, *keep_as; /* CreateCloneSession: the image it deploys, or the one it keeps */
        const char *description;     /* ImportImage: the new image's */
        json_object *files; /* CreateCloneSession, AddTarget: files (a{ss}) the target's clone gets */
} BusOptions;

/* Reads the trailing a{sv} options. Strings point into the message; files is owned (bus_options_done).
 * Unknown keys are refused so a misspelt option is not silently ignored. */
int bus_read_options(sd_bus_message *m, BusOptions *ret, sd_bus_error *error);
void bus_options_done(BusOptions *o);
/* Whether polkit may interact with the user for this call. */
bool bus_interactive(sd_bus_message *m, const BusOptions *o);
int bus_sender_uid(sd_bus_message *m, uint32_t *ret);
/* Maps a store failure to a bus error that says what to do. */
int bus_store_error(sd_bus_error *error, int r, const char *what);

/* For fallback vtables: if path is prefix/<id>, looks id up in map and returns 1 with the object. */
int bus_find_object(Hashmap *map, const char *prefix, const char *path, void **found);
/* Node enumerator body: prefix/<id> for every key of map. */
int bus_enumerate_objects(Hashmap *map, const char *prefix, char ***nodes);

/* An a{sv} of plain values (strings, booleans, integers) as a JSON object, and back. Integers above
 * INT64_MAX and other types are refused with a message naming the key. */
int bus_message_read_json_dict(sd_bus_message *m, json_object **ret, sd_bus_error *error);
/* An a{ss} as a JSON object of strings. */
int bus_message_read_string_dict(sd_bus_message *m, json_object **ret);
int bus_message_append_json_dict(sd_bus_message *m, json_object *o);
/* Appends a JSON array of strings (NULL: none) as "as". */
int bus_message_append_json_strv(sd_bus_message *m, json_object *array);
