"""Call-back sender verification at DATA end to end: real SMTP through the proxy,
DNS from the test nsd (``tests/zones/cb.test.zone``), and the senders' MX hosts
as real servers on loopback.

An MX record has no port, so every MX of one test listens on the same free
port (the proxy's ``call-back-port``) on its own 127.0.0.6x address
(127.0.0.0/8 is all loopback on Linux), and the proxy runs with
``call-back-allow-networks=127.0.0.0/8`` (loopback MX hosts are pruned
otherwise, as in smtpf).  smtp-sink answers every RCPT alike, so the MX that
knows some senders and refuses others (``mx-verify``) is a second Barricade
whose route map routes only those addresses (others get #288).
"""

from __future__ import annotations

import socket

import pytest

from barricade.policy.callback import false_local_part
from barricade.testing import Client, Proxy, Sink, free_port, routes_to, wait_for

pytestmark = pytest.mark.integration

OUTSIDE = "XCLIENT ADDR=192.0.2.1 NAME=mail.outside.example"
BODY = b"Subject: call-back\r\n\r\nHello\r\n"
HOSTS = {"verify": "127.0.0.61", "all": "127.0.0.62", "reject": "127.0.0.63",
         "soft": "127.0.0.64", "plain": "127.0.0.65", "silent": "127.0.0.67"}
KNOWN = ("alice@verify.cb.test", "carol@verify.cb.test", "alice@backup.cb.test")


class Silent:
    """An MX that accepts connections (the kernel completes them) and never says a word."""

    def __init__(self, host: str, port: int):
        self.sock = socket.socket()
        self.sock.bind((host, port))
        self.sock.listen(16)

    def stop(self) -> None:
        self.sock.close()


@pytest.fixture
def mx(tmp_path, nsd, make_sink):
    """Factory: start the named MX of cb.test on the shared port ``mx.port``."""
    port = free_port()
    started: dict[str, object] = {}

    def start(name: str):
        if name in started:
            return started[name]
        host = HOSTS[name]
        if name == "verify":
            box = make_sink()  # where mx-verify forwards what it knows
            routes = f"route:local FORWARD: 127.0.0.1:{box.port}\n" + "".join(
                f"route:{addr} FORWARD: 127.0.0.1:{box.port}\n" for addr in KNOWN)
            server = Proxy(tmp_path, routes, f"dns-servers={nsd.server}", port=port, host=host)
        elif name == "silent":
            server = Silent(host, port)
        else:
            args = {"all": ("-h", "mx-all.cb.test"), "reject": ("-f", "RCPT"),
                    "soft": ("-r", "RCPT"), "plain": ()}[name]
            server = Sink(tmp_path, *args, port=port, host=host, verbose=True)
        started[name] = server
        return server

    start.port = port
    yield start
    for server in started.values():
        server.stop()


@pytest.fixture
def proxy(mx, sink, make_proxy):
    """Factory: a call-back proxy (loopback MX allowed, short steps) with these options."""

    def make(*args: str, allow: bool = True):
        opts = ["+call-back", f"call-back-port={mx.port}", "call-ahead-command-timeout=2"]
        if allow:
            opts.append("call-back-allow-networks=127.0.0.0/8")
        return make_proxy(routes_to(sink), *opts, *args)

    return make


def send(port: int, sender: str, xclient: str | None = OUTSIDE):
    """One transaction from an outside client; the reply to DATA unless 354, else to the dot."""
    with Client(port, timeout=30) as c:
        if xclient:
            assert c.cmd(xclient).code == 220
        c.ehlo("mail.outside.example")
        assert c.cmd(f"MAIL FROM:<{sender}>").code == 250
        assert c.cmd("RCPT TO:<b@example.com>").code == 250
        r = c.cmd("DATA")
        if r.code != 354:
            return r
        c.send(BODY + b".\r\n")
        return c.read()


def expect(r, code: int, status: str, rid: int) -> None:
    assert (r.code, r.status, r.id) == (code, status, rid), r


def count(p, result: str) -> float:
    return p.metric("barricade_call_backs_total", result=result) or 0


# --- verdicts ------------------------------------------------------------------------------


def test_known_sender_passes_and_the_domain_is_marked_not_dumb(proxy, mx):
    p = proxy()
    verify = mx("verify")
    assert send(p.port, "alice@verify.cb.test").code == 250  # delivered
    # mx-verify refused the false address (#288) and accepted alice (#297)
    assert verify.metric("barricade_replies_total", id="288") == 1
    assert verify.metric("barricade_replies_total", id="297") == 1
    # sav:verify.cb.test = 5 now: carol is asked about without a false address
    assert send(p.port, "carol@verify.cb.test").code == 250
    assert verify.metric("barricade_replies_total", id="288") == 1
    assert verify.metric("barricade_replies_total", id="297") == 2
    assert (count(p, "made"), count(p, "accept"), count(p, "dumb")) == (2, 2, 0)
    verify.stop()  # sav:alice@verify.cb.test = 2 answers from now on
    assert send(p.port, "alice@verify.cb.test").code == 250
    assert (count(p, "made"), count(p, "cache"), count(p, "accept")) == (2, 1, 3)


