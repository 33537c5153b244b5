"""Rate-Connect: and Concurrent-Connect: end to end, on the memory store and
on a real redis-server: real SMTP through the proxy, the client presented
as an outside host with XCLIENT (localhost itself is exempt)."""

from __future__ import annotations

import os
import signal
import time
import uuid

import pytest

from barricade.testing import Client, children, wait_for
from tests.state import RedisServer

pytestmark = pytest.mark.integration

OUTSIDE = "XCLIENT ADDR=192.0.2.1 NAME=mail.outside.example"


def expect(r, code: int, status: str, rid: int) -> None:
    assert (r.code, r.status, r.id) == (code, status, rid), r


def arrive(port: int, xclient: str = OUTSIDE) -> tuple[Client, object]:
    """Connect from localhost, then become the outside client; returns the reply to XCLIENT."""
    c = Client(port)
    return c, c.cmd(xclient)


def served(c: Client) -> None:
    """The session works: a message goes through."""
    c.ehlo("outside.example")
    assert c.message("a@example.org", ["b@example.com"], b"Subject: x\r\n\r\nx\r\n").code == 250


# --- Concurrent-Connect: ----------------------------------------------------------------


def test_concurrency_limit_two_third_gets_329_and_a_closed_one_frees_a_slot(limited, backend):
    proxy = limited("concurrent-connect:192.0.2.1 2\n", *backend)
    first, r1 = arrive(proxy.port)
    second, r2 = arrive(proxy.port)
    assert r1.code == r2.code == 220
    third, r3 = arrive(proxy.port)
    expect(r3, 421, "4.7.1", 329)
    assert "client mail.outside.example [192.0.2.1] too many concurrent connections, max=2" in r3.text
    assert third.closed()
    third.close()
    # Another client has its own count; localhost is exempt.
    other, r = arrive(proxy.port, "XCLIENT ADDR=192.0.2.77 NAME=other.example")
    assert r.code == 220
    with Client(proxy.port) as local:
        assert local.ehlo().code == 250

    assert first.cmd("QUIT").code == 221
    first.close()

    def a_slot_is_free() -> bool:
        c, r = arrive(proxy.port)
        if r.code == 220:
            served(c)
            c.close()
            return True
        c.close()
        return False

    wait_for(a_slot_is_free, timeout=5, what="the released slot")
    second.close()  # no QUIT: the client just goes away
    wait_for(a_slot_is_free, timeout=5, what="the slot of the vanished client")
    other.close()
    assert proxy.metric("barricade_limit_hits_total", limit="concurrent-connect") >= 1
    assert proxy.metric("barricade_replies_total", id="329") >= 1
    assert proxy.metric("barricade_store_seconds_count", operation="acquire") >= 4


def test_concurrency_by_ptr_domain_then_bare_tag_and_zero_disables(limited, backend):
    proxy = limited("concurrent-connect:outside.example 1\nconcurrent-connect: 3\n"
                    "concurrent-connect:192.0.2.9 0\n", *backend)
    held = []
    c, r = arrive(proxy.port)  # 192.0.2.1 with a PTR under outside.example: limit 1
    held.append(c)
    assert r.code == 220
    c, r = arrive(proxy.port)
    held.append(c)
    expect(r, 421, "4.7.1", 329)
    assert "max=1" in r.text
    for _ in range(3):  # no PTR entry: the bare tag's 3
        c, r = arrive(proxy.port, "XCLIENT ADDR=192.0.2.5 NAME=[UNAVAILABLE]")
        held.append(c)
        assert r.code == 220, r
    c, r = arrive(proxy.port, "XCLIENT ADDR=192.0.2.5 NAME=[UNAVAILABLE]")
    held.append(c)
    expect(r, 421, "4.7.1", 329)
    assert "max=3" in r.text
    for _ in range(5):  # 0: no limit for this IP
        c, r = arrive(proxy.port, "XCLIENT ADDR=192.0.2.9 NAME=[UNAVAILABLE]")
        held.append(c)
        assert r.code == 220
    for c in held:
        c.close()


