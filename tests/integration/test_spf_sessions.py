"""SPF end to end: real SMTP through the proxy, DNS from nsd (tests/zones/spf.test.zone).

Tests connect from 127.0.0.1 (localhost is exempt) and become an outside
client with ``XCLIENT ADDR=198.51.100.x NAME=client.example`` (a NAME: no
PTR lookup), then say EHLO with the name under test.  198.51.100.0/24 is
what ``pass.spf.test`` allows; ``fail``, ``softfail``, ``neutral`` and
``none.spf.test`` say what their names say; ``servfail.test`` cannot be
looked up.  The test kit starts proxies with ``spf-mail-policy=`` (SPF
off): each test sets the policies it is about.
"""

from __future__ import annotations

import re

import pytest

from barricade.testing import Client, routes_to, wait_for

pytestmark = pytest.mark.integration

BODY = b"Subject: hello\r\n\r\nhi\r\n"


def arrive(proxy, ip: str = "198.51.100.50", helo: str = "helo.example", name: str = "client.example") -> Client:
    c = Client(proxy.port, timeout=30)
    c.ehlo()
    r = c.cmd(f"XCLIENT ADDR={ip} NAME={name}")
    assert r.code == 220 and r.id in (632, 633), r  # 632: a RELAY or white-listed client
    assert c.ehlo(helo).code == 250
    return c


def expect(r, code: int, status: str, rid: int) -> None:
    assert (r.code, r.status, r.id) == (code, status, rid), r


def send(c: Client, sender: str, rcpt: str = "b@example.com", body: bytes = BODY):
    """MAIL (which SPF never refuses), RCPT; the RCPT reply, or the dot's when accepted."""
    expect(c.cmd(f"MAIL FROM:<{sender}>"), 250, "2.1.0", 283)
    r = c.cmd(f"RCPT TO:<{rcpt}>")
    if r.code != 250:
        return r
    assert c.cmd("DATA").code == 354
    c.send(body + b".\r\n")
    return c.read()


def headers(sink, sender: str) -> list[bytes]:
    """The delivered message's header lines, unfolded."""
    body = sink.bodies(sender=sender)[0]
    head = body.split(b"\n\n", 1)[0]
    return re.sub(rb"\n[ \t]+", b" ", head).split(b"\n")


def received_spf(sink, sender: str) -> list[str]:
    return [h.decode()[len("Received-SPF: "):] for h in headers(sink, sender) if h.startswith(b"Received-SPF:")]


# --- #702: the MAIL FROM identity --------------------------------------------------------------


def test_fail_reject_702_at_rcpt(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "spf-mail-policy=fail-reject")
    with arrive(proxy) as c:
        r = send(c, "a@fail.spf.test")
        expect(r, 550, "5.7.1", 702)
        assert r.text.startswith(
            "5.7.1 sender <a@fail.spf.test> via helo.example (client.example [198.51.100.50]) SPF result Fail; "
            "fail.spf.test does not designate 198.51.100.50 as permitted sender #702 ")
        expect(c.cmd("RCPT TO:<c@example.com>"), 550, "5.7.1", 702)  # every recipient
        c.cmd("RSET")
        assert send(c, "a@pass.spf.test").code == 250
        assert send(c, "a@softfail.spf.test").code == 250  # fail-reject only
        assert send(c, "a@none.spf.test").code == 250
        assert send(c, "a@twice.spf.test").code == 250  # PermError passes
    assert len(sink.messages()) == 4
    assert proxy.metric("barricade_replies_total", id="702", code="550", status="5.7.1") == 2
    assert proxy.metric("barricade_spf_results_total", scope="mail", result="fail") == 1
    assert proxy.metric("barricade_spf_results_total", scope="mail", result="pass") == 1
    assert proxy.metric("barricade_spf_results_total", scope="mail", result="permerror") == 1