def test_unknown_sender_is_refused_550_572_and_cached(proxy, mx):
    p = proxy()
    verify = mx("verify")
    r = send(p.port, "bob@verify.cb.test")
    expect(r, 550, "5.7.0", 572)
    assert "sender <bob@verify.cb.test> verification failed" in r.text
    assert verify.metric("barricade_replies_total", id="288") == 1  # only bob: no false address
    verify.stop()  # the cache answers from now on (sav:<sender> = 5)
    expect(send(p.port, "Bob@verify.cb.test"), 550, "5.7.0", 572)
    assert (count(p, "made"), count(p, "cache"), count(p, "reject")) == (1, 1, 2)
    assert p.metric("barricade_replies_total", id="572", code="550") == 2


def test_hard_reject_asks_once_and_stops(proxy, mx):
    p = proxy()
    sink = mx("reject")
    expect(send(p.port, "x@reject.cb.test"), 550, "5.7.0", 572)
    wait_for(lambda: sink.commands()[-1:] == ["QUIT"], what="QUIT (not waited for) at the sink")
    assert sink.commands() == ["HELO barricade.test", "MAIL FROM:<postmaster@barricade.test>",
                               "RCPT TO:<x@reject.cb.test>", "QUIT"]


def test_soft_reject_is_451_572_and_cached_as_temp_fail(proxy, mx):
    p = proxy()
    sink = mx("soft")
    r = send(p.port, "y@soft.cb.test")
    expect(r, 451, "4.7.0", 572)
    assert "sender <y@soft.cb.test> verification failed" in r.text
    sink.stop()
    expect(send(p.port, "y@soft.cb.test"), 451, "4.7.0", 572)  # sav:<sender> = 4
    assert (count(p, "made"), count(p, "cache"), count(p, "tempfail")) == (1, 1, 2)


def test_accept_all_mx_is_found_and_then_skipped(proxy, mx):
    """The false address (local part reversed plus a Luhn digit) is accepted too:
    the message passes unverified, and the domain is not called back again."""
    p = proxy()
    sink = mx("all")
    assert send(p.port, "john.doe@all.cb.test").code == 250
    false = false_local_part("john.doe")
    assert false.startswith("eod.nhoj") and false[-1].isdigit()
    wait_for(lambda: sink.commands()[-1:] == ["QUIT"], what="QUIT (not waited for) at the sink")
    assert sink.commands() == ["HELO barricade.test", "MAIL FROM:<postmaster@barricade.test>",
                               "RCPT TO:<john.doe@all.cb.test>", f"RCPT TO:<{false}@all.cb.test>",
                               "QUIT"]
    assert send(p.port, "anyone@all.cb.test").code == 250
    assert len(sink.commands()) == 5  # sav:all.cb.test = 2: nobody was asked
    assert (count(p, "dumb"), count(p, "skip"), count(p, "made")) == (1, 1, 1)


def test_implicit_mx(proxy, mx):
    p = proxy()
    sink = mx("all")  # implicit.cb.test has no MX and the address of mx-all
    assert send(p.port, "z@implicit.cb.test").code == 250
    assert "RCPT TO:<z@implicit.cb.test>" in sink.commands()


def test_strict_greeting(proxy, mx):
    """smtp-sink greets "220 smtp-sink ESMTP": not a FQDN; -h mx-all.cb.test is one."""
    p = proxy("+call-back-strict-greeting")
    plain, everything = mx("plain"), mx("all")
    r = send(p.port, "w@plain.cb.test")
    expect(r, 550, "5.7.0", 572)
    assert not any(c.startswith(("HELO", "MAIL", "RCPT")) for c in plain.commands())
    assert send(p.port, "w@all.cb.test").code == 250
    assert "RCPT TO:<w@all.cb.test>" in everything.commands()
    assert count(p, "strict-greeting") == 1


def test_uri_greeting(proxy, mx):
    """mx-all greets as mx-all.cb.test, which dbl.test lists."""
    p = proxy("+call-back-uri-greeting", "domain-bl=dbl.test")
    everything = mx("all")
    expect(send(p.port, "w@all.cb.test"), 550, "5.7.0", 572)
    assert everything.commands(), "the MX was called"
    assert "220 host name mx-all.cb.test black listed by dbl.test" in p.log_text()
    assert count(p, "uri-greeting") == 1
    assert send(proxy("domain-bl=dbl.test").port, "v@all.cb.test").code == 250


