/* SPDX-License-Identifier: MIT */
/* Base images and per-Pi overlays of the NFS root. Imports run in a child process, so that extracting a
 * root filesystem of gigabytes never stalls the bus; the child writes only below a temporary directory of
 * the base directory and renames it into place (refusing to replace a name) when the archive ended well. */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <systemd/sd-id128.h>
#include <unistd.h>

#include "log.h"
#include "node.h"
#include "nfsroot.h"
#include "pureboot-errors.h"
#include "util.h"
#include "worker.h"


void nfsroot_node_done(NfsRootNode *n) {
        free(n->serial);
        free(n->base);
        free(n->hostname);
        free(n->machine_id);
        *n = (NfsRootNode){};
}

bool nfsroot_name_is_valid(const char *name) {
        size_t n = name ? strlen(name) : 0;
        if (n == 0 || n > 64 || !strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", name[0]))
                return false;
        return strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}

static char *dir_of(Manager *m, const char *sub, const char *name) {
        char *p;
        const Config *c = &m->config;
        if (name ? asprintf(&p, "%s/%s/%s", c->nfsroot_path, sub, name) < 0 : asprintf(&p, "%s/%s", c->nfsroot_path, sub) < 0)
                return NULL;
        return p;
}

int nfsroot_ensure(Manager *m, sd_bus_error *error) {
        _cleanup_free_ char *base = dir_of(m, m->config.nfsroot_base_dir, NULL),
                            *nodes = dir_of(m, m->config.nfsroot_nodes_dir, NULL);
        int r;
        if (!base || !nodes)
                return -ENOMEM;
        /* Only root goes in: what the images hold is the Pis', not the server's local users'. */
        r = mkdir_p(base, 0700);
        if (r >= 0)
                r = mkdir_p(nodes, 0700);
        if (r >= 0 && (chmod(base, 0700) < 0 || chmod(nodes, 0700) < 0))
                r = -errno;
        if (r < 0)
                return sd_bus_error_set_errnof(error, -r,
                                               "Cannot create the NFS root at %s: %s. Check [NfsRoot] Path= "
                                               "in controller.conf.%s",
                                               m->config.nfsroot_path, strerror(-r), config_write_hint(r));
        return 0;
}

static int compare_strings(const void *a, const void *b) {
        return strcmp(*(const char *const *) a, *(const char *const *) b);
}

/* The names of the directories in dir (not starting with '.'), sorted. */
static int list_dirs(const char *dir, char ***ret) {
        _cleanup_(closedirp) DIR *d = opendir(dir);
        _cleanup_strv_free_ char **l = strv_new(NULL);

        if (!l)
                return -ENOMEM;
        if (!d) {
                if (errno != ENOENT)
                        return -errno;
                *ret = TAKE_PTR(l);
                return 0;
        }
        for (struct dirent *e; (e = readdir(d));) {
                if (e->d_name[0] == '.' || e->d_type != DT_DIR)
                        continue;
                if (strv_extend(&l, e->d_name) < 0)
                        return -ENOMEM;
        }
        qsort(l, strv_length(l), sizeof(char *), compare_strings);
        *ret = TAKE_PTR(l);
        return 0;
}

int nfsroot_list_bases(Manager *m, char ***ret) {
        _cleanup_free_ char *dir = dir_of(m, m->config.nfsroot_base_dir, NULL);
        return dir ? list_dirs(dir, ret) : -ENOMEM;
}

int nfsroot_list_nodes(Manager *m, char ***ret) {
        _cleanup_free_ char *dir = dir_of(m, m->config.nfsroot_nodes_dir, NULL);
        return dir ? list_dirs(dir, ret) : -ENOMEM;
}

/* What an import leaves out or changes, said in its answer. */
typedef struct ImportNotes {
        unsigned special, setuid;   /* device nodes, FIFOs and sockets left out; setuid/setgid bits or file
                                     * capabilities cleared */
        json_object *special_names; /* the first few left out */
} ImportNotes;

/* Removes the file capabilities (the security.capability attribute) of e, keeping its other attributes;
 * returns whether it had any, or -ENOMEM. */
static int drop_file_capabilities(struct archive_entry *e) {
        const char *name;
        const void *value;
        size_t size, n = 0, count = (size_t) archive_entry_xattr_reset(e);
        struct archive_entry *copy;
        bool found = false;

        while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK)
                found = found || streq(name, "security.capability");
        if (!found)
                return 0;
        /* The values belong to e until it is cleared: keep the others on a scratch entry meanwhile. */
        copy = archive_entry_new();
        if (!copy)
                return -ENOMEM;
        archive_entry_xattr_reset(e);
        while (n++ < count && archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK)
                if (!streq(name, "security.capability"))
                        archive_entry_xattr_add_entry(copy, name, value, size);
        archive_entry_xattr_clear(e);
        archive_entry_xattr_reset(copy);
        while (archive_entry_xattr_next(copy, &name, &value, &size) == ARCHIVE_OK)
                archive_entry_xattr_add_entry(e, name, value, size);
        archive_entry_free(copy);
        return 1;
}

