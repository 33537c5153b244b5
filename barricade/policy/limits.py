"""Per-transaction limits every gateway enforces: recipients and hops."""

from __future__ import annotations

from barricade.maps import RouteMap
from barricade.options import Config
from barricade.policy.access import AccessMap, access_checks
from barricade.policy.client import ClientTests
from barricade.policy.dnsbl import dns_checks
from barricade.policy.domains import TopLevelDomains
from barricade.policy.grey import grey_checks
from barricade.policy.helo import HeloTests
from barricade.policy.mail import MailTests
from barricade.policy.pipeline import Check, Context
from barricade.policy.rcpt import RcptAddress, RcptTests
from barricade.policy.spf import spf_checks, spf_engine
from barricade.policy.state_limits import store_checks
from barricade.policy.verdict import CONTINUE, Verdict, reject, tempfail


class RcptLimit(Check):
    """452 4.5.3 past ``message-rcpt-limit`` recipients (RFC 5321 4.5.3.1.8).

    A temporary reply: well-behaved clients send the remaining recipients
    in a second transaction.
    """

    name = "rcpt-limit"
    always = True

    def __init__(self, config: Config):
        self.limit = config["message-rcpt-limit"]

    async def rcpt(self, ctx: Context, rcpt: str) -> Verdict:
        if len(ctx.rcpts) >= self.limit:
            return tempfail(910, limit=self.limit)
        return CONTINUE


class HopLimit(Check):
    """554 5.4.6 when a message has passed too many hops: a mail loop."""

    name = "hop-limit"
    always = True

    def __init__(self, config: Config):
        self.limit = config["message-hop-limit"]

    async def headers(self, ctx: Context) -> Verdict:
        count = sum(1 for name, _ in ctx.headers if name.lower() == "received")
        if count > self.limit:
            return reject(911, count=count)
        return CONTINUE


def builtin_checks(config: Config, access_map: AccessMap | None = None, store=None,
                   metrics=None, reactor=None, routes: RouteMap | None = None,
                   hostname: str = "", resolver=None) -> list[Check]:
    """The built-in checks in smtpf's order (``smtpf.md`` section 8).

    The recipient limit comes first: it is a protocol limit that a
    white-listed recipient must not lift.  ``Rate-Connect:`` and
    ``Concurrent-Connect:`` (they need the map and the shared ``store``) run
    before the access map's ``Connect:``, as smtpf's connect table has them;
    the DNS lists (``dns-wl``, ``dns-gl``, ``dns-bl``, they need the
    ``resolver``) come after it.
    The recipient-form tests (#131-#133) precede the access map's ``To:``, as
    in smtpf's ``accessRcpt``; the client, HELO, sender and recipient tests
    follow the access map's lookup of their phase (they skip what it listed).
    Only the order within one phase matters: each check runs the hooks it has.
    Grey-listing follows the access map's message check, as in smtpf's data
    table (access, call-back, grey).
    SPF (it needs the ``resolver``) is computed at MAIL before the access
    map's ``From:`` (whose SPF words read it), the HELO identity after the
    HELO tests, and enforced at RCPT after the recipient tests (smtpf §2.F).
    Raises :class:`~barricade.policy.domains.TldFileError` for a bad
    ``tld-level-one-file``, OptionError for a bad ``spf-best-guess-txt``.
    """
    tlds = TopLevelDomains.from_option(config["tld-level-one-file"])
    spf = spf_engine(config, resolver, hostname, metrics)
    spf_mail, spf_helo, spf_rcpt = spf_checks(spf)
    return [RcptLimit(config), *store_checks(config, access_map, store, metrics, reactor),
            RcptAddress(config), *spf_mail, *access_checks(config, access_map, spf),
            *dns_checks(config, resolver, metrics),
            ClientTests(config, tlds), HeloTests(config, routes, hostname), *spf_helo,
            MailTests(config, tlds), RcptTests(config, tlds), *spf_rcpt,
            *grey_checks(config, access_map, store, metrics), HopLimit(config)]
