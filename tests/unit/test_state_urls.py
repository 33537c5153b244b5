"""redis-url forms: which client each one makes, and clear errors for bad ones."""

from __future__ import annotations

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import SentinelConnectionPool

from barricade.state.urls import make_client, parse_hosts, parse_multi

KW = dict(timeout=1.0, connect_timeout=0.5, max_connections=8)


@pytest.mark.parametrize("netloc, default, hosts", [
    ("h1", 26379, [("h1", 26379)]),
    ("h1:1,h2:2", 6379, [("h1", 1), ("h2", 2)]),
    ("[::1]:7000,10.0.0.1", 6379, [("::1", 7000), ("10.0.0.1", 6379)]),
    ("[::1]", 26379, [("::1", 26379)]),
    (" a:1 , b:2 ", 6379, [("a", 1), ("b", 2)]),
])
def test_parse_hosts(netloc, default, hosts) -> None:
    assert parse_hosts(netloc, default) == hosts


@pytest.mark.parametrize("netloc", ["h1:x", ":1", "h1,,h2", "[::1]:p"])
def test_parse_hosts_rejects(netloc) -> None:
    with pytest.raises(ValueError):
        parse_hosts(netloc, 6379)


def test_parse_multi_credentials_and_query() -> None:
    url = parse_multi("rediss+sentinel://user:p%40ss@s1:1,s2/mymaster/3?ssl_ca_certs=/ca.pem"
                      "&sentinel_password=x")
    assert url.tls and url.hosts == [("s1", 1), ("s2", 26379)]
    assert url.path == ["mymaster", "3"] and (url.username, url.password) == ("user", "p@ss")
    assert url.query == {"ssl_ca_certs": "/ca.pem", "sentinel_password": "x"}


def test_each_scheme_gets_its_client() -> None:
    plain, _ = make_client("redis://127.0.0.1:1/0", **KW)
    assert plain.connection_pool.max_connections == 8
    sentinel, _ = make_client("redis+sentinel://127.0.0.1:1/mymaster/2", **KW)
    assert isinstance(sentinel.connection_pool, SentinelConnectionPool)
    assert sentinel.connection_pool.service_name == "mymaster"
    assert sentinel.connection_pool.connection_kwargs["db"] == 2
    cluster, _ = make_client("redis+cluster://127.0.0.1:1,127.0.0.1:2", **KW)
    assert isinstance(cluster, RedisCluster)


@pytest.mark.parametrize("url, message", [
    ("http://127.0.0.1/", "unsupported Redis URL"),
    ("redis+sentinel://127.0.0.1:1", "no master name"),
    ("redis+sentinel://127.0.0.1:1/m/x", "bad database"),
    ("redis+sentinel://127.0.0.1:1/m/0/extra", "bad database"),
    ("redis+cluster://127.0.0.1:1/0", "no database"),
])
def test_bad_urls(url, message) -> None:
    with pytest.raises(ValueError, match=message):
        make_client(url, **KW)
