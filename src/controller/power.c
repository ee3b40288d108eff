/* SPDX-License-Identifier: MIT */
/* A node's power. Drivers: manual (the operator switches it; every action is refused with that said), wol
 * (a Wake-on-LAN magic packet — six 0xff bytes, then the node's MAC sixteen times — sent by UDP from this
 * host to a broadcast address: the one given, or that of the interface given, else 255.255.255.255; it can
 * only wake a machine), ipmi (the node's BMC over IPMI 2.0 LAN, with ipmitool) and redfish (its BMC's
 * Redfish API over HTTPS: power-redfish.c). A BMC's password is kept in the controller's database, given
 * to ipmitool in its environment, never on a command line nor over the bus. Actions run in a worker. */
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "address.h"
#include "bus-util.h"
#include "ini.h"
#include "log.h"
#include "power-redfish.h"
#include "power.h"
#include "pureboot-errors.h"
#include "store.h"
#include "tool.h"
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

static bool port_is_valid(const char *s) {
        uint64_t v;
        return s && parse_uint64(s, &v) >= 0 && v > 0 && v <= 65535;
}

/* An IPMI user name or password: 1 to 16 (20) printable characters. */
static bool ipmi_user_is_valid(const char *s) {
        return name_is_valid(s, 16);
}

static bool ipmi_password_is_valid(const char *s) {
        return name_is_valid(s, 20);
}

/* An IPMI 2.0 cipher suite: 0 to 17. */
static bool cipher_is_valid(const char *s) {
        uint64_t v;
        return s && parse_uint64(s, &v) >= 0 && v <= 17;
}

static bool redfish_user_is_valid(const char *s) {
        return name_is_valid(s, 64);
}

static bool redfish_password_is_valid(const char *s) {
        return name_is_valid(s, 128);
}

static bool ca_file_is_valid(const char *s) {
        return path_is_safe(s, 1024);
}

static bool boolean_is_valid(const char *s) {
        return s && parse_boolean(s) >= 0;
}

static const PowerSetting wol_settings[] = {
        { "broadcast", ipv4_is_valid, "an IPv4 broadcast address, such as 10.0.0.255" },
        { "interface", interface_name_is_valid,
          "a network interface of the controller's host, such as eth1" },
        { "port", port_is_valid, "a UDP port (7 or 9, the default)" },
};

static const PowerSetting ipmi_settings[] = {
        { "address", host_is_valid, "the BMC's host name or IP address" },
        { "port", port_is_valid, "a UDP port (623, the default)" },
        { "user", ipmi_user_is_valid, "an IPMI user name, 1 to 16 characters" },
        { "password", ipmi_password_is_valid, "an IPMI password, 1 to 20 characters" },
        { "cipher", cipher_is_valid, "an IPMI 2.0 cipher suite, 0 to 17 (17 or 3, most often)" },
};

static const PowerSetting redfish_settings[] = {
        { "address", host_is_valid, "the BMC's host name or IP address" },
        { "port", port_is_valid, "a TCP port (443, the default)" },
        { "user", redfish_user_is_valid, "a Redfish user name, 1 to 64 characters" },
        { "password", redfish_password_is_valid, "a Redfish password, 1 to 128 characters" },
        { "system", redfish_path_is_valid, "a Redfish system's path, such as /redfish/v1/Systems/1" },
        { "ca-file", ca_file_is_valid, "the absolute path of the BMC's certificate or its CA, in PEM" },
        { "verify", boolean_is_valid, "yes or no (whether the BMC's certificate is checked; default yes)" },
};

#define SECRET "password" /* the setting kept apart, never shown */

static const struct {
        const PowerSetting *settings;
        size_t n;
        const char *help;
        const char *required[3];
} drivers[_POWER_DRIVER_MAX] = {
        [POWER_NONE] = { NULL, 0, "none takes no settings", {} },
        [POWER_MANUAL] = { NULL, 0, "manual takes no settings", {} },
        [POWER_WOL] = { wol_settings,
                        ELEMENTSOF(wol_settings),
                        "wol takes broadcast=IPV4 or interface=NAME (default: 255.255.255.255), and port=",
                        {} },
        [POWER_IPMI] = { ipmi_settings,
                         ELEMENTSOF(ipmi_settings),
                         "ipmi takes address=, user=, password (purebootctl: password-file=), port= and "
                         "cipher=",
                         { "address", "user", NULL } },
        [POWER_REDFISH] = { redfish_settings,
                            ELEMENTSOF(redfish_settings),
                            "redfish takes address=, user=, password (purebootctl: password-file=), port=, "
                            "system=, ca-file= and verify=",
                            { "address", "user", NULL } },
};

