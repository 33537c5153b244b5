"""Msg-Limit-*, Null-Rate-To:, Length-*, dupmsg, the connect-limit options
(rate-drop, rate-421-delay, rate-throttle, concurrent-drop) and state-failure
per family, end to end: real SMTP through the proxy to smtp-sink, on the
memory store and on a real redis-server.  The client is presented as an
outside host with XCLIENT."""

from __future__ import annotations

import re
import socket
import time
import uuid

import pytest

from barricade.testing import Client, Sink, routes_to, wait_for
from tests.state import RedisServer

pytestmark = pytest.mark.integration

OUTSIDE = "XCLIENT ADDR=192.0.2.1 NAME=mail.outside.example"


def expect(r, code: int, status: str, rid: int) -> None:
    assert (r.code, r.status, r.id) == (code, status, rid), r


def outside(port: int, xclient: str = OUTSIDE) -> Client:
    """A session from localhost turned into the outside client, after EHLO."""
    c = Client(port)
    assert c.cmd(xclient).code == 220
    assert c.ehlo("outside.example").code == 250
    return c


def body(subject: str, msgid: str | None = None, text: str = "hello") -> bytes:
    head = f"Message-ID: <{msgid}>\r\n" if msgid else ""
    return f"{head}Subject: {subject}\r\n\r\n{text}\r\n".encode()


def subjects(sink) -> list[str]:
    return [m.group(1).decode() for raw in sink.messages()
            for m in [re.search(rb"^Subject: (.*)$", raw, re.MULTILINE)] if m]


def settle(sink, count: int) -> None:
    """Wait until ``count`` messages arrived, then a moment for any that should not."""
    wait_for(lambda: len(sink.messages()) >= count, what=f"{count} deliveries")
    time.sleep(0.3)


# --- Msg-Limit-* ----------------------------------------------------------------------


@pytest.mark.parametrize("tag, key, who, other", [
    ("msg-limit-connect", "192.0.2.1", "192.0.2.1", ("XCLIENT ADDR=192.0.2.2", "a@example.org", "b")),
    ("msg-limit-from", "example.org", "a@example.org", (OUTSIDE, "c@example.org", "b")),
    ("msg-limit-to", "b@example.com", "b@example.com", (OUTSIDE, "a@example.org", "c")),
])
def test_msg_limit_two_per_hour_third_rcpt_gets_475(limited, backend, sink, tag, key, who, other):
    proxy = limited(f"{tag}:{key} 2/1h\n", *backend)
    with outside(proxy.port) as c:
        assert c.message("a@example.org", ["b@example.com"], body("one")).code == 250
        assert c.message("a@example.org", ["b@example.com"], body("two")).code == 250
        assert c.cmd("MAIL FROM:<a@example.org>").code == 250
        r = c.cmd("RCPT TO:<b@example.com>")
        expect(r, 451, "4.7.1", 475)
        assert f"{who} has exceeded 2 messages per 1 hour" in r.text
        assert c.cmd("RSET").code == 250
    xclient, sender, rcpt = other
    with outside(proxy.port, xclient) as c:  # another client, sender or recipient: its own count
        assert c.message(sender, [f"{rcpt}@example.com"], body("three")).code == 250
    settle(sink, 3)
    assert sorted(subjects(sink)) == ["one", "three", "two"]
    assert proxy.metric("barricade_limit_hits_total", limit="msg-limit") == 1
    assert proxy.metric("barricade_replies_total", id="475") == 1


def test_msg_limit_to_minus_one_exempts_a_recipient_from_the_sender_limit(limited, backend):
    proxy = limited("msg-limit-from:a@example.org 1/10m\nmsg-limit-to:vip@example.com -1\n", *backend)
    with outside(proxy.port) as c:
        assert c.cmd("MAIL FROM:<a@example.org>").code == 250
        assert c.cmd("RCPT TO:<b@example.com>").code == 250
        r = c.cmd("RCPT TO:<c@example.com>")
        expect(r, 451, "4.7.1", 475)
        assert "a@example.org has exceeded 1 message per 10 minutes" in r.text
        assert c.cmd("RCPT TO:<vip@example.com>").code == 250


