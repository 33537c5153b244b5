"""smtpf's access map: black and white lists for the envelope.

The map is smtpf's ``key value`` text source (docs/smtpf.md, "Access map").
:class:`AccessMap` parses the values of the black/white-list tags
(``Connect:``, ``Helo:``, ``From:``, ``To:``, the combos
``Connect:…:From:…``, ``Connect:…:To:…``, ``From:…:To:…``, and ``Body:``)
into pattern lists and actions when the file is loaded, so a bad line is
reported with its file and line number at start-up or reload, and a failed
reload keeps the previous map (:meth:`KeyValueMap.derive`).  Other tags
(``Spamd:``, ``Rate-Connect:`` ...) stay plain values for their checks.

A value is an optional list of ``pattern action`` pairs and a default
action: ``[net/cidr]ACTION`` (IP lookups only), ``!glob!ACTION`` (``*``,
``?``, ``[a-z]`` / ``[^...]`` sets, ``\\`` escapes, anchored,
case-insensitive) and ``/ERE/ACTION``.  Regular expressions run on RE2
(``google-re2``), not Python's ``re``: they are matched against what the
client sends (HELO, MAIL, RCPT), and a backtracking engine lets one
pattern such as ``/^([a-z0-9]+\\.?)+@example\\.com$/`` hold the worker for
seconds on a 30-character address (doubling with each character).  RE2
runs in time linear in the text, and takes the POSIX ERE smtpf's maps
use, ``[[:alpha:]]`` classes included; what POSIX regcomp takes and RE2
does not (back-references) is refused at load, naming the line.  An empty
action after a pattern is SKIP.  An action word may carry a quoted
argument: ``REJECT:"go away"`` keeps the reply's code, status and id and
uses the operator's words in place of "black listed", as smtpf does.

Lookups go from the most specific key to the least and stop at the first
key whose value gives a result.  ``NEXT``, and a pattern list where no
pattern matched and there is no default, resume at the next key; ``SKIP``
(``DUNNO``) stops with no result.

The checks below apply the results in smtpf's filter order (section 8):
connect (``Connect:``), helo (``Helo:``), mail (``Connect:From:`` then
``From:``), rcpt (``Connect:To:``, ``From:To:``, then ``To:``) and the
message phases (DISCARD and PROTOCOL).  The SPF words on ``From:`` and
``Connect:From:`` white-list the sender only when the MAIL FROM identity's
SPF result (:mod:`barricade.policy.spf`, computed on demand when
``spf-mail-policy`` is empty) is Pass (``SPF-PASS``, ``POLICY-PASS``) or
Pass or None (``POLICY-OK``); otherwise the lookup stops there with no
result, as in smtpf.  REJECT and TEMPFAIL verdicts carry the DELAY flag for
``smtp-delay-checks``, IREJECT does not.

Like DISCARD, the words that act on the message are noted when the entry
is found (for the session on ``Connect:``/``Helo:``, else for the
transaction) and applied to the whole message, whatever recipient asked:

* ``TAG`` stands for the refusal the entry would give (REJECT's reply):
  the message is delivered with the Subject tagged (``spamd-subject-tag``)
  and ``X-Spam-Flag: YES`` / ``X-Spam-Reason: <that reply's text>``, added
  at the end of the headers (:mod:`barricade.policy.tagging`, shared with
  SPF's ``*-tag``), so cut-through delivery still works.
* ``SAVE[:"dir"]`` keeps a copy in ``save-dir`` (or dir) and delivers;
  ``TRAP[:"dir"]`` keeps it in ``trap-dir`` (or dir), closes the downstream
  connections before the final dot, as DISCARD does, and answers
  ``550 5.7.0 this message was blocked`` (#932).  The copy is written while
  the message streams (no spooling needed), as the client sent it: its
  header block and body, CRLF line ends, dots unstuffed, without
  Barricade's Received: or added headers.  It is one file per message,
  ``<queue id>.msg``, made visible only at the dot (a transfer that is cut
  off leaves nothing).  A copy that cannot be written is logged; the
  message is still delivered (SAVE) or refused (TRAP).
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import re2
from twisted.logger import Logger

from barricade.client import normal_ip
from barricade.maps import (
    KeyValueMap,
    MapError,
    client_keys,
    comment_hint,
    domain_keys,
    ip_keys,
    line_number,
    mail_keys,
    raise_problems,
)
from barricade.options import Config
from barricade.policy.pipeline import Check, Context, immediate
from barricade.policy.tagging import subject_tag, tag_message
from barricade.policy.verdict import (
    CONTINUE,
    DISCARD_NOTE,
    SESSION_DISCARD_NOTE,
    Action,
    Flag,
    Verdict,
    discarding,
)
from barricade.replies import ReplyId

log = Logger()

# --- action words and where smtpf allows them (smtpf +access-word-tags) ----------

CONNECT, HELO, FROM, TO = "connect", "helo", "from", "to"
CONNECT_FROM, CONNECT_TO, FROM_TO, BODY = "connect:from", "connect:to", "from:to", "body"
COMBOS = (CONNECT_FROM, CONNECT_TO, FROM_TO)
FAMILIES = (CONNECT, HELO, FROM, TO, *COMBOS, BODY)

_ENVELOPE = (CONNECT, HELO, FROM, TO, *COMBOS)
WORD_FAMILIES: dict[str, tuple[str, ...]] = {
    "OK": FAMILIES,
    "OK+AV": _ENVELOPE,
    "CONTENT": (CONNECT, HELO),
    "PROTOCOL": (CONNECT, FROM, TO, *COMBOS),
    "DISCARD": _ENVELOPE,
    "REJECT": FAMILIES,
    "IREJECT": (CONNECT, HELO, FROM, CONNECT_FROM),
    "TEMPFAIL": _ENVELOPE,
    "SAVE": FAMILIES,
    "TRAP": FAMILIES,
    "TAG": _ENVELOPE,
    "SPF-PASS": (FROM, CONNECT_FROM),
    "POLICY-PASS": (FROM, CONNECT_FROM),
    "POLICY-OK": (FROM, CONNECT_FROM),
    "SKIP": FAMILIES,
    "DUNNO": FAMILIES,
    "NEXT": FAMILIES,
}
#: White-list words that depend on the sender's SPF result, and the results that white-list.
SPF_WORDS = {"SPF-PASS": ("pass",), "POLICY-PASS": ("pass",), "POLICY-OK": ("pass", "none")}


@dataclass(frozen=True)
class AccessAction:
    """One action word with its optional argument (reply text, log text, path)."""

    word: str
    text: str | None = None


@dataclass(frozen=True)
class Pattern:
    kind: str  # "cidr", "glob" or "regex"
    source: str
    match: Callable[[str], bool]
    action: AccessAction


@dataclass(frozen=True)
class AccessValue:
    """A parsed right-hand side: patterns tried in order, then the default."""

    patterns: tuple[Pattern, ...]
    default: AccessAction | None

    def evaluate(self, hays: Iterable[str]) -> AccessAction | None:
        """The action for the first pattern matching any hay, else the default."""
        for hay in hays:
            for pattern in self.patterns:
                if pattern.match(hay):
                    return pattern.action
        return self.default


@dataclass(frozen=True)
class AccessHit:
    """A lookup result: the key that decided, and its action."""

    key: str
    action: AccessAction

    @property
    def word(self) -> str:
        return self.action.word


# --- parsing ------------------------------------------------------------------------

_TOKEN = re.compile(r'(?:"[^"]*"|[^\s"]+|")+')


def family_of(key: str) -> str | None:
    """Which black/white-list family a (lower-case) key belongs to, if any."""
    tag, colon, rest = key.partition(":")
    if not colon:
        return None
    if tag == CONNECT:
        if ":from:" in rest:
            return CONNECT_FROM
        if ":to:" in rest:
            return CONNECT_TO
        return CONNECT
    if tag == FROM:
        return FROM_TO if ":to:" in rest else FROM
    if tag in (HELO, TO, BODY):
        return tag
    return None


def parse_action(token: str, family: str) -> AccessAction:
    """``WORD`` or ``WORD:"text"``; words are matched case-insensitively."""
    word, colon, arg = token.partition(":")
    word = word.upper()
    if word not in WORD_FAMILIES:
        raise MapError(f"unknown action {token!r}")
    if family not in WORD_FAMILIES[word]:
        raise MapError(f"action {word} is not allowed on {family.title()}: entries")
    if not colon:
        return AccessAction(word)
    if len(arg) >= 2 and arg[0] == arg[-1] == '"':
        arg = arg[1:-1]
    return AccessAction(word, arg)


def _split_pattern(token: str, close: str) -> tuple[str, str]:
    """``<open>body<close>action`` → (body, action); a backslash escapes ``close``."""
    i = 1
    while True:
        i = token.find(close, i)
        if i < 0:
            raise MapError(f"pattern {token!r} has no closing {close!r}")
        if token[i - 1] != "\\":
            return token[1:i], token[i + 1:]
        i += 1


def glob_regex(glob: str) -> re.Pattern[str]:
    """smtpf's TextMatch: ``*`` any run, ``?`` one character, ``[...]`` one of a
    set (``[^...]`` or ``[!...]``: none of it), ``\\x`` literal x."""
    out, i = [], 0
    while i < len(glob):
        c = glob[i]
        if c == "\\" and i + 1 < len(glob):
            out.append(re.escape(glob[i + 1]))
            i += 2
            continue
        if c == "[":
            end = glob.find("]", i + 2)  # a "]" first in the set is one of its members
            if end > 0:
                body = glob[i + 1 : end]
                negate = body[:1] in ("^", "!")
                body = body[1:] if negate else body
                members = "".join("\\" + ch if ch in "\\[]^" else ch for ch in body)
                out.append(f"[{'^' if negate else ''}{members}]")
                i = end + 1
                continue
        out.append(".*" if c == "*" else "." if c == "?" else re.escape(c))
        i += 1
    try:
        return re.compile("".join(out), re.IGNORECASE | re.DOTALL)
    except re.error as exc:  # a set such as [z-a]
        raise MapError(f"bad glob !{glob}!: {exc}") from None


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # the error is ours to report, with the line


def ere(body: str) -> Callable[[str], object]:
    """The search function of ``/body/``; raises :class:`MapError`."""
    try:
        return re2.compile(body, _RE2_OPTIONS).search
    except re2.error as exc:
        why = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else exc
        raise MapError(f"bad regular expression /{body}/: {why}") from None


_ip = normal_ip


def _cidr_matcher(body: str) -> Callable[[str], bool]:
    try:
        net = ipaddress.ip_network(body.replace("\\", ""), strict=False)
    except ValueError:
        raise MapError(f"bad network [{body}]") from None

    def match(hay: str) -> bool:
        addr = _ip(hay)
        return addr is not None and addr.version == net.version and addr in net

    return match


def _pattern(token: str, family: str) -> Pattern:
    kind, close = {"!": ("glob", "!"), "[": ("cidr", "]"), "/": ("regex", "/")}[token[0]]
    body, action_text = _split_pattern(token, close)
    action = parse_action(action_text, family) if action_text else AccessAction("SKIP")
    if kind == "cidr":
        matcher = _cidr_matcher(body)
    elif kind == "glob":
        matcher = glob_regex(body).fullmatch
    else:
        matcher = ere(body)
    return Pattern(kind, body, lambda hay, m=matcher: bool(m(hay)), action)


def parse_value(value: str, family: str) -> AccessValue:
    """Parse one right-hand side; raises :class:`MapError` (without the line)."""
    tokens = _TOKEN.findall(value)
    patterns: list[Pattern] = []
    for n, token in enumerate(tokens):
        if token[0] in "![/":
            patterns.append(_pattern(token, family))
            continue
        if n != len(tokens) - 1:
            raise MapError(f"text after the default action {token!r}: {' '.join(tokens[n + 1:])!r}")
        return AccessValue(tuple(patterns), parse_action(token, family))
    if not patterns:
        raise MapError("empty value")
    return AccessValue(tuple(patterns), None)


# --- the map --------------------------------------------------------------------------


class AccessMap(KeyValueMap):
    """The access map, with parsed black/white-list values and smtpf's lookups."""

    def __init__(self, location: str, literal_plus: bool = False,
                 clock: Callable[[], float] = time.monotonic):
        self.literal_plus = literal_plus
        self._values: dict[str, AccessValue] = {}
        # The families the map has keys of: a lookup in a family without any is skipped
        # without building its keys (a client-and-sender pair makes dozens).
        self._families: frozenset[str] = frozenset()
        super().__init__(location, clock)

    def derive(self, entries: dict[str, str], lines: dict[str, int]) -> Callable[[], None]:
        from barricade.policy.map_values import value_problems

        values: dict[str, AccessValue] = {}
        problems = []
        for key, value in entries.items():
            family = family_of(key)
            if family is None:
                continue
            try:
                values[key] = parse_value(value, family)
            except MapError as exc:
                problems.append(f"{self.path}:{lines.get(key, '?')}: {key}: {exc}{comment_hint(value)}")
        if problems:
            problems.sort(key=line_number)
            raise_problems(self.path, problems)
        ignored = value_problems(entries, lines, str(self.path))

        families = frozenset(family_of(key) for key in values)

        def commit() -> None:
            self._values = values
            self._families = families
            if ignored:  # reported once per load, not at every lookup
                log.warn("access map: {n} value(s) ignored: {problems}", n=len(ignored),
                         problems="; ".join(ignored))

        return commit

    # --- lookup machinery -----------------------------------------------------------

    def _has(self, *families: str) -> bool:
        """Up to date, does the map have keys of any of these families?

        Every key a lookup builds falls in a family (:func:`family_of`) known
        before it is built: when the map has no key of that family, no key
        can match.  (A ``from:`` address with ``:to:`` in it falls in FROM_TO,
        a ``to:`` one with ``:from:`` in CONNECT_FROM: those lookups name both.)
        """
        self.refresh()
        return not self._families.isdisjoint(families)

    def _lookup(self, keys: Iterable[str], hays: Iterable[str]) -> AccessHit | None:
        """The first key whose value gives an action (NEXT resumes, SKIP stops); the
        map is refreshed by the :meth:`_has` before it."""
        hays = [h for h in hays if h]
        for key in keys:
            key = key.lower()
            value = self._values.get(key)
            if value is None:
                continue
            action = value.evaluate(hays)
            if action is None or action.word == "NEXT":
                continue
            if action.word in ("SKIP", "DUNNO"):
                return None
            return AccessHit(key, action)
        return None

    def _mail(self, tag: str, address: str, bare: bool = True) -> Iterator[str]:
        return mail_keys(tag, address, bare=bare, literal_plus=self.literal_plus)

    # --- the lookups of each tag ----------------------------------------------------

    def connect(self, ip: str, name: str | None) -> AccessHit | None:
        """``Connect:``: IP prefixes, ``[ip]``, the PTR name's domains, the bare tag."""
        if not self._has(CONNECT):
            return None
        return self._lookup(client_keys(CONNECT, ip, name), (name or "", ip))

    def helo(self, argument: str) -> AccessHit | None:
        """``Helo:``: an address literal as an IP, else as a domain; then the bare tag."""
        if not self._has(HELO):
            return None
        addr = _ip(argument) if argument.startswith("[") else None
        if addr is not None:
            keys = [*ip_keys(HELO, str(addr)), f"{HELO}:{argument}", f"{HELO}:"]
            return self._lookup(keys, (str(addr),))
        return self._lookup(domain_keys(HELO, argument), (argument,))

    def sender(self, address: str) -> AccessHit | None:
        if not self._has(FROM, FROM_TO):
            return None
        return self._lookup(self._mail(FROM, address), (address,))

    def recipient(self, address: str) -> AccessHit | None:
        if not self._has(TO):
            return None
        return self._lookup(self._mail(TO, address), (address,))

    def _client_combo(self, ip: str, name: str | None, tag: str, address: str) -> Iterator[str]:
        """``connect:<ip-variant>:<tag>:<mail-variant>``, every pair, IP variants first."""
        for client in client_keys(CONNECT, ip, name, bare=False):
            for mail in self._mail(tag, address, bare=False):
                yield f"{client}:{mail}"

    def connect_sender(self, ip: str, name: str | None, address: str) -> AccessHit | None:
        if not self._has(CONNECT_FROM):
            return None
        return self._lookup(self._client_combo(ip, name, FROM, address), (address,))

    def connect_recipient(self, ip: str, name: str | None, address: str) -> AccessHit | None:
        if not self._has(CONNECT_TO, CONNECT_FROM):
            return None
        return self._lookup(self._client_combo(ip, name, TO, address), (address,))

    def sender_recipient(self, sender: str, rcpt: str) -> AccessHit | None:
        if not self._has(FROM_TO):
            return None
        keys = (f"{s}:{r}" for s in self._mail(FROM, sender, bare=False)
                for r in self._mail(TO, rcpt, bare=False))
        return self._lookup(keys, (rcpt,))

    def body(self, item: str) -> AccessHit | None:
        """``Body:`` for the content checks: an IP, a mail address or a domain (no default)."""
        if not self._has(BODY):
            return None
        if _ip(item) is not None:
            return self._lookup(ip_keys(BODY, str(_ip(item))), (item,))
        if "@" in item:
            return self._lookup(self._mail(BODY, item, bare=False), (item,))
        return self._lookup(domain_keys(BODY, item, bare=False), (item,))


