"""The access map's TLS words, and the judgement of client certificates (sans-IO)."""

from __future__ import annotations

import pytest

from barricade.policy.tls_policy import REQUIRE, SKIP, VERIFY, satisfied, word
from barricade.protocol.client_cert import (
    ClientCert,
    Requirement,
    judge,
    name_matches,
    names_match,
    parse,
    printable,
    verify_error,
)
from barricade.replies import ReplyId

GOOD = ClientCert(subject="CN=client.example.org,O=Example", issuer="CN=Example CA",
                  cn="client.example.org", dns_names=("client.example.org", "*.relay.example.org"),
                  verified=True)
EXPIRED = ClientCert(subject="CN=client.example.org", issuer="CN=Example CA", cn="client.example.org",
                     error="certificate has expired", reason="expired")


def test_words():
    assert word("require") == REQUIRE and word(" VERIFY:CN=mx.example.com") == VERIFY
    assert word("skip") == SKIP and word("OK") == "" and word(None) == ""


def test_parse():
    assert parse("verify:CN=mx.example.com") == Requirement(VERIFY, "mx.example.com")
    assert parse(" VERIFY : cn= MX.Example.com ") == Requirement(VERIFY, "MX.Example.com")
    assert parse('VERIFY:CN="mx.example.com"') == Requirement(VERIFY, "mx.example.com")
    assert parse("VERIFY") == Requirement(VERIFY) and parse("require") == Requirement(REQUIRE)
    assert parse("REQUIRE:CN=x") == Requirement(REQUIRE)  # a name only means something to VERIFY
    assert parse("VERIFY:O=x") == Requirement(VERIFY)
    assert parse("dunno") == Requirement("DUNNO") and not parse("dunno").demands_tls
    assert parse("REJECT") == Requirement() and parse(None) == Requirement()


def test_satisfied():
    assert satisfied(REQUIRE, True) and not satisfied(REQUIRE, False)
    assert not satisfied(VERIFY, True)  # TLS, but no certificate
    assert satisfied(VERIFY, True, GOOD) and not satisfied(VERIFY, True, EXPIRED)
    assert not satisfied(VERIFY, False, GOOD)
    assert satisfied("", False) and satisfied(SKIP, False)


def test_judge_replies():
    assert judge(Requirement(VERIFY), False, GOOD).reply == ReplyId.TLS_REQUIRED
    assert judge(Requirement(VERIFY), True, None).reply == ReplyId.CLIENT_CERT_REQUIRED
    refusal = judge(Requirement(VERIFY), True, EXPIRED)
    assert refusal.reply == ReplyId.CLIENT_CERT_NOT_VERIFIED
    assert refusal.fields == {"why": "certificate has expired"} and "not verified" in refusal.why
    refusal = judge(Requirement(VERIFY, "other.example.org"), True, GOOD)
    assert refusal.reply == ReplyId.CLIENT_CERT_WRONG_NAME and refusal.fields == {"name": "other.example.org"}
    assert "client.example.org, client.example.org, *.relay.example.org" in refusal.why
    assert judge(Requirement(VERIFY, "Client.Example.Org."), True, GOOD) is None
    assert judge(Requirement(REQUIRE), True, None) is None and judge(Requirement(), False, None) is None
    # a name does not rescue a certificate that did not verify
    assert judge(Requirement(VERIFY, "client.example.org"), True, EXPIRED).reply == \
        ReplyId.CLIENT_CERT_NOT_VERIFIED


@pytest.mark.parametrize("wanted, cert_name, ok", [
    ("mx.example.com", "mx.example.com", True),
    ("MX.Example.COM", "mx.example.com.", True),
    ("mx.example.com", "*.example.com", True),
    ("a.mx.example.com", "*.example.com", False),  # one label only
    ("example.com", "*.example.com", False),
    ("com", "*.com", False),
    ("x.com", "*.com", False),  # a wildcard needs two labels after it
    ("*.example.com", "*.example.com", True),  # the map's name is literal
    ("mx1.example.com", "mx*.example.com", False),  # partial-label wildcards are not honoured
    ("mx*.example.com", "mx*.example.com", True),
    ("", "mx.example.com", False),
    ("mx.example.com", "", False),
])
def test_name_matches(wanted, cert_name, ok):
    assert name_matches(wanted, cert_name) is ok


def test_names_match_cn_or_san():
    assert names_match("client.example.org", GOOD) and names_match("gw.relay.example.org", GOOD)
    san_only = ClientCert(subject="CN=other", issuer="CN=CA", cn="other", dns_names=("gw.example.net",),
                          verified=True)
    assert names_match("gw.example.net", san_only) and names_match("other", san_only)
    assert not names_match("relay.example.org", GOOD)
    assert ClientCert(subject="O=x", issuer="CN=CA").names == ()


def test_verify_error_texts():
    assert verify_error(10) == ("certificate has expired", "expired")
    assert verify_error(20)[1] == "untrusted" and verify_error(26)[1] == "purpose"
    assert verify_error(999, "odd") == ("odd", "other")
    assert verify_error(999) == ("certificate verify error 999", "other")


def test_printable_names():
    assert printable("client.example.org") == "client.example.org"
    assert printable("evil\nsession X: forged") == "evil\\x0asession X: forged"
    assert printable("a" * 300, limit=10) == "a" * 10 + "..."
