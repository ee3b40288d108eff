/* SPDX-License-Identifier: MIT */
/* purebootctl ca …: the certificate authority, what it issued, revocation. */
#include "ctl.h"
#include "log.h"
#include "table.h"
#include "util.h"

#define CA_PATH PB_ROOT_PATH "/ca"

static int ca_list_issued(sd_bus *bus) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(table_freep) Table *t = table_new("SERIAL", "SUBJECT", "ROLE", "NODE", "SESSION",
                                                    "NOT BEFORE", "NOT AFTER", "REVOKED", NULL);
        const char *serial, *subject, *role, *node, *session;
        uint64_t not_before, not_after, revoked;
        int r;

        if (!t)
                return log_oom(), EXIT_FAILED;
        r = sd_bus_call_method(bus, PB_BUS_NAME, CA_PATH, PB_IFACE("CertificateAuthority"), "ListIssued",
                               &error, &reply, NULL);
        if (r < 0)
                return ctl_error(&error, r, "list issued certificates");
        r = sd_bus_message_enter_container(reply, 'a', "(sssssttt)");
        while (r >= 0 && (r = sd_bus_message_read(reply, "(sssssttt)", &serial, &subject, &role, &node,
                                                  &session, &not_before, &not_after, &revoked)) > 0)
                if (table_add_row(t, "sssssTTT", serial, subject, role, node, session, not_before, not_after,
                                  revoked) < 0)
                        return EXIT_FAILED;
        if (r < 0)
                return log_error_errno(r, "Bad reply: %m"), EXIT_FAILED;
        ctl_pager_open();
        table_print(t, "certificates", arg.no_legend, arg.json);
        return EXIT_OK;
}

static int ca_issue(sd_bus *bus, const char *subject) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_free_ char *csr = NULL;
        const char *pem, *serial;
        int r;

        if (!ctl_require(arg.csr, "--csr FILE", "ca issue") ||
            !ctl_require(arg.role, "--role ROLE", "ca issue"))
                return EXIT_USAGE;
        r = read_full_file(arg.csr, &csr, NULL);
        if (r < 0)
                return log_error_errno(r, "Failed to read %s: %m", arg.csr), EXIT_USAGE;
        r = ctl_new_call(bus, CA_PATH, PB_IFACE("CertificateAuthority"), "IssueCertificate", &m);
        if (r >= 0)
                r = sd_bus_message_append(m, "sss", csr, arg.role, subject);
        if (r >= 0)
                r = arg.ip ? sd_bus_message_append(m, "a{sv}", 1, "ip", "s", arg.ip)
                           : sd_bus_message_append(m, "a{sv}", 0);
        if (r < 0)
                return EXIT_FAILED;
        r = ctl_call(bus, m, &reply, "issue the certificate");
        if (r < 0)
                return -r;
        if (sd_bus_message_read(reply, "ss", &pem, &serial) < 0)
                return EXIT_FAILED;
        fputs(pem, stdout);
        fprintf(stderr, "Issued certificate with serial %s.\n", serial);
        return EXIT_OK;
}

int verb_ca(sd_bus *bus, int argc, char **argv) {
        const char *verb = argc > 0 ? argv[0] : "show";
        int r;

        if (streq(verb, "show") && argc <= 1) {
                ctl_pager_open();
                return ctl_show_object(bus, CA_PATH, PB_IFACE("CertificateAuthority"));
        }
        if (streq(verb, "list-issued") && argc == 1)
                return ca_list_issued(bus);
        if (streq(verb, "issue") && argc == 2)
                return ca_issue(bus, argv[1]);
        if (streq(verb, "revoke") && argc == 2) {
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
                r = ctl_new_call(bus, CA_PATH, PB_IFACE("CertificateAuthority"), "Revoke", &m);
                if (r >= 0)
                        r = sd_bus_message_append(m, "sa{sv}", argv[1], 0);
                if (r < 0)
                        return EXIT_FAILED;
                r = ctl_call(bus, m, NULL, "revoke the certificate");
                return r < 0 ? -r : EXIT_OK;
        }
        log_error("Usage: purebootctl ca show | list-issued | revoke SERIAL | issue SUBJECT --csr FILE "
                  "--role ROLE "
                  "[--ip ADDR]");
        return EXIT_USAGE;
}
