/* SPDX-License-Identifier: MIT */
/* Assertions for the unit tests: each failure names the file, line and both values, then aborts. */
#pragma once

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ASSERT_TRUE(expr)                                                                                   \
        do {                                                                                                \
                if (!(expr)) {                                                                              \
                        fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__, __LINE__, #expr);        \
                        abort();                                                                            \
                }                                                                                           \
        } while (0)

#define ASSERT_INT(a, b)                                                                                    \
        do {                                                                                                \
                long long _a = (long long) (a), _b = (long long) (b);                                       \
                if (_a != _b) {                                                                             \
                        fprintf(stderr, "%s:%d: %s == %lld, expected %s == %lld\n", __FILE__, __LINE__, #a, \
                                _a, #b, _b);                                                                \
                        abort();                                                                            \
                }                                                                                           \
        } while (0)

#define ASSERT_OK(expr)                                                                                     \
        do {                                                                                                \
                long long _r = (long long) (expr);                                                          \
                if (_r < 0) {                                                                               \
                        fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #expr,                \
                                strerror((int) -_r));                                                       \
                        abort();                                                                            \
                }                                                                                           \
        } while (0)

#define ASSERT_STR(a, b)                                                                                    \
        do {                                                                                                \
                const char *_a = (a), *_b = (b);                                                            \
                if (!_a || !_b || strcmp(_a, _b) != 0) {                                                    \
                        fprintf(stderr, "%s:%d: %s == \"%s\", expected \"%s\"\n", __FILE__, __LINE__, #a,   \
                                _a ? _a : "(null)", _b ? _b : "(null)");                                    \
                        abort();                                                                            \
                }                                                                                           \
        } while (0)

/* A fresh temporary directory, removed with everything in it by tmpdir_remove. */
char *tmpdir_new(void);
void tmpdir_remove(char *dir);
