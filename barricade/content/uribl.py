"""The URI black lists and heuristics (docs/content.md), deciding on the hosts a message names.

Every host is judged on its own and all hosts at once (one asyncio task
each); within a message every DNS question is asked once
(:class:`Asker` keeps the answers, and the shared resolver caches them
across messages).  The first host, in the order the message names them,
that something says no to decides: :class:`Hit` carries the reply id and
fields from smtpf's catalogue, and names the URI and the list for the log.

Tests in smtpf's spirit, cheapest first: the access map's ``Body:`` (OK
passes the host, REJECT refuses it, #763), ``uri-require-domain`` (#765),
``uri-bl`` on the registered domain (and its sub-domains with
``+uri-sub-domains``, #762), ``domain-bl`` on the host (#762), then what
needs the host's addresses: ``uri-reject-unknown`` (#757),
``uri-reject-on-timeout`` (#756), ``uri-ip-in-name`` (#754),
``uri-dns-bl`` (#776), ``uri-ip-in-ptr`` (#758), ``uri-require-ptr``
(#760); ``uri-valid-soa`` (#745) and the name servers' lists ``ns-bl`` and
``ns-a-bl`` (#788) last.  A host that is an IP address is looked up
reversed in ``uri-bl`` (as SURBL-style lists publish them) and in
``uri-dns-bl``, never in ``domain-bl``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from barricade.content.uri import Found, is_ip, normalize_host, registered_domain, sub_domains
from barricade.dns import DnsList, Listing, Result, dnsbl_query, parse_lists, ptr_query
from barricade.policy.ip_in_ptr import ip_in_name
from barricade.replies import ReplyId

BODY_REJECTED = ReplyId.URI_BODY_REJECTED
IP_IN_URL = ReplyId.URI_IP_HOST
LISTED_DOMAIN = ReplyId.URI_DOMAIN_LISTED
LISTED_HOST = ReplyId.URI_HOST_LISTED
UNKNOWN = ReplyId.URI_DOMAIN_UNKNOWN
TIMEOUT = ReplyId.URI_DOMAIN_TIMEOUT
IP_IN_NAME = ReplyId.URI_IP_IN_NAME
IP_IN_PTR = ReplyId.URI_IP_IN_PTR
NO_PTR = ReplyId.URI_NO_PTR
NO_SOA = ReplyId.URI_NO_SOA
NS_REJECTED = ReplyId.URI_NS_REJECTED
MAX_NS = 4  # name servers of one domain asked about
MAX_ADDRESSES = 8  # addresses of one host asked about


@dataclass(frozen=True)
class Hit:
    """Why a host is refused: the reply, and for logs and metrics the check and list."""

    reply_id: int
    fields: dict[str, object]
    found: Found
    reason: str  # the option or heuristic: uri-bl, domain-bl, uri-ip-in-name ...
    list: str = ""  # the DNS list, when one said so

    def describe(self) -> str:
        what = f"{self.reason} {self.list}".strip()
        return f"{self.found.url} ({self.found.host}): {what}"


@dataclass(frozen=True)
class Settings:
    """The uri plugin's options, parsed once."""

    uri_bl: tuple[DnsList, ...] = ()
    uri_dns_bl: tuple[DnsList, ...] = ()
    domain_bl: tuple[DnsList, ...] = ()
    ns_bl: tuple[DnsList, ...] = ()
    ns_a_bl: tuple[DnsList, ...] = ()
    sub_domains: bool = False
    max_test: int = 10
    ip_in_name: bool = False
    ip_in_ptr: int = 0
    require_ptr: int = 0
    require_domain: bool = False
    reject_unknown: bool = False
    reject_on_timeout: bool = False
    valid_soa: bool = False
    cite_list: bool = True

    @classmethod
    def from_config(cls, config: Any) -> Settings:
        def lists(name: str) -> tuple[DnsList, ...]:
            return parse_lists(name, config.get(name) or [])

        return cls(
            lists("uri-bl"), lists("uri-dns-bl"), lists("domain-bl"), lists("ns-bl"), lists("ns-a-bl"),
            bool(config.get("uri-sub-domains")), int(config.get("uri-max-test", 10) or 0),
            bool(config.get("uri-ip-in-name")), int(config.get("uri-ip-in-ptr", 0) or 0),
            int(config.get("uri-require-ptr", 0) or 0), bool(config.get("uri-require-domain")),
            bool(config.get("uri-reject-unknown")), bool(config.get("uri-reject-on-timeout")),
            bool(config.get("uri-valid-soa")), bool(config.get("uri-cite-list", True)),
        )

    @property
    def needs_addresses(self) -> bool:
        return bool(self.uri_dns_bl or self.ip_in_name or self.ip_in_ptr or self.require_ptr
                    or self.reject_unknown or self.reject_on_timeout)

    @property
    def active(self) -> bool:
        """Is there anything to test besides the access map?"""
        return bool(self.uri_bl or self.domain_bl or self.ns_bl or self.ns_a_bl or self.require_domain
                    or self.valid_soa or self.needs_addresses)

    def cite(self, dnslist: DnsList) -> str:
        """``+uri-cite-list`` names the list in the reply; without it, only a list is said."""
        return dnslist.suffix if self.cite_list else "a URI black list"


