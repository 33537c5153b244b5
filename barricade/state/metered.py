"""The store a running Barricade uses: built from the options, and measured.

Checks never build a store themselves: :func:`store_from_config` builds one
per process (in ``build_context``), so that every session of a worker shares
one Redis connection pool, and wraps it in :class:`MeteredStore` so that every
operation's latency and every failure is counted by operation whichever
check made it (``barricade_store_seconds``, ``barricade_store_errors_total``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from barricade.options import Config
from barricade.state.base import RATE_BUCKETS, RATE_WINDOW, GreyStatus, Store, StoreError
from barricade.state.memory import MemoryStore
from barricade.state.nowait import Done

T = TypeVar("T")
#: What an operation returns: the coroutine of :meth:`MeteredStore._timed`.
Timed = Coroutine[Any, Any, T]


class MeteredStore(Store):
    """Delegates to ``inner``; observes each call in ``metrics.store()``."""

    def __init__(self, inner: Store, metrics: Any):
        self.inner = inner
        self.metrics = metrics
        #: The inner store's, read once here: every check's store call reads it.
        self.immediate = inner.immediate
        #: Not observed (no store operation is made): the inner store's own, with no call between.
        self.known_grey = inner.known_grey

    @property
    def kind(self) -> str:
        """``memory`` or ``redis``, for the start-up log line."""
        return "redis" if type(self.inner).__name__ == "RedisStore" else "memory"

    async def _timed(self, operation: str, call: Awaitable[T], acquire_under: int | None = None) -> T:
        """``call``'s outcome, its time observed as ``operation``.

        The methods below return this coroutine rather than await it in one of
        their own: a store call costs one frame here, not two, at every step.
        ``acquire_under``: :meth:`connect`'s rate limit; a count within it is
        observed as an ``acquire`` too.
        """
        started = time.monotonic()
        failed = True
        try:
            result = await call
            failed = False
        except asyncio.CancelledError:  # the caller gave up: timed, and no store error
            failed = False
            raise
        except StoreError:
            raise
        except Exception as exc:  # a backend bug must still reach callers as StoreError
            raise StoreError(f"{operation}: {exc!r}") from exc
        finally:
            if self.metrics is not None:
                self.metrics.store(operation, time.monotonic() - started, failed)
        if acquire_under is not None and self.metrics is not None and result[0] <= acquire_under:
            self.metrics.store("acquire", time.monotonic() - started, False)
        return result

    def grey(self, tuple_key: str, *, period: float, temp_fail_ttl: float,
             accept_ttl: float, host: str | None = None, hold: bool = False,
             digest: str | None = None, msgid: str = "") -> Timed[GreyStatus]:
        return self._timed("grey", self.inner.grey(
            tuple_key, period=period, temp_fail_ttl=temp_fail_ttl, accept_ttl=accept_ttl, host=host,
            hold=hold, digest=digest, msgid=msgid))

    def grey_reject(self, *, ttl: float, host: str | None = None,
                    tuple_key: str | None = None) -> Timed[None]:
        return self._timed("grey_reject", self.inner.grey_reject(ttl=ttl, host=host, tuple_key=tuple_key))

    def rate(self, key: str, *, window: float = RATE_WINDOW, buckets: int = RATE_BUCKETS,
             increment: int = 1) -> Timed[int]:
        return self._timed("rate", self.inner.rate(
            key, window=window, buckets=buckets, increment=increment))

    def acquire(self, key: str, *, limit: int, ttl: float) -> Timed[str | None]:
        return self._timed("acquire", self.inner.acquire(key, limit=limit, ttl=ttl))

    def connect(self, key: str, *, rate_limit: int, limit: int, ttl: float,
                window: float = RATE_WINDOW, buckets: int = RATE_BUCKETS) -> Timed[tuple[int, str | None]]:
        """Observed as the operations it does: ``rate``, then ``acquire`` when the
        lease was asked for, as if they had been two calls (a failure is ``rate``'s)."""
        return self._timed("rate", self.inner.connect(
            key, rate_limit=rate_limit, limit=limit, ttl=ttl, window=window, buckets=buckets),
            acquire_under=rate_limit)

    def refresh(self, key: str, lease: str, *, ttl: float) -> Timed[bool]:
        return self._timed("refresh", self.inner.refresh(key, lease, ttl=ttl))

    def release(self, key: str, lease: str) -> Timed[None]:
        return self._timed("release", self.inner.release(key, lease))

    def leases(self, key: str) -> Timed[int]:
        return self._timed("leases", self.inner.leases(key))

    def msg_limit(self, key: str, *, period: float, increment: int = 1) -> Timed[int]:
        return self._timed("msg_limit", self.inner.msg_limit(key, period=period, increment=increment))

    def get(self, key: str) -> Timed[str | None]:
        return self._timed("get", self.inner.get(key))

    def set(self, key: str, value: str, *, ttl: float) -> Timed[None]:
        return self._timed("set", self.inner.set(key, value, ttl=ttl))

    def add(self, key: str, value: str, *, ttl: float) -> Timed[bool]:
        return self._timed("add", self.inner.add(key, value, ttl=ttl))

    def delete(self, key: str) -> Timed[None]:
        return self._timed("delete", self.inner.delete(key))

    def _nowait(self, operation: str, done: Done, start: Callable[..., None], *args: Any) -> None:
        """``start(*args, observed)``: the inner store's write, whose outcome reaches
        ``done`` after its time and outcome are observed; a backend that raises
        at once (a bug) still reaches ``done`` as a StoreError."""
        started = time.monotonic()

        def observed(error: StoreError | None) -> None:
            if self.metrics is not None:
                self.metrics.store(operation, time.monotonic() - started, error is not None)
            done(error)

        try:
            start(*args, observed)
        except Exception as exc:  # noqa: BLE001 - as in _timed
            observed(StoreError(f"{operation}: {exc!r}"))

    def release_nowait(self, key: str, lease: str, done: Done) -> None:
        self._nowait("release", done, self.inner.release_nowait, key, lease)

    def delete_nowait(self, key: str, done: Done) -> None:
        self._nowait("delete", done, self.inner.delete_nowait, key)

    def set_nowait(self, key: str, value: str, *, ttl: float, done: Done) -> None:
        self._nowait("set", done, lambda observed: self.inner.set_nowait(key, value, ttl=ttl, done=observed))

    async def close(self) -> None:
        await self.inner.close()


def store_from_config(config: Config, metrics: Any = None) -> MeteredStore:
    """The process's store: MemoryStore without ``redis-url``, else RedisStore.

    Raises ValueError for a URL or prefix RedisStore refuses; nothing is
    connected here (Redis may be down at start-up and come back later).
    """
    url = config["redis-url"].strip()
    if not url:
        return MeteredStore(MemoryStore(), metrics)
    from barricade.state.redis import RedisStore  # redis-py only when asked for

    timeout = float(config["redis-timeout"])
    inner = RedisStore(url, prefix=config["redis-prefix"], timeout=timeout,
                       connect_timeout=min(timeout, 0.5),
                       grey_known_ttl=float(config["redis-grey-known-ttl"]))
    return MeteredStore(inner, metrics)
