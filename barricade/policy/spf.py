"""SPF in the SMTP dialogue, as smtpf does it (README, "SPF").

Two identities are checked (RFC 7208 2.3, 2.4): the HELO name, with the
sender ``postmaster@<helo>``, when ``spf-helo-policy`` is set; the MAIL
FROM domain when ``spf-mail-policy`` is set (the null sender checks the
HELO name as ``postmaster@<helo>``).  As in smtpf the results are computed
before the access map's ``From:`` lookup (which needs them for
``SPF-PASS``, ``POLICY-PASS`` and ``POLICY-OK``) and enforced at RCPT, after
the access map's recipient lookups, so a white-listed recipient still gets
its mail; the refusal is flagged DELAY like smtpf's.

Each policy is a list of ``softfail-reject``, ``softfail-tag``,
``fail-reject``, ``fail-tag``: a Fail (SoftFail) is refused with ``550
5.7.1`` (#701 for HELO, #702 for MAIL) or, with ``-tag`` (which wins over
``-reject``, as in smtpf), delivered with the Subject tagged
(``spamd-subject-tag``) and ``X-Spam-Flag: YES`` / ``X-Spam-Reason``
added.  Tagging happens at the end of the headers, before any of the
message goes downstream, so it works in cut-through mode too.  A HELO Pass
with the null sender skips the MAIL check (smtpf, after Meng Weng Wong's
DSN note).  With ``+spf-temp-error-dns`` (the default) a DNS failure is a
TempError, refused with ``451 4.4.3`` when the policy has a ``-reject``
word (RFC 7208 8.6; smtpf formats that reply but its policy never sends
it); with ``-spf-temp-error-dns`` DNS failures are skipped during the
evaluation and never give TempError.  None, Neutral and PermError pass.

The HELO identity is evaluated at HELO, after the HELO tests (a refused
HELO costs no lookup), or at MAIL if that did not happen for this client
and HELO name; the MAIL identity at MAIL.  The two run
side by side, each under the evaluator's time budget.

Exempt, as smtpf's "usual suspects": localhost, route-map RELAY clients and
white-listed sessions.

Results are shared through :attr:`Context.notes` for other checks
(grey-listing, client-is-mx), as :class:`barricade.spf.SpfResult`:

``session.spf.helo``
    the HELO identity's result, kept for the session (recomputed after a
    new HELO or XCLIENT); only when ``spf-helo-policy`` is set.
``spf.mail``
    the MAIL FROM identity's result for the current transaction; when
    ``spf-mail-policy`` is set, or when an access-map SPF word asked for it.
``spf.tag``
    the reason text when a ``-tag`` word decided to tag this message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from barricade.aio import aio
from barricade.options import Config, OptionError
from barricade.policy.pipeline import Check, Context, immediate
from barricade.policy.tagging import subject_tag
from barricade.policy.verdict import CONTINUE, Action, Flag, Verdict, tag
from barricade.replies import ReplyId
from barricade.spf import (
    DEFAULT_BUDGET,
    FAIL,
    PASS,
    PERMERROR,
    SOFTFAIL,
    TEMPERROR,
    Evaluator,
    Record,
    SpfError,
    SpfResult,
    parse_record,
)

log = Logger()

HELO_NOTE = "session.spf.helo"
MAIL_NOTE = "spf.mail"
TAG_NOTE = "spf.tag"
_HELO_KEY = "session.spf.helo-key"  # (client ip, helo) the HELO result is for

#: smtpf's spelling of the results in replies (libsnert spfResultString).
RESULT_NAMES = {"pass": "Pass", "fail": "Fail", "none": "None", "neutral": "Neutral",
                "softfail": "SoftFail", "temperror": "TempError", "permerror": "PermError"}
MAX_REASON = 200  # characters of explanation in a reply


@dataclass(frozen=True)
class Policy:
    """One ``spf-*-policy`` list: what to do with Fail and with SoftFail ("reject", "tag", "")."""

    fail: str = ""
    softfail: str = ""

    @classmethod
    def parse(cls, words: list[str]) -> Policy:
        lowered = {w.lower() for w in words}
        pick = {r: ("tag" if f"{r}-tag" in lowered else "reject" if f"{r}-reject" in lowered else "")
                for r in ("fail", "softfail")}
        return cls(pick["fail"], pick["softfail"])

    @property
    def active(self) -> bool:
        return bool(self.fail or self.softfail)

    @property
    def rejects(self) -> bool:
        """A TempError is temp-failed only by a policy that would refuse."""
        return "reject" in (self.fail, self.softfail)

    def action(self, result: str) -> str:
        return {FAIL: self.fail, SOFTFAIL: self.softfail}.get(result, "")


class Spf:
    """The SPF engine of a process: the evaluator, the policies, the results of a session."""

    def __init__(self, config: Config, resolver: Any, hostname: str = "", metrics: Any = None):
        """Raises OptionError for a bad ``spf-best-guess-txt``."""
        self.helo_policy = Policy.parse(config["spf-helo-policy"])
        self.mail_policy = Policy.parse(config["spf-mail-policy"])
        self.received_headers = config["spf-received-spf-headers"]
        self.hostname = hostname or "unknown"
        self.metrics = metrics
        self.subject_tag = subject_tag(config)
        guess = config["spf-best-guess-txt"].strip()
        self.best_guess: Record | None = None
        if guess:
            if not guess.lower().startswith("v=spf1"):
                guess = "v=spf1 " + guess
            try:
                self.best_guess = parse_record(guess)
            except SpfError as exc:
                raise OptionError(f"option spf-best-guess-txt: {exc}") from None
        budget = max(DEFAULT_BUDGET, float(config["dns-max-timeout"]))
        self.evaluator = Evaluator(resolver, self.hostname, budget, config["spf-temp-error-dns"])
        # HELO and MAIL are evaluated side by side, each maybe twice (best guess).
        self.timeout = 2 * budget + 5

    @staticmethod
    def exempt(ctx: Context) -> bool:
        """smtpf's usual suspects: localhost, RELAY and white-listed clients."""
        return ctx.client.localhost or ctx.client.relay or ctx.trusted

    # --- results, computed once and kept in ctx.notes ---------------------------------

    async def helo_result(self, ctx: Context) -> SpfResult | None:
        """The HELO identity's result (computed on first use after each HELO/XCLIENT)."""
        if not ctx.helo or self.exempt(ctx):
            return None
        key = (ctx.client.ip, ctx.helo.lower())
        if ctx.notes.get(_HELO_KEY) != key:
            ctx.notes[HELO_NOTE] = await aio(self.evaluate(ctx, "helo", ctx.helo, ""))
            ctx.notes[_HELO_KEY] = key
        return ctx.notes[HELO_NOTE]

    async def mail_result(self, ctx: Context) -> SpfResult | None:
        """The MAIL FROM identity's result for this transaction (the null sender: HELO)."""
        if ctx.sender is None or self.exempt(ctx):
            return None
        if MAIL_NOTE not in ctx.notes:
            sender = ctx.sender
            domain = sender.rpartition("@")[2] if sender else ctx.helo
            ctx.notes[MAIL_NOTE] = await aio(self.evaluate(ctx, "mail", domain, sender))
        return ctx.notes[MAIL_NOTE]

    async def evaluate(self, ctx: Context, scope: str, domain: str, sender: str) -> SpfResult:
        """check_host, then the best guess when that is not a Pass (asyncio coroutine)."""
        ip, helo = ctx.client.ip, ctx.helo
        try:
            result = await self.evaluator.check_host(ip, domain, sender, helo)
            if result.result != PASS and self.best_guess is not None:
                guess = await self.evaluator.check_host(ip, domain, sender, helo, record=self.best_guess)
                if guess.result == PASS:
                    log.info("session {sid}: SPF {scope} {domain}: {result}, best guess passes ({mech})",
                             sid=ctx.session_id, scope=scope, domain=domain, result=result.result,
                             mech=guess.mechanism)
                    result = replace(guess, best_guess=True)
        except Exception:
            # A bug must not temp-fail everybody's mail: log it, and let PermError (which
            # no policy refuses) stand for the result.
            log.failure("session {sid}: SPF {scope} {domain} failed", sid=ctx.session_id, scope=scope,
                        domain=domain)
            result = SpfResult(PERMERROR, domain, problem="internal error")
        log.info("session {sid}: SPF {scope} {sender} from [{ip}]: {result}{why}", sid=ctx.session_id,
                 scope=scope, sender=result.sender, ip=ip, result=result.result,
                 why=f" ({result.mechanism or result.problem})" if result.mechanism or result.problem else "")
        if self.metrics is not None:
            self.metrics.count(self.metrics.spf_results, scope, result.result)
        return result

    # --- the policy -------------------------------------------------------------------

    def decide(self, ctx: Context) -> Verdict:
        """smtpf's spfRcpt: the HELO policy, then (unless HELO passed a DSN) the MAIL policy."""
        tagged: Verdict | None = None  # a HELO tag: the MAIL policy may still refuse
        helo = ctx.notes.get(HELO_NOTE) if self.helo_policy.active else None
        if helo is not None and ctx.notes.get(_HELO_KEY) == (ctx.client.ip, ctx.helo.lower()):
            verdict = self._apply(ctx, self.helo_policy, helo, ReplyId.SPF_HELO)
            if verdict.action is Action.TAG:
                tagged = verdict
            elif verdict.action is not Action.CONTINUE:
                return verdict
            if helo.result == PASS and not ctx.sender:
                return tagged or CONTINUE
        mail = ctx.notes.get(MAIL_NOTE) if self.mail_policy.active else None
        if mail is not None:
            verdict = self._apply(ctx, self.mail_policy, mail, ReplyId.SPF_MAIL)
            if verdict.decisive or tagged is None:
                return verdict
        return tagged or CONTINUE

    def _apply(self, ctx: Context, policy: Policy, result: SpfResult, rid: int) -> Verdict:
        action = policy.action(result.result)
        if result.result == TEMPERROR and policy.rejects:
            action = "tempfail"
        if not action:
            return CONTINUE
        fields = {"result": RESULT_NAMES.get(result.result, result.result),
                  "explanation": reason(result, ctx.client.ip)}
        if action == "tag":
            if TAG_NOTE not in ctx.notes:
                ctx.notes[TAG_NOTE] = True
                log.info("session {sid}: SPF {result}: message will be tagged", sid=ctx.session_id,
                         result=result.result)
            return tag(reason=tag_reason(ctx, rid, fields))
        if action == "tempfail":
            code, status, verb = 451, "4.4.3", Action.TEMPFAIL
        else:
            code, status, verb = 550, "5.7.1", Action.REJECT
        return Verdict(verb, rid, {"code": code, "status": status, **fields}, Flag.DELAY)

    # --- Received-SPF (RFC 7208 9.1) ------------------------------------------------------

    def received_spf(self, ctx: Context, identity: str, result: SpfResult) -> str:
        return received_spf(result, identity, ctx.client.ip, ctx.helo, self.hostname)


