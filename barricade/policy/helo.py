"""HELO/EHLO tests (smtpf ``heloSyntaxHelo``, ``heloTests``, ``heloIsPtr``).

smtpf's helo table runs, after the access map's ``Helo:`` lookup:

1. the syntax test: only letters, digits, ``. : - _ [ ]`` (#423, dropped).
   The session applies it (``barricade.smtp.session``) before any check,
   for every client, since it is a grammar rule;
2. ``helo-ip-mismatch`` (#424): an address-literal HELO must be the
   client's address; goes first in :meth:`HeloTests.helo` (with the HELO's
   A record, which tells whether the HELO names the client);
3. the tests of :class:`HeloTests`, in this order: a reserved domain (#427,
   ``rfc2606-special-domains``; ``.local`` and ``.lan`` are allowed here),
   not a FQDN nor an address literal (#428, ``rfc2821-strict-helo``), a
   name of ours (#430, ``helo-claims-us``);
4. ``helo-is-ptr`` (#432): a separate check after this one, since with
   ``client-is-mx`` it moves to RCPT.

Each refusal drops the client and is a policy refusal that
``smtp-delay-checks`` holds until RCPT.  Localhost, LAN and RELAY clients are
exempt (smtpf's ``accessHelo`` skips the rest of the table for them), and
white-listed sessions never get here.
"""

from __future__ import annotations

from collections.abc import Iterable

from twisted.logger import Logger

from barricade.address import parse_hostport
from barricade.maps import RouteMap
from barricade.options import Config
from barricade.policy.domains import client_name, literal_ip, reserved_domain, usual_suspect
from barricade.policy.pipeline import Check, Context
from barricade.policy.verdict import CONTINUE, Action, Flag, Verdict
from barricade.smtp.grammar import valid_domain_literal

log = Logger()

POLICY_DROP = Flag.DELAY | Flag.SESSION
WILDCARDS = frozenset(("", "0.0.0.0", "::", "::0"))


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
    """#427 (reserved domain), #428 (not FQDN or literal), #430 (claims to be us)."""

    name = "helo-tests"

    def __init__(self, config: Config, routes: RouteMap | None = None, hostname: str = ""):
        self.rfc2606 = config["rfc2606-special-domains"]
        self.strict = config["rfc2821-strict-helo"]
        self.claims_us = config["helo-claims-us"]
        self.routes = routes
        names = {hostname, config["interface-name"]}
        self.our_names = frozenset(n.lower().rstrip(".") for n in names if n)
        self.our_ips = interface_ips(config["interfaces"])

    async def helo(self, ctx: Context) -> Verdict:
        helo = ctx.helo
        if not helo:
            return CONTINUE
        if usual_suspect(ctx.client):
            if self.strict and not fqdn_or_literal(helo):
                log.info("session {sid}: {ip} HELO {helo} is not a FQDN (a host of ours, not refused)",
                         sid=ctx.session_id, ip=ctx.client.ip, helo=helo)
            return CONTINUE
        if self.rfc2606 and reserved_domain(helo, helo=True):
            return Verdict(Action.DROP, 427, flags=POLICY_DROP)
        if self.strict and not fqdn_or_literal(helo):
            return Verdict(Action.DROP, 428, flags=POLICY_DROP)
        if self.claims_us and self.claims_to_be_us(helo, ctx):
            return Verdict(Action.DROP, 430, flags=POLICY_DROP)
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
