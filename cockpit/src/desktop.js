// SPDX-License-Identifier: MIT
// Disks of the machine Cockpit runs on, as udisks2 lists them: captured into the image library, an image
// restored onto one, or one made a boot stick. The page cannot hand a descriptor over the bus itself, so it
// runs purebootctl's capture-local, restore-local and boot-media write as the logged-in user; udisks2's
// polkit actions and PureBoot's decide.
import cockpit from "./cockpit.js";

import { button, card, h, table } from "./dom.js";
import * as format from "./format.js";

const _ = cockpit.gettext;
const udisks = cockpit.dbus("org.freedesktop.UDisks2", { bus: "system" });
export const blocks = udisks.proxies("org.freedesktop.UDisks2.Block", "/org/freedesktop/UDisks2/block_devices");
const partitions = udisks.proxies("org.freedesktop.UDisks2.Partition", "/org/freedesktop/UDisks2/block_devices");

const typed = {}; // device → what was typed for it, kept across redraws

/* Block.Device is a NUL-terminated byte string: base64 in Cockpit's D-Bus JSON. */
function device(b) {
    const bytes = cockpit.base64_decode(b.Device || "");
    return cockpit.utf8_decoder().decode(bytes.slice(0, bytes.length - 1));
}

function purebootctl(what, argv, act, say) {
    return act(what, new Promise((resolve, reject) =>
        cockpit.spawn(["purebootctl", "--no-pager", "--no-ask-password", ...argv], { err: "message" })
                .then(resolve, reject))
            .then(out => say(cockpit.format(_("$0: done"), what), out)));
}

export function renderDesktopDisks(act, say) {
    const disks = Object.entries(blocks)
            .filter(([path, b]) => b.Size > 0 && !partitions[path])
            .map(([, b]) => ({ dev: device(b), size: b.Size, system: b.HintSystem }))
            .sort((a, b) => a.dev.localeCompare(b.dev));
    const rows = disks.map(d => {
        const t = typed[d.dev] ||= { name: "", storage: "", image: "", server: "" };
        const input = (key, placeholder) => h("span", { class: "pf-v6-c-form-control" },
                                              h("input", { type: "text", placeholder, value: t[key], id: `local-${key}-${d.dev.replaceAll("/", "-")}`,
                                                           oninput: e => { t[key] = e.target.value.trim() } }));
        const id = d.dev.replaceAll("/", "-");
        const row = [h("code", {}, d.dev), format.bytes(d.size),
            h("div", { class: "pureboot-actions" }, input("name", _("image name")), input("storage", _("storage")),
              button(_("Capture"), () => purebootctl(_("Capture"), ["image", "capture-local", t.name, d.dev, `--storage=${t.storage}`], act, say),
                     { id: `local-capture${id}` })),
            h("div", { class: "pureboot-actions" }, input("image", _("image")),
              button(_("Restore"), () => purebootctl(_("Restore"), ["image", "restore-local", t.image, d.dev], act, say),
                     { variant: "danger", id: `local-restore${id}` })),
            h("div", { class: "pureboot-actions" }, input("server", _("bridge: http://HOST:PORT")),
              button(_("Write boot stick"), () => purebootctl(_("Boot stick"), ["boot-media", "write", d.dev, `--server=${t.server}`], act, say),
                     { variant: "danger", id: `local-stick${id}` }))];
        row.attrs = { "data-device": d.dev };
        return row;
    });
    return card(_("Disks of this machine (udisks2)"),
                table(null, [_("Disk"), _("Size"), _("Into the library"), _("From the library (overwrites the disk)"),
                    _("Boot stick, for machines without network boot (overwrites the disk)")], rows,
                      { id: "local-disks", empty: _("udisks2 lists no disks here (is udisksd running?).") }));
}
