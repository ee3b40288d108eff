/* SPDX-License-Identifier: MIT */
/* The node-facing calls. The bridge has verified the client certificate and passes its CN; identity comes
 * only from there. Every call is checked against org.pureboot.Node.varlink on the way in and its reply on
 * the way out, so the code cannot drift from the contract. */
#include <assert.h>
#include <pwd.h>

#include "address.h"
#include "ca.h"
#include "chain.h"
#include "clone.h"
#include "disk.h"
#include "gateway.h"
#include "identity.h"
#include "image.h"
#include "log.h"
#include "node.h"
#include "progress.h"
#include "pureboot-bus.h"
#include "pureboot-errors.h"
#include "staging.h"
#include "storage-driver.h"
#include "token.h"
#include "util.h"
#include "varlink-idl.h"

#define VARLINK_ERROR(x) "org.varlink.service." x

typedef struct Call {
        Manager *m;
        IdentityName peer;
        const char *address;
        json_object *p;
        GatewayReply *reply;
} Call;

void gateway_reply_done(GatewayReply *r) {
        free(r->error);
        json_object_put(r->parameters);
        *r = (GatewayReply){};
}

/* Sets a varlink error with parameters given as key, value string pairs. */
static int fail(Call *call, const char *error, ...) {
        json_object *params = json_object_new_object();
        va_list ap;

        va_start(ap, error);
        for (const char *k = va_arg(ap, const char *); k; k = va_arg(ap, const char *))
                json_object_object_add(params, k, json_object_new_string(va_arg(ap, const char *)));
        va_end(ap);
        call->reply->error = strdup(error);
        call->reply->parameters = params;
        return call->reply->error ? 0 : -ENOMEM;
}

static const char *get_string(Call *call, const char *key) {
        return json_get_string(call->p, key);
}

static uint64_t get_uint(Call *call, const char *key) {
        json_object *v;
        int64_t i = json_object_object_get_ex(call->p, key, &v) ? json_object_get_int64(v) : 0;
        return i < 0 ? 0 : (uint64_t) i;
}

static int bad_parameter(Call *call, const char *name) {
        return fail(call, VARLINK_ERROR("InvalidParameter"), "parameter", name, NULL);
}

/* Who calls about a session: its source, one of its targets, or a node that takes part and only reads. */
typedef struct Party {
        CloneSession *session;
        CloneTarget *target; /* the caller's target, if it is one */
        bool source;         /* the caller is the source */
} Party;

/* Finds the session named in the call and checks that the certificate belongs to it: a clone certificate
 * of this session (with role, if given: source or target), or a node certificate of its source or of one of
 * its targets. */
static int session_for_peer(Call *call, const char *role, Party *ret) {
        const char *id = get_string(call, "session");
        CloneSession *c = id ? hashmap_get(call->m->sessions, id) : NULL;
        Party p = { c };

        if (!c) {
                if (call->peer.kind == IDENTITY_CLONE && !streq_ptr(id, call->peer.session))
                        return fail(call, PB_NODE_PREFIX "PermissionDenied", "reason",
                                    "this certificate belongs to another session", NULL);
                return fail(call, PB_NODE_PREFIX "NoSuchSession", "session", strempty(id), NULL);
        }
        if (call->peer.kind == IDENTITY_CLONE) {
                if (!streq(call->peer.session, c->id))
                        return fail(call, PB_NODE_PREFIX "PermissionDenied", "reason",
                                    "this certificate belongs to another session", NULL);
                if (role && !streq(call->peer.role, role))
                        return fail(call, PB_NODE_PREFIX "PermissionDenied", "reason",
                                    streq(role, "source") ? "only the source may make this report"
                                                          : "only the target may make this report",
                                    NULL);
                p.source = call->peer.target == 0;
                p.target = clone_target(c, call->peer.target);
                if (!p.source && !p.target)
                        return fail(call, PB_NODE_PREFIX "PermissionDenied", "reason",
                                    "this certificate is for a target the session does not have", NULL);
        } else if (call->peer.kind == IDENTITY_NODE && !role &&
                   (streq_ptr(c->source_node, call->peer.node) || clone_target_of_node(c, call->peer.node))) {
                /* a node may read the sessions it takes part in */
                p.source = streq_ptr(c->source_node, call->peer.node);
                p.target = p.source ? NULL : clone_target_of_node(c, call->peer.node);
        } else
                return fail(call, PB_NODE_PREFIX "PermissionDenied", "reason",
                            "this call needs the session's clone certificate", NULL);
        *ret = p;
        return 1;
}

static int reply_with(Call *call, json_object *params) {
        call->reply->parameters = params ?: json_object_new_object();
        return call->reply->parameters ? 0 : -ENOMEM;
}

static uint64_t *sequence_of(Party *p) {
        return p->target ? &p->target->sequence : &p->session->source_sequence;
}

/* The status the caller's part of the session has: its target's, or the session's for the source. */
static CloneStatus status_of(Party *p) {
        return p->target ? p->target->status : p->session->status;
}

static int fail_state(Call *call, Party *p, const char *reason) {
        return fail(call, PB_NODE_PREFIX "InvalidState", "status", clone_status_to_string(status_of(p)), "reason",
                    reason, NULL);
}

typedef struct Report {
        Party *party;
        uint64_t sequence;
        CloneStep effect; /* the report's steps, if any */
        void *userdata;
} Report;

