/* SPDX-License-Identifier: MIT */
/* Resize plans, computed on paper with the partition engine: the source disk with the shrinks applied is
 * what is copied; that layout on a disk of the target's size, with the grows applied, is the target. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "format.h"
#include "log.h"
#include "plan.h"
#include "util.h"

typedef struct Plan {
        const DiskInfo *source, *target;
        ResizeMode mode;
        json_object *edits;
        DiskInfo copied;    /* the source after its shrinks */
        DiskInfo on_target; /* that layout on the target, after its grows */
        json_object *source_ops, *target_ops;
        json_object *drop; /* numbers of the partitions the target leaves out of its table */
        char *reason;
} Plan;

_printf_(2, 3) static void infeasible(Plan *p, const char *format, ...) {
        va_list ap;
        va_start(ap, format); /* the first reason is the one to act on */
        (void) reason_firstv(&p->reason, 0, format, ap);
        va_end(ap);
}

/* The user's edit of partition n, or NULL. */
static json_object *edit_of(Plan *p, unsigned n) {
        char key[16];
        json_object *v = NULL;
        snprintf(key, sizeof(key), "%u", n);
        return p->edits && json_object_object_get_ex(p->edits, key, &v) ? v : NULL;
}

/* Whether the user asked to leave partition n out ("delete"). */
static bool edited_delete(Plan *p, unsigned n) {
        return plan_edit_is_delete(edit_of(p, n));
}

/* The user's size for partition n, or 0. */
static uint64_t edited_size(Plan *p, unsigned n) {
        json_object *v = edit_of(p, n);
        int64_t i = v ? json_object_get_int64(v) : 0;
        return i > 0 ? (uint64_t) i : 0;
}

/* Resizes partition n of d on paper and records the operation for side; a refusal makes the plan
 * infeasible with the engine's sentence. */
static int resize(Plan *p, DiskInfo *d, json_object *ops, const char *side, unsigned n, uint64_t size) {
        _cleanup_(json_object_unrefp) json_object *params = json_object_new_object();
        _cleanup_free_ char *message = NULL;
        json_object *op;
        int r;

        if (!params)
                return -ENOMEM;
        json_object_object_add(params, "partition", json_object_new_int((int) n));
        json_object_object_add(params, "new_size_bytes", json_object_new_int64((int64_t) size));
        r = disk_info_apply(d, "resize", params, &message);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                infeasible(p, "On the %s: %s", side, strna(message));
                return 0;
        }
        op = json_object_new_object();
        if (!op)
                return -ENOMEM;
        json_object_object_add(op, "operation", json_object_new_string("resize"));
        json_object_object_add(op, "parameters", json_object_get(params));
        json_object_array_add(ops, op);
        return 0;
}

static uint64_t last_end(const DiskInfo *d) {
        uint64_t end = 0;
        for (size_t i = 0; i < d->n_partitions; i++)
                end = MAX(end, d->partitions[i].start + d->partitions[i].size);
        return end;
}

/* What the partitions' end needs beyond itself on a disk with this table: GPT's backup header and entries.
 */
static uint64_t table_tail(const DiskInfo *d) {
        return streq_ptr(d->table, "gpt") ? d->logical_sector_size + UINT64_C(16384) : 0;
}

/* Shrinks on the source: the user's, else (shrink_source) the last partition just enough to end where the
 * target lets partitions end. */
static int plan_shrinks(Plan *p, uint64_t limit) {
        for (size_t i = p->copied.n_partitions; i > 0; i--) {
                PartitionInfo *part = &p->copied.partitions[i - 1];
                uint64_t want = edited_size(p, part->number);
                if (want == 0 && p->mode == RESIZE_SHRINK_SOURCE && i == p->copied.n_partitions &&
                    part->start + part->size > limit && limit > part->start)
                        want = limit - part->start;
                if (want > 0 && want < part->size) {
                        int r = resize(p, &p->copied, p->source_ops, "source", part->number, want);
                        if (r < 0 || p->reason)
                                return r;
                }
        }
        return 0;
}

static bool is_esp(const PartitionInfo *p) {
        const PartitionType *efi = partition_type_find("efi");
        for (char **f = p->flags; f && *f; f++)
                if (streq(*f, "esp"))
                        return true;
        return efi && (strcaseeq_ptr(p->type, efi->guid) || strcaseeq_ptr(p->type, efi->mbr));
}

/* Grows on the target: the user's, else (grow_target) the last growable partition up to what follows it —
 * never an EFI system partition, which firmware reads and nobody fills with data. */
