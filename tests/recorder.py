"""A recording downstream MTA on aiosmtpd, for what smtp-sink cannot show.

smtp-sink announces no SIZE, ETRN or CHUNKING; this server announces
``SIZE <limit>`` (and enforces it, as Postfix's ``message_size_limit``
does), with ``etrn`` ETRN (answered as Postfix's fast flush does), with
``chunking`` CHUNKING (BDAT, RFC 3030), with ``users`` AUTH PLAIN and LOGIN
(RFC 4954, over plaintext too), and keeps every transaction it
received (sender, MAIL options, recipients, content, the user its
connection authenticated as), every ETRN argument, every BDAT line,
every AUTH attempt and every RSET.  It runs in its own thread (aiosmtpd's
Controller) on a free loopback port.
"""

from __future__ import annotations

import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult

from barricade.testing import free_port


class _Handler:
    def __init__(self, etrn: str, chunking: bool) -> None:
        self.messages: list[tuple[str, list[str], list[str], bytes]] = []
        self.etrns: list[str] = []
        self.etrn_connections: set[int] = set()  # the sessions that asked ETRN
        self.bdats: list[str] = []
        self.tls: list[bool] = []  # per message: did it come over TLS?
        self.etrn = etrn
        self.chunking = chunking
        self.users: dict[str, str] = {}
        self.auth_delay = 0.0  # seconds every AUTH hangs (a downstream that does not answer)
        self.auth_refusal: str | None = None  # every AUTH answered so ("538 5.7.11 ..."), unjudged
        self.auths: list[tuple[str, str, bool]] = []  # (mechanism, login, success)
        self.authenticated: list[str | None] = []  # per message: the connection's login
        self.rsets: list[str | None] = []  # per RSET: the connection's login

    def authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        if self.auth_delay:
            time.sleep(self.auth_delay)
        login = auth_data.login.decode("utf-8", "replace")
        if self.auth_refusal is not None:
            self.auths.append((mechanism, login, False))
            return AuthResult(success=False, handled=False, message=self.auth_refusal)
        ok = self.users.get(login) == auth_data.password.decode("utf-8", "replace")
        self.auths.append((mechanism, login, ok))
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    @staticmethod
    def _login(session) -> str | None:
        return session.auth_data.login.decode() if session.authenticated else None

    async def handle_RSET(self, server, session, envelope) -> str:
        self.rsets.append(self._login(session))
        return "250 2.0.0 Ok"

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.etrn:
            responses.insert(-1, "250-ETRN")
        if self.chunking:
            responses.insert(-1, "250-CHUNKING")
        return responses

    async def handle_DATA(self, server, session, envelope) -> str:
        self.tls.append(session.ssl is not None)
        self.authenticated.append(self._login(session))
        self.messages.append((envelope.mail_from, list(envelope.mail_options),
                              list(envelope.rcpt_tos), envelope.original_content or envelope.content))
        return "250 2.0.0 Ok: queued"


class _Smtp(SMTP):
    async def smtp_ETRN(self, arg: str) -> None:
        if not self.event_handler.etrn:
            await self.push("502 5.5.1 Error: command not implemented")
            return
        self.event_handler.etrns.append(arg)
        self.event_handler.etrn_connections.add(id(self.session))
        await self.push(self.event_handler.etrn)


    async def smtp_BDAT(self, arg: str) -> None:
        handler = self.event_handler
        words = (arg or "").split()
        if not handler.chunking or not words or not words[0].isdigit():
            await self.push("501 5.5.4 Syntax: BDAT size [LAST]")
            return
        handler.bdats.append(arg)
        chunk = await self._reader.readexactly(int(words[0]))
        envelope = self.envelope
        if not envelope.mail_from or not envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        self._chunks = getattr(self, "_chunks", b"") + chunk
        if len(words) > 1 and words[1].upper() == "LAST":
            handler.messages.append((envelope.mail_from, list(envelope.mail_options),
                                     list(envelope.rcpt_tos), self._chunks))
            handler.authenticated.append(handler._login(self.session))
            self._chunks = b""
            self._set_post_data_state()
            await self.push("250 2.0.0 Ok: queued")
        else:
            await self.push(f"250 2.0.0 {len(chunk)} octets received")


class _Controller(Controller):
    def factory(self):
        return _Smtp(self.handler, **self.SMTP_kwargs)


class Recorder:
    """aiosmtpd downstream; ``messages`` are (sender, MAIL options, recipients, content).

    ``etrn``: the reply to ETRN (Postfix's is ``250 Queuing started``); empty: no ETRN.
    ``chunking``: offer CHUNKING. ``tls_context``: an ``ssl.SSLContext``, to offer STARTTLS.
    ``users``: login → password, to offer AUTH PLAIN LOGIN (``auths``, ``authenticated``).
    """

    def __init__(self, size_limit: int = 0, etrn: str = "", chunking: bool = False, tls_context=None,
                 users: dict[str, str] | None = None):
        self.port = free_port()
        self.handler = _Handler(etrn, chunking)
        auth = {}
        if users:
            self.handler.users = dict(users)
            auth = {"authenticator": self.handler.authenticate, "auth_require_tls": False}
        self.controller = _Controller(self.handler, hostname="127.0.0.1", port=self.port,
                                      server_hostname="recorder.test", data_size_limit=size_limit,
                                      decode_data=False, ready_timeout=10, tls_context=tls_context,
                                      **auth)
        self.controller.start()

    @property
    def messages(self) -> list[tuple[str, list[str], list[str], bytes]]:
        return self.handler.messages

    @property
    def etrns(self) -> list[str]:
        return self.handler.etrns

    @property
    def tls(self) -> list[bool]:
        """Per message received: did it come over TLS?"""
        return self.handler.tls

    @property
    def bdats(self) -> list[str]:
        """The arguments of every BDAT received."""
        return self.handler.bdats

    @property
    def auths(self) -> list[tuple[str, str, bool]]:
        """Every AUTH attempt: (mechanism, login, success)."""
        return self.handler.auths

    @property
    def authenticated(self) -> list[str | None]:
        """Per message received: the login its connection authenticated as (None: none)."""
        return self.handler.authenticated

    @property
    def rsets(self) -> list[str | None]:
        """Per RSET received: the login of its connection (None: none)."""
        return self.handler.rsets

    def stop(self) -> None:
        self.controller.stop()