static int report_step(CloneSession *c, void *userdata, sd_bus_error *error) {
        Report *report = userdata;
        CloneTarget *t = report->party->target;
        _cleanup_free_ char *role = NULL;
        int r = report->effect ? report->effect(c, report->userdata, error) : 0;
        if (r >= 0)
                r = store_session_update(c->manager->store, c, NULL);
        if (r >= 0 && t)
                r = store_target_update(c->manager->store, t);
        if (r >= 0)
                r = t ? clone_target_role(t->index, &role) : 0;
        if (r >= 0)
                r = store_sequence_set(c->manager->store, c->id, role ?: "source", report->sequence);
        return r;
}

/* Writes a report's effect: what the handler changed of the session or its target, the steps effect takes
 * and the report's sequence, in one transaction. On failure the store and the statuses are unchanged and 0
 * or < 0 is returned with the reply set. */
static int record(Call *call, Party *p, uint64_t sequence, CloneStep effect, void *userdata) {
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        int r = clone_transact(p->session, report_step, &(Report){ p, sequence, effect, userdata }, &e);
        if (r < 0)
                return sd_bus_error_has_name(&e, PB_ERROR_INVALID_STATE) ? fail_state(call, p, e.message) : r;
        /* progress_dirty stays as it is: another role may have sequences only in memory, which the flush
         * still has to write. */
        *sequence_of(p) = sequence;
        return 1;
}

/* A sequence already applied is answered with success and not applied again. */
#define SEQUENCE_MAX_AHEAD_USEC (10 * 60 * USEC_PER_SEC)

static void audit(Call *call, const char *action, const char *object) {
        (void) store_event(call->m->store, call->m->bridge_uid, action, object,
                           call->reply->error ?: "ok");
}

/* The start of every report: the session, the caller's right to report for role, and a replay answered
 * with success. Returns 1 to go on with *ret, 0 when the reply is set, < 0 on failure. */
static int report_begin(Call *call, const char *role, Party *ret) {
        Party p = {};
        int r = session_for_peer(call, role, &p);
        if (r <= 0)
                return r;
        uint64_t sequence = get_uint(call, "sequence");
        if (sequence <= *sequence_of(&p)) {
                r = reply_with(call, NULL);
                return r < 0 ? r : 0;
        }
        /* Sequences follow the controller's clock (Enrol tells agents the time): one far ahead of it would
         * make every later report look like a replay, and is refused instead of adopted. */
        if (sequence > now_realtime_usec() + SEQUENCE_MAX_AHEAD_USEC)
                return fail(call, VARLINK_ERROR("InvalidParameter"), "parameter", "sequence", "reason",
                            "the sequence is more than ten minutes ahead of the controller's clock", NULL);
        /* A lost target of a chain that reports again counts again: those before it forward for it. */
        if (p.target && chain_heard_of(p.target)) {
                r = store_target_update(call->m->store, p.target);
                if (r < 0)
                        return r;
                clone_target_emit_changed(p.target, "Upstream", NULL);
        }
        *ret = p;
        return 1;
}

/* A data address may be any in DataSubnets=. 0 when allowed (or none given), -EINVAL when not an address,
 * -EPERM when outside them. */
static int data_address_check(Manager *m, const char *address) {
        if (isempty(address))
                return 0;
        if (!ip_address_is_valid(address))
                return -EINVAL;
        for (size_t i = 0; i < m->config.n_data_subnets; i++)
                if (subnet_contains(&m->config.data_subnets[i], address))
                        return 0;
        return -EPERM;
}

