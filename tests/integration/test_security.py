# SPDX-License-Identifier: MIT
"""What a machine on the provisioning network, or an unprivileged local user, must not be able to do (the
threat model in the README): each case here was once possible, and each test fails on the code that
allowed it."""

import json
import subprocess

import pytest

from harness import BRIDGE_USER, DEST, ROOT, make_key_and_csr
from test_bridge import NODE, curl, enrol, session  # noqa: F401 (session is a fixture)


def raw_post(bridge, path, data, method="POST", cert=None):
    """Sends data (bytes) as is; returns (HTTP status, body text)."""
    argv = ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "--cacert", bridge.ca, "-X", method,
            f"{bridge.url}{path}", "--data-binary", "@-"]
    if cert:
        argv += ["--cert", cert[0], "--key", cert[1]]
    r = subprocess.run([str(a) for a in argv], input=data, capture_output=True, timeout=30)
    out, _, status = r.stdout.decode(errors="replace").rpartition("\n")
    return int(status or 0), out


def test_a_body_that_is_not_utf8_is_bad_input_not_an_outage(bridge, api, session, tmp_path):  # noqa: F811
    cert = enrol(bridge, api, session, "target", tmp_path)
    status, body = raw_post(bridge, f"/call/{NODE}GetSession", b'{"session": "\xff\xfe"}', cert=cert)
    assert status == 400, (status, body)
    reply = json.loads(body)
    assert reply["error"] == "org.varlink.service.InvalidParameter", reply
    # Enrol needs no certificate: the same answer there.
    status, body = raw_post(bridge, f"/call/{NODE}Enrol", b'{"token": "\xc3\x28", "csr": ""}')
    assert status == 400, (status, body)
    # And the bridge goes on answering.
    assert curl(bridge, NODE + "GetSession", {"session": session}, cert=cert)[0] == 200


@pytest.mark.parametrize("method", ["PUT", "POST", "DELETE"])
def test_the_ca_certificate_is_read_only(bridge, method):
    status, body = raw_post(bridge, "/ca.crt", b"-----BEGIN CERTIFICATE-----\n", method=method)
    assert status == 405, (status, body)
    status, body = raw_post(bridge, "/ca.crt", b"", method="GET")
    assert status == 200 and body == bridge.ca.read_text()


@pytest.mark.parametrize("path", ["/boot/files/deploy%00.txt", f"/call/{NODE}GetSession%00x", "/ca.crt%00"])
def test_an_encoded_nul_in_a_path_is_refused(bridge, path):
    status, body = raw_post(bridge, path, b"", method="GET" if "/call/" not in path else "POST")
    assert status == 400, (status, body)
    assert "NUL" in json.loads(body)["parameters"]["reason"], body


@pytest.mark.parametrize("curve", ["secp192r1", "secp224r1"])
def test_weak_curves_are_not_signed(bridge, api, session, tmp_path, curve):  # noqa: F811
    key, csr = make_key_and_csr(tmp_path, curve, curve=curve)
    token = api.ok(f"{ROOT}/clone/{session}", "CloneSession", "IssueBootToken", "sa{sv}", "target", "0")[0]
    status, reply = curl(bridge, NODE + "Enrol", {"token": token, "csr": csr.read_text()})
    assert status == 400 and reply["error"] == NODE + "BadCertificateRequest", reply
    assert "P-256" in reply["parameters"]["reason"], reply
    # The token was not spent on the refusal: a P-256 request with it is signed.
    key, csr = make_key_and_csr(tmp_path, "p256", curve="secp256r1")
    status, reply = curl(bridge, NODE + "Enrol", {"token": token, "csr": csr.read_text()})
    assert status == 200, reply


def sign_server(busctl, csr, hostname):
    return busctl("--json=short", "call", DEST, ROOT, f"{DEST}.Gateway", "SignServerCertificate", "ssas",
                  csr.read_text(), hostname, "1", "127.0.0.1", user=BRIDGE_USER)


def test_server_certificates_are_only_for_bridge_names_and_only_serve(bridge, api, session, busctl,  # noqa: F811
                                                                      tmp_path):
    node = api.ok(ROOT, "Manager", "GetNode", "s", "web-01")[0].rsplit("/", 1)[1]
    key, csr = make_key_and_csr(tmp_path, "server")
    for name in (f"node-{node}", f"clone-{session}-source", f"clone-{session}-target"):
        r = sign_server(busctl, csr, name)
        assert r.returncode != 0 and "names were refused" in r.stderr, (name, r.stdout, r.stderr)
    # A bridge name is signed, for serving only: as a client certificate the bridge refuses it.
    r = sign_server(busctl, csr, "other-bridge.test")
    assert r.returncode == 0, r.stderr
    cert = tmp_path / "server.crt"
    cert.write_text(json.loads(r.stdout)["data"][0])
    text = subprocess.run(["certtool", "-i", "--infile", cert], capture_output=True, text=True, check=True).stdout
    assert "TLS WWW Server" in text and "TLS WWW Client" not in text, text
    status, reply = curl(bridge, NODE + "GetSession", {"session": session}, cert=(cert, key))
    assert status == 401 and "not one for a client" in reply["parameters"]["reason"], reply
