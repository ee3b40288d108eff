/* SPDX-License-Identifier: MIT */
/* Storage backends: the fields each type takes, how they are checked, and the secret that never leaves. */
#include <ctype.h>
#include <nfsc/libnfs.h>
#include <stdio.h>
#include <sys/statvfs.h>
#include <sys/time.h>

#include "address.h"
#include "bus-manager.h"
#include "bus-util.h"
#include "format.h"
#include "ini.h"
#include "log.h"
#include "pureboot-errors.h"
#include "storage.h"
#include "tool.h"
#include "util.h"
#include "worker.h"

typedef struct Field {
        const char *name;
        char type;           /* 's', 'u' or 'b' */
        BackendType backend;
        bool secret;
} Field;

static const Field fields[] = {
        { "server", 's', BACKEND_NFS },
        { "export", 's', BACKEND_NFS },
        { "options", 's', BACKEND_NFS },
        { "version", 's', BACKEND_NFS },
        { "portal", 's', BACKEND_ISCSI },
        { "target", 's', BACKEND_ISCSI },
        { "lun", 'u', BACKEND_ISCSI },
        { "chap_user", 's', BACKEND_ISCSI },
        { "chap_secret", 's', BACKEND_ISCSI, true },
        { "manage", 's', BACKEND_ISCSI },
        { "luns", 's', BACKEND_ISCSI },
        { "backing_dir", 's', BACKEND_ISCSI },
};

StorageBackend *storage_free(StorageBackend *b) {
        if (!b)
                return NULL;
        free(b->id);
        free(b->name);
        json_object_put(b->config);
        if (b->secret)
                explicit_bzero(b->secret, strlen(b->secret));
        free(b->secret);
        free(b);
        return NULL;
}

char *storage_path(const StorageBackend *b) {
        char *p;
        return asprintf(&p, PB_ROOT_PATH "/storage/%s", b->id) < 0 ? NULL : p;
}

int storage_attach(Manager *m, StorageBackend *b) {
        b->manager = m;
        return hashmap_put(m->storages, b->id, b);
}

static bool storage_name_is_valid(const char *s) {
        if (isempty(s) || strlen(s) > 64)
                return false;
        for (const char *p = s; *p; p++)
                if (!isalnum((unsigned char) *p) && !strchr("._-", *p))
                        return false;
        return true;
}

static bool host_is_valid(const char *s) {
        return hostname_is_valid(s) || ip_address_is_valid(s);
}

/* host, host:port, or [v6]:port */
static bool portal_is_valid(const char *s) {
        _cleanup_free_ char *host = NULL;
        const char *port = NULL;

        if (isempty(s) || strlen(s) > 300)
                return false;
        if (s[0] == '[') {
                const char *end = strchr(s, ']');
                if (!end || (end[1] && end[1] != ':'))
                        return false;
                host = strndup(s + 1, (size_t) (end - s - 1));
                port = end[1] ? end + 2 : NULL;
        } else {
                const char *colon = strchr(s, ':');
                if (colon && strchr(colon + 1, ':')) /* a bare IPv6 address */
                        return host_is_valid(s);
                host = colon ? strndup(s, (size_t) (colon - s)) : strdup(s);
                port = colon ? colon + 1 : NULL;
        }
        if (!host || !host_is_valid(host))
                return false;
        if (port) {
                uint64_t p;
                if (parse_uint64(port, &p) < 0 || p == 0 || p > 65535)
                        return false;
        }
        return true;
}

/* iqn.YYYY-MM.reversed.domain[:anything] or eui.<16 hex digits>, RFC 3720 §3.2.6. */
static bool iqn_is_valid(const char *s) {
        const char *rest;
        if (isempty(s) || strlen(s) > 223)
                return false;
        if ((rest = startswith(s, "eui."))) {
                if (strlen(rest) != 16)
                        return false;
                for (const char *p = rest; *p; p++)
                        if (!isxdigit((unsigned char) *p))
                                return false;
                return true;
        }
        rest = startswith(s, "iqn.");
        if (!rest || strlen(rest) < 9)
                return false;
        for (int i = 0; i < 7; i++)
                if (i == 4 ? rest[i] != '-' : !isdigit((unsigned char) rest[i]))
                        return false;
        if (rest[7] != '.' || !isalnum((unsigned char) rest[8]))
                return false;
        for (const char *p = rest + 8; *p; p++)
                if (!islower((unsigned char) *p) && !isdigit((unsigned char) *p) && !strchr(".-:", *p))
                        return false;
        return true;
}

