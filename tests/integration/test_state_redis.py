"""RedisStore against a real redis-server: the shared Store scenarios (the
same ones MemoryStore passes), then what only Redis can get wrong: keys
without a TTL, keys outside one Cluster slot, hangs and recovery."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time
import uuid

import pytest
import pytest_twisted
import redis
from redis.crc import key_slot
from twisted.internet import reactor, task

from barricade.aio import aio
from barricade.options import REGISTRY
from barricade.policy.grey import GreyList
from barricade.policy.pipeline import Context
from barricade.policy.verdict import Action
from barricade.protocol.events import ClientInfo
from barricade.state import StoreError
from barricade.state.base import Grey
from barricade.state.redis import RedisStore
from tests.coroutines import as_hook
from tests.state import SCENARIOS, FakeClock, RedisServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = RedisServer(tmp_path_factory.mktemp("redis"), tls=True)
    yield srv
    srv.cleanup()


@pytest.fixture
def prefix() -> str:
    """A prefix per test: tests never see each other's keys."""
    return f"t{uuid.uuid4().hex[:8]}:"


@pytest.fixture
def raw(server):
    """A plain synchronous client to inspect what the scripts wrote."""
    client = redis.Redis(host="127.0.0.1", port=server.port, decode_responses=True)
    yield client
    client.close()


def make_store(url: str, prefix: str, **kw) -> RedisStore:
    # Short enough to show a failure is bounded, long enough for a busy machine's pauses.
    kw.setdefault("timeout", 2.0)
    kw.setdefault("connect_timeout", 1.0)
    return RedisStore(url, prefix=prefix, **kw)


async def closing(store: RedisStore, coro) -> None:
    try:
        await coro
    finally:
        await store.close()


def assert_keys_sound(raw: redis.Redis, prefix: str) -> list[str]:
    """Every key under ``prefix`` expires and carries a ``{tag}``."""
    keys = list(raw.scan_iter(match=f"{prefix}*"))
    for key in keys:
        assert raw.pttl(key) > 0, f"{key} has no TTL"
        assert key.count("{") == 1 and "}" in key.split("{", 1)[1], f"{key} has no hash tag"
    return keys


@pytest.mark.parametrize("name", sorted(SCENARIOS))
@pytest_twisted.ensureDeferred
async def test_scenario(name: str, server, raw, prefix) -> None:
    clock = FakeClock()
    store = make_store(server.url, prefix, clock=clock)
    await aio(closing(store, SCENARIOS[name](store, clock)))
    assert_keys_sound(raw, prefix)


@pytest_twisted.ensureDeferred
async def test_all_scenarios_leave_only_expiring_tagged_keys(server, raw, prefix) -> None:
    """Run everything into one prefix, then check the whole key space it made."""

    async def everything() -> None:
        for name, fn in SCENARIOS.items():
            clock = FakeClock()
            store = make_store(server.url, f"{prefix}{name}:", clock=clock)
            await closing(store, fn(store, clock))

    await aio(everything())
    keys = assert_keys_sound(raw, prefix)
    kinds = {key[len(prefix):].split(":", 2)[1] for key in keys}
    assert kinds == {"grey", "rate", "conc", "msg", "cache"}


def test_grey_keys_share_one_cluster_slot() -> None:
    store = RedisStore("redis://127.0.0.1:1/0", prefix="bx:")
    host = "pool1.example.com"
    tuple_key = store.key("grey", host, f"{host},fred@example.com,john@acme.org")
    assert tuple_key == "bx:grey:{pool1.example.com}:pool1.example.com,fred@example.com,john@acme.org"
    assert key_slot(tuple_key.encode()) == key_slot(store.key("grey", host).encode())
    # a brace would end the tag early: such names are hashed
    hashed = store.key("grey", "a{b}c")[len("bx:grey:"):]
    assert hashed.startswith("{") and "a{b" not in hashed and len(hashed) == 42
    with pytest.raises(ValueError):
        RedisStore("redis://127.0.0.1:1/0", prefix="{x}:")
    with pytest.raises(ValueError):
        RedisStore("http://127.0.0.1:1/")


