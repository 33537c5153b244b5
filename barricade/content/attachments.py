"""smtpf's attachment policy as pure decisions: which names and types a message may carry.

Patterns are globs (``*.exe``, ``application/*executable``), matched
case-insensitively against the whole name or type.  In
``deny-top-content-type`` a pattern with a leading ``!`` exempts: the
first pattern that matches decides, so ``!application/pdf,
application/*`` lets PDF through and refuses every other application type.
The access map's ``Filename-*``, ``Mimetype-*``, ``Top-Mimetype-*`` and
``Archname-*`` values are lists in the same syntax that replace the option
for that client, sender or recipient.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase

_SPLIT = re.compile(r"[;,\s]+")


def parse_patterns(value: str | Iterable[str]) -> tuple[str, ...]:
    """An access-map value (``*.exe; *.scr``) or an option's list, lower-cased."""
    items = _SPLIT.split(value) if isinstance(value, str) else value
    return tuple(p.strip().lower() for p in items if p and p.strip())


def denied(value: str, patterns: Sequence[str]) -> str | None:
    """The pattern that refuses ``value`` (a ``!pattern`` that matches first lets it pass), or None."""
    value = value.strip().lower()
    if not value:
        return None
    for pattern in patterns:
        if pattern.startswith("!"):
            if fnmatchcase(value, pattern[1:]):
                return None
        elif fnmatchcase(value, pattern):
            return pattern
    return None


def base_name(filename: str) -> str:
    """The last path element: archive members and some mailers put directories in names."""
    return re.split(r"[/\\]", filename)[-1]
