"""The per-phase pipeline: run the checks of one SMTP phase, in order.

Checks (built-in ones and plugins alike) subclass :class:`Check` and
override the hooks they need, Haraka style: ``connect``, ``helo``, ``mail``,
``rcpt``, ``data``, ``headers``, ``body``, ``end_of_data``, and ``close``
when the session ends (to give back what ``connect`` took, e.g. a lease).  Each hook is
``async`` (or a plain function marked :func:`immediate`) and runs under
``check-timeout``; a hook that raises
:class:`~barricade.policy.verdict.CheckError` gets the reply it carries, one
that raises anything else or times out counts as a temporary failure (#907);
either is logged with its name and never reaches the client as a traceback.
The order of the checks in a phase comes from :mod:`barricade.policy.order`.
"""

from __future__ import annotations

import enum
import functools
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from barricade.client import ClientInfo
from barricade.drive import Deadlines, Drive, deferred
from barricade.policy.order import arrange
from barricade.policy.verdict import CONTINUE, Action, CheckError, Verdict
from barricade.protocol.client_cert import ClientCert
from barricade.replies import ReplyId

log = Logger()

PHASES = ("connect", "helo", "mail", "rcpt", "data", "headers", "body", "end_of_data", "close")
ENVELOPE_PHASES = frozenset(("connect", "helo", "mail", "rcpt"))
#: Phases whose ACCEPT, CONTENT and TAG hold for the whole session.
SESSION_PHASES = frozenset(("connect", "helo"))
#: Transaction note: set once the message has been tagged.
TAGGED = "tag.done"


class Trust(enum.IntEnum):
    """How far a white list lets a session or transaction through (one value per scope)."""

    NONE = 0
    CONTENT = 1  # CONTENT: envelope checks skipped, content still checked
    WHITE = 2  # OK: every check skipped but anti-virus and protocol limits
    FULL = 3  # OK+AV: not even anti-virus


_NONE, _CONTENT, _WHITE, _FULL = Trust.NONE, Trust.CONTENT, Trust.WHITE, Trust.FULL
_GO_ON = Action.CONTINUE


