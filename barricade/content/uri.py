"""URIs in message text: find them, normalise their hosts, reduce to registered domains.

Spam hides its links: percent-encoded host names, HTML entities (undone
by the HTML tokenizer before text gets here), internationalised names
(looked up as their ``xn--`` A-label, as DNS lists publish them), numeric
IPv4 forms (``http://3325256706/``), a user part before the host
(``http://bank.example@spam.example/``).  :func:`normalize_host` undoes
those so that a list is asked about the name a browser would visit.

Bare host names in plain text count too (``visit www.spam.example``), but
only when they start with ``www.`` or end in a top-level domain the Public
Suffix List knows: otherwise every ``file.txt`` and ``e.g.`` would be
taken for a host.  The registered domain (what ``uri-bl`` lists hold:
``spam.example.co.uk`` for ``www.spam.example.co.uk``) comes from the
``publicsuffixlist`` package, which ships the Public Suffix List and is
updated with it; a name under an unknown top-level domain is reduced to
its last two labels.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote

from publicsuffixlist import PublicSuffixList

from barricade.dns import hostname
from barricade.idn import to_ascii

#: Most distinct hosts one message may yield; later ones are counted, not kept.
MAX_HOSTS = 1000
#: Most distinct mail addresses one message may yield (mail-bl).
MAX_ADDRESSES = 200
#: Plain text is scanned up to its last white space; a "word" longer than this is scanned as it is.
MAX_CARRY = 4096

_SCHEMES = ("http", "https", "ftp", "ftps")
#: A URL with an authority: scheme, "://" (or its percent-encoded colon), then no white space or quotes.
_URL = re.compile(r"(?i)\b(?:https?|ftps?)(?::|%3a)//[^\s<>\"'`{}|\\^]+")
#: A mail address: a local part of at most 64 characters (RFC 5321), as a longer run tried
#: from each of its characters made a long word before a "@" cost its length squared.
_MAIL = re.compile(r"(?i)(?:mailto:)?[\w.!#$%&'*+/=?^`{|}~-]{1,64}@((?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+[^\W\d_]{2,63})")
#: A dot with a letter or digit after it: where a bare host name may be (cheap to find).
_DOT_WORD = re.compile(r"[.\u3002\uff0e\uff61][^\W_]")
#: What ends a bare host name in text.
_TOKEN_END = re.compile(r"[^\w.\u3002\uff0e\uff61-]")
_HOST_LIKE = re.compile(r"(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.){1,20}(?:[^\W\d_]{2,63}|xn--[a-z0-9-]{1,59})",
                        re.IGNORECASE)
_DOTS = re.compile("[\u3002\uff0e\uff61]")
#: One part of an IPv4 address as inet_aton and browsers read it: hex, octal or decimal.
_IPV4_PART = re.compile(r"0[xX][0-9a-fA-F]+|[0-9]+")


@lru_cache(maxsize=1)
def _psl() -> PublicSuffixList:
    return PublicSuffixList()


@lru_cache(maxsize=4096)
def registered_domain(host: str) -> str | None:
    """``www.spam.example.co.uk`` → ``spam.example.co.uk``; None for an IP or a public suffix."""
    if ":" in host or _is_ipv4(host):
        return None
    return _psl().privatesuffix(host)


@lru_cache(maxsize=4096)
def known_tld(host: str) -> bool:
    """Does the Public Suffix List know the host's top-level domain?"""
    return _psl().publicsuffix(host.rpartition(".")[2], accept_unknown=False) is not None