@pytest.mark.parametrize("mode", ["tempfail-report", "report-only", "report-discard"])
def test_msg_limit_report_once_then_tempfail_accept_or_discard(limited, sink, mode):
    proxy = limited("msg-limit-to:b@example.com 1/1h\n", f"msg-limit-report={mode}",
                    "report-to=reports@example.com")
    with outside(proxy.port) as c:
        assert c.message("a@example.org", ["b@example.com"], body("first")).code == 250
        for n in (2, 3):  # over the limit twice: one report only
            assert c.cmd("MAIL FROM:<a@example.org>").code == 250
            r = c.cmd("RCPT TO:<b@example.com>")
            if mode == "tempfail-report":
                expect(r, 451, "4.7.1", 475)
                assert c.cmd("RSET").code == 250
                continue
            assert r.code == 250
            assert c.cmd("DATA").code == 354
            c.send(body(f"over {n}") + b".\r\n")
            expect(c.read(), 250, "2.0.0", 554)  # report-discard too: accepted, then dropped
    wait_for(lambda: sink.bodies(""), what="the report")
    settle(sink, 2)
    reports = sink.bodies("")
    assert len(reports) == 1
    assert b"Subject: message limit exceeded" in reports[0]
    assert b"b@example.com has exceeded 1 message per 1 hour" in reports[0]
    assert b"Auto-Submitted: auto-generated" in reports[0]
    delivered = sorted(s for s in subjects(sink) if s != "message limit exceeded")
    assert delivered == (["first", "over 2", "over 3"] if mode == "report-only" else ["first"])
    assert proxy.metric("barricade_limit_hits_total", limit="msg-limit") == 2


# --- Null-Rate-To: ------------------------------------------------------------------------


def test_null_rate_two_dsns_per_domain_third_gets_505(limited, backend, sink):
    proxy = limited("null-rate-to:example.com 2\nnull-rate-to:vip@example.com -1\n", *backend,
                    "-one-rcpt-per-null")  # several recipients of one DSN here
    with outside(proxy.port) as c:
        assert c.cmd("MAIL FROM:<>").code == 250
        assert c.cmd("RCPT TO:<a@example.com>").code == 250
        assert c.cmd("RCPT TO:<b@example.com>").code == 250
        r = c.cmd("RCPT TO:<c@example.com>")
        expect(r, 550, "5.7.1", 505)
        assert "null-sender messages 3 for <c@example.com> exceed 2/60s" in r.text
        assert c.cmd("RCPT TO:<vip@example.com>").code == 250  # -1: no limit
        assert c.cmd("DATA").code == 354
        c.send(body("bounce") + b".\r\n")
        assert c.read().code == 250
        # Mail with a sender is not a DSN: not counted, not limited.
        assert c.message("x@example.org", ["d@example.com"], body("normal")).code == 250
    with Client(proxy.port) as local:  # localhost is exempt
        local.ehlo()
        assert local.cmd("MAIL FROM:<>").code == 250
        assert local.cmd("RCPT TO:<e@example.com>").code == 250
    assert proxy.metric("barricade_limit_hits_total", limit="null-rate-to") == 1
    assert proxy.metric("barricade_replies_total", id="505", event="rcpt") == 1


# --- Length-* --------------------------------------------------------------------------------


def sized(n: int, subject: str) -> bytes:
    """A message of exactly ``n`` octets (as received: headers, blank line, body)."""
    head = f"Subject: {subject}\r\n\r\n".encode()
    lines, rest = divmod(n - len(head), 100)
    if rest == 1:
        lines, rest = lines - 1, 101
    last = b"x" * (rest - 2) + b"\r\n" if rest else b""
    data = head + (b"x" * 98 + b"\r\n") * lines + last
    assert len(data) == n
    return data


LENGTHS = ("length-connect:192.0.2.1 300\nlength-from:big@example.org 1K\n"
           "length-to:small@example.com 200\nlength-to:huge@example.com -1\n")


