"""A worker's memory of the grey-list tuples it has seen pass.

Most mail a gateway takes comes from correspondents it has seen before, and
for those the grey-list answer is always the same: KNOWN.  Asking Redis for it
costs a round trip that the message waits for, and a Lua script that only
extends the record's TTL.  So :class:`~barricade.state.redis.RedisStore`
remembers each tuple that Redis reported passed (PASS or KNOWN) for
``redis-grey-known-ttl`` seconds, and answers KNOWN for it without asking.
smtpf answered every grey-list question from a cache local to the gateway;
Barricade keeps only passes locally and asks the shared store for the rest.

What the memory changes, and why that is acceptable:

* Redis extends a passed record's TTL (``cache-accept-ttl``, a week by
  default) only when a worker asks, which it does at the tuple's first use
  after its memory of it ends.  So the record may expire up to the memory's
  lifetime sooner than ``cache-accept-ttl`` after the tuple's last use.
* The memory never outlives the record: its lifetime is at most
  ``accept_ttl``, counted from before the question was sent, so before Redis
  computed the record's expiry.
* A reject record an operator writes (:meth:`Store.grey_reject`) or a record
  deleted by hand reaches a worker that remembers the tuple when its memory
  of it ends.  A reject written through the same store is seen at once, even
  by a lookup that was already on its way (:attr:`KnownTuples.generation`).
* While Redis is unreachable, a remembered tuple still passes (nothing else
  does: the others get ``state-failure``'s answer).
* Only passes are remembered: a new, early or rejected tuple always asks
  Redis, so grey-listing's own timing (the temp-fail period) is never shortened.

Time is the store's clock when a test injects one, else the monotonic clock:
the memory's lifetime is local, whatever the Redis server's clock says.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

from barricade.state.base import Grey, GreyStatus

#: Tuples remembered per worker; the least recently remembered is forgotten
#: first.  An entry is a few hundred bytes, so this bounds the memory at a few
#: megabytes.
SIZE = 16384

#: How an entry is named: (host, tuple), as the store keys a tuple under its host.
Name = tuple[str | None, str]


class Asked(NamedTuple):
    """Taken before a lookup is sent: what an answer may be remembered against."""

    generation: int
    at: float


class KnownTuples:
    """Tuples seen passing, each until ``lifetime`` seconds after it was asked about."""

    def __init__(self, lifetime: float, *, size: int = SIZE,
                 clock: Callable[[], float] = time.monotonic):
        self.lifetime = lifetime
        self.size = size
        self._clock = clock
        #: Moves on with every :meth:`forget`: an answer to a question asked
        #: before a reject was written must not be remembered after it.
        self.generation = 0
        # name -> (created, the store's time of its answer, local time asked, local expiry)
        self._tuples: dict[Name, tuple[float, float, float, float]] = {}

    def __len__(self) -> int:
        return len(self._tuples)

    def asking(self) -> Asked:
        """To be taken just before the store is asked, and given to :meth:`remember`."""
        return Asked(self.generation, self._clock())

    def get(self, tuple_key: str, host: str | None, period: float) -> GreyStatus | None:
        """KNOWN for a remembered tuple, or None (not remembered, no longer, or
        the clock went back).  Its ``now`` is the store's time moved on by the
        local time since, so that ``age`` reads as the store would have it."""
        name = (host, tuple_key)
        entry = self._tuples.get(name)
        if entry is None:
            return None
        created, store_now, asked, until = entry
        now = self._clock()
        if not asked <= now < until:
            del self._tuples[name]
            return None
        return GreyStatus(Grey.KNOWN, created, store_now + (now - asked), period)

    def remember(self, tuple_key: str, host: str | None, status: GreyStatus,
                 accept_ttl: float, asked: Asked) -> None:
        """Remember a tuple the store reported passed.  Anything else is not
        remembered, so that Redis keeps deciding while the period runs; nor is
        an answer to a question asked before the last :meth:`forget`."""
        if not status.passed or self.lifetime <= 0 or asked.generation != self.generation:
            return
        tuples = self._tuples
        name = (host, tuple_key)
        if tuples.pop(name, None) is None and len(tuples) >= self.size:
            del tuples[next(iter(tuples))]
        tuples[name] = (status.created, status.now, asked.at,
                        asked.at + min(self.lifetime, accept_ttl))

    def forget(self, *, host: str | None = None, tuple_key: str | None = None) -> None:
        """Forget what a reject record written for ``host`` and/or ``tuple_key``
        would change (the arguments of :meth:`Store.grey_reject`).

        With both, that is the one tuple.  With one of them, the record is
        the one a tuple without a host and a host share in the store: a tuple
        of that name remembered without a host, and every tuple of that host.
        """
        self.generation += 1
        if host is not None and tuple_key is not None:
            self._tuples.pop((host, tuple_key), None)
            return
        shared = host if host is not None else tuple_key
        if shared is None:
            return
        for name in [name for name in self._tuples if name == (None, shared) or name[0] == shared]:
            del self._tuples[name]
