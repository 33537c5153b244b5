"""End to end: the access map's Tls-Connect:, Tls-From: and Tls-To: with smtplib clients."""

from __future__ import annotations

import smtplib
import ssl

import pytest

from tests.conftest import routes_to
from tests.integration.test_protocol import make_cert


@pytest.fixture
def tls_access(tmp_path, sink, make_proxy):
    cert, key = make_cert(tmp_path)

    def make(text: str):
        path = tmp_path / "access-tls"
        path.write_text(text)
        return make_proxy(routes_to(sink), f"access-map={path}", f"tls-server-cert={cert}",
                          f"tls-server-key={key}", "smtp-drop-after=0")

    return make


def client(proxy, tls: bool) -> smtplib.SMTP:
    smtp = smtplib.SMTP("127.0.0.1", proxy.port, local_hostname="client.example.org", timeout=10)
    smtp.ehlo()
    if tls:
        smtp.starttls(context=ssl._create_unverified_context())
        smtp.ehlo()
    return smtp


def test_tls_connect_require(tls_access, sink):
    proxy = tls_access("tls-connect:127.0.0.1 REQUIRE\n")
    with client(proxy, tls=False) as smtp:
        code, text = smtp.mail("a@example.org")
        assert code == 530 and text.startswith(b"5.7.0 Must issue a STARTTLS command first #963")
    with client(proxy, tls=True) as smtp:
        assert smtp.mail("a@example.org")[0] == 250
        assert smtp.rcpt("b@example.com")[0] == 250
        assert smtp.data(b"Subject: over tls\r\n\r\nx\r\n")[0] == 250
    assert len(sink.messages()) == 1


def test_tls_connect_skip_withholds_starttls(tls_access):
    proxy = tls_access("tls-connect:127.0.0.1 SKIP\n")
    with client(proxy, tls=False) as smtp:
        assert not smtp.has_extn("starttls")
        code, text = smtp.docmd("STARTTLS")
        assert code == 454 and b"#914" in text
        assert smtp.mail("a@example.org")[0] == 250


def test_tls_from_and_tls_to_require(tls_access):
    proxy = tls_access("tls-from:boss@example.org REQUIRE\ntls-to:secret.example.com REQUIRE\n")
    with client(proxy, tls=False) as smtp:
        code, text = smtp.mail("boss@example.org")
        assert code == 530 and b"#963" in text
        assert smtp.mail("a@example.org")[0] == 250
        code, text = smtp.rcpt("x@secret.example.com")
        assert code == 530 and b"#963" in text
        assert smtp.rcpt("b@example.com")[0] == 250
    with client(proxy, tls=True) as smtp:
        assert smtp.mail("boss@example.org")[0] == 250


def test_verify_without_a_ca_refuses(tls_access):
    """No tls-cert-chain-file / tls-cert-dir: no certificate is asked for, so VERIFY cannot be met."""
    proxy = tls_access("tls-connect:127.0.0.1 VERIFY:CN=client.example.org\n")
    with client(proxy, tls=True) as smtp:
        code, text = smtp.mail("a@example.org")
        assert code == 550 and b"a client certificate is required #988" in text
    assert "Tls-Connect: VERIFY refused: no client certificate" in proxy.log_text()
