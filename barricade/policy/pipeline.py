"""The per-phase pipeline: run the checks of one SMTP phase, in order.

Checks (built-in ones and plugins alike) subclass :class:`Check` and
override the hooks they need, Haraka style: ``connect``, ``helo``, ``mail``,
``rcpt``, ``data``, ``headers``, ``body``, ``end_of_data``, and ``close``
when the session ends (to give back what ``connect`` took, e.g. a lease).  Each hook is
``async`` and runs under ``check-timeout``; a hook that raises or times out
counts as a temporary failure (#907), is logged with its name, and never
reaches the client as a traceback.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from barricade.client import ClientInfo
from barricade.policy.order import arrange
from barricade.policy.verdict import CONTINUE, Action, Verdict

log = Logger()

PHASES = ("connect", "helo", "mail", "rcpt", "data", "headers", "body", "end_of_data", "close")
ENVELOPE_PHASES = frozenset(("connect", "helo", "mail", "rcpt"))


@dataclass
class Context:
    """What checks may read about the session and the current transaction."""

    session_id: str
    client: ClientInfo
    tls: bool = False
    esmtp: bool = False  # the client said EHLO
    helo: str = ""
    sender: str | None = None
    mail_params: dict[str, str | None] = field(default_factory=dict)
    rcpts: list[str] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)
    qid: str = ""
    white_session: bool = False  # ACCEPT at connect/HELO: the whole session is trusted
    white: bool = False  # ACCEPT later: this transaction is trusted
    white_envelope: bool = False  # CONTENT: envelope checks skipped, content still checked
    white_envelope_session: bool = False  # CONTENT at connect/HELO: so in every transaction
    white_av: bool = False  # OK+AV: not even anti-virus runs
    notes: dict[str, Any] = field(default_factory=dict)  # checks share results here
    header_block: bytes = b""  # the message's header lines as received (CRLF, unstuffed)
    added_headers: list[tuple[str, str]] = field(default_factory=list)
    removed_headers: set[str] = field(default_factory=set)  # lower-case names
    subject_tag: str = ""
    spool: Any = None  # barricade.spool.Spool when a check needs the whole message
    # Session-wide (kept by reset_transaction): the qid of the last message every
    # downstream accepted, and whether the client has yet to send a command after
    # our 250 for it.  A session that ends with ``delivery_unconfirmed`` set may
    # have lost that reply (dupmsg remembers the message so a retry is not delivered twice).
    delivered: str = ""
    delivery_unconfirmed: bool = False

    def reset_transaction(self) -> None:
        self.sender = None
        self.mail_params = {}
        self.rcpts = []
        self.headers = []
        self.header_block = b""
        self.added_headers = []
        self.removed_headers = set()
        self.subject_tag = ""
        self.white = self.white_av = False
        self.white_envelope = self.white_envelope_session
        if self.spool is not None:
            self.spool.close()
            self.spool = None
        self.notes = {k: v for k, v in self.notes.items() if k.startswith("session.")}

    def add_header(self, name: str, value: str) -> None:
        """Add a header to the delivered message.

        Honoured when asked for in a ``headers`` hook (cut-through) or in any
        hook up to ``end_of_data`` when the message is spooled.
        """
        self.added_headers.append((name, value))

    def remove_header(self, name: str) -> None:
        """Drop every field of that name from the delivered message (same rules as add)."""
        self.removed_headers.add(name.lower())

    def tag_subject(self, tag: str) -> None:
        """Prefix the Subject (e.g. ``[SPAM]``); needs a spooled message."""
        self.subject_tag = tag

    def header(self, name: str) -> str | None:
        """The first header of that name, unfolded."""
        low = name.lower()
        return next((v for n, v in self.headers if n.lower() == low), None)

    @property
    def content_type(self) -> str:
        """The message's top-level Content-Type, lower-cased ("" when absent)."""
        return (self.header("Content-Type") or "").lower()

    @property
    def trusted(self) -> bool:
        return self.white or self.white_session


class Check:
    """Base class of a check; every hook defaults to CONTINUE."""

    name = "check"
    #: True when the check needs the whole message before the dot goes
    #: downstream (content scanners); the proxy then spools the message.
    needs_message = False
    #: Anti-virus checks run even for white-listed mail (unless OK+AV).
    antivirus = False
    #: Protocol limits (loops, recipient count) run for everybody, white-listed or not.
    always = False
    #: Seconds each hook may take (0: the ``check-timeout`` option).
    timeout: float = 0
    #: The temp-fail reply when a hook raises or times out.
    error_reply = 907
    #: Run just before / just after the check of this name, in every phase where
    #: the order table lists it (``barricade.policy.order``); "" for no place.
    before: str = ""
    after: str = ""

    async def connect(self, ctx: Context) -> Verdict:
        return CONTINUE

    async def helo(self, ctx: Context) -> Verdict:
        return CONTINUE

    async def mail(self, ctx: Context) -> Verdict:
        return CONTINUE

    async def rcpt(self, ctx: Context, rcpt: str) -> Verdict:
        return CONTINUE

    async def data(self, ctx: Context) -> Verdict:
        return CONTINUE

    async def headers(self, ctx: Context) -> Verdict:
        return CONTINUE

    async def body(self, ctx: Context, chunk: bytes) -> Verdict:
        return CONTINUE

    async def end_of_data(self, ctx: Context) -> Verdict:
        return CONTINUE

    async def close(self, ctx: Context) -> None:
        """The session ended (QUIT, drop, timeout or the client went away).

        Runs once per session for every check, white-listed or not; no reply
        can be given any more.  Release here what ``connect`` acquired.
        """


