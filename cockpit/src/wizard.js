// SPDX-License-Identifier: MIT
// The clone wizard, the seed's five steps: the mode; the source node and disk (its partitions drawn as a disk
// map); the target node and disk, and for a staged clone the staging backend with its free space; the resize
// plan, which the controller computes (it makes the session, pending, and analyses it); review and start.
import cockpit from "./cockpit.js";

import { NO_OPTIONS, ROOT, call } from "./controller.js";
import { diskMap } from "./diskmap.js";
import { button, card, details, h, replace } from "./dom.js";
import * as format from "./format.js";
import { hostname, planTable } from "./sessions.js";

const _ = cockpit.gettext;

const STEPS = [_("Mode"), _("Source"), _("Target"), _("Resize plan"), _("Review and start")];

function blank() {
    return { step: 0, shown: false, mode: "direct", name: "", source: { node: "", device: "" }, target: { node: "", device: "" },
             storage: "", resize: "none", session: null, plan: null };
}

let w = blank();

function radio(name, value, checked, text, onchange, id) {
    return h("label", { class: "pf-v6-c-radio" },
             h("input", { class: "pf-v6-c-radio__input", type: "radio", name, value, checked, id, onchange: () => onchange(value) }),
             h("span", { class: "pf-v6-c-radio__label" }, text));
}

function nodeDisks(state, nodeId) {
    const node = Object.entries(state.nodes).find(([, n]) => n.Id === nodeId);
    return node ? Object.values(state.disks).filter(d => d.Node === node[0]) : [];
}

/* A node and one of the disks it last reported (or a device typed in, when it reported none yet). */
function pickDisk(state, role, redraw) {
    const choice = w[role];
    const nodes = Object.values(state.nodes).sort((a, b) => a.Hostname.localeCompare(b.Hostname));
    const nodeSelect = h("select", {
        id: `wizard-${role}-node`,
        onchange: e => { choice.node = e.target.value; choice.device = ""; redraw() },
    }, h("option", { value: "" }, _("Choose a node")),
                         nodes.map(n => h("option", { value: n.Id, selected: n.Id === choice.node }, `${n.Hostname} (${n.MAC}, ${n.State})`)));
    const disks = choice.node ? nodeDisks(state, choice.node) : [];
    let diskPart;
    if (!choice.node)
        diskPart = null;
    else if (disks.length === 0)
        diskPart = h("div", {},
                     h("p", {}, _("This node has reported no disks yet (it does when its agent starts, or on a scan). Type the device:")),
                     h("span", { class: "pf-v6-c-form-control" },
                       h("input", { id: `wizard-${role}-device`, type: "text", value: choice.device, placeholder: "/dev/sda",
                                    oninput: e => { choice.device = e.target.value.trim() } })));
    else
        diskPart = h("div", { class: "pureboot-choices" },
                     disks.sort((a, b) => a.Device.localeCompare(b.Device)).map(d =>
                         h("div", {},
                           radio(`${role}-disk`, d.Device, d.Device === choice.device,
                                 cockpit.format(_("$0, $1, scanned $2"), d.Device, format.bytes(d.Size), format.time(d.ScannedAt)),
                                 v => { choice.device = v; redraw() }, `wizard-${role}-disk-${d.Device.replaceAll("/", "-")}`),
                           diskMap(d))));
    return h("div", { class: "pureboot-wizard-body" },
             h("label", { for: `wizard-${role}-node` }, role === "source" ? _("Source node") : _("Target node")),
             h("span", { class: "pf-v6-c-form-control" }, nodeSelect), diskPart);
}

function stagingChoice(state, redraw) {
    const backends = Object.values(state.storages).filter(b => b.Enabled);
    if (backends.length === 0)
        return h("p", { id: "wizard-no-storage" }, _("There is no enabled storage backend; add one (NFS or iSCSI) first."));
    return h("div", { class: "pureboot-choices" }, h("p", {}, _("Staging backend")),
             backends.map(b => radio("storage", b.Name, b.Name === w.storage,
                                     cockpit.format(_("$0 ($1): $2 free of $3"), b.Name, b.Type, format.bytes(b.AvailableBytes), format.bytes(b.TotalBytes)),
                                     v => { w.storage = v; redraw() }, `wizard-storage-${b.Name}`)));
}

/* Makes the session (again, if a choice changed since) and asks the controller for its plan. */
function compute(state, act, redraw) {
    const options = { resize_mode: cockpit.variant("s", w.resize) };
    if (w.mode === "staged")
        options.storage = cockpit.variant("s", w.storage);
    const name = w.name || `${hostname(state.nodes, w.source.node)}-to-${hostname(state.nodes, w.target.node)}`;
    const previous = w.session ? call(w.session, "CloneSession", "Delete", "a{sv}", [NO_OPTIONS]) : Promise.resolve();
    w.session = null;
    w.plan = null;
    return act(_("Compute the plan"), previous
            .then(() => call(ROOT, "Manager", "CreateCloneSession", "ssssssa{sv}",
                             [name, w.mode, w.source.node, w.target.node, w.source.device, w.target.device, options]))
            .then(([path]) => {
                w.session = path;
                return call(path, "CloneSession", "Analyze", "a{sv}", [NO_OPTIONS]);
            })
            .then(([plan]) => { w.plan = plan })
            .finally(redraw));
}

