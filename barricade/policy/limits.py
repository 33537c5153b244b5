"""Per-transaction limits every gateway enforces: recipients and hops."""

from __future__ import annotations

from barricade.options import Config
from barricade.policy.access import AccessMap, access_checks
from barricade.policy.dnsbl import dns_checks
from barricade.policy.pipeline import Check, Context
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
                   metrics=None, reactor=None, resolver=None) -> list[Check]:
    """The built-in checks in smtpf's order (``smtpf.md`` section 8).

    The recipient limit comes first: it is a protocol limit that a
    white-listed recipient must not lift.  ``Rate-Connect:`` and
    ``Concurrent-Connect:`` (they need the map and the shared ``store``) run
    before the access map's ``Connect:``, as smtpf's connect table has them;
    the DNS lists (``dns-wl``, ``dns-gl``, ``dns-bl``, they need the
    ``resolver``) come after it.
    """
    return [RcptLimit(config), *store_checks(config, access_map, store, metrics, reactor),
            *access_checks(config, access_map), *dns_checks(config, resolver, metrics),
            HopLimit(config)]
