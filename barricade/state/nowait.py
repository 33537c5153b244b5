"""Store writes that nobody waits for: a lease's release, dupmsg's settling.

Their result changes nothing a client is answered, so the session does not
wait for them; a failure is only logged.  Driving such a write as a
coroutine wrapped in a Deferred, as an awaited check does, costs a frame per
store layer on every resume and a Deferred with its callbacks, for an answer
that is thrown away.  So :class:`~barricade.state.Store` has ``*_nowait``
methods that report to a plain callback instead: RedisStore sends the
command at once and reads its reply in that callback; every other store
runs its ordinary coroutine through :func:`run_nowait`.

Pure asyncio, like the stores: nothing here knows about Twisted.
"""

from __future__ import annotations

import asyncio
import functools
import types
from collections.abc import Callable, Coroutine, Generator
from typing import Any, TypeVar

from barricade.state.errors import StoreError

T = TypeVar("T")

#: What a write nobody waits for reports when it ends: None, or why it failed.
Done = Callable[[StoreError | None], None]


def run_nowait(coro: Coroutine[Any, Any, Any], done: Done, *, immediate: bool = True) -> None:
    """Run a store operation here, without a task unless it needs one.

    One that never suspends (MemoryStore) ends before this returns, with no
    object made for it; one that waits on an asyncio future is resumed by the
    future's done callback; anything else it awaits is left to a task.  A
    store that is not ``immediate`` (:attr:`~barricade.state.Store.immediate`:
    its operations must start inside a task) gets a task from the start.  Any
    exception other than a StoreError (a store's own bug) is reported as one
    too, so that ``done`` has one type to log.
    """
    if not immediate:
        asyncio.ensure_future(coro).add_done_callback(functools.partial(_finished, done))
        return
    _step(coro, done)


def _step(coro: Coroutine[Any, Any, Any], done: Done, _: object = None) -> None:
    try:
        awaited = coro.send(None)
    except StopIteration:
        done(None)
        return
    except (Exception, asyncio.CancelledError) as exc:  # noqa: BLE001 - reported, never raised here
        done(store_error(exc))
        return
    if asyncio.isfuture(awaited):
        awaited._asyncio_future_blocking = False  # accepted, as a task does
        awaited.add_done_callback(functools.partial(_step, coro, done))
    else:
        task = asyncio.ensure_future(carry_on(coro, awaited))
        task.add_done_callback(functools.partial(_finished, done))


def _finished(done: Done, task: asyncio.Future) -> None:
    if task.cancelled():
        done(store_error(asyncio.CancelledError()))
    else:
        exc = task.exception()
        done(None if exc is None else store_error(exc))


def store_error(exc: BaseException) -> StoreError:
    """What ``done`` is given for an operation that raised: a StoreError as it is;
    a cancelled wait (shutting down) or a store's own bug as a StoreError too,
    so that ``done`` has one type to log."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, asyncio.CancelledError):
        return StoreError("cancelled")
    return StoreError(repr(exc))


@types.coroutine
def carry_on(coro: Coroutine[Any, Any, T], awaited: Any) -> Generator[Any, Any, T]:
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