/* Device nodes, FIFOs and sockets are not imported: under an exported directory a raw block device of the
 * server or a FIFO would be anyone's, and a diskless root gets /dev from devtmpfs anyway. Setuid and setgid
 * bits and file capabilities are cleared unless asked for (keep_setuid): an imported privileged program
 * runs on the server too. Returns whether to skip the entry. */
static bool import_filter(struct archive_entry *e, bool keep_setuid, ImportNotes *notes) {
        mode_t type = archive_entry_filetype(e), perm = archive_entry_perm(e);

        if (type == AE_IFCHR || type == AE_IFBLK || type == AE_IFIFO || type == AE_IFSOCK) {
                if (notes->special++ < 5)
                        json_object_array_add(notes->special_names,
                                              json_object_new_string(archive_entry_pathname(e)));
                return true;
        }
        if (!keep_setuid) {
                bool had = perm & (S_ISUID | S_ISGID);
                archive_entry_set_perm(e, perm & ~(mode_t) (S_ISUID | S_ISGID));
                if (drop_file_capabilities(e) != 0 || had)
                        notes->setuid++;
        }
        return false;
}

/* In the child: reads the archive on fd into dir (the current directory). Returns NULL or why not. */
static char *extract(int fd, bool keep_setuid, ImportNotes *notes) {
        struct archive *in = archive_read_new(), *out = archive_write_disk_new();
        struct archive_entry *e;
        char *why = NULL;
        int r;

        archive_read_support_filter_all(in);
        archive_read_support_format_tar(in);
        archive_read_support_format_gnutar(in);
        /* SECURE_*: refuse absolute names, "..", and anything reached through a symlink — also for hard
         * link targets — so nothing lands outside the new image. */
        archive_write_disk_set_options(out, ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_OWNER |
                                                    ARCHIVE_EXTRACT_ACL | ARCHIVE_EXTRACT_XATTR |
                                                    ARCHIVE_EXTRACT_FFLAGS | ARCHIVE_EXTRACT_SECURE_SYMLINKS |
                                                    ARCHIVE_EXTRACT_SECURE_NODOTDOT |
                                                    ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS);
        archive_write_disk_set_standard_lookup(out);
        if (archive_read_open_fd(in, fd, 64 * 1024) != ARCHIVE_OK) {
                (void) asprintf(&why, "not a tar archive PureBoot can read: %s", archive_error_string(in));
                goto done;
        }
        while ((r = archive_read_next_header(in, &e)) != ARCHIVE_EOF) {
                const void *buf;
                size_t size;
                la_int64_t offset;
                if (r < ARCHIVE_WARN) {
                        (void) asprintf(&why, "the archive is damaged: %s", archive_error_string(in));
                        goto done;
                }
                if (import_filter(e, keep_setuid, notes)) {
                        (void) archive_read_data_skip(in);
                        continue;
                }
                /* A warning is something of the entry not restored (an owner, a mode, an attribute): the
                 * image would not be the one archived, so it is an error too. */
                if (archive_write_header(out, e) != ARCHIVE_OK) {
                        (void) asprintf(&why, "refused \"%s\": %s", archive_entry_pathname(e), archive_error_string(out));
                        goto done;
                }
                while ((r = archive_read_data_block(in, &buf, &size, &offset)) == ARCHIVE_OK)
                        if (archive_write_data_block(out, buf, size, offset) < ARCHIVE_WARN) {
                                (void) asprintf(&why, "failed to write \"%s\": %s", archive_entry_pathname(e),
                                                archive_error_string(out));
                                goto done;
                        }
                if (r != ARCHIVE_EOF) {
                        (void) asprintf(&why, "the archive is damaged at \"%s\": %s", archive_entry_pathname(e),
                                        archive_error_string(in));
                        goto done;
                }
                if (archive_write_finish_entry(out) != ARCHIVE_OK) {
                        (void) asprintf(&why, "failed to finish \"%s\": %s", archive_entry_pathname(e),
                                        archive_error_string(out));
                        goto done;
                }
        }
        /* Directory times and modes are set at the close. */
        if (archive_write_close(out) != ARCHIVE_OK)
                (void) asprintf(&why, "failed to finish the image: %s", archive_error_string(out));
done:
        archive_read_free(in);
        archive_write_free(out);
        return why;
}

