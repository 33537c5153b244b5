"""The Twisted adapter: sockets, timers and TLS around the sans-IO session.

It moves bytes into :class:`~barricade.protocol.session.Session`, hands each
event to the :class:`~barricade.net.conductor.Proxy`, writes the reply, and
keeps exactly one command in flight.  It owns every client-side clock, and
none of them is stretched by partial input (a client typing one byte every
few seconds would otherwise live forever):

* ``smtp-command-timeout``: the wait for a command's first byte, and then
  again for the whole command from that byte on;
* ``smtp-data-line-timeout``: inside DATA, each line from the end of the
  previous one (a trickle that completes no line does not restart it);
* ``smtp-session-timeout``: the whole session, whatever it does;
* ``tls-handshake-timeout``: the TLS handshake after STARTTLS.

Every close is hard after :data:`CLOSE_GRACE` seconds: a TLS close that
waits for a peer that never answers must not hold the socket.  Whatever
goes wrong inside a handler, or inside the session's parser, ends as a
catalogue reply (#908) and a logged traceback, never as a traceback to the
client nor a close without a word.
"""

from __future__ import annotations

import os

from twisted.internet import defer, protocol, task
from twisted.internet.interfaces import IHandshakeListener
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from barricade.client import address_text
from barricade.decision_log import refused_connection
from barricade.descriptors import Admission, file_limit, in_use
from barricade.drive import drive
from barricade.logs import emit_decision, info_line
from barricade.net.conductor import Outcome, Proxy, ServerContext, classify
from barricade.net.deadline import Deadline
from barricade.net.sendnow import close_now, nothing_queued, write_now
from barricade.net.tls_server import tls_handshake_done
from barricade.protocol import events as ev
from barricade.protocol.message import new_session_id
from barricade.protocol.proxy_protocol import HEADER_TIMEOUT, ProxyHeaderError, listed, parse_hosts
from barricade.protocol.proxy_protocol import parse as parse_proxy_header
from barricade.protocol.session import CLOSED, DATA, NEED_DATA, PAUSED, Session
from barricade.replies import Reply, ReplyId

log = Logger()

PAUSE_AT = 256 * 1024  # stop reading a client that pipelines this much ahead
CLOSE_GRACE = 5.0  # seconds a close may wait for the TLS close_notify exchange
THROTTLE_PAUSE = 1.0  # seconds accept pauses when rate-throttle is reached (smtpf sleeps 1 s)


