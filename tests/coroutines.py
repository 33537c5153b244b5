"""Running a coroutine that must end on its first step, outside any event loop.

Hooks of pure checks, MemoryStore operations and the fakes of many unit tests
never wait for anything: the tests run them with one ``send`` and fail if they
do wait, which would mean the check or store did I/O it should not.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, succeed

from barricade.drive import deferred

T = TypeVar("T")


def finished(coro: Coroutine[Any, Any, T]) -> T:
    """The coroutine's result; an AssertionError if it awaited something."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("the coroutine awaited something")


def as_hook(coro: Coroutine[Any, Any, T]) -> Deferred[T]:
    """The coroutine driven as the pipeline drives a check's hook, for a test to await.

    A hook on an ``immediate`` store awaits the store's reply future
    itself (``StoreCheck.stored``), which only the pipeline's driver resumes:
    Twisted's own coroutine driver would refuse the future.
    """
    try:
        awaited = coro.send(None)
    except StopIteration as stop:
        return succeed(stop.value)
    return deferred(coro, awaited)
