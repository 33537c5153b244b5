"""SPF (RFC 7208): may this IP address send mail for this domain?

:meth:`Evaluator.check_host` is the RFC's function of the same name,
evaluated against :class:`barricade.dns.Resolver`, so every lookup is
cached, bounded by ``dns-max-timeout``, counted in the DNS metrics and
never blocks the reactor (it is an asyncio coroutine: a check awaits it
through :func:`barricade.aio.aio`).

A record is parsed whole before any of it is evaluated (RFC 7208 4.6: a
syntax error anywhere is a PermError, even after a matching mechanism).
The RFC's processing limits are kept, which is what stops a published
record from turning the gateway into a DNS amplifier: at most 10 terms
that cause DNS lookups (``include``, ``a``, ``mx``, ``ptr``, ``exists``
and ``redirect``, counted across includes and redirects), at most 2 "void"
lookups (NXDOMAIN or no records), at most 10 MX names per ``mx``
(PermError beyond) and 10 PTR names per ``ptr`` or ``%{p}`` (the rest are
ignored); an evaluation also has a time budget, past which it is a
TempError.

``strict_dns=False`` is smtpf's ``-spf-temp-error-dns``: a lookup that
fails (timeout, SERVFAIL) is taken as "no match" and the evaluation goes
on, an include whose record cannot be had does not match, and a domain
whose own record cannot be had is Neutral.  So DNS trouble never yields
TempError, only a ``problem`` that says what was ignored.

Results are the RFC's seven, lower case as in Received-SPF; ``explanation``
is set for ``fail`` from the ``exp=`` modifier when the domain gives one
(never from a record reached through ``include``, RFC 7208 6.2).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from barricade.client import parse_ip
from barricade.dns import MxRecord, Status

NONE, NEUTRAL, PASS, FAIL, SOFTFAIL, TEMPERROR, PERMERROR = (
    "none", "neutral", "pass", "fail", "softfail", "temperror", "permerror")
RESULTS = (NONE, NEUTRAL, PASS, FAIL, SOFTFAIL, TEMPERROR, PERMERROR)
QUALIFIERS = {"+": PASS, "-": FAIL, "~": SOFTFAIL, "?": NEUTRAL}
MAX_LOOKUPS = 10  # DNS-querying terms per evaluation (RFC 7208 4.6.4)
MAX_VOID = 2  # lookups that find nothing
MAX_NAMES = 10  # MX names per mx, PTR names per ptr or %{p}
MAX_EXPLANATION = 256  # octets of an exp= text we keep
DEFAULT_BUDGET = 20.0  # seconds an evaluation may take (RFC 7208 4.6.4: at least 20)

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_VERSION = re.compile(r"v=spf1(?: |$)", re.IGNORECASE)
_MODIFIER = re.compile(r"(?P<name>[A-Za-z][A-Za-z0-9_.-]*)=(?P<value>.*)", re.DOTALL)
_MECHANISM = re.compile(r"(?P<q>[-+~?]?)(?P<name>[A-Za-z0-9]+)(?P<rest>.*)", re.DOTALL)
_DOMAIN_CIDR = re.compile(r"(?::(?P<spec>.+?))?(?:/(?P<c4>\d+))?(?://(?P<c6>\d+))?", re.DOTALL)
_CIDR_NUMBER = re.compile(r"0|[1-9]\d{0,2}")
#: The most digits a macro's label count may have (RFC 7208 gives no bound; a name has
#: at most 127 labels).
MAX_MACRO_DIGITS = 10
# A macro: %{letter digits r delimiters}, or one of the escapes %% %_ %-.
_MACRO = re.compile(r"%(?:\{(?P<letter>[A-Za-z])(?P<digits>[0-9]*)(?P<reverse>[rR]?)"
                    r"(?P<delims>[-.+,/_=]*)\}|(?P<literal>[%_-]))")
_MACRO_LITERAL = re.compile(r"[\x21-\x24\x26-\x7e]*")  # visible characters but %
_EXPLAIN_LITERAL = re.compile(r"[\x21-\x24\x26-\x7e ]*")  # exp= text may have spaces
_TOPLABEL = re.compile(r"(?:[a-z0-9]*[a-z][a-z0-9]*|[a-z0-9]+-[a-z0-9-]*[a-z0-9])", re.IGNORECASE)
_LABEL = re.compile(r"[\x21-\x2d\x2f-\x7e]{1,63}")  # printable, no dot: macros may bring any
DOMAIN_LETTERS = frozenset("slodiphv")  # macros of a domain-spec
EXPLAIN_LETTERS = DOMAIN_LETTERS | frozenset("crt")  # ... and of an explanation text


class SpfError(Exception):
    """Ends an evaluation with ``result`` (temperror or permerror)."""

    def __init__(self, result: str, why: str):
        super().__init__(why)
        self.result = result


@dataclass(frozen=True)
class SpfResult:
    """The outcome of one check_host.

    ``mechanism`` is the term that matched ("" for the default Neutral, for
    none and for errors); ``problem`` says why a temperror or permerror
    happened, or which DNS failure ``strict_dns=False`` ignored;
    ``sender`` is the mailbox whose domain was checked (postmaster@helo for
    HELO and the null sender); ``best_guess`` marks a Pass given by the
    operator's best-guess record rather than the domain's own.
    """

    result: str
    domain: str
    mechanism: str = ""
    explanation: str = ""
    problem: str = ""
    sender: str = ""
    best_guess: bool = False


# --- parsing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Term:
    """One mechanism of a parsed record."""

    text: str  # as written, for logs and Received-SPF's mechanism=
    name: str  # all include a mx ptr ip4 ip6 exists (lower case)
    result: str  # what a match yields (the qualifier)
    spec: str | None = None  # the domain-spec, unexpanded
    cidr4: int = 32
    cidr6: int = 128
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None


@dataclass(frozen=True)
class Record:
    """A parsed SPF record: its mechanisms in order and the two modifiers RFC 7208 knows."""

    text: str
    mechanisms: tuple[Term, ...]
    redirect: str | None = None
    exp: str | None = None


def check_macro_string(text: str, letters: frozenset[str] = DOMAIN_LETTERS,
                       literal: re.Pattern[str] = _MACRO_LITERAL) -> None:
    """Raise PermError unless ``text`` is a macro-string of RFC 7208 7.1."""
    pos = 0
    for m in _MACRO.finditer(text):
        if not literal.fullmatch(text, pos, m.start()):
            raise SpfError(PERMERROR, f"bad macro string {text!r}")
        pos = m.end()
        letter = m.group("letter")
        if letter is not None:
            if letter.lower() not in letters:
                raise SpfError(PERMERROR, f"macro %{{{letter}}} not allowed in {text!r}")
            digits = m.group("digits")
            if len(digits) > MAX_MACRO_DIGITS:  # int() refuses 4,300 digits; no name has 128 labels
                raise SpfError(PERMERROR, f"macro label count too long in {text[:80]!r}")
            if digits and int(digits) == 0:
                raise SpfError(PERMERROR, f"macro with zero labels in {text!r}")
    if not literal.fullmatch(text, pos):
        raise SpfError(PERMERROR, f"bad macro string {text!r}")


def check_domain_spec(spec: str) -> None:
    """RFC 7208 7.1: a macro-string ending in ``.toplabel`` (optionally ``.``) or in a macro."""
    check_macro_string(spec)
    last = None
    for m in _MACRO.finditer(spec):
        last = m
    if last is not None and last.end() == len(spec) and last.group("letter"):
        return  # domain-end = macro-expand
    head, dot, top = spec[:-1].rpartition(".") if spec.endswith(".") else spec.rpartition(".")
    if not dot or not _TOPLABEL.fullmatch(top):
        raise SpfError(PERMERROR, f"bad domain {spec!r}")


def _cidr(text: str | None, maximum: int, term: str) -> int | None:
    if text is None:
        return None
    if not _CIDR_NUMBER.fullmatch(text) or int(text) > maximum:
        raise SpfError(PERMERROR, f"bad prefix length in {term!r}")
    return int(text)


def _ip_term(term: str, name: str, result: str, rest: str) -> Term:
    if not rest.startswith(":"):
        raise SpfError(PERMERROR, f"{name} without a network: {term!r}")
    network, slash, length = rest[1:].rpartition("/") if "/" in rest else (rest[1:], "", "")
    version = 4 if name == "ip4" else 6
    try:
        addr = ipaddress.ip_address(network)
    except ValueError:
        raise SpfError(PERMERROR, f"bad network in {term!r}") from None
    if addr.version != version:
        raise SpfError(PERMERROR, f"wrong address family in {term!r}")
    prefix = _cidr(length, 32 if version == 4 else 128, term) if slash else None
    full = 32 if version == 4 else 128
    net = ipaddress.ip_network(f"{addr}/{full if prefix is None else prefix}", strict=False)
    return Term(term, name, result, network=net)


def parse_term(term: str) -> Term | tuple[str, str]:
    """A mechanism as a :class:`Term`, or a modifier as ``(name, value)``; PermError if neither."""
    mod = _MODIFIER.fullmatch(term)
    if mod is not None:
        return mod.group("name").lower(), mod.group("value")
    m = _MECHANISM.fullmatch(term)
    if m is None:
        raise SpfError(PERMERROR, f"bad term {term!r}")
    name, rest = m.group("name").lower(), m.group("rest")
    result = QUALIFIERS[m.group("q") or "+"]
    if name == "all":
        if rest:
            raise SpfError(PERMERROR, f"bad term {term!r}")
        return Term(term, name, result)
    if name in ("ip4", "ip6"):
        return _ip_term(term, name, result, rest)
    if name not in ("include", "a", "mx", "ptr", "exists"):
        raise SpfError(PERMERROR, f"unknown mechanism {term!r}")
    parts = _DOMAIN_CIDR.fullmatch(rest)
    if parts is None:
        raise SpfError(PERMERROR, f"bad term {term!r}")
    spec, c4, c6 = parts.group("spec"), parts.group("c4"), parts.group("c6")
    if rest.startswith(":") and spec is None:
        raise SpfError(PERMERROR, f"empty domain in {term!r}")
    if name in ("include", "exists") and spec is None:
        raise SpfError(PERMERROR, f"{name} without a domain: {term!r}")
    if (c4 is not None or c6 is not None) and name not in ("a", "mx"):
        raise SpfError(PERMERROR, f"no prefix length allowed in {term!r}")
    if spec is not None:
        check_domain_spec(spec)
    cidr4, cidr6 = _cidr(c4, 32, term), _cidr(c6, 128, term)
    return Term(term, name, result, spec, 32 if cidr4 is None else cidr4, 128 if cidr6 is None else cidr6)


def parse_record(text: str) -> Record:
    """Parse a whole ``v=spf1`` record; PermError on any syntax error (RFC 7208 4.6, 12)."""
    if not _VERSION.match(text):
        raise SpfError(PERMERROR, f"not an SPF record: {text[:40]!r}")
    mechanisms: list[Term] = []
    redirect = exp = None
    for term in text.split(" ")[1:]:
        if not term:
            continue  # 1*SP between terms, and trailing spaces
        parsed = parse_term(term)
        if isinstance(parsed, Term):
            mechanisms.append(parsed)
            continue
        name, value = parsed
        if name in ("redirect", "exp"):
            if (redirect if name == "redirect" else exp) is not None:
                raise SpfError(PERMERROR, f"two {name}= modifiers")
            check_domain_spec(value)
            if name == "redirect":
                redirect = value
            else:
                exp = value
        else:
            check_macro_string(value, EXPLAIN_LETTERS)  # unknown modifiers: ignored, but well formed
    return Record(text, tuple(mechanisms), redirect, exp)


# --- names and macros ----------------------------------------------------------------------


def address(ip: str) -> IpAddress:
    """The client address; IPv4-mapped IPv6 is IPv4 (RFC 7208 5). Raises ValueError."""
    return parse_ip(ip)


def split_sender(sender: str, helo: str) -> tuple[str, str]:
    """(local-part, domain) of the sender: ``postmaster@helo`` for the null sender, and
    postmaster for a missing local part (RFC 7208 4.3)."""
    if not sender:
        return "postmaster", helo
    local, at, domain = sender.rpartition("@")
    if not at:
        return "postmaster", sender
    return local or "postmaster", domain


def valid_domain(domain: str) -> bool:
    """A name check_host may start from (RFC 7208 4.3): two labels or more, none empty or
    over 63 octets, not an address literal, the top one not all digits."""
    name = domain[:-1] if domain.endswith(".") else domain
    labels = name.split(".")
    return (len(labels) >= 2 and len(name) <= 253 and not name.startswith("[")
            and all(_LABEL.fullmatch(x) for x in labels) and not labels[-1].isdigit())


def fit_domain(name: str) -> str:
    """RFC 7208 7.3: an expanded name over 253 octets loses labels on the left; no trailing dot.

    The cut is found at once: label by label, a record repeating a macro of a
    long name (``a:%{d}%{d}...``, expanded to kilobytes of labels) cost its
    length squared, seconds of a worker's event loop.
    """
    name = name[:-1] if name.endswith(".") else name
    if len(name) <= 253:
        return name
    dot = name.find(".", len(name) - 254)  # the first dot with at most 253 octets after it
    return name[dot + 1:] if dot >= 0 else name.rpartition(".")[2]


def transform(value: str, digits: str, reverse: bool, delims: str) -> str:
    """RFC 7208 7.3: split on the delimiters, maybe reverse, keep the right-most parts, join with dots."""
    parts = re.split("[" + re.escape(delims or ".") + "]", value)
    if reverse:
        parts.reverse()
    if digits:
        parts = parts[-int(digits):]
    return ".".join(parts)


def url_escape(value: str) -> str:
    """Upper-case macro letters: the value URL-escaped (RFC 3986 unreserved kept)."""
    return urllib.parse.quote(value, safe="-._~")


@dataclass
class _State:
    """What one check_host and everything it includes share: the inputs and the limits."""

    ip: IpAddress
    local: str
    sender_domain: str
    helo: str
    receiver: str
    lookups: int = 0
    void: int = 0
    ignored: list[str] = field(default_factory=list)  # DNS failures strict_dns=False skipped
    _ptr_names: list[str] | None = None

    @property
    def sender(self) -> str:
        return f"{self.local}@{self.sender_domain}"

    def count_lookup(self, term: str) -> None:
        self.lookups += 1
        if self.lookups > MAX_LOOKUPS:
            raise SpfError(PERMERROR, f"more than {MAX_LOOKUPS} DNS lookups ({term})")

    def count_void(self, what: str) -> None:
        self.void += 1
        if self.void > MAX_VOID:
            raise SpfError(PERMERROR, f"more than {MAX_VOID} void lookups ({what})")


class Evaluator:
    """check_host() over one resolver; one instance serves every session.

    ``receiver`` is our host name (the ``%{r}`` macro); ``budget`` the
    seconds one evaluation may take; ``strict_dns`` smtpf's
    ``spf-temp-error-dns`` (see the module docstring).
    """

    def __init__(self, resolver: Any, receiver: str = "unknown", budget: float = DEFAULT_BUDGET,
                 strict_dns: bool = True):
        self.resolver = resolver
        self.receiver = receiver or "unknown"
        self.budget = budget
        self.strict_dns = strict_dns

    async def check_host(self, ip: str, domain: str, sender: str = "", helo: str = "",
                         record: str | Record | None = None) -> SpfResult:
        """Evaluate ``domain``'s SPF record for ``ip`` (``sender``: the MAIL FROM address,
        "" for the null sender; ``helo``: the HELO name).  ``record`` replaces the
        domain's own record (the best-guess case).  Never raises."""
        domain = domain.strip().lower()
        domain = domain[:-1] if domain.endswith(".") else domain
        local, sender_domain = split_sender(sender, helo)
        mailbox = f"{local}@{sender_domain}"
        try:
            state = _State(address(ip), local, sender_domain, helo or "unknown", self.receiver)
        except ValueError:
            return SpfResult(PERMERROR, domain, problem=f"bad client address {ip!r}", sender=mailbox)
        if not valid_domain(domain):
            return SpfResult(NONE, domain, problem="not a domain SPF can check", sender=mailbox)
        try:
            out = await asyncio.wait_for(self._check_host(state, domain, record), self.budget)
        except SpfError as exc:
            out = SpfResult(exc.result, domain, problem=str(exc))
        except TimeoutError:
            why = f"evaluation took longer than {self.budget:g}s"
            out = SpfResult(TEMPERROR if self.strict_dns else NEUTRAL, domain,
                            problem=why if self.strict_dns else f"{why} (ignored)")
        if state.ignored and not out.problem:
            out = SpfResult(out.result, out.domain, out.mechanism, out.explanation,
                            "ignored: " + "; ".join(state.ignored[:3]))
        return SpfResult(out.result, out.domain, out.mechanism, out.explanation, out.problem, mailbox)

    async def _check_host(self, state: _State, domain: str, record: str | Record | None) -> SpfResult:
        if record is None:
            try:
                text = await self._record_text(domain)
            except SpfError as exc:
                if exc.result != TEMPERROR or self.strict_dns:
                    raise
                return SpfResult(NEUTRAL, domain, problem=f"{exc} (ignored)")
            if text is None:
                return SpfResult(NONE, domain)
            parsed = parse_record(text)
        else:
            parsed = record if isinstance(record, Record) else parse_record(record)
        return await self._evaluate(state, domain, parsed, explain=True)

    # --- the record ---------------------------------------------------------------------

    async def _record_text(self, domain: str) -> str | None:
        """The domain's one SPF record, None if it has none (RFC 7208 4.4, 4.5)."""
        result = await self.resolver.query(domain, "TXT")
        if result.status is Status.TEMPFAIL:
            raise SpfError(TEMPERROR, f"DNS {result.error or 'failure'} looking up TXT {domain}")
        found = [r for r in result.records if _VERSION.match(r)]
        if len(found) > 1:
            raise SpfError(PERMERROR, f"{domain} has {len(found)} SPF records")
        return found[0] if found else None

    async def _included(self, state: _State, domain: str, explain: bool = False) -> SpfResult:
        """check_host for an include: target (its exp= is never used) or a redirect=
        target (its exp= replaces ours, RFC 7208 6.2), within the same limits."""
        if not valid_domain(domain):
            return SpfResult(NONE, domain)
        text = await self._record_text(domain)
        if text is None:
            return SpfResult(NONE, domain)
        return await self._evaluate(state, domain, parse_record(text), explain)

    async def _evaluate(self, state: _State, domain: str, record: Record, explain: bool) -> SpfResult:
        for term in record.mechanisms:
            if await self._matches(state, domain, term):
                out = SpfResult(term.result, domain, mechanism=term.text)
                if term.result == FAIL and explain and record.exp is not None:
                    text = await self._explanation(state, domain, record.exp)
                    out = SpfResult(FAIL, domain, term.text, explanation=text)
                return out
        if record.redirect is None:
            return SpfResult(NEUTRAL, domain)
        state.count_lookup("redirect")
        target = fit_domain(await self.expand(state, record.redirect, domain))
        try:
            inner = await self._included(state, target.lower(), explain)
        except SpfError as exc:
            if exc.result != TEMPERROR or self.strict_dns:
                raise
            state.ignored.append(str(exc))
            return SpfResult(NEUTRAL, domain, problem=f"{exc} (ignored)")
        if inner.result == NONE:
            raise SpfError(PERMERROR, f"redirect={target} has no SPF record")
        return inner

    # --- mechanisms ---------------------------------------------------------------------

    async def _matches(self, state: _State, domain: str, term: Term) -> bool:
        name = term.name
        if name == "all":
            return True
        if name in ("ip4", "ip6"):
            assert term.network is not None
            return state.ip.version == term.network.version and state.ip in term.network
        state.count_lookup(term.text)
        target = domain if term.spec is None else fit_domain(await self.expand(state, term.spec, domain))
        target = target.lower()
        if name == "include":
            try:
                inner = await self._included(state, target)
            except SpfError as exc:
                if exc.result != TEMPERROR or self.strict_dns:
                    raise
                state.ignored.append(str(exc))
                return False
            if inner.result == PASS:
                return True
            if inner.result == NONE:
                raise SpfError(PERMERROR, f"include:{target} has no SPF record")
            return False  # fail, softfail, neutral (errors were raised)
        if name == "a":
            return await self._address_matches(state, target, term)
        if name == "mx":
            return await self._mx_matches(state, target, term)
        if name == "ptr":
            return await self._ptr_matches(state, target)
        # exists: an A lookup whatever the client's address family (RFC 7208 5.7)
        result = await self.resolver.query(target, "A")
        return bool(self._records(state, result, f"A {target}"))

    def _records(self, state: _State, result: Any, what: str, void: bool = True) -> tuple:
        """A lookup's records; TempError (or nothing, when not strict) on a DNS failure."""
        if result.status is Status.TEMPFAIL:
            why = f"DNS {result.error or 'failure'} looking up {what}"
            if self.strict_dns:
                raise SpfError(TEMPERROR, why)
            state.ignored.append(why)
            return ()
        if not result.records and void:
            state.count_void(what)
        return result.records

    async def _address_matches(self, state: _State, name: str, term: Term, void: bool = True) -> bool:
        rdtype = "A" if state.ip.version == 4 else "AAAA"
        prefix = term.cidr4 if state.ip.version == 4 else term.cidr6
        result = await self.resolver.query(name, rdtype)
        for record in self._records(state, result, f"{rdtype} {name}", void):
            try:
                net = ipaddress.ip_network(f"{record}/{prefix}", strict=False)
            except ValueError:
                continue
            if state.ip in net:
                return True
        return False

    async def _mx_matches(self, state: _State, target: str, term: Term) -> bool:
        """RFC 7208 5.4: the MX names' addresses; no implicit MX; over 10 names is PermError."""
        result = await self.resolver.query(target, "MX")
        records = self._records(state, result, f"MX {target}")
        hosts = [r.host for r in sorted(records) if isinstance(r, MxRecord) and r.host]
        if len(hosts) > MAX_NAMES:
            raise SpfError(PERMERROR, f"{target} has more than {MAX_NAMES} MX names")
        for host in hosts:
            if await self._address_matches(state, host, term, void=False):
                return True
        return False

    async def _validated_names(self, state: _State) -> list[str]:
        """The client's PTR names that resolve back to it (RFC 7208 5.5), at most 10 tried.

        A failed PTR lookup gives no names; a failed forward lookup skips that name."""
        if state._ptr_names is not None:
            return state._ptr_names
        result = await self.resolver.query(state.ip.reverse_pointer, "PTR")
        names: list[str] = []
        rdtype = "A" if state.ip.version == 4 else "AAAA"
        for name in result.records[:MAX_NAMES] if result.status is Status.ANSWER else ():
            forward = await self.resolver.query(name, rdtype)
            for record in forward.records:
                try:
                    if address(record) == state.ip:
                        names.append(name.lower())
                        break
                except ValueError:
                    continue
        state._ptr_names = names
        return names

    async def _ptr_matches(self, state: _State, target: str) -> bool:
        for name in await self._validated_names(state):
            if name == target or name.endswith("." + target):
                return True
        return False

    # --- macros ---------------------------------------------------------------------------

    async def expand(self, state: _State, text: str, domain: str, explain: bool = False) -> str:
        """RFC 7208 7: macro expansion of a (checked) domain-spec or explanation text."""
        out, pos = [], 0
        for m in _MACRO.finditer(text):
            out.append(text[pos:m.start()])
            pos = m.end()
            literal = m.group("literal")
            if literal:
                out.append({"%": "%", "_": " ", "-": "%20"}[literal])
                continue
            letter = m.group("letter")
            if letter.lower() not in (EXPLAIN_LETTERS if explain else DOMAIN_LETTERS):
                raise SpfError(PERMERROR, f"macro %{{{letter}}} not allowed here")
            value = await self._macro_value(state, letter.lower(), domain)
            value = transform(value, m.group("digits"), bool(m.group("reverse")), m.group("delims"))
            out.append(url_escape(value) if letter.isupper() else value)
        out.append(text[pos:])
        return "".join(out)

    async def _macro_value(self, state: _State, letter: str, domain: str) -> str:
        ip = state.ip
        if letter == "s":
            return state.sender
        if letter == "l":
            return state.local
        if letter == "o":
            return state.sender_domain
        if letter == "d":
            return domain
        if letter == "i":
            return str(ip) if ip.version == 4 else ".".join(ip.exploded.replace(":", ""))
        if letter == "c":
            return str(ip)
        if letter == "v":
            return "in-addr" if ip.version == 4 else "ip6"
        if letter == "h":
            return state.helo
        if letter == "p":
            names = await self._validated_names(state)
            exact = [n for n in names if n == domain]
            below = [n for n in names if n.endswith("." + domain)]
            return (exact or below or names or ["unknown"])[0]
        if letter == "r":
            return state.receiver
        return str(int(time.time()))  # t

    async def _explanation(self, state: _State, domain: str, exp: str) -> str:
        """The exp= text, or "" when it cannot be had (RFC 7208 6.2: never an error).

        Only printable US-ASCII is kept: the text ends up in an SMTP reply."""
        try:
            target = fit_domain(await self.expand(state, exp, domain))
            result = await self.resolver.query(target, "TXT")
            if result.status is not Status.ANSWER or len(result.records) != 1:
                return ""
            text = result.records[0]
            check_macro_string(text, EXPLAIN_LETTERS, _EXPLAIN_LITERAL)
            expanded = await self.expand(state, text, domain, explain=True)
        except (SpfError, ValueError):  # whatever is wrong with it, the result stands
            return ""
        return re.sub(r"[^\x20-\x7e]", "?", expanded)[:MAX_EXPLANATION]
