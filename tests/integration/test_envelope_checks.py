"""Client, HELO, MAIL and RCPT tests end to end: real SMTP through the proxy.

Tests connect from 127.0.0.1, which these tests exempt (as smtpf exempts
localhost, LAN and RELAY clients), so most play an outside client through
XCLIENT.  The test kit turns rfc2606-special-domains and reject-unknown-tld
off (test addresses use the reserved names); here they are turned back on.
Our route map serves ours.net (and, for the recipient tests, example.com
and corp.nosuchtld, a reserved and an unknown top-level domain).
"""

from __future__ import annotations

import pytest

from barricade.testing import Client, lf
from tests.integration.test_access import expect

ON = ("+rfc2606-special-domains", "+reject-unknown-tld", "smtp-drop-after=0")
BODY = b"Subject: envelope\r\n\r\nhello\r\n"
OUTSIDE = "XCLIENT ADDR=192.0.2.1 NAME=mail.outside.org"


def route_map(sink, *extra: str) -> str:
    lines = [f"route:local FORWARD: 127.0.0.1:{sink.port}"]
    for domain in ("ours.net", "example.com", "corp.nosuchtld"):
        lines.append(f"route:{domain} FORWARD: 127.0.0.1:{sink.port}")
    return "\n".join([*lines, *extra]) + "\n"


@pytest.fixture
def strict(sink, make_proxy):
    """A proxy with the domain tests on and the strict path grammar."""
    return make_proxy(route_map(sink, "route:192.0.2.128 RELAY"), *ON, "+rfc2821-extra-spaces",
                      "+rfc2821-local-length", "+rfc2821-domain-length")


def outside(c: Client, xclient: str = OUTSIDE, helo: str | None = "mail.outside.org") -> None:
    """Become an outside client (and say EHLO)."""
    r = c.cmd(xclient)
    assert r.code == 220 and r.id in (632, 633), r  # 632: a RELAY or white-listed client
    if helo:
        assert c.ehlo(helo).code == 250


# --- connect: the client's PTR name ---------------------------------------------------


def test_121_client_name_in_a_reserved_domain_is_dropped(strict):
    with Client(strict.port) as c:
        r = c.cmd("XCLIENT ADDR=192.0.2.1 NAME=mail.outside.example")
        expect(r, 550, "5.7.1", 121)
        assert r.text.startswith("5.7.1 host mail.outside.example [192.0.2.1] from RFC2606 reserved domain #121")
        assert c.closed()


def test_122_client_name_under_an_unknown_tld_is_dropped(strict):
    with Client(strict.port) as c:
        r = c.cmd("XCLIENT ADDR=192.0.2.1 NAME=mail.outside.nosuchtld")
        expect(r, 550, "5.7.1", 122)
        assert "host mail.outside.nosuchtld [192.0.2.1] from unknown TLD" in r.text
        assert c.closed()


def test_client_name_tests_spare_lan_and_unnamed_clients(strict):
    with Client(strict.port) as c:
        outside(c, "XCLIENT ADDR=10.1.2.3 NAME=printer.example")  # LAN: exempt
    with Client(strict.port) as c:
        outside(c, "XCLIENT ADDR=192.0.2.1 NAME=[UNAVAILABLE]")  # no PTR name: nothing to test
    with Client(strict.port) as c:
        outside(c)  # mail.outside.org is fine


# --- HELO -----------------------------------------------------------------------------------


def test_423_invalid_helo_characters_drop_everybody(strict):
    with Client(strict.port) as c:  # even localhost: a grammar rule
        r = c.cmd("EHLO bad/name")
        expect(r, 501, "5.5.4", 423)
        assert "invalid HELO bad/name" in r.text
        assert c.closed()


def test_427_helo_in_a_reserved_domain(strict):
    with Client(strict.port) as c:
        outside(c, helo=None)
        r = c.cmd("EHLO host.localdomain")
        expect(r, 550, "5.7.0", 427)
        assert "HELO host.localdomain from RFC2606 reserved domain" in r.text
        assert c.closed()
    with Client(strict.port) as c:
        outside(c, helo=None)
        assert c.cmd("HELO host.local").code == 250  # .local and .lan are fine in HELO