# --- the checks -----------------------------------------------------------------------

SESSION_DISCARD = SESSION_DISCARD_NOTE
SESSION_PROTOCOL = "session.access.protocol"
SESSION_WHITE_AV = "session.access.white-av"
SESSION_CONTENT = "session.access.content"
DISCARD = DISCARD_NOTE
PROTOCOL = "access.protocol"
#: TAG: the X-Spam-Reason text; SAVE/TRAP: a list of (word, directory or None).
SESSION_TAG = "session.access.tag"
TAG = "access.tag"
SESSION_COPIES = "session.access.copies"
COPIES = "access.copies"
_COPY = "access.copy"  # the open copy of the message: (temp file or None, targets)
#: smtpf's "550 5.7.0 this message was blocked" (TRAP).
TRAPPED = ReplyId.MESSAGE_TRAPPED
#: Whether the map had an entry for the client, the sender, the recipient
#: (set by each lookup): smtpf tests reserved and unknown-TLD domains only
#: when it had none (``barricade.policy.client``, ``mail``, ``rcpt``).
CONNECT_HIT = "session.access.connect-hit"
MAIL_HIT = "access.mail-hit"
RCPT_HIT = "access.rcpt-hit"

#: The fixed start of each reply, before smtpf's "black listed" / "temporary
#: failure", so that a custom ``REJECT:"text"`` reads as smtpf's would.
PREFIX = {
    ReplyId.CLIENT_BLACK_LISTED: "host {client_name} [{client_ip}]",
    ReplyId.CLIENT_TEMPFAIL: "host {client_name} [{client_ip}]",
    ReplyId.CLIENT_BLACK_LISTED_CLOSE: "host {client_name} [{client_ip}]",
    ReplyId.HELO_BLACK_LISTED: "HELO {helo}",
    ReplyId.HELO_TEMPFAIL: "HELO {helo}",
    ReplyId.CLIENT_SENDER_BLACK_LISTED: "host {client_name} [{client_ip}] sender <{sender}>",
    ReplyId.CLIENT_SENDER_TEMPFAIL: "host {client_name} [{client_ip}] sender <{sender}>",
    ReplyId.CLIENT_SENDER_BLACK_LISTED_NOW: "host {client_name} [{client_ip}] sender <{sender}>",
    ReplyId.SENDER_BLACK_LISTED: "sender <{sender}>",
    ReplyId.SENDER_TEMPFAIL: "sender <{sender}>",
    ReplyId.SENDER_BLACK_LISTED_NOW: "sender <{sender}>",
    ReplyId.CLIENT_RECIPIENT_BLACK_LISTED: "host {client_name} [{client_ip}] recipient <{rcpt}>",
    ReplyId.CLIENT_RECIPIENT_TEMPFAIL: "host {client_name} [{client_ip}] recipient <{rcpt}>",
    ReplyId.SENDER_RECIPIENT_BLACK_LISTED: "sender <{sender}> recipient <{rcpt}>",
    ReplyId.SENDER_RECIPIENT_TEMPFAIL: "sender <{sender}> recipient <{rcpt}>",
    ReplyId.RECIPIENT_BLACK_LISTED: "recipient <{rcpt}>",
    ReplyId.RECIPIENT_TEMPFAIL: "recipient <{rcpt}>",
}


