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
    """Idle, reusable downstream connections by destination."""

    def __init__(self, reactor, size: int, idle: float):
        self.reactor = reactor
        self.size = size
        self.idle = idle
        self._idle: dict[Hashable, list[tuple[Downstream, object]]] = {}

    def take(self, key: Hashable) -> Downstream | None:
        """The most recently parked live connection to ``key``, or None."""
        parked = self._idle.get(key)
        while parked:
            down, timer = parked.pop()
            if timer.active():
                timer.cancel()
            if down.alive:
                return down
        return None

    def give(self, key: Hashable, down: Downstream) -> None:
        """Park a connection between transactions (or QUIT it when it cannot be kept)."""
        if not down.alive:
            return
        parked = self._idle.setdefault(key, [])
        if (down.in_transaction or not down.reusable or self.size <= 0
                or len(parked) >= self.size):
            defer.ensureDeferred(down.quit())
            return
        timer = self.reactor.callLater(self.idle, self._expire, key, down)
        parked.append((down, timer))

    def _expire(self, key: Hashable, down: Downstream) -> None:
        parked = self._idle.get(key, [])
        for i, (held, _timer) in enumerate(parked):
            if held is down:
                del parked[i]
                break
        defer.ensureDeferred(down.quit())

    def close(self) -> None:
        """QUIT every idle connection (the daemon is stopping)."""
        idle, self._idle = self._idle, {}
        for parked in idle.values():
            for down, timer in parked:
                if timer.active():
                    timer.cancel()
                defer.ensureDeferred(down.quit())

    def __len__(self) -> int:
        return sum(1 for parked in self._idle.values() for down, _ in parked if down.alive)