static int plan_grows(Plan *p) {
        bool edited = false;
        for (size_t i = 0; i < p->on_target.n_partitions; i++) {
                PartitionInfo *part = &p->on_target.partitions[i];
                uint64_t want = edited_size(p, part->number);
                edited = edited || want > 0;
                if (want > part->size) {
                        int r = resize(p, &p->on_target, p->target_ops, "target", part->number, want);
                        if (r < 0 || p->reason)
                                return r;
                }
        }
        if (edited || p->mode != RESIZE_GROW_TARGET)
                return 0;
        for (size_t i = p->on_target.n_partitions; i > 0; i--) {
                PartitionInfo *part = &p->on_target.partitions[i - 1];
                const FilesystemKind *k = filesystem_kind(part->filesystem);
                uint64_t first, room;
                if (!k || !k->grow || part->mountpoint || is_esp(part))
                        continue;
                disk_info_usable(&p->on_target, &first, &room);
                for (size_t j = 0; j < p->on_target.n_partitions; j++)
                        if (p->on_target.partitions[j].start > part->start)
                                room = MIN(room, p->on_target.partitions[j].start);
                if (room <= part->start + part->size)
                        return 0; /* nothing to grow into */
                return resize(p, &p->on_target, p->target_ops, "target", part->number, room - part->start);
        }
        return 0;
}

static int plan_layout(Plan *p, uint64_t *ret_copy) {
        const DiskInfo *s = p->source, *t = p->target;
        uint64_t first, limit, end;
        int r;

        *ret_copy = s->size;
        if (s->logical_sector_size != t->logical_sector_size) {
                infeasible(
                        p,
                        "The source disk %s has %u-byte logical sectors and the target %s has %u-byte ones; "
                        "every partition would land in the wrong place. Use a target with %u-byte sectors.",
                        s->device, s->logical_sector_size, t->device, t->logical_sector_size,
                        s->logical_sector_size);
                return 0;
        }
        if (p->mode != RESIZE_NONE && streq_ptr(s->table, "none")) {
                if (t->size < s->size)
                        infeasible(
                                p,
                                "The source disk %s has no partition table, so nothing on it can shrink; it "
                                "needs a target of at least %s and %s has %s.",
                                s->device, FORMAT_BYTES(s->size), t->device, FORMAT_BYTES(t->size));
                return 0;
        }
        if (p->mode == RESIZE_NONE && p->edits && json_object_object_length(p->edits) > 0) {
                infeasible(p, "Resize mode none changes no partition; set the session's resize mode to "
                              "shrink_source or grow_target to edit sizes.");
                return 0;
        }

        if (p->edits) {
                json_object_object_foreach (p->edits, key, value) {
                        (void) value;
                        if (!disk_info_partition(s, (unsigned) strtoul(key, NULL, 10))) {
                                infeasible(p,
                                           "The source disk %s has no partition %s; it has %zu (see the "
                                           "plan's partitions).",
                                           s->device, key, s->n_partitions);
                                return 0;
                        }
                }
        }

        /* Partitions the user leaves out: not in the copied layout (their entries are dropped on the target,
         * the source keeps them), so nothing after them needs to fit. */
        for (size_t i = p->copied.n_partitions; i > 0; i--) {
                unsigned n = p->copied.partitions[i - 1].number;
                _cleanup_(json_object_unrefp) json_object *params = json_object_new_object();
                _cleanup_free_ char *message = NULL;
                if (!edited_delete(p, n))
                        continue;
                if (!streq_ptr(s->table, "gpt")) {
                        infeasible(p, "Leaving partition %u out is for GPT disks; %s has a %s table.", n,
                                   s->device, strna(s->table));
                        return 0;
                }
                if (!params)
                        return -ENOMEM;
                json_object_object_add(params, "partition", json_object_new_int((int) n));
                r = disk_info_apply(&p->copied, "delete", params, &message);
                if (r == -ENOMEM)
                        return r;
                if (r < 0) {
                        infeasible(p, "Leaving partition %u out: %s", n, strna(message));
                        return 0;
                }
                json_object_array_add(p->drop, json_object_new_int((int) n));
        }
        if (p->copied.n_partitions == 0 && s->n_partitions > 0) {
                infeasible(p, "Every partition of %s would be left out; there is nothing to copy.",
                           s->device);
                return 0;
        }

        /* Where the target lets partitions end: its size less the table's tail, 1 MiB aligned. */
        r = disk_info_copy(s, &p->on_target);
        if (r < 0)
                return r;
        p->on_target.size = t->size;
        disk_info_usable(&p->on_target, &first, &limit);

        r = plan_shrinks(p, limit);
        if (r < 0 || p->reason)
                return r;
        end = last_end(&p->copied);
        if (t->size >= s->size)
                *ret_copy = s->size;
        else if (end + table_tail(s) <= t->size && end <= limit)
                *ret_copy = end;
        else {
                const PartitionInfo *last =
                        &p->copied.partitions[p->copied.n_partitions - 1]; /* the latest end */
                if (p->mode == RESIZE_NONE)
                        infeasible(p,
                                   "The target disk %s is %s and the source %s is %s. Use resize mode "
                                   "shrink_source (the last partition shrinks on the source first) or a "
                                   "target of "
                                   "at least %s.",
                                   t->device, FORMAT_BYTES(t->size), s->device, FORMAT_BYTES(s->size),
                                   FORMAT_BYTES(s->size));
                else
                        infeasible(p,
                                   "Partition %u ends at %s, but on the target disk %s (%s) partitions must "
                                   "end "
                                   "by %s (the partition table's backup and 1 MiB alignment take the rest). "
                                   "Shrink "
                                   "it to %s at most, or use a target of at least %s.",
                                   last->number, FORMAT_BYTES(end), t->device, FORMAT_BYTES(t->size),
                                   FORMAT_BYTES(limit),
                                   FORMAT_BYTES(limit > last->start ? limit - last->start : 0),
                                   FORMAT_BYTES(((end + table_tail(s) + MIB - 1) / MIB) * MIB));
                return 0;
        }

        /* The target holds what was copied, on its own size. */
        disk_info_done(&p->on_target);
        r = disk_info_copy(&p->copied, &p->on_target);
        if (r < 0)
                return r;
        p->on_target.size = t->size;
        return plan_grows(p);
}

