"""The one bridge from Twisted to asyncio: ``await aio(coro)`` in a check.

Checks run as Deferred-driven coroutines (``defer.ensureDeferred``), and
awaiting an asyncio coroutine (redis.asyncio, dns.asyncresolver) directly
there fails with "await wasn't used with future".
Wrapping it in an asyncio task and that in a Deferred works on Twisted's
asyncio reactor; cancelling the Deferred cancels the task.

A coroutine known never to suspend (``immediate``: every operation of the
in-process MemoryStore) is run to its end at once instead: no task, no
loop turn, and a check that awaits it goes on without waiting.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, fail, succeed

T = TypeVar("T")


def aio(coro: Coroutine[Any, Any, T], *, immediate: bool = False) -> Deferred[T]:
    """Run an asyncio coroutine on the reactor's loop and return a Deferred.

    ``immediate``: run it here; its result (or failure) is in the Deferred
    returned.  Should it suspend after all, a task carries on from there.
    """
    if not immediate:
        return Deferred.fromFuture(asyncio.ensure_future(coro))
    try:
        awaited = coro.send(None)
    except StopIteration as done:
        return succeed(done.value)
    except BaseException:  # noqa: BLE001 - the caller's await raises it
        return fail()

    async def rest() -> T:
        return await _carry_on(coro, awaited)

    return Deferred.fromFuture(asyncio.ensure_future(rest()))


@types.coroutine
def _carry_on(coro: Coroutine[Any, Any, T], awaited: Any) -> Generator[Any, Any, T]:
    """The rest of a started coroutine, driven by the task that awaits this."""
    while True:
        try:
            sent = yield awaited
        except BaseException as exc:  # noqa: BLE001 - thrown in by the task (cancel): pass it on
            try:
                awaited = coro.throw(exc)
            except StopIteration as done:
                return done.value
        else:
            try:
                awaited = coro.send(sent)
            except StopIteration as done:
                return done.value
