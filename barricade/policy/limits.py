"""Per-transaction limits every gateway enforces: recipients and hops."""

from __future__ import annotations

from twisted.logger import Logger

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
from barricade.policy.pipeline import Check, Context, immediate
from barricade.policy.rcpt import RcptAddress, RcptTests
from barricade.policy.spf import spf_checks, spf_engine
from barricade.policy.state_limits import parse_failure_policy, store_checks
from barricade.policy.tls_policy import tls_checks
from barricade.policy.verdict import CONTINUE, Verdict, reject, tempfail
from barricade.replies import ReplyId

log = Logger()


class RcptLimit(Check):
    """452 4.5.3 past ``message-rcpt-limit`` recipients (RFC 5321 4.5.3.1.8).

    A temporary reply: well-behaved clients send the remaining recipients
    in a second transaction.
    """

    name = "rcpt-limit"
    always = True

    def __init__(self, config: Config):
        self.limit = config["message-rcpt-limit"]

    @immediate
    def rcpt(self, ctx: Context, rcpt: str) -> Verdict:
        if len(ctx.rcpts) >= self.limit:
            return tempfail(ReplyId.TOO_MANY_RECIPIENTS, limit=self.limit)
        return CONTINUE


class HopLimit(Check):
    """554 5.4.6 when a message has passed too many hops: a mail loop."""

    name = "hop-limit"
    always = True

    def __init__(self, config: Config):
        self.limit = config["message-hop-limit"]

    @immediate
    def headers(self, ctx: Context) -> Verdict:
        count = sum(1 for name, _ in ctx.headers if name.lower() == "received")
        if count > self.limit:
            return reject(ReplyId.MAIL_LOOP, count=count)
        return CONTINUE


def builtin_checks(config: Config, access_map: AccessMap | None = None, store=None,
                   metrics=None, reactor=None, routes: RouteMap | None = None,
                   hostname: str = "", resolver=None, reporter=None) -> list[Check]:
    """The configured built-in checks.

    The order they run in is not this list's: it is the per-phase table of
    :mod:`barricade.policy.order` (the pipeline arranges them by name).
    ``reporter`` (:class:`barricade.report.Reporter`) mails limit reports.
    Raises :class:`~barricade.policy.domains.TldFileError` for a bad
    ``tld-level-one-file``, :class:`~barricade.options.OptionError` for a
    bad ``state-failure`` or ``spf-best-guess-txt``.
    """
    parse_failure_policy(config["state-failure"])
    limits = message_limit_checks(config, access_map, store, metrics, reporter)
    tlds = TopLevelDomains.from_option(config["tld-level-one-file"])
    if config["reject-unknown-tld"]:
        log.info("reject-unknown-tld: {n} top-level domains from {source}", n=len(tlds), source=tlds.source)
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