def test_428_helo_must_be_a_fqdn_or_address_literal(strict):
    for bad in ("myhost", "192.0.2.1", "myhost."):
        with Client(strict.port) as c:
            outside(c, helo=None)
            r = c.cmd(f"EHLO {bad}")
            expect(r, 550, "5.7.0", 428)
            assert f"HELO {bad} argument must be a FQDN or IP-domain literal" in r.text
            assert c.closed()
    for good in ("[192.0.2.1]", "[IPv6:2001:db8::1]", "mx.outside.org"):
        with Client(strict.port) as c:
            outside(c, helo=good)
    with Client(strict.port) as c:  # localhost, LAN and RELAY clients are not refused
        assert c.ehlo("myhost").code == 250


def test_430_helo_claims_to_be_us(strict):
    with Client(strict.port) as c:
        outside(c, helo=None)
        r = c.cmd("EHLO mx.ours.net")
        expect(r, 550, "5.7.0", 430)
        assert 'mail.outside.org [192.0.2.1] claims to be us "mx.ours.net"' in r.text
        assert c.closed()
    with Client(strict.port) as c:  # the address we listen on
        outside(c, helo=None)
        expect(c.cmd("EHLO [127.0.0.1]"), 550, "5.7.0", 430)
    with Client(strict.port) as c:  # a host of ours (PTR in our domain) may say so
        outside(c, "XCLIENT ADDR=192.0.2.1 NAME=backup.ours.net", helo="mx.ours.net")
    with Client(strict.port) as c:  # as may a RELAY client
        outside(c, "XCLIENT ADDR=192.0.2.128 NAME=mail.outside.org", helo="mx.ours.net")


# --- MAIL -------------------------------------------------------------------------------------


def test_128_sender_in_a_reserved_domain(strict):
    with Client(strict.port) as c:
        outside(c)
        r = c.cmd("MAIL FROM:<someone@mail.example.org>")
        expect(r, 550, "5.7.1", 128)
        assert "sender <someone@mail.example.org> from RFC2606 reserved domain" in r.text
        assert c.cmd("MAIL FROM:<>").code == 250  # the null sender has no domain


def test_129_sender_under_an_unknown_tld(strict):
    with Client(strict.port) as c:
        outside(c)
        r = c.cmd("MAIL FROM:<someone@outside.nosuchtld>")
        expect(r, 550, "5.7.1", 129)
        assert "sender <someone@outside.nosuchtld> from unknown TLD" in r.text
        assert c.cmd("MAIL FROM:<someone@[192.0.2.1]>").code == 250  # literals pass