def test_length_boundaries_at_the_dot(limited, sink):
    proxy = limited(LENGTHS)
    cases = [  # sender, recipients, octets allowed
        ("a@example.org", ["b@example.com"], 300),  # Length-Connect:
        ("big@example.org", ["b@example.com"], 1024),  # Length-From: over Connect
        ("big@example.org", ["small@example.com"], 200),  # Length-To: over From
    ]
    with outside(proxy.port) as c:
        assert any(line.startswith("SIZE") for line in c.ehlo("outside.example").lines)
        for sender, rcpts, limit in cases:
            assert c.message(sender, rcpts, sized(limit, f"ok {limit}")).code == 250
            r = c.message(sender, rcpts, sized(limit + 1, f"over {limit}"))
            expect(r, 550, "5.3.4", 625)
            assert (f"mail.outside.example [192.0.2.1] ({limit + 1} bytes) exceeded max. "
                    f"message size of {limit} bytes") in r.text
        # The largest Length-To: of the recipients applies; -1 is unlimited.
        assert c.message("a@example.org", ["small@example.com", "huge@example.com"],
                         sized(5000, "unlimited")).code == 250
        # A big message is refused while it streams; the session goes on.
        r = c.message("a@example.org", ["b@example.com"], sized(300_000, "huge"))
        expect(r, 550, "5.3.4", 625)
        assert c.message("a@example.org", ["b@example.com"], sized(100, "after")).code == 250
    settle(sink, 5)
    assert sorted(subjects(sink)) == ["after", "ok 1024", "ok 200", "ok 300", "unlimited"]
    assert proxy.metric("barricade_limit_hits_total", limit="length") == 4


def test_length_against_mail_size_at_rcpt(limited):
    proxy = limited(LENGTHS)
    with outside(proxy.port) as c:
        assert c.cmd("MAIL FROM:<a@example.org> SIZE=301").code == 250
        r = c.cmd("RCPT TO:<b@example.com>")
        expect(r, 552, "5.3.4", 950)
        assert "<b@example.com> (301 bytes) exceeded max. message size of 300 bytes" in r.text
        assert c.cmd("RCPT TO:<huge@example.com>").code == 250  # unlimited for this one
        assert c.cmd("RSET").code == 250
        assert c.cmd("MAIL FROM:<a@example.org> SIZE=300").code == 250
        assert c.cmd("RCPT TO:<b@example.com>").code == 250


# --- dupmsg ----------------------------------------------------------------------------------


def send_and_vanish(port: int, data: bytes) -> object:
    """Deliver a message, read the 250, and go away without another command
    (what an MTA does with a cached connection it no longer needs)."""
    c = outside(port)
    r = c.message("a@example.org", ["b@example.com"], data)
    c.close()
    return r


def leave_at_the_dot(port: int, sink: Sink, data: bytes) -> str:
    """Send a message and leave while its dot is downstream, before our reply
    (a client whose end-of-data timeout ran out); returns the session id."""
    c = outside(port)
    sid = re.search(r"#\d+ (\S+)", c.cmd("NOOP").text).group(1)
    assert c.cmd("MAIL FROM:<a@example.org>").code == 250
    assert c.cmd("RCPT TO:<b@example.com>").code == 250
    assert c.cmd("DATA").code == 354
    dots = sink.dots()
    c.send(data + b".\r\n")
    wait_for(lambda: sink.dots() > dots, what="the dot downstream")
    c.close()
    return sid


def sid_of(r) -> str:
    return re.search(r"#\d+ (\S+)", r.text).group(1)


def remembered(proxy, sid: str) -> bool:
    return any(f"session {sid}" in line and "remembered" in line
               for line in proxy.log_text().splitlines())


def copies(sink, msgid: str) -> int:
    return sum(f"Message-ID: <{msgid}>".encode() in raw for raw in sink.messages())


@pytest.fixture
def slow_sink(tmp_path):
    """smtp-sink that holds its reply to the dot for 2 s (a slow downstream)."""
    s = Sink(tmp_path, "-W", ".:2", verbose=True)
    yield s
    s.stop()


def test_dupmsg_a_message_sent_again_after_our_250_is_delivered_again(sink, make_proxy, backend):
    """A client that read our 250 and closed without QUIT, then sent the same
    message again (a queue re-run, a probe, a user): both copies are delivered."""
    proxy = make_proxy(routes_to(sink), *backend)
    for _ in range(2):
        expect(send_and_vanish(proxy.port, body("again", "resent@example.org")), 250, "2.0.0", 554)
    with outside(proxy.port) as c:
        assert c.message("a@example.org", ["b@example.com"], body("again", "resent@example.org")).code == 250
        assert c.cmd("QUIT").code == 221
    settle(sink, 3)
    assert copies(sink, "resent@example.org") == 3
    assert not remembered(proxy, "")
    assert proxy.metric("barricade_limit_hits_total", limit="dupmsg") in (None, 0)


