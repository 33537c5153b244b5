"""The session and SMTPUTF8 (RFC 6531): UTF-8 addresses only in a transaction that asked."""

from __future__ import annotations

from barricade.protocol import events as ev
from barricade.protocol.session import SessionConfig
from tests.unit.test_session import converse, ehlo, make, reply_ids

UTF8 = SessionConfig(hostname="mx.test", smtputf8=True, drop_after=0)
PLAIN = SessionConfig(hostname="mx.test", drop_after=0)
JOSE = "jos\u00e9@b\u00fccher.example".encode()


def test_offered_only_when_configured():
    _, out = converse(make(UTF8), b"EHLO client.example\r\n")
    assert b"250-SMTPUTF8\r\n" in out
    _, out = converse(make(PLAIN), b"EHLO client.example\r\n")
    assert b"SMTPUTF8" not in out


def test_utf8_addresses_with_smtputf8():
    s = make(UTF8)
    ehlo(s)
    events, out = converse(s, b"MAIL FROM:<" + JOSE + b"> SMTPUTF8\r\nRCPT TO:<" + JOSE + b">\r\n")
    mail, rcpt = events
    assert isinstance(mail, ev.Mail) and mail.path.address == "jos\u00e9@b\u00fccher.example"
    assert mail.path.params == {"SMTPUTF8": None}
    assert isinstance(rcpt, ev.Rcpt) and rcpt.path.domain == "b\u00fccher.example"


def test_utf8_address_without_smtputf8_gets_553_5_6_7():
    s = make(UTF8)
    ehlo(s)
    _, out = converse(s, b"MAIL FROM:<" + JOSE + b">\r\n")
    assert out.startswith("553 5.6.7 non-ASCII address <jos\u00e9@b\u00fccher.example> not permitted "
                          "without SMTPUTF8 #961".encode())
    converse(s, b"MAIL FROM:<a@b.example>\r\n")
    _, out = converse(s, b"RCPT TO:<" + JOSE + b">\r\n")
    assert reply_ids(out) == [961]
    s = make(PLAIN)
    ehlo(s)
    _, out = converse(s, b"MAIL FROM:<a@b.example> SMTPUTF8\r\n")
    assert reply_ids(out) == [919]
    _, out = converse(s, b"MAIL FROM:<" + JOSE + b">\r\n")
    assert reply_ids(out) == [961]


def test_bytes_that_are_not_utf8_or_not_an_address_stay_641():
    s = make(UTF8)
    ehlo(s)
    for line in (b"MAIL FROM:<jos\xe9@b.example> SMTPUTF8\r\n", b"MAIL FROM:<a\x01@b.example>\r\n",
                 b"NOOP caf\xc3\xa9\r\n", b"RCPT TO:<\xc3\xa9\x7f@b.example>\r\n"):
        _, out = converse(s, line)
        assert reply_ids(out) == [641], line
    _, out = converse(s, b"MAIL FROM:<a@b.example> SMTPUTF8=YES\r\n")
    assert reply_ids(out) == [920]