/* A secret's bytes overwritten before its memory goes back. */
static void erase_and_free(char *s) {
        if (s)
                explicit_bzero(s, strlen(s));
        free(s);
}

int power_configure(Node *n, const char *driver, json_object *settings, bool check_only,
                    sd_bus_error *error) {
        _cleanup_(json_object_unrefp) json_object *shown = json_object_new_object();
        _cleanup_free_ char *secret = NULL;
        int d = power_driver_from_string(driver), r;

        if (!shown)
                return -ENOMEM;
        if (d < 0)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "Power driver \"%.32s\" is not none, manual, wol, ipmi or redfish.",
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
                        return streq(key, SECRET)
                                       ? sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                                           "The password is not %s.", s->what)
                                       : sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                                           "%s=%.64s: %s is %s.", key,
                                                           json_object_get_string(value), key, s->what);
                if (streq(key, SECRET))
                        secret = strdup(json_object_get_string(value));
                else
                        json_object_object_add(shown, key, json_object_get(value));
        }
        for (size_t i = 0; i < ELEMENTSOF(drivers[d].required) && drivers[d].required[i]; i++)
                if (!json_object_object_get_ex(shown, drivers[d].required[i], NULL))
                        return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                                 "Power driver %s needs %s=: %s.", driver,
                                                 drivers[d].required[i], drivers[d].help);
        if (json_object_object_get_ex(settings, "broadcast", NULL) &&
            json_object_object_get_ex(settings, "interface", NULL))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "Give broadcast= or interface=, not both: the packet goes to one "
                                         "broadcast address.");
        if (json_object_object_get_ex(settings, "ca-file", NULL) &&
            parse_boolean(json_get_string(settings, "verify")) == 0)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "Give ca-file= or verify=no, not both: the certificate is checked "
                                         "against ca-file, or not at all.");
        /* The same driver again without a password keeps the one it has. */
        bool keep = !secret && n->power_driver == (PowerDriver) d && n->power_secret;
        if ((d == POWER_IPMI || d == POWER_REDFISH) && !secret && !keep)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "Power driver %s needs the BMC user's password: give it "
                                         "(purebootctl: password-file=FILE).",
                                         driver);
        if (check_only)
                return 0;

        PowerDriver old_driver = n->power_driver;
        json_object *old_settings = n->power_settings;
        char *old_secret = n->power_secret;
        n->power_driver = (PowerDriver) d;
        n->power_settings = json_object_object_length(shown) > 0 ? json_object_get(shown) : NULL;
        n->power_secret = keep ? old_secret : secret;
        r = store_node_update(n->manager->store, n);
        if (r < 0) {
                json_object_put(n->power_settings);
                n->power_driver = old_driver;
                n->power_settings = old_settings;
                n->power_secret = old_secret;
                return bus_store_error(error, r, "record the power settings");
        }
        json_object_put(old_settings);
        if (!keep) {
                TAKE_PTR(secret);
                erase_and_free(old_secret);
        }
        log_info("Node %s: power driver %s.", n->hostname, driver);
        node_emit_changed(n, "PowerDriver", "PowerSettings", "PowerCredentialsSet", NULL);
        return 0;
}

typedef struct PowerJob {
        char *node, *hostname, *mac, *secret;
        PowerDriver driver;
        PowerAction action;
        json_object *settings;
        PowerDone done;
        void *userdata;
} PowerJob;

static void power_job_free(PowerJob *j) {
        free(j->node);
        free(j->hostname);
        free(j->mac);
        erase_and_free(j->secret);
        json_object_put(j->settings);
        free(j);
}

