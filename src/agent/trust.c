/* SPDX-License-Identifier: MIT */
/* Whom a clone agent's peer may be: a certificate of the PureBoot CA that the CRL does not revoke (the
 * bridge serves it at /ca.crl; fetched when the job starts and every TRUST_REFRESH_USEC while it runs),
 * made for the purpose, of the name the session gives the peer's role, and the very certificate the
 * session names for it by serial: a second or an older certificate of that name is refused. */
#include <assert.h>
#include <gnutls/x509.h>

#include "agent.h"
#include "curl-glue.h"
#include "json-util.h"
#include "log.h"
#include "tls.h"
#include "util.h"

#define TRUST_REFRESH_USEC (30 * USEC_PER_SEC)
#define CRL_MAX (4 * 1024 * 1024)

struct AgentTrust {
        Agent *agent;
        gnutls_x509_trust_list_t list;
        char *crl_pem;
        CURL *easy;
        char *buf;
        size_t len;
        sd_event_source *timer;
};

static int trust_rebuild(AgentTrust *t, const char *crl_pem) {
        gnutls_x509_trust_list_t list;
        int r = tls_trust_new(t->agent->ca_pem, crl_pem, &list);
        if (r < 0)
                return log_error_errno(r, "The CA certificate or the CRL from the bridge does not parse.");
        if (t->list)
                gnutls_x509_trust_list_deinit(t->list, 1);
        t->list = list;
        t->agent->trust_generation++;
        return 0;
}

static size_t on_data(char *p, size_t size, size_t n, void *userdata) {
        AgentTrust *t = userdata;
        return curl_glue_collect(&t->buf, &t->len, CRL_MAX, p, size * n);
}

static void on_crl(CURL *easy, CURLcode result, void *userdata) {
        AgentTrust *t = userdata;
        long status = 0;

        (void) curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_cleanup(t->easy);
        t->easy = NULL;
        if (result != CURLE_OK || status != 200 || !t->buf)
                log_debug("Could not fetch the CRL (%s); keeping the one we have.",
                          result != CURLE_OK ? curl_easy_strerror(result) : "no CRL in the answer");
        else if (!streq_ptr(t->buf, t->crl_pem) && trust_rebuild(t, t->buf) >= 0) {
                free(t->crl_pem);
                t->crl_pem = TAKE_PTR(t->buf);
                log_info("The CRL changed; peers are checked against the new one.");
        }
        t->buf = mfree(t->buf);
        t->len = 0;
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        AgentTrust *t = userdata;
        (void) usec;
        (void) sd_event_source_set_time_relative(s, TRUST_REFRESH_USEC);
        if (t->easy)
                return 0;
        t->easy = client_easy_new(t->agent, "/ca.crl");
        if (!t->easy || curl_easy_setopt(t->easy, CURLOPT_TIMEOUT, 20L) != CURLE_OK ||
            curl_easy_setopt(t->easy, CURLOPT_WRITEFUNCTION, on_data) != CURLE_OK ||
            curl_easy_setopt(t->easy, CURLOPT_WRITEDATA, t) != CURLE_OK ||
            curl_glue_add(t->agent->curl, t->easy, on_crl, NULL, t) < 0) { /* trust_stop ends it */
                if (t->easy)
                        curl_easy_cleanup(t->easy);
                t->easy = NULL;
                log_warning("Could not ask the bridge for the CRL; trying again later.");
        }
        return 0;
}

int trust_start(Agent *a) {
        AgentTrust *t;
        int r;

        assert(a);
        if (a->trust)
                return 0;
        t = calloc(1, sizeof(AgentTrust));
        if (!t)
                return -ENOMEM;
        t->agent = a;
        a->trust = t;
        r = trust_rebuild(t, NULL);
        if (r < 0) {
                trust_stop(a);
                return log_error_errno(r, "Failed to load our CA as the trust for peers: %m");
        }
        r = sd_event_add_time_relative(a->event, &t->timer, CLOCK_MONOTONIC, 0, 0, on_timer, t);
        if (r >= 0) /* again and again, not once */
                r = sd_event_source_set_enabled(t->timer, SD_EVENT_ON);
        if (r < 0) {
                trust_stop(a);
                return log_error_errno(r, "Failed to add the CRL timer: %m");
        }
        return 0;
}

void trust_stop(Agent *a) {
        AgentTrust *t = a->trust;
        if (!t)
                return;
        if (t->easy) {
                curl_glue_remove(a->curl, t->easy);
                curl_easy_cleanup(t->easy);
        }
        sd_event_source_disable_unref(t->timer);
        if (t->list)
                gnutls_x509_trust_list_deinit(t->list, 1);
        free(t->crl_pem);
        free(t->buf);
        free(t);
        a->trust = NULL;
}

const char *trust_check_peer(Agent *a, const gnutls_datum_t *der, const char *purpose,
                             const char *expected_cn, bool cn_is_prefix, const char *serial_key,
                             char **ret_ips, bool *ret_retry) {
        _cleanup_free_ char *cn = NULL, *ips = NULL, *serial = NULL;
        const char *reason = NULL, *named;
        json_object *map = NULL;

        assert(a && a->trust && der && ret_retry);
        *ret_retry = false;
        if (tls_verify_peer(a->trust->list, der, purpose, &cn, ret_ips ? &ips : NULL, &reason) < 0)
                return reason ?: "the certificate does not verify";
        if (cn_is_prefix ? !startswith(cn, expected_cn) : !streq(cn, expected_cn)) {
                log_warning("Refused a peer with certificate %s: only %s%s may take part.", cn, expected_cn,
                            cn_is_prefix ? "…" : "");
                return "this certificate is not of the session's peer";
        }
        if (tls_certificate_serial(der, &serial) < 0)
                return "the certificate's serial cannot be read";
        /* The session names its peer's live certificate; until our record of the session does, or when
         * it names another (a newer enrolment we have not heard of yet), the peer is asked to try again. */
        if (cn_is_prefix)
                named = a->watched && json_object_object_get_ex(a->watched, serial_key, &map)
                                ? json_get_string(map, cn)
                                : NULL;
        else
                named = a->watched ? json_get_string(a->watched, serial_key) : NULL;
        if (!streq_ptr(named, serial)) {
                log_warning("The peer %s presented certificate %s; the session names %s.", cn, serial,
                            strna(named));
                *ret_retry = true;
                return "this is not the certificate the session names for its role";
        }
        if (ret_ips)
                *ret_ips = TAKE_PTR(ips);
        return NULL;
}