@pytest_twisted.ensureDeferred
async def test_server_clock_leases_expire_in_real_time(server, raw, prefix) -> None:
    """Without an injected clock the scripts use Redis's TIME: a lease really expires."""
    store = make_store(server.url, prefix)

    async def scenario() -> None:
        # TTLs of seconds: a busy machine may pause the test between two calls.
        assert await store.acquire("ip", limit=2, ttl=3)
        assert await store.acquire("ip", limit=2, ttl=3)
        assert await store.acquire("ip", limit=2, ttl=3) is None
        await asyncio.sleep(3.1)
        assert await store.acquire("ip", limit=2, ttl=3)
        status = await store.grey("t", period=600, temp_fail_ttl=900, accept_ttl=3600)
        assert status.result is Grey.NEW and abs(status.created - time.time()) < 5
        assert (await store.grey("t", period=600, temp_fail_ttl=900, accept_ttl=3600)).result is Grey.EARLY
        assert await store.rate("ip") == 1
        await store.set("c", "v", ttl=2)
        assert await store.get("c") == "v"
        await asyncio.sleep(2.1)
        assert await store.get("c") is None

    await aio(closing(store, scenario()))
    assert_keys_sound(raw, prefix)


@pytest_twisted.ensureDeferred
async def test_unix_socket_url(server, prefix) -> None:
    store = make_store(server.unix_url, prefix)

    async def scenario() -> None:
        await store.ping()
        assert await store.rate("ip") == 1
        assert await store.rate("ip") == 2

    await aio(closing(store, scenario()))


@pytest_twisted.ensureDeferred
async def test_tls_url(server, prefix) -> None:
    """rediss:// with the server certificate verified; unverified it is refused."""
    store = make_store(server.tls_url, prefix)
    untrusted = make_store(f"rediss://127.0.0.1:{server.tls_port}/0", prefix)

    async def scenario() -> None:
        assert await store.acquire("ip", limit=1, ttl=10)
        assert await store.acquire("ip", limit=1, ttl=10) is None
        with pytest.raises(StoreError):
            await untrusted.ping()

    await aio(closing(store, closing(untrusted, scenario())))


@pytest_twisted.ensureDeferred
async def test_two_gateways_share_limits(server, prefix) -> None:
    """Two Stores on one Redis (two workers or gateways) see one limit and one grey-list."""
    one, two = make_store(server.url, prefix), make_store(server.url, prefix)

    async def scenario() -> None:
        assert await one.acquire("192.0.2.1", limit=2, ttl=10)
        b = await two.acquire("192.0.2.1", limit=2, ttl=10)
        assert b
        assert await one.acquire("192.0.2.1", limit=2, ttl=10) is None
        await one.release("192.0.2.1", b)  # whoever holds the lease id may release it
        assert await two.acquire("192.0.2.1", limit=2, ttl=10)
        assert [await one.rate("ip"), await two.rate("ip"), await one.rate("ip")] == [1, 2, 3]
        grey = dict(period=600, temp_fail_ttl=900, accept_ttl=3600)
        assert (await one.grey("t", **grey)).result is Grey.NEW
        assert (await two.grey("t", **grey)).result is Grey.EARLY

    await aio(closing(one, closing(two, scenario())))


@pytest_twisted.ensureDeferred
async def test_many_concurrent_callers_wait_for_the_pool(server, prefix) -> None:
    """200 callers at once share the one pipelined connection; none fails, none is lost."""
    store = make_store(server.url, prefix, max_connections=4, timeout=5)

    async def scenario() -> None:
        counts = await asyncio.gather(*(store.rate("ip") for _ in range(200)))
        assert sorted(counts) == list(range(1, 201))

    await aio(closing(store, scenario()))


async def expect_store_error(coro, within: float) -> None:
    started = time.monotonic()
    with pytest.raises(StoreError):
        await coro
    assert time.monotonic() - started < within


@pytest_twisted.ensureDeferred
async def test_redis_stopped_then_restarted(tmp_path, prefix) -> None:
    """Stopped: every operation fails fast with StoreError; restarted (empty, no
    scripts loaded): the same Store works again, reloading its scripts."""
    srv = RedisServer(tmp_path)
    store = make_store(srv.url, prefix)
    ops = itertools.cycle([
        lambda: store.grey("t", period=1, temp_fail_ttl=10, accept_ttl=10),
        lambda: store.rate("ip"),
        lambda: store.acquire("ip", limit=2, ttl=10),
        lambda: store.msg_limit("ip", period=10),
        lambda: store.get("k"),
    ])

    async def scenario() -> None:
        assert await store.rate("ip") == 1
        lease = await store.acquire("ip", limit=2, ttl=10)
        srv.stop()
        for _ in range(5):
            await expect_store_error(next(ops)(), within=4.0)
        with pytest.raises(StoreError):
            await store.release("ip", lease)
        srv.start()
        assert await store.rate("ip") == 1  # a fresh, empty Redis
        assert await store.acquire("ip", limit=2, ttl=10)
        assert (await store.grey("t", period=1, temp_fail_ttl=10, accept_ttl=10)).result is Grey.NEW

    try:
        await aio(closing(store, scenario()))
    finally:
        srv.cleanup()