class Pipeline:
    """The checks of every phase, in order.

    ``order`` is a per-phase order table (:data:`barricade.policy.order.ORDER`,
    which also places plugins by ``before``/``after``); without one the
    checks run in the order given.
    """

    def __init__(self, checks: Iterable[Check], reactor, timeout: float, metrics=None,
                 order: Mapping[str, Sequence[tuple[str, str]]] | None = None):
        self.checks = list(checks)
        self.reactor = reactor
        self.timeout = timeout
        self.metrics = metrics
        hooks = {
            phase: [c for c in self.checks if getattr(type(c), phase) is not getattr(Check, phase)]
            for phase in PHASES
        }
        if order is not None:
            hooks = {phase: arrange(phase, found, order) for phase, found in hooks.items()}
        self._hooks = hooks

    def order(self, phase: str) -> list[str]:
        """The names of the checks that run in ``phase``, in order."""
        return [c.name for c in self._hooks[phase]]

    def has(self, phase: str) -> bool:
        return bool(self._hooks[phase])

    @property
    def needs_message(self) -> bool:
        return any(c.needs_message for c in self.checks)

    async def run(self, phase: str, ctx: Context, *args: Any,
                  trace: Callable[[Check, Verdict | None], None] | None = None) -> Verdict:
        """The first decisive verdict of the phase, or CONTINUE/ACCEPT.

        ``trace`` (for ``barricade-check``) hears every check's verdict, or
        None for a check that a white list skipped.
        """
        result = CONTINUE
        envelope = phase in ENVELOPE_PHASES
        for check in self._hooks[phase]:
            if not check.always and (ctx.trusted or (envelope and ctx.white_envelope)):
                if not check.antivirus or ctx.white_av:
                    if trace is not None:
                        trace(check, None)
                    continue  # smtpf: a white-listed message skips all but anti-virus
            verdict = await self._one(check, phase, ctx, args)
            if trace is not None:
                trace(check, verdict)
            if verdict.action is Action.CONTINUE:
                continue
            if verdict.action is Action.ACCEPT:
                if phase in ("connect", "helo"):
                    ctx.white_session = True
                else:
                    ctx.white = True
                return verdict
            if verdict.action is Action.CONTENT:
                ctx.white_envelope = True
                if phase in ("connect", "helo"):
                    ctx.white_envelope_session = True
                return verdict
            if verdict.decisive:
                return verdict
            result = verdict
        return result

    async def close(self, ctx: Context) -> None:
        """Run every ``close`` hook; a failure is logged and the others still run."""
        for check in self._hooks["close"]:
            timeout = check.timeout or self.timeout
            try:
                await defer.ensureDeferred(check.close(ctx)).addTimeout(timeout, self.reactor)
            except Exception:
                log.failure("check {check} failed in close (session {sid})",
                            check=check.name, sid=ctx.session_id)

    async def _one(self, check: Check, phase: str, ctx: Context, args: tuple) -> Verdict:
        started = time.monotonic()
        timeout = check.timeout or self.timeout
        outcome = "error"
        try:
            coro = getattr(check, phase)(ctx, *args)
            try:  # most checks never wait: run them to the end here, no Deferred, no timer
                awaited = coro.send(None)
            except StopIteration as done:
                verdict = done.value
            else:
                d = defer.ensureDeferred(_resume(coro, awaited))
                verdict = await d.addTimeout(timeout, self.reactor)
            outcome = verdict.action.value
            if verdict.check:
                return verdict
            return Verdict(verdict.action, verdict.reply_id, verdict.fields, verdict.flags, check.name)
        except defer.TimeoutError:
            outcome = "timeout"
            log.error("check {check} timed out in {phase} after {t}s (session {sid})",
                      check=check.name, phase=phase, t=timeout, sid=ctx.session_id)
        except Exception as exc:
            handled = getattr(exc, "verdict", None)
            if callable(handled):  # a check's own numbered failure (scanner I/O errors)
                log.error("check {check} failed in {phase} (session {sid}): {err}",
                          check=check.name, phase=phase, sid=ctx.session_id, err=str(exc))
                outcome = "failed"
                verdict = handled()
                return Verdict(verdict.action, verdict.reply_id, verdict.fields, check=check.name)
            log.failure("check {check} failed in {phase} (session {sid})",
                        check=check.name, phase=phase, sid=ctx.session_id)
        finally:
            if self.metrics is not None:
                self.metrics.check(check.name, phase, outcome, time.monotonic() - started)
        return Verdict(Action.TEMPFAIL, check.error_reply, {}, check=check.name)


async def _resume(coro: Any, awaited: Any) -> Any:
    """Drive a check's coroutine on from its first ``await``.

    :meth:`Pipeline._one` starts every hook itself, so that the many that
    finish without waiting cost no Deferred; one that does wait has yielded
    what it awaits (a Deferred), and is continued here, under Twisted.
    A cancellation (the check's timeout) reaches the coroutine as the
    exception of what it awaits.
    """
    while True:
        try:
            value = await awaited
        except BaseException as exc:  # noqa: BLE001 - every outcome goes back into the check
            try:
                awaited = coro.throw(exc)
            except StopIteration as done:
                return done.value
        else:
            try:
                awaited = coro.send(value)
            except StopIteration as done:
                return done.value
