/* SPDX-License-Identifier: MIT */
/* Workflow files, parsed with libyaml: a mapping of the seed's fields, boot_params a mapping of its own.
 * Everything is checked when loading, so a workflow that loads also renders. */
#include <ctype.h>
#include <dirent.h>
#include <libgen.h>
#include <stdarg.h>
#include <yaml.h>

#include "log.h"
#include "util.h"
#include "workflow.h"

static const char *const variables[] = { "server", "node_id", "mac", "ip" };

void workflow_done(Workflow *w) {
        char **strings[] = { &w->id,           &w->name,      &w->kernel_path, &w->initrd_path, &w->cmdline,
                             &w->architecture, &w->boot_mode, &w->install_method, &w->nfs_server, &w->nfs_base_path };
        for (size_t i = 0; i < ELEMENTSOF(strings); i++)
                free(*strings[i]);
        strv_free(w->boot_params);
        *w = (Workflow){};
}

static bool id_ok(const char *s) {
        if (isempty(s) || strlen(s) > 64 || strstr(s, ".."))
                return false;
        for (const char *p = s; *p; p++)
                if (!isalnum((unsigned char) *p) && !strchr("._-", *p))
                        return false;
        return true;
}

/* A path relative to the boot files: no leading '/', no "..", printable. */
static bool boot_path_ok(const char *s) {
        if (isempty(s) || s[0] == '/' || strlen(s) > 255)
                return false;
        for (const char *p = s; *p; p++)
                if (!isalnum((unsigned char) *p) && !strchr("._-/+", *p))
                        return false;
        return !strstr(s, "..") && !strstr(s, "//");
}

/* Only known ${variables}, and no bare '$' that would reach the kernel unexpanded. */
static bool cmdline_ok(const char *s, const char **ret_bad) {
        for (const char *p = s; (p = strchr(p, '$')); p++) {
                const char *end = p[1] == '{' ? strchr(p, '}') : NULL;
                bool known = false;
                for (size_t i = 0; end && i < ELEMENTSOF(variables); i++)
                        known = known || ((size_t) (end - p - 2) == strlen(variables[i]) &&
                                          strncmp(p + 2, variables[i], strlen(variables[i])) == 0);
                if (!known) {
                        *ret_bad = p;
                        return false;
                }
        }
        for (const char *p = s; *p; p++)
                if ((unsigned char) *p < 0x20)
                        return false;
        return true;
}

typedef struct Loader {
        const char *path;
        yaml_parser_t parser;
        yaml_event_t event;
        char **error;
} Loader;

static int fail(Loader *l, const char *fmt, ...) _printf_(2, 3);
static int fail(Loader *l, const char *fmt, ...) {
        _cleanup_free_ char *what = NULL;
        va_list ap;
        va_start(ap, fmt);
        int k = vasprintf(&what, fmt, ap);
        va_end(ap);
        if (k < 0 || asprintf(l->error, "%s:%zu: %s", l->path, l->event.start_mark.line + 1, what) < 0)
                return -ENOMEM;
        return -EBADMSG;
}

static int next(Loader *l) {
        yaml_event_delete(&l->event);
        if (!yaml_parser_parse(&l->parser, &l->event)) {
                l->event.start_mark = l->parser.problem_mark;
                return fail(l, "not valid YAML: %s", l->parser.problem ?: "syntax error");
        }
        return 0;
}

static int scalar(Loader *l, char **ret) {
        int r = next(l);
        if (r < 0)
                return r;
        if (l->event.type != YAML_SCALAR_EVENT)
                return fail(l, "expected a plain value");
        *ret = strndup((const char *) l->event.data.scalar.value, l->event.data.scalar.length);
        return *ret ? 0 : -ENOMEM;
}

static int load_boot_params(Loader *l, Workflow *w) {
        size_t n = 0;
        int r = next(l);
        if (r < 0)
                return r;
        if (l->event.type != YAML_MAPPING_START_EVENT)
                return fail(l, "boot_params must be a mapping of name: value");
        for (;;) {
                _cleanup_free_ char *key = NULL, *value = NULL;
                r = next(l);
                if (r < 0)
                        return r;
                if (l->event.type == YAML_MAPPING_END_EVENT)
                        return 0;
                if (l->event.type != YAML_SCALAR_EVENT)
                        return fail(l, "boot_params must be a mapping of name: value");
                key = strndup((const char *) l->event.data.scalar.value, l->event.data.scalar.length);
                r = key ? scalar(l, &value) : -ENOMEM;
                if (r < 0)
                        return r;
                const char *bad = NULL;
                if (!id_ok(key) || !cmdline_ok(value, &bad) || strchr(value, ' '))
                        return fail(l, "boot_params %s: names are letters, digits, '.', '_', '-'; values have no "
                                       "spaces and only ${server}, ${node_id}, ${mac}, ${ip}",
                                    key);
                char **t = realloc(w->boot_params, (n + 2) * sizeof(char *));
                if (!t)
                        return -ENOMEM;
                w->boot_params = t;
                if (asprintf(&t[n], "%s=%s", key, value) < 0)
                        return -ENOMEM;
                t[++n] = NULL;
        }
}