static const char *get_string(json_object *config, const char *key) {
        json_object *v;
        return json_object_object_get_ex(config, key, &v) ? json_object_get_string(v) : NULL;
}

static int validate(BackendType type, json_object *config, const char *secret, sd_bus_error *error) {
        const char *v;

        if (type == BACKEND_NFS) {
                v = get_string(config, "server");
                if (!v || !host_is_valid(v))
                        return sd_bus_error_setf(
                                error, PB_ERROR_INVALID_ARGUMENT,
                                "An NFS backend needs server=HOST, a host name or IP address%s%.64s%s.",
                                v ? " (not \"" : "", strempty(v), v ? "\")" : "");
                v = get_string(config, "export");
                if (!path_is_safe(v, 1024))
                        return sd_bus_error_setf(
                                error, PB_ERROR_INVALID_ARGUMENT,
                                "An NFS backend needs export=PATH, an absolute path on the server "
                                "without \"..\", such as /srv/pureboot.");
                v = get_string(config, "version");
                if (v && !STR_IN_SET(v, "3", "4", "4.1", "4.2"))
                        return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                                 "NFS version \"%.16s\" is not one of 3, 4, 4.1, 4.2.", v);
                v = get_string(config, "options");
                if (v && !name_is_valid(v, 1024))
                        return sd_bus_error_setf(
                                error, PB_ERROR_INVALID_ARGUMENT,
                                "NFS options must be printable text of at most 1024 bytes.");
                return 0;
        }

        v = get_string(config, "portal");
        if (!v || !portal_is_valid(v))
                return sd_bus_error_setf(
                        error, PB_ERROR_INVALID_ARGUMENT,
                        "An iSCSI backend needs portal=HOST[:PORT], such as 192.0.2.10:3260%s%.64s%s.",
                        v ? " (not \"" : "", strempty(v), v ? "\")" : "");
        v = get_string(config, "target");
        if (!v || !iqn_is_valid(v))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "An iSCSI backend needs target=IQN, such as "
                                         "iqn.2024-01.org.example:staging%s%.64s%s.",
                                         v ? " (not \"" : "", strempty(v), v ? "\")" : "");
        v = get_string(config, "manage");
        if (v && !STR_IN_SET(v, "none", "tgtadm"))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "manage=\"%.16s\" is not one of none, tgtadm.", v);
        bool managed = streq_ptr(v, "tgtadm");
        v = get_string(config, "chap_user");
        if (!!v != !!secret)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "CHAP needs both chap_user and chap_secret, or neither.");
        if (v && !name_is_valid(v, 255))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "chap_user must be printable text of at most 255 bytes.");
        if (secret && (strlen(secret) < 12 || strlen(secret) > 255 || !name_is_valid(secret, 255)))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "chap_secret must be 12 to 255 printable bytes (most initiators "
                                         "require at least 12).");
        v = get_string(config, "backing_dir");
        if (managed != !!v || (v && !path_is_safe(v, 1024)))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         managed ? "manage=tgtadm needs backing_dir=PATH, an absolute directory on "
                                                   "this host where LUN files are created."
                                                 : "backing_dir is only for manage=tgtadm.");
        v = get_string(config, "luns");
        if (managed && (v || json_object_object_get_ex(config, "lun", NULL)))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "With manage=tgtadm the controller creates a LUN per session; drop lun "
                                         "and luns.");
        if (!managed && !v == !json_object_object_get_ex(config, "lun", NULL))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "Name the LUN to stage on with lun=N, or a pool of LUNs with luns=1-4,7 "
                                         "(or let the controller create them with manage=tgtadm).");
        if (v && storage_parse_luns(v, NULL) < 0)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "luns=\"%.64s\" is not a list of LUN numbers and ranges such as 1-4,7.", v);
        return 0;
}

