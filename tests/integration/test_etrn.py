"""End to end: ETRN (RFC 1985) relayed to the local route (#276, #277)."""

from __future__ import annotations

import pytest

from tests.conftest import routes_to
from tests.recorder import Recorder
from tests.smtpclient import Client


@pytest.fixture
def queue():
    r = Recorder(etrn="250 Queuing started")
    yield r
    r.stop()


def routes(r: Recorder) -> str:
    return f"route:local FORWARD: 127.0.0.1:{r.port}\nroute:example.com FORWARD: 127.0.0.1:{r.port}\n"


def test_etrn_is_relayed_to_the_local_route(queue, make_proxy):
    proxy = make_proxy(routes(queue))
    with Client(proxy.port) as c:
        assert "ETRN" in c.ehlo().lines
        for arg in ("example.com", "@example.com", "#deferred"):
            r = c.cmd(f"ETRN {arg}")
            assert (r.code, r.id) == (250, 277), r
            assert r.text.startswith("2.0.0 Queuing started #277")
    assert queue.etrns == ["example.com", "@example.com", "#deferred"]
    # one downstream connection for the session's ETRNs, not one each
    assert len(queue.handler.etrn_connections) == 1


def test_a_downstream_refusal_is_relayed_with_its_code(make_proxy):
    queue = Recorder(etrn="459 4.3.0 <example.net>: Unable to find domain")
    try:
        proxy = make_proxy(routes(queue))
        with Client(proxy.port) as c:
            c.ehlo()
            r = c.cmd("ETRN example.net")
            assert (r.code, r.status, r.id) == (459, "4.3.0", 277)
            assert r.text.startswith("4.3.0 <example.net>: Unable to find domain #277")
    finally:
        queue.stop()


def test_etrn_sequence_and_syntax(queue, make_proxy):
    proxy = make_proxy(routes(queue), "smtp-drop-after=0")
    with Client(proxy.port) as c:
        r = c.cmd("HELO client.example.org")
        r = c.cmd("ETRN example.com")  # RFC 1985 is an ESMTP extension: EHLO first
        assert (r.code, r.status, r.id) == (503, "5.5.1", 251)
        c.ehlo()
        r = c.cmd("ETRN")
        assert (r.code, r.status, r.id) == (501, "5.5.2", 249)
        for bad in ("exa mple.com", "@", "#", "-bad-.example", "example.com; rm"):
            r = c.cmd(f"ETRN {bad}")
            assert (r.code, r.id) == (501, 920), bad
        assert c.cmd("MAIL FROM:<a@example.org>").code == 250
        r = c.cmd("ETRN example.com")  # not inside a transaction
        assert (r.code, r.id) == (503, 251)
    assert queue.etrns == []


def test_not_offered_when_the_local_route_lacks_it(sink, make_proxy):
    proxy = make_proxy(routes_to(sink))
    with Client(proxy.port) as c:
        assert "ETRN" not in c.ehlo().lines
        r = c.cmd("ETRN example.com")
        assert (r.code, r.status, r.id) == (502, "5.5.1", 250)


def test_local_route_down_gives_276(make_proxy):
    queue = Recorder(etrn="250 Queuing started")
    proxy = make_proxy(routes(queue))
    with Client(proxy.port) as c:
        assert "ETRN" in c.ehlo().lines  # learnt while it was up
        queue.stop()
        r = c.cmd("ETRN example.com")
        assert (r.code, r.status, r.id) == (458, "4.4.0", 276)
        assert r.text.startswith("4.4.0 unable to queue messages for example.com #276")
        assert c.cmd("NOOP").code == 250


def test_etrn_pipelined_and_smuggled(queue, make_proxy):
    proxy = make_proxy(routes(queue))
    with Client(proxy.port) as c:
        c.ehlo()
        c.send(b"ETRN example.com\r\nNOOP\r\nETRN @example.com\r\n")
        assert [c.read().id for _ in range(3)] == [277, 547, 277]
        r = c.message("a@example.org", ["b@example.com"],
                      b"Subject: s\r\n\r\nx\n.\nETRN smuggled.example\r\n.ETRN dotted.example\r\n")
        assert r.code == 250
    assert queue.etrns == ["example.com", "@example.com"]
    [(_, _, _, content)] = queue.messages
    assert b"ETRN smuggled.example" in content and b"\r\nETRN dotted.example\r\n" in content  # unstuffed


def test_10kb_etrn_and_bdat_lines_close_the_session(queue, make_proxy):
    proxy = make_proxy(routes(queue))
    for line in (b"ETRN " + b"a" * 10240 + b".example\r\n", b"BDAT " + b"9" * 10240 + b"\r\n"):
        with Client(proxy.port) as c:
            c.ehlo()
            c.send(line)
            r = c.read()
            assert (r.code, r.status, r.id) == (501, "5.5.2", 906)
            assert c.closed()
    assert queue.etrns == [] and "Traceback" not in proxy.log_text()
