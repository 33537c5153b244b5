"""Concurrent-Connect:/Rate-Connect: checks on MemoryStore: the lease life cycle
(refresh timer, release at close, a grant that arrives after the client left),
map values and the store-failure policy, without sockets."""

from __future__ import annotations

import asyncio

import pytest_twisted
from twisted.internet import defer, task
from twisted.logger import formatEvent, globalLogPublisher

from barricade.maps import KeyValueMap
from barricade.options import REGISTRY
from barricade.policy.pipeline import Context, Pipeline
from barricade.policy.state_limits import LEASE_NOTE, ConcurrentConnect, RateConnect
from barricade.policy.verdict import Action
from barricade.protocol.events import ClientInfo
from barricade.state import MemoryStore, StoreError


class FailingStore(MemoryStore):
    async def acquire(self, key, *, limit, ttl):
        raise StoreError("down")

    async def rate(self, key, **kw):
        raise StoreError("down")


def access(tmp_path, text: str) -> KeyValueMap:
    path = tmp_path / "access-map"
    path.write_text(text)
    return KeyValueMap(str(path))


def ctx(ip: str = "192.0.2.1", name: str = "mail.outside.example", localhost: bool = False) -> Context:
    return Context(session_id="s1", client=ClientInfo(ip=ip, port=25, name=name, localhost=localhost))


def pump(clock: task.Clock, seconds: int) -> None:
    """Move the clock a second at a time, as a running reactor would."""
    for _ in range(seconds):
        clock.advance(1)


def config(*args: str):
    """No 421 delay unless a test asks for one (the clock of these tests does not move)."""
    return REGISTRY.parse(["smtp-command-timeout=30", "rate-421-delay=0", "concurrent-421-delay=0",
                           *args])


@pytest_twisted.ensureDeferred
async def test_lease_is_refreshed_while_held_and_released_at_close(tmp_path):
    clock = task.Clock()
    store = MemoryStore(clock=clock.seconds)
    check = ConcurrentConnect(config(), access(tmp_path, "concurrent-connect: 2\n"), store,
                              reactor=clock)
    pipeline = Pipeline([check], clock, 30)
    first, second = ctx(), ctx()
    assert (await check.connect(first)).action is Action.CONTINUE
    assert check.keeper.running and len(clock.getDelayedCalls()) == 1  # one timer for every lease
    clock.advance(30)
    assert (await check.connect(second)).action is Action.CONTINUE
    assert len(clock.getDelayedCalls()) == 1
    assert (await check.connect(ctx())).reply_id == 329
    pump(clock, 60)  # TTL 60 s, ticks every 20 s: both leases outlive their first TTL
    assert await store.leases("connect:192.0.2.1") == 2
    await pipeline.close(first)
    assert LEASE_NOTE not in first.notes
    assert await store.leases("connect:192.0.2.1") == 1
    pump(clock, 100)  # the second one is still refreshed
    assert await store.leases("connect:192.0.2.1") == 1
    await pipeline.close(second)
    assert await store.leases("connect:192.0.2.1") == 0
    clock.advance(20)  # a tick that finds nothing held stops the timer
    assert not check.keeper.running and not clock.getDelayedCalls()
    third = ctx()
    await check.connect(third)  # and the next lease starts it again
    assert check.keeper.running
    await pipeline.close(third)


@pytest_twisted.ensureDeferred
async def test_each_lease_is_refreshed_when_due_not_all_at_once(tmp_path):
    class Recording(MemoryStore):
        def __init__(self, clock):
            super().__init__(clock=clock)
            self.refreshed: list[tuple[float, str]] = []

        async def refresh(self, key, lease, *, ttl):
            self.refreshed.append((self._clock(), lease))
            return await super().refresh(key, lease, ttl=ttl)

    clock = task.Clock()
    store = Recording(clock.seconds)
    check = ConcurrentConnect(config(), access(tmp_path, "concurrent-connect: 5\n"), store,
                              reactor=clock)
    early, late = ctx(), ctx()
    await check.connect(early)
    pump(clock, 10)
    await check.connect(late)
    pump(clock, 45)  # TTL 60: due a third of it (20 s) after, looked at every 5 s
    first, second = early.notes[LEASE_NOTE].lease, late.notes[LEASE_NOTE].lease
    assert store.refreshed == [(20, first), (30, second), (40, first), (50, second)]
    await check.close(early)
    await check.close(late)


