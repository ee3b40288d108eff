/* SPDX-License-Identifier: MIT */
/* pureboot-bridge: command line, the controller connection, the server certificate, the event loop. */
#include <getopt.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>

#include "address.h"
#include "bridge.h"
#include "bus-connect.h"
#include "ini.h"
#include "log.h"
#include "pureboot-bus.h"
#include "request.h"
#include "tls.h"
#include "util.h"
#include "varlink-idl.h"
#include "workflow.h"

static void config_done(BridgeConfig *c) {
        free(c->listen);
        free(c->hostname);
        free(c->address);
        free(c->cert_file);
        free(c->key_file);
        free(c->workflows_dir);
        free(c->boot_dir);
        free(c->boot_base_url);
        free(c->http_listen);
        free(c->tftp_listen);
        free(c->tftp_root);
}

static Bridge *bridge_free(Bridge *b) {
        if (!b)
                return NULL;
        server_stop(b);
        tftp_stop(b);
        watch_unsubscribe(b);
        if (b->trust)
                gnutls_x509_trust_list_deinit(b->trust, 1);
        varlink_interface_free(b->interface);
        sd_bus_flush_close_unref(b->bus);
        sd_event_unref(b->event);
        closep(&b->https.fd);
        closep(&b->http.fd);
        if (b->key_pem)
                explicit_bzero(b->key_pem, strlen(b->key_pem));
        free(b->key_pem);
        free(b->cert_pem);
        free(b->ca_pem);
        free(b->crl_pem);
        free(b->ca_fingerprint);
        workflows_free(b->workflows);
        config_done(&b->config);
        free(b);
        return NULL;
}

static void bridge_freep(Bridge **b) {
        bridge_free(*b);
}