def test_dupmsg_retry_after_a_lost_reply_is_accepted_and_not_delivered_again(slow_sink, make_proxy, backend):
    sink = slow_sink
    proxy = make_proxy(routes_to(sink), *backend)
    first = leave_at_the_dot(proxy.port, sink, body("dup", "lost@example.org"))
    wait_for(lambda: remembered(proxy, first), what="the message remembered")
    assert "it never saw our 250" in proxy.log_text()
    settle(sink, 1)
    with outside(proxy.port) as c:
        retry = c.message("a@example.org", ["b@example.com"], body("dup", "lost@example.org"))
        expect(retry, 250, "2.0.0", 554)  # the copy we delivered before: accepted, dropped
        # Same body, another Message-ID: another message.
        assert c.message("a@example.org", ["b@example.com"], body("dup", "new@example.org")).code == 250
        assert c.cmd("QUIT").code == 221
    settle(sink, 2)
    assert (copies(sink, "lost@example.org"), copies(sink, "new@example.org")) == (1, 1)
    assert proxy.metric("barricade_limit_hits_total", limit="dupmsg") == 1


def test_dupmsg_track_all_rejects_a_second_copy_except_from_localhost(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "+dupmsg-track-all")
    with outside(proxy.port) as c:
        assert c.message("a@example.org", ["b@example.com"], body("t", "track@example.org")).code == 250
        assert c.cmd("QUIT").code == 221
    with outside(proxy.port) as c:
        expect(c.message("a@example.org", ["b@example.com"], body("t", "track@example.org")),
               550, "5.3.4", 340)
    for _ in range(2):
        with Client(proxy.port) as local:
            local.ehlo()
            assert local.message("a@example.org", ["b@example.com"], body("l", "local@example.org")).code == 250
            assert local.cmd("QUIT").code == 221
    settle(sink, 3)
    assert (copies(sink, "track@example.org"), copies(sink, "local@example.org")) == (1, 2)


def test_dupmsg_ttl_zero_disables_and_no_message_id_is_not_tracked(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "dupmsg-ttl=0")
    send_and_vanish(proxy.port, body("d", "off@example.org"))
    send_and_vanish(proxy.port, body("d", "off@example.org"))
    tracking = make_proxy(routes_to(sink))
    for _ in range(2):  # the same text without a Message-ID: not taken for a duplicate
        assert send_and_vanish(tracking.port, body("no id")).code == 250
    settle(sink, 4)
    assert copies(sink, "off@example.org") == 2
    assert subjects(sink).count("no id") == 2


def test_dupmsg_retry_on_another_process_with_redis(slow_sink, make_proxy, redis_server):
    """The client left while the dot was downstream, and sends the message again to
    another process sharing the Redis prefix (another worker, or another gateway of
    the MX set): that one knows it was delivered.  Two processes of their own, not two
    workers of one master: which worker accepts a connection is the kernel's choice,
    and a loaded machine gave one of them forty in a row."""
    sink = slow_sink
    shared = (f"redis-url={redis_server.url}", f"redis-prefix=t{uuid.uuid4().hex[:8]}:")
    first_gw = make_proxy(routes_to(sink), *shared)
    second_gw = make_proxy(routes_to(sink), *shared)
    ids = [f"w{n}@example.org" for n in range(3)]
    for msgid in ids:
        first = leave_at_the_dot(first_gw.port, sink, body("w", msgid))
        wait_for(lambda s=first: remembered(first_gw, s), what="the message remembered")
        with outside(second_gw.port) as c:
            expect(c.message("a@example.org", ["b@example.com"], body("w", msgid)), 250, "2.0.0", 554)
    settle(sink, len(ids))
    assert [copies(sink, m) for m in ids] == [1] * len(ids)
    assert "shared state in redis" in second_gw.log_text()


# --- rate-drop, concurrent-drop, rate-421-delay, rate-throttle ---------------------------------


def test_rate_without_drop_sinks_the_client_until_quit(limited):
    proxy = limited("rate-connect:192.0.2.1 1\n", "-rate-drop")
    first = outside(proxy.port)
    c = Client(proxy.port)
    r = c.cmd(OUTSIDE)
    expect(r, 421, "4.4.5", 522)
    assert "connections 2 exceed 1/60s" in r.text
    assert not c.closed()  # the sink: still connected
    expect(c.cmd("NOOP"), 250, "2.0.0", 547)
    assert c.cmd("QUIT").code == 221
    assert c.closed()
    c.close()
    c = Client(proxy.port)
    expect(c.cmd(OUTSIDE), 421, "4.4.5", 522)
    r = c.cmd("MAIL FROM:<a@example.org>")
    expect(r, 503, "5.5.1", 251)  # anything but NOOP/QUIT: out of sequence, and closed
    assert c.closed()
    c.close()
    first.close()
    assert proxy.metric("barricade_limit_hits_total", limit="rate-connect") == 2


