/* SPDX-License-Identifier: MIT */
/* Enrolment: fetch the CA from the bridge and check it against the fingerprint on the kernel command line
 * (pureboot.ca=sha256:…) before anything secret is sent; make our own key; trade the single-use token and
 * a request for that key for our certificate. All of it is kept in the state directory, so a restarted
 * agent goes on with the identity it has. */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "backoff.h"
#include "curl-glue.h"
#include "log.h"
#include "tls.h"
#include "util.h"

typedef struct Enrolment {
        Agent *agent;
        void (*done)(Agent *a);
        CURL *easy;
        char *buf;
        size_t len;
        Backoff backoff;
        sd_event_source *retry;
} Enrolment;

static int enrol_step(Enrolment *e);

static void enrolment_free(Enrolment *e) {
        if (e->easy)
                curl_easy_cleanup(e->easy);
        sd_event_source_disable_unref(e->retry);
        free(e->buf);
        free(e);
}

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        Enrolment *e = userdata;
        (void) s, (void) usec;
        e->retry = sd_event_source_disable_unref(e->retry);
        if (enrol_step(e) < 0)
                agent_exit(e->agent, AGENT_EXIT_FAILURE);
        return 0;
}

static void retry_later(Enrolment *e, const char *why) {
        uint64_t delay = backoff_next(&e->backoff);
        log_warning("Cannot enrol yet (%s); trying again in %.0f s.", why, (double) delay / USEC_PER_SEC);
        if (sd_event_add_time_relative(e->agent->event, &e->retry, CLOCK_MONOTONIC, delay, 0, on_retry, e) < 0)
                agent_exit(e->agent, AGENT_EXIT_FAILURE);
}

static int write_state(Agent *a, const char *name, const char *text, mode_t mode, char **ret_path) {
        _cleanup_free_ char *path = NULL;
        int r;
        if (asprintf(&path, "%s/%s", a->settings.state_dir, name) < 0)
                return -ENOMEM;
        r = write_file_atomic(path, text, strlen(text), mode);
        if (r < 0)
                return log_error_errno(r, "Failed to write %s: %m", path);
        if (ret_path) {
                free(*ret_path);
                *ret_path = TAKE_PTR(path);
        }
        return 0;
}

static void finished(Enrolment *e) {
        Agent *a = e->agent;
        void (*done)(Agent *a) = e->done;
        enrolment_free(e);
        done(a);
}

static void on_enrolled(Agent *a, const char *error, json_object *reply, void *userdata) {
        Enrolment *e = userdata;
        json_object *v;
        const char *cert, *role;
        _cleanup_(json_object_unrefp) json_object *record = NULL;

        if (error && strstr(error, "ControllerUnavailable")) {
                retry_later(e, "the controller does not answer");
                return;
        }
        if (error) {
                const char *reason = reply && json_object_object_get_ex(reply, "reason", &v)
                                             ? json_object_get_string(v)
                                             : error;
                if (reply && streq_ptr(json_get_string(reply, "parameter"), "dataAddress"))
                        log_error("The controller refused the address we serve on: %s.", reason);
                else
                        log_error("The controller refused our enrolment: %s. Boot the node again with a new "
                                  "token "
                                  "(purebootctl clone token or node token, or a new boot).",
                                  reason);
                enrolment_free(e);
                agent_exit(a, AGENT_EXIT_REFUSED);
                return;
        }
        cert = json_object_object_get_ex(reply, "certificate", &v) ? json_object_get_string(v) : NULL;
        role = json_object_object_get_ex(reply, "role", &v) ? json_object_get_string(v) : NULL;
        if (!cert || !role || write_state(a, "cert.pem", cert, 0644, &a->cert_path) < 0 ||
            free_and_strdup(&a->cert_pem, cert) < 0 || free_and_strdup(&a->role, role) < 0) {
                agent_exit(a, AGENT_EXIT_FAILURE);
                enrolment_free(e);
                return;
        }
        if (json_object_object_get_ex(reply, "now", &v))
                a->clock_offset = json_object_get_int64(v) - (int64_t) now_realtime_usec();
        record = json_object_new_object();
        json_object_object_add(record, "session", json_object_new_string(strempty(a->settings.session)));
        json_object_object_add(record, "role", json_object_new_string(role));
        json_object_object_add(record, "clockOffset", json_object_new_int64(a->clock_offset));
        if (write_state(a, "enrolment.json", json_object_to_json_string(record), 0644, NULL) < 0) {
                agent_exit(a, AGENT_EXIT_FAILURE);
                enrolment_free(e);
                return;
        }
        if (a->settings.session)
                log_info("Enrolled as %s of session %s.", role, a->settings.session);
        else
                log_info("Enrolled as node %s.", strna(json_get_string(reply, "node")));
        finished(e);
}

