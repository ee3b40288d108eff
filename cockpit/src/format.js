// SPDX-License-Identifier: MIT
// Sizes, rates, times and durations as the pages show them (µs since the epoch, bytes).
import cockpit from "./cockpit.js";

const _ = cockpit.gettext;

export function bytes(n) {
    return n ? cockpit.format_bytes(n, 1024) : "0 B";
}

export function rate(n) {
    return n ? cockpit.format_bytes_per_sec(n, 1024) : "—";
}

export function time(usec) {
    if (!usec)
        return "—";
    return new Date(usec / 1000).toLocaleString();
}

export function duration(seconds) {
    if (!Number.isFinite(seconds) || seconds < 0)
        return "—";
    seconds = Math.round(seconds);
    const h = Math.floor(seconds / 3600), m = Math.floor(seconds / 60) % 60, s = seconds % 60;
    return h ? cockpit.format(_("$0 h $1 min"), h, m) : m ? cockpit.format(_("$0 min $1 s"), m, s) : cockpit.format(_("$0 s"), s);
}

/* What is left at this rate, or "—". */
export function eta(total, done, bytesPerSecond) {
    return bytesPerSecond > 0 && total > done ? duration((total - done) / bytesPerSecond) : "—";
}
