"""Grey-listing at DATA, smtpf's algorithm (README, "Grey-listing").

It runs in the DATA phase, after the access map's message check, so that
every envelope test has had its chance and the recipients are known.

* **Exempt:** ``grey-key`` empty; localhost, route-map RELAY clients and
  white-listed sessions or envelopes (``OK``; ``CONTENT``, smtpf's
  "grey" white list); a period of 0 after ``Grey-Connect:``/``Grey-To:``;
  a sender verified by call-back with ``+call-back-pass-grey``
  (:data:`SKIP_NOTE`).  AUTH would be exempt too, but Barricade has no AUTH yet.
* **Period:** ``grey-temp-fail-period``, replaced by the client's
  ``Grey-Connect:`` (IP, ``[ip]``, PTR domains, the bare tag), then the
  smallest ``Grey-To:`` among the recipients.
* **Key:** ``grey-key`` words in smtpf's fixed order (:data:`WORDS`),
  lower-cased and joined with commas.  With ``rcpt`` each recipient has its
  tuple and the first that passes lets the message through; otherwise the
  last tuple tried decides (its reply, its log line).
* **Host short-cut:** when the key starts with ip/ptr/ptrn, the part up to
  the first comma (the second with ``helos``) is the host; a first pass
  white-lists it for ``cache-accept-ttl`` and a known host passes any tuple.
* **Replies:** a temp-fail is ``451 4.7.0`` #552, logged as #387, and with a
  host in the key the connection is then closed (smtpf: a client without a
  retry queue stays connected and tries again; make it go).  A record an
  operator set to reject (:meth:`Store.grey_reject`) gives ``550 5.7.1`` #388.
  A first pass adds ``grey-report-header`` (``X-Grey-Report``).
* **Memory:** with Redis, a tuple this worker saw pass is answered KNOWN
  without asking (``redis-grey-known-ttl``; :mod:`barricade.state.known`
  says what that changes); ``barricade_grey_remembered_total`` counts those.
* **Store failure:** ``state-failure``; ``tempfail`` is ``451 4.3.0`` #945
  here (at DATA, before the body), not #944's 421 and close: the envelope was fine, and a client that
  retries the message later will most likely find the store back.

``grey-content`` (compiled out in smtpf; built here because it was asked
for) starts the period with a message and then lets only that message
through: at DATA a tuple past its period is only held (the report header is
added), and at the final dot the MD5 of the message's decoded text decides
(:func:`content_digest`).  A different message after the period gets
``450 4.4.5`` #553 and becomes the "last" message, which also passes.  The
dot is checked before it goes downstream, so a refused message is never
delivered; it is still transferred.  It runs with the built-in checks, that
is before the scanner plugins (smtpf checks it after clamd).
"""

from __future__ import annotations

import email.utils
import functools
import hashlib
import re
from email.message import Message
from email.parser import BytesFeedParser
from typing import NamedTuple

from twisted.logger import Logger

from barricade.maps import KeyValueMap, strip_detail
from barricade.options import Config
from barricade.policy.pipeline import Check, Context, immediate
from barricade.policy.state_limits import StoreCheck
from barricade.policy.verdict import CONTINUE, Verdict, drop, reject, tempfail
from barricade.replies import ReplyId
from barricade.state import Store, StoreError
from barricade.state.base import Grey, GreyStatus

log = Logger()

#: smtpf's tuple elements in the order its key is built (grey.h bit order).
WORDS = ("ip", "ptr", "ptrn", "helo", "helos", "p0f", "mail", "rcpt")
HOST_WORDS = frozenset(("ip", "ptr", "ptrn"))

#: Labels under a two-letter country code that are registries, not domains
#: (``co.uk``, ``com.au``): smtpf's TLD table keeps ``pcspecialist.co.uk`` whole.
SECOND_LEVEL = frozenset((
    "ac", "co", "com", "edu", "gen", "go", "gob", "gov", "ltd", "mil", "ne", "net", "nom",
    "or", "org", "plc",
))

KEYS_NOTE = "grey.keys"  # the tuples left for the dot (grey-content)
HASH_NOTE = "grey.hash"
#: In HASH_NOTE when the message cannot be hashed (nesting too deep for the parser).
UNHASHABLE = object()
#: A check that ran before grey-listing vouches for this message (smtpf's
#: SKIP_NEXT): the value is the reason, e.g. "call-back" (call-back-pass-grey).
SKIP_NOTE = "grey.skip"


def suffix_labels(labels: list[str]) -> int:
    """How many trailing labels are the public suffix: 2 for ``co.uk``, else 1."""
    if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in SECOND_LEVEL:
        return 2
    return 1