/* Reads an a{sv} of fields into config (and *secret), checking each against the table. Fields that are not
 * of this backend type are refused by name. "name" and "enabled" are accepted only when allow_common. */
static int read_fields(sd_bus_message *msg, BackendType type, bool allow_common, json_object *config,
                       char **secret, const char **ret_name, int *ret_enabled, sd_bus_error *error) {
        int r;

        r = sd_bus_message_enter_container(msg, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(msg, 'e', "sv")) > 0) {
                const char *key, *contents;
                const Field *f = NULL;

                r = sd_bus_message_read(msg, "s", &key);
                if (r >= 0)
                        r = sd_bus_message_peek_type(msg, NULL, &contents);
                if (r < 0)
                        return r;

                if (allow_common && (streq(key, "name") || streq(key, "enabled"))) {
                        bool is_name = streq(key, "name");
                        if (!streq(contents, is_name ? "s" : "b"))
                                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                         "%s must be of type %s.", key, is_name ? "s" : "b");
                        r = is_name ? sd_bus_message_read(msg, "v", "s", ret_name)
                                    : sd_bus_message_read(msg, "v", "b", ret_enabled);
                        if (r < 0)
                                return r;
                        goto next;
                }
                for (size_t i = 0; i < ELEMENTSOF(fields); i++)
                        if (streq(fields[i].name, key))
                                f = &fields[i];
                if (!f || f->backend != type)
                        return sd_bus_error_setf(
                                error, PB_ERROR_INVALID_ARGUMENT,
                                "\"%.64s\" is not a setting of %s backends. %s", key,
                                backend_type_to_string(type),
                                type == BACKEND_NFS ? "NFS takes server, export, options, version."
                                                    : "iSCSI takes portal, target, lun, luns, chap_user, "
                                                      "chap_secret, manage, backing_dir.");
                if (contents[0] != f->type || contents[1])
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "%s must be of type %c, not %s.", key, f->type, contents);
                if (f->type == 'u') {
                        uint32_t u;
                        r = sd_bus_message_read(msg, "v", "u", &u);
                        if (r >= 0)
                                r = json_object_object_add(config, key, json_object_new_int64(u)) < 0
                                            ? -ENOMEM
                                            : 0;
                } else {
                        const char *s;
                        r = sd_bus_message_read(msg, "v", "s", &s);
                        if (r >= 0 && f->secret)
                                r = free_and_strdup(secret, isempty(s) ? NULL : s);
                        else if (r >= 0 && isempty(s))
                                json_object_object_del(config, key); /* an empty value clears the setting */
                        else if (r >= 0)
                                r = json_object_object_add(config, key, json_object_new_string(s)) < 0
                                            ? -ENOMEM
                                            : 0;
                }
                if (r < 0)
                        return r;
        next:
                r = sd_bus_message_exit_container(msg);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(msg);
}

static StorageBackend *find_by_name(Manager *m, const char *name) {
        StorageBackend *b;
        HASHMAP_FOREACH (b, m->storages, i)
                if (streq(b->name, name))
                        return b;
        return NULL;
}

