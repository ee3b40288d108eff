// SPDX-License-Identifier: MIT
// PureBoot in Cockpit: the pages (clone sessions, one session, nodes), routed by the location's hash, redrawn
// as the controller's objects change. What a page's action did wrong is shown above it, in the controller's
// own words; a polkit refusal also says what to do about it.
import "@patternfly/patternfly/patternfly.css";
import "./pureboot.css";

import cockpit from "./cockpit.js";

import { isRefusal, proxies, refusalHint } from "./controller.js";
import { alert, button, h, replace } from "./dom.js";
import { renderCa } from "./ca.js";
import { blocks } from "./desktop.js";
import { captureForm, renderImages } from "./images.js";
import { nfsrootForms, renderNfsroot } from "./nfsroot.js";
import { renderNodes, registerForm } from "./nodes.js";
import { renderStorage, storageForm } from "./storage.js";
import { diskPath, operationForm, renderDisk } from "./partitions.js";
import { renderDetail, renderList } from "./sessions.js";
import { renderWizard } from "./wizard.js";

const _ = cockpit.gettext;

const state = {
    sessions: proxies("CloneSession"),
    targets: proxies("CloneTarget"),
    nodes: proxies("Node"),
    disks: proxies("Disk"),
    storages: proxies("StorageBackend"),
    images: proxies("Image"),
    ca: proxies("CertificateAuthority"),
    nfsroot: proxies("NfsRoot"),
};

/* The tabs: each page's list, drawn from the objects, and its forms (drawn once, above the list). */
const PAGES = [
    {
        path: "sessions",
        title: _("Clone sessions"),
        form: ({ id }) => id ? null : h("div", { class: "pureboot-actions" },
                                         button(_("New clone session"), () => cockpit.location.go(["new"]), { variant: "primary", id: "new-session" })),
        live: ({ id }) => id ? renderDetail(id, state, act) : renderList(state, act),
    },
    { path: "nodes", title: _("Nodes"), form: () => registerForm(act), live: () => renderNodes(state, act, say) },
    { path: "storage", title: _("Storage"), form: () => storageForm(act), live: () => renderStorage(state, act, say) },
    { path: "images", title: _("Images"), form: () => captureForm(act), live: () => renderImages(state, act, say) },
    { path: "ca", title: _("Certificates"), live: () => renderCa(state, act, redraw) },
    { path: "pis", title: _("Diskless Pis"), form: () => nfsrootForms(act), live: () => renderNfsroot(state, act, redraw) },
];

let alerts, fixed, live, after, form;

function showAlert(variant, title, text) {
    const a = alert(variant, title, text, () => a.remove());
    a.id = variant === "danger" ? "error" : "notice";
    alerts.replaceChildren(a);
}

/* An action's outcome: an error above the page (with polkit's hint when it refused), else nothing. */
function act(what, promise) {
    alerts.replaceChildren();
    return promise.catch(error => {
        const text = h("div", {}, h("p", { class: "pureboot-message" }, error.message || String(error)),
                       isRefusal(error) ? h("p", { class: "pureboot-hint" }, refusalHint()) : null);
        showAlert("danger", cockpit.format(_("$0 failed"), what), text);
    });
}

function say(title, text) {
    showAlert("info", title, text);
}

function route() {
    const path = cockpit.location.path;
    return { page: path[0] || "sessions", id: path[1] };
}

function nav(current) {
    return h("nav", { class: "pf-v6-c-tabs", "aria-label": _("PureBoot") },
             h("ul", { class: "pf-v6-c-tabs__list", role: "tablist" },
               PAGES.map(p => h("li", { class: `pf-v6-c-tabs__item${p.path === current ? " pf-m-current" : ""}` },
                                h("a", { class: "pf-v6-c-tabs__link", href: `#/${p.path}`, id: `tab-${p.path}` },
                                  h("span", { class: "pf-v6-c-tabs__item-text" }, p.title))))));
}

/* The pages that are not tabs: a disk's partition editor (under Nodes) and the clone wizard (under sessions). */
const SUBPAGES = {
    disk: {
        tab: "nodes",
        after: ({ id, n }) => { form = operationForm(diskPath(id, n)); return form },
        live: ({ id, n }) => renderDisk(diskPath(id, n), state, act, form),
    },
    new: {
        tab: "sessions",
        form: () => { const w = h("div", {}); renderWizard(w, state, act); return w },
        live: () => null,
    },
};

function page() {
    const { page: name, id } = route();
    const p = PAGES.find(p => p.path === name) || SUBPAGES[name] || PAGES[0];
    return { p, tab: p.tab || p.path, args: { id, n: cockpit.location.path[2] } };
}

/* What does not change with the objects (forms, the wizard): drawn when the page is opened. */
function drawFixed() {
    const { p, tab, args } = page();
    replace(fixed, nav(tab), p.form ? p.form(args) : null);
    replace(after, p.after ? p.after(args) : null); // the partition editor's form, under the disk it edits
}

function drawLive() {
    const { p, args } = page();
    replace(live, p.live(args));
}

let pending = null;
function redraw() {
    if (pending === null)
        pending = window.setTimeout(() => { pending = null; drawLive() }, 50);
}

function main() {
    const app = document.getElementById("app");
    fixed = h("div", { class: "pureboot-fixed" });
    alerts = h("div", { class: "pureboot-alerts", "aria-live": "polite" });
    live = h("div", { class: "pureboot-live" });
    after = h("div", { class: "pureboot-fixed" });
    replace(app, h("div", { class: "pf-v6-c-page__main-section pureboot-page" }, fixed, alerts, live, after));
    // A page's forms are drawn anew only when the page changes: what was typed survives any other event.
    let shown = cockpit.location.href;
    cockpit.addEventListener("locationchanged", () => {
        if (cockpit.location.href === shown)
            return;
        shown = cockpit.location.href;
        alerts.replaceChildren();
        drawFixed();
        drawLive();
    });
    for (const p of [...Object.values(state), blocks]) {
        p.addEventListener("added", redraw);
        p.addEventListener("changed", redraw);
        p.addEventListener("removed", redraw);
    }
    drawFixed();
    drawLive();
    Promise.all(Object.values(state).map(p => p.wait())).then(() => {
        document.body.setAttribute("data-loaded", "true");
        drawFixed();
        drawLive();
    });
}

document.addEventListener("DOMContentLoaded", main);
