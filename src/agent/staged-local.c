/* SPDX-License-Identifier: MIT */
/* A local backend's files: a directory on the controller's host. A node reaches them through the bridge,
 * /staging/<file name> over the same mutual TLS as every call, with its clone certificate: the controller
 * decides which session's area that is and what it may do there (read; the source also write). An image's
 * check on the controller's host reads the directory itself. Either way staged-files.c writes and reads
 * the same zstd image as on NFS. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"
#include "staged.h"
#include "util.h"

typedef struct BridgeFiles {
        Agent *agent;
        CURL *easy;
        struct curl_slist *headers;
        char errbuf[CURL_ERROR_SIZE];
        char *why;
        /* What the answer's body goes into: a read's buffer, else the first bytes of an error's. */
        uint8_t *buf;
        size_t want, got;
        char text[512];
        size_t text_len;
} BridgeFiles;

/* The name a file has in its area: the bridge knows the area from our certificate. */
static const char *file_name(const char *path) {
        const char *slash = strrchr(path, '/');
        return slash ? slash + 1 : path;
}

static size_t on_body(char *p, size_t size, size_t n, void *userdata) {
        BridgeFiles *b = userdata;
        size_t len = size * n;

        if (b->buf) {
                if (len > b->want - b->got)
                        return 0; /* more than asked for */
                memcpy(b->buf + b->got, p, len);
                b->got += len;
                return len;
        }
        size_t k = MIN(len, sizeof(b->text) - 1 - b->text_len);
        memcpy(b->text + b->text_len, p, k);
        b->text_len += k;
        b->text[b->text_len] = 0;
        return len;
}

static int fail(BridgeFiles *b, int r, const char *format, ...) _printf_(3, 4);
static int fail(BridgeFiles *b, int r, const char *format, ...) {
        va_list ap;
        b->why = mfree(b->why);
        va_start(ap, format);
        if (vasprintf(&b->why, format, ap) < 0)
                b->why = NULL;
        va_end(ap);
        return r;
}

/* One request on the kept connection: method on the file name (query: "offset=…", "commit", …), with a
 * body or reading into buf (want bytes of range). Returns the HTTP status, or <0. */
static long request(BridgeFiles *b, const char *method, const char *name, const char *query,
                    const void *body, size_t n, void *buf, size_t want, const char *range) {
        _cleanup_free_ char *url = NULL;
        long status = 0;
        CURLcode c;

        if (asprintf(&url, "%s/staging/%s%s%s", b->agent->settings.server, name, query ? "?" : "",
                     strempty(query)) < 0)
                return -ENOMEM;
        b->buf = buf;
        b->want = want;
        b->got = b->text_len = 0;
        b->text[0] = b->errbuf[0] = 0;
        bool get = STR_IN_SET(method, "GET", "HEAD");
        if (curl_easy_setopt(b->easy, CURLOPT_URL, url) != CURLE_OK ||
            curl_easy_setopt(b->easy, CURLOPT_NOBODY, streq(method, "HEAD") ? 1L : 0L) != CURLE_OK ||
            (get && curl_easy_setopt(b->easy, CURLOPT_HTTPGET, 1L) != CURLE_OK) ||
            curl_easy_setopt(b->easy, CURLOPT_CUSTOMREQUEST, get ? NULL : method) != CURLE_OK ||
            (!get && (curl_easy_setopt(b->easy, CURLOPT_POSTFIELDS, body ?: "") != CURLE_OK ||
                      curl_easy_setopt(b->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) n) != CURLE_OK)) ||
            curl_easy_setopt(b->easy, CURLOPT_RANGE, range) != CURLE_OK)
                return -ENOMEM;
        c = curl_easy_perform(b->easy);
        if (c != CURLE_OK)
                return fail(b, -EIO, "the bridge could not be reached: %s",
                            b->errbuf[0] ? b->errbuf : curl_easy_strerror(c));
        (void) curl_easy_getinfo(b->easy, CURLINFO_RESPONSE_CODE, &status);
        if (status >= 400) {
                _cleanup_(json_object_unrefp) json_object *o = json_tokener_parse(b->text);
                json_object *params = o ? json_object_object_get(o, "parameters") : NULL;
                (void) fail(b, 0, "the bridge answered %ld to %s %s: %s", status, method, name,
                            strna(json_get_string(params, "reason") ?: json_get_string(o, "error")));
        }
        return status;
}

static int status_errno(long status) {
        return status == 403 || status == 401 ? -EACCES
               : status == 404                ? -ENOENT
               : status == 409                ? -EBUSY
               : status == 507                ? -ENOSPC
                                              : -EIO;
}