/* ADDR:PORT or [V6]:PORT, bound and listening (type SOCK_STREAM), or bound (SOCK_DGRAM). */
static int listen_on(const char *what, const char *l, int type) {
        SocketAddress sa = {};
        socklen_t len;
        _cleanup_free_ char *host = NULL;
        const char *colon = strrchr(l, ':');
        uint64_t port;
        int fd;

        if (!colon || parse_uint64(colon + 1, &port) < 0 || port == 0 || port > 65535)
                return log_error_errno(EINVAL, "%s=%s is not ADDRESS:PORT.", what, l);
        host = strndup(l[0] == '[' ? l + 1 : l, (size_t) (colon - l) - (l[0] == '[' ? 2 : 0));
        if (!host)
                return -ENOMEM;
        if (socket_address_from_ip(host, (uint16_t) port, &sa, &len) < 0)
                return log_error_errno(EINVAL, "%s address \"%s\" is not an IP address.", what, host);
        fd = socket(sa.sa.sa_family, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        (void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &(int){ 1 }, sizeof(int));
        if (bind(fd, &sa.sa, len) < 0 || (type == SOCK_STREAM && listen(fd, 4096) < 0)) {
                int r = -errno;
                close(fd);
                return log_error_errno(r, "Failed to listen on %s: %m", l);
        }
        return fd;
}

static int listener_port(Listener *l) {
        SocketAddress sa = {};
        socklen_t len = sizeof(sa);

        if (getsockname(l->fd, &sa.sa, &len) < 0)
                return -errno;
        l->port = socket_address_port(&sa);
        return 0;
}

/* The sockets systemd passed: the one named "http" (FileDescriptorName=http) is the plain HTTP listener,
 * the one named "tftp" the TFTP socket, the other the HTTPS one. Else --listen and, if set, [Boot]
 * HTTPListen= and TFTPListen=. */
static int open_listeners(Bridge *b) {
        _cleanup_strv_free_ char **names = NULL;
        int n, r;

        n = sd_listen_fds_with_names(true, &names);
        if (n < 0)
                return log_error_errno(n, "Failed to get the sockets systemd passed: %m");
        for (int i = 0; i < n; i++) {
                if (names && names[i] && streq(names[i], "tftp")) {
                        if (b->tftp_fd >= 0)
                                return log_error_errno(EINVAL,
                                                       "Got two sockets named \"tftp\" from systemd.");
                        b->tftp_fd = SD_LISTEN_FDS_START + i;
                        continue;
                }
                Listener *l = names && names[i] && streq(names[i], "http") ? &b->http : &b->https;
                if (l->fd >= 0)
                        return log_error_errno(EINVAL, "Got two %s sockets from systemd; pureboot-bridge takes one "
                                               "HTTPS socket and at most one named \"http\".",
                                               l->tls ? "HTTPS" : "\"http\"");
                l->fd = SD_LISTEN_FDS_START + i;
        }
        if (n > 0 && b->https.fd < 0)
                return log_error_errno(EINVAL, "systemd passed no HTTPS socket, only one named \"http\".");
        if (n == 0) {
                b->https.fd = listen_on("--listen", b->config.listen ?: "0.0.0.0:8443", SOCK_STREAM);
                if (b->https.fd < 0)
                        return b->https.fd;
                if (b->config.http_listen) {
                        b->http.fd = listen_on("HTTPListen", b->config.http_listen, SOCK_STREAM);
                        if (b->http.fd < 0)
                                return b->http.fd;
                }
                if (b->config.tftp_listen) {
                        b->tftp_fd = listen_on("TFTPListen", b->config.tftp_listen, SOCK_DGRAM);
                        if (b->tftp_fd < 0)
                                return b->tftp_fd;
                }
        }
        r = listener_port(&b->https);
        if (r < 0)
                return log_error_errno(r, "Failed to read the HTTPS socket's port: %m");
        if (b->http.fd >= 0 && (r = listener_port(&b->http)) < 0)
                return log_error_errno(r, "Failed to read the HTTP socket's port: %m");
        return 0;
}

/* Our key, made here; the controller signs its CSR. The key never leaves this process. */
static int obtain_certificate(Bridge *b) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ char *csr = NULL;
        const char *cert, *ca;
        int r;

        if (b->config.cert_file || b->config.key_file) {
                if (!b->config.cert_file || !b->config.key_file)
                        return log_error_errno(EINVAL, "--cert and --key go together.");
                r = read_full_file(b->config.cert_file, &b->cert_pem, NULL);
                if (r < 0)
                        return log_error_errno(r, "Failed to read the server certificate %s: %m",
                                               b->config.cert_file);
                r = read_full_file(b->config.key_file, &b->key_pem, NULL);
                if (r < 0)
                        return log_error_errno(r, "Failed to read the server key %s: %m",
                                               b->config.key_file);
                return 0;
        }

        const char *hostname = b->config.hostname;
        r = tls_make_key_and_request(hostname, &b->key_pem, &csr);
        if (r < 0)
                return log_error_errno(r, "Failed to make the server key and request.");

        const char *addresses[] = { b->config.address, NULL };
        r = sd_bus_call_method(b->bus, PB_BUS_NAME, PB_ROOT_PATH, PB_IFACE("Gateway"),
                               "SignServerCertificate", &error, &reply, "ssas", csr, hostname,
                               b->config.address ? 1 : 0, addresses[0]);
        if (r < 0)
                return log_error_errno(r, "The controller did not sign our certificate: %s",
                                       error.message ?: strerror(-r));
        r = sd_bus_message_read(reply, "ss", &cert, &ca);
        if (r < 0)
                return log_error_errno(r, "The controller's signed certificate does not parse: %m");
        b->cert_pem = strdup(cert);
        return b->cert_pem ? 0 : log_oom();
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        (void) userdata;
        log_info("Received %s, shutting down.", strsignal((int) si->ssi_signo));
        return sd_event_exit(sd_event_source_get_event(s), 0);
}

/* bridge.conf's settings: the command line's options of the same meaning win over them. */
static const struct {
        const char *section, *key;
        size_t offset; /* of the char * in BridgeConfig */
} settings[] = {
        { "Bridge", "Hostname", offsetof(BridgeConfig, hostname) },
        { "Bridge", "Address", offsetof(BridgeConfig, address) },
        { "Boot", "Path", offsetof(BridgeConfig, boot_dir) },
        { "Boot", "BaseURL", offsetof(BridgeConfig, boot_base_url) },
        { "Boot", "HTTPListen", offsetof(BridgeConfig, http_listen) },
        { "Boot", "TFTPListen", offsetof(BridgeConfig, tftp_listen) },
        { "Boot", "TFTPRoot", offsetof(BridgeConfig, tftp_root) },
};

