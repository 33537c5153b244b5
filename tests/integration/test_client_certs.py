"""End to end: client certificates after STARTTLS and the access map's VERIFY, with real tools.

swaks and ``openssl s_client`` present certificates from a throw-away PKI
(tests/pki.py: a root CA and an intermediate, a server certificate sent
with its chain, client certificates good, expired, from another CA ...) to
a real Barricade relaying to smtp-sink; the server options
(``tls-server-key-pass``, ``tls-server-dh``, ``tls-cert-chain-file``,
``tls-cert-dir``) are exercised on the way.
"""

from __future__ import annotations

import smtplib
import ssl
import subprocess

import pytest

from tests.conftest import routes_to
from tests.pki import KEY_PASS, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_proxy(tmp_path, sink, make_proxy, pki):
    """Factory: a proxy with this access map, the server chain and key, and these options."""

    def make(access: str = "", *args: str, ca: str = "file"):
        path = tmp_path / "access-certs"
        path.write_text(access)
        cas = {"file": [f"tls-cert-chain-file={pki.root}"], "dir": [f"tls-cert-dir={pki.ca_dir}"],
               "none": []}[ca]
        return make_proxy(routes_to(sink), f"access-map={path}", f"tls-server-cert={pki.server_chain}",
                          f"tls-server-key={pki.server_key}", "smtp-drop-after=0", *cas, *args)

    return make


def swaks(proxy, pki, client: str | None, *, to: str = "b@example.com", sender: str = "a@example.org"):
    """swaks over STARTTLS with the ``client`` certificate (None: none); (exit code, transcript)."""
    cmd = ["swaks", "--server", "127.0.0.1", "--port", str(proxy.port), "--tls", "--from", sender,
           "--to", to, "--helo", "client.example.org", "--header", "Subject: cert", "--body", "x",
           "--timeout", "20"]
    if client:
        cert, key = pki.clients[client]
        cmd += ["--tls-cert", str(cert), "--tls-key", str(key)]
    run = subprocess.run(cmd, capture_output=True, timeout=60, text=True)
    return run.returncode, run.stdout + run.stderr


def s_client(proxy, pki, *args: str, client: str | None = None, stdin: str = "QUIT\n") -> str:
    """``openssl s_client -starttls smtp`` verifying our chain against the root; its output.

    ``-crlf`` turns the LFs of ``stdin`` into CRLF; ``-ign_eof`` waits for our close (after QUIT).
    """
    cmd = ["openssl", "s_client", "-starttls", "smtp", "-connect", f"127.0.0.1:{proxy.port}",
           "-CAfile", str(pki.root), "-verify_return_error", "-crlf", "-ign_eof", *args]
    if client:
        cert, key = pki.clients[client]
        cmd += ["-cert", str(cert), "-key", str(key)]
    run = subprocess.run(cmd, input=stdin, capture_output=True, timeout=30, text=True)
    return run.stdout + run.stderr


def smtplib_client(proxy, pki, client: str | None) -> smtplib.SMTP:
    ctx = ssl.create_default_context(cafile=str(pki.root))
    ctx.check_hostname = False
    if client:
        ctx.load_cert_chain(*map(str, pki.clients[client]))
    smtp = smtplib.SMTP("127.0.0.1", proxy.port, local_hostname="client.example.org", timeout=10)
    smtp.starttls(context=ctx)
    smtp.ehlo()
    return smtp


def test_verify_passes_with_a_good_certificate(tls_proxy, pki, sink):
    proxy = tls_proxy("tls-connect:127.0.0.1 VERIFY\n")
    code, out = swaks(proxy, pki, "good")
    assert code == 0, out
    assert "<~  250 2.0.0 message" in out
    assert len(sink.messages()) == 1
    log = proxy.log_text()
    assert "client certificate CN=client.example.org,O=Barricade tests" in log
    assert "issuer CN=Barricade Test Root CA" in log and "verified" in log
    assert proxy.metric("barricade_client_certificates_total", outcome="pass") == 1


