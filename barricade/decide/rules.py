"""The per-event rules of a proxy session: verdict → reply, holds, routing, results.

:class:`Rules` keeps the little decision state a session has (the refusals
``smtp-delay-checks`` holds for the RCPT, whether a downstream with
accepted recipients was lost) and answers each event from the phase's
verdict and the :class:`~barricade.policy.pipeline.Context`.  It sends and
waits for nothing: the conductor runs the checks and the downstream
connections, and hands their results here.  The rules that keep mail safe:

* a RCPT gets 250 only when the downstream RCPT got 250;
* the client gets 354 only when every downstream host said 354;
* the final dot is acknowledged only when every downstream host said 250;
* when results differ between routes, the client gets a temporary failure
  (see :mod:`barricade.decide.aggregate`);
* a lost downstream is #903 before DATA and #902 (closing) during it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from barricade.decide.aggregate import Combined, combine, succeeded
from barricade.decide.outcome import Downstream, Outcome
from barricade.policy.verdict import DISCARD_NOTE, SESSION_DISCARD_NOTE, Action, Flag, Verdict, discarding
from barricade.replies import Catalogue, Reply
from barricade.replies import ReplyId as R

if TYPE_CHECKING:
    from barricade.maps import Route, RouteMap
    from barricade.policy.pipeline import Context

#: The phases whose refusals hold for the whole session under smtp-delay-checks.
SESSION_PHASES = ("connect", "helo")
#: The fields every reply of a session is rendered with.
STANDARD_FIELDS = frozenset(("hostname", "client_name", "client_ip", "helo", "sender", "code", "status"))
#: Verdict fields that shape the reply itself rather than fill its text.
SHAPING_FIELDS = frozenset(("code", "status", "lines", "extra"))
#: An RFC 3463 enhanced status code.
ENHANCED = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")
#: The code a relayed entry gets when a verdict's own code does not fit.
DEFAULT_CODE = {Action.REJECT: 550, Action.TEMPFAIL: 451, Action.DROP: 421, Action.DISCARD: 250}
#: The reply code classes each decisive action may use.
CODE_CLASS = {Action.REJECT: ("5",), Action.TEMPFAIL: ("4",), Action.DROP: ("4", "5"),
              Action.DISCARD: ("2",)}


class _Quiet:
    """The log of rules used without a daemon (tests): says nothing."""

    def info(self, *args: Any, **kw: Any) -> None:
        pass

    warn = error = info


class Rules:
    """One session's decisions (see the module docstring)."""

    def __init__(self, catalogue: Catalogue, routes: RouteMap, hostname: str, *,
                 delay_checks: bool = False, relay_reply: bool = False,
                 banner: Sequence[str] = (), esmtp: bool = True, subject_tag: str = "[SPAM]",
                 log: Any = None):
        self.catalogue = catalogue
        self.routes = routes
        self.hostname = hostname
        self.delay_checks = delay_checks
        self.relay_reply = relay_reply
        self.banner = tuple(banner) or ("Barricade ready",)
        self.esmtp = esmtp
        self.subject_tag = subject_tag
        self.log = log or _Quiet()
        self.held: Outcome | None = None  # smtp-delay-checks: a MAIL refusal waiting for RCPT
        self.held_session: Outcome | None = None  # ... a connect/HELO refusal
        self.broken = False  # a downstream with accepted recipients was lost
        self.auth_route: Route | None = None  # SMTP AUTH: every recipient goes there

    # --- replies --------------------------------------------------------------------

    def reply(self, ctx: Context, rid: int, **fields: object) -> Reply:
        """Catalogue reply ``rid`` with the session's standard fields filled in.

        Only those its text shows are looked up (most show one or none):
        every command's reply comes through here.
        """
        rid = int(rid)
        for name in self.catalogue.names(rid):
            if name in fields:
                continue
            if name == "hostname":
                fields[name] = self.hostname
            elif name == "client_name":
                fields[name] = ctx.client.name
            elif name == "client_ip":
                fields[name] = ctx.client.ip
            elif name == "helo":
                fields[name] = ctx.helo
            elif name == "sender":
                fields[name] = ctx.sender or ""
        return self.catalogue.reply(rid, **fields)

    def say(self, ctx: Context, rid: int, **fields: object) -> Outcome:
        return Outcome(self.reply(ctx, rid, **fields))

    def verdict_outcome(self, ctx: Context, verdict: Verdict) -> Outcome:
        """A decisive verdict's reply; a verdict without a known reply id is #907."""
        if verdict.reply_id is None or verdict.reply_id not in self.catalogue:
            self.log.error("check {check} gave {action} with reply {rid}, which is not in the "
                           "catalogue (session {sid}): answered #907", check=verdict.check,
                           action=verdict.action.value, rid=verdict.reply_id, sid=ctx.session_id)
            return Outcome(self.reply(ctx, R.PROCESSING_ERROR))
        missing = self.catalogue.spec(verdict.reply_id).fields - STANDARD_FIELDS - set(verdict.fields)
        if missing:
            self.log.warn("check {check}: reply #{rid} rendered without field(s) {missing} "
                          "(session {sid})", check=verdict.check, rid=verdict.reply_id,
                          missing=", ".join(sorted(missing)), sid=ctx.session_id)
        fields = self.reply_fields(ctx, verdict)
        reply = self.reply(ctx, verdict.reply_id, **fields)
        if verdict.action is Action.DROP and reply.temporary and reply.code != 421:
            # RFC 5321 3.8: a server that closes the connection says 421 (a 450 greeting
            # and then a close reads as a connection lost); the id and the text stay.
            reply = self.reply(ctx, verdict.reply_id, **{**fields, "code": 421})
        expected = CODE_CLASS.get(verdict.action)
        if expected and str(reply.code)[0] not in expected:
            self.log.error("check {check} gave {action} with reply #{rid} ({code}): {action} needs a "
                           "{want}xx reply (session {sid})", check=verdict.check,
                           action=verdict.action.value, rid=verdict.reply_id, code=reply.code,
                           want="/".join(expected), sid=ctx.session_id)
            if reply.positive and verdict.action is not Action.DISCARD:
                # A refusal must never read as a yes: the client would take the recipient
                # or the message for accepted, and nothing would be delivered.
                return Outcome(self.reply(ctx, R.PROCESSING_ERROR), drop=verdict.action is Action.DROP,
                               check=verdict.check)
        return Outcome(reply, drop=verdict.action is Action.DROP, check=verdict.check)

    def reply_fields(self, ctx: Context, verdict: Verdict) -> dict[str, Any]:
        """The verdict's fields, with the ones that shape the reply checked.

        ``code`` and ``status`` (SPF, call-back, the external program choose them) and
        ``lines``/``extra`` go to the catalogue as the reply's own: a code of another
        class than the action's, a status that is no RFC 3463 status of the code's
        class, or a text where lines are meant, is left out (and logged), so a plugin's
        ``reject(rid, code=250)`` cannot read as a yes, nor ``status="..."`` make an
        unbounded metrics label."""
        fields = verdict.fields
        if not SHAPING_FIELDS & fields.keys():
            return fields
        fields = dict(fields)
        expected = CODE_CLASS.get(verdict.action)
        code = fields.get("code")
        if code is not None and not (type(code) is int and 200 <= code < 600
                                     and (not expected or str(code)[0] in expected)):
            self._dropped_field(ctx, verdict, "code", fields.pop("code"))
            code = None
        spec_code = self.catalogue.spec(verdict.reply_id).code
        if code is None and not spec_code:  # a relayed entry needs a code: the action's own
            code = fields["code"] = DEFAULT_CODE.get(verdict.action, 451)
        code = code or spec_code
        status = fields.get("status")
        if status is not None and not (isinstance(status, str) and ENHANCED.fullmatch(status)
                                       and status[0] == str(code)[0]):
            self._dropped_field(ctx, verdict, "status", fields.pop("status"))
            if not spec_code:
                fields["status"] = f"{str(code)[0]}.0.0"
        for name in ("lines", "extra"):
            value = fields.get(name)
            if value is not None and (isinstance(value, (str, bytes))
                                      or not all(isinstance(v, str) for v in value)):
                self._dropped_field(ctx, verdict, name, fields.pop(name))
        return fields

    def _dropped_field(self, ctx: Context, verdict: Verdict, name: str, value: Any) -> None:
        self.log.error("check {check}: reply #{rid}: field {name}={value!r} left out: it does not "
                       "fit a {action} reply (session {sid})", check=verdict.check, rid=verdict.reply_id,
                       name=name, value=str(value)[:60], action=verdict.action.value, sid=ctx.session_id)

    def passthrough(self, reply: Any) -> Reply:
        """#299: the downstream reply as it came (``+relay-reply``), every line of it (the
        lines after the first often say why, or where to ask for a delisting)."""
        status = reply.status or f"{reply.code // 100}.0.0"
        return self.catalogue.reply(R.DOWNSTREAM_REPLY, code=reply.code, status=status, text=reply.text,
                                    lines=reply.more)

    # --- smtp-delay-checks ----------------------------------------------------------------

    def hold(self, ctx: Context, verdict: Verdict, phase: str) -> Outcome | None:
        """``+smtp-delay-checks``: keep a policy refusal for the RCPT; the held outcome or None.

        Only verdicts flagged DELAY are held (IREJECT and protocol errors
        never are).  Connect and HELO refusals hold for the session, MAIL
        refusals for the transaction.
        """
        if not self.delay_checks or Flag.DELAY not in verdict.flags:
            return None
        outcome = self.verdict_outcome(ctx, verdict)
        if phase in SESSION_PHASES or Flag.SESSION in verdict.flags:
            self.held_session = self.held_session or outcome
        else:
            self.held = self.held or outcome
        self.log.info("session {sid}: {phase} refusal held until RCPT (smtp-delay-checks): {reply}",
                      sid=ctx.session_id, phase=phase, reply=outcome.reply.text)
        return outcome

    def held_for(self, verdict: Verdict) -> Outcome | None:
        """The refusal held for this RCPT, unless its own checks white-listed the recipient.

        A black-listed recipient is refused on its own account before this
        is asked; any other gets the held reply.
        """
        held = self.held_session or self.held
        return held if verdict.action is not Action.ACCEPT else None

    # --- connect, HELO, MAIL ----------------------------------------------------------------

    def new_client(self) -> None:
        """A new client (a connection, or XCLIENT): nothing held any more."""
        self.held = self.held_session = None

    def greeting(self, ctx: Context) -> Reply:
        """smtpf's one-line #632 for the clients it trusts (localhost, RELAY, a
        white-listed session), the full banner #633 for everybody else."""
        esmtp = "E" if self.esmtp else ""
        if ctx.client.localhost or ctx.client.relay or ctx.white_session:
            return self.reply(ctx, R.GREETING_SHORT, esmtp=esmtp)
        return self.reply(ctx, R.GREETING, esmtp=esmtp, banner=self.banner[0], lines=self.banner[1:])

    def refusal(self, ctx: Context, phase: str, verdict: Verdict) -> Outcome | None:
        """The refusal a connect, HELO or MAIL verdict gives now.

        None when the verdict is not decisive, or when ``smtp-delay-checks``
        holds it for the RCPT (then :attr:`held` or :attr:`held_session` has it).
        """
        if not verdict.decisive or self.early_discard(ctx, verdict, phase):
            return None
        if self.hold(ctx, verdict, phase) is not None:
            return None
        return self.verdict_outcome(ctx, verdict)

    @staticmethod
    def early_discard(ctx: Context, verdict: Verdict, phase: str) -> bool:
        """A DISCARD before the message: the message (connect, HELO: every message of the
        session) is accepted at the dot and dropped, as an access-map DISCARD does, and
        the command goes on.  Answered at once, a 250 to MAIL with the transaction
        forgotten let the message through with a null sender."""
        if verdict.action is not Action.DISCARD:
            return False
        ctx.notes[SESSION_DISCARD_NOTE if phase in SESSION_PHASES else DISCARD_NOTE] = True
        return True

    def connect(self, ctx: Context, verdict: Verdict) -> Outcome:
        """The connect checks' verdict → the greeting, or a refusal (sink or drop)."""
        outcome = self.refusal(ctx, "connect", verdict)
        if outcome is not None:
            outcome.sink = Flag.SINK in verdict.flags and not outcome.drop
            return outcome
        return Outcome(self.greeting(ctx))

    def helo(self, ctx: Context, verdict: Verdict, ehlo: bool, keywords: Sequence[str] = ()) -> Outcome:
        outcome = self.refusal(ctx, "helo", verdict)
        if outcome is not None:
            return outcome
        if ehlo:
            return Outcome(self.reply(ctx, R.EHLO, extra=list(keywords)))
        return self.say(ctx, R.HELO)

    def new_transaction(self) -> None:
        """MAIL: what a former transaction held or broke is forgotten."""
        self.broken = False
        self.held = None

    def mail(self, ctx: Context, verdict: Verdict) -> Outcome:
        if verdict.decisive and not self.early_discard(ctx, verdict, "mail"):
            outcome = self.refusal(ctx, "mail", verdict)
            if outcome is None:
                return self.say(ctx, R.HELD_PROCEED)  # "250 2.0.0 proceed": the refusal waits
            ctx.reset_transaction()
            return outcome
        return self.say(ctx, R.SENDER_ACCEPTED)

    # --- RCPT ----------------------------------------------------------------------------

    def route_for(self, ctx: Context, rcpt: str) -> Route | None:
        """A relay client's mail goes to the local route (an authenticated one's to the
        connection that authenticated); others only where the route map says."""
        if self.auth_route is not None:
            return self.auth_route
        if ctx.client.relay:
            return self.routes.local
        return self.routes.for_recipient(rcpt)

    def before_rcpt_checks(self, ctx: Context, rcpt: str) -> Route | Outcome:
        """Routing comes first: no route (and no relaying) is #288, a broken transaction #903."""
        route = self.route_for(ctx, rcpt)
        if route is None:
            return self.say(ctx, R.RELAYING_DENIED, rcpt=rcpt)
        if self.broken:
            return self.say(ctx, R.LOST_DOWNSTREAM, rcpt=rcpt)
        return route

    def rcpt(self, ctx: Context, verdict: Verdict, rcpt: str, route: Route) -> Outcome:
        """The RCPT checks' verdict → a refusal, the held refusal, or relay to ``route``."""
        if verdict.decisive and not self.early_discard(ctx, verdict, "rcpt"):
            return self.verdict_outcome(ctx, Verdict(verdict.action, verdict.reply_id,
                                                     {"rcpt": rcpt, **verdict.fields},
                                                     check=verdict.check))
        held = self.held_for(verdict)
        if held is not None:
            return held
        return Outcome(None, downstream=Downstream.RELAY, route=route)

    def call_ahead_for(self, ctx: Context, route: Route) -> bool:
        """Does this recipient need a call-ahead (route-map RCPT:) before it is relayed?"""
        return bool(route.rcpt) and not ctx.client.relay

    def unknown_recipient(self, ctx: Context, rcpt: str) -> Outcome:
        return self.say(ctx, R.RECIPIENT_UNKNOWN, rcpt=rcpt)

    def mail_refused(self, ctx: Context, mail: Any) -> Outcome:
        """#282: the downstream refused the relayed MAIL FROM (its code and status, our text)."""
        status = mail.status or f"{mail.code // 100}.1.0"
        return Outcome(self.catalogue.reply(R.SENDER_REFUSED_DOWNSTREAM, code=mail.code, status=status, sender=ctx.sender or ""))

    def relayed_rcpt(self, ctx: Context, reply: Any, rcpt: str) -> Outcome:
        """The downstream's answer to a relayed RCPT: 250 only after its 250."""
        if reply.ok:
            ctx.rcpts.append(rcpt)
            # smtpf: #297 for an accepted recipient, #290 when DISCARD will drop the message.
            rid = R.RECIPIENT_ACCEPTED_DISCARD if discarding(ctx) else R.RECIPIENT_ACCEPTED
            return self.say(ctx, rid, rcpt=rcpt)
        if self.relay_reply:
            return Outcome(self.passthrough(reply))
        status = reply.status or f"{reply.code // 100}.1.0"
        return Outcome(self.catalogue.reply(R.RECIPIENT_REFUSED_DOWNSTREAM, code=reply.code, status=status, rcpt=rcpt))

    def rcpt_lost(self, ctx: Context, kind: str, rcpt: str, had_recipients: bool,
                  other_routes: bool) -> Outcome:
        """The route's downstream failed during RCPT (``kind``: connect, descriptors, lost,
        timeout, protocol)."""
        if had_recipients:
            self.broken = True
        if kind == "timeout":
            return self.say(ctx, R.DOWNSTREAM_TIMEOUT)
        if kind == "descriptors":  # this process is out of file descriptors, not the MTA down
            return self.say(ctx, R.NO_DESCRIPTORS_DOWNSTREAM)
        if kind == "connect":
            if other_routes:  # other routes carry this transaction: only this recipient waits
                return self.say(ctx, R.ROUTE_UNAVAILABLE, rcpt=rcpt)
            return self.say(ctx, R.NO_FORWARDER)
        return self.say(ctx, R.LOST_DOWNSTREAM)

    # --- DATA and the dot ------------------------------------------------------------------

    def before_data_checks(self, ctx: Context, recipients: bool) -> Outcome | None:
        """Never 354 without a downstream that accepted a recipient (#923), nor after a loss (#903)."""
        if self.broken:
            return Outcome(self.reply(ctx, R.LOST_DOWNSTREAM), downstream=Downstream.END)
        if not recipients:
            return Outcome(self.reply(ctx, R.NO_VALID_RECIPIENTS), downstream=Downstream.END)
        return None

    def data(self, ctx: Context, verdict: Verdict) -> Outcome | None:
        """The DATA checks' refusal (the transaction ends), or None: ask the downstreams."""
        if verdict.decisive and not self.early_discard(ctx, verdict, "data"):
            self.transaction_ended(ctx)
            outcome = self.verdict_outcome(ctx, verdict)
            outcome.downstream = Downstream.END
            return outcome
        return None

    def data_started(self, ctx: Context, results: Sequence[Any]) -> Outcome:
        """354 only when every downstream said 354 (none asked yet when spooling)."""
        if not results or succeeded(results, 354):
            return self.say(ctx, R.ENTER_MAIL)
        outcome = self._combined(ctx, combine(results, 354, R.LOST_DOWNSTREAM, self.relay_reply))
        outcome.downstream = Downstream.ABORT
        return outcome

    def content(self, ctx: Context, verdict: Verdict) -> Outcome | None:
        """A headers or body verdict: a refusal aborts the downstream transfer before any dot."""
        if verdict.decisive:
            outcome = self.verdict_outcome(ctx, verdict)
            outcome.downstream = Downstream.ABORT
            outcome.message = "reject"
            return outcome
        return None

    def apply_tags(self, ctx: Context) -> None:
        """Mark the message for the TAG verdicts so far (the first reason wins).

        The reason is the verdict's ``reason`` field, or the text of its reply.
        """
        for verdict in (*ctx.session_tags, *ctx.tags):
            reason = verdict.fields.get("reason")
            if not reason and verdict.reply_id is not None and verdict.reply_id in self.catalogue:
                reason = self.reply(ctx, verdict.reply_id, **verdict.fields).text
            ctx.tag(self.subject_tag, str(reason or f"tagged by {verdict.check}"))
        ctx.tags = []

    def late_tags(self, ctx: Context) -> None:
        """TAG verdicts that came after the headers went downstream (cut-through): logged."""
        for verdict in ctx.tags:
            self.log.warn("session {sid}: check {check} tagged message {qid} after its headers went "
                          "downstream; tagging in body or end_of_data needs a spooled message",
                          sid=ctx.session_id, check=verdict.check, qid=ctx.qid)
        ctx.tags = []

    def end_of_data(self, ctx: Context, verdict: Verdict) -> Outcome | None:
        """The end-of-data checks: DISCARD is a 250 with nothing delivered; None: send the dot."""
        if not verdict.decisive:
            return None
        if verdict.action is Action.DISCARD:
            outcome = self.say(ctx, R.MESSAGE_ACCEPTED, qid=ctx.qid)
            outcome.message = "discard"
            outcome.check = verdict.check
        else:
            outcome = self.verdict_outcome(ctx, verdict)
            outcome.message = "reject"
        outcome.downstream = Downstream.ABORT
        return outcome

    def delivered(self, ctx: Context, results: Sequence[Any]) -> Outcome:
        """The downstreams' answers to the dot: 250 only when every one said 250.

        ``Outcome.message`` is "accept" exactly when the message was delivered.
        """
        if succeeded(results, 250):
            outcome = self.say(ctx, R.MESSAGE_ACCEPTED, qid=ctx.qid)
            outcome.message = "accept"
            return outcome
        outcome = self._combined(ctx, combine(results, 250, R.LOST_DURING_DATA, self.relay_reply))
        outcome.message = "downstream-fail"
        return outcome

    def _combined(self, ctx: Context, combined: Combined) -> Outcome:
        if combined.relayed is not None:
            return Outcome(self.passthrough(combined.relayed), drop=combined.drop)
        return Outcome(self.reply(ctx, combined.reply_id), drop=combined.drop)

    # --- the rest ------------------------------------------------------------------------

    def transaction_ended(self, ctx: Context) -> None:
        """RSET, HELO, STARTTLS, XCLIENT, a refused DATA: the transaction is over."""
        ctx.reset_transaction()
        self.broken = False
        self.held = None

    def simple(self, ctx: Context, verb: str, **fields: object) -> Outcome:
        """The commands that need no check: RSET, NOOP, HELP, VRFY, QUIT, STARTTLS."""
        rid = SIMPLE[verb]
        outcome = self.say(ctx, rid, **fields)
        outcome.start_tls = verb == "starttls"
        return outcome

    def xclient(self, ctx: Context, outcome: Outcome, helo: str | None = None) -> Outcome:
        """After XCLIENT's connect phase: a refusal closes, unless it sinks.

        Accepted or not, the session goes on (or ends) as the client XCLIENT
        named, with the name DNS gave it: the outcome carries that identity
        for the adapter to hand to the protocol session.
        """
        if outcome.reply is not None and outcome.reply.code != 220 and not outcome.sink:
            outcome.drop = True
        outcome.client = ctx.client
        outcome.client_helo = helo
        return outcome


#: Replies of the commands no check looks at.
SIMPLE = {"rset": R.OK, "noop": R.OK, "help": R.HELP, "vrfy": R.VRFY, "quit": R.CLOSING,
          "starttls": R.START_TLS}
