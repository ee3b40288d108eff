// SPDX-License-Identifier: MIT
// Storage backends: adding one (NFS, iSCSI, or a directory on the controller's host), testing it, measuring
// its space again, and deleting it.
import cockpit from "./cockpit.js";

import { NO_OPTIONS, ROOT, call } from "./controller.js";
import { button, card, h, progress, table } from "./dom.js";
import * as format from "./format.js";

const _ = cockpit.gettext;

const EXAMPLES = {
    nfs: "server=192.0.2.10\nexport=/srv/pureboot",
    iscsi: "portal=192.0.2.20:3260\ntarget=iqn.2026-01.example:pureboot\nlun=1",
    local: "path=/var/lib/pureboot/images",
};

/* KEY=VALUE lines as purebootctl storage add sends them: lun a number, enabled a boolean, the rest text. */
function settings(text) {
    const config = {};
    for (const line of text.split("\n").map(l => l.trim()).filter(l => l)) {
        const eq = line.indexOf("=");
        if (eq <= 0)
            throw new Error(cockpit.format(_("\"$0\" is not a KEY=VALUE setting."), line));
        const key = line.slice(0, eq), value = line.slice(eq + 1);
        config[key] = key === "lun" ? cockpit.variant("u", Number(value))
            : key === "enabled" ? cockpit.variant("b", ["yes", "true", "1", "on"].includes(value))
                : cockpit.variant("s", value);
    }
    return config;
}

export function storageForm(act) {
    const type = h("select", { id: "storage-type" }, Object.keys(EXAMPLES).map(t => h("option", { value: t }, t)));
    const text = h("textarea", { id: "storage-settings", rows: "4", cols: "50", placeholder: EXAMPLES.nfs });
    type.addEventListener("change", () => { text.placeholder = EXAMPLES[type.value] });
    const add = () => {
        let config;
        try {
            config = settings(text.value);
        } catch (e) {
            return act(_("Add storage backend"), Promise.reject(e));
        }
        return act(_("Add storage backend"), call(ROOT, "Manager", "CreateStorageBackend", "ssa{sv}a{sv}",
                                                  [document.getElementById("storage-name").value.trim(), type.value, config, NO_OPTIONS]));
    };
    return card(_("Add a storage backend"),
                h("form", { class: "pureboot-wizard-body", id: "storage-form", onsubmit: e => { e.preventDefault(); add() } },
                  h("div", { class: "pureboot-inline-form" },
                    h("label", { for: "storage-name" }, _("Name")),
                    h("span", { class: "pf-v6-c-form-control" }, h("input", { id: "storage-name", type: "text" })),
                    h("label", { for: "storage-type" }, _("Type")), h("span", { class: "pf-v6-c-form-control" }, type)),
                  h("label", { for: "storage-settings" }, _("Settings, one KEY=VALUE per line (purebootctl(1) lists them)")),
                  h("span", { class: "pf-v6-c-form-control" }, text),
                  h("div", {}, button(_("Add"), add, { variant: "primary", id: "storage-add" }))));
}

function where(b) {
    const c = Object.fromEntries(Object.entries(b.Config || {}).map(([k, v]) => [k, v.v]));
    if (b.Type === "nfs")
        return `${c.server || "?"}:${c.export || "?"}`;
    if (b.Type === "iscsi")
        return `${c.portal || "?"} ${c.target || ""}`;
    return c.path || "";
}

export function renderStorage({ storages }, act, say) {
    const rows = Object.entries(storages)
            .sort(([, a], [, b]) => a.Name.localeCompare(b.Name))
            .map(([path, b]) => {
                const used = b.TotalBytes ? (b.TotalBytes - b.AvailableBytes) / b.TotalBytes : 0;
                const row = [b.Name, b.Type, h("code", {}, where(b)),
                    b.TotalBytes ? progress(used, cockpit.format(_("$0 free of $1"), format.bytes(b.AvailableBytes), format.bytes(b.TotalBytes))) : "—",
                    b.Enabled ? _("yes") : _("no"),
                    h("div", { class: "pureboot-actions" },
                      button(_("Test"), () => act(_("Test"), call(path, "StorageBackend", "Test", "a{sv}", [NO_OPTIONS])
                              .then(([report]) => say(cockpit.format(_("$0 works"), b.Name), report))), { id: `test-${b.Name}` }),
                      button(_("Refresh space"), () => act(_("Refresh space"), call(path, "StorageBackend", "RefreshSpace", "a{sv}", [NO_OPTIONS])),
                             { id: `refresh-${b.Name}` }),
                      button(_("Delete"), () => act(_("Delete"), call(path, "StorageBackend", "Delete", "a{sv}", [NO_OPTIONS])),
                             { variant: "danger", id: `delete-${b.Name}` }))];
                row.attrs = { "data-storage": b.Name };
                return row;
            });
    return card(_("Storage backends"), table(null, [_("Name"), _("Type"), _("Where"), _("Space"), _("Enabled"), ""], rows,
                                              { id: "storages", empty: _("No storage backends. Add one above: staged clones and images need one.") }));
}
