/* SPDX-License-Identifier: MIT */
/* org.pureboot.Controller1.CertificateAuthority on /org/pureboot/Controller1/ca. */
#include "bus-ca.h"
#include "address.h"
#include "bus-gateway.h"
#include "bus-util.h"
#include "ca.h"
#include "clone.h"
#include "identity.h"
#include "log.h"
#include "node.h"
#include "polkit.h"
#include "pureboot-errors.h"
#include "util.h"

#define CA_PATH PB_ROOT_PATH "/ca"

static int property_get_string(sd_bus *bus, const char *path, const char *interface, const char *property,
                               sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        (void) bus, (void) path, (void) interface, (void) error;
        if (streq(property, "Certificate"))
                return sd_bus_message_append(reply, "s", ca_certificate_pem(m->ca));
        if (streq(property, "Fingerprint"))
                return sd_bus_message_append(reply, "s", ca_fingerprint(m->ca));
        if (streq(property, "Algorithm"))
                return sd_bus_message_append(reply, "s", ca_algorithm(m->ca));
        return sd_bus_message_append(reply, "s", ca_crl_pem(m->ca));
}

static int property_get_not_after(sd_bus *bus, const char *path, const char *interface, const char *property,
                                  sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        (void) bus, (void) path, (void) interface, (void) property, (void) error;
        return sd_bus_message_append(reply, "t", ca_not_after(m->ca));
}

static int append_row(void *userdata, const CertificateRow *c) {
        return sd_bus_message_append(userdata, "(sssssttt)", c->serial, c->subject, c->role,
                                     strempty(c->node_id), strempty(c->session_id), c->not_before,
                                     c->not_after, c->revoked_at);
}

static int method_list_issued(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        Manager *m = userdata;
        int r;
        (void) error;

        r = sd_bus_message_new_method_return(msg, &reply);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', "(sssssttt)");
        if (r >= 0)
                r = store_certificates_foreach(m->store, false, append_row, reply);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

typedef struct RevokedList {
        RevokedSerial *items;
        char **serials;
        size_t n;
} RevokedList;

static int collect_revoked(void *userdata, const CertificateRow *row) {
        RevokedList *l = userdata;
        RevokedSerial *items = realloc(l->items, (l->n + 1) * sizeof(RevokedSerial));
        char **serials = items ? realloc(l->serials, (l->n + 1) * sizeof(char *)) : NULL;
        if (items)
                l->items = items;
        if (serials)
                l->serials = serials;
        if (!items || !serials || !(l->serials[l->n] = strdup(row->serial)))
                return -ENOMEM;
        l->items[l->n] = (RevokedSerial){ l->serials[l->n], row->revoked_at };
        l->n++;
        return 0;
}

int bus_ca_refresh_crl(Manager *m) {
        RevokedList l = {};
        int r = store_certificates_foreach(m->store, true, collect_revoked, &l);
        if (r >= 0)
                r = ca_update_crl(m->ca, l.items, l.n);
        for (size_t i = 0; i < l.n; i++)
                free(l.serials[i]);
        free(l.serials);
        free(l.items);
        if (r < 0)
                return log_error_errno(r, "Failed to publish the certificate revocation list: %m");
        if (m->bus)
                (void) sd_bus_emit_properties_changed(m->bus, CA_PATH, PB_IFACE("CertificateAuthority"),
                                                      "CRL", NULL);
        bus_gateway_notify(m, "trust", "");
        return 0;
}

static int method_revoke(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        const char *serial;
        _cleanup_(bus_options_done) BusOptions o = {};
        int r;

        r = sd_bus_message_read(msg, "s", &serial);
        if (r >= 0)
                r = bus_read_options(msg, &o, error);
        if (r < 0)
                return r;
        /* Arguments first: the serials issued here are 32 hex digits. */
        if (strlen(serial) != 32 || strspn(serial, "0123456789abcdef") != 32)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "\"%.64s\" is not a certificate serial (32 lowercase hex digits); "
                                         "purebootctl ca list-issued shows the serials.",
                                         serial);
        r = polkit_verify(m, msg, PB_POLKIT_ACTION("manage-ca"),
                          (const char *const[]){ "serial", serial, NULL }, bus_interactive(msg, &o), error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = store_certificate_revoke(m->store, serial, now_realtime_usec());
        if (r == -ENOENT)
                return sd_bus_error_setf(
                        error, PB_ERROR_NO_SUCH_CERTIFICATE,
                        "No certificate with serial \"%.64s\" was issued here; purebootctl ca "
                        "list-issued shows the serials.",
                        serial);
        if (r == -EALREADY)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_STATE, "Certificate %s is revoked already.",
                                         serial);
        if (r < 0)
                return bus_store_error(error, r, "revoke the certificate");
        manager_audit(m, msg, "Revoke", serial, "ok");
        r = bus_ca_refresh_crl(m);
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(msg, NULL);
}

/* The subject of a certificate follows from its role: nodes are node-<id>, clone agents
 * clone-<session>-<role>, and the bridge is named by its host name. */
