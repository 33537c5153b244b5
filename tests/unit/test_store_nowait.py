"""Store writes nobody waits for (``*_nowait``): the outcome reaches a plain callback,
whatever the operation awaits, and a failure is always a StoreError."""

from __future__ import annotations

import asyncio

import pytest_twisted
from twisted.internet import reactor, task

from barricade.state import MemoryStore, StoreError
from barricade.state.metered import MeteredStore
from barricade.state.nowait import run_nowait
from barricade.state.resp import Reply
from tests.coroutines import finished  # a MemoryStore operation never waits


class Outcomes(list):
    """A ``done`` callback that keeps what it was given."""

    def __call__(self, error: StoreError | None) -> None:
        self.append(error)


def test_memory_store_writes_end_before_the_call_returns():
    store = MemoryStore(clock=lambda: 1000.0)
    done = Outcomes()
    lease = finished(store.acquire("ip", limit=1, ttl=10))
    store.release_nowait("ip", lease, done)
    assert done == [None]
    assert finished(store.leases("ip")) == 0
    store.set_nowait("k", "discard s1", ttl=10, done=done)
    assert done == [None, None]
    assert finished(store.get("k")) == "discard s1"
    store.delete_nowait("k", done)
    assert done == [None, None, None]
    assert finished(store.get("k")) is None


def test_a_failure_is_reported_as_a_store_error():
    class Broken(MemoryStore):
        async def delete(self, key):
            raise StoreError("down")

        async def set(self, key, value, *, ttl):
            raise KeyError(key)  # a store's own bug

    done = Outcomes()
    Broken().delete_nowait("k", done)
    Broken().set_nowait("k", "v", ttl=1, done=done)
    assert [type(e) for e in done] == [StoreError, StoreError]
    assert str(done[0]) == "down" and "KeyError('k')" in str(done[1])


@pytest_twisted.ensureDeferred
async def test_an_operation_waiting_on_a_future_is_resumed_by_it():
    loop = asyncio.get_running_loop()
    first, second = loop.create_future(), loop.create_future()
    steps: list[str] = []

    async def op():
        steps.append(f"{await first}")
        steps.append(f"{await second}")

    done = Outcomes()
    run_nowait(op(), done)
    assert done == [] and steps == []
    first.set_result(1)
    await task.deferLater(reactor, 0)
    assert steps == ["1"] and done == []
    second.set_exception(StoreError("lost"))
    await task.deferLater(reactor, 0)
    assert steps == ["1"] and [str(e) for e in done] == ["lost"]


@pytest_twisted.ensureDeferred
async def test_a_cancelled_wait_is_reported_as_a_store_error():
    """At shutdown what a write waits for may be cancelled: reported, not raised
    into the loop's callback."""
    waited = asyncio.get_running_loop().create_future()

    async def op():
        await waited

    done = Outcomes()
    run_nowait(op(), done)
    waited.cancel()
    await task.deferLater(reactor, 0)
    assert [str(e) for e in done] == ["cancelled"]


@pytest_twisted.ensureDeferred
async def test_anything_else_awaited_is_left_to_a_task():
    """A bare yield (``asyncio.sleep(0)``): a task carries the operation on."""
    answer = asyncio.get_running_loop().create_future()

    async def op():
        await asyncio.sleep(0)
        await answer

    done = Outcomes()
    run_nowait(op(), done)
    await task.deferLater(reactor, 0.01)
    assert done == []
    answer.set_result(None)
    for _ in range(10):
        if done:
            break
        await task.deferLater(reactor, 0.01)
    assert done == [None]


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, bool]] = []

    def store(self, operation: str, seconds: float, failed: bool) -> None:
        assert seconds >= 0
        self.seen.append((operation, failed))


def test_metered_store_observes_each_write_and_its_failure():
    class HalfDown(MemoryStore):
        async def delete(self, key):
            raise StoreError("down")

    metrics = Recorder()
    store = MeteredStore(HalfDown(clock=lambda: 1000.0), metrics)
    done = Outcomes()
    lease = finished(store.acquire("ip", limit=1, ttl=10))
    store.release_nowait("ip", lease, done)
    store.set_nowait("k", "v", ttl=5, done=done)
    store.delete_nowait("k", done)
    assert metrics.seen == [("acquire", False), ("release", False), ("set", False), ("delete", True)]
    assert done[:2] == [None, None] and isinstance(done[2], StoreError)


@pytest_twisted.ensureDeferred
async def test_a_reply_callback_that_raises_does_not_stop_the_next_replies():
    """The direct callback runs inside the connection's reply loop: an exception
    there goes to the loop's handler, and the reply after it is still delivered."""
    loop = asyncio.get_running_loop()
    reported: list[dict] = []
    old = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        first, second = Reply(loop=loop), Reply(loop=loop)
        got: list[object] = []

        def boom(_):
            raise RuntimeError("bug")

        first.add_direct_callback(boom)
        second.add_direct_callback(lambda r: got.append(r.result()))
        first.resolve("OK")
        second.resolve(7)
    finally:
        loop.set_exception_handler(old)
    assert got == [7]
    assert len(reported) == 1 and isinstance(reported[0]["exception"], RuntimeError)


@pytest_twisted.ensureDeferred
async def test_a_store_that_needs_a_task_gets_one():
    """A store that is not ``immediate`` starts its operations in a task (they may
    use ``asyncio.timeout``, which needs one)."""
    seen: list[object] = []

    class InTask(MemoryStore):
        immediate = False

        async def delete(self, key):
            seen.append(asyncio.current_task())
            async with asyncio.timeout(1):
                await asyncio.sleep(0)

    done = Outcomes()
    InTask().delete_nowait("k", done)
    for _ in range(10):
        if done:
            break
        await task.deferLater(reactor, 0.01)
    assert done == [None] and seen[0] is not None


