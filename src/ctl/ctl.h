/* SPDX-License-Identifier: MIT */
/* purebootctl: options shared by all verbs and the helpers the verb files use. */
#pragma once

#include <json-c/json.h>
#include <systemd/sd-bus.h>

#include "macro.h"
#include "pureboot-bus.h"

typedef enum JsonMode { JSON_OFF, JSON_SHORT, JSON_PRETTY } JsonMode;

/* Exit codes scripts can rely on (documented in purebootctl(1)). */
enum {
        EXIT_OK = 0,
        EXIT_FAILED = 1,    /* the controller refused or the operation failed */
        EXIT_USAGE = 2,     /* bad command line */
        EXIT_NOT_FOUND = 4, /* no such node, session, backend or certificate */
        EXIT_NOT_AUTHORIZED = 5,
        EXIT_UNAVAILABLE = 6, /* the controller is not running or not reachable */
};

typedef struct Args {
        bool no_pager, no_legend, no_ask_password, follow, keep_setuid;
        bool power_cycle, power_off; /* clone create, image deploy */
        JsonMode json;
        const char *mac, *hostname, *arch, *serial;
        const char *source, *target, *mode, *storage, *source_device, *target_device, *name, *resize, *key;
        const char *identity, *unused;
        const char *driver;               /* node set-power */
        const char *method;               /* disk erase */
        char **targets, **target_devices; /* every --target and --target-device, in order */
        const char *keep_as;
        const char *description; /* image import */
        const char *server;      /* boot-media write */
        const char *role, *type, *ip, *csr;
        bool analyze;
        const char *set_plan;
        char **edits;     /* --edit N=SIZE */
        char **set_files; /* --set-file PATH=CONTENT */
} Args;

extern Args arg;

/* A size in bytes, or with K, M, G, T (powers of 1024). */
int ctl_parse_size(const char *s, uint64_t *ret);

/* Prints error's message and returns the exit code it maps to. */
int ctl_error(const sd_bus_error *error, int r, const char *what);
/* Calls a Manager GetX(name) method and returns the object path. */
int ctl_resolve(sd_bus *bus, const char *method, const char *name, char **ret_path);
/* Calls method on path/iface; the caller appends arguments through the prepared message. */
int ctl_new_call(sd_bus *bus, const char *path, const char *iface, const char *method, sd_bus_message **ret);
/* Appends an a{sv} options argument (empty unless the verb adds keys) and sends. */
int ctl_call(sd_bus *bus, sd_bus_message *m, sd_bus_message **reply, const char *what);
/* Sends a call that creates an object and prints the new object's id; returns the exit code. */
int ctl_call_print_id(sd_bus *bus, sd_bus_message *m, const char *what);
/* Shows all properties of path/iface as "Name: value" lines or as JSON. */
int ctl_show_object(sd_bus *bus, const char *path, const char *iface);
void ctl_print_json(json_object *o);
/* Pipes stdout into a pager for listings, when it is a terminal and --no-pager is not given. */
void ctl_pager_open(void);
bool ctl_require(const char *value, const char *option, const char *verb);
/* Creates file, which must not exist, for writing; says why not and returns -errno. */
int ctl_create_new(const char *file);

/* CreateCloneSession's options as the command line gives them (--storage, --resize, --identity, --unused,
 * --idempotency-key, --keep-as, --set-file), and the image it deploys if not NULL. */
int clone_append_options(sd_bus_message *m, const char *image);
/* AddTarget's options (--resize, --set-file), as an a{sv}. */
int clone_append_target_options(sd_bus_message *m);

/* Verbs */
int verb_node(sd_bus *bus, int argc, char **argv);
int verb_clone(sd_bus *bus, int argc, char **argv);
int verb_storage(sd_bus *bus, int argc, char **argv);
int verb_ca(sd_bus *bus, int argc, char **argv);
int verb_disk(sd_bus *bus, int argc, char **argv);
int verb_partition(sd_bus *bus, int argc, char **argv);
int verb_nfsroot(sd_bus *bus, int argc, char **argv);
int verb_image(sd_bus *bus, int argc, char **argv);
int verb_boot_media(sd_bus *bus, int argc, char **argv);
