"""Message helpers: the header block, our Received: header, queue ids."""

from __future__ import annotations

import email.utils
import itertools
import os
import re
import time

from barricade.per_second import PerSecond

MAX_HEADER_BLOCK = 1 << 20  # past this the header block is cut: the rest counts as body

_B32 = "0123456789ABCDEFGHJKLMNPQRSTVWXYZ"  # Crockford: no I, L, O, U
_counter = itertools.count()


def _b32(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        n, r = divmod(n, 32)
        out.append(_B32[r])
    return "".join(reversed(out))


#: The time-and-pid part of a session id.
_prefix = PerSecond(lambda second: _b32(second, 7) + _b32(os.getpid() & 0x3FF, 2))
os.register_at_fork(after_in_child=_prefix.forget)  # a worker has its own pid


#: The counter's first two characters, by the counter's top ten bits.
_PAIRS = tuple(_b32(n, 2) for n in range(1024))


def new_session_id() -> str:
    """12 characters, unique per host: time, pid and a counter (smtpf style).

    The time-and-pid prefix is made once a second (and after a fork), not
    for every session; the counter's three characters come from tables.
    """
    n = next(_counter) & 0x7FFF
    return _prefix(time.time()) + _PAIRS[n >> 5] + _B32[n & 31]


class HeaderCollector:
    """Collect canonical bytes until the blank line that ends the headers."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.done = False

    def feed(self, chunk: bytes) -> bytes:
        """Once the block is complete, the rest: the blank line, then the body.

        ``buffer`` then holds the header lines only, each with its CRLF.
        """
        searched = len(self.buffer) - 3  # a blank line may straddle the last chunk's end
        self.buffer += chunk
        if self.buffer.startswith(b"\r\n"):
            end = 0
        else:
            # From where the last search stopped: a block sent in small pieces was
            # searched whole for every piece, its square in all.
            end = self.buffer.find(b"\r\n\r\n", max(0, searched))
            end = end + 2 if end >= 0 else -1
        if end < 0:
            if len(self.buffer) > MAX_HEADER_BLOCK:
                end = len(self.buffer)
            else:
                return b""
        self.done = True
        rest = bytes(self.buffer[end:])
        del self.buffer[end:]
        return rest


def parse_headers(block: bytes) -> list[tuple[str, str]]:
    """Unfolded (name, value) pairs; lines that are not headers are skipped."""
    headers: list[tuple[str, str]] = []
    folds: dict[int, list[str]] = {}  # a header's continuation lines, by its index
    for line in block.decode("latin-1").split("\r\n"):
        if not line:
            continue
        if line[0] in " \t" and headers:
            # Joined once at the end: adding each folded line to the value copied it
            # again, the square of a long folded header's size.
            folds.setdefault(len(headers) - 1, []).append(line.strip())
            continue
        name, colon, value = line.partition(":")
        if colon and name and " " not in name:
            headers.append((name, value.strip()))
    for i, parts in folds.items():
        name, value = headers[i]
        headers[i] = (name, " ".join((value, *parts)))
    return headers


_CONTROL = re.compile(r"[\x00-\x20\x7f]")


def _token(value: str) -> str:
    return _CONTROL.sub("?", value)


_date_now = PerSecond(lambda second: email.utils.formatdate(second, localtime=True))


def _date(when: float | None) -> str:
    """The RFC 5322 date of ``when`` (None: now), local time."""
    return email.utils.formatdate(when, localtime=True) if when is not None else _date_now(time.time())


def received_header(
    *, helo: str, client_name: str, client_ip: str, hostname: str, proto: str,
    qid: str, rcpts: list[str], when: float | None = None,
) -> bytes:
    """Our trace header (RFC 5321 4.4), folded to stay under 78 columns.

    Every field is cleaned of controls and spaces: client-supplied names
    (HELO, PTR, XCLIENT) must never be able to inject a header line.
    """
    date = _date(when)
    helo, client_name, client_ip = (_token(x) for x in (helo, client_name, client_ip))
    rcpts = [_token(r) for r in rcpts]
    lines = [
        f"Received: from {helo or 'unknown'} ({client_name} [{client_ip}])",
        f"\tby {hostname} (Barricade) with {proto} id {qid}",
    ]
    if len(rcpts) == 1:
        lines.append(f"\tfor <{rcpts[0]}>; {date}")
    else:
        lines[-1] += ";"
        lines.append(f"\t{date}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", "replace")


def edit_headers(block: bytes, subject_tag: str, added: list[tuple[str, str]],
                 removed: set[str] | frozenset[str] = frozenset()) -> bytes:
    """Apply removals, a Subject tag and added headers to a raw header block.

    Added headers go first (newest on top, like trace fields); a value may
    be folded (CRLF followed by a space or tab), any other CR/LF becomes a
    space.  The tag is put in front of the Subject unless it is already
    there, and a message without a Subject gets one.
    """
    if not removed and not added and not subject_tag:  # most messages: nothing to edit
        return bytes(block)
    lines = block.split(b"\r\n")
    if removed:
        kept, dropping = [], False
        for line in lines:
            if line[:1] in (b" ", b"\t"):  # continuation of the previous field
                if not dropping:
                    kept.append(line)
                continue
            name = line.split(b":", 1)[0].strip().lower().decode("latin-1")
            dropping = bool(line) and name in removed
            if not dropping:
                kept.append(line)
        lines = kept
    out = bytearray()
    for name, value in added:
        out += f"{_token(name)}: {_BARE_BREAK.sub(' ', value)}\r\n".encode("utf-8", "replace")
    if subject_tag:
        tag = subject_tag.encode("utf-8", "replace")
        for i, line in enumerate(lines):
            if line[:8].lower() == b"subject:":
                value = line[8:].lstrip()
                if not value.startswith(tag):
                    lines[i] = b"Subject: " + tag + b" " + value
                break
        else:
            out += b"Subject: " + tag + b"\r\n"
    return bytes(out) + b"\r\n".join(lines)


# A line break inside a header value is kept only as folding (CRLF + WSP).
_BARE_BREAK = re.compile(r"\r\n(?![ \t])|\r(?!\n)|(?<!\r)\n")
