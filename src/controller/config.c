/* SPDX-License-Identifier: MIT */
#include <inttypes.h>

#include "config.h"
#include "ini.h"
#include "log.h"

void config_init(Config *c) {
        *c = (Config){
                .exit_on_idle_usec = 0,
                .ca_key_algorithm = strdup("ecdsa-p256"),
                .ca_validity_years = 10,
                .session_cert_validity_hours = 24,
                .token_lifetime_usec = 15 * 60 * USEC_PER_SEC,
                .identity_idle_usec = 90 * USEC_PER_SEC,
                .max_discovered = 1024,
                .discover_per_address = 10,
                .discover_per_minute = 120,
                .bridge_user = strdup("pureboot-bridge"),
                .nfsroot_path = strdup("/srv/nfsroot"),
                .nfsroot_base_dir = strdup("base"),
                .nfsroot_nodes_dir = strdup("nodes"),
                .image_verifier = strdup(PKGLIBEXECDIR "/pureboot-agent"),
                .image_work_dir = strdup("/var/tmp"),
        };
}

void config_done(Config *c) {
        free(c->ca_key_algorithm);
        free(c->bridge_user);
        free(c->nfsroot_path);
        free(c->image_verifier);
        free(c->image_work_dir);
        free(c->nfsroot_base_dir);
        free(c->nfsroot_nodes_dir);
        free(c->nfsroot_default_base);
        free(c->nfsroot_workflow);
        free(c->data_subnets);
}

/* DataSubnets=: a list of subnets, added to those before; empty, the list is emptied. */
static int parse_subnets(const char *file, unsigned line, const char *key, const char *value, Subnet **list,
                         size_t *n) {
        _cleanup_free_ char *copy = strdup(value);
        char *save = NULL;

        if (!copy)
                return -ENOMEM;
        if (isempty(value)) {
                *list = mfree(*list);
                *n = 0;
                return 0;
        }
        for (char *w = strtok_r(copy, " \t,", &save); w; w = strtok_r(NULL, " \t,", &save)) {
                Subnet s, *grown;
                if (subnet_parse(w, &s) < 0)
                        return log_error_errno(
                                EINVAL, "%s:%u: %s=: %s is not a subnet (like 10.20.0.0/16 or fd00::/64).",
                                file, line, key, w);
                grown = reallocarray(*list, *n + 1, sizeof(Subnet));
                if (!grown)
                        return -ENOMEM;
                *list = grown;
                (*list)[(*n)++] = s;
        }
        return 0;
}

static int parse_positive(const char *file, unsigned line, const char *key, const char *value, uint64_t max,
                          uint64_t *ret) {
        uint64_t v;
        if (parse_uint64(value, &v) < 0 || v == 0 || v > max)
                return log_error_errno(EINVAL, "%s:%u: %s=%s is not a number between 1 and %" PRIu64 ".",
                                       file, line, key, value, max);
        *ret = v;
        return 0;
}

