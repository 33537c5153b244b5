"""MemoryStore: the Store semantics inside one process.

The default when no ``redis-url`` is set, and the reference the Redis
scripts are tested against: the same scenario tests run on both.  Nothing
here awaits, so each operation is atomic with respect to other sessions in
the same reactor.  Time comes from an injectable clock, so tests can step
to exact boundaries instead of sleeping.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

from barricade.state.base import RATE_BUCKETS, RATE_WINDOW, Clock, Grey, GreyStatus, Store, ms

#: Expired entries are swept after this many operations, so that memory is
#: bounded by live state even when most keys are never looked up again.
SWEEP_EVERY = 4096


@dataclass(slots=True)
class _Entry:
    """A value and its expiry in milliseconds of the store's clock."""

    value: Any
    expires: int


@dataclass(slots=True)
class _GreyRecord:
    state: str  # "grey", "pass" or "reject"
    created: int
    first: str = ""  # grey-content: the first and the last message hash seen
    last: str = ""
    msgid: str = ""  # grey-content: the Message-ID that came with the first hash


@dataclass(slots=True)
class _Window:
    count: int
    start: int


@dataclass(slots=True)
class _Leases:
    expiry: dict[str, int] = field(default_factory=dict)


class MemoryStore(Store):
    """In-process Store; ``clock`` returns epoch seconds (default time.time)."""

    immediate = True  # nothing here awaits

    def __init__(self, clock: Clock | None = None):
        self._clock = clock or time.time
        self._data: dict[tuple[str, str], _Entry] = {}
        self._ops = 0
        self._ids = itertools.count(1)
        self._origin = f"{os.uname().nodename}:{os.getpid()}"

    # -- plumbing ---------------------------------------------------------

    def _now(self) -> int:
        """Milliseconds, and an occasional sweep of expired entries."""
        now = int(round(self._clock() * 1000))
        self._ops += 1
        if self._ops % SWEEP_EVERY == 0:
            self._data = {k: e for k, e in self._data.items() if e.expires > now}
        return now

    def _get(self, ns: str, key: str, now: int) -> Any:
        entry = self._data.get((ns, key))
        if entry is None:
            return None
        if entry.expires <= now:
            del self._data[(ns, key)]
            return None
        return entry.value

    def _put(self, ns: str, key: str, value: Any, expires: int) -> None:
        self._data[(ns, key)] = _Entry(value, expires)

    # -- grey-listing -----------------------------------------------------

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
        now = self._now()
        period_ms, accept_ms = ms(period), ms(accept_ttl)

        def status(result: Grey, created: int) -> GreyStatus:
            return GreyStatus(result, created / 1000, now / 1000, period)

        if host is not None:
            record = self._get("grey-host", host, now)
            if record is not None:
                if record.state == "reject":
                    return status(Grey.REJECT, record.created)
                self._put("grey-host", host, record, now + accept_ms)
                return status(Grey.KNOWN, record.created)
        entry = self._data.get(("grey", tuple_key))
        record = self._get("grey", tuple_key, now)
        if record is not None:
            assert entry is not None
            if record.state == "reject":
                return status(Grey.REJECT, record.created)
            if record.state == "pass":
                self._put("grey", tuple_key, record, now + accept_ms)
                return status(Grey.KNOWN, record.created)
            if digest is not None and not record.first:
                record.first = record.last = digest
                record.msgid = msgid
                entry.expires = now + ms(temp_fail_ttl)
            if record.created + period_ms > now:
                return status(Grey.EARLY, record.created)
            if hold:
                return status(Grey.DUE, record.created)
            if digest is not None and digest not in (record.first, record.last):
                if msgid and record.msgid == msgid:
                    record.first, record.msgid = digest, ""
                else:
                    record.last = digest
                return status(Grey.MISMATCH, record.created)
            self._put("grey", tuple_key, _GreyRecord("pass", record.created), now + accept_ms)
            if host is not None:
                self._put("grey-host", host, _GreyRecord("pass", now), now + accept_ms)
            return status(Grey.PASS, record.created)
        fresh = _GreyRecord("grey", now)
        if digest is not None:
            fresh.first = fresh.last = digest
            fresh.msgid = msgid
        self._put("grey", tuple_key, fresh, now + ms(temp_fail_ttl))
        return status(Grey.NEW, now)

    async def grey_reject(self, *, ttl: float, host: str | None = None,
                          tuple_key: str | None = None) -> None:
        now = self._now()
        ns, key = ("grey", tuple_key) if tuple_key is not None else ("grey-host", host)
        if key is None:
            raise ValueError("grey_reject needs a host or a tuple_key")
        self._put(ns, key, _GreyRecord("reject", now), now + ms(ttl))

    # -- sliding-window rate ---------------------------------------------

    async def rate(
        self,
        key: str,
        *,
        window: float = RATE_WINDOW,
        buckets: int = RATE_BUCKETS,
        increment: int = 1,
    ) -> int:
        now = self._now()
        bucket_ms = ms(window / buckets)
        tick = math.floor(now / bucket_ms)
        counts: dict[int, int] = self._get("rate", key, now) or {}
        for old in [t for t in counts if t <= tick - buckets]:
            del counts[old]
        if increment > 0:
            counts[tick] = counts.get(tick, 0) + increment
            self._put("rate", key, counts, (tick + buckets) * bucket_ms)
        return sum(counts.values())

    # -- concurrency leases ----------------------------------------------

    def _live(self, key: str, now: int) -> _Leases:
        leases: _Leases = self._get("conc", key, now) or _Leases()
        leases.expiry = {lease: exp for lease, exp in leases.expiry.items() if exp > now}
        return leases

    def _keep(self, key: str, leases: _Leases) -> None:
        if leases.expiry:
            self._put("conc", key, leases, max(leases.expiry.values()))
        else:
            self._data.pop(("conc", key), None)

    async def acquire(self, key: str, *, limit: int, ttl: float) -> str | None:
        now = self._now()
        leases = self._live(key, now)
        if len(leases.expiry) >= limit:
            self._keep(key, leases)
            return None
        lease = f"{self._origin}:{next(self._ids)}"
        leases.expiry[lease] = now + ms(ttl)
        self._keep(key, leases)
        return lease

    async def refresh(self, key: str, lease: str, *, ttl: float) -> bool:
        now = self._now()
        leases = self._live(key, now)
        found = lease in leases.expiry
        if found:
            leases.expiry[lease] = now + ms(ttl)
        self._keep(key, leases)
        return found

    async def release(self, key: str, lease: str) -> None:
        leases = self._live(key, self._now())
        leases.expiry.pop(lease, None)
        self._keep(key, leases)

    async def leases(self, key: str) -> int:
        leases = self._live(key, self._now())
        self._keep(key, leases)
        return len(leases.expiry)

    # -- fixed-window message limits --------------------------------------

    async def msg_limit(self, key: str, *, period: float, increment: int = 1) -> int:
        now = self._now()
        window: _Window | None = self._get("msg", key, now)
        period_ms = ms(period)
        if window is None or now >= window.start + period_ms:
            if increment == 0:
                return 0
            window = _Window(0, now)
        if increment:
            window.count += increment
            self._put("msg", key, window, window.start + period_ms)
        return window.count

    # -- key/value cache --------------------------------------------------

    async def get(self, key: str) -> str | None:
        return self._get("cache", key, self._now())

    async def set(self, key: str, value: str, *, ttl: float) -> None:
        now = self._now()
        self._put("cache", key, value, now + ms(ttl))

    async def add(self, key: str, value: str, *, ttl: float) -> bool:
        now = self._now()
        if self._get("cache", key, now) is not None:
            return False
        self._put("cache", key, value, now + ms(ttl))
        return True

    async def delete(self, key: str) -> None:
        self._data.pop(("cache", key), None)
