/* SPDX-License-Identifier: MIT */
/* What the machine is, as the kernel sees it: DMI (or a device tree's model and serial, on a Raspberry Pi),
 * the firmware and Secure Boot state, CPUs, memory, disks and network interfaces, from sysfs and /proc, read
 * once at every boot and reported (ReportHardware) whatever the mode. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/ethtool.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hardware.h"
#include "job.h"
#include "log.h"
#include "queue.h"
#include "scan.h"
#include "util.h"

#define DMI "/sys/class/dmi/id"
#define DEVICE_TREE "/sys/firmware/devicetree/base"
#define SECURE_BOOT "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"

static void add_string(json_object *o, const char *key, const char *value) {
        if (!isempty(value))
                json_object_object_add(o, key, json_object_new_string(value));
}

/* dir/name as a string member key, where it has one and key is not set yet (the first source that has it). */
static void add_attribute(json_object *o, const char *key, const char *dir, const char *name) {
        char buf[256];
        if (!json_object_object_get_ex(o, key, NULL) && read_attribute(dir, name, buf, sizeof(buf)) >= 0)
                add_string(o, key, buf);
}

static uint64_t attribute_u64(const char *dir, const char *name, uint64_t fallback) {
        char buf[64], *end;
        if (read_attribute(dir, name, buf, sizeof(buf)) < 0)
                return fallback;
        errno = 0;
        unsigned long long v = strtoull(buf, &end, 10);
        return errno || end == buf ? fallback : (uint64_t) v;
}

/* A device tree string property (NUL-terminated, no newline), where there is one. */
static void add_device_tree(json_object *o, const char *key, const char *name) {
        _cleanup_free_ char *path = NULL, *text = NULL;
        size_t size = 0;
        if (json_object_object_get_ex(o, key, NULL) || asprintf(&path, DEVICE_TREE "/%s", name) < 0 ||
            read_full_file(path, &text, &size) < 0 || size == 0)
                return;
        text[strnlen(text, size)] = 0;
        add_string(o, key, text);
}

static void add_system(json_object *o) {
        static const struct {
                const char *key, *name;
        } dmi[] = {
                { "vendor", "sys_vendor" },          { "product", "product_name" },
                { "serial", "product_serial" },      { "uuid", "product_uuid" },
                { "boardVendor", "board_vendor" },   { "boardName", "board_name" },
                { "firmwareVendor", "bios_vendor" }, { "firmwareVersion", "bios_version" },
                { "firmwareDate", "bios_date" },
        };
        for (size_t i = 0; i < ELEMENTSOF(dmi); i++)
                add_attribute(o, dmi[i].key, DMI, dmi[i].name);
        /* Machines without DMI (ARM boards) name themselves in their device tree. */
        add_device_tree(o, "product", "model");
        add_device_tree(o, "serial", "serial-number");

        bool uefi = access("/sys/firmware/efi", F_OK) == 0;
        json_object_object_add(o, "firmware", json_object_new_string(uefi ? "uefi" : "bios"));
        /* The variable: 4 bytes of attributes, then 1 when Secure Boot is enforced. */
        _cleanup_free_ char *sb = NULL;
        size_t n = 0;
        if (uefi && read_full_file(SECURE_BOOT, &sb, &n) >= 0 && n >= 5)
                json_object_object_add(o, "secureBoot", json_object_new_boolean(sb[4] == 1));
        else if (uefi)
                json_object_object_add(o, "secureBoot", json_object_new_boolean(false));
}

/* The model of the first CPU, how many threads run, and how many cores they are (distinct physical id and
 * core id pairs; the threads where /proc/cpuinfo does not say). */