def test_softfail_reject_refuses_softfail_only(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "spf-mail-policy=softfail-reject")
    with arrive(proxy) as c:
        r = send(c, "a@softfail.spf.test")
        expect(r, 550, "5.7.1", 702)
        assert "SPF result SoftFail; softfail.spf.test does not designate 198.51.100.50" in r.text
        c.cmd("RSET")
        assert send(c, "a@fail.spf.test").code == 250  # not in this policy


def test_reply_carries_the_domain_s_explanation(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "spf-mail-policy=softfail-reject,fail-reject")
    with arrive(proxy) as c:
        r = send(c, "a@exp.spf.test")
        expect(r, 550, "5.7.1", 702)
        assert "SPF result Fail; 198.51.100.50 is not one of exp.spf.test's designated mail servers. #702" in r.text


def test_null_sender_is_checked_as_postmaster_at_helo(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "spf-mail-policy=fail-reject")
    with arrive(proxy, helo="fail.spf.test") as c:
        r = send(c, "")
        expect(r, 550, "5.7.1", 702)
        assert "sender <> via fail.spf.test (client.example [198.51.100.50]) SPF result Fail" in r.text
    with arrive(proxy, ip="198.51.100.10", helo="helo.spf.test") as c:
        assert send(c, "").code == 250  # helo.spf.test: v=spf1 a -all, a = 198.51.100.10


# --- #701: the HELO identity ------------------------------------------------------------------


def test_helo_fail_reject_701(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "spf-helo-policy=fail-reject")
    with arrive(proxy, helo="fail.spf.test") as c:
        r = send(c, "a@pass.spf.test")
        expect(r, 550, "5.7.1", 701)
        assert r.text.startswith("5.7.1 HELO fail.spf.test from client.example [198.51.100.50] SPF result Fail; "
                                 "fail.spf.test does not designate 198.51.100.50 as permitted sender #701 ")
    with arrive(proxy, ip="198.51.100.10", helo="helo.spf.test") as c:
        assert send(c, "a@fail.spf.test").code == 250  # spf-mail-policy is off here
    with arrive(proxy, helo="softfail.spf.test") as c:
        assert send(c, "a@x.example").code == 250
    with arrive(proxy, helo="[198.51.100.50]") as c:
        assert send(c, "a@x.example").code == 250  # an address literal: None
    assert proxy.metric("barricade_replies_total", id="701", code="550", status="5.7.1") == 1
    assert proxy.metric("barricade_spf_results_total", scope="helo", result="pass") == 1


def test_helo_is_checked_before_mail(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "spf-helo-policy=softfail-reject", "spf-mail-policy=fail-reject")
    with arrive(proxy, helo="softfail.spf.test") as c:
        expect(send(c, "a@fail.spf.test"), 550, "5.7.1", 701)
    with Client(proxy.port) as c:
        c.ehlo()
        # XCLIENT HELO= names the HELO the upstream MTA saw: that one is checked
        r = c.cmd("XCLIENT ADDR=198.51.100.50 NAME=client.example HELO=softfail.spf.test")
        assert r.code == 220 and r.id in (632, 633), r  # 632: a RELAY or white-listed client
        assert c.ehlo("pass.spf.test").code == 250
        expect(send(c, "a@pass.spf.test"), 550, "5.7.1", 701)


# --- -tag: deliver with the Subject tagged ---------------------------------------------------------


@pytest.mark.parametrize("option, helo, sender, reason", [
    ("spf-mail-policy=fail-tag", "helo.example", "a@fail.spf.test",
     "sender <a@fail.spf.test> via helo.example (client.example [198.51.100.50]) SPF result Fail; "
     "fail.spf.test does not designate 198.51.100.50 as permitted sender"),
    ("spf-mail-policy=softfail-tag,fail-reject", "helo.example", "a@softfail.spf.test",
     "sender <a@softfail.spf.test> via helo.example (client.example [198.51.100.50]) SPF result SoftFail; "
     "softfail.spf.test does not designate 198.51.100.50 as permitted sender"),
    ("spf-helo-policy=fail-tag", "fail.spf.test", "a@pass.spf.test",
     "HELO fail.spf.test from client.example [198.51.100.50] SPF result Fail; "
     "fail.spf.test does not designate 198.51.100.50 as permitted sender"),
])
def test_tag_words_deliver_with_the_subject_tagged(sink, make_proxy, option, helo, sender, reason):
    proxy = make_proxy(routes_to(sink), option, "-spf-received-spf-headers")
    with arrive(proxy, helo=helo) as c:
        assert send(c, sender).code == 250
    lines = headers(sink, sender)
    assert b"Subject: [SPAM] hello" in lines
    assert b"X-Spam-Flag: YES" in lines
    assert f"X-Spam-Reason: {reason}".encode() in lines
    assert not any(h.startswith(b"Received-SPF:") for h in lines)