static int handle_enrol(Call *call) {
        Manager *m = call->m;
        _cleanup_free_ char *hash = NULL, *cn = NULL;
        _cleanup_(token_row_done) TokenRow t = {};
        _cleanup_(issued_certificate_done) IssuedCertificate cert = {};
        CloneSession *c = NULL;
        uint64_t now = now_realtime_usec();
        int r;

        r = token_hash(get_string(call, "token"), &hash);
        if (r < 0)
                return r;
        r = store_token_lookup(m->store, hash, &t);
        if (r == -ENOENT)
                return fail(call, PB_NODE_PREFIX "InvalidToken", "reason",
                            "unknown token; ask for a new one with purebootctl clone token or node token",
                            NULL);
        if (r < 0)
                return r;
        if (t.used_at > 0)
                return fail(call, PB_NODE_PREFIX "InvalidToken", "reason",
                            "this token was used already; each token enrols once", NULL);
        if (t.expires_at < now)
                return fail(call, PB_NODE_PREFIX "InvalidToken", "reason",
                            "this token has expired; ask for a new one", NULL);
        /* A boot answer's token enrols only the machine the answer went to. */
        if (t.address && !streq_ptr(call->address, t.address))
                return fail(
                        call, PB_NODE_PREFIX "InvalidToken", "reason",
                        "this token was issued to the machine at another address; enrol from there, or ask "
                        "for a new token",
                        NULL);
        if (t.session_id) {
                c = hashmap_get(m->sessions, t.session_id);
                if (!c || c->status == CLONE_COMPLETED || c->status == CLONE_CANCELLED)
                        return fail(call, PB_NODE_PREFIX "InvalidToken", "reason",
                                    "the token's session has ended", NULL);
        }

        /* A clone token is for the source or for one target: its certificate is named after it. */
        uint32_t target = c ? clone_target_index(t.role) : 0;
        if (c && target > 0 && !clone_target(c, target))
                return fail(call, PB_NODE_PREFIX "InvalidToken", "reason",
                            "the token's target is not in the session", NULL);
        _cleanup_free_ char *target_role = NULL;
        if (target > 0 && clone_target_role(target, &target_role) < 0)
                return -ENOMEM;
        CertRole role = !c ? CERT_ROLE_NODE : target > 0 ? CERT_ROLE_TARGET : CERT_ROLE_SOURCE;
        r = identity_name(t.node_id, c ? c->id : NULL, target_role ?: "source", &cn);
        if (r < 0)
                return r;
        const char *data_address = get_string(call, "dataAddress");
        if (isempty(data_address) || streq_ptr(data_address, call->address))
                data_address = NULL; /* none, or named anyway */
        r = data_address_check(m, data_address);
        if (r < 0)
                return fail(call, VARLINK_ERROR("InvalidParameter"), "parameter", "dataAddress", "reason",
                            r == -EINVAL ? "not an IP address"
                                         : "in none of the controller's DataSubnets= ([Enrolment] in "
                                           "controller.conf); add its subnet there, or serve on the address "
                                           "the node enrols from",
                            NULL);
        /* The certificate names the addresses it enrolled from and will serve on: the target checks the
         * source's against the address the source reports. */
        const char *addresses[3] = {};
        size_t n_addresses = 0;
        if (!isempty(call->address))
                addresses[n_addresses++] = call->address;
        if (data_address)
                addresses[n_addresses++] = data_address;
        r = ca_sign_request(m->ca, get_string(call, "csr"), role, cn, addresses,
                            m->config.session_cert_validity_hours * USEC_PER_HOUR, &cert);
        if (r == -EBADMSG || r == -EKEYREJECTED)
                return fail(call, PB_NODE_PREFIX "BadCertificateRequest", "reason",
                            r == -EBADMSG
                                    ? "not a PEM PKCS#10 certificate request"
                                    : "its signature does not verify, or its key is weaker than RSA 2048 "
                                      "or ECDSA P-256",
                            NULL);
        if (r < 0)
                return r;

        /* The token is spent only when the certificate is recorded: a bad request leaves it usable. */
        r = store_begin(m->store);
        if (r >= 0)
                r = store_token_use(m->store, hash, now);
        if (r >= 0)
                r = store_certificate_insert(m->store, cert.serial, cn, cert_role_to_string(role), t.node_id,
                                             t.session_id, cert.not_before, cert.not_after);
        if (r >= 0)
                r = store_commit(m->store);
        if (r < 0) {
                store_rollback(m->store);
                if (r == -EALREADY)
                        return fail(call, PB_NODE_PREFIX "InvalidToken", "reason",
                                    "this token was used already; each token enrols once", NULL);
                return r;
        }
        log_info("Enrolled %s from %s%s%s (certificate %s).", cn, strna(call->address),
                 data_address ? ", serving on " : "", strempty(data_address), cert.serial);
        /* One good certificate per name: the ones before this are revoked. */
        r = identity_enrolled(m, cn, cert.serial, call->address);
        if (r < 0)
                return r;

        json_object *o = json_object_new_object();
        json_object_object_add(o, "certificate", json_object_new_string(cert.pem));
        json_object_object_add(o, "ca", json_object_new_string(ca_certificate_pem(m->ca)));
        json_object_object_add(o, "node", json_object_new_string(t.node_id));
        json_object_object_add(o, "session", c ? json_object_new_string(c->id) : NULL);
        json_object_object_add(o, "role", json_object_new_string(!c ? "node" : target > 0 ? "target" : "source"));
        json_object_object_add(o, "now", json_object_new_int64((int64_t) now_realtime_usec()));
        r = reply_with(call, o);
        audit(call, "Enrol", cn);
        return r;
}

static int handle_get_session(Call *call) {
        Party p = {};
        int r = session_for_peer(call, NULL, &p);
        if (r <= 0)
                return r;
        json_object *o = json_object_new_object();
        json_object_object_add(o, "session", clone_node_view(p.session, p.source, p.target));
        return reply_with(call, o);
}

static int source_ready_step(CloneSession *c, void *userdata, sd_bus_error *error) {
        (void) userdata;
        return clone_targets_transition(c, CLONE_SOURCE_READY, NULL, error);
}

static int handle_source_ready(Call *call) {
        Party p = {};
        uint64_t seq = get_uint(call, "sequence"), size = get_uint(call, "sizeBytes"), port = get_uint(call, "port");
        const char *address = get_string(call, "address"), *device = get_string(call, "device");
        int r;

        r = report_begin(call, "source", &p);
        if (r <= 0)
                return r;
        CloneSession *c = p.session;
        if (!ip_address_is_valid(address))
                return bad_parameter(call, "address");
        bool staged = c->mode == CLONE_MODE_STAGED;
        if ((port == 0 && !staged) || port > 65535)
                return bad_parameter(call, "port");
        if (size == 0)
                return bad_parameter(call, "sizeBytes");
        if (!streq(device, c->source_device))
                return bad_parameter(call, "device");
        /* A source that restarts mid-clone reports again, possibly on a new port. */
        if (!IN_SET(c->status, CLONE_WAITING, CLONE_SOURCE_READY, CLONE_CLONING))
                return fail_state(call, &p, "the session is not waiting for its source");

        _cleanup_free_ char *old_address = c->source_address;
        _cleanup_(json_object_unrefp) json_object *old_notes = c->source_notes;
        uint16_t old_port = c->source_port;
        uint64_t old_size = c->bytes_total;
        c->source_address = strdup(address);
        if (!c->source_address) {
                c->source_address = TAKE_PTR(old_address);
                return -ENOMEM;
        }
        c->source_port = (uint16_t) port;
        c->bytes_total = size;
        c->source_notes = json_object_get(json_object_object_get(call->p, "notes"));
        r = record(call, &p, seq, source_ready_step, NULL);
        if (r <= 0) {
                free(c->source_address);
                c->source_address = TAKE_PTR(old_address);
                c->source_port = old_port;
                c->bytes_total = old_size;
                json_object_put(c->source_notes);
                c->source_notes = TAKE_PTR(old_notes);
        } else {
                clone_emit_changed(c, "SourceAddress", "SourcePort", "BytesTotal", "SourceNotes", NULL);
                /* Staging is sized to the source: it is made now, once. */
                if (staged && c->staging_status == STAGING_PENDING && (r = staging_provision(c)) < 0)
                        log_warning_errno(r, "Failed to start setting up the staging of session %s: %m", c->id);
                r = reply_with(call, NULL);
        }
        audit(call, "ReportSourceReady", c->id);
        return r;
}

