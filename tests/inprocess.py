"""The client's side of a session served in process (the proxy on a StringTransport)."""

from __future__ import annotations

from typing import Any

from twisted.internet.testing import StringTransport


class ClientSide:
    """What a test's client sends and reads: the proxy's replies, cleared as they are read.

    The harness sets ``proto`` (the server protocol) and ``transport`` (its
    StringTransport).
    """

    proto: Any
    transport: StringTransport

    def output(self) -> bytes:
        out = self.transport.value()
        self.transport.clear()
        return out

    def send(self, data: bytes) -> bytes:
        self.proto.dataReceived(data)
        return self.output()
