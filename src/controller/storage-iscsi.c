/* SPDX-License-Identifier: MIT */
/* iSCSI backends: a target (portal=, target=, CHAP) reached with libiscsi from the controller. Each session
 * stages on a LUN of its own: with manage=tgtadm one made for it on this host's tgtd, on a sparse file in
 * backing_dir= ({"kind": "file", "path"} then {"kind": "tgt-lun", "tid", "lun"}); else the smallest free
 * one of a pool the administrator made (lun= or luns=; {"kind": "pool-lun", "lun"}), which stays. */
#include <ctype.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "address.h"
#include "config.h"
#include "ini.h"
#include "pureboot-errors.h"
#include "staging.h"
#include "storage-driver.h"
#include "tool.h"
#include "util.h"

static const StorageField iscsi_fields[] = {
        { "portal", 's' },     { "target", 's' }, { "lun", 'u' },  { "chap_user", 's' },   { "chap_secret", 's', true },
        { "manage", 's' },     { "luns", 's' },   { "backing_dir", 's' },
};

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

/* "1-4,7": the LUN numbers listed (in order given); returns how many, or < 0 if it does not parse. */
static int parse_luns(const char *s, int **ret_luns) {
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

/* manage=tgtadm: the controller creates a LUN per session on the tgtd of its own host. */
static bool is_managed(const StorageBackend *b) {
        return streq_ptr(json_get_string(b->config, "manage"), "tgtadm");
}

/* The LUNs a pool stages on (luns=, or the one lun=); returns how many. */
static int pool_luns(const StorageBackend *b, int **ret_luns) {
        const char *luns = json_get_string(b->config, "luns");
        json_object *v;
        if (luns)
                return parse_luns(luns, ret_luns);
        if (!json_object_object_get_ex(b->config, "lun", &v))
                return -ENOENT;
        *ret_luns = malloc(sizeof(int));
        if (!*ret_luns)
                return -ENOMEM;
        (*ret_luns)[0] = (int) json_object_get_int64(v);
        return 1;
}

static int iscsi_validate(json_object *config, const char *secret, sd_bus_error *error) {
        const char *v;

        v = json_get_string(config, "portal");
        if (!v || !portal_is_valid(v))
                return sd_bus_error_setf(
                        error, PB_ERROR_INVALID_ARGUMENT,
                        "An iSCSI backend needs portal=HOST[:PORT], such as 192.0.2.10:3260%s%.64s%s.",
                        v ? " (not \"" : "", strempty(v), v ? "\")" : "");
        v = json_get_string(config, "target");
        if (!v || !iqn_is_valid(v))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "An iSCSI backend needs target=IQN, such as "
                                         "iqn.2024-01.org.example:staging%s%.64s%s.",
                                         v ? " (not \"" : "", strempty(v), v ? "\")" : "");
        v = json_get_string(config, "manage");
        if (v && !STR_IN_SET(v, "none", "tgtadm"))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "manage=\"%.16s\" is not one of none, tgtadm.", v);
        bool managed = streq_ptr(v, "tgtadm");
        v = json_get_string(config, "chap_user");
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
        v = json_get_string(config, "backing_dir");
        if (managed != !!v || (v && !path_is_safe(v, 1024)))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         managed ? "manage=tgtadm needs backing_dir=PATH, an absolute directory on "
                                                   "this host where LUN files are created."
                                                 : "backing_dir is only for manage=tgtadm.");
        v = json_get_string(config, "luns");
        if (managed && (v || json_object_object_get_ex(config, "lun", NULL)))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "With manage=tgtadm the controller creates a LUN per session; drop lun "
                                         "and luns.");
        if (!managed && !v == !json_object_object_get_ex(config, "lun", NULL))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "Name the LUN to stage on with lun=N, or a pool of LUNs with luns=1-4,7 "
                                         "(or let the controller create them with manage=tgtadm).");
        if (v && parse_luns(v, NULL) < 0)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "luns=\"%.64s\" is not a list of LUN numbers and ranges such as 1-4,7.", v);
        return 0;
}

/* A managed target's space is backing_dir's, known ahead; a pool's free LUNs are counted when provisioning. */
static bool iscsi_space_is_measured(const StorageBackend *b) {
        return is_managed(b);
}

/* From tgtadm: the tid of target iqn on this host's tgtd and the LUNs it has, with their backing files. */
typedef struct TgtLun {
        int lun;
        char path[512];
} TgtLun;

