// SPDX-License-Identifier: MIT
// Nodes: the list (state, MAC, serial, last seen, boot mode), registering one, its boot mode, a boot token
// and deleting it.
import cockpit from "./cockpit.js";

import { NO_OPTIONS, ROOT, call } from "./controller.js";
import { button, card, h, label, labelled, select, table, valueOf } from "./dom.js";
import * as format from "./format.js";

const _ = cockpit.gettext;

const BOOT_MODES = [["local", _("its own disk")], ["partition", _("partition editor")], ["nfs", _("diskless (NFS root)")]];

export function registerForm(act) {
    const submit = () => {
        act(_("Register node"), call(ROOT, "Manager", "RegisterNode", "sssa{sv}",
                                     [valueOf("node-hostname"), valueOf("node-mac"), valueOf("node-arch"), NO_OPTIONS]));
    };
    return card(_("Register a node"), h("form", { class: "pureboot-inline-form", id: "register-node",
                       onsubmit: e => { e.preventDefault(); submit() } },
             labelled("node-hostname", _("Hostname"), "web-01"), labelled("node-mac", _("MAC"), "aa:bb:cc:dd:ee:ff"),
             h("label", { for: "node-arch" }, _("Architecture")),
             select("node-arch", [["x86_64", "x86_64"], ["aarch64", "aarch64"], ["armv7l", "armv7l"]], "x86_64"),
             button(_("Register"), submit, { variant: "primary", id: "node-register" })));
}

export function renderNodes({ nodes, disks }, act, say) {
    const rows = Object.entries(nodes)
            .sort(([, a], [, b]) => (a.Hostname || "").localeCompare(b.Hostname || ""))
            .map(([path, n]) => {
                const mode = select(`boot-mode-${n.Id}`, BOOT_MODES, n.BootMode);
                mode.firstChild.addEventListener("change", e =>
                    act(_("Set boot mode"), call(path, "Node", "SetBootMode", "sa{sv}", [e.target.value, NO_OPTIONS])));
                const token = () => act(_("Issue boot token"), call(path, "Node", "IssueBootToken", "a{sv}", [NO_OPTIONS])
                        .then(([t]) => say(cockpit.format(_("Boot token for $0"), n.Hostname),
                                           cockpit.format(_("pureboot.token=$0 — valid once, for 15 minutes."), t))));
                const row = [n.Hostname, h("code", {}, n.MAC), n.Serial || "—", label(n.State), mode,
                    format.time(n.LastSeen),
                    (n.Disks || []).map(d => h("div", {},
                                               h("a", { href: `#/disk/${n.Id}/${d.slice(d.lastIndexOf("/") + 1)}`, class: "pureboot-disk-link" },
                                                 disks[d] ? `${disks[d].Device} (${format.bytes(disks[d].Size)})` : d))),
                    h("div", { class: "pureboot-actions" },
                      button(_("Boot token"), token, { id: `token-${n.Id}` }),
                      button(_("Delete"), () => act(_("Delete node"), call(path, "Node", "Delete", "a{sv}", [NO_OPTIONS])),
                             { variant: "danger", id: `delete-${n.Id}` }))];
                row.attrs = { "data-node": n.Hostname };
                return row;
            });
    return card(_("Nodes"), table(null, [_("Hostname"), _("MAC"), _("Serial"), _("State"), _("Next boot"),
                 _("Last seen"), _("Disks"), ""], rows,
                                    { id: "nodes", empty: _("No nodes yet. Machines appear here when they network-boot, or register one above.") }));
}
