"""Connect-phase tests of the client's name (smtpf ``accessConnect``'s tail).

After the access map's ``Connect:`` lookup, and only when it had no entry
for the client, smtpf refuses a PTR name in a reserved domain (#121,
``rfc2606-special-domains``) or under an unknown top-level domain (#122,
``reject-unknown-tld``).  Both drop the connection and are policy
refusals: ``smtp-delay-checks`` holds them until RCPT.  LAN and localhost
clients are exempt.

The name is the client's PTR name (``ClientInfo.name``); today XCLIENT
NAME= sets it, and the PTR lookups (``client-ptr-required``,
``client-ip-in-ptr``) will fill it and join this module.
"""

from __future__ import annotations

from barricade.options import Config
from barricade.policy.access import CONNECT_HIT
from barricade.policy.domains import TopLevelDomains, client_name, lan_or_localhost, reserved_domain
from barricade.policy.pipeline import Check, Context
from barricade.policy.verdict import CONTINUE, Action, Flag, Verdict

POLICY_DROP = Flag.DELAY | Flag.SESSION


class ClientTests(Check):
    """#121 (reserved domain) and #122 (unknown TLD) for the client's PTR name."""

    name = "client-tests"

    def __init__(self, config: Config, tlds: TopLevelDomains):
        self.rfc2606 = config["rfc2606-special-domains"]
        self.unknown_tld = config["reject-unknown-tld"]
        self.tlds = tlds

    async def connect(self, ctx: Context) -> Verdict:
        if lan_or_localhost(ctx.client) or ctx.notes.get(CONNECT_HIT):
            return CONTINUE
        name = client_name(ctx.client)
        if not name:
            return CONTINUE
        if self.rfc2606 and reserved_domain(name):
            return Verdict(Action.DROP, 121, flags=POLICY_DROP)
        if self.unknown_tld and not self.tlds.valid(name):
            return Verdict(Action.DROP, 122, flags=POLICY_DROP)
        return CONTINUE