static json_object *outcome(const char *format, ...) _printf_(1, 2);
static json_object *outcome(const char *format, ...) {
        json_object *o = json_object_new_object();
        _cleanup_free_ char *text = NULL;
        va_list ap;
        va_start(ap, format);
        int r = vasprintf(&text, format, ap);
        va_end(ap);
        if (o && r >= 0)
                json_object_object_add(o, "outcome", json_object_new_string(text));
        return o;
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

static json_object *wol_child(PowerJob *j, char **ret_why) {
        const char *broadcast_setting = json_get_string(j->settings, "broadcast"),
                   *interface = json_get_string(j->settings, "interface"),
                   *port_setting = json_get_string(j->settings, "port");
        uint16_t port = port_setting ? (uint16_t) strtoul(port_setting, NULL, 10) : WOL_PORT;
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
        if (interface && (r = interface_broadcast(interface, broadcast, sizeof(broadcast))) < 0) {
                (void) asprintf(ret_why, "interface %s of this host has no IPv4 broadcast address (%s)",
                                interface, strerror(-r));
                return NULL;
        }
        const char *address = interface ? broadcast : broadcast_setting ?: "255.255.255.255";
        _cleanup_close_ int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &one, sizeof(one)) < 0 ||
            socket_address_from_ip(address, port, &to, &len) < 0 ||
            sendto(fd, packet, sizeof(packet), 0, &to.sa, len) != (ssize_t) sizeof(packet)) {
                (void) asprintf(ret_why, "sending the magic packet to %s:%u failed: %s", address, port,
                                strerror(errno));
                return NULL;
        }
        return outcome("A Wake-on-LAN magic packet for %s went to %s:%u; the machine wakes if its firmware "
                       "and network card allow it%s.",
                       j->mac, address, port,
                       j->action == POWER_NETBOOT ? ", and boots as its firmware's boot order says" : "");
}

/* ipmitool's chassis WHAT VERB (power status, on, off, cycle; bootdev pxe) at the node's BMC: 0 and its
 * output, or why not. */
static int ipmitool(PowerJob *j, const char *what, const char *verb, char **ret_output, char **ret_why) {
        const char *address = json_get_string(j->settings, "address"),
                   *port = json_get_string(j->settings, "port") ?: "623",
                   *user = json_get_string(j->settings, "user"),
                   *cipher = json_get_string(j->settings, "cipher") ?: "";
        /* The password in the environment (-E), where no other user can read it, unlike a command line. */
        if (setenv("IPMI_PASSWORD", strempty(j->secret), 1) < 0)
                return -errno;
        /* -N/-R: a BMC that does not answer is given up on within about ten seconds. A cipher suite named
         * spares asking the BMC for its list, which some do not answer (seconds lost on every call). */
        int r = isempty(cipher)
                        ? tool_runl(ret_output, "ipmitool", "-I", "lanplus", "-H", address, "-p", port, "-U",
                                    user, "-E", "-N", "2", "-R", "2", "chassis", what, verb, NULL)
                        : tool_runl(ret_output, "ipmitool", "-I", "lanplus", "-H", address, "-p", port, "-U",
                                    user, "-E", "-N", "2", "-R", "2", "-C", cipher, "chassis", what, verb,
                                    NULL);
        if (r != 0)
                (void) asprintf(ret_why,
                                "%s's BMC at %s:%s did not do %s %s: %s; check its address=, user= and "
                                "password",
                                j->hostname, address, port, what, verb,
                                r > 0 && *ret_output ? tool_last_line(*ret_output)
                                                     : "ipmitool could not run");
        return r == 0 ? 0 : -EIO;
}

