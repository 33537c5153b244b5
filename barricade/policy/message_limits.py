"""Per-message limits from the access map (README, "Limits"):
``Msg-Limit-Connect:``/``-From:``/``-To:``, ``Null-Rate-To:`` and
``Length-Connect:``/``-From:``/``-To:``.

* **Msg-Limit** (``N/t``: N messages per t seconds, t with an optional unit
  ``w``, ``d``, ``h``, ``m``, ``s`` of which the first letter counts, e.g.
  ``150/30m``; N ≤ 0 disables): counted per RCPT command, as smtpf does,
  in fixed windows kept in the store (:meth:`Store.msg_limit`: a window
  starts at its first count and lasts t).  Each RCPT counts against the
  client IP's, the sender's and that recipient's limit, whichever the map
  has; the one applied is the most specific found, ``To`` over ``From``
  over ``Connect`` (a disabled ``To:`` entry thus exempts a recipient).
  Over the limit, ``msg-limit-report`` decides: temp-fail the recipient
  (#475), report to ``report-to`` once per window, or accept and discard.
* **Null-Rate-To** (an integer, -1 disables): DSNs and MDNs (``MAIL
  FROM:<>``) per 60 s for the recipient, counted per matching map key
  (``null-rate-to:example.com`` counts the whole domain) in the sliding
  window of ``Rate-Connect:``; above it, #505.  Localhost, RELAY and
  white-listed clients are exempt.
* **Length** (octets, ``N[K|M|G]`` in 1024s; -1 or empty is unlimited): the
  most specific applies, the largest ``Length-To:`` of the recipients over
  ``Length-From:`` over ``Length-Connect:`` (smtpf's ``size.c``).  Checked
  at RCPT against ``MAIL SIZE=`` (#950, 552 5.3.4), and against the octets
  as they stream in (#625 at the dot; the downstream never gets the dot).
  ``SIZE`` stays advertised with ``message-size-limit``.

Values that do not parse are logged and ignored.  Msg-Limit and Length
apply to every client, white-listed or not, as in smtpf.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass

from twisted.logger import Logger

from barricade.aio import aio
from barricade.maps import KeyValueMap
from barricade.options import Config
from barricade.policy.pipeline import Check, Context, immediate
from barricade.policy.state_limits import StoreCheck
from barricade.policy.verdict import CONTINUE, Action, Verdict, reject, tempfail
from barricade.protocol.grammar import ascii_digits
from barricade.replies import ReplyId
from barricade.state import Store, StoreError

log = Logger()

# --- value syntax ---------------------------------------------------------------------

UNIT_SECONDS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
UNIT_WORDS = {"w": "week", "d": "day", "h": "hour", "m": "minute", "s": "second"}
_RATE = re.compile(r"(-?\d+)(?:/(\d*)([A-Za-z]*))?")
_SIZE = re.compile(r"(-?\d+)([KkMmGg]?)")
_SCALE = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


@dataclass(frozen=True)
class MessageRate:
    """A ``Msg-Limit-*`` value: ``messages`` per ``seconds`` (shown in ``unit``)."""

    messages: int
    seconds: int
    unit: str = "s"

    @property
    def enabled(self) -> bool:
        return self.messages > 0

    @property
    def period(self) -> str:
        """``30 minutes``, ``1 hour``: the window in its own unit, as smtpf words it."""
        units = self.seconds // UNIT_SECONDS[self.unit]
        return f"{units} {UNIT_WORDS[self.unit]}{'' if units == 1 else 's'}"

    def reply_fields(self, who: str) -> dict[str, object]:
        """The fields of #475."""
        return {"who": who, "limit": self.messages, "s": "" if self.messages == 1 else "s",
                "period": self.period}


def parse_message_rate(text: str) -> MessageRate:
    """``N/t[unit]`` (smtpf's ``msgLimitParse``); raises ValueError.

    Without ``/t`` the window is one second, as in smtpf; a missing t is 1;
    N ≤ 0 disables the limit.
    """
    token = text.split()[0] if text.split() else ""
    m = _RATE.fullmatch(token)
    if m is None:
        raise ValueError(f"expected N/time[w|d|h|m|s], got {text!r}")
    messages = int(m.group(1))
    count = int(m.group(2)) if m.group(2) else 1
    letter = (m.group(3) or "s")[0].lower()
    if letter not in UNIT_SECONDS:
        raise ValueError(f"unknown time unit {m.group(3)!r} in {text!r} (w, d, h, m or s)")
    if count <= 0:
        raise ValueError(f"the time in {text!r} must be positive")
    return MessageRate(messages, count * UNIT_SECONDS[letter], letter)


