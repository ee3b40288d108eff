/* SPDX-License-Identifier: MIT */
/* The power driver redfish: the node's BMC through the DMTF Redfish API, with libcurl over HTTPS only and
 * HTTP basic authentication. The system is the one system= names, else the first of /redfish/v1/Systems;
 * its PowerState says whether it is on; its ComputerSystem.Reset action switches it (On, ForceOff,
 * ForceRestart); its Boot object's BootSourceOverrideTarget Pxe, enabled Once, makes the next boot a network
 * boot. Every path comes from the settings or from the BMC and must lie under /redfish/v1/ on the same
 * host. The BMC's certificate is checked against the system's CAs, or ca-file=, unless verify=no. */
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ini.h"
#include "json-util.h"
#include "power-redfish.h"
#include "util.h"

#define REPLY_MAX (1024 * 1024)

bool redfish_path_is_valid(const char *s) {
        return path_is_safe(s, 512) && startswith(s, "/redfish/v1/") && !strpbrk(s, "?#% ");
}

typedef struct Bmc {
        const char *hostname, *user, *password, *ca_file;
        bool verify;
        char *base; /* https://address:port */
        char *body; /* the last reply */
        size_t size;
} Bmc;

static size_t on_data(char *data, size_t size, size_t n, void *userdata) {
        Bmc *b = userdata;
        size_t k = size * n;
        char *p;
        if (b->size + k > REPLY_MAX || !(p = realloc(b->body, b->size + k + 1)))
                return 0; /* curl gives up on the transfer */
        memcpy(p + b->size, data, k);
        b->size += k;
        p[b->size] = 0;
        b->body = p;
        return k;
}

/* The BMC's own sentence in an error reply: error.message, else its first extended info's Message. */
static const char *bmc_message(json_object *reply) {
        json_object *error, *info;
        if (!json_object_object_get_ex(reply, "error", &error))
                return NULL;
        if (json_object_object_get_ex(error, "@Message.ExtendedInfo", &info) &&
            json_object_is_type(info, json_type_array) && json_object_array_length(info) > 0 &&
            json_get_string(json_object_array_get_idx(info, 0), "Message"))
                return json_get_string(json_object_array_get_idx(info, 0), "Message");
        return json_get_string(error, "message");
}

/* method path with body (NULL: none) at the BMC; its JSON reply (an object, or NULL when it sent none) in
 * *ret. Anything but 2xx is refused, with why. */
static int request(Bmc *b, const char *method, const char *path, json_object *body, json_object **ret,
                   char **ret_why) {
        _cleanup_(json_object_unrefp) json_object *reply = NULL;
        _cleanup_free_ char *url = NULL;
        char error[CURL_ERROR_SIZE] = "";
        struct curl_slist *headers = NULL;
        long status = 0;
        CURLcode c;
        CURL *curl;

        b->body = mfree(b->body);
        b->size = 0;
        if (asprintf(&url, "%s%s", b->base, path) < 0 || !(curl = curl_easy_init()))
                return -ENOMEM;
        headers = curl_slist_append(headers, "Accept: application/json");
        headers = curl_slist_append(headers, "OData-Version: 4.0");
        if (body)
                headers = curl_slist_append(headers, "Content-Type: application/json");
        (void) curl_easy_setopt(curl, CURLOPT_URL, url);
        (void) curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "https");
        (void) curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
        (void) curl_easy_setopt(curl, CURLOPT_USERNAME, b->user);
        (void) curl_easy_setopt(curl, CURLOPT_PASSWORD, b->password);
        (void) curl_easy_setopt(curl, CURLOPT_HTTPAUTH, (long) CURLAUTH_BASIC);
        (void) curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 10L);
        (void) curl_easy_setopt(curl, CURLOPT_TIMEOUT, 60L);
        (void) curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
        (void) curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, error);
        (void) curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data);
        (void) curl_easy_setopt(curl, CURLOPT_WRITEDATA, b);
        (void) curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, (long) b->verify);
        (void) curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, b->verify ? 2L : 0L);
        if (b->ca_file)
                (void) curl_easy_setopt(curl, CURLOPT_CAINFO, b->ca_file);
        if (body)
                (void) curl_easy_setopt(curl, CURLOPT_COPYPOSTFIELDS,
                                        json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN));
        (void) curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
        c = curl_easy_perform(curl);
        (void) curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_cleanup(curl);
        curl_slist_free_all(headers);

        if (c == CURLE_PEER_FAILED_VERIFICATION || c == CURLE_SSL_CACERT_BADFILE) {
                (void) asprintf(
                        ret_why,
                        "%s's BMC at %s: its certificate cannot be checked (%s); give ca-file=PATH with "
                        "the BMC's certificate or its CA, or verify=no to skip the check",
                        b->hostname, b->base, *error ? error : curl_easy_strerror(c));
                return -EIO;
        }
        if (c != CURLE_OK) {
                (void) asprintf(ret_why,
                                "%s's BMC at %s did not answer %s %s: %s; check its address= and port=",
                                b->hostname, b->base, method, path, *error ? error : curl_easy_strerror(c));
                return -EIO;
        }
        if (b->size > 0)
                reply = json_tokener_parse(b->body);
        if (status == 401 || status == 403) {
                (void) asprintf(ret_why,
                                "%s's BMC at %s refused user %s (HTTP %ld); check user= and the password",
                                b->hostname, b->base, b->user, status);
                return -EACCES;
        }
        if (status < 200 || status > 299) {
                (void) asprintf(ret_why, "%s's BMC at %s refused %s %s (HTTP %ld): %s", b->hostname, b->base,
                                method, path, status, strna(bmc_message(reply)));
                return -EIO;
        }
        if (b->size > 0 && !json_object_is_type(reply, json_type_object)) {
                (void) asprintf(ret_why,
                                "%s's BMC at %s answered %s %s with something that is not a JSON object",
                                b->hostname, b->base, method, path);
                return -EBADMSG;
        }
        if (ret)
                *ret = TAKE_PTR(reply);
        return 0;
}

