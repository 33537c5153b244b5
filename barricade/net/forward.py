"""The relay client: one live SMTP connection to a downstream MTA.

Every command returns a Deferred that fires with that command's reply; the
Deferreds wait in a FIFO, so commands may be pipelined and replies still
pair up.  Each wait has a timeout; a lost connection or a timeout fails
every waiting command with :class:`DownstreamError`, whose ``kind`` tells
the proxy which catalogue reply applies (``connect`` → 421 4.4.1, ``lost``
→ 4.4.2, ``timeout`` → 421 4.4.7).

:class:`Downstream` adds the relay steps on top: EHLO (HELO fallback),
MAIL, RCPT, DATA, the dot-stuffed body and the final dot.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, error, protocol, ssl
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from barricade.descriptors import exhausted
from barricade.net.deadline import Deadline
from barricade.net.sendnow import write_now
from barricade.protocol.capabilities import UNKNOWN, Capabilities, mail_parameters, rcpt_parameters
from barricade.protocol.downstream_tls import PLAIN, REFUSE, TlsPolicy, decide
from barricade.protocol.grammar import ascii_digits

log = Logger()

MAX_REPLY_LINE = 4096  # longer reply lines are cut, never buffered without bound
MAX_REPLY_LINES = 100
_STATUS = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?: |$)")


class DownstreamError(Exception):
    """The downstream host could not be reached, was lost, or timed out."""

    def __init__(self, kind: str, host: str, detail: str = ""):
        super().__init__(f"{kind} {host}: {detail}" if detail else f"{kind} {host}")
        self.kind = kind  # "connect", "descriptors" (EMFILE), "lost", "timeout", "protocol"
        self.host = host


def _without_status(line: str) -> str:
    """A reply line's text without the enhanced status it starts with."""
    match = _STATUS.match(line)
    return line[match.end() :].strip() if match else line


@dataclass(frozen=True)
class DownstreamReply:
    code: int
    lines: tuple[str, ...]

    @property
    def status(self) -> str:
        """The enhanced status of the first line; "" when there is none, or when its class
        is not the code's (``550 4.7.1``: RFC 3463 2 says they must agree, and the
        client would get a reply that contradicts itself; the caller's default, of
        the code's class, goes instead)."""
        match = _STATUS.match(self.lines[0]) if self.lines else None
        if match and match.group(1) == str(self.code)[0]:
            return f"{match.group(1)}.{match.group(2)}.{match.group(3)}"
        return ""

    @property
    def text(self) -> str:
        """The first line without its enhanced status (one of another class too: it
        would read as this reply's own)."""
        return _without_status(self.lines[0]) if self.lines else ""

    @property
    def more(self) -> tuple[str, ...]:
        """The lines after the first, each without its enhanced status (a relayed reply
        gets one status, on every line)."""
        return tuple(_without_status(line) for line in self.lines[1:])

    @property
    def ok(self) -> bool:
        """Success, for every command but DATA (354) and AUTH's challenge (334), whose
        callers look for those codes: a 3xx to MAIL, RCPT, a chunk or the dot is no
        acceptance, and a client must never get a 250 for it."""
        return 200 <= self.code < 300

    def __str__(self) -> str:
        return f"{self.code} {self.lines[0] if self.lines else ''}"


