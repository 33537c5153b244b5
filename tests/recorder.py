"""A recording downstream MTA on aiosmtpd, for what smtp-sink cannot show.

smtp-sink announces no SIZE and no ETRN; this server announces ``SIZE
<limit>`` (and enforces it, as Postfix's ``message_size_limit`` does) and,
with ``etrn``, ETRN (answered as Postfix's fast flush does), and keeps
every transaction it received: sender, MAIL options, recipients and
content, and every ETRN argument.  It runs in its own thread (aiosmtpd's
Controller) on a free loopback port.
"""

from __future__ import annotations

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from barricade.testing import free_port


class _Handler:
    def __init__(self, etrn: str) -> None:
        self.messages: list[tuple[str, list[str], list[str], bytes]] = []
        self.etrns: list[str] = []
        self.etrn = etrn

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.etrn:
            responses.insert(-1, "250-ETRN")
        return responses

    async def handle_DATA(self, server, session, envelope) -> str:
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


class _Controller(Controller):
    def factory(self):
        return _Smtp(self.handler, **self.SMTP_kwargs)


class Recorder:
    """aiosmtpd downstream; ``messages`` are (sender, MAIL options, recipients, content).

    ``etrn``: the reply to ETRN (Postfix's is ``250 Queuing started``); empty: no ETRN.
    """

    def __init__(self, size_limit: int = 0, etrn: str = ""):
        self.port = free_port()
        self.handler = _Handler(etrn)
        self.controller = _Controller(self.handler, hostname="127.0.0.1", port=self.port,
                                      server_hostname="recorder.test", data_size_limit=size_limit,
                                      decode_data=False, ready_timeout=10)
        self.controller.start()

    @property
    def messages(self) -> list[tuple[str, list[str], list[str], bytes]]:
        return self.handler.messages

    @property
    def etrns(self) -> list[str]:
        return self.handler.etrns

    def stop(self) -> None:
        self.controller.stop()
