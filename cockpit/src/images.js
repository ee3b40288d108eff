// SPDX-License-Identifier: MIT
// The image library: its images (state, size, digest, the last check), capturing a node's disk, deploying an
// image to several machines in one session (they pull it in a chain), verifying and deleting.
import cockpit from "./cockpit.js";

import { NO_OPTIONS, ROOT, call } from "./controller.js";
import { renderDesktopDisks } from "./desktop.js";
import { button, card, h, label, labelled, progress, table, valueOf } from "./dom.js";
import * as format from "./format.js";

const _ = cockpit.gettext;

export function captureForm(act) {
    const capture = () => act(_("Capture"), call(ROOT, "Manager", "CaptureImage", "ssssa{sv}",
                                                 [valueOf("capture-name"), valueOf("capture-node"), valueOf("capture-device"),
                                                     valueOf("capture-storage"), NO_OPTIONS]));
    return card(_("Capture a node's disk"),
                h("form", { class: "pureboot-inline-form", id: "capture-form", onsubmit: e => { e.preventDefault(); capture() } },
                  labelled("capture-name", _("Image name"), "golden"), labelled("capture-node", _("Node"), "web-01"),
                  labelled("capture-device", _("Disk"), "/dev/sda"), labelled("capture-storage", _("Storage backend"), "nfs1"),
                  button(_("Capture"), capture, { variant: "primary", id: "capture" })));
}

/* Deploy: one staged session from the image to every node named, the first target reading the image and
 * each next one pulling from the one before; started at once. */
function deploy(act, image, nodes, device) {
    const targets = nodes.split(/[\s,]+/).filter(n => n);
    const options = { image: cockpit.variant("s", image.Name) };
    const work = call(ROOT, "Manager", "CreateCloneSession", "ssssssa{sv}", [image.Name, "staged", "", targets[0] || "", "", device, options])
            .then(([session]) => targets.slice(1)
                    .reduce((p, t) => p.then(() => call(session, "CloneSession", "AddTarget", "ssa{sv}", [t, device, NO_OPTIONS])),
                            Promise.resolve())
                    .then(() => call(session, "CloneSession", "Start", "a{sv}", [NO_OPTIONS]))
                    .then(() => cockpit.location.go(["sessions", session.slice(session.lastIndexOf("/") + 1)]))
                    .catch(error => call(session, "CloneSession", "Delete", "a{sv}", [NO_OPTIONS]).finally(() => { throw error })));
    return act(_("Deploy"), work);
}

const deployTyped = {}; // image name → { nodes, device }

export function renderImages({ images, storages }, act, say) {
    const rows = Object.entries(images)
            .sort(([, a], [, b]) => a.Name.localeCompare(b.Name))
            .map(([path, i]) => {
                const busy = ["capturing", "importing", "verifying"].includes(i.State);
                // What is typed survives the redraws the image's progress causes.
                const typed = deployTyped[i.Name] ||= { nodes: "", device: "" };
                const deployNodes = h("input", { id: `deploy-nodes-${i.Name}`, type: "text", placeholder: "web-01 web-02",
                                                 value: typed.nodes, oninput: e => { typed.nodes = e.target.value } });
                const deployDevice = h("input", { id: `deploy-device-${i.Name}`, type: "text", placeholder: "/dev/sda",
                                                  value: typed.device, oninput: e => { typed.device = e.target.value.trim() } });
                const row = [h("span", { title: i.Description }, i.Name), label(i.State),
                    busy ? progress(i.State === "verifying" ? i.VerifyProgress : i.Progress) : format.bytes(i.SizeBytes),
                    format.bytes(i.StoredBytes), storages[i.StorageBackend]?.Name || "",
                    h("code", { class: "pureboot-digest" }, i.Digest || "—"),
                    i.VerifyError ? h("span", { class: "pf-v6-c-helper-text__item pf-m-error" }, i.VerifyError) : format.time(i.VerifiedAt),
                    h("div", { class: "pureboot-actions" },
                      h("span", { class: "pf-v6-c-form-control" }, deployNodes), h("span", { class: "pf-v6-c-form-control" }, deployDevice),
                      button(_("Deploy"), () => deploy(act, i, typed.nodes, typed.device), { id: `deploy-${i.Name}`, disabled: i.State !== "ready" }),
                      button(_("Verify"), () => act(_("Verify"), call(path, "Image", "Verify", "a{sv}", [NO_OPTIONS])), { id: `verify-${i.Name}`, disabled: busy }),
                      button(_("Delete"), () => act(_("Delete"), call(path, "Image", "Delete", "a{sv}", [NO_OPTIONS])), { variant: "danger", id: `delete-${i.Name}` }))];
                row.attrs = { "data-image": i.Name };
                return row;
            });
    return h("div", {},
             card(_("Images"), table(null, [_("Name"), _("State"), _("Size"), _("Stored"), _("Storage"), _("Digest"), _("Verified"), ""],
                                     rows, { id: "images", empty: _("No images. Capture a node's disk above, or keep a staged clone's upload.") })),
             renderDesktopDisks(act, say));
}
