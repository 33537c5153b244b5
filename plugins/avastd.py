"""avastd: the avast! 4 virus scanning daemon, spoken the way smtpf speaks it.

The daemon scans by path, so the message is spooled and its file name is
sent (the avast! 4 dialect smtpf's ``src/avastd.c`` speaks)::

    -> 220 Welcome to avast! Virus scanning daemon ...\\r\\n
    <- SCAN /save-dir/<qid>-xxxx.tmp\\r\\n
    -> 200 OK\\r\\n
    -> <path>\\t[+]\\r\\n | <path>\\t[L]\\t<virus name>\\r\\n | <path>\\t[E]\\t<error>\\r\\n ...
    -> \\r\\n                       (a blank line, or EOF, ends the list)
    <- QUIT\\r\\n                   (then close without reading the 221)

Like smtpf, only messages whose top-level Content-Type is
``multipart/mixed`` are scanned, and each failure has its own numbered 451:
#149 address, #150 open, #151 connect, #153 greeting, #154 request too
long, #156 write, #158 SCAN reply, #160 result lines.  An infection is #162
under ``avastd-policy=reject``.

``[E]`` lines are logged (#163).  One deliberate difference: smtpf passes a
message whose own result is ``[E]`` (the daemon could not scan it: a
decompression bomb, an unreadable file), and one for which the daemon
closed or ended the list before any result.  Neither was scanned, so
Barricade answers #160 and the sender tries again later, as clamd's
``ERROR`` answers are treated: an unscanned message is never passed as
clean.  An ``[E]`` about a part inside the message is only logged.

Only the avast4 dialect works: avast 2014+ answers ``210 SCAN DATA``,
which gives #158 for every scanned message, exactly as in smtpf.
"""

from __future__ import annotations

import errno as errno_mod
import os
import re
import time
from typing import ClassVar

from twisted.logger import Logger

from barricade.plugin import ScannerConnection, ScannerError, ScannerPlugin, scanner_options
from barricade.policy.pipeline import Context
from barricade.policy.verdict import CONTINUE, Verdict
from barricade.replies import ReplySpec

log = Logger()

#: This plugin's catalogue entries (smtpf's numbers): reworded with reply-file,
#: listed in docs/replies.md like the core's.
REPLIES: tuple[ReplySpec, ...] = (
    ReplySpec(149, 451, '4.4.0', 'avastd address error: {error} ({errno})', 'dot',
      ''),
    ReplySpec(150, 451, '4.4.0', 'avastd open error: {error} ({errno})', 'dot',
      ''),
    ReplySpec(151, 451, '4.4.0', 'avastd connect error: {error} ({errno})', 'dot',
      ''),
    ReplySpec(153, 451, '4.4.0', 'avastd read error: {error} ({errno})', 'dot',
      ''),
    ReplySpec(154, 451, '4.4.0', 'avastd buffer overflow', 'dot',
      ''),
    ReplySpec(156, 451, '4.4.0', 'avastd write error: {error} ({errno})', 'dot',
      ''),
    ReplySpec(158, 451, '4.4.0', 'avastd read error: {error} ({errno})', 'dot',
      ''),
    ReplySpec(160, 451, '4.4.0', 'avastd read error: {error} ({errno})', 'dot',
      'See avastd-socket and avastd-timeout.'),
    ReplySpec(162, 550, '5.7.1', '{text}', 'dot',
      'The avastd daemon found a virus or suspicious content in the message. See avastd-policy.'),
)

#: smtpf formats requests into a 512-byte line buffer (SMTP_REPLY_LINE_LENGTH);
#: a request that does not fit is refused with #154 instead of being cut.
LINE_BUFFER = 512
#: sizeof(sockaddr_un.sun_path) on Linux: a longer Unix path cannot be addressed.
#: Errors of socket() itself: smtpf's "open error", not a connect error.

_CODE = re.compile(rb"\s*([+-]?\d+)")


def reply_code(line: bytes) -> int:
    """The number a line starts with, read like C's strtol (0 when there is none)."""
    m = _CODE.match(line)
    return int(m.group(1)) if m else 0



