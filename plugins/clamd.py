"""clamd (ClamAV) anti-virus, as smtpf's clamd module does it.

Two modes, chosen by ``clamd-socket`` like smtpf:

* **INSTREAM** (``host[:port]`` or ``/unix/path``): the message is streamed
  to clamd *while DATA arrives*.  The connection opens in the ``headers``
  hook, the header block and then every body chunk go out as INSTREAM
  chunks, and the dot only sends the zero-length chunk and reads one reply.
  This is why clamd, unlike spamd, does not force the proxy to spool: the
  message keeps flowing downstream (cut-through) and only the final dot
  waits for clamd.
* **SCAN** (the token ``SCAN``: clamd on this host, TCP 127.0.0.1:3310):
  the message is spooled and clamd is asked to read the spool file by
  path.  ``SCAN:<socket>`` (an extension) names another clamd socket, e.g.
  ``SCAN:/run/clamav/clamd.sock``; clamd must be able to read ``save-dir``.

Replies: an infection is ``550 5.7.1 <virus name>``
(#208) under ``clamd-policy=reject``; connect failures #180, write
failures #185 (INSTREAM) / #183 (SCAN), read failures and timeouts #186,
and any answer that is neither ``OK`` nor ``FOUND`` #206 with clamd's text.
Unlike smtpf, clamd's ``... ERROR`` answers (``stream: ... ERROR``,
``Access denied. ERROR``) are #206 too instead of passing the message: an
engine or permission error must not let a virus through unnoticed.

``clamd-max-size`` caps what is sent, so clamd's StreamMaxLength is never
hit: like smtpf, only the first ``clamd-max-size`` KB are streamed.  A
virus found there is still refused; otherwise the message was not wholly
scanned, and it is delivered, logged and counted as ``skipped``.
"""

from __future__ import annotations

import errno as errno_mod
import os
import struct
import time
import weakref
from contextlib import AsyncExitStack
from typing import ClassVar

from twisted.internet import defer
from twisted.logger import Logger

from barricade.options import Config
from barricade.plugin import (
    PluginOption,
    ScannerConnection,
    ScannerError,
    ScannerPlugin,
    Services,
    scanner_options,
)
from barricade.policy.pipeline import Context, immediate
from barricade.policy.verdict import CONTINUE, Action, Verdict
from barricade.replies import ReplySpec

log = Logger()

#: This plugin's catalogue entries (smtpf's numbers): reworded with reply-file,
#: listed in docs/replies.md like the core's.
REPLIES: tuple[ReplySpec, ...] = (
    ReplySpec(178, 451, '4.4.0', 'clamd address error: {error} ({errno})', 'dot',
      ''),
    ReplySpec(179, 451, '4.4.0', 'clamd open error: {error} ({errno})', 'dot',
      ''),
    ReplySpec(180, 451, '4.4.0', 'clamd connect error: {error} ({errno})', 'dot',
      ''),
    ReplySpec(181, 451, '4.4.0', 'clamd buffer overflow', 'dot',
      ''),
    ReplySpec(183, 451, '4.4.0', 'clamd write error: {error} ({errno})', 'dot',
      ''),
    ReplySpec(185, 451, '4.4.0', 'clamd write error: {error} ({errno})', 'dot',
      ''),
    ReplySpec(186, 451, '4.4.0', 'clamd read error: {error} ({errno})', 'dot',
      ''),
    ReplySpec(188, 451, '4.4.0', 'clamd session port "{port}" parse error', 'dot',
      ''),
    ReplySpec(189, 451, '4.4.0', 'clamd address error: {error} ({errno})', 'dot',
      ''),
    ReplySpec(190, 451, '4.4.0', 'clamd session open error: {error} ({errno})', 'dot',
      ''),
    ReplySpec(191, 451, '4.4.0', 'clamd session connection error: {error} ({errno})', 'dot',
      ''),
    ReplySpec(196, 451, '4.4.0', 'clamd session write error after {size} bytes', 'dot',
      ''),
    ReplySpec(199, 451, '4.4.0', 'clamd session write error after {size} bytes', 'dot',
      ''),
    ReplySpec(204, 451, '4.4.0', 'clamd session read error: {error} ({errno})', 'dot',
      'See clamd-socket and clamd-timeout.'),
    ReplySpec(206, 451, '4.4.0', 'unexpected clamd result: {result}', 'dot',
      'The clamd daemon returned an unexpected result. This may be due to unexpected changes in the clamd protocol between program updates or data corruption over the network (assuming clamd runs on a different machine).'),
    ReplySpec(208, 550, '5.7.1', '{text}', 'dot',
      'The clamd daemon found a virus or suspicious content in the message. See clamd-policy.'),
)