def parse_size(text: str) -> int | None:
    """``N[K|M|G]`` octets (powers of 1024); None (unlimited) for a negative N or empty.

    Raises ValueError for anything else.
    """
    token = text.split()[0] if text.split() else ""
    if not token:
        return None
    m = _SIZE.fullmatch(token)
    if m is None:
        raise ValueError(f"expected N[K|M|G], got {text!r}")
    number = int(m.group(1))
    if number < 0:
        return None
    return number * _SCALE[m.group(2).lower()]


async def _gather(calls: Iterable[Awaitable[int]]) -> list[int]:
    return list(await asyncio.gather(*calls))


# --- Msg-Limit-* --------------------------------------------------------------------------

MSG_LIMIT_DISCARD = "msg-limit.discard"
REPORT_MODES = ("tempfail-report", "report-only", "report-discard")


@dataclass(frozen=True)
class FoundLimit:
    kind: str  # "to", "from" or "connect"
    who: str  # the recipient, the sender or the client IP
    rate: MessageRate

    @property
    def counter(self) -> str:
        return f"msg-limit-{self.kind}:{self.who.lower()}"


class MsgLimit(StoreCheck):
    """``Msg-Limit-Connect:``/``-From:``/``-To:`` counted per RCPT (#475)."""

    name = "msg-limit"
    family = "msg-limit"
    # 451 4.3.0 at RCPT, before any body: the recipient may be retried
    failure_reply = ReplyId.STATE_UNAVAILABLE
    failure_drops = False

    def __init__(self, config: Config, access_map: KeyValueMap, store: Store, metrics=None,
                 reporter=None):
        super().__init__(config, access_map, store, metrics)
        self.mode = config["msg-limit-report"]
        self.reporter = reporter

    def found(self, ctx: Context, rcpt: str) -> list[FoundLimit]:
        """The limits the map has for this RCPT, most specific first."""
        out = []
        for kind, who in (("to", rcpt), ("from", ctx.sender or ""), ("connect", ctx.client.ip)):
            if not who:
                continue  # the null sender has no Msg-Limit-From:
            tag = f"msg-limit-{kind}"
            hit = self.client_value(ctx, tag) if kind == "connect" else self.mail_value(tag, who)
            if hit is None:
                continue
            try:
                out.append(FoundLimit(kind, who, parse_message_rate(hit[1])))
            except ValueError:
                self.bad_value(*hit)
        return out

    async def rcpt(self, ctx: Context, rcpt: str) -> Verdict:
        limits = self.found(ctx, rcpt)
        if not limits:
            return CONTINUE
        counted = [f for f in limits if f.rate.enabled]
        try:
            counts = await aio(_gather(
                self.store.msg_limit(f.counter, period=f.rate.seconds) for f in counted))
        except StoreError as exc:
            return self.failed(ctx, exc)
        applied = limits[0]
        if not applied.rate.enabled:
            return CONTINUE
        count = counts[0]
        if count <= applied.rate.messages:
            return CONTINUE
        self.hit()
        log.info("session {sid}: {who} has exceeded {n}/{period} ({kind}: {count}); {mode}",
                 sid=ctx.session_id, who=applied.who, n=applied.rate.messages,
                 period=applied.rate.period, kind=applied.kind, count=count, mode=self.mode)
        if self.mode in REPORT_MODES and count == applied.rate.messages + 1:
            self.report(ctx, applied, rcpt)
        if self.mode == "report-only":
            return CONTINUE
        if self.mode == "report-discard":
            ctx.notes[MSG_LIMIT_DISCARD] = True
            return CONTINUE
        return tempfail(ReplyId.MESSAGE_LIMIT_EXCEEDED, **applied.rate.reply_fields(applied.who))

    def report(self, ctx: Context, applied: FoundLimit, rcpt: str) -> None:
        """smtpf sends the report once, when the limit is first exceeded in its window."""
        fields = applied.rate.reply_fields(applied.who)
        text = ("{who} has exceeded {limit} message{s} per {period}\n".format(**fields)
                + f"\nlimit: Msg-Limit-{applied.kind.title()}: {applied.rate.messages}/"
                f"{applied.rate.period}\nclient: {ctx.client.name} [{ctx.client.ip}]\n"
                f"sender: <{ctx.sender or ''}>\nrecipient: <{rcpt}>\n"
                f"action: {self.mode}\nsession: {ctx.session_id}\n")
        if self.reporter is None:
            log.warn("session {sid}: message limit report not sent (no reporter): {text}",
                     sid=ctx.session_id, text=text)
            return
        self.reporter.send("message limit exceeded", text, ctx.sender or "")

    @immediate
    def end_of_data(self, ctx: Context) -> Verdict:
        if ctx.notes.get(MSG_LIMIT_DISCARD):
            log.info("session {sid}: message {qid} discarded (msg-limit-report=report-discard)",
                     sid=ctx.session_id, qid=ctx.qid)
            return Verdict(Action.DISCARD)
        return CONTINUE


# --- Null-Rate-To: ------------------------------------------------------------------------


