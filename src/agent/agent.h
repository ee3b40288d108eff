/* SPDX-License-Identifier: MIT */
/* pureboot-agent: runs one job of a node in the deploy image (serve or write a disk for a clone session),
 * as one sd-event loop. The Agent owns the loop, the settings, the connection to the bridge and the report
 * queue; the verb's own state (Source, Target) hangs off it. */
#pragma once

#include "domain.h"
#include "json-util.h"
#include <curl/curl.h>
#include <gnutls/gnutls.h>
#include <systemd/sd-event.h>

#include "macro.h"

typedef struct CurlGlue CurlGlue;
typedef struct Device Device;
typedef struct ReportQueue ReportQueue;
typedef struct Source Source;
typedef struct Target Target;
typedef struct Partitioner Partitioner;
typedef struct Stager Stager;
typedef struct Agent Agent;
typedef struct AgentTrust AgentTrust;

/* Exit codes, so a unit and an operator can tell why the agent stopped. */
enum {
        AGENT_EXIT_SUCCESS = 0,
        AGENT_EXIT_FAILURE = 1,
        AGENT_EXIT_USAGE = 2,
        AGENT_EXIT_REFUSED = 3, /* the job cannot be done here: device too small, mounted, token refused */
        AGENT_EXIT_SESSION_FAILED = 4, /* the session ended failed (or cancelled, for the target) */
};

typedef struct AgentSettings {
        char *mode;           /* pureboot.mode= */
        char *session, *node; /* pureboot.session=, pureboot.node= */
        char *server;         /* pureboot.server=https://bridge:port */
        char *token;          /* pureboot.token= */
        char *ca;             /* pureboot.ca=sha256:HEX, the CA's fingerprint */
        char *device;         /* pureboot.device= */
        char **devices;       /* pureboot.devices=: what partition mode scans (default: every disk) */
        char *state_dir;
        char *address;        /* what the source reports as its address; default: ours towards the bridge */
        char *data_interface; /* or the interface whose address it reports and serves on */
        uint16_t port;        /* where the source serves */
        uint64_t max_rate;    /* bytes/s the target reads at most, 0 = no limit */
        uint64_t ack_timeout_usec; /* how long a finished agent waits for its last report to be taken */
        /* How long the target tries its source before it reports why it cannot; then it goes on trying
         * (peer_wait: the session shows the problem) or fails the session. */
        uint64_t peer_timeout_usec;
        bool peer_wait;
        bool reboot;
} AgentSettings;

typedef void (*CallDone)(Agent *a, const char *error, json_object *reply, void *userdata);
/* A new record on the watched stream: a Session, or the node's NodeOrders. */
typedef void (*WatchChanged)(Agent *a, json_object *record);

struct Agent {
        sd_event *event;
        AgentSettings settings;
        CurlGlue *curl;
        ReportQueue *queue;

        /* Files in the state directory. */
        char *ca_path, *cert_path, *key_path;
        char *ca_pem, *cert_pem, *key_pem;
        char *role; /* source or target, from the enrolment */
        char *local_address; /* the address the bridge last saw us from */
        int64_t clock_offset; /* the controller's clock less ours, at enrolment: report sequences follow its
                               */

        /* WatchSession or WatchNode: the stream and what it last said. */
        struct Watch *watch;
        json_object *watched; /* the latest record */
        char **notes;         /* for the session: the target's filesystem checks, sent with its completion */
        unsigned watched_generation; /* counts the records */
        /* trust.c: the CA and CRL a clone agent checks its peer against. */
        AgentTrust *trust;
        unsigned trust_generation; /* counts the changes of the CRL */
        WatchChanged on_watched;

        /* The job (job.c) and the verb's own state. */
        const struct JobKind *job;
        char *disk_fingerprint; /* of our disk as scanned once enrolled, which the resize plan must be made
                                   from (clone roles) */
        Source *source;
        Target *target;
        Partitioner *partitioner;
        Stager *stager;
        bool finishing; /* the job is done; waiting for the queue to drain */
        sd_event_source *ack_timer;
        int exit_code;
};

/* Where the last progress report stood, for the rate of the next. */
typedef struct ProgressMeter {
        uint64_t bytes, at;
} ProgressMeter;

/* agent.c */
void agent_settings_done(AgentSettings *s);
int agent_new(AgentSettings *settings, Agent **ret);
Agent *agent_free(Agent *a);
/* Ends the loop once every queued report has been taken (or the wait for that ran out). */
void agent_finish(Agent *a, int exit_code);
/* The queue calls this whenever it emptied. */
void agent_check_finished(Agent *a);
/* Ends the loop now. */
void agent_exit(Agent *a, int exit_code);
/* The session's status as the controller last told it (CloneStatus), or -EINVAL. */
int session_status(json_object *session);
bool session_is_final(json_object *session);
/* The parameters every report starts with: our session, and role if given. */
json_object *agent_report_new(Agent *a, const char *role);
/* Adds notes (sentences for the session: what was copied whole, the target's filesystem checks) to a
 * report, if there are any. */
void agent_report_add_notes(json_object *p, char **notes);
/* The timer that reports a job's progress: handler runs a second from now and again each second (it sets
 * its own next time). */
