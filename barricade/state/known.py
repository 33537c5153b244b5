"""A worker's memory of the grey-list tuples it has seen pass.

Most mail a gateway takes comes from correspondents it has seen before, and
for those the grey-list answer is always the same: KNOWN.  Asking Redis for it
costs a round trip that the message waits for, and a Lua script that only
extends the record's TTL.  So :class:`~barricade.state.redis.RedisStore`
remembers each tuple that Redis reported passed (PASS or KNOWN) for
``redis-grey-known-ttl`` seconds, and answers KNOWN for it without asking.
smtpf worked the same way: its cache was a local database per gateway,
corrected by what the other gateways broadcast.

What the memory changes, and why that is acceptable:

* Redis extends a passed record's TTL (``cache-accept-ttl``, a week by
  default) only when a worker asks, so the record's expiry lags at most this
  memory's lifetime behind its last use.  The memory never outlives the
  record: its lifetime is at most ``accept_ttl``.
* A reject record an operator writes (:meth:`Store.grey_reject`) or a record
  deleted by hand reaches a worker that remembers the tuple when its memory
  of it ends.  A reject written through the same store is seen at once.
* Only passes are remembered: a new, early or rejected tuple always asks Redis,
  so grey-listing's own timing (the temp-fail period) is never shortened.

Time is the store's clock when a test injects one, else the monotonic clock:
the memory's lifetime is local, whatever the Redis server's clock says.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from barricade.state.base import Grey, GreyStatus

#: Tuples remembered per worker; the oldest is forgotten first.  An entry is a
#: few hundred bytes, so this bounds the memory at a few megabytes.
SIZE = 16384


class KnownTuples:
    """Tuples seen passing, each until ``lifetime`` seconds after Redis said so."""

    def __init__(self, lifetime: float, *, size: int = SIZE,
                 clock: Callable[[], float] = time.monotonic):
        self.lifetime = lifetime
        self.size = size
        self._clock = clock
        # (host, tuple) -> (created, the store's time of its answer, local time of it, local expiry);
        # the host is part of the name because the store keeps a tuple under its host.
        self._tuples: dict[tuple[str | None, str], tuple[float, float, float, float]] = {}

    def __len__(self) -> int:
        return len(self._tuples)

    def get(self, tuple_key: str, host: str | None, period: float) -> GreyStatus | None:
        """KNOWN for a remembered tuple, with the store's time moved on by
        the local time since; None when it is not remembered (or no more)."""
        name = (host, tuple_key)
        entry = self._tuples.get(name)
        if entry is None:
            return None
        created, store_now, seen, until = entry
        now = self._clock()
        if not seen <= now < until:  # expired, or the clock went back
            del self._tuples[name]
            return None
        return GreyStatus(Grey.KNOWN, created, store_now + (now - seen), period)

    def remember(self, tuple_key: str, host: str | None, status: GreyStatus,
                 accept_ttl: float) -> None:
        """Remember a tuple the store reported passed; anything else is ignored."""
        if not status.passed or self.lifetime <= 0:
            return
        tuples = self._tuples
        name = (host, tuple_key)
        if name not in tuples and len(tuples) >= self.size:
            del tuples[next(iter(tuples))]
        now = self._clock()
        tuples[name] = (status.created, status.now, now, now + min(self.lifetime, accept_ttl))

    def forget(self, *, host: str | None = None, tuple_key: str | None = None) -> None:
        """Forget one tuple, or with only ``host`` every tuple of that host
        (an operator's reject record for it)."""
        if tuple_key is not None:
            self._tuples.pop((host, tuple_key), None)
        elif host is not None:
            for name in [name for name in self._tuples if name[0] == host]:
                del self._tuples[name]
