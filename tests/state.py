"""Shared-state test kit: a real redis-server, a steppable clock, and the
scenarios every Store must pass (run against MemoryStore in the unit tests
and RedisStore in the integration tests, so the Lua scripts are checked
against the same expectations as the reference implementation)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from barricade.state.base import Grey, Store
from barricade.testing import free_port, stop, wait_for, wait_started


class FakeClock:
    """A clock that only moves when told, starting on a whole minute so that
    rate buckets (6 s) and windows start exactly at ``start``.  It starts near
    the real time so that real Redis TTLs computed from it stay sensible."""

    def __init__(self) -> None:
        self.start = float(int(time.time()) // 60 * 60)
        self.now = self.start

    def __call__(self) -> float:
        return self.now

    def at(self, offset: float) -> None:
        """Set the time to ``start + offset`` seconds."""
        self.now = self.start + offset


class RedisServer:
    """``redis-server`` in the foreground on a free loopback port (and a unix
    socket), no persistence, stopped by pid.  ``stop()`` then ``start()``
    restarts it on the same port and socket, empty."""

    def __init__(self, tmp: Path | None = None, port: int | None = None, tls: bool = False,
                 args: tuple[str, ...] = ()):
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server not installed (apt-get install redis-server)")
        self.port = port or free_port()
        self.dir = Path(tmp or tempfile.mkdtemp(prefix=f"barricade-redis-{self.port}-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket = self.dir / "redis.sock"
        self.log = self.dir / "redis.log"
        self.tls_port = free_port() if tls else None
        self.cert = self.dir / "cert.pem"
        if tls:
            self._make_cert()
        self.args = args
        self.proc: subprocess.Popen | None = None
        self.start()

    def _make_cert(self) -> None:
        """A self-signed certificate for 127.0.0.1 (the SAN is what Python checks)."""
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-keyout", str(self.dir / "key.pem"), "-out", str(self.cert),
             "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
            check=True, capture_output=True,
        )

    @property
    def tls_url(self) -> str:
        """rediss:// verifying the server against the test certificate."""
        return f"rediss://127.0.0.1:{self.tls_port}/0?ssl_ca_certs={self.cert}"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def unix_url(self) -> str:
        return f"unix://{self.socket}?db=0"

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.dir), "--unixsocket", str(self.socket),
                "--unixsocketperm", "700", "--logfile", str(self.log), *self.args]
        if self.tls_port:
            args += ["--tls-port", str(self.tls_port), "--tls-cert-file", str(self.cert),
                     "--tls-key-file", str(self.dir / "key.pem"), "--tls-auth-clients", "no"]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        if not wait_started(self.proc, self.ready, 10, f"redis-server on port {self.port}"):
            raise RuntimeError(f"redis-server exited ({self.proc.returncode}); see {self.log}")

    def ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))  # up, maybe with a password
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    return free_port(bus_offset=10000)


def cli(port: int, *args: str, timeout: float = 20) -> str:
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True,
                          check=True, timeout=timeout).stdout


class RedisClusterServers:
    """Three redis-server masters joined into a Redis Cluster (no replicas)."""

    def __init__(self, tmp: Path, masters: int = 3):
        self.nodes: list[RedisServer] = []
        try:
            for i in range(masters):
                port = cluster_port()
                self.nodes.append(RedisServer(tmp / f"node{i}", port=port, args=(
                    "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
                    "--cluster-node-timeout", "2000")))
            cli(self.nodes[0].port, "--cluster", "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes), "--cluster-replicas", "0",
                "--cluster-yes")
            wait_for(self.ready, 20, "the Redis Cluster to reach state ok")
        except BaseException:
            self.cleanup()
            raise

    def ready(self) -> bool:
        return all("cluster_state:ok" in cli(n.port, "cluster", "info") for n in self.nodes)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:2])

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()