@dataclass
class Context:
    """What checks may read about the session and the current transaction."""

    session_id: str
    client: ClientInfo
    tls: bool = False
    client_cert: ClientCert | None = None  # what the STARTTLS handshake showed, if anything
    esmtp: bool = False  # the client said EHLO
    helo: str = ""
    sender: str | None = None
    mail_params: dict[str, str | None] = field(default_factory=dict)
    rcpts: list[str] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)
    qid: str = ""
    auth: str = ""  # the user name the session authenticated as (SMTP AUTH), "" if none
    trust: Trust = Trust.NONE  # this transaction's white list (ACCEPT/CONTENT after HELO)
    session_trust: Trust = Trust.NONE  # the session's (ACCEPT/CONTENT at connect or HELO)
    #: Checks share results here, for this transaction (keys starting "session."
    #: are kept for the session too: the older spelling of ``session_notes``).
    notes: dict[str, Any] = field(default_factory=dict)
    session_notes: dict[str, Any] = field(default_factory=dict)  # kept for the whole session
    tags: list[Verdict] = field(default_factory=list)  # TAG verdicts of this transaction
    session_tags: list[Verdict] = field(default_factory=list)  # TAG at connect/HELO
    header_block: bytes = b""  # the message's header lines as received (CRLF, unstuffed)
    added_headers: list[tuple[str, str]] = field(default_factory=list)
    removed_headers: set[str] = field(default_factory=set)  # lower-case names
    subject_tag: str = ""
    spool: Any = None  # barricade.spool.Spool when a check needs the whole message
    # Session-wide (kept by reset_transaction): the qid of the last message every
    # downstream accepted, and whether the client was provably gone before our 250
    # for it could be written (it left while the dot was downstream).  Only then
    # does dupmsg take a later copy for a retry of a delivered message.
    delivered: str = ""
    reply_lost: bool = False
    #: Pipeline's: per phase, the checks this client is not exempt from.
    plans: dict[str, tuple[Check, ...]] = field(default_factory=dict, repr=False)
    planned_for: ClientInfo | None = field(default=None, repr=False)
    _header_index: tuple | None = field(default=None, repr=False, compare=False)

    def reset_transaction(self) -> None:
        """Forget the transaction; the session's own fields stay.

        Called at every MAIL, RSET, HELO and end of message, most often on a
        transaction that holds nothing yet: an empty container is kept, not
        made again (a container in use is replaced, never cleared, so that
        whoever holds the old one still sees what it held).
        """
        self.sender = None
        if self.mail_params:
            self.mail_params = {}
        if self.rcpts:
            self.rcpts = []
        if self.headers:
            self.headers = []
        self.header_block = b""
        if self.added_headers:
            self.added_headers = []
        if self.removed_headers:
            self.removed_headers = set()
        self.subject_tag = ""
        self.trust = _NONE
        if self.tags:
            self.tags = []
        if self.spool is not None:
            self.spool.close()
            self.spool = None
        if self.notes:
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
        """Prefix the Subject (e.g. ``[SPAM]``).

        Same rules as :meth:`add_header`: in a ``headers`` hook or earlier, or
        up to ``end_of_data`` when the message is spooled.
        """
        self.subject_tag = tag

    def tag(self, subject: str, reason: str) -> bool:
        """Mark the message: Subject prefix, X-Spam-Flag and X-Spam-Reason; False if already.

        The first reason wins: a message is tagged once, however many checks
        wanted to.  Checks usually return a TAG verdict instead (``tag()``).
        """
        if self.notes.get(TAGGED):
            return False
        self.notes[TAGGED] = True
        self.tag_subject(subject)
        self.add_header("X-Spam-Flag", "YES")
        self.add_header("X-Spam-Reason", reason)
        return True

    def header(self, name: str) -> str | None:
        """The first header of that name, unfolded.

        Several checks ask per message: the names are indexed once per header list.
        """
        index = self._header_index
        if index is None or index[0] is not self.headers or index[1] != len(self.headers):
            names: dict[str, str] = {}
            for n, v in self.headers:
                names.setdefault(n.lower(), v)
            index = self._header_index = (self.headers, len(self.headers), names)
        return index[2].get(name.lower())

    @property
    def content_type(self) -> str:
        """The message's top-level Content-Type, lower-cased ("" when absent)."""
        return (self.header("Content-Type") or "").lower()

    @property
    def trust_level(self) -> Trust:
        """The white list in force: the session's or the transaction's, whichever is more."""
        trust, session = self.trust, self.session_trust
        return session if session > trust else trust

    def white_list(self, level: Trust, phase: str) -> None:
        """Raise the trust of the phase's scope (connect and HELO: the session's)."""
        if phase in SESSION_PHASES:
            self.session_trust = max(self.session_trust, level)
        else:
            self.trust = max(self.trust, level)

    @property
    def trusted(self) -> bool:
        """White-listed (OK): every check but anti-virus and protocol limits is skipped."""
        return self.trust >= _WHITE or self.session_trust >= _WHITE

    # The five flags trust replaced, for checks written against them.

    @property
    def white_session(self) -> bool:
        return self.session_trust >= _WHITE

    @white_session.setter
    def white_session(self, on: bool) -> None:
        self.session_trust = max(self.session_trust, Trust.WHITE) if on else Trust.NONE

    @property
    def white(self) -> bool:
        return self.trust >= _WHITE

    @white.setter
    def white(self, on: bool) -> None:
        self.trust = max(self.trust, Trust.WHITE) if on else min(self.trust, Trust.CONTENT)

    @property
    def white_envelope(self) -> bool:
        return self.trust >= _CONTENT or self.session_trust >= _CONTENT

    @white_envelope.setter
    def white_envelope(self, on: bool) -> None:
        self.trust = max(self.trust, Trust.CONTENT) if on else Trust.NONE

    @property
    def white_envelope_session(self) -> bool:
        return self.session_trust >= _CONTENT

    @white_envelope_session.setter
    def white_envelope_session(self, on: bool) -> None:
        self.session_trust = max(self.session_trust, Trust.CONTENT) if on else Trust.NONE

    @property
    def white_av(self) -> bool:
        return self.trust >= _FULL or self.session_trust >= _FULL

    @white_av.setter
    def white_av(self, on: bool) -> None:
        self.trust = Trust.FULL if on else min(self.trust, Trust.WHITE)


