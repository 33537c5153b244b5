"""The bridge from Twisted to asyncio: ``await aio(coro)`` in Twisted code.

Twisted's coroutines are Deferred-driven (``defer.ensureDeferred``), and
awaiting an asyncio coroutine (redis.asyncio, dns.asyncresolver) directly
there fails with "await wasn't used with future".
Wrapping it in an asyncio task and that in a Deferred works on Twisted's
asyncio reactor; cancelling the Deferred cancels the task.

(A store check's hook needs none of this for its own store calls: the
pipeline's driver resumes it from a Redis reply's future itself,
``StoreCheck.stored``.)

A store operation (``immediate``: see :attr:`barricade.state.Store.immediate`)
is run here instead: one that never suspends (MemoryStore) has its result at
once, no task, no loop turn; one that waits on an asyncio future (a Redis
reply) is resumed by that future's done callback, with no task, no
Deferred-from-future and no timer of its own: the Redis connection keeps the
deadline.  A future that offers ``add_direct_callback``
(:class:`barricade.state.resp.Reply`) resumes it the moment the reply is
parsed, not at the event loop's next turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.python.failure import Failure

from barricade.state.nowait import carry_on

T = TypeVar("T")


def aio(coro: Coroutine[Any, Any, T], *, immediate: bool = False) -> Deferred[T]:
    """Run an asyncio coroutine on the reactor's loop and return a Deferred.

    ``immediate``: run it here; its result (or failure) is in the Deferred
    returned, at once unless it awaits an asyncio future, which then resumes
    it.  Should it suspend on anything else, a task carries on from there.
    """
    if not immediate:
        return Deferred.fromFuture(asyncio.ensure_future(coro))
    try:
        awaited = coro.send(None)
    except StopIteration as done:
        return succeed(done.value)
    except BaseException:  # noqa: BLE001 - the caller's await raises it
        return fail()
    if asyncio.isfuture(awaited):
        return _Driven(coro, awaited).deferred
    return _in_task(coro, awaited)


def _in_task(coro: Coroutine[Any, Any, T], awaited: Any) -> Deferred[T]:
    """A task carries a started coroutine on from what it last yielded."""

    async def rest() -> T:
        return await carry_on(coro, awaited)

    return Deferred.fromFuture(asyncio.ensure_future(rest()))


class _Driven:
    """A started coroutine resumed by the done callbacks of the futures it awaits.

    What an asyncio task does for a coroutine, for the one case a store
    operation needs: each time it yields a future, wake it when the future is
    done.  Cancelling the Deferred cancels that future, which the coroutine
    then sees as CancelledError, as in a task.
    """

    __slots__ = ("coro", "awaited", "deferred")

    def __init__(self, coro: Coroutine[Any, Any, Any], awaited: asyncio.Future):
        self.coro = coro
        self.deferred: Deferred = Deferred(self._cancel)
        self._wait(awaited)

    def _wait(self, awaited: asyncio.Future) -> None:
        awaited._asyncio_future_blocking = False  # accepted, as a task does
        self.awaited = awaited
        direct = getattr(awaited, "add_direct_callback", None)
        if direct is not None:  # a Redis reply: resumed as soon as it is parsed
            direct(self._step)
        else:
            awaited.add_done_callback(self._step)

    def _cancel(self, deferred: Deferred) -> None:
        # Twisted's CancelledError first, as for any cancelled Deferred: a future that
        # resumes the coroutine at once (resp.Reply) would otherwise fire it with asyncio's.
        deferred.errback(Failure(CancelledError()))
        self.awaited.cancel()

    def _step(self, _done: asyncio.Future) -> None:
        d = self.deferred
        try:
            awaited = self.coro.send(None)  # the future's __await__ returns its result or raises
        except StopIteration as done:
            if not d.called:  # a cancelled Deferred has had its CancelledError already
                d.callback(done.value)
            return
        except BaseException:  # noqa: BLE001 - the caller's await raises it
            if not d.called:
                d.errback(Failure())
            return
        if asyncio.isfuture(awaited):
            self._wait(awaited)
        else:
            _in_task(self.coro, awaited).chainDeferred(d)
