// SPDX-License-Identifier: MIT
// Building the page: elements, and the PatternFly components the pages share (tables, progress bars,
// alerts, labels, buttons, description lists).
import cockpit from "./cockpit.js";

const _ = cockpit.gettext;

/* h("div", { class: "x", onclick: f }, child, "text", [more]) */
export function h(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
        if (v === undefined || v === null || v === false)
            continue;
        if (k.startsWith("on"))
            e.addEventListener(k.slice(2), v);
        else if (k === "style") // through the CSSOM: Cockpit's content security policy forbids style attributes
            Object.entries(v).forEach(([name, value]) => e.style.setProperty(name, value));
        else
            e.setAttribute(k, v === true ? "" : v);
    }
    append(e, children);
    return e;
}

function append(e, children) {
    for (const c of children.flat(Infinity)) {
        if (c === undefined || c === null || c === false)
            continue;
        e.append(c instanceof Node ? c : String(c));
    }
}

export function replace(e, ...children) {
    e.replaceChildren();
    append(e, children);
}

export function button(label, onclick, { variant = "secondary", id, disabled, small = true } = {}) {
    return h("button", {
        class: `pf-v6-c-button pf-m-${variant}${small ? " pf-m-small" : ""}`,
        type: "button",
        id,
        disabled,
        onclick,
    }, h("span", { class: "pf-v6-c-button__text" }, label));
}

const STATUS_COLOURS = {
    completed: "green", ready: "green", active: "green",
    failed: "red", broken: "red", cancelled: "orange",
    cloning: "blue", source_ready: "blue", running: "blue", uploading: "blue", downloading: "blue",
    pending: "grey",
};

export function label(text) {
    const colour = STATUS_COLOURS[text] || "grey";
    return h("span", { class: `pf-v6-c-label pf-m-${colour} pf-m-compact`, "data-status": text },
             h("span", { class: "pf-v6-c-label__content" }, h("span", { class: "pf-v6-c-label__text" }, text)));
}

/* fraction: 0…1 */
export function progress(fraction, title, { failed = false } = {}) {
    const percent = Math.round(Math.max(0, Math.min(1, fraction || 0)) * 1000) / 10;
    return h("div", { class: `pf-v6-c-progress pf-m-sm pureboot-progress${failed ? " pf-m-danger" : ""}` },
             title ? h("div", { class: "pf-v6-c-progress__description" }, title) : null,
             h("div", { class: "pf-v6-c-progress__status" },
               h("span", { class: "pf-v6-c-progress__measure", "data-percent": String(percent) }, `${percent}%`)),
             h("div", {
                 class: "pf-v6-c-progress__bar",
                 role: "progressbar",
                 "aria-valuemin": "0",
                 "aria-valuemax": "100",
                 "aria-valuenow": String(percent),
             }, h("div", { class: "pf-v6-c-progress__indicator", style: { width: `${percent}%` } })));
}

/* rows: arrays of cells (nodes or text); each row may carry attributes in row.attrs */
export function table(caption, headers, rows, { id, empty = _("Nothing here yet.") } = {}) {
    return h("table", { class: "pf-v6-c-table pf-m-compact pf-m-grid-md", role: "grid", id },
             caption ? h("caption", { class: "pf-v6-c-table__caption" }, caption) : null,
             h("thead", { class: "pf-v6-c-table__thead" },
               h("tr", { class: "pf-v6-c-table__tr" },
                 headers.map(t => h("th", { class: "pf-v6-c-table__th", scope: "col" }, t)))),
             h("tbody", { class: "pf-v6-c-table__tbody" },
               rows.length === 0
                   ? h("tr", { class: "pf-v6-c-table__tr" },
                       h("td", { class: "pf-v6-c-table__td", colspan: String(headers.length) }, empty))
                   : rows.map(r => h("tr", { class: "pf-v6-c-table__tr", ...(r.attrs || {}) },
                                     r.map((c, i) => h("td", { class: "pf-v6-c-table__td", "data-label": headers[i] },
                                                       c))))));
}

/* pairs: [term, description] */
export function details(pairs, id) {
    return h("dl", { class: "pf-v6-c-description-list pf-m-horizontal pf-m-compact", id },
             pairs.filter(p => p).map(([term, desc, key]) =>
                 h("div", { class: "pf-v6-c-description-list__group" },
                   h("dt", { class: "pf-v6-c-description-list__term" },
                     h("span", { class: "pf-v6-c-description-list__text" }, term)),
                   h("dd", { class: "pf-v6-c-description-list__description", "data-field": key },
                     h("div", { class: "pf-v6-c-description-list__text" }, desc)))));
}

export function card(title, ...body) {
    return h("section", { class: "pf-v6-c-card" },
             title ? h("div", { class: "pf-v6-c-card__title" }, h("h2", { class: "pf-v6-c-card__title-text" }, title)) : null,
             h("div", { class: "pf-v6-c-card__body" }, body));
}

/* An inline alert: variant danger, warning, success or info. */
export function alert(variant, title, text, onclose) {
    return h("div", { class: `pf-v6-c-alert pf-m-inline pf-m-${variant}`, role: "alert" },
             h("p", { class: "pf-v6-c-alert__title" }, title),
             text ? h("div", { class: "pf-v6-c-alert__description" }, text) : null,
             onclose ? h("div", { class: "pf-v6-c-alert__action" }, button(_("Close"), onclose, { variant: "plain" })) : null);
}

/* A text input with its label, for the inline forms; valueOf(id) reads what was typed. */
export function labelled(id, text, placeholder) {
    return [h("label", { for: id }, text), input(id, { placeholder })];
}

export function valueOf(id) {
    return document.getElementById(id).value.trim();
}

export function input(id, attrs = {}) {
    return h("span", { class: "pf-v6-c-form-control" }, h("input", { id, type: "text", ...attrs }));
}

export function select(id, options, value) {
    return h("span", { class: "pf-v6-c-form-control" },
             h("select", { id }, options.map(([v, t]) => h("option", { value: v, selected: v === value }, t))));
}
