#!/usr/bin/env python3
"""Shared-state benchmark: what do Redis-backed limits and grey-listing cost?

In one invocation, on loopback:

* ``source``: smtp-source → smtp-sink directly (the physical reference every
  benchmark here prints);
* ``direct``: this script's load generator → smtp-sink;
* ``off``:    generator → Barricade (an access map without limits, no
  grey-listing) → smtp-sink;
* ``on``:     generator → Barricade with ``redis-url`` on a real redis-server,
  the same access map plus ``Rate-Connect:`` and ``Concurrent-Connect:``
  set high enough never to refuse, and grey-listing on with every tuple
  passed beforehand → smtp-sink (a worker remembers passed tuples for
  ``redis-grey-known-ttl``, 60 s by default, so these ask Redis about once
  a minute; ``--known-ttl 0`` makes every message ask);
* ``mem``:    the same as ``on`` on the in-memory store: on vs mem is what
  Redis itself costs, mem vs off what the checks cost.

Limits and grey-listing exempt localhost, and smtp-source cannot present
another address, so the generator opens each session with ``XCLIENT
ADDR=192.0.2.N`` (N cycles over ``--clients`` addresses): every message pays
the connect checks (rate count, lease acquire, lease release), the
grey-list lookup at DATA and dupmsg's record at the dot and its settling
(every message carries a Message-ID of its own, as real mail does), one
message per connection, like smtp-source's default.  The ``off`` path sends
the same XCLIENT and keeps dupmsg on the in-memory store (the default of a
single process), so on/off isolates the state.  The paths run interleaved, round by round,
``off`` and ``on`` next to each other and in turns first, and the figure to quote
is the median over the rounds of each round's on/off: this machine's speed
drifts by tens of percent within minutes, which a ratio of two medians taken
at different moments shows as a cost or a gain of the state.  Nothing is
asserted about speed.

With ``--instructions`` the off, on and mem proxies run under valgrind's
callgrind instead, driven the same way, and the figures are their
instructions per message (as ``instructions.py`` counts them), which this
machine's noise does not move.  ``--checkout DIR`` (repeatable) runs them from
each checkout, round by round, which is how two versions are compared;
``--paths`` picks which of off, on and mem to count.  redis-server's own CPU is measured by the
timed mode only.

    python bench/state.py [--sessions 20] [--messages 1000] [--rounds 10] [--json]
    python bench/state.py --instructions --messages 300 --rounds 2 --sessions 5
    python bench/state.py --instructions --paths off,on --checkout A --checkout B
    python bench/state.py --instructions --paths off,on --known-ttl 0
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from instructions import START_LIMIT, callgrind, counted  # noqa: E402
from relay import (  # noqa: E402
    ENVELOPE_OFF,
    HOST,
    REPO,
    BenchError,
    Deadline,
    Proxy,
    Sink,
    begin,
    finish,
    git_commit,
    make_message,
    process_cpu,
    run_source,
    running,
    side_parser,
    start_nsd,
)

from tests.state import RedisServer  # noqa: E402

SENDER = "bench@example.org"
RECIPIENT = "b@example.com"
GREY_PERIOD = 1  # seconds; every tuple is passed before the timed runs
PATHS = ("off", "on", "mem")
MESSAGE_IDS = itertools.count(1)


async def expect(reader: asyncio.StreamReader, code: int, step: str) -> None:
    while True:
        line = await reader.readline()
        if not line:
            raise BenchError(f"{step}: connection closed")
        if line[3:4] != b"-":
            break
    if int(line[:3]) != code:
        raise BenchError(f"{step}: expected {code}, got {line.decode(errors='replace').strip()}")


async def one_message(port: int, client: int | None, message: bytes, *,
                      grey_ok: bool = False) -> bool:
    """One connection, one message; True if accepted, False if grey-listed (when allowed)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        await expect(reader, 220, "banner")
        if client is not None:
            writer.write(f"XCLIENT ADDR=192.0.2.{client} NAME=c{client}.bench.example\r\n".encode())
            await expect(reader, 220, "XCLIENT")
        writer.write(b"EHLO bench.client\r\n")
        await expect(reader, 250, "EHLO")
        writer.write(f"MAIL FROM:<{SENDER}>\r\n".encode())
        await expect(reader, 250, "MAIL")
        writer.write(f"RCPT TO:<{RECIPIENT}>\r\n".encode())
        await expect(reader, 250, "RCPT")
        writer.write(b"DATA\r\n")
        try:
            await expect(reader, 354, "DATA")
        except BenchError:
            if grey_ok:
                return False
            raise
        # A Message-ID of its own, as real mail has: dupmsg remembers every message that has one.
        writer.write(b"Message-ID: <%d.%d@bench.example>\r\n" % (next(MESSAGE_IDS), time.time_ns())
                     + message + b".\r\n")
        await expect(reader, 250, "end of data")
        writer.write(b"QUIT\r\n")
        await expect(reader, 221, "QUIT")
        return True
    finally:
        writer.close()