/* The system's path: the one configured, else the first member of the service's Systems collection. */
static int find_system(Bmc *b, json_object *settings, char **ret, char **ret_why) {
        _cleanup_(json_object_unrefp) json_object *systems = NULL;
        json_object *members;
        const char *path = json_get_string(settings, "system");
        int r;

        if (path)
                return (*ret = strdup(path)) ? 0 : -ENOMEM;
        r = request(b, "GET", "/redfish/v1/Systems", NULL, &systems, ret_why);
        if (r < 0)
                return r;
        path = json_object_object_get_ex(systems, "Members", &members) &&
                               json_object_is_type(members, json_type_array) &&
                               json_object_array_length(members) > 0
                       ? json_get_string(json_object_array_get_idx(members, 0), "@odata.id")
                       : NULL;
        if (!redfish_path_is_valid(path)) {
                (void) asprintf(ret_why,
                                "%s's BMC at %s lists no system in /redfish/v1/Systems that PureBoot can "
                                "use; give system=/redfish/v1/Systems/ID",
                                b->hostname, b->base);
                return -ENOENT;
        }
        return (*ret = strdup(path)) ? 0 : -ENOMEM;
}

/* The system as the BMC describes it, and where its reset action is. */
static int read_system(Bmc *b, const char *path, json_object **ret, char **ret_target, char **ret_why) {
        _cleanup_(json_object_unrefp) json_object *system = NULL;
        json_object *actions, *reset;
        const char *target;
        int r = request(b, "GET", path, NULL, &system, ret_why);
        if (r < 0)
                return r;
        if (!json_get_string(system, "PowerState")) {
                (void) asprintf(ret_why, "%s's BMC at %s does not say the PowerState of %s", b->hostname,
                                b->base, path);
                return -EBADMSG;
        }
        /* Where the system says its reset action is, else where the standard puts it. */
        target = json_object_object_get_ex(system, "Actions", &actions) &&
                                 json_object_object_get_ex(actions, "#ComputerSystem.Reset", &reset)
                         ? json_get_string(reset, "target")
                         : NULL;
        if (target && !redfish_path_is_valid(target)) {
                (void) asprintf(ret_why, "%s's BMC at %s names a reset action outside /redfish/v1/: %.100s",
                                b->hostname, b->base, target);
                return -EBADMSG;
        }
        if (target ? !(*ret_target = strdup(target))
                   : asprintf(ret_target, "%s/Actions/ComputerSystem.Reset", path) < 0)
                return -ENOMEM;
        *ret = TAKE_PTR(system);
        return 0;
}

static char *act(Bmc *b, json_object *settings, PowerAction action, char **ret_why) {
        _cleanup_(json_object_unrefp) json_object *system = NULL, *boot = NULL, *reset = NULL;
        _cleanup_free_ char *path = NULL, *target = NULL;
        char *result = NULL;

        if (find_system(b, settings, &path, ret_why) < 0 ||
            read_system(b, path, &system, &target, ret_why) < 0)
                return NULL;
        const char *state = json_get_string(system, "PowerState");
        bool on = streq(state, "On") || streq(state, "PoweringOn");
        if (action == POWER_STATUS)
                return strdup(on ? "on" : "off");
        /* The next boot only from the network: the BMC forgets it after that boot. */
        if (action == POWER_NETBOOT) {
                boot = json_tokener_parse("{\"Boot\": {\"BootSourceOverrideEnabled\": \"Once\", "
                                          "\"BootSourceOverrideTarget\": \"Pxe\"}}");
                if (!boot || request(b, "PATCH", path, boot, NULL, ret_why) < 0)
                        return NULL;
        }
        /* A restart of a machine that is off is a power on. */
        const char *type = action == POWER_ON    ? "On"
                           : action == POWER_OFF ? "ForceOff"
                           : on                  ? "ForceRestart"
                                                 : "On";
        reset = json_object_new_object();
        if (!reset)
                return NULL;
        json_object_object_add(reset, "ResetType", json_object_new_string(type));
        if (request(b, "POST", target, reset, NULL, ret_why) < 0)
                return NULL;
        if (asprintf(&result, "The BMC at %s was told %sReset %s for %s; the machine was %s.", b->base,
                     action == POWER_NETBOOT
                             ? "to boot from the network next (BootSourceOverride Pxe, once), and "
                             : "",
                     type, path, on ? "on" : "off") < 0)
                return NULL;
        return result;
}

char *redfish_act(const char *hostname, json_object *settings, const char *password, PowerAction action,
                  char **ret_why) {
        const char *address = json_get_string(settings, "address"),
                   *port = json_get_string(settings, "port"), *verify = json_get_string(settings, "verify");
        Bmc b = {
                .hostname = hostname,
                .user = json_get_string(settings, "user"),
                .password = password,
                .ca_file = json_get_string(settings, "ca-file"),
                .verify = !verify || parse_boolean(verify) != 0,
        };
        char *result = NULL;

        if (asprintf(&b.base, strchr(address, ':') ? "https://[%s]:%s" : "https://%s:%s", address,
                     port ?: "443") >= 0)
                result = act(&b, settings, action, ret_why);
        free(b.base);
        free(b.body);
        return result;
}
