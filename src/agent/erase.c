/* SPDX-License-Identifier: MIT */
/* Erasing a whole disk (erase.h). The disk is opened exclusively, so a mounted or otherwise held disk is
 * refused before a byte changes. discard and zero go in steps, counting what is done; secure hands the
 * disk to the drive's own command (nvme-cli's format with a user-data erase, hdparm's ATA security erase)
 * and refuses a disk that has neither. Whatever the method, the check after is the same: the first and the
 * last MiB and samples spread over the disk, read past the page cache, must all be zeros. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "erase.h"
#include "format.h"
#include "log.h"
#include "tool.h"
#include "util.h"

#define DISCARD_STEP (1024ULL * 1024 * 1024)
#define ZERO_STEP (64ULL * 1024 * 1024)
#define SAMPLES 62 /* besides the first and the last MiB */
#define SAMPLE_SIZE (64U * 1024)
#define EDGE_SIZE (1024U * 1024)

struct Eraser {
        Agent *agent;
        char *device, *name; /* /dev/sdb, sdb */
        EraseMethod method;
        EraseProgress progress;
        EraseDone done;
        sd_event_source *thread_done, *timer;
        int event_fd;
        pthread_t thread;
        bool thread_started;
        _Atomic uint64_t bytes;
        _Atomic bool cancel;
        uint64_t size, started_at;
        /* the thread's outcome, read once it is joined */
        char *error, *how, *checked;
};

Eraser *erase_free(Eraser *e) {
        if (!e)
                return NULL;
        if (e->thread_started) {
                e->cancel = true;
                (void) pthread_join(e->thread, NULL);
        }
        sd_event_source_disable_unref(e->thread_done);
        sd_event_source_disable_unref(e->timer);
        if (e->event_fd >= 0)
                close(e->event_fd);
        free(e->device);
        free(e->name);
        free(e->error);
        free(e->how);
        free(e->checked);
        free(e);
        return NULL;
}

_printf_(2, 3) static int fail(Eraser *e, const char *format, ...) {
        va_list ap;
        va_start(ap, format);
        if (!e->error && vasprintf(&e->error, format, ap) < 0)
                e->error = NULL;
        va_end(ap);
        return -EIO;
}

static char *sysfs_dir(const Eraser *e, const char *sub) {
        char *dir = NULL;
        return asprintf(&dir, "/sys/class/block/%s%s", e->name, sub) < 0 ? NULL : dir;
}

/* Every block discarded, securely where the device can: the first step tells. */
static int discard_all(Eraser *e, int fd) {
        _cleanup_free_ char *queue = sysfs_dir(e, "/queue");
        char max[32] = "";
        bool secure = true;

        if (!queue)
                return -ENOMEM;
        if (read_attribute(queue, "discard_max_bytes", max, sizeof(max)) < 0 || streq(max, "0"))
                return fail(e,
                            "%s cannot discard (its queue/discard_max_bytes is 0); nothing was erased. Use "
                            "--method zero, which writes every block.",
                            e->device);
        for (uint64_t at = 0; at < e->size && !e->cancel;) {
                uint64_t range[2] = { at, MIN(DISCARD_STEP, e->size - at) };
                if (secure && ioctl(fd, BLKSECDISCARD, range) < 0) {
                        if (errno != EOPNOTSUPP && errno != EINVAL)
                                return fail(e, "Secure discard of %s failed at %s: %s", e->device,
                                            FORMAT_BYTES(at), strerror(errno));
                        secure = false;
                }
                if (!secure && ioctl(fd, BLKDISCARD, range) < 0)
                        return fail(
                                e,
                                "Discarding %s failed at %s: %s. What was discarded before is gone; erase "
                                "again (--method zero writes every block).",
                                e->device, FORMAT_BYTES(at), strerror(errno));
                at += range[1];
                e->bytes = at;
        }
        e->how = strdup(secure ? "by a secure discard of every block"
                               : "by discarding every block (the device has no secure discard)");
        return e->how ? 0 : -ENOMEM;
}

/* Every block written with zeros: the kernel sends the device's write-zeroes command where it has one,
 * and writes zeroed pages where it has not. */
static int zero_all(Eraser *e, int fd) {
        for (uint64_t at = 0; at < e->size && !e->cancel;) {
                uint64_t range[2] = { at, MIN(ZERO_STEP, e->size - at) };
                if (ioctl(fd, BLKZEROOUT, range) < 0)
                        return fail(e,
                                    "Writing zeros to %s failed at %s: %s. What was written before stays "
                                    "zeroed; erase again.",
                                    e->device, FORMAT_BYTES(at), strerror(errno));
                at += range[1];
                e->bytes = at;
        }
        e->how = strdup("by writing zeros to every block");
        return e->how ? 0 : -ENOMEM;
}

