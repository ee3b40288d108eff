/* SPDX-License-Identifier: MIT */
/* org.pureboot.Controller1.Gateway on /org/pureboot/Controller1: the calls pureboot-bridge forwards for
 * nodes. Nodes are not bus users, so polkit has nothing to say here: only the bridge's uid may call, and
 * each call carries the identity the bridge verified in the node's certificate. */
#include <assert.h>
#include <pwd.h>

#include "boot.h"
#include "bus-gateway.h"
#include "bus-util.h"
#include "ca.h"
#include "gateway.h"
#include "log.h"
#include "pureboot-errors.h"

static int check_bridge(Manager *m, sd_bus_message *msg, sd_bus_error *error) {
        const char *sender = sd_bus_message_get_sender(msg);
        uint32_t uid;
        int r;

        /* Unique names are never reused while the bus runs: one verified as the bridge's stays the
         * bridge's, which spares a round trip to the bus for every report. */
        if (sender && streq_ptr(sender, m->bridge_sender))
                return 0;
        r = bus_sender_uid(msg, &uid);
        if (r < 0)
                return r;
        if (m->bridge_uid == (uid_t) -1) {
                /* Looked up when first needed: the user may be created after the controller started. */
                struct passwd *pw = getpwnam(m->config.bridge_user);
                if (pw)
                        m->bridge_uid = pw->pw_uid;
        }
        if (uid != m->bridge_uid)
                return sd_bus_error_setf(error, PB_ERROR_NOT_AUTHORIZED,
                                         "Only the %s user may call the Gateway interface; nodes reach the "
                                         "controller through pureboot-bridge.",
                                         m->config.bridge_user);
        if (sender)
                (void) free_and_strdup(&m->bridge_sender, sender);
        return 0;
}

