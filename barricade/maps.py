"""smtpf's key-value maps: text source, lookup order, route-map entries.

A map file is smtpf's source format: ``key<whitespace>value`` per line,
``#`` comment lines, keys case-insensitive, values case-sensitive.  The map
location may be written ``text!/path`` or just ``/path``.

Lookups try the most specific key first and stop at the first hit
(docs/smtpf.md, "Access map"): IPv4 addresses drop one octet at a time, IPv6
addresses (full uncompressed form) one 16-bit word at a time, domains one
label at a time, mail addresses go address, domain, parent domains,
``local@``.  The bare tag (``route:``) is the site default.

Maps reload themselves when the file changes (checked at most every
``CHECK_INTERVAL`` seconds) and on :meth:`KeyValueMap.reload`, which the
service calls on SIGHUP.  A reload that fails keeps the old contents and
logs why, once per change of the file (not at every lookup), naming every
bad line.  ``#`` starts a comment only at the start of a line, as in smtpf:
a ``#`` after a value is part of the value.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.logger import Logger

from barricade import snapshot
from barricade.address import parse_hostport
from barricade.client import ip_of
from barricade.idn import to_ascii
from barricade.protocol.downstream_tls import parse_policy

log = Logger()

CHECK_INTERVAL = 2.0


class MapError(ValueError):
    """A map file that cannot be read or parsed; the message names file and line
    (every bad line, which ``problems`` lists one by one)."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems or [message]


def map_path(location: str) -> Path:
    """Accept ``text!/path`` or a plain path; refuse smtpf's SQL/socket maps."""
    method, sep, rest = location.partition("!")
    if not sep:
        return Path(location)
    if method.lower() in ("text", "file"):
        return Path(rest)
    raise MapError(f"{location}: map type {method!r} is not supported; use a text file")


def parse_map_text(text: str, source: str = "<map>", lines: dict[str, int] | None = None,
                   problems: list[str] | None = None) -> dict[str, str]:
    """Parse map source; ``lines``, when given, receives each key's line number.

    A bad line raises :class:`MapError`, unless ``problems`` is given: then
    every bad line is appended to it (so one report can name them all).
    """
    entries: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        if len(parts) != 2 or ":" not in parts[0]:
            problem = f"{source}:{lineno}: expected 'tag:key value', got {raw.strip()!r}"
            if problems is None:
                raise MapError(problem)
            problems.append(problem)
            continue
        key = parts[0].lower()
        entries[key] = parts[1].strip()
        if lines is not None:
            lines[key] = lineno
    return entries


def comment_hint(value: str) -> str:
    """A hint for a value that fails because of an end-of-line comment."""
    return "; '#' starts a comment only at the start of a line" if " #" in value or "\t#" in value else ""


def raise_problems(path: Path, problems: list[str]) -> None:
    """One :class:`MapError` naming every bad line, or nothing."""
    if len(problems) == 1:
        raise MapError(problems[0])
    if problems:
        raise MapError(f"{path}: {len(problems)} bad lines: " + "; ".join(problems), problems)


def line_number(problem: str) -> int:
    """Sort key: the line number in ``path:N: ...`` (problems of one file)."""
    for part in problem.split(": ", 1)[0].rsplit(":", 1)[1:]:
        if part.isdigit():
            return int(part)
    return 0


#: Clients whose map entries a map remembers (all forgotten when it fills up or reloads).
CLIENT_MEMO = 4096


