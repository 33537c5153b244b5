"""A text that changes once a second, made once a second.

Timestamps in log lines, the date of our ``Received:`` field and the
time-and-pid part of session ids are each asked for many times a second,
and made from the whole second alone; the stdlib formats dates in Python,
at a few percent of a relayed message.  Pure: no I/O, no Twisted.
"""

from __future__ import annotations

from collections.abc import Callable


class PerSecond:
    """``make(second)``, remade only when the whole second changes."""

    __slots__ = ("make", "second", "text")

    def __init__(self, make: Callable[[int], str]):
        self.make = make
        self.second: int | None = None
        self.text = ""

    def __call__(self, when: float) -> str:
        second = int(when)
        if second != self.second:
            self.second, self.text = second, self.make(second)
        return self.text

    def forget(self) -> None:
        """Make the text again next time (what it depends on besides the second changed)."""
        self.second = None
