"""RedisStore on the deployments larger sites run: a Redis Cluster (the Lua
scripts must each stay inside one slot) and a Sentinel-watched master that
fails over while Barricade keeps running."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import pytest_twisted
import redis

from barricade.aio import aio
from barricade.state import StoreError
from barricade.state.base import Grey
from barricade.state.redis import RedisStore
from tests.state import SCENARIOS, FakeClock, RedisClusterServers, RedisSentinelServers

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    servers = RedisClusterServers(tmp_path_factory.mktemp("cluster"))
    yield servers
    servers.cleanup()


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}:"


def store_for(url: str, prefix: str, **kw) -> RedisStore:
    kw.setdefault("timeout", 1.0)
    kw.setdefault("connect_timeout", 0.5)
    return RedisStore(url, prefix=prefix, **kw)


async def run(store: RedisStore, coro) -> None:
    try:
        await coro
    finally:
        await store.close()


@pytest.mark.parametrize("name", sorted(SCENARIOS))
@pytest_twisted.ensureDeferred
async def test_cluster_scenario(name, cluster, prefix) -> None:
    """Every Store scenario on a 3-master Cluster (a CROSSSLOT script would fail here)."""
    clock = FakeClock()
    store = store_for(cluster.url, prefix, clock=clock)
    await aio(run(store, SCENARIOS[name](store, clock)))


@pytest_twisted.ensureDeferred
async def test_cluster_spreads_clients_over_the_masters(cluster, prefix) -> None:
    """Keys of many clients land on every master, and every key has a TTL
    (rate, lease and grey tuple: the host key is written only on a pass)."""
    store = store_for(cluster.url, prefix)

    async def scenario() -> None:
        for i in range(30):
            ip = f"192.0.2.{i}"
            assert await store.rate(ip) == 1
            assert await store.acquire(ip, limit=1, ttl=30)
            status = await store.grey(f"{ip},a@x,b@y", host=ip, period=600, temp_fail_ttl=900,
                                      accept_ttl=3600)
            assert status.result is Grey.NEW

    await aio(run(store, scenario()))
    per_node = []
    for node in cluster.nodes:
        raw = redis.Redis(port=node.port, decode_responses=True)
        keys = list(raw.scan_iter(match=f"{prefix}*"))
        assert all(raw.pttl(k) > 0 for k in keys)
        per_node.append(len(keys))
        raw.close()
    assert sum(per_node) == 30 * 3 and all(n > 0 for n in per_node), per_node


@pytest_twisted.ensureDeferred
async def test_two_gateways_on_one_cluster(cluster, prefix) -> None:
    one, two = store_for(cluster.url, prefix), store_for(cluster.url, prefix)

    async def scenario() -> None:
        assert await one.acquire("192.0.2.1", limit=2, ttl=10)
        assert await two.acquire("192.0.2.1", limit=2, ttl=10)
        assert await one.acquire("192.0.2.1", limit=2, ttl=10) is None
        assert await two.add("dupmsg:<id@x>", "1", ttl=60)
        assert not await one.add("dupmsg:<id@x>", "1", ttl=60)

    await aio(run(one, run(two, scenario())))


def test_cluster_url_has_no_database() -> None:
    with pytest.raises(ValueError, match="no database"):
        RedisStore("redis+cluster://127.0.0.1:7000/1")


@pytest.fixture
def sentinel(tmp_path):
    servers = RedisSentinelServers(tmp_path)
    yield servers
    servers.cleanup()


@pytest_twisted.ensureDeferred
async def test_sentinel_scenarios_then_fail_over(sentinel, prefix) -> None:
    """The store finds the master through Sentinel; when the master dies it
    fails fast (StoreError, the state-failure policy applies) until Sentinel
    promotes the replica, then works again without a restart."""
    store = store_for(sentinel.url, prefix, timeout=0.5, connect_timeout=0.3)

    async def scenario() -> None:
        for name, fn in SCENARIOS.items():
            clock = FakeClock()
            scoped = store_for(sentinel.url, f"{prefix}{name}:", clock=clock)
            await run(scoped, fn(scoped, clock))
        assert await store.rate("ip") == 1
        sentinel.master.stop()
        deadline = time.monotonic() + 30
        failures = 0
        while True:
            started = time.monotonic()
            try:
                count = await store.rate("ip")
                break
            except StoreError:
                failures += 1
                assert time.monotonic() - started < 2.0  # never a hang
                assert time.monotonic() < deadline, "no fail-over within 30 s"
                await asyncio.sleep(0.2)
        assert failures > 0
        assert sentinel.master_port() == sentinel.replica.port
        assert count >= 1  # what had replicated before the master died, plus this one

    await aio(run(store, scenario()))


def test_sentinel_url_needs_a_master_name() -> None:
    with pytest.raises(ValueError, match="no master name"):
        RedisStore("redis+sentinel://127.0.0.1:26379")