@dataclass(frozen=True)
class Replies:
    """The reply ids of one tag for REJECT, IREJECT and TEMPFAIL."""

    reject: ReplyId
    ireject: ReplyId
    tempfail: ReplyId


class AccessCheck(Check):
    """Common handling of one lookup's result."""

    name = "access"
    tag = ""

    def __init__(self, access_map: AccessMap):
        self.map = access_map

    def apply(self, ctx: Context, hit: AccessHit | None, replies: Replies, *, drop: bool = False,
              session: bool = False, rcpt: str = "") -> Verdict:
        """Turn a hit into a verdict; ``drop`` for connect/HELO, ``session`` for their notes."""
        if hit is None:
            return CONTINUE
        word, text = hit.word, hit.action.text
        log.info("session {sid}: access {tag} {key} -> {word}{text}", sid=ctx.session_id,
                 tag=self.tag, key=hit.key, word=word, text=f':"{text}"' if text else "")
        if word == "OK":
            return Verdict(Action.ACCEPT)
        if word == "OK+AV":
            ctx.white_av = True
            if session:
                ctx.notes[SESSION_WHITE_AV] = True
            return Verdict(Action.ACCEPT)
        if word == "CONTENT":
            ctx.notes[SESSION_CONTENT] = True  # CONTENT is allowed on Connect:/Helo: only
            return Verdict(Action.CONTENT)
        if word == "DISCARD":
            ctx.notes[SESSION_DISCARD if session else DISCARD] = True
            return CONTINUE
        if word == "PROTOCOL":
            ctx.notes[SESSION_PROTOCOL if session else PROTOCOL] = True
            return CONTINUE
        if word == "TAG":  # the refusal this entry stands for becomes the X-Spam-Reason
            reason = self.fields(ctx, replies.reject, text or "black listed", rcpt)["custom_text"]
            ctx.notes.setdefault(SESSION_TAG if session else TAG, reason)
            return CONTINUE
        if word in ("SAVE", "TRAP"):
            ctx.notes.setdefault(SESSION_COPIES if session else COPIES, []).append((word, text))
            return CONTINUE
        rid, action, flags = {
            "REJECT": (replies.reject, Action.REJECT, Flag.DELAY),
            "IREJECT": (replies.ireject, Action.IREJECT, Flag.NONE),
            "TEMPFAIL": (replies.tempfail, Action.TEMPFAIL, Flag.DELAY),
        }[word]
        if drop:  # connect and HELO: reply, then close, as smtpf does
            action = Action.DROP
            if flags:
                flags |= Flag.SESSION
        return Verdict(action, rid, self.fields(ctx, rid, text, rcpt), flags)

    @staticmethod
    def fields(ctx: Context, rid: int, text: str | None, rcpt: str) -> dict[str, object]:
        if text is None:
            return {}
        prefix = PREFIX[rid].format(client_name=ctx.client.name, client_ip=ctx.client.ip,
                                    helo=ctx.helo, sender=ctx.sender or "", rcpt=rcpt)
        return {"custom_text": f"{prefix} {text}"}

    @staticmethod
    def client_name(ctx: Context) -> str | None:
        name = ctx.client.name
        return None if not name or name == "unknown" else name


