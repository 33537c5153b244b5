"""The client, HELO and MAIL tests that need DNS, end to end: real SMTP through the
proxy, DNS from the test nsd.

Clients are played with ``XCLIENT ADDR=`` (no NAME: the proxy looks the PTR
up as for a real connection).  The address plan: 198.51.100.x in
``tests/zones/100.51.198.in-addr.arpa.zone`` (.10 confirmed, .11 forged, .14
no PTR, .16 an IP-in-PTR name); 100.64.0.x in ``0.64.100.in-addr.arpa.zone``
with the sender domains of ``mxcheck.test.zone`` (.25 the MX of
ok.mxcheck.test, .26 an IP-in-PTR host that is the MX of
dynamic.mxcheck.test, .27 no PTR and the implicit MX of
implicit.mxcheck.test, .29 a forged IP-in-PTR name); 100.65.0.x PTR lookups
SERVFAIL.  ``smtp-drop-after=0`` lets one session collect many refusals.
"""

from __future__ import annotations

import pytest

from barricade.testing import Client, routes_to
from tests.integration.test_explain import check  # noqa: F401

pytestmark = pytest.mark.integration

BODY = b"Subject: dns checks\r\n\r\nhello\r\n"
MANY = "smtp-drop-after=0"


def arrive(proxy, ip: str, helo: str | None = "client.example"):
    """Connect, become ``ip`` through XCLIENT, say EHLO if let in; (client, XCLIENT reply, EHLO reply)."""
    c = Client(proxy.port, timeout=30)
    c.ehlo()
    r = c.cmd(f"XCLIENT ADDR={ip}")
    e = c.ehlo(helo) if r.code == 220 and helo else None
    return c, r, e


def expect(r, code: int, status: str, rid: int) -> None:
    assert (r.code, r.status, r.id) == (code, status, rid), r


def greeted(r) -> None:
    assert r.code == 220 and r.id in (632, 633), r  # 632: a RELAY or white-listed client


# --- client-ptr-required (#415, #416) -------------------------------------------------------


def test_416_a_client_without_ptr_is_dropped(sink, make_proxy):
    proxy = make_proxy(routes_to(sink) + "route:198.51.100.18 RELAY\n", "+client-ptr-required")
    c, r, _ = arrive(proxy, "198.51.100.14")
    with c:
        expect(r, 554, "5.7.1", 416)
        assert r.text.startswith("5.7.1 reject [198.51.100.14] missing PTR record #416")
        assert c.closed()
    for ip in ("198.51.100.10",  # confirmed
               "198.51.100.11",  # forged: a PTR all the same
               "198.51.100.18",  # no usable PTR, but a route-map RELAY
               "10.1.2.3"):  # LAN
        c, r, e = arrive(proxy, ip)
        with c:
            greeted(r)
            assert e.code == 250
    with Client(proxy.port) as c:  # localhost is never looked up, nor refused
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@sender.example>").code == 250
    assert proxy.metric("barricade_replies_total", id="416", code="554", status="5.7.1") == 1


def test_415_a_failed_ptr_lookup_is_a_temporary_refusal(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "+client-ptr-required")
    c, r, _ = arrive(proxy, "100.65.0.1")  # SERVFAIL
    with c:
        expect(r, 421, "4.4.3", 415)
        assert r.text.startswith("4.4.3 PTR record lookup error for [100.65.0.1] #415")
        assert c.closed()