def test_tag_uses_spamd_subject_tag_and_wins_over_reject(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "spf-mail-policy=fail-reject,fail-tag", "spamd-subject-tag=[SPF]")
    with arrive(proxy) as c:
        assert send(c, "a@fail.spf.test").code == 250
        assert send(c, "b@pass.spf.test", body=b"Subject: clean\r\n\r\nhi\r\n").code == 250
    assert b"Subject: [SPF] hello" in headers(sink, "a@fail.spf.test")
    clean = headers(sink, "b@pass.spf.test")
    assert b"Subject: clean" in clean and not any(h.startswith(b"X-Spam-") for h in clean)


# --- smtp-delay-checks and white lists ---------------------------------------------------------------


@pytest.mark.parametrize("delay", ["+smtp-delay-checks", "-smtp-delay-checks"])
def test_refusal_waits_for_rcpt_where_a_white_listed_recipient_wins(access, sink, delay):
    proxy = access("to:postmaster@example.com OK\n", "spf-mail-policy=fail-reject", delay)
    with arrive(proxy) as c:
        expect(c.cmd("MAIL FROM:<a@fail.spf.test>"), 250, "2.1.0", 283)  # never refused at MAIL
        expect(c.cmd("RCPT TO:<b@example.com>"), 550, "5.7.1", 702)
        expect(c.cmd("RCPT TO:<postmaster@example.com>"), 250, "2.1.5", 297)
        assert c.cmd("DATA").code == 354
        c.send(BODY + b".\r\n")
        assert c.read().code == 250
    assert len(sink.messages()) == 1


def test_held_helo_refusal_and_spf(access, sink):
    """A held access-map refusal and an SPF refusal: the recipient is refused either way."""
    proxy = access("helo:bad.example REJECT\n", "spf-mail-policy=fail-reject", "+smtp-delay-checks")
    with arrive(proxy, helo="bad.example") as c:
        assert c.cmd("MAIL FROM:<a@pass.spf.test>").code == 250
        expect(c.cmd("RCPT TO:<b@example.com>"), 550, "5.7.1", 924)
    with arrive(proxy, helo="good.example") as c:
        assert c.cmd("MAIL FROM:<a@fail.spf.test>").code == 250
        expect(c.cmd("RCPT TO:<b@example.com>"), 550, "5.7.1", 702)


def test_exempt_clients_are_not_checked(tmp_path, sink, make_proxy):
    access_map = tmp_path / "access-map"
    access_map.write_text("connect:198.51.100.61 OK\n")
    proxy = make_proxy(routes_to(sink) + "route:198.51.100.60 RELAY\n", f"access-map={access_map}",
                       "spf-mail-policy=fail-reject", "spf-helo-policy=fail-reject")
    with Client(proxy.port) as c:  # localhost
        c.ehlo("fail.spf.test")
        assert send(c, "local@fail.spf.test").code == 250
    with arrive(proxy, ip="198.51.100.60", helo="fail.spf.test") as c:  # route-map RELAY
        assert send(c, "relay@fail.spf.test").code == 250
    with arrive(proxy, ip="198.51.100.61", helo="fail.spf.test") as c:  # Connect: OK
        assert send(c, "white@fail.spf.test").code == 250
    for sender in ("local@fail.spf.test", "relay@fail.spf.test", "white@fail.spf.test"):
        assert received_spf(sink, sender) == []
    assert proxy.metric("barricade_spf_results_total", scope="mail", result="fail") is None


