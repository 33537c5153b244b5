"""A streaming MIME decoder: the message in, parts, text and links out, in bounded memory.

Why not ``email.feedparser`` for the whole job: it keeps every part's
payload until the message is complete and builds the whole tree, so its
memory grows with the message; a proxy in cut-through mode sees the
message in chunks and must stay bounded whatever it is sent.  So the part
structure (boundaries, nesting, ``message/rfc822``) is followed here line
by line, and the standard library does what it does well: each part's
header section is parsed by ``email.parser.BytesHeaderParser`` with
``email.policy.default`` (folding, RFC 2047 encoded words, RFC 2231
parameters such as ``filename*=``), ``binascii`` decodes base64 and
quoted-printable, ``codecs`` incremental decoders turn any charset into
text, and :mod:`barricade.content.markup` turns HTML into text and links.

Memory is bounded by :class:`Limits`: nesting deeper than ``max_depth`` is
not descended into (the part is skipped as opaque), parts past
``max_parts`` are not recorded, a part's header section, a line and the
HTML tokenizer's look-ahead are cut at fixed sizes, and an attachment's
octets are kept (for archive listing) only up to ``keep_bytes``.
``limited`` tells the checks that something was skipped, so they can
refuse or let it pass as the postmaster chose.
"""

from __future__ import annotations

import binascii
import codecs
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.parser import BytesHeaderParser
from typing import Any

from barricade.content.markup import HtmlText
from barricade.content.uri import UriCollector

MAX_LINE = 65536  # a line longer than this is handled in pieces (never a boundary)
MAX_HEADER_SECTION = 65536  # a part's header section is cut here
_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/=]+")
_HEADER_LINE = re.compile(rb"^[!-9;-~]+[ \t]*:")
# compat32 (the default policy) is several times faster than email.policy.default
# here; what it leaves undone, RFC 2047 words in a file name, _decoded() does.
_PARSER = BytesHeaderParser()
#: Decoded text is handed to the URI scanner and the HTML tokenizer in blocks of this many characters.
TEXT_BLOCK = 32768


def _decoded(name: str) -> str:
    """A file name with RFC 2047 encoded words decoded (RFC 2231 is done by the parser)."""
    if "=?" not in name:
        return name
    try:
        return str(make_header(decode_header(name)))
    except (ValueError, LookupError, UnicodeError, HeaderParseError):
        return name  # a broken encoded word: the name as written, still a name to check


#: A multipart's boundary in its raw Content-Type value (quoted, or up to ; or white space).
_BOUNDARY = re.compile(r'(?i)(?:^|;)\s*boundary\s*=\s*(?:"([^"]*)"|([^\s;"]+))')


def _boundary_octets(msg: object, boundary: str) -> bytes:
    """The boundary as the body's delimiter lines write it.

    The parser gives 8-bit octets in a header back as U+FFFD, which no body
    line would match: the whole body was then taken as the preamble, its
    parts never seen.  The raw header value keeps them (as surrogate
    escapes), and they are taken from there.
    """
    if "\ufffd" in boundary:
        for name, value in msg.raw_items():  # type: ignore[attr-defined]
            if name.lower() == "content-type" and isinstance(value, str):
                found = _BOUNDARY.search(value)
                if found:
                    raw = found.group(1) if found.group(1) is not None else found.group(2)
                    return raw.encode("utf-8", "surrogateescape")
    return boundary.encode("utf-8", "replace")


class _ByteOrder:
    """UTF-16 or UTF-32 as RFC 2781 reads a text that names no order: the BOM's order,
    big-endian without one (Python's decoder refuses a stream without a BOM)."""

    def __init__(self, name: str):
        self.name = name
        self.boms = ((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) if name == "utf-16"
                     else (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE))
        self.head = b""
        self.inner: codecs.IncrementalDecoder | None = None

    def decode(self, data: bytes, final: bool = False) -> str:
        if self.inner is None:
            self.head += data
            if len(self.head) < len(self.boms[0]) and not final:
                return ""
            name = self.name if self.head.startswith(self.boms) else f"{self.name}-be"
            self.inner = codecs.getincrementaldecoder(name)(errors="replace")
            data, self.head = self.head, b""
        return self.inner.decode(data, final)


