/* SPDX-License-Identifier: MIT */
/* purebootctl boot-media write DEVICE|FILE --server URL: a boot stick for machines that cannot boot from the
 * network, which asks the bridge at URL what the machine boots. deploy/pxe/make-boot-media lays it out in a
 * file of the stick's size, as this user; a stick (a disk of this machine) is then opened through udisks2,
 * whose polkit actions decide, and the stick's part of that file is written onto it. */
#include <fcntl.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "ctl-udisks.h"
#include "ctl.h"
#include "format.h"
#include "log.h"
#include "tool.h"
#include "util.h"

#define MIB (UINT64_C(1) << 20)
/* What make-boot-media lays out: the GPT and its partitions in the first 48 MiB, the GPT's backup in the
 * last MiB. */
#define STICK_LAYOUT (48 * MIB)
#define STICK_BACKUP MIB

/* Where make-boot-media is: PUREBOOT_PXE_DIR (a source tree's deploy/pxe), or where it is installed. */
static int make_boot_media(const char *file, const char *url) {
        _cleanup_free_ char *tool = NULL, *output = NULL;
        const char *dir = getenv("PUREBOOT_PXE_DIR");
        int r;

        if (asprintf(&tool, "%s/make-boot-media", dir ?: PKGDATADIR "/pxe") < 0)
                return log_oom(), EXIT_FAILED;
        r = tool_runl(&output, tool, file, url, NULL);
        if (r != 0) {
                log_error("Cannot make the boot stick: %s",
                          r < 0 ? "make-boot-media did not run (is PureBoot installed whole?)"
                                : tool_last_line(output));
                return EXIT_FAILED;
        }
        return EXIT_OK;
}

/* Copies [offset, offset+size) of from onto to, zeros included: what the stick had there goes. */
static int copy_range(int from, int to, uint64_t offset, uint64_t size) {
        _cleanup_free_ uint8_t *buf = malloc(MIB);
        if (!buf)
                return -ENOMEM;
        for (uint64_t done = 0; done < size; done += MIB) {
                size_t n = (size_t) MIN((uint64_t) MIB, size - done);
                int r = pread_full(from, buf, n, offset + done);
                if (r >= 0)
                        r = pwrite_full(to, buf, n, offset + done);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* A stick (st: its device node): opened by udisks2, the layout made in a sparse file of its size, then
 * written and synced. */
static int write_stick(const char *device, const struct stat *st, const char *url) {
        _cleanup_free_ char *why = NULL, *sys = NULL;
        char temp[] = "/var/tmp/pureboot-stick-XXXXXX"; /* mkostemp's template */
        char attr[16];
        _cleanup_close_ int fd = -EBADF, image = -EBADF;
        uint64_t size;
        int sector, r;

        if (asprintf(&sys, "/sys/dev/block/%u:%u", major(st->st_rdev), minor(st->st_rdev)) < 0)
                return log_oom(), EXIT_FAILED;
        if (read_attribute(sys, "partition", attr, sizeof(attr)) >= 0) {
                log_error("%s is a partition; name the whole stick (such as /dev/sdb).", device);
                return EXIT_USAGE;
        }
        r = udisks_open_disk(device, true, !arg.no_ask_password, &fd, &why);
        if (r < 0)
                return log_error_errno(r, "%s", why), r == -EACCES ? EXIT_NOT_AUTHORIZED : EXIT_FAILED;
        if (ioctl(fd, BLKGETSIZE64, &size) < 0 || ioctl(fd, BLKSSZGET, &sector) < 0)
                return log_error_errno(errno, "Cannot read the size of %s: %m", device), EXIT_FAILED;
        if (sector != 512) {
                log_error("%s has %d-byte sectors; a boot stick is laid out for 512-byte ones, as USB sticks "
                          "have. Use another stick.",
                          device, sector);
                return EXIT_FAILED;
        }
        if (size < STICK_LAYOUT) {
                log_error("%s is %s; a boot stick needs %s at least.", device, FORMAT_BYTES(size),
                          FORMAT_BYTES(STICK_LAYOUT));
                return EXIT_FAILED;
        }

        image = mkostemp(temp, O_CLOEXEC);
        if (image < 0)
                return log_error_errno(errno, "Cannot make a file in /var/tmp: %m"), EXIT_FAILED;
        if (ftruncate(image, (off_t) size) < 0) {
                log_error_errno(errno, "Cannot size %s: %m", temp);
                (void) unlink(temp);
                return EXIT_FAILED;
        }
        r = make_boot_media(temp, url);
        (void) unlink(temp);
        if (r != EXIT_OK)
                return r;

        printf("Writing a boot stick onto %s (%s)…\n", device, FORMAT_BYTES(size));
        fflush(stdout);
        r = copy_range(image, fd, 0, STICK_LAYOUT);
        if (r >= 0 && size > STICK_LAYOUT)
                r = copy_range(image, fd, size - STICK_BACKUP, STICK_BACKUP);
        if (r >= 0 && fsync(fd) < 0)
                r = -errno;
        if (r < 0)
                return log_error_errno(r, "Writing %s failed: %m. Do not boot from it; write it again.", device),
                       EXIT_FAILED;
        printf("%s boots UEFI machines (Secure Boot too) and BIOS machines into asking %s what they boot.\n",
               device, url);
        return EXIT_OK;
}

/* A file, new: the stick's image, 48 MiB, for another tool to write. */
static int write_file(const char *file, const char *url) {
        _cleanup_close_ int fd = ctl_create_new(file);
        int r;

        if (fd < 0)
                return EXIT_FAILED;
        r = make_boot_media(file, url);
        if (r != EXIT_OK) {
                (void) unlink(file);
                return r;
        }
        printf("%s is a boot stick's image (%s); write it onto a stick whole.\n", file,
               FORMAT_BYTES(STICK_LAYOUT));
        return EXIT_OK;
}

int verb_boot_media(sd_bus *bus, int argc, char **argv) {
        struct stat st;
        (void) bus;

        if (argc != 2 || !streq(argv[0], "write")) {
                log_error("Usage: purebootctl boot-media write DEVICE|FILE --server URL; see purebootctl --help.");
                return EXIT_USAGE;
        }
        if (!ctl_require(arg.server, "--server URL", "boot-media write"))
                return EXIT_USAGE;
        if (!startswith(arg.server, "http://")) {
                log_error("--server takes the bridge's plain HTTP listener, http://HOST:PORT (Debian's iPXE has "
                          "no TLS), not \"%s\".",
                          arg.server);
                return EXIT_USAGE;
        }
        if (stat(argv[1], &st) >= 0 && S_ISBLK(st.st_mode))
                return write_stick(argv[1], &st, arg.server);
        return write_file(argv[1], arg.server);
}
