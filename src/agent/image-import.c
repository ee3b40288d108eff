/* SPDX-License-Identifier: MIT */
/* Images from outside the library, restored into a raw disk file: an exported PureBoot image (image-file.c),
 * or a Clonezilla or FOG image directory. A directory is read only through names we checked, as regular
 * files in it (O_NOFOLLOW: a link is refused, never followed), and its text files only up to a size; its
 * partition table goes to sfdisk and each partition's image to partclone.restore, which write the raw file
 * and refuse what does not fit. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "device.h"
#include "format.h"
#include "frame.h"
#include "image-import.h"
#include "log.h"
#include "scan.h"
#include "tool.h"
#include "util.h"

#define TEXT_MAX (UINT32_C(1) << 20)
#define ENTRIES_MAX 100000
#define IO_SIZE (UINT32_C(1) << 20)
#define DISK_MAX (UINT64_C(1) << 46) /* 64 TiB: a table that says more is not a disk's */
#define PARTITION_FILE "partition.raw"

typedef enum Compression {
        COMPRESSION_NONE,
        COMPRESSION_GZIP,
        COMPRESSION_ZSTD,
} Compression;

/* A partition the image holds: its partclone image (one file or its split pieces, in order), a swap
 * partition to make anew, or nothing to restore (an extended partition's). */
typedef struct Part {
        char *name; /* as the image names it: sda1, d1p1 */
        unsigned number;
        char **pieces;
        Compression compression;
        bool swap;
        char *swap_uuid, *swap_label;
} Part;

typedef struct Foreign {
        int dir;
        const char *format; /* clonezilla, fog */
        const char *kind;   /* for people: Clonezilla, FOG */
        char *disk;         /* what the image calls the disk: sda, d1 */
        char **names;       /* the directory's entries */
        char *table;        /* the sfdisk dump */
        char *boot;         /* the boot sectors' file, if any */
        char *hidden;       /* Clonezilla: what lay between the MBR and the first partition */
        bool gpt;
        uint64_t size, first_start, sector_size;
        Part *parts;
        size_t n_parts;
        const char *work;
        ImageProgress progress;
        uint64_t total, done; /* bytes of partition images, for progress */
        char *why;
        char **notes;
} Foreign;

void imported_disk_done(ImportedDisk *d) {
        json_object_put(d->header);
        free(d->device);
        used_map_done(&d->skipped);
        strv_free(d->notes);
        *d = (ImportedDisk){};
}

static int fail(Foreign *f, int r, const char *format, ...) _printf_(3, 4);
static int fail(Foreign *f, int r, const char *format, ...) {
        va_list ap;
        va_start(ap, format);
        r = reason_firstv(&f->why, r < 0 ? r : -EBADMSG, format, ap);
        va_end(ap);
        return r;
}

static void foreign_done(Foreign *f) {
        for (size_t i = 0; i < f->n_parts; i++) {
                free(f->parts[i].name);
                strv_free(f->parts[i].pieces);
                free(f->parts[i].swap_uuid);
                free(f->parts[i].swap_label);
        }
        free(f->parts);
        free(f->disk);
        strv_free(f->names);
        free(f->table);
        free(f->boot);
        free(f->hidden);
        free(f->why);
        strv_free(f->notes);
}

/* A name the directory may hold that we read: no path in it. */
static bool entry_name_is_plain(const char *name) {
        return !isempty(name) && !strchr(name, '/') && !streq(name, ".") && !streq(name, "..") &&
               strlen(name) < 256;
}

/* How Clonezilla and FOG name disks and partitions (sda, nvme0n1p2, mmcblk0p1, d1p3): letters and digits. */
static bool device_name_is_valid(const char *s) {
        if (isempty(s) || strlen(s) > 31 || !(*s >= 'a' && *s <= 'z'))
                return false;
        for (const char *p = s; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9')))
                        return false;
        return true;
}

static bool has_entry(Foreign *f, const char *name) {
        return strv_contains((const char *const *) f->names, name);
}

/* Opens a regular file of the directory: never through a link, never anything else. */
static int open_entry(Foreign *f, const char *name, struct stat *ret_st) {
        struct stat st;
        int fd;

        if (!entry_name_is_plain(name))
                return fail(f, -EBADMSG, "\"%.64s\" is not a file name in the image's directory", name);
        fd = openat(f->dir, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK);
        if (fd < 0)
                return errno == ELOOP ? fail(f, -EBADMSG,
                                             "%s is a symbolic link; an image's files are read as "
                                             "they are in its directory, never through a link",
                                             name)
                                      : fail(f, -errno, "cannot open %s: %m", name);
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
                close(fd);
                return fail(f, -EBADMSG, "%s is not a regular file", name);
        }
        if (ret_st)
                *ret_st = st;
        return fd;
}

