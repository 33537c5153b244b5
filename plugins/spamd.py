"""SpamAssassin's spamd, as smtpf's ``spamd2`` module uses it.

The message is spooled and scanned at the dot, after every other check
(smtpf runs spamd last so that mail already refused costs no spamd child).
The request is SPAMC/1.5 with ``Content-length`` (lower-case ``l``: spamd
matches header names case-sensitively and ignores ``Content-Length``) and
a ``User:`` from the access map's ``Spamd:`` tag.  spamd's score decides:

* score >= ``spamd-score-reject`` (unless -1): ``550 5.7.1 message <qid>
  junk mail score S/T`` (#693, smtpf's spamd2 reply; #666 belongs to the
  old spamd 1.0 module and is never produced);
* else score >= spamd's own ``required_score``: the Subject is tagged with
  ``spamd-subject-tag`` and ``Precedence: bulk`` added;
* delivered mail gets ``X-Spam-Flag``, ``X-Spam-Status``, ``X-Spam-Level``
  and, for commands other than CHECK, ``X-Spam-Report``.

Before any scan, a sender's own ``X-Spam-Status`` claiming a score at or
above the reject score (#678), or else an ``X-Spam-Flag: YES`` (#679),
refuses the message: if the sender thought it was spam, why take it?

Unlike smtpf, which logs spamd I/O and parse errors and delivers the
message unscanned, a failure here is a temporary failure (#907) so that no
message escapes the spam check because spamd was down.
"""

from __future__ import annotations

import errno as errno_mod
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

from twisted.logger import Logger

from barricade.maps import mail_keys
from barricade.options import Config, OptionError
from barricade.plugin import PluginOption, ScannerError, ScannerPlugin, Services, scanner_options
from barricade.policy.pipeline import Context, immediate
from barricade.policy.verdict import CONTINUE, Verdict, reject, tempfail
from barricade.replies import ReplyId, ReplySpec

log = Logger()

JUNK_MAIL = 693
SENDER_STATUS = 678
SENDER_FLAG = 679

#: This plugin's catalogue entries (smtpf's numbers): reworded with reply-file,
#: listed in docs/replies.md like the core's.
REPLIES: tuple[ReplySpec, ...] = (
    ReplySpec(666, 550, '5.7.1', '{text}', 'dot',
      'See spamd-score-reject option.'),
    ReplySpec(SENDER_STATUS, 550, '5.7.1', 'message was already marked as spam by sender', 'dot',
      'See spamd-reject-sender-marked-spam and spamd-score-reject options.'),
    ReplySpec(SENDER_FLAG, 550, '5.7.1', 'message was already marked as spam by sender', 'dot',
      'See spamd-sender-marked-spam option.'),
    ReplySpec(JUNK_MAIL, 550, '5.7.1', '{text}', 'dot',
      'See spamd-score-reject option.'),
)

#: Barricade's generic "451 4.3.0 processing error": smtpf numbers no spamd
#: I/O reply (it only logs #671/#675/#685/#687/#689/#690 and fails open).
PROCESSING_ERROR = ReplyId.PROCESSING_ERROR
#: smtpf's "451 4.3.0 internal server error", given when the spooled
#: message cannot be read back (smtpf log #682).
SPOOL_ERROR = ReplyId.SERVER_ERROR

COMMANDS = ("CHECK", "SYMBOLS", "REPORT", "REPORT_IFSPAM")
#: X-Spam-Level stops at 50 characters, as SpamAssassin's own does: one per
#: point of a GTUBE score (1000) would make a header line longer than the
#: 998 octets RFC 5322 allows (smtpf has no cap).
MAX_LEVEL = 50
#: How smtpf continues the lines of the X-Spam-Report header.
REPORT_NEWLINE = "\r\n  | "

_STATUS_LINE = re.compile(rb"^SPAMD/\d+(?:\.\d+)?\s+(\d+)\s*(.*)$", re.IGNORECASE)
_SPAM_LINE = re.compile(
    rb"^spam:[^;]*;\s*([-+]?\d+(?:\.\d*)?)\s*/\s*([-+]?\d+(?:\.\d*)?)", re.IGNORECASE)
_CLAIMED_SCORE = re.compile(r"(?:hits|score)=\s*([-+]?\d+(?:\.\d*)?)", re.IGNORECASE)


class SpamdProtocolError(ValueError):
    """spamd answered something other than a successful scan."""