def domain_suffix(name: str) -> str:
    """smtpf's greyDomainSuffix: the name minus its first label.

    The name stays whole when what is left would be only the public suffix
    (``example.com``, ``pcspecialist.co.uk``); "" when it has no dot.
    """
    name = name.strip(".").lower()
    labels = name.split(".")
    if len(labels) < 2:
        return ""
    if len(labels) - 1 <= suffix_labels(labels):
        return name
    return ".".join(labels[1:])


def ptr_numbers(name: str) -> str:
    """smtpf's ``ptrn``: each run of digits before the registered domain becomes ``#``."""
    name = name.strip(".").lower()
    labels = name.split(".")
    keep = min(len(labels), suffix_labels(labels) + 1)
    head, tail = labels[:-keep], labels[-keep:]
    return ".".join([*(re.sub(r"\d+", "#", label) for label in head), *tail])


def mailbox(address: str) -> str:
    """``local@domain`` with the +detail removed (``@`` for the null sender)."""
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, ""
    return f"{strip_detail(local)}@{domain}"


class GreyKey(NamedTuple):
    """One tuple: the store key (``grey:`` is the stores' namespace) and its host part.

    (A named tuple: made in one call, where a frozen dataclass sets each field
    through ``object.__setattr__``.)
    """

    tuple: str
    host: str | None

    @property
    def name(self) -> str:
        """As smtpf shows it in logs and the report header."""
        return f"grey:{self.tuple}"


def make_key(words: frozenset[str], *, ip: str, ptr: str | None, helo: str, sender: str,
             rcpt: str | None) -> GreyKey:
    """Build one tuple the way smtpf's greyMakeKey does.

    ``ptr`` is the client's PTR name, or None when it has none (the IP is
    used instead).  smtpf also falls back to the IP for forged, IP-in-PTR and
    multi-domain PTRs and SPF fail/softfail senders; Barricade does not know
    those yet.
    """
    parts: list[str] = []
    for word in WORDS:
        if word not in words:
            continue
        if word in ("ptr", "ptrn"):
            value = ""
            if ptr:
                value = domain_suffix(ptr) if "ptr" in words else ""
                value = value or ptr_numbers(ptr)
            parts.append(value or ip)
        elif word == "ip":
            parts.append(ip)
        elif word == "helo":
            parts.append(helo)
        elif word == "helos":
            literal = helo.startswith("[")
            parts.append((domain_suffix(helo) if not literal else "") or helo)
        elif word == "mail":
            parts.append(mailbox(sender))
        elif word == "rcpt" and rcpt is not None:
            parts.append(mailbox(rcpt))
    key = ",".join(parts).lower()
    host = None
    if words & HOST_WORDS and "," in key:
        cut = 2 if "helos" in words and key.count(",") >= 2 else 1
        host = ",".join(key.split(",")[:cut])
    return GreyKey(key, host)


#: make_key remembered: a busy gateway's mail comes mostly from correspondents it has
#: seen, whose next message makes the same tuple (a lookup is a fifth of making one).
#: Keys are immutable, so sharing them is safe; a few thousand take a megabyte or so.
_known_key = functools.lru_cache(maxsize=4096)(make_key)


def report(status: GreyStatus, key: GreyKey) -> str:
    """The X-Grey-Report value: ``age=73 (00:01:13) key=grey:… at="<when first seen>"``."""
    age = max(0, int(status.age))
    hours, rest = divmod(age, 3600)
    minutes, seconds = divmod(rest, 60)
    at = email.utils.formatdate(status.created, localtime=True)
    return f'age={age} ({hours:02d}:{minutes:02d}:{seconds:02d}) key={key.name} at="{at}"'


# --- content hash (grey-content) -------------------------------------------------------

_HTML_DECL = re.compile(rb"<![^>]*>?")
_SPACE = re.compile(rb"[ \t\n\v\f\r]+")


def _part_text(part: Message) -> bytes:
    """One leaf part as smtpf hashes it: decoded, white space and ``<!…>`` removed."""
    ctype = part.get_content_type()
    if ctype == "application/ms-tnef":
        return b""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return b""
    if ctype == "text/html":
        payload = _HTML_DECL.sub(b"", payload)
    return _SPACE.sub(b"", payload)


def content_digest(message: Message) -> str:
    """MD5 (hex) of every leaf part's decoded text (smtpf's grey-content hash).

    Transfer encodings and MIME boundaries do not count, so the same text
    sent again hashes the same.  smtpf strips only ``<!…>`` in HTML (the
    comments hash-busters hide in), and skips TNEF attachments.
    """
    digest = hashlib.md5(usedforsecurity=False)
    for part in message.walk():
        if not part.is_multipart():
            digest.update(_part_text(part))
    return digest.hexdigest()


