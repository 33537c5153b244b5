"""fpscand: the F-PROT Antivirus 6 scanning daemon, spoken the way smtpf speaks it.

fpscand has no greeting and answers one line per request; the message is
spooled and scanned by path (as smtpf's ``src/fpscand.c`` does)::

    <- SCAN FILE /save-dir/<qid>-xxxx.tmp\\n
    -> <code> <<text>> <object>\\n     e.g. 1 <infected: EICAR_Test_File> /save-dir/...

The code is a bit field: bits 1 (virus) and 2 (suspicious) block a message
under ``fpscand-policy``, and the connection is closed without QUIT.  The
error bits 4 (interrupted), 16 (platform error) and 32 (internal engine
error) say the message was not scanned: smtpf logs them and passes the
message; Barricade logs them and answers #373, so the sender tries again
later (as clamd's ``ERROR`` answers are treated: an unscanned message is
never passed as clean).  Bits 8 (a scan restriction skipped a part) and 64
(a part it could not scan, such as an encrypted archive) pass, as in smtpf.
Only messages whose top-level Content-Type is ``multipart/mixed`` are
scanned, and none larger than ``fpscand-max-size`` KB (0: no limit).

Replies: #367 address, #368 open, #369 connect, #370 request too long,
#372 write, #373 read (timeout, EOF, blank or unparsable line), and #376
for an infection under ``fpscand-policy=reject``.  One deliberate
difference: smtpf reads a line that does not start with a number as code
0, "clean"; a daemon answering nonsense has not scanned anything, so
Barricade gives #373 instead of passing the message unscanned.  So does a
line whose number is no fpscand result (above 255, every bit fpscand
defines) or whose description is not in angle brackets: another protocol
on the port (``220 mx ESMTP``, ``200 OK``) read as a code would have passed
the message as clean or as a scan error.
"""

from __future__ import annotations

import errno as errno_mod
import os
import re
import time
from typing import ClassVar

from twisted.logger import Logger

from barricade.plugin import ScannerError, ScannerPlugin, scanner_options
from barricade.policy.pipeline import Context
from barricade.policy.verdict import CONTINUE, Verdict
from barricade.replies import ReplySpec

log = Logger()

#: This plugin's catalogue entries (smtpf's numbers): reworded with reply-file,
#: listed in docs/replies.md like the core's.
REPLIES: tuple[ReplySpec, ...] = (
    ReplySpec(367, 451, '4.4.0', 'fpscand address error: {error} ({errno})', 'dot',
      ''),
    ReplySpec(368, 451, '4.4.0', 'fpscand open error: {error} ({errno})', 'dot',
      ''),
    ReplySpec(369, 451, '4.4.0', 'fpscand connect error: {error} ({errno})', 'dot',
      ''),
    ReplySpec(370, 451, '4.4.0', 'fpscand buffer overflow', 'dot',
      ''),
    ReplySpec(372, 451, '4.4.0', 'fpscand write error: {error} ({errno})', 'dot',
      ''),
    ReplySpec(373, 451, '4.4.0', 'fpscand read error: {error} ({errno})', 'dot',
      'See fpscand-socket and fpscand-timeout.'),
    ReplySpec(376, 550, '5.7.1', '{text}', 'dot',
      'The fpscand daemon found a virus or suspicious content in the message. See fpscand-policy.'),
)

#: smtpf formats the request into a 512-byte line buffer; one that does not fit is #370.
LINE_BUFFER = 512
#: sizeof(sockaddr_un.sun_path) on Linux: a longer Unix path cannot be addressed.
#: Errors of socket() itself: smtpf's "open error", not a connect error.

VIRUS, SUSPICIOUS = 0x01, 0x02
INFECTED_BITS = VIRUS | SUSPICIOUS
ERROR_BITS = 0x04 | 0x10 | 0x20  # interrupted, platform error, internal engine error
ALL_BITS = 0xFF  # up to 128 (disinfected): a larger number is no fpscand result

_CODE = re.compile(rb"\s*([+-]?\d+)")


