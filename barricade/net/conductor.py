"""The conductor: carries out, for one client session, what the decision layer decides.

The server adapter feeds events in; :class:`Proxy` runs the phase's checks,
hands the verdict to :class:`~barricade.decide.rules.Rules` (which chooses
the reply, holds refusals, routes recipients and combines the downstream
results: the rules that keep mail safe live there), and does the I/O the
decision asks for: it opens, relays to and closes the downstream
connections, and streams or spools the message.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from barricade import client as clients
from barricade.decide.identity import xclient_identity
from barricade.decide.outcome import Downstream as Act
from barricade.decide.outcome import Outcome
from barricade.decide.rules import Rules
from barricade.decision_log import STAGE_OF, Pending
from barricade.drive import drive
from barricade.logs import emit_decision, info_line
from barricade.maps import Route, RouteMap
from barricade.metrics import Metrics
from barricade.net.authenticate import Authenticator
from barricade.net.forward import Downstream, DownstreamError, DownstreamReply, Timeouts, client_tls
from barricade.options import Config
from barricade.policy.client_name import resolve_client
from barricade.policy.pipeline import Context, Pipeline
from barricade.policy.tagging import subject_tag
from barricade.policy.verdict import Verdict
from barricade.protocol import events as ev
from barricade.protocol.capabilities import Offer
from barricade.protocol.client_identity import identity, xclient_commands, xforward_commands
from barricade.protocol.downstream_tls import PLAIN, decide, parse_policy
from barricade.protocol.message import HeaderCollector, edit_headers, parse_headers, received_header
from barricade.protocol.session import SessionConfig
from barricade.replies import Catalogue, Reply, ReplyId
from barricade.spool import Spool

log = Logger()


@dataclass
class ServerContext:
    """Everything sessions of one listener share."""

    config: Config
    catalogue: Catalogue
    routes: RouteMap
    pipeline: Pipeline
    metrics: Metrics
    reactor: object
    hostname: str
    session_config: SessionConfig
    timeouts: Timeouts
    banner: tuple[str, ...] = ()
    tls_context: object = None
    store: object = None  # barricade.state.Store: rate, concurrency, grey-list state
    call_ahead: object = None  # barricade.policy.callahead.CallAhead (route-map RCPT:)
    resolver: object = None  # barricade.dns.Resolver; None: no DNS (client names stay unknown)
    capabilities: object = None  # barricade.net.capability_probe.CapabilityProbe; None: static EHLO
    downstreams: object = None  # barricade.net.pool.DownstreamPool; None: QUIT at session end
    admin: object = None  # barricade.net.admin.Admin: the localhost admin commands


#: The LAN networks of the client identity (kept under its old name).
LAN_NETWORKS = tuple(net for net, kind in clients.NETWORKS if kind & clients.PRIVATE)


def classify(ip: str, port: int, name: str, routes: RouteMap, proto: str = "SMTP") -> ev.ClientInfo:
    """A new client's identity, with the route map's RELAY answer."""
    return clients.classify(ip, port, name, routes.is_relay, proto)


__all__ = ["LAN_NETWORKS", "Outcome", "Proxy", "ServerContext", "classify"]


#: Per event class: the handler's name and the decision log's stage.
_HANDLERS: dict[type, tuple[str, str | None]] = {}

_OFFERED: dict[tuple[int, Offer], tuple[SessionConfig, SessionConfig]] = {}


def offered(config: SessionConfig, offer: Offer) -> SessionConfig:
    """``config`` advertising ``offer``; remembered, since nearly every EHLO asks for
    the same pair (the server's configuration and the current offer)."""
    key = (id(config), offer)
    found = _OFFERED.get(key)
    if found is not None and found[0] is config:
        return found[1]
    made = replace(config, size_limit=offer.size, dsn=offer.dsn, eightbitmime=offer.eightbitmime,
                   etrn=offer.etrn, smtputf8=offer.smtputf8)
    if len(_OFFERED) > 64:  # configurations replaced per session (Tls-Connect: SKIP) come and go
        _OFFERED.clear()
    _OFFERED[key] = (config, made)
    return made


class Proxy:
    """One client session's conductor: checks, decisions, downstream connections."""

    def __init__(self, server: ServerContext, client: ev.ClientInfo, session_id: str):
        self.server = server
        self.cfg = server.config
        self.catalogue = server.catalogue
        self.ctx = Context(session_id=session_id, client=client)
        self.rules = Rules(
            server.catalogue, server.routes, server.hostname,
            delay_checks=self.cfg["smtp-delay-checks"], relay_reply=self.cfg["relay-reply"],
            banner=server.banner, esmtp=server.session_config.esmtp,
            subject_tag=subject_tag(self.cfg), log=log,
        )
        self.pool: dict[str, Downstream] = {}  # live connections, reused across transactions
        self.txn: dict[str, Downstream] = {}  # those in the current transaction
        self.messages = 0
        self.chunking = False  # the message in progress came in BDAT chunks
        self._headers: HeaderCollector | None = None
        self._abort_reply: Outcome | None = None
        self.fatal: Reply | None = None  # set when the session must end mid-DATA
        self.ended = False  # the checks' close hooks have been called
        # The final dot is downstream and its replies are awaited: a client that
        # leaves now does not abort it (the message may be delivered already),
        # the session ends when the replies are in (see lost()).
        self.dot_in_flight = False
        self.ending = False  # the end-of-data event is being handled
        self.client_gone = False
        self.on_fatal: Callable[[Reply], None] | None = None
        #: Told True while a downstream of the message cannot take more (its send
        #: buffer is full), False when every one can again: the client is not read.
        self.on_hold: Callable[[bool], None] | None = None
        self._full: set[Downstream] = set()  # the message's downstreams that are full now
        self._etrn: Downstream | None = None  # the connection the session's ETRNs go to
        self._pacing = False  # the message's downstreams tell _pace when they fill up
        self._dot_replies: str | None = None  # the downstreams' answers to the dot, for the log
        self._unlogged: dict[str, Any] | None = None  # a command's decision, logged once it is answered
        self.auth = Authenticator(self)  # SMTP AUTH: the authenticated connection, auth-delay-checks

    # --- helpers ------------------------------------------------------------------

    def reply(self, rid: int, **fields: object) -> Reply:
        return self.rules.reply(self.ctx, rid, **fields)

    def verdict_outcome(self, verdict: Verdict) -> Outcome:
        return self.rules.verdict_outcome(self.ctx, verdict)

    def observe(self, command: str, seconds: float) -> None:
        self.server.metrics.downstream(command, seconds)

    def downstream_error(self, exc: DownstreamError) -> None:
        self.server.metrics.downstream_errors.labels(exc.kind).inc()
        log.warn("session {sid}: downstream {err}", sid=self.ctx.session_id, err=str(exc))

    def run(self, phase: str, *args: object) -> Coroutine[Any, Any, Verdict]:
        # The pipeline's own coroutine, awaited by the caller: no second one around it.
        return self.server.pipeline.run(phase, self.ctx, *args)

    def run_always(self, phase: str) -> Coroutine[Any, Any, Verdict]:
        """Only the phase's checks that no white list lifts (auth-delay-checks puts
        off the others until MAIL)."""
        pipeline = self.server.pipeline
        return pipeline.run(phase, self.ctx, only=pipeline.always_steps[phase])

    # --- connect --------------------------------------------------------------------

    async def connect(self, lookup: bool = True) -> Outcome:
        """The connect phase: the client's PTR name (``lookup``), then the checks."""
        pending = Pending("connect", self.ctx, None, time.monotonic())
        self.rules.new_client()
        resolver = self.server.resolver
        if lookup and resolver is not None and not self.ctx.client.localhost:
            self.ctx.client = await resolve_client(resolver, self.ctx.client, self.server.routes,
                                                   self.ctx.session_id, self.server.reactor)
        outcome = self.rules.connect(self.ctx, await self.auth.run("connect"))
        self._decided(pending, outcome)
        return outcome

    # --- commands -------------------------------------------------------------------

    async def handle(self, event: ev.Command, session) -> Outcome:
        if isinstance(event, ev.Violation):
            outcome = Outcome(event.reply, drop=event.drop, check="protocol")
            if event.drop:  # the session ends, and the transaction in progress with it
                self._decided(Pending("protocol", self.ctx, event, time.monotonic(),
                                      in_message=self._headers is not None), outcome)
            return outcome
        kind = type(event)
        found = _HANDLERS.get(kind)
        if found is None:
            found = _HANDLERS[kind] = ("on_" + kind.__name__.lower(), STAGE_OF.get(kind.__name__))
        name, stage = found
        handler = getattr(self, name)
        if stage is None:
            return await handler(event, session)
        pending = Pending(stage, self.ctx, event, time.monotonic())
        outcome = await handler(event, session)
        self._decided(pending, outcome, after_reply=True)
        return outcome

    def abandon(self, reply: Reply, why: str) -> None:
        """We close the session (``why``: a timeout, shutdown): a transaction in
        progress ends with it, and the decision log says so."""
        if self.ctx.sender is None and not self.ctx.rcpts:
            return
        in_data = self._headers is not None
        self._decided(Pending("data" if in_data else "protocol", self.ctx, None, time.monotonic(),
                              in_message=in_data), Outcome(reply, drop=True, check=why))

    def refused_at_greeting(self, reply: Reply) -> None:
        """The client spoke before our banner and got ``reply`` (#420) instead: the
        connect decision the log records is that drop, not the banner the checks chose."""
        self._decided(Pending("connect", self.ctx, None, time.monotonic()),
                      Outcome(reply, drop=True, check="early-talker"))

    def _decided(self, pending: Pending, outcome: Outcome, after_reply: bool = False) -> None:
        """The decision log's line for this command, if it ended a recipient or a message.

        ``after_reply``: the record is made now (the transaction is about to be
        reset), and written by :meth:`replied`, once the client has its reply:
        formatting and writing the line took about a tenth of the dot's time
        in the proxy, which the client had no reason to wait for.
        """
        rec = pending.record(self.ctx, outcome.reply, time.monotonic(), drop=outcome.drop,
                             message=outcome.message, check=outcome.check,
                             downstream=self._dot_replies)
        self._dot_replies = None
        if rec is None:
            return
        if self._unlogged is not None:
            self.replied()  # the lines stay in the order of the decisions
        if after_reply:
            self._unlogged = rec
        else:
            emit_decision(rec)

    def replied(self) -> None:
        """The reply to the command is written (or will never be): its decision's line now."""
        rec, self._unlogged = self._unlogged, None
        if rec is not None:
            emit_decision(rec)

    async def on_helo(self, event: ev.Helo, session) -> Outcome:
        await self.end_transaction()
        self.ctx.helo = session.xclient_helo or event.domain
        self.ctx.esmtp = event.verb == "EHLO"
        verdict = await self.auth.run("helo")
        if self.ctx.notes.get("session.tls-connect") == "SKIP":  # access map Tls-Connect: SKIP
            session.config = replace(session.config, tls_available=False)
        probe = self.server.capabilities
        if probe is not None:  # the EHLO reflects what the downstreams offer now
            offer = await probe.offer(self.cfg["message-size-limit"], self.cfg["rfc1652-8bitmime"])
            session.config = offered(session.config, offer)
        ehlo = event.verb == "EHLO"
        return self.rules.helo(self.ctx, verdict, ehlo, session.ehlo_keywords() if ehlo else ())

    async def on_mail(self, event: ev.Mail, session) -> Outcome:
        self.ctx.reset_transaction()
        self.rules.new_transaction()
        self.ctx.sender = event.path.address
        self.ctx.mail_params = event.path.params
        postponed = await self.auth.postponed()  # auth-delay-checks
        if postponed is not None:
            return postponed
        return self.rules.mail(self.ctx, await self.run("mail"))

    async def on_rcpt(self, event: ev.Rcpt, session) -> Outcome:
        rcpt = event.path.address
        route = self.rules.before_rcpt_checks(self.ctx, rcpt)
        if isinstance(route, Outcome):
            return route
        outcome = self.rules.rcpt(self.ctx, await self.run("rcpt", rcpt), rcpt, route)
        if outcome.downstream is not Act.RELAY:
            return outcome
        call_ahead = self.server.call_ahead
        if call_ahead and self.rules.call_ahead_for(self.ctx, route) and await call_ahead.unknown(
                route, rcpt, self.ctx.sender or "", self.ctx.session_id):
            return self.rules.unknown_recipient(self.ctx, rcpt)
        try:
            reply = await self._forward_rcpt(route, rcpt, event.path.params)
        except DownstreamError as exc:
            return self._rcpt_error(exc, route, rcpt)
        if isinstance(reply, Outcome):
            return reply
        return self.rules.relayed_rcpt(self.ctx, reply, rcpt)

    async def _forward_rcpt(self, route: Route, rcpt: str,
                            params: dict[str, str | None] | None = None) -> DownstreamReply | Outcome:
        down = self.txn.get(route.name)
        if down is not None:
            return await down.rcpt(rcpt, params)
        down = self.pool.get(route.name)
        if (down is None or not down.alive) and self.auth.down is not None:
            raise DownstreamError("lost", route.name, "the authenticated connection is gone")
        if down is None or not down.alive:
            down = self._parked(route)  # a kept connection is secured and introduced already
            if down is None:
                down = await self._connect(route)
                if self.ended:  # the client left while it was being opened
                    down.abort()
                    raise DownstreamError("lost", route.name, "the client left")
            self.pool[route.name] = down
        self.txn[route.name] = down
        await self._tell(down, "forward-xforward", down.capabilities.xforward, xforward_commands)
        try:
            mail, rcpt_reply = await down.begin(self.ctx.sender or "", self.ctx.mail_params, rcpt, params)
        except DownstreamError as exc:
            if not down.reused or down.recipients or exc.kind != "lost":
                raise
            # A parked connection the downstream closed just as we took it:
            # the client never hears of it, a fresh connection takes over.
            down.abort()
            down = self.pool[route.name] = self.txn[route.name] = await self._connect(route)
            await self._tell(down, "forward-xforward", down.capabilities.xforward, xforward_commands)
            mail, rcpt_reply = await down.begin(self.ctx.sender or "", self.ctx.mail_params, rcpt, params)
        if rcpt_reply is None:
            del self.txn[route.name]
            await down.rset()
            return self.rules.mail_refused(self.ctx, mail)
        return rcpt_reply

    async def _connect(self, route: Route) -> Downstream:
        """A new relay connection: opened, secured as the route says, introduced.

        One that fails on the way (TLS refused where it is required, the
        introduction refused) is dropped here: nobody else holds it.
        """
        down = await self._open(route)
        try:
            down = await self._secure(route, down)
            await self._introduce(route, down)
        except BaseException:
            down.abort()
            raise
        return down

    async def _secure(self, route: Route, down: Downstream) -> Downstream:
        """STARTTLS as the route's TLS: (or forward-tls) says; ``may`` falls back to plaintext."""
        policy = parse_policy(route.extra.get("TLS") or self.cfg["forward-tls"])
        host = down.host.rpartition(":")[0]
        # The TLS options (a cipher list to build) only where STARTTLS may follow.
        creator = None if decide(policy, "STARTTLS" in down.keywords) == PLAIN else client_tls(
            policy, host, self.cfg["forward-tls-ca-file"])
        try:
            tls = await down.starttls(policy, self.server.hostname, creator)
        except DownstreamError as exc:
            if policy.required or not down.tls_attempted:
                raise
            log.warn("session {sid}: TLS to {host} failed ({err}); plaintext instead (TLS: may)",
                     sid=self.ctx.session_id, host=down.host, err=str(exc))
            down.abort()
            return await self._open(route)
        if tls:
            protocol, _, cipher = tls.partition(" ")
            self.server.metrics.downstream_tls.labels(protocol, cipher).inc()
            log.info("session {sid}: TLS to {host}: {tls}{verified}", sid=self.ctx.session_id,
                     host=down.host, tls=tls, verified=" (verified)" if policy.verify else "")
        return down

    async def _introduce(self, route: Route, down: Downstream) -> None:
        """A new relay connection: learn what it offers; XCLIENT if configured."""
        if self.server.capabilities is not None:
            self.server.capabilities.learn(route.forward, down.keywords)
        await self._tell(down, "forward-xclient", down.capabilities.xclient, xclient_commands)

    async def _tell(self, down: Downstream, option: str, offered: frozenset[str], commands) -> None:
        """forward-xclient / forward-xforward: who the client is, if the downstream listens."""
        if not self.cfg[option] or not offered:
            return
        qid = f"{self.ctx.session_id}{self.messages + 1:02d}"  # as on_data will name it
        lines = commands(offered, identity(self.ctx.client, self.ctx.helo, self.ctx.esmtp, qid))
        if option == "forward-xclient":
            # The connection now speaks for this client: no other session may reuse it.
            down.reusable = False
            refused = await down.introduce(lines, self.server.hostname)
        else:
            refused = await down.forward_client(lines)
        if refused is not None:
            log.warn("session {sid}: {host} refused {option}: {reply}", sid=self.ctx.session_id,
                     host=down.host, option=option, reply=str(refused))

    def _parked(self, route: Route) -> Downstream | None:
        downstreams = self.server.downstreams
        down = downstreams.take(route.name) if downstreams is not None else None
        if down is not None:
            down.reused = True
        return down

    async def _open(self, route: Route) -> Downstream:
        # The metrics directly, not this session: a kept connection outlives it.
        return await Downstream.open(
            self.server.reactor, route.forward, self.server.hostname,
            self.server.timeouts, self.server.metrics.downstream,
        )

    def _release(self, name: str, down: Downstream) -> None:
        """Session over for a live connection: park it for the next session, or QUIT it."""
        downstreams = self.server.downstreams
        if downstreams is not None:
            downstreams.give(name, down)
        else:
            defer.ensureDeferred(down.quit())

    def _rcpt_error(self, exc: DownstreamError, route: Route, rcpt: str) -> Outcome:
        self.downstream_error(exc)
        down = self.txn.pop(route.name, None) or self.pool.get(route.name)
        self.pool.pop(route.name, None)
        had_recipients = False
        if down is not None:
            down.abort()
            had_recipients = bool(down.recipients)
        return self.rules.rcpt_lost(self.ctx, exc.kind, rcpt, had_recipients, bool(self.txn))

    async def on_data(self, event: ev.Data, session) -> Outcome:
        refused = self.rules.before_data_checks(
            self.ctx, any(down.recipients for down in self.txn.values()))
        if refused is not None:
            await self.end_transaction()
            return refused
        self.ctx.qid = f"{self.ctx.session_id}{self.messages + 1:02d}"
        refused = self.rules.data(self.ctx, await self.run("data"))
        if refused is not None:
            await self.end_transaction()
            return refused
        for name, down in list(self.txn.items()):
            if not down.recipients:  # every RCPT of this route was refused
                del self.txn[name]
                await down.rset()
        spooling = self.server.pipeline.needs_message
        if spooling:
            # A scanner needs the whole message: DATA goes downstream at the dot,
            # after the checks, as in smtpf's spool mode.
            results = []
        else:
            results = await self._all(lambda d: d.data(chunking=event.chunking))
        self.chunking = event.chunking  # a BDAT message goes on as BDAT where offered
        outcome = self.rules.data_started(self.ctx, results)
        if outcome.downstream is Act.ABORT:
            await self.end_transaction(abort=True)
            return outcome
        self.messages += 1
        self._headers = HeaderCollector()
        self._abort_reply = None
        if spooling:
            cfg = self.cfg
            self.ctx.spool = Spool(cfg["save-dir"], cfg["spool-memory-limit"],
                                   prefix=f"{self.ctx.qid}-")
        return outcome

    async def _all(self, call) -> list[DownstreamReply | DownstreamError]:
        downs = list(self.txn.values())
        if len(downs) == 1:  # the usual case: no DeferredList, no Deferred per route
            try:
                return [await call(downs[0])]
            except DownstreamError as exc:
                self.downstream_error(exc)
                return [exc]
            except Exception as exc:
                log.failure("downstream call failed")
                return [DownstreamError("protocol", "?", str(exc))]
        ds = [defer.ensureDeferred(call(d)) for d in downs]
        results = await defer.DeferredList(ds, consumeErrors=True)
        out: list[DownstreamReply | DownstreamError] = []
        for ok, value in results:
            if ok:
                out.append(value)
            elif value.check(DownstreamError):
                self.downstream_error(value.value)
                out.append(value.value)
            else:
                log.failure("downstream call failed", value)
                out.append(DownstreamError("protocol", "?", value.getErrorMessage()))
        return out

    # --- message content ------------------------------------------------------------

    async def chunk(self, chunk: ev.DataChunk) -> None:
        if self._abort_reply is not None:
            return
        data = chunk.data
        if self._headers is not None and not self._headers.done:
            data = self._headers.feed(data)
            if not self._headers.done:
                return
            await self._headers_complete()
            if self._abort_reply is not None:
                return
        if data and self.server.pipeline.has("body"):
            refused = self.rules.content(self.ctx, await self.run("body", data))
            if refused is not None:
                self._abort(refused)
                return
        self._emit(data)

    def _emit(self, data: bytes) -> None:
        """Message bytes go downstream now (cut-through) or to the spool."""
        if self.ctx.spool is not None:
            self.ctx.spool.write(data)
        else:
            self._write(data)

    async def _headers_complete(self) -> None:
        assert self._headers is not None
        block = bytes(self._headers.buffer)
        self.ctx.header_block = block
        self.ctx.headers = parse_headers(block)
        refused = self.rules.content(self.ctx, await self.run("headers"))
        if refused is not None:
            self._abort(refused)
            return
        self.rules.apply_tags(self.ctx)
        if self.ctx.spool is not None:
            self.ctx.spool.write(block)  # trace and header changes are added at the dot
        else:
            self._write(self._trace() + self._header_block())

    def _trace(self) -> bytes:
        client = self.ctx.client
        proto = ("ESMTP" if self.ctx.esmtp else "SMTP") + ("S" if self.ctx.tls else "") + ("A" if self.ctx.auth else "")
        return received_header(
            helo=self.ctx.helo, client_name=client.name, client_ip=client.ip,
            hostname=self.server.hostname, proto=proto, qid=self.ctx.qid, rcpts=self.ctx.rcpts,
        )

    def _header_block(self) -> bytes:
        """The header block as delivered: Subject tag and added headers applied."""
        return edit_headers(self.ctx.header_block, self.ctx.subject_tag, self.ctx.added_headers,
                            self.ctx.removed_headers)

    def _write(self, data: bytes) -> None:
        if not data:
            return
        if not self._pacing:  # the message's first bytes: its downstreams tell us when full
            self._pacing = True
            for down in self.txn.values():
                down.pace = self._pace
        for down in self.txn.values():
            down.write(data)
        lost = [d for d in self.txn.values() if not d.alive]
        if lost and self.fatal is None:
            for down in lost:
                self.downstream_error(DownstreamError("lost", down.host, "during DATA"))
            self.fatal = self.reply(ReplyId.LOST_DURING_DATA)
            self._decided(Pending("data", self.ctx, None, time.monotonic(), in_message=True),
                          Outcome(self.fatal, drop=True))
            if self.on_fatal is not None:
                self.on_fatal(self.fatal)

    def _pace(self, down: Downstream, full: bool) -> None:
        """A downstream's send buffer filled (``full``) or drained: the client is held
        while any downstream of this message is full."""
        if full and down in self.txn.values():
            self._full.add(down)
        else:
            self._full.discard(down)
            if down not in self.txn.values():
                down.pace = None  # no longer this session's: parked, or given up
        if self.on_hold is not None:
            self.on_hold(bool(self._full))

    def _unpace(self) -> None:
        """The message's downstreams are done with: none holds the client any more."""
        if not self._pacing:
            return
        self._pacing = False
        for down in self.txn.values():
            down.pace = None
        if self._full:
            for down in self._full:
                down.pace = None
            self._full.clear()
            if self.on_hold is not None:
                self.on_hold(False)

    def flush(self) -> None:
        """The client's input is used up: message content held for the downstreams goes out.

        Once the message has ended, its last piece waits for the dot instead and
        leaves with it in one write, while the end-of-data checks (a store or a
        scanner) decide; a refusal then drops it with the connection.  Not so a
        BDAT chunk, whose reply is timed from when it was written.
        """
        if self.ending and not self.chunking:
            return
        for down in self.txn.values():
            down.flush()

    def _abort(self, outcome: Outcome) -> None:
        """Refuse the message: close the downstream connections before any dot."""
        self._unpace()
        self._abort_reply = outcome
        for name in list(self.txn):
            self.pool.pop(name, None)
            self.txn.pop(name).abort()

    async def on_endofdata(self, event: ev.EndOfData, session) -> Outcome:
        qid = self.ctx.qid
        self.ending = True
        try:
            return await self._end_of_data(event)
        finally:
            self.ending = self.dot_in_flight = False
            self.ctx.reset_transaction()
            self._unpace()
            self.txn.clear()
            self._headers = None
            self._abort_reply = None
            if self.client_gone:
                # The client left while the dot was downstream: whatever the
                # downstream said, the client never read our reply.
                self.ctx.reply_lost = self.ctx.delivered == qid
                if self.ctx.reply_lost:
                    log.warn("session {sid}: message {qid} was accepted downstream after the client "
                             "left; it never saw our 250", sid=self.ctx.session_id, qid=qid)
                self.lost()

    async def _end_of_data(self, event: ev.EndOfData) -> Outcome:
        if self._headers is not None and not self._headers.done:
            self._headers.done = True
            await self._headers_complete()
        if event.violation is not None:
            self._abort(Outcome(event.violation, drop=event.drop, message="reject"))
        if self._abort_reply is not None:
            self._outcome_metric(self._abort_reply.message or "reject")
            return self._abort_reply
        refused = self.rules.end_of_data(self.ctx, await self.run("end_of_data"))
        if refused is not None:
            self._abort(refused)
            self._outcome_metric(refused.message)
            return refused
        if self.ctx.spool is not None:
            self.rules.apply_tags(self.ctx)
        else:
            self.rules.late_tags(self.ctx)
        self.dot_in_flight = True
        if self.ctx.spool is not None:
            results = await self._deliver_spooled()
        else:
            results = await self._all(lambda d: d.dot())
        outcome = self.rules.delivered(self.ctx, results)
        self._dot_replies = "; ".join(map(str, results))  # in the decision's line
        if outcome.message == "accept":
            self.ctx.delivered = self.ctx.qid
            self._outcome_metric("accept")
            return outcome
        for name, down in list(self.txn.items()):
            if not down.alive:
                self.pool.pop(name, None)
        self._outcome_metric(outcome.message)
        return outcome

    async def _deliver_spooled(self) -> list[DownstreamReply | DownstreamError]:
        """Spool mode: DATA, the edited message and the dot, to every route."""
        spool = self.ctx.spool
        head = self._trace() + self._header_block()
        skip = len(self.ctx.header_block)  # the spool starts with the original header block

        async def send(down: Downstream) -> DownstreamReply:
            reply = await down.data(chunking=self.chunking)
            if reply.code != 354:
                if reply.code < 400:  # no go-ahead, no refusal: the message was never sent
                    down.abort()
                    raise DownstreamError("protocol", down.host, f"DATA answered {reply}")
                return reply
            down.write(head)
            for piece in spool.chunks(start=skip):
                down.write(piece)
            return await down.dot()

        return await self._all(send)

    def _outcome_metric(self, outcome: str) -> None:
        metrics = self.server.metrics
        metrics.count(metrics.messages, outcome)

    # --- the rest -------------------------------------------------------------------

    async def end_transaction(self, abort: bool = False) -> None:
        """RSET (or drop) the downstream side of the current transaction."""
        if self._headers is not None:  # a BDAT message is open downstream: RSET would be content
            abort, self._headers, self._abort_reply = True, None, None
        self._unpace()
        downs, self.txn = list(self.txn.items()), {}
        for name, down in downs:
            if abort or not await down.rset():
                down.abort()
                self.pool.pop(name, None)
        self.rules.transaction_ended(self.ctx)

    async def on_chunkreceived(self, event: ev.ChunkReceived, session) -> Outcome:
        """RFC 3030: a BDAT chunk other than the last was taken (its checks ran as it came)."""
        return Outcome(self.reply(ReplyId.CHUNK_RECEIVED, size=event.size))

    async def on_rset(self, event: ev.Rset, session) -> Outcome:
        await self.auth.rset()
        await self.end_transaction()
        return self.rules.simple(self.ctx, "rset")

    async def on_noop(self, event: ev.Noop, session) -> Outcome:
        return self.rules.simple(self.ctx, "noop")

    async def on_help(self, event: ev.Help, session) -> Outcome:
        from barricade.protocol.session import HELP_COMMANDS

        return self.rules.simple(self.ctx, "help", commands=HELP_COMMANDS)

    async def on_admin(self, event: ev.Admin, session) -> Outcome:
        """STAT, CONN, KILL ... from localhost: barricade/net/admin.py answers."""
        if self.server.admin is None:  # sessions run without the service (tests, embedding)
            if event.verb == "HELP":
                return await self.on_help(ev.Help(event.argument), session)
            return Outcome(self.reply(ReplyId.COMMAND_UNKNOWN, command=event.verb))
        return await self.server.admin.handle(event, self.ctx.session_id)

    async def on_vrfy(self, event: ev.Vrfy, session) -> Outcome:
        return self.rules.simple(self.ctx, "vrfy")

    async def on_etrn(self, event: ev.Etrn, session) -> Outcome:
        """RFC 1985 ETRN goes to the local route, which queues (smtpf #276/#277)."""
        domain = event.argument.lstrip("@#")
        down = self._etrn
        if down is None or not down.alive:
            # One connection for the session's ETRNs (a connection each let one client
            # open thousands, as fast as it could send the command), QUIT at its end.
            try:
                down = self._etrn = await Downstream.open(
                    self.server.reactor, self.server.routes.local.forward, self.server.hostname,
                    self.server.timeouts, self.observe)
            except DownstreamError as exc:
                self.downstream_error(exc)
                return Outcome(self.reply(ReplyId.ETRN_UNAVAILABLE, domain=domain))
        try:
            reply = await down.command("etrn", f"ETRN {event.argument}")
        except DownstreamError as exc:
            self.downstream_error(exc)
            self._end_etrn()
            return Outcome(self.reply(ReplyId.ETRN_UNAVAILABLE, domain=domain))
        log.info("session {sid}: ETRN {arg} relayed to {host}: {reply}", sid=self.ctx.session_id,
                 arg=event.argument, host=down.host, reply=str(reply))
        if reply.code == 421:  # the downstream closing is no reason to close the client
            self._end_etrn()
            return Outcome(self.reply(ReplyId.ETRN_UNAVAILABLE, domain=domain))
        status = reply.status or f"{reply.code // 100}.0.0"
        return Outcome(self.catalogue.reply(ReplyId.ETRN_RELAYED, code=reply.code, status=status, text=reply.text))

    def _end_etrn(self) -> None:
        """The session's ETRN connection is done with: QUIT in the background."""
        down, self._etrn = self._etrn, None
        if down is not None:
            if down.alive:
                defer.ensureDeferred(down.quit())
            else:
                down.abort()

    async def on_auth(self, event: ev.Auth, session) -> Outcome:
        return await self.auth.authenticate(event)

    async def on_quit(self, event: ev.Quit, session) -> Outcome:
        # The client's 221 does not wait for the downstream's: nothing is
        # in flight that a QUIT downstream could still change.
        self.close()
        return self.rules.simple(self.ctx, "quit")

    async def on_starttls(self, event: ev.StartTls, session) -> Outcome:
        await self.end_transaction()
        return self.rules.simple(self.ctx, "starttls")

    async def on_xclient(self, event: ev.Xclient, session) -> Outcome:
        await self.end_transaction()
        old = self.ctx.client
        client, lookup = xclient_identity(old, event.attrs, self.server.routes.is_relay)
        self.ctx.client = client
        self.ctx.helo = event.attrs.get("HELO") or ""
        sid = self.ctx.session_id  # a line per session behind a front MTA: an f-string
        info_line(log, f"session {sid}: XCLIENT from {old.ip} now {client.ip} ({client.name})",
                  sid=sid, old=old.ip, ip=client.ip, name=client.name)
        if self.cfg["forward-xclient"]:
            self.close()  # the relay connections told the downstream about the old client
        return self.rules.xclient(self.ctx, await self.connect(lookup=lookup), event.attrs.get("HELO"))

    def close(self) -> None:
        """Session over: park or QUIT every downstream (aborting any open transaction).

        The QUITs run in the background; each waits at most its timeout.
        """
        downs = list(self.pool.items())
        self.pool.clear()
        self._unpace()
        self._end_etrn()
        for down in self.txn.values():
            down.abort()
        self.txn.clear()
        for name, down in downs:
            if down.alive:
                self._release(name, down)

    def lost(self) -> None:
        """The client went away: abort without waiting (nothing may be delivered).

        Unless the final dot is already downstream: aborting then would not
        undo a delivery, only hide it.  That transaction runs to its replies,
        and on_endofdata calls this again to finish the session.
        """
        self.replied()
        if self.dot_in_flight:
            self.client_gone = True
            return
        self._unpace()
        self._end_etrn()
        for down in self.txn.values():
            down.abort()
        for name, down in self.pool.items():
            if down.alive and not down.in_transaction:
                self._release(name, down)
            else:
                down.abort()
        self.txn.clear()
        self.pool.clear()
        self.ctx.reset_transaction()  # frees what checks hold (scanner connections, spool)
        if not self.ended:  # lost() runs at the close and again at connectionLost
            self.ended = True
            if self.server.pipeline.has("close"):
                self._close_hooks()

    def _close_hooks(self) -> None:
        """The checks' close hooks, run to the end here unless one waits."""
        drive(self.server.pipeline.close(self.ctx), self._closed_hooks)

    def _closed_hooks(self, outcome: object) -> None:
        if isinstance(outcome, Failure):
            log.failure("session {sid}: close hooks", outcome, sid=self.ctx.session_id)
