"""A recording downstream MTA on aiosmtpd, for what smtp-sink cannot show.

smtp-sink announces no SIZE; this server announces ``SIZE <limit>`` (and
enforces it, as Postfix's ``message_size_limit`` does) and keeps every
transaction it received: sender, MAIL options, recipients and content.
It runs in its own thread (aiosmtpd's Controller) on a free loopback port.
"""

from __future__ import annotations

from aiosmtpd.controller import Controller

from barricade.testing import free_port


class _Handler:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages.append((envelope.mail_from, list(envelope.mail_options),
                              list(envelope.rcpt_tos), envelope.original_content or envelope.content))
        return "250 2.0.0 Ok: queued"


class Recorder:
    """aiosmtpd downstream; ``messages`` are (sender, MAIL options, recipients, content)."""

    def __init__(self, size_limit: int = 0):
        self.port = free_port()
        self.handler = _Handler()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port,
                                     server_hostname="recorder.test", data_size_limit=size_limit,
                                     decode_data=False, ready_timeout=10)
        self.controller.start()

    @property
    def messages(self) -> list[tuple[str, list[str], list[str], bytes]]:
        return self.handler.messages

    def stop(self) -> None:
        self.controller.stop()
