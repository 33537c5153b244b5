"""Idle downstream connections kept for the next client session, as Postfix's connection cache.

A session that ends with its downstream connection clean (greeted, EHLO
answered, no transaction open) gives it back here instead of sending QUIT;
the next session to the same forward hosts takes it and skips the connect,
the 220 and the EHLO.  At most ``size`` idle connections are kept per
destination, each for at most ``idle`` seconds (then QUIT).  A connection the
downstream closed while idle is noticed (its protocol is marked lost) and
never handed out; one that is closed just as it is taken fails its first
command, and the proxy then opens a fresh one (see ``Proxy._forward_rcpt``).
"""

from __future__ import annotations

from collections.abc import Hashable

from twisted.internet import defer

from barricade.net.forward import Downstream


class DownstreamPool:
    """Idle, reusable downstream connections by destination.

    A parked connection carries the time it expires; one timer, set for the
    earliest expiry, QUITs whatever is due (and is set again for the next),
    so parking and taking a connection, which every message does, arm and
    cancel no timer of their own.
    """

    def __init__(self, reactor, size: int, idle: float):
        self.reactor = reactor
        self.size = size
        self.idle = idle
        # Per destination, oldest first: (connection, when its idle time is up).
        self._idle: dict[Hashable, list[tuple[Downstream, float]]] = {}
        self._sweep = None  # the timer of the next expiry

    def take(self, key: Hashable) -> Downstream | None:
        """The most recently parked live connection to ``key``, or None."""
        parked = self._idle.get(key)
        while parked:
            down, until = parked.pop()
            if not down.alive:
                continue
            if until > self.reactor.seconds():
                return down
            defer.ensureDeferred(down.quit())  # its idle time is up; the sweep is just late
        return None

    def give(self, key: Hashable, down: Downstream) -> None:
        """Park a connection between transactions (or QUIT it when it cannot be kept)."""
        if not down.alive:
            return
        down.pace = None  # no session streams a message to it now
        parked = self._idle.setdefault(key, [])
        if (down.in_transaction or not down.reusable or self.size <= 0
                or len(parked) >= self.size):
            defer.ensureDeferred(down.quit())
            return
        parked.append((down, self.reactor.seconds() + self.idle))
        if self._sweep is None:
            self._sweep = self.reactor.callLater(self.idle, self._expire)

    def _expire(self) -> None:
        """QUIT the connections whose idle time is up; wait for the next to be."""
        self._sweep = None
        now = self.reactor.seconds()
        following = None
        for key, parked in list(self._idle.items()):
            due = 0
            while due < len(parked) and parked[due][1] <= now:
                due += 1
            for down, _until in parked[:due]:
                defer.ensureDeferred(down.quit())
            del parked[:due]
            if not parked:
                del self._idle[key]
            elif following is None or parked[0][1] < following:
                following = parked[0][1]
        if following is not None:
            self._sweep = self.reactor.callLater(max(0.0, following - now), self._expire)

    def close(self) -> None:
        """QUIT every idle connection (the daemon is stopping)."""
        if self._sweep is not None and self._sweep.active():
            self._sweep.cancel()
        self._sweep = None
        idle, self._idle = self._idle, {}
        for parked in idle.values():
            for down, _until in parked:
                defer.ensureDeferred(down.quit())

    def __len__(self) -> int:
        return sum(1 for parked in self._idle.values() for down, _ in parked if down.alive)
