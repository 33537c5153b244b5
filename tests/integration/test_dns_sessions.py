"""Client PTR names and the DNS lists end to end: real SMTP through the proxy, DNS from nsd.

Tests connect from 127.0.0.1 (localhost is never looked up) and become an
outside client with ``XCLIENT ADDR=198.51.100.x`` and no NAME, so the proxy
looks the address up as for a real connection (the address plan is in
``tests/zones/100.51.198.in-addr.arpa.zone``).
"""

from __future__ import annotations

import pytest

from barricade.testing import Client, routes_to, wait_for

pytestmark = pytest.mark.integration

BODY = b"Subject: dns\r\n\r\nhello\r\n"


def arrive(proxy, ip: str, helo: str = "client.example"):
    """Connect, become ``ip`` through XCLIENT; returns (client, reply to XCLIENT)."""
    c = Client(proxy.port, timeout=30)
    c.ehlo()
    r = c.cmd(f"XCLIENT ADDR={ip}")
    if r.code == 220:
        c.ehlo(helo)
    return c, r


def expect(r, code: int, status: str, rid: int) -> None:
    assert (r.code, r.status, r.id) == (code, status, rid), r


def greeted(r) -> None:
    """The new 220 greeting XCLIENT gives when the client is let in."""
    assert r.code == 220 and r.id in (632, 633), r  # 632: a RELAY or white-listed client


def deliver(c: Client, sender: str = "a@sender.example", body: bytes = BODY):
    assert c.cmd(f"MAIL FROM:<{sender}>").code == 250
    assert c.cmd("RCPT TO:<b@example.com>").code == 250
    assert c.cmd("DATA").code == 354
    c.send(body + b".\r\n")
    return c.read()


# --- the client name ------------------------------------------------------------------------


@pytest.mark.parametrize("ip, shown", [
    ("198.51.100.10", b"(mail.clients.test [198.51.100.10])"),  # confirmed
    ("198.51.100.13", b"(multi2.clients.test [198.51.100.13])"),  # the PTR that confirms
    ("198.51.100.11", b"(unknown [198.51.100.11])"),  # forged: resolves elsewhere
    ("198.51.100.12", b"(unknown [198.51.100.12])"),  # forged: does not resolve
    ("198.51.100.14", b"(unknown [198.51.100.14])"),  # no PTR
    ("198.51.100.15", b"(unknown [198.51.100.15])"),  # DNS failure
    ("2001:db8::10", b"(mail.clients.test [2001:db8::10])"),
])
def test_received_header_shows_the_confirmed_ptr_name(sink, make_proxy, ip, shown):
    proxy = make_proxy(routes_to(sink))
    sender = f"from-{ip.replace(':', '-')}@sender.example"
    c, r = arrive(proxy, ip, helo="helo.example")
    with c:
        greeted(r)
        assert deliver(c, sender=sender).code == 250
    body = sink.bodies(sender=sender)[0]
    assert body.startswith(b"Received: from helo.example " + shown)


def test_forged_and_failed_ptrs_are_logged(sink, make_proxy):
    proxy = make_proxy(routes_to(sink))
    for ip in ("198.51.100.11", "198.51.100.15"):
        c, r = arrive(proxy, ip)
        with c:
            greeted(r)
    wait_for(lambda: "PTR lookup failed" in proxy.log_text(), what="log line")
    log = proxy.log_text()
    assert "client [198.51.100.11] PTR liar.clients.test does not resolve back: forged" in log
    assert "client [198.51.100.15] PTR lookup failed" in log


def test_xclient_name_is_taken_as_given(sink, make_proxy):
    proxy = make_proxy(routes_to(sink))
    with Client(proxy.port) as c:
        c.ehlo()
        assert c.cmd("XCLIENT ADDR=198.51.100.11 NAME=verified.example").code == 220
        c.ehlo("helo.example")
        assert deliver(c, sender="named@sender.example").code == 250
    with Client(proxy.port) as c:
        c.ehlo()
        assert c.cmd("XCLIENT ADDR=198.51.100.10 NAME=[UNAVAILABLE]").code == 220  # no lookup
        c.ehlo("helo.example")
        assert deliver(c, sender="unavailable@sender.example").code == 250
    assert b"(verified.example [198.51.100.11])" in sink.bodies(sender="named@sender.example")[0]
    assert b"(unknown [198.51.100.10])" in sink.bodies(sender="unavailable@sender.example")[0]


