"""The admin commands through a real Barricade: one process, and two workers behind the master."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

from tests.conftest import routes_to
from tests.daemons import children, free_port, wait_for
from tests.haproxy import v1, v2_local
from tests.smtpclient import Client

ADMIN = [sys.executable, "-m", "barricade.admin_client"]
ROOT = Path(__file__).resolve().parents[2]


def sid(c: Client) -> str:
    """The session id: the last word of the banner."""
    return c.banner.text.split()[-1]


def conn(admin: Client) -> dict[str, str]:
    """CONN as {session id: worker} ('' with one process)."""
    reply = admin.cmd("CONN")
    assert (reply.code, reply.id) == (214, 993), reply
    out = {}
    for line in reply.lines[2:]:
        m = re.match(r"2\.0\.0 (\w+) \S+ \S+ \[[^]]+\]:\d+ age=\d+s idle=\d+s octets=\d+(?: worker=(\d+))?$", line)
        if m:
            out[m.group(1)] = m.group(2) or ""
    return out


def start_workers(make_proxy, sink, *args: str):
    proxy = make_proxy(routes_to(sink), "workers=2", *args)
    wait_for(lambda: proxy.log_text().count("control channel: worker") == 2, timeout=20,
             what="both workers on the control channel")
    return proxy


#: Sessions opened before concluding that one worker takes them all: the kernel hands a
#: connection to whichever worker accepts first, and on a loaded machine one may win a
#: long run of them.
BOTH_WORKERS_LIMIT = 200


def in_both_workers(port: int, admin: Client, clients: list[Client],
                    limit: int = BOTH_WORKERS_LIMIT) -> dict[str, str]:
    """Open sessions until CONN shows some in each of the two workers."""
    where = conn(admin)
    while len(set(where.values())) < 2:
        assert len(clients) < limit, f"every session went to one worker: {where}"
        c = Client(port)
        c.ehlo()
        clients.append(c)
        where = conn(admin)
    return where


# --- one process ---------------------------------------------------------------------

def test_each_command_in_one_process(sink, make_proxy):
    proxy = make_proxy(routes_to(sink))
    with Client(proxy.port) as other, Client(proxy.port) as admin:
        other.ehlo()
        reply = admin.cmd("HELP")
        assert (reply.code, reply.id) == (214, 916)
        assert all(verb in reply.text for verb in ("STAT", "CONN", "KILL", "CACHE", "OPTN", "VERB", "INFO"))
        assert any("KILL <session-id>" in line for line in reply.lines)

        reply = admin.cmd("STAT")
        assert (reply.code, reply.id) == (214, 993) and "statistics" in reply.text
        assert "2.0.0 active-connections=2" in reply.lines and "2.0.0 workers=1" in reply.lines
        # the barricade_sessions counter: these two and the start-up check's connection
        assert "2.0.0 sessions=3" in reply.lines
        # Python's garbage collector: what start-up made is frozen out of its walk
        gc = dict(line.removeprefix("2.0.0 ").rsplit("=", 1) for line in reply.lines if "2.0.0 gc_" in line)
        assert int(gc["gc_frozen"]) > 10_000
        assert {f"gc_collections{{generation={g}}}" for g in range(3)} <= set(gc)

        assert set(conn(admin)) == {sid(other), sid(admin)}

        reply = admin.cmd("INFO")
        assert reply.id == 993 and "2.0.0 barricade/0.1.0" in reply.lines
        assert any("one process" in line for line in reply.lines)

        reply = admin.cmd("VERB")
        assert (reply.id, reply.lines[1:]) == (993, ["2.0.0 default=info"])

        reply = admin.cmd(f"KILL {sid(other)}")
        assert (reply.code, reply.id, reply.text) == (214, 324, f"2.0.0 killing session {sid(other)} #324 {sid(admin)}")
        killed = other.read()
        assert (killed.code, killed.id) == (550, 325) and sid(other) in killed.text
        assert other.closed()
        wait_for(lambda: sid(other) not in conn(admin), what="the killed session gone")
        reply = admin.cmd(f"KILL {sid(other)}")
        assert (reply.code, reply.id) == (504, 326)
        assert admin.cmd("NOOP").code == 250  # the admin session goes on
    assert f"session {sid(other)}: killed by admin command from session {sid(admin)}" in proxy.log_text()


def test_kill_of_its_own_session_answers_then_closes(sink, make_proxy):
    proxy = make_proxy(routes_to(sink))
    with Client(proxy.port) as admin:
        reply = admin.cmd(f"KILL {sid(admin)}")
        assert (reply.code, reply.id) == (214, 324)
        assert admin.closed()


def test_optn_live_change_reaches_new_sessions(sink, make_proxy):
    proxy = make_proxy(routes_to(sink))
    with Client(proxy.port) as before, Client(proxy.port) as admin:
        assert "PIPELINING" in before.ehlo().lines
        reply = admin.cmd("OPTN -rfc2920-pipelining")
        assert (reply.code, reply.id, reply.text.split(" #")[0]) == (250, 994, "2.0.0 OPTN -rfc2920-pipelining")
        with Client(proxy.port) as after:
            assert "PIPELINING" not in after.ehlo().lines
        assert "PIPELINING" in before.ehlo().lines  # an open session keeps its settings
        listing = admin.cmd("OPTN")
        assert listing.id == 993
        assert "2.0.0 -rfc2920-pipelining (live)" in listing.lines
        assert any(line.startswith("2.0.0 route-map=") and "(live)" not in line for line in listing.lines)

        reply = admin.cmd("OPTN message-size-limit=1000")
        assert reply.id == 994
        with Client(proxy.port) as after:
            assert "SIZE 1000" in after.ehlo().lines
            after.cmd("MAIL FROM:<a@example.org>")
            after.cmd("RCPT TO:<b@example.com>")
            after.cmd("DATA")
            after.send(b"Subject: big\r\n\r\n" + b"x" * 2000 + b"\r\n.\r\n")
            assert after.read().id == 912  # too big, under the new limit

        reply = admin.cmd("OPTN route-map=/etc/passwd")
        assert (reply.code, reply.id, reply.text.split(" #")[0]) == (501, 323, "5.5.4 route-map requires restart")
        reply = admin.cmd("OPTN no-such-option=1")
        assert (reply.code, reply.id) == (504, 997)
        reply = admin.cmd("OPTN smtp-drop-after=lots")
        assert (reply.code, reply.id) == (501, 995) and "is not a number" in reply.text


def test_verb_changes_what_is_logged(sink, make_proxy):
    proxy = make_proxy(routes_to(sink))
    with Client(proxy.port) as admin:
        reply = admin.cmd("VERB -net.server")
        assert (reply.id, reply.text.split(" #")[0]) == (994, "2.0.0 VERB default=info barricade.net.server=warn")
        with Client(proxy.port) as quiet:
            quiet.cmd("QUIT")
        wait_for(lambda: sid(quiet) not in conn(admin), what="the quiet session over")
        assert admin.cmd("VERB net.server=info").id == 994
        with Client(proxy.port) as loud:
            loud.cmd("QUIT")
        wait_for(lambda: f"session {sid(loud)}: end" in proxy.log_text(), what="the session's end logged")
        assert f"session {sid(quiet)}: end" not in proxy.log_text()
        # The default level: every module without a level of its own (net.admin here) follows it.
        assert admin.cmd("VERB warn").id == 994
        assert admin.cmd("INFO").id == 993  # its info line ("admin INFO") is below warn now
        assert admin.cmd("VERB info").id == 994
        assert admin.cmd("STAT").id == 993
        wait_for(lambda: f"session {sid(admin)}: admin STAT" in proxy.log_text(), what="STAT logged")
        assert f"session {sid(admin)}: admin INFO" not in proxy.log_text()


def test_cache_round_trip(sink, make_proxy, backend, request):
    """On MemoryStore and on a real redis-server (the ``backend`` fixture runs both)."""
    proxy = make_proxy(routes_to(sink), *backend)
    with Client(proxy.port) as admin:
        assert admin.cmd("CACHE GET admin-test").id == 997
        reply = admin.cmd("CACHE PUT admin-test a value with spaces")
        assert (reply.code, reply.id) == (250, 994)
        reply = admin.cmd("CACHE GET admin-test")
        assert (reply.code, reply.id, reply.lines[1]) == (214, 993, "2.0.0 a value with spaces")
        if backend:  # it is in the shared store, where every MX sees it
            prefix = backend[1].split("=", 1)[1]
            raw = redis.Redis(port=request.getfixturevalue("redis_server").port, decode_responses=True)
            [key] = raw.keys(f"{prefix}*admin-test*")
            assert raw.get(key) == "a value with spaces" and raw.pttl(key) > 0
        assert admin.cmd("CACHE DELETE admin-test").id == 994
        assert admin.cmd("CACHE GET admin-test").id == 997
        assert admin.cmd("CACHE DELETE admin-test").id == 997


def test_from_elsewhere_they_are_unknown_commands(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "proxy-protocol-hosts=127.0.0.2")
    with Client(proxy.port) as c:
        assert c.cmd("XCLIENT ADDR=192.0.2.1 NAME=mail.outside.example").code == 220
        for line in ("STAT", "KILL X", "CACHE GET k", "OPTN"):
            reply = c.cmd(line)
            assert (reply.code, reply.id) == (500, 248), reply
        reply = c.cmd("HELP")
        assert reply.id == 916 and "STAT" not in reply.text
    for header, local in ((v1("192.0.2.7", "127.0.0.1", 40000, 25), False), (v2_local(), True)):
        s = socket.create_connection(("127.0.0.1", proxy.port), timeout=10, source_address=("127.0.0.2", 0))
        c = Client.__new__(Client)
        c.sock, c.buf = s, b""
        c.send(header)
        c.banner = c.read()
        with c:
            reply = c.cmd("STAT")
            assert (reply.id == 993) is local, reply
            if not local:
                assert (reply.code, reply.id) == (500, 248)


def test_ipv6_loopback_is_localhost(sink, make_proxy):
    port = free_port()
    proxy = make_proxy(routes_to(sink), f"interfaces=127.0.0.1:{port};[::1]:{port}", port=port)
    c = Client.__new__(Client)
    c.sock, c.buf = socket.create_connection(("::1", proxy.port), timeout=10), b""
    c.banner = c.read()
    with c:
        reply = c.cmd("CONN")
        assert reply.id == 993 and f"[::1]:{c.sock.getsockname()[1]}" in " ".join(reply.lines)


def test_hostile_input(sink, make_proxy):
    proxy = make_proxy(routes_to(sink))
    with Client(proxy.port) as c:
        for line, problem in ((f"KILL {'A' * 400}", "needs one session id"),
                              ("CACHE FROB k", "expected GET, PUT or DELETE"),
                              (f"CACHE PUT k {'v' * 1500}", "value longer than 1000"),
                              ("VERB loud", "expected a level")):
            reply = c.cmd(line)
            assert (reply.code, reply.id) == (501, 995) and problem in reply.text, reply
        assert c.cmd("NOOP").code == 250
    with Client(proxy.port) as c:
        assert c.cmd(b"CACHE GET k\xff").id == 641  # not ASCII: refused before it is a command
        c.ehlo()  # PIPELINING offered: the answers come in order
        c.send(b"STAT\r\nCONN\r\nINFO\r\nOPTN +nope\r\nNOOP\r\n")
        replies = [c.read() for _ in range(5)]
        assert [r.id for r in replies] == [993, 993, 993, 997, 547]
        assert [r.lines[0].split(" #")[0] for r in replies[:3]] == [
            "2.0.0 statistics", "2.0.0 connections", "2.0.0 information"]
    with Client(proxy.port) as c:  # five refusals: the usual smtp-drop-after
        for _ in range(5):
            reply = c.cmd("CACHE")
        assert c.read().id == 922 and c.closed()
    assert not proxy.unhandled_errors()


def test_barricade_admin_command(sink, make_proxy):
    proxy = make_proxy(routes_to(sink))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([*ADMIN, "--port", str(proxy.port), "STAT"], capture_output=True, text=True,
                         timeout=30, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("214 2.0.0 statistics #993 ") and "214 2.0.0 workers=1\n" in out.stdout
    out = subprocess.run([*ADMIN, "-p", str(proxy.port), "CACHE", "PUT", "k", "v"], capture_output=True,
                         text=True, timeout=30, env=env)
    assert out.returncode == 0 and "250 2.0.0 CACHE k stored" in out.stdout
    out = subprocess.run([*ADMIN, "-p", str(proxy.port), "KILL"], capture_output=True, text=True, timeout=30,
                         env=env)
    assert out.returncode == 1 and out.stdout.startswith("501 5.5.4 KILL: needs one session id")
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    out = subprocess.run([*ADMIN, "-p", str(port), "STAT"], capture_output=True, text=True, timeout=30, env=env)
    assert out.returncode == 2 and "barricade-admin: cannot connect to 127.0.0.1:" in out.stderr
    with socket.socket() as mute:  # accepts, never greets
        mute.bind(("127.0.0.1", 0))
        mute.listen()
        out = subprocess.run([*ADMIN, "-p", str(mute.getsockname()[1]), "-t", "1", "STAT"],
                             capture_output=True, text=True, timeout=30, env=env)
    assert out.returncode == 2 and "no reply from 127.0.0.1:" in out.stderr and "within 1s" in out.stderr
    out = subprocess.run([*ADMIN, "SHUTDOWN"], capture_output=True, text=True, timeout=30, env=env)
    assert out.returncode == 2 and "unknown command 'SHUTDOWN'" in out.stderr


# --- two workers -----------------------------------------------------------------------

def test_the_master_answers_for_every_worker(sink, make_proxy):
    proxy = start_workers(make_proxy, sink)
    clients: list[Client] = []
    try:
        admin = Client(proxy.port)
        clients.append(admin)
        where = in_both_workers(proxy.port, admin, clients)
        assert set(where) == {sid(c) for c in clients}  # CONN lists every worker's sessions
        mine = where[sid(admin)]
        victim = next(c for c in clients if where[sid(c)] != mine)
        reply = admin.cmd(f"KILL {sid(victim)}")
        assert (reply.code, reply.id) == (214, 324)  # held by the other worker
        assert victim.read().id == 325 and victim.closed()
        clients.remove(victim)
        victim.close()
        wait_for(lambda: sid(victim) not in conn(admin), what="the killed session gone")

        stat = admin.cmd("STAT")
        assert "2.0.0 workers=2" in stat.lines
        assert f"2.0.0 active-connections={len(clients)}" in stat.lines  # summed
        [sessions] = [line for line in stat.lines if line.startswith("2.0.0 sessions=")]
        assert float(sessions.split("=")[1]) == proxy.metric("barricade_sessions_total")  # the master's sum

        reply = admin.cmd("OPTN -rfc2920-pipelining")
        assert reply.text.startswith("2.0.0 OPTN -rfc2920-pipelining in 2 workers #994")
        reply = admin.cmd("VERB +policy")
        assert reply.text.startswith("2.0.0 VERB default=info barricade.policy=debug in 2 workers #994")
        fresh: list[Client] = []
        seen: set[str] = set()
        while len(seen) < 2:  # the change reached both workers
            assert len(fresh) < BOTH_WORKERS_LIMIT, "new sessions went to one worker"
            c = Client(proxy.port)
            fresh.append(c)
            assert "PIPELINING" not in c.ehlo().lines
            seen.add(conn(admin)[sid(c)])
        clients += fresh
        assert "worker" in admin.cmd("INFO").lines[4]
    finally:
        for c in clients:
            c.close()


def test_a_replacement_worker_starts_with_the_changes(sink, make_proxy):
    proxy = start_workers(make_proxy, sink)
    with Client(proxy.port) as admin:
        for change in ("-rfc2920-pipelining", "+rfc2920-pipelining", "-rfc2920-pipelining"):
            assert admin.cmd(f"OPTN {change}").id == 994
        assert admin.cmd("VERB -net.server").id == 994
    for pid in children(proxy.proc.pid):
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: proxy.log_text().count("control channel: worker") >= 4, timeout=30,
             what="two replacement workers on the control channel")
    argv = Path(f"/proc/{min(children(proxy.proc.pid))}/cmdline").read_bytes().split(b"\0")
    assert argv.count(b"-rfc2920-pipelining") == 1 and b"+rfc2920-pipelining" not in argv  # the last one
    for _ in range(6):
        with Client(proxy.port) as c:
            assert "PIPELINING" not in c.ehlo().lines
            assert "2.0.0 barricade.net.server=warn" in c.cmd("VERB").lines


def test_the_control_socket_is_private_and_removed_at_stop(sink, make_proxy):
    proxy = start_workers(make_proxy, sink)
    worker = min(children(proxy.proc.pid))
    env = dict(item.split("=", 1) for item in Path(f"/proc/{worker}/environ").read_text().split("\0") if "=" in item)
    path = Path(env["BARRICADE_CONTROL"])
    assert path.is_socket() and (path.parent.stat().st_mode & 0o777) == 0o700
    proxy.stop()
    assert not path.parent.exists()


def test_cache_is_shared_by_the_workers_on_redis(sink, make_proxy, redis_server):
    proxy = start_workers(make_proxy, sink, f"redis-url={redis_server.url}", "redis-prefix=admin2:")
    clients: list[Client] = []
    try:
        admin = Client(proxy.port)
        clients.append(admin)
        where = in_both_workers(proxy.port, admin, clients)
        assert admin.cmd("CACHE PUT shared-key 42").id == 994
        other = next(c for c in clients if where[sid(c)] != where[sid(admin)])
        reply = other.cmd("CACHE GET shared-key")
        assert (reply.id, reply.lines[1]) == (993, "2.0.0 42")
        assert other.cmd("CACHE DELETE shared-key").id == 994
        assert admin.cmd("CACHE GET shared-key").id == 997
    finally:
        for c in clients:
            c.close()


def test_a_worker_that_does_not_answer_is_named(sink, make_proxy):
    proxy = start_workers(make_proxy, sink)
    clients: list[Client] = []
    stopped = None
    try:
        admin = Client(proxy.port)
        clients.append(admin)
        in_both_workers(proxy.port, admin, clients)
        mine = int(re.search(r"pid (\d+)", " ".join(admin.cmd("INFO").lines)).group(1))
        stopped = next(pid for pid in children(proxy.proc.pid) if pid != mine)
        os.kill(stopped, signal.SIGSTOP)
        started = time.monotonic()
        reply = admin.cmd("CONN")
        assert reply.id == 993 and re.match(r"2\.0\.0 worker \d: no answer within 5s", reply.lines[-1])
        assert time.monotonic() - started < 15  # bounded by the control channel's timeout
        reply = admin.cmd("KILL NOSUCHSESSION")
        assert (reply.code, reply.id) == (451, 996) and "no answer from" in reply.text
        reply = admin.cmd("OPTN smtp-drop-after=4")
        assert (reply.code, reply.id) == (451, 996) and "smtp-drop-after=4 set in worker(s)" in reply.text
    finally:
        if stopped is not None:
            os.kill(stopped, signal.SIGCONT)
        for c in clients:
            c.close()
