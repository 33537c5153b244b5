"""HELO/EHLO tests (smtpf ``heloSyntaxHelo``, ``heloTests``, ``heloIsPtr``).

smtpf's helo table runs, after the access map's ``Helo:`` lookup:

1. the syntax test: only letters, digits, ``. : - _ [ ]`` (#423, dropped).
   The session applies it (``barricade.protocol.session``) before any check,
   for every client, since it is a grammar rule;
2. ``helo-ip-mismatch`` (#424): a HELO that is an address must be the
   client's address.  An address is an address literal (``[192.0.2.1]``,
   ``[IPv6:2001:db8::1]``), a bare IP, or, as smtpf reads it with
   ``strtol``, a whole number in octal, decimal or hexadecimal
   (``3405803785``, ``0xcb007109``: 203.0.113.9).  A HELO address in
   LAN space (RFC 1918, link-local) or in 0.0.0.0/8 is not refused (a NATed
   host may well say its inside address).  A HELO *name* whose A records do
   not include the client is not refused: smtpf only notes it.  This goes
   first in :meth:`HeloTests.helo`;
3. the tests of :class:`HeloTests`, in this order: a reserved domain (#427,
   ``rfc2606-special-domains``; ``.local`` and ``.lan`` are allowed here),
   not a FQDN nor an address literal (#428, ``rfc2821-strict-helo``), a
   name of ours (#430, ``helo-claims-us``);
4. ``helo-is-ptr`` (#432, :class:`HeloIsPtr`): the HELO is the client's PTR
   name and that name is built from the client's address
   (:mod:`barricade.policy.ip_in_ptr`).  With ``client-is-mx`` it moves to
   RCPT (after the recipient tests, as in smtpf), where a client that is an
   MX of the sender's domain or passes its SPF goes on.

Each refusal drops the client and is a policy refusal that
``smtp-delay-checks`` holds until RCPT.  Localhost, LAN and RELAY clients are
exempt (smtpf's ``accessHelo`` skips the rest of the table for them), and
white-listed sessions never get here.
"""

from __future__ import annotations

import ipaddress
import string
from collections.abc import Iterable

from twisted.logger import Logger

from barricade.address import parse_hostport
from barricade.client import Kind, in_kinds, normal_ip
from barricade.maps import RouteMap
from barricade.options import Config
from barricade.policy.domains import client_name, literal_ip, reserved_domain, usual_suspect
from barricade.policy.ip_in_ptr import client_ip_in_ptr
from barricade.policy.mx import vouched_for
from barricade.policy.pipeline import Check, Context, immediate
from barricade.policy.verdict import CONTINUE, Action, Flag, Verdict
from barricade.protocol.grammar import valid_domain_literal
from barricade.replies import ReplyId

log = Logger()

POLICY_DROP = Flag.DELAY | Flag.SESSION
WILDCARDS = frozenset(("", "0.0.0.0", "::", "::0"))

#: A HELO address here is not held against the client (libsnert IS_IP_LAN | IS_IP_THIS_NET).
HELO_LAN = Kind.THIS_NET | Kind.LAN | Kind.LINK_LOCAL | Kind.SITE_LOCAL
_NUMBER_DIGITS = ((8, frozenset(string.octdigits)), (10, frozenset(string.digits)),
                  (16, frozenset(string.hexdigits)))


def helo_address(helo: str) -> str | None:
    """The address a HELO argument stands for, or None when it is a name.

    An address literal or a bare IP; otherwise a whole number as C's
    ``strtol`` reads it, trying octal, then decimal, then hexadecimal (with
    an optional ``0x``), taken modulo 2**32 as an IPv4 address.  So ``123``
    is 0.0.0.83 and ``deadbeef`` is 222.173.190.239, as in smtpf.
    """
    ip = literal_ip(helo)
    if ip is not None:
        return ip
    for base, digits in _NUMBER_DIGITS:
        text = helo[2:] if base == 16 and helo[:2].lower() == "0x" else helo
        if text and all(ch in digits for ch in text):
            value = min(int(text, base), 2**63 - 1)  # strtol saturates at LONG_MAX
            return str(ipaddress.IPv4Address(value & 0xFFFFFFFF))
    return None


def helo_ip_mismatch(helo: str, client_ip: str) -> bool:
    """An address HELO that is not the client's (and not a LAN one)."""
    ip = helo_address(helo)
    if ip is None:
        return False
    addr = ipaddress.ip_address(ip)
    if in_kinds(addr, HELO_LAN):
        return False
    return addr != normal_ip(client_ip)