# --- Received-SPF ------------------------------------------------------------------------------------


def test_received_spf_headers_for_both_identities(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "spf-helo-policy=fail-reject", "spf-mail-policy=fail-reject")
    with arrive(proxy, ip="198.51.100.10", helo="helo.spf.test") as c:
        assert send(c, "a@pass.spf.test").code == 250
        assert send(c, "b@neutral.spf.test").code == 250
    assert received_spf(sink, "a@pass.spf.test") == [
        "pass (barricade.test: domain of postmaster@helo.spf.test designates 198.51.100.10 as permitted sender) "
        'client-ip=198.51.100.10; envelope-from="postmaster@helo.spf.test"; helo=helo.spf.test; '
        "receiver=barricade.test; identity=helo; mechanism=a;",
        "pass (barricade.test: domain of a@pass.spf.test designates 198.51.100.10 as permitted sender) "
        'client-ip=198.51.100.10; envelope-from="a@pass.spf.test"; helo=helo.spf.test; '
        'receiver=barricade.test; identity=mailfrom; mechanism="ip4:198.51.100.0/24";',
    ]
    assert received_spf(sink, "b@neutral.spf.test")[1] == (
        "neutral (barricade.test: 198.51.100.10 is neither permitted nor denied by domain of b@neutral.spf.test) "
        'client-ip=198.51.100.10; envelope-from="b@neutral.spf.test"; helo=helo.spf.test; '
        "receiver=barricade.test; identity=mailfrom; mechanism=?all;")
    body = sink.bodies(sender="a@pass.spf.test")[0]
    assert body.index(b"Received-SPF:") < body.index(b"Subject: hello")  # on top of the message's own


def test_no_received_spf_when_off(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "spf-mail-policy=fail-reject", "-spf-received-spf-headers")
    with arrive(proxy) as c:
        assert send(c, "a@pass.spf.test").code == 250
    assert received_spf(sink, "a@pass.spf.test") == []


# --- spf-best-guess-txt -------------------------------------------------------------------------


def test_best_guess_passes_what_the_domain_does_not(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "spf-mail-policy=fail-reject",
                       "spf-best-guess-txt=v=spf1 ip4:198.51.100.0/25")
    with arrive(proxy) as c:
        assert send(c, "a@fail.spf.test").code == 250  # the guess passes: Pass replaces Fail
    with arrive(proxy, ip="198.51.100.200") as c:
        expect(send(c, "b@fail.spf.test"), 550, "5.7.1", 702)  # the guess does not pass: Fail stays
    assert received_spf(sink, "a@fail.spf.test") == [
        "pass (barricade.test: domain of a@fail.spf.test designates 198.51.100.50 as permitted sender, "
        'by the best-guess record) client-ip=198.51.100.50; envelope-from="a@fail.spf.test"; helo=helo.example; '
        'receiver=barricade.test; identity=mailfrom; mechanism="ip4:198.51.100.0/25";']


def test_best_guess_for_a_domain_without_spf(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "spf-mail-policy=fail-reject", "spf-best-guess-txt=v=spf1 a/24 mx/24 ptr")
    with arrive(proxy) as c:
        assert send(c, "a@guess.spf.test").code == 250
        assert send(c, "b@none.spf.test").code == 250
    assert received_spf(sink, "a@guess.spf.test")[0].startswith("pass ")
    assert received_spf(sink, "b@none.spf.test")[0].startswith("none ")  # the guess gave Neutral: None stays


# --- spf-temp-error-dns ---------------------------------------------------------------------------


def test_temperror_temp_fails_with_451_4_4_3(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "spf-mail-policy=fail-reject", "spf-helo-policy=fail-reject")
    with arrive(proxy, helo="none.spf.test") as c:  # HELO: None
        r = send(c, "a@servfail.test")
        expect(r, 451, "4.4.3", 702)
        assert "SPF result TempError; DNS servfail looking up TXT servfail.test #702" in r.text
        c.cmd("RSET")
        expect(send(c, "a@tempfail.spf.test"), 451, "4.4.3", 702)  # an include that fails
    with arrive(proxy, helo="host.servfail.test") as c:
        r = send(c, "a@pass.spf.test")
        expect(r, 451, "4.4.3", 701)
        assert "HELO host.servfail.test from client.example [198.51.100.50] SPF result TempError" in r.text
    assert proxy.metric("barricade_spf_results_total", scope="mail", result="temperror") == 2