#define SETTING(c, i) ((char **) ((uint8_t *) (c) + settings[i].offset))

static int handle_setting(const char *file, unsigned line, const char *section, const char *key, const char *value,
                          void *userdata) {
        for (size_t i = 0; i < ELEMENTSOF(settings); i++) {
                char **target = SETTING(userdata, i);
                if (!streq(section, settings[i].section) || !streq(key, settings[i].key))
                        continue;
                /* Empty: the default. */
                return isempty(value) ? (*target = mfree(*target), 0) : free_and_strdup(target, value);
        }
        log_warning("%s:%u: unknown setting [%s] %s=, ignoring.", file, line, section, key);
        return 0;
}

static int load_settings(BridgeConfig *c, const char *path, bool must_exist) {
        BridgeConfig file = {};
        int r = must_exist && access(path, F_OK) < 0 ? -errno : ini_parse_with_dropins(path, handle_setting, &file);

        for (size_t i = 0; r >= 0 && i < ELEMENTSOF(settings); i++)
                if (!*SETTING(c, i))
                        *SETTING(c, i) = TAKE_PTR(*SETTING(&file, i));
        config_done(&file);
        return r < 0 ? log_error_errno(r, "Failed to read %s: %m", path) : 0;
}

static void help(void) {
        printf("pureboot-bridge [OPTIONS...]\n\n"
               "Serves the org.pureboot.Node varlink interface to nodes over HTTPS.\n\n"
               "  -h --help                Show this help\n"
               "     --version             Show the version\n"
               "     --listen=ADDR:PORT    Where to listen (default 0.0.0.0:8443; or socket activation)\n"
               "     --hostname=NAME       Name in the server certificate (default: this host's name)\n"
               "     --address=IP          Address nodes use, added to the server certificate\n"
               "     --cert=FILE --key=FILE  Use these instead of asking the controller for a certificate\n"
               "     --workflows=DIR       Boot workflows (default " PKGDATADIR "/workflows)\n"
               "     --config=FILE         Settings file (default /etc/pureboot/bridge.conf, and its .d/)\n"
               "     --boot-dir=DIR        Serve DIR at /boot/files/ (default /srv/pureboot/boot)\n"
               "     --boot-url=URL        Where boot scripts fetch kernels and initrds (default: this "
               "bridge)\n"
               "     --http-listen=ADDR:PORT  Also serve /boot/ over plain HTTP, for firmware without TLS\n"
               "     --tftp-listen=ADDR:PORT  Also serve boot answers and files over TFTP, for boot "
               "loaders\n"
               "                           that fetch nothing else\n"
               "     --tftp-root=DIR       What TFTP serves besides boot/ (default: the --boot-dir)\n"
               "     --check-workflows=DIR Load every workflow of DIR, report, and exit (non-zero on any "
               "error)\n"
               "     --max-connections=N   Connections in all (default 4096)\n"
               "     --max-per-ip=N        Connections per client address (default 64)\n"
               "     --timeout=SEC         Idle connection timeout (default 30)\n"
               "     --max-streams=N       WatchSession/WatchNode streams in all (default 1024)\n"
               "     --max-streams-per-certificate=N  … and per client certificate (default 4)\n"
               "     --log-level=LEVEL     err, warning, notice, info or debug\n");
}

