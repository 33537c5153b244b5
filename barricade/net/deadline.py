"""A connection's time limit, moved on every command, with one reactor timer under it.

A session moves its deadline a dozen times per message (each command, each
downstream reply) and almost never reaches it.  Moving a Twisted
``DelayedCall`` costs several calls each time, and moving one *earlier*
costs a linear search of every pending timer (its heap position is not
kept), which with thousands of idle sessions was milliseconds per command.

So :class:`Deadline` keeps the limit as a number and moves only that.  The
timer under it stays where it was set; when it fires before the limit (the
limit moved later meanwhile) it is set again for the rest.  Only a limit
moved *earlier* than the timer replaces it: the old one is cancelled
(dropped lazily by the reactor) and a new one pushed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Deadline:
    __slots__ = ("_clock", "_call", "due", "_timer")

    def __init__(self, clock: Any, call: Callable[[], object]):
        self._clock = clock
        self._call = call
        self.due: float | None = None  # when ``call`` runs (reactor seconds); None: off
        self._timer: Any = None

    def set(self, seconds: float, now: float | None = None) -> None:
        """``call`` runs ``seconds`` from now, unless the deadline is moved or cleared first.

        ``now``: the clock's time, from a caller that has just read it.
        """
        clock = self._clock
        due = self.due = (clock.seconds() if now is None else now) + seconds
        timer = self._timer
        if timer is None:
            self._timer = clock.callLater(seconds, self._fire)
        elif due < timer.time:
            timer.cancel()
            self._timer = clock.callLater(seconds, self._fire)

    def clear(self) -> None:
        self.due = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        """Off for good: the owner is done.  The callback is dropped (a later
        :meth:`set` calls nothing), so that an owner whose bound method it
        was is freed by reference counting when it ends, not left for the
        garbage collector as a cycle."""
        self.clear()
        self._call = _nothing

    def _fire(self) -> None:
        self._timer = None
        due = self.due
        if due is None:
            return
        left = due - self._clock.seconds()
        if left > 0:  # moved later since the timer was set
            self._timer = self._clock.callLater(left, self._fire)
            return
        self.due = None
        self._call()


def _nothing() -> None:
    """What a closed :class:`Deadline` calls."""