static int bridge_open(void *conn, const char *path, void **ret) {
        (void) conn;
        *ret = strdup(file_name(path));
        return *ret ? 0 : -ENOMEM;
}

static int bridge_create(void *conn, const char *path, void **ret) {
        long status = request(conn, "PUT", file_name(path), "offset=0&create=1", NULL, 0, NULL, 0, NULL);
        if (status < 0)
                return (int) status;
        if (status != 204)
                return status_errno(status);
        return bridge_open(conn, path, ret);
}

static int bridge_pread(void *conn, void *file, void *buf, size_t n, uint64_t offset) {
        BridgeFiles *b = conn;
        char range[64];

        snprintf(range, sizeof(range), "%" PRIu64 "-%" PRIu64, offset, offset + n - 1);
        long status = request(b, "GET", file, NULL, NULL, 0, buf, n, range);
        if (status < 0)
                return (int) status;
        if (status != 206 && !(status == 200 && offset == 0))
                return status_errno(status);
        if (b->got != n)
                return fail(b, -EIO, "the bridge sent %zu bytes of %s at %" PRIu64 ", not %zu", b->got,
                            (const char *) file, offset, n);
        return 0;
}

static int bridge_pwrite(void *conn, void *file, const void *buf, size_t n, uint64_t offset) {
        char query[48];
        snprintf(query, sizeof(query), "offset=%" PRIu64, offset);
        long status = request(conn, "PUT", file, query, buf, n, NULL, 0, NULL);
        return status < 0 ? (int) status : status == 204 ? 0 : status_errno(status);
}

static void bridge_close(void *conn, void *file) {
        (void) conn;
        free(file);
}

static int bridge_commit(void *conn, void *file, const char *partial, const char *final) {
        (void) partial;
        free(file);
        long status = request(conn, "POST", file_name(final), "commit=1", NULL, 0, NULL, 0, NULL);
        return status < 0 ? (int) status : status == 204 ? 0 : status_errno(status);
}

static int bridge_unlink(void *conn, const char *path) {
        long status = request(conn, "DELETE", file_name(path), NULL, NULL, 0, NULL, 0, NULL);
        return status < 0 ? (int) status : status == 204 ? 0 : status_errno(status);
}

static int bridge_size(void *conn, const char *path, uint64_t *ret) {
        BridgeFiles *b = conn;
        curl_off_t length = -1;
        long status = request(b, "HEAD", file_name(path), NULL, NULL, 0, NULL, 0, NULL);

        if (status < 0)
                return (int) status;
        if (status != 200)
                return status_errno(status);
        if (curl_easy_getinfo(b->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length) != CURLE_OK ||
            length < 0)
                return fail(b, -EIO, "the bridge did not say how large %s is", file_name(path));
        *ret = (uint64_t) length;
        return 0;
}

static const char *bridge_error(void *conn) {
        BridgeFiles *b = conn;
        return b->why ?: "no answer";
}

static void bridge_disconnect(void *conn) {
        BridgeFiles *b = conn;
        curl_easy_cleanup(b->easy);
        curl_slist_free_all(b->headers);
        free(b->why);
        free(b);
}

static const StagingFiles bridge_files = {
        .open = bridge_open,
        .create = bridge_create,
        .pread = bridge_pread,
        .pwrite = bridge_pwrite,
        .close = bridge_close,
        .commit = bridge_commit,
        .unlink = bridge_unlink,
        .size = bridge_size,
        .error = bridge_error,
        .disconnect = bridge_disconnect,
};

/* The directory itself, on the controller's host: an image's check, export or import. */
typedef struct DirFiles {
        char *top;
        int error; /* the last failure's */
} DirFiles;

static int dir_failed(DirFiles *d, int r) {
        d->error = -r;
        return r;
}

static int dir_path(DirFiles *d, const char *path, char **ret) {
        return asprintf(ret, "%s/%s", d->top, path) < 0 ? -ENOMEM : 0;
}

