"""Internationalised domain names as mail and the web read them: UTS #46, non-transitional.

Why not Python's ``"idna"`` codec: it implements IDNA 2003, which maps
``ß`` to ``ss`` (and ``ς`` to ``σ``) and drops joiners.  ``straße.de`` and
``strasse.de`` were then one domain here, while Postfix, browsers and
registries (IDNA 2008 through UTS #46, non-transitional) see two that
different people may own: mail for one was routed as the other's.  The
``idna`` package implements UTS #46; it is already installed with Twisted.
"""

from __future__ import annotations

import idna


def to_ascii(domain: str) -> str | None:
    """The A-label form of ``domain`` (an ASCII one as it is), or None when it is
    not a valid internationalised name (a label IDNA 2008 forbids, an empty one)."""
    if domain.isascii():
        return domain
    try:
        return idna.encode(domain, uts46=True, transitional=False).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        return None
