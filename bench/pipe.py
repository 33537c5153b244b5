#!/usr/bin/env python3
"""The floor under any relay written in Python: bytes passed through, nothing read.

``relay.py`` runs this next to Barricade in the same rounds.  Each client
connection gets its own connection to the downstream, and every byte is
written on as it arrives, in both directions, with asyncio's own
transports (no Twisted, no SMTP parsing, no policy, no logging).  Its CPU
per message is what one Python process pays on this machine just to take
a session's bytes off one socket and put them on another; whatever
Barricade costs above it is the price of being an SMTP proxy and not a
pipe, and no change to Barricade's Python can take its figure below it.

Usage: ``python bench/pipe.py LISTEN_PORT DOWNSTREAM_PORT`` (both on
127.0.0.1).  A client whose downstream cannot be reached within
:data:`CONNECT_TIMEOUT` seconds is closed.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable

HOST = "127.0.0.1"
CONNECT_TIMEOUT = 10.0


class _Downstream(asyncio.Protocol):
    def __init__(self, client: _Client) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.client.transport is not None:
            self.client.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.client.transport is not None:
            self.client.transport.close()


class _Client(asyncio.Protocol):
    def __init__(self, downstream_port: int) -> None:
        self.port = downstream_port
        self.transport: asyncio.Transport | None = None
        self.down: _Downstream | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.pause_reading()  # type: ignore[attr-defined]  # until the downstream is there
        asyncio.get_running_loop().create_task(self._open())

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, self.down = await asyncio.wait_for(
                loop.create_connection(lambda: _Downstream(self), HOST, self.port), CONNECT_TIMEOUT)
        except OSError:  # TimeoutError included
            self.transport.close()
            return
        self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self.down.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.down is not None and self.down.transport is not None:
            self.down.transport.close()


async def serve(listen_port: int, downstream_port: int) -> None:
    """Pass connections on ``listen_port`` through to ``downstream_port`` until cancelled."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Client(downstream_port), HOST, listen_port)
    async with server:
        await server.serve_forever()


def run(name: str, serve: Callable[[int, int], Awaitable[None]], argv: list[str]) -> int:
    """``name.py LISTEN_PORT DOWNSTREAM_PORT``: ``serve`` them until interrupted (the peers' main)."""
    if len(argv) != 2 or not all(a.isdigit() for a in argv):
        print(f"usage: {name}.py LISTEN_PORT DOWNSTREAM_PORT", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(int(argv[0]), int(argv[1])))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(run("pipe", serve, sys.argv[1:]))