static int handle(const char *file, unsigned line, const char *section, const char *key, const char *value,
                  void *userdata) {
        Config *c = userdata;
        uint64_t v = 0;
        int r;

        if (streq(section, "Controller") && streq(key, "ExitOnIdleSec")) {
                if (parse_uint64(value, &v) < 0)
                        return log_error_errno(EINVAL, "%s:%u: ExitOnIdleSec=%s is not a number of seconds.",
                                               file, line, value);
                c->exit_on_idle_usec = v * USEC_PER_SEC;
                return 0;
        }
        if (streq(section, "CA") && streq(key, "KeyAlgorithm")) {
                if (!STR_IN_SET(value, "ecdsa-p256", "rsa-2048", "rsa-4096"))
                        return log_error_errno(
                                EINVAL,
                                "%s:%u: KeyAlgorithm=%s is not one of ecdsa-p256, rsa-2048, rsa-4096.", file,
                                line, value);
                return free_and_strdup(&c->ca_key_algorithm, value);
        }
        if (streq(section, "CA") && streq(key, "CAValidityYears"))
                return parse_positive(file, line, key, value, 100, &c->ca_validity_years);
        if (streq(section, "CA") && streq(key, "SessionCertValidityHours"))
                return parse_positive(file, line, key, value, 24 * 366, &c->session_cert_validity_hours);
        if (streq(section, "Enrolment") && streq(key, "TokenLifetimeSec")) {
                r = parse_positive(file, line, key, value, 7 * 24 * 3600, &v);
                if (r < 0)
                        return r;
                c->token_lifetime_usec = v * USEC_PER_SEC;
                return 0;
        }
        if (streq(section, "Enrolment") && streq(key, "IdentityIdleSec")) {
                r = parse_positive(file, line, key, value, 24 * 3600, &v);
                if (r < 0)
                        return r;
                c->identity_idle_usec = v * USEC_PER_SEC;
                return 0;
        }
        if (streq(section, "Enrolment") && streq(key, "DataSubnets"))
                return parse_subnets(file, line, key, value, &c->data_subnets, &c->n_data_subnets);
        if (streq(section, "Discovery") && streq(key, "MaxDiscoveredNodes"))
                return parse_positive(file, line, key, value, 1000000, &c->max_discovered);
        if (streq(section, "Discovery") && streq(key, "PerAddressPerMinute"))
                return parse_positive(file, line, key, value, 1000000, &c->discover_per_address);
        if (streq(section, "Discovery") && streq(key, "PerMinute"))
                return parse_positive(file, line, key, value, 1000000, &c->discover_per_minute);
        if (streq(section, "Bridge") && streq(key, "User")) {
                if (isempty(value))
                        return log_error_errno(EINVAL, "%s:%u: User= needs a user name.", file, line);
                return free_and_strdup(&c->bridge_user, value);
        }
        if (streq(section, "Images") && streq(key, "Verifier")) {
                if (value[0] != '/')
                        return log_error_errno(EINVAL, "%s:%u: Verifier=%s is not an absolute path.", file,
                                               line, value);
                return free_and_strdup(&c->image_verifier, value);
        }
        if (streq(section, "Images") && streq(key, "WorkDirectory")) {
                if (value[0] != '/' || strstr(value, ".."))
                        return log_error_errno(EINVAL, "%s:%u: WorkDirectory=%s is not an absolute path.",
                                               file, line, value);
                return free_and_strdup(&c->image_work_dir, value);
        }
        if (streq(section, "NfsRoot") && streq(key, "Path")) {
                if (value[0] != '/' || strstr(value, ".."))
                        return log_error_errno(EINVAL, "%s:%u: Path=%s is not an absolute path.", file, line, value);
                return free_and_strdup(&c->nfsroot_path, value);
        }
        if (streq(section, "NfsRoot") && STR_IN_SET(key, "BaseDir", "NodesDir", "DefaultBaseImage", "Workflow")) {
                char **field = streq(key, "BaseDir")            ? &c->nfsroot_base_dir
                               : streq(key, "NodesDir")         ? &c->nfsroot_nodes_dir
                               : streq(key, "DefaultBaseImage") ? &c->nfsroot_default_base
                                                                : &c->nfsroot_workflow;
                /* One directory name each: they are joined to Path. */
                if (STR_IN_SET(key, "BaseDir", "NodesDir") ? (isempty(value) || strchr(value, '/') || value[0] == '.')
                                                    : (!isempty(value) && strchr(value, '/')))
                        return log_error_errno(EINVAL, "%s:%u: %s=%s must be a plain name without '/'.", file, line,
                                               key, value);
                return free_and_strdup(field, isempty(value) ? NULL : value);
        }
        log_warning("%s:%u: unknown setting [%s] %s=, ignoring.", file, line, section, key);
        return 0;
}

int config_load(Config *c, const char *path) {
        if (!c->ca_key_algorithm || !c->bridge_user || !c->nfsroot_path || !c->nfsroot_base_dir ||
            !c->nfsroot_nodes_dir || !c->image_verifier || !c->image_work_dir)
                return log_oom();
        return ini_parse_with_dropins(path, handle, c);
}

const char *config_write_hint(int err) {
        return err == -EROFS
                       ? " The controller's unit lets it write only its state directory, /srv/nfsroot and "
                         "/srv/pureboot/staging: add this directory to ReadWritePaths= (systemctl edit "
                         "pureboot-controller)."
                       : "";
}
