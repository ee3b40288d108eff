/* SPDX-License-Identifier: MIT */
/* Boot answers, whatever carries them: what the controller decided for a machine (Gateway.Boot), the
 * workflow it names and the deploy kernel's command line; as a GRUB script; and the boot files. Shared by
 * the HTTP answers (boot.c) and TFTP (tftp.c). */
#pragma once

#include <systemd/sd-bus.h>

#include "bridge.h"
#include "workflow.h"

typedef struct BootReply {
        const char *action, *workflow, *node, *state; /* in the controller's reply */
        const Workflow *w;                            /* for deploy_image and nfs_boot */
        char *cmdline;                                /* the deploy kernel's, with w */
} BootReply;

void boot_reply_done(BootReply *a);

/* Asks the controller what the machine does: kind is ipxe, grub (both name it by mac) or pi (by serial);
 * peer is the address it asked from. callback gets the reply, or the error, on *ret_slot. */
int boot_ask(Bridge *b, const char *kind, const char *mac, const char *serial, const char *peer,
             sd_bus_slot **ret_slot, sd_bus_message_handler_t callback, void *userdata);
/* Reads the controller's answer m into a (zeroed; boot_reply_done it either way). A workflow it names that
 * this bridge cannot run is an error, -ENOENT or -EINVAL, with *ret_reason saying so. */
int boot_reply_read(Bridge *b, sd_bus_message *m, const char *mac, const char *ip, BootReply *a,
                    const char **ret_reason);
/* The answer as a script for GRUB, which fetches the kernel and initrd from this bridge by TFTP (Debian's
 * signed GRUB network image reads nothing else); NULL on ENOMEM, or EINVAL for a command line GRUB cannot
 * quote. */
char *boot_grub_script(Bridge *b, const BootReply *a, const char *mac);
/* A regular file under dir (no "..", absolute path or symbolic link leading out of it), opened for
 * reading, or -errno. */
int boot_open_file(const char *dir, const char *path);
/* A boot file by its name, as TFTP and HTTP serve it: boot/files/PATH is PATH under [Boot] Path=, any
 * other name is under [Boot] TFTPRoot=. Opened with boot_open_file(), or -errno, logged with who asked. */
int boot_file_open(Bridge *b, const char *name, const char *who);