class KeyValueMap:
    """One text map file, parsed into a dict and kept fresh."""

    def __init__(self, location: str, clock: Callable[[], float] = time.monotonic):
        self.path = map_path(location)
        self._clock = clock
        self._entries: dict[str, str] = {}
        self._tags: frozenset[str] = frozenset()  # what the keys have before their first colon
        self._mtime: float | None = None
        self._failed_mtime: float | None = None  # a version of the file that did not load
        self._checked = 0.0
        #: (tag, ip, name) -> client_entry's answer, for the map's current contents
        self._clients: dict[tuple[str, str, str | None], tuple[str, str] | None] = {}
        try:
            self.load()
        except MapError as exc:
            # A worker the master started: the last version that loaded (barricade.snapshot).
            text = snapshot.kept_map(self.path)
            if text is None:
                raise
            self._install(text, None)
            self._failed_mtime = self._mtime_now()
            log.error("{err}; serving the last version of {path} that loaded ({n} entries) "
                      "until the file is mended", err=str(exc), path=str(self.path), n=len(self))

    def _mtime_now(self) -> float | None:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return None

    def load(self) -> None:
        """Read the file now; raises :class:`MapError` on any problem."""
        try:
            stat = self.path.stat()
            text = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            raise MapError(f"cannot read map {self.path}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise MapError(f"map {self.path} is not UTF-8: {exc}") from None
        self._install(text, stat.st_mtime)
        snapshot.keep_map(self.path, text)

    def _install(self, text: str, mtime: float | None) -> None:
        """Parse ``text`` and make it the map's contents, or raise :class:`MapError`
        and change nothing."""
        lines: dict[str, int] = {}
        problems: list[str] = []
        entries = parse_map_text(text, str(self.path), lines, problems)
        try:
            commit = self.derive(entries, lines)  # may raise: then nothing changes
        except MapError as exc:
            problems.extend(exc.problems)
        problems.sort(key=line_number)
        raise_problems(self.path, problems)
        self._entries = entries
        self._tags = frozenset(key.partition(":")[0] for key in entries)
        self._clients = {}
        self._mtime = mtime
        self._checked = self._clock()
        commit()

    def derive(self, entries: dict[str, str], lines: dict[str, int]) -> Callable[[], None]:
        """Validate ``entries`` and return what installs derived structures.

        Subclasses raise :class:`MapError` here, before anything is replaced,
        so a bad reload leaves the map exactly as it was.
        """
        return lambda: None

    def reload(self) -> bool:
        """Re-read; on error keep the old contents.  Returns success."""
        try:
            self.load()
        except MapError as exc:
            self._failed_mtime = self._mtime_now()
            log.error("map reload failed, keeping the previous contents: {err}", err=str(exc))
            return False
        log.info("map {path} loaded: {n} entries", path=str(self.path), n=len(self._entries))
        return True

    def refresh(self) -> None:
        """Reload if the file changed since the last look (rate limited)."""
        now = self._clock()
        if now - self._checked < CHECK_INTERVAL:
            return
        self._checked = now
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            return
        if mtime != self._mtime and mtime != self._failed_mtime:  # a broken file is reported once
            self.reload()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> str | None:
        return self._entries.get(key.lower())

    def has_tag(self, tag: str) -> bool:
        """Up to date, has the map any ``<tag>:...`` key?  Without one, a lookup of
        that tag need not build its keys (an address or a client makes several)."""
        self.refresh()
        return tag.lower() in self._tags

    def client_entry(self, tag: str, client: Any) -> tuple[str, str] | None:
        """The entry for a client (IP, ``[ip]``, its PTR name's domains, the bare tag)."""
        if not self.has_tag(tag):
            return None
        name = client.name if client.name not in ("", "unknown") else None
        # Remembered: every connection of a client asks for each of its limits
        # (about a dozen keys each, most often down to the bare tag).
        memo = (tag, client.ip, name)
        try:
            return self._clients[memo]
        except KeyError:
            pass
        if len(self._clients) >= CLIENT_MEMO:
            self._clients.clear()
        found = self._clients[memo] = self._first(client_keys(tag, client.ip, name))
        return found

    def mail_entry(self, tag: str, address: str, literal_plus: bool = True) -> tuple[str, str] | None:
        """The entry for a mail address (address, domains, ``local@``, the bare tag)."""
        if not self.has_tag(tag):
            return None
        return self._first(mail_keys(tag, address, literal_plus=literal_plus))

    def first(self, keys: Iterator[str]) -> tuple[str, str] | None:
        """The first key that has an entry, with its value."""
        self.refresh()
        return self._first(keys)

    def _first(self, keys: Iterable[str]) -> tuple[str, str] | None:
        for key in keys:
            value = self._entries.get(key.lower())
            if value is not None:
                return key.lower(), value
        return None


# --- key variants, most specific first ----------------------------------------


# Every check of a session asks for the same client's and the same addresses'
# variants, each under its own tag: the variants (parsing an IP address with
# the stdlib, splitting domains) are made once and remembered, the tag is
# put in front per lookup.


@functools.lru_cache(maxsize=8192)
def _ip_variants(ip: str) -> tuple[str, ...]:
    try:
        addr = ip_of(ip.split("%", 1)[0])
    except ValueError:
        return ()
    if isinstance(addr, ipaddress.IPv4Address):
        parts, sep = str(addr).split("."), "."
    else:
        parts, sep = addr.exploded.split(":"), ":"
    return tuple(sep.join(parts[:n]) for n in range(len(parts), 0, -1))


@functools.lru_cache(maxsize=8192)
def _domain_variants(domain: str) -> tuple[str, ...]:
    stripped = domain.strip(".")
    if not stripped:
        return ()
    labels = stripped.lower().split(".")
    return tuple(".".join(labels[i:]) for i in range(len(labels)))


@functools.lru_cache(maxsize=8192)
def _mail_variants(address: str, literal_plus: bool) -> tuple[str, ...]:
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, ""
    base = local if literal_plus else strip_detail(local)
    found: list[str] = []
    if domain:
        found.append(f"{local}@{domain}".lower())
        if base != local:
            found.append(f"{base}@{domain}".lower())
        found.extend(_domain_variants(domain))
    if base:
        found.append(f"{base}@".lower())
    return tuple(found)


def ip_keys(tag: str, ip: str) -> list[str]:
    """``tag:192.0.2.9`` → ``tag:192.0.2`` → ``tag:192.0`` → ``tag:192``."""
    return [f"{tag}:{v}" for v in _ip_variants(ip)]


def domain_keys(tag: str, domain: str, bare: bool = True) -> list[str]:
    """``tag:a.b.c`` → ``tag:b.c`` → ``tag:c`` (→ ``tag:``)."""
    keys = [f"{tag}:{v}" for v in _domain_variants(domain)]
    if bare:
        keys.append(f"{tag}:")
    return keys


def mail_keys(tag: str, address: str, bare: bool = True, literal_plus: bool = True) -> list[str]:
    """``tag:l@d`` → domain variants → ``tag:l@`` → ``tag:``.

    With ``literal_plus`` false (smtpf's ``-rfc2821-literal-plus``) a
    ``+detail`` is not part of the mailbox: ``tag:l+d@dom`` is still tried
    first (an entry for exactly that address), then ``tag:l@dom``, and the
    local-part key is ``tag:l@``.
    """
    low = tag.lower()
    keys = [f"{low}:{v}" for v in _mail_variants(address, literal_plus)]
    if bare:
        keys.append(f"{tag}:")
    return keys


def strip_detail(local: str) -> str:
    """``user+detail`` → ``user`` (a leading ``+`` is part of the name)."""
    head, plus, _ = local.partition("+")
    return head if plus and head else local


def client_keys(tag: str, ip: str, name: str | None, bare: bool = True) -> list[str]:
    """Client lookups: the IP first, then the PTR name's domains."""
    keys = ip_keys(tag, ip)
    if ip:
        keys.append(f"{tag}:[{ip}]")
    if name:
        keys.extend(domain_keys(tag, name, bare=False))
    if bare:
        keys.append(f"{tag}:")
    return keys


# --- route map ------------------------------------------------------------------

DEFAULT_SMTP_PORT = 25
_HOST = re.compile(r"[A-Za-z0-9_.:%-]+")  # a host name or an IPv4/IPv6 address


def parse_host_list(text: str, source: str) -> list[tuple[str, int]]:
    """``host[:port], [v6]:port host2`` → ``[(host, port), ...]``."""
    hosts = []
    for item in text.replace(",", " ").split():
        try:
            host, port = parse_hostport(item, DEFAULT_SMTP_PORT)
        except ValueError as exc:
            raise MapError(f"{source}: {exc}") from None
        if not host or not _HOST.fullmatch(host):
            raise MapError(f"{source}: bad host {item!r}")
        hosts.append((host, port))
    return hosts


@dataclass(frozen=True)
class Route:
    """A parsed route-map value."""

    key: str
    forward: tuple[tuple[str, int], ...] = ()
    rcpt: tuple[tuple[str, int], ...] = ()
    relay: bool = False
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @functools.cached_property
    def name(self) -> str:
        """Routes sharing forward hosts share a downstream connection."""
        return ",".join(f"{h}:{p}" for h, p in self.forward)


def parse_route(key: str, value: str) -> Route:
    forward: list[tuple[str, int]] = []
    rcpt: list[tuple[str, int]] = []
    relay = False
    extra: dict[str, str] = {}
    for param in value.split(";"):
        param = param.strip()
        if not param:
            continue
        name, colon, rest = param.partition(":")
        word = name.strip()
        if not colon:
            if word == "RELAY":
                relay = True
                continue
            raise MapError(f"{key}: unknown route parameter {word!r} (expected FORWARD:, RCPT:, TLS: or RELAY)")
        if word == "FORWARD":
            forward += parse_host_list(rest, key)
        elif word == "RCPT":
            rcpt += parse_host_list(rest, key)
        elif word == "TLS":
            try:
                parse_policy(rest)
            except ValueError as exc:
                raise MapError(f"{key}: {exc}") from None
            extra["TLS"] = rest.strip()
        else:
            raise MapError(f"{key}: unknown route parameter {word!r} (expected FORWARD:, RCPT:, TLS: or RELAY)")
    return Route(key, tuple(forward), tuple(rcpt), relay, extra)


class RouteMap(KeyValueMap):
    """The route map: where recipients go and who may relay."""

    TAG = "route"
    #: Where the local route is looked for, as smtpf does: ``route:local``, then
    #: 127.0.0.1 by prefix (``route:127`` with RELAY is a common entry), then ::1.
    LOCAL_KEYS = ("route:local", *ip_keys("route", "127.0.0.1"), "route:::1", *ip_keys("route", "::1"))

    def derive(self, entries: dict[str, str], lines: dict[str, int]) -> Callable[[], None]:
        routes = {}
        problems = []
        for key, value in entries.items():
            if not key.startswith("route:"):
                continue
            try:
                routes[key] = parse_route(key, value)
            except MapError as exc:
                problems.append(f"{self.path}:{lines.get(key, '?')}: {exc}{comment_hint(value)}")
        local = next((routes[k] for k in self.LOCAL_KEYS if k in routes and routes[k].forward), None)
        if local is None and not problems:
            raise MapError(f"{self.path}: route:local with a FORWARD: host is required")
        problems.sort(key=line_number)
        raise_problems(self.path, problems)

        def commit() -> None:
            self._routes = routes
            self.local = local
            self._answers = {}

        return commit

    # Every session asks whether its client may relay, every recipient for its
    # route: answers are kept until the map changes (a bounded number of them).
    ANSWERS = 8192

    def _remember(self, key: tuple, compute: Callable[[], object]) -> Any:
        self.refresh()  # a changed file is loaded, and the answers are dropped, first
        answers = self._answers
        found = answers.get(key, answers)
        if found is answers:
            found = compute()
            if len(answers) >= self.ANSWERS:
                answers.clear()
            answers[key] = found
        return found

    def _lookup(self, keys: Iterator[str]) -> Route | None:
        hit = self.first(keys)
        return self._routes.get(hit[0]) if hit else None

    def forwards(self) -> list[tuple[tuple[str, int], ...]]:
        """Each distinct set of FORWARD: hosts once: the downstreams whose EHLO we reflect."""
        return list(dict.fromkeys(r.forward for r in self._routes.values() if r.forward))

    def for_recipient(self, address: str) -> Route | None:
        """The route of a recipient; unqualified addresses go to the local route."""
        if "@" not in address:
            return self.local
        return self._remember(("rcpt", address), lambda: self._route_of(address))

    def _route_of(self, address: str) -> Route | None:
        route = self._lookup(mail_keys(self.TAG, address, bare=True))
        if route is None and not address.isascii():  # RFC 6531: a U-label domain, keyed as A-labels?
            local, _, domain = address.rpartition("@")
            a_labels = to_ascii(domain)  # UTS #46 as the downstream reads it: straße is not strasse
            if a_labels is None:
                return None  # no valid name: no route
            if a_labels != domain:
                route = self._lookup(mail_keys(self.TAG, f"{local}@{a_labels}", bare=True))
        if route is not None and not route.forward:
            return None  # a RELAY-only entry routes nothing
        return route

    def is_our_domain(self, domain: str) -> bool:
        """smtpf's routeKnownDomain: a ``route:`` entry with FORWARD: for the domain.

        Domains are looked up with their parents (``route:mx.example.com``,
        ``route:example.com``, ``route:com``), an address literal once
        (``route:[192.0.2.1]``); never the bare tag nor ``route:local``,
        which are defaults, not domains we answer for.
        """
        domain = domain.strip().rstrip(".").lower()
        if not domain:
            return False
        if domain.startswith("["):
            keys: Iterator[str] = iter([f"{self.TAG}:{domain}"])
        else:
            keys = (k for k in domain_keys(self.TAG, domain, bare=False) if k != "route:local")
        route = self._lookup(keys)
        return bool(route and route.forward)

    def is_relay(self, ip: str, name: str | None = None) -> bool:
        """May this client relay (by IP, then by PTR name)?"""
        def relay() -> bool:
            route = self._lookup(client_keys(self.TAG, ip, name, bare=False))
            return bool(route and route.relay)
        return self._remember(("relay", ip, name), relay)
