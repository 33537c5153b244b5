"""``redis-url`` forms and the client each one needs.

One option names every deployment a postmaster meets:

=====================================================  =========================================
``redis://host:port/db``, ``rediss://…``               one server (``rediss``: TLS)
``unix:///path/redis.sock?db=N``                       one server on a unix socket
``redis+sentinel://h1:26379,h2:26379/mymaster/db``     the master that Sentinel names, followed
                                                       through fail-overs (``rediss+sentinel``:
                                                       TLS to the master)
``redis+cluster://h1:7000,h2:7001``                    a Redis Cluster (``rediss+cluster``: TLS);
                                                       the nodes given are only the seeds
=====================================================  =========================================

Credentials go in the usual place (``redis+sentinel://:secret@h1:26379/mymaster``) and
apply to the data nodes; ``sentinel_password=`` in the query authenticates to the
sentinels.  TLS options (``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``,
``ssl_cert_reqs``) are query parameters, as redis-py takes them for ``rediss://``.

A single server is spoken to by :class:`~barricade.state.resp.RespClient`
(one pipelined connection, a fraction of redis-py's CPU per command: see
that module); Sentinel and Cluster by redis-py, which knows their topology
protocols.  Both sit behind :class:`Backend`, the two calls the store makes.
Every client gets the same connect timeout, and the store puts its deadline
around every call, so a slow Redis costs the same whatever is behind the URL.
"""

from __future__ import annotations

import asyncio
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from barricade.state.resp import Heard, RespClient

PLAIN = ("redis://", "rediss://", "unix://")
SENTINEL = ("redis+sentinel", "rediss+sentinel")
CLUSTER = ("redis+cluster", "rediss+cluster")
TLS_PARAMS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")


@dataclass(frozen=True)
class MultiHostUrl:
    """A parsed ``redis+sentinel``/``redis+cluster`` URL."""

    scheme: str
    hosts: list[tuple[str, int]]
    path: list[str]
    username: str | None = None
    password: str | None = None
    query: dict[str, str] = field(default_factory=dict)

    @property
    def tls(self) -> bool:
        return self.scheme.startswith("rediss")


def parse_hosts(netloc: str, default_port: int) -> list[tuple[str, int]]:
    """``h1:p1,[::1]:p2,h3`` → [(host, port), …]; a bad item raises ValueError."""
    hosts = []
    for item in netloc.split(","):
        item = item.strip()
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else ""
        else:
            host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
        if not host:
            raise ValueError(f"no host in {item!r}")
        if port and not port.isdigit():
            raise ValueError(f"bad port in {item!r}")
        hosts.append((host, int(port) if port else default_port))
    return hosts


def parse_multi(url: str) -> MultiHostUrl:
    """Split a sentinel or cluster URL; redis-py's own parser takes one host only."""
    parts = urlsplit(url)
    creds, _, netloc = parts.netloc.rpartition("@")
    username, _, password = creds.partition(":") if creds else ("", "", "")
    default = 26379 if parts.scheme in SENTINEL else 6379
    return MultiHostUrl(
        scheme=parts.scheme,
        hosts=parse_hosts(netloc, default),
        path=[p for p in parts.path.split("/") if p],
        username=unquote(username) or None,
        password=unquote(password) or None,
        query=dict(parse_qsl(parts.query)),
    )


def tls_kwargs(url: MultiHostUrl) -> dict:
    if not url.tls:
        return {}
    return {"ssl": True, **{k: v for k, v in url.query.items() if k in TLS_PARAMS}}


class Backend(ABC):
    """The two things the store asks of Redis, whatever the deployment."""

    @abstractmethod
    async def script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run the named Lua script (loaded again if Redis lost it)."""

    @abstractmethod
    async def command(self, *args: str | int) -> Any:
        """One plain command (GET, SET, DEL, PING)."""

    def abort(self) -> None:  # noqa: B027 - only the pipelined client needs it
        """The caller's deadline passed: drop what is in flight."""

    def start_script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> asyncio.Future | None:
        """The script sent at once, its reply's future bounded by the backend's own
        deadline; None when that is not possible (then :meth:`script` under the
        caller's deadline).  A NOSCRIPT error comes back as it is."""
        return None

    def start(self, *args: str | int) -> asyncio.Future | None:
        """:meth:`start_script` for a plain command."""
        return None

    def start_heard(self, heard: Heard, *args: str | int) -> bool:
        """A plain command nobody awaits, sent at once: ``heard`` gets None, or the
        exception that failed it (the error reply, the connection's, the deadline's).
        False when that is not possible (``heard`` is then never called)."""
        return False

    @abstractmethod
    async def close(self) -> None:
        """Let go of every connection."""