# --- the checks --------------------------------------------------------------------------


class GreyList(StoreCheck):
    """Grey-listing at DATA (#552, #388); see the module docstring."""

    name = "grey"
    tag = "grey-connect"
    family = "grey"  # state-failure=grey:skip|tempfail
    failure_reply = ReplyId.STATE_UNAVAILABLE  # at DATA a store failure is 451 4.3.0 and the session goes on
    failure_drops = False

    def __init__(self, config: Config, access_map: KeyValueMap | None, store: Store, metrics=None):
        super().__init__(config, access_map, store, metrics)  # type: ignore[arg-type]
        self.words = frozenset(w.lower() for w in config["grey-key"])
        self.default_period = config["grey-temp-fail-period"]
        self.temp_fail_ttl = config["grey-temp-fail-ttl"]
        self.accept_ttl = config["cache-accept-ttl"]
        self.header = config["grey-report-header"]
        self.drops = bool(self.words & HOST_WORDS)

    # --- what applies to this message ----------------------------------------------

    def exempt(self, ctx: Context) -> str | None:
        """Why this message is not grey-listed, or None (smtpf's usual suspects)."""
        if not self.words:
            return "disabled"
        if ctx.notes.get(SKIP_NOTE):
            return str(ctx.notes[SKIP_NOTE])
        if ctx.client.localhost:
            return "localhost"
        if ctx.client.relay:
            return "relay"
        if ctx.trusted:
            return "white-listed"
        if ctx.white_envelope:
            return "content"
        return None

    def period(self, ctx: Context) -> int:
        """``grey-temp-fail-period``, then ``Grey-Connect:``, then the smallest ``Grey-To:``."""
        period = self.default_period
        amap = self.map
        if amap is None or not (amap.has_tag(self.tag) or amap.has_tag("grey-to")):
            return period  # most maps have neither: no keys to build, for every message
        found = self.number(self.client_value(ctx))  # Grey-Connect:
        if found is not None:
            period = found
        for rcpt in ctx.rcpts:
            found = self.number(self.mail_value("grey-to", rcpt))
            if found is not None and found < period:
                period = found
        return period

    def keys(self, ctx: Context) -> list[GreyKey]:
        """The message's tuples: one per distinct recipient with ``rcpt``, else one."""
        client = ctx.client
        name = client.name if client.name not in ("", "unknown", "localhost") else None
        ip, helo, sender = client.ip, ctx.helo, ctx.sender or ""
        rcpts = ctx.rcpts if "rcpt" in self.words else [None]
        keys: list[GreyKey] = []
        for rcpt in rcpts:
            key = _known_key(self.words, ip=ip, ptr=name, helo=helo, sender=sender, rcpt=rcpt)
            if key not in keys:
                keys.append(key)
        return keys

    # --- store calls and outcomes ----------------------------------------------------

    def known(self, key: GreyKey, period: int) -> GreyStatus | None:
        """KNOWN for a tuple this worker remembers passing, without a store call
        (and without a coroutine: most messages of a busy gateway end here)."""
        known = self.store.known_grey(key.tuple, host=key.host, period=period)
        if known is not None and self.metrics is not None:
            self.metrics.count(self.metrics.grey_remembered)
        return known

    async def lookup(self, key: GreyKey, period: int, **content) -> GreyStatus:
        """The store's answer for a tuple not :meth:`known` here."""
        return await self.stored(self.store.grey(
            key.tuple, period=period, temp_fail_ttl=self.temp_fail_ttl, accept_ttl=self.accept_ttl,
            host=key.host, **content))

    def count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.count(self.metrics.grey, outcome)

    def passed(self, ctx: Context, status: GreyStatus, key: GreyKey) -> Verdict:
        self.count(status.result)  # a StrEnum: the member is its own value
        if status.result is Grey.PASS and self.header:
            ctx.add_header(self.header, report(status, key))
        return CONTINUE

    def refused(self, ctx: Context, status: GreyStatus, key: GreyKey) -> Verdict:
        """The last tuple's verdict when none passed."""
        self.count(status.result)  # a StrEnum: the member is its own value
        if status.result is Grey.REJECT:
            log.info("session {sid}: {key} failed grey listing (reject record)",
                     sid=ctx.session_id, key=key.name)
            return reject(ReplyId.GREY_REJECTED)
        if status.result is Grey.MISMATCH:
            log.info("session {sid}: #393 grey-content message mismatch {key}",
                     sid=ctx.session_id, key=key.name)
            return tempfail(ReplyId.GREY_CONTENT_MISMATCH)
        log.info("session {sid}: #387 grey listed {{{key}}} for {n} seconds", sid=ctx.session_id,
                 key=key.name, n=int(status.remaining + 0.999))
        return drop(ReplyId.GREY_LISTED) if self.drops else tempfail(ReplyId.GREY_LISTED)

    # --- DATA ------------------------------------------------------------------------------

    async def data(self, ctx: Context) -> Verdict:
        reason = self.exempt(ctx)
        period = self.period(ctx) if reason is None else 0
        if reason is None and period <= 0:
            reason = "period 0"
        if reason is not None:
            if reason != "disabled":
                self.count("exempt")
            return CONTINUE
        keys = self.keys(ctx)
        if not keys:
            return CONTINUE
        status: GreyStatus | None = None
        try:
            for key in keys:
                status = self.known(key, period) or await self.lookup(key, period, **self.data_mode())
                if self.goes_on(status):
                    return self.at_data(ctx, status, key, period)
        except StoreError as exc:
            return self.failed(ctx, exc)
        assert status is not None
        return self.refused(ctx, status, keys[-1])

    def data_mode(self) -> dict:
        return {}

    def goes_on(self, status: GreyStatus) -> bool:
        return status.passed

    def at_data(self, ctx: Context, status: GreyStatus, key: GreyKey, period: int) -> Verdict:
        return self.passed(ctx, status, key)


