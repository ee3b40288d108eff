/* SPDX-License-Identifier: MIT */
/* A node's power. Drivers: manual (the operator switches it; every action is refused with that said) and wol
 * (a Wake-on-LAN magic packet — six 0xff bytes, then the node's MAC sixteen times — sent by UDP from this
 * host to a broadcast address: the one given, or that of the interface given, else 255.255.255.255; it can
 * only wake a machine). Actions run in a worker. */
#include <ctype.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "address.h"
#include "bus-util.h"
#include "log.h"
#include "power.h"
#include "pureboot-errors.h"
#include "store.h"
#include "util.h"
#include "worker.h"

#define WOL_PORT 9

typedef struct PowerSetting {
        const char *name;
        bool (*valid)(const char *value);
        const char *what; /* what a value must be, for the refusal */
} PowerSetting;

static bool ipv4_is_valid(const char *s) {
        struct in_addr a;
        return s && inet_pton(AF_INET, s, &a) == 1;
}

static bool interface_is_valid(const char *s) {
        if (!s || isempty(s) || strlen(s) >= IFNAMSIZ)
                return false;
        for (const char *p = s; *p; p++)
                if (!isalnum((unsigned char) *p) && !strchr("-_.:@", *p))
                        return false;
        return true;
}

static bool port_is_valid(const char *s) {
        char *end;
        unsigned long v = s ? strtoul(s, &end, 10) : 0;
        return s && *s && !*end && v > 0 && v <= 65535;
}

static const PowerSetting wol_settings[] = {
        { "broadcast", ipv4_is_valid, "an IPv4 broadcast address, such as 10.0.0.255" },
        { "interface", interface_is_valid, "a network interface of the controller's host, such as eth1" },
        { "port", port_is_valid, "a UDP port (7 or 9, the default)" },
};

static const struct {
        const PowerSetting *settings;
        size_t n;
        const char *help;
} drivers[_POWER_DRIVER_MAX] = {
        [POWER_NONE] = { NULL, 0, "none takes no settings" },
        [POWER_MANUAL] = { NULL, 0, "manual takes no settings" },
        [POWER_WOL] = { wol_settings, ELEMENTSOF(wol_settings),
                        "wol takes broadcast=IPV4 or interface=NAME (default: 255.255.255.255), and port=" },
};

int power_configure(Node *n, const char *driver, json_object *settings, bool check_only,
                    sd_bus_error *error) {
        int d = power_driver_from_string(driver);
        if (d < 0)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "Power driver \"%.32s\" is not none, manual or wol.",
                                         strna(driver));
        json_object_object_foreach (settings, key, value) {
                const PowerSetting *s = NULL;
                for (size_t i = 0; i < drivers[d].n; i++)
                        if (streq(drivers[d].settings[i].name, key))
                                s = &drivers[d].settings[i];
                if (!s)
                        return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                                 "Power driver %s has no setting \"%.32s\": %s.", driver,
                                                 key, drivers[d].help);
                if (!s->valid(json_object_get_string(value)))
                        return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT, "%s=%.64s: %s is %s.",
                                                 key, json_object_get_string(value), key, s->what);
        }
        if (json_object_object_get_ex(settings, "broadcast", NULL) &&
            json_object_object_get_ex(settings, "interface", NULL))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "Give broadcast= or interface=, not both: the packet goes to one "
                                         "broadcast address.");
        if (check_only)
                return 0;

        PowerDriver old_driver = n->power_driver;
        json_object *old_settings = n->power_settings;
        n->power_driver = (PowerDriver) d;
        n->power_settings = json_object_object_length(settings) > 0 ? json_object_get(settings) : NULL;
        int r = store_node_update(n->manager->store, n);
        if (r < 0) {
                json_object_put(n->power_settings);
                n->power_driver = old_driver;
                n->power_settings = old_settings;
                return bus_store_error(error, r, "record the power settings");
        }
        json_object_put(old_settings);
        log_info("Node %s: power driver %s.", n->hostname, driver);
        node_emit_changed(n, "PowerDriver", "PowerSettings", NULL);
        return 0;
}

typedef struct PowerJob {
        char *node, *mac, *broadcast, *interface;
        uint16_t port;
        PowerDone done;
        void *userdata;
} PowerJob;

static void power_job_free(PowerJob *j) {
        free(j->node);
        free(j->mac);
        free(j->broadcast);
        free(j->interface);
        free(j);
}

/* The IPv4 broadcast address of interface name's subnet, into buf: its address with every host bit set (not
 * the interface's own broadcast setting, which an address added without one leaves unset). Asked with ioctls
 * on an AF_INET socket, which the unit's RestrictAddressFamilies= allows (getifaddrs() needs netlink). */
static int interface_broadcast(const char *name, char *buf, size_t size) {
        _cleanup_close_ int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        struct ifreq ifr = {};
        struct in_addr address, mask;

        if (fd < 0)
                return -errno;
        if (strlen(name) >= sizeof(ifr.ifr_name))
                return -EINVAL;
        memcpy(ifr.ifr_name, name, strlen(name) + 1);
        if (ioctl(fd, SIOCGIFADDR, &ifr) < 0)
                return -errno;
        address = ((struct sockaddr_in *) &ifr.ifr_addr)->sin_addr;
        if (ioctl(fd, SIOCGIFNETMASK, &ifr) < 0)
                return -errno;
        mask = ((struct sockaddr_in *) &ifr.ifr_netmask)->sin_addr;
        struct in_addr b = { address.s_addr | ~mask.s_addr };
        return inet_ntop(AF_INET, &b, buf, (socklen_t) size) ? 0 : -errno;
}

