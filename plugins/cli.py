"""smtpf's CLI hooks: let an external program judge the envelope or the message.

``cli-envelope`` runs a command when the client sends DATA.  Its standard
input is one line each: the client IP, port, name (PTR), the HELO argument,
the sender, the queue id, then the recipients until EOF.

``cli-content`` runs a command at the final dot.  Its standard input is a
pseudo ``Return-Path`` header, our ``Received`` header and the message as
the client sent it (CRLF lines, dot-unstuffed).

The exit status is the verdict, as in smtpf (``src/cli.c``):

====  ================================================================
0     continue; the output is logged
4     451 4.7.0 with the output as the reply text (#224); smtpf documents
      4 for the envelope only but answers it the same way at the dot, so
      Barricade temp-fails the message there too
5     550 5.7.0 with the output as the reply text (#224)
6     discard: the client hears 250, nothing is delivered; output logged
7     drop: 550 5.7.0 with the output (#224), then the connection closes
====  ================================================================

Standard output and standard error are merged, as smtpf merges them, and
each non-blank line becomes one line of the reply ("message rejected" when
there is none).  Anything else -- another status, a signal, a program that
cannot start, or one still running at ``cli-timeout`` (it gets SIGTERM, then
SIGKILL) -- is a 451 4.3.0 (#907) with a log line: smtpf let such mail
through, but a broken filter must not turn into an open door.

The program runs without a shell (the option is split like a shell word
list) unless the command line uses shell syntax, with an empty environment
but ``PATH``, and never blocks the reactor: stdin is streamed as the pipe
drains and the output is read as it comes, up to 64 KiB.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from twisted.internet import defer, error, protocol
from twisted.internet.interfaces import IPullProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from barricade.options import Config, OptionError
from barricade.plugin import Plugin, PluginOption, Services
from barricade.policy.pipeline import Context
from barricade.policy.verdict import CONTINUE, Action, Verdict
from barricade.protocol.message import received_header
from barricade.replies import ReplyId, ReplySpec

log = Logger()

#: The program's own output as the reply (its code and status chosen by the exit code).
PROGRAM_OUTPUT = 224

#: This plugin's catalogue entries (smtpf's numbers): reworded with reply-file,
#: listed in docs/replies.md like the core's.
REPLIES: tuple[ReplySpec, ...] = (
    ReplySpec(PROGRAM_OUTPUT, 0, '', '{text}', 'dot',
      'The CLI child process standard output and standard error are used for specifying a multiline response. See cli-content and cli-envelope.'),
)

MAX_OUTPUT = 64 * 1024  # bytes of stdout+stderr kept; the rest is read and dropped
MAX_LINE = 400  # characters of one reply line (RFC 5321 allows 512 with the code)
MAX_LINES = 32  # reply lines; a chatty program must not flood the client
KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL
PIPE_GRACE = 1.0  # seconds to drain the output pipes once the program has exited

EXIT_CONTINUE, EXIT_TEMPFAIL, EXIT_REJECT, EXIT_DISCARD, EXIT_DROP = 0, 4, 5, 6, 7

# Characters that only mean something to a shell: a command line using them
# runs under /bin/sh -c, anything else is exec'd directly.
_SHELL_SYNTAX = re.compile(r"[|&;<>()$`*?\[\]{}~\n]|^\s*\w+=")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f]")

DISCARD_NOTE = "cli.discard"


@dataclass
class Command:
    """One configured command line, parsed once at start-up."""

    option: str
    line: str
    argv: list[str]

    @classmethod
    def parse(cls, option: str, line: str) -> Command | None:
        line = line.strip()
        if not line:
            return None
        if _SHELL_SYNTAX.search(line):
            return cls(option, line, ["/bin/sh", "-c", line])
        try:
            argv = shlex.split(line)
        except ValueError as exc:
            raise OptionError(f"{option}: cannot parse {line!r}: {exc}") from None
        if not argv:
            raise OptionError(f"{option}: empty command")
        return cls(option, line, argv)


@dataclass
class Result:
    """How one run ended."""

    pid: int
    exit_code: int | None  # None when killed by a signal
    signal: int | None
    timed_out: bool
    output: bytes
    truncated: bool
    seconds: float


@implementer(IPullProducer)
class _Feeder:
    """Writes stdin one piece at a time, as the pipe drains (a message may be large)."""

    def __init__(self, transport, pieces: Iterator[bytes]):
        self.transport = transport
        self.pieces = pieces
        self.done = False

    def resumeProducing(self) -> None:
        if self.done:
            return
        piece = next(self.pieces, None)
        if piece is None:
            self.done = True
            self.transport.unregisterProducer()
            self.transport.closeStdin()  # EOF: the program may now answer
            return
        self.transport.write(piece)

    def stopProducing(self) -> None:
        """The program closed its stdin (or exited) before reading it all."""
        self.done = True


class _Child(protocol.ProcessProtocol):
    """Collects the merged output and the exit status of one program."""

    def __init__(self, limit: int, on_exit: Callable[[], None]):
        self.limit = limit
        self.on_exit = on_exit
        self.output = bytearray()
        self.truncated = False
        self.reason: Failure | None = None
        self.exited = False
        self.ended: defer.Deferred = defer.Deferred()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        # stdout and stderr in arrival order: smtpf dup2()s both onto one pipe.
        room = self.limit - len(self.output)
        if len(data) > room:
            self.truncated = True
            data = data[: max(room, 0)]
        self.output += data

    def processExited(self, reason: Failure) -> None:
        self.exited = True
        self.reason = reason
        self.on_exit()

    def processEnded(self, reason: Failure) -> None:
        if self.reason is None:
            self.reason = reason
        if not self.ended.called:
            self.ended.callback(None)


def _drop_stdin(transport) -> None:
    """Close the program's stdin now, with whatever is still unwritten.

    ``loseConnection`` would first wait to write it, into a pipe that a
    grandchild which inherited it may hold open and never read: the
    program's end (and the session's answer) then waited for the hook's own
    timeout, and the pipe stayed open as long as the grandchild lived.
    """
    writer = getattr(transport, "pipes", {}).get(0)
    if writer is not None and not writer.disconnected:
        writer.connectionLost(Failure(error.ConnectionDone("stdin dropped")))


def _signal(transport, name: str) -> None:
    try:
        transport.signalProcess(name)
    except (error.ProcessExitedAlready, OSError):
        pass


async def run_program(reactor, argv: list[str], env: dict[str, str], stdin: Iterable[bytes],
                      timeout: float, limit: int = MAX_OUTPUT) -> Result:
    """Run ``argv``, feed it ``stdin``, and wait for it under ``timeout``.

    Raises OSError when the program cannot be started.  A program still
    running at the deadline gets SIGTERM, then SIGKILL after KILL_GRACE.
    Once it has exited its output pipes get PIPE_GRACE to drain, so a
    grandchild holding them open cannot hold the session.
    """
    timers: list[Any] = []
    timed_out = False

    # The closures use child.transport: Twisted may reap a fast program
    # while spawnProcess is still returning.
    def kill() -> None:
        if not child.exited:
            _signal(child.transport, "KILL")

    def terminate() -> None:
        nonlocal timed_out
        if not child.exited:
            timed_out = True
            _signal(child.transport, "TERM")
            timers.append(reactor.callLater(KILL_GRACE, kill))

    def exited() -> None:
        if not child.ended.called:
            _drop_stdin(child.transport)  # nobody left to read it (a grandchild may hold it)
            timers.append(reactor.callLater(PIPE_GRACE, child.transport.loseConnection))

    child = _Child(limit, exited)
    started = time.monotonic()
    transport = reactor.spawnProcess(child, argv[0], argv, env=env)
    pid = transport.pid  # Twisted forgets it once the child is reaped
    timers.append(reactor.callLater(timeout, terminate))
    transport.registerProducer(_Feeder(transport, iter(stdin)), False)
    try:
        await child.ended
    except defer.CancelledError:
        # The pipeline gave up on this hook (or the session went away):
        # never leave the program behind.
        kill()
        _drop_stdin(transport)
        transport.loseConnection()
        raise
    finally:
        for timer in timers:
            if timer.active():
                timer.cancel()
    reason = child.reason.value if child.reason is not None else None
    exit_code = getattr(reason, "exitCode", None)
    sig = getattr(reason, "signal", None)
    if isinstance(reason, error.ProcessDone):
        exit_code, sig = 0, None
    return Result(pid, exit_code if sig is None else None, sig, timed_out,
                  bytes(child.output), child.truncated, time.monotonic() - started)


def reply_lines(output: bytes) -> list[str]:
    """The program's output as reply lines: printable ASCII, no blank lines, bounded."""
    text = output.decode("utf-8", "replace").encode("ascii", "replace").decode("ascii")
    lines = []
    for raw in text.splitlines():
        line = _CONTROLS.sub("?", raw.expandtabs(1)).strip()
        if line:
            lines.append(line[:MAX_LINE])
    return lines[:MAX_LINES] or ["message rejected"]


