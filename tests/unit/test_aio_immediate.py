"""aio(..., immediate=True): a store operation that never suspends needs no task, nor one
that waits on a future."""

from __future__ import annotations

import asyncio

import hiredis
import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from barricade.aio import aio
from barricade.drive import Deadlines, deferred
from barricade.options import REGISTRY
from barricade.policy.pipeline import Context, Pipeline
from barricade.policy.state_limits import StoreCheck
from barricade.policy.verdict import CONTINUE
from barricade.protocol.events import ClientInfo
from barricade.state import MemoryStore, StoreError
from barricade.state.metered import MeteredStore
from barricade.state.resp import Reply, RespConnectionError, RespError


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


# --- a Redis reply (resp.Reply) resumes its awaiter the moment it is done ---------------------


@pytest_twisted.ensureDeferred
async def test_a_reply_resumes_the_operation_at_once_on_result_failure_and_cancel():
    loop = asyncio.get_running_loop()

    async def op(reply):
        return await reply

    ok = Reply(loop=loop)
    d = aio(op(ok), immediate=True)
    ok.resolve("OK")
    assert result_of(d) == "OK"  # no loop turn between the reply and the result

    refused = Reply(loop=loop)
    d = aio(op(refused), immediate=True)
    refused.resolve(hiredis.ReplyError("NOSCRIPT No matching script"))
    with pytest.raises(RespError, match="NOSCRIPT"):
        result_of(d)

    lost = Reply(loop=loop)
    d = aio(op(lost), immediate=True)
    lost.fail(RespConnectionError("connection lost"))
    with pytest.raises(RespConnectionError):
        result_of(d)

    seen = []

    async def hears_cancel(reply):
        try:
            await reply
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    waiting = Reply(loop=loop)
    d = aio(hears_cancel(waiting), immediate=True)
    d.cancel()
    assert waiting.cancelled() and seen == ["cancelled"]  # at once, not at the next turn
    with pytest.raises(defer.CancelledError):
        result_of(d)


@pytest_twisted.ensureDeferred
async def test_a_reply_is_an_ordinary_future_to_a_task_and_to_a_second_awaiter():
    loop = asyncio.get_running_loop()
    reply = Reply(loop=loop)
    first = aio(reply_plus(reply, 1), immediate=True)
    second = asyncio.ensure_future(reply_plus(reply, 2))  # a task: add_done_callback, as always
    later = []
    reply.add_direct_callback(lambda r: later.append(r.result()))  # a second direct one
    reply.resolve(40)
    assert result_of(first) == 41 and not second.done()
    assert await defer.Deferred.fromFuture(second) == 42 and later == [40]
    done = []
    reply.add_direct_callback(done.append)  # already done: called at once
    assert done == [reply]


async def reply_plus(reply, n):
    return await reply + n


@pytest_twisted.ensureDeferred
async def test_a_hook_timing_out_on_a_reply_ends_with_timeout_error():
    """The policy's timeout cancels the aio Deferred a hook awaits: the hook hears
    Twisted's CancelledError, and the drive ends with TimeoutError, as for any wait."""
    loop = asyncio.get_running_loop()
    reply = Reply(loop=loop)
    heard = []

    async def hook():
        try:
            return await aio(reply_plus(reply, 1), immediate=True)
        except defer.CancelledError:
            heard.append("cancelled")
            raise

    clock = task.Clock()
    outcomes = []
    coro = hook()
    deferred(coro, coro.send(None), timeout=3.0, deadlines=Deadlines(clock)).addBoth(outcomes.append)
    clock.advance(3.0)
    assert heard == ["cancelled"] and reply.cancelled()
    assert len(outcomes) == 1 and outcomes[0].check(defer.TimeoutError)


class _Counting(MemoryStore):
    """A store whose ``rate`` waits: on a Redis-like reply future, or (not
    ``immediate``) on something only a task can carry on from."""

    def __init__(self, immediate: bool, loop: asyncio.AbstractEventLoop):
        super().__init__()
        self.immediate = immediate
        self.loop = loop
        self.replies: list[Reply] = []
        self.tasks: list[asyncio.Task | None] = []

    async def rate(self, key, **kw):
        self.tasks.append(asyncio.current_task())
        if self.immediate:
            reply = Reply(loop=self.loop)
            self.replies.append(reply)
            return await reply
        await asyncio.sleep(0)  # needs a task
        return 7


@pytest.mark.parametrize("immediate", [True, False])
@pytest_twisted.ensureDeferred
async def test_a_store_checks_hook_awaits_its_operation_through_the_pipeline(immediate):
    """StoreCheck.stored: on an immediate store the hook awaits the operation itself and
    the pipeline's driver resumes it from the reply (no task, no aio Deferred); any
    other store's operation runs in a task."""
    loop = asyncio.get_running_loop()
    store = _Counting(immediate, loop)

    seen: list[int] = []

    class Counts(StoreCheck):
        name = "counts"

        async def connect(self, ctx):
            seen.append(await self.stored(self.store.rate("k")))
            return CONTINUE

    check = Counts(REGISTRY.parse([]), None, store)
    ctx = Context(session_id="s", client=ClientInfo(ip="192.0.2.1", port=25, name="x.example"))
    running = defer.ensureDeferred(Pipeline([check], reactor, 5).run("connect", ctx))
    if immediate:
        assert not running.called and len(store.replies) == 1
        loop.call_soon(store.replies[0].resolve, 41)
    assert (await running) is CONTINUE
    assert seen == [41 if immediate else 7]
    assert (store.tasks[0] is None) is immediate