static int handle_relay_ready(Call *call) {
        Party p = {};
        uint64_t seq = get_uint(call, "sequence"), port = get_uint(call, "port");
        const char *address = get_string(call, "address");
        int r;

        r = report_begin(call, "target", &p);
        if (r <= 0)
                return r;
        if (!ip_address_is_valid(address))
                return bad_parameter(call, "address");
        if (port == 0 || port > 65535)
                return bad_parameter(call, "port");
        if (!chain_of(p.session))
                return fail_state(call, &p, "the session's targets do not form a chain");
        if (!IN_SET(p.target->status, CLONE_WAITING, CLONE_SOURCE_READY, CLONE_CLONING, CLONE_COMPLETED))
                return fail_state(call, &p, "the target is not copying");
        _cleanup_free_ char *old_address = TAKE_PTR(p.target->relay_address);
        uint16_t old_port = p.target->relay_port;
        r = chain_relay_ready(p.target, address, (uint16_t) port);
        if (r >= 0)
                r = record(call, &p, seq, NULL, NULL);
        if (r <= 0) {
                free_and_replace(p.target->relay_address, old_address);
                p.target->relay_port = old_port;
        } else {
                clone_target_emit_changed(p.target, "Upstream", NULL);
                r = reply_with(call, NULL);
        }
        audit(call, "ReportRelayReady", p.session->id);
        return r;
}

typedef struct Lost {
        CloneTarget *downstream;
        const char *upstream, *reason; /* the downstream's name for its upstream, and why it lost it */
} Lost;

static int drop_step(CloneSession *c, void *userdata, sd_bus_error *error) {
        Lost *l = userdata;
        CloneTarget *up = chain_upstream(l->downstream);
        (void) error;
        int r = chain_drop(l->downstream, l->upstream, l->reason);
        return r <= 0 ? r : store_target_update(c->manager->store, up);
}

static int handle_upstream_lost(Call *call) {
        Party p = {};
        const char *upstream = get_string(call, "upstream"), *reason = get_string(call, "reason");
        int r;

        r = report_begin(call, "target", &p);
        if (r <= 0)
                return r;
        if (isempty(upstream))
                return bad_parameter(call, "upstream");
        /* What the upstream was in the chain, for when the report is not recorded after all. */
        CloneTarget *up = chain_upstream(p.target), before = up ? *up : (CloneTarget){};
        _cleanup_free_ char *address = up && up->relay_address ? strdup(up->relay_address) : NULL;
        if (up && up->relay_address && !address)
                return -ENOMEM;
        r = record(call, &p, get_uint(call, "sequence"), drop_step,
                   &(Lost){ p.target, upstream, strempty(reason) });
        if (r <= 0 && up) {
                free_and_replace(up->relay_address, address);
                up->relay_port = before.relay_port;
                up->chain_rank = before.chain_rank;
                up->chain_lost = before.chain_lost;
        } else if (r > 0) {
                if (up)
                        clone_target_emit_changed(up, "Upstream", NULL);
                clone_target_emit_changed(p.target, "Upstream", NULL);
                r = reply_with(call, NULL);
        }
        audit(call, "ReportUpstreamLost", p.session->id);
        return r;
}

/* The first progress moves the caller's target, or for the source each ready target, to cloning. */
static int cloning_step(CloneSession *c, void *userdata, sd_bus_error *error) {
        CloneTarget *t = userdata;
        return t ? clone_target_transition(t, CLONE_CLONING, NULL, error)
                 : clone_targets_transition(c, CLONE_CLONING, NULL, error);
}

/* A target that cannot reach or verify its source says why while it goes on trying (in 400 bytes at most,
 * as a failure's reason). */
static int note_problem(CloneTarget *t, const char *said) {
        _cleanup_free_ char *problem = !isempty(said) ? strndup(said, 400) : NULL;
        if (!isempty(said) && !problem)
                return -ENOMEM;
        if (streq_ptr(problem, t->problem))
                return 0;
        if (problem)
                log_warning("Clone session %s, target %" PRIu32 ": cannot stream from the source: %s", t->session_id,
                            t->index, problem);
        free_and_replace(t->problem, problem);
        clone_target_emit_changed(t, "Problem", NULL);
        return 0;
}