def choose(found: Iterable[Found], max_test: int) -> list[Found]:
    """The hosts to test: every host of the first ``max_test`` distinct domains (0: all)."""
    chosen: list[Found] = []
    domains: set[str] = set()
    for f in found:
        domain = registered_domain(f.host) or f.host
        if domain not in domains:
            if max_test and len(domains) >= max_test:
                continue
            domains.add(domain)
        chosen.append(f)
    return chosen


class Asker:
    """A message's DNS questions, each asked once (``resolver.query`` answers the rest).

    A question is awaited in the task that asks it first, so an answer the
    resolver has cached costs no task switch; a second asker of the same
    question meanwhile waits for the first one's future.
    """

    def __init__(self, resolver: Any):
        self.resolver = resolver
        self._asked: dict[tuple[str, str], Result | asyncio.Future] = {}
        self.questions = 0

    async def query(self, name: str, rdtype: str) -> Result:
        key = (name.lower(), rdtype)
        known = self._asked.get(key)
        if isinstance(known, Result):
            return known
        if known is not None:
            return await asyncio.shield(known)
        self.questions += 1
        future = self._asked[key] = asyncio.get_running_loop().create_future()
        try:
            result = await self.resolver.query(name, rdtype)
        except BaseException as exc:
            del self._asked[key]
            if not future.done():
                if isinstance(exc, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(exc)
                    future.exception()  # retrieved: nobody else may be waiting
            raise
        self._asked[key] = result
        future.set_result(result)
        return result

    async def listed(self, item: str, lists: Sequence[DnsList]) -> Listing | None:
        """The first list (in the order given) that lists ``item``; failures count as not listed."""
        try:
            names = [dnsbl_query(item, dl.suffix) for dl in lists]
        except ValueError:
            return None
        if len(names) == 1:
            results = [await self.query(names[0], "A")]
        else:
            results = await asyncio.gather(*(self.query(n, "A") for n in names))
        for dl, name, result in zip(lists, names, results, strict=True):
            for answer in result.records:
                if dl.listed(answer):
                    return Listing(dl, name, answer)
        return None

    async def addresses(self, host: str) -> Result:
        return await self.query(host, "A")

    def cancel(self) -> None:
        for pending in self._asked.values():
            if isinstance(pending, asyncio.Future):
                pending.cancel()


BodyLookup = Callable[[str], str | None]  # host -> "OK", "REJECT" or None


@dataclass
class Judge:
    """Judges the hosts of one message (or one envelope name)."""

    settings: Settings
    asker: Asker
    body: BodyLookup | None = None
    timed_out: list[Found] = field(default_factory=list)

    async def first_hit(self, found: Sequence[Found]) -> Hit | None:
        """All hosts at once; the first in message order that is refused."""
        if not found:
            return None
        results = await asyncio.gather(*(self.host(f) for f in found))
        return next((r for r in results if r is not None), None)

    async def host(self, f: Found) -> Hit | None:
        s = self.settings
        if self.body is not None:
            word = self.body(f.host)
            if word == "OK":
                return None
            if word == "REJECT":
                return Hit(BODY_REJECTED, {"host": f.host}, f, "body-tag")
        if f.ip:
            return await self._ip_host(f)
        domain = registered_domain(f.host) or f.host
        if s.uri_bl:
            names = [domain]
            if s.sub_domains:
                names += [n for n in reversed(sub_domains(f.host)) if n != domain]
            for name in names:
                listing = await self.asker.listed(name, s.uri_bl)
                if listing is not None:
                    return Hit(LISTED_DOMAIN, {"domain": name, "list": s.cite(listing.dnslist)}, f,
                               "uri-bl", listing.dnslist.suffix)
        if s.domain_bl:
            listing = await self.asker.listed(f.host, s.domain_bl)
            if listing is not None:
                return Hit(LISTED_DOMAIN, {"domain": f.host, "list": s.cite(listing.dnslist)}, f,
                           "domain-bl", listing.dnslist.suffix)
        if s.needs_addresses and f.kind != "mail":
            hit = await self._addresses(f)
            if hit is not None:
                return hit
        if s.valid_soa:
            soa = await self.asker.query(domain, "SOA")
            if soa.missing:
                return Hit(NO_SOA, {"domain": domain, "reason": "no SOA record"}, f, "uri-valid-soa")
        if s.ns_bl or s.ns_a_bl:
            return await self._name_servers(f, domain)
        return None

    async def _ip_host(self, f: Found) -> Hit | None:
        s = self.settings
        if s.require_domain and f.kind == "url":
            return Hit(IP_IN_URL, {"url": f.url}, f, "uri-require-domain")
        if s.uri_bl:
            listing = await self.asker.listed(f.host, s.uri_bl)
            if listing is not None:
                return Hit(LISTED_DOMAIN, {"domain": f.host, "list": s.cite(listing.dnslist)}, f,
                           "uri-bl", listing.dnslist.suffix)
        if s.uri_dns_bl:
            listing = await self.asker.listed(f.host, s.uri_dns_bl)
            if listing is not None:
                return Hit(LISTED_HOST, {"host": f.host, "list": s.cite(listing.dnslist)}, f,
                           "uri-dns-bl", listing.dnslist.suffix)
        return None

    async def _addresses(self, f: Found) -> Hit | None:
        s = self.settings
        result = await self.asker.addresses(f.host)
        if result.tempfail:
            self.timed_out.append(f)
            if s.reject_on_timeout:
                return Hit(TIMEOUT, {"domain": f.host}, f, "uri-reject-on-timeout")
            return None
        if result.status.value == "nxdomain":
            if s.reject_unknown:
                return Hit(UNKNOWN, {"domain": f.host}, f, "uri-reject-unknown")
            return None
        ips = [ip for ip in result.records][:MAX_ADDRESSES]
        if not ips:
            return None
        if s.ip_in_name:
            for ip in ips:
                if ip_in_name(f.host, ip):
                    return Hit(IP_IN_NAME, {"host": f.host, "ip": ip}, f, "uri-ip-in-name")
        if s.uri_dns_bl:
            listings = await asyncio.gather(*(self.asker.listed(ip, s.uri_dns_bl) for ip in ips))
            for listing in listings:
                if listing is not None:
                    return Hit(LISTED_HOST, {"host": f.host, "list": s.cite(listing.dnslist)}, f,
                               "uri-dns-bl", listing.dnslist.suffix)
        wants_ptr = (s.ip_in_ptr and len(ips) >= s.ip_in_ptr) or (s.require_ptr and len(ips) >= s.require_ptr)
        if wants_ptr:
            ptrs = await asyncio.gather(*(self.asker.query(ptr_query(ip), "PTR") for ip in ips))
            for ip, ptr in zip(ips, ptrs, strict=True):
                if s.require_ptr and len(ips) >= s.require_ptr and ptr.missing:
                    return Hit(NO_PTR, {"host": f.host}, f, "uri-require-ptr")
                if s.ip_in_ptr and len(ips) >= s.ip_in_ptr:
                    for name in ptr.records:
                        if ip_in_name(name, ip):
                            return Hit(IP_IN_PTR, {"host": f.host, "ip": ip, "ptr": name}, f, "uri-ip-in-ptr")
        return None

    async def _name_servers(self, f: Found, domain: str) -> Hit | None:
        s = self.settings
        ns = await self.asker.query(domain, "NS")
        names = list(ns.records)[:MAX_NS]
        for name in names:
            if s.ns_bl:
                listing = await self.asker.listed(name, s.ns_bl)
                if listing is not None:
                    return Hit(NS_REJECTED, {"ns": name, "reason": f"black listed by {s.cite(listing.dnslist)}"},
                               f, "ns-bl", listing.dnslist.suffix)
            if s.ns_a_bl:
                addresses = await self.asker.addresses(name)
                for ip in list(addresses.records)[:MAX_ADDRESSES]:
                    listing = await self.asker.listed(ip, s.ns_a_bl)
                    if listing is not None:
                        reason = f"address {ip} black listed by {s.cite(listing.dnslist)}"
                        return Hit(NS_REJECTED, {"ns": name, "reason": reason}, f, "ns-a-bl",
                                   listing.dnslist.suffix)
        return None


def envelope_names(name: str) -> list[Found]:
    """A HELO argument, a sender domain or a client name as a host to judge (none for an IP)."""
    host = normalize_host(name.strip("[]"))
    if host is None or is_ip(host):
        return []
    return [Found(host, name, "host")]