class SmtpClientProtocol(protocol.Protocol):
    """Reply parser plus a FIFO of waiting commands."""

    def __init__(self, clock: IReactorTime, host: str):
        self.clock = clock
        self.host = host
        self._buffer = bytearray()
        self._lines: list[str] = []
        # Waiting commands and their timeouts; one deadline per connection runs for
        # the oldest (moved as each reply comes in).
        self._waiting: deque[tuple[defer.Deferred, float]] = deque()
        self._deadline = Deadline(clock, self._timed_out)
        self.lost = False
        self.lost_reason: str = ""
        # Message bytes held back until the next command, the dot or the end of the
        # client's input (flush): the body and the dot usually leave in one send.
        self._held: list[bytes] = []
        #: Told (self, True) when the send buffer fills and (self, False) when it has
        #: drained: the session whose message goes here stops reading its client
        #: meanwhile.  None while no session streams a message here (parked).
        self.pace: Callable[[SmtpClientProtocol, bool], None] | None = None

    # -- transport events -----------------------------------------------------

    def connectionMade(self) -> None:
        try:
            self.transport.setTcpNoDelay(True)
        except (AttributeError, OSError):
            pass
        # A downstream slower than the client: Twisted pauses us when its send buffer
        # is full, and the message's bytes would pile up in memory (up to the message
        # size, per session); the session is told instead (``pace``).
        self.transport.registerProducer(self, True)

    # -- IPushProducer: our send buffer, full or drained ------------------------

    def pauseProducing(self) -> None:
        if self.pace is not None:
            self.pace(self, True)

    def resumeProducing(self) -> None:
        if self.pace is not None:
            self.pace(self, False)

    def stopProducing(self) -> None:
        self.resumeProducing()  # the connection is gone: nobody waits for it to drain

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while True:
            nl = self._buffer.find(b"\n")
            if nl < 0:
                if len(self._buffer) > MAX_REPLY_LINE * 4:
                    self._protocol_error("reply line too long")
                return
            raw = bytes(self._buffer[:nl]).rstrip(b"\r")
            del self._buffer[: nl + 1]
            if not self._reply_line(raw[:MAX_REPLY_LINE]):
                return

    def _reply_line(self, raw: bytes) -> bool:
        text = raw.decode("utf-8", "replace")
        if len(text) < 3 or not ascii_digits(text[:3]) or (len(text) > 3 and text[3] not in " -"):
            self._protocol_error(f"bad reply line {text[:60]!r}")
            return False
        if len(self._lines) < MAX_REPLY_LINES:
            self._lines.append(text[4:])
        if len(text) > 3 and text[3] == "-":
            return True
        reply = DownstreamReply(int(text[:3]), tuple(self._lines))
        self._lines = []
        if not self._waiting:
            if reply.code == 421:  # a server closing an idle connection says so first
                log.info("downstream {host} closes: {reply}", host=self.host, reply=str(reply))
                self.transport.loseConnection()
                return True
            # Replies no longer pair with commands: the one before this may have been
            # taken for a command it did not answer.  Nothing more is believed from it.
            self._protocol_error(f"unsolicited reply {str(reply)[:80]!r}")
            return False
        d, _timeout = self._waiting.popleft()
        if self._waiting:
            self._arm(self._waiting[0][1])
        # else the timer runs on: it finds nothing waiting, and the next command resets it
        d.callback(reply)
        return True

    def _protocol_error(self, why: str) -> None:
        log.warn("downstream {host}: {why}", host=self.host, why=why)
        self._gone(why)
        self._fail_all(DownstreamError("protocol", self.host, why))
        self.transport.abortConnection()

    def connectionLost(self, reason=protocol.connectionDone) -> None:
        self.lost = True
        self._held.clear()
        self.lost_reason = reason.getErrorMessage() if reason else ""
        self._fail_all(DownstreamError("lost", self.host, self.lost_reason))

    def _gone(self, why: str) -> None:
        """Nothing more is sent or believed: from now on the connection counts as lost,
        without waiting for the transport to report the close a moment later."""
        self.lost = True
        self.lost_reason = why
        self._held.clear()

    def _fail_all(self, exc: DownstreamError) -> None:
        waiting, self._waiting = self._waiting, deque()
        self._deadline.clear()
        for d, _timeout in waiting:
            d.errback(exc)

    # -- commands -------------------------------------------------------------

    def expect(self, timeout: float) -> defer.Deferred:
        """Wait for the next reply (the greeting, or after :meth:`write`)."""
        d: defer.Deferred = defer.Deferred()
        if self.lost:
            d.errback(DownstreamError("lost", self.host, self.lost_reason))
            return d
        self._waiting.append((d, timeout))
        if len(self._waiting) == 1:
            self._arm(timeout)
        return d

    def _arm(self, timeout: float) -> None:
        """The oldest waiting command has ``timeout`` seconds (0: no limit) from now."""
        if timeout:
            self._deadline.set(timeout)
        else:
            self._deadline.clear()

    def _timed_out(self) -> None:
        if not self._waiting:
            return  # idle: nothing is overdue
        self._gone("no answer in time")
        self._fail_all(DownstreamError("timeout", self.host))
        self.transport.abortConnection()

    def command(self, line: str | bytes, timeout: float) -> defer.Deferred:
        if isinstance(line, str):
            line = line.encode("utf-8")
        d = self.expect(timeout)
        self.send(line + b"\r\n")
        return d

    def commands(self, lines: list[str], timeout: float) -> list[defer.Deferred]:
        """Pipelined commands in one write: one segment, so that the downstream reads
        them together and answers them together (replies written one by one
        by a peer without TCP_NODELAY would wait for our delayed ACK)."""
        waits = [self.expect(timeout) for _ in lines]
        self.send("".join(line + "\r\n" for line in lines).encode("utf-8"))
        return waits

    def write(self, data: bytes) -> None:
        """Message content: held until :meth:`send` or :meth:`flush`."""
        if not self.lost:
            self._held.append(data)

    def send(self, data: bytes) -> None:
        """``data`` now, behind any held content, in one write where possible."""
        if self.lost:
            return
        if self._held:
            self._held.append(data)
            data = b"".join(self._held)
            self._held.clear()
        write_now(self.transport, data)

    def flush(self) -> None:
        """Send the held content (the client's input ran out before the dot)."""
        if self._held:
            self.send(b"")

    def abort(self) -> None:
        self._held.clear()
        if not self.lost and self.transport is not None:
            self.transport.abortConnection()
            self._gone("aborted")  # not alive from now on: never parked, never sent QUIT

    @property
    def unread(self) -> bool:
        """Is there input not yet read as a reply (after the one being handled)?"""
        return bool(self._buffer) or bool(self._lines)


