"""Per-transaction limits every gateway enforces: recipients and hops."""

from __future__ import annotations

from barricade.options import Config
from barricade.policy.access import AccessMap, access_checks
from barricade.policy.dupmsg import dupmsg_checks
from barricade.policy.message_limits import message_limit_checks
from barricade.policy.pipeline import Check, Context
from barricade.policy.state_limits import parse_failure_policy, store_checks
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
                   metrics=None, reactor=None, reporter=None) -> list[Check]:
    """The built-in checks in smtpf's order (``smtpf.md`` section 8).

    The recipient limit comes first: it is a protocol limit that a
    white-listed recipient must not lift.  ``Rate-Connect:`` and
    ``Concurrent-Connect:`` (they need the map and the shared ``store``) run
    before the access map's ``Connect:``, as smtpf's connect table has them.
    At RCPT, ``Msg-Limit-*`` and ``Length-To:`` come before the access map's
    ``To:`` and ``Null-Rate-To:`` after it (smtpf.md §2.F); at the dot,
    dupmsg comes first, then the size, then the access map's DISCARD.
    ``reporter`` (:class:`barricade.report.Reporter`) mails limit reports.
    Raises :class:`~barricade.options.OptionError` for a bad ``state-failure``.
    """
    parse_failure_policy(config["state-failure"])
    limits = message_limit_checks(config, access_map, store, metrics, reporter)
    return [RcptLimit(config), *store_checks(config, access_map, store, metrics, reactor),
            *[limits[n] for n in ("msg-limit",) if n in limits],
            *dupmsg_checks(config, store, metrics),
            *[limits[n] for n in ("length",) if n in limits],
            *access_checks(config, access_map),
            *[limits[n] for n in ("null-rate-to",) if n in limits],
            HopLimit(config)]
