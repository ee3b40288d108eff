/* SPDX-License-Identifier: MIT */
/* The NFS root of diskless nodes: read-only base images under <Path>/<BaseDir>/<name>, and one overlay per
 * Raspberry Pi under <Path>/<NodesDir>/<serial>/{upper,work,merged}. The directories are the state: the
 * initramfs of a Pi creates its own overlay on first boot, and the controller sees it there. */
#pragma once

#include <systemd/sd-bus.h>

#include "manager.h"


typedef struct NfsRootNode {
        char *serial, *base, *hostname, *machine_id;
        uint64_t created_at;
} NfsRootNode;

void nfsroot_node_done(NfsRootNode *n);

/* Base image names: a letter or digit, then letters, digits, '.', '_', '-'; at most 64. */
bool nfsroot_name_is_valid(const char *name);
/* Creates Path, BaseDir and NodesDir if they are missing. */
int nfsroot_ensure(Manager *m, sd_bus_error *error);
int nfsroot_list_bases(Manager *m, char ***ret);
int nfsroot_list_nodes(Manager *m, char ***ret);

/* Extracts the tar archive on fd (plain, gzip, xz, bzip2 or zstd) into a new base image called name, in a
 * child process: libarchive's secure extraction (no absolute paths, no "..", nothing through or to a
 * symlink that leaves the image; owners, modes, ACLs and xattrs kept) into a temporary directory that is
 * renamed into place only when complete. done runs from the event loop with error set on failure. */
typedef void (*NfsRootImportDone)(Manager *m, const char *name, const char *error, const char *summary,
                                  void *userdata);
/* Device nodes, FIFOs and sockets are left out, and setuid/setgid bits cleared unless keep_setuid; done
 * gets a summary that says so. */
int nfsroot_import(Manager *m, const char *name, int fd, bool keep_setuid, NfsRootImportDone done,
                   void *userdata, sd_bus_error *error);

/* Creates nodes/<serial>/{upper,work,merged} with upper/etc/hostname and a fresh upper/etc/machine-id.
 * base empty: the configured DefaultBaseImage, else the only one there is. check_only (here and for
 * delete): refused as it would be, nothing changed (the bus methods check so before polkit). */
int nfsroot_create_overlay(Manager *m, const char *serial, const char *base, const char *hostname,
                           bool check_only, sd_bus_error *error);
int nfsroot_delete_overlay(Manager *m, const char *serial, bool check_only, sd_bus_error *error);
int nfsroot_node_info(Manager *m, const char *serial, NfsRootNode *ret, sd_bus_error *error);
/* "lowerdir=…,upperdir=…,workdir=…" for mount -t overlay. */
int nfsroot_overlay_options(Manager *m, const char *serial, const char *base, char **ret, sd_bus_error *error);
/* The base image a Pi boots: its overlay's, else the default. NULL if there is none. */
char *nfsroot_base_for(Manager *m, const char *serial);