class AccessConnect(AccessCheck):
    """``Connect:``: REJECT drops the connection (#120), OK white-lists the session."""

    name = "access-connect"
    tag = "Connect:"
    replies = Replies(ReplyId.CLIENT_BLACK_LISTED, ReplyId.CLIENT_BLACK_LISTED_CLOSE, ReplyId.CLIENT_TEMPFAIL)

    @immediate
    def connect(self, ctx: Context) -> Verdict:
        hit = self.map.connect(ctx.client.ip, self.client_name(ctx))
        ctx.notes[CONNECT_HIT] = hit is not None
        return self.apply(ctx, hit, self.replies, drop=True, session=True)


class AccessHelo(AccessCheck):
    """``Helo:``: as Connect:, for the HELO/EHLO argument (#924, as smtpf 2.6 numbers it)."""

    name = "access-helo"
    tag = "Helo:"
    replies = Replies(ReplyId.HELO_BLACK_LISTED, ReplyId.HELO_BLACK_LISTED, ReplyId.HELO_TEMPFAIL)

    @immediate
    def helo(self, ctx: Context) -> Verdict:
        if not ctx.helo:
            return CONTINUE
        return self.apply(ctx, self.map.helo(ctx.helo), self.replies, drop=True, session=True)


class AccessMail(AccessCheck):
    """``Connect:From:`` (#125), else ``From:`` (#127); the SPF words need ``spf``
    (a :class:`barricade.policy.spf.Spf`; without one they never white-list)."""

    name = "access-mail"
    tag = "From:"
    combo = Replies(ReplyId.CLIENT_SENDER_BLACK_LISTED, ReplyId.CLIENT_SENDER_BLACK_LISTED_NOW,
                    ReplyId.CLIENT_SENDER_TEMPFAIL)
    replies = Replies(ReplyId.SENDER_BLACK_LISTED, ReplyId.SENDER_BLACK_LISTED_NOW, ReplyId.SENDER_TEMPFAIL)

    def __init__(self, access_map: AccessMap, spf: Any = None):
        super().__init__(access_map)
        self.spf = spf
        if spf is not None:  # an SPF word may make this check evaluate SPF itself
            self.timeout = spf.timeout

    async def mail(self, ctx: Context) -> Verdict:
        sender = ctx.sender or ""
        hit = self.map.connect_sender(ctx.client.ip, self.client_name(ctx), sender) if sender else None
        ctx.notes[MAIL_HIT] = hit is not None
        replies = self.combo
        if hit is None:
            hit = self.map.sender(sender)
            ctx.notes[MAIL_HIT] = hit is not None
            replies = self.replies
        if hit is not None and hit.word in SPF_WORDS:
            return await self.spf_word(ctx, hit)
        return self.apply(ctx, hit, replies)

    async def spf_word(self, ctx: Context, hit: AccessHit) -> Verdict:
        """SPF-PASS, POLICY-PASS, POLICY-OK: OK when the sender's SPF result allows it."""
        result = await self.spf.mail_result(ctx) if self.spf is not None else None
        spf = result.result if result is not None else "not checked"
        white = result is not None and spf in SPF_WORDS[hit.word]
        log.info("session {sid}: access {tag} {key} -> {word}: SPF {spf}: {what}", sid=ctx.session_id,
                 tag=self.tag, key=hit.key, word=hit.word, spf=spf,
                 what="white listed" if white else "no result, continuing")
        return Verdict(Action.ACCEPT) if white else CONTINUE