static void add_cpus(json_object *o) {
        _cleanup_fclose_ FILE *f = fopen("/proc/cpuinfo", "re");
        _cleanup_strv_free_ char **cores = strv_new(NULL);
        _cleanup_free_ char *model = NULL;
        char line[512], physical[32] = "0";
        int threads = 0;

        if (!f || !cores)
                return;
        while (fgets(line, sizeof(line), f)) {
                char *colon = strchr(line, ':'),
                     *value = colon ? colon + 1 + strspn(colon + 1, " \t") : NULL;
                if (!value)
                        continue;
                value[strcspn(value, "\n")] = 0;
                if (startswith(line, "processor"))
                        threads++;
                else if (startswith(line, "model name") && !model)
                        model = strdup(value);
                else if (startswith(line, "physical id"))
                        snprintf(physical, sizeof(physical), "%s", value);
                else if (startswith(line, "core id")) {
                        _cleanup_free_ char *id = NULL;
                        if (asprintf(&id, "%s/%s", physical, value) >= 0 &&
                            !strv_contains((const char *const *) cores, id))
                                (void) strv_extend(&cores, id);
                }
        }
        if (threads == 0)
                threads = (int) MAX(sysconf(_SC_NPROCESSORS_ONLN), 1L);
        add_string(o, "cpuModel", model);
        json_object_object_add(o, "cpuCores",
                               json_object_new_int(strv_length(cores) ? (int) strv_length(cores) : threads));
        json_object_object_add(o, "cpuThreads", json_object_new_int(threads));
}

static void add_memory(json_object *o) {
        _cleanup_fclose_ FILE *f = fopen("/proc/meminfo", "re");
        unsigned long long kib;
        char line[256];
        while (f && fgets(line, sizeof(line), f))
                if (sscanf(line, "MemTotal: %llu kB", &kib) == 1) {
                        json_object_object_add(o, "memoryBytes",
                                               json_object_new_int64((int64_t) (kib * 1024)));
                        return;
                }
}

/* How the disk is attached, from where it sits in the device tree. */
static const char *transport_of(const char *name, const char *sys) {
        _cleanup_free_ char *real = realpath(sys, NULL);
        if (startswith(name, "loop"))
                return "loop";
        if (!real)
                return NULL;
        return strstr(real, "/nvme")                                   ? "nvme"
               : strstr(real, "/usb")                                  ? "usb"
               : strstr(real, "/mmc_host")                             ? "mmc"
               : strstr(real, "/virtio")                               ? "virtio"
               : strstr(real, "/ata")                                  ? "sata"
               : strstr(real, "/end_device-") || strstr(real, "/sas_") ? "sas"
                                                                       : "scsi";
}

/* A SCSI disk's serial from its unit serial number page (0x80: a 4-byte header, then the ASCII). */
static void add_vpd_serial(json_object *o, const char *sys) {
        _cleanup_free_ char *path = NULL, *page = NULL;
        size_t n = 0;
        if (json_object_object_get_ex(o, "serial", NULL) || asprintf(&path, "%s/device/vpd_pg80", sys) < 0 ||
            read_full_file(path, &page, &n) < 0 || n <= 4)
                return;
        size_t len = MIN(n - 4, (size_t) (((uint8_t) page[2] << 8) | (uint8_t) page[3]));
        _cleanup_free_ char *serial = strndup(page + 4, len);
        if (!serial)
                return;
        /* padded with blanks on either side; anything unprintable makes it no serial */
        char *s = serial + strspn(serial, " ");
        for (size_t k = strlen(s); k > 0 && s[k - 1] == ' '; k--)
                s[k - 1] = 0;
        if (name_is_valid(s, 128))
                add_string(o, "serial", s);
}

static json_object *disk_json(const char *device) {
        const char *name = startswith(device, "/dev/");
        _cleanup_free_ char *sys = NULL;
        json_object *d;

        if (isempty(name) || strchr(name, '/') || asprintf(&sys, "/sys/block/%s", name) < 0 ||
            access(sys, F_OK) < 0)
                return NULL;
        d = json_object_new_object();
        add_string(d, "device", device);
        add_attribute(d, "model", sys, "device/model");
        add_attribute(d, "serial", sys, "device/serial");
        add_attribute(d, "serial", sys, "serial");
        add_vpd_serial(d, sys);
        json_object_object_add(d, "sizeBytes",
                               json_object_new_int64((int64_t) (attribute_u64(sys, "size", 0) * 512)));
        json_object_object_add(
                d, "logicalSectorSize",
                json_object_new_int((int) attribute_u64(sys, "queue/logical_block_size", 512)));
        json_object_object_add(
                d, "physicalSectorSize",
                json_object_new_int((int) attribute_u64(sys, "queue/physical_block_size", 512)));
        json_object_object_add(d, "rotational",
                               json_object_new_boolean(attribute_u64(sys, "queue/rotational", 0)));
        json_object_object_add(d, "removable", json_object_new_boolean(attribute_u64(sys, "removable", 0)));
        add_string(d, "transport", transport_of(name, sys));
        return d;
}

