"""Shared fixtures: a real smtp-sink downstream, a real nsd, a real redis-server,
and a real Barricade process."""

import uuid

import pytest

from barricade.testing import Proxy, make_sink, routes_to, sink, stop_all  # noqa: F401
from tests.dns import Blackhole, Nsd
from tests.state import RedisServer


@pytest.fixture(scope="session")
def nsd(tmp_path_factory):
    """nsd with the zones of tests/zones, for the whole run."""
    server = Nsd(tmp_path_factory.mktemp("nsd"))
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def dns_blackhole():
    """A name server that never answers (every lookup times out)."""
    hole = Blackhole()
    yield hole
    hole.close()


@pytest.fixture
def make_proxy(tmp_path, nsd):
    """The kit's make_proxy, asking the test nsd for DNS (never the system resolver).

    A test's own ``dns-servers=...`` comes later and wins.
    """
    started = []

    def make(route_map: str, *args: str, pythonpath=(), **kwargs) -> Proxy:
        p = Proxy(tmp_path, route_map, f"dns-servers={nsd.server}", *args, pythonpath=pythonpath,
                  **kwargs)
        started.append(p)
        return p

    yield make
    stop_all(started)


@pytest.fixture
def access(tmp_path, sink, make_proxy):  # noqa: F811
    """Factory: a proxy with this access map text (and options)."""

    def make(text: str, *args: str):
        path = tmp_path / "access-map"
        path.write_text(text)
        proxy = make_proxy(routes_to(sink), f"access-map={path}", *args)
        proxy.access_path = path
        return proxy

    return make


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """One redis-server for the run; tests keep apart by key prefix (see ``backend``)."""
    srv = RedisServer(tmp_path_factory.mktemp("redis"))
    yield srv
    srv.cleanup()


@pytest.fixture(params=["memory", "redis"])
def backend(request) -> list[str]:
    """The options selecting each store (a fresh key prefix per test on Redis):
    a test taking it runs once on MemoryStore and once on Redis."""
    if request.param == "memory":
        return []
    srv = request.getfixturevalue("redis_server")
    return [f"redis-url={srv.url}", f"redis-prefix=t{uuid.uuid4().hex[:8]}:"]


@pytest.fixture
def limited(access):
    """``access`` without the connect limits' 421 delays (15 s by default)."""
    return lambda text, *args: access(text, "rate-421-delay=0", "concurrent-421-delay=0", *args)
