"""Barricade's event loop: work done at the end of a turn, before the loop polls again,
with no turn of its own."""

from __future__ import annotations

import asyncio
import socket
import threading
import uuid

import pytest
import redis

from barricade.net.loop import Loop, turn_end
from barricade.state.redis import RedisStore
from barricade.state.resp import _Protocol


def run(loop: Loop, awaitable):
    """``loop.run_until_complete(awaitable)`` in a thread of its own (the test runner's
    loop runs in this one)."""
    outcome: list = []

    def target() -> None:
        try:
            outcome.append(loop.run_until_complete(awaitable))
        except BaseException as exc:  # noqa: BLE001 - raised again in the test's thread
            outcome.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(20)
    assert outcome, "the loop did not finish"
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


@pytest.fixture
def loop():
    loop = Loop()
    yield loop
    loop.close()


def counting_polls(loop: Loop, after=lambda: None) -> list:
    """The timeouts of the loop's polls from now on, each with what ``after()`` says
    once the poll returned."""
    polls: list = []
    selector = loop._selector
    select = type(selector).select

    def counted(timeout=None):
        events = select(selector, timeout)
        polls.append((timeout, after()))
        return events

    selector.select = counted
    return polls


def test_a_callback_runs_after_the_turns_handles_and_before_the_next_poll(loop):
    order: list[str] = []

    def first() -> None:
        order.append("first")
        loop.at_turn_end(lambda: order.append("end"))
        loop.call_soon(lambda: order.append("next turn"))

    loop.call_soon(first)
    loop.call_soon(lambda: order.append("second"))  # the same turn as first
    polls = counting_polls(loop, after=lambda: list(order))
    run(loop, asyncio.sleep(0))
    assert order[:4] == ["first", "second", "end", "next turn"]
    # the first poll came before any handle ran; by the second, "end" had run (with
    # call_soon it would be a handle of the next turn, run after that poll)
    assert polls[1] == (0, ["first", "second", "end"])


def test_what_a_callback_schedules_runs_at_once_though_the_loop_meant_to_block(loop):
    """asyncio reckoned its poll's timeout before the callback scheduled anything:
    the poll must not block with a handle ready."""
    done = loop.create_future()
    loop.call_later(5, lambda: done.done() or done.set_exception(AssertionError("blocked")))
    loop.call_soon(lambda: loop.at_turn_end(lambda: loop.call_soon(done.set_result, "ran")))
    polls = counting_polls(loop)
    started = loop.time()
    assert run(loop, done) == "ran"
    assert loop.time() - started < 4  # not the 5 s the poll was given
    assert (0, None) in polls


def test_a_callback_that_raises_goes_to_the_exception_handler_and_the_others_run(loop):
    seen: list[object] = []
    loop.set_exception_handler(lambda _loop, context: seen.append(context["exception"]))

    def boom() -> None:
        raise RuntimeError("boom")

    loop.call_soon(lambda: (loop.at_turn_end(boom), loop.at_turn_end(lambda: seen.append("after"))))
    run(loop, asyncio.sleep(0.01))
    assert [type(x) for x in seen] == [RuntimeError, str] and seen[1] == "after"


def test_another_loop_gets_call_soon():
    plain = asyncio.new_event_loop()
    try:
        assert turn_end(plain) == plain.call_soon
    finally:
        plain.close()
    ours = Loop()
    try:
        assert turn_end(ours) == ours.at_turn_end
        assert ours._ready is not None  # the ready queue the selector reads is there
    finally:
        ours.close()


def test_a_redis_connection_writes_a_turns_commands_at_its_end(loop):
    """Every command of a turn in one write, before the loop polls: on asyncio's own
    loop that write would be a handle of the next turn, run after its poll."""
    a, b = socket.socketpair()
    b.setblocking(False)

    async def main() -> bytes:
        transport, proto = await loop.create_connection(lambda: _Protocol(), sock=a)
        polls = counting_polls(loop, after=lambda: proto.held)
        proto.send(b"*1\r\n$4\r\nPING\r\n")
        proto.send(b"*1\r\n$4\r\nPING\r\n")
        assert proto.held is not None  # held for the rest of this turn
        await asyncio.sleep(0)  # the turn ends; the next one runs this
        assert polls == [(0, None)]  # written by the time the loop polled
        data = b.recv(100)
        transport.close()
        return data

    assert run(loop, main()) == b"*1\r\n$4\r\nPING\r\n" * 2
    b.close()


def test_a_turns_store_calls_reach_a_real_redis_in_one_write_before_the_poll(loop, redis_server):
    """On a live redis-server: writes nobody awaits and an awaited call, made in one
    turn, leave in one write by the time the loop polls, in order, each answered."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    raw = redis.Redis(host="127.0.0.1", port=redis_server.port, decode_responses=True)

    async def main() -> None:
        store = RedisStore(redis_server.url, prefix=prefix, timeout=2.0, connect_timeout=1.0)
        try:
            lease = await store.acquire("ip", limit=5, ttl=10)  # connects
            assert lease is not None
            proto = store._backend.client._protocol
            writes: list[bytes] = []
            write = proto.transport.write
            proto.transport.write = lambda data: (writes.append(data), write(data))
            polls = counting_polls(loop, after=lambda: len(writes))
            outcomes: list[object] = []
            store.set_nowait("a", "discard s1", ttl=10, done=outcomes.append)
            store.release_nowait("ip", lease, outcomes.append)
            assert await store.add("b", "pending s2", ttl=10) is True
            assert polls[0][1] == 1  # the turn's one write had left when the loop first polled
            assert len(writes) == 1 and writes[0].count(b"*") == 3
            assert outcomes == [None, None]  # heard in order, before the awaited reply
            assert await store.leases("ip") == 0
        finally:
            await store.close()

    try:
        run(loop, main())
        assert raw.get(f"{prefix}cache:{{a}}") == "discard s1"
        assert raw.get(f"{prefix}cache:{{b}}") == "pending s2"
    finally:
        raw.close()