class RedisSentinelServers:
    """A master, a replica and one Sentinel watching them as ``mymaster``.

    Sentinel's timings are short (down after 1 s) so that a fail-over in a
    test takes seconds, not minutes.
    """

    name = "mymaster"

    def __init__(self, tmp: Path):
        self.master = RedisServer(tmp / "master")
        self.replica = RedisServer(tmp / "replica", args=(
            "--replicaof", "127.0.0.1", str(self.master.port)))
        self.port = free_port()
        self.dir = tmp / "sentinel"
        self.dir.mkdir()
        conf = self.dir / "sentinel.conf"  # Sentinel rewrites it: it must be writable
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n"
            f"sentinel monitor {self.name} 127.0.0.1 {self.master.port} 1\n"
            f"sentinel down-after-milliseconds {self.name} 1000\n"
            f"sentinel failover-timeout {self.name} 4000\n")
        self.proc = subprocess.Popen(
            ["redis-server", str(conf), "--sentinel", "--logfile", str(self.dir / "sentinel.log")],
            stdin=subprocess.DEVNULL)
        try:
            wait_for(lambda: self.master_port() == self.master.port, 20,
                     "Sentinel to know the master")
            wait_for(lambda: "slave0:" in cli(self.master.port, "info", "replication"), 20,
                     "the replica to attach")
        except BaseException:
            self.cleanup()
            raise

    def master_port(self) -> int | None:
        try:
            out = cli(self.port, "sentinel", "get-master-addr-by-name", self.name, timeout=5)
        except (subprocess.SubprocessError, OSError):
            return None
        lines = out.split()
        return int(lines[1]) if len(lines) == 2 else None

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/{self.name}/0"

    def cleanup(self) -> None:
        stop(self.proc)
        self.master.cleanup()
        self.replica.cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)


# --- scenarios: async (store, clock) -> None, the same for every Store --------------------

Scenario = Callable[[Store, FakeClock], Awaitable[None]]
SCENARIOS: dict[str, Scenario] = {}

GREY = dict(period=600.0, temp_fail_ttl=90000.0, accept_ttl=604800.0)


def scenario(fn: Scenario) -> Scenario:
    SCENARIOS[fn.__name__] = fn
    return fn


@scenario
async def grey_period_boundaries(store: Store, clock: FakeClock) -> None:
    """new, early just before the period, pass exactly at it, then known."""
    key = "192.0.2.9,fred@sender.net,john@acme.org"
    clock.at(0)
    first = await store.grey(key, **GREY)
    assert first.result is Grey.NEW and first.created == clock.start and first.remaining == 600
    clock.at(599.999)
    early = await store.grey(key, **GREY)
    assert early.result is Grey.EARLY
    assert abs(early.remaining - 0.001) < 1e-6 and early.created == clock.start
    clock.at(600)
    passed = await store.grey(key, **GREY)
    assert passed.result is Grey.PASS and passed.age == 600 and passed.passed
    clock.at(601)
    assert (await store.grey(key, **GREY)).result is Grey.KNOWN


@scenario
async def grey_temp_fail_ttl_boundary(store: Store, clock: FakeClock) -> None:
    """A retry just inside grey-temp-fail-ttl passes; at the TTL the tuple is new again."""
    ttl = GREY["temp_fail_ttl"]
    clock.at(0)
    assert (await store.grey("a", **GREY)).result is Grey.NEW
    assert (await store.grey("b", **GREY)).result is Grey.NEW
    clock.at(ttl - 0.001)
    assert (await store.grey("a", **GREY)).result is Grey.PASS
    clock.at(ttl)
    renewed = await store.grey("b", **GREY)
    assert renewed.result is Grey.NEW and renewed.created == clock.now


@scenario
async def grey_accept_ttl_touched(store: Store, clock: FakeClock) -> None:
    """A pass is remembered for accept_ttl after its last use, then forgotten."""
    accept = GREY["accept_ttl"]
    clock.at(0)
    await store.grey("t", **GREY)
    clock.at(600)
    assert (await store.grey("t", **GREY)).result is Grey.PASS
    clock.at(600 + accept - 0.001)
    assert (await store.grey("t", **GREY)).result is Grey.KNOWN  # touched: extends to 2*accept
    clock.at(600 + 2 * accept - 0.002)
    assert (await store.grey("t", **GREY)).result is Grey.KNOWN
    clock.at(600 + 3 * accept)
    assert (await store.grey("t", **GREY)).result is Grey.NEW


@scenario
async def grey_host_shortcut(store: Store, clock: FakeClock) -> None:
    """After one tuple of a host passes, any tuple from that host is known at once."""
    host = "192.0.2.9"
    clock.at(0)
    assert (await store.grey(f"{host},a@x,b@y", host=host, **GREY)).result is Grey.NEW
    assert (await store.grey("198.51.100.1,a@x,b@y", host="198.51.100.1", **GREY)).result is Grey.NEW
    clock.at(600)
    assert (await store.grey(f"{host},a@x,b@y", host=host, **GREY)).result is Grey.PASS
    other = await store.grey(f"{host},c@x,d@y", host=host, **GREY)
    assert other.result is Grey.KNOWN and other.created == clock.now
    clock.at(600.001)
    assert (await store.grey("198.51.100.2,a@x,b@y", host="198.51.100.2", **GREY)).result is Grey.NEW


