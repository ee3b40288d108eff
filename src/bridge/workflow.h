/* SPDX-License-Identifier: MIT */
/* Boot workflows: what a node boots for a job, from workflows/<id>.yaml. */
#pragma once

#include "macro.h"

typedef struct Workflow {
        char *id, *name, *kernel_path, *initrd_path, *cmdline, *architecture, *boot_mode, *install_method;
        char *nfs_server, *nfs_base_path;
        char **boot_params; /* key=value, NULL-terminated */
} Workflow;

struct Workflows {
        Workflow *items;
        size_t n;
};

/* Loads one file; on error returns < 0 with a message naming the file and line in *ret_error. */
int workflow_load(const char *path, Workflow *ret, char **ret_error);
/* The same from an open stream; path names it in messages, and its base name must match the id. */
int workflow_load_stream(FILE *f, const char *path, Workflow *ret, char **ret_error);
void workflow_done(Workflow *w);
/* Loads every *.yaml of dir. Files that do not load are reported and skipped unless strict. */
int workflows_load_dir(const char *dir, bool strict, struct Workflows **ret);
struct Workflows *workflows_free(struct Workflows *w);
const Workflow *workflows_find(const struct Workflows *w, const char *id);

/* The workflow's command line with ${server}, ${node_id}, ${mac} and ${ip} replaced, plus its boot_params. */
char *workflow_render_cmdline(const Workflow *w, const char *server, const char *node_id, const char *mac,
                              const char *ip);