class NullRateTo(StoreCheck):
    """``Null-Rate-To:``: DSN/MDN recipients per 60 s, per matching map key (#505)."""

    name = "null-rate-to"
    tag = "null-rate-to"
    family = "null-rate"
    always = False  # smtpf: the usual suspects (white-listed, RELAY, localhost) are exempt
    failure_reply = ReplyId.STATE_UNAVAILABLE
    failure_drops = False

    async def rcpt(self, ctx: Context, rcpt: str) -> Verdict:
        if ctx.sender or ctx.client.localhost or ctx.client.relay:
            return CONTINUE
        hit = self.mail_value(self.tag, rcpt)
        limit = self.number(hit)
        if limit is None or limit < 0:
            return CONTINUE
        key = hit[0]
        try:
            count = await self.stored(self.store.rate(f"null:{key}"))
        except StoreError as exc:
            return self.failed(ctx, exc)
        if count > limit:
            self.hit()
            log.info("session {sid}: null-sender messages {n} for <{rcpt}> exceed {limit}/60s ({key})",
                     sid=ctx.session_id, n=count, rcpt=rcpt, limit=limit, key=key)
            return reject(ReplyId.NULL_RATE_EXCEEDED, count=count, limit=limit)
        return CONTINUE


# --- Length-* ---------------------------------------------------------------------------

LENGTH_LIMIT = "length.limit"
LENGTH_SIZE = "length.size"


class LengthLimit(StoreCheck):
    """``Length-Connect:``/``-From:``/``-To:``: the largest message, in octets (#950, #625)."""

    name = "length"
    tag = "length-connect"  # nothing is counted in the store: no state-failure family

    def __init__(self, config: Config, access_map: KeyValueMap, metrics=None):
        super().__init__(config, access_map, None, metrics)

    def _size(self, hit: tuple[str, str] | None) -> tuple[bool, int | None]:
        """(found, limit) of one lookup; a bad value counts as not found."""
        if hit is None:
            return False, None
        try:
            return True, parse_size(hit[1])
        except ValueError:
            self.bad_value(*hit)
            return False, None

    def limit_for(self, ctx: Context, rcpts: Iterable[str]) -> int | None:
        """The octets allowed (None: unlimited): To (largest) over From over Connect."""
        to = [size for found, size in (self._size(self.mail_value("length-to", r)) for r in rcpts)
              if found]
        if to:
            return None if None in to else max(to)
        found, size = self._size(self.mail_value("length-from", ctx.sender or ""))
        if found:
            return size
        return self._size(self.client_value(ctx, "length-connect"))[1]

    @immediate
    def rcpt(self, ctx: Context, rcpt: str) -> Verdict:
        declared = ctx.mail_params.get("SIZE")
        if not declared or not ascii_digits(declared):
            return CONTINUE
        limit = self.limit_for(ctx, [*ctx.rcpts, rcpt])
        if limit is not None and int(declared) > limit:
            self.hit()
            return reject(ReplyId.SIZE_OVER_LENGTH_LIMIT, size=int(declared), limit=limit)
        return CONTINUE

    @immediate
    def headers(self, ctx: Context) -> Verdict:
        ctx.notes[LENGTH_LIMIT] = self.limit_for(ctx, ctx.rcpts)
        ctx.notes[LENGTH_SIZE] = len(ctx.header_block)
        return self._check(ctx)

    @immediate
    def body(self, ctx: Context, chunk: bytes) -> Verdict:
        ctx.notes[LENGTH_SIZE] = ctx.notes.get(LENGTH_SIZE, 0) + len(chunk)
        return self._check(ctx)

    @immediate
    def end_of_data(self, ctx: Context) -> Verdict:
        return self._check(ctx)

    def _check(self, ctx: Context) -> Verdict:
        """Refuse as soon as the octets so far pass the limit: nothing more goes downstream."""
        limit, size = ctx.notes.get(LENGTH_LIMIT), ctx.notes.get(LENGTH_SIZE, 0)
        if limit is None or size <= limit:
            return CONTINUE
        self.hit()
        log.info("session {sid}: message {qid} ({size} octets so far) exceeds {limit}",
                 sid=ctx.session_id, qid=ctx.qid, size=size, limit=limit)
        return reject(ReplyId.MESSAGE_OVER_LENGTH_LIMIT, size=size, limit=limit)


def message_limit_checks(config: Config, access_map: KeyValueMap | None, store: Store | None,
                         metrics=None, reporter=None) -> dict[str, Check]:
    """The checks by name (``builtin_checks`` places them); none without a map."""
    if access_map is None:
        return {}
    checks: dict[str, Check] = {"length": LengthLimit(config, access_map, metrics)}
    if store is not None:
        checks["msg-limit"] = MsgLimit(config, access_map, store, metrics, reporter)
        checks["null-rate-to"] = NullRateTo(config, access_map, store, metrics)
    return checks