static json_object *ipmi_child(PowerJob *j, char **ret_why) {
        _cleanup_free_ char *out = NULL;
        const char *address = json_get_string(j->settings, "address");
        bool on;

        if (ipmitool(j, "power", "status", &out, ret_why) < 0)
                return NULL;
        on = strstr(out, " is on") != NULL; /* "Chassis Power is on" */
        if (j->action == POWER_STATUS)
                return outcome("%s", on ? "on" : "off");
        /* The next boot only from the network: the BMC forgets it after that boot. */
        out = mfree(out);
        if (j->action == POWER_NETBOOT && ipmitool(j, "bootdev", "pxe", &out, ret_why) < 0)
                return NULL;
        /* A cycle of a machine that is off is a power on: the BMC refuses to cycle it. */
        const char *verb = j->action == POWER_ON    ? "on"
                           : j->action == POWER_OFF ? "off"
                           : on                     ? "cycle"
                                                    : "on";
        out = mfree(out);
        if (ipmitool(j, "power", verb, &out, ret_why) < 0)
                return NULL;
        return outcome("The BMC at %s was told %spower %s; the machine was %s.", address,
                       j->action == POWER_NETBOOT ? "to boot from the network next, and " : "", verb,
                       on ? "on" : "off");
}

static json_object *redfish_child(PowerJob *j, char **ret_why) {
        _cleanup_free_ char *said = redfish_act(j->hostname, j->settings, j->secret, j->action, ret_why);
        return said ? outcome("%s", said) : NULL;
}

static json_object *power_child(void *data, char **ret_why) {
        PowerJob *j = data;
        return j->driver == POWER_WOL    ? wol_child(j, ret_why)
               : j->driver == POWER_IPMI ? ipmi_child(j, ret_why)
                                         : redfish_child(j, ret_why);
}

static void on_done(Manager *m, json_object *result, const char *why, void *userdata) {
        PowerJob *j = userdata;
        Node *n = hashmap_get(m->nodes, j->node);
        const char *said = json_get_string(result, "outcome");
        if (n)
                log_info("Node %s: power %s: %s", n->hostname, power_action_to_string(j->action),
                         why ?: strna(said));
        j->done(m, j->node, said,
                why
                        ?: said ? NULL
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
                                         "Power action \"%.32s\" is not on, off, cycle, status or netboot.",
                                         strna(action));
        switch (n->power_driver) {
        case POWER_NONE:
                return sd_bus_error_setf(
                        error, PB_ERROR_INVALID_STATE,
                        "Node %s has no power driver: give it one (purebootctl node set-power "
                        "%s --driver ipmi, redfish or wol), or switch it by hand.",
                        n->hostname, n->hostname);
        case POWER_MANUAL:
                return sd_bus_error_setf(error, PB_ERROR_INVALID_STATE,
                                         "Node %s is switched by hand (power driver manual): %s yourself.",
                                         n->hostname,
                                         a == POWER_ON        ? "switch it on"
                                         : a == POWER_OFF     ? "switch it off"
                                         : a == POWER_CYCLE   ? "restart it"
                                         : a == POWER_NETBOOT ? "boot it from the network"
                                                              : "look at it");
        case POWER_WOL:
                if (!IN_SET(a, POWER_ON, POWER_NETBOOT))
                        return sd_bus_error_setf(
                                error, PB_ERROR_INVALID_STATE,
                                "Wake-on-LAN can only wake node %s; it cannot %s it. Give it "
                                "a driver that reaches its BMC for that, or do it by hand.",
                                n->hostname,
                                a == POWER_OFF     ? "switch off"
                                : a == POWER_CYCLE ? "restart"
                                                   : "see");
                break;
        case POWER_IPMI:
        case POWER_REDFISH:
                break;
        default:
                assert_not_reached();
        }
        j = calloc(1, sizeof(PowerJob));
        if (!j)
                return -ENOMEM;
        *j = (PowerJob){ .node = strdup(n->id),
                         .hostname = strdup(n->hostname),
                         .mac = strdup(n->mac),
                         .secret = n->power_secret ? strdup(n->power_secret) : NULL,
                         .driver = n->power_driver,
                         .action = (PowerAction) a,
                         .settings = n->power_settings ? json_object_get(n->power_settings)
                                                       : json_object_new_object(),
                         .done = done,
                         .userdata = userdata };
        if (!j->node || !j->hostname || !j->mac || (n->power_secret && !j->secret) || !j->settings ||
            asprintf(&what, "power %s of node %s", action, n->hostname) < 0) {
                power_job_free(j);
                return -ENOMEM;
        }
        r = worker_start(n->manager, what, power_child, j, on_done, j, NULL);
        if (r < 0)
                power_job_free(j);
        return r;
}