def test_plain_greeting_is_fine_without_strict_greeting(proxy, mx):
    p = proxy()
    mx("plain")
    assert send(p.port, "w@plain.cb.test").code == 250


# --- MX trouble ------------------------------------------------------------------------------


def test_next_mx_is_tried_when_one_refuses(proxy, mx):
    p = proxy()
    mx("verify")
    assert send(p.port, "alice@backup.cb.test").code == 250  # mx-dead refused, mx-verify knew her
    wait_for(lambda: "mx-dead.cb.test [127.0.0.66]" in p.log_text(), what="log line")


def test_no_answer_from_any_mx_is_451_488_and_not_cached(proxy, mx):
    p = proxy()
    mx("silent")
    for _ in range(2):
        r = send(p.port, "v@outage.cb.test")  # one MX refuses, the other never speaks
        expect(r, 451, "4.4.4", 488)
        assert "no answer from outage.cb.test MX" in r.text
    assert (count(p, "tempfail"), count(p, "cache"), count(p, "made")) == (2, 0, 0)


def test_call_back_timeout_bounds_the_whole_call_back(proxy, mx):
    p = proxy("call-back-timeout=1", "call-ahead-command-timeout=30")
    mx("silent")
    expect(send(p.port, "v@silent.cb.test"), 451, "4.4.4", 488)
    wait_for(lambda: "call-back-timeout" in p.log_text(), what="log line")


@pytest.mark.parametrize("sender, code, status, rid, text", [
    ("a@nosuch.cb.test", 553, "5.4.4", 489, "nosuch.cb.test does not exist"),
    ("a@x.servfail.test", 451, "4.4.3", 491, "x.servfail.test MX lookup error"),
    ("a@nomx.cb.test", 550, "5.4.4", 493, "no acceptable MX for nomx.cb.test"),
    ("a@dangling.cb.test", 550, "5.4.4", 493, "no acceptable MX for dangling.cb.test"),
    ("a@doc.cb.test", 550, "5.4.4", 493, "no acceptable MX for doc.cb.test"),
    ("a@broken.cb.test", 451, "4.4.3", 498, "broken.cb.test MX host address lookup error"),
    ("a@null.cb.test", 553, "5.4.4", 499, "null.cb.test accepts no mail (null MX)"),
])
def test_mx_replies(proxy, sender, code, status, rid, text):
    p = proxy()
    r = send(p.port, sender)
    expect(r, code, status, rid)
    assert text in r.text
    assert p.metric("barricade_replies_total", id=str(rid)) == 1


def test_loopback_mx_is_pruned_by_default(proxy, mx):
    p = proxy(allow=False)
    verify = mx("verify")
    expect(send(p.port, "alice@verify.cb.test"), 550, "5.4.4", 493)
    assert verify.metric("barricade_replies_total", id="297") is None  # never asked


# --- who is asked, and grey-listing ------------------------------------------------------------


def test_exempt_senders_and_clients_are_not_called_back(proxy, mx):
    p = proxy()
    sink = mx("reject")
    assert send(p.port, "").code == 250  # the null sender
    assert send(p.port, "postmaster@reject.cb.test").code == 250
    assert send(p.port, "x@reject.cb.test", xclient=None).code == 250  # localhost
    assert send(p.port, "x@reject.cb.test", xclient="XCLIENT ADDR=10.1.2.3 NAME=lan.example").code == 250
    assert sink.commands() == []
    assert count(p, "exempt") == 4


def test_pass_grey_lets_a_verified_sender_skip_grey_listing(proxy, mx):
    p = proxy("grey-key=ip,mail,rcpt", "+call-back-pass-grey")
    mx("verify"), mx("all")
    assert send(p.port, "alice@verify.cb.test").code == 250
    assert p.metric("barricade_grey_total", outcome="exempt") == 1
    # an accept-all MX verifies nothing: grey-listed as usual
    expect(send(p.port, "dave@all.cb.test"), 421, "4.7.0", 552)
    # cached verified senders skip it too
    assert send(p.port, "alice@verify.cb.test").code == 250
    assert p.metric("barricade_grey_total", outcome="exempt") == 2


def test_without_pass_grey_a_verified_sender_is_grey_listed(proxy, mx):
    p = proxy("grey-key=ip,mail,rcpt")
    mx("verify")
    expect(send(p.port, "alice@verify.cb.test"), 421, "4.7.0", 552)
    assert count(p, "accept") == 1
