"""RedisStore: the Store shared by every worker and gateway through Redis.

Design (peers.md §2.9, engineering.md §4):

* Every check-and-update is ONE Lua script (``lua/*.lua``, run with EVALSHA;
  redis-py loads the script again on NOSCRIPT, e.g. after a Redis restart)
  that also sets the key's TTL: no INCR-then-EXPIRE race (Haraka #1757), no
  key that lives for ever.
* Keys are ``<prefix><kind>:{<tag>}[:<rest>]``: the prefix lets two
  deployments share one Redis, the ``{tag}`` makes every key one script
  touches hash to one Redis Cluster slot (grey tuple and host key share the
  host as tag).
* Time is the Redis server's clock (``TIME`` inside the script) unless a
  clock is injected, so gateways need not agree on the time; tests inject a
  clock to step to exact boundaries.  Records also carry their logical expiry,
  so an outcome never depends on when Redis happens to evict a key.
* A ``BlockingConnectionPool`` (the plain pool raises past 100 in-flight
  commands), socket and connect timeouts, one quick retry on a fresh
  connection (a pooled connection is stale after a Redis restart), and an
  overall deadline per operation: a session never hangs on Redis; every
  failure is a :class:`StoreError`.

URLs: ``redis://``, ``rediss://`` (TLS) and ``unix://``.  Sentinel and
Cluster URLs are not supported yet.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
from collections.abc import Awaitable, Sequence
from importlib import resources
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
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

T = TypeVar("T")

SCRIPTS = ("grey", "rate", "acquire", "refresh", "release", "leases", "msg_limit")

#: Tags longer than this are hashed: a tag is hashed by Redis for every command.
MAX_TAG = 200


def load_script(name: str) -> str:
    """The text of ``lua/<name>.lua``, shipped next to this module."""
    return resources.files("barricade.state").joinpath("lua", f"{name}.lua").read_text("utf-8")


def tag(value: str) -> str:
    """A Redis Cluster hash tag for ``value``: ``{value}``.

    A brace inside would end the tag early (Redis hashes up to the first
    ``}``), so such values, and very long ones, are replaced by their SHA-1.
    """
    if "{" in value or "}" in value or len(value) > MAX_TAG:
        value = hashlib.sha1(value.encode("utf-8", "surrogateescape")).hexdigest()
    return "{" + value + "}"


class RedisStore(Store):
    """Store on Redis; see the module docstring.

    ``timeout`` bounds each operation as a whole (connection wait, retry and
    all), ``connect_timeout`` each connection attempt; ``max_connections`` is
    the pool size (callers beyond it wait, within ``timeout``).
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "barricade:",
        timeout: float = 1.0,
        connect_timeout: float = 0.5,
        max_connections: int = 32,
        clock: Clock | None = None,
    ):
        if "{" in prefix or "}" in prefix:
            raise ValueError(f"Redis key prefix must not contain braces: {prefix!r}")
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"unsupported Redis URL (redis://, rediss:// or unix://): {url!r}")
        self.url = url
        self.prefix = prefix
        self.timeout = timeout
        self._clock = clock
        self._pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=connect_timeout,
            retry=Retry(NoBackoff(), 1),
            decode_responses=True,
        )
        self._redis = aioredis.Redis(connection_pool=self._pool)
        self._scripts = {name: self._redis.register_script(load_script(name)) for name in SCRIPTS}
        self._ids = itertools.count(1)
        self._origin = f"{os.uname().nodename}:{os.getpid()}:{os.urandom(4).hex()}"

    # -- plumbing ---------------------------------------------------------

    def key(self, kind: str, name: str, rest: str | None = None) -> str:
        """``<prefix><kind>:{<name>}`` (``:<rest>`` appended in the same slot)."""
        base = f"{self.prefix}{kind}:{tag(name)}"
        return base if rest is None else f"{base}:{rest}"

    def _now(self) -> int:
        """Milliseconds of the injected clock, or -1: the script asks Redis."""
        return -1 if self._clock is None else int(round(self._clock() * 1000))

    async def _call(self, what: str, op: Awaitable[T]) -> T:
        """Run one Redis operation under the deadline; any failure is StoreError."""
        try:
            async with asyncio.timeout(self.timeout):
                return await op
        except TimeoutError as exc:
            raise StoreError(f"redis {what}: no answer within {self.timeout:g}s ({self.url})") from exc
        except (RedisError, OSError) as exc:
            raise StoreError(f"redis {what}: {exc} ({self.url})") from exc

    async def _script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return await self._call(name, self._scripts[name](keys=list(keys), args=list(args)))

    async def ping(self) -> None:
        """Raise StoreError unless Redis answers (for startup and health checks)."""
        await self._call("ping", self._redis.ping())

    async def close(self) -> None:
        await self._redis.aclose()
        await self._pool.disconnect()

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
        outcome, created, now = await self._script("grey", keys, args)
        return GreyStatus(Grey(outcome), int(created) / 1000, int(now) / 1000, period)

    async def grey_reject(self, *, ttl: float, host: str | None = None,
                          tuple_key: str | None = None) -> None:
        if tuple_key is not None:
            key = self.key("grey", tuple_key) if host is None else self.key("grey", host, tuple_key)
        elif host is not None:
            key = self.key("grey", host)
        else:
            raise ValueError("grey_reject needs a host or a tuple_key")

        async def write() -> None:
            stamp = self._now()
            if stamp < 0:  # the record's times are the server's, as in the scripts
                secs, micros = await self._redis.time()
                stamp = secs * 1000 + micros // 1000
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(key)
                pipe.hset(key, mapping={"state": "reject", "created": stamp, "expires": stamp + ms(ttl)})
                pipe.pexpire(key, ms(ttl))
                await pipe.execute()

        await self._call("grey_reject", write())

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

    async def refresh(self, key: str, lease: str, *, ttl: float) -> bool:
        args = [self._now(), ms(ttl), lease]
        return bool(int(await self._script("refresh", [self.key("conc", key)], args)))

    async def release(self, key: str, lease: str) -> None:
        await self._script("release", [self.key("conc", key)], [self._now(), lease])

    async def leases(self, key: str) -> int:
        return int(await self._script("leases", [self.key("conc", key)], [self._now()]))

    # -- fixed-window message limits --------------------------------------

    async def msg_limit(self, key: str, *, period: float, increment: int = 1) -> int:
        args = [self._now(), ms(period), increment]
        return int(await self._script("msg_limit", [self.key("msg", key)], args))

    # -- key/value cache (single commands: each is atomic and sets its TTL) --

    async def get(self, key: str) -> str | None:
        return await self._call("get", self._redis.get(self.key("cache", key)))

    async def set(self, key: str, value: str, *, ttl: float) -> None:
        await self._call("set", self._redis.set(self.key("cache", key), value, px=ms(ttl)))

    async def add(self, key: str, value: str, *, ttl: float) -> bool:
        added = await self._call("add", self._redis.set(self.key("cache", key), value, px=ms(ttl), nx=True))
        return bool(added)

    async def delete(self, key: str) -> None:
        await self._call("delete", self._redis.delete(self.key("cache", key)))
