"""+smtp-delay-checks: policy refusals wait for RCPT, where a white-listed recipient wins."""

from __future__ import annotations

from tests.integration.test_access import OUTSIDE, expect, outside
from tests.smtpclient import Client

MAP = (
    "connect:192.0.2.1 REJECT\n"
    "to:postmaster@example.com OK\n"
    "from:spammer@example.org REJECT\n"
    "from:worse@example.org IREJECT\n"
)


def test_without_the_option_the_client_is_refused_at_once(access, sink):
    proxy = access(MAP)
    with Client(proxy.port) as c:
        expect(c.cmd(OUTSIDE), 550, "5.7.1", 120)


def test_a_held_connect_refusal_is_given_at_rcpt_unless_the_recipient_is_white_listed(access, sink):
    proxy = access(MAP, "+smtp-delay-checks")
    with Client(proxy.port) as c:
        assert outside(c).code == 220  # greeted: the refusal waits
        assert c.cmd("MAIL FROM:<someone@example.org>").code == 250
        r = c.cmd("RCPT TO:<postmaster@example.com>")
        assert (r.code, r.id) == (250, 297)  # the white-listed recipient overrides it
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: to the postmaster\r\n\r\nplease unblock us\r\n.\r\n")
        assert c.read().code == 250
        assert c.cmd("MAIL FROM:<someone@example.org>").code == 250
        expect(c.cmd("RCPT TO:<b@example.com>"), 550, "5.7.1", 120)  # held for the session
    assert b"Subject: to the postmaster" in sink.messages()[0]
    assert len(sink.messages()) == 1


def test_a_held_mail_refusal_says_proceed_then_refuses_each_recipient(access, sink):
    proxy = access(MAP, "+smtp-delay-checks")
    with Client(proxy.port) as c:
        c.ehlo()
        expect(c.cmd("MAIL FROM:<spammer@example.org>"), 250, "2.0.0", 507)
        expect(c.cmd("RCPT TO:<b@example.com>"), 550, "5.7.1", 127)
        assert c.cmd("RCPT TO:<postmaster@example.com>").code == 250
        c.cmd("RSET")
        assert c.cmd("MAIL FROM:<friend@example.org>").id == 283  # held for that transaction only
        assert c.cmd("RCPT TO:<b@example.com>").code == 250


def test_ireject_is_never_held(access, sink):
    proxy = access(MAP, "+smtp-delay-checks")
    with Client(proxy.port) as c:
        c.ehlo()
        r = c.cmd("MAIL FROM:<worse@example.org>")
        assert r.code == 550 and r.id != 507