@pytest.mark.parametrize("client, why, reason", [
    ("other-ca", "unable to get local issuer certificate", "untrusted"),
    ("expired", "certificate has expired", "expired"),
    ("self-signed", "self-signed certificate", "untrusted"),
    ("server-only", "unsupported certificate purpose", "purpose"),
])
def test_verify_refuses_a_certificate_that_does_not_verify(tls_proxy, pki, sink, client, why, reason):
    proxy = tls_proxy("tls-connect:127.0.0.1 VERIFY\n")
    code, out = swaks(proxy, pki, client)
    assert code != 0
    assert f"550 5.7.1 client certificate not verified: {why} #989" in out
    assert not sink.messages()
    log = proxy.log_text()
    assert f"not verified: {why}" in log and "Tls-Connect: VERIFY refused" in log
    assert proxy.metric("barricade_client_certificates_total", outcome="fail", reason=reason) == 1


def test_tls_without_a_certificate_still_works_where_none_is_required(tls_proxy, pki, sink):
    proxy = tls_proxy("tls-to:secret.example.com VERIFY\n")
    code, out = swaks(proxy, pki, None)
    assert code == 0, out  # asked for a certificate, sent none: TLS all the same
    code, out = swaks(proxy, pki, "other-ca")
    assert code == 0, out  # a bad certificate does not break the handshake either
    assert len(sink.messages()) == 2
    code, out = swaks(proxy, pki, None, to="x@secret.example.com")
    assert code != 0 and "550 5.7.1 a client certificate is required #988" in out
    assert proxy.metric("barricade_client_certificates_total", outcome="none") == 2
    assert "no client certificate" in proxy.log_text()


def test_verify_cn_matches_cn_or_san_ignoring_case(tls_proxy, pki, sink):
    proxy = tls_proxy("tls-connect:127.0.0.1 VERIFY:CN=Client.Example.ORG\n")
    assert swaks(proxy, pki, "good")[0] == 0
    code, out = swaks(proxy, pki, "san-only")
    assert code != 0 and "550 5.7.1 client certificate does not name Client.Example.ORG #990" in out
    assert "names other name, gw.example.net, not Client.Example.ORG" in proxy.log_text()


def test_verify_cn_against_a_san_and_a_wildcard(tls_proxy, pki):
    proxy = tls_proxy("tls-connect:127.0.0.1 VERIFY:CN=gw.example.net\n")
    assert swaks(proxy, pki, "san-only")[0] == 0
    proxy = tls_proxy("tls-connect:127.0.0.1 VERIFY:CN=mx1.relay.example.org\n")
    assert swaks(proxy, pki, "good")[0] == 0  # the certificate's *.relay.example.org
    proxy = tls_proxy("tls-connect:127.0.0.1 VERIFY:CN=relay.example.org\n")
    assert "#990" in swaks(proxy, pki, "good")[1]


def test_tls_from_and_tls_to_verify(tls_proxy, pki):
    proxy = tls_proxy("tls-from:boss@example.org VERIFY\ntls-to:secret.example.com VERIFY\n")
    with smtplib_client(proxy, pki, None) as smtp:
        code, text = smtp.mail("boss@example.org")
        assert code == 550 and b"#988" in text
        assert smtp.mail("a@example.org")[0] == 250
        code, text = smtp.rcpt("x@secret.example.com")
        assert code == 550 and b"#988" in text
        assert smtp.rcpt("b@example.com")[0] == 250
    with smtplib_client(proxy, pki, "expired") as smtp:
        code, text = smtp.mail("boss@example.org")
        assert code == 550 and b"certificate has expired #989" in text
    with smtplib_client(proxy, pki, "good") as smtp:
        assert smtp.mail("boss@example.org")[0] == 250
        assert smtp.rcpt("x@secret.example.com")[0] == 250


def test_verify_without_tls_is_963(tls_proxy, pki):
    proxy = tls_proxy("tls-connect:127.0.0.1 VERIFY\n")
    with smtplib.SMTP("127.0.0.1", proxy.port, local_hostname="client.example.org", timeout=10) as smtp:
        smtp.ehlo()
        code, text = smtp.mail("a@example.org")
        assert code == 530 and b"#963" in text