typedef struct ImportJob {
        const char *base_dir, *name;
        int fd;
        bool keep_setuid;
} ImportJob;

/* In the child: extracts into a temporary directory, then renames it into place. */
static json_object *import_child(void *data, char **ret_why) {
        ImportJob *j = data;
        _cleanup_free_ char *tmp = NULL, *final = NULL, *why = NULL;
        ImportNotes notes = { .special_names = json_object_new_array() };
        json_object *result;

        if (asprintf(&tmp, "%s/.import-%s-XXXXXX", j->base_dir, j->name) < 0 ||
            asprintf(&final, "%s/%s", j->base_dir, j->name) < 0)
                return NULL;
        if (!mkdtemp(tmp)) {
                (void) asprintf(ret_why, "cannot make a directory in %s: %m.%s", j->base_dir,
                                config_write_hint(-errno));
                return NULL;
        }
        if (chdir(tmp) < 0) {
                (void) asprintf(ret_why, "cannot enter %s: %m", tmp);
                (void) rmdir(tmp);
                return NULL;
        }
        (void) umask(0022);
        why = extract(j->fd, j->keep_setuid, &notes);
        if (!why && chmod(tmp, 0755) < 0)
                (void) asprintf(&why, "cannot open up %s: %m", tmp);
        /* The image appears under its name whole, or not at all; an existing one is never replaced. */
        if (!why && syscall(SYS_renameat2, AT_FDCWD, tmp, AT_FDCWD, final, RENAME_NOREPLACE) < 0)
                (void) asprintf(&why, errno == EEXIST ? "a base image %s exists already" : "cannot rename it into "
                                "place: %m", j->name);
        if (why) {
                (void) chdir("/");
                (void) rm_rf(tmp);
                *ret_why = TAKE_PTR(why);
                json_object_put(notes.special_names);
                return NULL;
        }
        result = json_object_new_object();
        json_object_object_add(result, "special", json_object_new_int64(notes.special));
        json_object_object_add(result, "specialNames", notes.special_names);
        json_object_object_add(result, "setuid", json_object_new_int64(notes.setuid));
        return result;
}