static int send_request(Enrolment *e) {
        Agent *a = e->agent;
        _cleanup_free_ char *csr = NULL, *data_address = NULL;
        json_object *p;
        int r;

        /* A source serving on a data network has its certificate name that address too. */
        if (a->source) {
                r = client_data_address(a, &data_address);
                if (r == -EADDRNOTAVAIL) {
                        retry_later(e, "the data interface has no address yet");
                        return 0;
                }
                if (r == -ENODEV)
                        return log_error_errno(
                                r, "There is no network interface %s (pureboot.data-interface=).",
                                a->settings.data_interface);
                if (r < 0)
                        return log_error_errno(r, "Failed to find our data address: %m");
        }

        r = tls_make_key_and_request("pureboot-agent", &a->key_pem, &csr);
        if (r < 0)
                return log_error_errno(r, "Failed to make our key: %m");
        r = write_state(a, "key.pem", a->key_pem, 0600, &a->key_path);
        if (r < 0)
                return r;
        p = json_object_new_object();
        json_object_object_add(p, "token", json_object_new_string(a->settings.token));
        json_object_object_add(p, "csr", json_object_new_string(csr));
        if (data_address)
                json_object_object_add(p, "dataAddress", json_object_new_string(data_address));
        return client_call(a, "Enrol", p, on_enrolled, e);
}

static size_t on_data(char *p, size_t size, size_t n, void *userdata) {
        Enrolment *e = userdata;
        return curl_glue_collect(&e->buf, &e->len, 64 * 1024, p, size * n);
}

static bool fingerprint_matches(const char *expected, const char *actual) {
        const char *hex = startswith(expected, "sha256:") ?: expected;
        size_t j = 0;
        /* Colons between bytes are allowed, as openssl prints them. */
        for (const char *p = hex; *p; p++) {
                if (*p == ':')
                        continue;
                if (!actual[j] || tolower((unsigned char) *p) != actual[j])
                        return false;
                j++;
        }
        return actual[j] == 0;
}

static void on_ca(CURL *easy, CURLcode result, void *userdata) {
        Enrolment *e = userdata;
        Agent *a = e->agent;
        _cleanup_free_ char *fingerprint = NULL;
        long status = 0;

        (void) curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_cleanup(e->easy);
        e->easy = NULL;
        if (result != CURLE_OK || status != 200) {
                retry_later(e, result != CURLE_OK ? curl_easy_strerror(result) : "the bridge has no CA yet");
                free(e->buf);
                e->buf = NULL;
                e->len = 0;
                return;
        }
        if (tls_fingerprint_pem(e->buf ?: "", &fingerprint) < 0 || !fingerprint_matches(a->settings.ca, fingerprint)) {
                log_error("The bridge at %s offered a CA certificate with fingerprint sha256:%s, not the %s on our "
                          "command line. Not sending the token to it: check pureboot.server= and pureboot.ca=.",
                          a->settings.server, strna(fingerprint), a->settings.ca);
                enrolment_free(e);
                agent_exit(a, AGENT_EXIT_REFUSED);
                return;
        }
        if (write_state(a, "ca.crt", e->buf, 0644, &a->ca_path) < 0 || free_and_strdup(&a->ca_pem, e->buf) < 0 ||
            send_request(e) < 0) {
                enrolment_free(e);
                agent_exit(a, AGENT_EXIT_FAILURE);
        }
}