def test_metered_store_reports_a_backend_that_raises_finished():
    class Raising(MemoryStore):
        def release_nowait(self, key, lease, done):
            raise OSError("broken pipe")

    metrics = Recorder()
    done = Outcomes()
    MeteredStore(Raising(), metrics).release_nowait("ip", "l1", done)
    assert metrics.seen == [("release", True)]
    assert isinstance(done[0], StoreError) and "broken pipe" in str(done[0])



@pytest_twisted.ensureDeferred
async def test_commands_of_a_turn_are_written_before_a_close_in_that_turn():
    """Commands leave at the end of their turn (one write for all of them); a client
    closed in the same turn writes them first, as the transport's close sends what
    it was given."""
    from barricade.state.resp import RespClient, _Protocol

    class Transport:
        def __init__(self):
            self.events: list[object] = []

        def write(self, data: bytes) -> None:
            self.events.append(data)

        def is_closing(self) -> bool:
            return "close" in self.events

        def close(self) -> None:
            self.events.append("close")

    client = RespClient("redis://127.0.0.1:9")
    proto = client._protocol = _Protocol()
    proto.connection_made(transport := Transport())
    client.start("DEL", "a")
    client.start("ZREM", "b", "c")
    assert transport.events == []  # held for the rest of this turn
    await client.close()
    assert transport.events == [b"*2\r\n$3\r\nDEL\r\n$1\r\na\r\n*3\r\n$4\r\nZREM\r\n$1\r\nb\r\n$1\r\nc\r\n",
                                "close"]


@pytest_twisted.ensureDeferred
async def test_a_command_nobody_awaits_is_heard_in_order_with_no_future():
    """``start_heard``: the reply of a write nobody awaits goes to its callback (None,
    or the error reply as a RespError) in its place among the futures of awaited
    commands; a callback that raises does not stop the next replies; a lost
    connection reaches every callback still waiting."""
    from barricade.state.resp import RespClient, RespConnectionError, RespError, _Protocol

    class Transport:
        def write(self, data: bytes) -> None:
            pass

        def is_closing(self) -> bool:
            return False

    loop = asyncio.get_running_loop()
    reported: list[dict] = []
    old = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    client = RespClient("redis://127.0.0.1:9")
    proto = client._protocol = _Protocol()
    proto.connection_made(Transport())
    heard: list[object] = []

    def boom(_error):
        raise RuntimeError("bug")

    try:
        assert client.start_heard(heard.append, "DEL", "a")
        awaited = client.start("GET", "b")
        assert client.start_heard(boom, "DEL", "c")
        assert client.start_heard(heard.append, "ZREM", "d", "e")
        assert client.start_heard(heard.append, "DEL", "f")
        assert len(proto.waiting) == 5 and sum(type(w) is Reply for w in proto.waiting) == 1
        proto.data_received(b":1\r\n$1\r\nx\r\n:0\r\n-WRONGTYPE bad\r\n")
        assert heard[0] is None and awaited.result() == "x"
        assert isinstance(heard[1], RespError) and "WRONGTYPE" in str(heard[1])
        assert len(reported) == 1 and isinstance(reported[0]["exception"], RuntimeError)
        proto.connection_lost(None)
        assert isinstance(heard[2], RespConnectionError)
    finally:
        loop.set_exception_handler(old)
    client._protocol = None
    assert not client.start_heard(heard.append, "DEL", "g")  # not connected: never called
    assert len(heard) == 3


def test_metered_connect_is_observed_as_rate_then_acquire_within_the_rate_limit():
    """``connect`` counts as ``rate``, and as ``acquire`` too when the count was within
    the rate limit (the lease was asked for); a failure is ``rate``'s alone."""
    class Counted(MemoryStore):
        def __init__(self, count):
            super().__init__()
            self.count = count

        async def connect(self, key, *, rate_limit, limit, ttl, window=60, buckets=10):
            if self.count is None:
                raise StoreError("down")
            return self.count, "lease" if self.count <= rate_limit else None

    for count, rate_limit, expected in ((3, 5, [("rate", False), ("acquire", False)]),
                                        (6, 5, [("rate", False)]),
                                        (0, 0, [("rate", False), ("acquire", False)])):
        metrics = Recorder()
        got = finished(MeteredStore(Counted(count), metrics).connect("ip", rate_limit=rate_limit, limit=1, ttl=10))
        assert got[0] == count and metrics.seen == expected
    metrics = Recorder()
    try:
        finished(MeteredStore(Counted(None), metrics).connect("ip", rate_limit=5, limit=1, ttl=10))
    except StoreError:
        pass
    else:
        raise AssertionError("the store's failure was not raised")
    assert metrics.seen == [("rate", True)]


@pytest_twisted.ensureDeferred
async def test_a_command_nobody_awaits_hears_the_connections_deadline():
    """Past the connection's timeout every command in flight fails: a write nobody
    awaits hears RespTimeout, and the connection is dropped."""
    from barricade.state.resp import RespClient, RespTimeout, _Protocol

    class Transport:
        aborted = False

        def write(self, data: bytes) -> None:
            pass

        def is_closing(self) -> bool:
            return self.aborted

        def abort(self) -> None:
            self.aborted = True

    client = RespClient("redis://127.0.0.1:9")
    proto = client._protocol = _Protocol(timeout=0.02)
    proto.connection_made(transport := Transport())
    heard: list[object] = []
    assert client.start_heard(heard.append, "DEL", "a")
    for _ in range(50):
        if heard:
            break
        await task.deferLater(reactor, 0.01)
    assert len(heard) == 1 and isinstance(heard[0], RespTimeout) and transport.aborted