@dataclass(frozen=True)
class SpamdResult:
    """What one scan told us."""

    score: float
    threshold: float
    body: str = ""  # SYMBOLS: the rule names; REPORT: the report text

    @property
    def spam(self) -> bool:
        """smtpf ignores spamd's True/False and compares the numbers itself."""
        return self.score >= self.threshold

    def body_lines(self) -> list[str]:
        """The body without the empty lines spamd may put before or after it."""
        lines = self.body.replace("\r\n", "\n").split("\n")
        while lines and not lines[-1].strip():
            lines.pop()
        while lines and not lines[0].strip():
            lines.pop(0)
        return lines


def parse_response(data: bytes) -> SpamdResult:
    """Parse a whole spamd answer (spamd closes after one).

    The status line must say code 0, the header block must end with its
    blank line (EOF before it is a read error in smtpf too) and must hold
    a ``Spam:`` line; the body is what follows, cut at ``Content-length``
    when spamd sent one.
    """
    lines, body = _split_answer(data)
    score = threshold = None
    length = None
    for line in lines:
        m = _SPAM_LINE.match(line)
        if m:
            score, threshold = float(m.group(1)), float(m.group(2))
            if not (math.isfinite(score) and math.isfinite(threshold)):  # 309 digits: inf
                raise SpamdProtocolError(f"score out of range {line[:200]!r}")
        elif line.lower().startswith(b"spam:"):
            raise SpamdProtocolError(f"bad Spam line {line[:200]!r}")
        elif line.lower().startswith(b"content-length:"):
            try:
                length = int(line.split(b":", 1)[1].strip())
            except ValueError:
                raise SpamdProtocolError(f"bad Content-length {line[:200]!r}") from None
    if score is None or threshold is None:
        raise SpamdProtocolError("no Spam line in the answer")
    if length is not None:
        body = body[:length]
    return SpamdResult(score, threshold, body.decode("utf-8", "replace"))


def _split_answer(data: bytes) -> tuple[list[bytes], bytes]:
    """Status line checked, then the header lines and the rest."""
    first, sep, _ = data.partition(b"\n")
    status = _STATUS_LINE.match(first.rstrip(b"\r"))
    if status is None:
        raise SpamdProtocolError(f"bad status line {first[:200]!r}")
    if status.group(1) != b"0":
        text = status.group(2).decode("utf-8", "replace")
        raise SpamdProtocolError(f"spamd error {int(status.group(1))}: {text[:200]}")
    if not sep:
        raise SpamdProtocolError("answer ends after the status line")
    lines: list[bytes] = []
    pos = len(first) + 1
    while True:
        end = data.find(b"\n", pos)
        if end < 0:
            raise SpamdProtocolError("answer ends before the blank line after its headers")
        line = data[pos:end]
        pos = end + 1
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            return lines, data[pos:]
        lines.append(line)


def claimed_spam(headers: list[tuple[str, str]], score_reject: int) -> int | None:
    """The reply id when the sender's own X-Spam headers say spam, as smtpf decides.

    The last ``X-Spam-Status`` counts: with a reject score set it is judged
    by its ``hits=``/``score=`` alone (a low claimed score lets the message
    through to a real scan, whatever ``X-Spam-Flag`` says).  Otherwise an
    ``X-Spam-Flag`` containing YES is enough.
    """
    status = flag = None
    for name, value in headers:
        low = name.lower()
        if low == "x-spam-status":
            status = value
        elif low == "x-spam-flag" and "yes" in value.lower():
            flag = value
    if status is not None and score_reject >= 0:
        m = _CLAIMED_SCORE.search(status)
        if m and float(m.group(1)) >= score_reject:
            return SENDER_STATUS
        return None
    if flag is not None:
        return SENDER_FLAG
    return None


def strip_spam_headers(block: bytes) -> bytes:
    """The header block without X-Spam-* fields (and their continuation lines).

    smtpf removes X-Spam-* headers that come from outside before spamd
    sees the message, so a sender cannot feed spamd its own verdict.
    """
    out = bytearray()
    dropping = False
    for line in block.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                out += line + b"\r\n"
            continue
        dropping = line[:7].lower() == b"x-spam-"
        if not dropping and line:
            out += line + b"\r\n"
    return bytes(out)


