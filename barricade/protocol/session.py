"""The SMTP server session as a sans-IO state machine.

Bytes go in with :meth:`Session.receive_data`; :meth:`Session.next_event`
hands out one event at a time; the caller answers each command event with
:meth:`Session.respond`, which returns the bytes to write and applies the
state change the reply implies (a 250 to MAIL sets the sender, a 354 to
DATA enters DATA mode, ...).  Exactly one command is in flight: until it
is answered ``next_event`` returns :data:`PAUSED`, so pipelined commands
are answered strictly in order, whatever the checks behind them await.

The session never touches a socket or a clock; the Twisted adapter in
``server.py`` owns both.  Syntax, sequence and protocol-limit refusals are
decided here and come out as :class:`~barricade.protocol.events.Violation`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from barricade.admin import ADMIN_VERBS
from barricade.options import Config
from barricade.protocol import auth as sasl
from barricade.protocol import events as ev
from barricade.protocol.capabilities import (
    EIGHTBIT_ALWAYS,
    MAIL_DSN,
    RCPT_DSN,
    dsn_mail_error,
    dsn_rcpt_error,
)
from barricade.protocol.chunking import ChunkDecoder, parse_bdat
from barricade.protocol.data import DataDecoder
from barricade.protocol.grammar import (
    COMMAND_HARD_LIMIT,
    COMMAND_LIMIT,
    TEXT_LINE_LIMIT,
    GrammarError,
    Strictness,
    ascii_digits,
    parse_path,
    parse_xclient,
    split_command,
    valid_etrn,
    valid_helo,
)
from barricade.replies import Catalogue, Reply, ReplyId

#: A command byte other than TAB and printable ASCII (one search, not a loop per byte).
_NOT_PRINTABLE = re.compile(rb"[^\t\x20-\x7e]")


class _Sentinel:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA = _Sentinel("NEED_DATA")
PAUSED = _Sentinel("PAUSED")

GREETING, COMMAND, DATA, CLOSED = "greeting", "command", "data", "closed"
BDAT = "bdat"  # reading the octets of a BDAT chunk (RFC 3030)
AUTH = "auth"  # the next line is a SASL response (RFC 4954), not a command
#: smtpf's "sink" state after a connect-time 421 that does not drop (``-rate-drop``,
#: ``-concurrent-drop``): NOOP and QUIT are served, any other known command gets
#: #251 "out of sequence" and the connection closes.
SINK = "sink"
SINK_COMMANDS = frozenset(("NOOP", "QUIT"))

#: Replies that are not the client's error and do not count toward
#: ``smtp-drop-after``: #910 (recipients beyond message-rcpt-limit) is RFC
#: 5321 4.5.3.1.10's "deliver this batch, send the rest later", which a
#: pipelining client meets once per recipient past the limit.
NOT_ERRORS = frozenset((ReplyId.TOO_MANY_RECIPIENTS,))

NOT_IMPLEMENTED = {"TURN", "ATRN", "SEND", "SOML", "SAML", "EXPN"}
HELP_COMMANDS = "HELO EHLO MAIL RCPT DATA RSET NOOP QUIT HELP VRFY STARTTLS XCLIENT"


@dataclass(frozen=True)
class SessionConfig:
    """The options the protocol layer needs, resolved once per listener."""

    hostname: str = "localhost"
    esmtp: bool = True
    pipelining: bool = True
    eightbitmime: bool = False
    xclient: bool = True
    tls_available: bool = False
    command_length: bool = False
    line_length: int = 0
    strict_dot: bool = False
    strictness: Strictness = Strictness()
    drop_after: int = 5
    drop_unknown: bool = False
    helo_schizo: int = 1
    size_limit: int = 0
    dsn: bool = False  # every downstream offers DSN (the proxy sets it from their EHLO)
    etrn: bool = False  # the local route's downstream offers ETRN
    smtputf8: bool = False  # every downstream offers SMTPUTF8 (RFC 6531)
    chunking: bool = True  # offer CHUNKING (RFC 3030 BDAT)
    auth: bool = False  # smtp-auth-enable
    auth_tls: bool = True  # smtp-auth-tls: AUTH only after STARTTLS (localhost excepted)

    @classmethod
    def from_config(cls, config: Config, hostname: str, tls_available: bool) -> SessionConfig:
        return cls(
            hostname=hostname,
            esmtp=config["smtp-enable-esmtp"],
            pipelining=config["rfc2920-pipelining"],
            eightbitmime=config["rfc1652-8bitmime"] == EIGHTBIT_ALWAYS,
            xclient=config["smtp-xclient-enable"],
            tls_available=tls_available,
            command_length=config["rfc2821-command-length"],
            line_length=config["rfc2821-line-length"],
            strict_dot=config["rfc2821-strict-dot"],
            strictness=Strictness(
                angle_brackets=config["rfc2821-angle-brackets"],
                extra_spaces=config["rfc2821-extra-spaces"],
                local_length=config["rfc2821-local-length"],
                domain_length=config["rfc2821-domain-length"],
            ),
            drop_after=config["smtp-drop-after"],
            drop_unknown=config["smtp-drop-unknown"],
            helo_schizo=config["smtp-helo-schizo"],
            size_limit=config["message-size-limit"],
            chunking=config["rfc3030-chunking"],
            auth=config["smtp-auth-enable"],
            auth_tls=config["smtp-auth-tls"],
        )


class Session:
    """One SMTP server conversation."""

    def __init__(self, config: SessionConfig, client: ev.ClientInfo, catalogue: Catalogue, session_id: str):
        self.config = config
        self.client = client
        #: Is the connection itself from this host?  A client XCLIENT names (a front
        #: MTA's own 127.0.0.1) is localhost to the policy, but gets none of the
        #: privileges of this host's own clients: admin verbs, AUTH without TLS.
        self.local_peer = client.localhost
        self.catalogue = catalogue
        self.id = session_id
        self.state = GREETING
        self.closing = False
        self.tls = False
        self.errors = 0
        #: A reply :meth:`respond` sent after the one it was given (#922), for the counts.
        self.also_sent: Reply | None = None
        self.helo: str | None = None
        self.helo_verb: str | None = None
        self.xclient_helo: str | None = None
        self.sender: ev.Mail | None = None
        self.rcpt_count = 0
        self.messages = 0
        self._buffer = bytearray()
        self._pending: ev.Event | None = None
        self._pipelined = False  # input arrived while a command was in flight
        self._data: DataDecoder | None = None
        self._early_data = False
        self.greeted_with: Reply | None = None  # the banner or refusal greet() sent
        # BDAT: the transaction's chunk decoder (None: no BDAT yet), the octets of the
        # chunk still to read, whether it is the last, and a refusal to send once a
        # refused chunk's octets are read and thrown away (RFC 3030 2).
        self._chunks: ChunkDecoder | None = None
        self._chunk_left = 0
        self._chunk_last = False
        self._chunk_refusal: ev.Violation | None = None
        self.authenticated: str | None = None  # the user name, once the downstream said 235
        self._sasl: sasl.Exchange | None = None  # the AUTH exchange in progress

    # --- derived state ------------------------------------------------------------

    @property
    def esmtp(self) -> bool:
        return self.helo_verb == "EHLO"

    @property
    def pipelining(self) -> bool:
        """May the client pipeline now (RFC 2920: only after EHLO offered it)?"""
        return self.esmtp and self.config.pipelining

    @property
    def helo_name(self) -> str:
        """The HELO name the policy should believe (XCLIENT HELO= wins)."""
        return self.xclient_helo or self.helo or ""

    @property
    def auth_offered(self) -> bool:
        """AUTH is offered: enabled, and encrypted unless smtp-auth-tls is off or the client is localhost."""
        cfg = self.config
        return cfg.auth and (self.tls or not cfg.auth_tls or self.local)

    @property
    def local(self) -> bool:
        """A client on this host, on a connection from this host."""
        return self.client.localhost and self.local_peer

    @property
    def in_transaction(self) -> bool:
        return self.sender is not None

    @property
    def quitting(self) -> bool:
        """The command in flight is QUIT: after its reply the client sends nothing more."""
        return type(self._pending) is ev.Quit

    @property
    def ending_message(self) -> bool:
        """The command in flight ends a message (the dot, BDAT LAST): its reply is the fate."""
        return type(self._pending) is ev.EndOfData

    @property
    def buffered(self) -> int:
        """Input octets received but not yet handed out (for back-pressure)."""
        return len(self._buffer) + (len(self._data.buffer) if self._data is not None else 0)

    @property
    def partial(self) -> bool:
        """Part of a command has arrived (its deadline runs from then)."""
        return self.state != DATA and bool(self._buffer)

    @property
    def data_progress(self) -> int:
        """Message octets decoded so far: grows only when a line (or a long
        line's segment) is complete, so a byte-by-byte trickle does not count."""
        return self._data.size if self._data is not None else 0

    def ehlo_keywords(self) -> list[str]:
        cfg = self.config
        words = []
        if cfg.pipelining:
            words.append("PIPELINING")
        words.append(f"SIZE {cfg.size_limit}" if cfg.size_limit else "SIZE")
        if cfg.eightbitmime:
            words.append("8BITMIME")
        if cfg.dsn:
            words.append("DSN")
        if cfg.etrn:
            words.append("ETRN")
        if cfg.smtputf8:
            words.append("SMTPUTF8")
        if cfg.chunking:
            words.append("CHUNKING")
        if cfg.tls_available and not self.tls:
            words.append("STARTTLS")
        if cfg.xclient and self.client.xclient_allowed:
            words.append("XCLIENT NAME ADDR PORT PROTO HELO")
        if self.auth_offered:
            words.append(sasl.KEYWORD)
        words.append("ENHANCEDSTATUSCODES")
        return words

    # --- input ------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        if self.state == CLOSED or not data:
            return
        if self._pending is not None and not self._chunk_octets(len(data)):
            self._pipelined = True
        if self.state == DATA and self._data is not None:
            self._data.feed(data)
        else:
            self._buffer += data

    def _chunk_octets(self, size: int) -> bool:
        """Are the ``size`` octets arriving now all part of the BDAT chunk being read?

        While the first BDAT waits for the downstream's DATA reply, its own
        octets go on arriving: they are the command's, not commands sent ahead
        of its reply.  Octets beyond the chunk are.
        """
        return self.state == BDAT and size <= self._chunk_left - len(self._buffer)

    def _reply(self, rid: int, **fields: object) -> Reply:
        base = {
            "hostname": self.config.hostname,
            "client_name": self.client.name,
            "client_ip": self.client.ip,
            "helo": self.helo_name,
        }
        base.update(fields)
        return self.catalogue.reply(rid, **base)

    def violation(self, rid: int, drop: bool = False, **fields: object) -> ev.Violation:
        return ev.Violation(self._reply(rid, **fields), drop)

    def _emit(self, event: ev.Event) -> ev.Event:
        if isinstance(event, ev.Command):
            self._pending = event
            if self._buffer:
                self._pipelined = True  # the next command was sent without waiting
        return event

    def next_event(self) -> ev.Event | _Sentinel:
        if self.state == CLOSED or self.closing:
            return PAUSED
        if self._pending is not None:
            return PAUSED
        if self.state == GREETING:
            return NEED_DATA
        if self.state == DATA:
            return self._next_data_event()
        if self.state == BDAT:
            return self._next_chunk_event()
        return self._next_command()

    def _next_data_event(self) -> ev.Event | _Sentinel:
        dec = self._data
        assert dec is not None
        if self._early_data:
            self._early_data = False
            return self._emit(self.violation(ReplyId.PIPELINING_AFTER_HELO, drop=True))
        chunk = dec.decode()
        limit = self.config.size_limit
        if chunk and not (limit and dec.size > limit):
            return ev.DataChunk(chunk)
        if not dec.done:
            return NEED_DATA
        # Bytes after the dot are the next commands.
        self._buffer = dec.buffer
        return self._emit(self._end_of_message(dec, limit))

    def _end_of_message(self, dec, limit: int) -> ev.EndOfData:
        """The message is complete (the dot, or BDAT LAST): judge its size and lines.

        DATA and BDAT end alike, so that a chunked message meets the same
        limits as a dotted one.
        """
        violation, drop = None, False
        if limit and dec.size > limit:
            violation = self._reply(ReplyId.MESSAGE_TOO_BIG, limit=limit)
        elif self.config.strict_dot and dec.bare:
            violation = self._reply(ReplyId.BARE_CR_OR_LF)
        elif self.config.line_length and dec.longest_line + 2 > TEXT_LINE_LIMIT:
            violation = self._reply(ReplyId.CONTENT_LINE_TOO_LONG, length=dec.longest_line + 2)
            drop = self.config.line_length >= 2
        return ev.EndOfData(dec.size, dec.bare, dec.longest_line, violation, drop)

    def _next_chunk_event(self) -> ev.Event | _Sentinel:
        """The octets of a BDAT chunk, then what its end means."""
        take = min(self._chunk_left, len(self._buffer))
        piece = bytes(self._buffer[:take])
        del self._buffer[:take]
        self._chunk_left -= take
        if self._chunk_refusal is not None:  # a refused chunk: read and thrown away
            if self._chunk_left:
                return NEED_DATA
            self.state = COMMAND
            refusal, self._chunk_refusal = self._chunk_refusal, None
            return self._emit(refusal)
        dec = self._chunks
        assert dec is not None
        data = dec.decode(piece) if piece else b""
        if self._chunk_left == 0 and self._chunk_last:
            data += dec.finish()
        limit = self.config.size_limit
        if data and not (limit and dec.size > limit):
            return ev.DataChunk(data)
        if self._chunk_left:
            return NEED_DATA
        self.state = COMMAND
        if not self._chunk_last:
            return self._emit(ev.ChunkReceived(dec.size))
        return self._emit(self._end_of_message(dec, limit))

    def _next_command(self) -> ev.Event | _Sentinel:
        buf = self._buffer
        nl = buf.find(b"\n")
        if nl < 0:
            if len(buf) > COMMAND_HARD_LIMIT:
                return self._emit(self.violation(ReplyId.INVALID_TRANSMISSION, drop=True))
            return NEED_DATA
        raw = bytes(buf[:nl])
        del buf[: nl + 1]
        pipelined, self._pipelined = self._pipelined, False
        line = raw[:-1] if raw.endswith(b"\r") else raw
        if len(line) + 2 > COMMAND_HARD_LIMIT:
            return self._emit(self.violation(ReplyId.INVALID_TRANSMISSION, drop=True))
        if self.state == AUTH:
            return self._emit(self._sasl_response(line))
        if pipelined and not self.pipelining:  # smtpf: #643 after a plain HELO, else #631
            rid = ReplyId.PIPELINING_AFTER_HELO if self.helo_verb == "HELO" else ReplyId.PIPELINING_NOT_ALLOWED
            return self._emit(self.violation(rid, drop=True))
        if self.config.command_length and len(line) + 2 > COMMAND_LIMIT and line[:5].upper() != b"AUTH ":
            return self._emit(self.violation(ReplyId.COMMAND_TOO_LONG, length=len(line) + 2))
        if _NOT_PRINTABLE.search(line):
            text = _utf8_address_line(line)
            if text is None:
                return self._emit(self.violation(ReplyId.NON_PRINTABLE))
        else:
            text = line.decode("ascii")
        verb, arg = split_command(text)
        return self._emit(self._command(verb, arg))

    def _command(self, verb: str, arg: str) -> ev.Event:
        if verb in ADMIN_VERBS and self.local and self.state != SINK:
            return ev.Admin(verb, arg)  # barricade.admin; from elsewhere unknown, as in smtpf
        handler = _HANDLERS.get(verb)
        if self.state == SINK and verb not in SINK_COMMANDS and (handler or verb in NOT_IMPLEMENTED):
            return self.violation(ReplyId.OUT_OF_SEQUENCE, drop=True, command=verb)
        if handler is not None:
            return handler(self, arg)
        if verb in NOT_IMPLEMENTED:
            return self.violation(ReplyId.NOT_IMPLEMENTED, command=verb)
        return self.violation(ReplyId.COMMAND_UNKNOWN, drop=self.config.drop_unknown, command=verb or '""')

    # --- command handlers (syntax and sequence only; policy is the caller's) ----

    def _helo(self, verb: str, arg: str) -> ev.Event:
        if not arg:
            return self.violation(ReplyId.MISSING_ARGUMENT, command=verb)
        domain = arg.split(" ")[0]
        if not valid_helo(domain):
            return self.violation(ReplyId.HELO_INVALID, drop=True, helo=domain)
        if verb == "EHLO" and not self.config.esmtp and not (self.client.relay or self.client.private):
            return self.violation(ReplyId.EHLO_NOT_SUPPORTED)
        if self.helo is not None and domain.lower() != self.helo.lower() and self.config.helo_schizo:
            drop = self.config.helo_schizo >= 2  # smtpf: #255 after a HELO, #252 after an EHLO
            rid = ReplyId.SCHIZOPHRENIC_AFTER_HELO if self.helo_verb == "HELO" else ReplyId.SCHIZOPHRENIC_AFTER_EHLO
            return self.violation(rid, drop=drop)
        return ev.Helo(verb, domain)

    def _mail(self, arg: str) -> ev.Event:
        if self.helo is None:
            return self.violation(ReplyId.OUT_OF_SEQUENCE, command="MAIL")
        if self.sender is not None:
            return self.violation(ReplyId.OUT_OF_SEQUENCE, command="MAIL")
        if not arg:
            return self.violation(ReplyId.MISSING_ARGUMENT, command="MAIL FROM:")
        try:
            path = parse_path(arg, "FROM", self.config.strictness, mail=True)
        except GrammarError as exc:
            return self.violation(exc.reply_id, **exc.fields)
        for key, value in path.params.items():
            if key == "SIZE":
                if value is None or not ascii_digits(value):
                    return self.violation(ReplyId.INVALID_PARAMETER, param=f"SIZE={value or ''}")
                if self.config.size_limit and int(value) > self.config.size_limit:
                    return self.violation(ReplyId.MESSAGE_TOO_BIG, limit=self.config.size_limit)
            elif key == "BODY":
                body = (value or "").upper()
                if body not in ("7BIT", "8BITMIME"):
                    return self.violation(ReplyId.INVALID_PARAMETER, param=f"BODY={value or ''}")
                if body == "8BITMIME" and not self.config.eightbitmime:
                    return self.violation(ReplyId.UNSUPPORTED_PARAMETER, param="BODY=8BITMIME")
            elif key == "AUTH":
                continue  # RFC 4954 5: a server not doing AUTH ignores it
            elif key == "SMTPUTF8" and self.config.smtputf8:
                if value is not None:
                    return self.violation(ReplyId.INVALID_PARAMETER, param=f"SMTPUTF8={value}")
            elif key in MAIL_DSN and self.config.dsn:
                if dsn_mail_error(key, value):
                    return self.violation(ReplyId.INVALID_PARAMETER, param=f"{key}={value or ''}")
            else:
                return self.violation(ReplyId.UNSUPPORTED_PARAMETER, param=key)
        if not path.address.isascii() and "SMTPUTF8" not in path.params:
            return self.violation(ReplyId.UTF8_ADDRESS_WITHOUT_SMTPUTF8, address=f"<{path.address}>")
        return ev.Mail(path)

    def _rcpt(self, arg: str) -> ev.Event:
        if self.sender is None:
            return self.violation(ReplyId.OUT_OF_SEQUENCE, command="RCPT")
        if not arg:
            return self.violation(ReplyId.MISSING_ARGUMENT, command="RCPT TO:")
        try:
            path = parse_path(arg, "TO", self.config.strictness, mail=False)
        except GrammarError as exc:
            return self.violation(exc.reply_id, **exc.fields)
        for key, value in path.params.items():
            if key not in RCPT_DSN or not self.config.dsn:
                return self.violation(ReplyId.UNSUPPORTED_PARAMETER, param=key)
            if dsn_rcpt_error(key, value):
                return self.violation(ReplyId.INVALID_PARAMETER, param=f"{key}={value or ''}")
        if not path.address.isascii() and "SMTPUTF8" not in self.sender.path.params:
            return self.violation(ReplyId.UTF8_ADDRESS_WITHOUT_SMTPUTF8, address=f"<{path.address}>")
        return ev.Rcpt(path)

    def _data_cmd(self, arg: str) -> ev.Event:
        if arg:
            return self.violation(ReplyId.INVALID_PARAMETER, param=arg)
        if self.sender is None or self._chunks is not None:  # RFC 3030 3: no DATA after BDAT
            return self.violation(ReplyId.OUT_OF_SEQUENCE, command="DATA")
        if self.sender is None:
            return self.violation(ReplyId.OUT_OF_SEQUENCE, command="DATA")
        if not self.rcpt_count:
            return self.violation(ReplyId.NO_VALID_RECIPIENTS)
        return ev.Data()

    def _bdat(self, arg: str) -> ev.Event:
        """RFC 3030 BDAT: whatever the answer, the chunk's octets are read first."""
        if not self.config.chunking:
            return self.violation(ReplyId.NOT_IMPLEMENTED, command="BDAT")
        if not arg:
            return self.violation(ReplyId.MISSING_ARGUMENT, command="BDAT")
        cmd = parse_bdat(arg)
        if cmd is None:  # no size to skip: the rest of the input cannot be parsed
            return self.violation(ReplyId.INVALID_PARAMETER, drop=True, param=arg[:40])
        limit = self.config.size_limit
        done = self._chunks.size if self._chunks is not None else 0
        if limit and done + cmd.size > limit:
            # Not worth reading; closing is the one way to stay in step with the client.
            return self.violation(ReplyId.MESSAGE_TOO_BIG, drop=True, limit=limit)
        refusal = None
        if not self.esmtp or self.sender is None:
            refusal = self.violation(ReplyId.OUT_OF_SEQUENCE, command="BDAT")
        elif not self.rcpt_count:
            refusal = self.violation(ReplyId.NO_VALID_RECIPIENTS)
        self._chunk_left, self._chunk_last = cmd.size, cmd.last
        self._pipelined = False  # the octets after BDAT are its chunk, not pipelined commands
        self.state = BDAT
        if refusal is not None:
            self._chunk_refusal = refusal
            return self._next_chunk_event()
        if self._chunks is None:
            return ev.Data(chunking=True)  # the proxy's DATA step: checks, downstream DATA
        return self._next_chunk_event()

    def _starttls(self, arg: str) -> ev.Event:
        if arg:
            return self.violation(ReplyId.INVALID_PARAMETER, param=arg)
        if self.tls or self.authenticated is not None:
            return self.violation(ReplyId.OUT_OF_SEQUENCE, command="STARTTLS")
        if not self.config.tls_available:
            return self.violation(ReplyId.TLS_NOT_AVAILABLE)
        if not self.esmtp:
            return self.violation(ReplyId.OUT_OF_SEQUENCE, command="STARTTLS")
        return ev.StartTls()

    def _xclient(self, arg: str) -> ev.Event:
        if not (self.config.xclient and self.client.xclient_allowed):
            return self.violation(ReplyId.XCLIENT_NOT_PERMITTED)
        if self.sender is not None or self.authenticated is not None:
            return self.violation(ReplyId.OUT_OF_SEQUENCE, command="XCLIENT")
        try:
            return ev.Xclient(parse_xclient(arg))
        except GrammarError as exc:
            return self.violation(exc.reply_id, **exc.fields)

    def _etrn(self, arg: str) -> ev.Event:
        if not self.config.etrn:
            return self.violation(ReplyId.NOT_IMPLEMENTED, command="ETRN")
        if not self.esmtp or self.sender is not None:
            return self.violation(ReplyId.OUT_OF_SEQUENCE, command="ETRN")  # RFC 1985: after EHLO, outside a transaction
        if not arg:
            return self.violation(ReplyId.MISSING_ARGUMENT, command="ETRN")
        if not valid_etrn(arg):
            return self.violation(ReplyId.INVALID_PARAMETER, param=arg)
        return ev.Etrn(arg)

    def _auth(self, arg: str) -> ev.Event:
        """RFC 4954 AUTH: refusals of sequence and offer here, then the SASL exchange."""
        if not self.config.auth:
            return self.violation(ReplyId.NOT_IMPLEMENTED, command="AUTH")
        if not self.esmtp or self.sender is not None:  # after EHLO, outside a transaction
            return self.violation(ReplyId.OUT_OF_SEQUENCE, command="AUTH")
        if self.authenticated is not None:
            return self.violation(ReplyId.ALREADY_AUTHENTICATED)
        if not self.auth_offered:
            return self.violation(ReplyId.AUTH_NEEDS_TLS)
        if not arg:
            return self.violation(ReplyId.MISSING_ARGUMENT, command="AUTH")
        mechanism, initial = sasl.parse_command(arg)
        try:
            self._sasl = sasl.Exchange(mechanism)
        except sasl.AuthError as exc:
            return self.violation(exc.reply_id)
        return self._sasl_step(lambda exchange: exchange.start(initial))

    def _sasl_response(self, line: bytes) -> ev.Event:
        """A line in the AUTH state: the client's response to our 334."""
        self.state = COMMAND
        self._pipelined = False
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            self._sasl = None
            return self.violation(ReplyId.AUTH_BAD_RESPONSE)
        return self._sasl_step(lambda exchange: exchange.respond(text))

    def _sasl_step(self, step) -> ev.Event:
        """The exchange's next step: a challenge, the credentials, or its refusal.

        A client must wait for each 334 (RFC 4954 4): input already
        buffered behind a line that gets a challenge is smuggling, and the
        connection is closed as for pipelining where it is not allowed.
        """
        exchange = self._sasl
        assert exchange is not None
        try:
            result = step(exchange)
        except sasl.AuthError as exc:
            self._sasl = None
            return self.violation(exc.reply_id)
        if isinstance(result, sasl.Credentials):
            self._sasl = None
            return ev.Auth(exchange.mechanism, result)
        if self._buffer:
            self._sasl = None
            return self.violation(ReplyId.PIPELINING_NOT_ALLOWED, drop=True)
        return ev.AuthChallenge(self._reply(ReplyId.AUTH_CHALLENGE, challenge=result))

    def _vrfy(self, arg: str) -> ev.Event:
        if not arg:
            return self.violation(ReplyId.MISSING_ARGUMENT, command="VRFY")
        return ev.Vrfy(arg)

    # --- output -------------------------------------------------------------------

    def greet(self, reply: Reply, sink: bool = False) -> bytes:
        """Send the banner (or a connect-phase refusal, which closes).

        A client that spoke before the banner is an early talker: it gets
        #420 instead, and the connection closes.  ``greeted_with`` is the
        reply that went out (the metrics and the decision log count that one).  With ``sink`` a refusal
        keeps the connection in the :data:`SINK` state instead.
        """
        if self.state != GREETING:
            raise RuntimeError("greet() called twice")
        if self._buffer:
            self.closing = True
            self.state = CLOSED
            self.greeted_with = self._reply(ReplyId.PRE_GREETING_TRAFFIC)
            return self.greeted_with.encode(self.id)
        self.greeted_with = reply
        self.state = COMMAND
        if reply.code != 220:
            if sink:
                self.state = SINK
            else:
                self.closing = True
        return reply.encode(self.id)

    def abort(self, reply: Reply) -> bytes:
        """An unsolicited closing reply (421), e.g. downstream lost mid-DATA."""
        self._pending = None
        self.closing = True
        self.state = CLOSED
        return reply.encode(self.id)

    def respond(self, reply: Reply, drop: bool = False, sink: bool = False) -> bytes:
        """Answer the command in flight and apply what the reply implies.

        ``drop`` closes the connection after the reply (a DROP verdict);
        ``sink`` (a refused XCLIENT) enters the :data:`SINK` state instead
        of closing on a 421.
        """
        pending, self._pending = self._pending, None
        if pending is None:
            raise RuntimeError("respond() without a command in flight")
        self.also_sent = None
        if reply.code >= 400 and reply.id not in NOT_ERRORS:
            self.errors += 1
        ok = reply.code < 400
        # The event classes are final (AuthChallenge is the one subclass, of Violation):
        # one type() and identity tests, not a dozen isinstance calls per reply.
        kind = type(pending)
        if kind is ev.Helo and ok:
            self.helo, self.helo_verb = pending.domain, pending.verb
            self._reset()
        elif kind is ev.Mail and ok:
            self.sender = pending
        elif kind is ev.Rcpt and ok:
            self.rcpt_count += 1
        elif kind is ev.Data and pending.chunking and reply.code == 354:
            self._chunks = ChunkDecoder()  # the first chunk follows; BDAT gets no 354
            return b""
        elif kind is ev.Data and pending.chunking and not drop and reply.code != 421:
            # RFC 3030 2: the refusal goes out once the chunk's octets are read (and counts then)
            self.errors -= 1
            self._chunk_refusal = ev.Violation(reply, False)
            self._reset()
            return b""
        elif kind is ev.ChunkReceived:
            pass
        elif kind is ev.Data and reply.code == 354:
            self.state = DATA
            self._data = DataDecoder()
            if self._buffer or self._pipelined:
                # RFC 2920 3.1: DATA ends a command group; the client had to wait.
                self._early_data = True
                self._data.feed(bytes(self._buffer))
                self._buffer.clear()
            self._pipelined = False
        elif kind is ev.Data:
            self._reset()  # a refused DATA ends the transaction (the proxy dropped its routes)
        elif kind is ev.EndOfData:
            self.state = COMMAND
            self._data = None
            self.messages += ok
            self._reset()
        elif kind is ev.Rset and ok:
            self._reset()
        elif kind is ev.StartTls and reply.code == 220:
            # RFC 3207 4.2: forget everything, including plaintext sent after STARTTLS.
            self._buffer.clear()
            self._pipelined = False
            self.tls = True
            self.helo = self.helo_verb = None
            self._reset()
        elif kind is ev.AuthChallenge and reply.code == 334:
            self.state = AUTH
        elif kind is ev.Auth and reply.code == 235:
            self.authenticated = pending.credentials.authcid
        elif kind is ev.Xclient and reply.code == 220:
            self.helo = self.helo_verb = None
            self.errors = 0
            self._reset()
        if sink and not drop:
            self.state = SINK
            self.helo = self.helo_verb = None
            self._reset()
        elif drop or kind is ev.Quit or reply.code == 421:
            self.closing = True
        if isinstance(pending, (ev.Violation, ev.EndOfData)) and pending.drop:
            self.closing = True
        out = reply.encode(self.id)
        limit = self.config.drop_after
        if limit and self.errors >= limit and not self.closing:
            self.closing = True
            self.also_sent = self._reply(ReplyId.TOO_MANY_ERRORS)
            out += self.also_sent.encode(self.id)
        if self.closing:
            self.state = CLOSED
        return out

    def restart(self, client: ev.ClientInfo, helo: str | None) -> None:
        """XCLIENT accepted: the session continues as ``client``."""
        self.client = client
        self.xclient_helo = helo

    def _reset(self) -> None:
        self.sender = None
        self.rcpt_count = 0
        self._chunks = None


def _utf8_address_line(line: bytes) -> str | None:
    """A MAIL or RCPT line with UTF-8 in it (RFC 6531 addresses); None for anything else.

    Control characters and bytes that are not UTF-8 stay a #641 whatever
    the command; the grammar and SMTPUTF8 decide on the address.
    """
    if line[:5].upper() not in (b"MAIL ", b"RCPT ") or any(b < 0x20 and b != 0x09 or b == 0x7F for b in line):
        return None
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return None


_HANDLERS = {
    "HELO": lambda s, a: s._helo("HELO", a),
    "EHLO": lambda s, a: s._helo("EHLO", a),
    "MAIL": Session._mail,
    "RCPT": Session._rcpt,
    "DATA": Session._data_cmd,
    "RSET": lambda s, a: ev.Rset(),
    "NOOP": lambda s, a: ev.Noop(),
    "QUIT": lambda s, a: ev.Quit(),
    "HELP": lambda s, a: ev.Help(a),
    "VRFY": Session._vrfy,
    "STARTTLS": Session._starttls,
    "XCLIENT": Session._xclient,
    "ETRN": Session._etrn,
    "BDAT": Session._bdat,
    "AUTH": Session._auth,
}
