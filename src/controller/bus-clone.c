/* SPDX-License-Identifier: MIT */
/* org.pureboot.Controller1.CloneSession on /org/pureboot/Controller1/clone/<id>. */
#include "bus-clone.h"
#include "bus-manager.h"
#include "bus-target.h"
#include "bus-util.h"
#include "clone.h"
#include "image.h"
#include "log.h"
#include "plan.h"
#include "polkit.h"
#include "pureboot-errors.h"

#define CLONE_PREFIX PB_ROOT_PATH "/clone"

static int property_get_enum(sd_bus *bus, const char *path, const char *interface, const char *property,
                             sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        CloneSession *c = userdata;
        const char *s = streq(property, "Status")       ? clone_status_to_string(c->status)
                        : streq(property, "Mode")       ? clone_mode_to_string(c->mode)
                        : streq(property, "ResizeMode") ? resize_mode_to_string(c->resize_mode)
                        : streq(property, "Identity")   ? clone_identity_to_string(c->identity)
                        : streq(property, "Unused")     ? clone_unused_to_string(c->unused)
                        : streq(property, "Error")      ? strempty(clone_error(c))
                                                        : staging_status_to_string(c->staging_status);
        (void) bus, (void) path, (void) interface, (void) error;
        return sd_bus_message_append(reply, "s", s);
}

/* The session's properties that show its first target's, as CloneTarget names them. */
static int property_get_first_target(sd_bus *bus, const char *path, const char *interface, const char *property,
                                     sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        const char *name = startswith(property, "Target") ?: property; /* TargetNode is the target's Node */
        (void) bus, (void) path, (void) interface, (void) error;
        return bus_target_append(reply, clone_first_target(userdata), name);
}

/* The name of the image the session keeps its upload as, or "". */
static int property_get_keep_as(sd_bus *bus, const char *path, const char *interface, const char *property,
                                sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Image *i = image_captured_by(userdata);
        (void) bus, (void) path, (void) interface, (void) property, (void) error;
        return sd_bus_message_append(reply, "s", i ? i->name : "");
}

static int property_get_targets(sd_bus *bus, const char *path, const char *interface, const char *property,
                                sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        (void) bus, (void) path, (void) interface, (void) property, (void) error;
        return bus_target_append_paths(reply, userdata);
}

static int property_get_certificate(sd_bus *bus, const char *path, const char *interface,
                                    const char *property, sd_bus_message *reply, void *userdata,
                                    sd_bus_error *error) {
        (void) bus, (void) path, (void) interface, (void) property, (void) error;
        return sd_bus_message_append(reply, "s", strempty(clone_certificate(userdata, NULL)));
}

static int property_get_source_notes(sd_bus *bus, const char *path, const char *interface,
                                     const char *property, sd_bus_message *reply, void *userdata,
                                     sd_bus_error *error) {
        CloneSession *c = userdata;
        (void) bus, (void) path, (void) interface, (void) property, (void) error;
        return bus_message_append_json_strv(reply, c->source_notes);
}

static int property_get_power_notes(sd_bus *bus, const char *path, const char *interface,
                                    const char *property, sd_bus_message *reply, void *userdata,
                                    sd_bus_error *error) {
        CloneSession *c = userdata;
        (void) bus, (void) path, (void) interface, (void) property, (void) error;
        return sd_bus_message_append_strv(reply, c->power_notes);
}

static int property_get_refused_claims(sd_bus *bus, const char *path, const char *interface,
                                       const char *property, sd_bus_message *reply, void *userdata,
                                       sd_bus_error *error) {
        CloneSession *c = userdata;
        (void) bus, (void) path, (void) interface, (void) property, (void) error;
        return sd_bus_message_append_strv(reply, c->refused_claims);
}

/* Reads the options, asks polkit for manage-clones with the session as detail. Returns like polkit_verify.
 */
static int authorize(CloneSession *c, sd_bus_message *msg, const char *verb, sd_bus_error *error) {
        _cleanup_(bus_options_done) BusOptions o = {};
        int r = bus_read_options(msg, &o, error);
        if (r < 0)
                return r;
        return polkit_verify(c->manager, msg, PB_POLKIT_ACTION("manage-clones"),
                             (const char *const[]){ "session", c->id, "verb", verb, NULL },
                             bus_interactive(msg, &o), error);
}