def test_415_when_dns_times_out_without_hanging(sink, make_proxy, dns_blackhole):
    """A silent name server: the lookups give up after dns-max-timeout, never a hang or #907."""
    proxy = make_proxy(routes_to(sink), f"dns-servers={dns_blackhole.server}", "dns-max-timeout=1",
                       "check-timeout=1", "+client-ptr-required", "+mail-require-mx")
    c, r, _ = arrive(proxy, "198.51.100.14")
    with c:
        expect(r, 421, "4.4.3", 415)
        assert c.closed()
    with Client(proxy.port, timeout=30) as c:  # a given NAME: no PTR lookup; then the MX lookup times out
        c.ehlo()
        greeted(c.cmd("XCLIENT ADDR=198.51.100.10 NAME=mail.clients.test"))
        c.ehlo("mail.clients.test")
        r = c.cmd("MAIL FROM:<a@ok.mxcheck.test>")
        expect(r, 451, "4.4.3", 436)
        assert r.text.startswith("4.4.3 sender <a@ok.mxcheck.test> from ok.mxcheck.test MX lookup error #436")
    assert proxy.metric("barricade_replies_total", id="907") is None
    assert "MX of ok.mxcheck.test: DNS timeout" in proxy.log_text()


# --- client-ip-in-ptr (#418) -----------------------------------------------------------------


def test_418_a_ptr_built_from_the_address_is_dropped(sink, make_proxy):
    proxy = make_proxy(routes_to(sink) + "route:198.51.100.16 RELAY\n", "+client-ip-in-ptr")
    c, r, _ = arrive(proxy, "100.64.0.26")
    with c:
        expect(r, 550, "5.7.1", 418)
        assert r.text.startswith("5.7.1 reject IP in client name 100-64-0-26.dyn.mxcheck.test [100.64.0.26] (1) #418")
        assert c.closed()
    c, r, _ = arrive(proxy, "100.64.0.29")  # forged, and built from the address: the PTR is named
    with c:
        expect(r, 550, "5.7.1", 418)
        assert "reject IP in client name 6440001d.pool.mxcheck.test [100.64.0.29] (1)" in r.text
    for ip in ("198.51.100.10", "198.51.100.14", "198.51.100.16"):  # a plain name, none, a RELAY
        c, r, _ = arrive(proxy, ip)
        with c:
            greeted(r)
    assert "client [100.64.0.26] PTR 100-64-0-26.dyn.mxcheck.test looks built from the address (rule 11)" \
        in proxy.log_text()


# --- helo-ip-mismatch (#424), helo-is-ptr (#432) -------------------------------------------------


def test_424_a_helo_address_that_is_not_the_clients(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "+helo-ip-mismatch")
    c, r, e = arrive(proxy, "198.51.100.10", helo="[198.51.100.99]")
    with c:
        greeted(r)
        expect(e, 550, "5.7.0", 424)
        assert e.text.startswith("5.7.0 HELO [198.51.100.99] does not match client mail.clients.test [198.51.100.10] #424")
        assert c.closed()
    c, r, e = arrive(proxy, "198.51.100.14", helo="3405803785")  # 203.0.113.9 as a number
    with c:
        expect(e, 550, "5.7.0", 424)
        assert "does not match client unknown [198.51.100.14]" in e.text
    for helo in ("[198.51.100.10]", "[192.168.1.20]", "mail.clients.test"):  # its own, a LAN one, a name
        c, r, e = arrive(proxy, "198.51.100.10", helo=helo)
        with c:
            assert e.code == 250, helo
    c, r, e = arrive(proxy, "10.1.2.3", helo="[198.51.100.99]")  # a LAN client may say anything
    with c:
        assert e.code == 250


def test_432_helo_is_the_clients_ip_in_ptr_name(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "+helo-is-ptr")
    c, r, e = arrive(proxy, "198.51.100.16", helo="ADSL-198-51-100-16.clients.test")
    with c:
        greeted(r)
        expect(e, 550, "5.7.0", 432)
        assert e.text.startswith("5.7.0 HELO ADSL-198-51-100-16.clients.test equivalent to client IP-in-PTR #432")
        assert c.closed()
    c, r, e = arrive(proxy, "198.51.100.16", helo="mta.clients.test")  # another name: fine
    with c:
        assert e.code == 250
        assert c.cmd("MAIL FROM:<a@sender.example>").code == 250
    c, r, e = arrive(proxy, "198.51.100.10", helo="mail.clients.test")  # its PTR, not built from the IP
    with c:
        assert e.code == 250


