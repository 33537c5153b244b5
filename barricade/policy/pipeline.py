"""The per-phase pipeline: run the checks of one SMTP phase, in order.

Checks (built-in ones and plugins alike) subclass :class:`Check` and
override the hooks they need, Haraka style: ``connect``, ``helo``, ``mail``,
``rcpt``, ``data``, ``headers``, ``body``, ``end_of_data``.  Each hook is
``async`` and runs under ``check-timeout``; a hook that raises or times out
counts as a temporary failure (#907), is logged with its name, and never
reaches the client as a traceback.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from barricade.policy.verdict import CONTINUE, Action, Verdict
from barricade.smtp.events import ClientInfo

log = Logger()

PHASES = ("connect", "helo", "mail", "rcpt", "data", "headers", "body", "end_of_data")


@dataclass
class Context:
    """What checks may read about the session and the current transaction."""

    session_id: str
    client: ClientInfo
    tls: bool = False
    helo: str = ""
    sender: str | None = None
    mail_params: dict[str, str | None] = field(default_factory=dict)
    rcpts: list[str] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)
    qid: str = ""
    white: bool = False  # an ACCEPT verdict white-listed this transaction
    notes: dict[str, Any] = field(default_factory=dict)  # checks share results here

    def reset_transaction(self) -> None:
        self.sender = None
        self.mail_params = {}
        self.rcpts = []
        self.headers = []
        self.white = False


class Check:
    """Base class of a check; every hook defaults to CONTINUE."""

    name = "check"
    #: True when the check needs the whole message before the dot goes
    #: downstream (content scanners); the proxy then spools the message.
    needs_message = False

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


class Pipeline:
    def __init__(self, checks: Iterable[Check], reactor, timeout: float, metrics=None):
        self.checks = list(checks)
        self.reactor = reactor
        self.timeout = timeout
        self.metrics = metrics
        self._hooks = {
            phase: [c for c in self.checks if getattr(type(c), phase) is not getattr(Check, phase)]
            for phase in PHASES
        }

    def has(self, phase: str) -> bool:
        return bool(self._hooks[phase])

    @property
    def needs_message(self) -> bool:
        return any(c.needs_message for c in self.checks)

    async def run(self, phase: str, ctx: Context, *args: Any) -> Verdict:
        """The first decisive verdict of the phase, or CONTINUE/ACCEPT."""
        result = CONTINUE
        for check in self._hooks[phase]:
            verdict = await self._one(check, phase, ctx, args)
            if verdict.action is Action.CONTINUE:
                continue
            if verdict.action in (Action.ACCEPT, Action.CONTENT):
                ctx.white = True
                return verdict
            if verdict.decisive:
                return verdict
            result = verdict
        return result

    async def _one(self, check: Check, phase: str, ctx: Context, args: tuple) -> Verdict:
        started = time.monotonic()
        outcome = "error"
        try:
            d = defer.ensureDeferred(getattr(check, phase)(ctx, *args))
            verdict = await d.addTimeout(self.timeout, self.reactor)
            outcome = verdict.action.value
            if verdict.check:
                return verdict
            return Verdict(verdict.action, verdict.reply_id, verdict.fields, verdict.flags, check.name)
        except defer.TimeoutError:
            outcome = "timeout"
            log.error("check {check} timed out in {phase} after {t}s (session {sid})",
                      check=check.name, phase=phase, t=self.timeout, sid=ctx.session_id)
        except Exception:
            log.failure("check {check} failed in {phase} (session {sid})",
                        check=check.name, phase=phase, sid=ctx.session_id)
        finally:
            if self.metrics is not None:
                self.metrics.check(check.name, phase, outcome, time.monotonic() - started)
        return Verdict(Action.TEMPFAIL, 907, {}, check=check.name)