static int method_start(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        CloneSession *c = userdata;
        int r = authorize(c, msg, "start", error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = clone_start(c, error);
        if (r < 0)
                return r;
        manager_audit(c->manager, msg, "Start", c->id, "ok");
        return sd_bus_reply_method_return(msg, NULL);
}

static int method_cancel(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        CloneSession *c = userdata;
        int r = authorize(c, msg, "cancel", error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = clone_cancel(c, error);
        if (r < 0)
                return r;
        manager_audit(c->manager, msg, "Cancel", c->id, "ok");
        return sd_bus_reply_method_return(msg, NULL);
}

static int method_delete(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        CloneSession *c = userdata;
        Manager *m = c->manager;
        _cleanup_free_ char *id = strdup(c->id);
        bool cancelled = false;
        int r;

        if (!id)
                return -ENOMEM;
        r = authorize(c, msg, "delete", error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = clone_delete(c, &cancelled, error); /* c is gone unless cancelled */
        if (r < 0)
                return r;
        manager_audit(m, msg, "Delete", id, cancelled ? "cancelled" : "ok");
        return sd_bus_reply_method_return(msg, "b", !cancelled);
}

static int method_update(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        CloneSession *c = userdata;
        CloneSpec changes = {};
        int r;

        r = sd_bus_message_enter_container(msg, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(msg, 'e', "sv")) > 0) {
                static const struct {
                        const char *key;
                        size_t offset;
                } keys[] = {
                        { "name", offsetof(CloneSpec, name) },
                        { "mode", offsetof(CloneSpec, mode) },
                        { "source_node", offsetof(CloneSpec, source_node) },
                        { "target_node", offsetof(CloneSpec, target_node) },
                        { "source_device", offsetof(CloneSpec, source_device) },
                        { "target_device", offsetof(CloneSpec, target_device) },
                        { "storage", offsetof(CloneSpec, storage) },
                        { "resize_mode", offsetof(CloneSpec, resize_mode) },
                        { "identity", offsetof(CloneSpec, identity) },
                        { "unused", offsetof(CloneSpec, unused) },
                };
                const char *key, **field = NULL;
                r = sd_bus_message_read(msg, "s", &key);
                if (r < 0)
                        return r;
                for (size_t i = 0; i < ELEMENTSOF(keys); i++)
                        if (streq(keys[i].key, key))
                                field = (const char **) ((uint8_t *) &changes + keys[i].offset);
                if (!field)
                        return sd_bus_error_setf(
                                error, SD_BUS_ERROR_INVALID_ARGS,
                                "\"%.64s\" cannot be changed. Changeable: name, mode, source_node, "
                                "target_node, source_device, target_device, storage, resize_mode, identity, "
                                "unused.",
                                key);
                r = sd_bus_message_read(msg, "v", "s", field);
                if (r < 0)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "%s must be a string (s).", key);
                r = sd_bus_message_exit_container(msg);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        r = sd_bus_message_exit_container(msg);
        if (r >= 0) /* arguments first: a bad one is refused without asking anyone to authenticate */
                r = clone_update(c, &changes, true, error);
        if (r < 0)
                return r;
        r = authorize(c, msg, "update", error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = clone_update(c, &changes, false, error);
        if (r < 0)
                return r;
        manager_audit(c->manager, msg, "Update", c->id, "ok");
        return sd_bus_reply_method_return(msg, NULL);
}

/* The first target, which the plan methods act on. */
static int first_target(CloneSession *c, CloneTarget **ret, sd_bus_error *error) {
        *ret = clone_first_target(c);
        if (!*ret)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_STATE,
                                         "Session %s has no target disk to plan for; name a target first.", c->id);
        return 0;
}

static int method_issue_boot_token(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        CloneSession *c = userdata;
        _cleanup_free_ char *token = NULL;
        const char *role;
        int r;

        r = sd_bus_message_read(msg, "s", &role);
        if (r >= 0)
                r = clone_issue_token(c, role, NULL, error);
        if (r < 0)
                return r;
        r = authorize(c, msg, "issue-token", error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = clone_issue_token(c, role, &token, error);
        if (r < 0)
                return r;
        manager_audit(c->manager, msg, "IssueBootToken", c->id, role);
        return sd_bus_reply_method_return(msg, "s", token);
}

/* The stored plan as JSON text, after making it (Analyze) or with the user's edits (SetPlan). */
static int reply_plan(sd_bus_message *msg, CloneTarget *t) {
        return sd_bus_reply_method_return(msg, "s", t->plan_json);
}

static int method_analyze(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        CloneSession *c = userdata;
        CloneTarget *t;
        int r = authorize(c, msg, "plan", error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = first_target(c, &t, error);
        if (r >= 0)
                r = clone_plan(t, NULL, false, error);
        if (r < 0)
                return r;
        manager_audit(c->manager, msg, "Analyze", c->id, "ok");
        return reply_plan(msg, t);
}

static int method_get_plan(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        CloneSession *c = userdata;
        CloneTarget *t = clone_first_target(c);
        if (!t || !t->plan_json)
                return sd_bus_error_setf(error, PB_ERROR_INVALID_STATE,
                                         "Session %s has no resize plan yet; make one with Analyze (purebootctl "
                                         "clone plan %s).",
                                         c->id, c->id);
        return reply_plan(msg, t);
}

/* Edits as {"<number>": bytes, …}, or a whole plan as GetPlan gives it with newSizeBytes changed. */
static int edits_from_json(const char *text, json_object **ret, sd_bus_error *error) {
        _cleanup_(json_object_unrefp) json_object *o = json_tokener_parse(text), *edits = NULL;
        json_object *parts;

        if (!o || !json_object_is_type(o, json_type_object))
                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                         "The plan is not a JSON object; give {\"<partition>\": <new size in "
                                         "bytes>, …} or the plan GetPlan returns, edited.");
        if (!json_object_object_get_ex(o, "partitions", &parts)) {
                json_object_object_foreach(o, key, value) {
                        char *end;
                        unsigned long n = strtoul(key, &end, 10);
                        if (*end || n == 0 || n > 128 ||
                            (!plan_edit_is_delete(value) &&
                             (!json_object_is_type(value, json_type_int) || json_object_get_int64(value) <= 0)))
                                return sd_bus_error_setf(error, PB_ERROR_INVALID_ARGUMENT,
                                                         "\"%.16s\": %.32s is no edit; give a partition number "
                                                         "and its new size in bytes, or \"delete\".",
                                                         key, json_object_to_json_string(value));
                }
                *ret = TAKE_PTR(o);
                return 0;
        }
        edits = json_object_new_object();
        if (!edits)
                return -ENOMEM;
        for (size_t i = 0; json_object_is_type(parts, json_type_array) && i < json_object_array_length(parts); i++) {
                json_object *p = json_object_array_get_idx(parts, i);
                char key[16];
                snprintf(key, sizeof(key), "%" PRIi64, json_get_int(p, "number"));
                json_object_object_add(edits, key, streq_ptr(json_get_string(p, "action"), "delete")
                                                           ? json_object_new_string("delete")
                                                           : json_object_new_int64(json_get_int(p, "newSizeBytes")));
        }
        *ret = TAKE_PTR(edits);
        return 0;
}

static int method_set_plan(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        CloneSession *c = userdata;
        _cleanup_(json_object_unrefp) json_object *edits = NULL;
        const char *text;
        int r;

        r = sd_bus_message_read(msg, "s", &text);
        if (r >= 0)
                r = edits_from_json(text, &edits, error);
        if (r < 0)
                return r;
        r = authorize(c, msg, "plan", error);
        if (r <= 0)
                return r < 0 ? r : 1;
        CloneTarget *t;
        r = first_target(c, &t, error);
        if (r >= 0)
                r = clone_plan(t, edits, true, error);
        if (r < 0)
                return r;
        manager_audit(c->manager, msg, "SetPlan", c->id, "ok");
        return reply_plan(msg, t);
}

static int method_add_target(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        CloneSession *c = userdata;
        CloneTarget *added = NULL;
        _cleanup_free_ char *path = NULL;
        const char *node, *device;
        _cleanup_(bus_options_done) BusOptions o = {};
        int r;

        r = sd_bus_message_read(msg, "ss", &node, &device);
        if (r >= 0)
                r = bus_read_options(msg, &o, error);
        TargetSpec spec = { node, device, o.resize_mode, o.files };
        if (r >= 0)
                r = clone_add_target_check(c, &spec, error);
        if (r < 0)
                return r;
        r = polkit_verify(c->manager, msg, PB_POLKIT_ACTION("manage-clones"),
                          (const char *const[]){ "session", c->id, "verb", "add-target", NULL },
                          bus_interactive(msg, &o), error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = clone_add_target(c, &spec, &added, error);
        if (r < 0)
                return r;
        path = clone_target_path(added);
        if (!path)
                return -ENOMEM;
        manager_audit(c->manager, msg, "AddTarget", c->id, path);
        bus_target_emit(added, true);
        return sd_bus_reply_method_return(msg, "o", path);
}

#define P(name, sig, field)                                                                                 \
        SD_BUS_PROPERTY(name, sig, NULL, offsetof(CloneSession, field), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE)
#define T(name, sig) SD_BUS_PROPERTY(name, sig, property_get_first_target, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE)

static const sd_bus_vtable clone_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Id", "s", NULL, offsetof(CloneSession, id), SD_BUS_VTABLE_PROPERTY_CONST),
        P("Name", "s", name),
        SD_BUS_PROPERTY("Status", "s", property_get_enum, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Mode", "s", property_get_enum, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        P("SourceNode", "s", source_node),
        T("TargetNode", "s"),
        P("SourceDevice", "s", source_device),
        T("TargetDevice", "s"),
        P("Image", "s", image),
        SD_BUS_PROPERTY("KeepAs", "s", property_get_keep_as, 0, SD_BUS_VTABLE_PROPERTY_EMITS_INVALIDATION),
        P("SourceAddress", "s", source_address),
        P("SourcePort", "q", source_port),
        P("StagingBackend", "s", staging_backend),
        P("StagingPath", "s", staging_path),
        SD_BUS_PROPERTY("StagingStatus", "s", property_get_enum, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("ResizeMode", "s", property_get_enum, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Identity", "s", property_get_enum, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Unused", "s", property_get_enum, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        T("Plan", "s"),
        SD_BUS_PROPERTY("Targets", "ao", property_get_targets, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("SourceNotes", "as", property_get_source_notes, 0,
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        P("BytesTotal", "t", bytes_total),
        T("BytesTransferred", "t"),
        P("BytesUploaded", "t", bytes_uploaded),
        P("StoredBytes", "t", stored_bytes),
        T("TransferRate", "t"),
        T("Progress", "d"),
        SD_BUS_PROPERTY("Error", "s", property_get_enum, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        T("Problem", "s"),
        P("SourceDigest", "s", source_digest),
        T("TargetDigest", "s"),
        SD_BUS_PROPERTY("CreatedAt", "t", NULL, offsetof(CloneSession, created_at),
                        SD_BUS_VTABLE_PROPERTY_CONST),
        P("StartedAt", "t", started_at),
        P("CompletedAt", "t", completed_at),
        SD_BUS_PROPERTY("CreatedBy", "u", NULL, offsetof(CloneSession, created_by),
                        SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("IdempotencyKey", "s", NULL, offsetof(CloneSession, idempotency_key),
                        SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("RefusedClaims", "as", property_get_refused_claims, 0,
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("PowerCycle", "b", NULL, offsetof(CloneSession, power_cycle),
                        SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("PowerOff", "b", NULL, offsetof(CloneSession, power_off),
                        SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("PowerNotes", "as", property_get_power_notes, 0,
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("SourceCertificate", "s", property_get_certificate, 0,
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        T("TargetCertificate", "s"),
        SD_BUS_METHOD_WITH_ARGS("Start", SD_BUS_ARGS("a{sv}", options), SD_BUS_NO_RESULT, method_start,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Cancel", SD_BUS_ARGS("a{sv}", options), SD_BUS_NO_RESULT, method_cancel,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Delete", SD_BUS_ARGS("a{sv}", options), SD_BUS_RESULT("b", deleted),
                                method_delete, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Update", SD_BUS_ARGS("a{sv}", changes, "a{sv}", options), SD_BUS_NO_RESULT,
                                method_update, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("AddTarget", SD_BUS_ARGS("s", node, "s", device, "a{sv}", options),
                                SD_BUS_RESULT("o", target), method_add_target, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Analyze", SD_BUS_ARGS("a{sv}", options), SD_BUS_RESULT("s", plan),
                                method_analyze, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetPlan", SD_BUS_NO_ARGS, SD_BUS_RESULT("s", plan), method_get_plan,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("SetPlan", SD_BUS_ARGS("s", plan, "a{sv}", options),
                                SD_BUS_RESULT("s", plan), method_set_plan, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("IssueBootToken", SD_BUS_ARGS("s", role, "a{sv}", options),
                                SD_BUS_RESULT("s", token), method_issue_boot_token,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END,
};

static int find(sd_bus *bus, const char *path, const char *interface, void *userdata, void **found,
                sd_bus_error *error) {
        Manager *m = userdata;
        (void) bus, (void) interface, (void) error;
        return bus_find_object(m->sessions, CLONE_PREFIX, path, found);
}

static int enumerate(sd_bus *bus, const char *path, void *userdata, char ***nodes, sd_bus_error *error) {
        Manager *m = userdata;
        (void) bus, (void) path, (void) error;
        return bus_enumerate_objects(m->sessions, CLONE_PREFIX, nodes);
}

int bus_clone_register(Manager *m) {
        int r = sd_bus_add_fallback_vtable(m->bus, NULL, CLONE_PREFIX, PB_IFACE("CloneSession"),
                                           clone_vtable, find, m);
        if (r >= 0)
                r = sd_bus_add_node_enumerator(m->bus, NULL, CLONE_PREFIX, enumerate, m);
        if (r < 0)
                return log_error_errno(r, "Failed to register clone session objects: %m");
        return 0;
}
