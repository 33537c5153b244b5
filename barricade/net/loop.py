"""The event loop Barricade runs on: asyncio's, with work done at the end of each turn.

A connection that gathers what it writes over one turn of the loop (the
Redis client: every store command of every session the turn handled
leaves in one ``send``) has to write it once the turn's work is done.
``call_soon`` would do that at the start of the next turn, but a handle
scheduled makes the loop poll again without blocking first: a turn of its
own (an ``epoll_wait``, the ready queue, a handle run) for every turn that
sends anything, about one more per message relayed with a Redis store.

:meth:`Loop.at_turn_end` runs a callback after the turn's ready handles
instead, just before the loop polls for the next events, in the same
turn.  The loop is stock asyncio but for its selector, whose ``select``
runs those callbacks first; asyncio computed how long to block before
calling it, so a callback that schedules anything (a write that fails
closes its transport with ``call_soon``) makes this poll not block.
That check reads the loop's ready queue, an attribute of asyncio's
``BaseEventLoop`` that every CPython since 3.4 has: a test holds it to
that, and without it the poll would never block after such a callback
(a turn, as ``call_soon`` made).  :func:`turn_end` falls back to
``call_soon`` on any other loop (pytest's, a tool's).
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable


class _Selector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """The platform's selector, which runs the loop's end-of-turn callbacks before it polls."""

    def __init__(self) -> None:
        super().__init__()
        self.loop: Loop | None = None

    def select(self, timeout: float | None = None) -> list:
        loop = self.loop
        if loop is not None and loop._turn_end:
            loop._run_turn_end()
            # Scheduled by a callback: asyncio reckoned without it.  (Without the
            # attribute, in some later Python: assume so, a turn as with call_soon.)
            if getattr(loop, "_ready", True):
                timeout = 0
        return super().select(timeout)


class Loop(asyncio.SelectorEventLoop):
    """asyncio's selector loop with :meth:`at_turn_end`."""

    def __init__(self) -> None:
        selector = _Selector()
        super().__init__(selector)
        self._turn_end: list[Callable[[], None]] = []
        selector.loop = self

    def at_turn_end(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once this turn's ready handles have run, before the
        loop polls again.  One added by such a callback runs at the next turn's end."""
        self._turn_end.append(callback)

    def _run_turn_end(self) -> None:
        calls, self._turn_end = self._turn_end, []
        for call in calls:
            try:
                call()
            except Exception as exc:  # noqa: BLE001 - the others must still run, the loop must poll
                self.call_exception_handler(
                    {"message": "exception in an end-of-turn callback", "exception": exc})

    def close(self) -> None:
        self._turn_end.clear()  # as asyncio drops the handles still ready
        super().close()


def turn_end(loop: asyncio.AbstractEventLoop) -> Callable[[Callable[[], None]], object]:
    """How to run a callback at the end of ``loop``'s turn: :meth:`Loop.at_turn_end`,
    or ``call_soon`` (the start of the next turn) on any other loop."""
    return loop.at_turn_end if isinstance(loop, Loop) else loop.call_soon
