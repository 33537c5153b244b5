"""The session and ETRN: offered only with the local route's ETRN, after EHLO, outside MAIL."""

from __future__ import annotations

from barricade.protocol import events as ev
from barricade.protocol.grammar import valid_etrn
from barricade.protocol.session import SessionConfig
from tests.unit.test_session import converse, ehlo, make, reply_ids

ETRN = SessionConfig(hostname="mx.test", etrn=True, drop_after=0)


def test_valid_etrn():
    for ok in ("example.com", "@example.com", "#deferred", "[192.0.2.1]", "#a.b"):
        assert valid_etrn(ok), ok
    for bad in ("", "@", "#", "exa mple.com", "a..b", "@-x.example", "#a b"):
        assert not valid_etrn(bad), bad


def test_etrn_event_and_keyword():
    s = make(ETRN)
    _, out = converse(s, b"EHLO client.example\r\n")
    assert b"250-ETRN\r\n" in out
    events, _ = converse(s, b"ETRN @example.com\r\n")
    assert events == [ev.Etrn("@example.com")]


def test_etrn_refusals():
    s = make(SessionConfig(hostname="mx.test", drop_after=0))
    ehlo(s)
    _, out = converse(s, b"ETRN example.com\r\n")
    assert out.startswith(b"502 5.5.1 ETRN not implemented #250")
    s = make(ETRN)
    _, out = converse(s, b"ETRN example.com\r\n")  # before EHLO
    assert reply_ids(out) == [251]
    ehlo(s)
    _, out = converse(s, b"ETRN\r\nETRN a b\r\n")
    assert reply_ids(out) == [249, 920]
    converse(s, b"MAIL FROM:<a@b.example>\r\n")
    _, out = converse(s, b"ETRN example.com\r\n")
    assert reply_ids(out) == [251]