class AcceptThrottle:
    """smtpf's ``rate-throttle``: connections counted per wall-clock second.

    The first connection of a new second counts 1; when a later one brings
    the count to ``limit`` or more, :meth:`accept` says so, and the caller
    pauses accepting for a second (smtpf's ``rateAccept`` sleeps with the
    accept mutex held).  ``limit`` 0 disables; the count is kept anyway.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.second: int | None = None
        self.count = 0

    def accept(self, now: float) -> bool:
        """Count one connection at ``now`` (epoch seconds); True: pause accepting."""
        second = int(now)
        if second != self.second:
            self.second, self.count = second, 1
            return False
        self.count += 1
        return 0 < self.limit <= self.count


@implementer(IHandshakeListener)
class SmtpServerProtocol(protocol.Protocol):
    def __init__(self, server: ServerContext):
        self.server = server
        self.session: Session | None = None
        self.proxy: Proxy | None = None
        self.busy = True  # until the greeting is out
        self.paused = False  # the client's input is not read (see dataReceived, _hold)
        # Why no command is taken up now: "client" (replies wait for a client that does
        # not read them), "downstream" (the message's downstream takes no more yet).
        self._holds: set[str] = set()
        self._deadline = Deadline(server.reactor, self._timed_out)
        self._wait: object = None  # what the running client timer waits for
        # smtp-session-timeout: when the session's time is up (None: not limited, or
        # already up).  The client's deadline timer is never set beyond it, so one
        # timer per connection serves both.
        self._life_end: float | None = None
        self._handshake = None  # tls-handshake-timeout
        self._hard_close = None  # abortConnection after CLOSE_GRACE
        self._expire_after_reply = False
        self._admitted: str | None = None  # the client IP counted in the factory's Admission
        self._closed = False
        self._pumping = False
        self._close_when_idle = False
        self._header: ProxyHeaderReader | None = None  # reading a load balancer's PROXY header
        self.factory: SmtpServerFactory | None = None
        # For the admin command CONN: when the session began, its last input, octets read.
        self.started = self.last_input = 0.0
        self.octets = 0

    # --- connection -----------------------------------------------------------------

    def connectionMade(self) -> None:
        try:
            self.transport.setTcpNoDelay(True)
        except (AttributeError, OSError):
            pass
        peer = self.transport.getPeer()
        host = address_text(getattr(peer, "host", "0.0.0.0"))
        if self.factory is not None and listed(host, self.factory.proxy_hosts):
            self._header = ProxyHeaderReader(self, host, getattr(peer, "port", 0))
            return  # the session begins when the balancer's PROXY header is in
        self.begin(host, getattr(peer, "port", 0))

    def begin(self, host: str, port: int, early: bytes = b"") -> None:
        """The session with the client at ``host``: the peer, or the one a PROXY header named.

        Should setting it up fail (a bug, or an option no session can use), the
        client hears #908 and the connection closes: left half begun, it would
        hold its place and its descriptor with no timer to end it.
        """
        try:
            self._begin(host, port, early)
        except Exception:
            log.failure("connection from {host}: the session could not begin", host=host)
            if not self._closed:
                self._closed = True
                reply = self.server.catalogue.reply(ReplyId.INTERNAL_ERROR)
                self.server.metrics.reply(reply)
                self.transport.write(reply.encode())
                self.transport.loseConnection()

    def _begin(self, host: str, port: int, early: bytes) -> None:
        self._header = None
        sid = new_session_id()
        client = classify(host, port, "unknown", self.server.routes)
        if self.factory is not None:
            why = self.factory.admission.admit(host, exempt=client.localhost or client.relay)
            if why is not None:
                self._refuse(why, client, sid)
                return
            self._admitted = host
            self.factory.admitted()
        self.session = Session(self.server.session_config, client, self.server.catalogue, sid)
        self.started = self.server.reactor.seconds()
        self.proxy = Proxy(self.server, client, sid)
        self.proxy.on_fatal = self._fatal
        self.proxy.on_hold = self._downstream_hold
        if self.factory is not None:
            self.factory.sessions.add(self)
        self.server.metrics.sessions.inc()
        self.server.metrics.sessions_active.inc()
        life = self.server.config["smtp-session-timeout"]
        if life:
            self._life_end = self.started + life
        self._arm(self.server.config["smtp-command-timeout"])
        # Twisted tells us when replies pile up unsent (pauseProducing below).
        self.transport.registerProducer(self, True)
        self.session.receive_data(early)  # sent with the header, before our banner: an early talker
        drive(self._greet(), self._greeted)

    def _refuse(self, why: str, client, sid: str) -> None:
        """No session for this connection: say so (421) and close; never a silent close."""
        self._closed = True
        factory = self.factory
        server = self.server
        if why == "per-client":
            reply = server.catalogue.reply(ReplyId.TOO_MANY_FROM_CLIENT, client_ip=client.ip,
                                           limit=factory.admission.per_client)
        else:
            reply = server.catalogue.reply(ReplyId.BUSY, hostname=server.hostname)
        server.metrics.reply(reply)
        server.metrics.refused.labels(why).inc()
        log.warn("session {sid}: {ip} refused ({why}): {n} sessions, capacity {cap}",
                 sid=sid, ip=client.ip, why=why, n=factory.admission.sessions,
                 cap=factory.admission.capacity)
        emit_decision(refused_connection(sid, client, reply, "admission-" + why))
        self.transport.write(reply.encode(sid))
        self.transport.loseConnection()
        self._hard_close = server.reactor.callLater(CLOSE_GRACE, self.transport.abortConnection)

    async def _greet(self) -> None:
        paused = self.factory.paused_until - self.server.reactor.seconds() if self.factory else 0
        if paused > 0:  # accepted while rate-throttle pauses accept: wait like smtpf's accept
            await task.deferLater(self.server.reactor, paused)
            if self._closed:
                return
        outcome = await self.proxy.connect()
        self.session.client = self.proxy.ctx.client  # with the name DNS gave it
        pause = self.server.config["smtp-greet-pause"]
        if pause and outcome.reply.code == 220:
            await task.deferLater(self.server.reactor, pause / 1000.0)
        if self._closed:
            return
        data = self.session.greet(outcome.reply, sink=outcome.sink)
        sent = self.session.greeted_with
        if sent is not outcome.reply:  # it spoke before our banner: #420, and the session ends
            self.proxy.refused_at_greeting(sent)
        self._send(data, sent)
        self._ready()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        for timer in (self._handshake, self._hard_close):
            if timer is not None and timer.active():
                timer.cancel()
        # What ties this object to the proxy and the timer goes: the session is
        # then freed by reference counting once its last callback has run, not
        # left to the garbage collector (whose collections a dead session's
        # objects would trigger and lengthen).
        self._deadline.close()
        if getattr(self.transport, "producer", None) is self:  # Twisted's own transports let go
            self.transport.unregisterProducer()
        if self.proxy is not None:
            self.proxy.on_fatal = self.proxy.on_hold = None
        if self._admitted is not None and self.factory is not None:
            self.factory.released(self._admitted)
            self._admitted = None
        if self._closed and self.session is None:
            return  # refused before a session began
        if self._closed:
            return
        self._closed = True
        header, self._header = self._header, None
        if header is not None:
            header.cancel()
        if self.session is None:
            return  # dropped before a session began (a bad or missing PROXY header)
        if self.factory is not None:
            self.factory.sessions.discard(self)
        if self.proxy is not None:
            self.proxy.lost()
        metrics = self.server.metrics
        metrics.sessions_active.dec()
        if metrics.flush_each_session:
            metrics.flush()
        if self.session is not None:
            s, c = self.session, self.session.client
            info_line(log, f"session {s.id}: end {c.ip}:{c.port} name={c.name} helo={s.helo_name} "
                           f"messages={s.messages} errors={s.errors}",
                      sid=s.id, ip=c.ip, port=c.port, name=c.name, helo=s.helo_name, n=s.messages,
                      e=s.errors)

    # --- input ------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._header is not None:
            self._header.feed(data)
            return
        if self._closed or self.session is None:
            return
        try:
            self.session.receive_data(data)
        except Exception:  # a parser's bug: the client hears #908, not an unexplained close
            self._internal_error(Failure())
            return
        self.octets += len(data)
        self.last_input = self.server.reactor.seconds()
        if self.busy or self._holds:
            if not self.paused and self.session.buffered > PAUSE_AT:
                self.paused = True
                self.transport.pauseProducing()
            return
        self._pump()

    def _pump(self) -> None:
        """Hand out events while none is in flight.

        Handlers that finish synchronously re-enter through ``_ready``; the
        guard turns that into another turn of this loop instead of
        recursion, so a long pipelined burst cannot exhaust the stack.
        """
        if self._pumping:
            return
        self._pumping = True
        try:
            self._pump_events()
        finally:
            self._pumping = False
            if self.proxy is not None:
                self.proxy.flush()

    def _pump_events(self) -> None:
        session = self.session
        while not self.busy and not self._holds and not self._closed and not session.closing:
            try:
                event = session.next_event()
            except Exception:  # as in receive_data: #908 and a logged traceback, never a bare close
                self._internal_error(Failure())
                return
            if event is NEED_DATA:
                self._await_client()
                return
            if event is PAUSED:
                return
            self._wait = None  # progress: the next wait gets a fresh deadline
            self.busy = True  # the idle timer keeps running; it ignores busy sessions
            # Most commands never wait (every check answers at once, no downstream
            # round trip): drive() runs them to the end here, without a Deferred.
            if isinstance(event, ev.DataChunk):
                drive(self.proxy.chunk(event), self._chunk_handled)
            else:
                drive(self.proxy.handle(event, session), self._handled)

    def _handled(self, outcome: object) -> None:
        """A command's handler ended: its outcome is answered; what it raised is an
        internal error."""
        if isinstance(outcome, Failure):
            self._internal_error(outcome)
            return
        try:
            self._respond(outcome)
        except Exception:
            log.failure("session {sid}: reply", sid=self.session.id if self.session else "-")

    def _chunk_handled(self, outcome: object) -> None:
        if isinstance(outcome, Failure):
            self._internal_error(outcome)
            return
        try:
            self._ready()
        except Exception:
            log.failure("session {sid}: reply", sid=self.session.id if self.session else "-")

    def _greeted(self, outcome: object) -> None:
        if isinstance(outcome, Failure):
            self._internal_error(outcome)

    def _await_client(self) -> None:
        """Arm the client's deadline for what we now wait for, unless it runs already.

        Partial input never re-arms it: the deadline of a command runs from
        its first byte, that of a DATA line from the end of the previous one.
        """
        s = self.session
        if s.state == DATA:
            wait, timeout = ("data", s.data_progress), "smtp-data-line-timeout"
        else:
            wait, timeout = ("partial" if s.partial else "idle"), "smtp-command-timeout"
        if wait != self._wait or self._deadline.due is None:
            self._wait = wait
            self._arm(self.server.config[timeout])

    def _ready(self) -> None:
        self.busy = False
        if self._expire_after_reply:
            self._session_expired()
            return
        if self.paused and not self._closed and not self._holds:
            self.paused = False
            self.transport.resumeProducing()
        if not self._closed:
            self._pump()

    # --- holding the client: it does not read its replies, or the downstream is slow ---

    def _hold(self, why: str) -> None:
        """Take up no more commands and read nothing more from the client."""
        self._holds.add(why)
        if not self.paused and not self._closed:
            self.paused = True
            self.transport.pauseProducing()

    def _unhold(self, why: str) -> None:
        self._holds.discard(why)
        if self._holds or self._closed or self.busy:
            return  # _ready resumes reading when the command in flight is answered
        if self.paused:
            self.paused = False
            self.transport.resumeProducing()
        self._pump()

    def _downstream_hold(self, full: bool) -> None:
        """The message's downstream cannot take more now (its send buffer is full): the
        client's bytes would pile up here, up to the message size per session."""
        if full:
            self._hold("downstream")
        elif "downstream" in self._holds:
            self._unhold("downstream")

    def pauseProducing(self) -> None:
        """IPushProducer: Twisted's send buffer to the client is full.  A client that
        pipelines commands and never reads the replies made it grow without end (each
        NOOP's reply queued, hundreds of megabytes); now it meets smtp-command-timeout."""
        self._hold("client")

    def resumeProducing(self) -> None:
        """The replies are sent: commands are taken up again."""
        self._unhold("client")

    def stopProducing(self) -> None:
        """The connection is gone: connectionLost does the rest."""

    # --- output -----------------------------------------------------------------------

    def _send(self, data: bytes, reply: Reply, now: bool = False, fate: bool = False) -> None:
        """Write a reply; close after it when it ends the session (``now``: at once
        if nothing is left to send, from a caller that checks ``_closed`` after).
        ``fate``: the reply tells a message's fate."""
        metrics = self.server.metrics
        if data:  # a BDAT chunk's 354 is never sent, and not counted
            metrics.reply(reply)
            also = self.session.also_sent
            if also is not None:
                self.session.also_sent = None
                metrics.reply(also)
        if (fate or self.session.closing) and metrics.flush_each_session:
            # Before the client can see it: a worker killed a moment later has still
            # counted every message it answered, and every session it ended.
            metrics.flush()
        write_now(self.transport, data)
        if self.proxy is not None:
            self.proxy.replied()  # the decision's log line, after the reply it records
        if self.session.closing:
            self._close(now)

    def _respond(self, outcome: Outcome) -> None:
        if self._closed or self.session.state == CLOSED:  # closed meanwhile (KILL, fatal error)
            self.proxy.replied()  # the decision stands, and is logged, unanswered
            return
        if outcome.client is not None:  # XCLIENT: the session goes on as this client
            self.session.restart(outcome.client, outcome.client_helo)
        # After QUIT's reply nothing more comes in: the socket can close at once.  A
        # client that is dropped may still be sending, and a close with its data
        # unread resets the connection, which can destroy the reply before it is read.
        now = self.session.quitting
        fate = self.server.metrics.flush_each_session and self.session.ending_message
        self._send(self.session.respond(outcome.reply, drop=outcome.drop, sink=outcome.sink),
                   outcome.reply, now=now, fate=fate)
        if self._closed:
            return
        if outcome.start_tls:
            self.transport.startTLS(self.server.tls_context)
            self.proxy.ctx.tls = True
            limit = self.server.config["tls-handshake-timeout"]
            if limit:
                self._handshake = self.server.reactor.callLater(limit, self._handshake_timed_out)
        self.busy = False
        if self._expire_after_reply:
            self._session_expired()
            return
        if self._close_when_idle and not self._in_progress():
            self.shutdown()
            return
        self._ready()

    def _close(self, now: bool = False) -> None:
        """Close after the last reply; downstream transactions are abandoned.

        The close is made hard after :data:`CLOSE_GRACE` seconds: a TLS
        close waits for the peer's close_notify, which a stalled or hostile
        client never sends.  A plain socket with nothing left to send closes
        at the next turn of the loop, or (``now``) before this returns,
        ``connectionLost`` included: it needs no such timer.  ``now`` is for
        the reply to QUIT only: KILL and shutdown close sessions while
        iterating over them, and must not see one vanish under them.
        """
        if self.proxy is not None:
            self.proxy.lost()
        self._disarm()
        if now and close_now(self.transport):
            return
        at_once = nothing_queued(self.transport)
        self.transport.loseConnection()
        if self._hard_close is None and not self._closed and not at_once:
            self._hard_close = self.server.reactor.callLater(CLOSE_GRACE, self._abort)

    def _abort(self) -> None:
        """Drop the socket now, whatever the TLS layer still waits for."""
        self._hard_close = None
        if not self._closed:
            log.info("session {sid}: closed hard (the client did not finish the close)",
                     sid=self.session.id if self.session else "-")
            self.transport.abortConnection()

    def handshakeCompleted(self) -> None:
        """The TLS layer's notice (IHandshakeListener): the handshake deadline is off.

        The client's certificate (if asked for) is known now, before any
        command it sends over TLS: the policy reads it from the context.
        """
        if self._handshake is not None and self._handshake.active():
            self._handshake.cancel()
        self._handshake = None
        if self.proxy is not None and self.session is not None:
            self.proxy.ctx.client_cert = tls_handshake_done(self.server, self.transport.getHandle(),
                                                            self.session.id)

    def _handshake_timed_out(self) -> None:
        """No reply can reach a client stuck in the handshake: drop the socket."""
        self._handshake = None
        if self._closed:
            return
        self.server.metrics.limit_hits.labels("tls-handshake-timeout").inc()
        log.info("session {sid}: TLS handshake not done in {t}s; closed",
                 sid=self.session.id, t=self.server.config["tls-handshake-timeout"])
        if self.proxy is not None:
            self.proxy.lost()
        self._disarm()
        self.transport.abortConnection()

    def _session_expired(self) -> None:
        """smtp-session-timeout: tell the client (#940) and close.

        A command in flight (a check, the downstream's reply to the dot)
        gets its reply first: cutting it would turn a delivered message into
        one the client must send again.
        """
        self._life_end = None
        if self._closed or self.session is None or self.session.state == "closed":
            return
        if self.busy:
            self._expire_after_reply = True
            return
        self._expire_after_reply = False
        self.server.metrics.limit_hits.labels("smtp-session-timeout").inc()
        log.info("session {sid}: session time limit reached", sid=self.session.id)
        reply = self.server.catalogue.reply(ReplyId.SESSION_TIME_LIMIT,
                                            limit=self.server.config["smtp-session-timeout"])
        self.proxy.abandon(reply, "smtp-session-timeout")
        self._send(self.session.abort(reply), reply)

    def _fatal(self, reply: Reply) -> None:
        """Proxy says the session cannot go on (downstream lost mid-DATA)."""
        if not self._closed:
            self._send(self.session.abort(reply), reply)

    def kill(self, reply: Reply) -> None:
        """The admin command KILL: the client is told (#325) and the session closes now.

        A command in flight loses its reply, as with any close: nothing the
        client was not told about is acknowledged.
        """
        self._fatal(reply)

    def shutdown(self, graceful: bool = False) -> None:
        """The daemon is stopping: tell the client (#909) and close.

        ``graceful`` lets a transaction in progress finish first (its final
        reply is sent, then #909).  Otherwise a transaction without its
        final reply is abandoned: the client got no 250 for it and will send
        it again.
        """
        if self._closed or self.session is None or self.session.state == "closed":
            return
        if graceful and self._in_progress():
            self._close_when_idle = True
            return
        reply = self.server.catalogue.reply(ReplyId.SHUTTING_DOWN, hostname=self.server.hostname)
        self.proxy.abandon(reply, "shutdown")
        self._send(self.session.abort(reply), reply)

    def _in_progress(self) -> bool:
        s = self.session
        return self.busy or s.state == DATA or s.in_transaction

    def _internal_error(self, failure: Failure) -> None:
        log.failure("session {sid}: internal error", failure,
                    sid=self.session.id if self.session else "-")
        if self._closed or self.session is None:
            return
        reply = self.server.catalogue.reply(ReplyId.INTERNAL_ERROR)
        self._send(self.session.abort(reply), reply)

    # --- client timeouts ----------------------------------------------------------------

    def _arm(self, seconds: float) -> None:
        # One deadline per connection, never beyond the end of the session's time
        # (smtp-session-timeout).
        life_end = self._life_end
        if life_end is None:
            self._deadline.set(seconds)
            return
        now = self.server.reactor.seconds()
        left = life_end - now
        if left < seconds:
            seconds = left if left > 0.0 else 0.0
        self._deadline.set(seconds, now)

    def _disarm(self) -> None:
        self._deadline.clear()

    def _timed_out(self) -> None:
        if self._closed:
            return
        if self._life_end is not None and self.server.reactor.seconds() >= self._life_end:
            self._session_expired()  # #940 now, or after the reply to the command in flight
            if not self._closed and self.busy:
                self._arm(self.server.config["smtp-command-timeout"])  # as below
            return
        if self.busy:  # waiting on our side (checks, downstream): not the client's fault
            self._wait = None
            self._arm(self.server.config["smtp-command-timeout"])
            return
        if self._handshake is not None:
            self._handshake_timed_out()  # no reply can be read mid-handshake
            return
        log.info("session {sid}: client timeout ({wait})", sid=self.session.id, wait=self._wait)
        reply = self.server.catalogue.reply(ReplyId.CLIENT_TIMEOUT)
        self.proxy.abandon(reply, "smtp-data-line-timeout" if self.session.state == DATA
                           else "smtp-command-timeout")
        self._send(self.session.abort(reply), reply)


