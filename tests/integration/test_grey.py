"""Grey-listing at DATA end to end, on the memory store and on a real
redis-server: real SMTP through the proxy, the client presented as an
outside host with XCLIENT (localhost is exempt).  Periods are 1 s where a
retry must pass (retried until it does, no timing assertions) and the
default 600 s where it must not."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from barricade.testing import Client, routes_to, wait_for
from tests.state import RedisServer

pytestmark = pytest.mark.integration

GREY = "grey-key=ptr,mail,rcpt"  # smtpf's default; the test kit turns grey-listing off
SLOW = "XCLIENT ADDR=192.0.2.1 NAME=mail.outside.example"  # the default period, 600 s
QUICK = "XCLIENT ADDR=192.0.2.2 NAME=mx1.quick.example"  # Grey-Connect: 1
ACCESS = "grey-connect:192.0.2.2 1\n"
BODY = b"Subject: grey\r\n\r\nHello\r\n"


@pytest.fixture
def greylisting(tmp_path, sink, make_proxy):
    """Factory: a grey-listing proxy with this access map text and options."""

    def make(text: str = ACCESS, *args: str):
        path = tmp_path / "access-map"
        path.write_text(text)
        return make_proxy(routes_to(sink), f"access-map={path}", GREY, *args)

    return make


def expect(r, code: int, status: str, rid: int) -> None:
    assert (r.code, r.status, r.id) == (code, status, rid), r


def attempt(port: int, xclient: str, sender: str = "fred@sender.net",
            rcpts: tuple[str, ...] = ("john@example.com",), body: bytes = BODY,
            client: Client | None = None):
    """One transaction; returns the client and the reply to DATA if not 354, else to the dot."""
    c = client
    if c is None:
        c = Client(port)
        assert c.cmd(xclient).code == 220
        assert c.ehlo("mx1.sender.net").code == 250
    assert c.cmd(f"MAIL FROM:<{sender}>").code == 250
    for rcpt in rcpts:
        assert c.cmd(f"RCPT TO:<{rcpt}>").code == 250
    r = c.cmd("DATA")
    if r.code != 354:
        return c, r
    c.send(body + b".\r\n")
    return c, c.read()


def grey_listed(c: Client, r) -> None:
    """421 4.7.0 #552, and the connection is closed (the key holds the host): RFC 5321 3.8
    says 421 when the server closes."""
    expect(r, 421, "4.7.0", 552)
    assert "try again later" in r.text
    assert c.closed()
    c.close()


def passes(port: int, xclient: str, **kw) -> bool:
    """Retry until the tuple's period is over (for wait_for)."""
    c, r = attempt(port, xclient, **kw)
    c.close()
    if r.code == 421:
        expect(r, 421, "4.7.0", 552)
        return False
    assert r.code == 250, r
    return True


def delivered(sink, sender: str) -> bytes:
    (body,) = sink.bodies(sender)
    return body


def test_new_early_then_pass_with_report_then_host_short_cut(greylisting, sink, backend):
    proxy = greylisting(ACCESS, *backend)
    grey_listed(*attempt(proxy.port, SLOW))  # new
    grey_listed(*attempt(proxy.port, SLOW))  # early: 600 s have not passed
    c, r = attempt(proxy.port, QUICK, sender="q@sender.net")
    grey_listed(c, r)
    wait_for(lambda: passes(proxy.port, QUICK, sender="q@sender.net"), timeout=15,
             what="the retry after the 1 s period")
    report = [line for line in delivered(sink, "q@sender.net").split(b"\n")
              if line.startswith(b"X-Grey-Report:")]
    assert len(report) == 1
    assert b" key=grey:quick.example,q@sender.net,john@example.com at=\"" in report[0]
    assert report[0].startswith(b"X-Grey-Report: age=")
    # The host passed once: any sender and recipient from it passes now, unreported.
    c, r = attempt(proxy.port, "XCLIENT ADDR=192.0.2.22 NAME=mx2.quick.example",
                   sender="other@elsewhere.org", rcpts=("mary@example.com",))
    assert r.code == 250, r
    c.close()
    assert b"X-Grey-Report" not in delivered(sink, "other@elsewhere.org")
    # The slow client is still grey-listed: nothing of it reached the sink.
    sink.assert_nothing_from("fred@sender.net")
    assert proxy.metric("barricade_grey_total", outcome="new") == 2
    assert proxy.metric("barricade_grey_total", outcome="early") >= 1
    assert proxy.metric("barricade_grey_total", outcome="pass") == 1
    assert proxy.metric("barricade_grey_total", outcome="known") == 1
    assert proxy.metric("barricade_replies_total", id="552", code="421", status="4.7.0") >= 3
    assert "#387 grey listed {grey:outside.example,fred@sender.net,john@example.com} for 600 seconds" \
        in proxy.log_text()