class Spamd(ScannerPlugin):
    """The spamd client: score at the dot, reject, tag or add X-Spam headers."""

    name = "spamd"
    replies = REPLIES
    #: Last of the plugins, as spamd is last in smtpf's dot filter table.
    order = 900
    needs_message = True
    socket_option = "spamd-socket"
    default_port = 783
    errors: ClassVar[dict[str, int]] = {
        "address": PROCESSING_ERROR, "connect": PROCESSING_ERROR,
        "write": PROCESSING_ERROR, "read": PROCESSING_ERROR,
    }
    options = (
        *scanner_options("spamd", """The unix domain socket or Internet host[:port]
            of the spamd server. Empty disables spamd. The default spamd port is 783.""",
                         policy=False, max_size=0),
        PluginOption("spamd-command", "CHECK", """The SPAMD protocol command used to check
            the message: CHECK, SYMBOLS, REPORT or REPORT_IFSPAM. The others put spamd's
            rule list or report in spamd-report-header.""", choices=COMMANDS),
        PluginOption("spamd-score-reject", 10, """When spamd returns a score greater than or
            equal to this value the message is rejected (#693). -1 never rejects.""",
            kind="int", minimum=-1),
        PluginOption("spamd-subject-tag", "[SPAM]", """When the score is at least
            SpamAssassin's required score and below spamd-score-reject, prefix the
            Subject with this tag (and add Precedence: bulk). Empty disables the tag."""),
        PluginOption("spamd-skip-tagged", False, """Do not pass to spamd a message whose
            Subject an earlier check has already tagged."""),
        PluginOption("spamd-reject-sender-marked-spam", True, """When the sender supplies an
            X-Spam-Status header, reject if their claimed score reaches spamd-score-reject
            (#678); else reject on a sender-supplied X-Spam-Flag: YES (#679)."""),
        PluginOption("spamd-flag-header", "X-Spam-Flag",
                     "The name of the flag header. Empty string to disable."),
        PluginOption("spamd-status-header", "X-Spam-Status",
                     "The name of the status header. Empty string to disable."),
        PluginOption("spamd-level-header", "X-Spam-Level",
                     "The name of the level header. Empty string to disable."),
        PluginOption("spamd-report-header", "X-Spam-Report", """The name of the report
            header, added for commands other than CHECK. Empty string to disable."""),
        PluginOption("spamd-level-character", "x", """The character repeated once per whole
            point of score in the level header."""),
    )

    def __init__(self, config: Config, services: Services):
        super().__init__(config, services)
        if not config[self.socket_option]:
            # smtpf treats an empty socket as "spamd off"; naming the plugin
            # without one would temp-fail every message, so say so at start-up.
            raise OptionError("spamd-socket: set it to host[:port] or a unix socket path "
                              "when the spamd plugin is named in plugins")

    # --- hooks ---------------------------------------------------------------------

    @immediate
    def headers(self, ctx: Context) -> Verdict:
        """Refuse mail the sender marked as spam; outside X-Spam-* headers go."""
        self._remove_outside_headers(ctx)
        if not self.config["spamd-reject-sender-marked-spam"]:
            return CONTINUE
        reply_id = claimed_spam(ctx.headers, self.config["spamd-score-reject"])
        if reply_id is None:
            return CONTINUE
        log.info("spamd: session {sid}: message {qid} already marked as spam by sender (#{id})",
                 sid=ctx.session_id, qid=ctx.qid, id=reply_id)
        self.result("sender-marked", 0.0)
        return reject(reply_id)

    async def end_of_data(self, ctx: Context) -> Verdict:
        """Scan the spooled message and act on the score."""
        user = self.user(ctx)
        why = self._skip_reason(ctx, user)
        if why:
            log.info("spamd: session {sid}: message {qid} not scanned: {why}",
                     sid=ctx.session_id, qid=ctx.qid, why=why)
            self.result("skipped", 0.0)
            return CONTINUE
        started = time.monotonic()
        try:
            answer = await self._scan(*self._request(ctx, user))
            result = parse_response(answer)
        except OSError as exc:  # smtpf #682: the spooled message cannot be read back
            log.error("spamd: session {sid}: cannot read spooled message {qid}: {err}",
                      sid=ctx.session_id, qid=ctx.qid, err=str(exc))
            self.result("error", time.monotonic() - started)
            return tempfail(SPOOL_ERROR)
        except SpamdProtocolError as exc:
            self.result("error", time.monotonic() - started)
            raise ScannerError(PROCESSING_ERROR, f"spamd parse error: {exc}", errno_mod.EPROTO) from None
        except ScannerError:
            self.result("error", time.monotonic() - started)
            raise
        return self._decide(ctx, result, time.monotonic() - started)

    # --- steps ---------------------------------------------------------------------

    def _remove_outside_headers(self, ctx: Context) -> None:
        """Drop the sender's X-Spam-* headers, when the core offers header removal."""
        remove = getattr(ctx, "remove_header", None)
        if remove is None:
            return
        for name in {n.lower() for n, _ in ctx.headers if n.lower().startswith("x-spam-")}:
            remove(name)

    def _skip_reason(self, ctx: Context, user: str) -> str:
        """Why this message goes unscanned, or ''."""
        limit = self.config["spamd-max-size"] * 1024
        if limit and ctx.spool is not None and ctx.spool.size > limit:
            return f"{ctx.spool.size} bytes exceed spamd-max-size={self.config['spamd-max-size']}"
        if self.config["spamd-skip-tagged"] and ctx.subject_tag:
            return f"already tagged {ctx.subject_tag!r}"
        if user == "OK":
            return "access map Spamd: OK"
        return ""

    def user(self, ctx: Context) -> str:
        """The spamd user: the access map's ``Spamd:`` entry for the sender, else nobody."""
        access = self.services.access_map
        if access is None:
            return "nobody"
        found = access.first(mail_keys("spamd", ctx.sender or ""))
        if found is None:
            return "nobody"
        value = found[1].strip()
        return "OK" if value.upper() == "OK" else value

    def _request(self, ctx: Context, user: str) -> tuple[bytes, Iterator[bytes]]:
        """The SPAMC head with Return-Path and headers, and the spooled body to follow.

        The sender's X-Spam-* headers are left out, as smtpf removes them
        before spamd sees the message.  ``Content-length`` covers all of it.
        """
        spool = ctx.spool
        original = ctx.header_block
        head = b"Return-Path: <" + (ctx.sender or "").encode("utf-8", "replace") + b">\r\n"
        head += strip_spam_headers(original)
        if spool is None:
            body: Iterator[bytes] = iter(())
            length = len(head)
        else:
            body = spool.chunks(start=len(original))
            length = len(head) + spool.size - len(original)
        command = self.config["spamd-command"]
        spamc = (f"{command} SPAMC/1.5\r\nContent-length: {length}\r\n"
                 f"User: {_header_safe(user)}\r\n\r\n")
        return spamc.encode("utf-8", "replace") + head, body

    async def _scan(self, head: bytes, body: Iterator[bytes]) -> bytes:
        """Send the request, signal its end, and read spamd's answer to EOF.

        Reading the spool may raise OSError (its file gone from save-dir).
        """
        async with self.connection() as conn:
            conn.write(head)
            for piece in body:
                conn.write(piece)
            conn.close_write()
            return await conn.read_to_eof()

    def _decide(self, ctx: Context, result: SpamdResult, seconds: float) -> Verdict:
        """Reject, tag or pass, and add the X-Spam headers to delivered mail."""
        ctx.notes["spamd"] = result
        text = f"message {ctx.qid} junk mail score {result.score:.2f}/{result.threshold:.2f}"
        log.info("spamd: session {sid}: {client} [{ip}] {text}", sid=ctx.session_id,
                 client=ctx.client.name, ip=ctx.client.ip, text=text)
        score_reject = self.config["spamd-score-reject"]
        if 0 <= score_reject <= result.score:
            self.result("spam", seconds)
            return reject(JUNK_MAIL, text=text)
        for name, value in self.headers_for(result):
            ctx.add_header(name, value)
        if result.spam:
            self.result("tagged", seconds)
            self._tag(ctx)
        else:
            self.result("clean", seconds)
        return CONTINUE

    def _tag(self, ctx: Context) -> None:
        """smtpf prefixes the Subject and marks the message as bulk."""
        tag = self.config["spamd-subject-tag"]
        if tag:
            ctx.tag_subject(tag)
        if ctx.header("Precedence") is None:
            ctx.add_header("Precedence", "bulk")

    def headers_for(self, result: SpamdResult) -> Iterator[tuple[str, str]]:
        """The X-Spam headers, in smtpf's formats; an empty name disables one."""
        cfg = self.config
        yes = "YES" if result.spam else "NO"
        numbers = f"score={result.score:.2f} required={result.threshold:.2f}"
        command = cfg["spamd-command"]
        if cfg["spamd-flag-header"]:
            yield cfg["spamd-flag-header"], yes
        if cfg["spamd-status-header"]:
            status = f"{yes}, {numbers}"
            if command == "SYMBOLS" and result.body.strip():
                status += " tests=" + result.body.strip()
            yield cfg["spamd-status-header"], status
        if cfg["spamd-level-header"]:
            points = min(MAX_LEVEL, max(0, int(result.score)))
            yield cfg["spamd-level-header"], cfg["spamd-level-character"] * points
        if command != "CHECK" and cfg["spamd-report-header"]:
            yield cfg["spamd-report-header"], REPORT_NEWLINE.join([numbers, *result.body_lines()])


def _header_safe(value: str) -> str:
    """A map value may not smuggle extra SPAMC header lines."""
    return re.sub(r"[\x00-\x1f\x7f]", "?", value)
