/* SPDX-License-Identifier: MIT */
/* Reading settings from a kernel command line. */
#include <ctype.h>

#include "cmdline.h"
#include "util.h"

int cmdline_get(const char *cmdline, const char *key, char **ret) {
        size_t klen = strlen(key);
        char *found = NULL;

        for (const char *p = cmdline; *p;) {
                _cleanup_free_ char *word = NULL;
                size_t n = 0;
                bool quoted = false;

                while (isspace((unsigned char) *p))
                        p++;
                if (!*p)
                        break;
                word = malloc(strlen(p) + 1);
                if (!word) {
                        free(found);
                        return -ENOMEM;
                }
                for (; *p && (quoted || !isspace((unsigned char) *p)); p++) {
                        if (*p == '"')
                                quoted = !quoted;
                        else
                                word[n++] = *p;
                }
                word[n] = 0;
                if (strncmp(word, key, klen) == 0 && (word[klen] == '=' || word[klen] == 0)) {
                        free(found);
                        found = strdup(word[klen] == '=' ? word + klen + 1 : "");
                        if (!found)
                                return -ENOMEM;
                }
        }
        *ret = found;
        return found ? 1 : 0;
}

int cmdline_read(const char *path, char **ret) {
        const char *env = getenv("SYSTEMD_PROC_CMDLINE");
        if (env) {
                *ret = strdup(env);
                return *ret ? 0 : -ENOMEM;
        }
        return read_full_file(path, ret, NULL);
}
