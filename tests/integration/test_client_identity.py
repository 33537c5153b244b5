"""End to end: forward-xclient / forward-xforward tell smtp-sink who the client is."""

from __future__ import annotations

import re

import pytest

from tests.conftest import routes_to
from tests.daemons import Sink
from tests.smtpclient import Client


@pytest.fixture
def make_sink(tmp_path):
    """smtp-sink factories that log every command (-v)."""
    started = []

    def make(*args: str, verbose: bool = True) -> Sink:
        started.append(Sink(tmp_path, *args, verbose=verbose))
        return started[-1]

    yield make
    for s in started:
        s.stop()


def downstream_commands(sink, verb: str) -> list[str]:
    return re.findall(rf"^smtp-sink: ({verb}\b.*)$", sink.log.read_text(errors="replace"), re.MULTILINE)


def outside_client(c: Client) -> None:
    """Play an outside client (XCLIENT to Barricade from localhost), then EHLO."""
    assert c.cmd("XCLIENT ADDR=192.0.2.7 NAME=mail.example.org").code == 220
    c.ehlo("helo.example.org")


def two_messages(c: Client) -> None:
    for n in (1, 2):
        r = c.message("a@example.org", ["b@example.com"], b"Subject: %d\r\n\r\nx\r\n" % n)
        assert r.code == 250, r


def test_xforward_before_each_mail(make_sink, make_proxy):
    sink = make_sink(verbose=True)
    proxy = make_proxy(routes_to(sink), "+forward-xforward")
    with Client(proxy.port) as c:
        outside_client(c)
        two_messages(c)
        sid = re.search(r"#63[23] (\S+)", c.banner.text).group(1)
    # smtp-sink offers XFORWARD NAME ADDR PROTO HELO: those, and only those, go
    assert downstream_commands(sink, "XFORWARD") == [
        "XFORWARD NAME=mail.example.org ADDR=192.0.2.7 PROTO=ESMTP HELO=helo.example.org"] * 2
    assert downstream_commands(sink, "XCLIENT") == []
    assert len(sink.messages()) == 2
    assert sid  # the queue id (IDENT) is not offered by smtp-sink, so it is not sent


def test_xclient_once_per_connection_then_ehlo_again(make_sink, make_proxy):
    sink = make_sink(verbose=True)
    proxy = make_proxy(routes_to(sink), "+forward-xclient")
    with Client(proxy.port) as c:
        outside_client(c)
        two_messages(c)
    assert downstream_commands(sink, "XCLIENT") == ["XCLIENT NAME=mail.example.org HELO=helo.example.org"]
    sequence = downstream_commands(sink, "(?:EHLO|XCLIENT|MAIL)")
    start = sequence.index("XCLIENT NAME=mail.example.org HELO=helo.example.org")
    assert sequence[start - 1:start + 3] == [  # our EHLO, XCLIENT, EHLO again, then mail
        "EHLO barricade.test", "XCLIENT NAME=mail.example.org HELO=helo.example.org",
        "EHLO barricade.test", "MAIL FROM:<a@example.org>"]
    assert downstream_commands(sink, "XFORWARD") == []
    assert len(sink.messages()) == 2


def test_a_new_client_gets_a_new_downstream_connection(make_sink, make_proxy):
    sink = make_sink(verbose=True)
    # 192.0.2.7 may relay, so it may use XCLIENT in turn (as a front-end MTA would)
    proxy = make_proxy(routes_to(sink) + "route:192.0.2.7 RELAY\n", "+forward-xclient")
    with Client(proxy.port) as c:
        outside_client(c)
        assert c.message("a@example.org", ["b@example.com"], b"Subject: 1\r\n\r\nx\r\n").code == 250
        assert c.cmd("XCLIENT ADDR=192.0.2.8 NAME=other.example.org").code == 220
        c.ehlo("other-helo.example.org")
        assert c.message("a@example.org", ["b@example.com"], b"Subject: 2\r\n\r\nx\r\n").code == 250
    assert downstream_commands(sink, "XCLIENT") == [
        "XCLIENT NAME=mail.example.org HELO=helo.example.org",
        "XCLIENT NAME=other.example.org HELO=other-helo.example.org"]


def test_off_by_default(make_sink, make_proxy):
    sink = make_sink(verbose=True)
    proxy = make_proxy(routes_to(sink))
    with Client(proxy.port) as c:
        outside_client(c)
        two_messages(c)
    assert downstream_commands(sink, "XCLIENT") == downstream_commands(sink, "XFORWARD") == []


def test_not_sent_when_the_downstream_does_not_offer_them(make_sink, make_proxy):
    sink = make_sink("-C", "-F", verbose=True)  # smtp-sink without XCLIENT and XFORWARD
    proxy = make_proxy(routes_to(sink), "+forward-xclient", "+forward-xforward")
    with Client(proxy.port) as c:
        outside_client(c)
        two_messages(c)
    assert downstream_commands(sink, "XCLIENT") == downstream_commands(sink, "XFORWARD") == []


def test_a_refused_xforward_or_xclient_is_logged_and_mail_flows(make_sink, make_proxy):
    sink = make_sink("-f", "XFORWARD,XCLIENT", verbose=True)  # answers both with 5xx
    proxy = make_proxy(routes_to(sink), "+forward-xclient", "+forward-xforward")
    with Client(proxy.port) as c:
        outside_client(c)
        two_messages(c)
    assert len(sink.messages()) == 2
    log = proxy.log_text()
    assert "refused forward-xclient" in log and "refused forward-xforward" in log
    assert "Traceback" not in log