class _ClientFactory(protocol.Factory):
    noisy = False  # one connection per route per session: no start/stop log lines

    def __init__(self, clock: IReactorTime, host: str):
        self.clock = clock
        self.host = host

    def buildProtocol(self, addr) -> SmtpClientProtocol:
        return SmtpClientProtocol(self.clock, self.host)


def _endpoint(reactor, host: str, port: int, timeout: float):
    """An IP literal needs no resolver round trip (most route maps use them)."""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return HostnameEndpoint(reactor, host, port, timeout=timeout)
    if addr.version == 6:
        return TCP6ClientEndpoint(reactor, host, port, timeout=timeout)
    return TCP4ClientEndpoint(reactor, host, port, timeout=timeout)


def stuff(chunk: bytes, at_line_start: bool) -> bytes:
    """Dot-stuff canonical (CRLF) message bytes for the wire."""
    out = chunk.replace(b"\r\n.", b"\r\n..")
    if at_line_start and out.startswith(b"."):
        out = b"." + out
    return out


@dataclass
class Timeouts:
    connect: float = 60
    command: float = 300
    dot: float = 600


class Downstream:
    """One relay connection to a route's forward host."""

    def __init__(self, proto: SmtpClientProtocol, host: str, timeouts: Timeouts,
                 observe: Callable[[str, float], None] | None = None):
        self.proto = proto
        self.host = host
        self.timeouts = timeouts
        self.keywords: dict[str, str] = {}
        self._caps_from: dict[str, str] | None = None
        self._caps = UNKNOWN
        self.in_transaction = False
        self.recipients: list[str] = []
        self._at_line_start = True
        self._observe = observe or (lambda cmd, secs: None)
        self._chunk_replies: list | None = None  # relaying BDAT: the chunks' replies so far
        self.tls_attempted = False
        # False once something tied to one client session was sent (e.g. that
        # client's identity): the connection must then not serve another session.
        self.reusable = True
        self.reused = False  # taken from the pool of idle connections
        self._pace: Callable[[Downstream, bool], None] | None = None

    @property
    def pace(self) -> Callable[[Downstream, bool], None] | None:
        """Told ``(self, True)`` when this connection's send buffer is full and
        ``(self, False)`` when it has drained (the session streaming a message here
        holds its client meanwhile); None while none does."""
        return self._pace

    @pace.setter
    def pace(self, told: Callable[[Downstream, bool], None] | None) -> None:
        self._pace = told
        self.proto.pace = None if told is None else self._paced

    def _paced(self, _proto: SmtpClientProtocol, full: bool) -> None:
        told = self._pace
        if told is not None:
            told(self, full)

    @property
    def alive(self) -> bool:
        return not self.proto.lost

    @classmethod
    async def open(
        cls,
        reactor,
        hosts: Iterable[tuple[str, int]],
        helo_name: str,
        timeouts: Timeouts,
        observe: Callable[[str, float], None] | None = None,
    ) -> Downstream:
        """Connect to the first host that greets with 220, then EHLO."""
        last: DownstreamError | None = None
        for host, port in hosts:
            name = f"{host}:{port}"
            try:
                proto = await _endpoint(reactor, host, port, timeouts.connect).connect(
                    _ClientFactory(reactor, name)
                ).addTimeout(timeouts.connect, reactor)
            except (error.ConnectError, error.DNSLookupError, defer.TimeoutError, OSError) as exc:
                if exhausted(exc):  # our shortage, not the host's: the next host fares no better
                    log.error("cannot connect to {host}: out of file descriptors ({err})",
                              host=name, err=str(exc))
                    raise DownstreamError("descriptors", name, str(exc)) from None
                last = DownstreamError("connect", name, str(exc) or type(exc).__name__)
                log.warn("cannot connect to {host}: {err}", host=name, err=str(last))
                continue
            down = cls(proto, name, timeouts, observe)
            try:
                greeting = await down._timed("connect", proto.expect(timeouts.connect))
                if greeting.code != 220:
                    raise DownstreamError("connect", name, f"greeting {greeting}")
                await down._ehlo(helo_name)
            except DownstreamError as exc:
                down.abort()
                kind = "timeout" if exc.kind == "timeout" else "connect"
                last = DownstreamError(kind, name, str(exc))
                log.warn("downstream {host} unusable: {err}", host=name, err=str(exc))
                continue
            return down
        raise last or DownstreamError("connect", "?", "no forward host")

    async def _timed(self, name: str, d: defer.Deferred) -> DownstreamReply:
        started = time.monotonic()
        try:
            return await d
        finally:
            self._observe(name, time.monotonic() - started)

    def command(self, name: str, line: str, timeout: float | None = None
                ) -> Coroutine[Any, Any, DownstreamReply]:
        """Send ``line`` now; the coroutine returned (await it at once) gives the reply."""
        return self._timed(name, self.proto.command(line, timeout or self.timeouts.command))

    async def _ehlo(self, helo_name: str) -> None:
        reply = await self.command("ehlo", f"EHLO {helo_name}")
        if reply.code == 250:
            for line in reply.lines[1:]:
                word, _, rest = line.partition(" ")
                self.keywords[word.upper()] = rest
            return
        reply = await self.command("helo", f"HELO {helo_name}")
        if reply.code != 250:
            raise DownstreamError("connect", self.host, f"HELO refused: {reply}")

    @property
    def capabilities(self) -> Capabilities:
        """What the EHLO reply offered (rebuilt only when the keywords changed)."""
        if self._caps_from != self.keywords:
            self._caps_from = dict(self.keywords)
            self._caps = Capabilities.from_keywords(self.keywords)
        return self._caps

    def mail_line(self, sender: str, params: dict[str, str | None]) -> str:
        return f"MAIL FROM:<{sender}>" + mail_parameters(params, self.capabilities)

    def rcpt_line(self, rcpt: str, params: dict[str, str | None] | None) -> str:
        return f"RCPT TO:<{rcpt}>" + (rcpt_parameters(params, self.capabilities) if params else "")

    async def introduce(self, lines: list[str], helo_name: str) -> DownstreamReply | None:
        """XCLIENT: the connection becomes the client's; a new EHLO follows.

        A refusal (the downstream does not trust us) is returned and the
        connection carries on as ours.
        """
        reply = None
        for line in lines:
            reply = await self.command("xclient", line)
            if reply.code not in (220, 250):
                return reply
        if reply is not None:
            self.keywords = {}
            await self._ehlo(helo_name)
        return None

    async def authenticate(self, response: str) -> DownstreamReply | None:
        """AUTH PLAIN with ``response`` (the base64 credentials); None when not offered.

        Once AUTH is sent the connection speaks for one user: it is never
        parked for another session, whatever the answer.
        """
        if "PLAIN" not in self.keywords.get("AUTH", "").upper().split():
            return None
        self.reusable = False
        reply = await self.command("auth", f"AUTH PLAIN {response}")
        if reply.code == 334:  # a server that wants the response on its own line
            reply = await self.command("auth", response)
        return reply

    async def forward_client(self, lines: list[str]) -> DownstreamReply | None:
        """XFORWARD before a MAIL; the first refusal is returned (and the rest skipped)."""
        for line in lines:
            reply = await self.command("xforward", line)
            if not reply.ok:
                return reply
        return None

    async def begin(self, sender: str, params: dict[str, str | None], rcpt: str,
                    rcpt_params: dict[str, str | None] | None = None) -> tuple[DownstreamReply, DownstreamReply | None]:
        """MAIL then the first RCPT, pipelined when the host offers it."""
        self.in_transaction = True
        self.recipients = []
        self._at_line_start = True
        refused = self._not_utf8(sender)
        if refused is not None:
            return refused, None  # nothing sent: the transaction is not open there
        refused = self._not_utf8(rcpt)
        if refused is not None:
            mail = self._final("MAIL", await self.command("mail", self.mail_line(sender, params)))
            return mail, (refused if mail.ok else None)
        mail_line = self.mail_line(sender, params)
        rcpt_line = self.rcpt_line(rcpt, rcpt_params)
        if "PIPELINING" in self.keywords:
            mail_d, rcpt_d = self.proto.commands([mail_line, rcpt_line], self.timeouts.command)
            try:
                mail = await self._timed("mail", mail_d)
            except DownstreamError:
                # The RCPT's Deferred fails the same way; nobody else will wait on it.
                rcpt_d.addErrback(lambda _: None)
                raise
            rcpt_reply = self._final("RCPT", await self._timed("rcpt", rcpt_d))
            if not self._final("MAIL", mail).ok:
                return mail, None
        else:
            mail = self._final("MAIL", await self.command("mail", mail_line))
            if not mail.ok:
                return mail, None
            rcpt_reply = self._final("RCPT", await self.command("rcpt", rcpt_line))
        if rcpt_reply.ok:
            self.recipients.append(rcpt)
        return mail, rcpt_reply

    def _not_utf8(self, address: str) -> DownstreamReply | None:
        """For a UTF-8 address this connection does not offer SMTPUTF8 for, what it would
        have to say (RFC 6531 3.4), said for it: the address is never sent there.  Our
        EHLO offer comes from what the downstreams offered before; this connection
        (another forward host, or one XCLIENT made answer differently) may offer less.
        None for an address it takes."""
        if address.isascii() or "SMTPUTF8" in self.keywords:
            return None
        log.info("downstream {host} does not take UTF-8 addresses: <{address}> not sent",
                 host=self.host, address=address)
        return DownstreamReply(553, ("5.6.7 non-ASCII address not permitted by the forwarding agent",))

    async def rcpt(self, rcpt: str, params: dict[str, str | None] | None = None) -> DownstreamReply:
        refused = self._not_utf8(rcpt)
        if refused is not None:
            return refused
        reply = self._final("RCPT", await self.command("rcpt", self.rcpt_line(rcpt, params)))
        if reply.ok:
            self.recipients.append(rcpt)
        return reply

    async def data(self, chunking: bool = False) -> DownstreamReply:
        """DATA; or, for a message that came in BDAT chunks, BDAT where the host offers CHUNKING.

        BDAT needs no go-ahead: the 354 returned then is ours, nothing was sent.
        """
        if chunking and "CHUNKING" in self.keywords:
            self._chunk_replies = []
            return DownstreamReply(354, ("BDAT",))
        self._chunk_replies = None
        return await self.command("data", "DATA")

    def write(self, chunk: bytes) -> None:
        if not chunk:
            return
        if self._chunk_replies is not None:
            d = self.proto.expect(self.timeouts.command)
            d.addBoth(self._chunk_replies.append)  # read at the end, in order
            self.proto.write(b"BDAT %d\r\n" % len(chunk) + chunk)
            return
        self.proto.write(stuff(chunk, self._at_line_start))
        self._at_line_start = chunk.endswith(b"\r\n")

    async def dot(self) -> DownstreamReply:
        chunked, self._chunk_replies = self._chunk_replies, None
        if chunked is not None:
            end = b"BDAT 0 LAST\r\n"
        else:
            end = b".\r\n" if self._at_line_start else b"\r\n.\r\n"
        d = self.proto.expect(self.timeouts.dot)
        self.proto.send(end)
        try:
            reply = await self._timed("dot", d)
        finally:
            self.end_transaction()
        for earlier in chunked or ():  # the replies to the chunks came before the last one
            if isinstance(earlier, Failure):
                raise earlier.value
            if not self._final("BDAT", earlier).ok:
                return earlier
        return self._final("the end of data", reply)

    def _final(self, what: str, reply: DownstreamReply) -> DownstreamReply:
        """A MAIL, RCPT, chunk or dot must be answered yes (2xx) or no (4xx, 5xx).  Any
        other code (a 354 to a RCPT, a 334 to the dot) means the two sides are out of
        step: the connection is dropped, and nothing it said counts as acceptance."""
        if reply.code // 100 in (2, 4, 5):
            return reply
        self.abort()
        raise DownstreamError("protocol", self.host, f"{what} answered {reply}")

    def flush(self) -> None:
        """Message content written so far goes out now."""
        self.proto.flush()

    def end_transaction(self) -> None:
        self.in_transaction = False
        self.recipients = []

    async def rset(self) -> bool:
        """Abort the transaction; a connection that fails RSET is closed."""
        if not self.in_transaction:
            return True
        self.end_transaction()
        try:
            reply = await self.command("rset", "RSET")
        except DownstreamError:
            return False
        if not reply.ok:
            self.abort()
        return reply.ok

    async def starttls(self, policy: TlsPolicy, helo_name: str, creator) -> str:
        """STARTTLS as ``policy`` says, then EHLO again; returns "protocol cipher" or "".

        Sets ``tls_attempted`` once STARTTLS is accepted: a failure after that
        is the handshake's (a ``may`` policy then retries in plaintext).
        """
        action = decide(policy, "STARTTLS" in self.keywords)
        if action == PLAIN:
            return ""
        if action == REFUSE:
            raise DownstreamError("connect", self.host, f"STARTTLS not offered (TLS: {policy.level})")
        reply = await self.command("starttls", "STARTTLS")
        if reply.code != 220:
            if policy.required:
                raise DownstreamError("connect", self.host, f"STARTTLS refused: {reply}")
            return ""
        if self.proto.unread:
            # Plaintext after the 220 would be read as the answer to our EHLO inside TLS
            # (RFC 3207 5: a man in the middle's injection): nothing of it is believed.
            self.abort()
            raise DownstreamError("protocol", self.host, "data after the STARTTLS go-ahead")
        self.tls_attempted = True
        self.proto.transport.startTLS(creator)
        self.keywords = {}
        try:
            await self._ehlo(helo_name)
        except DownstreamError as exc:  # the handshake failed (or the certificate did not verify)
            raise DownstreamError("connect", self.host, f"TLS handshake failed: {exc}") from None
        conn = self.proto.transport.getHandle()
        return f"{conn.get_protocol_version_name()} {conn.get_cipher_name()}"

    async def quit(self) -> None:
        if not self.alive:
            return
        try:
            await self.command("quit", "QUIT", timeout=min(self.timeouts.command, 10))
        except DownstreamError:
            pass
        self.proto.transport.loseConnection()

    def abort(self) -> None:
        """Drop the connection: a transaction without its dot is discarded downstream."""
        self.end_transaction()
        self.proto.abort()


def client_tls(policy: TlsPolicy, host: str, ca_file: str = ""):
    """The TLS client options for ``host``: verified for ``verify``, encryption only otherwise."""
    if not policy.verify:
        return ssl.CertificateOptions()
    if ca_file:
        pems = re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----",
                          open(ca_file, "rb").read(), re.DOTALL)
        trust = ssl.trustRootFromCertificates([ssl.Certificate.loadPEM(pem) for pem in pems])
    else:
        trust = ssl.platformTrust()
    return ssl.optionsForClientTLS(policy.name or host, trustRoot=trust)
