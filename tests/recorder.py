"""A recording downstream MTA on aiosmtpd, for what smtp-sink cannot show.

smtp-sink announces no SIZE, ETRN or CHUNKING; this server announces
``SIZE <limit>`` (and enforces it, as Postfix's ``message_size_limit``
does), with ``etrn`` ETRN (answered as Postfix's fast flush does), with
``chunking`` CHUNKING (BDAT, RFC 3030), and keeps every transaction it
received (sender, MAIL options, recipients, content), every ETRN argument
and every BDAT line.  It runs in its own thread (aiosmtpd's
Controller) on a free loopback port.
"""

from __future__ import annotations

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from barricade.testing import free_port


class _Handler:
    def __init__(self, etrn: str, chunking: bool) -> None:
        self.messages: list[tuple[str, list[str], list[str], bytes]] = []
        self.etrns: list[str] = []
        self.bdats: list[str] = []
        self.tls: list[bool] = []  # per message: did it come over TLS?
        self.etrn = etrn
        self.chunking = chunking

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.etrn:
            responses.insert(-1, "250-ETRN")
        if self.chunking:
            responses.insert(-1, "250-CHUNKING")
        return responses

    async def handle_DATA(self, server, session, envelope) -> str:
        self.tls.append(session.ssl is not None)
        self.messages.append((envelope.mail_from, list(envelope.mail_options),
                              list(envelope.rcpt_tos), envelope.original_content or envelope.content))
        return "250 2.0.0 Ok: queued"


class _Smtp(SMTP):
    async def smtp_ETRN(self, arg: str) -> None:
        if not self.event_handler.etrn:
            await self.push("502 5.5.1 Error: command not implemented")
            return
        self.event_handler.etrns.append(arg)
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
    """

    def __init__(self, size_limit: int = 0, etrn: str = "", chunking: bool = False, tls_context=None):
        self.port = free_port()
        self.handler = _Handler(etrn, chunking)
        self.controller = _Controller(self.handler, hostname="127.0.0.1", port=self.port,
                                      server_hostname="recorder.test", data_size_limit=size_limit,
                                      decode_data=False, ready_timeout=10, tls_context=tls_context)
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

    def stop(self) -> None:
        self.controller.stop()
