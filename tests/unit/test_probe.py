"""The call-ahead/call-back reply reader: multi-line replies, garbage, limits."""

from __future__ import annotations

import asyncio

import pytest
import pytest_twisted

from barricade.aio import aio
from barricade.net.probe import MAX_LINES, ProbeError, read_reply


async def read(data: bytes, eof: bool = True, timeout: float = 1.0):
    """Feed ``data`` to a reader on the reactor's loop and read one reply from it."""
    async def go():
        reader = asyncio.StreamReader(limit=4096)
        reader.feed_data(data)
        if eof:
            reader.feed_eof()
        return await read_reply(reader, timeout, "RCPT")
    return await aio(go())


@pytest.mark.parametrize("data, code, text", [
    (b"250 2.1.5 Ok\r\n", 250, "2.1.5 Ok"),
    (b"550-5.1.1 no such user\r\n550 5.1.1 see you\r\n", 550, "5.1.1 no such user; 5.1.1 see you"),
    (b"451 \r\n", 451, ""),
    (b"250 ok\n", 250, "ok"),  # bare LF from sloppy servers
])
@pytest_twisted.ensureDeferred
async def test_replies(data, code, text) -> None:
    reply = await read(data)
    assert (reply.code, reply.text) == (code, text)


@pytest.mark.parametrize("data, message", [
    (b"hello\r\n", "not an SMTP reply"),
    (b"250", "connection closed"),
    (b"", "connection closed"),
    (b"650 weird\r\n", "not an SMTP reply"),
    (b"250-x\r\n" * MAX_LINES, "more than"),
    (b"250 " + b"x" * 5000 + b"\r\n", "too long"),
])
@pytest_twisted.ensureDeferred
async def test_garbage_is_a_probe_error(data, message) -> None:
    with pytest.raises(ProbeError, match=message):
        await read(data)


@pytest_twisted.ensureDeferred
async def test_silence_times_out() -> None:
    with pytest.raises(ProbeError, match="no reply within 0.05s"):
        await read(b"250-partial\r\n", eof=False, timeout=0.05)
