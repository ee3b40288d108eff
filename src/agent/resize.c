/* SPDX-License-Identifier: MIT */
/* A clone agent's side of the session's resize plan (made by the controller, see org.pureboot.Node's
 * GetResizePlan): the disk it reports to plan with, and the operations of its role — the source shrinks
 * before the copy, the target moves the GPT backup to its own end and grows after it. Each operation runs
 * through the partition engine (apply.c) and is skipped when the disk already shows its result, so a
 * restarted agent carries on where it stopped. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>

#include "agent.h"
#include "apply.h"
#include "device.h"
#include "domain.h"
#include "efi-boot.h"
#include "format.h"
#include "fscheck.h"
#include "gpt.h"
#include "log.h"
#include "machine-identity.h"
#include "queue.h"
#include "scan.h"
#include "util.h"

void resize_report_disk(Agent *a, const char *role, char **ret_fingerprint) {
        _cleanup_(disk_info_done) DiskInfo d = {};
        json_object *p;

        if (scan_disk(a->settings.device, &d) < 0 ||
            (ret_fingerprint && !(*ret_fingerprint = disk_info_fingerprint(&d)))) {
                log_warning("Could not scan %s for the resize plan; only resize mode none can work.",
                            a->settings.device);
                return;
        }
        p = agent_report_new(a, role);
        json_object_object_add(p, "disk", disk_info_to_json(&d));
        (void) queue_push(a->queue, "ReportCloneDisk", p);
}

json_object *resize_plan_of(json_object *session, const char *fingerprint) {
        json_object *plan;
        if (!json_object_object_get_ex(session, "plan", &plan) ||
            !json_object_is_type(plan, json_type_object))
                return NULL;
        if (fingerprint && !streq_ptr(json_get_string(plan, "sourceFingerprint"), fingerprint))
                return NULL; /* made from an older scan: the controller makes it again from ours */
        return plan;
}

static bool plan_feasible(json_object *plan) {
        return plan && json_object_get_boolean(json_object_object_get(plan, "feasible"));
}

/* A plan that cannot work ends role's part: reported with the plan's reason. Returns whether it did. */
static bool refuse_infeasible(Agent *a, const char *role, json_object *plan) {
        if (plan_feasible(plan))
                return false;
        agent_report_failed(a, role, "PlanInfeasible", "The resize plan cannot work: %s",
                            strna(json_get_string(plan, "reason")));
        agent_finish(a, AGENT_EXIT_REFUSED);
        return true;
}

/* Whether the disk shows the operation done already: the partition at its new size. */
static bool already_done(const DiskInfo *d, json_object *params) {
        const PartitionInfo *p = disk_info_partition(d, (unsigned) json_get_int(params, "partition"));
        return p && p->size == (uint64_t) json_get_int(params, "new_size_bytes");
}