int storage_create(Manager *m, const char *name, const char *type, sd_bus_message *config,
                   StorageBackend **ret, sd_bus_error *error) {
        _cleanup_free_ char *secret = NULL;
        json_object *c;
        char id[PB_ID_LEN + 1];
        StorageBackend *b;
        int r;

        if (!storage_name_is_valid(name))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "A backend name is 1 to 64 letters, digits, '.', '_' or '-'.");
        int kind = backend_type_from_string(type);
        if (kind < 0)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "Unknown backend type \"%.32s\"; use nfs or iscsi.", type);
        if (find_by_name(m, name))
                return sd_bus_error_setf(error, PB_ERROR_ALREADY_EXISTS,
                                         "A storage backend named %s exists already; pick another name.",
                                         name);
        c = json_object_new_object();
        if (!c)
                return -ENOMEM;
        r = read_fields(config, (BackendType) kind, false, c, &secret, NULL, NULL, error);
        if (r >= 0)
                r = validate((BackendType) kind, c, secret, error);
        if (r >= 0 && !ret) {
                json_object_put(c);
                return 0;
        }
        if (r >= 0)
                r = id_new(id);
        if (r < 0) {
                json_object_put(c);
                return r;
        }

        b = calloc(1, sizeof(StorageBackend));
        if (!b) {
                json_object_put(c);
                return -ENOMEM;
        }
        b->config = c;
        b->id = strdup(id);
        b->name = strdup(name);
        b->type = (BackendType) kind;
        b->secret = TAKE_PTR(secret);
        b->enabled = true;
        b->created_at = now_realtime_usec();
        if (!b->id || !b->name) {
                storage_free(b);
                return -ENOMEM;
        }
        r = store_storage_insert(m->store, b);
        if (r < 0) {
                storage_free(b);
                return bus_store_error(error, r, "add the storage backend");
        }
        r = storage_attach(m, b);
        if (r < 0) {
                (void) store_storage_delete(m->store, b->id);
                storage_free(b);
                return r;
        }
        *ret = b;
        return 0;
}

int storage_update(StorageBackend *b, sd_bus_message *changes, bool check_only, sd_bus_error *error) {
        Manager *m = b->manager;
        _cleanup_free_ char *secret = NULL;
        json_object *c = NULL;
        const char *name = NULL;
        int enabled = -1, r;

        r = json_object_deep_copy(b->config, &c, NULL);
        if (r < 0)
                return -ENOMEM;
        if (b->secret && !(secret = strdup(b->secret))) {
                json_object_put(c);
                return -ENOMEM;
        }
        r = read_fields(changes, b->type, true, c, &secret, &name, &enabled, error);
        if (r >= 0 && name && !storage_name_is_valid(name))
                r = sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                      "A backend name is 1 to 64 letters, digits, '.', '_' or '-'.");
        if (r >= 0 && name && find_by_name(m, name) && find_by_name(m, name) != b)
                r = sd_bus_error_setf(error, PB_ERROR_ALREADY_EXISTS,
                                      "A storage backend named %s exists already; pick another name.", name);
        if (r >= 0)
                r = validate(b->type, c, secret, error);
        if (r < 0 || check_only) {
                json_object_put(c);
                return r;
        }

        StorageBackend updated = *b;
        _cleanup_free_ char *new_name = NULL;
        if (name && !(new_name = strdup(name))) {
                json_object_put(c);
                return -ENOMEM;
        }
        updated.config = c;
        updated.secret = secret;
        updated.name = new_name ?: b->name;
        if (enabled >= 0)
                updated.enabled = enabled;
        r = store_storage_update(m->store, &updated);
        if (r < 0) {
                json_object_put(c);
                return bus_store_error(error, r, "update the storage backend");
        }
        json_object_put(b->config);
        b->config = c;
        if (b->secret)
                explicit_bzero(b->secret, strlen(b->secret));
        free(b->secret);
        b->secret = TAKE_PTR(secret);
        if (new_name) {
                free(b->name);
                b->name = TAKE_PTR(new_name);
        }
        b->enabled = updated.enabled;

        _cleanup_free_ char *path = storage_path(b);
        if (path)
                (void) sd_bus_emit_properties_changed(m->bus, path, PB_IFACE("StorageBackend"), "Name",
                                                      "Config", "Enabled", NULL);
        return 0;
}