def test_access_map_uses_only_a_confirmed_name(access):
    proxy = access("connect:clients.test REJECT\n")
    c, r = arrive(proxy, "198.51.100.10")
    with c:
        expect(r, 550, "5.7.1", 120)
        assert r.text.startswith("5.7.1 host mail.clients.test [198.51.100.10] black listed #120")
        assert c.closed()
    c, r = arrive(proxy, "198.51.100.11")  # claims liar.clients.test, which does not resolve back
    with c:
        greeted(r)


def test_route_map_relay_by_confirmed_name(sink, make_proxy):
    proxy = make_proxy(routes_to(sink) + "route:relay.clients.test RELAY\n")
    c, r = arrive(proxy, "198.51.100.17")
    with c:
        greeted(r)
        assert c.cmd("MAIL FROM:<a@clients.test>").code == 250
        assert c.cmd("RCPT TO:<x@elsewhere.example>").id == 297  # relayed


# --- dns-bl (#525) --------------------------------------------------------------------------------


def test_dns_bl_525_drops_a_listed_client(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "dns-bl=bl.test")
    c, r = arrive(proxy, "198.51.100.2")
    with c:
        expect(r, 550, "5.7.0", 525)
        assert r.text.startswith("5.7.0 listed.clients.test [198.51.100.2] black listed by bl.test #525")
        assert c.closed()
    c, r = arrive(proxy, "198.51.100.10")  # not listed
    with c:
        greeted(r)
        assert deliver(c).code == 250
    assert proxy.metric("barricade_dns_list_hits_total", check="dns-bl", list="bl.test") == 1
    assert proxy.metric("barricade_replies_total", id="525", code="550", status="5.7.0") == 1
    assert proxy.metric("barricade_dns_lookups_total", type="A", result="answer") >= 1


@pytest.mark.parametrize("lists, ip, listed", [
    ("bl.test/0x04", "198.51.100.2", False),  # answer 127.0.0.2, mask wants bit 0x04
    ("bl.test/0x04", "198.51.100.4", True),
    ("bl.test", "198.51.100.1", False),  # 127.0.0.1 never lists without a mask
    ("bl.test", "198.51.100.7", False),  # 10.0.0.2: outside 127/8
    ("wl.test; bl.test", "2001:db8::2", True),  # IPv6 nibbles; the first list says nothing
])
def test_dns_bl_masks_and_addresses(sink, make_proxy, lists, ip, listed):
    proxy = make_proxy(routes_to(sink), f"dns-bl={lists}")
    c, r = arrive(proxy, ip)
    with c:
        if listed:
            expect(r, 550, "5.7.0", 525)
            assert "black listed by bl.test #525" in r.text
        else:
            greeted(r)


def test_dns_bl_skips_a_list_that_fails(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "dns-bl=servfail.test,bl.test")
    c, r = arrive(proxy, "198.51.100.2")
    with c:
        expect(r, 550, "5.7.0", 525)
    c, r = arrive(proxy, "198.51.100.10")
    with c:
        greeted(r)
    assert "dns-bl 10.100.51.198.servfail.test: DNS servfail; list skipped" in proxy.log_text()


def test_dns_bl_waits_for_rcpt_with_smtp_delay_checks(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "dns-bl=bl.test", "+smtp-delay-checks")
    c, r = arrive(proxy, "198.51.100.2")
    with c:
        greeted(r)
        assert c.cmd("MAIL FROM:<a@sender.example>").code == 250
        r = c.cmd("RCPT TO:<b@example.com>")
        expect(r, 550, "5.7.0", 525)
        assert "listed.clients.test [198.51.100.2] black listed by bl.test" in r.text
    sink.assert_nothing_from()


def test_dns_bl_leaves_relay_clients_alone(sink, make_proxy):
    proxy = make_proxy(routes_to(sink) + "route:198.51.100.2 RELAY\n", "dns-bl=bl.test")
    c, r = arrive(proxy, "198.51.100.2")
    with c:
        greeted(r)


# --- dns-wl and dns-gl -------------------------------------------------------------------------


