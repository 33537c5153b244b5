"""redis-url forms: which client each one makes, and clear errors for bad ones."""

from __future__ import annotations

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import SentinelConnectionPool

from barricade.state.clients import RespBackend, make_client, parse_hosts, parse_multi
from barricade.state.resp import Endpoint, encode

KW = dict(timeout=1.0, connect_timeout=0.5, max_connections=8)
SCRIPTS = {"one": "return 1"}


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
    plain = make_client("redis://127.0.0.1:1/0", SCRIPTS, **KW)
    assert isinstance(plain, RespBackend)
    assert plain.scripts["one"] == ("e0e1f9fabfc9d4800c877a703b823ac0578ff8db", "return 1")
    sentinel = make_client("redis+sentinel://127.0.0.1:1/mymaster/2", SCRIPTS, **KW).client
    assert isinstance(sentinel.connection_pool, SentinelConnectionPool)
    assert sentinel.connection_pool.service_name == "mymaster"
    assert sentinel.connection_pool.connection_kwargs["db"] == 2
    cluster = make_client("redis+cluster://127.0.0.1:1,127.0.0.1:2", SCRIPTS, **KW).client
    assert isinstance(cluster, RedisCluster)


@pytest.mark.parametrize("url, expected", [
    ("redis://127.0.0.1:6380/2", Endpoint(host="127.0.0.1", port=6380, db=2)),
    ("redis://:s%40cret@h", Endpoint(host="h", password="s@cret")),
    ("redis://user:pw@h:1?db=3", Endpoint(host="h", port=1, db=3, username="user", password="pw")),
    ("unix:///run/redis.sock?db=4", Endpoint(path="/run/redis.sock", db=4)),
])
def test_single_server_endpoints(url, expected) -> None:
    assert Endpoint.from_url(url) == expected


def test_rediss_verifies_by_default() -> None:
    import ssl
    tls = Endpoint.from_url("rediss://h:1/0").tls
    assert tls is not None and tls.verify_mode == ssl.CERT_REQUIRED and tls.check_hostname


def test_resp_encoding() -> None:
    assert encode(["SET", "k", "v\u00e9", "PX", 5]) == (
        b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\xc3\xa9\r\n$2\r\nPX\r\n$1\r\n5\r\n")


@pytest.mark.parametrize("url, message", [
    ("http://127.0.0.1/", "unsupported Redis URL"),
    ("redis://127.0.0.1/x", "bad database"),
    ("redis+sentinel://127.0.0.1:1", "no master name"),
    ("redis+sentinel://127.0.0.1:1/m/x", "bad database"),
    ("redis+sentinel://127.0.0.1:1/m/0/extra", "bad database"),
    ("redis+cluster://127.0.0.1:1/0", "no database"),
])
def test_bad_urls(url, message) -> None:
    with pytest.raises(ValueError, match=message):
        make_client(url, SCRIPTS, **KW)


def test_commands_are_encoded_alike_by_hiredis_and_by_hand():
    from barricade.state.resp import _encode, encode

    for args in [("EVALSHA", "ab12", 2, "rate:{connect:192.0.2.1}", "kä", -1, 0, b"raw"),
                 ("SET", "cache:{k\udcff}", "v", "PX", 10, "NX"), ("PING",), ("SET", "k", "")]:
        assert encode(args) == _encode(args)
    assert encode(("GET", "k")) == b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
