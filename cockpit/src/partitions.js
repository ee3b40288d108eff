// SPDX-License-Identifier: MIT
// The partition editor of one node's disk: its map and partitions, a form that queues resize, create, format,
// delete, move and set_flag (the controller checks each against the queue before it, and its refusal appears
// under the form), the pending queue, and Apply, with each operation's progress and outcome as the agent
// reports it — a failed one says whether the table was put back.
import cockpit from "./cockpit.js";

import { NO_OPTIONS, ROOT, call, isRefusal, refusalHint } from "./controller.js";
import { diskMap, partitions } from "./diskmap.js";
import { button, card, h, label, progress, replace, table } from "./dom.js";
import * as format from "./format.js";

const _ = cockpit.gettext;
const MIB = 1024 * 1024;

const OPERATIONS = {
    resize: { title: _("Resize"), fields: ["partition", "new_size_bytes"] },
    create: { title: _("Create"), fields: ["start_bytes", "size_bytes", "filesystem", "label"] },
    format: { title: _("Format"), fields: ["partition", "filesystem", "label"] },
    delete: { title: _("Delete"), fields: ["partition"] },
    move: { title: _("Move"), fields: ["partition", "new_start_bytes"] },
    set_flag: { title: _("Set flag"), fields: ["partition", "flag", "value"] },
};

const FIELDS = {
    partition: { text: _("Partition"), kind: "number" },
    new_size_bytes: { text: _("New size (MiB)"), kind: "mib" },
    start_bytes: { text: _("Start (MiB)"), kind: "mib" },
    size_bytes: { text: _("Size (MiB)"), kind: "mib" },
    new_start_bytes: { text: _("New start (MiB)"), kind: "mib" },
    filesystem: { text: _("Filesystem"), kind: "choice", choices: ["ext4", "xfs", "btrfs", "vfat", "ntfs", "swap", "none"] },
    label: { text: _("Label"), kind: "text" },
    flag: { text: _("Flag"), kind: "choice", choices: ["boot", "esp", "bios_grub", "lvm", "raid", "hidden", "msftres"] },
    value: { text: _("On"), kind: "bool" },
};

export function diskPath(nodeId, n) {
    return `${ROOT}/node/${nodeId}/disk/${n}`;
}

/* The parameters a{sv} of the form's current operation: the types purebootctl sends. */
function parameters(op) {
    const params = {};
    for (const f of OPERATIONS[op].fields) {
        const e = document.getElementById(`op-${f}`);
        const kind = FIELDS[f].kind;
        if (kind === "bool")
            params[f] = cockpit.variant("b", e.checked);
        else if (e.value.trim() === "")
            continue;
        else if (kind === "number")
            params[f] = cockpit.variant("u", Number(e.value));
        else if (kind === "mib")
            params[f] = cockpit.variant("t", Math.round(Number(e.value) * MIB));
        else
            params[f] = cockpit.variant("s", e.value.trim());
    }
    return params;
}

function fieldInput(name) {
    const f = FIELDS[name];
    let control;
    if (f.kind === "choice")
        control = h("select", { id: `op-${name}` }, f.choices.map(c => h("option", { value: c }, c)));
    else if (f.kind === "bool")
        control = h("input", { id: `op-${name}`, type: "checkbox", checked: true });
    else
        control = h("input", { id: `op-${name}`, type: f.kind === "text" ? "text" : "number", min: "0", step: "any" });
    return h("div", { class: "pureboot-field" }, h("label", { for: `op-${name}` }, f.text),
             f.kind === "bool" ? control : h("span", { class: "pf-v6-c-form-control" }, control));
}