static json_object *partitions_json(Plan *p) {
        json_object *a = json_object_new_array();
        for (size_t i = 0; a && i < p->source->n_partitions; i++) {
                const PartitionInfo *was = &p->source->partitions[i];
                const PartitionInfo *now =
                        disk_info_partition(p->reason ? p->source : &p->on_target, was->number);
                bool dropped = !p->reason && !now;
                uint64_t size = now ? now->size : dropped ? 0 : was->size;
                json_object *o = json_object_new_object();
                if (!o)
                        return json_object_put(a), NULL;
                json_object_object_add(o, "number", json_object_new_int((int) was->number));
                json_object_object_add(o, "filesystem",
                                       was->filesystem ? json_object_new_string(was->filesystem) : NULL);
                json_object_object_add(o, "startBytes", json_object_new_int64((int64_t) was->start));
                json_object_object_add(o, "sizeBytes", json_object_new_int64((int64_t) was->size));
                json_object_object_add(o, "newSizeBytes", json_object_new_int64((int64_t) size));
                json_object_object_add(o, "minimumBytes",
                                       was->minimum ? json_object_new_int64((int64_t) was->minimum) : NULL);
                json_object_object_add(o, "action",
                                       json_object_new_string(dropped            ? "delete"
                                                              : size < was->size ? "shrink"
                                                              : size > was->size ? "grow"
                                                                                 : "keep"));
                json_object_array_add(a, o);
        }
        return a;
}

json_object *plan_compute(const DiskInfo *source, const DiskInfo *target, ResizeMode mode,
                          json_object *edits) {
        Plan p = { .source = source,
                   .target = target,
                   .mode = mode,
                   .edits = edits,
                   .source_ops = json_object_new_array(),
                   .target_ops = json_object_new_array(),
                   .drop = json_object_new_array() };
        _cleanup_free_ char *fingerprint = disk_info_fingerprint(source);
        json_object *o = json_object_new_object();
        uint64_t copy = source->size;
        int r = -ENOMEM;

        if (!o || !fingerprint || !p.source_ops || !p.target_ops || !p.drop)
                goto fail;
        r = disk_info_copy(source, &p.copied);
        if (r >= 0)
                r = plan_layout(&p, &copy);
        if (r < 0)
                goto fail;
#define ADD(k, v) json_object_object_add(o, k, v)
        ADD("mode", json_object_new_string(resize_mode_to_string(mode)));
        ADD("feasible", json_object_new_boolean(!p.reason));
        ADD("reason", p.reason ? json_object_new_string(p.reason) : NULL);
        ADD("sourceDevice", json_object_new_string(source->device));
        ADD("sourceBytes", json_object_new_int64((int64_t) source->size));
        ADD("sourceFingerprint", json_object_new_string(fingerprint));
        ADD("targetDevice", json_object_new_string(target->device));
        ADD("targetBytes", json_object_new_int64((int64_t) target->size));
        ADD("sectorSize", json_object_new_int((int) source->logical_sector_size));
        ADD("table", json_object_new_string(strna(source->table)));
        ADD("copyBytes", json_object_new_int64((int64_t) copy));
        /* A GPT copied to a disk of another size has its backup header in the wrong place until moved. */
        ADD("relocateBackup",
            json_object_new_boolean(streq_ptr(source->table, "gpt") && target->size != copy));
        ADD("partitions", partitions_json(&p));
        ADD("source", p.reason ? json_object_new_array() : json_object_get(p.source_ops));
        ADD("target", p.reason ? json_object_new_array() : json_object_get(p.target_ops));
        /* Partition entries the target removes from its copy of the table, before anything else. */
        ADD("drop", p.reason ? json_object_new_array() : json_object_get(p.drop));
        ADD("edits", edits ? json_object_get(edits) : json_object_new_object());
#undef ADD
        r = 0;
fail:
        disk_info_done(&p.copied);
        disk_info_done(&p.on_target);
        json_object_put(p.source_ops);
        json_object_put(p.target_ops);
        json_object_put(p.drop);
        free(p.reason);
        if (r < 0)
                return json_object_put(o), NULL;
        return o;
}

bool plan_edit_is_delete(json_object *value) {
        return value && json_object_is_type(value, json_type_string) && streq(json_object_get_string(value), "delete");
}

bool plan_is_feasible(json_object *plan) {
        json_object *v;
        return plan && json_object_object_get_ex(plan, "feasible", &v) && json_object_get_boolean(v);
}