static json_object *wol_child(void *data, char **ret_why) {
        PowerJob *j = data;
        uint8_t packet[6 + 16 * 6], mac[6];
        char broadcast[INET_ADDRSTRLEN];
        SocketAddress to;
        socklen_t len;
        int one = 1, r;

        if (sscanf(j->mac, "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &mac[0], &mac[1], &mac[2], &mac[3], &mac[4],
                   &mac[5]) != 6) {
                (void) asprintf(ret_why, "its MAC %s cannot be read", j->mac);
                return NULL;
        }
        memset(packet, 0xff, 6);
        for (size_t k = 0; k < 16; k++)
                memcpy(packet + 6 + 6 * k, mac, 6);
        if (j->interface && (r = interface_broadcast(j->interface, broadcast, sizeof(broadcast))) < 0) {
                (void) asprintf(ret_why, "interface %s of this host has no IPv4 broadcast address (%s)",
                                j->interface, strerror(-r));
                return NULL;
        }
        const char *address = j->interface ? broadcast : j->broadcast ?: "255.255.255.255";
        _cleanup_close_ int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &one, sizeof(one)) < 0 ||
            socket_address_from_ip(address, j->port, &to, &len) < 0 ||
            sendto(fd, packet, sizeof(packet), 0, &to.sa, len) != (ssize_t) sizeof(packet)) {
                (void) asprintf(ret_why, "sending the magic packet to %s:%u failed: %s", address, j->port,
                                strerror(errno));
                return NULL;
        }
        json_object *o = json_object_new_object();
        char *sent = NULL;
        if (asprintf(&sent,
                     "A Wake-on-LAN magic packet for %s went to %s:%u; the machine wakes if its firmware "
                     "and network card allow it.",
                     j->mac, address, j->port) >= 0)
                json_object_object_add(o, "outcome", json_object_new_string(sent));
        free(sent);
        return o;
}

static void on_done(Manager *m, json_object *result, const char *why, void *userdata) {
        PowerJob *j = userdata;
        Node *n = hashmap_get(m->nodes, j->node);
        const char *outcome = json_get_string(result, "outcome");
        if (n)
                log_info("Node %s: %s", n->hostname, why ?: strna(outcome));
        j->done(m, j->node, outcome,
                why
                        ?: outcome ? NULL
                                   : "the power action ended without saying what it did",
                j->userdata);
        power_job_free(j);
}

int power_act(Node *n, const char *action, PowerDone done, void *userdata, sd_bus_error *error) {
        _cleanup_free_ char *what = NULL;
        int a = power_action_from_string(action);
        PowerJob *j;
        int r;

        if (a < 0)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "Power action \"%.32s\" is not on, off, cycle or status.",
                                         strna(action));
        switch (n->power_driver) {
        case POWER_NONE:
                return sd_bus_error_setf(
                        error, PB_ERROR_INVALID_STATE,
                        "Node %s has no power driver: give it one (purebootctl node set-power "
                        "%s --driver wol), or switch it by hand.",
                        n->hostname, n->hostname);
        case POWER_MANUAL:
                return sd_bus_error_setf(
                        error, PB_ERROR_INVALID_STATE,
                        "Node %s is switched by hand (power driver manual): %s it yourself.", n->hostname,
                        a == POWER_ON      ? "switch it on"
                        : a == POWER_OFF   ? "switch it off"
                        : a == POWER_CYCLE ? "restart"
                                           : "look at");
        case POWER_WOL:
                if (a != POWER_ON)
                        return sd_bus_error_setf(
                                error, PB_ERROR_INVALID_STATE,
                                "Wake-on-LAN can only wake node %s; it cannot %s it. Give it "
                                "a driver that reaches its BMC for that, or do it by hand.",
                                n->hostname,
                                a == POWER_OFF     ? "switch off"
                                : a == POWER_CYCLE ? "restart"
                                                   : "see");
                break;
        default:
                assert_not_reached();
        }
        j = calloc(1, sizeof(PowerJob));
        if (!j)
                return -ENOMEM;
        const char *port = json_get_string(n->power_settings, "port"),
                   *broadcast = json_get_string(n->power_settings, "broadcast"),
                   *interface = json_get_string(n->power_settings, "interface");
        *j = (PowerJob){ .node = strdup(n->id),
                         .mac = strdup(n->mac),
                         .broadcast = broadcast ? strdup(broadcast) : NULL,
                         .interface = interface ? strdup(interface) : NULL,
                         .port = port ? (uint16_t) strtoul(port, NULL, 10) : WOL_PORT,
                         .done = done,
                         .userdata = userdata };
        if (!j->node || !j->mac || (broadcast && !j->broadcast) || (interface && !j->interface) ||
            asprintf(&what, "power %s of node %s", action, n->hostname) < 0) {
                power_job_free(j);
                return -ENOMEM;
        }
        r = worker_start(n->manager, what, wol_child, j, on_done, j, NULL);
        if (r < 0)
                power_job_free(j);
        return r;
}