@pytest_twisted.ensureDeferred
async def test_redis_hung_times_out(tmp_path, prefix) -> None:
    """A Redis that accepts but never answers (SIGSTOP) costs at most the timeout."""
    srv = RedisServer(tmp_path)
    store = make_store(srv.url, prefix, timeout=0.4)

    async def scenario() -> None:
        assert await store.rate("ip") == 1
        os.kill(srv.proc.pid, signal.SIGSTOP)
        try:
            await expect_store_error(store.rate("ip"), within=3.0)
            await expect_store_error(store.acquire("ip", limit=1, ttl=5), within=3.0)
        finally:
            os.kill(srv.proc.pid, signal.SIGCONT)
        assert await store.rate("ip") >= 2  # the timed-out increment may have landed

    try:
        await aio(closing(store, scenario()))
    finally:
        srv.cleanup()


@pytest_twisted.ensureDeferred
async def test_password_and_database_from_the_url(tmp_path, prefix) -> None:
    """AUTH and SELECT happen on connect; a wrong password is a StoreError, not a hang."""
    srv = RedisServer(tmp_path, args=("--requirepass", "s3cret"))
    store = make_store(f"redis://:s3cret@127.0.0.1:{srv.port}/3", prefix)
    wrong = make_store(f"redis://:nope@127.0.0.1:{srv.port}/3", prefix)

    async def scenario() -> None:
        assert await store.rate("ip") == 1
        await expect_store_error(wrong.rate("ip"), within=4.0)

    try:
        await aio(closing(store, closing(wrong, scenario())))
        raw = redis.Redis(port=srv.port, password="s3cret", db=3, decode_responses=True)
        assert list(raw.scan_iter(match=f"{prefix}*")) == [f"{prefix}rate:{{ip}}"]
        raw.close()
    finally:
        srv.cleanup()


