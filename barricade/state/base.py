"""The Store interface: shared state for grey-listing, limits and caches.

Every limit and every grey-list decision must be the same whichever worker
process or gateway a client reaches, so the state lives behind one small
interface with two implementations: :class:`~barricade.state.memory.MemoryStore`
(one process, the default) and :class:`~barricade.state.redis.RedisStore`
(shared by workers and gateways).

Each method is one atomic check-and-update: a caller never reads, decides
and writes in separate steps, because two workers would race between them.
Methods are asyncio coroutines (``redis.asyncio`` underneath); Twisted code
bridges them with :func:`barricade.aio.aio`.

Every failure (unreachable server, timeout, script error) raises the one
:class:`StoreError`, so a check applies its documented policy (temp-fail or
skip) without knowing which backend it talks to.  Durations are seconds
(float); the stores keep milliseconds internally.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import NamedTuple

from barricade.state.errors import StoreError  # noqa: F401 - part of the store interface, imported from here
from barricade.state.nowait import Done, run_nowait

#: A clock returning seconds since the epoch; injectable for exact tests.
Clock = Callable[[], float]

#: smtpf's sliding window: 10 buckets of 6 s (``RATE_INTERVALS``, ``RATE_TICK``).
RATE_WINDOW = 60.0
RATE_BUCKETS = 10


class Grey(enum.StrEnum):
    """Outcome of one grey-list check-and-update."""

    NEW = "new"  #: first seen: recorded now, temp-fail (smtpf #552)
    EARLY = "early"  #: seen, but the temp-fail period has not passed: temp-fail again
    PASS = "pass"  #: the first retry after the period: pass and report (X-Grey-Report)
    KNOWN = "known"  #: a remembered pass (tuple or host short-cut): pass, TTL touched
    DUE = "due"  #: grey-content at DATA: the period is over, the message hash decides at the dot
    MISMATCH = "mismatch"  #: grey-content: another message after the period (smtpf #553)
    REJECT = "reject"  #: a record an operator set to "reject" (smtpf's cached 5, #388)


class GreyStatus(NamedTuple):
    """What the grey-list says and the times a reply or report needs.

    ``created`` is when the record was first written (epoch seconds; for the
    X-Grey-Report ``at=``), ``now`` the store's time of this decision, so
    ``age`` and ``remaining`` agree with the store's clock, not the caller's.
    (A named tuple: most messages make one, for a remembered tuple, and a
    frozen dataclass sets each field through ``object.__setattr__``.)
    """

    result: Grey
    created: float
    now: float
    period: float

    @property
    def age(self) -> float:
        return self.now - self.created

    @property
    def remaining(self) -> float:
        """Seconds until a retry would pass (0 once passed)."""
        if self.result in (Grey.PASS, Grey.KNOWN):
            return 0.0
        return max(0.0, self.created + self.period - self.now)

    @property
    def passed(self) -> bool:
        return self.result in (Grey.PASS, Grey.KNOWN)


class Store(ABC):
    """Atomic shared-state operations; see the module docstring.

    Keys are the caller's logical keys (e.g. ``"192.0.2.9,fred@sender.net,john@acme.org"``);
    each store adds its own namespace, prefix and (Redis) hash tag.
    """

    #: Callers may start an operation here, outside an event-loop task
    #: (``aio(..., immediate=True)``, or a check's hook awaiting it itself,
    #: ``StoreCheck.stored``): it either never suspends (MemoryStore: its
    #: result is there at once) or waits only on asyncio futures that resume
    #: it (RedisStore: the reply to a command already sent).
    immediate = False

    @abstractmethod
    async def grey(
        self,
        tuple_key: str,
        *,
        period: float,
        temp_fail_ttl: float,
        accept_ttl: float,
        host: str | None = None,
        hold: bool = False,
        digest: str | None = None,
        msgid: str = "",
    ) -> GreyStatus:
        """Grey-list check-and-update, smtpf's algorithm (README, "Grey-listing").

        A new tuple is recorded (kept ``temp_fail_ttl``) and reported NEW;
        before ``created + period`` it is EARLY; at or after it (and before
        ``created + temp_fail_ttl``) it is upgraded to a pass kept
        ``accept_ttl`` and reported PASS; later hits are KNOWN and extend the
        accept TTL.  With ``host`` (the ip/ptr part of the key) a first pass
        also remembers the host for ``accept_ttl``, and a remembered host makes
        any tuple KNOWN at once (the "retry-queue proven" short-cut).  A host
        or tuple record in the state ``reject`` (written by an operator, as
        smtpf's cached value 5) is REJECT and left as it is.

        grey-content makes two calls per message.  At DATA
        with ``hold``: a tuple past its period is DUE and not upgraded yet.
        At the dot with the message's ``digest``: a tuple without a hash gets
        this one as its first and last (and ``msgid``, the Message-ID, is
        remembered with it; the TTL restarts at ``temp_fail_ttl``); past the
        period a digest equal to the first or last passes, another one is
        MISMATCH and becomes the last, except that the first retry with the
        remembered ``msgid`` replaces the first hash instead (smtpf's work-around
        for Exchange, which re-encodes a message between attempts).
        """

    def known_grey(self, tuple_key: str, *, host: str | None = None,
                   period: float = 0.0) -> GreyStatus | None:
        """KNOWN for a tuple this process remembers passing, without asking
        the store; None to ask :meth:`grey`.  Only a store that is a round trip
        away remembers (RedisStore, :mod:`barricade.state.known`)."""
        return None

    @abstractmethod
    async def grey_reject(self, *, ttl: float, host: str | None = None,
                          tuple_key: str | None = None) -> None:
        """Refuse a grey-list host (or one tuple of ``host``) for ``ttl`` seconds.

        What smtpf's ``mcc PUT grey:<key> 5`` did: :meth:`grey` then answers
        REJECT (#388) for it.  For the admin commands and for tests; nothing
        in the SMTP path writes one.
        """

    @abstractmethod
    async def rate(
        self,
        key: str,
        *,
        window: float = RATE_WINDOW,
        buckets: int = RATE_BUCKETS,
        increment: int = 1,
    ) -> int:
        """Count an event and return the events in the sliding ``window``.

        The window is ``buckets`` buckets of ``window / buckets`` seconds (the
        current event counts), so an event stops counting once ``buckets``
        whole buckets have started after its own.  ``increment=0`` only reads.
        """

    @abstractmethod
    async def acquire(self, key: str, *, limit: int, ttl: float) -> str | None:
        """Take a concurrency lease if fewer than ``limit`` live ones exist.

        Returns the lease id, or None when the limit is reached.  A lease
        expires ``ttl`` seconds after its last acquire/refresh, so a killed
        worker's connections stop counting by themselves.
        """

    async def connect(self, key: str, *, rate_limit: int, limit: int, ttl: float,
                      window: float = RATE_WINDOW, buckets: int = RATE_BUCKETS) -> tuple[int, str | None]:
        """:meth:`rate` for a connection, then, unless that count exceeds
        ``rate_limit``, :meth:`acquire` (``limit``, ``ttl``) on the same key, in one
        atomic step: the count and the lease, or None (not asked for, or refused).

        What ``Rate-Connect:`` and ``Concurrent-Connect:`` do one after the other,
        in one round trip.  This default is atomic for a store whose operations
        never wait (MemoryStore); RedisStore runs one script.
        """
        count = await self.rate(key, window=window, buckets=buckets)
        if count > rate_limit:
            return count, None
        return count, await self.acquire(key, limit=limit, ttl=ttl)

    @abstractmethod
    async def refresh(self, key: str, lease: str, *, ttl: float) -> bool:
        """Extend a live lease by ``ttl``; False if it had already expired."""

    @abstractmethod
    async def release(self, key: str, lease: str) -> None:
        """Give a lease back (at session end); unknown leases are ignored."""

    @abstractmethod
    async def leases(self, key: str) -> int:
        """The number of live leases (for admin and metrics)."""

    @abstractmethod
    async def msg_limit(self, key: str, *, period: float, increment: int = 1) -> int:
        """Count towards a fixed-window limit and return the window's count.

        smtpf's Msg-Limit: the window starts at the first count, lasts
        ``period`` seconds and restarts with the first count after it ends.
        ``increment=0`` only reads.
        """

    @abstractmethod
    async def get(self, key: str) -> str | None:
        """A cached value, or None if absent or expired."""

    @abstractmethod
    async def set(self, key: str, value: str, *, ttl: float) -> None:
        """Cache ``value`` for ``ttl`` seconds (dupmsg, call-ahead results)."""

    @abstractmethod
    async def add(self, key: str, value: str, *, ttl: float) -> bool:
        """Cache ``value`` only if the key is absent; True if it was added.

        Duplicate-message memory needs "seen before?" and "remember it" in one
        step, or two workers receiving the same message would both accept it.
        """

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Forget a cached value."""

    # -- writes nobody waits for (barricade.state.nowait) -------------------

    def release_nowait(self, key: str, lease: str, done: Done) -> None:
        """:meth:`release`, for a caller that does not wait: ``done`` gets None,
        or the StoreError it failed with.  RedisStore sends it at once on an
        open single-server connection."""
        run_nowait(self.release(key, lease), done, immediate=self.immediate)

    def delete_nowait(self, key: str, done: Done) -> None:
        """:meth:`delete`, reporting to ``done`` as :meth:`release_nowait` does."""
        run_nowait(self.delete(key), done, immediate=self.immediate)

    def set_nowait(self, key: str, value: str, *, ttl: float,
                   done: Done) -> None:
        """:meth:`set`, reporting to ``done`` as :meth:`release_nowait` does."""
        run_nowait(self.set(key, value, ttl=ttl), done, immediate=self.immediate)

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the default has nothing to release."""


def ms(seconds: float) -> int:
    """Seconds to whole milliseconds, at least 1 so a TTL is never 0 (no TTL)."""
    return max(1, int(round(seconds * 1000)))