def reason(result: SpfResult, ip: str) -> str:
    """The explanation a reply gives: the domain's exp= text, the problem, or a plain one."""
    text = result.explanation or result.problem
    if not text:
        if result.result in (FAIL, SOFTFAIL):
            text = f"{result.domain} does not designate {ip} as permitted sender"
        else:
            text = f"{result.domain} gave {RESULT_NAMES.get(result.result, result.result)}"
    return text[:MAX_REASON]


def tag_reason(ctx: Context, rid: int, fields: dict[str, str]) -> str:
    """The X-Spam-Reason of a tagged message: the refusal it stands for, without the code."""
    client = f"{ctx.client.name} [{ctx.client.ip}]"
    if rid == ReplyId.SPF_HELO:
        return f"HELO {ctx.helo} from {client} SPF result {fields['result']}; {fields['explanation']}"
    return (f"sender <{ctx.sender or ''}> via {ctx.helo} ({client}) SPF result {fields['result']}; "
            f"{fields['explanation']}")


# --- the header ---------------------------------------------------------------------------

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")
_COMMENTS = {
    "pass": "domain of {s} designates {ip} as permitted sender",
    "fail": "domain of {s} does not designate {ip} as permitted sender",
    "softfail": "domain of transitioning {s} does not designate {ip} as permitted sender",
    "neutral": "{ip} is neither permitted nor denied by domain of {s}",
    "none": "domain of {s} does not designate permitted sender hosts",
    "temperror": "error in processing during lookup of {s}",
    "permerror": "permanent error in processing domain of {s}",
}