static int parse_args(int argc, char *argv[], BridgeConfig *c, char **config_file) {
        enum {
                ARG_VERSION = 0x100,
                ARG_LISTEN,
                ARG_HOSTNAME,
                ARG_ADDRESS,
                ARG_CERT,
                ARG_KEY,
                ARG_MAX_CONN,
                ARG_MAX_PER_IP,
                ARG_TIMEOUT,
                ARG_LOG_LEVEL,
                ARG_WORKFLOWS,
                ARG_BOOT_URL,
                ARG_CHECK_WORKFLOWS,
                ARG_CONFIG,
                ARG_BOOT_DIR,
                ARG_HTTP_LISTEN,
                ARG_TFTP_LISTEN,
                ARG_TFTP_ROOT,
                ARG_MAX_STREAMS,
                ARG_MAX_STREAMS_PER_CERT
        };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "listen", required_argument, NULL, ARG_LISTEN },
                { "hostname", required_argument, NULL, ARG_HOSTNAME },
                { "address", required_argument, NULL, ARG_ADDRESS },
                { "cert", required_argument, NULL, ARG_CERT },
                { "key", required_argument, NULL, ARG_KEY },
                { "max-connections", required_argument, NULL, ARG_MAX_CONN },
                { "max-per-ip", required_argument, NULL, ARG_MAX_PER_IP },
                { "timeout", required_argument, NULL, ARG_TIMEOUT },
                { "log-level", required_argument, NULL, ARG_LOG_LEVEL },
                { "workflows", required_argument, NULL, ARG_WORKFLOWS },
                { "boot-url", required_argument, NULL, ARG_BOOT_URL },
                { "check-workflows", required_argument, NULL, ARG_CHECK_WORKFLOWS },
                { "config", required_argument, NULL, ARG_CONFIG },
                { "boot-dir", required_argument, NULL, ARG_BOOT_DIR },
                { "http-listen", required_argument, NULL, ARG_HTTP_LISTEN },
                { "tftp-listen", required_argument, NULL, ARG_TFTP_LISTEN },
                { "tftp-root", required_argument, NULL, ARG_TFTP_ROOT },
                { "max-streams", required_argument, NULL, ARG_MAX_STREAMS },
                { "max-streams-per-certificate", required_argument, NULL, ARG_MAX_STREAMS_PER_CERT },
                {},
        };
        uint64_t v;
        int o, r;

        while ((o = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
                char **target = NULL;
                unsigned *number = NULL;
                switch (o) {
                case 'h': help(); return 0;
                case ARG_VERSION: printf("pureboot-bridge %s\n", PACKAGE_VERSION); return 0;
                case ARG_LISTEN: target = &c->listen; break;
                case ARG_HOSTNAME: target = &c->hostname; break;
                case ARG_ADDRESS: target = &c->address; break;
                case ARG_CERT: target = &c->cert_file; break;
                case ARG_KEY: target = &c->key_file; break;
                case ARG_WORKFLOWS: target = &c->workflows_dir; break;
                case ARG_BOOT_URL: target = &c->boot_base_url; break;
                case ARG_BOOT_DIR: target = &c->boot_dir; break;
                case ARG_HTTP_LISTEN: target = &c->http_listen; break;
                case ARG_TFTP_LISTEN:
                        target = &c->tftp_listen;
                        break;
                case ARG_TFTP_ROOT:
                        target = &c->tftp_root;
                        break;
                case ARG_CONFIG: target = config_file; break;
                case ARG_CHECK_WORKFLOWS: {
                        struct Workflows *w = NULL;
                        r = workflows_load_dir(optarg, true, &w);
                        if (r >= 0)
                                printf("%zu workflows in %s load.\n", w->n, optarg);
                        workflows_free(w);
                        return r < 0 ? -EINVAL : 0;
                }
                case ARG_MAX_CONN: number = &c->max_connections; break;
                case ARG_MAX_PER_IP: number = &c->max_per_ip; break;
                case ARG_TIMEOUT: number = &c->timeout_sec; break;
                case ARG_MAX_STREAMS:
                        number = &c->max_watches;
                        break;
                case ARG_MAX_STREAMS_PER_CERT:
                        number = &c->max_watches_per_peer;
                        break;
                case ARG_LOG_LEVEL:
                        r = log_parse_level(optarg);
                        if (r < 0)
                                return log_error_errno(EINVAL, "Unknown log level \"%s\".", optarg);
                        log_set_max_level(r);
                        continue;
                default: return -EINVAL;
                }
                if (target) {
                        if (free_and_strdup(target, optarg) < 0)
                                return -ENOMEM;
                } else {
                        if (parse_uint64(optarg, &v) < 0 || v == 0 || v > 1000000)
                                return log_error_errno(EINVAL, "%s needs a positive number, not \"%s\".",
                                                       argv[optind - 1], optarg);
                        *number = (unsigned) v;
                }
        }
        return 1;
}

