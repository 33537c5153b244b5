"""One reply, one ``send()``: write to a plain TCP socket at once when nothing is queued.

The same goes for the close after a session's last reply: Twisted's
``loseConnection`` watches the socket for writable, sends an empty buffer
on the next turn of the loop, and only then closes (two ``epoll_ctl``, a
``send`` and a loop turn); :func:`close_now` closes at once when nothing is
left to send.

Twisted queues every ``transport.write`` and sends it when the event loop
next finds the socket writable: for one SMTP reply that is two ``epoll_ctl``
calls (watch for writable, stop watching) and an extra turn of the loop.
A reply or command usually fits the socket buffer, so :func:`write_now`
sends it straight away and hands only what the kernel did not take (or
anything behind queued bytes, or on TLS) to the transport as usual.
"""

from __future__ import annotations

from twisted.internet import protocol, tcp


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


def close_now(transport) -> bool:
    """Close a plain TCP connection now when nothing waits to be sent; False: not done.

    This is the path ``loseConnection`` itself takes for a connection whose
    writing side is already shut: stop watching the socket, then
    ``connectionLost`` (an orderly close: shutdown and close), which calls
    the protocol's ``connectionLost`` before this returns.
    """
    if not nothing_queued(transport):
        return False
    transport.stopReading()
    transport.stopWriting()
    transport.connectionLost(protocol.connectionDone)  # Twisted's shared "closed cleanly" Failure
    return True