async def generate(port: int, sessions: int, messages: int, clients: int | None,
                   message: bytes, timeout: float) -> float:
    """``messages`` messages over ``sessions`` parallel connections; wall seconds."""
    counter = iter(range(messages))

    async def worker() -> None:
        for n in counter:
            await one_message(port, None if clients is None else 1 + n % clients, message)

    start = time.monotonic()
    async with asyncio.timeout(timeout):
        await asyncio.gather(*(worker() for _ in range(sessions)))
    return time.monotonic() - start


async def pass_grey(port: int, clients: int, message: bytes) -> int:
    """Grey-list every client's tuple, wait the period, retry: all known afterwards."""
    listed = 0
    for client in range(1, clients + 1):
        if not await one_message(port, client, message, grey_ok=True):
            listed += 1
    await asyncio.sleep(GREY_PERIOD + 0.2)
    for client in range(1, clients + 1):
        await one_message(port, client, message)
    return listed


def quartiles(values: Sequence[float]) -> tuple[float, float]:
    """The first and third quartiles of the rounds' ratios: how far one round's figure
    strays, which says whether the median's distance to a goal means anything."""
    if len(values) < 2:
        return (values[0], values[0]) if values else (float("nan"), float("nan"))
    q1, _, q3 = statistics.quantiles(values, n=4)
    return q1, q3


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = side_parser(__doc__, messages=1000, rounds=10, time_limit=900)
    ap.add_argument("--size", type=int, default=4096, help="message size in bytes")
    ap.add_argument("--clients", type=int, default=50, help="distinct client addresses")
    ap.add_argument("--instructions", action="store_true",
                    help="count the proxies' instructions per message under callgrind instead of "
                         "timing them (see instructions.py; try --messages 300 --rounds 2 --sessions 5)")
    ap.add_argument("--checkout", action="append", type=Path, default=[], metavar="DIR",
                    help="with --instructions: run the proxies from this checkout (repeat to "
                         "compare, round by round; default: this one)")
    ap.add_argument("--known-ttl", type=int, default=None, metavar="SECONDS",
                    help="redis-grey-known-ttl of the on path (default: the option's default; "
                         "0: every message asks Redis about its tuple). A checkout older than "
                         "the option does not start with it; without it, a checkout that has "
                         "the option remembers known tuples and an older one does not")
    ap.add_argument("--paths", default="off,on,mem",
                    help="with --instructions: which of off, on and mem to count")
    args = ap.parse_args(argv)
    args.paths = [name for name in args.paths.split(",") if name]
    if not set(args.paths) <= set(PATHS) or not args.paths:
        ap.error(f"--paths: a comma-separated selection of {', '.join(PATHS)}")
    if args.checkout and not args.instructions:
        ap.error("--checkout needs --instructions")
    if args.known_ttl is not None and args.known_ttl < 0:
        ap.error("--known-ttl: seconds, 0 or more")
    return args


