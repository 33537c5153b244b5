"""docs/postfix.md against a real Postfix on loopback: its Barricade options
(8BITMIME, message size, relay-reply) and Postfix's recipient validation answering
the outside client live."""

from __future__ import annotations

import re

import pytest

from barricade.testing import PACKAGE_ROOT, Client, wait_for
from tests.postfix import Postfix

pytestmark = pytest.mark.integration

GUIDE = PACKAGE_ROOT / "docs/postfix.md"
SITE = ("interfaces", "interface-name", "route-map")  # the test's own listener and map


def guide_options() -> list[str]:
    """The option lines of the guide's barricade.cf block (the ones Postfix needs)."""
    for block in re.findall(r"^```\n(.*?)^```", GUIDE.read_text(), re.S | re.M):
        if "+rfc1652-8bitmime" in block:
            lines = [ln.strip() for ln in block.splitlines() if ln.strip() and not ln.startswith("#")]
            return [ln for ln in lines if ln.lstrip("+-").split("=")[0] not in SITE]
    raise AssertionError("no barricade.cf block in docs/postfix.md")


def size_limit() -> int:
    return int(next(o for o in guide_options() if o.startswith("message-size-limit=")).split("=")[1])


@pytest.fixture(scope="module")
def postfix():
    pf = Postfix(size_limit=size_limit(), rejected={"gone@example.com": "550 5.1.1 no such user here"})
    yield pf
    pf.stop()


@pytest.fixture
def proxy(make_proxy, postfix):
    routes = (f"route:local FORWARD: 127.0.0.1:{postfix.port}\n"
              f"route:example.com FORWARD: 127.0.0.1:{postfix.port}\n")
    return make_proxy(routes, *guide_options())


def test_guide_options_are_the_ones_that_must_match():
    assert {"+rfc1652-8bitmime", "+relay-reply"} <= set(guide_options())
    assert size_limit() == 52428800


def test_8bit_mail_reaches_postfix_unchanged(proxy, postfix):
    body = "Subject: 8bit\r\nContent-Type: text/plain; charset=utf-8\r\n" \
           "Content-Transfer-Encoding: 8bit\r\n\r\nGrüße aus Köln\r\n".encode()
    with Client(proxy.port) as c:
        ehlo = c.ehlo("client.example.org")
        assert "8BITMIME" in ehlo.lines
        assert c.cmd("MAIL FROM:<a@outside.org> BODY=8BITMIME").code == 250
        assert c.cmd("RCPT TO:<box@example.com>").id == 297
        assert c.cmd("DATA").code == 354
        c.send(body + b".\r\n")
        r = c.read()
        assert (r.code, r.id) == (250, 554), r
    wait_for(lambda: postfix.messages(), 20, "the maildir file")
    stored = postfix.messages()[-1]
    assert "Grüße aus Köln".encode() in stored  # not re-encoded to quoted-printable
    assert b"Received: from client.example.org" in stored  # Barricade's header, above Postfix's


def test_postfix_refusal_text_reaches_the_client(proxy):
    with Client(proxy.port) as c:
        c.ehlo("client.example.org")
        assert c.cmd("MAIL FROM:<a@outside.org>").code == 250
        r = c.cmd("RCPT TO:<gone@example.com>")
        assert (r.code, r.status, r.id) == (550, "5.1.1", 299), r  # +relay-reply
        assert "no such user here" in r.text
        assert c.cmd("RCPT TO:<box@example.com>").code == 250  # the transaction goes on


def test_oversize_is_refused_by_barricade_at_mail(proxy):
    with Client(proxy.port) as c:
        ehlo = c.ehlo("client.example.org")
        assert f"SIZE {size_limit()}" in ehlo.lines  # the same figure Postfix enforces
        r = c.cmd(f"MAIL FROM:<a@outside.org> SIZE={size_limit() + 1}")
        assert (r.code, r.status, r.id) == (552, "5.3.4", 912), r
