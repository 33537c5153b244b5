"""RFC 2822 header checks (``rfc2822-7bit-headers``, ``-min-headers``, ``-missing-eoh``, ``-strict-date``).

Pure functions over the header block as received (CRLF lines, no blank
line at the end): each returns None when the message passes, else what
the reply needs to say.
"""

from __future__ import annotations

import re

from barricade.protocol.message import parse_headers

_FIELD = re.compile(rb"^[!-9;-~]+[ \t]*:")
#: RFC 2822 3.6: the only fields every message must have.
REQUIRED = ("date", "from")
_DAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
#: RFC 2822 3.3 date-time with the obsolete zones of 4.3 (UT, GMT, the US zones, military letters)
#: and a two-digit year (4.3); white space and comments around the tokens are allowed.
_DATE = re.compile(
    rf"^\s*(?:{_DAY}\s*,\s*)?\d{{1,2}}\s+{_MONTH}\s+(?:\d{{4}}|\d{{2}})\s+"
    r"\d{2}\s*:\s*\d{2}(?:\s*:\s*\d{2})?\s+"
    r"(?:[+-]\d{4}|UT|GMT|[ECMP][SD]T|[A-IK-Za-ik-z])\s*(?:\([^()]*\)\s*)?$",
    re.IGNORECASE)
#: RFC 2822 3.6.4: msg-id = "<" id-left "@" id-right ">" (dot-atoms, or a domain literal on the right).
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = rf"{_ATEXT}(?:\.{_ATEXT})*"
_MSG_ID = re.compile(rf"^\s*<{_DOT_ATOM}@(?:{_DOT_ATOM}|\[[^\[\]\\]*\])>\s*(?:\([^()]*\)\s*)?$")


def first_8bit(block: bytes) -> int | None:
    """The first octet outside US-ASCII in the header block (RFC 2822 2.2), or None."""
    for octet in block:
        if octet > 0x7F:
            return octet
    return None


def missing_eoh(block: bytes) -> str | None:
    """A line in the header block that is neither a field nor a continuation:
    the sender left out the blank line that ends the headers (RFC 2822 2.1)."""
    for line in block.split(b"\r\n"):
        if not line or line[:1] in (b" ", b"\t") or _FIELD.match(line):
            continue
        return line[:60].decode("latin-1")
    return None


def missing_required(headers: list[tuple[str, str]]) -> list[str]:
    """The RFC 2822 required fields (Date, From) that are absent."""
    present = {name.lower() for name, _ in headers}
    return [name for name in REQUIRED if name not in present]


def bad_message_id(headers: list[tuple[str, str]]) -> str | None:
    """A Message-ID that does not follow RFC 2822 3.6.4's grammar, or None."""
    for name, value in headers:
        if name.lower() == "message-id" and not _MSG_ID.match(value):
            return value[:100]
    return None


def valid_date(value: str) -> bool:
    return bool(_DATE.match(value))


def bad_date(headers: list[tuple[str, str]]) -> tuple[str, str] | None:
    """(field, value) of the first Date, Resent-Date or Received date that is not RFC 2822's."""
    for name, value in headers:
        low = name.lower()
        if low in ("date", "resent-date"):
            if not valid_date(value):
                return name, value[:100]
        elif low == "received":
            _, semi, date = value.rpartition(";")
            if not semi or not valid_date(date):
                return name, date.strip()[:100] if semi else "no date"
    return None


def headers_of(block: bytes) -> list[tuple[str, str]]:
    return parse_headers(block)