static int dir_open_how(void *conn, const char *path, int flags, void **ret) {
        _cleanup_free_ char *p = NULL;
        int *fd = malloc(sizeof(int)), r = dir_path(conn, path, &p);

        if (!fd || r < 0)
                return free(fd), -ENOMEM;
        *fd = open(p, flags | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (*fd < 0) {
                r = -errno;
                free(fd);
                return dir_failed(conn, r);
        }
        *ret = fd;
        return 0;
}

static int dir_open(void *conn, const char *path, void **ret) {
        return dir_open_how(conn, path, O_RDONLY, ret);
}

static int dir_create(void *conn, const char *path, void **ret) {
        return dir_open_how(conn, path, O_WRONLY | O_CREAT | O_TRUNC, ret);
}

static int dir_pread(void *conn, void *file, void *buf, size_t n, uint64_t offset) {
        int r = pread_full(*(int *) file, buf, n, offset);
        return r < 0 ? dir_failed(conn, r) : 0;
}

static int dir_pwrite(void *conn, void *file, const void *buf, size_t n, uint64_t offset) {
        int r = pwrite_full(*(int *) file, buf, n, offset);
        return r < 0 ? dir_failed(conn, r) : 0;
}

static void dir_close(void *conn, void *file) {
        (void) conn;
        close(*(int *) file);
        free(file);
}

static int dir_commit(void *conn, void *file, const char *partial, const char *final) {
        _cleanup_free_ char *from = NULL, *to = NULL;
        int r = fsync(*(int *) file) < 0 ? -errno : 0;

        dir_close(conn, file);
        if (r >= 0)
                r = dir_path(conn, partial, &from);
        if (r >= 0)
                r = dir_path(conn, final, &to);
        if (r >= 0 && rename(from, to) < 0)
                r = -errno;
        if (r >= 0) { /* the new name as durable as the data */
                char *slash = strrchr(to, '/');
                if (slash)
                        *slash = 0;
                _cleanup_close_ int dir = open(slash ? to : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (dir < 0 || fsync(dir) < 0)
                        r = -errno;
        }
        return r < 0 ? dir_failed(conn, r) : 0;
}

static int dir_unlink(void *conn, const char *path) {
        _cleanup_free_ char *p = NULL;
        int r = dir_path(conn, path, &p);
        if (r >= 0 && unlink(p) < 0 && errno != ENOENT)
                r = -errno;
        return r < 0 ? dir_failed(conn, r) : 0;
}

static int dir_size(void *conn, const char *path, uint64_t *ret) {
        _cleanup_free_ char *p = NULL;
        struct stat st;
        int r = dir_path(conn, path, &p);
        if (r < 0)
                return r;
        if (stat(p, &st) < 0)
                return dir_failed(conn, -errno);
        *ret = (uint64_t) st.st_size;
        return 0;
}

static const char *dir_error(void *conn) {
        DirFiles *d = conn;
        return strerror(d->error > 0 ? d->error : EIO);
}

static void dir_disconnect(void *conn) {
        DirFiles *d = conn;
        free(d->top);
        free(d);
}

static const StagingFiles dir_files = {
        .open = dir_open,
        .create = dir_create,
        .pread = dir_pread,
        .pwrite = dir_pwrite,
        .close = dir_close,
        .commit = dir_commit,
        .unlink = dir_unlink,
        .size = dir_size,
        .error = dir_error,
        .disconnect = dir_disconnect,
};

int staging_local_connect(Stager *s, const StorageLocation *l, const char *initiator, void **ret_conn) {
        (void) initiator;
        if (!s->agent) {
                const char *top = json_get_string(l->config, "export");
                DirFiles *d = calloc(1, sizeof(DirFiles));
                if (!d || !top || !(d->top = strdup(top))) {
                        free(d);
                        return stager_fail(s, -EINVAL, "the local backend's directory is not known");
                }
                return staging_files_connect(&dir_files, d, ret_conn);
        }
        BridgeFiles *b = calloc(1, sizeof(BridgeFiles));
        if (!b)
                return -ENOMEM;
        b->agent = s->agent;
        b->easy = client_easy_new(s->agent, "/staging/");
        /* Bodies go as they are, at once: no 100-continue round trip before each piece. */
        b->headers = curl_slist_append(NULL, "Expect:");
        if (b->headers)
                b->headers = curl_slist_append(b->headers, "Content-Type: application/octet-stream");
        if (!b->easy || !b->headers ||
            curl_easy_setopt(b->easy, CURLOPT_HTTPHEADER, b->headers) != CURLE_OK ||
            curl_easy_setopt(b->easy, CURLOPT_ERRORBUFFER, b->errbuf) != CURLE_OK ||
            curl_easy_setopt(b->easy, CURLOPT_WRITEFUNCTION, on_body) != CURLE_OK ||
            curl_easy_setopt(b->easy, CURLOPT_WRITEDATA, b) != CURLE_OK ||
            curl_easy_setopt(b->easy, CURLOPT_LOW_SPEED_LIMIT, 1L) != CURLE_OK ||
            curl_easy_setopt(b->easy, CURLOPT_LOW_SPEED_TIME, 30L) != CURLE_OK) {
                bridge_disconnect(b);
                return -ENOMEM;
        }
        return staging_files_connect(&bridge_files, b, ret_conn);
}
