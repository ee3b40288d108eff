/* SPDX-License-Identifier: MIT */
/* Asynchronous polkit checks, in the manner of systemd's bus_verify_polkit_async(): the first call of a
 * handler sends CheckAuthorization and returns 0; when the answer arrives the original message is put back
 * into the bus's read queue, the handler runs again and finds the answer here. */
#include "polkit.h"
#include "bus-util.h"
#include "log.h"
#include "pureboot-errors.h"

struct PolkitQuery {
        PolkitQuery *next;
        Manager *manager;
        sd_bus_message *request, *reply;
        sd_bus_slot *slot;
        char *action;
};

static PolkitQuery *query_free(PolkitQuery *q) {
        if (!q)
                return NULL;
        sd_bus_slot_unref(q->slot);
        sd_bus_message_unref(q->request);
        sd_bus_message_unref(q->reply);
        free(q->action);
        free(q);
        return NULL;
}

static void query_unlink(PolkitQuery *q) {
        for (PolkitQuery **p = &q->manager->polkit_queries; *p; p = &(*p)->next)
                if (*p == q) {
                        *p = q->next;
                        return;
                }
}

void polkit_queries_free(Manager *m) {
        while (m->polkit_queries) {
                PolkitQuery *q = m->polkit_queries;
                m->polkit_queries = q->next;
                query_free(q);
        }
}

static int on_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        PolkitQuery *q = userdata;
        int r;
        (void) ret_error;

        q->slot = sd_bus_slot_unref(q->slot);
        q->reply = sd_bus_message_ref(reply);
        r = sd_bus_message_rewind(q->request, true);
        if (r >= 0)
                r = sd_bus_enqueue_for_read(sd_bus_message_get_bus(q->request), q->request);
        if (r < 0) {
                log_error_errno(r, "Failed to re-dispatch a call after polkit answered: %m");
                (void) sd_bus_reply_method_errno(q->request, r, NULL);
                query_unlink(q);
                query_free(q);
        }
        return 1;
}

/* Turns polkit's answer into 1 (authorized) or a bus error. */
static int evaluate(PolkitQuery *q, bool interactive, sd_bus_error *error) {
        const sd_bus_error *e = sd_bus_message_get_error(q->reply);
        int authorized, challenge, r;

        if (e) {
                log_warning("polkit could not be asked about %s: %s", q->action, e->message);
                return sd_bus_error_setf(
                        error, PB_ERROR_NOT_AUTHORIZED,
                        "Could not ask polkit whether you may do %s (%s). Make sure polkitd is "
                        "running, or run this as root.",
                        q->action, e->message ?: e->name);
        }
        r = sd_bus_message_enter_container(q->reply, 'r', "bba{ss}");
        if (r >= 0)
                r = sd_bus_message_read(q->reply, "bb", &authorized, &challenge);
        if (r < 0)
                return r;
        if (authorized)
                return 1;
        if (challenge && !interactive)
                return sd_bus_error_setf(
                        error, SD_BUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED,
                        "Authentication is required for %s. Run with an authentication agent "
                        "(without --no-ask-password) or as root.",
                        q->action);
        return sd_bus_error_setf(error, PB_ERROR_NOT_AUTHORIZED,
                                 "Not authorized for %s. Ask an administrator, or run this as root.",
                                 q->action);
}

static int append_details(sd_bus_message *c, const char *const *details) {
        int r = sd_bus_message_open_container(c, 'a', "{ss}");
        for (const char *const *d = details; r >= 0 && d && d[0] && d[1]; d += 2)
                r = sd_bus_message_append(c, "{ss}", d[0], d[1]);
        return r < 0 ? r : sd_bus_message_close_container(c);
}

int polkit_verify(Manager *m, sd_bus_message *message, const char *action, const char *const *details,
                  bool interactive, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL;
        uint32_t uid;
        int r;

        /* The second dispatch of the same message: the answer is here. */
        for (PolkitQuery *q = m->polkit_queries; q; q = q->next) {
                if (q->request != message || !streq(q->action, action))
                        continue;
                if (!q->reply)
                        return 0;
                query_unlink(q);
                r = evaluate(q, interactive, error);
                query_free(q);
                return r;
        }

        r = bus_sender_uid(message, &uid);
        if (r < 0)
                return r;
        if (uid == 0) /* root may do anything without asking, as with systemd's daemons */
                return 1;

        r = sd_bus_message_new_method_call(m->bus, &call, "org.freedesktop.PolicyKit1",
                                           "/org/freedesktop/PolicyKit1/Authority",
                                           "org.freedesktop.PolicyKit1.Authority", "CheckAuthorization");
        if (r >= 0)
                r = sd_bus_message_append(call, "(sa{sv})s", "system-bus-name", 1, "name", "s",
                                          sd_bus_message_get_sender(message), action);
        if (r >= 0)
                r = append_details(call, details);
        if (r >= 0)
                r = sd_bus_message_append(call, "us", (uint32_t) (interactive ? 1 : 0), "");
        if (r < 0)
                return r;

        PolkitQuery *q = calloc(1, sizeof(PolkitQuery));
        if (!q)
                return -ENOMEM;
        q->manager = m;
        q->request = sd_bus_message_ref(message);
        q->action = strdup(action);
        if (!q->action) {
                query_free(q);
                return -ENOMEM;
        }
        /* An interactive check waits for a person to type a password: give it time. */
        r = sd_bus_call_async(m->bus, &q->slot, call, on_reply, q, interactive ? 300 * USEC_PER_SEC : 0);
        if (r < 0) {
                query_free(q);
                return r;
        }
        q->next = m->polkit_queries;
        m->polkit_queries = q;
        return 0;
}
