// SPDX-License-Identifier: MIT
// A disk drawn to scale: each partition a block as wide as its share of the disk, showing its number,
// filesystem, label, size and flags, with the used part shaded; free space between them as gaps.
import cockpit from "./cockpit.js";

import { h } from "./dom.js";
import * as format from "./format.js";

const _ = cockpit.gettext;

/* The Partitions property a(uttssssssasttb) as objects. */
export function partitions(disk) {
    return (disk.Partitions || []).map(([number, start, size, type, typeName, filesystem, label, uuid, mountpoint,
        flags, used, minimum, canShrink]) => ({
        number, start, size, type, typeName, filesystem, label, uuid, mountpoint, flags, used, minimum, canShrink,
    }));
}

function share(bytes, total) {
    return `${Math.max(0.5, (100 * bytes) / total)}%`;
}

export function diskMap(disk, { id, onselect, selected } = {}) {
    const total = disk.Size || 1;
    const blocks = [];
    let at = 0;
    for (const p of partitions(disk).sort((a, b) => a.start - b.start)) {
        if (p.start - at > total / 200)
            blocks.push(h("div", { class: "pureboot-diskmap-free", style: { "flex-basis": share(p.start - at, total) },
                                   title: cockpit.format(_("$0 free"), format.bytes(p.start - at)) }));
        const title = [`${p.number}`, p.filesystem || p.typeName || "", p.label ? `“${p.label}”` : "",
            format.bytes(p.size), (p.flags || []).join(",")].filter(x => x).join(" ");
        blocks.push(h("button", {
            type: "button",
            class: `pureboot-diskmap-part${selected === p.number ? " pureboot-selected" : ""}`,
            style: { "flex-basis": share(p.size, total) },
            title,
            "data-partition": String(p.number),
            onclick: onselect ? () => onselect(p) : undefined,
        },
                           p.used ? h("div", { class: "pureboot-diskmap-used", style: { width: share(Math.min(p.used, p.size), p.size) } }) : null,
                           h("span", { class: "pureboot-diskmap-label" }, title)));
        at = p.start + p.size;
    }
    if (total - at > total / 200)
        blocks.push(h("div", { class: "pureboot-diskmap-free", style: { "flex-basis": share(total - at, total) },
                               title: cockpit.format(_("$0 free"), format.bytes(total - at)) }));
    return h("div", { class: "pureboot-diskmap", id, "data-device": disk.Device },
             h("div", { class: "pureboot-diskmap-caption" },
               cockpit.format(_("$0 — $1, $2 $3"), disk.Device, format.bytes(disk.Size), disk.PartitionTable || _("no table"),
                              disk.Model || "")),
             h("div", { class: "pureboot-diskmap-bar" }, blocks));
}