class RespBackend(Backend):
    """One server through :class:`RespClient`."""

    def __init__(self, url: str, scripts: dict[str, str], connect_timeout: float,
                 timeout: float | None = None):
        self.client = RespClient(url, connect_timeout=connect_timeout, timeout=timeout)
        self.scripts = {name: (hashlib.sha1(text.encode()).hexdigest(), text)
                        for name, text in scripts.items()}

    async def script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        sha, text = self.scripts[name]
        return await self.client.evalsha(sha, text, keys, args)

    async def command(self, *args: str | int) -> Any:
        return await self.client.execute(*args)

    def start_script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> asyncio.Future | None:
        return self.client.start("EVALSHA", self.scripts[name][0], len(keys), *keys, *args)

    def start(self, *args: str | int) -> asyncio.Future | None:
        return self.client.start(*args)

    def start_heard(self, heard: Heard, *args: str | int) -> bool:
        return self.client.start_heard(heard, *args)

    def abort(self) -> None:
        self.client.abort()

    async def close(self) -> None:
        await self.client.close()


class RedisPyBackend(Backend):
    """Sentinel or Cluster through redis-py's asyncio clients."""

    def __init__(self, client: aioredis.Redis | RedisCluster, scripts: dict[str, str],
                 close: Callable[[], Awaitable[None]]):
        self.client = client
        self.scripts = {name: client.register_script(text) for name, text in scripts.items()}
        self._close = close

    async def script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return await self.scripts[name](keys=list(keys), args=list(args))

    async def command(self, *args: str | int) -> Any:
        return await self.client.execute_command(*args)

    async def close(self) -> None:
        await self._close()


def make_client(url: str, scripts: dict[str, str], *, timeout: float, connect_timeout: float,
                max_connections: int) -> Backend:
    """The backend for ``url`` (see the module docstring).

    No connection is made here: a store starts even while Redis is down,
    and its first operation reports the failure like any later one.
    ``max_connections`` bounds redis-py's pools; the single-server client
    needs one connection.
    """
    common = dict(socket_timeout=timeout, socket_connect_timeout=connect_timeout,
                  decode_responses=True)
    scheme = url.partition("://")[0]
    if url.startswith(PLAIN):
        return RespBackend(url, scripts, connect_timeout, timeout)
    if scheme in SENTINEL:
        parsed = parse_multi(url)
        if not parsed.path:
            raise ValueError(f"no master name in {url!r} (redis+sentinel://host:port/name[/db])")
        db = parsed.path[1] if len(parsed.path) > 1 else "0"
        if not db.isdigit() or len(parsed.path) > 2:
            raise ValueError(f"bad database in {url!r} (redis+sentinel://host:port/name[/db])")
        sentinel_kwargs = dict(socket_timeout=timeout, socket_connect_timeout=connect_timeout)
        if "sentinel_password" in parsed.query:
            sentinel_kwargs["password"] = parsed.query["sentinel_password"]
        sentinel = Sentinel(parsed.hosts, sentinel_kwargs=sentinel_kwargs, **common)
        client = sentinel.master_for(
            parsed.path[0], db=int(db), username=parsed.username, password=parsed.password,
            retry=Retry(NoBackoff(), 1), **tls_kwargs(parsed), **common)

        async def close_sentinel() -> None:
            await client.aclose()
            for node in sentinel.sentinels:
                await node.aclose()

        return RedisPyBackend(client, scripts, close_sentinel)
    if scheme in CLUSTER:
        parsed = parse_multi(url)
        if parsed.path:
            raise ValueError(f"a cluster URL has no database: {url!r}")
        cluster = RedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in parsed.hosts],
            username=parsed.username, password=parsed.password,
            max_connections=max_connections, retry=Retry(NoBackoff(), 1),
            **tls_kwargs(parsed), **common)
        return RedisPyBackend(cluster, scripts, cluster.aclose)
    raise ValueError(
        f"unsupported Redis URL {url!r}: redis://, rediss://, unix://, "
        "redis+sentinel:// or redis+cluster://")