#: ``clamd-socket`` value that selects scan-by-path (smtpf's token).
SCAN_TOKEN = "SCAN"
#: Where smtpf's ``SCAN`` mode connects.
SCAN_DEFAULT_SOCKET = "127.0.0.1:3310"
#: ``ctx.notes`` key of the running INSTREAM scan of the transaction.
NOTE = "clamd.scan"
#: The zero-length chunk that ends an INSTREAM.
END_OF_STREAM = b"\0\0\0\0"
#: Longest clamd answer quoted in a #206 reply.
RESULT_MAX = 200


def instream_chunk(data: bytes) -> bytes:
    """One INSTREAM chunk: 4-byte big-endian length, then the bytes."""
    return struct.pack("!L", len(data)) + data


def split_socket(value: str) -> tuple[bool, str]:
    """``clamd-socket`` → (scan by path?, the socket to connect to)."""
    if value == SCAN_TOKEN:
        return True, SCAN_DEFAULT_SOCKET
    if value.startswith(SCAN_TOKEN + ":"):
        return True, value[len(SCAN_TOKEN) + 1 :] or SCAN_DEFAULT_SOCKET
    return False, value


def has_attachments(ctx: Context) -> bool:
    """Does the top-level Content-Type say multipart (``-clamd-scan-all``)?

    smtpf looks for ``multipart/mixed`` only; any multipart type is taken
    here, since multipart/related or /signed carry attachments as well.
    """
    return "multipart/" in ctx.content_type


class Answer:
    """clamd's one-line answer, classified (``<object>: OK|<name> FOUND|<text> ERROR``)."""

    def __init__(self, raw: bytes):
        self.text = raw.decode("utf-8", "replace").strip()
        _, sep, status = self.text.rpartition(": ")
        self.clean = bool(sep) and status == "OK"
        self.virus = status[: -len(" FOUND")].strip() if sep and status.endswith(" FOUND") else ""

    @property
    def quoted(self) -> str:
        """The answer as it may appear in a reply (the catalogue strips controls)."""
        return self.text[:RESULT_MAX] or "(empty)"