int resize_apply(Agent *a, json_object *plan, const char *role, char **ret_error) {
        const char *device = a->settings.device;
        json_object *ops = NULL;
        int r;

        *ret_error = NULL;
        if (streq(role, "target")) {
                _cleanup_close_ int fd = open(device, O_RDWR | O_CLOEXEC);
                uint64_t size = 0;
                int sector = 0;
                if (fd < 0 || ioctl(fd, BLKGETSIZE64, &size) < 0 || ioctl(fd, BLKSSZGET, &sector) < 0)
                        return asprintf(ret_error, "Cannot open %s to move its GPT backup: %m.", device) < 0
                                       ? -ENOMEM
                                       : -errno;
                json_object *drops = NULL;
                unsigned drop[128];
                size_t n_drop = 0;
                if (plan && json_object_object_get_ex(plan, "drop", &drops))
                        for (size_t i = 0; i < json_object_array_length(drops) && n_drop < ELEMENTSOF(drop);
                             i++)
                                drop[n_drop++] =
                                        (unsigned) json_object_get_int(json_object_array_get_idx(drops, i));
                r = gpt_relocate_backup(fd, (uint32_t) sector, size, drop, n_drop, ret_error);
                if (r < 0)
                        return *ret_error || r == -ENOMEM ? r
                               : asprintf(ret_error, "Failed to move the GPT backup of %s: %s.", device,
                                          strerror(-r)) < 0
                                       ? -ENOMEM
                                       : r;
                if (r == 0)
                        log_info("Moved the GPT backup of %s to its end (%s)%s.", device, FORMAT_BYTES(size),
                                 n_drop > 0 ? ", leaving out the partitions the plan deletes" : "");
        }
        if (!plan || !json_object_object_get_ex(plan, role, &ops))
                return 0;
        for (size_t i = 0; i < json_object_array_length(ops); i++) {
                json_object *op = json_object_array_get_idx(ops, i), *params = NULL;
                const char *name = json_get_string(op, "operation");
                _cleanup_(disk_info_done) DiskInfo d = {};

                json_object_object_get_ex(op, "parameters", &params);
                r = scan_disk(device, &d);
                if (r < 0)
                        return asprintf(ret_error, "Failed to read %s before resizing it.", device) < 0
                                       ? -ENOMEM
                                       : r;
                if (streq_ptr(name, "resize") && already_done(&d, params)) {
                        log_info("Partition %" PRIi64 " of %s is %s already.",
                                 json_get_int(params, "partition"), device,
                                 FORMAT_BYTES((uint64_t) json_get_int(params, "new_size_bytes")));
                        continue;
                }
                log_info("Resize plan, %s: %s %s.", role, strna(name), json_object_to_json_string(params));
                r = apply_operation(device, NULL, strna(name), params, a->settings.state_dir, ret_error);
                if (r < 0)
                        return r;
        }
        return 0;
}

int resize_prepare_source(Agent *a, json_object *session, const char *fingerprint, uint64_t *size) {
        _cleanup_free_ char *error = NULL;
        json_object *plan;
        uint64_t copy;
        int r;

        if (resize_mode_from_string(json_get_string(session, "resizeMode")) == RESIZE_NONE)
                return 1;
        if (!fingerprint) {
                agent_report_failed(a, "source", "ScanFailed",
                                    "Cannot scan %s, so no resize plan can be made for it; use resize mode none.",
                                    a->settings.device);
                agent_finish(a, AGENT_EXIT_REFUSED);
                return 0;
        }
        plan = resize_plan_of(session, fingerprint);
        if (!plan) {
                log_debug("Waiting for the resize plan (the controller makes it once the target reported its "
                          "disk).");
                return 0;
        }
        if (refuse_infeasible(a, "source", plan))
                return 0;
        r = resize_apply(a, plan, "source", &error);
        if (r < 0) {
                agent_report_failed(a, "source", "ResizeFailed", "Shrinking %s before the copy failed: %s",
                                    a->settings.device, strna(error));
                agent_finish(a, AGENT_EXIT_FAILURE);
                return 0;
        }
        copy = (uint64_t) json_get_int(plan, "copyBytes");
        if (copy == 0 || copy > *size) {
                agent_report_failed(a, "source", "PlanInfeasible",
                                    "The plan copies %" PRIu64 " bytes of %s, which has %" PRIu64 ".", copy,
                                    a->settings.device, *size);
                agent_finish(a, AGENT_EXIT_REFUSED);
                return 0;
        }
        if (copy < *size)
                log_info("Copying %s of %s, up to the end of its last partition, as the plan says.",
                         FORMAT_BYTES(copy), a->settings.device);
        *size = copy;
        return 1;
}

int resize_target_ready(Agent *a, json_object *session) {
        json_object *plan;

        if (resize_mode_from_string(json_get_string(session, "resizeMode")) == RESIZE_NONE)
                return 1;
        plan = resize_plan_of(session, NULL);
        if (!plan)
                return 0; /* the controller makes it once both disks are known */
        return !refuse_infeasible(a, "target", plan);
}

/* The clone's own identity (identity auto, the session's default): its node's host name on each Linux root,
 * and the files the session gave this target. */