@scenario
async def grey_tuples_are_independent(store: Store, clock: FakeClock) -> None:
    """Without a host part a pass covers only its own tuple."""
    clock.at(0)
    await store.grey("fred@sender.net,john@acme.org", **GREY)
    clock.at(600)
    assert (await store.grey("fred@sender.net,john@acme.org", **GREY)).result is Grey.PASS
    assert (await store.grey("fred@sender.net,mary@acme.org", **GREY)).result is Grey.NEW


@scenario
async def grey_reject_records(store: Store, clock: FakeClock) -> None:
    """An operator's reject record refuses its host (or tuple), is not touched, and expires."""
    host = "192.0.2.66"
    clock.at(0)
    await store.grey_reject(host=host, ttl=100)
    refused = await store.grey(f"{host},a@x,b@y", host=host, **GREY)
    assert refused.result is Grey.REJECT and not refused.passed
    clock.at(100)
    assert (await store.grey(f"{host},a@x,b@y", host=host, **GREY)).result is Grey.NEW
    await store.grey_reject(tuple_key="a@x,c@y", ttl=50)
    assert (await store.grey("a@x,c@y", **GREY)).result is Grey.REJECT
    clock.at(149.999)
    assert (await store.grey("a@x,c@y", **GREY)).result is Grey.REJECT
    clock.at(150)
    assert (await store.grey("a@x,c@y", **GREY)).result is Grey.NEW


@scenario
async def grey_content_hash_decides(store: Store, clock: FakeClock) -> None:
    """grey-content: DATA holds (DUE), the dot's hash passes the same message only."""
    key = "192.0.2.7,a@x,b@y"
    clock.at(0)
    assert (await store.grey(key, hold=True, **GREY)).result is Grey.NEW  # at DATA
    assert (await store.grey(key, digest="h1", **GREY)).result is Grey.EARLY  # its dot
    clock.at(300)
    assert (await store.grey(key, hold=True, **GREY)).result is Grey.EARLY
    clock.at(600)
    due = await store.grey(key, hold=True, **GREY)
    assert due.result is Grey.DUE and due.age == 600
    assert (await store.grey(key, hold=True, **GREY)).result is Grey.DUE  # not upgraded
    other = await store.grey(key, digest="h2", **GREY)
    assert other.result is Grey.MISMATCH and other.remaining == 0 and not other.passed
    assert (await store.grey(key, digest="h3", **GREY)).result is Grey.MISMATCH  # h3 is now last
    assert (await store.grey(key, digest="h3", **GREY)).result is Grey.PASS  # the last seen passes
    assert (await store.grey(key, digest="h9", **GREY)).result is Grey.KNOWN  # a pass is a pass


@scenario
async def grey_content_first_hash_and_msgid(store: Store, clock: FakeClock) -> None:
    """The first hash passes after the period; a re-encoded retry with the same
    Message-ID replaces the first hash once (smtpf's Exchange work-around)."""
    clock.at(0)
    assert (await store.grey("t1", digest="h1", msgid="<m1@x>", **GREY)).result is Grey.NEW
    assert (await store.grey("t2", digest="h1", msgid="<m2@x>", **GREY)).result is Grey.NEW
    clock.at(700)
    assert (await store.grey("t1", digest="h1", **GREY)).result is Grey.PASS
    assert (await store.grey("t2", digest="h2", msgid="<m2@x>", **GREY)).result is Grey.MISMATCH
    assert (await store.grey("t2", digest="h2", msgid="<m2@x>", **GREY)).result is Grey.PASS


@scenario
async def rate_limit_boundary(store: Store, clock: FakeClock) -> None:
    """Counts include the current event; limit 3 lets 3 through and counts 4 on the 4th."""
    clock.at(0)
    counts = [await store.rate("192.0.2.1") for _ in range(4)]
    assert counts == [1, 2, 3, 4]
    assert await store.rate("192.0.2.2") == 1  # keys are independent
    assert await store.rate("192.0.2.1", increment=0) == 4


@scenario
async def rate_window_slides(store: Store, clock: FakeClock) -> None:
    """An event counts until 10 buckets of 6 s have started after its own bucket."""
    clock.at(0)
    await store.rate("k")
    clock.at(5.999)
    assert await store.rate("k") == 2  # same bucket
    clock.at(6)
    assert await store.rate("k") == 3  # next bucket
    clock.at(59.999)
    assert await store.rate("k", increment=0) == 3
    clock.at(60)
    assert await store.rate("k", increment=0) == 1  # bucket 0 left the window
    clock.at(66)
    assert await store.rate("k", increment=0) == 0
    assert await store.rate("k") == 1