class Avastd(ScannerPlugin):
    """Scan multipart/mixed messages by path with an avast! 4 daemon."""

    name = "avastd"
    # smtpf's dot table: clamd, ctasd, avastd, fpscand, savdid, ... cli, spamd
    # (docs/smtpf.md, "Filter order"); the shipped clamd is 100, cli 400, spamd 900.
    order = 120
    antivirus = True
    needs_message = True
    socket_option = "avastd-socket"
    default_port = 5037
    replies = REPLIES
    ADDRESS_ERROR = 149
    OPEN_ERROR = 150
    CONNECT_ERROR = 151
    WRITE_ERROR = 156
    READ_ERROR = 160
    errors: ClassVar[dict[str, int]] = {
        "address": ADDRESS_ERROR, "open": OPEN_ERROR, "connect": CONNECT_ERROR,
        "write": WRITE_ERROR, "read": READ_ERROR,
    }
    GREETING_ERROR = 153
    OVERFLOW = 154
    STATUS_ERROR = 158
    INFECTED = 162

    options = scanner_options("avastd", """The unix domain socket or Internet host[:port] of
        the avastd server (avast! 4 dialect). Specify the empty string to disable avastd
        scan. The default avastd port is 5037.""")

    async def end_of_data(self, ctx: Context) -> Verdict:
        if not self.config[self.socket_option] or ctx.spool is None or "multipart/mixed" not in ctx.content_type:
            self.result("skipped", 0.0)
            return CONTINUE
        started = time.monotonic()
        try:
            virus = await self.scan(ctx.spool.path(), ctx)
        except ScannerError:
            self.result("error", time.monotonic() - started)
            raise
        self.result("clean" if virus is None else "infected", time.monotonic() - started)
        return CONTINUE if virus is None else self.infected(ctx, virus)

    async def scan(self, path: str, ctx: Context) -> str | None:
        """One avastd dialogue; the first virus name reported, or None when clean."""
        async with self.connection() as conn:
            greeting = await self.read_line(conn, self.GREETING_ERROR)
            if reply_code(greeting) != 220:
                self.unexpected(ctx, "greeting", greeting)
                raise ScannerError(self.GREETING_ERROR, "unexpected greeting", 0)
            request = b"SCAN " + os.fsencode(path) + b"\r\n"
            if len(request) >= LINE_BUFFER:
                raise ScannerError(self.OVERFLOW, "buffer overflow", errno_mod.ENAMETOOLONG)
            conn.write(request)
            status = await self.read_line(conn, self.STATUS_ERROR)
            if reply_code(status) != 200:
                self.unexpected(ctx, "SCAN reply", status)
                raise ScannerError(self.STATUS_ERROR, "unexpected reply to SCAN", 0)
            virus = await self.read_results(conn, ctx, os.fsencode(path))
            await self.quit(conn)
        return virus

    async def read_results(self, conn: ScannerConnection, ctx: Context, path: bytes) -> str | None:
        """Result lines up to a blank line or EOF; only the first tab of a line counts.

        ScannerError when the message itself was not scanned: no result line at
        all, or ``[E]`` as the result of ``path`` (not of a part inside it).
        """
        virus = None
        results = 0
        unscanned = None
        while True:
            line = await self.read_result_line(conn)
            if not line:
                break
            tab = line.find(b"\t")
            if tab < 0:
                continue
            results += 1
            marker = line[tab + 2 : tab + 3]
            if marker == b"L" and virus is None:
                virus = line[tab + 5 :].decode("utf-8", "replace")
            elif marker == b"E":
                text = line.decode("utf-8", "replace")
                log.error("session {sid}: #163 avastd error: {line}", sid=ctx.session_id, line=text)
                if line[:tab] == path:
                    unscanned = line[tab + 5 :].decode("utf-8", "replace")[:200]
        if virus is None and unscanned is not None:
            raise ScannerError(self.READ_ERROR, f"could not scan the message: {unscanned}", 0)
        if not results:
            raise ScannerError(self.READ_ERROR, "no result for the message", 0)
        return virus

    async def read_result_line(self, conn: ScannerConnection) -> bytes | None:
        """The next result line; None at EOF, which smtpf takes as the end of the list."""
        if conn.stream.closed and not conn.stream.buffer:
            return None
        try:
            return await self.read_line(conn, self.errors["read"])
        except ScannerError:
            if conn.stream.closed and not conn.stream.buffer:
                return None
            raise

    @staticmethod
    async def read_line(conn: ScannerConnection, reply_id: int) -> bytes:
        """One line without its LF and one CR; a failure becomes ``reply_id``.

        smtpf reports each read with its own reply number, so the greeting,
        the SCAN status and the result lines each map timeouts and EOF to theirs.
        """
        try:
            line = await conn.read_until(b"\n")
        except ScannerError as exc:
            raise ScannerError(reply_id, exc.error, exc.errno) from None
        return line[:-1] if line.endswith(b"\r") else line

    @staticmethod
    async def quit(conn: ScannerConnection) -> None:
        """Send QUIT and close once it is written; the 221 is not waited for."""
        await conn.finish(b"QUIT\r\n")

    def infected(self, ctx: Context, virus: str) -> Verdict:
        """Apply avastd-policy to an infected message."""
        return self.apply_policy(ctx, self.INFECTED, virus, f"message {ctx.qid} is INFECTED with {virus}", 161)

    def unexpected(self, ctx: Context, what: str, line: bytes) -> None:
        """The daemon's words go to the log, not to the SMTP client."""
        log.error("session {sid}: avastd: unexpected {what}: {line!r}", sid=ctx.session_id,
                  what=what, line=line[:200])
