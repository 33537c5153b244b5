"""RedisStore: the Store shared by every worker and gateway through Redis.

Design:

* Every check-and-update is ONE Lua script (``lua/*.lua``, run with EVALSHA;
  loaded again on NOSCRIPT, e.g. after a Redis restart)
  that also sets the key's TTL: no INCR-then-EXPIRE race (Haraka #1757), no
  key that lives for ever.  What one plain command does atomically without
  leaving a key that never expires (a lease's release: ZREM, which creates
  none; the cache's SET with PX; DEL) is sent as that command: each
  ``redis.call`` inside a script costs Redis about as much as a whole plain
  command.
* Keys are ``<prefix><kind>:{<tag>}[:<rest>]``: the prefix lets two
  deployments share one Redis, the ``{tag}`` makes every key one script
  touches hash to one Redis Cluster slot (grey tuple and host key share the
  host as tag).
* Time is the Redis server's clock (``TIME`` inside the script) unless a
  clock is injected, so gateways need not agree on the time; tests inject a
  clock to step to exact boundaries.  Records also carry their logical expiry,
  so an outcome never depends on when Redis happens to evict a key.
* A tuple Redis reported passed is remembered by the process for
  ``grey_known_ttl`` seconds (``redis-grey-known-ttl``) and answered KNOWN
  without a round trip (:mod:`barricade.state.known` says what that changes).
* A connect timeout and an overall deadline per operation (a timed-out
  operation drops its connection; the next one connects again): a session
  never hangs on Redis; every failure is a :class:`StoreError`.  On the
  pipelined connection of a single server, an operation is sent at once and
  the connection keeps its deadline (one timer per connection, not a task
  and a timeout per operation); while connecting, and on Sentinel and
  Cluster, an ``asyncio.timeout`` around the operation keeps it.

URLs: ``redis://``, ``rediss://`` (TLS), ``unix://`` go to one pipelined
connection (:mod:`barricade.state.resp`, chosen for its CPU cost);
``redis+sentinel://`` and ``redis+cluster://`` to redis-py (see
:mod:`barricade.state.clients`).  The hash tags above are what make the
scripts run on a Cluster: each touches one slot.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import time
from collections.abc import Awaitable, Coroutine, Sequence
from importlib import resources
from typing import Any, TypeVar

from redis.exceptions import RedisError

from barricade.state.base import (
    RATE_BUCKETS,
    RATE_WINDOW,
    Clock,
    Grey,
    GreyStatus,
    Store,
    StoreError,
    ms,
)
from barricade.state.clients import make_client
from barricade.state.known import KnownTuples
from barricade.state.nowait import Done, run_nowait
from barricade.state.resp import RespConnectionError, RespError, RespTimeout

T = TypeVar("T")

SCRIPTS = ("grey", "grey_reject", "rate", "acquire", "refresh", "leases", "msg_limit", "connect")

#: Scripts made of others: each one named is put in front as a local function of that name.
COMPOSED = {"connect": ("rate", "acquire")}

#: Tags longer than this are hashed: a tag is hashed by Redis for every command.
MAX_TAG = 200


class _NoScript(Exception):
    """Redis has lost a script (restart, SCRIPT FLUSH): load it again."""


def load_script(name: str) -> str:
    """The text of ``lua/<name>.lua``, shipped next to this module, after the
    scripts it calls (:data:`COMPOSED`), each wrapped in a local function."""
    def text(script: str) -> str:
        return resources.files("barricade.state").joinpath("lua", f"{script}.lua").read_text("utf-8")

    calls = [f"local function {inner}(KEYS, ARGV)\n{text(inner)}\nend\n" for inner in COMPOSED.get(name, ())]
    return "".join(calls) + text(name)


def _hashed(value: str) -> str:
    return hashlib.sha1(value.encode("utf-8", "surrogateescape")).hexdigest()


class RedisStore(Store):
    """Store on Redis; see the module docstring.

    ``timeout`` bounds each operation as a whole (connecting included),
    ``connect_timeout`` each connection attempt; ``max_connections`` is the
    pool size of redis-py's Sentinel and Cluster clients; ``grey_known_ttl``
    how long a passed grey-list tuple is remembered here (0: never).
    """

    #: Operations may start outside an event-loop task (``aio(..., immediate=True)``,
    #: a check's hook): each either waits on its reply's future or runs in a task
    #: of its own, which it awaits as a future.
    immediate = True

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "barricade:",
        timeout: float = 1.0,
        connect_timeout: float = 0.5,
        max_connections: int = 32,
        clock: Clock | None = None,
        grey_known_ttl: float = 0.0,
    ):
        if "{" in prefix or "}" in prefix:
            raise ValueError(f"Redis key prefix must not contain braces: {prefix!r}")
        self.url = url
        self.prefix = prefix
        self.timeout = timeout
        self._clock = clock
        self._backend = make_client(
            url, {name: load_script(name) for name in SCRIPTS}, timeout=timeout,
            connect_timeout=connect_timeout, max_connections=max_connections)
        self._ids = itertools.count(1)
        self._known = KnownTuples(grey_known_ttl, clock=clock or time.monotonic)
        self._origin = f"{os.uname().nodename}:{os.getpid()}:{os.urandom(4).hex()}"

    # -- plumbing ---------------------------------------------------------

    def key(self, kind: str, name: str, rest: str | None = None) -> str:
        """``<prefix><kind>:{<name>}`` (``:<rest>`` appended in the same slot).

        ``{<name>}`` is the Redis Cluster hash tag.  A brace inside the name
        would end the tag early (Redis hashes up to the first ``}``), so such
        names, and very long ones, are replaced by their SHA-1.
        """
        if "{" in name or "}" in name or len(name) > MAX_TAG:
            name = _hashed(name)
        base = f"{self.prefix}{kind}:{{{name}}}"
        return base if rest is None else f"{base}:{rest}"

    def _now(self) -> int:
        """Milliseconds of the injected clock, or -1: the script asks Redis."""
        return -1 if self._clock is None else int(round(self._clock() * 1000))

    async def _call(self, what: str, op: Coroutine[Any, Any, T]) -> T:
        """Run one Redis operation under the deadline; any failure is StoreError.

        ``asyncio.timeout`` needs a task: started outside one (see
        :attr:`immediate`), the operation runs in a task of its own.
        """
        if asyncio.current_task() is None:
            return await asyncio.ensure_future(self._timed(what, op))
        return await self._timed(what, op)

    async def _timed(self, what: str, op: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self.timeout):
                return await op
        except TimeoutError as exc:
            self._backend.abort()
            raise StoreError(f"redis {what}: no answer within {self.timeout:g}s ({self.url})") from exc
        except (RedisError, RespError, RespConnectionError, OSError) as exc:
            raise StoreError(f"redis {what}: {exc} ({self.url})") from exc

    def _error(self, what: str, exc: Exception) -> StoreError | _NoScript:
        """What a failed reply to a command sent at once means to the caller."""
        if isinstance(exc, RespTimeout):
            return StoreError(f"redis {what}: no answer within {self.timeout:g}s ({self.url})")
        if isinstance(exc, (RespError, RespConnectionError)):
            if what in SCRIPTS and str(exc).startswith("NOSCRIPT"):
                return _NoScript()
            return StoreError(f"redis {what}: {exc} ({self.url})")
        return StoreError(f"redis {what}: {exc!r} ({self.url})")

    def _command_nowait(self, what: str, args: Sequence[str | int], done: Done) -> None:
        """A plain command nobody waits for (no script: nothing to load again).

        Sent at once on an open single-server connection, whose reply comes
        to ``heard`` with no future made for it; otherwise (connecting,
        Sentinel, Cluster) the ordinary way, run by :func:`run_nowait`.
        """
        def heard(error: Exception | None) -> None:
            done(None if error is None else self._error(what, error))

        if not self._backend.start_heard(heard, *args):
            run_nowait(self._call(what, self._backend.command(*args)), done)

    async def _script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """The script's reply: sent at once on an open connection, which keeps the
        deadline (awaited here, not in a coroutine of its own: one frame less on
        the hot path); else, or when Redis lost the script (NOSCRIPT), the long
        way, which loads it again."""
        reply = self._backend.start_script(name, keys, args)
        if reply is not None:
            try:
                return await reply
            except (RespTimeout, RespError, RespConnectionError) as exc:
                error = self._error(name, exc)
                if not isinstance(error, _NoScript):
                    raise error from exc
        return await self._call(name, self._backend.script(name, keys, args))

    async def _command(self, *args: str | int, what: str = "") -> Any:
        """:meth:`_script` for a plain command (there is nothing to load again)."""
        what = what or str(args[0]).lower()
        reply = self._backend.start(*args)
        if reply is not None:
            try:
                return await reply
            except (RespTimeout, RespError, RespConnectionError) as exc:
                raise self._error(what, exc) from exc
        return await self._call(what, self._backend.command(*args))

    async def ping(self) -> None:
        """Raise StoreError unless Redis answers (for startup and health checks)."""
        await self._command("PING")

    async def close(self) -> None:
        await self._backend.close()

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
        if host is None:
            keys = [self.key("grey", tuple_key)]
        else:
            keys = [self.key("grey", host, tuple_key), self.key("grey", host)]
        args = [self._now(), ms(period), ms(temp_fail_ttl), ms(accept_ttl), int(hold),
                digest or "", msgid if digest else ""]
        asked = self._known.asking()
        outcome, created, now = await self._script("grey", keys, args)
        status = GreyStatus(Grey(outcome), int(created) / 1000, int(now) / 1000, period)
        self._known.remember(tuple_key, host, status, accept_ttl, asked)
        return status

    def known_grey(self, tuple_key: str, *, host: str | None = None,
                   period: float = 0.0) -> GreyStatus | None:
        return self._known.get(tuple_key, host, period)

    async def grey_reject(self, *, ttl: float, host: str | None = None,
                          tuple_key: str | None = None) -> None:
        if tuple_key is not None:
            key = self.key("grey", tuple_key) if host is None else self.key("grey", host, tuple_key)
        elif host is not None:
            key = self.key("grey", host)
        else:
            raise ValueError("grey_reject needs a host or a tuple_key")
        # Forgotten before, for the lookups already sent, and after, for those another
        # connection of a pool (Sentinel, Cluster) may have had answered in between.
        self._known.forget(host=host, tuple_key=tuple_key)
        try:
            await self._script("grey_reject", [key], [self._now(), ms(ttl)])
        finally:
            self._known.forget(host=host, tuple_key=tuple_key)

    # -- sliding-window rate ---------------------------------------------

    async def rate(
        self,
        key: str,
        *,
        window: float = RATE_WINDOW,
        buckets: int = RATE_BUCKETS,
        increment: int = 1,
    ) -> int:
        args = [self._now(), ms(window / buckets), buckets, increment]
        return int(await self._script("rate", [self.key("rate", key)], args))

    # -- concurrency leases ----------------------------------------------

    async def acquire(self, key: str, *, limit: int, ttl: float) -> str | None:
        lease = f"{self._origin}:{next(self._ids)}"
        args = [self._now(), limit, ms(ttl), lease]
        ok, _count = await self._script("acquire", [self.key("conc", key)], args)
        return lease if int(ok) else None

    async def connect(self, key: str, *, rate_limit: int, limit: int, ttl: float,
                      window: float = RATE_WINDOW, buckets: int = RATE_BUCKETS) -> tuple[int, str | None]:
        lease = f"{self._origin}:{next(self._ids)}"
        args = [self._now(), ms(window / buckets), buckets, 1, rate_limit, limit, ms(ttl), lease]
        count, ok = await self._script("connect", [self.key("rate", key), self.key("conc", key)], args)
        return int(count), lease if int(ok) == 1 else None

    async def refresh(self, key: str, lease: str, *, ttl: float) -> bool:
        args = [self._now(), ms(ttl), lease]
        return bool(int(await self._script("refresh", [self.key("conc", key)], args)))

    async def release(self, key: str, lease: str) -> None:
        # One ZREM, not a script: the expired leases it would prune are pruned by the
        # next acquire or count anyway, and a script's calls cost Redis several times more.
        await self._command("ZREM", self.key("conc", key), lease, what="release")

    def release_nowait(self, key: str, lease: str, done: Done) -> None:
        self._command_nowait("release", ("ZREM", self.key("conc", key), lease), done)

    async def leases(self, key: str) -> int:
        return int(await self._script("leases", [self.key("conc", key)], [self._now()]))

    # -- fixed-window message limits --------------------------------------

    async def msg_limit(self, key: str, *, period: float, increment: int = 1) -> int:
        args = [self._now(), ms(period), increment]
        return int(await self._script("msg_limit", [self.key("msg", key)], args))

    # -- key/value cache (single commands: each is atomic and sets its TTL) --

    async def get(self, key: str) -> str | None:
        return await self._command("GET", self.key("cache", key))

    async def set(self, key: str, value: str, *, ttl: float) -> None:
        await self._command("SET", self.key("cache", key), value, "PX", ms(ttl))

    async def add(self, key: str, value: str, *, ttl: float) -> bool:
        added = await self._command("SET", self.key("cache", key), value, "PX", ms(ttl), "NX",
                                    what="add")
        return added is not None and added is not False

    async def delete(self, key: str) -> None:
        await self._command("DEL", self.key("cache", key), what="delete")

    def set_nowait(self, key: str, value: str, *, ttl: float, done: Done) -> None:
        self._command_nowait("set", ("SET", self.key("cache", key), value, "PX", ms(ttl)), done)

    def delete_nowait(self, key: str, done: Done) -> None:
        self._command_nowait("delete", ("DEL", self.key("cache", key)), done)
