#!/usr/bin/env python3
"""The naive relay: an SMTP proxy in a few dozen lines of asyncio, with no policy at all.

``relay.py`` and ``instructions.py`` run it next to Barricade in the same
rounds, as the yardstick the performance goals are written against: what
a plain Python SMTP relay costs on this machine at this moment.  It is a
real relay, as Barricade is: aiosmtpd parses the client's session, and the
message is answered with the downstream's own reply to the final dot, so
nothing is acknowledged that the downstream did not accept.  It does what
such a relay does when written plainly: a new downstream connection per
message (banner, EHLO, MAIL, each RCPT, DATA, the body, QUIT), opened only
once the client's message is complete, and no checks, logs or metrics.

Usage: ``python bench/naive.py LISTEN_PORT DOWNSTREAM_PORT`` (both on
127.0.0.1).  Every downstream exchange is bounded by :data:`TIMEOUT`
seconds; a downstream that fails or refuses gives the client a 4xx/5xx.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys

from aiosmtpd.smtp import SMTP, Envelope, Session
from pipe import run  # the peers' command line; bench/ is this script's directory

HOST = "127.0.0.1"
TIMEOUT = 30.0
_LEADING_DOT = re.compile(rb"^\.", re.M)


class _Refused(Exception):
    """The downstream answered something other than the code expected: the reply to give."""


async def _reply(reader: asyncio.StreamReader) -> str:
    """One (possibly multi-line) SMTP reply; its last line."""
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("downstream closed the connection")
        if line[3:4] != b"-":
            return line.rstrip(b"\r\n").decode("utf-8", "replace")


async def _expect(reader: asyncio.StreamReader, code: str) -> str:
    reply = await _reply(reader)
    if not reply.startswith(code):
        raise _Refused(reply)
    return reply


class Relay:
    """aiosmtpd's handler: the message goes downstream at the end of DATA."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        try:
            async with asyncio.timeout(TIMEOUT):
                return await self._send(envelope)
        except _Refused as refused:
            return str(refused)
        except (OSError, TimeoutError) as exc:
            return f"451 4.4.1 downstream failed: {exc or type(exc).__name__}"

    async def _send(self, envelope: Envelope) -> str:
        reader, writer = await asyncio.open_connection(HOST, self.port)
        try:
            await _expect(reader, "220")
            writer.write(b"EHLO naive.test\r\n")
            await _expect(reader, "250")
            writer.write(f"MAIL FROM:<{envelope.mail_from}>\r\n".encode())
            await _expect(reader, "250")
            for rcpt in envelope.rcpt_tos:
                writer.write(f"RCPT TO:<{rcpt}>\r\n".encode())
                await _expect(reader, "250")
            writer.write(b"DATA\r\n")
            await _expect(reader, "354")
            body = _LEADING_DOT.sub(b"..", envelope.original_content or b"")
            if not body.endswith(b"\r\n"):
                body += b"\r\n"
            writer.write(body + b".\r\n")
            final = await _reply(reader)
            writer.write(b"QUIT\r\n")
            return final
        finally:
            writer.close()


async def serve(listen_port: int, downstream_port: int) -> None:
    """Relay connections on ``listen_port`` to ``downstream_port`` until cancelled."""
    loop = asyncio.get_running_loop()
    relay = Relay(downstream_port)
    server = await loop.create_server(lambda: SMTP(relay, hostname="naive.test"), HOST, listen_port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every command at INFO
    sys.exit(run("naive", serve, sys.argv[1:]))