static int handle_progress(Call *call) {
        Party p = {};
        const char *role = get_string(call, "role"), *problem = get_string(call, "problem");
        uint64_t seq = get_uint(call, "sequence");
        int r;

        r = report_begin(call, role, &p);
        if (r <= 0)
                return r;
        CloneSession *c = p.session;
        CloneTarget *t = p.target;
        if (!IN_SET(status_of(&p), CLONE_SOURCE_READY, CLONE_CLONING))
                return fail_state(call, &p, "progress is reported only while the source is ready or cloning");
        if (t && (r = note_problem(t, problem)) < 0)
                return r;
        /* The first progress moves to cloning: that is written at once. */
        bool ready = status_of(&p) == CLONE_SOURCE_READY;
        if (ready && isempty(problem)) {
                r = record(call, &p, seq, cloning_step, t);
                if (r <= 0)
                        return r;
        }
        /* Progress itself only in memory: the flush timer writes it within a second. */
        *sequence_of(&p) = seq;
        if (t)
                (void) clone_target_set_progress(t, get_uint(call, "bytesTransferred"), get_uint(call, "rateBps"));
        else if (streq_ptr(get_string(call, "phase"), "uploading")) {
                c->bytes_uploaded = get_uint(call, "bytesTransferred");
                (void) throttle_kick(&c->progress);
        }
        r = progress_changed(c);
        if (r < 0)
                return r;
        return reply_with(call, NULL);
}

static bool digest_is_valid(const char *d) {
        if (!d || strlen(d) < 8 || strlen(d) > 200)
                return false;
        for (const char *p = d; *p; p++)
                if (!strchr("0123456789abcdefghijklmnopqrstuvwxyz:-", *p))
                        return false;
        return true;
}

/* A digest is in: each target with both digests completes or fails; one without its own yet is cloning. */
static int digest_step(CloneSession *c, void *userdata, sd_bus_error *error) {
        CloneTarget *only = userdata;
        int r;
        for (size_t i = 0; i < c->n_targets; i++) {
                CloneTarget *t = c->targets[i];
                if (only && t != only)
                        continue;
                r = t->digest && c->source_digest ? clone_target_verdict(t, error)
                    : t->status == CLONE_SOURCE_READY ? clone_target_transition(t, CLONE_CLONING, NULL, error)
                                                      : 0;
                if (r < 0)
                        return r;
        }
        return 0;
}

static int handle_complete(Call *call) {
        Party p = {};
        const char *role = get_string(call, "role"), *digest = get_string(call, "digest");
        uint64_t seq = get_uint(call, "sequence");
        int r;

        r = report_begin(call, role, &p);
        if (r <= 0)
                return r;
        CloneSession *c = p.session;
        CloneTarget *t = p.target;
        if (!digest_is_valid(digest))
                return bad_parameter(call, "digest");
        if (!IN_SET(status_of(&p), CLONE_SOURCE_READY, CLONE_CLONING))
                return fail_state(call, &p, "only a running session can complete");

        char **mine = t ? &t->digest : &c->source_digest;
        _cleanup_free_ char *old = *mine;
        _cleanup_(json_object_unrefp) json_object *old_notes = t ? t->notes : NULL;
        uint64_t old_bytes = t ? t->bytes_transferred : 0, old_stored = c->stored_bytes;
        *mine = strdup(digest);
        if (!*mine) {
                *mine = TAKE_PTR(old);
                return -ENOMEM;
        }
        if (t) {
                t->bytes_transferred = c->bytes_total;
                t->notes = json_object_get(json_object_object_get(call->p, "notes"));
        } else
                c->stored_bytes = get_uint(call, "storedBytes");
        r = record(call, &p, seq, digest_step, t);
        if (r > 0) {
                if (t)
                        clone_target_emit_changed(t, "Digest", "Notes", NULL);
                else {
                        clone_emit_changed(c, "SourceDigest", "StoredBytes", NULL);
                        manager_after_commit(call->m, image_capture_changed, c->id);
                }
                r = reply_with(call, NULL);
        } else {
                free(*mine);
                *mine = TAKE_PTR(old);
                c->stored_bytes = old_stored;
                if (t) {
                        t->bytes_transferred = old_bytes;
                        json_object_put(t->notes);
                        t->notes = TAKE_PTR(old_notes);
                }
        }
        audit(call, "ReportComplete", c->id);
        return r;
}

typedef struct Failure {
        CloneTarget *target;
        const char *message;
} Failure;

static int failed_step(CloneSession *c, void *userdata, sd_bus_error *error) {
        Failure *f = userdata;
        return f->target ? clone_target_transition(f->target, CLONE_FAILED, f->message, error)
                         : clone_targets_transition(c, CLONE_FAILED, f->message, error);
}

static int handle_failed(Call *call) {
        Party p = {};
        const char *role = get_string(call, "role");
        uint64_t seq = get_uint(call, "sequence");
        _cleanup_free_ char *message = NULL;
        int r;

        r = report_begin(call, role, &p);
        if (r <= 0)
                return r;
        if (!p.target && !clone_status_is_active(p.session->status))
                return fail_state(call, &p, "the session is over");
        if (asprintf(&message, "The %s failed: %.400s (%.64s)", role, get_string(call, "error"),
                     get_string(call, "code")) < 0)
                return -ENOMEM;
        r = record(call, &p, seq, failed_step, &(Failure){ p.target, message });
        if (r > 0)
                r = reply_with(call, NULL);
        audit(call, "ReportFailed", p.session->id);
        return r;
}

