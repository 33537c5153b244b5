"""MAIL-phase tests of the sender (smtpf ``accessMail``'s tail, ``mailTestsMail``).

After the access map's ``Connect:From:`` and ``From:`` lookups, and only when
neither had an entry, a sender in a reserved domain is refused (#128,
``rfc2606-special-domains``), then one under an unknown top-level domain
(#129, ``reject-unknown-tld``; address literals pass).  Both are policy
refusals (``smtp-delay-checks`` holds them until RCPT).  The null sender
has no domain to test.  LAN, localhost and RELAY clients are exempt, and
white-listed sessions never get here.

Then :class:`MailMxTests` (smtpf ``mailTestsMail``), which needs DNS: the
sender domain's mail exchangers (:mod:`barricade.policy.mx`), for

* ``mail-require-mx``: a domain that does not exist or has neither MX nor
  address (553 5.1.8 "has no MX record", #434), or whose exchangers are
  all unusable (a null MX, hosts without an address or with only loopback,
  LAN or reserved ones: 553 5.1.8 "MX invalid", #439), cannot take a
  bounce and is refused; a lookup that fails (timeout, SERVFAIL) is
  451 4.4.3 (#436).  Policy refusals: ``smtp-delay-checks`` holds them;
* ``client-is-mx``: a client that is one of those exchangers is noted
  (:data:`~barricade.policy.mx.CLIENT_IS_MX`) for the softened PTR tests.

The null sender is not refused; for ``client-is-mx`` its domain is the
HELO's (not an address literal).  Domains of the route map (ours) are not
looked up: split DNS often hides them.  LAN, localhost and RELAY clients
are exempt, as are white-listed ones.

Where this differs from smtpf 2.6.10, on purpose: a domain that exists
with neither MX nor address gets #434 "has no MX record" (smtpf: #439,
its implicit-MX list being empty); one usable exchanger is enough even
when another host's lookup failed (smtpf temp-fails any incomplete list
with its later 451 4.1.8 #907, which here would be a needless delay); #436
is flagged DELAY like the refusals, so that a white-listed recipient
(postmaster) still gets mail from a domain with broken DNS; and the
client-is-mx note lasts one transaction (smtpf's flag lasts the session,
vouching for later senders of other domains).
"""

from __future__ import annotations

from twisted.logger import Logger

from barricade.aio import aio
from barricade.dns import Resolver, Status
from barricade.maps import RouteMap
from barricade.options import Config
from barricade.policy.access import MAIL_HIT
from barricade.policy.client import questionable
from barricade.policy.domains import TopLevelDomains, domain_of, literal_ip, reserved_domain, usual_suspect
from barricade.policy.mx import CLIENT_IS_MX, sender_mx
from barricade.policy.pipeline import Check, Context, immediate
from barricade.policy.verdict import CONTINUE, Action, Flag, Verdict
from barricade.replies import ReplyId

log = Logger()


class MailTests(Check):
    """#128 (reserved sender domain) and #129 (unknown TLD)."""

    name = "mail-tests"

    def __init__(self, config: Config, tlds: TopLevelDomains):
        self.rfc2606 = config["rfc2606-special-domains"]
        self.unknown_tld = config["reject-unknown-tld"]
        self.tlds = tlds

    exempt_client = staticmethod(usual_suspect)

    @immediate
    def mail(self, ctx: Context) -> Verdict:
        if usual_suspect(ctx.client) or ctx.notes.get(MAIL_HIT):
            return CONTINUE
        domain = domain_of(ctx.sender)
        if not domain:
            return CONTINUE
        if self.rfc2606 and reserved_domain(domain):
            return Verdict(Action.REJECT, ReplyId.SENDER_RESERVED_DOMAIN, flags=Flag.DELAY)
        if self.unknown_tld and not domain.startswith("[") and not self.tlds.valid(domain):
            return Verdict(Action.REJECT, ReplyId.SENDER_UNKNOWN_TLD, flags=Flag.DELAY)
        return CONTINUE


class MailMxTests(Check):
    """#434, #436, #439 (``mail-require-mx``) and the ``client-is-mx`` note."""

    name = "mail-require-mx"

    def __init__(self, config: Config, resolver: Resolver, routes: RouteMap | None = None):
        self.require_mx = config["mail-require-mx"]
        self.client_is_mx = config["client-is-mx"]
        self.resolver = resolver
        self.routes = routes
        # The MX lookup, then the hosts' addresses: two rounds of lookups,
        # each bounded by the resolver, which must give up before the pipeline.
        self.timeout = max(config["check-timeout"], 2 * config["dns-max-timeout"] + 2)

    def domain(self, ctx: Context) -> tuple[str, bool]:
        """The domain to look up and whether ``mail-require-mx`` applies to it."""
        if ctx.sender:
            domain = domain_of(ctx.sender).lower().rstrip(".")
            if not domain or domain.startswith("["):
                return "", False  # unqualified or an address literal: no MX to ask for
            if self.routes is not None and self.routes.is_our_domain(domain):
                return "", False  # ours: split DNS may hide it from us
            return domain, self.require_mx
        helo = ctx.helo.lower().rstrip(".")
        if not helo or helo.startswith("[") or literal_ip(helo) is not None:
            return "", False
        return helo, False

    exempt_client = staticmethod(usual_suspect)

    async def mail(self, ctx: Context) -> Verdict:
        if usual_suspect(ctx.client) or ctx.sender is None:
            return CONTINUE
        domain, require = self.domain(ctx)
        vouch = self.client_is_mx and questionable(ctx.client)
        if not domain or not (require or vouch):
            return CONTINUE
        found = await aio(sender_mx(self.resolver, domain))
        if found.has(ctx.client.ip):
            ctx.notes[CLIENT_IS_MX] = True
            log.info("session {sid}: client [{ip}] is an MX of {domain}",
                     sid=ctx.session_id, ip=ctx.client.ip, domain=domain)
        if not require:
            return CONTINUE
        fields = {"domain": domain}
        if found.status in (Status.NXDOMAIN, Status.NODATA):
            return Verdict(Action.REJECT, ReplyId.SENDER_NO_MX, fields, Flag.DELAY)
        if found.status is Status.TEMPFAIL:
            log.warn("session {sid}: MX of {domain}: DNS {why}", sid=ctx.session_id, domain=domain,
                     why=found.error or "failure")
            return Verdict(Action.TEMPFAIL, ReplyId.SENDER_MX_ERROR, fields, Flag.DELAY)
        if not found.addresses:
            if found.failed:
                log.warn("session {sid}: MX of {domain}: no usable host yet, some lookups failed",
                         sid=ctx.session_id, domain=domain)
                return Verdict(Action.TEMPFAIL, ReplyId.SENDER_MX_ERROR, fields, Flag.DELAY)
            log.info("session {sid}: MX of {domain} invalid: {why}", sid=ctx.session_id, domain=domain,
                     why="null MX" if found.null else "no routable address for " + ", ".join(found.pruned))
            return Verdict(Action.REJECT, ReplyId.SENDER_MX_INVALID, fields, Flag.DELAY)
        return CONTINUE
