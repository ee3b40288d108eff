// SPDX-License-Identifier: MIT
// Diskless Raspberry Pis: the NFS root's base images, and one overlay per Pi (by serial) on top of a base.
import cockpit from "./cockpit.js";

import { NO_OPTIONS, ROOT, call } from "./controller.js";
import { button, card, details, h, labelled, table, valueOf } from "./dom.js";

const _ = cockpit.gettext;
const PATH = `${ROOT}/nfsroot`;

let info = {}; // serial → GetNodeInfo's answer

export function nfsrootForms(act) {
    const importBase = () => act(_("Import base image"), call(PATH, "NfsRoot", "ImportBaseImageFile", "ssa{sv}",
                                                              [valueOf("base-name"), valueOf("base-path"), NO_OPTIONS]));
    const overlay = () => act(_("Add a Pi"), call(PATH, "NfsRoot", "CreateNodeOverlay", "sssa{sv}",
                                                  [valueOf("pi-serial"), valueOf("pi-base"), valueOf("pi-hostname"), NO_OPTIONS]));
    return h("div", { class: "pureboot-wizard-body" },
             card(_("Import a base image"),
                  h("form", { class: "pureboot-inline-form", onsubmit: e => { e.preventDefault(); importBase() } },
                    labelled("base-name", _("Name"), "bookworm-arm64"), labelled("base-path", _("Archive on the controller's host"), "/srv/rootfs.tar"),
                    button(_("Import"), importBase, { variant: "primary", id: "base-import" }))),
             card(_("Add a diskless Pi"),
                  h("form", { class: "pureboot-inline-form", onsubmit: e => { e.preventDefault(); overlay() } },
                    labelled("pi-serial", _("Serial"), "10000000abcd1234"), labelled("pi-base", _("Base image"), "bookworm-arm64"),
                    labelled("pi-hostname", _("Hostname"), "pi-01"),
                    button(_("Add"), overlay, { variant: "primary", id: "pi-add" }))));
}

export function renderNfsroot({ nfsroot }, act, redraw) {
    const root = nfsroot[PATH];
    if (!root)
        return card(_("Diskless Pis"), h("p", {}, _("The controller serves no NFS root.")));
    for (const serial of root.Nodes || []) {
        if (!(serial in info)) {
            info[serial] = null;
            call(PATH, "NfsRoot", "GetNodeInfo", "s", [serial]).then(a => { info[serial] = a; redraw() }, () => {});
        }
    }
    const rows = (root.Nodes || []).map(serial => {
        const [, base, hostname, machineId] = info[serial] || [];
        const row = [h("code", {}, serial), hostname || "", base || "", h("code", {}, machineId || ""),
            button(_("Delete"), () => act(_("Delete"), call(PATH, "NfsRoot", "DeleteNodeOverlay", "sa{sv}", [serial, NO_OPTIONS])
                    .then(() => { delete info[serial] })), { variant: "danger", id: `pi-delete-${serial}` })];
        row.attrs = { "data-serial": serial };
        return row;
    });
    return h("div", {},
             card(_("NFS root"), details([
                 [_("Path"), h("code", {}, root.Path), "path"],
                 [_("Base images"), (root.BaseImages || []).join(", ") || "—", "bases"],
                 [_("Default base image"), root.DefaultBaseImage || "—", "default"],
             ], "nfsroot")),
             card(_("Diskless Pis"), table(null, [_("Serial"), _("Hostname"), _("Base image"), _("Machine id"), ""], rows,
                                          { id: "pis", empty: _("No diskless Pis yet.") })));
}