@pytest_twisted.ensureDeferred
async def test_operations_started_outside_a_task(tmp_path, prefix) -> None:
    """How the checks call it (``aio(..., immediate=True)``): connecting, a lost
    script, a hung server and recovery all behave as inside a task."""
    srv = RedisServer(tmp_path)
    store = make_store(srv.url, prefix, timeout=0.4)

    def now(op):
        return aio(op, immediate=store.immediate)

    try:
        assert store.immediate is True
        assert await now(store.rate("ip")) == 1  # connects first, in a task of its own
        assert await now(store.rate("ip")) == 2  # sent at once on the open connection
        redis.Redis(host="127.0.0.1", port=srv.port).script_flush()
        assert await now(store.rate("ip")) == 3  # NOSCRIPT: loaded again
        assert await now(store.add("k", "v", ttl=10)) is True
        assert await now(store.get("k")) == "v"
        os.kill(srv.proc.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(StoreError, match="no answer within 0.4s"):
                await now(store.acquire("ip", limit=1, ttl=5))
            assert time.monotonic() - started < 3.0  # the 0.4 s timeout, with room for a busy machine
        finally:
            os.kill(srv.proc.pid, signal.SIGCONT)
        assert await now(store.rate("ip")) == 4
        srv.stop()
        with pytest.raises(StoreError):
            await now(store.rate("ip"))
    finally:
        await aio(store.close())
        srv.cleanup()


@pytest_twisted.ensureDeferred
async def test_writes_nobody_waits_for(tmp_path, prefix) -> None:
    """``*_nowait`` (a lease's release, dupmsg's settling): before the connection is
    open (the ordinary way), on it (sent at once, the reply read in its callback), on
    a hung and on a stopped server, the write lands (or fails) and its outcome reaches
    the callback."""
    srv = RedisServer(tmp_path)
    store = make_store(srv.url, prefix, timeout=0.4)
    outcomes: list[StoreError | None] = []
    sent_at_once: list[bool] = []
    start_heard = store._backend.start_heard

    def recording_start(heard, *args):
        sent = start_heard(heard, *args)
        sent_at_once.append(sent)
        return sent

    store._backend.start_heard = recording_start

    def now(op):
        return aio(op, immediate=store.immediate)

    async def outcome() -> StoreError | None:
        for _ in range(200):
            if outcomes:
                return outcomes.pop(0)
            await task.deferLater(reactor, 0.01)
        raise AssertionError("the write never reported")

    try:
        store.set_nowait("k", "discard s1", ttl=10, done=outcomes.append)  # connects first
        assert await outcome() is None and sent_at_once == [False]
        assert await now(store.get("k")) == "discard s1"
        lease = await now(store.acquire("ip", limit=1, ttl=10))
        sent_at_once.clear()
        store.release_nowait("ip", lease, outcomes.append)
        assert await outcome() is None and sent_at_once == [True]
        assert await now(store.leases("ip")) == 0
        store.delete_nowait("k", outcomes.append)
        assert await outcome() is None and sent_at_once[-1] is True
        assert await now(store.get("k")) is None
        os.kill(srv.proc.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            store.delete_nowait("k", outcomes.append)
            error = await outcome()
            assert isinstance(error, StoreError) and "no answer within 0.4s" in str(error)
            assert time.monotonic() - started < 3.0
        finally:
            os.kill(srv.proc.pid, signal.SIGCONT)
        srv.stop()
        store.release_nowait("ip", "gone", outcomes.append)
        assert isinstance(await outcome(), StoreError)
    finally:
        await aio(store.close())
        srv.cleanup()


@pytest_twisted.ensureDeferred
async def test_commands_of_one_turn_go_out_in_one_write(server, raw, prefix) -> None:
    """Every command sent in one turn of the event loop (several sessions' waited-for
    calls and writes nobody waits for alike) leaves in one write after that turn (at
    the start of the next on this test's loop, at its own end on Barricade's), in
    order, and each lands and is answered; a command of a later turn is a write of its own."""
    store = make_store(server.url, prefix)
    outcomes: list[StoreError | None] = []

    async def reported(count: int) -> None:
        for _ in range(200):
            if len(outcomes) >= count:
                return
            await task.deferLater(reactor, 0.01)
        raise AssertionError(f"{len(outcomes)} of {count} writes reported")

    try:
        store.set_nowait("a", "discard s1", ttl=10, done=outcomes.append)  # connects first
        await reported(1)
        assert outcomes == [None] and raw.get(f"{prefix}cache:{{a}}") == "discard s1"
        lease = await aio(store.acquire("ip", limit=5, ttl=10), immediate=True)

        proto = store._backend.client._protocol
        writes: list[bytes] = []
        write = proto.transport.write
        proto.transport.write = lambda data: (writes.append(data), write(data))
        outcomes.clear()
        store.delete_nowait("a", outcomes.append)
        store.release_nowait("ip", lease, outcomes.append)
        added = aio(store.add("b", "pending s2", ttl=10), immediate=True)
        store.set_nowait("c", "reject s2", ttl=10, done=outcomes.append)
        assert writes == []  # held until this turn ends
        assert await added is True
        assert len(writes) == 1 and writes[0].count(b"*") == 4
        await reported(3)
        assert outcomes == [None, None, None]
        assert raw.get(f"{prefix}cache:{{a}}") is None
        assert raw.get(f"{prefix}cache:{{b}}") == "pending s2"
        assert raw.get(f"{prefix}cache:{{c}}") == "reject s2"
        assert await aio(store.leases("ip"), immediate=True) == 0
        before = len(writes)
        store.delete_nowait("b", outcomes.append)  # a later turn: a write of its own
        await reported(4)
        assert len(writes) == before + 1 and writes[-1].startswith(b"*2\r\n$3\r\nDEL")
    finally:
        await aio(store.close())


@pytest_twisted.ensureDeferred
async def test_known_tuples_remembered_by_the_process(server, raw, prefix) -> None:
    """``grey_known_ttl``: a tuple Redis reported passed is answered KNOWN from the
    process's memory until the memory ends; then Redis decides again.  A reject
    written through this store ends the memory at once, even for a lookup already on
    its way; one written by another gateway is seen when the memory ends."""
    clock = FakeClock()
    store = make_store(server.url, prefix, clock=clock, grey_known_ttl=30)
    other = make_store(server.url, prefix, clock=clock)  # another gateway, same Redis
    grey = dict(period=600, temp_fail_ttl=90000, accept_ttl=604800)
    tuple_key, host = "192.0.2.9,a@x,b@y", "192.0.2.9"

    async def check() -> None:
        clock.at(0)
        assert (await store.grey(tuple_key, host=host, **grey)).result is Grey.NEW
        assert store.known_grey(tuple_key, host=host, period=600) is None  # not passed yet
        clock.at(600)
        assert (await store.grey(tuple_key, host=host, **grey)).result is Grey.PASS
        clock.at(629.9)
        known = store.known_grey(tuple_key, host=host, period=600)
        assert known is not None and known.result is Grey.KNOWN and known.now == clock.now
        assert store.known_grey(tuple_key, period=600) is None  # the same text without its host
        raw.delete(*raw.scan_iter(match=f"{prefix}grey:*"))  # an operator deletes the records
        assert store.known_grey(tuple_key, host=host, period=600) is not None
        clock.at(630)
        assert store.known_grey(tuple_key, host=host, period=600) is None
        assert (await store.grey(tuple_key, host=host, **grey)).result is Grey.NEW
        # Passed again, then refused by this gateway while a lookup is on its way.
        clock.at(1230)
        assert (await store.grey(tuple_key, host=host, **grey)).result is Grey.PASS
        assert store.known_grey(tuple_key, host=host, period=600) is not None
        on_its_way = asyncio.ensure_future(store.grey(tuple_key, host=host, **grey))
        await asyncio.sleep(0)  # sent, not answered yet
        await store.grey_reject(host=host, ttl=100)
        assert (await on_its_way).result is Grey.KNOWN  # Redis answered it before the reject
        assert store.known_grey(tuple_key, host=host, period=600) is None  # and it is not remembered
        assert (await store.grey(tuple_key, host=host, **grey)).result is Grey.REJECT
        # Another tuple, passed, then refused by the other gateway: seen when the memory ends.
        second = "a@x,c@y"
        clock.at(1400)
        await store.grey(second, **grey)
        clock.at(2000)
        assert (await store.grey(second, **grey)).result is Grey.PASS
        await other.grey_reject(tuple_key=second, ttl=100)
        clock.at(2029)
        assert store.known_grey(second, period=600) is not None
        clock.at(2030)
        assert store.known_grey(second, period=600) is None
        assert (await store.grey(second, **grey)).result is Grey.REJECT

    try:
        await aio(check())
    finally:
        await aio(store.close())
        await aio(other.close())


@pytest_twisted.ensureDeferred
async def test_the_grey_check_asks_redis_only_about_what_it_does_not_remember(server, prefix) -> None:
    """The grey-list check on a RedisStore: once a tuple passed, its next messages
    send Redis nothing (neither way a script can go), until the memory ends."""
    clock = FakeClock()
    store = make_store(server.url, prefix, clock=clock, grey_known_ttl=30)
    check = GreyList(REGISTRY.parse(["grey-temp-fail-period=600"]), None, store)
    sent: list[str] = []
    for name in ("start_script", "script"):
        original = getattr(store._backend, name)

        def counting(script, keys, args, original=original):
            sent.append(script)
            return original(script, keys, args)

        setattr(store._backend, name, counting)

    def message() -> Context:
        c = Context(session_id="s1", client=ClientInfo(ip="192.0.2.9", port=25, name="mx.pool.example.net"))
        c.helo, c.sender, c.rcpts = "mx.pool.example.net", "fred@sender.net", ["john@acme.org"]
        return c

    try:
        clock.at(0)
        assert (await as_hook(check.data(message()))).reply_id == 552
        clock.at(600)
        assert (await as_hook(check.data(message()))).action is Action.CONTINUE
        assert sent.count("grey") >= 2
        sent.clear()
        clock.at(629)
        for _ in range(3):
            assert (await as_hook(check.data(message()))).action is Action.CONTINUE
        assert sent == []
        clock.at(630)
        assert (await as_hook(check.data(message()))).action is Action.CONTINUE
        assert sent.count("grey") >= 1
    finally:
        await aio(store.close())
