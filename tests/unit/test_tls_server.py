"""The STARTTLS creator (barricade/net/tls_server.py), handshaking in memory with an OpenSSL client."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from OpenSSL import SSL

from barricade.net.tls_server import ServerTls, _Verification, server_tls, tls_handshake_done
from barricade.options import REGISTRY, Config
from tests.pki import KEY_PASS, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def creator(pki, **options: str) -> ServerTls:
    values = {"tls-server-cert": str(pki.server_chain), "tls-server-key": str(pki.server_key),
              "tls-cert-chain-file": str(pki.root), **options}
    return server_tls(Config(REGISTRY, REGISTRY.defaults()).replace(**values))


def handshake(tls: ServerTls, pki, client: str | None = None, max_version: int | None = None):
    """A full handshake between ``tls`` and an OpenSSL client in memory; the server's connection."""
    ctx = SSL.Context(SSL.TLS_METHOD)
    if max_version:
        ctx.set_max_proto_version(max_version)
    if client:
        cert, key = pki.clients[client]
        ctx.use_certificate_file(str(cert))
        ctx.use_privatekey_file(str(key))
    c = SSL.Connection(ctx, None)
    c.set_connect_state()
    s = tls.serverConnectionForTLS(None)
    s.set_accept_state()
    done = set()
    for _ in range(50):
        for name, conn in (("client", c), ("server", s)):
            try:
                conn.do_handshake()
                done.add(name)
            except SSL.WantReadError:
                pass
        for a, b in ((c, s), (s, c)):
            try:
                b.bio_write(a.bio_read(65536))
            except SSL.WantReadError:
                pass
        if done == {"client", "server"}:
            return s
    raise AssertionError("handshake did not finish")


def test_a_good_certificate_verifies(pki):
    tls = creator(pki)
    cert = tls.client_cert(handshake(tls, pki, "good"))
    assert cert.verified and not cert.error
    assert cert.cn == "client.example.org" and cert.dns_names == ("client.example.org", "*.relay.example.org")
    assert cert.subject == "CN=client.example.org,O=Barricade tests"
    assert cert.issuer == "CN=Barricade Test Root CA,O=Barricade tests"


@pytest.mark.parametrize("client, error, reason", [
    ("expired", "certificate has expired", "expired"),
    ("other-ca", "unable to get local issuer certificate", "untrusted"),
    ("self-signed", "self-signed certificate", "untrusted"),
])
def test_a_bad_certificate_is_recorded_not_fatal(pki, client, error, reason):
    tls = creator(pki)
    cert = tls.client_cert(handshake(tls, pki, client))  # the handshake finished all the same
    assert not cert.verified and cert.error == error and cert.reason == reason


def test_tls12_too(pki):
    tls = creator(pki)
    conn = handshake(tls, pki, "good", max_version=SSL.TLS1_2_VERSION)
    assert conn.get_protocol_version_name() == "TLSv1.2" and tls.client_cert(conn).verified


def test_no_certificate_and_no_ca(pki):
    tls = creator(pki)
    assert tls.asks and tls.client_cert(handshake(tls, pki)) is None
    plain = creator(pki, **{"tls-cert-chain-file": ""})
    assert not plain.asks
    assert plain.client_cert(handshake(plain, pki, "good")) is None  # not asked for, not sent


def test_the_hashed_directory_and_an_encrypted_key(pki):
    tls = creator(pki, **{"tls-cert-chain-file": "", "tls-cert-dir": str(pki.ca_dir),
                          "tls-server-key": str(pki.server_key_encrypted), "tls-server-key-pass": KEY_PASS})
    assert tls.client_cert(handshake(tls, pki, "good")).verified
    assert not tls.client_cert(handshake(tls, pki, "other-ca")).verified


def test_a_leaf_never_checked_is_not_verified(pki):
    """A certificate the callback did not see (a resumed session would be one) is not verified."""
    tls = creator(pki)
    cert = creator(pki).client_cert(handshake(tls, pki, "good"))  # another creator: no record
    assert not cert.verified and cert.error == "certificate not checked" and cert.reason == "unchecked"
    v = _Verification()
    v.callback(None, None, 0, 1, 1)
    assert not v.leaf_seen and not v.errors
    v.callback(None, None, 10, 0, 0)
    assert v.leaf_seen and v.errors == [(0, 10)]


class Counter:
    def __init__(self):
        self.counts: dict[tuple[str, ...], int] = {}

    def labels(self, *labels: str):
        counter = self

        class One:
            def inc(self):
                counter.counts[labels] = counter.counts.get(labels, 0) + 1

        return One()


def test_handshake_done_counts_the_outcome(pki):
    tls = creator(pki)
    metrics = SimpleNamespace(client_certificates=Counter())
    server = SimpleNamespace(tls_context=tls, metrics=metrics)
    for client in ("good", "expired", None):
        tls_handshake_done(server, handshake(tls, pki, client), "SID")
    assert metrics.client_certificates.counts == {("pass", ""): 1, ("fail", "expired"): 1, ("none", ""): 1}
    broken = SimpleNamespace(tls_context=tls, metrics=None)  # an error is logged, never raised
    assert tls_handshake_done(broken, handshake(tls, pki, "good"), "SID") is None
