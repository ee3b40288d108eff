/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <net/if.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <systemd/sd-id128.h>
#include <time.h>

#include "util.h"

bool string_in_set(const char *s, const char *const *set) {
        if (!s)
                return false;
        for (; *set; set++)
                if (streq(s, *set))
                        return true;
        return false;
}

static uint64_t now_usec(clockid_t clock) {
        struct timespec ts;
        clock_gettime(clock, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

uint64_t now_realtime_usec(void) {
        return now_usec(CLOCK_REALTIME);
}

uint64_t now_monotonic_usec(void) {
        return now_usec(CLOCK_MONOTONIC);
}

int id_new(char ret[static PB_ID_LEN + 1]) {
        sd_id128_t id;
        int r = sd_id128_randomize(&id);
        if (r < 0)
                return r;
        sd_id128_to_string(id, ret);
        return 0;
}

bool id_is_valid(const char *s) {
        if (!s || strlen(s) != PB_ID_LEN)
                return false;
        for (const char *p = s; *p; p++)
                if (!isdigit((unsigned char) *p) && !(*p >= 'a' && *p <= 'f'))
                        return false;
        return true;
}

void hex_encode(const void *p, size_t n, char *out) {
        static const char digits[] = "0123456789abcdef";
        const uint8_t *b = p;
        for (size_t i = 0; i < n; i++) {
                out[i * 2] = digits[b[i] >> 4];
                out[i * 2 + 1] = digits[b[i] & 15];
        }
        out[n * 2] = 0;
}

char *hexmem(const void *p, size_t n) {
        char *s = malloc(n * 2 + 1);
        if (s)
                hex_encode(p, n, s);
        return s;
}

/* RFC 1123: dot-separated labels of letters, digits and inner hyphens, 63 bytes each, 253 in all. */
bool interface_name_is_valid(const char *s) {
        return !isempty(s) && strlen(s) < IFNAMSIZ && !strpbrk(s, "/: \t\n") && !STR_IN_SET(s, ".", "..");
}

bool hostname_is_valid(const char *s) {
        size_t label = 0, total = 0;
        if (isempty(s))
                return false;
        for (const char *p = s; *p; p++, total++) {
                if (*p == '.') {
                        if (label == 0 || p[-1] == '-')
                                return false;
                        label = 0;
                        continue;
                }
                if (!isalnum((unsigned char) *p) && *p != '-')
                        return false;
                if (*p == '-' && label == 0)
                        return false;
                if (++label > 63)
                        return false;
        }
        return total <= 253 && label > 0 && s[total - 1] != '-';
}

int mac_normalize(const char *s, char **ret) {
        unsigned b[6];
        char sep[5], tail;
        if (!s || strlen(s) != 17)
                return -EINVAL;
        if (sscanf(s, "%2x%c%2x%c%2x%c%2x%c%2x%c%2x%c", &b[0], &sep[0], &b[1], &sep[1], &b[2], &sep[2],
                   &b[3], &sep[3], &b[4], &sep[4], &b[5], &tail) != 11)
                return -EINVAL;
        for (size_t i = 0; i < 5; i++)
                if (sep[i] != sep[0] || (sep[i] != ':' && sep[i] != '-'))
                        return -EINVAL;
        for (size_t i = 0; i < 17; i++)
                if (i % 3 != 2 && !isxdigit((unsigned char) s[i]))
                        return -EINVAL;
        char *t = malloc(18);
        if (!t)
                return -ENOMEM;
        snprintf(t, 18, "%02x:%02x:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3], b[4], b[5]);
        *ret = t;
        return 0;
}

bool path_is_safe(const char *s, size_t max) {
        if (!s || s[0] != '/' || !name_is_valid(s, max))
                return false;
        for (const char *p = s; (p = strstr(p, "/..")); p += 3)
                if (p[3] == 0 || p[3] == '/')
                        return false;
        return true;
}

bool device_path_is_valid(const char *s) {
        const char *rest;
        if (!s || strlen(s) > 255)
                return false;
        rest = startswith(s, "/dev/");
        if (isempty(rest))
                return false;
        if (strstr(s, "//") || strstr(s, "/./") || strstr(s, "/../") || s[strlen(s) - 1] == '/')
                return false;
        if (streq(rest, "..") || streq(rest, ".") || startswith(rest, "../") || startswith(rest, "./"))
                return false;
        if (strlen(s) >= 3 && (streq(s + strlen(s) - 3, "/..") || streq(s + strlen(s) - 2, "/.")))
                return false;
        for (const char *p = s; *p; p++)
                if (!isalnum((unsigned char) *p) && !strchr("/-_.:+", *p))
                        return false;
        return true;
}

bool name_is_valid(const char *s, size_t max) {
        size_t n;
        if (!s)
                return false;
        n = strlen(s);
        if (n == 0 || n > max)
                return false;
        for (const unsigned char *p = (const unsigned char *) s; *p; p++)
                if (*p < 0x20 || *p == 0x7f)
                        return false;
        return true;
}

int write_file_atomic(const char *path, const void *data, size_t size, mode_t mode) {
        _cleanup_free_ char *tmp = NULL, *dircopy = NULL;
        _cleanup_close_ int fd = -EBADF, dfd = -EBADF;
        const uint8_t *p = data;

        if (asprintf(&tmp, "%s.tmp.%d", path, getpid()) < 0)
                return -ENOMEM;
        /* Created with its final mode, so there is no moment it is readable by others. */
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
        if (fd < 0)
                return -errno;
        if (fchmod(fd, mode) < 0)
                goto fail;
        while (size > 0) {
                ssize_t n = write(fd, p, size);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        goto fail;
                }
                p += n;
                size -= (size_t) n;
        }
        if (fsync(fd) < 0 || rename(tmp, path) < 0)
                goto fail;

        dircopy = strdup(path);
        if (!dircopy)
                return -ENOMEM;
        dfd = open(dirname(dircopy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0)
                (void) fsync(dfd);
        return 0;
fail:;
        int r = -errno;
        (void) unlink(tmp);
        return r;
}

int read_attribute(const char *dir, const char *name, char *buf, size_t size) {
        _cleanup_free_ char *path = NULL;
        _cleanup_fclose_ FILE *f = NULL;
        if (asprintf(&path, "%s/%s", dir, name) < 0)
                return -ENOMEM;
        f = fopen(path, "re");
        if (!f || !fgets(buf, (int) size, f))
                return -ENOENT;
        buf[strcspn(buf, "\n")] = 0;
        /* trailing blanks, as some firmware pads model and serial */
        for (size_t n = strlen(buf); n > 0 && buf[n - 1] == ' '; n--)
                buf[n - 1] = 0;
        return 0;
}

int open_regular(const char *path) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        struct stat st;

        if (fd < 0 || fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EBADFD;
        if (fcntl(fd, F_SETFL, O_RDONLY) < 0) /* blocking again: it is a file */
                return -errno;
        return TAKE_FD(fd);
}

int read_full_file(const char *path, char **ret, size_t *ret_size) {
        _cleanup_fclose_ FILE *f = NULL;
        _cleanup_free_ char *buf = NULL;
        size_t n = 0, allocated = 0;
        int fd = open_regular(path);

        if (fd < 0)
                return fd;
        f = fdopen(fd, "re");
        if (!f) {
                close(fd);
                return -errno;
        }
        for (;;) {
                if (allocated - n < 4096) {
                        char *t = realloc(buf, allocated + 65536);
                        if (!t)
                                return -ENOMEM;
                        buf = t;
                        allocated += 65536;
                }
                size_t k = fread(buf + n, 1, allocated - n - 1, f);
                n += k;
                if (k == 0)
                        break;
        }
        if (ferror(f))
                return -EIO;
        buf[n] = 0;
        *ret = TAKE_PTR(buf);
        if (ret_size)
                *ret_size = n;
        return 0;
}

int mkdir_exact(const char *path, mode_t mode) {
        if (mkdir(path, mode) < 0)
                return -errno;
        /* The mode asked for, not what the umask (0077 in the units) leaves of it. */
        return chmod(path, mode) < 0 ? -errno : 0;
}

int mkdir_p(const char *path, mode_t mode) {
        _cleanup_free_ char *copy = strdup(path);
        int r;
        if (!copy)
                return -ENOMEM;
        for (char *p = copy + 1; *p; p++) {
                if (*p != '/')
                        continue;
                *p = 0;
                r = mkdir_exact(copy, mode);
                if (r < 0 && r != -EEXIST)
                        return r;
                *p = '/';
        }
        r = mkdir_exact(copy, mode);
        return r == -EEXIST ? 0 : r;
}

int strextend_printf(char **s, const char *format, ...) {
        _cleanup_free_ char *add = NULL;
        va_list ap;
        size_t old = *s ? strlen(*s) : 0;
        int k;

        va_start(ap, format);
        k = vasprintf(&add, format, ap);
        va_end(ap);
        if (k < 0)
                return -ENOMEM;
        char *t = realloc(*s, old + (size_t) k + 1);
        if (!t)
                return -ENOMEM;
        memcpy(t + old, add, (size_t) k + 1);
        *s = t;
        return 0;
}

size_t strv_length(char *const *l) {
        size_t n = 0;
        STRV_FOREACH (s, l)
                n++;
        return n;
}

char **strv_new(const char *first) {
        char **l = calloc(2, sizeof(char *));
        if (l && first && !(l[0] = strdup(first))) {
                free(l);
                return NULL;
        }
        return l;
}

bool strv_contains(const char *const *l, const char *s) {
        for (; l && *l; l++)
                if (streq(*l, s))
                        return true;
        return false;
}

int reason_firstv(char **reason, int r, const char *format, va_list ap) {
        if (!*reason && vasprintf(reason, format, ap) < 0)
                *reason = NULL;
        return r;
}

int reason_first(char **reason, int r, const char *format, ...) {
        va_list ap;
        va_start(ap, format);
        r = reason_firstv(reason, r, format, ap);
        va_end(ap);
        return r;
}

char **strv_split(const char *s, const char *separators) {
        char **l = strv_new(NULL);
        for (const char *p = s; l && p && *p;) {
                p += strspn(p, separators);
                size_t n = strcspn(p, separators);
                if (n == 0)
                        break;
                char *word = strndup(p, n);
                if (!word || strv_extend(&l, word) < 0) {
                        free(word);
                        strv_free(l);
                        return NULL;
                }
                free(word);
                p += n;
        }
        return l;
}

char *strv_join(char **l, const char *sep) {
        size_t n = 1;
        for (char **s = l; s && *s; s++)
                n += strlen(*s) + strlen(sep);
        char *joined = malloc(n), *p = joined;
        if (!joined)
                return NULL;
        *p = 0;
        for (char **s = l; s && *s; s++)
                p = stpcpy(stpcpy(p, s == l ? "" : sep), *s);
        return joined;
}

int strv_extend(char ***l, const char *s) {
        size_t n = strv_length(*l);
        char *t = strdup(s), **nl;
        if (!t)
                return -ENOMEM;
        nl = reallocarray(*l, n + 2, sizeof(char *));
        if (!nl) {
                free(t);
                return -ENOMEM;
        }
        nl[n] = t;
        nl[n + 1] = NULL;
        *l = nl;
        return 0;
}

void strv_remove(char **l, const char *s) {
        char **w = l;
        if (!l)
                return;
        for (char **r = l; *r; r++) {
                if (streq(*r, s))
                        free(*r);
                else
                        *w++ = *r;
        }
        *w = NULL;
}

int pread_full(int fd, void *buf, size_t size, uint64_t offset) {
        for (size_t done = 0; done < size;) {
                ssize_t n = pread(fd, (uint8_t *) buf + done, size - done, (off_t) (offset + done));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return n < 0 ? -errno : -EIO; /* the end came first: a device shrank under us */
                done += (size_t) n;
        }
        return 0;
}

/* write() when offset < 0, else pwrite() there; both until everything is written. */
static int write_all(int fd, const void *buf, size_t size, int64_t offset) {
        for (size_t done = 0; done < size;) {
                const uint8_t *p = (const uint8_t *) buf + done;
                ssize_t n = offset < 0 ? write(fd, p, size - done) : pwrite(fd, p, size - done, (off_t) offset + (off_t) done);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return n < 0 ? -errno : -EIO;
                done += (size_t) n;
        }
        return 0;
}

int pwrite_full(int fd, const void *buf, size_t size, uint64_t offset) {
        return write_all(fd, buf, size, (int64_t) offset);
}

int write_full(int fd, const void *buf, size_t size) {
        return write_all(fd, buf, size, -1);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        (void) st, (void) ftw;
        return (flag == FTW_DP ? rmdir(path) : unlink(path)) < 0 ? -errno : 0;
}

int rm_rf(const char *path) {
        int r = nftw(path, remove_entry, 64, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
        return r < 0 ? -errno : r > 0 ? -EIO : -r;
}
