#!/usr/bin/env python3
"""Relay benchmark: what does putting Barricade in front of an MTA cost?

One invocation starts Postfix's smtp-sink (the downstream MTA) and
Barricade (``twistd -n barricade``) on free loopback ports, then measures:

1. throughput: smtp-source → smtp-sink directly, smtp-source →
   Barricade → smtp-sink, and two peers through to smtp-sink: the pipe
   (``bench/pipe.py``, bytes passed through, the floor; ``--no-pipe``
   leaves it out) and the naive relay (``bench/naive.py``, a plain asyncio
   SMTP relay without policy, the yardstick; ``--no-naive``), interleaved
   over N rounds so that drift on a shared machine hits every path alike;
   the proxy/direct ratio of the medians is the figure to compare with
   other relays, proxy/pipe and proxy/naive CPU the ones to compare with
   the floor and the yardstick (bench/README.md);
2. latency of one whole SMTP session (connect … QUIT) on each path, with
   a small smtplib client, p50/p99 and the latency the proxy (and each
   peer) adds, and the median of each step (banner, EHLO, MAIL, RCPT,
   DATA, the message and its dot, QUIT): where the added time goes;
3. memory per idle connection: VmRSS of the proxy before and after
   opening C connections that have seen the banner and EHLO, and a normal
   session's latency before and while they are held (measured first,
   while the proxy is fresh; see :func:`memory`).

It prints figures and asserts nothing about speed.  Failures are not
hidden: a non-zero exit of smtp-source, a wrong SMTP reply, a message the
sink did not receive, or a proxy that died is reported and makes the exit
status 1.  All traffic goes to 127.0.0.1 only.  Every process it starts is
stopped by pid at the end, also on error, Ctrl-C or SIGTERM.

Run from anywhere: ``python bench/relay.py [--rounds 3] [--json]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import re
import shutil
import signal
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from barricade.admin_client import AdminClientError  # noqa: E402
from barricade.admin_client import run as admin_command  # noqa: E402
from barricade.testing import banner_ready, free_port, stop  # noqa: E402
from tests.dns import Nsd  # noqa: E402

HOST = "127.0.0.1"  # the only address this benchmark ever talks to
SENDER = "a@example.org"
RECIPIENT = "b@example.com"  # routed by route:example.com to the sink
CLIENT_NAME = "bench.client"
# Proxy log lines worth a human's attention after a run (Twisted log format).
LOG_PROBLEM = re.compile(r"#(error|critical)\]|Traceback|Unhandled")


class BenchError(Exception):
    """Something that makes a figure meaningless; reported, never swallowed."""


class Deadline:
    """One overall time budget, so that a hung proxy cannot hang the benchmark.

    Every wait (subprocess, socket, readiness poll) takes its timeout from
    here instead of having its own unrelated limit.
    """

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds
        self.seconds = seconds

    def remaining(self, cap: float | None = None) -> float:
        """Seconds left (at most ``cap``); raises once the budget is spent."""
        left = self.end - time.monotonic()
        if left <= 0:
            raise BenchError(f"time limit of {self.seconds:.0f} s reached")
        return min(left, cap) if cap is not None else left


# --- small helpers -----------------------------------------------------------------



def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile: an observed value, no interpolation.

    With few samples (K=50) p99 is simply the slowest session; that is
    stated in the README rather than dressed up by interpolation.
    """
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]




def make_message(size: int) -> bytes:
    """A plain message of about ``size`` bytes, like smtp-source's ``-l`` load."""
    head = (f"From: <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nSubject: barricade bench\r\n\r\n").encode()
    line = b"x" * 70 + b"\r\n"
    body = bytearray(head)
    while len(body) < size:
        body += line
    return bytes(body)


# --- the two daemons ---------------------------------------------------------------


