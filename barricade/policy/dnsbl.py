"""smtpf's DNS lists: ``dns-wl``, ``dns-gl``, ``dns-bl`` and ``dns-bl-headers`` (README, "DNS").

At connect, after the access map's ``Connect:`` and in smtpf's order:

* ``dns-wl``: a listed client is white-listed for the session (ACCEPT, like
  ``Connect: OK``): every later test is skipped except anti-virus.
* ``dns-gl``: a listed client skips the tests before DATA (CONTENT, like
  ``Connect: CONTENT``); the content filters still run.
* ``dns-bl``: a listed client gets ``550 5.7.0 <name> [ip] black listed by
  <list>`` (#525) and is dropped; the refusal is flagged DELAY and SESSION,
  so ``+smtp-delay-checks`` holds it until RCPT.  localhost and route-map
  RELAY clients are not looked up (with white-listed ones, smtpf's "usual
  suspects"), nor is a client ``dns-gl`` or ``Connect: CONTENT`` let
  through.

At the end of the headers, ``dns-bl-headers`` names headers whose IP
addresses are looked up in the ``dns-bl`` lists; a listed one refuses the
message (``550 5.7.0 IP [x] in header black listed by <list>``, #873).  It
adds no header.

Each list is ``suffix[/mask]``; every list of an option is asked at once
and the first listed in the order given wins.  A list that does not answer
(timeout, SERVFAIL) counts as not listed, as in smtpf, and is logged;
every lookup is bounded by ``dns-max-timeout`` and these checks' own
timeout is set above it, so a silent DNS server delays a session by at most
that much per option and never turns into a #907.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import Iterator

from twisted.logger import Logger

from barricade.aio import aio
from barricade.client import Kind, in_kinds, unmap
from barricade.dns import DnsList, Listing, Resolver, parse_lists
from barricade.options import Config
from barricade.policy.pipeline import Check, Context
from barricade.policy.verdict import CONTINUE, Action, Flag, Verdict, reject
from barricade.replies import ReplyId

log = Logger()

#: Most distinct addresses dns-bl-headers looks up in one message.
MAX_HEADER_IPS = 20

#: Header addresses that name no outside host: never looked up.
_LAN = Kind.LAN | Kind.LOOPBACK | Kind.LINK_LOCAL | Kind.THIS_NET | Kind.UNSPECIFIED
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?!\.?\d)")
_IPV6_LITERAL = re.compile(r"ipv6:", re.IGNORECASE)
_IPV6 = re.compile(r"(?<![0-9A-Za-z:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![0-9A-Za-z:.])")


def header_ips(value: str) -> Iterator[str]:
    """The global IP addresses written in a header value, in order (LAN and loopback left out)."""
    value = _IPV6_LITERAL.sub(" ", value)  # [IPv6:2001:db8::1] as in Received headers
    found = sorted([(m.start(), m.group()) for m in _IPV4.finditer(value)]
                   + [(m.start(), m.group()) for m in _IPV6.finditer(value)])
    for _, text in found:
        try:
            addr = unmap(ipaddress.ip_address(text))
        except ValueError:
            continue
        if addr.is_multicast or in_kinds(addr, _LAN):
            continue
        yield str(addr)


class DnsListCheck(Check):
    """One DNS list option: parse its lists, ask the resolver, log and count."""

    option = ""

    def __init__(self, config: Config, resolver: Resolver, metrics=None, lists_option: str = ""):
        lists_option = lists_option or self.option
        self.lists: tuple[DnsList, ...] = parse_lists(lists_option, config[lists_option])
        self.resolver = resolver
        self.metrics = metrics
        # One round of parallel lookups, each bounded by dns-max-timeout: the
        # resolver's own timeout (a skip) must come before the pipeline's (#907).
        self.timeout = max(config["check-timeout"], config["dns-max-timeout"] + 2)

    async def lookup(self, ctx: Context, *items: str) -> tuple[str, Listing] | None:
        """Ask every list about every item at once; the first hit in item, then list, order."""

        async def ask_all() -> list:
            return await asyncio.gather(*(self.resolver.dnsbl(item, self.lists) for item in items))

        results = await aio(ask_all())
        for result in results:
            for failed in result.failed:
                log.warn("session {sid}: {check} {name}: DNS {why}; list skipped", sid=ctx.session_id,
                         check=self.name, name=failed.name, why=failed.error or failed.status.value)
        for item, result in zip(items, results, strict=True):
            hit = result.hit
            if hit is not None:
                log.info("session {sid}: {check}: {item} listed by {list} ({answer})", sid=ctx.session_id,
                         check=self.name, item=item, list=hit.dnslist.suffix, answer=hit.answer)
                if self.metrics is not None:
                    self.metrics.count(self.metrics.dns_lists, self.name, hit.dnslist.suffix)
                return item, hit
        return None


class DnsWhiteList(DnsListCheck):
    """``dns-wl``: a listed client skips everything but anti-virus."""

    name = "dns-wl"
    option = "dns-wl"

    async def connect(self, ctx: Context) -> Verdict:
        if ctx.client.localhost or not self.lists:
            return CONTINUE
        if await self.lookup(ctx, ctx.client.ip) is not None:
            return Verdict(Action.ACCEPT)
        return CONTINUE


class DnsGreyList(DnsListCheck):
    """``dns-gl``: a listed client skips the tests before DATA (CONTENT)."""

    name = "dns-gl"
    option = "dns-gl"

    async def connect(self, ctx: Context) -> Verdict:
        if ctx.client.localhost or not self.lists:
            return CONTINUE
        if await self.lookup(ctx, ctx.client.ip) is not None:
            return Verdict(Action.CONTENT)  # at connect: for the whole session
        return CONTINUE


class DnsBlackList(DnsListCheck):
    """``dns-bl``: #525 and drop; DELAY|SESSION so smtp-delay-checks may hold it."""

    name = "dns-bl"
    option = "dns-bl"

    async def connect(self, ctx: Context) -> Verdict:
        client = ctx.client
        if client.localhost or client.relay or not self.lists:
            return CONTINUE
        found = await self.lookup(ctx, client.ip)
        if found is None:
            return CONTINUE
        return Verdict(Action.DROP, ReplyId.DNS_BL_LISTED, {"list": found[1].dnslist.suffix},
                       Flag.DELAY | Flag.SESSION)


