"""smtpf's sink state (``-rate-drop``/``-concurrent-drop``): after a connect-time
421 the session stays open, answers NOOP and QUIT, and closes on anything else."""

from __future__ import annotations

import pytest

from barricade.protocol import events as ev
from barricade.protocol.session import SINK, Session, SessionConfig
from barricade.replies import Catalogue

CAT = Catalogue()


def refused(sink: bool = True) -> tuple[Session, bytes]:
    client = ev.ClientInfo("192.0.2.7", 4000, "client.example")
    s = Session(SessionConfig(hostname="mx.test"), client, CAT, "SID")
    out = s.greet(CAT.reply(522, client_name="client.example", client_ip="192.0.2.7", count=4,
                            limit=3), sink=sink)
    return s, out


def test_without_sink_a_refused_greeting_closes():
    s, out = refused(sink=False)
    assert out.startswith(b"421 4.4.5 client client.example [192.0.2.7] connections 4 exceed 3/60s #522")
    assert s.closing and s.state != SINK


def test_sink_answers_noop_and_quit():
    s, out = refused()
    assert out.startswith(b"421 4.4.5 ") and s.state == SINK and not s.closing
    s.receive_data(b"NOOP\r\n")
    assert isinstance(s.next_event(), ev.Noop)
    assert s.respond(CAT.reply(547)).startswith(b"250 2.0.0 OK #547")
    assert s.state == SINK and not s.closing
    s.receive_data(b"QUIT\r\n")
    assert isinstance(s.next_event(), ev.Quit)
    s.respond(CAT.reply(247, hostname="mx.test"))
    assert s.closing


@pytest.mark.parametrize("line", [b"EHLO client.example", b"HELO x.example", b"MAIL FROM:<a@b.c>",
                                  b"RCPT TO:<a@b.c>", b"DATA", b"RSET", b"VRFY a", b"EXPN a",
                                  b"STARTTLS", b"HELP"])
def test_sink_closes_on_any_other_command(line):
    s, _ = refused()
    s.receive_data(line + b"\r\n")
    event = s.next_event()
    assert isinstance(event, ev.Violation) and event.drop
    verb = line.split()[0].decode()
    assert s.respond(event.reply).startswith(f"503 5.5.1 {verb} out of sequence #251".encode())
    assert s.closing


def test_sink_unknown_command_is_just_unknown():
    s, _ = refused()
    s.receive_data(b"FOO bar\r\n")
    event = s.next_event()
    assert isinstance(event, ev.Violation) and event.reply.id == 248
    s.respond(event.reply)
    assert s.state == SINK


def test_refused_xclient_can_enter_the_sink():
    client = ev.ClientInfo("127.0.0.1", 4000, "localhost", localhost=True)
    s = Session(SessionConfig(hostname="mx.test"), client, CAT, "SID")
    s.greet(CAT.reply(633, hostname="mx.test", esmtp="E", banner="ready"))
    s.receive_data(b"EHLO me.example\r\n")
    assert isinstance(s.next_event(), ev.Helo)
    s.respond(CAT.reply(254, hostname="mx.test", helo="me.example", client_ip="127.0.0.1",
                        extra=s.ehlo_keywords()))
    s.receive_data(b"XCLIENT ADDR=192.0.2.7\r\n")
    assert isinstance(s.next_event(), ev.Xclient)
    reply = CAT.reply(329, client_name="x", client_ip="192.0.2.7", limit=1)
    assert s.respond(reply, sink=True).startswith(b"421 4.7.1 ")
    assert s.state == SINK and not s.closing and s.helo is None
    s.receive_data(b"MAIL FROM:<a@b.c>\r\n")
    assert s.next_event().reply.id == 251