int agent_add_progress_timer(Agent *a, sd_event_source **ret, sd_event_time_handler_t handler,
                             void *userdata);
/* Queues ReportFailed for role with code and the message (also logged). */
void agent_report_failed(Agent *a, const char *role, const char *code, const char *format, ...) _printf_(4, 5);
/* Queues ReportProgress for role: bytes so far, the rate since the meter's last report, the phase. */
void agent_report_progress(Agent *a, ProgressMeter *m, const char *role, uint64_t bytes, const char *phase,
                           const char *problem);

/* trust.c: the CRL, fetched from the bridge now and every 30 s; and the check of a clone peer. */
int trust_start(Agent *a);
void trust_stop(Agent *a);
/* NULL if the peer's certificate (DER) is good for purpose, of name expected_cn, not revoked, and the one
 * the watched session names under serial_key (sourceCertificate); else why not, with *ret_retry set when
 * the session may just not name it yet. Its IP addresses in *ret_ips if asked. With cn_is_prefix the name
 * only starts with expected_cn (one of several targets) and serial_key names a map from names to serials
 * (targetCertificates). */
const char *trust_check_peer(Agent *a, const gnutls_datum_t *der, const char *purpose,
                             const char *expected_cn, bool cn_is_prefix, const char *serial_key,
                             char **ret_ips, bool *ret_retry);

/* client.c: calls on the bridge (varlink over HTTPS). error is NULL on success, else the varlink error's
 * name (transport failures are org.pureboot.Node.ControllerUnavailable). params is taken. */
int client_call(Agent *a, const char *method, json_object *params, CallDone done, void *userdata);
/* An easy handle for url (any HTTPS peer) or for path on the bridge, trusting our CA only and presenting
 * our certificate once we have one. */
CURL *client_easy_new_url(Agent *a, const char *url);
CURL *client_easy_new(Agent *a, const char *path);
/* Remembers the address the transfer went out from: what the bridge saw, and what the source reports. */
void client_note_address(Agent *a, CURL *easy);
/* The address the source serves on if it was told one: --address=, or the address of --data-interface=.
 * 0 and NULL if neither was given; -ENODEV, -EADDRNOTAVAIL if the interface is missing or has no
 * address (yet). */
int client_data_address(Agent *a, char **ret);
/* Our own address, as the source reports it: the data address, else what the bridge last saw us from,
 * else ours on the route to the bridge (found without sending anything). */
int client_own_address(Agent *a, char **ret);
/* Follows method (WatchSession, WatchNode) called with params (taken), reconnecting as needed; changed
 * hears each new record, from the loop. */
int client_watch_start(Agent *a, const char *method, json_object *params, WatchChanged changed);
void client_watch_stop(Agent *a);

/* enrol.c: key, CA (checked against pureboot.ca=), certificate; done() runs when we hold them. */
int enrol_start(Agent *a, void (*done)(Agent *a));

/* source.c, target.c: the verbs. A target pulls from its upstream: the source, the target before it in a
 * chain, or a staged session's staging area. */
int source_start(Agent *a);
Source *source_free(Source *s);
int target_start(Agent *a);
Target *target_free(Target *t);
/* staged.c: a staged clone's source (its upload), and ReportStagingStatus. */
int staged_start(Agent *a);
void staged_report_status(Agent *a, const char *status);
Stager *stager_free(Stager *s);
/* resize.c: the session's resize plan on our disk. resize_report_disk scans the device and queues
 * ReportCloneDisk for role (with the scan's fingerprint in *ret_fingerprint, if asked). resize_plan_of is the
 * session's plan if it was made from the scan with that fingerprint (NULL: any). resize_apply runs role's
 * operations of plan (may be NULL), skipping those done already; on the target it first moves a GPT's backup
 * to the end of the disk. */
void resize_report_disk(Agent *a, const char *role, char **ret_fingerprint);
json_object *resize_plan_of(json_object *session, const char *fingerprint);
int resize_apply(Agent *a, json_object *plan, const char *role, char **ret_error);
/* For a source: 1 when the copy may start, with *size cut to the plan's copyBytes once the plan's operations
 * ran (at once in resize mode none); 0 to wait for a plan made from our scan (fingerprint) — or when the
 * plan failed, which is reported and ends the agent; < 0 on errors. */
int resize_prepare_source(Agent *a, json_object *session, const char *fingerprint, uint64_t *size);
/* For a target, before the first write: 1 when the plan (if the session has a resize mode) is there and
 * feasible; 0 to wait for it, or when it is not feasible, which is reported and ends the agent. */
int resize_target_ready(Agent *a, json_object *session);
/* For a target, after the copy and before reporting it: closes dev, then the GPT backup and the plan's grows
 * (block devices only). A failure is reported (saying the disk was role_word: copied, downloaded) and ends
 * the agent. */
int resize_finish_target(Agent *a, Device *dev, const char *role_word);

/* partition.c: partition mode (once: the scan verb, one scan reported), and a scan printed as JSON. */
int partition_start(Agent *a, bool once);
Partitioner *partitioner_free(Partitioner *p);
int scan_print(char **devices, bool used_map);
