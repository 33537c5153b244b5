"""The access map end to end: real SMTP through the proxy to smtp-sink.

Tests connect from 127.0.0.1; client entries are tested as an outside
client through XCLIENT (allowed from localhost), as Postfix's smtpd would
present one.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from barricade.testing import Client, lf, routes_to, wait_for

BODY = b"Subject: access\r\n\r\nhello\r\n"
OUTSIDE = "XCLIENT ADDR=192.0.2.1 NAME=mail.outside.example HELO=outside.example"


def outside(c: Client, xclient: str = OUTSIDE):
    r = c.cmd(xclient)
    if r.code == 220:
        c.ehlo("outside.example")
    return r


def expect(r, code: int, status: str, rid: int) -> None:
    assert (r.code, r.status, r.id) == (code, status, rid), r


# --- one test per reply id ------------------------------------------------------------


def test_connect_reject_120_drops_the_connection(access):
    proxy = access("connect:192.0.2 REJECT\n")
    with Client(proxy.port) as c:
        c.ehlo()
        r = c.cmd(OUTSIDE)
        expect(r, 550, "5.7.1", 120)
        assert r.text.startswith("5.7.1 host mail.outside.example [192.0.2.1] black listed #120")
        assert c.closed()


def test_connect_reject_by_ptr_domain_with_custom_text(access):
    proxy = access('connect:outside.example REJECT:"no mail from you"\n')
    with Client(proxy.port) as c:
        r = c.cmd(OUTSIDE)
        expect(r, 550, "5.7.1", 120)
        assert r.text.startswith("5.7.1 host mail.outside.example [192.0.2.1] no mail from you #120")
        assert c.closed()


def test_connect_ireject_854_and_tempfail_853(access):
    proxy = access("connect:192.0.2.1 IREJECT\nconnect:192.0.2.2 TEMPFAIL\n")
    with Client(proxy.port) as c:
        expect(c.cmd(OUTSIDE), 550, "5.7.1", 854)
        assert c.closed()
    with Client(proxy.port) as c:
        expect(c.cmd("XCLIENT ADDR=192.0.2.2"), 421, "4.7.1", 853)
        assert c.closed()


def test_helo_reject_930(access):
    proxy = access("helo:spammer.example REJECT\nhelo:[192.0.2.7] TEMPFAIL\n")
    with Client(proxy.port) as c:
        r = c.cmd("EHLO mx.spammer.example")
        expect(r, 550, "5.7.1", 924)
        assert c.closed()
    with Client(proxy.port) as c:
        expect(c.cmd("HELO [192.0.2.7]"), 421, "4.7.1", 931)
        assert c.closed()
    with Client(proxy.port) as c:
        assert c.ehlo("good.example").code == 250


def test_connect_from_reject_125(access):
    proxy = access("connect:192.0.2.1:from:bad@example.org REJECT\n")
    with Client(proxy.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<bad@example.org>").code == 250  # not from localhost
        c.cmd("RSET")
        outside(c)
        r = c.cmd("MAIL FROM:<bad@example.org>")
        expect(r, 550, "5.7.1", 125)
        assert "host mail.outside.example [192.0.2.1] sender <bad@example.org> black listed" in r.text
        assert c.cmd("MAIL FROM:<good@example.org>").code == 250


def test_connect_from_by_ptr_name_ireject_855_and_tempfail_814(access):
    proxy = access("connect:outside.example:from:example.org IREJECT\n"
                   "connect:192.0.2.1:from:example.net TEMPFAIL\n")
    with Client(proxy.port) as c:
        outside(c)
        expect(c.cmd("MAIL FROM:<x@example.org>"), 550, "5.7.1", 855)
        expect(c.cmd("MAIL FROM:<x@example.net>"), 450, "4.7.1", 814)


def test_from_reject_127_ireject_856_tempfail_815(access):
    proxy = access("from:bad@example.org REJECT\nfrom:worse@example.org IREJECT\n"
                   "from:example.net TEMPFAIL\n")
    with Client(proxy.port) as c:
        c.ehlo()
        r = c.cmd("MAIL FROM:<bad@example.org>")
        expect(r, 550, "5.7.1", 127)
        assert r.text.startswith("5.7.1 sender <bad@example.org> black listed #127")
        expect(c.cmd("MAIL FROM:<worse@example.org>"), 550, "5.7.1", 856)
        expect(c.cmd("MAIL FROM:<someone@sub.example.net>"), 450, "4.7.1", 815)
        assert c.cmd("MAIL FROM:<ok@example.org>").code == 250


def test_to_reject_139_and_tempfail_818(access, sink):
    proxy = access('to:nobody@example.com REJECT:"has left the company"\nto:later@example.com TEMPFAIL\n')
    with Client(proxy.port) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<a@example.org>")
        r = c.cmd("RCPT TO:<nobody@example.com>")
        expect(r, 550, "5.7.1", 139)
        assert r.text.startswith("5.7.1 recipient <nobody@example.com> has left the company #139")
        expect(c.cmd("RCPT TO:<later@example.com>"), 450, "4.7.1", 818)
        assert c.cmd("RCPT TO:<b@example.com>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(BODY + b".\r\n")
        assert c.read().code == 250
    assert len(sink.messages()) == 1


def test_connect_to_reject_135_and_tempfail_816(access):
    proxy = access("connect:192.0.2.1:to:b@example.com REJECT\n"
                   "connect:mail.outside.example:to:c@example.com TEMPFAIL\n")
    with Client(proxy.port) as c:
        outside(c)
        c.cmd("MAIL FROM:<a@example.org>")
        r = c.cmd("RCPT TO:<b@example.com>")
        expect(r, 550, "5.7.1", 135)
        assert "host mail.outside.example [192.0.2.1] recipient <b@example.com> black listed" in r.text
        expect(c.cmd("RCPT TO:<c@example.com>"), 450, "4.7.1", 816)
        assert c.cmd("RCPT TO:<d@example.com>").code == 250


def test_from_to_reject_137_and_tempfail_817(access):
    proxy = access("from:a@example.org:to:b@example.com REJECT\n"
                   "from:example.org:to:example.com TEMPFAIL\n")
    with Client(proxy.port) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<a@example.org>")
        r = c.cmd("RCPT TO:<b@example.com>")
        expect(r, 550, "5.7.1", 137)
        assert "sender <a@example.org> recipient <b@example.com> black listed" in r.text
        expect(c.cmd("RCPT TO:<c@example.com>"), 450, "4.7.1", 817)
        c.cmd("RSET")
        c.cmd("MAIL FROM:<a@example.net>")
        assert c.cmd("RCPT TO:<b@example.com>").code == 250


# --- white lists, content, discard ---------------------------------------------------


def test_white_listed_client_passes_later_reject_entries(access, sink):
    proxy = access("connect:192.0.2.1 OK\nfrom:spam@example.org REJECT\nto:b@example.com REJECT\n")
    with Client(proxy.port) as c:
        assert outside(c).code == 220
        assert c.message("spam@example.org", ["b@example.com"], BODY).code == 250
    assert b"spam@example.org" in sink.messages()[0]
    assert sink.bodies()[0].endswith(lf(BODY))


def test_white_listed_sender_passes_a_recipient_reject(access, sink):
    proxy = access("from:friend@example.org OK\nto:b@example.com REJECT\n")
    with Client(proxy.port) as c:
        c.ehlo()
        assert c.message("friend@example.org", ["b@example.com"], BODY).code == 250
        c.cmd("MAIL FROM:<stranger@example.org>")
        expect(c.cmd("RCPT TO:<b@example.com>"), 550, "5.7.1", 139)
    assert len(sink.messages()) == 1


def test_content_skips_envelope_checks(access, sink):
    proxy = access("connect:outside.example CONTENT\nfrom:spam@example.org REJECT\n")
    with Client(proxy.port) as c:
        outside(c)
        assert c.message("spam@example.org", ["b@example.com"], BODY).code == 250
    assert len(sink.messages()) == 1


def test_discard_accepts_and_drops_at_the_dot(access, sink):
    proxy = access("from:junk@example.org DISCARD\n")
    with Client(proxy.port) as c:
        c.ehlo()
        r = c.message("junk@example.org", ["b@example.com"], BODY)
        assert r.code == 250
        assert c.message("good@example.org", ["b@example.com"], BODY).code == 250
    wait_for(lambda: len(sink.messages()) >= 1, what="the good message")
    time.sleep(0.3)
    messages = sink.messages()
    assert len(messages) == 1
    assert b"good@example.org" in messages[0]
    assert b"junk@example.org" not in messages[0]


def test_recipient_reply_is_290_when_the_message_will_be_discarded(access):
    """smtpf answers an accepted recipient #297, and #290 when DISCARD will drop the message."""
    proxy = access("from:junk@example.org DISCARD\n")
    with Client(proxy.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<junk@example.org>").code == 250
        expect(c.cmd("RCPT TO:<b@example.com>"), 250, "2.1.5", 290)
        c.cmd("RSET")
        assert c.cmd("MAIL FROM:<good@example.org>").code == 250
        expect(c.cmd("RCPT TO:<b@example.com>"), 250, "2.1.5", 297)


def test_banner_is_one_line_632_for_trusted_clients_633_for_others(access):
    proxy = access("connect:192.0.2.9 OK\n")
    with Client(proxy.port) as c:
        assert (c.banner.code, c.banner.id) == (220, 632)  # localhost
        r = c.cmd("XCLIENT ADDR=192.0.2.9")  # white-listed by Connect: OK
        assert (r.code, r.id) == (220, 632), r
    with Client(proxy.port) as c:
        r = c.cmd("XCLIENT ADDR=192.0.2.1")  # anybody else
        assert (r.code, r.id) == (220, 633), r


def test_plus_detail_stripped_unless_literal_plus(access):
    text = "from:user@example.org REJECT\n"
    proxy = access(text)
    with Client(proxy.port) as c:
        c.ehlo()
        expect(c.cmd("MAIL FROM:<user+list@example.org>"), 550, "5.7.1", 127)
    literal = access(text, "+rfc2821-literal-plus")
    with Client(literal.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<user+list@example.org>").code == 250


def test_pattern_list_on_client_name(access):
    proxy = access("connect:outside.example !adsl-*.outside.example!REJECT [192.0.2.64/26]REJECT OK\n"
                   "from:spam@example.org REJECT\n")
    with Client(proxy.port) as c:
        expect(c.cmd("XCLIENT ADDR=192.0.2.9 NAME=adsl-9.outside.example"), 550, "5.7.1", 120)
    with Client(proxy.port) as c:
        expect(c.cmd("XCLIENT ADDR=192.0.2.70 NAME=mx.outside.example"), 550, "5.7.1", 120)
    with Client(proxy.port) as c:
        outside(c)  # the default OK white-lists mail.outside.example
        assert c.cmd("MAIL FROM:<spam@example.org>").code == 250


# --- reloading --------------------------------------------------------------------------


def test_reload_when_the_file_changes(access):
    proxy = access("from:bad@example.org REJECT\n")
    with Client(proxy.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<new@example.org>").code == 250
    time.sleep(1.1)  # a new mtime even on coarse file systems
    proxy.access_path.write_text("from:bad@example.org REJECT\nfrom:new@example.org REJECT\n")

    def rejected() -> bool:
        with Client(proxy.port) as c:
            c.ehlo()
            return c.cmd("MAIL FROM:<new@example.org>").id == 127

    wait_for(rejected, timeout=10, what="the changed map")


def test_sighup_reloads_and_a_bad_line_keeps_the_old_map(access):
    proxy = access("from:bad@example.org REJECT\n")
    path = proxy.access_path
    stat = path.stat()
    path.write_text("from:bad@example.org REJECT\nfrom:new@example.org REJECT\n")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # only SIGHUP can notice
    proxy.proc.send_signal(signal.SIGHUP)

    def mail(sender: str) -> int | None:
        with Client(proxy.port) as c:
            c.ehlo()
            return c.cmd(f"MAIL FROM:<{sender}>").id

    wait_for(lambda: mail("new@example.org") == 127, timeout=10, what="SIGHUP reload")
    path.write_text("from:bad@example.org REJECT\nfrom:other@example.org [300.1.2.3]REJECT\n")
    proxy.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: f"{path}:2:" in proxy.log_text(), timeout=10, what="the bad line logged")
    assert mail("new@example.org") == 127  # the previous map is still in force
    assert mail("bad@example.org") == 127


def test_a_bad_map_stops_start_up_with_file_and_line(tmp_path, sink, make_proxy):
    path = tmp_path / "access-map"
    path.write_text("# comment\nconnect:192.0.2 OK\nto:x@example.com IREJECT\n")
    with pytest.raises(RuntimeError) as err:
        make_proxy(routes_to(sink), f"access-map={path}")
    assert f"{path}:3:" in str(err.value)
    assert "IREJECT is not allowed on To:" in str(err.value)
