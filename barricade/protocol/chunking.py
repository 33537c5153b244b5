"""CHUNKING (RFC 3030): the BDAT command and its chunks, sans-IO.

BDAT carries the message as counted octets, with no dot-stuffing and no
end-of-data line.  The chunks still go through the same gate as DATA: a
bare CR or LF is rewritten as CRLF (and counted for
``+rfc2821-strict-dot``), so that the message relayed downstream as DATA,
dot-stuffed, can never contain an end-of-data the client did not send as
octets (no smuggling through BDAT either).  Line lengths and the size are
counted here as the DATA decoder counts them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SIZE_DIGITS = 20  # "BDAT 99999999999999999999": refused before any int() of a huge number
_BDAT = re.compile(r"(\d{1,20})(?: +(LAST))? *\Z", re.IGNORECASE)


@dataclass(frozen=True)
class BdatCommand:
    size: int
    last: bool


def parse_bdat(arg: str) -> BdatCommand | None:
    """``"1000 LAST"`` → BdatCommand(1000, True); None when the argument is not RFC 3030's."""
    match = _BDAT.match(arg)
    if match is None:
        return None
    return BdatCommand(int(match.group(1)), match.group(2) is not None)


class ChunkDecoder:
    """The octets of one message's chunks in, canonical CRLF lines out."""

    def __init__(self) -> None:
        self.size = 0  # octets out (after CR/LF repair)
        self.bare = 0
        self.longest_line = 0
        self.line_length = 0
        self._cr = False  # the previous chunk ended in CR: its LF may start the next

    def decode(self, data: bytes) -> bytes:
        """One piece of a chunk; a CR at its end waits for the next piece."""
        if self._cr:
            data = b"\r" + data
            self._cr = False
        if data.endswith(b"\r"):
            data = data[:-1]
            self._cr = True
        if data.count(b"\r") != data.count(b"\r\n") or data.count(b"\n") != data.count(b"\r\n"):
            lines = re.split(rb"\r\n|\r|\n", data)
            self.bare += data.count(b"\r") + data.count(b"\n") - 2 * data.count(b"\r\n")
            data = b"\r\n".join(lines)
        self._count(data)
        return data

    def finish(self) -> bytes:
        """The last chunk is in: a CR still waiting was a bare one."""
        if not self._cr:
            return b""
        self._cr = False
        self.bare += 1
        self._count(b"\r\n")
        return b"\r\n"

    def _count(self, data: bytes) -> None:
        self.size += len(data)
        lines = data.split(b"\r\n")
        if len(lines) == 1:
            self.line_length += len(data)
        else:
            self.longest_line = max(self.longest_line, self.line_length + len(lines[0]),
                                    max(map(len, lines[1:-1]), default=0))
            self.line_length = len(lines[-1])
        self.longest_line = max(self.longest_line, self.line_length)