function stepBody(state, act, changed, redraw) {
    switch (w.step) {
    case 0:
        return h("div", { class: "pureboot-wizard-body" },
                 h("div", { class: "pureboot-choices" },
                   radio("mode", "direct", w.mode === "direct", _("Direct: the target pulls the source's disk peer to peer"),
                         v => { w.mode = v; changed() }, "wizard-mode-direct"),
                   radio("mode", "staged", w.mode === "staged", _("Staged: the source uploads to a storage backend, the target reads it back"),
                         v => { w.mode = v; changed() }, "wizard-mode-staged")),
                 h("label", { for: "wizard-name" }, _("Name (optional)")),
                 h("span", { class: "pf-v6-c-form-control" },
                   h("input", { id: "wizard-name", type: "text", value: w.name, oninput: e => { w.name = e.target.value.trim() } })));
    case 1:
        return pickDisk(state, "source", changed);
    case 2:
        return h("div", { class: "pureboot-wizard-body" }, pickDisk(state, "target", changed),
                 w.mode === "staged" ? stagingChoice(state, changed) : null);
    case 3:
        return h("div", { class: "pureboot-wizard-body" },
                 h("div", { class: "pureboot-choices" },
                   radio("resize", "none", w.resize === "none", _("Same layout (the target is at least as large)"), v => { w.resize = v; changed() }, "wizard-resize-none"),
                   radio("resize", "shrink_source", w.resize === "shrink_source", _("Shrink the source's last partitions to fit a smaller target"), v => { w.resize = v; changed() }, "wizard-resize-shrink_source"),
                   radio("resize", "grow_target", w.resize === "grow_target", _("Grow the last partition into a larger target"), v => { w.resize = v; changed() }, "wizard-resize-grow_target")),
                 h("div", {}, button(_("Compute the plan"), () => compute(state, act, redraw), { variant: "secondary", id: "wizard-compute" })),
                 w.plan ? h("div", { id: "wizard-plan" }, planTable(w.plan) || h("pre", {}, w.plan)) : null);
    default:
        return details([
            [_("Mode"), w.mode, "mode"],
            [_("Source"), `${hostname(state.nodes, w.source.node)} ${w.source.device}`, "source"],
            [_("Target"), `${hostname(state.nodes, w.target.node)} ${w.target.device}`, "target"],
            w.mode === "staged" ? [_("Staging"), w.storage, "staging"] : null,
            [_("Resize"), w.resize, "resize"],
        ], "wizard-review");
    }
}

/* Whether the step's choices are made, and what is missing if not. */
function missing() {
    if (w.step === 1 && !(w.source.node && w.source.device))
        return _("Choose the source node and its disk.");
    if (w.step === 2 && !(w.target.node && w.target.device))
        return _("Choose the target node and its disk.");
    if (w.step === 2 && w.mode === "staged" && !w.storage)
        return _("Choose a staging backend.");
    if (w.step === 3 && !w.plan)
        return _("Compute the plan first: the controller checks it against both disks.");
    if (w.step === 3 && JSON.parse(w.plan).feasible === false)
        return _("The plan cannot be carried out; pick another resize mode or other disks.");
    return null;
}

export function renderWizard(container, state, act) {
    const redraw = () => renderWizard(container, state, act);
    const changed = () => { w.plan = null; redraw() }; // the plan was of other choices
    const leave = () => {
        const session = w.session;
        w = blank();
        cockpit.location.go(["sessions"]);
        if (session)
            act(_("Remove the unstarted session"), call(session, "CloneSession", "Delete", "a{sv}", [NO_OPTIONS]));
    };
    const start = () => act(_("Start"), call(w.session, "CloneSession", "Start", "a{sv}", [NO_OPTIONS]).then(() => {
        const id = w.session.slice(w.session.lastIndexOf("/") + 1);
        w = blank();
        cockpit.location.go(["sessions", id]);
    }));
    const why = w.shown && missing();
    replace(container, card(_("New clone session"),
                            h("ol", { class: "pureboot-wizard-steps", id: "wizard-steps" },
                              STEPS.map((s, i) => h("li", { class: i === w.step ? "pf-m-current" : "" }, `${i + 1}. ${s}`))),
                            h("div", { id: "wizard", "data-step": String(w.step) }, stepBody(state, act, changed, redraw)),
                            why ? h("p", { class: "pureboot-hint", id: "wizard-missing" }, why) : null,
                            h("div", { class: "pureboot-actions pureboot-wizard-nav" },
                              w.step > 0 ? button(_("Back"), () => { w.step--; redraw() }, { id: "wizard-back" }) : null,
                              w.step < STEPS.length - 1
                                  ? button(_("Next"), () => { w.shown = true; if (!missing()) { w.step++; w.shown = false } redraw() },
                                           { variant: "primary", id: "wizard-next" })
                                  : button(_("Start"), start, { variant: "primary", id: "wizard-start" }),
                              button(_("Cancel"), leave, { variant: "link", id: "wizard-cancel" }))));
}
