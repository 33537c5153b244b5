#!/usr/bin/env python3
"""Instructions per relayed message: a figure this machine's noise cannot move.

On a shared VM the CPU time of the same run moves by a third from one
minute to the next, so a change worth 5 % cannot be told from noise by
timing it (``relay.py`` needs many interleaved rounds to see 20 %).  The
number of instructions a process executes for the same work barely moves
at all.  This benchmark runs each path under valgrind's callgrind, sends
``--warm-up`` messages with smtp-source, zeroes the counters
(``callgrind_control -z``), sends ``--messages`` more, dumps the counters
(``callgrind_control -d``), ``--rounds`` times in the same process, and
reports the user-space instructions (``Ir``) per message, the median of
the rounds:

* ``pipe``: ``bench/pipe.py``, the bytes alone through one Python process
  (the floor under any relay written in Python);
* ``naive``: ``bench/naive.py``, a plain asyncio SMTP relay without policy
  (the yardstick the performance goals are written against);
* ``proxy``: Barricade from this checkout, configured as ``relay.py``
  configures it; with ``--checkout DIR`` (repeatable) from each of those
  checkouts instead, which is how two versions are compared.

smtp-source → smtp-sink runs first, outside valgrind, for the record of
what the machine did in this invocation.  Under callgrind a process runs
about fifty times slower, so timers (the metrics flush every second) fire
more often per message than in production: compare figures of this
benchmark with each other, not with ``relay.py``'s.  System calls are not
counted (they are the kernel's instructions); ``relay.py`` measures them
in CPU time.

Needs valgrind (Debian package ``valgrind``) besides what ``relay.py``
needs.  Nothing is asserted about speed.

    python bench/instructions.py [--messages 300] [--rounds 2] [--checkout DIR ...] [--json]
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from relay import (  # noqa: E402
    PEERS,
    REPO,
    BenchError,
    Deadline,
    Peer,
    Proxy,
    Sink,
    begin,
    finish,
    git_commit,
    run_source,
    running,
    side_parser,
    start_nsd,
)

#: Seconds a daemon under valgrind gets to greet (Barricade imports for a while).
START_LIMIT = 300.0


def callgrind(workdir: Path, tag: str) -> tuple[str, ...]:
    """The valgrind command a measured process runs under; its dumps go to workdir."""
    return ("valgrind", "--tool=callgrind", "--collect-atstart=yes",
            f"--callgrind-out-file={workdir / ('callgrind-' + tag)}.%p")


def instructions(proc_pid: int, workdir: Path, tag: str, port: int, args: argparse.Namespace,
                 deadline: Deadline) -> list[int]:
    """Ir of ``args.messages`` messages through ``port``, once per round, after a warm-up."""
    send(port, args.warm_up, tag, args, deadline)
    return counted(proc_pid, workdir, tag, args.rounds, deadline,
                   lambda: send(port, args.messages, tag, args, deadline))


def counted(proc_pid: int, workdir: Path, tag: str, rounds: int, deadline: Deadline,
            work: Callable[[], object], first: int = 1) -> list[int]:
    """The instructions the process under :func:`callgrind` ``tag`` spends on ``work``,
    done ``rounds`` times; ``first``: the number of its first dump (callgrind counts a
    process's dumps from 1)."""
    totals = []
    for rnd in range(first, first + rounds):
        control(["-z", str(proc_pid)], deadline)  # from here on
        work()
        control(["-d", str(proc_pid)], deadline)  # callgrind numbers its dumps from 1
        dump = workdir / f"callgrind-{tag}.{proc_pid}.{rnd}"
        if not dump.exists():
            raise BenchError(f"{tag}: callgrind wrote no dump {dump.name}")
        found = re.search(r"^(?:summary|totals):\s+(\d+)", dump.read_text(errors="replace"), re.M)
        if found is None:
            raise BenchError(f"{tag}: no totals in {dump}")
        totals.append(int(found.group(1)))
    return totals


def send(port: int, count: int, tag: str, args: argparse.Namespace, deadline: Deadline) -> None:
    _, rc, err = run_source(port, args.sessions, count, args.size, deadline)
    if rc != 0:
        raise BenchError(f"{tag}: smtp-source exited {rc}: {err}")


def control(argv: list[str], deadline: Deadline) -> None:
    done = subprocess.run(["callgrind_control", *argv], capture_output=True, text=True,
                          timeout=deadline.remaining(120.0))
    if done.returncode != 0:
        raise BenchError(f"callgrind_control {' '.join(argv)}: {done.stderr.strip() or done.stdout.strip()}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = side_parser(__doc__, messages=300, rounds=2, time_limit=3600)
    ap.set_defaults(sessions=5)  # each process runs about fifty times slower under callgrind
    ap.add_argument("--warm-up", type=int, default=100, help="messages sent first, not counted")
    ap.add_argument("--size", type=int, default=4096, help="message size in bytes (-l)")
    ap.add_argument("--checkout", action="append", type=Path, default=[], metavar="DIR",
                    help="measure Barricade from this checkout (repeat to compare; default: this one)")
    ap.add_argument("--no-pipe", dest="pipe", action="store_false", help="leave out the pipe")
    ap.add_argument("--no-naive", dest="naive", action="store_false", help="leave out the naive relay")
    args = ap.parse_args(argv)
    if min(args.messages, args.warm_up, args.rounds, args.sessions) < 1:
        ap.error("--messages, --warm-up, --rounds and --sessions must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    say, deadline, workdir = begin(args.json, "instructions", args.time_limit)
    figures: dict[str, Any] = {"config": {k: str(v) if isinstance(v, Path) else v
                                          for k, v in vars(args).items() if k != "checkout"}}
    errors: list[str] = []
    checkouts = [c.resolve() for c in args.checkout] or [REPO]
    for checkout in checkouts:
        if not (checkout / "barricade" / "__init__.py").exists():
            say(f"ERROR: {checkout} is not a Barricade checkout")
            return 2
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        say("ERROR: valgrind not found (apt-get install valgrind)")
        return 2
    figures["per_message"] = per = {}
    with running(errors, say) as daemons:
        sink = daemons.start(Sink(workdir, deadline))
        nsd = daemons.start(start_nsd(workdir))
        seconds, rc, err = run_source(sink.port, 20, 2000, args.size, deadline)
        if rc != 0:
            raise BenchError(f"direct smtp-source exited {rc}: {err}")
        figures["direct_msg_per_s"] = 2000 / seconds
        say(f"Instructions per message: {args.messages} messages of {args.size} bytes counted "
            f"after {args.warm_up}, smtp-source -s {args.sessions}, under callgrind")
        say(f"  direct smtp-source -> smtp-sink (no valgrind): {2000 / seconds:.0f} msg/s")
        paths: list[tuple[str, Any]] = []
        for peer in PEERS:
            if getattr(args, peer):
                paths.append((peer, lambda wrap, peer=peer: Peer(
                    peer, workdir, sink.port, deadline, wrap=wrap, start_limit=START_LIMIT)))
        for i, checkout in enumerate(checkouts):
            name = "proxy" if len(checkouts) == 1 else f"proxy {git_commit(checkout)} ({checkout})"
            paths.append((name, lambda wrap, i=i, checkout=checkout: Proxy(
                workdir, sink.port, deadline, tag=f"-{i}", dns=nsd.server, wrap=wrap,
                start_limit=START_LIMIT, repo=checkout)))
        for i, (name, start) in enumerate(paths):
            tag = f"path{i}"
            daemon = daemons.start(start(callgrind(workdir, tag)))
            before = sink.delivered()
            totals = instructions(daemon.proc.pid, workdir, tag, daemon.port, args, deadline)
            sent = args.warm_up + args.rounds * args.messages
            delivered = sink.wait_delivered(before + sent, deadline) - before
            if delivered != sent:
                raise BenchError(f"{name}: sink received {delivered} of {sent}")
            rounds = [total / args.messages for total in totals]
            figures.setdefault("rounds", {})[name] = rounds
            per[name] = statistics.median(rounds)
            say(f"  {name:<10} {per[name] / 1000:10.1f} k instructions per message  "
                f"(rounds: {', '.join(f'{r / 1000:.1f}' for r in rounds)})")
            daemon.stop()
        for peer in PEERS:
            if peer in per and len(per) > 1:
                base = per[peer]
                over = figures[f"over_{peer}"] = {name: value / base for name, value in per.items()
                                                  if name not in PEERS}
                for name, ratio in over.items():
                    say(f"  {name} / {peer}  {ratio:.2f}")
    return finish(figures, errors, workdir, args.json, say)


if __name__ == "__main__":
    sys.exit(main())
