"""Per-transaction limits every gateway enforces: recipients and hops."""

from __future__ import annotations

from barricade.maps import RouteMap
from barricade.options import Config
from barricade.policy.access import AccessMap, access_checks
from barricade.policy.callback import callback_checks
from barricade.policy.client import ClientTests, client_ptr_checks
from barricade.policy.dnsbl import dns_checks
from barricade.policy.domains import TopLevelDomains
from barricade.policy.dupmsg import dupmsg_checks
from barricade.policy.grey import grey_checks
from barricade.policy.helo import HeloIsPtr, HeloTests
from barricade.policy.mail import MailMxTests, MailTests
from barricade.policy.message_limits import message_limit_checks
from barricade.policy.pipeline import Check, Context
from barricade.policy.rcpt import RcptAddress, RcptTests
from barricade.policy.spf import spf_checks, spf_engine
from barricade.policy.state_limits import parse_failure_policy, store_checks
from barricade.policy.tls_policy import tls_checks
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
                   hostname: str = "", resolver=None, reporter=None) -> list[Check]:
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
    The PTR tests (``client-ptr-required``, ``client-ip-in-ptr``) run between
    ``dns-gl`` and ``dns-bl``, or with ``client-is-mx`` at MAIL after the
    sender's MX lookup (``mail-require-mx``, which notes whether the client is
    an MX of the sender's domain); ``helo-is-ptr`` follows the HELO tests, or
    with ``client-is-mx`` the recipient tests.
    At RCPT, ``Msg-Limit-*`` and ``Length-To:`` come before the access map's
    ``To:`` and ``Null-Rate-To:`` after the recipient tests (smtpf.md §2.F);
    at the dot, dupmsg comes first, then the size, then the access map's
    DISCARD.  ``reporter`` (:class:`barricade.report.Reporter`) mails limit
    reports.
    Only the order within one phase matters: each check runs the hooks it has.
    The call-back (``+call-back``, it needs the ``resolver``) and then
    grey-listing follow the access map's message check, as in smtpf's data
    table (access, call-back, grey).
    SPF (it needs the ``resolver``) is computed at MAIL before the access
    map's ``From:`` (whose SPF words read it) and so before ``mail-require-mx``
    and ``client-is-mx`` (which read it too), the HELO identity after the
    HELO tests, and enforced at RCPT after the recipient tests (smtpf §2.F).
    Raises :class:`~barricade.policy.domains.TldFileError` for a bad
    ``tld-level-one-file``, :class:`~barricade.options.OptionError` for a
    bad ``state-failure`` or ``spf-best-guess-txt``.
    """
    parse_failure_policy(config["state-failure"])
    limits = message_limit_checks(config, access_map, store, metrics, reporter)
    tlds = TopLevelDomains.from_option(config["tld-level-one-file"])
    dns = dns_checks(config, resolver, metrics)
    white = [c for c in dns if c.name in ("dns-wl", "dns-gl")]
    ptr_at_connect, ptr_at_mail = client_ptr_checks(config)
    mx = [MailMxTests(config, resolver, routes)] if resolver is not None and (
        config["mail-require-mx"] or config["client-is-mx"]) else []
    helo_is_ptr = [HeloIsPtr(config)] if config["helo-is-ptr"] else []
    spf = spf_engine(config, resolver, hostname, metrics)
    spf_mail, spf_helo, spf_rcpt = spf_checks(spf)
    return [RcptLimit(config), *tls_checks(access_map), *store_checks(config, access_map, store, metrics, reactor),
            *[limits[n] for n in ("msg-limit",) if n in limits],
            *dupmsg_checks(config, store, metrics),
            *[limits[n] for n in ("length",) if n in limits],
            RcptAddress(config), *spf_mail, *access_checks(config, access_map, spf),
            *white, *ptr_at_connect, *[c for c in dns if c not in white],
            ClientTests(config, tlds), HeloTests(config, routes, hostname), *spf_helo,
            MailTests(config, tlds), *mx, *ptr_at_mail, RcptTests(config, tlds), *helo_is_ptr,
            *spf_rcpt, *[limits[n] for n in ("null-rate-to",) if n in limits],
            *callback_checks(config, store, resolver, hostname, metrics),
            *grey_checks(config, access_map, store, metrics), HopLimit(config)]