static int subject_for(Manager *m, CertRole role, const char *subject, char **ret_cn, const char **ret_node,
                       const char **ret_session, sd_bus_error *error) {
        Node *n;
        CloneSession *c;
        int r;

        switch (role) {
        case CERT_ROLE_NODE:
                r = node_resolve(m, subject, &n, error);
                if (r < 0)
                        return r;
                *ret_node = n->id;
                return asprintf(ret_cn, "node-%s", n->id) < 0 ? -ENOMEM : 0;
        case CERT_ROLE_SOURCE:
        case CERT_ROLE_TARGET:
                r = clone_resolve(m, subject, &c, error);
                if (r < 0)
                        return r;
                *ret_session = c->id;
                /* A target certificate is the first target's. */
                CloneTarget *t = role == CERT_ROLE_TARGET ? clone_first_target(c) : NULL;
                if (role == CERT_ROLE_TARGET && !t)
                        return sd_bus_error_setf(
                                error, PB_ERROR_INVALID_ARGUMENT,
                                "Session %s has no target node, so there is no target to certify.", c->id);
                if (role == CERT_ROLE_SOURCE && !c->source_node)
                        return sd_bus_error_setf(
                                error, PB_ERROR_INVALID_ARGUMENT,
                                "Session %s deploys an image: it has no source node to certify.", c->id);
                *ret_node = t ? t->node : c->source_node;
                return t ? asprintf(ret_cn, "clone-%s-target-%" PRIu32, c->id, t->index) < 0 ? -ENOMEM : 0
                         : identity_name(NULL, c->id, "source", ret_cn);
        default:
                if (!hostname_is_valid(subject) || strlen(subject) > 64)
                        return sd_bus_error_setf(
                                error, PB_ERROR_INVALID_ARGUMENT,
                                "A server certificate is named by a host name of at most 64 "
                                "bytes; \"%.64s\" is not one.",
                                subject);
                *ret_cn = strdup(subject);
                return *ret_cn ? 0 : -ENOMEM;
        }
}

static int method_issue_certificate(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        _cleanup_free_ char *cn = NULL;
        _cleanup_(issued_certificate_done) IssuedCertificate cert = {};
        const char *csr, *role_name, *subject, *node = NULL, *session = NULL;
        _cleanup_(bus_options_done) BusOptions o = {};
        int role, r;

        r = sd_bus_message_read(msg, "sss", &csr, &role_name, &subject);
        if (r >= 0)
                r = bus_read_options(msg, &o, error);
        if (r < 0)
                return r;
        role = cert_role_from_string(role_name);
        if (role < 0)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "Unknown role \"%.32s\"; use node, source, target or server.",
                                         role_name);
        /* Arguments first: a bad one is refused without asking anyone to authenticate. */
        if (o.ip && !ip_address_is_valid(o.ip))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "The ip option \"%.64s\" is not an IPv4 or IPv6 address.", o.ip);
        r = subject_for(m, (CertRole) role, subject, &cn, &node, &session, error);
        if (r < 0)
                return r;
        r = polkit_verify(m, msg, PB_POLKIT_ACTION("manage-ca"),
                          (const char *const[]){ "role", role_name, "subject", subject, NULL },
                          bus_interactive(msg, &o), error);
        if (r <= 0)
                return r < 0 ? r : 1;

        uint64_t validity = role == CERT_ROLE_SERVER ? 365 * USEC_PER_DAY
                                                     : m->config.session_cert_validity_hours * USEC_PER_HOUR;
        r = ca_sign_request(m->ca, csr, (CertRole) role, cn, (const char *const[]){ o.ip, NULL }, validity,
                            &cert);
        if (r == -EBADMSG)
                return sd_bus_error_setf(
                        error, PB_ERROR_BAD_REQUEST,
                        "The request is not a PEM PKCS#10 certificate request; make one with "
                        "certtool --generate-request or openssl req -new.");
        if (r == -EKEYREJECTED)
                return sd_bus_error_setf(
                        error, PB_ERROR_BAD_REQUEST,
                        "The request's signature does not verify, or its key is weaker than RSA "
                        "2048 or ECDSA P-256; sign it with the key it carries.");
        if (r == -EINVAL)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "The ip option \"%.64s\" is not an IPv4 or IPv6 address.",
                                         strempty(o.ip));
        if (r < 0)
                return r;
        r = store_certificate_insert(m->store, cert.serial, cn, role_name, node, session, cert.not_before,
                                     cert.not_after);
        if (r < 0)
                return bus_store_error(error, r, "record the certificate");
        manager_audit(m, msg, "IssueCertificate", cert.serial, cn);
        return sd_bus_reply_method_return(msg, "ss", cert.pem, cert.serial);
}

static const sd_bus_vtable ca_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Certificate", "s", property_get_string, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Fingerprint", "s", property_get_string, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("NotAfter", "t", property_get_not_after, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Algorithm", "s", property_get_string, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("CRL", "s", property_get_string, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_METHOD_WITH_ARGS("ListIssued", SD_BUS_NO_ARGS, SD_BUS_RESULT("a(sssssttt)", certificates),
                                method_list_issued, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Revoke", SD_BUS_ARGS("s", serial, "a{sv}", options), SD_BUS_NO_RESULT,
                                method_revoke, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("IssueCertificate",
                                SD_BUS_ARGS("s", csr, "s", role, "s", subject, "a{sv}", options),
                                SD_BUS_RESULT("s", certificate, "s", serial), method_issue_certificate,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END,
};

int bus_ca_register(Manager *m) {
        int r = sd_bus_add_object_vtable(m->bus, NULL, CA_PATH, PB_IFACE("CertificateAuthority"), ca_vtable,
                                         m);
        if (r < 0)
                return log_error_errno(r, "Failed to register the CA object: %m");
        return 0;
}