def test_concurrency_holds_across_two_workers_with_redis(limited, redis_server):
    # rate-throttle=2 hands the connections to both workers (see test_grey's two workers).
    proxy = limited("concurrent-connect:192.0.2.1 2\n", f"redis-url={redis_server.url}",
                    f"redis-prefix=t{uuid.uuid4().hex[:8]}:", "workers=2", "rate-throttle=2")
    wait_for(lambda: proxy.log_text().count("barricade: listening on") == 2, what="2 workers")

    def both_workers_saw_the_client() -> bool:
        log = proxy.log_text()
        return all(f"worker {n} [" in line and "now 192.0.2.1" in line
                   for n in (0, 1) for line in [_line(log, f"worker {n} [", "now 192.0.2.1")])

    held, refused = [], 0
    for n in range(60):
        c, r = arrive(proxy.port)
        if r.code == 220:
            held.append(c)
        else:
            expect(r, 421, "4.7.1", 329)
            refused += 1
            c.close()
        if n >= 6 and both_workers_saw_the_client():
            break
    assert both_workers_saw_the_client(), "the kernel never handed a session to both workers"
    assert len(held) == 2 and refused >= 5
    for c in held:
        c.close()
    assert proxy.metric("barricade_limit_hits_total", limit="concurrent-connect") == refused
    assert "shared state in redis" in proxy.log_text()


def _line(log: str, *parts: str) -> str:
    """The first log line containing every part, or ''."""
    return next((x for x in log.splitlines() if all(p in x for p in parts)), "")


# --- Rate-Connect: ------------------------------------------------------------------------


def test_rate_limit_three_fourth_connection_gets_522(limited, backend):
    proxy = limited("rate-connect:192.0.2 3\n", *backend)
    for _ in range(3):
        c, r = arrive(proxy.port)
        assert r.code == 220
        served(c)
        c.close()
    c, r = arrive(proxy.port)
    expect(r, 421, "4.4.5", 522)
    assert "client mail.outside.example [192.0.2.1] connections 4 exceed 3/60s" in r.text
    assert c.closed()
    c.close()
    c, r = arrive(proxy.port, "XCLIENT ADDR=192.0.2.2 NAME=b.outside.example")
    assert r.code == 220  # counted per IP
    c.close()
    with Client(proxy.port) as local:  # localhost is exempt
        assert local.ehlo().code == 250
    assert proxy.metric("barricade_limit_hits_total", limit="rate-connect") == 1


# --- Redis failure and recovery ------------------------------------------------------------


@pytest.fixture
def own_redis(tmp_path):
    where = tmp_path / "own-redis"
    where.mkdir()
    srv = RedisServer(where)
    yield srv
    srv.cleanup()


@pytest.mark.parametrize("policy", ["tempfail", "skip"])
def test_redis_down_then_back(limited, own_redis, policy):
    proxy = limited("concurrent-connect:192.0.2.1 1\nrate-connect:192.0.2.1 100\n",
                    f"redis-url={own_redis.url}", f"state-failure={policy}")
    c, r = arrive(proxy.port)
    assert r.code == 220
    c.close()

    own_redis.stop()
    started = time.monotonic()
    c, r = arrive(proxy.port)
    assert time.monotonic() - started < 5  # redis-timeout=1 bounds each operation: no hang
    if policy == "tempfail":
        expect(r, 421, "4.3.0", 944)
        assert c.closed()
    else:
        assert r.code == 220
        served(c)
    c.close()
    assert proxy.metric("barricade_state_failures_total", policy=policy) >= 1
    assert proxy.metric("barricade_store_errors_total", operation="rate") >= 1
    assert "store failed" in proxy.log_text()

    own_redis.start()  # empty, on the same port: Barricade was not restarted

    def limits_again() -> bool:
        first, r = arrive(proxy.port)
        if r.code != 220:
            first.close()
            return False
        second, r2 = arrive(proxy.port)
        first.close()
        second.close()
        return r2.id == 329

    wait_for(limits_again, timeout=10, what="limits working again after Redis restarted")