def text_decoder(charset: str) -> tuple[Any, str]:
    """An incremental decoder for a text part's charset, and what was wrong with it ("").

    Only text encodings: a charset that names one of Python's bytes-to-bytes
    codecs (``base64``, ``zlib``, ``rot13`` ...) or no codec at all is read as
    Latin-1, which never fails, and reported.
    """
    try:
        info = codecs.lookup(charset)
    except (LookupError, TypeError, ValueError):
        return codecs.getincrementaldecoder("latin-1")(), f"unknown charset {charset[:40]!r}"
    if not getattr(info, "_is_text_encoding", True):
        return codecs.getincrementaldecoder("latin-1")(), f"not a text charset {charset[:40]!r}"
    if info.name in ("utf-16", "utf-32"):
        return _ByteOrder(info.name), ""
    try:
        return info.incrementaldecoder(errors="replace"), ""
    except Exception:  # noqa: BLE001 - a codec that takes no "replace" (idna): as an unknown one
        return codecs.getincrementaldecoder("latin-1")(), f"unusable charset {charset[:40]!r}"


@dataclass(frozen=True)
class Limits:
    max_depth: int = 10
    max_parts: int = 1000
    keep_bytes: int = 10 << 20


@dataclass
class Part:
    """One leaf or container of the MIME tree, as far as the checks care."""

    depth: int
    content_type: str  # "type/subtype", lower case
    filename: str = ""
    charset: str = ""
    encoding: str = ""  # Content-Transfer-Encoding, lower case
    size: int = 0  # decoded octets
    md5: str = ""  # of the decoded octets, when asked for
    data: bytes | None = None  # the decoded octets, for parts the keep() callback chose
    truncated: bool = False  # data stopped at keep_bytes
    top: bool = False  # the message itself (its top-level Content-Type)

    @property
    def main_type(self) -> str:
        return self.content_type.partition("/")[0]


class _Sink:
    """Where one leaf part's decoded octets go."""

    def __init__(self, part: Part, decoder: MimeDecoder):
        self.part = part
        self.owner = decoder
        self.md5 = hashlib.md5(usedforsecurity=False) if decoder.want_md5 else None
        self.keep = bytearray() if decoder.keep is not None and decoder.keep(part) else None
        self.text = None
        self.html = None
        if decoder.collector is not None and (part.main_type == "text" or part.top and not part.content_type):
            self.text, problem = text_decoder(part.charset or "us-ascii")
            if problem:
                decoder.error(problem)
            if part.content_type == "text/html":
                self.html = HtmlText(decoder.collector)
        self.b64 = b""
        self.pending: list[str] = []  # decoded text not yet scanned
        self.pending_size = 0
        self.idle = self.md5 is None and self.keep is None and self.text is None

    def write(self, data: bytes) -> None:
        if self.idle:  # nobody wants this part's content: do not decode it
            return
        encoding = self.part.encoding
        if encoding == "base64":
            data = self._base64(data)
        elif encoding == "quoted-printable":
            data = binascii.a2b_qp(data)
        if data:
            self._out(data)

    def _base64(self, data: bytes) -> bytes:
        """Decode what is complete; padding (``=``) ends a segment, and another may follow
        (some mailers concatenate base64 streams), wherever the pieces were cut."""
        data = self.b64 + _B64_JUNK.sub(b"", data)
        out = bytearray()
        pos = 0  # where the segment being decoded starts (not a slice: segments may be many)
        while True:
            i = data.find(b"=", pos)
            if i < 0:
                whole = pos + (len(data) - pos) // 4 * 4
                out += self._decode64(data[pos:whole])
                self.b64 = data[whole:]
                return bytes(out)
            j = i
            while j < len(data) and data[j] == 0x3D:
                j += 1
            if j == len(data):  # the padding may go on in the next piece: wait for it
                whole = pos + (i - pos) // 4 * 4
                out += self._decode64(data[pos:whole])
                self.b64 = data[whole:]
                return bytes(out)
            out += self._final64(data[pos:i])
            pos = j

    def _final64(self, core: bytes) -> bytes:
        """The last quanta of a segment, padded as they should have been (a lone sixth bit dropped)."""
        core = core.rstrip(b"=")
        pad = -len(core) % 4
        if pad == 3:
            core, pad = core[:-1], 0
        return self._decode64(core + b"=" * pad)

    def _decode64(self, data: bytes) -> bytes:
        if not data:
            return b""
        try:
            return binascii.a2b_base64(data)
        except binascii.Error as exc:
            self.owner.error(f"bad base64: {exc}")
            return b""

    def _out(self, data: bytes) -> None:
        self.part.size += len(data)
        if self.md5 is not None:
            self.md5.update(data)
        if self.keep is not None:
            room = self.owner.limits.keep_bytes - len(self.keep)
            if len(data) > room:
                self.part.truncated = True
                data_kept = data[:max(room, 0)]
            else:
                data_kept = data
            self.keep += data_kept
        if self.text is not None:
            text = self._decode(data)
            if text:
                self.pending.append(text)
                self.pending_size += len(text)
                if self.pending_size >= TEXT_BLOCK:
                    self._text_out()

    def _decode(self, data: bytes, final: bool = False) -> str:
        """The part's text; a codec that still fails on its input (a bug of its own, or
        one that rejects what "replace" should cover) is reported and Latin-1 reads on."""
        try:
            return self.text.decode(data, final)
        except Exception as exc:  # noqa: BLE001 - never a reason to temp-fail a message
            self.owner.error(f"charset {self.part.charset[:40]!r} failed: {type(exc).__name__}")
            self.text = codecs.getincrementaldecoder("latin-1")()
            return self.text.decode(data, final)

    def _text_out(self, final: bool = False) -> None:
        text = "".join(self.pending)
        self.pending, self.pending_size = [], 0
        if self.html is not None:
            self.html.feed_block(text, final)
        elif text:
            self.owner.collector.feed_text(text)

    def close(self) -> None:
        if self.b64.rstrip(b"="):
            self._out(self._final64(self.b64))
        if self.text is not None:
            self.pending.append(self._decode(b"", final=True))
            self._text_out(final=True)
            self.owner.collector.feed_text("\n")
        if self.md5 is not None:
            self.part.md5 = self.md5.hexdigest()
        if self.keep is not None:
            self.part.data = bytes(self.keep)