/* The form (drawn once: what is typed stays while the disk changes). select(p) fills in a partition. */
export function operationForm(path) {
    const fields = h("div", { class: "pureboot-inline-form", id: "op-fields" });
    const result = h("div", { id: "op-result" });
    const opSelect = h("select", { id: "op-operation" },
                       Object.entries(OPERATIONS).map(([name, o]) => h("option", { value: name }, o.title)));
    const showFields = () => fields.replaceChildren(...OPERATIONS[opSelect.value].fields.map(fieldInput));
    opSelect.addEventListener("change", showFields);
    showFields();
    const queue = () => {
        const op = opSelect.value;
        result.replaceChildren();
        call(path, "Disk", "QueueOperation", "sa{sv}a{sv}", [op, parameters(op), NO_OPTIONS])
                .then(([id]) => replace(result, h("p", { class: "pf-v6-c-helper-text__item pf-m-success", id: "op-queued" },
                                                         cockpit.format(_("Queued $0 as $1."), op, id))))
                .catch(error => replace(result,
                    h("p", { class: "pf-v6-c-helper-text__item pf-m-error", id: "op-error" }, error.message),
                    isRefusal(error) ? h("p", { class: "pureboot-hint" }, refusalHint()) : null));
    };
    const form = card(_("Queue an operation"),
                      h("form", { class: "pureboot-wizard-body", id: "op-form", onsubmit: e => { e.preventDefault(); queue() } },
                        h("div", { class: "pureboot-inline-form" }, h("label", { for: "op-operation" }, _("Operation")),
                          h("span", { class: "pf-v6-c-form-control" }, opSelect)),
                        fields,
                        h("div", {}, button(_("Queue"), queue, { variant: "primary", id: "op-queue" })),
                        result));
    form.select = p => {
        const e = document.getElementById("op-partition");
        if (e)
            e.value = String(p.number);
    };
    return form;
}

function describe(params) {
    return Object.entries(params).map(([k, v]) => {
        const value = v.v;
        return `${k}=${k.endsWith("_bytes") ? format.bytes(value) : String(value)}`;
    }).join(" ");
}

export function renderDisk(path, state, act, form) {
    const disk = state.disks[path];
    if (!disk)
        return card(_("Disk"), h("p", { id: "missing" }, _("This disk is not known (any more): the node reports its disks when its agent starts.")));
    const node = state.nodes[disk.Node];
    const parts = partitions(disk);
    const ops = (disk.Operations || []).map(([id, op, params, status, message, started, completed, done, total]) =>
        ({ id, op, params, status, message, started, completed, done, total }));
    const pending = ops.filter(o => o.status === "pending").length;
    const rows = ops.map(o => {
        const row = [h("code", {}, o.id), o.op, describe(o.params), label(o.status),
            o.status === "running" && o.total ? progress(o.done / o.total) : format.time(o.completed || o.started),
            h("span", { class: "pureboot-op-message" }, o.message || ""),
            o.status === "pending"
                ? button(_("Remove"), () => act(_("Remove"), call(path, "Disk", "RemoveOperation", "sa{sv}", [o.id, NO_OPTIONS])),
                         { id: `remove-${o.id}` })
                : ""];
        row.attrs = { "data-operation": o.id, "data-status": o.status };
        return row;
    });
    return h("div", { id: "disk", "data-device": disk.Device },
             h("nav", { class: "pureboot-back" }, h("a", { href: "#/nodes" }, _("All nodes"))),
             card(cockpit.format(_("$0 on $1"), disk.Device, node ? node.Hostname : "?"),
                  diskMap(disk, { id: "disk-map", onselect: p => form.select(p) }),
                  table(null, [_("#"), _("Start"), _("Size"), _("Filesystem"), _("Label"), _("Used"), _("Smallest"), _("Flags")],
                        parts.map(p => {
                            const row = [String(p.number), format.bytes(p.start), format.bytes(p.size), p.filesystem || p.typeName,
                                p.label, p.used ? format.bytes(p.used) : "—", p.canShrink ? format.bytes(p.minimum) : _("cannot shrink"),
                                (p.flags || []).join(", ")];
                            row.attrs = { "data-partition": String(p.number) };
                            return row;
                        }), { id: "partitions", empty: _("No partitions.") }),
                  h("p", { class: "pureboot-time" }, cockpit.format(_("Scanned $0"), format.time(disk.ScannedAt)))),
             card(_("Operations"),
                  table(null, [_("Id"), _("Operation"), _("Parameters"), _("Status"), _("When"), _("Outcome"), ""], rows,
                        { id: "operations", empty: _("Nothing queued.") }),
                  h("div", { class: "pureboot-actions" },
                    button(disk.Applying ? _("Applying…") : _("Apply"),
                           () => act(_("Apply"), call(path, "Disk", "Apply", "a{sv}", [NO_OPTIONS])),
                           { variant: "primary", id: "apply", disabled: disk.Applying || pending === 0, small: false }))));
}
