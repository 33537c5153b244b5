"""``redis-url`` forms and the redis-py client each one needs.

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

Every client gets the same socket and connect timeouts, so the store's deadline holds
whichever kind of deployment is behind the URL.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

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


#: A connected client and how to let go of it.
Client = tuple[aioredis.Redis | RedisCluster, Callable[[], Awaitable[None]]]


def make_client(url: str, *, timeout: float, connect_timeout: float,
                max_connections: int) -> Client:
    """The redis-py asyncio client for ``url`` (see the module docstring).

    No connection is made here: a store starts even while Redis is down,
    and its first operation reports the failure like any later one.
    """
    common = dict(socket_timeout=timeout, socket_connect_timeout=connect_timeout,
                  decode_responses=True)
    scheme = url.partition("://")[0]
    if url.startswith(PLAIN):
        # Blocking: the plain pool raises past max_connections instead of waiting.
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=timeout,
            retry=Retry(NoBackoff(), 1), **common)
        client = aioredis.Redis(connection_pool=pool)

        async def close_plain() -> None:
            await client.aclose()
            await pool.disconnect()

        return client, close_plain
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

        return client, close_sentinel
    if scheme in CLUSTER:
        parsed = parse_multi(url)
        if parsed.path:
            raise ValueError(f"a cluster URL has no database: {url!r}")
        cluster = RedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in parsed.hosts],
            username=parsed.username, password=parsed.password,
            max_connections=max_connections, retry=Retry(NoBackoff(), 1),
            **tls_kwargs(parsed), **common)
        return cluster, cluster.aclose
    raise ValueError(
        f"unsupported Redis URL {url!r}: redis://, rediss://, unix://, "
        "redis+sentinel:// or redis+cluster://")
