"""``barricade-check``: why would Barricade refuse this mail?

The question every postmaster gets when mail bounces.  Given a client IP
(and optionally its PTR name), a HELO, a sender and recipients, it runs the
configured checks of the connect, HELO, MAIL and RCPT phases in the
daemon's own order, with the daemon's own code (the pipeline, the maps,
the reply catalogue, and the decision rules of :mod:`barricade.decide`:
smtp-delay-checks, routing), and prints for each phase every
check's verdict, what it logged about its decision (the map key that
matched, the limit that was hit), and the reply the client would get::

    barricade-check --config /etc/barricade/barricade.cf \\
        --client 192.0.2.1 --ptr mail.example.net --helo mail.example.net \\
        --mail fred@example.net --rcpt john@example.com [name=value ...]

Without ``--ptr`` the client's PTR is looked up (and forward-confirmed)
with the configured ``dns-servers``, as the daemon does; DNS lists and
other DNS checks ask DNS too.  Nothing else is sent anywhere: recipients
are routed but not forwarded (the
downstream's own answer is not known), call-aheads are not made, and
state-based limits and grey-listing run against an empty in-memory store
(a first contact), never against the live Redis.  The exit status is 0
when every recipient would be accepted, 1 when the mail would be refused
or temp-failed, 2 on a usage or configuration error.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field, replace
from typing import TextIO

from barricade.decide.outcome import Downstream, Outcome
from barricade.policy.pipeline import Check
from barricade.policy.verdict import Action, Verdict


@dataclass
class Line:
    check: str
    verdict: Verdict | None  # None: skipped (white-listed)
    said: list[str] = field(default_factory=list)


class Tracer:
    """Collects each check's verdict and the log lines it wrote meanwhile."""

    def __init__(self) -> None:
        self.lines: list[Line] = []
        self._said: list[str] = []

    def log(self, event: dict) -> None:
        from twisted.logger import formatEvent

        namespace = event.get("log_namespace", "")
        # The decision log's lines repeat what the verdicts say already.
        if namespace.startswith("barricade") and namespace != "barricade.decision":
            self._said.append(formatEvent(event))

    def __call__(self, check: Check, verdict: Verdict | None) -> None:
        self.lines.append(Line(check.name, verdict, self._said))
        self._said = []

    def take(self) -> list[Line]:
        lines, self.lines, self._said = self.lines, [], []
        return lines


def wire(reply) -> str:
    """The reply as the client would read it (first line)."""
    return reply.encode().decode("utf-8", "replace").split("\r\n", 1)[0]


def describe(verdict: Verdict | None) -> str:
    if verdict is None:
        return "skipped (white-listed)"
    if verdict.action is Action.CONTINUE:
        return "pass"
    if verdict.action is Action.ACCEPT:
        return "OK: white-listed, later checks skipped"
    if verdict.action is Action.CONTENT:
        return "CONTENT: envelope checks skipped, content still checked"
    return verdict.action.value.upper()


#: The switches that take a value: the word after them is that value, never an override.
_VALUED = {"--config", "-c", "--client", "--ptr", "--helo", "--mail", "--rcpt", "--auth"}


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """(switches for argparse, smtpf-style overrides): ``-name`` with a name longer
    than one letter is an override (``-mail-require-mx``), never a switch, wherever
    it stands; argparse would take it for an unknown or a bundled short option."""
    switches: list[str] = []
    overrides: list[str] = []
    expect_value = False
    for arg in argv:
        if expect_value:
            switches.append(arg)
            expect_value = False
        elif arg == "--":
            switches.append(arg)
        elif len(arg) > 2 and arg[0] in "+-" and arg[1] != "-" or (
                "=" in arg and not arg.startswith("-")):
            overrides.append(arg)
        else:
            switches.append(arg)
            expect_value = arg in _VALUED
    return switches, overrides


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    switches, overrides = split_overrides(sys.argv[1:] if argv is None else list(argv))
    ap = argparse.ArgumentParser(
        prog="barricade-check", description=__doc__.split("\n\n")[1].replace("\n", " "),
        allow_abbrev=False,
        epilog="Trailing name=value, +flag and -flag override the config file, as for twistd.")
    ap.add_argument("--config", "-c", help="config file in smtpf syntax")
    ap.add_argument("--client", required=True, metavar="IP", help="the client's IP address")
    ap.add_argument("--ptr", default="", metavar="NAME",
                    help="the client's PTR name (default: looked up in DNS)")
    ap.add_argument("--helo", default="", metavar="NAME", help="the HELO/EHLO argument")
    ap.add_argument("--auth", metavar="USER", help="the client authenticated (SMTP AUTH) as USER; "
                    "no password is asked: the downstream's 235 is assumed")
    ap.add_argument("--mail", metavar="ADDRESS", help="the sender ('' for the null sender)")
    ap.add_argument("--rcpt", action="append", default=[], metavar="ADDRESS",
                    help="a recipient (repeat for more)")
    ap.add_argument("options", nargs="*", help="option overrides: name=value, +name, -name")
    args = ap.parse_args(switches)
    args.options = [*args.options, *overrides]
    return args


