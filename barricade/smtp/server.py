"""The Twisted adapter: sockets, timers and TLS around the sans-IO session.

It moves bytes into :class:`~barricade.smtp.session.Session`, hands each
event to the :class:`~barricade.smtp.proxy.Proxy`, writes the reply, and
keeps exactly one command in flight.  It owns every client-side clock:
``smtp-command-timeout`` between commands, ``smtp-data-line-timeout``
inside DATA.  Whatever goes wrong inside a handler ends as a catalogue
reply (#908) and a logged traceback, never as a traceback to the client.
"""

from __future__ import annotations

from twisted.internet import defer, protocol, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from barricade.policy.pipeline import _resume
from barricade.replies import Reply
from barricade.smtp import events as ev
from barricade.smtp.message import new_session_id
from barricade.smtp.proxy import Outcome, Proxy, ServerContext, classify
from barricade.smtp.sendnow import write_now
from barricade.smtp.session import DATA, NEED_DATA, PAUSED, Session

log = Logger()

PAUSE_AT = 256 * 1024  # stop reading a client that pipelines this much ahead
THROTTLE_PAUSE = 1.0  # seconds accept pauses when rate-throttle is reached (smtpf sleeps 1 s)


def _ignore(_result: object) -> None:
    pass


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


class SmtpServerProtocol(protocol.Protocol):
    def __init__(self, server: ServerContext):
        self.server = server
        self.session: Session | None = None
        self.proxy: Proxy | None = None
        self.busy = True  # until the greeting is out
        self.paused = False
        self._timer = None
        self._closed = False
        self._pumping = False
        self._close_when_idle = False
        self.factory: SmtpServerFactory | None = None

    # --- connection -----------------------------------------------------------------

    def connectionMade(self) -> None:
        try:
            self.transport.setTcpNoDelay(True)
        except (AttributeError, OSError):
            pass
        peer = self.transport.getPeer()
        host = getattr(peer, "host", "0.0.0.0")
        if host.startswith("::ffff:"):
            host = host[7:]
        sid = new_session_id()
        client = classify(host, getattr(peer, "port", 0), "unknown", self.server.routes)
        self.session = Session(self.server.session_config, client, self.server.catalogue, sid)
        self.proxy = Proxy(self.server, client, sid)
        self.proxy.on_fatal = self._fatal
        if self.factory is not None:
            self.factory.sessions.add(self)
        self.server.metrics.sessions.inc()
        self.server.metrics.sessions_active.inc()
        self._arm(self.server.config["smtp-command-timeout"])
        self._run(self._greet(), _ignore)

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
        self._send(self.session.greet(outcome.reply, sink=outcome.sink), outcome.reply)
        self._ready()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if self._closed:
            return
        self._closed = True
        self._disarm()
        if self.factory is not None:
            self.factory.sessions.discard(self)
        if self.proxy is not None:
            self.proxy.lost()
        self.server.metrics.sessions_active.dec()
        if self.session is not None:
            s = self.session
            log.info("session {sid}: end {ip}:{port} name={name} helo={helo} messages={n} errors={e}",
                     sid=s.id, ip=s.client.ip, port=s.client.port, name=s.client.name,
                     helo=s.helo_name, n=s.messages, e=s.errors)

    # --- input ------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._closed or self.session is None:
            return
        self.session.receive_data(data)
        if self.busy:
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

    def _pump_events(self) -> None:
        session = self.session
        while not self.busy and not self._closed and not session.closing:
            event = session.next_event()
            if event is NEED_DATA:
                timeout = "smtp-data-line-timeout" if session.state == DATA else "smtp-command-timeout"
                self._arm(self.server.config[timeout])
                return
            if event is PAUSED:
                return
            self.busy = True  # the idle timer keeps running; it ignores busy sessions
            if isinstance(event, ev.DataChunk):
                self._run(self.proxy.chunk(event), self._chunk_done)
            else:
                self._run(self.proxy.handle(event, session), self._respond)

    def _run(self, coro, done) -> None:
        """Run a handler; ``done`` gets its result, a failure goes to ``_internal_error``.

        Most commands never wait (every check answers at once, no downstream
        round trip): they run to the end here, without a Deferred.  Only a
        handler that awaits something continues under Twisted.
        """
        try:
            awaited = coro.send(None)
        except StopIteration as stop:
            try:
                done(stop.value)
            except Exception:
                log.failure("session {sid}: reply", sid=self.session.id if self.session else "-")
            return
        except Exception:
            self._internal_error(Failure())
            return
        d = defer.ensureDeferred(_resume(coro, awaited))
        d.addCallbacks(done, self._internal_error)

    def _chunk_done(self, _result: object) -> None:
        self._ready()

    def _ready(self) -> None:
        self.busy = False
        if self.paused and not self._closed:
            self.paused = False
            self.transport.resumeProducing()
        if not self._closed:
            self._pump()

    # --- output -----------------------------------------------------------------------

    def _send(self, data: bytes, reply: Reply) -> None:
        self.server.metrics.reply(reply)
        write_now(self.transport, data)
        if self.session.closing:
            self._close()

    def _respond(self, outcome: Outcome) -> None:
        if self._closed:
            return
        self._send(self.session.respond(outcome.reply, drop=outcome.drop, sink=outcome.sink),
                   outcome.reply)
        if outcome.start_tls and not self._closed:
            self.transport.startTLS(self.server.tls_context)
            self.proxy.ctx.tls = True
        self.busy = False
        if self._close_when_idle and not self._in_progress():
            self.shutdown()
            return
        self._ready()

    def _close(self) -> None:
        """Close after the last reply; downstream transactions are abandoned."""
        if self.proxy is not None:
            self.proxy.lost()
        self._disarm()
        self.transport.loseConnection()

    def _fatal(self, reply: Reply) -> None:
        """Proxy says the session cannot go on (downstream lost mid-DATA)."""
        if not self._closed:
            self._send(self.session.abort(reply), reply)

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
        reply = self.server.catalogue.reply(909, hostname=self.server.hostname)
        self._send(self.session.abort(reply), reply)

    def _in_progress(self) -> bool:
        s = self.session
        return self.busy or s.state == DATA or s.in_transaction

    def _internal_error(self, failure: Failure) -> None:
        log.failure("session {sid}: internal error", failure,
                    sid=self.session.id if self.session else "-")
        if self._closed or self.session is None:
            return
        reply = self.server.catalogue.reply(908)
        self._send(self.session.abort(reply), reply)

    # --- client timeouts ----------------------------------------------------------------

    def _arm(self, seconds: float) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.reset(seconds)  # cheaper than a new timer per command
            return
        self._timer = self.server.reactor.callLater(seconds, self._timed_out)

    def _disarm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self._closed:
            return
        if self.busy:  # waiting on our side (checks, downstream): not the client's fault
            self._arm(self.server.config["smtp-command-timeout"])
            return
        log.info("session {sid}: client timeout", sid=self.session.id)
        reply = self.server.catalogue.reply(905)
        self._send(self.session.abort(reply), reply)


class SmtpServerFactory(protocol.Factory):
    def __init__(self, server: ServerContext):
        self.server = server
        self.sessions: set[SmtpServerProtocol] = set()
        self.ports: list = []  # the listening ports, paused by rate-throttle
        self.throttle = AcceptThrottle(server.config["rate-throttle"])
        self.paused_until = 0.0

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