int storage_delete(StorageBackend *b, sd_bus_error *error) {
        Manager *m = b->manager;
        _cleanup_free_ char *sessions = NULL, *path = storage_path(b), *id = strdup(b->id);
        int r;

        if (!path || !id)
                return -ENOMEM;
        r = store_storage_sessions(m->store, b->id, &sessions);
        if (r < 0)
                return r;
        if (sessions)
                return sd_bus_error_setf(
                        error, PB_ERROR_IN_USE,
                        "Storage backend %s is used by clone sessions %s; delete those first.", b->name,
                        sessions);
        r = store_storage_delete(m->store, b->id);
        if (r < 0)
                return bus_store_error(error, r, "delete the storage backend");
        hashmap_remove(m->storages, b->id);
        storage_free(b);
        bus_manager_emit_removed(m, NULL, id, path);
        return 0;
}

int storage_resolve(Manager *m, const char *name, StorageBackend **ret, sd_bus_error *error) {
        StorageBackend *b = hashmap_get(m->storages, name), *found = NULL;
        size_t matches = 0;

        if (!b)
                b = find_by_name(m, name);
        if (b) {
                *ret = b;
                return 0;
        }
        HASHMAP_FOREACH (b, m->storages, i)
                if (strlen(name) >= 4 && startswith(b->id, name)) {
                        found = b;
                        matches++;
                }
        if (matches == 1) {
                *ret = found;
                return 0;
        }
        return sd_bus_error_setf(
                error, PB_ERROR_NO_SUCH_STORAGE,
                "No storage backend \"%.64s\": give its name or id (purebootctl storage list "
                "shows them).",
                name);
}

int storage_parse_luns(const char *s, int **ret_luns) {
        _cleanup_free_ int *luns = NULL;
        size_t n = 0;

        if (isempty(s))
                return -EINVAL;
        for (const char *p = s; *p;) {
                char *end;
                long a = strtol(p, &end, 10), b;
                if (end == p || a < 0 || a > 16383)
                        return -EINVAL;
                b = a;
                if (*end == '-') {
                        p = end + 1;
                        b = strtol(p, &end, 10);
                        if (end == p || b < a || b > 16383 || b - a > 1023)
                                return -EINVAL;
                }
                if (*end && *end != ',')
                        return -EINVAL;
                for (long l = a; l <= b; l++) {
                        int *x = realloc(luns, (n + 1) * sizeof(int));
                        if (!x)
                                return -ENOMEM;
                        luns = x;
                        luns[n++] = (int) l;
                }
                p = *end ? end + 1 : end;
                if (*end && !*p)
                        return -EINVAL;
        }
        if (n > 1024)
                return -E2BIG;
        if (ret_luns)
                *ret_luns = TAKE_PTR(luns);
        return (int) n;
}

bool storage_is_managed(const StorageBackend *b) {
        return streq_ptr(get_string(b->config, "manage"), "tgtadm");
}

StorageLocation storage_location(const StorageBackend *b) {
        return (StorageLocation){ .type = b->type, .config = b->config, .secret = b->secret };
}

int storage_pool(const StorageBackend *b, int **ret_luns) {
        const char *luns = get_string(b->config, "luns");
        json_object *v;
        if (luns)
                return storage_parse_luns(luns, ret_luns);
        if (!json_object_object_get_ex(b->config, "lun", &v))
                return -ENOENT;
        *ret_luns = malloc(sizeof(int));
        if (!*ret_luns)
                return -ENOMEM;
        (*ret_luns)[0] = (int) json_object_get_int64(v);
        return 1;
}