# --- mail-require-mx (#434, #436, #439) --------------------------------------------------------


@pytest.fixture
def require_mx(sink, make_proxy, tmp_path):
    access = tmp_path / "access-map"
    access.write_text("connect:198.51.100.20 OK\n")  # white-listed
    return make_proxy(routes_to(sink) + "route:ours.example FORWARD: 127.0.0.1:1\n"
                      "route:198.51.100.17 RELAY\n", "+mail-require-mx", MANY, f"access-map={access}")


@pytest.mark.parametrize("sender, code, status, rid", [
    ("a@nosuch.mxcheck.test", 553, "5.1.8", 434),  # NXDOMAIN
    ("a@nomx.mx.test", 553, "5.1.8", 434),  # exists, neither MX nor address
    ("a@servfail.test", 451, "4.4.3", 436),  # the MX lookup fails
    ("a@broken.mx.test", 451, "4.4.3", 436),  # the only MX host's lookup fails
    ("a@null.mx.test", 553, "5.1.8", 439),  # RFC 7505 null MX
    ("a@loopback.mx.test", 553, "5.1.8", 439),  # MX at 127.0.0.1
    ("a@lan.mx.test", 553, "5.1.8", 439),  # MX at 10.0.0.25
    ("a@dangling.mx.test", 553, "5.1.8", 439),  # MX host without address
    ("a@testnet.mxcheck.test", 553, "5.1.8", 439),  # MX in documentation space
    ("a@pruned.mxcheck.test", 553, "5.1.8", 439),  # loopback and documentation
])
def test_mail_require_mx_refusals(require_mx, sender, code, status, rid):
    c, r, _ = arrive(require_mx, "198.51.100.10")
    with c:
        greeted(r)
        reply = c.cmd(f"MAIL FROM:<{sender}>")
        expect(reply, code, status, rid)
        domain = sender.partition("@")[2]
        assert reply.text.startswith(f"{status} sender <{sender}> from {domain} ")
        assert c.cmd("MAIL FROM:<a@ok.mxcheck.test>").code == 250  # a refused MAIL ends only its transaction


def test_mail_require_mx_texts(require_mx):
    c, r, _ = arrive(require_mx, "198.51.100.10")
    with c:
        assert c.cmd("MAIL FROM:<a@nomx.mx.test>").text.startswith(
            "5.1.8 sender <a@nomx.mx.test> from nomx.mx.test has no MX record #434")
        assert c.cmd("MAIL FROM:<a@null.mx.test>").text.startswith(
            "5.1.8 sender <a@null.mx.test> from null.mx.test MX invalid #439")
        assert c.cmd("MAIL FROM:<a@pruned.mxcheck.test>").id == 439
    log = require_mx.log_text()
    assert "MX of null.mx.test invalid: null MX" in log
    assert "MX of pruned.mxcheck.test invalid: no routable address for lo.mxcheck.test, doc.mxcheck.test" in log


@pytest.mark.parametrize("sender", [
    "a@ok.mxcheck.test",  # an MX at a routable address
    "a@implicit.mxcheck.test",  # no MX, an address: the implicit MX
    "a@partial.mxcheck.test",  # one good MX, one whose lookup fails
    "",  # the null sender
    "a@ours.example",  # a route-map domain: not looked up (not in DNS at all)
    "a@[198.51.100.1]",  # an address literal
])
def test_mail_require_mx_passes(require_mx, sink, sender):
    c, r, _ = arrive(require_mx, "198.51.100.10")
    with c:
        assert c.cmd(f"MAIL FROM:<{sender}>").code == 250
        assert c.cmd("RCPT TO:<b@example.com>").code == 250