class AccessRcpt(AccessCheck):
    """``Connect:To:`` (#135), else ``From:To:`` (#137), else ``To:`` (#139)."""

    name = "access-rcpt"
    tag = "To:"
    connect_to = Replies(ReplyId.CLIENT_RECIPIENT_BLACK_LISTED, ReplyId.CLIENT_RECIPIENT_BLACK_LISTED,
                         ReplyId.CLIENT_RECIPIENT_TEMPFAIL)
    from_to = Replies(ReplyId.SENDER_RECIPIENT_BLACK_LISTED, ReplyId.SENDER_RECIPIENT_BLACK_LISTED,
                      ReplyId.SENDER_RECIPIENT_TEMPFAIL)
    replies = Replies(ReplyId.RECIPIENT_BLACK_LISTED, ReplyId.RECIPIENT_BLACK_LISTED,
                      ReplyId.RECIPIENT_TEMPFAIL)

    @immediate
    def rcpt(self, ctx: Context, rcpt: str) -> Verdict:
        ctx.notes[RCPT_HIT] = True
        hit = self.map.connect_recipient(ctx.client.ip, self.client_name(ctx), rcpt)
        if hit is not None:
            return self.apply(ctx, hit, self.connect_to, rcpt=rcpt)
        if ctx.sender:
            hit = self.map.sender_recipient(ctx.sender, rcpt)
            if hit is not None:
                return self.apply(ctx, hit, self.from_to, rcpt=rcpt)
        hit = self.map.recipient(rcpt)
        ctx.notes[RCPT_HIT] = hit is not None
        return self.apply(ctx, hit, self.replies, rcpt=rcpt)