static int run_tool(Eraser *e, const char *what, char *const argv[]) {
        _cleanup_free_ char *output = NULL;
        int r = tool_run(argv, &output);
        if (r == 0)
                return 0;
        return fail(e, "%s of %s failed (%s %s): %s", what, e->device, argv[0],
                    r < 0 ? "could not run" : "exited non-zero",
                    output ? tool_last_line(output) : strerror(-r));
}

/* The ATA security feature set, as hdparm -I shows it: supported, not frozen (firmware freezes it at
 * boot on many machines), not locked. */
static int ata_secure_erase(Eraser *e) {
        _cleanup_free_ char *output = NULL;
        char *security;
        int r = tool_runl(&output, "hdparm", "-I", e->device, NULL);

        if (r != 0)
                return fail(e, "hdparm -I %s failed: %s; nothing was erased.", e->device,
                            output ? tool_last_line(output) : strerror(-r));
        security = strstr(output, "Security:");
        if (!security || !strstr(security, "\tsupported"))
                return fail(e, "%s has no ATA security feature set; nothing was erased. Use --method zero.",
                            e->device);
        if (!strstr(security, "not\tfrozen"))
                return fail(e,
                            "%s's security is frozen (the firmware freezes it at boot); nothing was erased. "
                            "Suspend and resume the machine or replug the drive, then erase again, or use "
                            "--method zero.",
                            e->device);
        if (!strstr(security, "not\tlocked"))
                return fail(e, "%s is locked with a password PureBoot does not know; nothing was erased.",
                            e->device);
        r = run_tool(e, "Setting the ATA security password",
                     (char *const[]){ "hdparm", "--user-master", "u", "--security-set-pass", "PureBoot",
                                      e->device, NULL });
        if (r >= 0)
                r = run_tool(e, "The ATA security erase",
                             (char *const[]){ "hdparm", "--user-master", "u", "--security-erase", "PureBoot",
                                              e->device, NULL });
        if (r < 0)
                return r;
        e->how = strdup("by the drive's ATA security erase");
        return e->how ? 0 : -ENOMEM;
}

/* The drive's own erase: an NVMe namespace is formatted with a user-data erase, an ATA drive gets its
 * security erase; anything else has none PureBoot can start. */
static int secure_erase(Eraser *e) {
        _cleanup_free_ char *device = sysfs_dir(e, "/device");
        char vendor[64] = "";
        int r;

        if (!device)
                return -ENOMEM;
        if (startswith(e->name, "nvme")) {
                r = run_tool(e, "The NVMe format with a user-data erase",
                             (char *const[]){ "nvme", "format", e->device, "--ses=1", "--force", NULL });
                if (r < 0)
                        return r;
                e->how = strdup("by an NVMe format with a user-data erase");
        } else if (read_attribute(device, "vendor", vendor, sizeof(vendor)) >= 0 && streq(vendor, "ATA"))
                return ata_secure_erase(e);
        else
                return fail(
                        e,
                        "%s has no secure erase of its own that PureBoot can start: it is neither an NVMe "
                        "namespace nor an ATA drive. Nothing was erased. Use --method zero (every block "
                        "written, then checked) or --method discard.",
                        e->device);
        e->bytes = e->size;
        return e->how ? 0 : -ENOMEM;
}

