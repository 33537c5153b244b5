"""Scanner benchmark: what does clamd cost on top of the relay?

In one invocation, on loopback, for clean 4 KB and 100 KB messages:

* smtp-source → smtp-sink directly (the physical reference);
* smtp-source → Barricade → smtp-sink with no scanner;
* smtp-source → Barricade (clamd INSTREAM on) → smtp-sink, with a real clamd.

The three paths run interleaved, round by round, so a noisy machine hurts
them alike; the figures worth quoting are the ratios printed at the end.
Nothing is asserted about speed.

    python bench/scanners.py [--sessions 20] [--messages 1000] [--rounds 2] [--json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from relay import (  # noqa: E402
    BenchError,
    Deadline,
    Proxy,
    Sink,
    begin,
    finish,
    run_source,
    running,
    side_parser,
    start_nsd,
)

from tests.scanners import Clamd  # noqa: E402

SIZES = (4096, 102400)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return side_parser(__doc__, messages=1000, rounds=2, time_limit=900).parse_args(argv)


def measure(paths: dict[str, int], sink: Sink, size: int, args: argparse.Namespace,
            deadline: Deadline, say) -> dict[str, Any]:
    """Interleaved runs of every path for one message size; medians and ratios."""
    for port in paths.values():  # warm-up, not timed
        _, rc, err = run_source(port, args.sessions, args.sessions, size, deadline)
        if rc != 0:
            raise BenchError(f"warm-up to port {port} exited {rc}: {err}")
    rates: dict[str, list[float]] = {name: [] for name in paths}
    for rnd in range(1, args.rounds + 1):
        for name, port in paths.items():
            before = sink.delivered()
            seconds, rc, err = run_source(port, args.sessions, args.messages, size, deadline)
            delivered = sink.wait_delivered(before + args.messages, deadline) - before
            if rc != 0 or delivered != args.messages:
                raise BenchError(f"{name} size {size}: smtp-source rc={rc}, delivered "
                                 f"{delivered}/{args.messages}: {err}")
            rate = args.messages / seconds
            rates[name].append(rate)
            say(f"  size {size:>6}  round {rnd}  {name:<7} {rate:9.1f} msg/s")
    medians = {name: statistics.median(v) for name, v in rates.items()}
    out: dict[str, Any] = {"median": medians, "runs": rates}
    d, off, on = medians["direct"], medians["relay"], medians["clamd"]
    out["ratio"] = {"relay/direct": off / d, "clamd/direct": on / d, "clamd/relay": on / off}
    say(f"  size {size:>6}  median  direct {d:8.1f}  relay {off:8.1f}  clamd {on:8.1f} msg/s   "
        f"clamd/relay {on / off:.3f}  clamd/direct {on / d:.4f}")
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    say, deadline, workdir = begin(args.json, "scan", args.time_limit)
    figures: dict[str, Any] = {"config": vars(args), "sizes": {}}
    errors: list[str] = []
    with running(errors, say) as daemons:
        sink = daemons.start(Sink(workdir, deadline))
        clamd = daemons.start(Clamd())
        nsd = daemons.start(start_nsd(workdir))
        relay = daemons.start(Proxy(workdir, sink.port, deadline, tag="-relay", dns=nsd.server))
        scanning = daemons.start(Proxy(workdir, sink.port, deadline, tag="-clamd", dns=nsd.server, extra=(
            f"clamd-socket=127.0.0.1:{clamd.port}", "clamd-max-size=0")))
        say(f"Scanner benchmark: smtp-source -s {args.sessions} -m {args.messages}, "
            f"{args.rounds} interleaved rounds per size; clamd pid {clamd.pid}")
        paths = {"direct": sink.port, "relay": relay.port, "clamd": scanning.port}
        for size in SIZES:
            figures["sizes"][str(size)] = measure(paths, sink, size, args, deadline, say)
    say()
    say("Summary (ratios of median messages/s)")
    for size, fig in figures["sizes"].items():
        r = fig["ratio"]
        say(f"  {int(size) // 1024:>3} KB  relay/direct {r['relay/direct']:.4f}   "
            f"clamd/direct {r['clamd/direct']:.4f}   clamd/relay {r['clamd/relay']:.3f}")
    return finish(figures, errors, workdir, args.json, say)


if __name__ == "__main__":
    sys.exit(main())