static int load(Loader *l, Workflow *w) {
        static const struct {
                const char *key;
                size_t offset;
        } fields[] = {
                { "id", offsetof(Workflow, id) },
                { "name", offsetof(Workflow, name) },
                { "kernel_path", offsetof(Workflow, kernel_path) },
                { "initrd_path", offsetof(Workflow, initrd_path) },
                { "cmdline", offsetof(Workflow, cmdline) },
                { "architecture", offsetof(Workflow, architecture) },
                { "boot_mode", offsetof(Workflow, boot_mode) },
                { "install_method", offsetof(Workflow, install_method) },
                { "nfs_server", offsetof(Workflow, nfs_server) },
                { "nfs_base_path", offsetof(Workflow, nfs_base_path) },
        };
        int r;

        do { /* stream start, document start, mapping start */
                r = next(l);
                if (r < 0)
                        return r;
        } while (l->event.type == YAML_STREAM_START_EVENT || l->event.type == YAML_DOCUMENT_START_EVENT);
        if (l->event.type != YAML_MAPPING_START_EVENT)
                return fail(l, "a workflow is a mapping of its fields (id, name, kernel_path, …)");
        for (;;) {
                _cleanup_free_ char *key = NULL;
                char **field = NULL;
                r = next(l);
                if (r < 0)
                        return r;
                if (l->event.type == YAML_MAPPING_END_EVENT)
                        break;
                if (l->event.type != YAML_SCALAR_EVENT)
                        return fail(l, "expected a field name");
                key = strndup((const char *) l->event.data.scalar.value, l->event.data.scalar.length);
                if (!key)
                        return -ENOMEM;
                if (streq(key, "boot_params")) {
                        if (w->boot_params)
                                return fail(l, "boot_params given twice");
                        r = load_boot_params(l, w);
                        if (r < 0)
                                return r;
                        continue;
                }
                for (size_t i = 0; i < ELEMENTSOF(fields); i++)
                        if (streq(key, fields[i].key))
                                field = (char **) ((uint8_t *) w + fields[i].offset);
                if (!field)
                        return fail(l, "unknown field \"%s\"", key);
                if (*field)
                        return fail(l, "%s given twice", key);
                r = scalar(l, field);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int check(Loader *l, Workflow *w) {
        _cleanup_free_ char *copy = strdup(l->path);
        const char *bad = NULL;
        if (!copy)
                return -ENOMEM;
        char *base = basename(copy), *dot = strrchr(base, '.');
        if (dot)
                *dot = 0;
        if (!w->id || !id_ok(w->id))
                return fail(l, "id is required: letters, digits, '.', '_' or '-', without \"/\" or \"..\"");
        if (!streq(w->id, base))
                return fail(l, "id %s does not match the file name %s.yaml", w->id, base);
        if (!w->name || !name_is_valid(w->name, 255))
                return fail(l, "name is required");
        if (!STR_IN_SET(w->install_method ?: "", "deploy", "nfs", "local"))
                return fail(l, "install_method is deploy, nfs or local");
        if (!STR_IN_SET(w->architecture ?: "", "x86_64", "arm64", "armhf", "riscv64"))
                return fail(l, "architecture is x86_64, arm64, armhf or riscv64");
        if (!STR_IN_SET(w->boot_mode ?: "", "uefi", "bios", "pi"))
                return fail(l, "boot_mode is uefi, bios or pi");
        if (!streq(w->install_method, "local") &&
            (!boot_path_ok(w->kernel_path) || !boot_path_ok(w->initrd_path)))
                return fail(l, "kernel_path and initrd_path are paths under the boot directory, without \"..\"");
        if (w->cmdline && !cmdline_ok(w->cmdline, &bad))
                return fail(l, "cmdline: only ${server}, ${node_id}, ${mac} and ${ip} are replaced; \"%.16s\" is not",
                            bad ?: "a control character");
        if (streq(w->install_method, "nfs") && (!w->nfs_server || !w->nfs_base_path || w->nfs_base_path[0] != '/'))
                return fail(l, "an nfs workflow needs nfs_server and an absolute nfs_base_path");
        return 0;
}

int workflow_load_stream(FILE *f, const char *path, Workflow *ret, char **ret_error) {
        Loader l = { .path = path, .error = ret_error };
        Workflow w = {};
        int r;

        if (!yaml_parser_initialize(&l.parser))
                return -ENOMEM;
        yaml_parser_set_input_file(&l.parser, f);
        r = load(&l, &w);
        if (r >= 0)
                r = check(&l, &w);
        yaml_event_delete(&l.event);
        yaml_parser_delete(&l.parser);
        if (r < 0) {
                workflow_done(&w);
                return r;
        }
        *ret = w;
        return 0;
}

int workflow_load(const char *path, Workflow *ret, char **ret_error) {
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        if (!f)
                return asprintf(ret_error, "%s: %s", path, strerror(errno)) < 0 ? -ENOMEM : -errno;
        return workflow_load_stream(f, path, ret, ret_error);
}

struct Workflows *workflows_free(struct Workflows *w) {
        for (size_t i = 0; w && i < w->n; i++)
                workflow_done(&w->items[i]);
        if (w)
                free(w->items);
        free(w);
        return NULL;
}

int workflows_load_dir(const char *dir, bool strict, struct Workflows **ret) {
        struct Workflows *ws = calloc(1, sizeof(struct Workflows));
        struct dirent **entries = NULL;
        int n, r = 0;

        if (!ws)
                return -ENOMEM;
        n = scandir(dir, &entries, NULL, alphasort);
        if (n < 0 && errno == ENOENT && !strict) {
                /* The node protocol works without workflows; boot answers say which one is missing. */
                log_warning("No workflows in %s: boot answers for jobs will fail until they are installed.", dir);
                *ret = ws;
                return 0;
        }
        if (n < 0) {
                workflows_free(ws);
                return log_error_errno(errno, "Failed to read workflows from %s: %m", dir);
        }
        for (int i = 0; i < n; i++) {
                _cleanup_free_ char *path = NULL, *error = NULL;
                size_t len = strlen(entries[i]->d_name);
                Workflow w;
                if (r >= 0 && len > 5 && streq(entries[i]->d_name + len - 5, ".yaml") &&
                    asprintf(&path, "%s/%s", dir, entries[i]->d_name) >= 0) {
                        int k = workflow_load(path, &w, &error);
                        if (k < 0) {
                                log_error("Workflow %s", error ?: path);
                                if (strict)
                                        r = k;
                        } else if (workflows_find(ws, w.id)) {
                                workflow_done(&w);
                        } else {
                                Workflow *t = realloc(ws->items, (ws->n + 1) * sizeof(Workflow));
                                if (!t) {
                                        workflow_done(&w);
                                        r = -ENOMEM;
                                } else {
                                        ws->items = t;
                                        ws->items[ws->n++] = w;
                                }
                        }
                }
                free(entries[i]);
        }
        free(entries);
        if (r < 0) {
                workflows_free(ws);
                return r;
        }
        *ret = ws;
        return 0;
}

const Workflow *workflows_find(const struct Workflows *w, const char *id) {
        for (size_t i = 0; w && i < w->n; i++)
                if (streq(w->items[i].id, id))
                        return &w->items[i];
        return NULL;
}

char *workflow_render_cmdline(const Workflow *w, const char *server, const char *node_id, const char *mac,
                              const char *ip) {
        const char *values[] = { server, node_id, mac, ip };
        char *out = NULL;

        for (const char *p = strempty(w->cmdline); *p;) {
                const char *d = strstr(p, "${");
                if (!d) {
                        if (strextend_printf(&out, "%s", p) < 0)
                                return mfree(out);
                        break;
                }
                if (strextend_printf(&out, "%.*s", (int) (d - p), p) < 0)
                        return mfree(out);
                const char *before = p;
                for (size_t i = 0; i < ELEMENTSOF(variables); i++)
                        if (startswith(d + 2, variables[i]) && d[2 + strlen(variables[i])] == '}') {
                                if (strextend_printf(&out, "%s", strempty(values[i])) < 0)
                                        return mfree(out);
                                p = d + 3 + strlen(variables[i]);
                                break;
                        }
                if (p == before) { /* not one of ours (loading refuses those): keep it as it is */
                        if (strextend_printf(&out, "${") < 0)
                                return mfree(out);
                        p = d + 2;
                }
        }
        for (char **kv = w->boot_params; kv && *kv; kv++) {
                Workflow one = { .cmdline = *kv };
                _cleanup_free_ char *rendered = workflow_render_cmdline(&one, server, node_id, mac, ip);
                if (!rendered || strextend_printf(&out, "%s%s", out ? " " : "", rendered) < 0)
                        return mfree(out);
        }
        return out ?: strdup("");
}
