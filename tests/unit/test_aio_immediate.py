"""aio(..., immediate=True): a store operation that never suspends needs no task, nor one
that waits on a future."""

from __future__ import annotations

import asyncio

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from barricade.aio import aio
from barricade.state import MemoryStore, StoreError
from barricade.state.metered import MeteredStore


def result_of(d):
    """The result a fired Deferred holds (raises its failure); a Deferred still waiting fails the test."""
    box = []
    d.addBoth(box.append)
    assert box, "the Deferred has not fired"
    value = box[0]
    if hasattr(value, "raiseException"):
        value.raiseException()
    return value


def test_memory_store_is_immediate_and_metered_says_so():
    assert MemoryStore.immediate is True
    assert MeteredStore(MemoryStore(), None).immediate is True


def test_an_immediate_operation_has_its_result_at_once():
    store = MeteredStore(MemoryStore(clock=lambda: 1000.0), None)
    assert result_of(aio(store.rate("k"), immediate=store.immediate)) == 1
    assert result_of(aio(store.rate("k"), immediate=store.immediate)) == 2
    assert result_of(aio(store.add("c", "v", ttl=10), immediate=True)) is True
    assert result_of(aio(store.get("c"), immediate=True)) == "v"


def test_an_immediate_failure_is_the_deferred_failure():
    class Down(MemoryStore):
        async def rate(self, key, **kw):
            raise StoreError("down")

    store = MeteredStore(Down(), None)
    with pytest.raises(StoreError):
        result_of(aio(store.rate("k"), immediate=store.immediate))


# --- an operation that waits on a future (a Redis reply): resumed by it, no task ---------


@pytest_twisted.ensureDeferred
async def test_a_waiting_operation_is_resumed_by_its_future():
    loop = asyncio.get_running_loop()
    reply = loop.create_future()
    tasks = []

    async def op():
        tasks.append(asyncio.current_task())
        value = await reply
        tasks.append(asyncio.current_task())
        return value + 1

    d = aio(op(), immediate=True)
    assert not d.called
    loop.call_soon(reply.set_result, 41)
    assert await d == 42
    assert tasks == [None, None]


@pytest_twisted.ensureDeferred
async def test_a_failed_future_is_the_deferred_failure_and_two_waits_chain():
    loop = asyncio.get_running_loop()
    first, second = loop.create_future(), loop.create_future()

    async def op():
        await first
        await second

    d = aio(op(), immediate=True)
    loop.call_soon(first.set_result, None)
    loop.call_later(0.01, second.set_exception, StoreError("down"))
    with pytest.raises(StoreError):
        await d


@pytest_twisted.ensureDeferred
async def test_cancelling_the_deferred_cancels_the_awaited_future():
    loop = asyncio.get_running_loop()
    reply = loop.create_future()
    seen = []

    async def op():
        try:
            await reply
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    d = aio(op(), immediate=True)
    d.cancel()
    with pytest.raises(defer.CancelledError):
        await d
    await task.deferLater(reactor, 0.01)  # the future's done callback resumes the coroutine
    assert reply.cancelled() and seen == ["cancelled"]


@pytest_twisted.ensureDeferred
async def test_a_wait_on_something_else_goes_on_in_a_task():
    async def op():
        await asyncio.sleep(0)  # yields None, not a future
        return asyncio.current_task() is not None

    assert await aio(op(), immediate=True) is True