def test_no_ca_configured_asks_no_certificate_and_verify_refuses(tls_proxy, pki):
    proxy = tls_proxy("tls-connect:127.0.0.1 VERIFY\n", ca="none")
    out = s_client(proxy, pki, client="good")
    assert "221 " in out  # TLS works; no certificate was asked for
    code, out = swaks(proxy, pki, "good")
    assert code != 0 and "#988" in out
    assert proxy.metric("barricade_client_certificates_total", outcome="pass") is None


def test_hashed_ca_dir(tls_proxy, pki, sink):
    proxy = tls_proxy("tls-connect:127.0.0.1 VERIFY\n", ca="dir")
    assert swaks(proxy, pki, "good")[0] == 0
    assert "#989" in swaks(proxy, pki, "other-ca")[1]
    assert len(sink.messages()) == 1


def test_s_client_certificate_and_the_server_chain(tls_proxy, pki):
    """s_client checks our chain (server certificate + intermediate) against the root alone."""
    proxy = tls_proxy("tls-connect:127.0.0.1 VERIFY:CN=client.example.org\n")
    out = s_client(proxy, pki, client="good",
                   stdin="EHLO client.example.org\nQUIT\n")
    assert "Verify return code: 0 (ok)" in out
    assert " 1 s:O = Barricade tests, CN = Barricade Test Intermediate CA" in out  # the chain came with the certificate
    assert "Acceptable client certificate CA names" in out and "Barricade Test Root CA" in out
    log = proxy.log_text()
    assert "TLS from client: TLSv1.3" in log and "client certificate CN=client.example.org" in log


def test_encrypted_server_key_with_its_password(tls_proxy, pki):
    proxy = tls_proxy("", f"tls-server-key={pki.server_key_encrypted}", f"tls-server-key-pass={KEY_PASS}")
    assert "Verify return code: 0 (ok)" in s_client(proxy, pki)


def test_dh_parameters_for_dhe(tls_proxy, pki):
    proxy = tls_proxy("", f"tls-server-dh={pki.dh}")
    out = s_client(proxy, pki, "-tls1_2", "-cipher", "DHE-RSA-AES256-GCM-SHA384")
    assert "Server Temp Key: DH, 2048 bits" in out
    assert "DHE-RSA-AES256-GCM-SHA384" in out and "Verify return code: 0 (ok)" in out
    without = tls_proxy("")
    out = s_client(without, pki, "-tls1_2", "-cipher", "DHE-RSA-AES256-GCM-SHA384")
    assert "Server Temp Key: DH" not in out  # no DH parameters: no DHE cipher


@pytest.mark.parametrize("args, message", [
    ({"tls-server-key": "{enc}"}, "is encrypted; set tls-server-key-pass"),
    ({"tls-server-key": "{enc}", "tls-server-key-pass": "wrong"}, "wrong tls-server-key-pass"),
    ({"tls-server-key": "{root}"}, "not a PEM private key"),
    ({"tls-server-cert": "{dir}/client-good.pem"}, "tls-server-cert/tls-server-key"),
    ({"tls-server-dh": "{root}"}, "tls-server-dh: .* not PEM DH parameters"),
    ({"tls-cert-chain-file": "{dir}/missing.pem"}, "tls-cert-chain-file: cannot read"),
    ({"tls-cert-dir": "{root}"}, "tls-cert-dir: .* is not a directory"),
])
def test_bad_tls_options_stop_start_up(pki, args, message):
    from barricade.options import REGISTRY, Config
    from barricade.service import StartupError, tls_context

    values = {k: v.format(enc=pki.server_key_encrypted, root=pki.root, dir=pki.dir) for k, v in args.items()}
    config = Config(REGISTRY, REGISTRY.defaults()).replace(
        **{"tls-server-cert": str(pki.server_chain), "tls-server-key": str(pki.server_key), **values})
    with pytest.raises(StartupError, match=message):
        tls_context(config)