@pytest_twisted.ensureDeferred
async def test_an_expired_or_failed_refresh_is_logged_and_tried_again(tmp_path):
    class Flaky(MemoryStore):
        calls = 0

        async def refresh(self, key, lease, *, ttl):
            self.calls += 1
            if self.calls == 1:
                raise StoreError("down")
            return False  # e.g. Redis restarted empty

    clock = task.Clock()
    store = Flaky(clock=clock.seconds)
    check = ConcurrentConnect(config(), access(tmp_path, "concurrent-connect: 1\n"), store,
                              reactor=clock)
    seen = []
    globalLogPublisher.addObserver(seen.append)
    try:
        c = ctx()
        await check.connect(c)
        clock.advance(20)
        clock.advance(20)
    finally:
        globalLogPublisher.removeObserver(seen.append)
    text = [formatEvent(e) for e in seen]
    assert store.calls == 2 and check.keeper.running
    assert any("refresh failed: down" in t for t in text)
    assert any("had expired" in t for t in text)
    await check.close(c)


@pytest_twisted.ensureDeferred
async def test_a_grant_after_the_client_left_goes_straight_back(tmp_path):
    store = MemoryStore()
    check = ConcurrentConnect(config(), access(tmp_path, "concurrent-connect: 1\n"), store,
                              reactor=task.Clock())
    c = ctx()
    await check.close(c)  # the session ended while connect was waiting on the store
    await check.connect(c)
    assert await store.leases("connect:192.0.2.1") == 0


@pytest_twisted.ensureDeferred
async def test_bad_values_localhost_and_store_failure(tmp_path):
    amap = access(tmp_path, "rate-connect:192.0.2.1 lots\nrate-connect: 1\n")
    rate = RateConnect(config(), amap, MemoryStore())
    assert (await rate.connect(ctx())).action is Action.CONTINUE  # not a number: ignored
    local = ctx("127.0.0.1", "localhost", localhost=True)
    for _ in range(3):
        assert (await rate.connect(local)).action is Action.CONTINUE
    failing = RateConnect(config(), amap, FailingStore())
    verdict = await failing.connect(ctx("192.0.2.2"))
    assert (verdict.action, verdict.reply_id) == (Action.DROP, 944)
    skip = RateConnect(config("state-failure=skip"), amap, FailingStore())
    assert (await skip.connect(ctx("192.0.2.2"))).action is Action.CONTINUE


class CountingStore(MemoryStore):
    """Records the operations the checks ask for."""

    def __init__(self):
        super().__init__()
        self.calls: list[str] = []
        self.inside = False  # the default connect() calls rate() and acquire()

    async def rate(self, key, **kw):
        if not self.inside:
            self.calls.append("rate")
        return await super().rate(key, **kw)

    async def acquire(self, key, *, limit, ttl):
        if not self.inside:
            self.calls.append("acquire")
        return await super().acquire(key, limit=limit, ttl=ttl)

    async def connect(self, key, **kw):
        self.calls.append("connect")
        self.inside = True
        try:
            return await super().connect(key, **kw)
        finally:
            self.inside = False


def connect_pair(tmp_path, text: str, store, *args: str):
    from barricade.policy.state_limits import store_checks

    rate, concurrent = store_checks(config(*args), access(tmp_path, text), store, reactor=task.Clock())
    return rate, concurrent


