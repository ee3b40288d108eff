/* SPDX-License-Identifier: MIT */
/* Cleanup attributes and small helpers used everywhere, in the manner of systemd's macro.h. */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _noreturn_ __attribute__((noreturn))
#define _sentinel_ __attribute__((sentinel))

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

#define SWAP(a, b)                                                                                          \
        do {                                                                                                \
                __typeof__(a) _swap = (a);                                                                  \
                (a) = (b);                                                                                  \
                (b) = _swap;                                                                                \
        } while (0)

#define TAKE_PTR(p)                                                                                         \
        ({                                                                                                  \
                __typeof__(p) _p_ = (p);                                                                    \
                (p) = NULL;                                                                                 \
                _p_;                                                                                        \
        })

#define TAKE_FD(fd)                                                                                         \
        ({                                                                                                  \
                int _fd_ = (fd);                                                                            \
                (fd) = -EBADF;                                                                              \
                _fd_;                                                                                       \
        })

/* Frees a and moves b into it (b is NULL afterwards). */
#define free_and_replace(a, b)                                                                              \
        ({                                                                                                  \
                free(a);                                                                                    \
                (a) = (b);                                                                                  \
                (b) = NULL;                                                                                 \
                0;                                                                                          \
        })

static inline void *mfree(void *p) {
        free(p);
        return NULL;
}

static inline void freep(void *p) {
        free(*(void **) p);
}
#define _cleanup_free_ _cleanup_(freep)

static inline void closep(int *fd) {
        if (*fd >= 0)
                close(*fd);
}
#define _cleanup_close_ _cleanup_(closep)

static inline void fclosep(FILE **f) {
        if (*f)
                fclose(*f);
}
#define _cleanup_fclose_ _cleanup_(fclosep)

static inline void strv_free(char **l) {
        if (!l)
                return;
        for (char **i = l; *i; i++)
                free(*i);
        free(l);
}
static inline void strv_freep(char ***l) {
        strv_free(*l);
}
#define _cleanup_strv_free_ _cleanup_(strv_freep)

/* Replaces *p with a copy of s; returns -ENOMEM and leaves *p alone on failure. */
static inline int free_and_strdup(char **p, const char *s) {
        char *t = NULL;
        if (s) {
                t = strdup(s);
                if (!t)
                        return -ENOMEM;
        }
        free(*p);
        *p = t;
        return 0;
}

static inline bool streq_ptr(const char *a, const char *b) {
        if (!a || !b)
                return a == b;
        return strcmp(a, b) == 0;
}
#define streq(a, b) (strcmp((a), (b)) == 0)
#define isempty(s) (!(s) || !*(s))
#define strempty(s) ((s) ?: "")
#define strna(s) ((s) ?: "n/a")

static inline const char *startswith(const char *s, const char *prefix) {
        size_t l = strlen(prefix);
        return strncmp(s, prefix, l) == 0 ? s + l : NULL;
}

static inline bool endswith(const char *s, const char *suffix) {
        size_t a = strlen(s), b = strlen(suffix);
        return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* True if s equals one of the NULL-terminated list of strings. */
bool string_in_set(const char *s, const char *const *set);
#define STR_IN_SET(s, ...) string_in_set((s), (const char *const[]){ __VA_ARGS__, NULL })

#define USEC_PER_SEC UINT64_C(1000000)
#define USEC_PER_MSEC UINT64_C(1000)
#define USEC_PER_HOUR (UINT64_C(3600) * USEC_PER_SEC)
#define USEC_PER_DAY (UINT64_C(24) * USEC_PER_HOUR)
#define USEC_INFINITY UINT64_MAX

/* Past a switch that handles every value of an enum: reaching it is a bug (a value out of range). */
#define assert_not_reached()                                                                                \
        do {                                                                                                \
                fprintf(stderr, "%s:%d: %s: unreachable code reached\n", __FILE__, __LINE__, __func__);     \
                abort();                                                                                    \
        } while (0)

/* Whether x equals one of the values listed (all of one type, such as an enum's). */
#define IN_SET(x, first, ...)                                                                               \
        ({                                                                                                  \
                const typeof(x) _set[] = { first, __VA_ARGS__ };                                            \
                bool _found = false;                                                                        \
                for (size_t _i = 0; _i < ELEMENTSOF(_set) && !_found; _i++)                                 \
                        _found = _set[_i] == (x);                                                           \
                _found;                                                                                     \
        })