class AccessMessage(AccessCheck):
    """The message phases: PROTOCOL white-lists the content, TAG tags the message at the
    end of the headers, DISCARD drops it at the dot."""

    name = "access-message"

    def __init__(self, access_map: AccessMap, subject_tag: str = "[SPAM]"):
        super().__init__(access_map)
        self.subject_tag = subject_tag

    @immediate
    def headers(self, ctx: Context) -> Verdict:
        reason = ctx.notes.get(SESSION_TAG) or ctx.notes.get(TAG)
        if reason and tag_message(ctx, self.subject_tag, reason):
            log.info("session {sid}: message {qid} tagged (access map TAG): {reason}",
                     sid=ctx.session_id, qid=ctx.qid, reason=reason)
        return CONTINUE

    @immediate
    def data(self, ctx: Context) -> Verdict:
        if self._discard(ctx):
            return CONTINUE
        if ctx.notes.get(SESSION_PROTOCOL) or ctx.notes.get(PROTOCOL):
            return Verdict(Action.ACCEPT)  # content checks skipped, anti-virus still runs
        return CONTINUE

    @immediate
    def end_of_data(self, ctx: Context) -> Verdict:
        if self._discard(ctx):
            log.info("session {sid}: message {qid} discarded (access map DISCARD)",
                     sid=ctx.session_id, qid=ctx.qid)
            return Verdict(Action.DISCARD)
        return CONTINUE

    @staticmethod
    def _discard(ctx: Context) -> bool:
        return discarding(ctx)