static bool all_zero(const uint8_t *p, size_t n) {
        return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/* The first and last MiB and SAMPLES pieces spread over the rest, at offsets that differ from run to run,
 * read past the page cache: the device's own answer. */
static int check_zeros(Eraser *e) {
        _cleanup_close_ int fd = open(e->device, O_RDONLY | O_DIRECT | O_CLOEXEC);
        _cleanup_free_ uint8_t *buf = NULL;
        uint64_t seed = now_monotonic_usec() | 1, checked = 0, bad_at = UINT64_MAX;
        size_t n = 0, bad = 0;

        if (fd < 0)
                return fail(e, "Cannot open %s to check it: %s", e->device, strerror(errno));
        if (posix_memalign((void **) &buf, 4096, EDGE_SIZE) != 0)
                return -ENOMEM;
        for (size_t i = 0; i < SAMPLES + 2; i++) {
                uint64_t offset, size = i < 2 ? EDGE_SIZE : SAMPLE_SIZE;
                if (size > e->size)
                        size = e->size / 4096 * 4096;
                if (i == 0)
                        offset = 0;
                else if (i == 1)
                        offset = e->size - size;
                else {
                        uint64_t span = e->size / SAMPLES;
                        seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
                        offset = MIN((i - 2) * span + seed % MAX(span, (uint64_t) 1), e->size - size);
                }
                offset = offset / 4096 * 4096;
                if (size == 0)
                        break;
                int r = pread_full(fd, buf, size, offset);
                if (r < 0)
                        return fail(e, "Reading %s back at %s failed: %s", e->device, FORMAT_BYTES(offset),
                                    strerror(-r));
                n++;
                checked += size;
                if (!all_zero(buf, size)) {
                        bad++;
                        bad_at = MIN(bad_at, offset);
                }
        }
        if (bad > 0)
                return fail(
                        e,
                        "%s was erased %s, but %zu of %zu samples read back still hold data (the first at "
                        "%s): it is not erased. %s",
                        e->device, strna(e->how), bad, n, FORMAT_BYTES(bad_at),
                        e->method == ERASE_DISCARD
                                ? "This disk does not read discarded blocks as zeros; use "
                                  "--method zero."
                                : "Erase again with --method zero.");
        return asprintf(&e->checked,
                        "%zu samples, %s in all, the first and the last MiB among them, read back "
                        "from the device as zeros",
                        n, FORMAT_BYTES(checked)) < 0
                       ? -ENOMEM
                       : 0;
}

static int erase_disk(Eraser *e) {
        _cleanup_close_ int fd = open(e->device, O_RDWR | O_EXCL | O_CLOEXEC);
        int r;

        if (fd < 0 && errno == EBUSY)
                return fail(e, "%s is in use (mounted, or held by another program); nothing was erased.",
                            e->device);
        if (fd < 0)
                return fail(e, "Cannot open %s: %s; nothing was erased.", e->device, strerror(errno));
        if (ioctl(fd, BLKGETSIZE64, &e->size) < 0)
                return fail(e, "Cannot read the size of %s: %s; nothing was erased.", e->device,
                            strerror(errno));
        r = e->method == ERASE_DISCARD ? discard_all(e, fd) : e->method == ERASE_ZERO ? zero_all(e, fd) : 0;
        if (r < 0)
                return r;
        if (e->cancel)
                return fail(e, "Stopped at %s of %s.", FORMAT_BYTES(e->bytes), FORMAT_BYTES(e->size));
        if (e->method == ERASE_SECURE) {
                close(TAKE_FD(fd)); /* the drive's tools open it themselves */
                r = secure_erase(e);
                if (r < 0)
                        return r;
                fd = open(e->device, O_RDONLY | O_CLOEXEC);
        }
        /* The kernel forgets the partitions that are gone. */
        if (fd >= 0)
                (void) ioctl(fd, BLKRRPART);
        return check_zeros(e);
}

static void *run(void *userdata) {
        Eraser *e = userdata;
        uint64_t one = 1;
        (void) erase_disk(e);
        if (write(e->event_fd, &one, sizeof(one)) < 0)
                log_error_errno(errno, "Failed to wake the loop after the erase: %m");
        return NULL;
}

static int on_progress(sd_event_source *s, uint64_t usec, void *userdata) {
        Eraser *e = userdata;
        (void) usec;
        (void) sd_event_source_set_time_relative(s, USEC_PER_SEC);
        if (e->size > 0)
                e->progress(e->agent, e, e->bytes, e->size);
        return 0;
}

static int on_thread_done(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        _cleanup_free_ char *result = NULL;
        Eraser *e = userdata;
        uint64_t usec = now_monotonic_usec() - e->started_at;
        (void) s, (void) fd, (void) revents;

        (void) pthread_join(e->thread, NULL);
        e->thread_started = false;
        e->thread_done = sd_event_source_disable_unref(e->thread_done);
        e->timer = sd_event_source_disable_unref(e->timer);
        if (!e->error &&
            asprintf(&result, "Erased %s (%s) %s in %.1f s; checked: %s.", e->device, FORMAT_BYTES(e->size),
                     e->how, (double) usec / USEC_PER_SEC, e->checked) < 0)
                (void) fail(e, "Out of memory after the erase.");
        if (!e->error)
                e->progress(e->agent, e, e->size, e->size);
        e->done(e->agent, e, e->error, result);
        return 0;
}

int erase_start(Agent *a, const char *device, EraseMethod method, EraseProgress progress, EraseDone done,
                Eraser **ret) {
        _cleanup_(erase_freep) Eraser *e = calloc(1, sizeof(Eraser));
        _cleanup_free_ char *real = NULL;
        int r;

        if (!e)
                return -ENOMEM;
        *e = (Eraser){ .agent = a, .method = method, .progress = progress, .done = done, .event_fd = -1 };
        real = realpath(device, NULL);
        if (!real)
                return log_error_errno(errno, "Cannot resolve %s: %m", device);
        e->device = strdup(device);
        e->name = strdup(basename(real));
        if (!e->device || !e->name)
                return -ENOMEM;
        e->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (e->event_fd < 0)
                return -errno;
        r = sd_event_add_io(a->event, &e->thread_done, e->event_fd, EPOLLIN, on_thread_done, e);
        if (r >= 0)
                r = agent_add_progress_timer(a, &e->timer, on_progress, e);
        if (r < 0)
                return r;
        e->started_at = now_monotonic_usec();
        r = -pthread_create(&e->thread, NULL, run, e);
        if (r < 0)
                return log_error_errno(r, "Failed to start the erase: %m");
        e->thread_started = true;
        *ret = TAKE_PTR(e);
        return 0;
}