class ProxyHeaderReader:
    """Reads a listed load balancer's PROXY header, then starts the session.

    A header that is malformed, missing or not complete within
    ``HEADER_TIMEOUT`` seconds (or smtp-command-timeout if shorter) drops
    the connection without a word: the peer is a balancer, not an SMTP
    client, and something is wrong with it.
    """

    def __init__(self, proto: SmtpServerProtocol, host: str, port: int):
        self.proto, self.host, self.port = proto, host, port
        self.buffer = b""
        wait = min(HEADER_TIMEOUT, proto.server.config["smtp-command-timeout"])
        self.timer = proto.server.reactor.callLater(wait, self._drop, "no complete header in time")

    def feed(self, data: bytes) -> None:
        self.buffer += data
        try:
            header = parse_proxy_header(self.buffer)
        except ProxyHeaderError as exc:
            self._drop(str(exc))
            return
        if header is None:
            return
        self.cancel()
        host, port = header.client or (self.host, self.port)
        log.info("PROXY v{v} header from {lb}: client {ip}:{port}", v=header.version, lb=self.host,
                 ip=host, port=port)
        self.proto.begin(host, port, self.buffer[header.length:])

    def cancel(self) -> None:
        if self.timer.active():
            self.timer.cancel()

    def _drop(self, why: str) -> None:
        self.cancel()
        log.warn("PROXY header from {lb}:{port}: {why}; connection dropped", lb=self.host,
                 port=self.port, why=why)
        self.proto._header = None
        self.proto.transport.abortConnection()