/* tgtadm of the local tgtd: the target's tid and its LUNs with their backing files, from "--op show". */
int storage_tgt_find(const char *iqn, int *ret_tid, TgtLun **ret_luns, size_t *ret_n, char **ret_why) {
        _cleanup_free_ char *out = NULL;
        _cleanup_free_ TgtLun *luns = NULL;
        size_t n = 0;
        int tid = -1, r;
        bool ours = false;

        r = tool_runl(&out, "tgtadm", "--lld", "iscsi", "--mode", "target", "--op", "show", NULL);
        if (r != 0) {
                (void) asprintf(ret_why, "tgtadm could not ask tgtd for its targets (is tgtd running on this host?): %s",
                                out ? tool_last_line(out) : "tgtadm did not run");
                return -EIO;
        }
        for (char *save = NULL, *line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                int t, l;
                char name[256];
                const char *path;
                if (sscanf(line, "Target %d: %255s", &t, name) == 2) {
                        ours = streq(name, iqn);
                        if (ours)
                                tid = t;
                } else if (ours && sscanf(line, " LUN: %d", &l) == 1) {
                        TgtLun *x = realloc(luns, (n + 1) * sizeof(TgtLun));
                        if (!x)
                                return -ENOMEM;
                        luns = x;
                        luns[n++] = (TgtLun){ .lun = l };
                } else if (ours && n > 0 && (path = strstr(line, "Backing store path: ")))
                        snprintf(luns[n - 1].path, sizeof(luns[n - 1].path), "%s", path + strlen("Backing store path: "));
        }
        if (tid < 0) {
                (void) asprintf(ret_why, "tgtd on this host has no target %s; create it with tgtadm --op new "
                                "--mode target", iqn);
                return -ENOENT;
        }
        *ret_tid = tid;
        if (ret_luns) {
                *ret_luns = TAKE_PTR(luns);
                *ret_n = n;
        }
        return 0;
}

/* In a worker: total and available bytes. A pool's available space is its largest LUN that no session
 * holds (busy); a managed target's is the free space of backing_dir. */
int storage_measure(const StorageBackend *b, const int *busy, size_t n_busy, uint64_t *ret_total,
                    uint64_t *ret_available, char **ret_why) {
        StorageLocation l = storage_location(b);
        _cleanup_free_ int *luns = NULL;
        int n, r;

        *ret_total = *ret_available = 0;
        if (b->type == BACKEND_NFS) {
                struct nfs_context *nfs;
                r = storage_nfs_connect(&l, false, &nfs, ret_why);
                if (r < 0)
                        return r;
                r = storage_nfs_space(nfs, ret_total, ret_available, ret_why);
                nfs_destroy_context(nfs);
                return r;
        }
        if (storage_is_managed(b)) {
                const char *dir = get_string(b->config, "backing_dir");
                struct statvfs st;
                if (statvfs(dir, &st) < 0) {
                        r = -errno;
                        (void) asprintf(ret_why, "backing_dir %s cannot be read: %s", dir, strerror(-r));
                        return r;
                }
                *ret_total = (uint64_t) st.f_blocks * st.f_frsize;
                *ret_available = (uint64_t) st.f_bavail * st.f_frsize;
                return 0;
        }
        n = storage_pool(b, &luns);
        if (n < 0)
                return n;
        for (int i = 0; i < n; i++) {
                IscsiLun lun = {};
                bool held = false;
                r = storage_iscsi_connect(&l, luns[i], "controller", &lun, ret_why);
                if (r >= 0)
                        r = storage_iscsi_capacity(&lun, ret_why);
                storage_iscsi_disconnect(&lun);
                if (r < 0)
                        return r;
                for (size_t j = 0; j < n_busy; j++)
                        held = held || busy[j] == luns[i];
                *ret_total += lun.size;
                if (!held)
                        *ret_available = MAX(*ret_available, lun.size);
        }
        return 0;
}

typedef struct Probe {
        StorageBackend *backend; /* read in the child only */
        char *id;
        bool test;
        StorageDone done;
        void *userdata;
} Probe;