/* One sentence for the operator: what was imported, and what of the archive was not, or not as it was. */
static char *import_summary(const char *name, json_object *result) {
        int64_t special = json_get_int(result, "special"), setuid = json_get_int(result, "setuid");
        _cleanup_free_ char *list = NULL;
        json_object *names = NULL;
        char *s = NULL;

        if (strextend_printf(&s, "Imported base image %s.", name) < 0)
                return NULL;
        if (special > 0) {
                (void) json_object_object_get_ex(result, "specialNames", &names);
                for (size_t i = 0; i < json_object_array_length(names); i++)
                        if (strextend_printf(&list, "%s%s", i > 0 ? ", " : "",
                                             json_object_get_string(json_object_array_get_idx(names, i))) <
                            0)
                                return mfree(s);
                if (strextend_printf(&s,
                                     " Left out %" PRIi64
                                     " device node%s, FIFO%s or socket%s (%s%s): a diskless root "
                                     "gets /dev from devtmpfs.",
                                     special, special == 1 ? "" : "s", special == 1 ? "" : "s",
                                     special == 1 ? "" : "s", strempty(list), special > 5 ? ", …" : "") < 0)
                        return mfree(s);
        }
        if (setuid > 0 &&
            strextend_printf(&s,
                             " Cleared the setuid/setgid bits or file capabilities of %" PRIi64 " file%s "
                             "(import with keep_setuid to keep them).",
                             setuid, setuid == 1 ? "" : "s") < 0)
                return mfree(s);
        return s;
}

typedef struct ImportDone {
        char *name;
        NfsRootImportDone done;
        void *userdata;
} ImportDone;

static void on_import_exit(Manager *m, json_object *result, const char *why, void *userdata) {
        ImportDone *d = userdata;
        _cleanup_free_ char *summary = why ? NULL : import_summary(d->name, result);
        if (!why)
                log_info("%s", strna(summary));
        d->done(m, d->name, why, summary, d->userdata);
        free(d->name);
        free(d);
}

int nfsroot_import(Manager *m, const char *name, int fd, bool keep_setuid, NfsRootImportDone done,
                   void *userdata, sd_bus_error *error) {
        _cleanup_free_ char *base_dir = dir_of(m, m->config.nfsroot_base_dir, NULL), *existing = NULL, *what = NULL;
        struct stat st;
        int r;

        if (!base_dir || !(existing = dir_of(m, m->config.nfsroot_base_dir, name)) ||
            asprintf(&what, "import of base image %s", name) < 0)
                return -ENOMEM;
        r = nfsroot_ensure(m, error);
        if (r < 0)
                return r;
        if (lstat(existing, &st) >= 0)
                return sd_bus_error_setf(error, PB_ERROR_ALREADY_EXISTS, "A base image %s exists already; pick "
                                         "another name or delete it from %s first.", name, base_dir);
        if (worker_running(m, what))
                return sd_bus_error_setf(error, PB_ERROR_ALREADY_EXISTS, "Base image %s is being imported "
                                         "already.", name);
        ImportDone *d = calloc(1, sizeof(ImportDone));
        if (!d || !(d->name = strdup(name))) {
                free(d);
                return -ENOMEM;
        }
        d->done = done;
        d->userdata = userdata;
        ImportJob job = { .base_dir = base_dir, .name = name, .fd = fd, .keep_setuid = keep_setuid };
        r = worker_start(m, what, import_child, &job, on_import_exit, d, NULL);
        if (r < 0) {
                free(d->name);
                free(d);
        }
        return r;
}

static int check_serial(const char *serial, char **ret, sd_bus_error *error) {
        if (node_serial_normalize(serial, ret) < 0)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "\"%.32s\" is not a Raspberry Pi serial: it has exactly 8 hex digits "
                                         "(the last 8 of /proc/device-tree/serial-number).", serial);
        return 0;
}