def test_concurrency_without_drop_sinks_the_client(limited):
    proxy = limited("concurrent-connect:192.0.2.1 1\n", "-concurrent-drop")
    first = outside(proxy.port)
    c = Client(proxy.port)
    expect(c.cmd(OUTSIDE), 421, "4.7.1", 329)
    assert not c.closed()
    expect(c.cmd("NOOP"), 250, "2.0.0", 547)
    expect(c.cmd("EHLO outside.example"), 503, "5.5.1", 251)
    assert c.closed()
    c.close()
    first.close()


def test_rate_421_delay_holds_only_that_client(tmp_path, sink, make_proxy):
    path = tmp_path / "access-map"
    path.write_text("rate-connect:192.0.2.1 1\n")
    # check-timeout below the delay: the delay must not read as a hung check (#907).
    proxy = make_proxy(routes_to(sink), f"access-map={path}", "rate-421-delay=6", "check-timeout=2")
    outside(proxy.port).close()
    gone = Client(proxy.port)
    gone.send(f"{OUTSIDE}\r\n".encode())
    gone.close()  # leaves while its 421 waits
    waiting = Client(proxy.port, timeout=20)
    waiting.send(f"{OUTSIDE}\r\n".encode())
    with outside(proxy.port, "XCLIENT ADDR=192.0.2.2 NAME=other.example") as other:
        assert other.message("a@example.org", ["b@example.com"], body("meanwhile")).code == 250
        assert other.cmd("QUIT").code == 221
    waiting.sock.settimeout(0.2)
    with pytest.raises(TimeoutError):
        waiting.sock.recv(1)  # still waiting while the other client was served
    waiting.sock.settimeout(20)
    expect(waiting.read(), 421, "4.4.5", 522)
    assert waiting.closed()
    waiting.close()
    assert "Traceback" not in proxy.log_text()
    assert proxy.metric("barricade_replies_total", id="907") is None


def test_rate_throttle_pauses_accept_and_every_client_is_served(make_proxy, sink):
    proxy = make_proxy(routes_to(sink), "rate-throttle=2")
    socks = [socket.create_connection(("127.0.0.1", proxy.port), timeout=20) for _ in range(8)]
    try:
        for s in socks:
            assert s.recv(512).startswith(b"220")
    finally:
        for s in socks:
            s.close()
    assert proxy.metric("barricade_limit_hits_total", limit="rate-throttle") >= 1
    assert "exceed rate-throttle=2 per second; accept paused" in proxy.log_text()


# --- state-failure per family ------------------------------------------------------------------


def test_state_failure_per_family(tmp_path, sink, make_proxy):
    where = tmp_path / "own-redis"
    where.mkdir()
    srv = RedisServer(where)
    try:
        path = tmp_path / "access-map"
        path.write_text("msg-limit-to:b@example.com 5/1h\n")
        proxy = make_proxy(routes_to(sink), f"access-map={path}", f"redis-url={srv.url}",
                           "state-failure=skip, msg-limit:tempfail")
        srv.stop()
        with outside(proxy.port) as c:
            assert c.cmd("MAIL FROM:<a@example.org>").code == 250
            expect(c.cmd("RCPT TO:<b@example.com>"), 451, "4.3.0", 945)  # msg-limit: tempfail
            assert c.cmd("RCPT TO:<c@example.com>").code == 250  # no limit, no store
            assert c.cmd("DATA").code == 354
            c.send(body("skip dupmsg", "down@example.org") + b".\r\n")
            assert c.read().code == 250  # dupmsg: skip
        settle(sink, 1)
        assert proxy.metric("barricade_state_failures_total", check="msg-limit", policy="tempfail") == 1
        assert proxy.metric("barricade_state_failures_total", check="dupmsg", policy="skip") == 1
    finally:
        srv.cleanup()


def test_bad_state_failure_stops_start_up(sink, make_proxy):
    with pytest.raises(RuntimeError, match="state-failure"):
        make_proxy(routes_to(sink), "state-failure=grey:maybe")