/* The driver an interface is bound to, as ethtool names it (virtual ones too), else its sysfs link. */
static char *driver_of(const char *name) {
        _cleanup_close_ int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        struct ethtool_drvinfo info = { .cmd = ETHTOOL_GDRVINFO };
        struct ifreq ifr = { .ifr_data = (void *) &info };
        _cleanup_free_ char *link = NULL, *target = NULL;

        if (strlen(name) >= sizeof(ifr.ifr_name))
                return NULL;
        memcpy(ifr.ifr_name, name, strlen(name) + 1);
        if (fd >= 0 && ioctl(fd, SIOCETHTOOL, &ifr) == 0 && info.driver[0])
                return strndup(info.driver, sizeof(info.driver));
        if (asprintf(&link, "/sys/class/net/%s/device/driver", name) < 0 || !(target = realpath(link, NULL)))
                return NULL;
        return strdup(strrchr(target, '/') + 1);
}

static json_object *interfaces_json(void) {
        _cleanup_(closedirp) DIR *d = opendir("/sys/class/net");
        json_object *a = json_object_new_array();

        for (struct dirent *e; d && a && (e = readdir(d));) {
                _cleanup_free_ char *sys = NULL, *driver = NULL;
                if (e->d_name[0] == '.' || streq(e->d_name, "lo") ||
                    asprintf(&sys, "/sys/class/net/%s", e->d_name) < 0)
                        continue;
                if (attribute_u64(sys, "type", 0) != 1) /* Ethernet only: not tunnels, not loopback */
                        continue;
                json_object *n = json_object_new_object();
                add_string(n, "name", e->d_name);
                add_attribute(n, "mac", sys, "address");
                driver = driver_of(e->d_name);
                add_string(n, "driver", driver);
                /* The speed reads as -1 or fails while there is no link. */
                char buf[32];
                long speed =
                        read_attribute(sys, "speed", buf, sizeof(buf)) >= 0 ? strtol(buf, NULL, 10) : -1;
                if (speed > 0)
                        json_object_object_add(n, "speedMbps", json_object_new_int64(speed));
                json_object_object_add(n, "link",
                                       json_object_new_boolean(attribute_u64(sys, "carrier", 0) == 1));
                json_object_array_add(a, n);
        }
        return a;
}

json_object *hardware_collect(char **devices, const char *device) {
        _cleanup_strv_free_ char **found = NULL;
        json_object *o = json_object_new_object(), *disks = json_object_new_array();

        if (!o || !disks) {
                json_object_put(o);
                json_object_put(disks);
                return NULL;
        }
        add_system(o);
        add_cpus(o);
        add_memory(o);
        /* Every disk of the kinds machines boot from (which makes one of those that is not here absent),
         * then those the agent was told to look at and a clone role's own, wherever they are. */
        if (scan_list_disks(&found) < 0)
                found = strv_new(NULL);
        STRV_FOREACH(dev, devices)
        if (!strv_contains((const char *const *) found, *dev))
                (void) strv_extend(&found, *dev);
        if (device && !strv_contains((const char *const *) found, device))
                (void) strv_extend(&found, device);
        STRV_FOREACH(dev, found) {
                json_object *d = disk_json(*dev);
                if (d)
                        json_object_array_add(disks, d);
        }
        json_object_object_add(o, "disks", disks);
        json_object_object_add(o, "interfaces", interfaces_json());
        return o;
}

void hardware_report(Agent *a) {
        json_object *hw = hardware_collect(a->settings.devices, a->settings.device);
        json_object *p = streq_ptr(a->role, "node") ? json_object_new_object() : agent_report_new(a, NULL);

        if (!hw || !p) {
                json_object_put(hw);
                json_object_put(p);
                log_warning("Could not make the hardware report: out of memory.");
                return;
        }
        log_info("This machine: %s %s, %d CPU threads, %zu disks, %zu network interfaces.",
                 strna(json_get_string(hw, "vendor")), strna(json_get_string(hw, "product")),
                 (int) json_get_int(hw, "cpuThreads"),
                 json_object_array_length(json_object_object_get(hw, "disks")),
                 json_object_array_length(json_object_object_get(hw, "interfaces")));
        json_object_object_add(p, "hardware", hw);
        (void) queue_push(a->queue, "ReportHardware", p);
}
