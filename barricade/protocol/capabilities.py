"""What the downstream MTAs offer, and what Barricade may therefore offer its clients.

A proxy cannot promise more than the servers behind it keep: advertising
DSN to a client whose recipients go to a server without DSN would drop the
client's NOTIFY requests; a SIZE above the downstream's limit turns a
message that the client could have split or refused early into a late
downstream 552; withholding 8BITMIME makes sending MTAs re-encode 8-bit
mail (which breaks DKIM signatures made upstream).  So the EHLO we send
is built from the EHLO replies of every route's downstream, learnt by a
probe and by every relay connection, and refreshed (:class:`CapabilityCache`).

Everything here is sans-IO: the probe itself is the caller's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from barricade.protocol.grammar import ascii_digits

#: ``rfc1652-8bitmime`` levels.
EIGHTBIT_NEVER, EIGHTBIT_ALWAYS, EIGHTBIT_FOLLOW = 0, 1, 2

_NOTIFY_WORDS = frozenset(("SUCCESS", "FAILURE", "DELAY"))
_XTEXT = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*\Z")
ENVID_LIMIT = 100  # RFC 3461 4.4
ORCPT_LIMIT = 500  # RFC 3461 4.2: the whole parameter fits in a 512-octet command


@dataclass(frozen=True)
class Capabilities:
    """The ESMTP extensions one downstream host announced in its EHLO reply."""

    esmtp: bool = False
    pipelining: bool = False
    eightbitmime: bool = False
    dsn: bool = False
    etrn: bool = False
    smtputf8: bool = False
    size: int | None = None  # None: SIZE not announced; 0: announced without a limit
    xclient: frozenset[str] = field(default_factory=frozenset)
    xforward: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_keywords(cls, keywords: Mapping[str, str]) -> Capabilities:
        """``{"SIZE": "10240000", "DSN": "", ...}`` (keyword → rest of the line)."""
        words = {k.upper(): v for k, v in keywords.items()}
        size = None
        if "SIZE" in words:
            value = words["SIZE"].strip()
            size = int(value) if ascii_digits(value) else 0
        return cls(
            esmtp=True,
            pipelining="PIPELINING" in words,
            eightbitmime="8BITMIME" in words,
            dsn="DSN" in words,
            etrn="ETRN" in words,
            smtputf8="SMTPUTF8" in words,
            size=size,
            xclient=frozenset(words.get("XCLIENT", "").upper().split()),
            xforward=frozenset(words.get("XFORWARD", "").upper().split()),
        )


#: A downstream never reached, or one that only answers HELO: nothing is offered on its behalf.
UNKNOWN = Capabilities()


@dataclass(frozen=True)
class Offer:
    """What this session advertises in EHLO and accepts in MAIL/RCPT parameters."""

    size: int  # 0: no limit
    eightbitmime: bool
    dsn: bool
    etrn: bool = False
    smtputf8: bool = False


def make_offer(downstreams: Iterable[Capabilities], size_limit: int, eightbitmime: int,
               local: Capabilities | None = None) -> Offer:
    """The extensions every downstream shares, within our own limits.

    ``size_limit`` is ``message-size-limit`` (0: none); the result is the
    smallest positive SIZE of all.  ``eightbitmime`` is the
    ``rfc1652-8bitmime`` level: 0 never, 1 always (the operator vouches
    for the downstreams), 2 when every downstream offers it.  ETRN is
    relayed to the local route only, so it follows ``local`` alone.
    """
    caps = list(downstreams)
    size = size_limit
    for cap in caps:
        if cap.size:
            size = min(size, cap.size) if size else cap.size
    known = bool(caps)
    if eightbitmime == EIGHTBIT_FOLLOW:
        eight = known and all(c.eightbitmime for c in caps)
    else:
        eight = eightbitmime == EIGHTBIT_ALWAYS
    return Offer(
        size=size,
        eightbitmime=eight,
        dsn=known and all(c.dsn for c in caps),
        etrn=local is not None and local.etrn,
        smtputf8=known and all(c.smtputf8 for c in caps),
    )


# --- DSN parameters (RFC 3461) ------------------------------------------------------------


def valid_xtext(value: str) -> bool:
    return bool(_XTEXT.match(value))


def dsn_mail_error(key: str, value: str | None) -> bool:
    """True when a MAIL ``RET``/``ENVID`` value breaks RFC 3461 4.3/4.4."""
    if key == "RET":
        return (value or "").upper() not in ("FULL", "HDRS")
    return not value or len(value) > ENVID_LIMIT or not valid_xtext(value)


def dsn_rcpt_error(key: str, value: str | None) -> bool:
    """True when a RCPT ``NOTIFY``/``ORCPT`` value breaks RFC 3461 4.1/4.2."""
    if not value:
        return True
    if key == "NOTIFY":
        words = value.upper().split(",")
        if words == ["NEVER"]:
            return False
        return not words or any(w not in _NOTIFY_WORDS for w in words) or len(set(words)) != len(words)
    addr_type, semi, addr = value.partition(";")
    return (not semi or not addr_type or not addr or len(value) > ORCPT_LIMIT
            or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*", addr_type) or not valid_xtext(addr))


MAIL_DSN = ("RET", "ENVID")
RCPT_DSN = ("NOTIFY", "ORCPT")


def mail_parameters(params: Mapping[str, str | None], cap: Capabilities) -> str:
    """The MAIL parameters relayed to a downstream, as ``" KEY=value"`` text.

    Only what this downstream announced goes on: BODY=8BITMIME with
    8BITMIME, SIZE with SIZE, SMTPUTF8 with SMTPUTF8, RET and ENVID with DSN.
    """
    out = ""
    body = params.get("BODY")
    if body and body.upper() == "8BITMIME" and cap.eightbitmime:
        out += " BODY=8BITMIME"
    if params.get("SIZE") and cap.size is not None:
        out += f" SIZE={params['SIZE']}"
    if "SMTPUTF8" in params and cap.smtputf8:
        out += " SMTPUTF8"
    if cap.dsn:
        for key in MAIL_DSN:
            if params.get(key):
                out += f" {key}={params[key]}"
    return out


def rcpt_parameters(params: Mapping[str, str | None], cap: Capabilities) -> str:
    """The RCPT parameters relayed: NOTIFY and ORCPT to a downstream with DSN."""
    if not cap.dsn:
        return ""
    return "".join(f" {key}={params[key]}" for key in RCPT_DSN if params.get(key))


# --- the cache ------------------------------------------------------------------------


@dataclass
class _Entry:
    caps: Capabilities | None = None  # None: never learnt
    learnt: float = 0.0
    tried: float | None = None  # when the last probe started (None: never)


Key = tuple[tuple[str, int], ...]  # a route's forward hosts


class CapabilityCache:
    """Each route's downstream capabilities, with their age.

    ``ttl`` is how long an EHLO reply is believed; ``retry`` how long to
    wait before probing again a downstream that could not be reached.  The
    caller probes when :meth:`due` says so and reports back with
    :meth:`learn` or :meth:`failed`; every relay connection's EHLO is
    learnt too, so a busy route is never probed at all.
    """

    def __init__(self, ttl: float, retry: float = 60.0):
        self.ttl = ttl
        self.retry = retry
        self._entries: dict[Key, _Entry] = {}
        # The last offer made, with what it was made from: every EHLO asks, and
        # the answer changes only when an entry does (compared by identity).
        self._last: tuple[tuple, Offer] | None = None

    def learn(self, key: Key, keywords: Mapping[str, str] | None, now: float) -> Capabilities:
        """A fresh EHLO reply (``None``: the host answered HELO only)."""
        caps = Capabilities.from_keywords(keywords) if keywords is not None else UNKNOWN
        entry = self._entries.setdefault(key, _Entry())
        entry.caps, entry.learnt, entry.tried = caps, now, None
        return caps

    def failed(self, key: Key, now: float) -> None:
        """The probe found no usable host; what was known stays until it expires."""
        entry = self._entries.setdefault(key, _Entry())
        entry.tried = now
        if entry.caps is not None and now - entry.learnt >= self.ttl + self.retry:
            entry.caps = None  # stale past its use: offer nothing on its behalf

    def start(self, key: Key, now: float) -> None:
        """A probe of ``key`` begins (so that others do not start one too)."""
        self._entries.setdefault(key, _Entry()).tried = now

    def get(self, key: Key) -> Capabilities | None:
        entry = self._entries.get(key)
        return entry.caps if entry is not None else None

    def due(self, key: Key, now: float) -> bool:
        """Should a probe start now (never learnt, or older than ``ttl``)?"""
        entry = self._entries.get(key)
        if entry is None:
            return True
        if entry.tried is not None and now - entry.tried < self.retry:
            return False  # one probe at a time, and a pause after a failure
        return entry.caps is None or now - entry.learnt >= self.ttl

    def offer(self, keys: Iterable[Key], local: Key, size_limit: int, eightbitmime: int) -> Offer:
        """What to advertise now; a route never learnt makes the offer conservative."""
        caps = [self.get(key) or UNKNOWN for key in keys]
        basis = (size_limit, eightbitmime, self.get(local), *caps)
        last = self._last
        if last is not None and len(last[0]) == len(basis):
            for a, b in zip(last[0], basis, strict=True):
                if a is not b:
                    break
            else:
                return last[1]
        offer = make_offer(caps, size_limit, eightbitmime, basis[2])
        self._last = (basis, offer)
        return offer