def sub_domains(host: str) -> list[str]:
    """The host and its parents down to the registered domain, longest first
    (``-uri-sub-domains`` asks them right to left: registered domain first)."""
    base = registered_domain(host)
    if base is None:
        return [host]
    out = [host]
    while out[-1] != base and "." in out[-1]:
        out.append(out[-1].split(".", 1)[1])
    return out


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def is_ip(host: str) -> bool:
    """Is this normalised host an IP address (IPv4 dotted or IPv6 without brackets)?"""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _numeric_ipv4(host: str) -> str | None:
    """``3325256706``, ``0xc6336402``, ``0306.0063.0144.02`` → the dotted IPv4 a browser visits."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values = []
    for part in parts:
        if not _IPV4_PART.fullmatch(part):  # int() also takes "-1", "+1", " 1" and "1_0"
            return None
        try:
            if part.lower().startswith("0x"):
                values.append(int(part, 16))
            elif len(part) > 1 and part.startswith("0"):
                values.append(int(part, 8))
            else:
                values.append(int(part, 10))
        except ValueError:
            return None
    # inet_aton: the last part fills the remaining bytes
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        return None
    number = 0
    for v in head:
        number = number << 8 | v
    number = number << (8 * (4 - len(head))) | last
    return str(ipaddress.IPv4Address(number))


@lru_cache(maxsize=8192)
def normalize_host(raw: str) -> str | None:
    """The host a browser would visit, lower case, IDN as A-labels; None when it is not one."""
    host = unquote(raw).strip().rstrip(".")
    if "@" in host:  # user info
        host = host.rpartition("@")[2]
    if host.startswith("["):
        inner = host[1:].partition("]")[0]
        try:
            return str(ipaddress.IPv6Address(inner))
        except ValueError:
            try:
                return str(ipaddress.IPv4Address(inner))
            except ValueError:
                return None
    host = host.rpartition(":")[0] if re.search(r":\d*$", host) else host
    host = _DOTS.sub(".", host).rstrip(".")
    if not host:
        return None
    if host[0].isdigit() or host.lower().startswith("0x"):
        numeric = _numeric_ipv4(host)
        if numeric is not None:
            return numeric
    if not host.isascii():
        host = to_ascii(host)  # as a browser reads it (UTS #46, non-transitional)
        if host is None:
            return None
    name = hostname(host)
    if name is None or "." not in name:
        return None
    return name


@dataclass(frozen=True)
class Found:
    """One host found in a message: the first URL (or address) that named it, and how.

    ``kind`` is ``url`` (scheme://host), ``host`` (a bare host name in
    text) or ``mail`` (a mail address's domain); the address heuristics
    (PTR, IP lists) apply to the first two only.
    """

    host: str
    url: str
    kind: str

    @property
    def ip(self) -> bool:
        return is_ip(self.host)


def url_host(url: str) -> str | None:
    """The host of ``scheme://[user@]host[:port]/...`` (any of our schemes), normalised."""
    scheme, sep, rest = url.partition(":")
    if not sep:
        return None
    rest = rest[3:] if rest.lower().startswith("%2f%2f") else rest
    rest = rest.lstrip("/\\")
    authority = re.split(r"[/?#\\]", rest, maxsplit=1)[0]
    return normalize_host(authority)


class UriCollector:
    """The distinct hosts a message names, in the order first seen (bounded).

    ``feed_text`` takes plain text in pieces (a URL cut between two pieces is
    kept whole); ``add_link`` takes an HTML attribute value.  ``count`` is
    every URI seen, repeats included (the per-message metric).
    """

    def __init__(self, max_hosts: int = MAX_HOSTS):
        self.max_hosts = max_hosts
        self.found: dict[str, Found] = {}
        self.addresses: dict[str, None] = {}  # mail addresses, lower case, in order
        self.count = 0
        self.dropped = 0
        self._carry = ""

    # --- input ---

    def feed_text(self, text: str) -> None:
        text = self._carry + text
        cut = max(text.rfind(" "), text.rfind("\n"), text.rfind("\t"))
        if cut < 0 and len(text) <= MAX_CARRY:
            self._carry = text
            return
        if cut < 0 or len(text) - cut > MAX_CARRY:
            cut = len(text)
        self._carry = text[cut:]
        self._scan(text[:cut])

    def flush(self) -> None:
        text, self._carry = self._carry, ""
        if text:
            self._scan(text)

    def add_link(self, value: str) -> None:
        """An href/src/action value: absolute URLs, ``//host/``, ``mailto:``, ``www.`` names."""
        value = value.strip()
        low = value.lower()
        if low.startswith("mailto:"):
            for m in _MAIL.finditer(value):
                self._add(m.group(1), m.group(0), "mail")
            return
        scheme = low.partition(":")[0]
        if scheme in _SCHEMES:
            host = url_host(value)
            if host is not None:
                self._add_host(host, value, "url")
            return
        if low.startswith("//"):
            host = url_host("http:" + value)
            if host is not None:
                self._add_host(host, value, "url")
            return
        if low.startswith("www."):
            host = normalize_host(re.split(r"[/?#]", value, maxsplit=1)[0])
            if host is not None:
                self._add_host(host, value, "host")

    def add_host(self, host: str, url: str, kind: str = "host") -> None:
        """A host name from elsewhere (a header's address, the HELO): normalised, then kept."""
        name = normalize_host(host)
        if name is not None:
            self._add_host(name, url, kind)

    # --- scanning ---

    def _scan(self, text: str) -> None:
        if "." not in text:
            return
        taken: list[tuple[int, int]] = []
        for m in _URL.finditer(text) if "//" in text or "%3" in text else ():
            taken.append(m.span())
            url = m.group(0).rstrip(".,;:!?)]}'\"")
            host = url_host(url)
            if host is not None:
                self._add_host(host, url, "url")
        if "@" in text:
            for m in _MAIL.finditer(text):
                if _inside(m.start(), taken):
                    continue
                taken.append(m.span())
                self._add(m.group(1), m.group(0), "mail")
        done = 0
        for m in _DOT_WORD.finditer(text):
            if m.start() < done:
                continue
            start = m.start()
            while start > 0 and start > m.start() - 256 and not _TOKEN_END.match(text, start - 1):
                start -= 1
            end_match = _TOKEN_END.search(text, m.end())
            end = end_match.start() if end_match else len(text)
            done = end
            before = text[start - 1] if start else " "
            if before in "@:/%" or (end < len(text) and text[end] == "@") or _inside(start, taken):
                continue
            raw = _DOTS.sub(".", text[start:end]).strip(".-")
            if not _HOST_LIKE.fullmatch(raw):
                continue
            host = normalize_host(raw)
            if host is None or is_ip(host):
                continue
            if host.startswith("www.") or known_tld(host):
                self._add_host(host, raw, "host")

    def _add(self, domain: str, url: str, kind: str) -> None:
        if kind == "mail" and len(self.addresses) < MAX_ADDRESSES:
            address = url[7:] if url[:7].lower() == "mailto:" else url
            self.addresses[address.lower()] = None
        host = normalize_host(domain)
        if host is not None:
            self._add_host(host, url, kind)

    def _add_host(self, host: str, url: str, kind: str) -> None:
        self.count += 1
        if host in self.found:
            return
        if len(self.found) >= self.max_hosts:
            self.dropped += 1
            return
        self.found[host] = Found(host, url[:200], kind)

    def __iter__(self) -> Iterator[Found]:
        return iter(self.found.values())

    def __len__(self) -> int:
        return len(self.found)


def _inside(pos: int, spans: list[tuple[int, int]]) -> bool:
    return any(a <= pos < b for a, b in spans)


def hosts_in(text: str) -> list[Found]:
    """Every distinct host one piece of text names (headers, tests)."""
    collector = UriCollector()
    collector.feed_text(text)
    collector.flush()
    return list(collector)