class _Lease:
    """An INSTREAM scan's connection, capacity token and idle timer.

    Kept apart from the scan object so that a finalizer can release them
    when a transaction ends without reaching the dot (another check
    refused the message, RSET, the client went away): ``ctx.notes`` is
    then dropped and with it the scan.
    """

    def __init__(self, stack: AsyncExitStack):
        self.stack = stack
        self.timer = None
        self.released = False

    def stop_timer(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        self.stop_timer()
        d = defer.ensureDeferred(self.stack.aclose())  # closes and frees the token
        d.addErrback(lambda f: log.failure("clamd: releasing a connection failed", f))


def _on_idle(ref: weakref.ref) -> None:
    scan = ref()
    if scan is not None:
        scan.idle()


class _Scan:
    """One INSTREAM scan following the message while DATA arrives."""

    def __init__(self, conn: ScannerConnection, lease: _Lease, reactor, idle: float,
                 limit: int, write_error: int):
        self.conn = conn
        self.lease = lease
        self.idle_timeout = idle
        self.limit = limit
        self.write_error = write_error
        self.started = time.monotonic()
        self.sent = 0
        self.truncated = False
        self.ended = False  # the zero-length chunk went out
        self.failure: ScannerError | None = None
        self.early: bytes | None = None  # the answer, kept when the connection was given up
        self._release = weakref.finalize(self, reactor.callLater, 0, lease.release)
        self._release.atexit = False
        lease.timer = reactor.callLater(idle, _on_idle, weakref.ref(self))

    @property
    def answered(self) -> bool:
        """clamd answered or hung up early (StreamMaxLength): stop sending."""
        stream = self.conn.stream
        return stream.closed or bool(stream.buffer)

    def send(self, data: bytes) -> None:
        """Stream ``data`` as one chunk, up to ``clamd-max-size`` in all.

        At the limit the stream ends at once, so clamd answers while the
        rest of the message still arrives (and its ReadTimeout cannot
        strike a slow client).
        """
        if self.lease.timer is not None and self.lease.timer.active():
            self.lease.timer.reset(self.idle_timeout)
        if self.ended:
            self.truncated = self.truncated or bool(data)
            return
        if self.failure is not None or self.early is not None or self.answered:
            return
        if self.limit and self.sent + len(data) >= self.limit:
            self.truncated = self.sent + len(data) > self.limit
            data = data[: self.limit - self.sent]
            self.ended = True
        if data:
            self.conn.write(instream_chunk(data))
            self.sent += len(data)
        if self.ended:
            self.conn.write(END_OF_STREAM)

    def idle(self) -> None:
        """No message data for a whole ``clamd-timeout``: give the connection up.

        An answer already in (the stream ended at ``clamd-max-size``) is
        kept for the dot.  Otherwise clamd would drop the stream after its
        own ReadTimeout anyway, and the dot answers with a write error.
        """
        buffer = self.conn.stream.buffer
        end = buffer.find(b"\0")
        if end >= 0:
            self.early = bytes(buffer[:end])
        else:
            self.failure = ScannerError(self.write_error,
                                        f"no message data for {self.idle_timeout:g}s",
                                        errno_mod.ETIMEDOUT)
        self.close()

    async def finish(self) -> Answer:
        """End the stream and read clamd's answer (each read under clamd-timeout)."""
        self.lease.stop_timer()
        if self.early is not None:
            return Answer(self.early)
        if self.failure is not None:
            raise self.failure
        stream = self.conn.stream
        if stream.closed and not stream.buffer:
            raise ScannerError(self.write_error, "connection closed by clamd", errno_mod.EPIPE)
        if not self.ended and not self.answered:
            self.ended = True
            self.conn.write(END_OF_STREAM)
        return Answer(await self.conn.read_until(b"\0"))

    def close(self) -> None:
        self._release()


class Clamd(ScannerPlugin):
    """ClamAV's clamd: INSTREAM while DATA arrives, or SCAN of the spool file."""

    name = "clamd"
    # smtpf's dot table runs save, reply, dupmsg, clamd, ctasd, avastd, fpscand ...
    # spamd (docs/smtpf.md, "Filter order"): clamd 100, avastd 120, fpscand 130, cli 400, spamd 900.
    order = 100
    antivirus = True
    socket_option = "clamd-socket"
    default_port = 3310
    replies = REPLIES
    ADDRESS_ERROR = 178
    OPEN_ERROR = 179
    CONNECT_ERROR = 180
    SCAN_WRITE_ERROR = 183  # SCAN: the path could not be sent
    STREAM_WRITE_ERROR = 185  # INSTREAM: a chunk could not be sent
    READ_ERROR = 186
    UNEXPECTED_RESULT = 206
    INFECTED = 208
    errors: ClassVar[dict[str, int]] = {"address": ADDRESS_ERROR, "open": OPEN_ERROR,
                                        "connect": CONNECT_ERROR, "write": STREAM_WRITE_ERROR,
                                        "read": READ_ERROR}
    options = (
        *scanner_options("clamd", """The clamd socket: host[:port] (port 3310) or
            /unix/path, scanned with INSTREAM while DATA arrives; or the token SCAN
            (clamd on this host at 127.0.0.1:3310 reads the spooled message by path;
            SCAN:socket names another clamd socket). Empty disables clamd."""),
        PluginOption("clamd-max-size", 10000, """Kilobytes of a message sent to clamd (0:
            all). Only the first part of a bigger message is scanned; if no virus is found
            there it is delivered as not wholly scanned. Keep it below clamd's
            StreamMaxLength.""", minimum=0),
        PluginOption("clamd-scan-all", True, """Scan every message. When off, only messages
            with attachments (a top-level multipart Content-Type) are scanned."""),
    )

    def __init__(self, config: Config, services: Services):
        by_path, socket = split_socket(config["clamd-socket"])
        super().__init__(config.replace(clamd_socket=socket), services)
        self.config = config
        self.scan_by_path = by_path
        # The spool exists only when some check asks for it: SCAN mode does.
        self.needs_message = by_path
        self.errors = dict(self.errors, write=self.SCAN_WRITE_ERROR if by_path else self.STREAM_WRITE_ERROR)
        self.max_size = int(config["clamd-max-size"]) * 1024
        self.policy = config["clamd-policy"]
        self.scan_all = bool(config["clamd-scan-all"])

    # --- hooks --------------------------------------------------------------------

    async def headers(self, ctx: Context) -> Verdict:
        """INSTREAM: connect and send the header block before any body byte."""
        if self.scan_by_path:
            return CONTINUE
        stale = ctx.notes.pop(NOTE, None)
        if stale is not None:
            stale.close()
        if not self._wanted(ctx):
            return CONTINUE
        started = time.monotonic()
        try:
            ctx.notes[NOTE] = scan = await self._open()
            scan.send(ctx.header_block)
        except ScannerError:
            self.result("error", time.monotonic() - started)
            raise
        return CONTINUE

    @immediate
    def body(self, ctx: Context, chunk: bytes) -> Verdict:
        """INSTREAM: pass each body chunk on as it arrives; failures wait for the dot."""
        scan = ctx.notes.get(NOTE)
        if scan is not None:
            scan.send(chunk)
        return CONTINUE

    async def end_of_data(self, ctx: Context) -> Verdict:
        if self.scan_by_path:
            return await self._scan_spool(ctx)
        scan: _Scan | None = ctx.notes.pop(NOTE, None)
        if scan is None:
            return CONTINUE  # not wanted (see headers), or the headers hook failed
        try:
            answer = await scan.finish()
        except ScannerError:
            self.result("error", time.monotonic() - scan.started)
            raise
        finally:
            scan.close()
        return self._verdict(ctx, answer, scan.truncated, scan.sent, time.monotonic() - scan.started)

    # --- the two modes ------------------------------------------------------------

    async def _open(self) -> _Scan:
        """Connect (waiting for capacity) and start an INSTREAM."""
        stack = AsyncExitStack()
        conn = await stack.enter_async_context(self.connection())
        lease = _Lease(stack)
        try:
            conn.write(b"zINSTREAM\0")
        except ScannerError:
            lease.release()
            raise
        return _Scan(conn, lease, self.services.reactor, self.io_timeout, self.max_size,
                     self.errors["write"])

    async def _scan_spool(self, ctx: Context) -> Verdict:
        """SCAN mode: clamd reads the spool file itself."""
        spool = ctx.spool
        if spool is None or not self._wanted(ctx):
            return CONTINUE
        if self.max_size and spool.size > self.max_size:
            log.info("clamd: message {qid} of {size} bytes is over clamd-max-size; not scanned",
                     qid=ctx.qid, size=spool.size)
            self.result("skipped", 0)
            return CONTINUE
        started = time.monotonic()
        try:
            async with self.connection() as conn:
                conn.write(b"zSCAN " + os.fsencode(spool.path()) + b"\0")
                answer = Answer(await conn.read_until(b"\0"))
        except ScannerError:
            self.result("error", time.monotonic() - started)
            raise
        return self._verdict(ctx, answer, False, spool.size, time.monotonic() - started)

    # --- decisions ----------------------------------------------------------------

    def _wanted(self, ctx: Context) -> bool:
        """``+clamd-scan-all``, or a message with attachments."""
        if self.scan_all or has_attachments(ctx):
            return True
        log.debug("clamd: message {qid} has no attachments; not scanned", qid=ctx.qid)
        self.result("skipped", 0)
        return False

    def _verdict(self, ctx: Context, answer: Answer, truncated: bool, size: int,
                 seconds: float) -> Verdict:
        if answer.virus:
            self.result("infected", seconds)
            return self._infected(ctx, answer.virus)
        if answer.clean:
            if truncated:
                log.info("clamd: message {qid}: only the first {n} bytes (clamd-max-size) scanned,"
                         " nothing found; delivered unscanned beyond", qid=ctx.qid, n=size)
                self.result("skipped", seconds)
            else:
                self.result("clean", seconds)
            return CONTINUE
        log.error("clamd: unexpected answer for message {qid} (session {sid}): {text!r}",
                  qid=ctx.qid, sid=ctx.session_id, text=answer.text)
        self.result("error", seconds)
        return Verdict(Action.TEMPFAIL, self.UNEXPECTED_RESULT, {"result": answer.quoted})

    def _infected(self, ctx: Context, virus: str) -> Verdict:
        """``clamd-policy``: reject (550 #208), discard, or none (log only)."""
        return self.apply_policy(ctx, self.INFECTED, virus)  # the reply is the virus name
