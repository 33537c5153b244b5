"""Concurrent-Connect:/Rate-Connect: checks on MemoryStore: the lease life cycle
(refresh timer, release at close, a grant that arrives after the client left),
map values and the store-failure policy, without sockets."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import task

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


def config(*args: str):
    """No 421 delay unless a test asks for one (the clock of these tests does not move)."""
    return REGISTRY.parse(["smtp-command-timeout=30", "rate-421-delay=0", "concurrent-421-delay=0",
                           *args])


@pytest_twisted.ensureDeferred
async def test_lease_is_refreshed_while_held_and_released_at_close(tmp_path):
    clock = task.Clock()
    store = MemoryStore()
    check = ConcurrentConnect(config(), access(tmp_path, "concurrent-connect: 1\n"), store,
                              reactor=clock)
    pipeline = Pipeline([check], clock, 30)
    c = ctx()
    assert (await check.connect(c)).action is Action.CONTINUE
    held = c.notes[LEASE_NOTE]
    assert held.keeper.running and held.keeper.interval == pytest.approx(20.0)  # TTL 60 / 3
    assert (await check.connect(ctx())).reply_id == 329
    await pipeline.close(c)
    assert not held.keeper.running and LEASE_NOTE not in c.notes
    assert await store.leases("connect:192.0.2.1") == 0


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