def test_sender_tests_spare_localhost_and_relay_clients(strict):
    with Client(strict.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<someone@example.org>").code == 250
    with Client(strict.port) as c:
        outside(c, "XCLIENT ADDR=192.0.2.128 NAME=relay.outside.org")
        assert c.cmd("MAIL FROM:<someone@example.org>").code == 250


def test_279_and_280_sender_syntax(strict):
    with Client(strict.port) as c:
        outside(c)
        r = c.cmd("MAIL FROM:<a..b@outside.org>")
        expect(r, 553, "5.1.0", 279)
        assert "rejected sender <a..b@outside.org> invalid local part" in r.text
        expect(c.cmd("MAIL FROM:a@outside.org"), 553, "5.1.0", 279)  # rfc2821-angle-brackets
        r = c.cmd(f"MAIL FROM:<{'a' * 65}@outside.org>")  # rfc2821-local-length
        expect(r, 553, "5.1.0", 279)
        assert "local part longer than 64" in r.text
        expect(c.cmd("MAIL FROM: <a@outside.org>"), 501, "5.5.2", 280)  # rfc2821-extra-spaces
        assert c.cmd("MAIL FROM:<a@outside.org>").code == 250


# --- RCPT -------------------------------------------------------------------------------------


def test_131_132_133_routed_recipients_for_every_client(strict):
    with Client(strict.port) as c:
        c.ehlo()  # localhost: these apply to everybody
        c.cmd("MAIL FROM:<a@outside.org>")
        r = c.cmd("RCPT TO:<user%elsewhere.org@ours.net>")
        expect(r, 550, "5.7.1", 131)
        assert "routed address relaying denied" in r.text
        r = c.cmd("RCPT TO:<elsewhere.org!user@ours.net>")
        expect(r, 550, "5.7.1", 132)
        assert "UUCP addressing denied" in r.text
        r = c.cmd('RCPT TO:<"user@elsewhere.org"@ours.net>')
        expect(r, 550, "5.7.1", 133)
        assert "special case of at-sign in local-part denied" in r.text
        assert c.cmd("RCPT TO:<user@ours.net>").code == 250


def test_140_recipient_in_a_reserved_domain(strict, sink):
    with Client(strict.port) as c:
        outside(c)
        c.cmd("MAIL FROM:<a@outside.org>")
        r = c.cmd("RCPT TO:<b@example.com>")
        expect(r, 550, "5.7.1", 140)
        assert "recipient <b@example.com> from RFC2606 reserved domain" in r.text
        assert c.cmd("RCPT TO:<b@ours.net>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(BODY + b".\r\n")
        assert c.read().code == 250
    assert sink.bodies()[0].endswith(lf(BODY))


def test_141_recipient_under_an_unknown_tld(strict):
    with Client(strict.port) as c:
        outside(c)
        c.cmd("MAIL FROM:<a@outside.org>")
        r = c.cmd("RCPT TO:<b@corp.nosuchtld>")
        expect(r, 550, "5.7.1", 141)
        assert "recipient <b@corp.nosuchtld> from unknown TLD" in r.text
        assert c.cmd("RCPT TO:<Postmaster@corp.nosuchtld>").code == 250  # postmaster is exempt


def test_284_285_286_recipient_syntax(strict):
    with Client(strict.port) as c:
        outside(c)
        c.cmd("MAIL FROM:<a@outside.org>")
        r = c.cmd("RCPT TO:<b@-ours.net>")
        expect(r, 553, "5.1.0", 284)
        assert "rejected recipient <b@-ours.net> invalid domain" in r.text
        r = c.cmd(f"RCPT TO:<b@{'a' * 63}.{'b' * 63}.{'c' * 63}.{'d' * 63}.net>")  # rfc2821-domain-length
        expect(r, 553, "5.1.0", 284)
        expect(c.cmd("RCPT TO: <b@ours.net>"), 501, "5.5.2", 285)  # rfc2821-extra-spaces
        r = c.cmd("RCPT TO:<>")
        expect(r, 550, "5.7.1", 286)
        assert "null recipient invalid" in r.text
        assert c.cmd("RCPT TO:<b@ours.net>").code == 250


def test_441_one_recipient_per_null_sender(strict, sink):
    with Client(strict.port) as c:
        c.ehlo()  # localhost too: only white-listed clients are exempt
        assert c.cmd("MAIL FROM:<>").code == 250
        assert c.cmd("RCPT TO:<a@ours.net>").code == 250
        r = c.cmd("RCPT TO:<b@ours.net>")
        expect(r, 550, "5.7.1", 441)
        assert "too many recipients for DSN or MDN" in r.text
        assert c.cmd("DATA").code == 354
        c.send(BODY + b".\r\n")
        assert c.read().code == 250
        assert c.cmd("MAIL FROM:<a@outside.org>").code == 250  # a real sender may have more
        assert c.cmd("RCPT TO:<a@ours.net>").code == 250
        assert c.cmd("RCPT TO:<b@ours.net>").code == 250
    assert b"X-Rcpt-Args: <a@ours.net>" in sink.messages()[0]


# --- white lists, delay checks, options ----------------------------------------------------------


def test_access_map_entries_exempt_from_the_domain_tests(sink, make_proxy, tmp_path):
    access = tmp_path / "access-map"
    access.write_text("connect:192.0.2.9 OK\n"  # white-listed: no test at all
                      "from:partner.nosuchtld SAVE\n"  # listed, not white-listed: tests skipped
                      "to:b@example.com SAVE\n")
    proxy = make_proxy(route_map(sink), *ON, f"access-map={access}")
    with Client(proxy.port) as c:
        outside(c, "XCLIENT ADDR=192.0.2.9 NAME=mail.outside.example", helo="host.example")
        assert c.cmd("MAIL FROM:<a@example.org>").code == 250
        assert c.cmd("RCPT TO:<b@example.com>").code == 250
    with Client(proxy.port) as c:
        outside(c)
        assert c.cmd("MAIL FROM:<a@partner.nosuchtld>").code == 250
        assert c.cmd("RCPT TO:<b@example.com>").code == 250
        expect(c.cmd("RCPT TO:<c@example.com>"), 550, "5.7.1", 140)
        expect(c.cmd("RCPT TO:<c%x@example.com>"), 550, "5.7.1", 131)


def test_delay_checks_hold_the_refusals_until_rcpt(sink, make_proxy, tmp_path):
    access = tmp_path / "access-map"
    access.write_text("to:postmaster@ours.net OK\n")
    proxy = make_proxy(route_map(sink), *ON, "+smtp-delay-checks", f"access-map={access}")
    with Client(proxy.port) as c:  # a connect refusal waits for RCPT
        outside(c, "XCLIENT ADDR=192.0.2.1 NAME=mail.outside.example")
        assert c.cmd("MAIL FROM:<a@outside.org>").code == 250
        assert c.cmd("RCPT TO:<postmaster@ours.net>").code == 250  # a white-listed recipient wins
        expect(c.cmd("RCPT TO:<b@ours.net>"), 550, "5.7.1", 121)
    with Client(proxy.port) as c:  # so does a HELO refusal
        outside(c, helo="myhost")
        assert c.cmd("MAIL FROM:<a@outside.org>").code == 250
        expect(c.cmd("RCPT TO:<b@ours.net>"), 550, "5.7.0", 428)
    with Client(proxy.port) as c:  # and a MAIL refusal, for its transaction
        outside(c)
        expect(c.cmd("MAIL FROM:<a@example.org>"), 250, "2.0.0", 507)
        expect(c.cmd("RCPT TO:<b@ours.net>"), 550, "5.7.1", 128)
        c.cmd("RSET")
        assert c.cmd("MAIL FROM:<a@outside.org>").code == 250
        assert c.cmd("RCPT TO:<b@ours.net>").code == 250


def test_options_off(sink, make_proxy):
    proxy = make_proxy(route_map(sink), "smtp-drop-after=0", "-rfc2821-strict-helo", "-helo-claims-us",
                       "-reject-percent-relay", "-reject-uucp-route", "-reject-quoted-at-sign",
                       "-one-rcpt-per-null")
    with Client(proxy.port) as c:  # outside(): the EHLO got 250
        outside(c, "XCLIENT ADDR=192.0.2.1 NAME=mail.outside.example", helo="mx.ours.net")
    with Client(proxy.port) as c:
        outside(c, "XCLIENT ADDR=192.0.2.1 NAME=mail.outside.example", helo="myhost")
        assert c.cmd("MAIL FROM:<>").code == 250
        for rcpt in ("u%x@ours.net", "x!u@ours.net", '"u@x"@ours.net', "b@example.com", "b@corp.nosuchtld"):
            assert c.cmd(f"RCPT TO:<{rcpt}>").code == 250, rcpt


def test_tld_level_one_file_replaces_the_list(sink, make_proxy, tmp_path):
    tlds = tmp_path / "tlds"
    tlds.write_text("# our own list\nnet org\n  nosuchtld\n")
    proxy = make_proxy(route_map(sink), "+reject-unknown-tld", f"tld-level-one-file={tlds}")
    with Client(proxy.port) as c:
        outside(c)
        assert c.cmd("MAIL FROM:<a@corp.nosuchtld>").code == 250
        c.cmd("RSET")
        expect(c.cmd("MAIL FROM:<a@outside.com>"), 550, "5.7.1", 129)


def test_an_unreadable_tld_file_stops_the_start(sink, make_proxy, tmp_path):
    with pytest.raises(RuntimeError, match="tld-level-one-file"):
        make_proxy(route_map(sink), f"tld-level-one-file={tmp_path / 'missing'}")