def _value(text: str) -> str:
    """A key-value pair's value: a dot-atom as it is, anything else quoted (RFC 5322)."""
    if _DOT_ATOM.fullmatch(text):
        return text
    return '"' + re.sub(r'(["\\])', r"\\\1", re.sub(r"[^\x20-\x7e]", "?", text)) + '"'


def _comment(text: str) -> str:
    return re.sub(r"([()\\])", r"\\\1", re.sub(r"[^\x20-\x7e]", "?", text))


def received_spf(result: SpfResult, identity: str, ip: str, helo: str, receiver: str) -> str:
    """The Received-SPF value (RFC 7208 9.1): result, comment, then key=value pairs.

    ``identity`` is ``helo`` or ``mailfrom``; ``envelope-from`` is the
    mailbox checked (postmaster@helo for HELO and the null sender).
    """
    comment = _COMMENTS[result.result].format(s=result.sender or result.domain, ip=ip)
    if result.best_guess:
        comment += ", by the best-guess record"
    pairs = [("client-ip", ip), ("envelope-from", result.sender), ("helo", helo or "unknown"),
             ("receiver", receiver), ("identity", identity)]
    if result.mechanism:
        pairs.append(("mechanism", result.mechanism))
    if result.problem:
        pairs.append(("problem", result.problem[:200]))
    kvs = "; ".join(f"{k}={_value(v)}" for k, v in pairs)
    return f"{result.result} ({_comment(receiver)}: {_comment(comment)})\r\n\t{kvs};"


