"""End to end: STARTTLS to the downstream (forward-tls, route-map TLS:), with an aiosmtpd downstream."""

from __future__ import annotations

import re
import ssl
import subprocess

import pytest

from tests.recorder import Recorder
from tests.smtpclient import Client


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 (and mx.example.com), its own CA."""
    d = tmp_path_factory.mktemp("tls")
    key, crt = d / "key.pem", d / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(crt), "-days", "2", "-subj", "/CN=mx.example.com",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:mx.example.com",
                    "-addext", "basicConstraints=critical,CA:TRUE"],
                   check=True, capture_output=True, timeout=60)
    return crt, key


@pytest.fixture
def tls_down(cert):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*cert)
    r = Recorder(tls_context=ctx)
    yield r
    r.stop()


def routes(r: Recorder, tls: str = "") -> str:
    extra = f"; TLS: {tls}" if tls else ""
    return (f"route:local FORWARD: 127.0.0.1:{r.port}{extra}\n"
            f"route:example.com FORWARD: 127.0.0.1:{r.port}{extra}\n")


def send(proxy) -> int:
    with Client(proxy.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@example.org>").code == 250
        r = c.cmd("RCPT TO:<b@example.com>")
        if r.code != 250:
            return r.code
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: tls\r\n\r\nx\r\n.\r\n")
        return c.read().code


def test_starttls_when_offered_by_default(tls_down, make_proxy):
    proxy = make_proxy(routes(tls_down))
    assert send(proxy) == 250
    assert tls_down.tls == [True]
    log = proxy.log_text()
    assert "TLS to 127.0.0.1:" in log and "TLSv1." in log
    assert any((proxy.metric("barricade_downstream_tls_total", protocol=p) or 0) == 1
               for p in ("TLSv1.2", "TLSv1.3"))
    # the log line and the metric name the same protocol and cipher
    protocol, cipher = re.search(r"TLS to 127\.0\.0\.1:\d+: (TLSv1\.\d) (\S+)", log).groups()
    assert proxy.metric("barricade_downstream_tls_total", protocol=protocol, cipher=cipher) == 1


def test_tls_none_and_a_plain_downstream(tls_down, sink, make_proxy):
    proxy = make_proxy(routes(tls_down, "none"))
    assert send(proxy) == 250 and tls_down.tls == [False]
    plain = make_proxy(f"route:local FORWARD: 127.0.0.1:{sink.port}\n"
                       f"route:example.com FORWARD: 127.0.0.1:{sink.port}\n")  # may: no STARTTLS offered
    assert send(plain) == 250 and len(sink.messages()) == 1


def test_require_refuses_a_downstream_without_starttls(sink, make_proxy):
    proxy = make_proxy(f"route:local FORWARD: 127.0.0.1:{sink.port}; TLS: require\n"
                       f"route:example.com FORWARD: 127.0.0.1:{sink.port}; TLS: require\n")
    with Client(proxy.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@example.org>").code == 250
        r = c.cmd("RCPT TO:<b@example.com>")
        assert (r.code, r.id) == (421, 901)
    assert "STARTTLS not offered (TLS: require)" in proxy.log_text()
    assert sink.messages() == []


def test_verify_against_the_ca_file(tls_down, cert, make_proxy):
    proxy = make_proxy(routes(tls_down, "verify"), f"forward-tls-ca-file={cert[0]}")
    assert send(proxy) == 250 and tls_down.tls == [True]
    assert "(verified)" in proxy.log_text()
    named = make_proxy(routes(tls_down, "verify:mx.example.com"), f"forward-tls-ca-file={cert[0]}")
    assert send(named) == 250


def test_verify_fails_for_the_wrong_name_or_an_unknown_ca(tls_down, cert, make_proxy):
    wrong = make_proxy(routes(tls_down, "verify:other.example.com"), f"forward-tls-ca-file={cert[0]}")
    assert send(wrong) == 421
    unknown = make_proxy(routes(tls_down), "forward-tls=verify")  # the system's roots do not know it
    assert send(unknown) == 421
    assert tls_down.messages == []
    assert "Traceback" not in wrong.log_text() + unknown.log_text()


def test_a_bad_tls_word_in_the_route_map_stops_start_up(sink, tmp_path):
    from tests.daemons import Proxy

    with pytest.raises(RuntimeError, match="TLS policy 'sometimes'"):
        Proxy(tmp_path, f"route:local FORWARD: 127.0.0.1:{sink.port}; TLS: sometimes\n")


def test_may_falls_back_to_plaintext_when_the_handshake_fails(cert, make_proxy):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*cert)
    ctx.verify_mode = ssl.CERT_REQUIRED  # wants a client certificate we do not have
    ctx.load_verify_locations(cert[0])
    down = Recorder(tls_context=ctx)
    try:
        proxy = make_proxy(routes(down))
        assert send(proxy) == 250
        assert down.tls == [False]
        assert "plaintext instead (TLS: may)" in proxy.log_text()
    finally:
        down.stop()
