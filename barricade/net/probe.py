"""A short SMTP conversation that asks a server about addresses, then quits.

Call-ahead (does our downstream know this recipient?) and call-back (does
the sender's MX know the sender?) are the same dialogue: greeting, HELO,
MAIL, one RCPT per address, QUIT.  Nothing is ever sent after RCPT, so no
mail is delivered.  Every step has its own deadline (smtpf's
``call-ahead-command-timeout``); any failure to get an answer (refused,
reset, timed out, garbled) is a :class:`ProbeError`, which callers treat
as "inconclusive" — never as a verdict on the address.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass

MAX_LINE = 4096  # RFC 5321 reply lines are 512 octets; allow generous servers
MAX_LINES = 100
REPLY_LINE = re.compile(rb"^([2-5][0-9][0-9])([ -])(.*?)\r?\n$", re.DOTALL)


class ProbeError(Exception):
    """No usable answer from the server (the step is in the message)."""


@dataclass(frozen=True)
class ProbeReply:
    code: int
    text: str  # the lines joined with "; ", without the code

    @property
    def accepted(self) -> bool:
        return 200 <= self.code < 300

    @property
    def rejected(self) -> bool:
        return 500 <= self.code < 600


@dataclass(frozen=True)
class ProbeResult:
    """The greeting, the reply to MAIL, and the reply to each RCPT in order.

    ``rcpts`` is empty when MAIL was refused (nothing was asked).  It is
    shorter than the addresses asked about when ``stop_on_reject`` stopped
    early, or when the server went away after answering at least one RCPT:
    ``error`` then says why, and the answers already given still count (some
    servers drop the connection after a refused recipient).
    """

    greeting: ProbeReply
    mail: ProbeReply
    rcpts: tuple[ProbeReply, ...]
    error: str = ""


async def read_reply(reader: asyncio.StreamReader, timeout: float, step: str) -> ProbeReply:
    lines: list[str] = []
    try:
        async with asyncio.timeout(timeout):
            while True:
                line = await reader.readuntil(b"\n")
                m = REPLY_LINE.match(line)
                if m is None or len(line) > MAX_LINE:
                    raise ProbeError(f"{step}: not an SMTP reply: {line[:80]!r}")
                lines.append(m.group(3).decode("utf-8", "replace"))
                if m.group(2) == b" ":
                    return ProbeReply(int(m.group(1)), "; ".join(lines))
                if len(lines) >= MAX_LINES:
                    raise ProbeError(f"{step}: reply of more than {MAX_LINES} lines")
    except TimeoutError:
        raise ProbeError(f"{step}: no reply within {timeout:g}s") from None
    except asyncio.IncompleteReadError:
        raise ProbeError(f"{step}: connection closed") from None
    except asyncio.LimitOverrunError:
        raise ProbeError(f"{step}: reply line too long") from None
    except OSError as exc:
        raise ProbeError(f"{step}: {exc}") from None


async def probe(host: str, port: int, *, helo: str, sender: str, rcpts: list[str],
                timeout: float, stop_on_reject: bool = False,
                greeting_ok: Callable[[str], bool] | None = None) -> ProbeResult:
    """Ask ``host:port`` about ``rcpts`` as ``sender`` ("" for the null sender).

    ``stop_on_reject``: ask nothing more after a 5xx RCPT.  ``greeting_ok``:
    a test of a 2xx greeting's text; when it fails the probe quits at once
    and the result holds only the greeting (``mail`` is the greeting too).
    """
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port, limit=MAX_LINE)
    except TimeoutError:
        raise ProbeError(f"connect: no connection within {timeout:g}s") from None
    except OSError as exc:
        raise ProbeError(f"connect: {exc.strerror or exc}") from None
    try:
        greeting = await read_reply(reader, timeout, "greeting")
        if not greeting.accepted or (greeting_ok is not None and not greeting_ok(greeting.text)):
            writer.write(b"QUIT\r\n")
            return ProbeResult(greeting, greeting, ())

        async def ask(command: str, step: str) -> ProbeReply:
            writer.write(command.encode("utf-8", "surrogateescape") + b"\r\n")
            return await read_reply(reader, timeout, step)

        hello = await ask(f"HELO {helo}", "HELO")
        if not hello.accepted:
            raise ProbeError(f"HELO refused: {hello.code} {hello.text}")
        mail = await ask(f"MAIL FROM:<{sender}>", "MAIL")
        answers: list[ProbeReply] = []
        if mail.accepted:
            for rcpt in rcpts:
                if answers and stop_on_reject and answers[-1].rejected:
                    break
                try:
                    answers.append(await ask(f"RCPT TO:<{rcpt}>", "RCPT"))
                except ProbeError as exc:
                    if not answers:
                        raise
                    return ProbeResult(greeting, mail, tuple(answers), str(exc))
        writer.write(b"QUIT\r\n")  # courtesy; its answer is not waited for
        return ProbeResult(greeting, mail, tuple(answers))
    finally:
        writer.close()
