"""The DATA stream decoder: client bytes in, canonical message out.

It is where SMTP smuggling (CVE-2023-51764 family) is stopped: only
CRLF "." CRLF ends the message; a line ended by a bare LF, and a bare CR
inside a line, are rewritten as CRLF line breaks (and counted, so
``+rfc2821-strict-dot`` can refuse the message).  What leaves here is a
sequence of CRLF-terminated, dot-unstuffed lines; the forwarder re-stuffs
them, so the downstream MTA can never see an end-of-data the decoder did
not see.

A leading dot is removed (dot-unstuffing) only from a line that has more
than the dot before its end: a lone "." ended by a bare LF or a bare CR
(``CRLF "." CR text``) was never stuffed, so the dot is content and is
kept, as a "." line of its own; the forwarder stuffs it again.  No line of
the message vanishes.

Memory is bounded: a line with no end is passed on in ``SEGMENT``-sized
pieces instead of being buffered whole.
"""

from __future__ import annotations

SEGMENT = 65536


class DataDecoder:
    def __init__(self) -> None:
        self.buffer = bytearray()
        self.at_line_start = True
        # The final dot counts only after a CRLF: "<LF>.<CRLF>" is the classic
        # smuggling sequence, and a bare CR/LF before the dot never qualifies.
        self.after_crlf = True
        self.line_length = 0  # octets of the current (partial) line, CRLF excluded
        self.longest_line = 0
        self.bare = 0
        self.size = 0
        self.done = False

    def feed(self, data: bytes) -> None:
        self.buffer += data

    def decode(self) -> bytes:
        """Everything decodable now; sets ``done`` at the final dot.

        Bytes after the final dot stay in ``buffer`` for the command parser.
        """
        if self.done:
            return b""
        out = bytearray()
        buf = self.buffer
        pos = self._fast(out) if self.at_line_start and self.after_crlf else 0
        while not self.done:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                # Keep a trailing CR: it may be the first half of CRLF.
                avail = len(buf) - pos - (1 if buf.endswith(b"\r") else 0)
                if avail >= SEGMENT:
                    self._segment(bytes(buf[pos : pos + avail]), out)
                    pos += avail
                break
            line = bytes(buf[pos:nl])
            pos = nl + 1
            crlf = line.endswith(b"\r")
            if crlf:
                line = line[:-1]
            if self.after_crlf and line == b"." and crlf:
                self.done = True
                break
            if not crlf:
                self.bare += 1
            self._line(line, out)
            self.after_crlf = crlf
        del buf[:pos]
        self.size += len(out)
        return bytes(out)

    def _fast(self, out: bytearray) -> int:
        """Decode the complete lines at the head of the buffer in one go.

        Well-formed mail (every line ends in CRLF, no bare CR or LF) is the
        common case; it needs no per-line loop.  Anything else is left to
        the line-by-line path.  Returns how many bytes were consumed.
        """
        buf = self.buffer
        end = buf.rfind(b"\r\n") + 2
        if end < 2:
            return 0
        block = bytes(buf[:end])
        if block.startswith(b".\r\n"):
            self.done = True
            return 3
        eod = block.find(b"\r\n.\r\n")
        consumed = end
        if eod >= 0:  # what follows the dot is the next commands': not ours to judge
            block, consumed = block[: eod + 2], eod + 5
        if block.startswith(b"."):
            block = block[1:]
        block = block.replace(b"\r\n.", b"\r\n")  # undo the dot-stuffing
        lines = block.split(b"\r\n")
        # A CR or LF left once the CRLFs are gone is bare: the careful path.  (Counting
        # CR, LF and CRLF instead took three passes, 40 % of this for 4 KB.)
        flat = b"".join(lines)
        if b"\n" in flat or b"\r" in flat:
            return 0
        self.done = eod >= 0
        self.longest_line = max(self.longest_line, max(map(len, lines)))
        out += block
        return consumed

    def _segment(self, piece: bytes, out: bytearray) -> None:
        """Part of a line without its end."""
        if self.at_line_start and _stuffed(piece):
            piece = piece[1:]
        piece = self._bare_cr(piece, out, final=False)
        out += piece
        self.line_length += len(piece)
        self.longest_line = max(self.longest_line, self.line_length)
        self.at_line_start = False
        self.after_crlf = False

    def _line(self, line: bytes, out: bytearray) -> None:
        # A lone "." here ended in a bare LF or CR: no stuffing to undo, keep it.
        if self.at_line_start and _stuffed(line):
            line = line[1:]
        line = self._bare_cr(line, out, final=True)
        out += line
        out += b"\r\n"
        self.line_length += len(line)
        self.longest_line = max(self.longest_line, self.line_length)
        self.line_length = 0
        self.at_line_start = True

    def _bare_cr(self, line: bytes, out: bytearray, final: bool) -> bytes:
        """Write the parts of ``line`` before each bare CR as full lines."""
        if b"\r" not in line:
            return line
        parts = line.split(b"\r")
        self.bare += len(parts) - 1
        for part in parts[:-1]:
            out += part
            out += b"\r\n"
            self.longest_line = max(self.longest_line, self.line_length + len(part))
            self.line_length = 0
        return parts[-1]


def _stuffed(line: bytes) -> bool:
    """Does ``line`` start with a stuffed dot (a dot, then more before a bare CR)?"""
    return line.startswith(b".") and len(line) > 1 and line[1:2] != b"\r"