static int tgt_find(const char *iqn, int *ret_tid, TgtLun **ret_luns, size_t *ret_n, char **ret_why) {
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

/* A pool's available space is its largest LUN that no session holds (busy); a managed target's is the free
 * space of backing_dir. */
static int iscsi_measure(const StorageBackend *b, const int *busy, size_t n_busy, uint64_t *ret_total,
                         uint64_t *ret_available, char **ret_why) {
        StorageLocation l = storage_location(b);
        _cleanup_free_ int *luns = NULL;
        int n, r;

        *ret_total = *ret_available = 0;
        if (is_managed(b)) {
                const char *dir = json_get_string(b->config, "backing_dir");
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
        n = pool_luns(b, &luns);
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

/* Logs in (to LUN 0 on a managed target: it has only its controller LUN until a session makes one); the
 * LUNs' capacities are read by the measuring that follows. */
static int iscsi_test(const StorageBackend *b, char **ret_report, char **ret_why) {
        StorageLocation l = storage_location(b);
        _cleanup_free_ int *luns = NULL;
        IscsiLun lun = {};
        int tid = -1, n = 0, r;

        if (is_managed(b)) {
                r = tgt_find(json_get_string(b->config, "target"), &tid, NULL, NULL, ret_why);
                if (r < 0)
                        return r;
        } else {
                n = pool_luns(b, &luns);
                if (n < 0)
                        return n;
        }
        r = storage_iscsi_connect(&l, n > 0 ? luns[0] : 0, "controller", &lun, ret_why);
        storage_iscsi_disconnect(&lun);
        if (r < 0)
                return r;
        return asprintf(ret_report, "Logged in to %s at %s%s%s.", json_get_string(b->config, "target"),
                        json_get_string(b->config, "portal"), json_get_string(b->config, "chap_user") ? " with CHAP" : "",
                        tid >= 0 ? " (tgtd on this host serves it)" : "") < 0
                       ? -ENOMEM
                       : 0;
}

static int add_resource(json_object *created, const char *kind, const char *path, int tid, int lun) {
        json_object *o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        json_object_object_add(o, "kind", json_object_new_string(kind));
        if (path)
                json_object_object_add(o, "path", json_object_new_string(path));
        if (tid >= 0)
                json_object_object_add(o, "tid", json_object_new_int(tid));
        if (lun >= 0)
                json_object_object_add(o, "lun", json_object_new_int(lun));
        return json_object_array_add(created, o) < 0 ? -ENOMEM : 0;
}

/* Creates a LUN of its own for the session on the local tgtd. */
static int provision_managed(const StagingRequest *q, json_object *created, int *ret_lun, char **ret_why) {
        const StorageBackend *b = q->backend;
        _cleanup_free_ char *file = NULL, *out = NULL;
        _cleanup_free_ TgtLun *luns = NULL;
        char tid_s[16], lun_s[16];
        size_t n = 0;
        int tid, lun = 1, fd, r;

        if (asprintf(&file, "%s/pureboot-%s.img", json_get_string(b->config, "backing_dir"), q->session) < 0)
                return -ENOMEM;
        r = tgt_find(json_get_string(b->config, "target"), &tid, &luns, &n, ret_why);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) /* a LUN a crashed try left on our file goes first */
                if (streq(luns[i].path, file)) {
                        snprintf(tid_s, sizeof(tid_s), "%d", tid);
                        snprintf(lun_s, sizeof(lun_s), "%d", luns[i].lun);
                        (void) tool_runl(NULL, "tgtadm", "--lld", "iscsi", "--mode", "logicalunit", "--op", "delete",
                                         "--tid", tid_s, "--lun", lun_s, NULL);
                        luns[i].lun = -1;
                }
        for (bool taken = true; taken; lun += taken) {
                taken = false;
                for (size_t i = 0; i < n; i++)
                        taken = taken || luns[i].lun == lun;
        }
        (void) unlink(file);
        fd = open(file, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
        if (fd < 0) {
                r = -errno;
                (void) asprintf(ret_why, "creating the LUN file %s failed: %m.%s", file, config_write_hint(r));
                return r;
        }
        r = add_resource(created, "file", file, -1, -1);
        if (r >= 0 && ftruncate(fd, (off_t) staging_lun_size(q->size)) < 0) {
                r = -errno;
                (void) asprintf(ret_why, "sizing the LUN file %s failed: %m", file);
        }
        close(fd);
        if (r < 0)
                return r;
        snprintf(tid_s, sizeof(tid_s), "%d", tid);
        snprintf(lun_s, sizeof(lun_s), "%d", lun);
        if (tool_runl(&out, "tgtadm", "--lld", "iscsi", "--mode", "logicalunit", "--op", "new", "--tid", tid_s,
                      "--lun", lun_s, "--backing-store", file, NULL) != 0) {
                (void) asprintf(ret_why, "tgtadm could not add LUN %d to target %d: %s", lun, tid,
                                out ? tool_last_line(out) : "it did not run");
                return -EIO;
        }
        *ret_lun = lun;
        return add_resource(created, "tgt-lun", NULL, tid, lun);
}

/* Picks the smallest free LUN of the pool that holds the image. */
static int provision_pool(const StagingRequest *q, json_object *created, int *ret_lun, char **ret_why) {
        const StorageBackend *b = q->backend;
        StorageLocation l = storage_location(b);
        _cleanup_free_ int *luns = NULL;
        uint64_t need = staging_lun_size(q->size), best_size = UINT64_MAX, largest = 0;
        int n = pool_luns(b, &luns), best = -1, r;

        if (n < 0)
                return n;
        for (int i = 0; i < n; i++) {
                IscsiLun lun = {};
                bool held = false;
                for (size_t k = 0; k < q->n_busy; k++)
                        held = held || q->busy[k] == luns[i];
                if (held)
                        continue;
                r = storage_iscsi_connect(&l, luns[i], "controller", &lun, ret_why);
                if (r >= 0)
                        r = storage_iscsi_capacity(&lun, ret_why);
                if (r >= 0 && lun.size >= need && lun.size < best_size) {
                        /* The next upload must not find an old manifest: clear its header now. */
                        _cleanup_free_ uint8_t *zero = calloc(1, lun.block_size);
                        r = zero ? storage_iscsi_pwrite(&lun, zero, lun.block_size, staging_manifest_offset(q->size),
                                                        ret_why)
                                 : -ENOMEM;
                        if (r >= 0) {
                                best = luns[i];
                                best_size = lun.size;
                        }
                }
                storage_iscsi_disconnect(&lun);
                if (r < 0)
                        return r;
                largest = MAX(largest, lun.size);
        }
        if (best < 0)
                return staging_no_space(b, need, q->size, largest, true, ret_why);
        *ret_lun = best;
        return add_resource(created, "pool-lun", NULL, -1, best);
}

static int iscsi_provision(const StagingRequest *q, json_object *created, int *ret_lun, char **ret_why) {
        *ret_lun = -1;
        return is_managed(q->backend) ? provision_managed(q, created, ret_lun, ret_why)
                                      : provision_pool(q, created, ret_lun, ret_why);
}

/* A pool LUN stays: the next upload clears its manifest first. */
static int iscsi_undo(const StorageBackend *b, json_object *resources, char **ret_why) {
        int r = 0;
        (void) b;

        for (size_t i = resources ? json_object_array_length(resources) : 0; r >= 0 && i > 0; i--) {
                json_object *res = json_object_array_get_idx(resources, i - 1);
                const char *kind = json_get_string(res, "kind");
                if (streq_ptr(kind, "file")) {
                        if (unlink(json_get_string(res, "path")) < 0 && errno != ENOENT) {
                                r = -errno;
                                (void) asprintf(ret_why, "removing %s failed: %m", json_get_string(res, "path"));
                        }
                } else if (streq_ptr(kind, "tgt-lun")) {
                        char tid[16], lun[16];
                        _cleanup_free_ char *out = NULL;
                        snprintf(tid, sizeof(tid), "%" PRId64, json_get_int(res, "tid"));
                        snprintf(lun, sizeof(lun), "%" PRId64, json_get_int(res, "lun"));
                        if (tool_runl(&out, "tgtadm", "--lld", "iscsi", "--mode", "logicalunit", "--op", "delete",
                                      "--tid", tid, "--lun", lun, NULL) != 0 &&
                            !strstr(strempty(out), "can't find")) {
                                r = -EIO;
                                (void) asprintf(ret_why, "tgtadm could not delete LUN %s of target %s: %s", lun, tid,
                                                out ? tool_last_line(out) : "it did not run");
                        }
                }
        }
        return r;
}

static char *iscsi_display_path(const StorageBackend *b, const char *session, int lun) {
        char *p;
        (void) session;
        return asprintf(&p, "iscsi://%s/%s/%d", json_get_string(b->config, "portal"),
                        json_get_string(b->config, "target"), lun) < 0
                       ? NULL
                       : p;
}

static void iscsi_describe(const StorageBackend *b, const char *session, json_object *resources, json_object *o) {
        int64_t lun = -1;
        bool fresh = false;
        (void) session;

        for (size_t i = 0; resources && i < json_object_array_length(resources); i++) {
                json_object *x = json_object_array_get_idx(resources, i);
                if (STR_IN_SET(strempty(json_get_string(x, "kind")), "tgt-lun", "pool-lun")) {
                        lun = json_get_int(x, "lun");
                        fresh = streq(json_get_string(x, "kind"), "tgt-lun");
                }
        }
        json_object_object_add(o, "server", json_object_new_string(json_get_string(b->config, "portal")));
        json_object_object_add(o, "path", json_object_new_string(json_get_string(b->config, "target")));
        json_object_object_add(o, "lun", json_object_new_int64(lun));
        /* A LUN made for this session on a sparse file reads zeroes: zero runs need not be sent. */
        json_object_object_add(o, "zeroed", json_object_new_boolean(fresh));
        if (json_get_string(b->config, "chap_user")) {
                json_object_object_add(o, "chapUser", json_object_new_string(json_get_string(b->config, "chap_user")));
                json_object_object_add(o, "chapSecret", json_object_new_string(strempty(b->secret)));
        }
}

const StorageDriver storage_driver_iscsi = {
        .type = BACKEND_ISCSI,
        .fields = iscsi_fields,
        .n_fields = ELEMENTSOF(iscsi_fields),
        .fields_help = "iSCSI takes portal, target, lun, luns, chap_user, chap_secret, manage, backing_dir.",
        .validate = iscsi_validate,
        .space_is_measured = iscsi_space_is_measured,
        .measure = iscsi_measure,
        .test = iscsi_test,
        .provision = iscsi_provision,
        .undo = iscsi_undo,
        .display_path = iscsi_display_path,
        .describe = iscsi_describe,
};
