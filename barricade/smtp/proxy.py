"""What the proxy does with each session event.

The server adapter feeds events in; this module runs the phase's checks,
routes recipients, drives the downstream connections and chooses the
catalogue reply.  The rules that keep mail safe live here:

* a RCPT gets 250 only when the downstream RCPT got 250;
* the client gets 354 only when every downstream host said 354;
* the final dot goes downstream only after the end-of-data checks pass,
  and the client's reply to it is the downstream verdict;
* when results differ between routes, the client gets a temporary failure:
  a retry may duplicate mail for the routes that accepted, never lose it.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from twisted.internet import defer
from twisted.logger import Logger

from barricade.maps import Route, RouteMap
from barricade.metrics import Metrics
from barricade.options import Config
from barricade.policy.client_name import resolve_client
from barricade.policy.pipeline import Context, Pipeline
from barricade.policy.verdict import Action, Flag, Verdict
from barricade.replies import Catalogue, Reply
from barricade.smtp import events as ev
from barricade.smtp.client_identity import identity, xclient_commands, xforward_commands
from barricade.smtp.downstream_tls import parse_policy
from barricade.smtp.forward import Downstream, DownstreamError, DownstreamReply, Timeouts, client_tls
from barricade.smtp.message import HeaderCollector, edit_headers, parse_headers, received_header
from barricade.smtp.session import SessionConfig
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
    capabilities: object = None  # barricade.smtp.capability_probe.CapabilityProbe; None: static EHLO


# LAN address space (RFC 1918, RFC 4193, link-local, loopback).  Python's
# ``is_private`` also covers documentation and benchmarking ranges, which
# are outside clients as far as a mail gateway is concerned.
LAN_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "169.254.0.0/16",
    "::1/128", "fc00::/7", "fe80::/10",
))


def classify(ip: str, port: int, name: str, routes: RouteMap, proto: str = "SMTP") -> ev.ClientInfo:
    try:
        addr = ipaddress.ip_address(ip)
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        loopback = addr.is_loopback
        private = any(addr in net for net in LAN_NETWORKS if net.version == addr.version)
    except ValueError:
        loopback = private = False
    if loopback and name == "unknown":
        name = "localhost"
    return ev.ClientInfo(
        ip=ip, port=port, name=name, relay=routes.is_relay(ip, name if name != "unknown" else None),
        localhost=loopback, private=private, proto=proto,
    )


@dataclass
class Outcome:
    """The reply for one event, and what the adapter must do after sending it."""

    reply: Reply
    drop: bool = False
    start_tls: bool = False
    sink: bool = False  # a refused client stays connected in the sink state (Flag.SINK)


class Proxy:
    """One client session's policy and forwarding state."""

    def __init__(self, server: ServerContext, client: ev.ClientInfo, session_id: str):
        self.server = server
        self.cfg = server.config
        self.catalogue = server.catalogue
        self.ctx = Context(session_id=session_id, client=client)
        self.pool: dict[str, Downstream] = {}  # live connections, reused across transactions
        self.txn: dict[str, Downstream] = {}  # those in the current transaction
        self.broken = False  # a downstream with accepted recipients was lost
        self.held: Outcome | None = None  # smtp-delay-checks: a MAIL refusal waiting for RCPT
        self.held_session: Outcome | None = None  # ... a connect/HELO refusal
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
        self.client_gone = False
        self.on_fatal: Callable[[Reply], None] | None = None

    # --- helpers ------------------------------------------------------------------

    def reply(self, rid: int, **fields: object) -> Reply:
        client = self.ctx.client
        base = {
            "hostname": self.server.hostname,
            "client_name": client.name,
            "client_ip": client.ip,
            "helo": self.ctx.helo,
            "sender": self.ctx.sender or "",
        }
        base.update(fields)
        return self.catalogue.reply(rid, **base)

    def verdict_outcome(self, verdict: Verdict) -> Outcome:
        if verdict.reply_id is None or verdict.reply_id not in self.catalogue:
            log.error("check {check} gave {action} without a catalogue reply id",
                      check=verdict.check, action=verdict.action.value)
            return Outcome(self.reply(907))
        return Outcome(self.reply(verdict.reply_id, **verdict.fields),
                       drop=verdict.action is Action.DROP)

    def observe(self, command: str, seconds: float) -> None:
        self.server.metrics.downstream(command, seconds)

    def downstream_error(self, exc: DownstreamError) -> None:
        self.server.metrics.downstream_errors.labels(exc.kind).inc()
        log.warn("session {sid}: downstream {err}", sid=self.ctx.session_id, err=str(exc))

    # --- connect --------------------------------------------------------------------

    async def connect(self, lookup: bool = True) -> Outcome:
        """The connect phase: the client's PTR name (``lookup``), then the checks."""
        self.held = self.held_session = None  # a new client (XCLIENT) starts clean
        resolver = self.server.resolver
        if lookup and resolver is not None and not self.ctx.client.localhost:
            self.ctx.client = await resolve_client(resolver, self.ctx.client, self.server.routes,
                                                   self.ctx.session_id, self.server.reactor)
        verdict = await self.server.pipeline.run("connect", self.ctx)
        if verdict.decisive and not self._hold(verdict, "connect"):
            outcome = self.verdict_outcome(verdict)
            outcome.sink = Flag.SINK in verdict.flags and not outcome.drop
            return outcome
        return Outcome(self.greeting())

    def _hold(self, verdict: Verdict, phase: str) -> bool:
        """``+smtp-delay-checks``: keep a policy refusal for the RCPT (smtpf §3a).

        Only verdicts flagged DELAY are held (IREJECT and protocol errors
        never are).  Connect and HELO refusals hold for the session, MAIL
        refusals for the transaction.  At RCPT a white-listed recipient
        overrides the held refusal, a black-listed one is refused on its own
        account, any other gets the held reply.
        """
        if not self.cfg["smtp-delay-checks"] or Flag.DELAY not in verdict.flags:
            return False
        outcome = self.verdict_outcome(verdict)
        if phase in ("connect", "helo") or Flag.SESSION in verdict.flags:
            self.held_session = self.held_session or outcome
        else:
            self.held = self.held or outcome
        log.info("session {sid}: {phase} refusal held until RCPT (smtp-delay-checks): {reply}",
                 sid=self.ctx.session_id, phase=phase, reply=outcome.reply.text)
        return True

    def greeting(self) -> Reply:
        banner = self.server.banner or ("Barricade ready",)
        esmtp = "E" if self.server.session_config.esmtp else ""
        return self.reply(633, esmtp=esmtp, banner=banner[0], lines=banner[1:])

    # --- commands -------------------------------------------------------------------

    async def handle(self, event: ev.Command, session) -> Outcome:
        if isinstance(event, ev.Violation):
            return Outcome(event.reply, drop=event.drop)
        handler = getattr(self, "on_" + type(event).__name__.lower())
        return await handler(event, session)

    async def on_helo(self, event: ev.Helo, session) -> Outcome:
        await self.end_transaction()
        self.ctx.helo = session.xclient_helo or event.domain
        self.ctx.esmtp = event.verb == "EHLO"
        verdict = await self.server.pipeline.run("helo", self.ctx)
        if verdict.decisive and not self._hold(verdict, "helo"):
            return self.verdict_outcome(verdict)
        if self.ctx.notes.get("session.tls-connect") == "SKIP":  # access map Tls-Connect: SKIP
            session.config = replace(session.config, tls_available=False)
        probe = self.server.capabilities
        if probe is not None:  # the EHLO reflects what the downstreams offer now
            offer = await probe.offer(self.cfg["message-size-limit"], self.cfg["rfc1652-8bitmime"])
            session.config = replace(session.config, size_limit=offer.size, dsn=offer.dsn,
                                     eightbitmime=offer.eightbitmime, etrn=offer.etrn,
                                     smtputf8=offer.smtputf8)
        if event.verb == "EHLO":
            return Outcome(self.reply(254, extra=session.ehlo_keywords()))
        return Outcome(self.reply(256))

    async def on_mail(self, event: ev.Mail, session) -> Outcome:
        self.ctx.reset_transaction()
        self.broken = False
        self.ctx.sender = event.path.address
        self.ctx.mail_params = event.path.params
        self.held = None
        verdict = await self.server.pipeline.run("mail", self.ctx)
        if verdict.decisive:
            if self._hold(verdict, "mail"):
                return Outcome(self.reply(507))  # "250 2.0.0 proceed": the refusal waits
            outcome = self.verdict_outcome(verdict)
            self.ctx.reset_transaction()
            return outcome
        return Outcome(self.reply(283))

    def held_for(self, verdict: Verdict) -> Outcome | None:
        """The refusal ``smtp-delay-checks`` held for this RCPT, unless its
        own checks white-listed the recipient (smtpf §3a)."""
        held = self.held_session or self.held
        return held if verdict.action is not Action.ACCEPT else None

    def route_for(self, rcpt: str) -> Route | None:
        routes = self.server.routes
        if self.ctx.client.relay:
            return routes.local
        return routes.for_recipient(rcpt)

    async def on_rcpt(self, event: ev.Rcpt, session) -> Outcome:
        rcpt = event.path.address
        route = self.route_for(rcpt)
        if route is None:
            return Outcome(self.reply(288, rcpt=rcpt))
        if self.broken:
            return Outcome(self.reply(903, rcpt=rcpt))
        verdict = await self.server.pipeline.run("rcpt", self.ctx, rcpt)
        if verdict.decisive:
            return self.verdict_outcome(Verdict(verdict.action, verdict.reply_id, {"rcpt": rcpt, **verdict.fields}))
        held = self.held_for(verdict)
        if held is not None:
            return held
        if route.rcpt and not self.ctx.client.relay and self.server.call_ahead and await self.server.call_ahead.unknown(
                route, rcpt, self.ctx.sender or "", self.ctx.session_id):
            return Outcome(self.reply(292, rcpt=rcpt))
        try:
            reply = await self._forward_rcpt(route, rcpt, event.path.params)
        except DownstreamError as exc:
            return self._rcpt_error(exc, route, rcpt)
        if isinstance(reply, Outcome):
            return reply
        if reply.ok:
            self.ctx.rcpts.append(rcpt)
            return Outcome(self.reply(297 if self.ctx.client.relay else 290, rcpt=rcpt))
        return Outcome(self.rcpt_refused(reply, rcpt))

    async def _forward_rcpt(self, route: Route, rcpt: str,
                            params: dict[str, str | None] | None = None) -> DownstreamReply | Outcome:
        down = self.txn.get(route.name)
        if down is not None:
            return await down.rcpt(rcpt, params)
        down = self.pool.get(route.name)
        if down is None or not down.alive:
            down = await Downstream.open(
                self.server.reactor, route.forward, self.server.hostname,
                self.server.timeouts, self.observe,
            )
            self.pool[route.name] = down
            down = self.pool[route.name] = await self._secure(route, down)
            await self._introduce(route, down)
        self.txn[route.name] = down
        await self._tell(down, "forward-xforward", down.capabilities.xforward, xforward_commands)
        mail, rcpt_reply = await down.begin(self.ctx.sender or "", self.ctx.mail_params, rcpt, params)
        if rcpt_reply is None:
            del self.txn[route.name]
            await down.rset()
            status = mail.status or f"{mail.code // 100}.1.0"
            return Outcome(self.catalogue.reply(
                282, code=mail.code, status=status, sender=self.ctx.sender or "",
            ))
        return rcpt_reply

    async def _secure(self, route: Route, down: Downstream) -> Downstream:
        """STARTTLS as the route's TLS: (or forward-tls) says; ``may`` falls back to plaintext."""
        policy = parse_policy(route.extra.get("TLS") or self.cfg["forward-tls"])
        host = down.host.rpartition(":")[0]
        try:
            tls = await down.starttls(policy, self.server.hostname,
                                      client_tls(policy, host, self.cfg["forward-tls-ca-file"]))
        except DownstreamError as exc:
            if policy.required or not down.tls_attempted:
                raise
            log.warn("session {sid}: TLS to {host} failed ({err}); plaintext instead (TLS: may)",
                     sid=self.ctx.session_id, host=down.host, err=str(exc))
            down.abort()
            return await Downstream.open(self.server.reactor, route.forward, self.server.hostname,
                                         self.server.timeouts, self.observe)
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
            refused = await down.introduce(lines, self.server.hostname)
        else:
            refused = await down.forward_client(lines)
        if refused is not None:
            log.warn("session {sid}: {host} refused {option}: {reply}", sid=self.ctx.session_id,
                     host=down.host, option=option, reply=str(refused))

    def _rcpt_error(self, exc: DownstreamError, route: Route, rcpt: str) -> Outcome:
        self.downstream_error(exc)
        down = self.txn.pop(route.name, None) or self.pool.get(route.name)
        self.pool.pop(route.name, None)
        if down is not None:
            down.abort()
            if down.recipients:
                self.broken = True
        if exc.kind == "timeout":
            return Outcome(self.reply(904))
        if exc.kind == "connect":
            if self.txn:  # other routes carry this transaction: only this recipient waits
                return Outcome(self.reply(295, rcpt=rcpt))
            return Outcome(self.reply(901))
        return Outcome(self.reply(903))

    def passthrough(self, reply: DownstreamReply) -> Reply:
        """#299: the downstream reply as it came (``+relay-reply``)."""
        status = reply.status or f"{reply.code // 100}.0.0"
        return self.catalogue.reply(299, code=reply.code, status=status, text=reply.text)

    def rcpt_refused(self, reply: DownstreamReply, rcpt: str) -> Reply:
        """#300: the downstream code and enhanced status with our text (or #299)."""
        if self.cfg["relay-reply"]:
            return self.passthrough(reply)
        status = reply.status or f"{reply.code // 100}.1.0"
        return self.catalogue.reply(300, code=reply.code, status=status, rcpt=rcpt)

    async def on_data(self, event: ev.Data, session) -> Outcome:
        if self.broken:
            await self.end_transaction()
            return Outcome(self.reply(903))
        if not any(down.recipients for down in self.txn.values()):
            # Never 354 without a downstream that accepted a recipient: the
            # message could only be acknowledged and lost.
            await self.end_transaction()
            return Outcome(self.reply(923))
        self.ctx.qid = f"{self.ctx.session_id}{self.messages + 1:02d}"
        verdict = await self.server.pipeline.run("data", self.ctx)
        if verdict.decisive:
            await self.end_transaction()
            return self.verdict_outcome(verdict)
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
        if all(isinstance(r, DownstreamReply) and r.code == 354 for r in results):
            self.messages += 1
            self._headers = HeaderCollector()
            self._abort_reply = None
            if spooling:
                cfg = self.cfg
                self.ctx.spool = Spool(cfg["save-dir"], cfg["spool-memory-limit"],
                                       prefix=f"{self.ctx.qid}-")
            return Outcome(self.reply(900))
        outcome = self._aggregate_failure(results, expect=354, lost=903)
        await self.end_transaction(abort=True)
        return outcome

    async def _all(self, call) -> list[DownstreamReply | DownstreamError]:
        downs = list(self.txn.values())
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

    def _aggregate_failure(self, results: list, expect: int, lost: int) -> Outcome:
        """One reply for several downstream results (``lost``: 903 before DATA, 902 after)."""
        errors = [r for r in results if isinstance(r, DownstreamError)]
        if any(e.kind == "timeout" for e in errors):
            return Outcome(self.reply(904), drop=True)
        if errors:
            return Outcome(self.reply(lost), drop=lost == 902)
        failed = [r for r in results if r.code != expect and not (expect == 250 and r.ok)]
        if len(results) == 1 and failed and self.cfg["relay-reply"]:
            return Outcome(self.passthrough(failed[0]))
        if failed and len(failed) == len(results) and all(r.code >= 500 for r in failed):
            return Outcome(self.reply(306))
        return Outcome(self.reply(307))

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
            verdict = await self.server.pipeline.run("body", self.ctx, data)
            if verdict.decisive:
                self._abort(self.verdict_outcome(verdict))
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
        verdict = await self.server.pipeline.run("headers", self.ctx)
        if verdict.decisive:
            self._abort(self.verdict_outcome(verdict))
            return
        if self.ctx.spool is not None:
            self.ctx.spool.write(block)  # trace and header changes are added at the dot
        else:
            self._write(self._trace() + self._header_block())

    def _trace(self) -> bytes:
        client = self.ctx.client
        proto = ("ESMTP" if self.ctx.esmtp else "SMTP") + ("S" if self.ctx.tls else "")
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
        for down in self.txn.values():
            down.write(data)
        lost = [d for d in self.txn.values() if not d.alive]
        if lost and self.fatal is None:
            for down in lost:
                self.downstream_error(DownstreamError("lost", down.host, "during DATA"))
            self.fatal = self.reply(902)
            if self.on_fatal is not None:
                self.on_fatal(self.fatal)

    def _abort(self, outcome: Outcome) -> None:
        """Refuse the message: close the downstream connections before any dot."""
        self._abort_reply = outcome
        for name in list(self.txn):
            self.pool.pop(name, None)
            self.txn.pop(name).abort()

    async def on_endofdata(self, event: ev.EndOfData, session) -> Outcome:
        qid = self.ctx.qid
        try:
            return await self._end_of_data(event)
        finally:
            self.dot_in_flight = False
            self.ctx.reset_transaction()
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
            self._abort(Outcome(event.violation, drop=event.drop))
        if self._abort_reply is not None:
            self._outcome_metric("reject")
            return self._abort_reply
        verdict = await self.server.pipeline.run("end_of_data", self.ctx)
        if verdict.decisive:
            if verdict.action is Action.DISCARD:
                self._abort(Outcome(self.reply(554, qid=self.ctx.qid)))
                self._outcome_metric("discard")
                return self._abort_reply
            self._abort(self.verdict_outcome(verdict))
            self._outcome_metric("reject")
            return self._abort_reply
        started = time.monotonic()
        self.dot_in_flight = True
        if self.ctx.spool is not None:
            results = await self._deliver_spooled()
        else:
            results = await self._all(lambda d: d.dot())
        if results and all(isinstance(r, DownstreamReply) and r.ok for r in results):
            log.info("session {sid}: message {qid} from <{sender}> for {rcpts} accepted by {n} host(s) "
                     "in {t:.3f}s: {replies}", sid=self.ctx.session_id, qid=self.ctx.qid,
                     sender=self.ctx.sender or "", rcpts=",".join(f"<{r}>" for r in self.ctx.rcpts),
                     n=len(results),
                     t=time.monotonic() - started, replies="; ".join(map(str, results)))
            self._outcome_metric("accept")
            self.ctx.delivered = self.ctx.qid
            return Outcome(self.reply(554, qid=self.ctx.qid))
        for name, down in list(self.txn.items()):
            if not down.alive:
                self.pool.pop(name, None)
        log.warn("session {sid}: message {qid} not accepted: {replies}", sid=self.ctx.session_id,
                 qid=self.ctx.qid, replies="; ".join(map(str, results)))
        self._outcome_metric("downstream-fail")
        return self._aggregate_failure(results, expect=250, lost=902)

    async def _deliver_spooled(self) -> list[DownstreamReply | DownstreamError]:
        """Spool mode: DATA, the edited message and the dot, to every route."""
        spool = self.ctx.spool
        head = self._trace() + self._header_block()
        skip = len(self.ctx.header_block)  # the spool starts with the original header block

        async def send(down: Downstream) -> DownstreamReply:
            reply = await down.data(chunking=self.chunking)
            if reply.code != 354:
                return reply
            down.write(head)
            for piece in spool.chunks(start=skip):
                down.write(piece)
            return await down.dot()

        return await self._all(send)

    def _outcome_metric(self, outcome: str) -> None:
        self.server.metrics.messages.labels(outcome).inc()

    # --- the rest -------------------------------------------------------------------

    async def end_transaction(self, abort: bool = False) -> None:
        """RSET (or drop) the downstream side of the current transaction."""
        if self._headers is not None:  # a BDAT message is open downstream: RSET would be content
            abort, self._headers, self._abort_reply = True, None, None
        downs, self.txn = list(self.txn.items()), {}
        for name, down in downs:
            if abort or not await down.rset():
                down.abort()
                self.pool.pop(name, None)
        self.ctx.reset_transaction()
        self.broken = False
        self.held = None

    async def on_chunkreceived(self, event: ev.ChunkReceived, session) -> Outcome:
        """RFC 3030: a BDAT chunk other than the last was taken (its checks ran as it came)."""
        return Outcome(self.reply(971, size=event.size))

    async def on_rset(self, event: ev.Rset, session) -> Outcome:
        await self.end_transaction()
        return Outcome(self.reply(547))

    async def on_noop(self, event: ev.Noop, session) -> Outcome:
        return Outcome(self.reply(547))

    async def on_help(self, event: ev.Help, session) -> Outcome:
        from barricade.smtp.session import HELP_COMMANDS

        return Outcome(self.reply(916, commands=HELP_COMMANDS))

    async def on_vrfy(self, event: ev.Vrfy, session) -> Outcome:
        return Outcome(self.reply(915))

    async def on_etrn(self, event: ev.Etrn, session) -> Outcome:
        """RFC 1985 ETRN goes to the local route, which queues (smtpf #276/#277)."""
        domain = event.argument.lstrip("@#")
        try:
            down = await Downstream.open(self.server.reactor, self.server.routes.local.forward,
                                         self.server.hostname, self.server.timeouts, self.observe)
        except DownstreamError as exc:
            self.downstream_error(exc)
            return Outcome(self.reply(276, domain=domain))
        try:
            reply = await down.command("etrn", f"ETRN {event.argument}")
        except DownstreamError as exc:
            self.downstream_error(exc)
            return Outcome(self.reply(276, domain=domain))
        finally:
            defer.ensureDeferred(down.quit())
        log.info("session {sid}: ETRN {arg} relayed to {host}: {reply}", sid=self.ctx.session_id,
                 arg=event.argument, host=down.host, reply=str(reply))
        if reply.code == 421:  # the downstream closing is no reason to close the client
            return Outcome(self.reply(276, domain=domain))
        status = reply.status or f"{reply.code // 100}.0.0"
        return Outcome(self.catalogue.reply(277, code=reply.code, status=status, text=reply.text))

    async def on_quit(self, event: ev.Quit, session) -> Outcome:
        await self.close()
        return Outcome(self.reply(247))

    async def on_starttls(self, event: ev.StartTls, session) -> Outcome:
        await self.end_transaction()
        return Outcome(self.reply(913), start_tls=True)

    async def on_xclient(self, event: ev.Xclient, session) -> Outcome:
        await self.end_transaction()
        old = self.ctx.client
        attrs = event.attrs
        ip = attrs.get("ADDR", old.ip) if "ADDR" in attrs else old.ip
        # A new ADDR without NAME: look its PTR up, as for a real connection.
        lookup = "ADDR" in attrs and "NAME" not in attrs
        name = attrs.get("NAME") if "NAME" in attrs else ("unknown" if lookup else old.name)
        port = int(attrs["PORT"]) if attrs.get("PORT") else old.port
        proto = (attrs.get("PROTO") or old.proto).upper()
        client = classify(ip or old.ip, port, name or "unknown", self.server.routes, proto)
        if "NAME" in attrs:  # the upstream MTA's verified name (Postfix semantics)
            client = replace(client, ptr=attrs["NAME"] or "")
        elif not lookup:
            client = replace(client, ptr=old.ptr, forged=old.forged, ptr_error=old.ptr_error)
        self.ctx.client = client
        self.ctx.helo = attrs.get("HELO") or ""
        session.restart(client, attrs.get("HELO"))
        log.info("session {sid}: XCLIENT from {old} now {ip} ({name})",
                 sid=self.ctx.session_id, old=old.ip, ip=client.ip, name=client.name)
        if self.cfg["forward-xclient"]:
            await self.close()  # the relay connections told the downstream about the old client
        outcome = await self.connect(lookup=lookup)
        session.client = self.ctx.client  # with the name DNS gave it
        if outcome.reply.code != 220 and not outcome.sink:
            outcome.drop = True
        return outcome

    async def close(self) -> None:
        """Session over: QUIT every downstream (aborting any open transaction)."""
        downs = list(self.pool.values())
        self.pool.clear()
        for down in self.txn.values():
            down.abort()
        self.txn.clear()
        await defer.DeferredList([defer.ensureDeferred(d.quit()) for d in downs if d.alive],
                                 consumeErrors=True)

    def lost(self) -> None:
        """The client went away: abort without waiting (nothing may be delivered).

        Unless the final dot is already downstream: aborting then would not
        undo a delivery, only hide it.  That transaction runs to its replies,
        and on_endofdata calls this again to finish the session.
        """
        if self.dot_in_flight:
            self.client_gone = True
            return
        for down in self.txn.values():
            down.abort()
        for down in self.pool.values():
            if down.alive and not down.in_transaction:
                defer.ensureDeferred(down.quit())
            else:
                down.abort()
        self.txn.clear()
        self.pool.clear()
        self.ctx.reset_transaction()  # frees what checks hold (scanner connections, spool)
        if not self.ended:  # lost() runs at the close and again at connectionLost
            self.ended = True
            if self.server.pipeline.has("close"):
                defer.ensureDeferred(self.server.pipeline.close(self.ctx)).addErrback(
                    lambda f: log.failure("session {sid}: close hooks", f, sid=self.ctx.session_id))