@scenario
async def concurrency_limit_two(store: Store, clock: FakeClock) -> None:
    """Two leases under a limit of 2; the third is refused until one is released."""
    clock.at(0)
    a = await store.acquire("192.0.2.1", limit=2, ttl=60)
    b = await store.acquire("192.0.2.1", limit=2, ttl=60)
    assert a and b and a != b
    assert await store.acquire("192.0.2.1", limit=2, ttl=60) is None
    assert await store.leases("192.0.2.1") == 2
    assert await store.acquire("192.0.2.2", limit=2, ttl=60)  # another client
    await store.release("192.0.2.1", a)
    await store.release("192.0.2.1", a)  # twice is harmless
    c = await store.acquire("192.0.2.1", limit=2, ttl=60)
    assert c and c not in (a, b)
    await store.release("192.0.2.1", "no-such-lease")
    assert await store.leases("192.0.2.1") == 2


@scenario
async def connect_counts_then_leases(store: Store, clock: FakeClock) -> None:
    """``connect`` is ``rate`` then, unless over the rate limit, ``acquire``, on one key:
    the same counts and leases as the two calls, which see what it did."""
    clock.at(0)
    one = await store.connect("ip", rate_limit=3, limit=2, ttl=10)
    two = await store.connect("ip", rate_limit=3, limit=2, ttl=10)
    assert one[0] == 1 and two[0] == 2 and one[1] and two[1] and one[1] != two[1]
    assert await store.connect("ip", rate_limit=3, limit=2, ttl=10) == (3, None)  # limit 2 reached
    assert await store.leases("ip") == 2
    await store.release("ip", one[1])
    assert await store.connect("ip", rate_limit=3, limit=2, ttl=10) == (4, None)  # over the rate: not asked
    assert await store.leases("ip") == 1
    assert await store.rate("ip", increment=0) == 4
    clock.at(6)
    count, lease = await store.connect("ip", rate_limit=5, limit=2, ttl=10)
    assert count == 5 and lease and await store.leases("ip") == 2
    assert await store.refresh("ip", lease, ttl=10)
    clock.at(10)  # the second lease (from 0) expired, the refreshed one lives until 16
    assert await store.leases("ip") == 1
    assert (await store.connect("other", rate_limit=1, limit=1, ttl=10))[1]  # keys are independent


@scenario
async def concurrency_lease_expiry(store: Store, clock: FakeClock) -> None:
    """A lease that is not refreshed (killed worker) frees its slot after the TTL."""
    clock.at(0)
    a = await store.acquire("ip", limit=2, ttl=10)
    b = await store.acquire("ip", limit=2, ttl=10)
    assert a and b
    clock.at(5)
    assert await store.refresh("ip", a, ttl=10)  # a lives until 15
    clock.at(9.999)
    assert await store.acquire("ip", limit=2, ttl=10) is None
    clock.at(10)  # b expired
    c = await store.acquire("ip", limit=2, ttl=10)
    assert c
    assert not await store.refresh("ip", b, ttl=10)  # an expired lease is not revived
    assert await store.leases("ip") == 2
    clock.at(15)
    assert await store.leases("ip") == 1
    clock.at(20)
    assert await store.leases("ip") == 0


@scenario
async def msg_limit_fixed_window(store: Store, clock: FakeClock) -> None:
    """The window starts at the first count and restarts after ``period``."""
    clock.at(10)
    assert [await store.msg_limit("fred@example.com", period=3600) for _ in range(3)] == [1, 2, 3]
    # One second before the end: Redis expires the key at the window's end in its own
    # (real) time, so a window that the fake clock leaves a millisecond of would be
    # gone by the next call.
    clock.at(10 + 3599)
    assert await store.msg_limit("fred@example.com", period=3600) == 4
    assert await store.msg_limit("fred@example.com", period=3600, increment=0) == 4
    clock.at(10 + 3600)
    assert await store.msg_limit("fred@example.com", period=3600, increment=0) == 0
    assert await store.msg_limit("fred@example.com", period=3600) == 1
    clock.at(10 + 3600 + 3599)
    assert await store.msg_limit("fred@example.com", period=3600, increment=2) == 3


@scenario
async def cache_values(store: Store, clock: FakeClock) -> None:
    """get/set/add/delete; add is the atomic "seen before?" of dupmsg."""
    assert await store.get("rcpt:john@acme.org") is None
    await store.set("rcpt:john@acme.org", "2", ttl=7200)
    assert await store.get("rcpt:john@acme.org") == "2"
    assert await store.add("dupmsg:abc", "1", ttl=600)
    assert not await store.add("dupmsg:abc", "1", ttl=600)
    await store.delete("dupmsg:abc")
    assert await store.add("dupmsg:abc", "1", ttl=600)
