/* SPDX-License-Identifier: MIT */
/* Small helpers: clocks, ids, names, files written atomically. */
#pragma once

#include <dirent.h>
#include <stdarg.h>
#include <strings.h>
#include <sys/types.h>

#include "macro.h"

#define PB_ID_LEN 32

uint64_t now_realtime_usec(void);
uint64_t now_monotonic_usec(void);

/* A fresh 128-bit id as 32 lowercase hex digits. */
int id_new(char ret[static PB_ID_LEN + 1]);
bool id_is_valid(const char *s);

/* Lowercase hex of n bytes into a new string. */
char *hexmem(const void *p, size_t n);
/* The same into out, which holds n * 2 + 1 bytes. */
void hex_encode(const void *p, size_t n, char *out);

bool hostname_is_valid(const char *s);
/* A network interface name as the kernel takes one: shorter than IFNAMSIZ, not "." or "..", without '/', ':'
 * or blanks. */
bool interface_name_is_valid(const char *s);
/* Parses aa:bb:cc:dd:ee:ff or aa-bb-…, returns the canonical lowercase colon form. */
int mac_normalize(const char *s, char **ret);
/* An absolute path under /dev/ without "..", "//" or control characters. */
bool device_path_is_valid(const char *s);
/* An absolute path of printable characters, at most max bytes, without a ".." component. */
bool path_is_safe(const char *s, size_t max);
/* Printable UTF-8 without control characters, 1..max bytes. */
bool name_is_valid(const char *s, size_t max);

/* Writes data to path via a temporary file in the same directory, fsync, rename, with the given mode. */
int write_file_atomic(const char *path, const void *data, size_t size, mode_t mode);
int read_full_file(const char *path, char **ret, size_t *ret_size);
/* The first line of dir/name (a sysfs attribute) into buf, without its newline and trailing blanks. */
int read_attribute(const char *dir, const char *name, char *buf, size_t size);
/* Opens path for reading if it is a regular file: -EBADFD for anything else. Opened without blocking, so
 * a FIFO or a device put where a file was expected cannot stall the caller. */
int open_regular(const char *path);
/* All of size bytes at offset, retrying short transfers and EINTR; -EIO at an unexpected end. */
int pread_full(int fd, void *buf, size_t size, uint64_t offset);
int pwrite_full(int fd, const void *buf, size_t size, uint64_t offset);
int write_full(int fd, const void *buf, size_t size);
/* mkdir(2) with exactly mode, whatever the umask: -errno, -EEXIST if path exists. */
int mkdir_exact(const char *path, mode_t mode);
/* Creates path and its missing parents, each made with exactly mode; 0 if it exists already. */
int mkdir_p(const char *path, mode_t mode);
/* Removes path and everything below it, following no symlink and crossing no mount point. */
int rm_rf(const char *path);

/* The first reason something failed is the one kept: sets *reason from format unless it is set already.
 * Returns r. */
int reason_first(char **reason, int r, const char *format, ...) _printf_(3, 4);
int reason_firstv(char **reason, int r, const char *format, va_list ap) _printf_(3, 0);

/* Appends to a dynamically grown string; returns -ENOMEM on failure. */
int strextend_printf(char **s, const char *format, ...) _printf_(2, 3);

/* NULL-terminated string lists. strv_new(NULL) is an empty list. */
#define STRV_FOREACH(s, l) for (char *const *s = (l); s && *s; s++)
size_t strv_length(char *const *l);
char **strv_new(const char *first);
bool strv_contains(const char *const *l, const char *s);
int strv_extend(char ***l, const char *s);
/* The words of s between any of separators (empty ones left out), or NULL for lack of memory. */
char **strv_split(const char *s, const char *separators);
/* The strings of l with sep between them (malloc'd; "" for none), or NULL for lack of memory. */
char *strv_join(char **l, const char *sep);
/* Drops every entry equal to s. */
void strv_remove(char **l, const char *s);

static inline bool strcaseeq_ptr(const char *a, const char *b) {
        return a && b && strcasecmp(a, b) == 0;
}

static inline void closedirp(DIR **d) {
        if (*d)
                closedir(*d);
}