static void enrolment_release(void *userdata) {
        enrolment_free(userdata);
}

/* Fetches /ca.crt without checking the server: we check what it sent against the fingerprint instead. */
static int enrol_step(Enrolment *e) {
        Agent *a = e->agent;
        e->easy = client_easy_new(a, "/ca.crt");
        if (!e->easy || curl_easy_setopt(e->easy, CURLOPT_SSL_VERIFYPEER, 0L) != CURLE_OK ||
            curl_easy_setopt(e->easy, CURLOPT_SSL_VERIFYHOST, 0L) != CURLE_OK ||
            curl_easy_setopt(e->easy, CURLOPT_TIMEOUT, 30L) != CURLE_OK ||
            curl_easy_setopt(e->easy, CURLOPT_WRITEFUNCTION, on_data) != CURLE_OK ||
            curl_easy_setopt(e->easy, CURLOPT_WRITEDATA, e) != CURLE_OK)
                return -ENOMEM;
        return curl_glue_add(a->curl, e->easy, on_ca, enrolment_release, e);
}

/* Loads what an earlier run of this agent enrolled for the same session and role. */
static int load_state(Agent *a) {
        _cleanup_free_ char *record = NULL, *path = NULL;
        _cleanup_(json_object_unrefp) json_object *o = NULL;
        json_object *v;

        if (asprintf(&path, "%s/enrolment.json", a->settings.state_dir) < 0)
                return -ENOMEM;
        if (read_full_file(path, &record, NULL) < 0 || !(o = json_tokener_parse(record)))
                return 0;
        if (!json_object_object_get_ex(o, "session", &v) ||
            !streq(json_object_get_string(v), strempty(a->settings.session)) ||
            !json_object_object_get_ex(o, "role", &v))
                return 0; /* an old job's identity: enrol afresh */
        if (free_and_strdup(&a->role, json_object_get_string(v)) < 0)
                return -ENOMEM;
        if (json_object_object_get_ex(o, "clockOffset", &v))
                a->clock_offset = json_object_get_int64(v);
        const struct {
                const char *name;
                char **path, **pem;
        } files[] = {
                { "ca.crt", &a->ca_path, &a->ca_pem },
                { "cert.pem", &a->cert_path, &a->cert_pem },
                { "key.pem", &a->key_path, &a->key_pem },
        };
        for (size_t i = 0; i < ELEMENTSOF(files); i++) {
                if (asprintf(files[i].path, "%s/%s", a->settings.state_dir, files[i].name) < 0)
                        return -ENOMEM;
                if (read_full_file(*files[i].path, files[i].pem, NULL) < 0)
                        return 0;
        }
        return 1;
}

int enrol_start(Agent *a, void (*done)(Agent *a)) {
        Enrolment *e;
        int r;

        r = load_state(a);
        if (r < 0)
                return r;
        if (r > 0) {
                log_info("Going on as %s%s%s with the certificate from %s.", a->role,
                         a->settings.session ? " of session " : "", strempty(a->settings.session), a->settings.state_dir);
                done(a);
                return 0;
        }
        if (isempty(a->settings.token) || isempty(a->settings.ca))
                return log_error_errno(EINVAL, "Cannot enrol: pureboot.token= and pureboot.ca= are needed on the "
                                               "command line (the bridge's boot answer adds them).");
        /* Whatever an earlier job left is not ours any more. */
        free(a->cert_pem);
        a->cert_pem = NULL;
        e = calloc(1, sizeof(Enrolment));
        if (!e)
                return -ENOMEM;
        *e = (Enrolment){ .agent = a, .done = done };
        backoff_init(&e->backoff);
        r = enrol_step(e);
        if (r < 0)
                enrolment_free(e);
        return r;
}