static int finish_identity(Agent *a, const char *role_word) {
        _cleanup_free_ char *summary = NULL, *error = NULL;
        const char *identity = a->watched ? json_get_string(a->watched, "identity") : NULL;
        const char *hostname = a->watched ? json_get_string(a->watched, "targetHostname") : NULL;
        json_object *files = NULL;
        int r;

        if (clone_identity_from_string(identity) != CLONE_IDENTITY_AUTO) {
                log_info("%s stays an exact copy (identity %s).", a->settings.device, strna(identity));
                return 0;
        }
        if (a->watched)
                (void) json_object_object_get_ex(a->watched, "files", &files);
        r = machine_identity_apply(a->settings.device, hostname, files, &summary, &error);
        if (r < 0) {
                agent_report_failed(
                        a, "target", "IdentityFailed",
                        "%s was %s completely, but giving the clone its own identity failed: %s. Start "
                        "the session again, or create it with identity none for an exact copy",
                        a->settings.device, role_word, error ?: strerror(-r));
                agent_finish(a, AGENT_EXIT_FAILURE);
                return r;
        }
        log_info("The clone's own identity on %s: %s.", a->settings.device, summary);
        return 0;
}

/* On a UEFI machine, the clone's entry in its NVRAM, said in a note with the completion: the disk is whole
 * either way, and an entry that cannot be made is no reason to copy it again. */
static int finish_boot_entry(Agent *a) {
        _cleanup_free_ char *summary = NULL, *error = NULL, *note = NULL;
        int r = efi_boot_entry_ensure(a->settings.device, &summary, &error);

        if (r == -ENOMEM)
                return log_oom(), agent_finish(a, AGENT_EXIT_FAILURE), r;
        if (r < 0) {
                log_warning("The clone's UEFI boot entry was not made: %s.", error ?: strerror(-r));
                r = asprintf(&note,
                             "UEFI boot entry not made: %s; boot the clone once from the firmware's boot "
                             "menu, or "
                             "add its entry with efibootmgr",
                             error ?: strerror(-r));
        } else {
                log_info("UEFI: %s.", summary);
                if (access("/sys/firmware/efi", F_OK) < 0)
                        return 0;
                r = asprintf(&note, "UEFI: %s", summary);
        }
        if (r < 0 || strv_extend(&a->notes, note) < 0)
                return log_oom(), agent_finish(a, AGENT_EXIT_FAILURE), -ENOMEM;
        return 0;
}

/* Each filesystem written, checked read-only by its own tool: a target whose filesystems do not hold
 * together has not completed, whatever the digests say. The verdicts go with the completion. */
static int finish_checks(Agent *a, const char *role_word) {
        _cleanup_strv_free_ char **verdicts = NULL;
        int r;

        r = fs_check_disk(a->settings.device, &verdicts);
        if (r < 0) {
                agent_report_failed(a, "target", "CheckFailed",
                                    "%s was %s completely, but reading its layout for the filesystem checks "
                                    "failed: %s",
                                    a->settings.device, role_word, strerror(-r));
                agent_finish(a, AGENT_EXIT_FAILURE);
                return r;
        }
        if (r > 0) {
                _cleanup_free_ char *all = strv_join(verdicts, "; ");
                agent_report_failed(
                        a, "target", "CheckFailed",
                        "%s was %s completely, but %d of its filesystems did not pass their check: "
                        "%s. Check the source's filesystems (a filesystem with errors there is "
                        "copied with them), repair them, and start the session again",
                        a->settings.device, role_word, r, strna(all));
                agent_finish(a, AGENT_EXIT_FAILURE);
                return -EUCLEAN;
        }
        strv_free(a->notes);
        a->notes = TAKE_PTR(verdicts);
        return 0;
}

int resize_finish_target(Agent *a, Device *dev, const char *role_word) {
        _cleanup_free_ char *error = NULL;
        json_object *plan = a->watched ? resize_plan_of(a->watched, NULL) : NULL;
        bool is_block = dev->is_block;
        int r;

        if (!plan_feasible(plan))
                plan = NULL;
        device_close(dev); /* the resize tools open the disk and its partitions themselves */
        if (!is_block)
                return 0;
        r = resize_apply(a, plan, "target", &error);
        if (r < 0) {
                agent_report_failed(a, "target", "ResizeFailed",
                                    "%s was %s completely, but resizing it afterwards failed: %s",
                                    a->settings.device, role_word, strna(error));
                agent_finish(a, AGENT_EXIT_FAILURE);
                return r;
        }
        r = finish_identity(a, role_word);
        if (r < 0)
                return r;
        r = finish_checks(a, role_word);
        if (r < 0)
                return r;
        return finish_boot_entry(a);
}
