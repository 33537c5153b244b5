"""One reply, one ``send()``: write to a plain TCP socket at once when nothing is queued.

Twisted queues every ``transport.write`` and sends it when the event loop
next finds the socket writable: for one SMTP reply that is two ``epoll_ctl``
calls (watch for writable, stop watching) and an extra turn of the loop.
A reply or command usually fits the socket buffer, so :func:`write_now`
sends it straight away and hands only what the kernel did not take (or
anything behind queued bytes, or on TLS) to the transport as usual.
"""

from __future__ import annotations

from twisted.internet import tcp


def nothing_queued(transport) -> bool:
    """A plain TCP connection, open, with no bytes waiting to be sent."""
    return (isinstance(transport, tcp.Connection) and not transport.TLS and transport.connected
            and not transport.disconnecting and not transport.dataBuffer
            and not transport._tempDataBuffer)


def write_now(transport, data: bytes) -> None:
    """``transport.write(data)``, sent now when that cannot reorder or bypass anything."""
    if nothing_queued(transport):
        try:
            sent = transport.socket.send(data)
        except OSError:  # would block, or the peer is gone: the transport finds out itself
            sent = 0
        if sent >= len(data):
            return
        data = data[sent:]
    transport.write(data)