@dataclass
class _Frame:
    """A multipart container (with its boundary) or a message/rfc822 one (boundary None)."""

    boundary: bytes | None
    depth: int
    digest: bool = False  # multipart/digest: parts default to message/rfc822


HEADERS, BODY, PREAMBLE, EPILOGUE, OPAQUE = "headers", "body", "preamble", "epilogue", "opaque"


@dataclass
class MimeDecoder:
    """Feed the whole message (header section first) with :meth:`feed`, then :meth:`close`.

    ``collector`` (when given) hears the text of text/* parts and the links
    of HTML; ``want_md5`` computes each leaf part's MD5; ``keep(part)``
    chooses the parts whose decoded octets are kept (attachments to list).
    ``on_part`` hears every part once it is complete.
    """

    limits: Limits = field(default_factory=Limits)
    collector: UriCollector | None = None
    want_md5: bool = False
    keep: Callable[[Part], bool] | None = None
    on_part: Callable[[Part], None] | None = None
    parts: list[Part] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    limited: str = ""  # why something was not decoded ("" when all was)
    octets: int = 0

    def __post_init__(self) -> None:
        self._buffer = b""
        self._midline = False  # the buffer starts inside a line passed on in pieces
        self._frames: list[_Frame] = []
        self._state = HEADERS
        self._header_lines: list[bytes] = []
        self._header_size = 0
        self._depth = 0
        self._sink: _Sink | None = None
        self._default_type = "text/plain"
        self._closed = False
        self._boundaries: set[bytes] = set()
        self._part_count = 0

    # --- input ---

    def feed(self, data: bytes) -> None:
        if self._closed or not data:
            return
        self.octets += len(data)
        buffer = self._buffer + data if self._buffer else data
        start = 0
        if self._midline:  # the rest of an endless line: never a boundary
            end = buffer.find(b"\n")
            if end < 0:
                self._line(buffer, partial=True)
                self._buffer = b""
                return
            self._line(buffer[:end + 1], partial=True)
            self._midline = False
            start = end + 1
        while True:
            if self._state != HEADERS and not buffer.startswith(b"--", start):
                # Body lines go on in one block, up to the next line that may be a boundary.
                stop = buffer.find(b"\n--", start) + 1 if self._boundaries else 0
                if stop <= 0:
                    stop = buffer.rfind(b"\n", start) + 1
                if stop > start:
                    if self._state == BODY and self._sink is not None:
                        self._sink.write(buffer[start:stop])
                    start = stop
                    continue
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            self._line(buffer[start:end + 1])
            start = end + 1
        rest = buffer[start:]
        if len(rest) > MAX_LINE:  # an endless line: pass it on in pieces
            self._line(rest, partial=True)
            self._midline = True
            rest = b""
        self._buffer = rest

    def close(self) -> None:
        if self._closed:
            return
        if self._buffer:
            self._line(self._buffer)
            self._buffer = b""
        if self._state == HEADERS and (self._header_lines or self._depth == 0):
            self._end_headers()
        self._end_leaf()
        if self.collector is not None:
            self.collector.flush()
        self._closed = True

    def error(self, what: str) -> None:
        if len(self.errors) < 20:
            self.errors.append(what)

    # --- the line machine ---

    def _line(self, line: bytes, partial: bool = False) -> None:
        if not partial and self._boundaries and line.startswith(b"--") and self._boundary(line):
            return
        state = self._state
        if state == BODY:
            if self._sink is not None:
                self._sink.write(line)
        elif state == HEADERS:
            self._header_line(line)
        # PREAMBLE, EPILOGUE, OPAQUE: skipped

    def _boundary(self, line: bytes) -> bool:
        mark = line[2:].rstrip(b" \t\r\n")
        closing = mark.endswith(b"--") and mark[:-2] in self._boundaries
        if not closing and mark not in self._boundaries:
            return False
        if closing:
            mark = mark[:-2]
        for i in range(len(self._frames) - 1, -1, -1):
            if self._frames[i].boundary == mark:
                break
        else:  # pragma: no cover - _boundaries mirrors the frames
            return False
        if self._state == HEADERS and self._header_lines:
            self._end_headers(body=False)
        self._end_leaf()
        frame = self._frames[i]
        for gone in self._frames[i + 1:]:
            if gone.boundary is not None:
                self._boundaries.discard(gone.boundary)
        del self._frames[i + 1:]
        if closing:
            self._boundaries.discard(mark)
            self._frames.pop()
            self._state = EPILOGUE
        else:
            self._depth = frame.depth + 1
            self._default_type = "message/rfc822" if frame.digest else "text/plain"
            self._state = HEADERS
            self._header_lines = []
            self._header_size = 0
        return True

    def _header_line(self, line: bytes) -> None:
        bare = line.rstrip(b"\r\n")
        if not bare:
            self._end_headers()
            return
        if self._header_lines and not (bare[:1] in (b" ", b"\t") or _HEADER_LINE.match(bare)):
            # no blank line after the headers (RFC 2822 wants one): the body starts here
            self.error("missing blank line after a header section")
            self._end_headers()
            self._line(line)
            return
        self._header_size += len(line)
        if self._header_size <= MAX_HEADER_SECTION:
            self._header_lines.append(line)
        elif not self.limited:
            self.limited = "header section too long"

    def _end_headers(self, body: bool = True) -> None:
        raw = b"".join(self._header_lines)
        self._header_lines = []
        self._header_size = 0
        try:
            msg = _PARSER.parsebytes(raw)
            if msg.get("content-type"):
                ctype = msg.get_content_type()
                boundary = msg.get_boundary()
                if boundary is not None:
                    boundary = _boundary_octets(msg, boundary)
                charset = str(msg.get_content_charset() or "").strip().lower()
            else:
                ctype, boundary, charset = self._default_type, None, ""
            encoding = str(msg.get("content-transfer-encoding", "") or "").strip().lower()
            filename = _decoded(msg.get_filename() or "")
        except Exception as exc:  # noqa: BLE001 - any defect in a header section: take it as plain text
            self.error(f"bad header section: {type(exc).__name__}")
            ctype, boundary, charset, encoding, filename = self._default_type, None, "", "", ""
        part = Part(self._depth, ctype.lower(), str(filename), charset, encoding, top=self._depth == 0)
        if not body:
            self._record(part)
            return
        self._start(part, boundary)

    def _start(self, part: Part, boundary: bytes | None) -> None:
        deep = part.depth >= self.limits.max_depth
        if part.main_type == "multipart" and boundary:
            self._record(part)
            if deep:
                self._too_deep()
                return
            mark = boundary
            self._frames.append(_Frame(mark, part.depth, part.content_type == "multipart/digest"))
            self._boundaries.add(mark)
            self._state = PREAMBLE
            return
        if part.content_type == "message/rfc822" and part.encoding in ("", "7bit", "8bit", "binary"):
            self._record(part)
            if deep:
                self._too_deep()
                return
            self._frames.append(_Frame(None, part.depth))
            self._depth = part.depth + 1
            self._default_type = "text/plain"
            self._state = HEADERS
            return
        self._record(part, leaf=True)
        self._state = BODY

    def _too_deep(self) -> None:
        self.limited = self.limited or f"MIME nesting deeper than {self.limits.max_depth}"
        self._state = OPAQUE

    def _record(self, part: Part, leaf: bool = False) -> None:
        self._part_count += 1
        if self._part_count > self.limits.max_parts:
            self.limited = self.limited or f"more than {self.limits.max_parts} MIME parts"
            return
        self.parts.append(part)
        if leaf:
            self._sink = _Sink(part, self)
        elif self.on_part is not None:
            self.on_part(part)

    def _end_leaf(self) -> None:
        sink, self._sink = self._sink, None
        if sink is None:
            return
        sink.close()
        if self.on_part is not None:
            self.on_part(sink.part)
        sink.part.data = sink.part.data if sink.keep is not None else None
        if self._state == BODY:
            self._state = EPILOGUE

    @property
    def top(self) -> Part | None:
        return self.parts[0] if self.parts else None


def decode(message: bytes, **kwargs) -> MimeDecoder:
    """Decode a whole message at once (tests, barricade-check)."""
    decoder = MimeDecoder(**kwargs)
    decoder.feed(message)
    decoder.close()
    return decoder