static json_object *probe_child(void *data, char **ret_why) {
        Probe *p = data;
        const StorageBackend *b = p->backend;
        StorageLocation l = storage_location(b);
        _cleanup_free_ char *report = NULL;
        uint64_t total = 0, available = 0;
        int r;

        if (p->test && b->type == BACKEND_NFS) {
                struct nfs_context *nfs;
                const char *version = get_string(b->config, "version");
                r = storage_nfs_connect(&l, false, &nfs, ret_why);
                if (r < 0)
                        return NULL;
                r = storage_nfs_probe(nfs, ret_why);
                if (r >= 0)
                        r = storage_nfs_space(nfs, &total, &available, ret_why);
                nfs_destroy_context(nfs);
                if (r < 0)
                        return NULL;
                (void) asprintf(&report, "Mounted %s:%s over NFSv%s; a probe file was written, read back and removed.",
                                get_string(b->config, "server"), get_string(b->config, "export"), version ?: "3");
        } else if (p->test) {
                IscsiLun lun = {};
                int tid = -1;
                if (storage_is_managed(b) && storage_tgt_find(get_string(b->config, "target"), &tid, NULL, NULL, ret_why) < 0)
                        return NULL;
                /* Log in (LUN 0 on a managed target: it has only its controller LUN until a session makes
                 * one); the LUNs' capacities are read by the measuring below. */
                _cleanup_free_ int *luns = NULL;
                int n = storage_is_managed(b) ? 0 : storage_pool(b, &luns);
                if (n < 0 || storage_iscsi_connect(&l, n > 0 ? luns[0] : 0, "controller", &lun, ret_why) < 0)
                        return NULL;
                storage_iscsi_disconnect(&lun);
                if (storage_measure(b, NULL, 0, &total, &available, ret_why) < 0)
                        return NULL;
                (void) asprintf(&report, "Logged in to %s at %s%s%s.", get_string(b->config, "target"),
                                get_string(b->config, "portal"), get_string(b->config, "chap_user") ? " with CHAP" : "",
                                tid >= 0 ? " (tgtd on this host serves it)" : "");
        } else if (storage_measure(b, NULL, 0, &total, &available, ret_why) < 0)
                return NULL;

        json_object *o = json_object_new_object();
        json_object_object_add(o, "total", json_object_new_int64((int64_t) total));
        json_object_object_add(o, "available", json_object_new_int64((int64_t) available));
        if (report)
                json_object_object_add(o, "report", json_object_new_string(report));
        return o;
}

static void on_probed(Manager *m, json_object *result, const char *why, void *userdata) {
        Probe *p = userdata;
        StorageBackend *b = hashmap_get(m->storages, p->id);
        _cleanup_free_ char *report = NULL;

        if (b && !why && result) {
                StorageBackend updated = *b;
                updated.total_bytes = (uint64_t) json_get_int(result, "total");
                updated.available_bytes = (uint64_t) json_get_int(result, "available");
                if (store_storage_update(m->store, &updated) >= 0) {
                        b->total_bytes = updated.total_bytes;
                        b->available_bytes = updated.available_bytes;
                        _cleanup_free_ char *path = storage_path(b);
                        if (path)
                                (void) sd_bus_emit_properties_changed(m->bus, path, PB_IFACE("StorageBackend"),
                                                                      "TotalBytes", "AvailableBytes", NULL);
                }
                const char *r = json_get_string(result, "report");
                (void) asprintf(&report, "%s%s%s available of %s.", strempty(r), r ? " " : "",
                                FORMAT_BYTES(b->available_bytes), FORMAT_BYTES(b->total_bytes));
        }
        p->done(m, b, report, why ?: b ? NULL : "the backend was deleted meanwhile", p->userdata);
        free(p->id);
        free(p);
}

static int probe(StorageBackend *b, bool test, StorageDone done, void *userdata) {
        _cleanup_free_ char *what = NULL;
        Probe *p;
        int r;

        if (asprintf(&what, "%s of storage backend %s", test ? "test" : "space check", b->name) < 0)
                return -ENOMEM;
        p = calloc(1, sizeof(Probe));
        if (!p || !(p->id = strdup(b->id))) {
                free(p);
                return -ENOMEM;
        }
        *p = (Probe){ .backend = b, .id = p->id, .test = test, .done = done, .userdata = userdata };
        r = worker_start(b->manager, what, probe_child, p, on_probed, p, NULL);
        if (r < 0) {
                free(p->id);
                free(p);
        }
        return r;
}

int storage_test(StorageBackend *b, StorageDone done, void *userdata) {
        return probe(b, true, done, userdata);
}

int storage_refresh_space(StorageBackend *b, StorageDone done, void *userdata) {
        return probe(b, false, done, userdata);
}