int main(int argc, char *argv[]) {
        _cleanup_(bridge_freep) Bridge *b = calloc(1, sizeof(Bridge));
        _cleanup_free_ char *config_file = NULL;
        char host[256];
        sigset_t mask;
        unsigned line = 0;
        int r;

        if (!b)
                return log_oom(), 1;
        b->https = (Listener){ .bridge = b, .tls = true, .fd = -EBADF };
        b->http = (Listener){ .bridge = b, .fd = -EBADF };
        b->tftp_fd = -EBADF;
        b->config = (BridgeConfig){ .max_connections = 4096,
                                    .max_per_ip = 64,
                                    .timeout_sec = 30,
                                    .max_watches = 1024,
                                    .max_watches_per_peer = 4,
                                    .max_body = 1024 * 1024 };
        r = parse_args(argc, argv, &b->config, &config_file);
        if (r <= 0)
                return r < 0 ? 2 : 0;
        if (load_settings(&b->config, config_file ?: "/etc/pureboot/bridge.conf", config_file) < 0)
                return 2;
        if (b->config.address) {
                if (!ip_address_is_valid(b->config.address))
                        return log_error("--address= or [Bridge] Address=%s is not an IP address.",
                                         b->config.address),
                               2;
        }
        if (!b->config.hostname && gethostname(host, sizeof(host)) >= 0 && hostname_is_valid(host))
                b->config.hostname = strdup(host);
        if (!b->config.hostname)
                b->config.hostname = strdup("pureboot-bridge");

        gnutls_global_init();
        r = varlink_interface_parse(node_interface_idl, (VarlinkInterface **) &b->interface, &line);
        if (r < 0)
                return log_error_errno(r, "org.pureboot.Node.varlink does not parse at line %u.", line), 1;
        r = sd_event_default(&b->event);
        if (r < 0)
                return log_error_errno(r, "Failed to make the event loop: %m"), 1;
        /* Without the bus the bridge could answer nothing but 503: it exits and systemd starts it again. */
        r = bus_connect_system(b->event, &b->bus);
        if (r < 0)
                return 1;
        r = trust_load(b);
        if (r < 0)
                return 1;
        /* A workflow that does not load is reported and left out; the others still serve. */
        r = workflows_load_dir(b->config.workflows_dir ?: PKGDATADIR "/workflows", false, &b->workflows);
        if (r < 0)
                return 1;
        r = watch_subscribe(b);
        if (r < 0)
                return log_error_errno(r, "Failed to follow the controller's changes: %m"), 1;
        /* Each of these says what failed itself. */
        r = obtain_certificate(b);
        if (r < 0)
                return 1;
        r = open_listeners(b);
        if (r < 0)
                return 1;
        r = server_start(b);
        if (r < 0)
                return 1;
        r = tftp_start(b);
        if (r < 0)
                return 1;

        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        (void) sd_event_add_signal(b->event, NULL, SIGTERM, on_signal, b);
        (void) sd_event_add_signal(b->event, NULL, SIGINT, on_signal, b);
        (void) signal(SIGPIPE, SIG_IGN);

        (void) sd_notify(false, "READY=1");
        log_info("pureboot-bridge %s serving org.pureboot.Node on port %u as %s.", PACKAGE_VERSION, b->https.port,
                 b->config.hostname);
        if (b->http.fd >= 0)
                log_info("Serving /boot/ over plain HTTP on port %u too, for firmware without TLS.", b->http.port);
        r = sd_event_loop(b->event);
        (void) sd_notify(false, "STOPPING=1");
        return r < 0 ? 1 : 0;
}