class SmtpServerFactory(protocol.Factory):
    def __init__(self, server: ServerContext):
        self.server = server
        self.sessions: set[SmtpServerProtocol] = set()
        self.ports: list = []  # the listening ports, paused by rate-throttle
        self.throttle = AcceptThrottle(server.config["rate-throttle"])
        self.proxy_hosts = parse_hosts(server.config["proxy-protocol-hosts"])
        self.paused_until = 0.0
        config = server.config
        limit, base = file_limit(), in_use()
        self.admission = Admission(limit, base if base is not None else 32,
                                   config["descriptor-reserve"], config["client-max-sessions"])
        # With several workers on one listening socket, a full worker stops
        # accepting and the others take the connections; alone, it answers
        # each one it cannot serve with #941 instead of leaving it queued.
        self.shared = (config["workers"] or os.cpu_count() or 1) > 1
        self.full = False

    def add_port(self, port) -> None:
        """A listening port: its accept burst is kept within the room left.

        Twisted accepts up to ``numberAccepts`` connections per wake-up and
        grows the figure under load; a burst larger than the room left
        would take connections this process cannot serve.
        """
        self.ports.append(port)
        read = port.doRead

        def do_read() -> None:
            read()
            port.numberAccepts = max(1, min(port.numberAccepts, self.admission.room))

        port.doRead = do_read
        port.numberAccepts = max(1, min(port.numberAccepts, self.admission.room))
        # The port's logger is a descriptor that builds a new Logger on every read,
        # twice per accept: read once, it stays an attribute of this port.
        logger = getattr(port, "_logger", None)
        if logger is not None:
            port._logger = logger

    def admitted(self) -> None:
        """A session was admitted: a shared worker without room stops accepting."""
        if self.shared and not self.full and self.admission.room == 0:
            self.full = True
            self.server.metrics.limit_hits.labels("descriptors").inc()
            log.warn("{n} sessions fill this worker's descriptors (limit {limit}, "
                     "descriptor-reserve {reserve}); accept paused, other workers take new clients",
                     n=self.admission.sessions, limit=self.admission.limit,
                     reserve=self.server.config["descriptor-reserve"])
            for port in self.ports:
                port.stopReading()

    def released(self, ip: str) -> None:
        self.admission.release(ip)
        if self.full and self.admission.room > 0:
            self.full = False
            if self.paused_until <= self.server.reactor.seconds():
                self._resume()

    def update_metrics(self) -> None:
        """The descriptor gauges (sampled: counting /proc/self/fd is not free)."""
        metrics = self.server.metrics
        count = in_use()
        if count is not None:
            metrics.descriptors_in_use.set(count)
        metrics.descriptors_limit.set(self.admission.limit)
        metrics.session_capacity.set(self.admission.capacity)

    def buildProtocol(self, addr) -> SmtpServerProtocol:
        reactor = self.server.reactor
        if self.throttle.accept(reactor.seconds()):
            self._pause()
        proto = SmtpServerProtocol(self.server)
        proto.factory = self
        return proto

    def _pause(self) -> None:
        """rate-throttle reached: stop accepting for a second (the reactor runs on).

        Connections wait in the kernel's listen queue meanwhile; those this
        process already accepted in the same burst wait for the pause to end
        before their session starts.  Counted per worker process.
        """
        reactor = self.server.reactor
        self.server.metrics.limit_hits.labels("rate-throttle").inc()
        if self.paused_until > reactor.seconds():
            return
        log.warn("{n} connections exceed rate-throttle={limit} per second; accept paused {t:g}s",
                 n=self.throttle.count, limit=self.throttle.limit, t=THROTTLE_PAUSE)
        self.paused_until = reactor.seconds() + THROTTLE_PAUSE
        for port in self.ports:
            port.stopReading()
        reactor.callLater(THROTTLE_PAUSE, self._resume)

    def _resume(self) -> None:
        if self.full:
            return  # the descriptors are still taken; released() resumes
        for port in self.ports:
            if getattr(port, "connected", False) and not getattr(port, "disconnecting", False):
                port.startReading()

    def shutdown(self, graceful: bool = False) -> None:
        """Close every open session with #909 (``graceful``: after its transaction)."""
        for proto in list(self.sessions):
            proto.shutdown(graceful)

    def drained(self, timeout: float) -> defer.Deferred:
        """Fires when no session is left, or after ``timeout`` seconds."""
        d: defer.Deferred = defer.Deferred()
        reactor = self.server.reactor

        def poll() -> None:
            if not self.sessions or reactor.seconds() >= deadline:
                d.callback(len(self.sessions))
            else:
                reactor.callLater(0.1, poll)

        deadline = reactor.seconds() + timeout
        poll()
        return d