def tag_of(key: str) -> str:
    """The file-name tag of a path (``on``, or ``on-<commit>`` with several checkouts)."""
    return key.replace(" ", "-")


def start_paths(daemons: Any, workdir: Path, deadline: Deadline, message: bytes, clients: int,
                wrap: Callable[[str], tuple[str, ...]] = lambda name: (),
                paths: Sequence[str] = PATHS, repos: Sequence[Path | None] = (None,),
                known_ttl: int | None = None) -> tuple[Sink, RedisServer, dict[str, Proxy], int]:
    """smtp-sink, redis-server, nsd, and the ``paths`` proxies (off, on, mem; each under
    ``wrap(name)``) from each of ``repos`` (None: this checkout; with several, a path is
    named ``<path> <commit>``; ``known_ttl``: the on path's redis-grey-known-ttl, None for
    its default), with every tuple grey-listed and passed; how many were
    grey-listed on Redis (0 without an ``on`` path)."""
    sink = daemons.start(Sink(workdir, deadline))
    redis = daemons.start(RedisServer(workdir / "redis"))
    dns = daemons.start(start_nsd(workdir)).server
    # All three have an access map (a gateway without one is rare), so on/off
    # differs only by the state: limits in it, Redis, grey-listing.
    plain = workdir / "access-map-off"
    plain.write_text("connect:203.0.113.66 REJECT\nfrom:spammer.example REJECT\n")
    access = workdir / "access-map"
    access.write_text(plain.read_text() + "rate-connect: 1000000\nconcurrent-connect: 10000\n")
    grey = ("grey-key=ip,mail,rcpt", f"grey-temp-fail-period={GREY_PERIOD}")
    options = {
        "off": (f"access-map={plain}", "grey-key="),  # no limits in the map, grey-listing off
        "on": (f"access-map={access}", f"redis-url={redis.url}", *grey,
               *(() if known_ttl is None else (f"redis-grey-known-ttl={known_ttl}",))),
        "mem": (f"access-map={access}", *grey),
    }
    limit = START_LIMIT if wrap("off") else 20.0
    proxies: dict[str, Proxy] = {}
    listed = 0
    for repo in repos:
        for name in paths:
            key = name if len(repos) == 1 else f"{name} {git_commit(repo or REPO)}"
            tag = tag_of(key)
            proxy = proxies[key] = daemons.start(Proxy(
                workdir, sink.port, deadline, tag=f"-{tag}", dns=dns,
                extra=(*ENVELOPE_OFF, *options[name]), wrap=wrap(tag), start_limit=limit, repo=repo))
            if name != "off":  # every tuple known before the runs (on Redis, once for all)
                passed = asyncio.run(pass_grey(proxy.port, clients, message))
                if name == "on":
                    listed = max(listed, passed)
    return sink, redis, proxies, listed