def parse_result(line: bytes) -> tuple[int, str] | None:
    """``(code, text)`` of a result line, as smtpf reads it; None when no number starts it.

    The text is what follows ``"<code> "`` up to the line's last space: the
    scanned object (the path) is cut off, so ``1 <infected: X> /p`` gives
    ``<infected: X>``.
    """
    m = _CODE.match(line)
    if m is None:
        return None
    cut = line.rfind(b" ")
    text = line[m.end() + 1 : cut] if cut > m.end() else b""
    code = int(m.group(1))
    rest = line[m.end():].strip()
    if not 0 <= code <= ALL_BITS or (rest and not rest.startswith(b"<")):
        return None  # another protocol ("220 mx ESMTP", "200 OK"): nothing was scanned
    return code, text.decode("utf-8", "replace")



class Fpscand(ScannerPlugin):
    """Scan multipart/mixed messages by path with F-PROT's fpscand."""

    name = "fpscand"
    # smtpf's dot table: clamd, ctasd, avastd, fpscand, savdid, ... cli, spamd
    # (docs/smtpf.md, "Filter order"); the shipped clamd is 100, cli 400, spamd 900.
    order = 130
    antivirus = True
    needs_message = True
    socket_option = "fpscand-socket"
    default_port = 10200
    replies = REPLIES
    ADDRESS_ERROR = 367
    OPEN_ERROR = 368
    CONNECT_ERROR = 369
    WRITE_ERROR = 372
    READ_ERROR = 373
    errors: ClassVar[dict[str, int]] = {
        "address": ADDRESS_ERROR, "open": OPEN_ERROR, "connect": CONNECT_ERROR,
        "write": WRITE_ERROR, "read": READ_ERROR,
    }
    OVERFLOW = 370
    INFECTED = 376

    options = scanner_options("fpscand", """The Internet host[:port] of the fpscand server.
        Specify the empty string to disable fpscand scan. The default fpscand port is
        10200.""", max_size=0)

    async def end_of_data(self, ctx: Context) -> Verdict:
        if not self.wanted(ctx):
            self.result("skipped", 0.0)
            return CONTINUE
        started = time.monotonic()
        try:
            code, text = await self.scan(ctx.spool.path(), ctx)
        except ScannerError:
            self.result("error", time.monotonic() - started)
            raise
        seconds = time.monotonic() - started
        if code & INFECTED_BITS:
            self.result("infected", seconds)
            return self.infected(ctx, text)
        if code & ERROR_BITS:  # not scanned: smtpf passes it (see the module docstring)
            log.error("session {sid}: fpscand could not scan message {qid}: {code} {text}",
                      sid=ctx.session_id, qid=ctx.qid, code=code, text=text)
            self.result("error", seconds)
            raise ScannerError(self.READ_ERROR, f"could not scan the message: {code} {text[:200]}", 0)
        self.result("clean", seconds)
        return CONTINUE

    def wanted(self, ctx: Context) -> bool:
        """Scan only with a socket set, multipart/mixed, and within fpscand-max-size."""
        if not self.config[self.socket_option] or ctx.spool is None or "multipart/mixed" not in ctx.content_type:
            return False
        limit = self.config["fpscand-max-size"] * 1024
        if limit and ctx.spool.size > limit:
            log.info("session {sid}: message {qid} of {size} bytes not scanned: fpscand-max-size",
                     sid=ctx.session_id, qid=ctx.qid, size=ctx.spool.size)
            return False
        return True

    async def scan(self, path: str, ctx: Context) -> tuple[int, str]:
        """One request and its one result line."""
        async with self.connection() as conn:
            request = b"SCAN FILE " + os.fsencode(path) + b"\n"
            if len(request) >= LINE_BUFFER:
                raise ScannerError(self.OVERFLOW, "buffer overflow", errno_mod.ENAMETOOLONG)
            conn.write(request)
            line = await conn.read_until(b"\n")
        if line.endswith(b"\r"):
            line = line[:-1]
        result = parse_result(line) if line else None
        if result is None:
            log.error("session {sid}: fpscand: unexpected answer {line!r}", sid=ctx.session_id,
                      line=line[:200])
            raise ScannerError(self.errors["read"], "unexpected answer" if line else "empty answer", 0)
        return result

    def infected(self, ctx: Context, text: str) -> Verdict:
        """Apply fpscand-policy to an infected message."""
        return self.apply_policy(ctx, self.INFECTED, text, f"message {ctx.qid} is {text}", 375)
