// SPDX-License-Identifier: MIT
// The certificate authority: its certificate and fingerprint (what nodes pin), what it issued, revoking.
import cockpit from "./cockpit.js";

import { NO_OPTIONS, ROOT, call } from "./controller.js";
import { button, card, details, h, table } from "./dom.js";
import * as format from "./format.js";

const _ = cockpit.gettext;
const PATH = `${ROOT}/ca`;

let issued = null; // ListIssued's answer, fetched again after each change

export function renderCa({ ca }, act, redraw) {
    const authority = ca[PATH];
    if (issued === null) {
        issued = [];
        call(PATH, "CertificateAuthority", "ListIssued", "", []).then(([list]) => { issued = list; redraw() }, () => {});
    }
    const revoke = serial => act(_("Revoke"), call(PATH, "CertificateAuthority", "Revoke", "sa{sv}", [serial, NO_OPTIONS])
            .then(() => { issued = null; redraw() }));
    const rows = [...issued].sort((a, b) => b[5] - a[5]).map(([serial, subject, role, node, session, notBefore, notAfter, revoked]) => {
        const row = [h("code", {}, serial), subject, role, format.time(notBefore), format.time(notAfter),
            revoked ? cockpit.format(_("revoked $0"), format.time(revoked))
                : button(_("Revoke"), () => revoke(serial), { variant: "danger", id: `revoke-${serial}` })];
        row.attrs = { "data-serial": serial };
        return row;
    });
    return h("div", {},
             card(_("Certificate authority"), authority
                 ? h("div", {}, details([
                     [_("Fingerprint (SHA-256)"), h("code", { id: "ca-fingerprint" }, authority.Fingerprint), "fingerprint"],
                     [_("Algorithm"), authority.Algorithm, "algorithm"],
                     [_("Valid until"), format.time(authority.NotAfter), "not-after"],
                 ]), h("details", {}, h("summary", {}, _("Certificate (PEM)")), h("pre", { id: "ca-pem" }, authority.Certificate)))
                 : h("p", {}, _("The controller has no certificate authority yet."))),
             card(_("Issued certificates"), table(null, [_("Serial"), _("Subject"), _("Role"), _("From"), _("Until"), ""], rows,
                                                  { id: "certificates", empty: _("No certificates issued yet.") })));
}