async def explain(args: argparse.Namespace, out: TextIO) -> int:
    """Run the phases and print what happens; the exit status (see the module docstring)."""
    from twisted.internet import reactor
    from twisted.logger import globalLogPublisher

    from barricade import plugin
    from barricade.net.conductor import Proxy, classify
    from barricade.options import REGISTRY
    from barricade.policy.client_name import resolve_client
    from barricade.service import build_context

    settings = [*args.options, "redis-url=", "workers=1"]  # never the live shared state
    plugin.prepare(settings, args.config)
    config = REGISTRY.parse(settings, args.config)
    server = build_context(config, reactor)
    server.call_ahead = None  # nothing is sent anywhere
    client = classify(args.client, 0, args.ptr or "unknown", server.routes)
    if args.ptr:
        client = replace(client, ptr=args.ptr)  # the PTR tests read it
    elif server.resolver is not None and not client.localhost:
        client = await resolve_client(server.resolver, client, server.routes, "check", reactor)
    session = Proxy(server, client, "check")
    ctx, rules = session.ctx, session.rules
    tracer = Tracer()
    globalLogPublisher.addObserver(tracer.log)
    say = out.write
    if getattr(client, "forged", False):
        say(f"PTR {client.ptr} does not resolve back to {client.ip}: forged, name unknown\n")
    say(f"client {client.ip} [{client.name}]: "
        f"{'localhost, ' if client.localhost else ''}{'may relay' if client.relay else 'may not relay'}\n")
    held = False
    refused = False

    async def phase(name: str, *extra: str) -> Verdict:
        nonlocal held
        verdict = await server.pipeline.run(name, ctx, *extra, trace=tracer)
        label = f"{name} {extra[0]}" if extra else name
        say(f"\n{label}:\n")
        for line in tracer.take():
            say(f"  {line.check:<24} {describe(line.verdict)}\n")
            for text in line.said:
                say(f"      {text}\n")
        if not verdict.decisive or name == "rcpt":
            return verdict
        refusal = rules.refusal(ctx, name, verdict)
        if refusal is None:
            tracer.take()  # the hold's own log line: said here, not by the next check
            held = True
            reply = rules.verdict_outcome(ctx, verdict).reply
            say(f"  => held until RCPT (smtp-delay-checks): {wire(reply)}\n")
            return Verdict()
        say(f"  => {wire(refusal.reply)}\n")
        return verdict

    postponed = bool(args.auth) and session.auth.delay_checks
    try:
        if postponed:
            say("\nconnect, helo: not run (auth-delay-checks, and the client authenticates)\n")
        elif (await phase("connect")).decisive:
            return 1
        if args.helo:
            ctx.helo = args.helo
            ctx.esmtp = True
            if not postponed and (await phase("helo")).decisive:
                return 1
        if args.auth:
            from barricade.decide.auth import auth_route

            route = auth_route(server.routes, args.auth)
            session.auth.grant(args.auth, route)
            hosts = ", ".join(f"{h}:{p}" for h, p in route.forward)
            say(f"\nauth {args.auth}:\n  => authenticated (assumed) by {hosts} ({route.key[5:]}); "
                "every recipient goes over that connection\n")
        if args.mail is None:
            return 1 if held else 0
        ctx.sender = args.mail
        if (await phase("mail")).decisive:
            return 1
        for rcpt in args.rcpt:
            route = rules.before_rcpt_checks(ctx, rcpt)
            if isinstance(route, Outcome):  # routing comes first: no checks run for such a recipient
                say(f"\nrcpt {rcpt}:\n  no route, and the client may not relay\n"
                    f"  => {wire(route.reply)}\n")
                refused = True
                continue
            verdict = await phase("rcpt", rcpt)
            outcome = rules.rcpt(ctx, verdict, rcpt, route)
            if outcome.downstream is not Downstream.RELAY:
                held_note = "" if verdict.decisive else "  (the held refusal)"
                say(f"  => {wire(outcome.reply)}{held_note}\n")
                refused = True
            else:
                hosts = ", ".join(f"{h}:{p}" for h, p in route.forward)
                ahead = (f"; call-ahead to {', '.join(f'{h}:{p}' for h, p in route.rcpt)} first"
                         if rules.call_ahead_for(ctx, route) else "")
                say(f"  => accepted by the checks; forwarded to {hosts} ({route.key}){ahead}: "
                    "the downstream's answer is the client's\n")
                ctx.rcpts.append(rcpt)
        return 1 if refused else 0
    finally:
        globalLogPublisher.removeObserver(tracer.log)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import asyncio

    from twisted.internet import asyncioreactor

    if "twisted.internet.reactor" not in sys.modules:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        asyncioreactor.install(loop)
    from twisted.internet import defer, task

    from barricade.options import OptionError
    from barricade.service import StartupError

    status: list[int] = []

    async def run(reactor) -> None:
        try:
            status.append(await explain(args, sys.stdout))
        except (OptionError, StartupError) as exc:
            print(f"barricade-check: {exc}", file=sys.stderr)
            status.append(2)

    try:
        task.react(lambda reactor: defer.ensureDeferred(run(reactor)))
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    return status[0] if status else 2


if __name__ == "__main__":
    sys.exit(main())