def test_temperror_passes_a_policy_that_only_tags(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "spf-mail-policy=fail-tag")
    with arrive(proxy) as c:
        assert send(c, "a@servfail.test").code == 250
    assert received_spf(sink, "a@servfail.test")[0].startswith("temperror ")


def test_without_spf_temp_error_dns_dns_failures_are_skipped(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "spf-mail-policy=fail-reject", "-spf-temp-error-dns")
    with arrive(proxy) as c:
        assert send(c, "a@servfail.test").code == 250  # the record cannot be had: Neutral
        expect(send(c, "b@tempfail.spf.test"), 550, "5.7.1", 702)  # the broken include is skipped: -all
    header = received_spf(sink, "a@servfail.test")[0]
    assert header.startswith("neutral ")
    assert 'problem="DNS servfail looking up TXT servfail.test (ignored)";' in header
    assert proxy.metric("barricade_spf_results_total", scope="mail", result="temperror") is None


# --- access-map SPF words ---------------------------------------------------------------------------

WORDS = (
    "from:pass.spf.test SPF-PASS\n"
    "from:fail.spf.test SPF-PASS\n"
    "from:softfail.spf.test POLICY-PASS\n"
    "from:none.spf.test POLICY-OK\n"
    "from:neutral.spf.test POLICY-OK\n"
    "connect:198.51.100.70:from:redirect.spf.test POLICY-PASS\n"
    "to:blocked@example.com REJECT\n"
)


@pytest.mark.parametrize("policy", ["spf-mail-policy=", "spf-mail-policy=softfail-reject"])
@pytest.mark.parametrize("sender, white", [
    ("a@pass.spf.test", True),  # SPF-PASS and Pass
    ("a@fail.spf.test", False),  # SPF-PASS and Fail: no result, the lookup stops
    ("a@softfail.spf.test", False),
    ("a@none.spf.test", True),  # POLICY-OK and None
    ("a@neutral.spf.test", False),  # POLICY-OK and Neutral
])
def test_spf_words_white_list_only_what_spf_allows(access, sink, policy, sender, white):
    """A white-listed sender skips the later checks, here To: blocked@ REJECT (#139)."""
    proxy = access(WORDS, policy)
    with arrive(proxy, ip="198.51.100.10") as c:
        expect(c.cmd(f"MAIL FROM:<{sender}>"), 250, "2.1.0", 283)
        r = c.cmd("RCPT TO:<blocked@example.com>")
        if white:
            expect(r, 250, "2.1.5", 297)
        else:
            expect(r, 550, "5.7.1", 139)
    verdict = "white listed" if white else "no result, continuing"
    wait_for(lambda: verdict in proxy.log_text(), what=f"log line {verdict!r}")


def test_connect_from_spf_word(access, sink):
    proxy = access(WORDS, "spf-mail-policy=")
    with arrive(proxy, ip="198.51.100.70") as c:  # redirect.spf.test -> pass.spf.test: Pass
        assert c.cmd("MAIL FROM:<a@redirect.spf.test>").code == 250
        expect(c.cmd("RCPT TO:<blocked@example.com>"), 250, "2.1.5", 297)
    with arrive(proxy, ip="203.0.113.70") as c:  # another client: no Connect:From: entry
        assert c.cmd("MAIL FROM:<a@redirect.spf.test>").code == 250
        expect(c.cmd("RCPT TO:<blocked@example.com>"), 550, "5.7.1", 139)
    line = "access From: connect:198.51.100.70:from:redirect.spf.test -> POLICY-PASS: SPF pass: white listed"
    wait_for(lambda: line in proxy.log_text(), what="log line")