def test_grey_connect_grey_to_minimum_and_zero_exempts(greylisting, backend):
    proxy = greylisting("grey-connect:192.0.2.3 0\n"
                        "grey-connect:192.0.2.4 1\n"
                        "grey-to:exempt@example.com 0\n"
                        "grey-to:quick@example.com 1\n"
                        "grey-to:slow@example.com 5000\n", *backend)
    c, r = attempt(proxy.port, "XCLIENT ADDR=192.0.2.3 NAME=mx.exempt.example")
    assert r.code == 250, r  # Grey-Connect: 0
    c.close()
    c, r = attempt(proxy.port, SLOW, rcpts=("someone@example.com", "exempt@example.com"))
    assert r.code == 250, r  # one recipient's Grey-To: 0 exempts the message
    c.close()
    # 600 s by default, but the smallest Grey-To: wins: 1 s
    quick = dict(sender="a@sender.net", rcpts=("someone@example.com", "quick@example.com"))
    grey_listed(*attempt(proxy.port, SLOW, **quick))
    wait_for(lambda: passes(proxy.port, SLOW, **quick), timeout=15, what="the Grey-To: period")
    # Grey-Connect: 1 replaces the default; a larger Grey-To: does not raise it
    late = dict(sender="b@sender.net", rcpts=("slow@example.com",))
    grey_listed(*attempt(proxy.port, "XCLIENT ADDR=192.0.2.4 NAME=mx.four.example", **late))
    wait_for(lambda: passes(proxy.port, "XCLIENT ADDR=192.0.2.4 NAME=mx.four.example", **late),
             timeout=15, what="the Grey-Connect: period")
    with Client(proxy.port) as local:  # localhost is exempt
        assert local.ehlo().code == 250
        assert local.message("l@sender.net", ["john@example.com"], BODY).code == 250
    assert proxy.metric("barricade_grey_total", outcome="exempt") == 3
    assert proxy.metric("barricade_grey_total", outcome="pass") == 2


def _served(log: str, since: int, worker: int, ip: str) -> bool:
    return any(f"worker {worker} [" in line and f"now {ip}" in line
               for line in log[since:].splitlines())


def test_one_grey_list_across_two_workers_with_redis(greylisting, redis_server):
    # rate-throttle=2: a worker that took two connections in a second stops accepting
    # for a second and the other one takes the next. Left to itself, the kernel may hand
    # every connection to the worker that wakes first (CI once saw 60 in a row go to one).
    proxy = greylisting(ACCESS, f"redis-url={redis_server.url}",
                        f"redis-prefix=t{uuid.uuid4().hex[:8]}:", "workers=2", "rate-throttle=2")
    wait_for(lambda: proxy.log_text().count("barricade: listening on") == 2, what="2 workers")
    # Recorded by one worker, early on the other: never new twice.
    for _ in range(60):
        grey_listed(*attempt(proxy.port, SLOW))
        log = proxy.log_text()
        if _served(log, 0, 0, "192.0.2.1") and _served(log, 0, 1, "192.0.2.1"):
            break
    log = proxy.log_text()
    assert _served(log, 0, 0, "192.0.2.1") and _served(log, 0, 1, "192.0.2.1"), \
        "the kernel never handed a session to both workers"
    assert proxy.metric("barricade_grey_total", outcome="new") == 1
    # The quick tuple passes after its period on whichever worker; then both know the host.
    grey_listed(*attempt(proxy.port, QUICK))
    wait_for(lambda: passes(proxy.port, QUICK), timeout=15, what="the retry after the period")
    since = len(proxy.log_text())
    for n in range(60):
        c, r = attempt(proxy.port, QUICK, sender=f"n{n}@sender.net")
        c.close()
        assert r.code == 250, r
        log = proxy.log_text()
        if _served(log, since, 0, "192.0.2.2") and _served(log, since, 1, "192.0.2.2"):
            break
    log = proxy.log_text()
    assert _served(log, since, 0, "192.0.2.2") and _served(log, since, 1, "192.0.2.2")
    assert proxy.metric("barricade_grey_total", outcome="new") == 2


