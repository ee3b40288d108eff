/* SPDX-License-Identifier: MIT */
/* A clone's boot entry on a UEFI machine. The firmware boots an OS through a Boot#### variable in its NVRAM
 * that names the loader on the EFI system partition; that variable stays in the source machine, so a clone
 * whose ESP has no loader at the removable-media path (EFI/BOOT/BOOTX64.EFI) does not boot by itself: the
 * firmware shows its menu (a known pain after a Clonezilla restore). After a target's copy, on a UEFI
 * machine, the disk's ESPs are searched for the OS's loader: EFI/<vendor>/shimx64.efi (Secure Boot's first
 * stage), else EFI/<vendor>/grubx64.efi, else the one .efi file of a vendor directory. efibootmgr then makes
 * an entry for it, or finds the one there is for the same partition and loader, and puts it first in
 * BootOrder after the network entries, which a network-booted fleet keeps first. */
#include <ctype.h>
#include <dirent.h>
#include <linux/major.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "device.h"
#include "disk-model.h"
#include "efi-boot.h"
#include "log.h"
#include "scan.h"
#include "tool.h"
#include "util.h"

#define ESP_TYPE "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
#define EFIVARS "/sys/firmware/efi/efivars"

static int compare_strings(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

static bool is_efi_file(const char *name) {
        size_t n = strlen(name);
        return n > 4 && strcasecmp(name + n - 4, ".efi") == 0;
}

/* name, in directory dir, whatever its case (FAT keeps the case it was written with), or NULL. */
static char *find_name(const char *dir, const char *name, bool directory) {
        _cleanup_(closedirp) DIR *d = opendir(dir);
        struct dirent *e;

        while (d && (e = readdir(d)))
                if (strcasecmp(e->d_name, name) == 0 && (e->d_type == DT_DIR) == directory)
                        return strdup(e->d_name);
        return NULL;
}

/* The OS loader under the ESP mounted at root, as the firmware names it (\EFI\vendor\file), and the
 * vendor's directory name, which labels the entry. */
static int find_loader(const char *root, char **ret_path, char **ret_vendor) {
        _cleanup_free_ char *efi_name = find_name(root, "EFI", true), *efi = NULL;
        _cleanup_strv_free_ char **vendors = strv_new(NULL);
        struct dirent *e;

        if (!efi_name || asprintf(&efi, "%s/%s", root, efi_name) < 0)
                return 0;
        _cleanup_(closedirp) DIR *d = opendir(efi);
        while (d && (e = readdir(d)))
                if (e->d_type == DT_DIR && e->d_name[0] != '.' && strcasecmp(e->d_name, "BOOT") != 0 &&
                    strv_extend(&vendors, e->d_name) < 0)
                        return -ENOMEM;
        qsort(vendors, strv_length(vendors), sizeof(char *), compare_strings);
        /* Secure Boot's shim first, then GRUB, in any vendor's directory; then a vendor's only loader. */
        static const char *const preferred[] = { "shimx64.efi", "grubx64.efi" };
        for (size_t i = 0; i < ELEMENTSOF(preferred); i++)
                STRV_FOREACH(v, vendors) {
                        _cleanup_free_ char *dir = NULL, *file = NULL;
                        if (asprintf(&dir, "%s/%s", efi, *v) < 0)
                                return -ENOMEM;
                        file = find_name(dir, preferred[i], false);
                        if (file) {
                                *ret_vendor = strdup(*v);
                                return asprintf(ret_path, "\\%s\\%s\\%s", efi_name, *v, file) < 0 ||
                                                       !*ret_vendor
                                               ? -ENOMEM
                                               : 1;
                        }
                }
        STRV_FOREACH(v, vendors) {
                _cleanup_free_ char *dir = NULL, *only = NULL;
                unsigned n = 0;
                if (asprintf(&dir, "%s/%s", efi, *v) < 0)
                        return -ENOMEM;
                _cleanup_(closedirp) DIR *vd = opendir(dir);
                while (vd && (e = readdir(vd)))
                        if (e->d_type == DT_REG && is_efi_file(e->d_name) && n++ == 0)
                                only = strdup(e->d_name);
                if (n == 1 && only) {
                        *ret_vendor = strdup(*v);
                        return asprintf(ret_path, "\\%s\\%s\\%s", efi_name, *v, only) < 0 || !*ret_vendor
                                       ? -ENOMEM
                                       : 1;
                }
        }
        return 0;
}

/* The GPT partition GUID of node, which the entry's HD() device path names (lower case). */
static char *partition_guid(const char *node) {
        _cleanup_free_ char *out = NULL;
        if (tool_runl(&out, "blkid", "-p", "-s", "PART_ENTRY_UUID", "-o", "value", node, NULL) != 0 || !out)
                return NULL;
        out[strcspn(out, "\n")] = 0;
        for (char *c = out; *c; c++)
                *c = (char) tolower((unsigned char) *c);
        return isempty(out) ? NULL : TAKE_PTR(out);
}

/* efibootmgr -v's listing: BootOrder, and the entry for guid and loader, and which entries boot from the
 * network. */
typedef struct Entries {
        char **order;   /* the four hex digits of each Boot#### entry, in BootOrder's order */
        char **network; /* those of the entries with a MAC(), IPv4(), IPv6() or Uri() device path */
        char found[5];  /* the entry for the loader, "" if none */
} Entries;

static void entries_done(Entries *e) {
        strv_free(e->order);
        strv_free(e->network);
}

static int read_entries(const char *guid, const char *loader, Entries *ret, char **ret_error) {
        _cleanup_free_ char *out = NULL, *lower_loader = strdup(loader);
        int r;

        if (!lower_loader)
                return -ENOMEM;
        for (char *c = lower_loader; *c; c++)
                *c = (char) tolower((unsigned char) *c);
        r = tool_runl(&out, "efibootmgr", "-v", NULL);
        if (r != 0)
                return asprintf(ret_error, "efibootmgr -v failed: %s",
                                out ? tool_last_line(out) : strerror(-r)) < 0
                               ? -ENOMEM
                               : -EIO;
        *ret = (Entries){ .order = strv_new(NULL), .network = strv_new(NULL) };
        for (char *line = out, *next; line && *line; line = next) {
                next = strchr(line, '\n');
                if (next)
                        *next++ = 0;
                const char *v = startswith(line, "BootOrder: ");
                if (v) {
                        strv_free(ret->order);
                        ret->order = strv_split(v, ",");
                        if (!ret->order)
                                return -ENOMEM;
                        continue;
                }
                if (!startswith(line, "Boot") || strlen(line) < 9 || !isxdigit((unsigned char) line[4]) ||
                    line[8] == ':')
                        continue;
                char number[5] = { line[4], line[5], line[6], line[7], 0 };
                for (char *c = line; *c; c++)
                        *c = (char) tolower((unsigned char) *c);
                if (strstr(line, "/mac(") || strstr(line, "/ipv4(") || strstr(line, "/ipv6(") ||
                    strstr(line, "/uri("))
                        if (strv_extend(&ret->network, number) < 0)
                                return -ENOMEM;
                if (!ret->found[0] && strstr(line, guid) && strstr(line, lower_loader))
                        memcpy(ret->found, number, sizeof(number));
        }
        return 0;
}

/* BootOrder with number right after the network entries that lead the others (efibootmgr --create put it
 * first: it does not count). */
static char *order_with(const Entries *e, const char *number) {
        _cleanup_free_ char *order = strdup("");
        bool placed = false;

        STRV_FOREACH(o, e->order) {
                if (strcasecmp(*o, number) == 0)
                        continue;
                if (!placed && !strv_contains((const char *const *) e->network, *o)) {
                        if (strextend_printf(&order, "%s%s", *order ? "," : "", number) < 0)
                                return NULL;
                        placed = true;
                }
                if (strextend_printf(&order, "%s%s", *order ? "," : "", *o) < 0)
                        return NULL;
        }
        if (!placed && strextend_printf(&order, "%s%s", *order ? "," : "", number) < 0)
                return NULL;
        return TAKE_PTR(order);
}

static int make_entry(const char *disk, unsigned part, const char *node, const char *loader,
                      const char *vendor, char **ret_summary, char **ret_error) {
        _cleanup_(entries_done) Entries e = {};
        _cleanup_free_ char *guid = partition_guid(node), *out = NULL, *order = NULL, *number_text = NULL;
        const char *made = "found";
        int r;

        if (!guid)
                return asprintf(ret_error, "partition %u of %s has no GPT partition GUID", part, disk) < 0
                               ? -ENOMEM
                               : -EINVAL;
        r = read_entries(guid, loader, &e, ret_error);
        if (r < 0)
                return r;
        if (!e.found[0]) {
                /* efibootmgr makes the next free Boot#### and puts it first; the order is set below. */
                if (asprintf(&number_text, "%u", part) < 0)
                        return -ENOMEM;
                r = tool_runl(&out, "efibootmgr", "--quiet", "--create", "--disk", disk, "--part",
                              number_text, "--label", vendor, "--loader", loader, NULL);
                if (r != 0)
                        return asprintf(ret_error, "efibootmgr --create failed: %s",
                                        out ? tool_last_line(out) : strerror(-r)) < 0
                                       ? -ENOMEM
                                       : -EIO;
                entries_done(&e);
                r = read_entries(guid, loader, &e, ret_error);
                if (r < 0)
                        return r;
                if (!e.found[0])
                        return asprintf(ret_error, "efibootmgr made no entry for %s that it lists", loader) <
                                               0
                                       ? -ENOMEM
                                       : -EIO;
                made = "made";
        }
        order = order_with(&e, e.found);
        if (!order)
                return -ENOMEM;
        out = mfree(out);
        r = tool_runl(&out, "efibootmgr", "--quiet", "--bootorder", order, NULL);
        if (r != 0)
                return asprintf(ret_error, "efibootmgr --bootorder %s failed: %s", order,
                                out ? tool_last_line(out) : strerror(-r)) < 0
                               ? -ENOMEM
                               : -EIO;
        return asprintf(ret_summary, "boot entry Boot%s \"%s\" for %s on partition %u %s; BootOrder %s",
                        e.found, vendor, loader, part, made, order) < 0
                       ? -ENOMEM
                       : 0;
}

int efi_boot_entry_ensure(const char *disk, char **ret_summary, char **ret_error) {
        _cleanup_(disk_info_done) DiskInfo info = {};
        int r;

        *ret_summary = *ret_error = NULL;
        if (access(EFIVARS, F_OK) < 0) {
                *ret_summary = strdup("not a UEFI machine: no boot entry to make");
                return *ret_summary ? 0 : -ENOMEM;
        }
        /* Firmware boots disks, not loop devices (the test suites' disks, on the machine that runs them: its
         * NVRAM is not the clone's to change). */
        struct stat st;
        if (stat(disk, &st) >= 0 && S_ISBLK(st.st_mode) && major(st.st_rdev) == LOOP_MAJOR) {
                *ret_summary = strdup("a loop device, which no firmware boots: no boot entry made");
                return *ret_summary ? 0 : -ENOMEM;
        }
        r = scan_disk(disk, &info);
        if (r < 0)
                return asprintf(ret_error, "scanning %s failed: %s", disk, strerror(-r)) < 0 ? -ENOMEM : r;
        for (size_t i = 0; i < info.n_partitions; i++) {
                const PartitionInfo *p = &info.partitions[i];
                _cleanup_free_ char *node = NULL, *loader = NULL, *vendor = NULL;
                DeviceMount m;

                if (!p->type || strcasecmp(p->type, ESP_TYPE) != 0 || !streq_ptr(p->filesystem, "vfat"))
                        continue;
                node = partition_node_wait(disk, p->number);
                if (!node)
                        return asprintf(ret_error, "partition %u of %s has no device", p->number, disk) < 0
                                       ? -ENOMEM
                                       : -ENODEV;
                r = device_mount(node, "vfat", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, &m);
                if (r < 0)
                        return asprintf(ret_error, "mounting the EFI system partition %s failed: %s", node,
                                        strerror(-r)) < 0
                                       ? -ENOMEM
                                       : r;
                r = find_loader(m.dir, &loader, &vendor);
                device_umount(&m);
                if (r < 0)
                        return r;
                if (r == 0)
                        continue;
                return make_entry(disk, p->number, node, loader, vendor, ret_summary, ret_error);
        }
        *ret_summary =
                strdup("no OS loader under EFI/<vendor>/ on an EFI system partition: no boot entry made");
        return *ret_summary ? 0 : -ENOMEM;
}
