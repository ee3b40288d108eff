# SPDX-License-Identifier: MIT
"""The CA through the bus: certificates issued from CSRs verify with certtool, carry only what the
controller decides, and complete a GnuTLS mutual-TLS handshake; revocation reaches the CRL."""

import socket
import subprocess
import time

import pytest

from harness import ROOT


def certtool(*args, stdin=None):
    return subprocess.run(["certtool", *map(str, args)], capture_output=True, text=True, check=True, input=stdin)


def make_request(directory, name, cn="chosen-by-the-node"):
    key, req, tmpl = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.cfg"
    certtool("--generate-privkey", "--key-type=ecdsa", "--outfile", key)
    tmpl.write_text(f'cn = "{cn}"\nunit = "attacker-chosen"\n')
    certtool("--generate-request", "--load-privkey", key, "--template", tmpl, "--outfile", req)
    return key, req


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def issued(controller, api, tmp_path):
    api.node("web-01", "aa:bb:cc:00:00:01")
    api.node("web-02", "aa:bb:cc:00:00:02")
    session = api.session("tls")
    sid = session.rsplit("/", 1)[1]
    (tmp_path / "ca.crt").write_text(api.prop(f"{ROOT}/ca", "CertificateAuthority", "Certificate"))
    out = {"sid": sid, "dir": tmp_path}
    for role, ip in (("source", "127.0.0.1"), ("target", None)):
        key, req = make_request(tmp_path, role)
        opts = ["1", "ip", "s", ip] if ip else ["0"]
        cert, serial = api.ok(f"{ROOT}/ca", "CertificateAuthority", "IssueCertificate", "sssa{sv}", req.read_text(),
                              role, sid, *opts)
        (tmp_path / f"{role}.crt").write_text(cert)
        out[role] = (tmp_path / f"{role}.crt", key, serial)
    return out


def test_certificates_verify_with_certtool(issued):
    d, sid = issued["dir"], issued["sid"]
    for role, purpose in (("source", "1.3.6.1.5.5.7.3.1"), ("target", "1.3.6.1.5.5.7.3.2")):
        r = subprocess.run(["certtool", "--verify", "--load-ca-certificate", d / "ca.crt", "--infile", d / f"{role}.crt",
                            "--verify-hostname", f"clone-{sid}-{role}" + ("-1" if role == "target" else ""), "--verify-purpose", purpose],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
    info = certtool("--certificate-info", "--infile", d / "source.crt").stdout
    assert f"CN=clone-{sid}-source" in info
    assert "attacker-chosen" not in info and "chosen-by-the-node" not in info
    assert "IPAddress: 127.0.0.1" in info
    assert "Certificate Authority (CA): FALSE" in info
    ca = certtool("--certificate-info", "--infile", d / "ca.crt").stdout
    assert "Certificate Authority (CA): TRUE" in ca and "Path Length Constraint: 0" in ca
    assert "Certificate signing" in ca and "CRL signing" in ca


def handshake(d, client_cert, client_key, port):
    return subprocess.run(["gnutls-cli", "--x509cafile", d / "ca.crt", "--x509certfile", client_cert,
                           "--x509keyfile", client_key, "-p", str(port), "127.0.0.1"],
                          input="ping\n", capture_output=True, text=True, timeout=20)


def test_mutual_tls_handshake(issued, tmp_path):
    d = issued["dir"]
    source_crt, source_key, _ = issued["source"]
    target_crt, target_key, _ = issued["target"]
    port = free_port()
    log = open(tmp_path / "serv.log", "w")
    server = subprocess.Popen(["gnutls-serv", "--echo", "-p", str(port), "--x509certfile", source_crt,
                               "--x509keyfile", source_key, "--x509cafile", d / "ca.crt", "--require-client-cert",
                               "--verify-client-cert"], stdout=log, stderr=subprocess.STDOUT)
    try:
        # Wait for its own word rather than probing the port, which it would log as a failed handshake.
        deadline = time.monotonic() + 10
        while "listening" not in (tmp_path / "serv.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        r = handshake(d, target_crt, target_key, port)
        # The client checked the server's certificate against the CA and its IP SAN (127.0.0.1).
        assert "Handshake was completed" in r.stdout, r.stdout + r.stderr
        assert "The certificate is trusted" in r.stdout

        # A client certificate the CA never issued is turned away by the server.
        certtool("--generate-privkey", "--key-type=ecdsa", "--outfile", tmp_path / "rogue.key")
        (tmp_path / "rogue.cfg").write_text('cn = "clone-rogue-target"\nexpiration_days = 1\ntls_www_client\n')
        certtool("--generate-self-signed", "--load-privkey", tmp_path / "rogue.key", "--template",
                 tmp_path / "rogue.cfg", "--outfile", tmp_path / "rogue.crt")
        r = handshake(d, tmp_path / "rogue.crt", tmp_path / "rogue.key", port)
        # Under TLS 1.3 the client finishes its side first, then gets the server's alert.
        assert r.returncode != 0
        assert "Access was denied" in r.stdout + r.stderr
    finally:
        server.terminate()
        server.wait(10)
        log.close()
    serv = (tmp_path / "serv.log").read_text()
    assert f"clone-{issued['sid']}-target" in serv, serv
    assert "received cmd: ping" in serv
    assert "non-properly terminated" not in serv


def test_revocation_reaches_the_crl(issued, api, controller):
    _, _, serial = issued["target"]
    api.ok(f"{ROOT}/ca", "CertificateAuthority", "Revoke", "sa{sv}", serial, "0")
    crl = issued["dir"] / "crl.pem"
    crl.write_text(api.prop(f"{ROOT}/ca", "CertificateAuthority", "CRL"))
    info = certtool("--crl-info", "--infile", crl).stdout
    assert serial in info.replace(":", "").lower()
    certtool("--verify-crl", "--load-ca-certificate", issued["dir"] / "ca.crt", "--infile", crl)
    # The CRL outlives a restart: it is rebuilt from the store.
    controller.restart()
    assert serial in certtool("--crl-info", stdin=api.prop(f"{ROOT}/ca", "CertificateAuthority", "CRL")) \
        .stdout.replace(":", "").lower()