# --- across processes and gateways ---------------------------------------------------------


def test_concurrency_two_holds_across_three_workers_and_a_second_gateway(limited, redis_server):
    """Gateway A (3 workers) and gateway B (1 process) share one Redis and prefix:
    the limit of 2 counts every session of the client, wherever it landed."""
    shared = [f"redis-url={redis_server.url}", f"redis-prefix=t{uuid.uuid4().hex[:8]}:"]
    a = limited("concurrent-connect:192.0.2.1 2\n", *shared, "workers=3")
    b = limited("concurrent-connect:192.0.2.1 2\n", *shared)
    wait_for(lambda: a.log_text().count("barricade: listening on") == 3, what="3 workers")
    held = []
    for port in (a.port, b.port):
        c, r = arrive(port)
        assert r.code == 220, r
        held.append(c)
    for port in [a.port] * 6 + [b.port] * 2:  # whichever worker of A, or B: refused
        c, r = arrive(port)
        expect(r, 421, "4.7.1", 329)
        c.close()
    held.pop().close()  # the session on B ends: its slot is free for a session on A
    polls = []  # until B's release reaches Redis, a poll is refused (and counted) like any other
    wait_for(lambda: polls.append(1) or _admitted(a.port, held), timeout=5,
             what="the slot freed on gateway B")
    c, r = arrive(b.port)
    expect(r, 421, "4.7.1", 329)
    c.close()
    for c in held:
        c.close()
    assert a.metric("barricade_limit_hits_total", limit="concurrent-connect") == 6 + len(polls) - 1
    assert b.metric("barricade_limit_hits_total", limit="concurrent-connect") == 3


def _admitted(port: int, held: list) -> bool:
    """One more session from the client is admitted (and kept in ``held``)."""
    c, r = arrive(port)
    if r.code == 220:
        held.append(c)
        return True
    c.close()
    return False


def test_killed_workers_leases_expire_within_the_ttl(limited, redis_server):
    """kill -9 of the workers holding both slots: their leases stay counted
    (nobody released them) until the lease TTL (2 × smtp-command-timeout)
    passes, then the client is admitted again; replacement workers serve it."""
    ttl = 2 * 3
    proxy = limited("concurrent-connect:192.0.2.1 2\n", f"redis-url={redis_server.url}",
                    f"redis-prefix=t{uuid.uuid4().hex[:8]}:", "workers=2",
                    "smtp-command-timeout=3")
    wait_for(lambda: len(children(proxy.proc.pid)) == 2, what="2 workers")
    held = []
    for _ in range(2):
        c, r = arrive(proxy.port)
        assert r.code == 220, r
        held.append(c)
    victims = children(proxy.proc.pid)
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    for c in held:
        c.close()
    wait_for(lambda: len(children(proxy.proc.pid)) == 2 and not children(proxy.proc.pid) & victims,
             timeout=15, what="replacement workers")
    # A replacement worker may take seconds to serve (imports, on a busy machine):
    # what Redis counted is judged by when the answer came, not when we asked.
    c, r = arrive(proxy.port)
    answered = time.monotonic() - killed
    admitted: list = []
    if answered < ttl - 1:  # counted before the leases could expire: the dead sessions hold them
        expect(r, 421, "4.7.1", 329)
        c.close()
    elif r.code == 220:
        admitted.append(c)
    else:
        c.close()
    if not admitted:
        wait_for(lambda: _admitted(proxy.port, admitted), timeout=ttl + 5,
                 what="the dead workers' leases to expire")
    assert time.monotonic() - killed < ttl + 5
    served(admitted[0])
    for c in admitted:
        c.close()
