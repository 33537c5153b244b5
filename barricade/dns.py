"""The one resolver every check uses: DNS behind a small interface of our own.

Checks ask questions in their own terms (the PTR of a client, the MX of a
sender domain, a DNS list's verdict on an address) and get back a
:class:`Result` that keeps apart what they must treat differently: an
answer, a name that does not exist or has no such record (NXDOMAIN,
NODATA), and a temporary failure (timeout, SERVFAIL, REFUSED).  smtpf's
checks skip on a failure or temp-fail the client; a missing record is a
verdict.

The client library today is dnspython's asyncio resolver; nothing outside
this module imports it, so it can change when a benchmark says so
(only this module would change).  Every lookup is bounded by ``dns-max-timeout`` (smtpf's
per-query maximum) and answers are cached for their TTL (negative answers
for the zone's negative TTL) in a bounded LRU, one per process.  The
methods are asyncio coroutines: a check awaits them through
:func:`barricade.aio.aio`.  Every lookup is counted in
``barricade_dns_lookups_total{type,result}``; network queries are timed in
``barricade_dns_seconds``.
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rcode
import dns.rdatatype
import dns.resolver

from barricade.address import parse_hostport
from barricade.client import parse_ip
from barricade.options import Config, OptionError

#: Per-attempt timeout: a silent server is given up for the next one (or a
#: retry) after this long, within the lifetime of ``dns-max-timeout``.
ATTEMPT_TIMEOUT = 2.0
MAX_TTL = 86400  # cache an answer at most a day, whatever its TTL says
MAX_NEGATIVE_TTL = 3600  # ... and a negative answer at most an hour
DEFAULT_NEGATIVE_TTL = 60  # NXDOMAIN/NODATA without an SOA
MAX_PTR_NAMES = 4  # forward-confirm at most this many PTR names of one address

#: A DNS list entry without /mask counts any answer except 127.0.0.0 and 127.0.0.1.
DEFAULT_MASK = 0x00FFFFFE

_HOSTNAME = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*")


class Status(enum.Enum):
    ANSWER = "answer"
    NXDOMAIN = "nxdomain"  # the name does not exist
    NODATA = "nodata"  # the name exists, without records of that type
    TEMPFAIL = "tempfail"  # timeout, SERVFAIL, REFUSED, network error: try again later


class MxRecord(NamedTuple):
    preference: int
    host: str  # lower case, no trailing dot; "" is the root (a null MX)


@dataclass(frozen=True)
class Result:
    """The outcome of one lookup.

    ``records`` are text for A/AAAA (the address), PTR/CNAME/NS (the host
    name, lower case, no trailing dot) and TXT (the strings joined), and
    :class:`MxRecord` for MX.  ``error`` says why a TEMPFAIL happened
    (``timeout``, ``servfail``, ``refused``, ``error``) or that a name was
    not valid (``bad-name``, reported as NXDOMAIN).
    """

    name: str
    rdtype: str
    status: Status
    records: tuple[Any, ...] = ()
    ttl: int = 0
    error: str = ""

    @property
    def found(self) -> bool:
        return self.status is Status.ANSWER

    @property
    def missing(self) -> bool:
        """NXDOMAIN or NODATA: DNS says there is nothing."""
        return self.status in (Status.NXDOMAIN, Status.NODATA)

    @property
    def tempfail(self) -> bool:
        return self.status is Status.TEMPFAIL

    @property
    def label(self) -> str:
        """The ``result`` label of the lookup metric."""
        return self.error if self.status is Status.TEMPFAIL and self.error else self.status.value


@dataclass(frozen=True)
class MxResult:
    """A domain's mail exchangers as a check needs them (RFC 5321 5.1).

    ``hosts`` are sorted by preference.  A domain without MX records but
    with an A or AAAA record has the implicit MX ``(0, domain)``
    (``implicit``); a null MX (RFC 7505, ``MX 0 .``) says the domain takes
    no mail (``null``, no hosts).  ``status`` is ANSWER for both, NXDOMAIN
    for a domain that does not exist, NODATA for one with neither MX nor
    address, TEMPFAIL when DNS could not say.
    """

    domain: str
    status: Status
    hosts: tuple[MxRecord, ...] = ()
    implicit: bool = False
    null: bool = False
    error: str = ""


@dataclass(frozen=True)
class ClientName:
    """What the PTR of a client address says, forward-confirmed.

    ``name`` is set only when a PTR name resolves back to the address
    (FCrDNS); ``ptr`` is the first PTR name whether confirmed or not.
    ``forged``: there are PTR names and none resolves back.  ``error``: a
    temporary DNS failure left the name unknown (smtpf's "PTR lookup error").
    """

    name: str | None = None
    ptr: str | None = None
    forged: bool = False
    error: bool = False


# --- names ------------------------------------------------------------------------


_address = parse_ip  # an address; IPv4-mapped IPv6 becomes IPv4. Raises ValueError.


def reverse_ip(ip: str) -> str:
    """``192.0.2.1`` → ``1.2.0.192``; IPv6 → its 32 nibbles in reverse (RFC 3596, RFC 5782).

    The form DNS lists and the reverse zones use, without a suffix.
    """
    addr = _address(ip)
    if addr.version == 4:
        return ".".join(reversed(str(addr).split(".")))
    return ".".join(reversed(addr.exploded.replace(":", "")))


def ptr_query(ip: str) -> str:
    """The PTR owner name of an address (``…in-addr.arpa`` or ``…ip6.arpa``)."""
    return reverse_ip(ip) + (".in-addr.arpa" if _address(ip).version == 4 else ".ip6.arpa")


def is_ip(text: str) -> bool:
    try:
        _address(text)
    except ValueError:
        return False
    return True


def dnsbl_query(item: str, suffix: str) -> str:
    """The name to look up in a DNS list: reversed IP or domain, then the list's suffix.

    ``dnsbl_query("192.0.2.1", "bl.example")`` is ``1.2.0.192.bl.example``;
    a domain (URI and domain lists) is used as it is:
    ``dnsbl_query("spam.example", "dbl.example")`` is ``spam.example.dbl.example``.
    """
    head = reverse_ip(item) if is_ip(item) else item.strip().rstrip(".")
    return f"{head}.{suffix.strip('.')}"


def hostname(text: str) -> str | None:
    """A DNS host name in our canonical form (lower case, no trailing dot), or None
    when it is not one: names from DNS (PTR, MX) end up in replies, headers and logs."""
    name = text.strip().rstrip(".").lower()
    if not name or len(name) > 253 or not _HOSTNAME.fullmatch(name):
        return None
    return name


# --- DNS lists ------------------------------------------------------------------------


@dataclass(frozen=True)
class DnsList:
    """One ``suffix[/mask]`` entry of ``dns-bl``, ``dns-wl``, ``dns-gl`` (README, "DNS").

    An answer ``127.x.y.z`` lists the item when its low 24 bits ANDed with
    the mask are not zero; without a mask the mask is ``0x00FFFFFE``: any
    answer except 127.0.0.0 and 127.0.0.1.  Answers outside 127.0.0.0/8 (a
    resolver that rewrites NXDOMAIN, a list's error code space) never list.
    """

    suffix: str
    mask: int = DEFAULT_MASK

    @classmethod
    def parse(cls, text: str) -> DnsList:
        """``zen.example``, ``multi.example/0x04``, ``multi.example/12``. Raises ValueError."""
        suffix, slash, mask_text = text.strip().partition("/")
        suffix = suffix.strip().strip(".").lower()
        if not suffix or hostname(suffix) is None:
            raise ValueError(f"bad DNS list suffix {text!r}")
        mask = DEFAULT_MASK
        if slash:
            try:
                mask = int(mask_text.strip(), 0)
            except ValueError:
                raise ValueError(f"bad mask in {text!r}: write it as 0x00FFFFFE or 254") from None
            if not 0 < mask <= 0xFFFFFFFF:
                raise ValueError(f"bad mask in {text!r}: must be 1 to 0xFFFFFFFF")
        return cls(suffix, mask)

    def listed(self, answer: str) -> bool:
        try:
            addr = ipaddress.IPv4Address(answer)
        except ValueError:
            return False
        value = int(addr)
        return value >> 24 == 127 and (value & 0x00FFFFFF & self.mask) != 0

    def __str__(self) -> str:
        return self.suffix if self.mask == DEFAULT_MASK else f"{self.suffix}/{self.mask:#x}"


def parse_lists(option: str, items: Iterable[str]) -> tuple[DnsList, ...]:
    """The lists of one option; a bad entry is an OptionError naming the option."""
    out = []
    for item in items:
        try:
            out.append(DnsList.parse(item))
        except ValueError as exc:
            raise OptionError(f"option {option}: {exc}") from None
    return tuple(out)


@dataclass(frozen=True)
class Listing:
    """A DNS list hit: which list, the name looked up, and the answer."""

    dnslist: DnsList
    query: str
    answer: str


@dataclass(frozen=True)
class ListResult:
    """The verdict of several DNS lists on one item: the first hit in list
    order, and the lists that could not answer (timeout, SERVFAIL)."""

    hit: Listing | None = None
    failed: tuple[Result, ...] = ()


# --- the cache --------------------------------------------------------------------------


class Cache:
    """Answers by (name, type) until their TTL runs out; least recently used goes first."""

    def __init__(self, size: int, clock: Callable[[], float] = time.monotonic):
        self.size = size
        self.clock = clock
        self._entries: OrderedDict[tuple[str, str], tuple[float, Result]] = OrderedDict()

    def get(self, key: tuple[str, str]) -> Result | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, result = entry
        if self.clock() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return result

    def put(self, key: tuple[str, str], result: Result) -> None:
        """Keep ``result`` for its TTL; temporary failures and TTL 0 are not kept."""
        if self.size <= 0 or result.tempfail or result.ttl <= 0:
            return
        self._entries[key] = (self.clock() + result.ttl, result)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()


# --- the resolver -----------------------------------------------------------------------


def _negative_ttl(response: dns.message.Message | None) -> int:
    """RFC 2308: the SOA's TTL or its MINIMUM field, whichever is less."""
    if response is not None:
        for rrset in response.authority:
            if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
                return min(rrset.ttl, rrset[0].minimum, MAX_NEGATIVE_TTL)
    return DEFAULT_NEGATIVE_TTL


def _rdata_value(rdtype: str, rdata: Any) -> Any:
    if rdtype in ("A", "AAAA"):
        return rdata.address
    if rdtype == "MX":
        return MxRecord(int(rdata.preference), rdata.exchange.to_text(omit_final_dot=True).lower()
                        if rdata.exchange != dns.name.root else "")
    if rdtype == "TXT":
        return b"".join(rdata.strings).decode("utf-8", "replace")
    if rdtype in ("PTR", "CNAME", "NS"):
        return rdata.target.to_text(omit_final_dot=True).lower()
    return rdata.to_text()


def _failure_kind(exc: dns.resolver.NoNameservers) -> str:
    """servfail / refused / error, from the answers the servers gave."""
    kinds = set()
    for item in exc.kwargs.get("errors") or ():
        response = item[-1] if isinstance(item, tuple) and item else None
        if isinstance(response, dns.message.Message):
            rcode = response.rcode()
            kinds.add({dns.rcode.SERVFAIL: "servfail", dns.rcode.REFUSED: "refused"}.get(rcode, "error"))
        else:
            kinds.add("error")
    for kind in ("servfail", "refused"):
        if kind in kinds:
            return kind
    return "error"


class Resolver:
    """Cached, bounded, counted DNS lookups for one process."""

    def __init__(self, servers: Sequence[tuple[str, int]] = (), max_timeout: float = 45.0,
                 rotate: bool = False, cache_size: int = 10000, metrics: Any = None,
                 clock: Callable[[], float] = time.monotonic):
        """``servers``: (ip, port) pairs; empty means the system's /etc/resolv.conf.

        Raises OptionError when there is no name server to ask.
        """
        try:
            resolver = dns.asyncresolver.Resolver(configure=not servers)
        except dns.resolver.NoResolverConfiguration as exc:
            raise OptionError(f"dns-servers is empty and the system gives no name server: {exc}") from None
        if servers:
            resolver.nameservers = [dns.nameserver.Do53Nameserver(ip, port) for ip, port in servers]
        resolver.cache = None  # ours, below: it also keeps negative answers
        resolver.lifetime = max_timeout
        resolver.timeout = min(ATTEMPT_TIMEOUT, max_timeout)
        resolver.rotate = rotate
        # EDNS with the DNS Flag Day 2020 payload: SPF-sized TXT answers fit in
        # one UDP reply instead of a truncated one and a retry over TCP.
        resolver.use_edns(0, 0, 1232)
        self._resolver = resolver
        self.max_timeout = max_timeout
        self.cache = Cache(cache_size, clock)
        self.metrics = metrics

    @classmethod
    def from_config(cls, config: Config, metrics: Any = None) -> Resolver:
        """The process's resolver from ``dns-servers``, ``dns-max-timeout`` ...; OptionError on a bad one."""
        servers = []
        for item in config["dns-servers"]:
            try:
                host, port = parse_hostport(item, 53)
                ipaddress.ip_address(host)
            except ValueError:
                raise OptionError(f"option dns-servers: {item!r} is not ip[:port] "
                                  "(write IPv6 as [addr]:port)") from None
            servers.append((host, port))
        return cls(servers, max_timeout=config["dns-max-timeout"], rotate=config["dns-round-robin"],
                   cache_size=config["dns-cache-size"], metrics=metrics)

    @property
    def servers(self) -> list[str]:
        """The name servers asked, as ``ip:port`` (``[ip6]:port``)."""
        out = []
        for ns in self._resolver.nameservers:
            address, port = getattr(ns, "address", str(ns)), getattr(ns, "port", 53)
            out.append(f"[{address}]:{port}" if ":" in address else f"{address}:{port}")
        return out

    # --- one lookup ---

    async def query(self, name: str, rdtype: str) -> Result:
        """Records of one type for one name: cached, bounded, never raises for DNS reasons."""
        rdtype = rdtype.upper()
        try:
            qname = dns.name.from_text(name.strip().rstrip(".") + ".")
        except (dns.exception.DNSException, ValueError):
            result = Result(name, rdtype, Status.NXDOMAIN, error="bad-name")
            self._count(result, None, cached=False)
            return result
        key = (qname.to_text().lower(), rdtype)
        hit = self.cache.get(key)
        if hit is not None:
            self._count(hit, None, cached=True)
            return hit
        started = time.monotonic()
        try:
            result = await self._ask(name, qname, rdtype)
        except asyncio.CancelledError:
            # The check that asked gave up (its check-timeout, SPF's budget): the query
            # still went out, and a DNS outage shows in these series too.
            cut = Result(name, rdtype, Status.TEMPFAIL, error="cancelled")
            self._count(cut, time.monotonic() - started, cached=False)
            raise
        self._count(result, time.monotonic() - started, cached=False)
        self.cache.put(key, result)
        return result

    async def _ask(self, name: str, qname: dns.name.Name, rdtype: str) -> Result:
        try:
            # dnspython's lifetime is only checked between attempts: the outer bound is ours.
            answer = await asyncio.wait_for(
                self._resolver.resolve(qname, rdtype, search=False, lifetime=self.max_timeout),
                self.max_timeout,
            )
        except dns.resolver.NXDOMAIN as exc:
            responses = list(exc.responses().values()) if exc.kwargs.get("responses") else []
            ttl = _negative_ttl(responses[0] if responses else None)
            return Result(name, rdtype, Status.NXDOMAIN, ttl=ttl)
        except dns.resolver.NoAnswer as exc:
            return Result(name, rdtype, Status.NODATA, ttl=_negative_ttl(exc.kwargs.get("response")))
        except (TimeoutError, dns.exception.Timeout):
            return Result(name, rdtype, Status.TEMPFAIL, error="timeout")
        except dns.resolver.NoNameservers as exc:
            return Result(name, rdtype, Status.TEMPFAIL, error=_failure_kind(exc))
        except (dns.exception.DNSException, OSError):
            return Result(name, rdtype, Status.TEMPFAIL, error="error")
        rrset = answer.rrset
        records = tuple(_rdata_value(rdtype, rd) for rd in rrset) if rrset is not None else ()
        if not records:
            return Result(name, rdtype, Status.NODATA, ttl=DEFAULT_NEGATIVE_TTL)
        return Result(name, rdtype, Status.ANSWER, records, ttl=min(rrset.ttl, MAX_TTL))

    def _count(self, result: Result, seconds: float | None, cached: bool) -> None:
        if self.metrics is not None:
            self.metrics.dns(result.rdtype, result.label, seconds, cached)

    # --- what checks ask ---

    async def a(self, name: str) -> Result:
        return await self.query(name, "A")

    async def aaaa(self, name: str) -> Result:
        return await self.query(name, "AAAA")

    async def txt(self, name: str) -> Result:
        return await self.query(name, "TXT")

    async def addresses(self, name: str) -> Result:
        """A and AAAA together: ANSWER if either has records, TEMPFAIL if either
        failed and none answered, NXDOMAIN if the name does not exist."""
        a, aaaa = await asyncio.gather(self.a(name), self.aaaa(name))
        records = a.records + aaaa.records
        if records:
            return Result(name, "A+AAAA", Status.ANSWER, records, min(r.ttl for r in (a, aaaa) if r.found))
        for part in (a, aaaa):
            if part.tempfail:
                return Result(name, "A+AAAA", Status.TEMPFAIL, error=part.error)
        status = Status.NXDOMAIN if Status.NXDOMAIN in (a.status, aaaa.status) else Status.NODATA
        return Result(name, "A+AAAA", status, error=a.error or aaaa.error)

    async def ptr(self, ip: str) -> Result:
        """The PTR names of an address (valid host names only)."""
        try:
            qname = ptr_query(ip)
        except ValueError:
            return Result(ip, "PTR", Status.NXDOMAIN, error="bad-name")
        result = await self.query(qname, "PTR")
        if not result.found:
            return result
        names = tuple(dict.fromkeys(n for n in map(hostname, result.records) if n))
        if not names:
            return Result(qname, "PTR", Status.NODATA, ttl=result.ttl, error="bad-name")
        return Result(qname, "PTR", Status.ANSWER, names, result.ttl)

    async def confirms(self, name: str, ip: str) -> Result:
        """Does ``name`` resolve to ``ip``?  ANSWER with the matching address if
        so, NODATA if it resolves elsewhere or not at all, TEMPFAIL if DNS failed."""
        addr = _address(ip)
        result = await (self.a(name) if addr.version == 4 else self.aaaa(name))
        if result.tempfail:
            return result
        for record in result.records:
            if _address(record) == addr:
                return Result(name, result.rdtype, Status.ANSWER, (record,), result.ttl)
        return Result(name, result.rdtype, Status.NODATA, ttl=result.ttl)

    async def client_name(self, ip: str) -> ClientName:
        """The forward-confirmed PTR name of a client address (FCrDNS).

        The first PTR name (in DNS order, up to four) that resolves back to
        the address is the name; when none does the client is ``forged``,
        unless a forward lookup failed temporarily (then the name is
        unknown for now: ``error``).
        """
        ptr = await self.ptr(ip)
        if ptr.tempfail:
            return ClientName(error=True)
        if not ptr.found:
            return ClientName()
        names = ptr.records[:MAX_PTR_NAMES]
        checks = await asyncio.gather(*(self.confirms(n, ip) for n in names))
        for name, check in zip(names, checks, strict=True):
            if check.found:
                return ClientName(name=name, ptr=name)
        if any(c.tempfail for c in checks):
            return ClientName(ptr=names[0], error=True)
        return ClientName(ptr=names[0], forged=True)

    async def mx(self, domain: str) -> MxResult:
        """The domain's MX hosts by preference, with RFC 5321's implicit MX and RFC 7505's null MX."""
        domain = domain.strip().rstrip(".").lower()
        result = await self.query(domain, "MX")
        if result.found:
            hosts = tuple(sorted(result.records))
            if len(hosts) == 1 and hosts[0].host == "":
                return MxResult(domain, Status.ANSWER, null=True)
            return MxResult(domain, Status.ANSWER, tuple(h for h in hosts if h.host))
        if result.status is not Status.NODATA:
            return MxResult(domain, result.status, error=result.error)
        addresses = await self.addresses(domain)
        if addresses.found:
            return MxResult(domain, Status.ANSWER, (MxRecord(0, domain),), implicit=True)
        status = Status.TEMPFAIL if addresses.tempfail else Status.NODATA
        return MxResult(domain, status, error=addresses.error)

    async def dnsbl(self, item: str, lists: Sequence[DnsList]) -> ListResult:
        """Ask every list about an IP address or a domain at once; the first hit
        in list order wins (smtpf checks its lists in the order given)."""
        if not lists:
            return ListResult()
        try:
            names = [dnsbl_query(item, dl.suffix) for dl in lists]
        except ValueError:
            return ListResult()
        results = await asyncio.gather(*(self.a(n) for n in names))
        for dl, name, result in zip(lists, names, results, strict=True):
            for answer in result.records:
                if dl.listed(answer):
                    return ListResult(Listing(dl, name, answer),
                                      tuple(r for r in results if r.tempfail))
        return ListResult(None, tuple(r for r in results if r.tempfail))