def test_mail_require_mx_spares_localhost_relay_and_white_listed_clients(require_mx):
    with Client(require_mx.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@nosuch.mxcheck.test>").code == 250
    for ip in ("198.51.100.17", "198.51.100.20"):  # RELAY by name; access map connect: OK
        c, r, _ = arrive(require_mx, ip)
        with c:
            greeted(r)
            assert c.cmd("MAIL FROM:<a@nosuch.mxcheck.test>").code == 250, ip


# --- client-is-mx -------------------------------------------------------------------------------


def test_client_is_mx_lets_an_mx_without_ptr_send_for_its_domain(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "+client-ptr-required", "+client-is-mx")
    c, r, _ = arrive(proxy, "100.64.0.27")  # no PTR: not refused at connect
    with c:
        greeted(r)
        assert c.cmd("MAIL FROM:<a@implicit.mxcheck.test>").code == 250  # it is the implicit MX
        assert c.cmd("RCPT TO:<b@example.com>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(BODY + b".\r\n")
        assert c.read().code == 250
        r = c.cmd("MAIL FROM:<a@ok.mxcheck.test>")  # not an MX of that one: refused now
        expect(r, 554, "5.7.1", 416)
        assert c.closed()
    assert len(sink.bodies(sender="a@implicit.mxcheck.test")) == 1
    assert "client [100.64.0.27] is an MX of implicit.mxcheck.test" in proxy.log_text()


def test_client_is_mx_for_the_null_sender_uses_the_helo_domain(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "+client-ptr-required", "+client-is-mx")
    c, r, _ = arrive(proxy, "100.64.0.27", helo="implicit.mxcheck.test")
    with c:
        assert c.cmd("MAIL FROM:<>").code == 250
    c, r, _ = arrive(proxy, "100.64.0.27", helo="elsewhere.mxcheck.test")
    with c:
        expect(c.cmd("MAIL FROM:<>"), 554, "5.7.1", 416)


def test_client_is_mx_softens_ip_in_ptr_and_helo_is_ptr(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "+client-ip-in-ptr", "+client-is-mx", MANY)
    c, r, _ = arrive(proxy, "100.64.0.26")
    with c:
        greeted(r)
        assert c.cmd("MAIL FROM:<a@dynamic.mxcheck.test>").code == 250
        assert c.cmd("RCPT TO:<b@example.com>").code == 250
        c.cmd("RSET")
        expect(c.cmd("MAIL FROM:<a@ok.mxcheck.test>"), 550, "5.7.1", 418)
    proxy = make_proxy(routes_to(sink), "+helo-is-ptr", "+client-is-mx")
    c, r, e = arrive(proxy, "100.64.0.26", helo="100-64-0-26.dyn.mxcheck.test")
    with c:
        assert e.code == 250  # waits for RCPT
        assert c.cmd("MAIL FROM:<a@dynamic.mxcheck.test>").code == 250
        assert c.cmd("RCPT TO:<b@example.com>").code == 250
        c.cmd("RSET")
        assert c.cmd("MAIL FROM:<a@ok.mxcheck.test>").code == 250
        expect(c.cmd("RCPT TO:<b@example.com>"), 550, "5.7.0", 432)
        assert c.closed()


# --- smtp-delay-checks ------------------------------------------------------------------------------


@pytest.fixture
def delayed(sink, make_proxy, tmp_path):
    access = tmp_path / "access-map"
    access.write_text("to:postmaster@example.com OK\n")
    return make_proxy(routes_to(sink), "+smtp-delay-checks", f"access-map={access}", MANY,
                      "+client-ptr-required", "+client-ip-in-ptr", "+helo-ip-mismatch", "+helo-is-ptr",
                      "+mail-require-mx")


@pytest.mark.parametrize("ip, helo, code, status, rid", [
    ("198.51.100.14", "client.example", 554, "5.7.1", 416),
    ("100.65.0.1", "client.example", 421, "4.4.3", 415),
    ("100.64.0.26", "client.example", 550, "5.7.1", 418),
    ("198.51.100.10", "[198.51.100.99]", 550, "5.7.0", 424),
])
def test_delay_checks_hold_connect_and_helo_refusals_until_rcpt(delayed, sink, ip, helo, code, status, rid):
    c, r, e = arrive(delayed, ip, helo=helo)
    with c:
        greeted(r)
        assert e.code == 250
        assert c.cmd("MAIL FROM:<a@ok.mxcheck.test>").code == 250
        assert c.cmd("RCPT TO:<postmaster@example.com>").code == 250  # a white-listed recipient wins
        expect(c.cmd("RCPT TO:<b@example.com>"), code, status, rid)
        assert c.closed()


def test_delay_checks_hold_helo_is_ptr(sink, make_proxy, tmp_path):
    access = tmp_path / "access-map"
    access.write_text("to:postmaster@example.com OK\n")
    proxy = make_proxy(routes_to(sink), "+smtp-delay-checks", f"access-map={access}", "+helo-is-ptr")
    c, r, e = arrive(proxy, "198.51.100.16", helo="adsl-198-51-100-16.clients.test")
    with c:
        assert e.code == 250
        assert c.cmd("MAIL FROM:<a@ok.mxcheck.test>").code == 250
        assert c.cmd("RCPT TO:<postmaster@example.com>").code == 250
        expect(c.cmd("RCPT TO:<b@example.com>"), 550, "5.7.0", 432)
        assert c.closed()


def test_the_first_held_refusal_is_the_one_given(delayed):
    """198.51.100.16's PTR is built from its address (#418 at connect) and is its HELO (#432)."""
    c, r, e = arrive(delayed, "198.51.100.16", helo="adsl-198-51-100-16.clients.test")
    with c:
        greeted(r)
        assert e.code == 250
        assert c.cmd("MAIL FROM:<a@ok.mxcheck.test>").code == 250
        expect(c.cmd("RCPT TO:<b@example.com>"), 550, "5.7.1", 418)


@pytest.mark.parametrize("sender, code, status, rid", [
    ("a@nosuch.mxcheck.test", 553, "5.1.8", 434),
    ("a@servfail.test", 451, "4.4.3", 436),
    ("a@null.mx.test", 553, "5.1.8", 439),
])
def test_delay_checks_hold_mail_require_mx_for_the_transaction(delayed, sender, code, status, rid):
    c, r, e = arrive(delayed, "198.51.100.10", helo="mail.clients.test")
    with c:
        expect(c.cmd(f"MAIL FROM:<{sender}>"), 250, "2.0.0", 507)
        expect(c.cmd("RCPT TO:<b@example.com>"), code, status, rid)
        assert c.cmd("RCPT TO:<postmaster@example.com>").code == 250
        c.cmd("RSET")
        assert c.cmd("MAIL FROM:<a@ok.mxcheck.test>").code == 250  # held for that transaction only
        assert c.cmd("RCPT TO:<b@example.com>").code == 250


def test_the_other_options_are_off_by_default(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "+mail-require-mx")
    c, r, e = arrive(proxy, "198.51.100.14", helo="[198.51.100.99]")  # no PTR, a wrong HELO address
    with c:
        greeted(r)
        assert e.code == 250
        expect(c.cmd("MAIL FROM:<a@null.mx.test>"), 553, "5.1.8", 439)
    c, r, e = arrive(proxy, "198.51.100.16", helo="adsl-198-51-100-16.clients.test")
    with c:
        assert e.code == 250
        assert c.cmd("MAIL FROM:<a@ok.mxcheck.test>").code == 250


# --- barricade-check ----------------------------------------------------------------------------


def test_barricade_check_explains_the_ptr_tests(check):  # noqa: F811
    status, out = check("--client", "198.51.100.16", "--ptr", "adsl-198-51-100-16.example",
                        "+client-ip-in-ptr", "+client-ptr-required")
    assert status == 1
    assert "=> 550 5.7.1 reject IP in client name adsl-198-51-100-16.example [198.51.100.16] (1) #418" in out
    status, out = check("--client", "198.51.100.14", "+client-ptr-required")  # no --ptr: no PTR
    assert status == 1
    assert "=> 554 5.7.1 reject [198.51.100.14] missing PTR record #416" in out