/* The base named, else the default, else the only one. */
static int pick_base(Manager *m, const char *base, char **ret, sd_bus_error *error) {
        _cleanup_strv_free_ char **bases = NULL;
        int r;

        if (isempty(base))
                base = m->config.nfsroot_default_base;
        r = nfsroot_list_bases(m, &bases);
        if (r < 0)
                return r;
        if (isempty(base) && strv_length(bases) == 1)
                base = bases[0];
        if (isempty(base))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT, "Name the base image (there are %zu; set "
                                         "[NfsRoot] DefaultBaseImage= to have one used by default).",
                                         strv_length(bases));
        if (!nfsroot_name_is_valid(base) || !strv_contains((const char *const *) bases, base))
                return sd_bus_error_setf(error, PB_ERROR_NO_SUCH_BASE_IMAGE, "No base image \"%.64s\" in %s/%s; "
                                         "purebootctl nfsroot list shows them.", base, m->config.nfsroot_path,
                                         m->config.nfsroot_base_dir);
        *ret = strdup(base);
        return *ret ? 0 : -ENOMEM;
}

static int write_text(const char *dir, const char *name, const char *text) {
        _cleanup_free_ char *path = NULL;
        if (asprintf(&path, "%s/%s", dir, name) < 0)
                return -ENOMEM;
        return write_file_atomic(path, text, strlen(text), 0644);
}

int nfsroot_create_overlay(Manager *m, const char *serial, const char *base, const char *hostname,
                           bool check_only, sd_bus_error *error) {
        _cleanup_free_ char *s = NULL, *b = NULL, *dir = NULL, *etc = NULL, *host = NULL, *record = NULL;
        const char *subdirs[] = { "upper", "work", "merged" };
        char id[SD_ID128_STRING_MAX];
        sd_id128_t machine_id;
        struct stat st;
        int r;

        if ((r = check_serial(serial, &s, error)) < 0 || (r = pick_base(m, base, &b, error)) < 0)
                return r;
        if (isempty(hostname) && asprintf(&host, "pi-%s", s) < 0)
                return -ENOMEM;
        hostname = host ?: hostname;
        if (!hostname_is_valid(hostname) || strchr(hostname, '.'))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "\"%.64s\" is not a host name (letters, "
                                         "digits and inner hyphens, at most 63).",
                                         hostname);
        if (!(dir = dir_of(m, m->config.nfsroot_nodes_dir, s)) || asprintf(&etc, "%s/upper/etc", dir) < 0)
                return -ENOMEM;
        if (lstat(dir, &st) >= 0)
                return sd_bus_error_setf(error, PB_ERROR_ALREADY_EXISTS, "Pi %s has an overlay already; delete it "
                                         "first (purebootctl nfsroot delete %s).", s, s);
        if (check_only)
                return 0;
        r = nfsroot_ensure(m, error);
        if (r < 0)
                return r;
        r = mkdir_exact(dir, 0755);
        if (r < 0)
                return sd_bus_error_set_errnof(error, -r, "Cannot create %s: %s.%s", dir, strerror(-r),
                                               config_write_hint(r));
        r = 0;
        for (size_t i = 0; r >= 0 && i < ELEMENTSOF(subdirs); i++) {
                _cleanup_free_ char *p = NULL;
                if (asprintf(&p, "%s/%s", dir, subdirs[i]) < 0)
                        r = -ENOMEM;
                else
                        r = mkdir_exact(p, 0755);
        }
        if (r >= 0)
                r = mkdir_p(etc, 0755);
        if (r >= 0)
                r = sd_id128_randomize(&machine_id);
        if (r >= 0 && asprintf(&record, "base=%s\nhostname=%s\n", b, hostname) < 0)
                r = -ENOMEM;
        if (r >= 0) {
                char line[SD_ID128_STRING_MAX + 1];
                snprintf(line, sizeof(line), "%s\n", sd_id128_to_string(machine_id, id));
                r = write_text(etc, "machine-id", line);
        }
        if (r >= 0) {
                _cleanup_free_ char *line = NULL;
                r = asprintf(&line, "%s\n", hostname) < 0 ? -ENOMEM : write_text(etc, "hostname", line);
        }
        if (r >= 0)
                r = write_text(dir, "pureboot.conf", record);
        if (r < 0) {
                (void) rm_rf(dir);
                return r == -ENOMEM ? r : sd_bus_error_set_errnof(error, -r, "Cannot create the overlay of %s: %s", s, strerror(-r));
        }
        log_info("Created the overlay of Pi %s on %s (host name %s).", s, b, hostname);
        return 0;
}

