// SPDX-License-Identifier: MIT
// The one API the application uses: org.pureboot.Controller1 on the system bus, as the logged-in user (or
// root, when Cockpit's administrative access is on), polkit deciding every change. Objects come from the
// controller's ObjectManager, so they update themselves from PropertiesChanged and InterfacesAdded/Removed.
import cockpit from "./cockpit.js";

const _ = cockpit.gettext;

export const NAME = "org.pureboot.Controller1";
export const ROOT = "/org/pureboot/Controller1";

const client = cockpit.dbus(NAME, { bus: "system", superuser: "try" });

export function iface(name) {
    return `${NAME}.${name}`;
}

/* Live proxies of every object with that interface: .wait(), "added", "changed", "removed" events. */
export function proxies(name) {
    return client.proxies(iface(name), ROOT);
}

/* A method call; "i" lets polkit ask the user to authenticate when an agent can. Resolves to the reply's
 * arguments. */
export function call(path, name, method, signature, args) {
    // A standard Promise: Cockpit's own do not pass an error thrown in finally() on.
    return new Promise((resolve, reject) =>
        client.call(path, iface(name), method, args, { type: signature, flags: "i" }).then(resolve, reject));
}

/* An empty a{sv} options argument. */
export const NO_OPTIONS = {};

export function isRefusal(error) {
    return /NotAuthorized|InteractiveAuthorizationRequired|AccessDenied/.test(error?.name || "");
}

/* What to do when polkit refused: said under the controller's own sentence. */
export function refusalHint() {
    return _("Turn on administrative access in the top bar, or ask an administrator to grant your group " +
             "this PureBoot action with a polkit rule (the README shows one).");
}
