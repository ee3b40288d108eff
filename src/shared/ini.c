/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <dirent.h>

#include "ini.h"
#include "log.h"
#include "util.h"

static char *strip(char *s) {
        while (isspace((unsigned char) *s))
                s++;
        size_t n = strlen(s);
        while (n > 0 && isspace((unsigned char) s[n - 1]))
                s[--n] = 0;
        return s;
}

int ini_parse_string(const char *file, const char *text, ini_handler_t handler, void *userdata) {
        _cleanup_free_ char *copy = strdup(text), *section = NULL;
        unsigned line = 0;

        if (!copy)
                return -ENOMEM;
        /* strtok_r would merge empty lines and so miscount them: split by hand. */
        for (char *l = copy, *next; l; l = next) {
                next = strchr(l, '\n');
                if (next)
                        *next++ = 0;
                line++;
                char *s = strip(l);
                if (*s == 0 || *s == '#' || *s == ';')
                        continue;
                if (*s == '[') {
                        char *end = strchr(s, ']');
                        if (!end || end[1] != 0 || end == s + 1)
                                return log_error_errno(EBADMSG, "%s:%u: malformed section header \"%s\".",
                                                       file, line, s);
                        *end = 0;
                        if (free_and_strdup(&section, s + 1) < 0)
                                return -ENOMEM;
                        continue;
                }
                char *eq = strchr(s, '=');
                if (!eq)
                        return log_error_errno(EBADMSG, "%s:%u: expected Key=Value, got \"%s\".", file, line,
                                               s);
                if (!section)
                        return log_error_errno(EBADMSG, "%s:%u: assignment outside of a [Section].", file,
                                               line);
                *eq = 0;
                char *key = strip(s), *value = strip(eq + 1);
                if (*key == 0)
                        return log_error_errno(EBADMSG, "%s:%u: empty key.", file, line);
                int r = handler(file, line, section, key, value, userdata);
                if (r < 0)
                        return r;
        }
        return 0;
}

int ini_parse_file(const char *path, ini_handler_t handler, void *userdata) {
        _cleanup_free_ char *text = NULL;
        int r = read_full_file(path, &text, NULL);
        if (r < 0)
                return r;
        return ini_parse_string(path, text, handler, userdata);
}

static int compare_strings(const void *a, const void *b) {
        return strcmp(*(const char *const *) a, *(const char *const *) b);
}

int ini_parse_with_dropins(const char *path, ini_handler_t handler, void *userdata) {
        _cleanup_free_ char *dir = NULL;
        _cleanup_strv_free_ char **names = NULL;
        size_t n = 0;
        DIR *d;
        int r;

        r = ini_parse_file(path, handler, userdata);
        if (r < 0 && r != -ENOENT)
                return r;

        if (asprintf(&dir, "%s.d", path) < 0)
                return -ENOMEM;
        d = opendir(dir);
        if (!d)
                return errno == ENOENT ? 0 : -errno;
        for (struct dirent *de; (de = readdir(d));) {
                size_t l = strlen(de->d_name);
                if (de->d_name[0] == '.' || l < 6 || !streq(de->d_name + l - 5, ".conf"))
                        continue;
                char **t = realloc(names, (n + 2) * sizeof(char *));
                if (!t) {
                        closedir(d);
                        return -ENOMEM;
                }
                names = t;
                names[n] = strdup(de->d_name);
                names[n + 1] = NULL;
                if (!names[n]) {
                        closedir(d);
                        return -ENOMEM;
                }
                n++;
        }
        closedir(d);
        if (n > 0)
                qsort(names, n, sizeof(char *), compare_strings);
        for (size_t i = 0; i < n; i++) {
                _cleanup_free_ char *p = NULL;
                if (asprintf(&p, "%s/%s", dir, names[i]) < 0)
                        return -ENOMEM;
                r = ini_parse_file(p, handler, userdata);
                if (r < 0)
                        return r;
        }
        return 0;
}

int parse_boolean(const char *s) {
        if (STR_IN_SET(s, "1", "yes", "y", "true", "t", "on"))
                return 1;
        if (STR_IN_SET(s, "0", "no", "n", "false", "f", "off"))
                return 0;
        return -EINVAL;
}

int parse_uint64(const char *s, uint64_t *ret) {
        char *end;
        if (isempty(s) || !isdigit((unsigned char) *s))
                return -EINVAL;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno != 0 || *end != 0)
                return -ERANGE;
        *ret = v;
        return 0;
}