# --- the checks -------------------------------------------------------------------------------


def exempt_client(client) -> bool:
    """Localhost and RELAY clients: :meth:`Spf.exempt` whatever the white lists say, so
    no SPF hook has anything to do for them and the pipeline skips them unrun."""
    return client.localhost or client.relay


class SpfMail(Check):
    """At MAIL, before the access map's From: (which may need it): compute the results.

    Marked ``always`` so that its headers hook adds Received-SPF to mail
    that was white-listed after the results were computed; the MAIL hook
    applies smtpf's exemptions itself.
    """

    name = "spf"
    always = True
    exempt_client = staticmethod(exempt_client)  # both hooks find nothing to do for them

    def __init__(self, spf: Spf):
        self.spf = spf
        self.timeout = spf.timeout

    async def mail(self, ctx: Context) -> Verdict:
        spf = self.spf
        if spf.exempt(ctx):
            return CONTINUE
        wanted = []
        if spf.helo_policy.active:
            wanted.append(spf.helo_result(ctx))
        if spf.mail_policy.active:
            wanted.append(spf.mail_result(ctx))
        if wanted:
            await _together(wanted)
        return CONTINUE

    @immediate
    def headers(self, ctx: Context) -> Verdict:
        spf = self.spf
        if not spf.received_headers:
            return CONTINUE
        helo = ctx.notes.get(HELO_NOTE)
        if helo is not None and ctx.notes.get(_HELO_KEY) == (ctx.client.ip, ctx.helo.lower()):
            ctx.add_header("Received-SPF", spf.received_spf(ctx, "helo", helo))
        mail = ctx.notes.get(MAIL_NOTE)
        if mail is not None:
            ctx.add_header("Received-SPF", spf.received_spf(ctx, "mailfrom", mail))
        return CONTINUE


class SpfHelo(Check):
    """At HELO, after the HELO tests: evaluate the HELO identity (``spf-helo-policy``)."""

    name = "spf-helo"
    exempt_client = staticmethod(exempt_client)

    def __init__(self, spf: Spf):
        self.spf = spf
        self.timeout = spf.timeout

    async def helo(self, ctx: Context) -> Verdict:
        if self.spf.helo_policy.active:
            await self.spf.helo_result(ctx)
        return CONTINUE


class SpfPolicy(Check):
    """At RCPT: refuse (#701/#702) or tag (a TAG verdict, applied to the headers)."""

    name = "spf-policy"
    exempt_client = staticmethod(exempt_client)

    def __init__(self, spf: Spf):
        self.spf = spf

    @immediate
    def rcpt(self, ctx: Context, rcpt: str) -> Verdict:
        if self.spf.exempt(ctx):
            return CONTINUE
        return self.spf.decide(ctx)


async def _together(coros: list) -> None:
    """Run check-side coroutines (each awaiting its own asyncio work) side by side."""
    await defer.gatherResults([defer.ensureDeferred(c) for c in coros], consumeErrors=True)


def spf_engine(config: Config, resolver: Any, hostname: str = "", metrics: Any = None) -> Spf | None:
    """The engine, when there is a resolver to ask."""
    if resolver is None:
        return None
    return Spf(config, resolver, hostname, metrics)


def spf_checks(spf: Spf | None) -> tuple[list[Check], list[Check], list[Check]]:
    """The checks for the MAIL phase (always, for the access map's SPF words and the
    headers), the HELO phase and the RCPT phase (when a policy is set)."""
    if spf is None:
        return [], [], []
    helo = [SpfHelo(spf)] if spf.helo_policy.active else []
    rcpt = [SpfPolicy(spf)] if spf.helo_policy.active or spf.mail_policy.active else []
    return [SpfMail(spf)], helo, rcpt