/* Node calls: only a node certificate, and its own node. */
static int node_for_peer(Call *call, Node **ret) {
        Node *n = call->peer.kind == IDENTITY_NODE ? hashmap_get(call->m->nodes, call->peer.node) : NULL;
        if (!n)
                return fail(call, PB_NODE_PREFIX "PermissionDenied", "reason",
                            call->peer.kind == IDENTITY_NODE
                                    ? "this node has been deleted"
                                    : "this call needs a node certificate (purebootctl node token)",
                            NULL);
        *ret = n;
        return 1;
}

static int handle_get_node(Call *call) {
        Node *n = NULL;
        int r = node_for_peer(call, &n);
        if (r <= 0)
                return r;
        json_object *o = json_object_new_object();
        json_object_object_add(o, "node", node_orders(n));
        return reply_with(call, o);
}

/* Node reports carry the node's own sequence: one already applied is answered with success. */
static int node_report_begin(Call *call, Node **ret) {
        Node *n = NULL;
        int r = node_for_peer(call, &n);
        if (r <= 0)
                return r;
        if (get_uint(call, "sequence") <= n->report_sequence) {
                r = reply_with(call, NULL);
                return r < 0 ? r : 0;
        }
        *ret = n;
        return 1;
}

static int handle_report_disks(Call *call) {
        const char *bad = NULL;
        json_object *disks;
        Node *n = NULL;
        int r = node_report_begin(call, &n);
        if (r <= 0)
                return r;
        json_object_object_get_ex(call->p, "disks", &disks);
        r = disk_report_scan(n, disks, get_uint(call, "sequence"), &bad);
        if (r == -EINVAL)
                return bad_parameter(call, bad ?: "disks");
        if (r < 0)
                return r;
        log_info("Node %s reported %zu disks.", n->hostname, n->n_disks);
        r = reply_with(call, NULL);
        audit(call, "ReportDisks", n->id);
        return r;
}

/* The machine's inventory: with a node certificate for that node, with a clone certificate for the node of
 * its role (each with its own sequence). */
static int handle_report_hardware(Call *call) {
        json_object *hardware = json_object_object_get(call->p, "hardware");
        uint64_t seq = get_uint(call, "sequence");
        Node *n = NULL;
        Party p = {};
        int r;

        if (call->peer.kind == IDENTITY_NODE) {
                r = node_report_begin(call, &n);
                if (r <= 0)
                        return r;
                r = node_set_hardware(n, hardware, seq);
        } else {
                r = report_begin(call, NULL, &p);
                if (r <= 0)
                        return r;
                const char *id = p.target ? p.target->node : p.session->source_node;
                n = id ? hashmap_get(call->m->nodes, id) : NULL;
                if (!n)
                        return fail(call, PB_NODE_PREFIX "PermissionDenied", "reason",
                                    "the node of this role has been deleted", NULL);
                /* The node first: a report whose sequence is not recorded is applied again when resent. */
                r = node_set_hardware(n, hardware, 0);
                if (r >= 0)
                        r = record(call, &p, seq, NULL, NULL);
                if (r == 0)
                        return 0;
        }
        if (r < 0)
                return r;
        log_info("Node %s: %s %s, %" PRIi64 " CPU threads, %zu disks.", n->hostname,
                 strna(json_get_string(hardware, "vendor")), strna(json_get_string(hardware, "product")),
                 json_get_int(hardware, "cpuThreads"),
                 json_object_array_length(json_object_object_get(hardware, "disks")));
        r = reply_with(call, NULL);
        audit(call, "ReportHardware", n->id);
        return r;
}

static int disk_for_call(Call *call, Node *n, Disk **ret) {
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        const char *device = get_string(call, "device");
        if (disk_resolve(n, device, ret, &e) < 0)
                return fail(call, PB_NODE_PREFIX "NoSuchDisk", "device", device, NULL);
        return 1;
}

static int handle_fetch_operations(Call *call) {
        Node *n = NULL;
        Disk *d = NULL;
        int r = node_for_peer(call, &n);
        if (r > 0)
                r = disk_for_call(call, n, &d);
        if (r <= 0)
                return r;
        json_object *o = json_object_new_object();
        json_object_object_add(o, "fingerprint", json_object_new_string(d->fingerprint));
        json_object_object_add(o, "operations", disk_operations_to_apply(d));
        return reply_with(call, o);
}

static int handle_report_operation(Call *call) {
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        const char *id = get_string(call, "operation");
        PartitionOperation *op;
        Node *n = NULL;
        Disk *d = NULL;
        int r = node_report_begin(call, &n);
        if (r > 0)
                r = disk_for_call(call, n, &d);
        if (r <= 0)
                return r;
        op = disk_operation(d, id);
        if (!op || !streq(op->id, id))
                return bad_parameter(call, "operation");
        r = operation_status_from_string(get_string(call, "status"));
        assert(r > OPERATION_PENDING); /* the interface allows running, completed and failed */
        OperationReport report = {
                .status = (OperationStatus) r,
                .error = get_string(call, "error"),
                .result = get_string(call, "result"),
                .done = get_uint(call, "done"),
                .total = get_uint(call, "total"),
        };
        r = disk_report_operation(d, op, &report, get_uint(call, "sequence"), &e);
        if (r < 0 && sd_bus_error_is_set(&e))
                return fail(call, PB_NODE_PREFIX "InvalidState", "status",
                            operation_status_to_string(op->status), "reason", e.message, NULL);
        if (r < 0)
                return r;
        r = reply_with(call, NULL);
        audit(call, "ReportOperation", op->id);
        return r;
}