def immediate(hook: Callable[..., Verdict | None]) -> Callable[..., Any]:
    """Mark a hook that never waits: written as a plain function, run as one.

    The pipeline runs some forty hooks per message, nearly all of which
    answer at once.  An ``async`` hook costs a coroutine and the
    StopIteration that ends it each time, about five times what the call
    of a plain function costs; a hook marked so is called as a plain
    function by the pipeline (``close`` hooks too).  Called directly (a
    test, a subclass's ``super()``), it is still awaitable, like any other
    hook.
    """
    @functools.wraps(hook)
    async def awaitable(self: Check, *args: Any) -> Verdict:
        return hook(self, *args)

    awaitable.immediate = hook  # type: ignore[attr-defined]
    return awaitable


#: A step of a phase: the check, and its hook as a plain function if it is marked immediate.
Step = tuple["Check", "Callable[..., Verdict] | None"]


def _step(check: Check, phase: str) -> Step:
    if phase in getattr(check, "__dict__", ()):  # a hook set on the instance is called as it is
        return check, None
    return check, getattr(getattr(type(check), phase), "immediate", None)


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
    error_reply = ReplyId.PROCESSING_ERROR
    #: Run just before / just after the check of this name, in every phase where
    #: the order table lists it (``barricade.policy.order``); "" for no place.
    before: str = ""
    after: str = ""
    #: A client for whom every hook of this check answers CONTINUE and does
    #: nothing else (e.g. smtpf's usual suspects): the pipeline then skips the
    #: check without running it.  None: always run.
    exempt_client: Callable[[ClientInfo], bool] | None = None

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
                 order: Mapping[str, Sequence[tuple[str, str]]] | None = None, stall: float = 0.5):
        self.checks = list(checks)
        self.reactor = reactor
        self.timeout = timeout
        self._deadlines = Deadlines(reactor)  # the timeouts of the hooks waiting now, one timer
        self.metrics = metrics
        self.stall = stall  # seconds one step of a hook may hold the event loop (0: not watched)
        hooks = {
            phase: [c for c in self.checks if getattr(type(c), phase) is not getattr(Check, phase)]
            for phase in PHASES
        }
        if order is not None:
            hooks = {phase: arrange(phase, found, order) for phase, found in hooks.items()}
        self._hooks = hooks
        self._steps = {phase: tuple(_step(c, phase) for c in found) for phase, found in hooks.items()}
        #: The checks no white list lifts (``always``), phase by phase: what auth-delay-checks
        #: may not put off either (a protocol rule, such as Tls-Connect:).
        self.always_steps = {phase: tuple(step for step in steps if step[0].always)
                             for phase, steps in self._steps.items()}
        self._exemptible = [c for c in self.checks if c.exempt_client is not None]
        self._exempt_tests = list(dict.fromkeys(c.exempt_client for c in self._exemptible))
        self._plans: dict[frozenset[Check], dict[str, tuple[Step, ...]]] = {}
        self._needs_message: bool | None = None

    def order(self, phase: str) -> list[str]:
        """The names of the checks that run in ``phase``, in order."""
        return [c.name for c in self._hooks[phase]]

    def has(self, phase: str) -> bool:
        return bool(self._hooks[phase])

    @property
    def needs_message(self) -> bool:
        """Does any check spool?  Asked for every message; the checks settle it in their
        constructors, so it is answered once."""
        if self._needs_message is None:
            self._needs_message = any(c.needs_message for c in self.checks)
        return self._needs_message

    async def run(self, phase: str, ctx: Context, *args: Any,
                  trace: Callable[[Check, Verdict | None], None] | None = None,
                  only: Sequence[Step] | None = None) -> Verdict:
        """The first decisive verdict of the phase, or CONTINUE/ACCEPT.

        ``trace`` (for ``barricade-check``) hears every check's verdict, or
        None for a check that a white list skipped.  ``only``: these steps of
        the phase instead of all (:attr:`always_steps`).
        """
        result = CONTINUE
        # The level that lets a check be skipped: content checks skip at WHITE,
        # envelope checks at CONTENT already.  (Module constants and plain
        # attribute reads: on Python 3.11 each ``Trust.X`` or ``Action.X`` is a
        # metaclass lookup, and this loop runs some forty times per message.)
        skip_at = _CONTENT if phase in ENVELOPE_PHASES else _WHITE
        if only is not None:
            steps: Sequence[Step] = only
        else:
            steps = self._steps[phase] if trace is not None else self._plan(phase, ctx)
        for check, plain in steps:
            trust, session = ctx.trust, ctx.session_trust  # a hook may raise either
            if session > trust:
                trust = session
            if trust >= skip_at and not check.always:
                if not check.antivirus or trust >= _FULL:
                    if trace is not None:
                        trace(check, None)
                    continue  # smtpf: a white-listed message skips all but anti-virus
            verdict = self._start(check, plain, phase, ctx, args)
            if type(verdict) is _Waiting:
                verdict = await self._finish(check, phase, ctx, verdict)
            if trace is not None:
                trace(check, verdict)
            if verdict.action is _GO_ON:
                continue
            if verdict.action is Action.ACCEPT:
                ctx.white_list(Trust.WHITE, phase)
                return verdict
            if verdict.action is Action.CONTENT:
                ctx.white_list(Trust.CONTENT, phase)
                return verdict
            if verdict.action is Action.TAG:  # applied to the headers by the conductor
                (ctx.session_tags if phase in SESSION_PHASES else ctx.tags).append(verdict)
            if verdict.decisive:
                return verdict
            result = verdict
        return result

    def _plan(self, phase: str, ctx: Context) -> Sequence[Step]:
        """The checks of ``phase`` that this client is not exempt from.

        Exemption depends on the client alone: each distinct test is asked
        once per client (XCLIENT and the PTR lookup replace ``ctx.client``,
        which asks again), and the phases' lists are kept per set of exempt
        checks, of which there are few.
        """
        if ctx.planned_for is not ctx.client:
            client = ctx.client
            exempt = {test: test(client) for test in self._exempt_tests}
            skip = frozenset(c for c in self._exemptible if exempt[c.exempt_client])
            plans = self._plans.get(skip)
            if plans is None:
                plans = self._plans[skip] = {
                    name: tuple(step for step in steps if step[0] not in skip)
                    for name, steps in self._steps.items()}
            ctx.plans, ctx.planned_for = plans, client
        return ctx.plans[phase]

    async def close(self, ctx: Context) -> None:
        """Run every ``close`` hook; a failure is logged and the others still run."""
        for check, plain in self._steps["close"]:
            try:
                if plain is not None:
                    plain(check, ctx)
                    continue
                coro = check.close(ctx)
                try:  # most hooks give back what they hold at once: no Deferred, no timer
                    awaited = coro.send(None)
                except StopIteration:
                    continue
                await deferred(coro, awaited, timeout=check.timeout or self.timeout,
                               deadlines=self._deadlines)
            except Exception:
                log.failure("check {check} failed in close (session {sid})",
                            check=check.name, sid=ctx.session_id)
                if self.metrics is not None:  # runs that end well are not counted: one per hook per session
                    self.metrics.check(check.name, "close", "error", 0.0)

    def _watch(self, check: Check, phase: str, ctx: Context, t0: float) -> None:
        """The stall watchdog: a step of a hook that began at ``t0`` held the loop too long?"""
        if self.stall:
            seconds = time.monotonic() - t0
            if seconds >= self.stall:
                self._stalled(check, phase, ctx, seconds)

    @staticmethod
    def _stalled(check: Check, phase: str, ctx: Context, seconds: float) -> None:
        log.warn("check {check} kept the event loop busy {t:.3f}s in its {phase} hook "
                 "(session {sid}): every session of this worker waited; run blocking work "
                 "with Plugin.blocking()", check=check.name, t=seconds, phase=phase,
                 sid=ctx.session_id)

    def _start(self, check: Check, plain: Callable[..., Verdict] | None, phase: str, ctx: Context,
               args: tuple) -> Verdict | _Waiting:
        """Run a hook until it ends or waits.

        Most hooks never wait: they run to the end here, with no coroutine of
        the pipeline's own, no Deferred and no timer (and those marked
        :func:`immediate` with no coroutine at all).  One that waits comes
        back as :class:`_Waiting`, for :meth:`_finish`.
        """
        started = time.monotonic()
        try:
            if plain is not None:
                result = plain(check, ctx, *args)
            else:
                coro = getattr(check, phase)(ctx, *args)
                awaited = coro.send(None)
                self._watch(check, phase, ctx, started)
                return _Waiting(coro, awaited, started)  # counted when it ends
        except StopIteration as done:
            result = done.value
        except Exception as exc:
            elapsed = time.monotonic() - started
            outcome, verdict = self._failed(check, phase, ctx, exc)
            if self.metrics is not None:
                self.metrics.check(check.name, phase, outcome, elapsed)
            return verdict
        elapsed = time.monotonic() - started  # one clock read: the watchdog's and the metric's
        if elapsed >= self.stall > 0:
            self._stalled(check, phase, ctx, elapsed)
        if result is CONTINUE:  # the usual answer (as in _named, without the call)
            outcome, verdict = "continue", result
        else:
            outcome, verdict = self._named(check, phase, ctx, result)
        if self.metrics is not None:
            self.metrics.check(check.name, phase, outcome, elapsed)
        return verdict

    async def _finish(self, check: Check, phase: str, ctx: Context, waiting: _Waiting) -> Verdict:
        """A hook that waits, continued by what it awaits (:mod:`barricade.drive`), with its timeout."""
        outcome = "error"
        timeout = check.timeout or self.timeout
        try:
            watch = functools.partial(self._watch, check, phase, ctx) if self.stall else None
            done = Drive(waiting.coro, waiting.awaited, watch=watch, timeout=timeout,
                         deadlines=self._deadlines)
            outcome, verdict = self._named(check, phase, ctx, await done)
            return verdict
        except defer.TimeoutError:
            outcome = "timeout"
            log.error("check {check} timed out in {phase} after {t}s (session {sid})",
                      check=check.name, phase=phase, t=timeout, sid=ctx.session_id)
            return Verdict(Action.TEMPFAIL, check.error_reply, {}, check=check.name)
        except Exception as exc:
            outcome, verdict = self._failed(check, phase, ctx, exc)
            return verdict
        finally:
            if self.metrics is not None:
                self.metrics.check(check.name, phase, outcome, time.monotonic() - waiting.started)

    @staticmethod
    def _named(check: Check, phase: str, ctx: Context, verdict: object) -> tuple[str, Verdict]:
        """(the metric's outcome, the verdict with the check's name) of what a hook returned."""
        if verdict is CONTINUE:  # the usual answer: shared, it needs no copy with the name
            return "continue", verdict
        if not isinstance(verdict, Verdict):
            log.error("check {check} returned {value!r} from its {phase} hook, not a Verdict "
                      "(session {sid})", check=check.name, value=verdict, phase=phase,
                      sid=ctx.session_id)
            return "error", Verdict(Action.TEMPFAIL, check.error_reply, {}, check=check.name)
        if verdict.check:
            return verdict.action.value, verdict
        return verdict.action.value, Verdict(verdict.action, verdict.reply_id, verdict.fields,
                                             verdict.flags, check.name)

    @staticmethod
    def _failed(check: Check, phase: str, ctx: Context, exc: Exception) -> tuple[str, Verdict]:
        """A hook raised: its reply if it carries one (CheckError, ScannerError, an older
        check's exception with a ``verdict()``), else a logged traceback and #907."""
        handled = getattr(exc, "verdict", None)
        if isinstance(exc, CheckError) or callable(handled):
            log.error("check {check} failed in {phase} (session {sid}): {err}",
                      check=check.name, phase=phase, sid=ctx.session_id, err=str(exc))
            verdict = handled()
            return "failed", Verdict(verdict.action, verdict.reply_id, verdict.fields, check=check.name)
        log.failure("check {check} failed in {phase} (session {sid})",  # the exception being handled
                    check=check.name, phase=phase, sid=ctx.session_id)
        return "error", Verdict(Action.TEMPFAIL, check.error_reply, {}, check=check.name)


@dataclass(slots=True)
class _Waiting:
    """A hook that awaits something: its coroutine, what it awaits, when it started."""

    coro: Any
    awaited: Any
    started: float
