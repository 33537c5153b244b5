"""End to end: the EHLO reflects the downstreams (SIZE, 8BITMIME, DSN), DSN pass-through."""

from __future__ import annotations

import re
import smtplib

import pytest

from barricade.testing import mail_args
from tests.conftest import routes_to
from tests.recorder import Recorder
from tests.smtpclient import Client


@pytest.fixture
def recorder():
    r = Recorder(size_limit=10000)
    yield r
    r.stop()


def rcpt_args(message: bytes) -> list[bytes]:
    return re.findall(rb"^X-Rcpt-Args: (.*)$", message, re.MULTILINE)


def test_ehlo_offers_what_smtp_sink_offers(sink, make_proxy):
    proxy = make_proxy(routes_to(sink))
    with Client(proxy.port) as c:
        lines = c.ehlo().lines
    assert "8BITMIME" in lines and "DSN" in lines  # smtp-sink announces both
    assert "SIZE 52428800" in lines  # smtp-sink announces no SIZE: ours stands
    assert "ETRN" not in lines
    assert f"capability probe: 127.0.0.1:{sink.port} offers" in proxy.log_text()


def test_dsn_parameters_are_relayed(sink, make_proxy):
    proxy = make_proxy(routes_to(sink))
    with Client(proxy.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@example.org> RET=HDRS ENVID=QQ314159").code == 250
        assert c.cmd("RCPT TO:<b@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+40example.com").code == 250
        assert c.cmd("RCPT TO:<c@example.com> NOTIFY=NEVER").code == 250
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: dsn\r\n\r\nx\r\n.\r\n")
        assert c.read().code == 250
    [msg] = sink.messages()
    assert mail_args(msg.split(b"\n")) == b"<a@example.org> RET=HDRS ENVID=QQ314159"
    assert rcpt_args(msg) == [b"<b@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+40example.com",
                              b"<c@example.com> NOTIFY=NEVER"]


def test_dsn_parameters_with_bad_values_are_refused(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "smtp-drop-after=0")
    with Client(proxy.port) as c:
        c.ehlo()
        for bad in ("RET=ALL", "ENVID=", "ENVID=" + "x" * 101, "ENVID=a+zz"):
            r = c.cmd(f"MAIL FROM:<a@example.org> {bad}")
            assert (r.code, r.status, r.id) == (501, "5.5.4", 920), bad
        assert c.cmd("MAIL FROM:<a@example.org>").code == 250
        for bad in ("NOTIFY=NEVER,SUCCESS", "NOTIFY=SOMETIMES", "NOTIFY=", "ORCPT=b@example.com",
                    "ORCPT=rfc822;", "NOTIFY=DELAY,DELAY"):
            r = c.cmd(f"RCPT TO:<b@example.com> {bad}")
            assert (r.code, r.status, r.id) == (501, "5.5.4", 920), bad
        r = c.cmd("RCPT TO:<b@example.com> FOO=BAR")  # other unknown parameters: still refused
        assert (r.code, r.status, r.id) == (555, "5.5.4", 919)
    assert "Traceback" not in proxy.log_text()


def test_no_dsn_downstream_no_dsn_offered(make_sink, make_proxy):
    sink = make_sink("-N")  # smtp-sink without DSN
    proxy = make_proxy(routes_to(sink))
    with Client(proxy.port) as c:
        assert "DSN" not in c.ehlo().lines
        r = c.cmd("MAIL FROM:<a@example.org> RET=FULL")
        assert (r.code, r.status, r.id) == (555, "5.5.4", 919)
        assert c.cmd("MAIL FROM:<a@example.org>").code == 250
        r = c.cmd("RCPT TO:<b@example.com> NOTIFY=NEVER")
        assert (r.code, r.status, r.id) == (555, "5.5.4", 919)


def test_dsn_only_when_every_route_offers_it(sink, make_sink, make_proxy):
    plain = make_sink("-N")
    proxy = make_proxy(routes_to(sink, plain))  # example1.net goes to a downstream without DSN
    with Client(proxy.port) as c:
        lines = c.ehlo().lines
    assert "DSN" not in lines and "8BITMIME" in lines


def test_size_is_the_smaller_of_ours_and_the_downstreams(recorder, make_proxy):
    proxy = make_proxy(f"route:local FORWARD: 127.0.0.1:{recorder.port}\n"
                       f"route:example.com FORWARD: 127.0.0.1:{recorder.port}\n")
    with Client(proxy.port) as c:
        lines = c.ehlo().lines
        assert "SIZE 10000" in lines and "8BITMIME" in lines and "DSN" not in lines
        r = c.cmd("MAIL FROM:<a@example.org> SIZE=20000")
        assert (r.code, r.status, r.id) == (552, "5.3.4", 912)
        assert r.text.startswith("5.3.4 message too big, max. 10000 bytes #912")
        assert c.cmd("MAIL FROM:<a@example.org> SIZE=2000 BODY=8BITMIME").code == 250
        assert c.cmd("RCPT TO:<b@example.com>").code == 250
        assert c.cmd("DATA").code == 354
        c.send("Subject: caf\u00e9\r\n\r\nna\u00efve\r\n.\r\n".encode())
        assert c.read().code == 250
    [(sender, options, rcpts, content)] = recorder.messages
    assert (sender, options, rcpts) == ("a@example.org", ["BODY=8BITMIME", "SIZE=2000"], ["b@example.com"])
    assert "na\u00efve".encode() in content
    with Client(proxy.port) as c:  # and over the limit at the dot: ours, before the downstream's
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@example.org>").code == 250
        assert c.cmd("RCPT TO:<b@example.com>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: big\r\n\r\n" + (b"x" * 98 + b"\r\n") * 120 + b".\r\n")
        r = c.read()
        assert (r.code, r.id) == (552, 912)
    assert len(recorder.messages) == 1


def test_our_smaller_size_wins(recorder, make_proxy):
    proxy = make_proxy(f"route:local FORWARD: 127.0.0.1:{recorder.port}\n", "message-size-limit=5000")
    with Client(proxy.port) as c:
        assert "SIZE 5000" in c.ehlo().lines


@pytest.mark.parametrize("level, offered", [("-rfc1652-8bitmime", False), ("+rfc1652-8bitmime", True)])
def test_rfc1652_8bitmime_forces_either_way(make_sink, make_proxy, level, offered):
    sink = make_sink("-e") if offered else make_sink()  # -e: no ESMTP, so no 8BITMIME downstream
    proxy = make_proxy(routes_to(sink), level)
    with Client(proxy.port) as c:
        assert ("8BITMIME" in c.ehlo().lines) is offered
        r = c.cmd("MAIL FROM:<a@example.org> BODY=8BITMIME")
        assert r.code == (250 if offered else 555)


def test_a_downstream_that_is_down_offers_nothing(make_proxy):
    from barricade.testing import free_port

    proxy = make_proxy(f"route:local FORWARD: 127.0.0.1:{free_port()}\n")
    with Client(proxy.port) as c:
        lines = c.ehlo().lines
    assert "8BITMIME" not in lines and "DSN" not in lines and "SIZE 52428800" in lines
    assert "capability probe: no downstream answered" in proxy.log_text()


def test_smtplib_dsn_options(sink, make_proxy):
    proxy = make_proxy(routes_to(sink))
    with smtplib.SMTP("127.0.0.1", proxy.port, local_hostname="client.example.org", timeout=10) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("dsn")
        smtp.sendmail("a@example.org", ["b@example.com"], b"Subject: dsn\r\n\r\nx\r\n",
                      mail_options=["RET=HDRS", "ENVID=ENV1"], rcpt_options=["NOTIFY=SUCCESS,DELAY"])
    [msg] = sink.messages()
    assert mail_args(msg.split(b"\n")) == b"<a@example.org> RET=HDRS ENVID=ENV1"
    assert rcpt_args(msg) == [b"<b@example.com> NOTIFY=SUCCESS,DELAY"]