def test_dns_wl_white_lists_the_session(access):
    proxy = access("from:bad.example REJECT\n", "dns-wl=wl.test", "dns-bl=bl.test")
    c, r = arrive(proxy, "198.51.100.20")  # in wl.test and in bl.test: the white list comes first
    with c:
        greeted(r)
        assert deliver(c, sender="x@bad.example").code == 250  # From: REJECT skipped
        assert deliver(c, sender="y@bad.example").code == 250  # ... for the whole session
    c, r = arrive(proxy, "198.51.100.10")
    with c:
        greeted(r)
        expect(c.cmd("MAIL FROM:<x@bad.example>"), 550, "5.7.1", 127)
    assert proxy.metric("barricade_dns_list_hits_total", check="dns-wl", list="wl.test") == 1


def test_dns_gl_skips_envelope_tests_but_not_content(access, sink):
    proxy = access("from:bad.example REJECT\n", "dns-gl=gl.test", "dns-bl=bl.test",
                   "dns-bl-headers=Received")
    c, r = arrive(proxy, "198.51.100.30")  # in gl.test and in bl.test: dns-bl is not asked
    with c:
        greeted(r)
        assert deliver(c, sender="x@bad.example").code == 250
        assert deliver(c, sender="y@bad.example").code == 250  # CONTENT holds for every MAIL
        listed = b"Received: from relay.example ([203.0.113.5]) by x\r\n" + BODY
        expect(deliver(c, sender="z@bad.example", body=listed), 550, "5.7.0", 873)
    assert {b.split(b"\n", 1)[0][:14] for b in sink.bodies()} == {b"Received: from"}
    assert len(sink.bodies()) == 2
    assert proxy.metric("barricade_dns_list_hits_total", check="dns-gl", list="gl.test") == 1


# --- dns-bl-headers (#873) -----------------------------------------------------------------------


def test_dns_bl_headers_873_rejects_a_listed_address_in_a_header(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "dns-bl=bl.test", "dns-bl-headers=Received; X-Originating-IP")
    c, r = arrive(proxy, "198.51.100.10")
    with c:
        listed = b"X-Originating-IP: [203.0.113.5]\r\n" + BODY
        r = deliver(c, sender="listed@sender.example", body=listed)
        expect(r, 550, "5.7.0", 873)
        assert r.text.startswith("5.7.0 IP [203.0.113.5] in header black listed by bl.test #873")
        clean = b"X-Originating-IP: [203.0.113.6]\r\nReceived: from a ([10.1.2.3])\r\n" + BODY
        assert deliver(c, sender="clean@sender.example", body=clean).code == 250
        other = b"X-Other: 203.0.113.5\r\n" + BODY  # not a listed header
        assert deliver(c, sender="other@sender.example", body=other).code == 250
    sink.assert_nothing_from("listed@sender.example")
    assert len(sink.bodies(sender="clean@sender.example")) == 1
    assert len(sink.bodies(sender="other@sender.example")) == 1
    assert proxy.metric("barricade_replies_total", id="873", code="550", status="5.7.0") == 1


# --- DNS that does not answer ---------------------------------------------------------------------


def test_a_silent_dns_server_never_hangs_the_session(sink, make_proxy, dns_blackhole):
    """Every lookup times out after dns-max-timeout: the name stays unknown, the list
    is skipped, and the pipeline's own check-timeout (1 s here) never fires (#907)."""
    proxy = make_proxy(routes_to(sink), f"dns-servers={dns_blackhole.server}", "dns-max-timeout=1",
                       "check-timeout=1", "dns-bl=bl.test", "dns-bl-headers=Received")
    c, r = arrive(proxy, "198.51.100.2")  # listed in bl.test, if DNS answered
    with c:
        greeted(r)
        body = b"Received: from relay.example ([203.0.113.5]) by x\r\n" + BODY
        assert deliver(c, sender="silent@sender.example", body=body).code == 250
    assert sink.bodies(sender="silent@sender.example")[0].startswith(
        b"Received: from client.example (unknown [198.51.100.2])")
    assert proxy.metric("barricade_dns_lookups_total", type="PTR", result="timeout") == 1
    assert proxy.metric("barricade_dns_lookups_total", type="A", result="timeout") >= 2
    assert proxy.metric("barricade_replies_total", id="907") is None
    assert "DNS timeout; list skipped" in proxy.log_text()
