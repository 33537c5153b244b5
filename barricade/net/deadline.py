"""Moving a deadline without searching the reactor's timer heap.

Twisted moves a ``DelayedCall`` to a *later* time by updating a number,
but to an *earlier* one by a linear search of every pending timer (its
heap position is not kept).  With thousands of idle sessions, each
holding a timer, that search cost milliseconds per command.  A deadline
that moves earlier is therefore replaced: the old timer is cancelled
(dropped lazily by the reactor) and a new one pushed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def rearm(clock: Any, timer: Any, seconds: float, call: Callable[[], object]) -> Any:
    """``timer`` moved to ``seconds`` from now, or a new timer calling ``call``."""
    if timer is not None and timer.active():
        if clock.seconds() + seconds >= timer.time:
            timer.reset(seconds)  # later: only a number changes
            return timer
        timer.cancel()
    return clock.callLater(seconds, call)