/* A text file of the directory, whole; -ENOENT (nothing said) if it is not there. */
static int read_entry(Foreign *f, const char *name, char **ret) {
        _cleanup_close_ int fd = -EBADF;
        struct stat st;
        char *text;

        if (!has_entry(f, name))
                return -ENOENT;
        fd = open_entry(f, name, &st);
        if (fd < 0)
                return fd;
        if (st.st_size > (off_t) TEXT_MAX)
                return fail(f, -EBADMSG, "%s is %" PRIu64 " bytes; a file of its kind is a few lines", name,
                            (uint64_t) st.st_size);
        text = calloc(1, (size_t) st.st_size + 1);
        if (!text)
                return -ENOMEM;
        int r = pread_full(fd, text, (size_t) st.st_size, 0);
        if (r < 0) {
                free(text);
                return fail(f, r, "cannot read %s: %s", name, strerror(-r));
        }
        if (strlen(text) != (size_t) st.st_size) {
                free(text);
                return fail(f, -EBADMSG, "%s is not text", name);
        }
        *ret = text;
        return 0;
}

static int compare_names(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

static int list_entries(Foreign *f) {
        int fd = fcntl(f->dir, F_DUPFD_CLOEXEC, 3);
        DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
        struct dirent *e;
        size_t n = 0;

        if (!d) {
                if (fd >= 0)
                        close(fd);
                return fail(f, -errno, "cannot list the image's directory: %m");
        }
        rewinddir(d);
        while ((e = readdir(d))) {
                if (streq(e->d_name, ".") || streq(e->d_name, ".."))
                        continue;
                if (++n > ENTRIES_MAX) {
                        closedir(d);
                        return fail(f, -EBADMSG, "its directory holds more than %d entries", ENTRIES_MAX);
                }
                if (strv_extend(&f->names, e->d_name) < 0) {
                        closedir(d);
                        return -ENOMEM;
                }
        }
        closedir(d);
        if (n > 1)
                qsort(f->names, n, sizeof(char *), compare_names);
        return 0;
}

static Part *add_part(Foreign *f, const char *name, unsigned number) {
        for (size_t i = 0; i < f->n_parts; i++)
                if (f->parts[i].number == number)
                        return &f->parts[i];
        Part *parts = realloc(f->parts, (f->n_parts + 1) * sizeof(Part));
        if (!parts)
                return NULL;
        f->parts = parts;
        Part *p = &f->parts[f->n_parts];
        *p = (Part){ .number = number, .name = strdup(name) };
        if (!p->name)
                return NULL;
        f->n_parts++;
        return p;
}

/* The partition number at the end of a partition's name (sda1, nvme0n1p2, d1p3), after the disk's. */
static int number_after(Foreign *f, const char *part, unsigned *ret) {
        const char *rest = startswith(part, f->disk);
        char *end;

        if (rest && *rest == 'p' && rest[1] >= '0' && rest[1] <= '9')
                rest++;
        unsigned long n = rest && *rest >= '1' && *rest <= '9' ? strtoul(rest, &end, 10) : 0;
        if (n == 0 || n > 128 || *end)
                return fail(f, -EBADMSG, "\"%.64s\" does not name a partition of %s", part, f->disk);
        *ret = (unsigned) n;
        return 0;
}

/* The split pieces of base in order: base itself, or base.aa, base.ab, … (Clonezilla) / base.000, … */
static int collect_pieces(Foreign *f, Part *p, const char *base) {
        size_t len = strlen(base);
        STRV_FOREACH(name, f->names) {
                const char *suffix = startswith(*name, base);
                if (!suffix || (*suffix && (*suffix != '.' || len + 1 >= strlen(*name) ||
                                            strspn(suffix + 1, "abcdefghijklmnopqrstuvwxyz0123456789") !=
                                                    strlen(suffix + 1))))
                        continue;
                if (strv_extend(&p->pieces, *name) < 0)
                        return -ENOMEM;
        }
        if (strv_length(p->pieces) > 1 && streq(p->pieces[0], base))
                return fail(f, -EBADMSG, "%s is there whole and split into pieces too", base);
        return 0;
}

static int compression_of(Foreign *f, const char *what, const char *name, Compression *ret) {
        if (streq(name, "gz"))
                *ret = COMPRESSION_GZIP;
        else if (streq(name, "zst"))
                *ret = COMPRESSION_ZSTD;
        else if (streq(name, "uncomp"))
                *ret = COMPRESSION_NONE;
        else
                return fail(f, -EBADMSG,
                            "%s is compressed with %s, which this import does not read: "
                            "decompress it first, or save the image with gzip (-z1p) or zstd (-z9p)",
                            what, name);
        return 0;
}

/* A swap partition's UUID and label, from Clonezilla's swappt-<part>.info (UUID="…" LABEL="…") or FOG's
 * d1.original.swapuuids; each only if it is what mkswap takes. */
static int set_swap(Part *p, const char *uuid, const char *label) {
        p->swap = true;
        if (uuid && strlen(uuid) == 36 && strspn(uuid, "0123456789abcdefABCDEF-") == 36 &&
            !(p->swap_uuid = strdup(uuid)))
                return -ENOMEM;
        if (label && strlen(label) <= 16 &&
            strspn(label, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") ==
                    strlen(label) &&
            *label && !(p->swap_label = strdup(label)))
                return -ENOMEM;
        return 0;
}

/* The value of KEY="…" in text, into buf. */
static const char *quoted_value(const char *text, const char *key, char *buf, size_t size) {
        const char *p = strstr(text, key);
        if (!p || p[strlen(key)] != '"')
                return NULL;
        p += strlen(key) + 1;
        size_t n = strcspn(p, "\"\n");
        if (p[n] != '"' || n >= size)
                return NULL;
        memcpy(buf, p, n);
        buf[n] = 0;
        return buf;
}

/* Clonezilla (savedisk): disk names the disk, parts its partitions, <disk>-pt.sf the sfdisk dump, and each
 * partition is <part>.<fs>-ptcl-img.<compression>[.aa …], or swappt-<part>.info for swap. */
static int clonezilla_parse(Foreign *f) {
        _cleanup_free_ char *disk = NULL, *parts = NULL;
        int r;

        f->format = "clonezilla";
        f->kind = "Clonezilla";
        r = read_entry(f, "disk", &disk);
        if (r == -ENOENT)
                return fail(f, -EBADMSG,
                            "it holds partitions without their disk (Clonezilla's saveparts); "
                            "PureBoot images are whole disks: save the disk with savedisk");
        if (r < 0)
                return r;
        _cleanup_strv_free_ char **disks = strv_split(disk, " \t\n");
        if (!disks)
                return -ENOMEM;
        if (strv_length(disks) != 1)
                return fail(f, -EBADMSG,
                            "it holds %zu disks (its file \"disk\" lists them); a PureBoot image "
                            "is one disk",
                            strv_length(disks));
        if (!device_name_is_valid(disks[0]))
                return fail(f, -EBADMSG, "its file \"disk\" names \"%.64s\", which is not a disk's name",
                            disks[0]);
        f->disk = strdup(disks[0]);
        if (!f->disk || asprintf(&f->table, "%s-pt.sf", f->disk) < 0 ||
            asprintf(&f->boot, "%s-mbr", f->disk) < 0 ||
            asprintf(&f->hidden, "%s-hidden-data-after-mbr", f->disk) < 0)
                return -ENOMEM;
        r = read_entry(f, "parts", &parts);
        if (r < 0)
                return r == -ENOENT ? fail(f, -EBADMSG, "it has no file \"parts\" listing its partitions")
                                    : r;
        _cleanup_strv_free_ char **names = strv_split(parts, " \t\n");
        if (!names)
                return -ENOMEM;
        STRV_FOREACH(name, names) {
                _cleanup_free_ char *swap = NULL, *ebr = NULL, *prefix = NULL, *base = NULL, *info = NULL;
                unsigned number;
                Part *p;

                if (!device_name_is_valid(*name))
                        return fail(f, -EBADMSG,
                                    "its file \"parts\" names \"%.64s\", which is not a partition's "
                                    "name",
                                    *name);
                r = number_after(f, *name, &number);
                if (r < 0)
                        return r;
                if (!(p = add_part(f, *name, number)) || asprintf(&swap, "swappt-%s.info", *name) < 0 ||
                    asprintf(&ebr, "%s-ebr", *name) < 0 || asprintf(&prefix, "%s.", *name) < 0)
                        return -ENOMEM;
                if (has_entry(f, swap)) {
                        char uuid[64], label[64];
                        r = read_entry(f, swap, &info);
                        if (r < 0)
                                return r;
                        r = set_swap(p, quoted_value(info, "UUID=", uuid, sizeof(uuid)),
                                     quoted_value(info, "LABEL=", label, sizeof(label)));
                        if (r < 0)
                                return r;
                        continue;
                }
                /* The one image of the partition: the first name that says it is partclone's names the rest.
                 */
                STRV_FOREACH(e, f->names) {
                        const char *rest = startswith(*e, prefix),
                                   *tag = rest ? strstr(rest, "-ptcl-img.") : NULL;
                        if (rest && !tag && (strstr(rest, "-img") || startswith(rest, "dd-img")))
                                return fail(f, -EBADMSG,
                                            "%s was saved by ntfsclone or dd, not partclone; this "
                                            "import reads partclone's images: save the disk again with a "
                                            "current Clonezilla",
                                            *e);
                        if (!tag)
                                continue;
                        const char *comp = tag + strlen("-ptcl-img.");
                        _cleanup_free_ char *c = strndup(comp, strcspn(comp, "."));
                        if (!c || asprintf(&base, "%.*s%s", (int) (comp - *e), *e, c) < 0)
                                return -ENOMEM;
                        r = compression_of(f, *e, c, &p->compression);
                        if (r < 0)
                                return r;
                        break;
                }
                if (base) {
                        r = collect_pieces(f, p, base);
                        if (r < 0)
                                return r;
                } else if (!has_entry(f, ebr))
                        return fail(f, -EBADMSG,
                                    "there is no image of partition %s, which its file \"parts\" "
                                    "lists: the image is incomplete",
                                    *name);
        }
        return 0;
}

/* FOG (single disk, resizable or not): d1.partitions is the sfdisk dump, d1.mbr the boot sectors (MBR
 * disks), d1p<N>.img each partition's partclone image (gzip or zstd), d1.original.swapuuids the swap
 * partitions. */
static int fog_parse(Foreign *f) {
        _cleanup_free_ char *swaps = NULL;
        int r;

        f->format = "fog";
        f->kind = "FOG";
        if (!(f->disk = strdup("d1")) || !(f->table = strdup("d1.partitions")) ||
            !(f->boot = strdup("d1.mbr")))
                return -ENOMEM;
        STRV_FOREACH(name, f->names) {
                const char *rest = startswith(*name, "d");
                if (rest && *rest >= '2' && *rest <= '9' && (rest[1] == '.' || rest[1] == 'p'))
                        return fail(f, -EBADMSG,
                                    "it holds more than one disk (%s); a PureBoot image is one disk", *name);
                rest = startswith(*name, "d1p");
                const char *img = rest ? strstr(rest, ".img") : NULL;
                if (!img || (img[4] && img[4] != '.'))
                        continue;
                _cleanup_free_ char *part = strndup(*name, (size_t) (img - *name)), *base = NULL;
                unsigned number;
                Part *p;
                if (!part || asprintf(&base, "%s.img", part) < 0)
                        return -ENOMEM;
                r = number_after(f, part, &number);
                if (r < 0)
                        return r;
                if (!(p = add_part(f, part, number)))
                        return -ENOMEM;
                if (!p->pieces) {
                        p->compression =
                                COMPRESSION_NONE; /* said by the first bytes: FOG names them alike */
                        r = collect_pieces(f, p, base);
                        if (r < 0)
                                return r;
                }
        }
        r = read_entry(f, "d1.original.swapuuids", &swaps);
        if (r < 0 && r != -ENOENT)
                return r;
        _cleanup_strv_free_ char **lines = swaps ? strv_split(swaps, "\n") : NULL;
        STRV_FOREACH(line, lines) {
                char dev[64], uuid[64];
                size_t digits;
                if (sscanf(*line, "%63s %63s", dev, uuid) != 2)
                        continue;
                digits = strspn(dev + strcspn(dev, "0123456789"), "0123456789");
                const char *num = dev + strlen(dev) - digits;
                unsigned long n = digits > 0 && digits < 4 ? strtoul(num, NULL, 10) : 0;
                if (n == 0 || n > 128)
                        continue;
                char part[32];
                (void) snprintf(part, sizeof(part), "d1p%lu", n);
                Part *p = add_part(f, part, (unsigned) n);
                if (!p || (!p->pieces && set_swap(p, uuid, NULL) < 0))
                        return -ENOMEM;
        }
        return 0;
}

/* What the sfdisk dump says of the disk: its label, last usable sector, sector size and partitions' ends. */
static int table_parse(Foreign *f, const char *dump, const char *parted) {
        uint64_t last_lba = 0, end = 0;
        _cleanup_strv_free_ char **lines = strv_split(dump, "\n");

        if (!lines)
                return -ENOMEM;
        f->sector_size = 512;
        f->first_start = UINT64_MAX;
        STRV_FOREACH(line, lines) {
                const char *v, *s;
                if ((v = startswith(*line, "label:")))
                        f->gpt = strstr(v, "gpt") != NULL;
                else if ((v = startswith(*line, "last-lba:")))
                        last_lba = strtoull(v, NULL, 10);
                else if ((v = startswith(*line, "sector-size:")))
                        f->sector_size = strtoull(v, NULL, 10);
                else if ((s = strstr(*line, "start=")) && (v = strstr(*line, "size="))) {
                        uint64_t start = strtoull(s + 6, NULL, 10), size = strtoull(v + 5, NULL, 10);
                        if (start > DISK_MAX / 512 || size > DISK_MAX / 512)
                                return fail(f, -EBADMSG, "%s places a partition beyond %s", f->table,
                                            FORMAT_BYTES(DISK_MAX));
                        end = MAX(end, start + size);
                        f->first_start = MIN(f->first_start, start);
                }
        }
        if (f->sector_size != 512)
                return fail(f, -EBADMSG,
                            "its disk has %" PRIu64 "-byte sectors; images of 512-byte-sector disks "
                            "only are imported so far",
                            f->sector_size);
        if (end == 0)
                return fail(f, -EBADMSG, "%s lists no partitions", f->table);
        /* GPT: the backup table's 33 sectors follow the last usable one. MBR: parted's record of the disk,
         * if Clonezilla kept one, else the end of the last partition. */
        uint64_t sectors = last_lba > 0 ? last_lba + 34 : end;
        const char *d = parted ? strstr(parted, "Disk /dev/") : NULL;
        if (!last_lba && d && (d = strstr(d, ": ")))
                sectors = MAX(sectors, strtoull(d + 2, NULL, 10));
        if (sectors > DISK_MAX / 512)
                return fail(f, -EBADMSG, "%s says the disk is larger than %s", f->table,
                            FORMAT_BYTES(DISK_MAX));
        f->size = sectors * 512;
        return 0;
}

typedef struct Feed {
        Foreign *f;
        Part *p;
        int out;
        char *why;
        pthread_t thread;
} Feed;

static int feed_fail(Feed *x, int r, const char *format, ...) _printf_(3, 4);
static int feed_fail(Feed *x, int r, const char *format, ...) {
        va_list ap;
        va_start(ap, format);
        r = reason_firstv(&x->why, r < 0 ? r : -EBADMSG, format, ap);
        va_end(ap);
        return r;
}

static void count(Feed *x, size_t n) {
        Foreign *f = x->f;
        uint64_t before = f->done / (16u << 20);
        f->done += n;
        if (f->progress && f->done / (16u << 20) != before)
                f->progress(f->done, f->total);
}

/* The partition's image, decompressed as its first bytes say, into x->out (partclone's stdin), closed at its
 * end. partclone stops reading when the image is bad: then the pipe breaks and its own words say why. */
static void *feed_thread(void *userdata) {
        Feed *x = userdata;
        Part *p = x->p;
        _cleanup_free_ uint8_t *in = malloc(IO_SIZE), *out = malloc(IO_SIZE);
        z_stream z = {};
        ZSTD_DCtx *dctx = ZSTD_createDCtx();
        Compression c = COMPRESSION_NONE;
        bool started = false, ended = true, zinit = false;
        int r = !in || !out || !dctx ? -ENOMEM : 0;

        STRV_FOREACH(piece, p->pieces) {
                int fd = r >= 0 ? open_entry(x->f, *piece, NULL) : -EBADF;
                if (r >= 0 && fd < 0)
                        r = feed_fail(x, fd, "%s", x->f->why ?: "cannot open a piece of the image");
                for (ssize_t n; r >= 0 && (n = read(fd, in, IO_SIZE)) != 0;) {
                        if (n < 0) {
                                r = feed_fail(x, -errno, "cannot read %s: %m", *piece);
                                break;
                        }
                        count(x, (size_t) n);
                        if (!started) { /* what the first bytes are decides */
                                started = true;
                                c = n >= 2 && in[0] == 0x1f && in[1] == 0x8b ? COMPRESSION_GZIP
                                    : n >= 4 && in[0] == 0x28 && in[1] == 0xb5 && in[2] == 0x2f &&
                                                    in[3] == 0xfd
                                            ? COMPRESSION_ZSTD
                                            : COMPRESSION_NONE;
                                if (c == COMPRESSION_NONE &&
                                    (n < 15 || memcmp(in, "partclone-image", 15) != 0)) {
                                        r = feed_fail(x, -EBADMSG,
                                                      "%s is neither a partclone image nor one "
                                                      "compressed with gzip or zstd",
                                                      *piece);
                                        break;
                                }
                                if (c != p->compression && p->compression != COMPRESSION_NONE) {
                                        r = feed_fail(x, -EBADMSG, "%s is not compressed as its name says",
                                                      *piece);
                                        break;
                                }
                                if (c == COMPRESSION_GZIP && inflateInit2(&z, 15 + 32) != Z_OK) {
                                        r = -ENOMEM;
                                        break;
                                }
                                zinit = c == COMPRESSION_GZIP;
                        }
                        if (c == COMPRESSION_NONE) {
                                r = write_full(x->out, in, (size_t) n);
                                continue;
                        }
                        if (c == COMPRESSION_ZSTD) {
                                ZSTD_inBuffer zi = { in, (size_t) n, 0 };
                                while (r >= 0 && zi.pos < zi.size) {
                                        ZSTD_outBuffer zo = { out, IO_SIZE, 0 };
                                        size_t k = ZSTD_decompressStream(dctx, &zo, &zi);
                                        if (ZSTD_isError(k))
                                                r = feed_fail(x, -EBADMSG, "%s does not decompress (%s)",
                                                              *piece, ZSTD_getErrorName(k));
                                        else {
                                                ended = k == 0;
                                                r = write_full(x->out, out, zo.pos);
                                        }
                                }
                                continue;
                        }
                        z.next_in = in;
                        z.avail_in = (uInt) n;
                        while (r >= 0 && z.avail_in > 0) {
                                z.next_out = out;
                                z.avail_out = IO_SIZE;
                                int k = inflate(&z, Z_NO_FLUSH);
                                if (k != Z_OK && k != Z_STREAM_END && k != Z_BUF_ERROR)
                                        r = feed_fail(x, -EBADMSG, "%s does not decompress (%s)", *piece,
                                                      z.msg ?: "gzip");
                                else {
                                        ended = k == Z_STREAM_END;
                                        r = write_full(x->out, out, IO_SIZE - z.avail_out);
                                        if (r >= 0 && ended && z.avail_in > 0) /* another gzip member */
                                                r = inflateReset(&z) == Z_OK ? 0 : -ENOMEM;
                                }
                        }
                }
                if (fd >= 0)
                        close(fd);
        }
        if (r >= 0 && !ended)
                r = feed_fail(x, -EBADMSG,
                              "the image of partition %s is cut short: its compressed stream ends "
                              "early",
                              p->name);
        if (r == -EPIPE) /* partclone stopped reading: what it says is the reason */
                free(TAKE_PTR(x->why));
        if (zinit)
                inflateEnd(&z);
        ZSTD_freeDCtx(dctx);
        close(x->out);
        x->out = -EBADF;
        return NULL;
}

/* partclone's or mkswap's work, in PARTITION_FILE (made the partition's size, so partclone refuses an image
 * of a larger one), copied into the disk at start: only what holds data, the rest stays a hole. */
static int copy_into(Foreign *f, int raw, uint64_t start) {
        _cleanup_free_ char *path = NULL;
        _cleanup_free_ uint8_t *buf = malloc(IO_SIZE);
        _cleanup_close_ int fd = -EBADF;
        int r = 0;

        if (!buf || asprintf(&path, "%s/" PARTITION_FILE, f->work) < 0)
                return -ENOMEM;
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return fail(f, -errno, "cannot open %s: %m", path);
        for (off_t at = 0;;) {
                off_t data = lseek(fd, at, SEEK_DATA), hole;
                if (data < 0)
                        break; /* ENXIO: no more data */
                hole = lseek(fd, data, SEEK_HOLE);
                if (hole < 0)
                        return fail(f, -errno, "cannot read %s: %m", path);
                for (off_t o = data; o < hole; o += IO_SIZE) {
                        size_t n = (size_t) MIN((off_t) IO_SIZE, hole - o);
                        r = pread_full(fd, buf, n, (uint64_t) o);
                        if (r >= 0 && !frame_is_zero(buf, n))
                                r = pwrite_full(raw, buf, n, start + (uint64_t) o);
                        if (r < 0)
                                return fail(f, r, "copying the partition into the disk file failed: %s",
                                            strerror(-r));
                }
                at = hole;
        }
        return 0;
}

static int restore_part(Foreign *f, Part *p, const PartitionInfo *info, int raw) {
        _cleanup_free_ char *path = NULL, *log = NULL, *out = NULL;
        _cleanup_close_ int fd = -EBADF;
        int r;

        if (asprintf(&path, "%s/" PARTITION_FILE, f->work) < 0 ||
            asprintf(&log, "%s/partclone.log", f->work) < 0)
                return -ENOMEM;
        fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 || ftruncate(fd, (off_t) info->size) < 0)
                return fail(f, -errno, "cannot make %s: %m", path);
        close(TAKE_FD(fd));
        if (p->swap) {
                const char *argv[8] = { "mkswap", "-q" };
                size_t n = 2;
                if (p->swap_uuid) {
                        argv[n++] = "-U";
                        argv[n++] = p->swap_uuid;
                }
                if (p->swap_label) {
                        argv[n++] = "-L";
                        argv[n++] = p->swap_label;
                }
                argv[n++] = path;
                r = tool_run((char *const *) argv, &out);
                if (r != 0)
                        r = fail(f, -EIO, "mkswap for partition %s failed: %s", p->name,
                                 tool_last_line(out));
        } else {
                int pipefd[2];
                Feed x = { .f = f, .p = p };
                const char *argv[] = {
                        "partclone.restore", "-q", "-f", "0", "-s", "-", "-O", path, "-L", log, NULL
                };

                if (pipe2(pipefd, O_CLOEXEC) < 0)
                        return -errno;
                x.out = pipefd[1];
                r = -pthread_create(&x.thread, NULL, feed_thread, &x);
                if (r < 0) {
                        close(pipefd[0]);
                        close(pipefd[1]);
                        return r;
                }
                r = tool_run_input((char *const *) argv, pipefd[0], &out);
                close(pipefd[0]); /* a feed still writing sees the pipe break */
                (void) pthread_join(x.thread, NULL);
                if (x.why || r != 0) {
                        /* partclone's own way round its size check is not one to offer here */
                        char *reason = x.why
                                               ?: r > 0 && out ? (char *) partclone_reason(out)
                                                               : strerror(r < 0 ? -r : EIO),
                             *advice = strstr(reason, " Use option -C");
                        if (advice)
                                *advice = 0;
                        r = fail(f, -EBADMSG, "partition %s was not restored: %s", p->name, reason);
                }
                free(x.why);
                (void) unlink(log);
        }
        if (r >= 0)
                r = copy_into(f, raw, info->start);
        (void) unlink(path);
        return r;
}

/* The boot code before the table (MBR disks): Clonezilla's <disk>-mbr (its first 446 bytes; the table is
 * sfdisk's to write) and what lay after it up to the first partition; FOG's d1.mbr, up to there. */
static int write_boot(Foreign *f, int raw) {
        uint64_t room = f->first_start * 512;
        const char *files[] = { f->boot, f->hidden };
        uint64_t at[] = { 0, 512 };
        int r;

        if (f->gpt)
                return 0; /* FOG's d1.mbr of a GPT disk is sgdisk's backup; sfdisk writes the tables */
        for (size_t i = 0; i < ELEMENTSOF(files); i++) {
                _cleanup_close_ int fd = -EBADF;
                _cleanup_free_ uint8_t *buf = NULL;
                struct stat st;
                if (!files[i] || !has_entry(f, files[i]))
                        continue;
                fd = open_entry(f, files[i], &st);
                if (fd < 0)
                        return fd;
                uint64_t n = (uint64_t) st.st_size;
                if (i == 0 && streq(f->format, "clonezilla"))
                        n = MIN(n, (uint64_t) 446);
                if (n > room || at[i] + n > room)
                        return fail(f, -EBADMSG,
                                    "%s is %" PRIu64 " bytes, more than there is before the first "
                                    "partition",
                                    files[i], (uint64_t) st.st_size);
                if (!(buf = malloc(n ?: 1)))
                        return -ENOMEM;
                r = pread_full(fd, buf, n, 0);
                if (r >= 0)
                        r = pwrite_full(raw, buf, n, at[i]);
                if (r < 0)
                        return fail(f, r, "cannot copy %s: %s", files[i], strerror(-r));
        }
        return 0;
}

static int foreign_restore(Foreign *f, const char *raw_path) {
        _cleanup_(disk_info_done) DiskInfo info = {};
        _cleanup_free_ char *dump = NULL, *parted = NULL, *out = NULL;
        _cleanup_close_ int raw = -EBADF, table = -EBADF;
        int r;

        r = read_entry(f, f->table, &dump);
        if (r == -ENOENT)
                return fail(f, -EBADMSG,
                            "it has no partition table (%s, an sfdisk dump); PureBoot reads the "
                            "table from there",
                            f->table);
        if (r >= 0 && streq(f->format, "clonezilla")) {
                _cleanup_free_ char *name = NULL;
                if (asprintf(&name, "%s-pt.parted", f->disk) < 0)
                        return -ENOMEM;
                r = read_entry(f, name, &parted);
                if (r == -ENOENT)
                        r = 0;
        }
        if (r >= 0)
                r = table_parse(f, dump, parted);
        if (r < 0)
                return r;
        raw = open(raw_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (raw < 0 || ftruncate(raw, (off_t) f->size) < 0)
                return fail(f, -errno, "cannot make the %s disk file %s: %m", FORMAT_BYTES(f->size),
                            raw_path);
        r = write_boot(f, raw);
        if (r < 0)
                return r;
        table = open_entry(f, f->table, NULL);
        if (table < 0)
                return table;
        const char *sfdisk[] = { "sfdisk", "-q", "--no-reread", "--no-tell-kernel", raw_path, NULL };
        r = tool_run_input((char *const *) sfdisk, table, &out);
        if (r != 0)
                return fail(f, -EBADMSG, "sfdisk refused its partition table %s: %s", f->table,
                            r > 0 ? tool_last_line(out) : strerror(-r));
        r = scan_disk(raw_path, &info);
        if (r < 0)
                return fail(f, r, "the partition table sfdisk wrote cannot be read back: %s", strerror(-r));
        for (size_t i = 0; i < f->n_parts; i++) {
                Part *p = &f->parts[i];
                STRV_FOREACH(piece, p->pieces) {
                        struct stat st;
                        if (fstatat(f->dir, *piece, &st, AT_SYMLINK_NOFOLLOW) >= 0 && S_ISREG(st.st_mode))
                                f->total += (uint64_t) st.st_size;
                }
        }
        for (size_t i = 0; i < f->n_parts; i++) {
                Part *p = &f->parts[i];
                const PartitionInfo *pi = NULL;
                for (size_t k = 0; k < info.n_partitions; k++)
                        if (info.partitions[k].number == p->number)
                                pi = &info.partitions[k];
                if (!pi)
                        return fail(f, -EBADMSG,
                                    "there is an image of partition %s, which its partition table "
                                    "does not have",
                                    p->name);
                if (!p->pieces && !p->swap)
                        continue; /* an extended partition: its table is sfdisk's */
                log_info("Restoring partition %s (%s) of the %s image.", p->name,
                         p->swap ? "swap" : "partclone", f->kind);
                r = restore_part(f, p, pi, raw);
                if (r < 0)
                        return r;
        }
        for (size_t k = 0; k < info.n_partitions; k++) {
                bool imaged = false;
                for (size_t i = 0; i < f->n_parts; i++)
                        imaged = imaged || f->parts[i].number == info.partitions[k].number;
                _cleanup_free_ char *note = NULL;
                if (!imaged &&
                    (asprintf(&note, "partition %u has no image in the %s image; it is left empty",
                              info.partitions[k].number, f->kind) < 0 ||
                     strv_extend(&f->notes, note) < 0))
                        return -ENOMEM;
        }
        if (fsync(raw) < 0)
                return fail(f, -errno, "cannot write the disk file: %m");
        return 0;
}

/* A disk someone opened for us (a desktop's, through udisks2's OpenForBackup): copied into the raw file
 * chunk by chunk, its runs of zeroes left as holes. */
static int disk_restore(int source, const char *raw_path, ImageProgress progress, ImportedDisk *ret,
                        char **ret_why) {
        _cleanup_close_ int raw = -EBADF;
        _cleanup_free_ uint8_t *buf = NULL;
        Device d = DEVICE_NULL;
        int r;

        r = device_adopt(fcntl(source, F_DUPFD_CLOEXEC, 3), NULL, &d);
        if (r < 0)
                return reason_first(ret_why, r, "cannot read the disk: %s", strerror(-r));
        raw = open(raw_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        buf = device_buffer_new(FRAME_CHUNK);
        if (raw < 0)
                r = reason_first(ret_why, -errno, "cannot make the disk file: %m");
        else if (!buf)
                r = -ENOMEM;
        for (uint64_t at = 0; r >= 0 && at < d.size; at += FRAME_CHUNK) {
                size_t n = (size_t) MIN((uint64_t) FRAME_CHUNK, d.size - at);
                r = device_pread(&d, buf, n, at);
                if (r < 0)
                        r = reason_first(ret_why, r, "reading %s at %" PRIu64 " failed: %s", d.path, at,
                                         strerror(-r));
                else if (!frame_is_zero(buf, n) && (r = pwrite_full(raw, buf, n, at)) < 0)
                        r = reason_first(ret_why, r, "writing the disk file failed: %s", strerror(-r));
                if (r >= 0 && progress && at % (64 * FRAME_CHUNK) == 0)
                        progress(at, d.size);
        }
        if (r >= 0 && (ftruncate(raw, (off_t) d.size) < 0 || fsync(raw) < 0))
                r = reason_first(ret_why, -errno, "writing the disk file failed: %m");
        if (r >= 0) {
                _cleanup_free_ char *origin = NULL;
                ret->format = "disk";
                ret->header = json_object_new_object();
                ret->device = strdup(d.path);
                if (!ret->header || !ret->device ||
                    asprintf(&origin, "the disk %s (%s)", d.path, FORMAT_BYTES(d.size)) < 0)
                        r = -ENOMEM;
                else
                        json_object_object_add(ret->header, "origin", json_object_new_string(origin));
        }
        if (r >= 0 && progress)
                progress(d.size, d.size);
        device_close(&d);
        return r;
}

int image_import_restore(int source, const char *work, ImageProgress progress, ImportedDisk *ret,
                         char **ret_why) {
        _cleanup_free_ char *raw_path = NULL;
        Foreign f = { .dir = source, .work = work, .progress = progress };
        struct stat st;
        int r;

        *ret = (ImportedDisk){};
        if (asprintf(&raw_path, "%s/" IMPORT_DISK_FILE, work) < 0)
                return -ENOMEM;
        if (fstat(source, &st) < 0)
                return -errno;
        if (S_ISBLK(st.st_mode)) {
                r = disk_restore(source, raw_path, progress, ret, ret_why);
                if (r < 0)
                        imported_disk_done(ret);
                return r;
        }
        if (!S_ISDIR(st.st_mode)) {
                _cleanup_close_ int raw = open(raw_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
                if (raw < 0)
                        return -errno;
                ret->format = "pureboot";
                r = image_file_restore(source, raw, &ret->header, &ret->skipped, progress, ret_why);
                if (r >= 0 && fsync(raw) < 0)
                        r = -errno;
                if (r >= 0 && json_get_string(ret->header, "sourceDevice") &&
                    !(ret->device = strdup(json_get_string(ret->header, "sourceDevice"))))
                        r = -ENOMEM;
                return r;
        }
        r = list_entries(&f);
        if (r >= 0) {
                if (has_entry(&f, "parts") || has_entry(&f, "disk") || has_entry(&f, "clonezilla-img"))
                        r = clonezilla_parse(&f);
                else if (has_entry(&f, "d1.partitions") || has_entry(&f, "d1.mbr") ||
                         has_entry(&f, "d1p1.img"))
                        r = fog_parse(&f);
                else
                        r = fail(&f, -EBADMSG,
                                 "the directory is neither a Clonezilla image (no files \"disk\" and "
                                 "\"parts\") nor a FOG one (no d1.partitions)");
        }
        if (r >= 0)
                r = foreign_restore(&f, raw_path);
        if (r >= 0) {
                ret->format = f.format;
                ret->header = json_object_new_object();
                _cleanup_free_ char *origin = NULL;
                if (!ret->header ||
                    asprintf(&origin, "a %s image of %s (%zu partitions)", f.kind, f.disk, f.n_parts) < 0)
                        r = -ENOMEM;
                else
                        json_object_object_add(ret->header, "origin", json_object_new_string(origin));
                ret->notes = TAKE_PTR(f.notes);
                if (asprintf(&ret->device, "/dev/%s", streq(f.format, "fog") ? "sda" : f.disk) < 0)
                        r = -ENOMEM;
        }
        if (r < 0 && !f.why)
                (void) fail(&f, r, "%s", strerror(-r));
        if (r < 0) {
                *ret_why = TAKE_PTR(f.why);
                imported_disk_done(ret);
        }
        foreign_done(&f);
        return r;
}
