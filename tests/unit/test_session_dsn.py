"""The session and RFC 3461 DSN parameters: accepted only when DSN is offered."""

from __future__ import annotations

from barricade.protocol import events as ev
from barricade.protocol.session import SessionConfig
from tests.unit.test_session import converse, ehlo, make, reply_ids

DSN = SessionConfig(hostname="mx.test", dsn=True, drop_after=0)


def test_dsn_advertised_only_when_offered():
    s = make(DSN)
    _, out = converse(s, b"EHLO client.example\r\n")
    assert b"250-DSN\r\n" in out
    s = make()
    _, out = converse(s, b"EHLO client.example\r\n")
    assert b"DSN" not in out


def test_dsn_parameters_reach_the_events():
    s = make(DSN)
    ehlo(s)
    events, _ = converse(s, b"MAIL FROM:<a@b.example> RET=FULL ENVID=X1\r\n"
                            b"RCPT TO:<c@d.example> NOTIFY=FAILURE ORCPT=rfc822;c@d.example\r\n")
    mail, rcpt = events
    assert isinstance(mail, ev.Mail) and mail.path.params == {"RET": "FULL", "ENVID": "X1"}
    assert isinstance(rcpt, ev.Rcpt) and rcpt.path.params == {"NOTIFY": "FAILURE",
                                                               "ORCPT": "rfc822;c@d.example"}


def test_dsn_parameters_refused_without_dsn_or_when_malformed():
    s = make(SessionConfig(hostname="mx.test", drop_after=0))
    ehlo(s)
    _, out = converse(s, b"MAIL FROM:<a@b.example> RET=FULL\r\n")
    assert out.startswith(b"555 5.5.4 unsupported parameter RET #919")
    converse(s, b"MAIL FROM:<a@b.example>\r\n")
    _, out = converse(s, b"RCPT TO:<c@d.example> NOTIFY=NEVER\r\n")
    assert reply_ids(out) == [919]
    s = make(DSN)
    ehlo(s)
    _, out = converse(s, b"MAIL FROM:<a@b.example> RET=SOME\r\n")
    assert out.startswith(b"501 5.5.4 invalid parameter RET=SOME #920")
    converse(s, b"MAIL FROM:<a@b.example>\r\n")
    _, out = converse(s, b"RCPT TO:<c@d.example> NOTIFY=NEVER,DELAY\r\n")
    assert out.startswith(b"501 5.5.4 invalid parameter NOTIFY=NEVER,DELAY #920")
    _, out = converse(s, b"RCPT TO:<c@d.example> XYZ=1\r\n")
    assert reply_ids(out) == [919]