def fqdn_or_literal(helo: str) -> bool:
    """``rfc2821-strict-helo``: a FQDN or an address literal, not a bare IP.

    smtpf's test: the first dot must exist and not end the name
    (``name.`` and ``name`` fail, ``.com`` passes), and an IP must be in
    brackets.  Unlike smtpf, an IPv6 literal (``[IPv6:2001:db8::1]``) passes
    although it has no dot: the reply says address literals are welcome.
    """
    if helo.startswith("[") and helo.endswith("]") and valid_domain_literal(helo):
        return True
    if literal_ip(helo) is not None and not helo.startswith("["):
        return False  # a bare IP, dotted or not
    dot = helo.find(".")
    return 0 <= dot < len(helo) - 1


def interface_ips(interfaces: Iterable[str]) -> frozenset[str]:
    """The addresses of the ``interfaces`` option, wildcards left out."""
    ips = set()
    for item in interfaces:
        try:
            host, _ = parse_hostport(item, 25)
        except ValueError:
            continue
        ip = literal_ip(host)
        if ip is not None and host not in WILDCARDS:
            ips.add(ip)
    return frozenset(ips)


class HeloTests(Check):
    """#424 (address not the client's), #427 (reserved domain), #428 (not FQDN or
    literal), #430 (claims to be us)."""

    name = "helo-tests"
    exempt_client = staticmethod(usual_suspect)

    def __init__(self, config: Config, routes: RouteMap | None = None, hostname: str = ""):
        self.rfc2606 = config["rfc2606-special-domains"]
        self.strict = config["rfc2821-strict-helo"]
        self.claims_us = config["helo-claims-us"]
        self.ip_mismatch = config["helo-ip-mismatch"]
        self.routes = routes
        names = {hostname, config["interface-name"]}
        self.our_names = frozenset(n.lower().rstrip(".") for n in names if n)
        self.our_ips = interface_ips(config["interfaces"])

    @immediate
    def helo(self, ctx: Context) -> Verdict:
        helo = ctx.helo
        if not helo:
            return CONTINUE
        if usual_suspect(ctx.client):
            return CONTINUE  # not even a bare HELO is refused (nor logged: it would be every session)
        if self.ip_mismatch and helo_ip_mismatch(helo, ctx.client.ip):
            return Verdict(Action.DROP, ReplyId.HELO_NOT_CLIENT_IP, flags=POLICY_DROP)
        if self.rfc2606 and reserved_domain(helo, helo=True):
            return Verdict(Action.DROP, ReplyId.HELO_RESERVED_DOMAIN, flags=POLICY_DROP)
        if self.strict and not fqdn_or_literal(helo):
            return Verdict(Action.DROP, ReplyId.HELO_NOT_FQDN, flags=POLICY_DROP)
        if self.claims_us and self.claims_to_be_us(helo, ctx):
            return Verdict(Action.DROP, ReplyId.HELO_CLAIMS_US, flags=POLICY_DROP)
        return CONTINUE

    def ours(self, name: str) -> bool:
        """A route-map domain (smtpf's routeKnownDomain), our host name or address."""
        name = name.lower().rstrip(".")
        if name in self.our_names:
            return True
        ip = literal_ip(name)
        if ip is not None and ip in self.our_ips:
            return True
        return self.routes is not None and self.routes.is_our_domain(name)

    def claims_to_be_us(self, helo: str, ctx: Context) -> bool:
        """The HELO is ours while the client's PTR name is not in one of our domains."""
        name = client_name(ctx.client)
        if name and self.routes is not None and self.routes.is_our_domain(name):
            return False  # one of our hosts (a backup MX, an outbound relay)
        return self.ours(helo)


class HeloIsPtr(Check):
    """#432: the HELO is the client's IP-in-PTR name (``helo-is-ptr``)."""

    name = "helo-is-ptr"

    def __init__(self, config: Config):
        self.client_is_mx = config["client-is-mx"]

    def test(self, ctx: Context) -> Verdict:
        client = ctx.client
        if usual_suspect(client) or not client.ptr or not ctx.helo:
            return CONTINUE
        if ctx.helo.lower().rstrip(".") != client.ptr or not client_ip_in_ptr(client):
            return CONTINUE
        return Verdict(Action.DROP, ReplyId.HELO_IS_IP_IN_PTR, flags=POLICY_DROP)

    @immediate
    def helo(self, ctx: Context) -> Verdict:
        return CONTINUE if self.client_is_mx else self.test(ctx)

    @immediate
    def rcpt(self, ctx: Context, rcpt: str) -> Verdict:
        if not self.client_is_mx or vouched_for(ctx.notes):
            return CONTINUE
        return self.test(ctx)
