"""The access map's TLS words."""

from __future__ import annotations

from barricade.policy.tls_policy import REQUIRE, SKIP, VERIFY, satisfied, word


def test_words():
    assert word("require") == REQUIRE and word(" VERIFY:CN=mx.example.com") == VERIFY
    assert word("skip") == SKIP and word("OK") == "" and word(None) == ""


def test_satisfied():
    assert satisfied(REQUIRE, True) and not satisfied(REQUIRE, False)
    assert not satisfied(VERIFY, True)  # client certificates are not verified: fails closed
    assert satisfied("", False) and satisfied(SKIP, False)
