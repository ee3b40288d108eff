/* SPDX-License-Identifier: MIT */
#include <stdarg.h>

#include "log.h"

static int max_level = LOG_INFO;

void log_set_max_level(int level) {
        max_level = level;
}

int log_get_max_level(void) {
        return max_level;
}

int log_parse_level(const char *s) {
        static const char *const names[] = { "emerg",   "alert",  "crit", "err",
                                             "warning", "notice", "info", "debug" };
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (streq(s, names[i]))
                        return (int) i;
        return -EINVAL;
}

int log_internal(int level, int error, const char *format, ...) {
        int saved = errno;
        if (error < 0)
                error = -error;

        if (level <= max_level) {
                va_list ap;
                /* Under systemd, stderr is the journal and the "<N>" prefix sets the priority. */
                if (getenv("JOURNAL_STREAM"))
                        fprintf(stderr, "<%d>", level);
                errno = error;
                va_start(ap, format);
                vfprintf(stderr, format, ap);
                va_end(ap);
                fputc('\n', stderr);
        }
        errno = saved;
        return -error;
}