static int method_call(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        GatewayReply reply = {};
        const char *method, *peer, *address, *parameters;
        int r;

        r = sd_bus_message_read(msg, "ssss", &method, &peer, &address, &parameters);
        if (r < 0)
                return r;
        r = check_bridge(m, msg, error);
        if (r < 0)
                return r;
        r = gateway_call(m, method, peer, address, parameters, &reply);
        if (r < 0)
                return log_error_errno(r, "Node call %s by %s failed: %m", method, strna(peer));
        r = sd_bus_reply_method_return(msg, "ss", strempty(reply.error),
                                       json_object_to_json_string_ext(reply.parameters, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
        gateway_reply_done(&reply);
        return r;
}

static int method_sign_server_certificate(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        _cleanup_strv_free_ char **addresses = NULL;
        _cleanup_free_ char *pem = NULL;
        const char *csr, *hostname;
        int r;

        r = sd_bus_message_read(msg, "ss", &csr, &hostname);
        if (r >= 0)
                r = sd_bus_message_read_strv(msg, &addresses);
        if (r < 0)
                return r;
        r = check_bridge(m, msg, error);
        if (r < 0)
                return r;
        r = ca_sign_server(m->ca, m->store, csr, hostname, addresses, &pem);
        if (r == -EBADMSG || r == -EKEYREJECTED || r == -EINVAL)
                return sd_bus_error_setf(error, PB_ERROR_BAD_REQUEST,
                                         "The bridge's certificate request or names were refused: %s.",
                                         r == -EINVAL ? "bad host name or address" : "bad request");
        if (r < 0)
                return r;
        log_info("Issued the bridge's server certificate for %s.", hostname);
        return sd_bus_reply_method_return(msg, "ss", pem, ca_certificate_pem(m->ca));
}

static int method_boot(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(boot_answer_done) BootAnswer a = {};
        Manager *m = userdata;
        const char *kind, *mac, *serial, *address;
        int r;

        r = sd_bus_message_read(msg, "ssss", &kind, &mac, &serial, &address);
        if (r < 0)
                return r;
        r = check_bridge(m, msg, error);
        if (r < 0)
                return r;
        r = boot_answer(m, kind, mac, serial, address, &a, error);
        if (r < 0)
                return r;
        r = sd_bus_message_new_method_return(msg, &reply);
        if (r >= 0)
                r = sd_bus_message_append(reply, "ssss", a.action, a.workflow, a.node, a.state);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', "{ss}");
        json_object_object_foreach(a.parameters, key, value) {
                if (r < 0)
                        break;
                r = sd_bus_message_append(reply, "{ss}", key, json_object_get_string(value));
        }
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

/* A local backend's file for a node: opened (OpenStagingFile) or committed and removed (ChangeStagingFile)
 * here, so that the bridge serves only what it is handed. */
static int method_staging_file(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        const char *peer, *name, *how;
        bool open = streq(sd_bus_message_get_member(msg), "OpenStagingFile");
        _cleanup_close_ int fd = -EBADF;
        uint64_t size = 0;
        int r;

        r = sd_bus_message_read(msg, "sss", &peer, &name, &how);
        if (r < 0)
                return r;
        r = check_bridge(m, msg, error);
        if (r < 0)
                return r;
        if (open ? !STR_IN_SET(how, "read", "write", "create") : !STR_IN_SET(how, "commit", "remove"))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT, "Unknown access \"%.16s\".", how);
        r = gateway_staging_file(m, peer, name, how, &fd, &size, error);
        if (r < 0)
                return r;
        return open ? sd_bus_reply_method_return(msg, "ht", fd, size)
                    : sd_bus_reply_method_return(msg, NULL);
}

/* The CA certificate and the CRL the bridge checks client certificates against. */
static int method_get_trust(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        int r = check_bridge(m, msg, error);
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(msg, "ss", ca_certificate_pem(m->ca), strempty(ca_crl_pem(m->ca)));
}

static int on_flush(sd_event_source *s, void *userdata) {
        Manager *m = userdata;
        Hashmap *changes = TAKE_PTR(m->gateway_changes);
        char *key;
        (void) s;

        HASHMAP_FOREACH (key, changes, i) {
                char *tab = strchr(key, '\t');
                *tab = 0;
                if (m->bus)
                        (void) sd_bus_emit_signal(m->bus, PB_ROOT_PATH, PB_IFACE("Gateway"), "Changed", "ss",
                                                  key, tab + 1);
                free(key);
        }
        hashmap_free(changes);
        return 0;
}

void bus_gateway_notify(Manager *m, const char *kind, const char *id) {
        _cleanup_free_ char *key = NULL;
        int r;

        assert(m && kind && id);
        if (!m->bus)
                return;
        if (asprintf(&key, "%s\t%s", kind, id) < 0)
                return (void) log_oom();
        if (!m->gateway_changes && !(m->gateway_changes = hashmap_new()))
                return (void) log_oom();
        if (hashmap_get(m->gateway_changes, key))
                return;
        r = hashmap_put(m->gateway_changes, key, key);
        if (r < 0)
                return (void) log_oom();
        TAKE_PTR(key);
        if (!m->gateway_flush && sd_event_add_defer(m->event, &m->gateway_flush, on_flush, m) < 0)
                return (void) log_oom();
        (void) sd_event_source_set_enabled(m->gateway_flush, SD_EVENT_ONESHOT);
}

void bus_gateway_done(Manager *m) {
        char *key;
        HASHMAP_FOREACH (key, m->gateway_changes, i)
                free(key);
        m->gateway_changes = hashmap_free(m->gateway_changes);
        m->gateway_flush = sd_event_source_disable_unref(m->gateway_flush);
}

static const sd_bus_vtable gateway_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD_WITH_ARGS("Call", SD_BUS_ARGS("s", method, "s", peer, "s", address, "s", parameters),
                                SD_BUS_RESULT("s", error, "s", reply), method_call,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS(
                "Boot", SD_BUS_ARGS("s", kind, "s", mac, "s", serial, "s", address),
                SD_BUS_RESULT("s", action, "s", workflow, "s", node, "s", state, "a{ss}", parameters),
                method_boot, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("SignServerCertificate",
                                SD_BUS_ARGS("s", csr, "s", hostname, "as", addresses),
                                SD_BUS_RESULT("s", certificate, "s", ca), method_sign_server_certificate,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetTrust", SD_BUS_NO_ARGS, SD_BUS_RESULT("s", ca, "s", crl),
                                method_get_trust, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("OpenStagingFile", SD_BUS_ARGS("s", peer, "s", name, "s", how),
                                SD_BUS_RESULT("h", file, "t", size), method_staging_file,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ChangeStagingFile", SD_BUS_ARGS("s", peer, "s", name, "s", how),
                                SD_BUS_NO_RESULT, method_staging_file, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_SIGNAL_WITH_ARGS("Changed", SD_BUS_ARGS("s", kind, "s", id), 0),
        SD_BUS_VTABLE_END,
};

int bus_gateway_register(Manager *m) {
        int r = sd_bus_add_object_vtable(m->bus, NULL, PB_ROOT_PATH, PB_IFACE("Gateway"), gateway_vtable, m);
        if (r < 0)
                return log_error_errno(r, "Failed to register the Gateway interface: %m");
        return 0;
}