class Sink:
    """Postfix's smtp-sink, started with ``-c`` so every run can be counted.

    smtp-sink prints running counters (``mesg=N``) to stdout; comparing the
    count before and after a run checks that each message really reached
    the downstream, not just that someone said 250.
    """

    def __init__(self, workdir: Path, deadline: Deadline):
        if shutil.which("smtp-sink") is None:
            raise BenchError("smtp-sink not found (apt-get install postfix)")
        self.port = free_port()
        self.out = workdir / "smtp-sink.out"
        cmd = ["smtp-sink", "-c"]
        if os.geteuid() == 0:
            cmd += ["-u", "nobody"]  # mandatory as root
        cmd += [f"{HOST}:{self.port}", "1000"]
        self.cmd = cmd
        with self.out.open("wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
        wait_ready(self.proc, self.port, deadline, "smtp-sink", self.out)

    def delivered(self) -> int:
        """Messages the sink has received so far (last ``mesg=`` counter)."""
        found = re.findall(rb"mesg=(\d+)", self.out.read_bytes())
        return int(found[-1]) if found else 0

    def wait_delivered(self, expected: int, deadline: Deadline) -> int:
        """The counter once it reaches ``expected``, or whatever it is after a second."""
        end = time.monotonic() + deadline.remaining(1.0)
        count = self.delivered()
        while count < expected and time.monotonic() < end:
            time.sleep(0.02)
            count = self.delivered()
        return count

    def stop(self) -> None:
        stop(self.proc)


class Peer:
    """A yardstick run in the same rounds as Barricade: ``bench/<name>.py LISTEN DOWNSTREAM``.

    ``pipe``: the bytes passed through one Python process, nothing more; its
    CPU per message is the floor under Barricade's (see pipe.py).  ``naive``:
    a plain asyncio SMTP relay with no policy (see naive.py), the cost the
    performance goals are written against.
    """

    def __init__(self, name: str, workdir: Path, sink_port: int, deadline: Deadline, *,
                 wrap: tuple[str, ...] = (), start_limit: float = 20.0):
        """``wrap``: a command the peer runs under (valgrind), given ``start_limit`` seconds."""
        self.name = name
        self.port = free_port()
        self.out = workdir / f"{name}.out"
        cmd = [*wrap, sys.executable, str(Path(__file__).resolve().parent / f"{name}.py"),
               str(self.port), str(sink_port)]
        with self.out.open("wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
        wait_ready(self.proc, self.port, deadline, name, self.out, limit=start_limit)

    def cpu_seconds(self) -> float:
        if self.proc.poll() is not None:
            raise BenchError(f"{self.name} (pid {self.proc.pid}) exited with status {self.proc.returncode}")
        return process_cpu(self.proc.pid)

    def stop(self) -> None:
        stop(self.proc)


#: The peers, in the order they run and are reported: the floor, then the yardstick.
PEERS = ("pipe", "naive")


class Proxy:
    """``twistd -n barricade`` as an operator runs it, from this checkout."""

    def __init__(self, workdir: Path, sink_port: int, deadline: Deadline, reactor: str = "",
                 extra: tuple[str, ...] = (), tag: str = "", *, dns: str,
                 wrap: tuple[str, ...] = (), start_limit: float = 20.0, repo: Path | None = None):
        """``wrap``: a command the proxy runs under (valgrind), given ``start_limit``
        seconds to greet; ``repo``: the checkout to run (default: this one)."""
        self.port = free_port()
        self.route_map = workdir / "route-map"
        self.route_map.write_text(
            f"route:local FORWARD: {HOST}:{sink_port}\n"
            f"route:example.com FORWARD: {HOST}:{sink_port}\n"
        )
        self.log = workdir / f"barricade{tag}.log"
        self.out = workdir / f"barricade{tag}.out"
        self.args = [
            f"interfaces={HOST}:{self.port}",
            f"route-map={self.route_map}",
            "interface-name=bench.test",
            "metrics-interface=",  # no extra listener
            "smtp-drop-after=0",  # never hang up on the load generator
            "rate-throttle=0",  # smtpf's default (20/s) would pause accepting: measure the proxy
            "workers=1",  # CPU and memory figures read one process; --workers overrides
            f"dns-servers={dns}",  # a loopback nsd (start_nsd): never the machine's resolver
            *extra,
        ]
        cmd = [*wrap, sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
               "-n", "--pidfile=", "--logfile", str(self.log),
               *([f"--reactor={reactor}"] if reactor else []), "barricade", *self.args]
        env = dict(os.environ, PYTHONPATH=str(repo or REPO))
        with self.out.open("wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=workdir, env=env)
        wait_ready(self.proc, self.port, deadline, "barricade", self.out, self.log, limit=start_limit)

    def check_alive(self) -> None:
        """Raise if the proxy has exited: every later figure would be about nothing."""
        rc = self.proc.poll()
        if rc is not None:
            raise BenchError(f"barricade (pid {self.proc.pid}) exited with status {rc}; see {self.log}")

    def rss_kib(self) -> int:
        """VmRSS of the proxy process in KiB, from /proc/PID/status."""
        self.check_alive()
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise BenchError(f"no VmRSS in /proc/{self.proc.pid}/status")

    def cpu_seconds(self) -> float:
        """utime + stime of the proxy process, to tell CPU-bound from latency-bound."""
        self.check_alive()
        return process_cpu(self.proc.pid)

    def worker_cpu_seconds(self) -> float:
        """utime + stime of the worker processes (``--workers`` > 1), 0 without workers.

        Workers that live through the run are counted; one replaced mid-run
        would lose its CPU time, which the log would show as a restart.
        """
        return sum(process_cpu(pid) for pid in child_pids(self.proc.pid))

    def log_problems(self) -> list[str]:
        """Error-level, critical and traceback lines from the proxy log.

        twistd rotates its log file every megabyte (a default run writes
        about 1.5 MB), so the rotated ``barricade.log.N`` files are read too,
        oldest first.
        """
        rotated = sorted(self.log.parent.glob(self.log.name + ".*"),
                         key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0)
        found: list[str] = []
        for path in [*rotated, self.log]:
            if path.exists():
                found += [x for x in path.read_text(errors="replace").splitlines()
                          if LOG_PROBLEM.search(x)]
        return found

    def stop(self) -> None:
        stop(self.proc)


def process_cpu(pid: int) -> float:
    """utime + stime of a process in seconds, from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # fields after "(comm)"; state is [0]
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pids(pid: int) -> list[int]:
    """The direct children of a process (its worker processes), from /proc."""
    pids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            pids += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            continue
    return pids


def wait_ready(proc: subprocess.Popen[bytes], port: int, deadline: Deadline, name: str,
               *outputs: Path, limit: float = 20.0) -> None:
    """Poll for the 220 banner; a daemon that exits instead is an error with its output."""
    end = time.monotonic() + deadline.remaining(limit)
    while time.monotonic() < end:
        if proc.poll() is not None:
            text = "\n".join(p.read_text(errors="replace")[-2000:] for p in outputs if p.exists())
            raise BenchError(f"{name} exited with status {proc.returncode} at start-up:\n{text}")
        if banner_ready(port):
            return
        time.sleep(0.05)
    raise BenchError(f"{name} did not greet on {HOST}:{port} within {limit:.0f} s")


# --- 1. throughput -------------------------------------------------------------------


@dataclass
class SourceRun:
    """One timed smtp-source run; rate is None when the run failed."""

    round: int
    path: str
    seconds: float
    returncode: int
    delivered: int
    rate: float | None
    proxy_cpu_ms_per_msg: float | None = None  # the proxy path: Barricade's; a peer's path: the peer's
    master_cpu_share: float | None = None  # with workers: the master's part of the proxy CPU
    stderr: str = ""


def run_source(port: int, sessions: int, messages: int, size: int, deadline: Deadline
               ) -> tuple[float, int, str]:
    """Run smtp-source once; returns (wall seconds, exit status, stderr).

    The child is killed if the overall deadline passes, so a stalled proxy
    ends the benchmark instead of hanging it.
    """
    cmd = ["smtp-source", "-s", str(sessions), "-m", str(messages), "-l", str(size),
           "-f", SENDER, "-t", RECIPIENT, f"{HOST}:{port}"]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, err = proc.communicate(timeout=deadline.remaining())
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise BenchError(f"smtp-source to port {port} still running at the time limit") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return time.monotonic() - start, proc.returncode, err.decode(errors="replace").strip()


def collector(port: int) -> dict[str, int]:
    """The proxy's garbage-collector counters (admin STAT, summed over its workers);
    empty from a proxy that does not report them."""
    try:
        _, lines = admin_command(HOST, port, "STAT", 10)
    except AdminClientError:
        return {}
    out: dict[str, int] = {}
    for line in lines:
        name, _, value = line.removeprefix("2.0.0 ").rpartition("=")
        if name.startswith("gc_"):
            out[name] = int(float(value))
    return out


def collections_per_message(before: dict[str, int], after: dict[str, int], messages: int
                            ) -> dict[str, float] | None:
    """Collections per 1,000 messages by generation, and the objects they freed per message."""
    if not before or not after or messages <= 0:
        return None
    per = {"gen" + name.split("=")[1].rstrip("}"): 1000 * (after[name] - before.get(name, 0)) / messages
           for name in sorted(after) if name.startswith("gc_collections")}
    freed = sum(after[name] - before.get(name, 0) for name in after if name.startswith("gc_collected"))
    return {**per, "freed_per_message": freed / messages}


def throughput(sink: Sink, proxy: Proxy, args: argparse.Namespace, deadline: Deadline,
               say: Callable[[str], None], errors: list[str], peers: tuple[Peer, ...] = ()
               ) -> dict[str, Any]:
    """Interleaved direct/proxy (and peer) smtp-source runs; figures for the report."""
    say(f"Throughput: smtp-source -s {args.sessions} -m {args.messages} -l {args.size}, "
        f"{args.rounds} interleaved rounds")
    paths = [("direct", sink.port), ("proxy", proxy.port), *((peer.name, peer.port) for peer in peers)]
    by_name = {peer.name: peer for peer in peers}
    # Warm-up (not timed): the first sessions pay for imports and JIT-less
    # first-call costs in the proxy, which a steady-state figure should not.
    for _, port in paths:
        _, rc, err = run_source(port, args.sessions, args.sessions, args.size, deadline)
        if rc != 0:
            raise BenchError(f"warm-up smtp-source to port {port} exited {rc}: {err}")
    say(f"  warm-up: {args.sessions} messages on each path (not timed)")
    gc_before = collector(proxy.port)
    runs: list[SourceRun] = []
    for rnd in range(1, args.rounds + 1):
        for path, port in paths:
            before = sink.delivered()
            cpu0, wcpu0 = proxy.cpu_seconds(), proxy.worker_cpu_seconds()
            peer = by_name.get(path)
            peer0 = peer.cpu_seconds() if peer is not None else 0.0
            seconds, rc, err = run_source(port, args.sessions, args.messages, args.size, deadline)
            master = proxy.cpu_seconds() - cpu0
            cpu = master + proxy.worker_cpu_seconds() - wcpu0
            delivered = sink.wait_delivered(before + args.messages, deadline) - before
            run = SourceRun(rnd, path, seconds, rc, delivered, None, stderr=err)
            if peer is not None:
                run.proxy_cpu_ms_per_msg = 1000 * (peer.cpu_seconds() - peer0) / args.messages
            if path == "proxy":
                run.proxy_cpu_ms_per_msg = 1000 * cpu / args.messages
                if args.workers != 1 and cpu > 0:
                    run.master_cpu_share = master / cpu
            problem = ""
            if rc != 0:
                problem = f"smtp-source exited {rc}: {err or '(no stderr)'}"
            elif delivered != args.messages:
                problem = f"sink received {delivered} of {args.messages} messages"
            if problem:
                errors.append(f"throughput round {rnd} {path}: {problem}")
                say(f"  round {rnd}  {path:<6}  FAILED after {seconds:.3f} s: {problem}")
            else:
                run.rate = args.messages / seconds
                extra = ""
                if run.proxy_cpu_ms_per_msg is not None:
                    extra = f", {path} CPU {run.proxy_cpu_ms_per_msg:.2f} ms/msg"
                if run.master_cpu_share is not None:
                    extra += f", master {100 * run.master_cpu_share:.1f} % of it"
                say(f"  round {rnd}  {path:<6} {run.rate:9.1f} msg/s  "
                    f"({seconds:.3f} s, {delivered} delivered{extra})")
            runs.append(run)
            proxy.check_alive()
    result: dict[str, Any] = {"runs": [asdict(r) for r in runs]}
    proxied = sum(r.delivered for r in runs if r.path == "proxy")
    result["collector"] = collections_per_message(gc_before, collector(proxy.port), proxied)
    for path, _ in paths:
        rates = [r.rate for r in runs if r.path == path and r.rate is not None]
        result[f"{path}_median"] = statistics.median(rates) if rates else None
        result[f"{path}_ok_runs"] = len(rates)  # failed runs are left out of the median
    for path in ("proxy", *PEERS):
        cpu = [r.proxy_cpu_ms_per_msg for r in runs if r.path == path and r.rate is not None]
        result[f"{path}_cpu_ms_per_msg_median"] = statistics.median(cpu) if cpu else None
    share = [r.master_cpu_share for r in runs if r.master_cpu_share is not None and r.rate is not None]
    result["master_cpu_share_median"] = statistics.median(share) if share else None
    d, p = result["direct_median"], result["proxy_median"]
    result["ratio"] = p / d if d and p else None
    if d and p:
        say(f"  median  direct {d:9.1f} msg/s   proxy {p:9.1f} msg/s   ratio proxy/direct {p / d:.4f}")
    cost = result["proxy_cpu_ms_per_msg_median"]
    for name in PEERS:
        other = result[f"{name}_cpu_ms_per_msg_median"]
        result[f"proxy_over_{name}_cpu"] = cost / other if other and cost else None
        if result[f"proxy_over_{name}_cpu"] is not None:
            say(f"  median  {name} CPU {other:.3f} ms/msg   proxy CPU {cost:.3f} ms/msg   "
                f"proxy/{name} {result[f'proxy_over_{name}_cpu']:.2f}")
    return result


# --- 2. latency of one session -------------------------------------------------------


def expect(reply: tuple[int, bytes], code: int, step: str) -> None:
    """A reply other than the one a healthy relay gives is an error, not noise."""
    if reply[0] != code:
        raise BenchError(f"{step}: expected {code}, got {reply[0]} {reply[1].decode(errors='replace')}")


#: The steps of one session, as :func:`one_session` times them.
STEPS = ("banner", "EHLO", "MAIL", "RCPT", "DATA", "dot", "QUIT")


def one_session(port: int, message: bytes, deadline: Deadline,
                steps: list[list[float]] | None = None) -> float:
    """Seconds for connect, EHLO, MAIL, RCPT, DATA, the message, QUIT, each reply
    checked; with ``steps``, the seconds of each of :data:`STEPS` are appended to it."""
    timeout = deadline.remaining(30.0)
    start = time.monotonic()
    marks = [start]
    client = smtplib.SMTP(timeout=timeout)
    body = re.sub(rb"(?m)^\.", b"..", message)
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    try:
        expect(client.connect(HOST, port), 220, "banner")
        marks.append(time.monotonic())
        expect(client.ehlo(CLIENT_NAME), 250, "EHLO")
        marks.append(time.monotonic())
        expect(client.mail(SENDER), 250, "MAIL")
        marks.append(time.monotonic())
        expect(client.rcpt(RECIPIENT), 250, "RCPT")
        marks.append(time.monotonic())
        expect(client.docmd("DATA"), 354, "DATA")
        marks.append(time.monotonic())
        client.send(body + b".\r\n")
        expect(client.getreply(), 250, "end of DATA")
        marks.append(time.monotonic())
        expect(client.quit(), 221, "QUIT")
        marks.append(time.monotonic())
    except (OSError, smtplib.SMTPException) as exc:
        raise BenchError(f"session to port {port}: {exc!r}") from None
    finally:
        client.close()
    if steps is not None:
        steps.append([b - a for a, b in itertools.pairwise(marks)])
    return marks[-1] - start


def latency(sink: Sink, proxy: Proxy, args: argparse.Namespace, deadline: Deadline,
            say: Callable[[str], None], peers: tuple[Peer, ...] = ()) -> dict[str, Any]:
    """K sequential sessions per path, alternating paths so all see the same noise."""
    say(f"Latency of one session: {args.latency_sessions} sequential sessions per path, "
        f"{args.size}-byte message, connect..QUIT")
    message = make_message(args.size)
    ports = {"direct": sink.port, "proxy": proxy.port, **{peer.name: peer.port for peer in peers}}
    times: dict[str, list[float]] = {path: [] for path in ports}
    steps: dict[str, list[list[float]]] = {path: [] for path in ports}
    for _ in range(args.latency_sessions):
        for path, port in ports.items():
            times[path].append(one_session(port, message, deadline, steps[path]))
    result: dict[str, Any] = {"sessions": args.latency_sessions}
    for path, values in times.items():
        ms = [1000 * v for v in values]
        result[path] = {"p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99),
                        "min_ms": min(ms), "max_ms": max(ms)}
        r = result[path]
        say(f"  {path:<6}  p50 {r['p50_ms']:7.2f} ms   p99 {r['p99_ms']:7.2f} ms   "
            f"(min {r['min_ms']:.2f}, max {r['max_ms']:.2f})")
    result["added_p50_ms"] = result["proxy"]["p50_ms"] - result["direct"]["p50_ms"]
    result["added_p99_ms"] = result["proxy"]["p99_ms"] - result["direct"]["p99_ms"]
    say(f"  added   p50 {result['added_p50_ms']:+7.2f} ms   p99 {result['added_p99_ms']:+7.2f} ms")
    for peer in peers:
        added = result[f"{peer.name}_added_p50_ms"] = result[peer.name]["p50_ms"] - result["direct"]["p50_ms"]
        say(f"  added by {peer.name:<6} p50 {added:+7.2f} ms")
    # Where the time goes: the median of each step (goal 2 is about what the client waits for).
    say("  median per step, ms " + "".join(f"{step:>8}" for step in STEPS))
    result["steps_p50_ms"] = {}
    for path, rows in steps.items():
        medians = [1000 * statistics.median(row[i] for row in rows) for i in range(len(STEPS))]
        result["steps_p50_ms"][path] = dict(zip(STEPS, medians, strict=True))
        say(f"    {path:<16} " + "".join(f"{m:8.3f}" for m in medians))
    return result


# --- 3. memory per idle connection ---------------------------------------------------


def read_reply(stream: Any, step: str) -> int:
    """Read one (possibly multi-line) SMTP reply; returns its code."""
    while True:
        line = stream.readline(1024)
        if not line:
            raise BenchError(f"{step}: connection closed by the proxy")
        if len(line) < 4 or not line[:3].isdigit():
            raise BenchError(f"{step}: malformed reply line {line!r}")
        if line[3:4] != b"-":
            return int(line[:3])


IDLE_ROOM = 10  # held connections given back at the first #941


class Idle:
    """Connections held open past the banner and EHLO (see :func:`idle_connections`)."""

    def __init__(self) -> None:
        self.socks: list[socket.socket] = []
        self.refused = 0  # answered #941: the proxy had no room for another session

    @property
    def held(self) -> int:
        return len(self.socks)


@contextmanager
def idle_connections(port: int, count: int, deadline: Deadline) -> Iterator[Idle]:
    """Hold up to ``count`` connections that have seen the banner and EHLO; closes them all.

    A banner other than 220 is an error, except the proxy's #941 (no room
    for another session: every admitted session is counted with a
    downstream descriptor).  At the first #941 no more are opened, and
    :data:`IDLE_ROOM` held connections are closed so that a normal client
    still finds room (a session that got its 221 may not have been counted
    out yet when the next one connects).
    """
    idle = Idle()
    try:
        for i in range(count):
            sock = socket.create_connection((HOST, port), timeout=deadline.remaining(10.0))
            stream = sock.makefile("rb")  # closed below; the socket stays open
            try:
                code = read_reply(stream, f"connection {i + 1} banner")
                if code == 421 and idle.socks:
                    idle.refused += 1
                    sock.close()
                    for _ in range(min(IDLE_ROOM, len(idle.socks))):
                        idle.socks.pop().close()
                    break
                idle.socks.append(sock)
                if code != 220:
                    raise BenchError(f"connection {i + 1}: banner {code}, expected 220")
                sock.sendall(f"EHLO {CLIENT_NAME}\r\n".encode())
                code = read_reply(stream, f"connection {i + 1} EHLO")
                if code != 250:
                    raise BenchError(f"connection {i + 1}: EHLO got {code}, expected 250")
            finally:
                stream.close()
        yield idle
    finally:
        for sock in idle.socks:
            sock.close()


def memory(proxy: Proxy, args: argparse.Namespace, deadline: Deadline,
           say: Callable[[str], None]) -> dict[str, Any]:
    """VmRSS before, with C idle connections open, and a second after closing them;
    a normal client's session latency before and while they are held.

    This runs first, on the freshly started proxy: memory freed by earlier
    sessions stays mapped in the process and is reused, so after the load
    runs the same 200 connections show no RSS growth at all (measured: 0.0
    KiB).  A short warm-up loads the code paths of one idle connection (and
    of the normal sessions), so that their one-off cost is not charged to
    the C connections.
    """
    count = args.connections
    sessions = args.latency_sessions
    say(f"Memory per idle connection: {count} connections (banner + EHLO), proxy VmRSS, fresh proxy; "
        f"{sessions} normal sessions before and while they are held")
    message = make_message(args.size)
    warm = min(10, count)
    with idle_connections(proxy.port, warm, deadline):
        pass
    idle_ms = [1000 * one_session(proxy.port, message, deadline) for _ in range(sessions)]
    time.sleep(0.5)  # let the warm-up sessions finish tearing down
    before = proxy.rss_kib()
    started = time.monotonic()
    with idle_connections(proxy.port, count, deadline) as idle:
        ramp = time.monotonic() - started
        time.sleep(0.5)  # the proxy has answered EHLO on all; settle before sampling
        during = proxy.rss_kib()
        held_ms = [1000 * one_session(proxy.port, message, deadline) for _ in range(sessions)]
        held = idle.held
    time.sleep(1.0)
    after = proxy.rss_kib()
    per = (during - before) / held if held else 0.0
    result = {"connections": count, "held": held, "refused_941": idle.refused,
              "open_s": round(ramp, 1), "rss_before_kib": before, "rss_open_kib": during,
              "rss_after_close_kib": after, "kib_per_connection": per,
              "idle": {"p50_ms": percentile(idle_ms, 50), "p99_ms": percentile(idle_ms, 99)},
              "held_latency": {"p50_ms": percentile(held_ms, 50), "p99_ms": percentile(held_ms, 99)}}
    say(f"  held {held} of {count} (opened in {ramp:.1f} s; refused #941: {idle.refused})")
    say(f"  VmRSS before {before} KiB, with {held} open {during} KiB, "
        f"after closing {after} KiB")
    say(f"  {per:.1f} KiB per connection")
    say(f"  normal session  p50 {result['idle']['p50_ms']:.2f} ms / p99 {result['idle']['p99_ms']:.2f} ms "
        f"idle;  p50 {result['held_latency']['p50_ms']:.2f} ms / "
        f"p99 {result['held_latency']['p99_ms']:.2f} ms held")
    return result


# --- 4. slow-loris connections -----------------------------------------------------


LORIS_IN_FLIGHT = 500  # slow-loris connections opened but not yet greeted


class Loris:
    """N connections that each send one byte every ``interval`` seconds, in a thread.

    Each sends ``EHLO`` and then a name that never ends, so the proxy holds
    a partial command per connection until its deadline closes it.
    """

    def __init__(self, port: int, count: int, interval: float):
        import selectors
        import threading

        self.port, self.count, self.interval = port, count, interval
        self.sel = selectors.DefaultSelector()
        self.socks: dict[socket.socket, dict[str, Any]] = {}
        self.stopping = threading.Event()
        self.opened = self.banners = self.refused = self.closed = self.timeouts = 0
        self.connect_errors = 0
        self.lost_early = 0  # closed before any reply
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import selectors

        next_tick = time.monotonic()
        pending = self.count
        while not self.stopping.is_set():
            # Open in batches, at most LORIS_IN_FLIGHT waiting for their banner:
            # a burst beyond the listen queue would measure SYN retransmission.
            waiting = self.opened - self.banners - self.refused - self.lost_early
            for _ in range(max(0, min(pending, 200, LORIS_IN_FLIGHT - waiting))):
                sock = socket.socket()
                sock.setblocking(False)
                try:
                    sock.connect_ex((HOST, self.port))
                except OSError:
                    self.connect_errors += 1
                    sock.close()
                    continue
                self.socks[sock] = {"got": b"", "sent": 0}
                self.sel.register(sock, selectors.EVENT_READ)
                self.opened += 1
                pending -= 1
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + self.interval
                for sock, st in list(self.socks.items()):
                    if b"\r\n" in st["got"]:
                        data = b"EHLO " if st["sent"] == 0 else b"x"
                        try:
                            sock.send(data)
                            st["sent"] += 1
                        except OSError:
                            pass
            for key, _ in self.sel.select(timeout=0.05 if pending else 0.5):
                self._read(key.fileobj)

    def _read(self, sock: socket.socket) -> None:
        st = self.socks[sock]
        try:
            chunk = sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if chunk and not st["got"]:
            if chunk.startswith(b"220"):
                self.banners += 1
            elif b"#941" in chunk:
                self.refused += 1
        st["got"] += chunk
        if not chunk:
            self.closed += 1
            self.lost_early += not st["got"]
            self.timeouts += b"#905" in st["got"]
            self.sel.unregister(sock)
            sock.close()
            del self.socks[sock]

    @property
    def held(self) -> int:
        return sum(1 for st in self.socks.values() if st["got"].startswith(b"220"))

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(10)
        for sock in list(self.socks):
            sock.close()


def raise_file_limit(needed: int) -> int:
    """This process's file limit, raised towards ``needed`` (its children inherit it).

    Only this benchmark's own limit changes; as root the hard limit may be
    raised too (up to the kernel's nr_open), otherwise the soft one goes to
    the hard one.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, needed)
    for limits in ((want, max(hard, want)), (min(want, hard), hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, limits)
            break
        except (OSError, ValueError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def slow_loris(proxy: Proxy, args: argparse.Namespace, deadline: Deadline,
               say: Callable[[str], None]) -> dict[str, Any]:
    """A normal client's session latency and the proxy's RSS while N slow clients are held."""
    count = args.slow_loris
    say(f"Slow loris: {count} connections sending one byte every {args.loris_interval:g} s "
        f"against one worker; {args.latency_sessions} normal sessions before and while held")
    message = make_message(args.size)
    before_ms = [1000 * one_session(proxy.port, message, deadline) for _ in range(args.latency_sessions)]
    rss_before = proxy.rss_kib()
    loris = Loris(proxy.port, count, args.loris_interval)
    try:
        started = time.monotonic()
        while loris.opened + loris.connect_errors < count or loris.banners + loris.refused < loris.opened:
            if time.monotonic() - started > min(args.loris_ramp, deadline.remaining()):
                break
            time.sleep(0.2)
        ramp = time.monotonic() - started
        held = loris.held
        rss_during = proxy.rss_kib()
        during_ms = [1000 * one_session(proxy.port, message, deadline)
                     for _ in range(args.latency_sessions)]
        held_after = loris.held
    finally:
        loris.stop()
    result = {
        "connections": count, "interval_s": args.loris_interval, "ramp_s": round(ramp, 1),
        "opened": loris.opened, "connect_errors": loris.connect_errors, "banners": loris.banners,
        "refused_941": loris.refused, "held_at_sample": held, "held_after_latency": held_after,
        "closed_by_proxy": loris.closed, "closed_905": loris.timeouts,
        "rss_before_kib": rss_before, "rss_held_kib": rss_during,
        "kib_per_held": round((rss_during - rss_before) / held, 1) if held else None,
        "before": {"p50_ms": percentile(before_ms, 50), "p99_ms": percentile(before_ms, 99)},
        "held": {"p50_ms": percentile(during_ms, 50), "p99_ms": percentile(during_ms, 99)},
    }
    say(f"  opened {loris.opened} in {ramp:.1f} s, banners {loris.banners}, refused #941 "
        f"{loris.refused}, connect errors {loris.connect_errors}; held {held} while sampling")
    say(f"  VmRSS {rss_before} KiB before, {rss_during} KiB with them held "
        f"({result['kib_per_held']} KiB each)")
    say(f"  normal session  p50 {result['before']['p50_ms']:.2f} ms / p99 {result['before']['p99_ms']:.2f} ms "
        f"before;  p50 {result['held']['p50_ms']:.2f} ms / p99 {result['held']['p99_ms']:.2f} ms held")
    return result


# --- driver --------------------------------------------------------------------------


def begin(as_json: bool, name: str,
          time_limit: float) -> tuple[Callable[[str], None], Deadline, Path]:
    """The start of the side benchmarks (scanners.py, state.py): where the
    text goes (stderr with --json), the overall deadline, the work directory."""
    out = sys.stderr if as_json else sys.stdout

    def say(line: str = "") -> None:
        print(line, file=out, flush=True)

    workdir = Path(tempfile.mkdtemp(prefix=f"barricade-bench-{name}-"))
    workdir.chmod(0o755)  # smtp-sink runs as nobody with its cwd here
    return say, Deadline(time_limit), workdir


#: Options of the side benchmarks' proxies: RFC 2606 names throughout (example.com is the
#: bench route), which the reserved-domain tests would refuse, and no DNS to ask for the
#: envelope's MX or SPF, in every proxy alike.
ENVELOPE_OFF = ("-rfc2606-special-domains", "-reject-unknown-tld", "-mail-require-mx", "spf-mail-policy=")


def start_nsd(workdir: Path) -> Nsd:
    """The DNS server every proxy of a benchmark asks (``dns-servers``): nsd on loopback
    with the test zones, so that no lookup ever leaves the machine."""
    (workdir / "nsd").mkdir(exist_ok=True)
    return Nsd(workdir / "nsd")


def side_parser(doc: str, *, messages: int, rounds: int, time_limit: float) -> argparse.ArgumentParser:
    """The options every side benchmark (scanners.py, state.py, content.py) takes; each
    adds its own and keeps its own defaults."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--sessions", type=int, default=20, help="parallel sessions")
    ap.add_argument("--messages", type=int, default=messages, help="messages per run")
    ap.add_argument("--rounds", type=int, default=rounds, help="interleaved rounds")
    ap.add_argument("--time-limit", type=float, default=time_limit, help="seconds before everything stops")
    ap.add_argument("--json", action="store_true", help="figures as one JSON object on stdout")
    return ap


class Daemons(list):
    """What a side benchmark started, in order; ``start(daemon)`` records one and returns it."""

    def start(self, daemon: Any) -> Any:
        self.append(daemon)
        return daemon


@contextmanager
def running(errors: list[str], say: Callable[[str], None]) -> Iterator[Daemons]:
    """The body of a side benchmark: a failure is recorded in ``errors`` and said, not
    raised, and every daemon it started is stopped (last first) however it ends."""
    daemons = Daemons()
    try:
        yield daemons
    except (BenchError, TimeoutError, OSError, RuntimeError) as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
        say(f"ERROR: {exc}")
    except KeyboardInterrupt:
        errors.append("interrupted")
    finally:
        for daemon in reversed(daemons):
            daemon.stop()


def finish(figures: dict[str, Any], errors: list[str], workdir: Path, as_json: bool,
           say: Callable[[str], None]) -> int:
    """The tail of the side benchmarks (scanners.py, state.py): keep the logs
    when something failed, else remove the work directory; the JSON figures;
    the exit status."""
    figures["errors"] = errors
    if errors:
        say(f"  errors: {errors}; logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    if as_json:
        print(json.dumps(figures, indent=2))
    return 1 if errors else 0


@dataclass
class Report:
    """Figures plus the human-readable lines; --json moves the lines to stderr."""

    stream: TextIO
    figures: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def say(self, line: str = "") -> None:
        print(line, file=self.stream, flush=True)


def git_commit(repo: Path = REPO) -> str:
    """The commit measured, so that figures can be tied to code."""
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--", "barricade",
                                "plugins", "twisted"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    def positive(text: str) -> int:
        value = int(text)
        if value < 1:
            raise argparse.ArgumentTypeError("must be at least 1")
        return value

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--sessions", type=positive, default=20, help="smtp-source parallel sessions (-s)")
    ap.add_argument("--messages", type=positive, default=2000, help="messages per smtp-source run (-m)")
    ap.add_argument("--size", type=positive, default=4096, help="message size in bytes (-l)")
    ap.add_argument("--rounds", type=positive, default=3, help="interleaved direct/proxy rounds")
    ap.add_argument("--latency-sessions", type=positive, default=50, metavar="K",
                    help="sequential sessions per path for the latency figures")
    ap.add_argument("--connections", type=positive, default=200, metavar="C",
                    help="idle connections for the memory figure")
    ap.add_argument("--slow-loris", type=int, default=0, metavar="N",
                    help="hold N slow-loris connections against the proxy and measure a normal "
                    "session and the RSS meanwhile (0: skip; the file limit is raised to fit)")
    ap.add_argument("--loris-interval", type=float, default=5.0,
                    help="seconds between the bytes each slow-loris connection sends")
    ap.add_argument("--loris-ramp", type=float, default=240.0,
                    help="most seconds to wait for every slow-loris connection to be greeted "
                    "(keep it below the proxy's smtp-command-timeout, 300 s)")
    ap.add_argument("--time-limit", type=positive, default=600,
                    help="seconds after which everything is stopped and the run fails")
    ap.add_argument("--workers", type=int, default=1,
                    help="proxy worker processes (>1: CPU covers the master and its workers, with the "
                    "master's share; memory covers the master only)")
    ap.add_argument("--no-pipe", dest="pipe", action="store_false",
                    help="leave out the pipe path (bench/pipe.py, the floor)")
    ap.add_argument("--no-naive", dest="naive", action="store_false",
                    help="leave out the naive relay (bench/naive.py, the yardstick)")
    ap.add_argument("--reactor", default="",
                    help="twistd reactor for the proxy (default: Barricade's asyncio reactor)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the work directory (logs) even when nothing failed")
    ap.add_argument("--json", action="store_true",
                    help="print the figures as one JSON object on stdout (text goes to stderr)")
    return ap.parse_args(argv)


def summary(rep: Report, proxy: Proxy | None) -> None:
    """The block a reader looks at first: one line per figure, then any problems."""
    f = rep.figures
    say = rep.say
    say()
    say("Summary")
    t = f.get("throughput") or {}
    rounds = rep.figures["config"]["rounds"]
    if t.get("direct_median") is not None:
        say(f"  throughput direct (median)  {t['direct_median']:9.1f} msg/s   "
            f"({t['direct_ok_runs']} of {rounds} runs ok)")
    if t.get("proxy_median") is not None:
        say(f"  throughput proxy  (median)  {t['proxy_median']:9.1f} msg/s   "
            f"({t['proxy_ok_runs']} of {rounds} runs ok; proxy CPU "
            f"{t['proxy_cpu_ms_per_msg_median']:.2f} ms/msg)")
    for name, what in zip(PEERS, ("the floor", "the yardstick"), strict=True):
        if t.get(f"{name}_median") is not None:
            say(f"  throughput {name:<6} (median) {t[f'{name}_median']:9.1f} msg/s   "
                f"({t[f'{name}_ok_runs']} of {rounds} runs ok; {name} CPU "
                f"{t[f'{name}_cpu_ms_per_msg_median']:.2f} ms/msg, {what}: bench/{name}.py)")
        if t.get(f"proxy_over_{name}_cpu") is not None:
            say(f"  CPU proxy/{name:<6}           {t[f'proxy_over_{name}_cpu']:9.2f}")
    if t.get("master_cpu_share_median") is not None:
        say(f"  master's share of proxy CPU {100 * t['master_cpu_share_median']:8.1f} %")
    if t.get("ratio") is not None:
        say(f"  ratio proxy/direct          {t['ratio']:9.4f}")
    gc_rates = t.get("collector")
    if gc_rates:
        gens = " / ".join(f"{v:.1f}" for k, v in gc_rates.items() if k.startswith("gen"))
        say(f"  proxy's garbage collections {gens} per 1,000 messages (generations 0 / 1 / 2); "
            f"objects they freed {gc_rates['freed_per_message']:.1f} per message")
    lat = f.get("latency")
    if lat:
        say(f"  session latency direct      p50 {lat['direct']['p50_ms']:6.2f} ms  "
            f"p99 {lat['direct']['p99_ms']:6.2f} ms")
        say(f"  session latency proxy       p50 {lat['proxy']['p50_ms']:6.2f} ms  "
            f"p99 {lat['proxy']['p99_ms']:6.2f} ms")
        say(f"  added by proxy              p50 {lat['added_p50_ms']:+6.2f} ms  "
            f"p99 {lat['added_p99_ms']:+6.2f} ms")
        for name in PEERS:
            if f"{name}_added_p50_ms" in lat:
                say(f"  added by {name:<6}             p50 {lat[f'{name}_added_p50_ms']:+6.2f} ms")
    mem = f.get("memory")
    if mem:
        say(f"  memory per idle connection  {mem['kib_per_connection']:9.1f} KiB "
            f"({mem['held']} of {mem['connections']} held, VmRSS {mem['rss_before_kib']} -> "
            f"{mem['rss_open_kib']} KiB)")
        say(f"  session latency, idle held  p50 {mem['held_latency']['p50_ms']:6.2f} ms  "
            f"p99 {mem['held_latency']['p99_ms']:6.2f} ms  (before: p50 {mem['idle']['p50_ms']:.2f}, "
            f"p99 {mem['idle']['p99_ms']:.2f})")
    loris = f.get("slow_loris")
    if loris:
        say(f"  slow loris held             {loris['held_at_sample']:9d} of {loris['connections']} "
            f"(refused #941 {loris['refused_941']}), VmRSS {loris['rss_before_kib']} -> "
            f"{loris['rss_held_kib']} KiB")
        say(f"  session latency, held       p50 {loris['held']['p50_ms']:6.2f} ms  "
            f"p99 {loris['held']['p99_ms']:6.2f} ms  (before: p50 {loris['before']['p50_ms']:.2f}, "
            f"p99 {loris['before']['p99_ms']:.2f})")
    problems = f.get("proxy_log_problems") or []
    say(f"  proxy log error lines       {len(problems)}" + (f"  (log: {proxy.log})" if proxy else ""))
    for line in problems[:10]:
        say(f"    {line}")
    if rep.errors:
        say(f"  ERRORS ({len(rep.errors)}):")
        for err in rep.errors:
            say(f"    {err}")
    else:
        say("  errors                      none")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rep = Report(sys.stderr if args.json else sys.stdout)
    deadline = Deadline(args.time_limit)
    workdir = Path(tempfile.mkdtemp(prefix="barricade-bench-"))
    os.chmod(workdir, 0o755)  # smtp-sink drops to "nobody" and runs with cwd here
    sink: Sink | None = None
    proxy: Proxy | None = None
    nsd: Nsd | None = None
    peers: list[Peer] = []

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # unwind through the finally blocks that stop the daemons

    signal.signal(signal.SIGTERM, on_sigterm)
    rep.figures["config"] = {k: v for k, v in vars(args).items() if k != "json"}
    rep.figures["commit"] = git_commit()
    rep.say(f"Barricade relay benchmark  (commit {rep.figures['commit']}, "
            f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs)")
    try:
        need = max(2 * args.slow_loris, args.connections)
        if need > 500:
            limit = raise_file_limit(need + 4096)
            rep.say(f"  file limit {limit} (this benchmark and its daemons)")
        sink = Sink(workdir, deadline)
        nsd = start_nsd(workdir)
        extra = (f"workers={args.workers}",) if args.workers != 1 else ()
        proxy = Proxy(workdir, sink.port, deadline, args.reactor, extra=extra, dns=nsd.server)
        rep.say(f"  sink   smtp-sink pid {sink.proc.pid} on {HOST}:{sink.port}")
        rep.say(f"  proxy  barricade pid {proxy.proc.pid} on {HOST}:{proxy.port} -> sink")
        for name in PEERS:
            if getattr(args, name):
                peer = Peer(name, workdir, sink.port, deadline)
                peers.append(peer)
                rep.say(f"  {name:<6} bench/{name}.py pid {peer.proc.pid} on {HOST}:{peer.port} -> sink")
        rep.say(f"  work dir {workdir}")
        sections: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("memory", lambda: memory(proxy, args, deadline, rep.say)),  # first: see memory()
            ("throughput", lambda: throughput(sink, proxy, args, deadline, rep.say, rep.errors, tuple(peers))),
            ("latency", lambda: latency(sink, proxy, args, deadline, rep.say, tuple(peers))),
        ]
        if args.slow_loris:
            sections.append(("slow_loris", lambda: slow_loris(proxy, args, deadline, rep.say)))
        for name, measure in sections:
            # One failed section is reported and the next still runs, as long
            # as the proxy is alive and time is left; otherwise stop here.
            rep.say()
            try:
                rep.figures[name] = measure()
            except BenchError as exc:
                rep.errors.append(f"{name}: {exc}")
                rep.say(f"  ERROR in {name}: {exc}")
            proxy.check_alive()
            deadline.remaining()
    except BenchError as exc:
        rep.errors.append(str(exc))
        rep.say(f"ERROR: {exc}")
    except KeyboardInterrupt:
        rep.errors.append("interrupted")
        rep.say("interrupted; stopping the daemons")
    finally:
        if proxy is not None:
            proxy.stop()
        for peer in peers:
            peer.stop()
        if sink is not None:
            sink.stop()
        if nsd is not None:
            nsd.stop()
    if proxy is not None:
        rep.figures["proxy_log_problems"] = proxy.log_problems()
    rep.figures["errors"] = rep.errors
    # Keep the logs whenever there is something to look into.
    keep = bool(args.keep or rep.errors or rep.figures.get("proxy_log_problems"))
    rep.figures["workdir"] = str(workdir) if keep else None
    summary(rep, proxy if keep else None)
    if keep:
        rep.say(f"  work directory kept: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(rep.figures, indent=2))
    return 1 if rep.errors else 0


if __name__ == "__main__":
    sys.exit(main())