int nfsroot_delete_overlay(Manager *m, const char *serial, bool check_only, sd_bus_error *error) {
        _cleanup_free_ char *s = NULL, *dir = NULL;
        struct stat st;
        int r = check_serial(serial, &s, error);
        if (r < 0)
                return r;
        if (!(dir = dir_of(m, m->config.nfsroot_nodes_dir, s)))
                return -ENOMEM;
        if (lstat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
                return sd_bus_error_setf(error, PB_ERROR_NO_SUCH_NODE, "Pi %s has no overlay.", s);
        if (check_only)
                return 0;
        r = rm_rf(dir);
        if (r < 0)
                return sd_bus_error_set_errnof(error, -r, "Cannot remove %s: %s", dir, strerror(-r));
        log_info("Deleted the overlay of Pi %s.", s);
        return 0;
}

/* key=value from the node's pureboot.conf (NULL if absent). */
static char *record_value(const char *text, const char *key) {
        size_t n = strlen(key);
        for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
                if (strncmp(p, key, n) == 0 && p[n] == '=')
                        return strndup(p + n + 1, strcspn(p + n + 1, "\n"));
        return NULL;
}

int nfsroot_node_info(Manager *m, const char *serial, NfsRootNode *ret, sd_bus_error *error) {
        _cleanup_free_ char *s = NULL, *dir = NULL, *conf = NULL, *text = NULL, *mid = NULL, *midtext = NULL;
        struct stat st;
        int r = check_serial(serial, &s, error);
        if (r < 0)
                return r;
        if (!(dir = dir_of(m, m->config.nfsroot_nodes_dir, s)) || asprintf(&conf, "%s/pureboot.conf", dir) < 0 ||
            asprintf(&mid, "%s/upper/etc/machine-id", dir) < 0)
                return -ENOMEM;
        if (stat(dir, &st) < 0)
                return sd_bus_error_setf(error, PB_ERROR_NO_SUCH_NODE, "Pi %s has no overlay.", s);
        (void) read_full_file(conf, &text, NULL);
        (void) read_full_file(mid, &midtext, NULL);
        *ret = (NfsRootNode){
                .serial = TAKE_PTR(s),
                .base = text ? record_value(text, "base") : NULL,
                .hostname = text ? record_value(text, "hostname") : NULL,
                .machine_id = midtext ? strndup(midtext, strcspn(midtext, "\n")) : NULL,
                .created_at = (uint64_t) st.st_mtim.tv_sec * USEC_PER_SEC,
        };
        return 0;
}

int nfsroot_overlay_options(Manager *m, const char *serial, const char *base, char **ret, sd_bus_error *error) {
        _cleanup_free_ char *s = NULL, *b = NULL, *lower = NULL, *dir = NULL;
        int r = check_serial(serial, &s, error);
        if (r >= 0)
                r = pick_base(m, base, &b, error);
        if (r < 0)
                return r;
        if (!(lower = dir_of(m, m->config.nfsroot_base_dir, b)) || !(dir = dir_of(m, m->config.nfsroot_nodes_dir, s)))
                return -ENOMEM;
        return asprintf(ret, "lowerdir=%s,upperdir=%s/upper,workdir=%s/work", lower, dir, dir) < 0 ? -ENOMEM : 0;
}

char *nfsroot_base_for(Manager *m, const char *serial) {
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_(nfsroot_node_done) NfsRootNode n = {};
        char *b = NULL;
        if (serial && nfsroot_node_info(m, serial, &n, &e) >= 0 && n.base)
                return TAKE_PTR(n.base);
        sd_bus_error_free(&e);
        return pick_base(m, NULL, &b, &e) >= 0 ? b : NULL;
}