static int handle_get_staging(Call *call) {
        Party p = {};
        int r = session_for_peer(call, NULL, &p);
        if (r <= 0)
                return r;
        CloneSession *c = p.session;
        if (call->peer.kind != IDENTITY_CLONE)
                return fail(call, PB_NODE_PREFIX "PermissionDenied", "reason",
                            "the staging area is told only to the session's clone certificates", NULL);
        if (c->mode != CLONE_MODE_STAGED || !IN_SET(c->staging_status, STAGING_PROVISIONED,
                                                    STAGING_UPLOADING, STAGING_READY, STAGING_DOWNLOADING))
                return fail_state(call, &p,
                                  c->mode == CLONE_MODE_STAGED ? "the staging area is not provisioned"
                                                               : "a direct session");
        json_object *staging = staging_json(c), *o = json_object_new_object();
        if (!staging || !o) {
                json_object_put(staging);
                json_object_put(o);
                return -ENOMEM;
        }
        json_object_object_add(o, "staging", staging);
        return reply_with(call, o);
}

static int handle_staging_status(Call *call) {
        Party p = {};
        const char *status = get_string(call, "status"), *reason = NULL;
        uint64_t seq = get_uint(call, "sequence");
        int r;

        r = call->peer.kind == IDENTITY_CLONE
                    ? report_begin(call, call->peer.role, &p)
                    : fail(call, PB_NODE_PREFIX "PermissionDenied", "reason",
                           "this call needs the session's clone certificate", NULL);
        if (r <= 0)
                return r;
        CloneSession *c = p.session;
        if (!clone_status_is_active(status_of(&p)))
                return fail_state(call, &p, "the session is over");
        if (streq(status, "cleanup") || streq(status, p.source ? "downloading" : "uploading"))
                return fail_state(call, &p,
                                  streq(status, "cleanup") ? "the controller removes the staging area itself"
                                                           : "the other role reports this step");
        r = staging_report(c, (StagingStatus) staging_status_from_string(status), &reason);
        if (r == -EINVAL)
                return fail(call, PB_NODE_PREFIX "InvalidState", "status",
                            staging_status_to_string(c->staging_status), "reason", reason, NULL);
        if (r < 0)
                return r;
        r = record(call, &p, seq, NULL, NULL);
        if (r > 0) {
                manager_after_commit(call->m, image_capture_changed, c->id);
                r = reply_with(call, NULL);
        }
        audit(call, "ReportStagingStatus", c->id);
        return r;
}

static int handle_clone_disk(Call *call) {
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        const char *role = get_string(call, "role");
        json_object *disk = NULL;
        Party p = {};
        int r = report_begin(call, role, &p);
        if (r <= 0)
                return r;
        if (!clone_status_is_active(status_of(&p)))
                return fail_state(call, &p, "the session is over");
        json_object_object_get_ex(call->p, "disk", &disk);
        r = clone_report_disk(p.session, p.target, disk, &e);
        if (r < 0 && sd_bus_error_has_name(&e, PB_ERROR_INVALID_ARGUMENT))
                return fail(call, VARLINK_ERROR("InvalidParameter"), "parameter", "disk", "reason", e.message, NULL);
        if (r < 0 && sd_bus_error_has_name(&e, PB_ERROR_INVALID_STATE))
                return fail_state(call, &p, e.message);
        if (r < 0)
                return sd_bus_error_is_set(&e) ? log_warning_errno(EIO, "Node call by %s failed: %s",
                                                                   strna(call->peer.cn), e.message)
                                               : r;
        r = record(call, &p, get_uint(call, "sequence"), NULL, NULL);
        if (r > 0)
                r = reply_with(call, NULL);
        audit(call, "ReportCloneDisk", p.session->id);
        return r;
}

static int handle_get_resize_plan(Call *call) {
        Party p = {};
        int r = session_for_peer(call, NULL, &p);
        if (r <= 0)
                return r;
        json_object *o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        json_object_object_add(o, "plan", clone_plan_json(p.target ?: clone_first_target(p.session)));
        return reply_with(call, o);
}

static const struct {
        const char *method;
        int (*handler)(Call *call);
} handlers[] = {
        { "Enrol", handle_enrol },
        { "GetSession", handle_get_session },
        { "WatchSession", handle_get_session }, /* the bridge streams it from PropertiesChanged */
        { "ReportSourceReady", handle_source_ready },
        { "ReportRelayReady", handle_relay_ready },
        { "ReportUpstreamLost", handle_upstream_lost },
        { "ReportProgress", handle_progress },
        { "ReportComplete", handle_complete },
        { "ReportFailed", handle_failed },
        { "GetNode", handle_get_node },
        { "WatchNode", handle_get_node }, /* the bridge streams it from PropertiesChanged */
        { "ReportDisks", handle_report_disks },
        { "ReportHardware", handle_report_hardware },
        { "FetchOperations", handle_fetch_operations },
        { "ReportOperation", handle_report_operation },
        { "GetStaging", handle_get_staging },
        { "ReportStagingStatus", handle_staging_status },
        { "ReportCloneDisk", handle_clone_disk },
        { "GetResizePlan", handle_get_resize_plan },
};