def test_reject_record_gives_388(greylisting, redis_server):
    """An operator's reject record (smtpf's cached 5) for the client's host."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    proxy = greylisting(ACCESS, f"redis-url={redis_server.url}", f"redis-prefix={prefix}")
    now = int(time.time() * 1000)
    with redis.Redis.from_url(redis_server.url) as raw:
        key = prefix + "grey:{outside.example}"
        raw.hset(key, mapping={"state": "reject", "created": now, "expires": now + 60000})
        raw.pexpire(key, 60000)
    c, r = attempt(proxy.port, SLOW)
    expect(r, 550, "5.7.1", 388)
    assert "mail.outside.example [192.0.2.1] failed grey listing" in r.text
    assert c.cmd("RSET").code == 250  # a refusal, not a drop
    c.close()
    assert proxy.metric("barricade_grey_total", outcome="reject") == 1


def test_grey_content_same_message_passes_another_gets_553(greylisting, sink, backend):
    proxy = greylisting(ACCESS, "+grey-content", "grey-key=ip,mail,rcpt", *backend)
    first = b"Subject: offer\r\nMessage-ID: <1@sender.net>\r\n\r\nThe original text\r\n"
    other = b"Subject: offer\r\nMessage-ID: <2@sender.net>\r\n\r\nSomething else\r\n"
    c, r = attempt(proxy.port, QUICK, body=first)  # the message is read, refused at the dot
    grey_listed(c, r)
    sink.assert_nothing_from("fred@sender.net")

    def another_message() -> Client | None:
        c, r = attempt(proxy.port, QUICK, body=other)
        if r.code == 421:  # still in the period: refused at DATA
            grey_listed(c, r)
            return None
        return c, r

    got = []
    wait_for(lambda: got.append(another_message()) or got[-1] is not None, timeout=15,
             what="DATA after the period")
    c, r = got[-1]
    expect(r, 450, "4.4.5", 553)  # not the message that started the period
    c, r = attempt(proxy.port, QUICK, body=first, client=c)  # same session: not dropped
    assert r.code == 250, r
    c.close()
    (body,) = sink.bodies("fred@sender.net")
    assert b"The original text" in body and b"X-Grey-Report: age=" in body
    assert proxy.metric("barricade_grey_total", outcome="mismatch") == 1
    assert proxy.metric("barricade_grey_total", outcome="pass") == 1
    assert proxy.metric("barricade_replies_total", id="553") == 1


@pytest.fixture
def own_redis(tmp_path):
    where = tmp_path / "own-redis"
    where.mkdir()
    srv = RedisServer(where)
    yield srv
    srv.cleanup()


@pytest.mark.parametrize("policy", ["tempfail", "skip"])
def test_redis_down_applies_state_failure_then_recovers(greylisting, sink, own_redis, policy):
    proxy = greylisting(ACCESS, f"redis-url={own_redis.url}", f"state-failure={policy}")
    grey_listed(*attempt(proxy.port, SLOW))
    own_redis.stop()
    c, r = attempt(proxy.port, SLOW, sender="down@sender.net")  # the client's timeout: no hang
    if policy == "tempfail":
        expect(r, 451, "4.3.0", 945)
        assert "shared state unavailable (grey)" in r.text  # its real cause, before the body
        assert c.cmd("RSET").code == 250  # the session goes on
        sink.assert_nothing_from("down@sender.net")
    else:
        assert r.code == 250, r
        assert len(sink.bodies("down@sender.net")) == 1
    assert c.cmd("QUIT").code == 221
    c.close()
    assert proxy.metric("barricade_state_failures_total", check="grey", policy=policy) == 1
    assert proxy.metric("barricade_store_errors_total", operation="grey") >= 1

    own_redis.start()  # empty, on the same port: Barricade was not restarted

    def grey_listing_again() -> bool:
        c, r = attempt(proxy.port, SLOW, sender="up@sender.net")
        c.close()
        return r.id == 552

    wait_for(grey_listing_again, timeout=10, what="grey-listing after Redis restarted")


@pytest.mark.parametrize("remember", [30, 0])
def test_a_worker_remembers_passed_tuples(greylisting, redis_server, remember):
    """``redis-grey-known-ttl``: once a tuple passed, the worker lets it through
    again without asking Redis (no ``grey`` store operation), while 0 asks Redis
    every time.  The client sees the same replies either way."""
    proxy = greylisting(ACCESS, f"redis-url={redis_server.url}", f"redis-prefix=t{uuid.uuid4().hex[:8]}:",
                        f"redis-grey-known-ttl={remember}")
    grey_listed(*attempt(proxy.port, QUICK))
    wait_for(lambda: passes(proxy.port, QUICK), timeout=15, what="the retry after the period")
    asked = proxy.metric("barricade_store_seconds_count", operation="grey")
    for _ in range(3):
        c, r = attempt(proxy.port, QUICK)
        c.close()
        assert r.code == 250, r
    assert proxy.metric("barricade_grey_total", outcome="known") == 3
    assert proxy.metric("barricade_store_seconds_count", operation="grey") == asked + (0 if remember else 3)
    assert proxy.metric("barricade_grey_remembered_total") == (3 if remember else 0)
