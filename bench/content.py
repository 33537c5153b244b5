#!/usr/bin/env python3
"""Content benchmark: what do the content plugins cost on top of the relay?

In one invocation, on loopback, for a 4 KB text message (five links) and a
100 KB HTML message with 50 links over ten domains:

* ``direct``:  this script's load generator → smtp-sink (the reference);
* ``relay``:   generator → Barricade with no content plugin → smtp-sink;
* ``content``: generator → Barricade with the uri plugin (``uri-bl`` and
  ``domain-bl`` on a real nsd serving the test zones), the attachment policy
  (``+deny-content``) and ``rfc2822-min-headers``/``-strict-date`` → smtp-sink.

Every message is decoded (MIME, HTML, links) and its domains looked up
(answers come from the shared resolver's cache after the first message,
as on a real gateway where the same domains recur).  The paths run
interleaved, round by round; the figures to quote are the ratios of the
medians and the proxies' CPU milliseconds per message.  The content
proxy's RSS is printed after every run, to show it stays flat.  Nothing is
asserted about speed.

    python bench/content.py [--sessions 20] [--messages 1000] [--rounds 2] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from relay import (  # noqa: E402
    ENVELOPE_OFF,
    RECIPIENT,
    SENDER,
    BenchError,
    Proxy,
    Sink,
    begin,
    finish,
    running,
    side_parser,
    start_nsd,
)
from state import generate  # noqa: E402

DOMAINS = [f"www.shop{i}.example.com" for i in range(10)]
# No Message-ID: the generator sends the same bytes every time, and dupmsg would hold the copies.
HEAD = (f"From: <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nDate: Tue, 1 Dec 2026 22:33:32 +0000\r\n"
        f"Subject: barricade bench\r\nMIME-Version: 1.0\r\n")


def text_message(size: int = 4096) -> bytes:
    """About ``size`` bytes of plain text with five links."""
    body = bytearray((HEAD + "Content-Type: text/plain; charset=us-ascii\r\n\r\n").encode())
    for i in range(5):
        body += f"Our offer number {i}: see http://{DOMAINS[i]}/item/{i} for details.\r\n".encode()
    while len(body) < size:
        body += b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n"
    return bytes(body)


def html_message(size: int = 102400, links: int = 50) -> bytes:
    """About ``size`` bytes of HTML with ``links`` links over ten domains."""
    head = (HEAD + "Content-Type: text/html; charset=utf-8\r\n\r\n<html><body>\r\n").encode()
    parts = [f'<p>Item {i}: <a href="http://{DOMAINS[i % 10]}/p/{i}">offer &amp; more</a> '
             f'<img src="https://{DOMAINS[(i + 3) % 10]}/i/{i}.png" alt="x"></p>\r\n' for i in range(links)]
    filler = "<p>Lorem ipsum dolor sit amet, <b>consectetur</b> adipiscing elit, sed do eiusmod.</p>\r\n"
    body = bytearray(head)
    per_link = max(1, (size - len(head)) // links // len(filler))
    for part in parts:
        body += part.encode()
        body += (filler * per_link).encode()
    while len(body) < size:
        body += filler.encode()
    return bytes(body) + b"</body></html>\r\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return side_parser(__doc__, messages=1000, rounds=2, time_limit=1200).parse_args(argv)


def measure(name: str, message: bytes, paths: dict[str, int], proxies: dict[str, Proxy], sink: Sink,
            args: argparse.Namespace, deadline, say) -> dict[str, Any]:
    rates: dict[str, list[float]] = {p: [] for p in paths}
    cpu: dict[str, list[float]] = {p: [] for p in proxies}
    rss: list[int] = []
    for rnd in range(0, args.rounds + 1):  # round 0 warms up, untimed
        for path, port in paths.items():
            count = args.sessions if rnd == 0 else args.messages
            before = sink.delivered()
            used = proxies[path].cpu_seconds() if path in proxies else 0.0
            seconds = asyncio.run(generate(port, args.sessions, count, None, message, deadline.remaining()))
            delivered = sink.wait_delivered(before + count, deadline) - before
            if delivered != count:
                raise BenchError(f"{name} {path}: sink received {delivered} of {count}")
            if not rnd:
                continue
            rates[path].append(count / seconds)
            extra = ""
            if path in proxies:
                cpu[path].append(1000 * (proxies[path].cpu_seconds() - used) / count)
                extra = f"   proxy CPU {cpu[path][-1]:.2f} ms/msg"
            if path == "content":
                rss.append(proxies[path].rss_kib())
                extra += f", RSS {rss[-1] / 1024:.1f} MiB"
            say(f"  {name:<5} round {rnd}  {path:<7} {count / seconds:9.1f} msg/s{extra}")
    medians = {p: statistics.median(v) for p, v in rates.items()}
    c = {p: statistics.median(v) for p, v in cpu.items()}
    out = {"median": medians, "runs": rates, "cpu_ms_per_msg": c, "content_rss_kib": rss,
           "ratio": {"relay/direct": medians["relay"] / medians["direct"],
                     "content/direct": medians["content"] / medians["direct"],
                     "content/relay": medians["content"] / medians["relay"]},
           "cpu_added": c["content"] / c["relay"] - 1}
    say(f"  {name:<5} median  direct {medians['direct']:8.1f}  relay {medians['relay']:8.1f}  "
        f"content {medians['content']:8.1f} msg/s; CPU relay {c['relay']:.2f}, content {c['content']:.2f} ms/msg "
        f"(+{100 * out['cpu_added']:.0f} %)")
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    say, deadline, workdir = begin(args.json, "content", args.time_limit)
    figures: dict[str, Any] = {"config": vars(args), "messages": {}}
    errors: list[str] = []
    with running(errors, say) as daemons:
        sink = daemons.start(Sink(workdir, deadline))
        nsd = daemons.start(start_nsd(workdir))
        relay = daemons.start(Proxy(workdir, sink.port, deadline, tag="-relay", extra=ENVELOPE_OFF, dns=nsd.server))
        content = daemons.start(Proxy(workdir, sink.port, deadline, tag="-content", dns=nsd.server, extra=(
            *ENVELOPE_OFF, "uri-bl=surbl.test", "domain-bl=dbl.test", "+deny-content", "+rfc2822-min-headers",
            "+rfc2822-strict-date")))
        say(f"Content benchmark: {args.sessions} sessions x {args.messages} messages, {args.rounds} rounds "
            f"per message; nsd pid {nsd.proc.pid}")
        paths = {"direct": sink.port, "relay": relay.port, "content": content.port}
        proxies = {"relay": relay, "content": content}
        for name, message in (("4k", text_message()), ("100k", html_message())):
            say(f"  {name}: {len(message)} bytes")
            figures["messages"][name] = measure(name, message, paths, proxies, sink, args, deadline, say)
        for proxy in proxies.values():
            problems = proxy.log_problems()
            if problems:
                errors.append(f"{len(problems)} error lines in {proxy.log}: {problems[0]}")
    say()
    say("Summary (ratios of median messages/s; proxy CPU per message)")
    for name, fig in figures["messages"].items():
        r, c = fig["ratio"], fig["cpu_ms_per_msg"]
        say(f"  {name:<5} relay/direct {r['relay/direct']:.3f}  content/direct {r['content/direct']:.3f}  "
            f"content/relay {r['content/relay']:.3f}   CPU {c['relay']:.2f} -> {c['content']:.2f} ms/msg "
            f"(+{100 * fig['cpu_added']:.0f} %)")
    return finish(figures, errors, workdir, args.json, say)


if __name__ == "__main__":
    sys.exit(main())
