// SPDX-License-Identifier: MIT
// Clone sessions: the list with live progress, and one session's detail (its targets, the timeline, the
// digests, errors and the resize plan). Start, Cancel and Delete are the session's own methods.
import cockpit from "./cockpit.js";

import { NO_OPTIONS, call } from "./controller.js";
import { button, card, details, h, label, progress, table } from "./dom.js";
import * as format from "./format.js";

const _ = cockpit.gettext;

const FINAL = ["completed", "failed", "cancelled"];

/* The staged phase while it runs, else the status. */
function phase(s) {
    if (s.StagingStatus && s.StagingStatus !== "none" && !FINAL.includes(s.Status) && s.Status !== "pending")
        return s.StagingStatus === "pending" ? "provisioning" : s.StagingStatus;
    return s.Status;
}

function fraction(s) {
    return s.Status === "completed" ? 1 : s.Progress || 0;
}

/* The buttons a session's state allows; each reports through act(). */
function actions(path, s, act) {
    const id = s.Id;
    return h("div", { class: "pureboot-actions" },
             s.Status === "pending"
                 ? button(_("Start"), () => act(_("Start"), call(path, "CloneSession", "Start", "a{sv}", [NO_OPTIONS])),
                          { variant: "primary", id: `start-${id}` })
                 : null,
             !FINAL.includes(s.Status)
                 ? button(_("Cancel"), () => act(_("Cancel"), call(path, "CloneSession", "Cancel", "a{sv}", [NO_OPTIONS])),
                          { id: `cancel-${id}` })
                 : null,
             FINAL.includes(s.Status) || s.Status === "pending"
                 ? button(_("Delete"), () => act(_("Delete"), call(path, "CloneSession", "Delete", "a{sv}", [NO_OPTIONS])),
                          { variant: "danger", id: `delete-${id}` })
                 : null);
}

/* A node's hostname, from its id as sessions and targets name it. */
export function hostname(nodes, id) {
    const n = Object.values(nodes).find(n => n.Id === id);
    return n ? n.Hostname : id;
}

function targetsOf(s, targets) {
    return (s.Targets || []).map(p => targets[p]).filter(t => t);
}

export function renderList({ sessions, targets, nodes, images }, act) {
    const rows = Object.entries(sessions)
            .sort(([, a], [, b]) => (b.CreatedAt || 0) - (a.CreatedAt || 0))
            .map(([path, s]) => {
                const row = [
                    h("a", { href: `#/sessions/${s.Id}`, class: "pureboot-session-link" }, s.Name || s.Id),
                    s.Mode,
                    s.Image ? cockpit.format(_("image $0"), Object.values(images).find(i => i.Id === s.Image)?.Name || s.Image)
                        : `${hostname(nodes, s.SourceNode)} ${s.SourceDevice}`,
                    targetsOf(s, targets).map(t => h("div", {}, `${hostname(nodes, t.Node)} ${t.Device}`)),
                    label(phase(s)),
                    progress(fraction(s), null, { failed: s.Status === "failed" }),
                    format.time(s.CreatedAt),
                    actions(path, s, act),
                ];
                row.attrs = { "data-session": s.Id };
                return row;
            });
    return card(_("Clone sessions"),
                table(null, [_("Name"), _("Mode"), _("Source"), _("Targets"), _("Status"), _("Progress"),
                    _("Created"), ""], rows,
                      { id: "sessions", empty: _("No clone sessions. Create one with purebootctl clone create.") }));
}

function timeline(s, targets, nodes) {
    const events = [[s.CreatedAt, _("created")], [s.StartedAt, _("started")]];
    for (const t of targets) {
        events.push([t.StartedAt, cockpit.format(_("target $0 ($1) started"), t.Index, hostname(nodes, t.Node))]);
        events.push([t.CompletedAt, cockpit.format(_("target $0 ($1) $2"), t.Index, hostname(nodes, t.Node), t.Status)]);
    }
    events.push([s.CompletedAt, s.Status]);
    return h("ol", { class: "pureboot-timeline", id: "timeline" },
             events.filter(([at]) => at).sort((a, b) => a[0] - b[0])
                     .map(([at, what]) => h("li", {}, h("span", { class: "pureboot-time" }, format.time(at)), " ", what)));
}