class AccessCopy(AccessCheck):
    """SAVE and TRAP: copy the message as it streams, file it at the dot, refuse a TRAP.

    Marked ``always``: a copy asked for is kept even when a later entry
    white-lists the transaction, and a trapped message is never delivered.
    """

    name = "access-copy"
    always = True

    def __init__(self, access_map: AccessMap, save_dir: str, trap_dir: str):
        super().__init__(access_map)
        self.dirs = {"SAVE": save_dir, "TRAP": trap_dir}

    def targets(self, ctx: Context) -> list[tuple[str, str]]:
        """(word, directory) pairs asked for this message, without repeats."""
        asked = [*ctx.notes.get(SESSION_COPIES, ()), *ctx.notes.get(COPIES, ())]
        out = [(word, path or self.dirs[word]) for word, path in asked]
        return list(dict.fromkeys(out))

    @immediate
    def headers(self, ctx: Context) -> Verdict:
        targets = self.targets(ctx)
        if not targets:
            return CONTINUE
        copy = None
        try:
            copy = tempfile.NamedTemporaryFile(prefix=f".{ctx.qid}-", suffix=".tmp", dir=targets[0][1])
            copy.write(ctx.header_block)
        except OSError as exc:
            log.error("session {sid}: message {qid}: cannot write the access-map copy in {dir}: {err}",
                      sid=ctx.session_id, qid=ctx.qid, dir=targets[0][1], err=str(exc))
            copy = None
        ctx.notes[_COPY] = (copy, targets)
        return CONTINUE

    @immediate
    def body(self, ctx: Context, chunk: bytes) -> Verdict:
        copy = ctx.notes.get(_COPY)
        if copy is not None and copy[0] is not None:
            try:
                copy[0].write(chunk)
            except OSError as exc:
                log.error("session {sid}: message {qid}: access-map copy failed: {err}",
                          sid=ctx.session_id, qid=ctx.qid, err=str(exc))
                copy[0].close()
                ctx.notes[_COPY] = (None, copy[1])
        return CONTINUE

    @immediate
    def end_of_data(self, ctx: Context) -> Verdict:
        copy = ctx.notes.pop(_COPY, None)
        if copy is None:
            return CONTINUE
        temp, targets = copy
        if temp is not None:
            try:
                temp.flush()
                for word, directory in targets:
                    self.file(ctx, temp.name, word, directory)
            finally:
                temp.close()  # removes the temp file
        if any(word == "TRAP" for word, _ in targets):
            log.info("session {sid}: message {qid} trapped (access map TRAP)",
                     sid=ctx.session_id, qid=ctx.qid)
            return Verdict(Action.REJECT, TRAPPED)
        return CONTINUE

    @staticmethod
    def file(ctx: Context, temp: str, word: str, directory: str) -> None:
        """Give the finished copy its name, ``<directory>/<qid>.msg``."""
        final = os.path.join(directory, f"{ctx.qid}.msg")
        try:
            try:
                os.link(temp, final)
            except OSError:  # another file system, or the name is taken
                shutil.copyfile(temp, final)
        except OSError as exc:
            log.error("session {sid}: message {qid}: cannot {word} to {path}: {err}",
                      sid=ctx.session_id, qid=ctx.qid, word=word, path=final, err=str(exc))
            return
        log.info("session {sid}: message {qid}: {word} copy in {path}",
                 sid=ctx.session_id, qid=ctx.qid, word=word, path=final)