class GreyContent(GreyList):
    """``+grey-content``: DATA only holds; the message's hash decides at the dot (#553)."""

    def data_mode(self) -> dict:
        return {"hold": True}

    def goes_on(self, status: GreyStatus) -> bool:
        return status.result not in (Grey.EARLY, Grey.REJECT)

    def at_data(self, ctx: Context, status: GreyStatus, key: GreyKey, period: int) -> Verdict:
        if status.result is Grey.KNOWN:
            return self.passed(ctx, status, key)
        if status.result is Grey.DUE and self.header:
            ctx.add_header(self.header, report(status, key))
        ctx.notes[KEYS_NOTE] = (self.keys(ctx), period)
        ctx.notes[HASH_NOTE] = BytesFeedParser()
        return CONTINUE

    @immediate
    def body(self, ctx: Context, chunk: bytes) -> Verdict:
        parser = self._parser(ctx)
        if parser is not None and parser is not UNHASHABLE:
            try:
                parser.feed(chunk)
            except RecursionError:
                self._unhashable(ctx)
        return CONTINUE

    def _parser(self, ctx: Context) -> BytesFeedParser | object | None:
        """The message parser, fed the header block the first time (or UNHASHABLE)."""
        parser = ctx.notes.get(HASH_NOTE)
        if parser is not None and parser is not UNHASHABLE and not ctx.notes.get("grey.fed"):
            ctx.notes["grey.fed"] = True
            try:
                parser.feed(ctx.header_block)
            except RecursionError:
                return self._unhashable(ctx)
        return parser

    @staticmethod
    def _unhashable(ctx: Context) -> object:
        """The standard library's parser recurses once per level of MIME nesting: a
        message nested a thousand deep is looked up without its content, as if
        grey-content were off for it, rather than failing the check (#907) on
        every retry."""
        ctx.notes[HASH_NOTE] = UNHASHABLE
        log.info("session {sid}: grey-content: MIME nesting too deep to hash; the tuple alone decides",
                 sid=ctx.session_id)
        return UNHASHABLE

    async def end_of_data(self, ctx: Context) -> Verdict:
        pending = ctx.notes.pop(KEYS_NOTE, None)
        parser = self._parser(ctx)
        if pending is None or parser is None:
            return CONTINUE
        keys, period = pending
        digest = None
        if parser is not UNHASHABLE:
            try:
                digest = content_digest(parser.close())
            except RecursionError:
                self._unhashable(ctx)
        msgid = (ctx.header("Message-ID") or "").strip()
        status: GreyStatus | None = None
        try:
            for key in keys:
                status = self.known(key, period) or await self.lookup(key, period, digest=digest, msgid=msgid)
                if status.passed:
                    self.count(status.result)  # a StrEnum: the member is its own value
                    return CONTINUE
        except StoreError as exc:
            return self.failed(ctx, exc)
        assert status is not None
        return self.refused(ctx, status, keys[-1])


def grey_checks(config: Config, access_map: KeyValueMap | None, store: Store | None,
                metrics=None) -> list[Check]:
    """The grey-list check (content flavour with ``+grey-content``); none without a store."""
    if store is None or not config["grey-key"]:
        return []
    cls = GreyContent if config["grey-content"] else GreyList
    return [cls(config, access_map, store, metrics)]