class DnsBlHeaders(DnsListCheck):
    """``dns-bl-headers``: IP addresses in the named headers against ``dns-bl`` (#873)."""

    name = "dns-bl-headers"
    option = "dns-bl-headers"

    def __init__(self, config: Config, resolver: Resolver, metrics=None):
        super().__init__(config, resolver, metrics, lists_option="dns-bl")
        self.header_names = frozenset(h.lower().rstrip(":") for h in config["dns-bl-headers"])

    async def headers(self, ctx: Context) -> Verdict:
        client = ctx.client
        if not self.lists or not self.header_names or client.localhost or client.relay:
            return CONTINUE
        ips: dict[str, None] = {}  # in header order, each once
        for name, value in ctx.headers:
            if name.lower() in self.header_names:
                ips.update(dict.fromkeys(header_ips(value)))
        if not ips:
            return CONTINUE
        found = await self.lookup(ctx, *list(ips)[:MAX_HEADER_IPS])
        if found is None:
            return CONTINUE
        return reject(ReplyId.HEADER_IP_BLACK_LISTED, ip=found[0], list=found[1].dnslist.suffix)


def dns_checks(config: Config, resolver: Resolver | None, metrics=None) -> list[Check]:
    """The DNS list checks in smtpf's connect order (wl, gl, bl), those configured only."""
    if resolver is None:
        return []
    checks: list[Check] = []
    if config["dns-wl"]:
        checks.append(DnsWhiteList(config, resolver, metrics))
    if config["dns-gl"]:
        checks.append(DnsGreyList(config, resolver, metrics))
    if config["dns-bl"]:
        checks.append(DnsBlackList(config, resolver, metrics))
        if config["dns-bl-headers"]:
            checks.append(DnsBlHeaders(config, resolver, metrics))
    return checks