int gateway_staging_file(Manager *m, const char *peer, const char *name, const char *how, int *ret_fd,
                         uint64_t *ret_size, sd_bus_error *error) {
        _cleanup_(json_object_unrefp) json_object *staging = NULL;
        _cleanup_free_ char *dir = NULL;
        IdentityName id = {};
        CloneSession *c;

        if (identity_parse(peer, &id) < 0 || id.kind != IDENTITY_CLONE)
                return sd_bus_error_setf(
                        error, PB_ERROR_NOT_AUTHORIZED,
                        "A staging area's files are served only to the clone certificates of "
                        "the session that uses it.");
        c = hashmap_get(m->sessions, id.session);
        if (!c)
                return sd_bus_error_setf(error, PB_ERROR_NO_SUCH_SESSION, "No session %s.", id.session);
        bool source = id.target == 0, read = streq(how, "read");
        if (!source && !clone_target(c, id.target))
                return sd_bus_error_setf(error, PB_ERROR_NOT_AUTHORIZED,
                                         "This certificate is for a target session %s does not have.",
                                         c->id);
        /* The source writes while it uploads; every node of the session reads once the image is whole. */
        if (!read && !source)
                return sd_bus_error_setf(error, PB_ERROR_NOT_AUTHORIZED,
                                         "Only the source of session %s writes its staging area.", c->id);
        if (c->mode == CLONE_MODE_STAGED)
                staging = staging_json(c);
        if (!staging || !streq_ptr(json_get_string(staging, "backend"), "local"))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_STATE,
                                         "Session %s does not stage on a local backend.", c->id);
        if (!clone_status_is_active(c->status))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_STATE, "Session %s is %s.", c->id,
                                         clone_status_to_string(c->status));
        if (read ? !IN_SET(c->staging_status, STAGING_READY, STAGING_DOWNLOADING)
                 : !IN_SET(c->staging_status, STAGING_PROVISIONED, STAGING_UPLOADING))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_STATE,
                                         "The staging area of session %s is %s: it is %s only %s.", c->id,
                                         staging_status_to_string(c->staging_status),
                                         read ? "read" : "written",
                                         read ? "once the upload is whole" : "while the source uploads");
        if (asprintf(&dir, "%s/%s", json_get_string(staging, "path"),
                     json_get_string(staging, "directory")) < 0)
                return -ENOMEM;
        identity_heard(m, peer);
        if (streq(how, "commit"))
                return storage_local_commit(dir, name, error);
        if (streq(how, "remove"))
                return storage_local_remove(dir, name, error);
        return storage_local_open(dir, name,
                                  read                   ? STAGING_FILE_READ
                                  : streq(how, "create") ? STAGING_FILE_CREATE
                                                         : STAGING_FILE_WRITE,
                                  ret_fd, ret_size, error);
}

int gateway_call(Manager *m, const char *method, const char *peer, const char *address, const char *parameters,
                 GatewayReply *ret) {
        _cleanup_free_ char *bad = NULL;
        GatewayReply reply = {};
        Call call = { .m = m, .address = address, .reply = &reply };
        const VarlinkDefinition *def = varlink_interface_method(m->node_interface, method);
        int (*handler)(Call *) = NULL;
        int r;

        for (size_t i = 0; i < ELEMENTSOF(handlers); i++)
                if (streq(handlers[i].method, method))
                        handler = handlers[i].handler;
        if (!def || !handler) {
                r = fail(&call, VARLINK_ERROR("MethodNotFound"), "method", method, NULL);
                goto done;
        }
        if (identity_parse(peer, &call.peer) < 0 ||
            (call.peer.kind == IDENTITY_NONE && !streq(method, "Enrol"))) {
                r = fail(&call, PB_NODE_PREFIX "PermissionDenied", "reason",
                         "this call needs a client certificate issued by the PureBoot CA", NULL);
                goto done;
        }
        call.p = json_tokener_parse(parameters);
        if (!call.p || varlink_validate(m->node_interface, def->type, call.p, &bad) < 0) {
                r = bad_parameter(&call, bad ?: "parameters");
                goto done;
        }
        if (call.peer.kind != IDENTITY_NONE)
                identity_heard(m, call.peer.cn);
        r = handler(&call);
        if (r >= 0 && !reply.error && !reply.parameters)
                r = fail(&call, VARLINK_ERROR("MethodNotImplemented"), "method", method, NULL);
        /* The reply must match the contract too: a mismatch is our bug, and the node must not see it. */
        if (r >= 0 && !reply.error && varlink_validate(m->node_interface, def->output, reply.parameters, &bad) < 0) {
                log_error("Reply of %s does not match org.pureboot.Node.varlink at \"%s\".", method, bad);
                r = -EPROTO;
        }
done:
        json_object_put(call.p);
        if (r < 0) {
                gateway_reply_done(&reply);
                return r;
        }
        *ret = reply;
        return 0;
}

static int load_sequence(void *userdata, const char *session_id, const char *role, uint64_t sequence) {
        CloneSession *c = hashmap_get(((Manager *) userdata)->sessions, session_id);
        uint32_t index;
        int kind = clone_role_parse(role, &index);
        if (c && kind == CLONE_ROLE_SOURCE)
                c->source_sequence = sequence;
        else if (c && kind == CLONE_ROLE_TARGET && clone_target(c, index))
                clone_target(c, index)->sequence = sequence;
        return 0;
}

int gateway_init(Manager *m) {
        unsigned line = 0;
        int r;

        r = varlink_interface_parse(node_interface_idl, &m->node_interface, &line);
        if (r < 0)
                return log_error_errno(r, "org.pureboot.Node.varlink does not parse at line %u.", line);
        return store_sequences_load(m->store, load_sequence, m);
}

void gateway_done(Manager *m) {
        m->node_interface = varlink_interface_free(m->node_interface);
}
