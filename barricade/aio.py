"""The one bridge from Twisted to asyncio: ``await aio(coro)`` in a check.

Checks run as Deferred-driven coroutines (``defer.ensureDeferred``), and
awaiting an asyncio coroutine (redis.asyncio, dns.asyncresolver) directly
there fails with "await wasn't used with future".
Wrapping it in an asyncio task and that in a Deferred works on Twisted's
asyncio reactor; cancelling the Deferred cancels the task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from twisted.internet.defer import Deferred

T = TypeVar("T")


def aio(coro: Coroutine[Any, Any, T]) -> Deferred[T]:
    """Run an asyncio coroutine on the reactor's loop and return a Deferred."""
    return Deferred.fromFuture(asyncio.ensure_future(coro))