class AccessSessionState(AccessCheck):
    """Carry a ``Connect:``/``Helo:`` OK+AV or CONTENT over to every transaction.

    :meth:`Context.reset_transaction` clears ``white_av`` and
    ``white_envelope`` at each MAIL.  This check runs first in the mail
    phase and sets them again; it is marked anti-virus so that it still runs
    in a white-listed session, before any scanner looks at ``white_av``.
    """

    name = "access-session"
    antivirus = True

    @immediate
    def mail(self, ctx: Context) -> Verdict:
        if ctx.notes.get(SESSION_WHITE_AV):
            ctx.white_av = True
        if ctx.notes.get(SESSION_CONTENT):
            ctx.white_envelope = True
        return CONTINUE


def access_checks(config: Config, access_map: AccessMap | None, spf: Any = None) -> list[Check]:
    """The access-map checks, in smtpf's order, or none without a map (``spf``: the SPF
    engine the SPF words ask)."""
    if access_map is None:
        return []
    return [AccessConnect(access_map), AccessHelo(access_map), AccessSessionState(access_map),
            AccessMail(access_map, spf), AccessRcpt(access_map),
            AccessCopy(access_map, config["save-dir"], config["trap-dir"]),
            AccessMessage(access_map, subject_tag(config))]


def access_maps(checks: Iterable[Check]) -> list[AccessMap]:
    """The distinct access maps the pipeline's checks use (for SIGHUP)."""
    found: dict[int, AccessMap] = {}
    for check in checks:
        if isinstance(check, AccessCheck):
            found.setdefault(id(check.map), check.map)
    return list(found.values())
