"""EMEW, the Enhanced Message-ID as Email Watermark: our own mail, recognised when it comes back.

Outbound mail gets a Message-ID that only we can make: the original id,
the time and an MD5 over them, the sender and a secret::

    <EMEW3|{md5 hex}{time, 6 base-62 digits}{offset of @ in the original id, 2 hex}|{original id}>

(``EMEW3|...|left`` is the id's left part and the original's domain its
right, so the id stays RFC 5322 valid.)  A bounce (DSN) or read receipt
(MDN) to one of our senders quotes that id; a reply names it in
References or In-Reply-To.  :func:`check` says whether an id is one of
ours for that address, and whether it is too old.
"""

from __future__ import annotations

import hashlib
import re
import string

PREFIX = "EMEW3|"
_B62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
_EMEW = re.compile(r"EMEW3\|([0-9a-f]{32})([0-9A-Za-z]{6})([0-9a-f]{2})\|([^<>\s]+@[^<>\s]+)")
#: A quoted Message-ID line in a DSN or MDN body.
#: Blanks before the field name, not \s: \s ran across line ends from every line's start
#: (a body of empty lines cost its length squared).
QUOTED_ID = re.compile(rb"(?im)^[ \t]*(?:original-)?message-id:\s*<(EMEW3\|[^<>\r\n]{40,})>")


def time62(seconds: int) -> str:
    out = []
    for _ in range(6):
        seconds, r = divmod(seconds, 62)
        out.append(_B62[r])
    return "".join(reversed(out))


def untime62(text: str) -> int:
    value = 0
    for ch in text:
        value = value * 62 + _B62.index(ch)
    return value


def _digest(stamp: str, offset: str, sender: str, original: str, secret: str) -> str:
    data = f"{stamp}{offset}{sender.lower()}{original}{secret}".encode("utf-8", "replace")
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def make(secret: str, sender: str, original: str, now: float) -> str:
    """The watermarked Message-ID (with its angle brackets) for ``original`` (without)."""
    stamp = time62(int(now))
    offset = f"{min(original.find('@'), 255) & 0xFF:02x}"
    return f"<{PREFIX}{_digest(stamp, offset, sender, original, secret)}{stamp}{offset}|{original}>"


def check(secret: str, address: str, text: str, now: float, ttl: int) -> str:
    """``valid``, ``expired``, ``invalid`` (not made with this secret for this address) or ``none``."""
    m = _EMEW.search(text)
    if m is None:
        return "none"
    digest, stamp, offset, original = m.groups()
    if _digest(stamp, offset, address, original, secret) != digest:
        return "invalid"
    if ttl and now - untime62(stamp) > ttl:
        return "expired"
    return "valid"


def ids_in(value: str) -> list[str]:
    """The ``<...>`` ids of a References or In-Reply-To value, last first (the one replied to)."""
    return list(reversed(re.findall(r"<([^<>]+)>", value)))