/* The controller's plan (JSON): per partition what happens to it and why. */
export function planTable(text) {
    let plan;
    try {
        plan = JSON.parse(text);
    } catch {
        return null;
    }
    const parts = plan?.partitions || [];
    if (!parts.length)
        return null;
    return table(plan.feasible === false ? cockpit.format(_("Not feasible: $0"), plan.reason || "") : null,
                 [_("Partition"), _("Action"), _("Filesystem"), _("Size on the source"), _("Size on the target"),
                     _("Smallest possible")],
                 parts.map(p => [String(p.number ?? ""), p.action || "", p.filesystem || "",
                     format.bytes(p.sizeBytes), format.bytes(p.newSizeBytes),
                     p.minimumBytes ? format.bytes(p.minimumBytes) : "—"]),
                 { id: "plan" });
}

export function renderDetail(id, { sessions, targets: allTargets, nodes, images, storages }, act) {
    const entry = Object.entries(sessions).find(([, s]) => s.Id === id);
    if (!entry)
        return card(_("Clone session"), h("p", { id: "missing" }, cockpit.format(_("There is no session $0 (any more)."), id)),
                    h("a", { href: "#/sessions" }, _("All sessions")));
    const [path, s] = entry;
    const targets = targetsOf(s, allTargets);
    const failed = s.Status === "failed";
    const image = Object.values(images).find(i => i.Id === s.Image)?.Name || s.Image;
    const backend = Object.values(storages).find(b => b.Id === s.StagingBackend)?.Name || s.StagingBackend;
    const rows = targets.map(t => {
        const row = [String(t.Index), hostname(nodes, t.Node), t.Device, label(t.Status),
            progress(t.Status === "completed" ? 1 : t.Progress, null, { failed: t.Status === "failed" }),
            format.rate(t.TransferRate), format.eta(s.BytesTotal, t.BytesTransferred, t.TransferRate),
            h("code", { class: "pureboot-digest" }, t.Digest || "—"), t.Error || t.Problem || ""];
        row.attrs = { "data-target": String(t.Index) };
        return row;
    });
    return h("div", { id: "session", "data-session": s.Id },
             h("nav", { class: "pureboot-back" }, h("a", { href: "#/sessions" }, _("All sessions"))),
             card(cockpit.format(_("Clone session $0"), s.Name || s.Id),
                  h("div", { class: "pureboot-header" }, label(phase(s)), actions(path, s, act)),
                  progress(fraction(s), cockpit.format(_("$0 of $1"), format.bytes(s.BytesTransferred), format.bytes(s.BytesTotal)),
                           { failed }),
                  s.Error ? h("div", { class: "pf-v6-c-helper-text__item pf-m-error", id: "session-error" }, s.Error) : null,
                  s.Problem ? h("div", { class: "pf-v6-c-helper-text__item pf-m-warning", id: "session-problem" }, s.Problem) : null,
                  details([
                      [_("Id"), s.Id, "id"],
                      [_("Mode"), s.Mode, "mode"],
                      [_("Source"), s.Image ? cockpit.format(_("image $0"), image) : `${hostname(nodes, s.SourceNode)} ${s.SourceDevice}`, "source"],
                      [_("Rate"), format.rate(s.TransferRate), "rate"],
                      [_("Time left"), format.eta(s.BytesTotal, s.BytesTransferred, s.TransferRate), "eta"],
                      s.StagingBackend ? [_("Staging"), `${backend} ${s.StagingPath} (${s.StagingStatus})`, "staging"] : null,
                      s.Image ? [_("Image"), image, "image"] : null,
                      [_("Resize"), s.ResizeMode, "resize"],
                      [_("Source digest"), h("code", { id: "source-digest" }, s.SourceDigest || "—"), "source-digest"],
                      [_("Target digest"), h("code", { id: "target-digest" }, s.TargetDigest || "—"), "target-digest"],
                  ])),
             card(_("Targets"), table(null, [_("#"), _("Node"), _("Device"), _("Status"), _("Progress"), _("Rate"),
                 _("Time left"), _("Digest"), _("Error")], rows, { id: "targets" })),
             card(_("Timeline"), timeline(s, targets, nodes)),
             s.Plan ? card(_("Resize plan"), planTable(s.Plan) || h("pre", {}, s.Plan)) : null);
}