def _line(value: object) -> bytes:
    """One envelope field: a stray control character must not split a line."""
    return _CONTROLS.sub("?", str(value)).encode("utf-8", "replace") + b"\n"


def envelope_input(ctx: Context) -> bytes:
    """smtpf's envelope lines: ip, port, name, helo, mail, qid, then the recipients."""
    client = ctx.client
    fields: list[object] = [client.ip, client.port, client.name, ctx.helo, ctx.sender or "", ctx.qid]
    return b"".join(_line(x) for x in (*fields, *ctx.rcpts))


def content_head(ctx: Context, hostname: str) -> bytes:
    """The pseudo Return-Path and our Received header that precede the message."""
    sender = _CONTROLS.sub("?", ctx.sender or "")
    client = ctx.client
    proto = ("ESMTP" if ctx.esmtp else "SMTP") + ("S" if ctx.tls else "")
    received = received_header(
        helo=ctx.helo, client_name=client.name, client_ip=client.ip, hostname=hostname,
        proto=proto, qid=ctx.qid, rcpts=ctx.rcpts,
    )
    return f"Return-Path: <{sender}>\r\n".encode("utf-8", "replace") + received


class Cli(Plugin):
    """External programs (``cli-envelope``, ``cli-content``) with smtpf's exit codes."""

    name = "cli"
    replies = REPLIES
    # smtpf runs cli after the other content checks and before spamd (docs/smtpf.md,
    # "Filter order"); docs/plugins.md gives the external program 400.
    order = 400
    options: ClassVar[tuple[PluginOption, ...]] = (
        PluginOption("cli-envelope", "", """Command line run when the client sends DATA.
            Standard input: the client IP, port and name, the HELO argument, the sender,
            the queue id, then the recipients, one per line. Exit 0 continue, 4 temp-fail
            (451 4.7.0), 5 reject (550 5.7.0) with the output as the reply, 6 discard,
            7 drop the connection; anything else, or a timeout, is 451 4.3.0."""),
        PluginOption("cli-content", "", """Command line run at the final dot (the message
            is spooled until it answers). Standard input: a pseudo Return-Path header,
            our Received header and the message. Exit codes as for cli-envelope (4 is a
            temporary failure here too)."""),
        PluginOption("cli-timeout", 60, """Seconds a cli-envelope or cli-content program
            may run; then it gets SIGTERM (and SIGKILL 2 seconds later) and the client a
            451 4.3.0.""", minimum=1),
    )

    @classmethod
    def enabled(cls, config: Config) -> bool:
        return bool(config.get("cli-envelope") or config.get("cli-content"))

    def __init__(self, config: Config, services: Services):
        super().__init__(config, services)
        self.envelope = Command.parse("cli-envelope", config.get("cli-envelope", "") or "")
        self.content = Command.parse("cli-content", config.get("cli-content", "") or "")
        self.run_timeout = float(config.get("cli-timeout", 60))
        # Our own deadline kills the program; the pipeline's must come after it.
        self.timeout = self.run_timeout + KILL_GRACE + PIPE_GRACE + 5
        self.needs_message = self.content is not None
        self.env = {"PATH": os.environ.get("PATH") or os.defpath}
        self.hostname = config.get("interface-name") or socket.getfqdn()

    # --- hooks ----------------------------------------------------------------------

    async def data(self, ctx: Context) -> Verdict:
        if self.envelope is None:
            return CONTINUE
        verdict = await self._judge(self.envelope, ctx, [envelope_input(ctx)])
        if verdict.action is Action.DISCARD:
            # The client must still get 354 and send the message: it is
            # thrown away at the dot (the content program is not run).
            ctx.notes[DISCARD_NOTE] = True
            return CONTINUE
        return verdict

    async def end_of_data(self, ctx: Context) -> Verdict:
        if ctx.notes.get(DISCARD_NOTE):
            return Verdict(Action.DISCARD, ReplyId.MESSAGE_ACCEPTED, {"qid": ctx.qid})
        if self.content is None or ctx.spool is None:
            return CONTINUE
        return await self._judge(self.content, ctx, self._content_input(ctx))

    def _content_input(self, ctx: Context) -> Iterator[bytes]:
        yield content_head(ctx, self.hostname)
        yield from ctx.spool.chunks()

    # --- running and judging ------------------------------------------------------------

    async def _judge(self, command: Command, ctx: Context, stdin: Iterable[bytes]) -> Verdict:
        name = command.option
        executable = shutil.which(command.argv[0], path=self.env["PATH"])
        if executable is None:
            log.error("session {sid}: {name}: cannot find {prog}", sid=ctx.session_id, name=name,
                      prog=command.argv[0])
            self._metric("error", 0.0)
            return Verdict(Action.TEMPFAIL, ReplyId.PROCESSING_ERROR)
        try:
            result = await run_program(self.services.reactor, [executable, *command.argv[1:]],
                                       self.env, stdin, self.run_timeout)
        except OSError as exc:
            log.error("session {sid}: {name}: cannot start {line!r}: {err}", sid=ctx.session_id,
                      name=name, line=command.line, err=exc)
            self._metric("error", 0.0)
            return Verdict(Action.TEMPFAIL, ReplyId.PROCESSING_ERROR)
        return self._verdict(command, ctx, result)

    def _verdict(self, command: Command, ctx: Context, result: Result) -> Verdict:
        name, sid = command.option, ctx.session_id
        lines = reply_lines(result.output)
        shown = " | ".join(lines) if result.output.strip() else ""
        if result.truncated:
            log.warn("session {sid}: {name}[{pid}] wrote more than {n} bytes; the rest was dropped",
                     sid=sid, name=name, pid=result.pid, n=MAX_OUTPUT)
        if result.timed_out:
            log.error("session {sid}: {name}[{pid}] still running after {t:.0f}s: killed",
                      sid=sid, name=name, pid=result.pid, t=self.run_timeout)
            return self._failed(result, "timeout")
        if result.exit_code is None:
            log.error("session {sid}: {name}[{pid}] terminated on signal {sig}: {out}",
                      sid=sid, name=name, pid=result.pid, sig=_signame(result.signal), out=shown)
            return self._failed(result, "error")
        code = result.exit_code
        log.info("session {sid}: {name}[{pid}] exit status={code} in {t:.3f}s: {out}", sid=sid,
                 name=name, pid=result.pid, code=code, t=result.seconds, out=shown)
        if code == EXIT_CONTINUE:
            self._metric("continue", result.seconds)
            return CONTINUE
        if code == EXIT_TEMPFAIL:
            self._metric("tempfail", result.seconds)
            return self._reply(Action.TEMPFAIL, 451, "4.7.0", lines)
        if code == EXIT_REJECT:
            self._metric("reject", result.seconds)
            return self._reply(Action.REJECT, 550, "5.7.0", lines)
        if code == EXIT_DISCARD:
            self._metric("discard", result.seconds)
            return Verdict(Action.DISCARD, ReplyId.MESSAGE_ACCEPTED, {"qid": ctx.qid})
        if code == EXIT_DROP:
            self._metric("drop", result.seconds)
            return self._reply(Action.DROP, 550, "5.7.0", lines)
        log.error("session {sid}: {name}[{pid}] exit status={code} out of range", sid=sid,
                  name=name, pid=result.pid, code=code)
        return self._failed(result, "error")

    @staticmethod
    def _reply(action: Action, code: int, status: str, lines: list[str]) -> Verdict:
        """#224: the program's lines, the first as {text}, the rest as continuation lines."""
        return Verdict(action, PROGRAM_OUTPUT, {"code": code, "status": status, "text": lines[0],
                                     "lines": tuple(lines[1:])})

    def _failed(self, result: Result, outcome: str) -> Verdict:
        self._metric(outcome, result.seconds)
        return Verdict(Action.TEMPFAIL, ReplyId.PROCESSING_ERROR)

    def _metric(self, outcome: str, seconds: float) -> None:
        metrics = self.services.metrics
        if metrics is not None and hasattr(metrics, "scanner"):
            metrics.scanner(self.name, outcome, seconds)


def _signame(number: int | None) -> str:
    try:
        return signal.Signals(number).name if number is not None else "?"
    except ValueError:
        return str(number)