async def connect_phase(rate, concurrent, c):
    verdict = await rate.connect(c)
    if verdict.action is not Action.CONTINUE:
        return verdict
    return await concurrent.connect(c)


@pytest_twisted.ensureDeferred
async def test_both_limits_make_one_store_call_with_the_same_outcomes(tmp_path):
    store = CountingStore()
    rate, concurrent = connect_pair(tmp_path, "rate-connect: 3\nconcurrent-connect: 2\n", store)
    first, second, third, fourth = ctx(), ctx(), ctx(), ctx()
    assert (await connect_phase(rate, concurrent, first)).action is Action.CONTINUE
    assert store.calls == ["connect"]
    assert (await connect_phase(rate, concurrent, second)).action is Action.CONTINUE
    assert (await connect_phase(rate, concurrent, third)).reply_id == 329  # two leases held
    await concurrent.close(first)
    assert (await connect_phase(rate, concurrent, fourth)).reply_id == 522  # 4 connections > 3
    assert store.calls == ["connect"] * 4
    assert await store.leases("connect:192.0.2.1") == 1
    assert await store.rate("connect:192.0.2.1", increment=0) == 4


@pytest_twisted.ensureDeferred
async def test_one_limit_alone_and_a_held_lease_keep_their_own_calls(tmp_path):
    store = CountingStore()
    rate, concurrent = connect_pair(tmp_path, "concurrent-connect: 2\n", store)
    assert (await connect_phase(rate, concurrent, ctx())).action is Action.CONTINUE
    assert store.calls == ["acquire"]
    store = CountingStore()
    rate, concurrent = connect_pair(tmp_path, "rate-connect: 3\nconcurrent-connect: 2\n", store)
    c = ctx()
    await connect_phase(rate, concurrent, c)
    held = c.notes[LEASE_NOTE]
    await connect_phase(rate, concurrent, c)  # XCLIENT: the old lease goes back first
    assert store.calls == ["connect", "rate", "acquire"]
    assert c.notes[LEASE_NOTE].lease != held.lease
    assert await store.leases("connect:192.0.2.1") == 1


@pytest_twisted.ensureDeferred
async def test_a_lease_taken_with_the_count_goes_back_when_the_session_ends_first(tmp_path):
    store = MemoryStore()
    rate, concurrent = connect_pair(tmp_path, "rate-connect: 3\nconcurrent-connect: 2\n", store)
    c = ctx()
    assert (await rate.connect(c)).action is Action.CONTINUE
    await concurrent.close(c)  # the session ended before Concurrent-Connect ran
    assert await store.leases("connect:192.0.2.1") == 0
    left = ctx()
    await concurrent.close(left)  # the client left while Rate-Connect waited on the store
    assert (await rate.connect(left)).action is Action.CONTINUE
    assert await store.leases("connect:192.0.2.1") == 0


@pytest_twisted.ensureDeferred
async def test_a_failed_combined_call_applies_each_familys_policy(tmp_path):
    rate, concurrent = connect_pair(tmp_path, "rate-connect: 3\nconcurrent-connect: 2\n", FailingStore(),
                                    "state-failure=rate:skip,concurrent:tempfail")
    c = ctx()
    assert (await rate.connect(c)).action is Action.CONTINUE
    verdict = await concurrent.connect(c)
    assert (verdict.action, verdict.reply_id) == (Action.DROP, 944)


@pytest_twisted.ensureDeferred
async def test_close_does_not_wait_for_the_release(tmp_path):
    class Hanging(MemoryStore):
        async def release(self, key, lease):
            await asyncio.get_running_loop().create_future()  # never answers

    store = Hanging()
    concurrent = ConcurrentConnect(config(), access(tmp_path, "concurrent-connect: 1\n"), store,
                                   reactor=task.Clock())
    c = ctx()
    await concurrent.connect(c)
    closing = defer.ensureDeferred(concurrent.close(c))
    assert closing.called and LEASE_NOTE not in c.notes