def count_instructions(args: argparse.Namespace, say: Callable[[str], None], deadline: Deadline,
                       workdir: Path, figures: dict[str, Any], errors: list[str]) -> None:
    """--instructions: off, on and mem under callgrind, driven as in the timed mode."""
    message = make_message(args.size)
    repos = [c.resolve() for c in args.checkout] or [None]
    with running(errors, say) as daemons:
        _, _, proxies, listed = start_paths(daemons, workdir, deadline, message, args.clients,
                                            wrap=lambda tag: callgrind(workdir, tag),
                                            paths=args.paths, repos=repos, known_ttl=args.known_ttl)
        say(f"State benchmark, instructions: {args.messages} messages of {args.size} bytes per "
            f"round, {args.rounds} rounds, {args.sessions} sessions, {args.clients} client "
            f"addresses, under callgrind; {listed} tuples grey-listed then passed")
        for proxy in proxies.values():
            asyncio.run(generate(proxy.port, args.sessions, args.sessions, args.clients, message,
                                 deadline.remaining()))  # warm-up
        rounds: dict[str, list[float]] = {key: [] for key in proxies}
        for rnd in range(1, args.rounds + 1):  # round by round, so that every path sees the same machine
            for key, proxy in proxies.items():
                def work(port: int = proxy.port) -> None:
                    asyncio.run(generate(port, args.sessions, args.messages, args.clients, message,
                                         deadline.remaining()))
                [total] = counted(proxy.proc.pid, workdir, tag_of(key), 1, deadline, work, first=rnd)
                rounds[key].append(total / args.messages)
        per: dict[str, float] = {}
        width = max(len(key) for key in rounds)
        for key, values in rounds.items():
            per[key] = statistics.median(values)
            say(f"  {key:<{width}} {per[key] / 1000:9.1f} k instructions per message  "
                f"(rounds: {', '.join(f'{r / 1000:.1f}' for r in values)})")
        figures["instructions_per_message"] = per
        figures["ratio"] = {}
        for key in per:
            name, _, commit = key.partition(" ")
            off = per.get(f"off {commit}".strip())
            if name != "off" and off:
                figures["ratio"][f"{key}/off"] = per[key] / off
                what = "the state, Redis included" if name == "on" else "the checks alone"
                say(f"  {name}/off {per[key] / off:.3f}{' ' + commit if commit else ''} ({what})")
        # redis-server's own share is left to the timed mode: next to proxies slowed fiftyfold,
        # its once-a-tenth-second housekeeping would be charged to every message.


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    say, deadline, workdir = begin(args.json, "state", args.time_limit)
    figures: dict[str, Any] = {"config": vars(args)}
    errors: list[str] = []
    if args.instructions:
        count_instructions(args, say, deadline, workdir, figures, errors)
        return finish(figures, errors, workdir, args.json, say)
    message = make_message(args.size)
    with running(errors, say) as daemons:
        sink, redis, proxies, listed = start_paths(daemons, workdir, deadline, message, args.clients,
                                                   known_ttl=args.known_ttl)
        off, on, mem = proxies["off"], proxies["on"], proxies["mem"]
        say(f"State benchmark: {args.sessions} sessions x {args.messages} messages of "
            f"{args.size} bytes, {args.clients} client addresses, {args.rounds} rounds; "
            f"redis-server pid {redis.proc.pid}; {listed} tuples grey-listed then passed")
        paths = {"source": None, "direct": sink.port, "off": off.port, "on": on.port, "mem": mem.port}
        rates: dict[str, list[float]] = {name: [] for name in paths}
        # CPU per message: where the cost of the state goes (the proxy's own
        # work, or redis-server's, which shares the machine's cores).
        cpu: dict[str, list[float]] = {"off": [], "on": [], "redis": [], "mem": []}
        pairs: dict[str, list[float]] = {"rate": [], "cpu": []}  # each round's on/off
        for rnd in range(0, args.rounds + 1):  # round 0 warms up, untimed
            order = list(paths)
            if rnd % 2 == 0:  # on before off every other round: a drift favours neither
                order[order.index("off")], order[order.index("on")] = "on", "off"
            for name in order:
                port = paths[name]
                before = sink.delivered()
                used = {"off": off.cpu_seconds(), "on": on.cpu_seconds(), "mem": mem.cpu_seconds(),
                        "redis": process_cpu(redis.proc.pid)}
                count = args.sessions if rnd == 0 else args.messages
                if name == "source":
                    seconds, rc, err = run_source(sink.port, args.sessions, count, args.size, deadline)
                    if rc != 0:
                        raise BenchError(f"smtp-source exited {rc}: {err}")
                else:
                    clients = None if name == "direct" else args.clients
                    seconds = asyncio.run(generate(port, args.sessions, count, clients, message,
                                                   deadline.remaining()))
                delivered = sink.wait_delivered(before + count, deadline) - before
                if delivered != count:
                    raise BenchError(f"{name}: sink received {delivered} of {count}")
                if rnd:
                    rates[name].append(count / seconds)
                    extra = ""
                    if name in ("off", "on", "mem"):
                        proxy = {"off": off, "on": on, "mem": mem}[name]
                        cpu[name].append(1000 * (proxy.cpu_seconds() - used[name]) / count)
                        extra = f"   proxy CPU {cpu[name][-1]:.2f} ms/msg"
                    if name == "on":
                        cpu["redis"].append(
                            1000 * (process_cpu(redis.proc.pid) - used["redis"]) / count)
                        extra += f", redis-server {cpu['redis'][-1]:.3f} ms/msg"
                    say(f"  round {rnd}  {name:<6} {count / seconds:9.1f} msg/s{extra}")
            if rnd:
                pairs["rate"].append(rates["on"][-1] / rates["off"][-1])
                if cpu["off"][-1] > 0:  # /proc counts in ticks: a tiny run may show none
                    pairs["cpu"].append(cpu["on"][-1] / cpu["off"][-1])
            for proxy in (off, on):
                proxy.check_alive()
        medians = {name: statistics.median(v) for name, v in rates.items()}
        figures["median"] = medians
        figures["runs"] = rates
        figures["ratio"] = {"off/direct": medians["off"] / medians["direct"],
                            "on/direct": medians["on"] / medians["direct"],
                            "on/off": medians["on"] / medians["off"],
                            "mem/off": medians["mem"] / medians["off"],
                            "direct/source": medians["direct"] / medians["source"]}
        figures["per_round"] = pairs
        figures["on/off per round"] = {k: statistics.median(v) if v else float("nan")
                                       for k, v in pairs.items()}
        figures["on/off quartiles"] = {k: quartiles(v) for k, v in pairs.items()}
        figures["state_cost"] = 1 - figures["on/off per round"]["rate"]
        figures["cpu_ms_per_msg"] = {k: statistics.median(v) for k, v in cpu.items()}
    if "median" in figures:
        m, r = figures["median"], figures["ratio"]
        say()
        say("Summary (median messages/s)")
        say(f"  smtp-source -> smtp-sink      {m['source']:9.1f}")
        say(f"  generator   -> smtp-sink      {m['direct']:9.1f}   "
            f"(generator/smtp-source {r['direct/source']:.3f})")
        say(f"  state off   (no limits/grey)  {m['off']:9.1f}   off/direct {r['off/direct']:.4f}")
        say(f"  state on    (Redis, limits,   {m['on']:9.1f}   on/direct  {r['on/direct']:.4f}")
        say("               grey-list known)")
        say(f"  the same on MemoryStore       {m['mem']:9.1f}   mem/off    {r['mem/off']:.3f}"
            "   (Redis's own share: on vs mem)")
        c = figures["cpu_ms_per_msg"]
        say(f"  CPU per message: proxy off {c['off']:.2f} ms, proxy on {c['on']:.2f} ms, "
            f"proxy mem {c['mem']:.2f} ms, redis-server {c['redis']:.3f} ms")
        pr = figures["on/off per round"]
        rounds = ", ".join(f"{x:.3f}" for x in figures["per_round"]["rate"])
        say(f"  on/off of the medians {r['on/off']:.3f}; each round's on/off: {rounds}")
        q1, q3 = figures["on/off quartiles"]["rate"]
        say(f"  on/off {pr['rate']:.3f} (median of the rounds; quartiles {q1:.3f}-{q3:.3f}): "
            f"shared state costs {100 * figures['state_cost']:.1f} % of throughput")
        say(f"  proxy CPU per message on/off {pr['cpu']:.3f} (median of the rounds), "
            f"and redis-server's {c['redis']:.3f} ms on top")
    return finish(figures, errors, workdir, args.json, say)


if __name__ == "__main__":
    sys.exit(main())
