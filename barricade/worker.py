"""A worker process: ``python -m barricade.worker --fds 3,4 --slot N -- <options>``.

The master (``barricade.workers``) starts these with the listening sockets
already bound and inherited; a worker parses the same options, builds the
same service, adopts the sockets and serves until SIGTERM.  Its log events
go to stdout as JSON lines, which the master relays to its own log as
structured events (``barricade.logs``).
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="barricade.worker")
    ap.add_argument("--fds", required=True, help="inherited listening sockets, comma-separated")
    ap.add_argument("--slot", type=int, default=0)
    ap.add_argument("rest", nargs=argparse.REMAINDER, help="-- then Barricade's options")
    # Until the service installs its handler, a SIGHUP (a reload sent to all
    # workers) must not kill a worker that is still starting.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    ns = ap.parse_args(argv)
    rest = ns.rest[1:] if ns.rest[:1] == ["--"] else ns.rest
    config_file = None
    if rest[:1] in (["--config"], ["-c"]):
        config_file, rest = rest[1], rest[2:]

    importlib.import_module("barricade.tap")  # installs the asyncio reactor, before any use

    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner

    from barricade import plugin
    from barricade.logs import worker_observer
    from barricade.options import REGISTRY, OptionError
    from barricade.service import BarricadeService, StartupError, build_context

    try:
        plugin.prepare(rest, config_file)
        config = REGISTRY.parse(rest, config_file)
        context = build_context(config, reactor)
    except (OptionError, StartupError) as exc:
        print(f"barricade worker {ns.slot}: {exc}", file=sys.stderr)
        return 2
    # Structured events, one JSON object per line: the master relays them with
    # their fields into its own log, text or JSON.
    globalLogBeginner.beginLoggingTo([worker_observer(sys.stdout)], redirectStandardIO=False)
    fds = [int(fd) for fd in ns.fds.split(",") if fd]
    svc = BarricadeService(context, inherited_fds=fds, serve_metrics=False)
    svc.privilegedStartService()
    svc.startService()
    reactor.addSystemEventTrigger("before", "shutdown", svc.stopService)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
