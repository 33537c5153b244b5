"""MAIL-phase tests of the sender (smtpf ``accessMail``'s tail, ``mailTestsMail``).

After the access map's ``Connect:From:`` and ``From:`` lookups, and only when
neither had an entry, a sender in a reserved domain is refused (#128,
``rfc2606-special-domains``), then one under an unknown top-level domain
(#129, ``reject-unknown-tld``; address literals pass).  Both are policy
refusals (``smtp-delay-checks`` holds them until RCPT).  The null sender
has no domain to test.  LAN, localhost and RELAY clients are exempt, and
white-listed sessions never get here.

``mail-require-mx`` and ``client-is-mx`` need DNS and will join this module.
"""

from __future__ import annotations

from barricade.options import Config
from barricade.policy.access import MAIL_HIT
from barricade.policy.domains import TopLevelDomains, domain_of, reserved_domain, usual_suspect
from barricade.policy.pipeline import Check, Context
from barricade.policy.verdict import CONTINUE, Action, Flag, Verdict


class MailTests(Check):
    """#128 (reserved sender domain) and #129 (unknown TLD)."""

    name = "mail-tests"

    def __init__(self, config: Config, tlds: TopLevelDomains):
        self.rfc2606 = config["rfc2606-special-domains"]
        self.unknown_tld = config["reject-unknown-tld"]
        self.tlds = tlds

    async def mail(self, ctx: Context) -> Verdict:
        if usual_suspect(ctx.client) or ctx.notes.get(MAIL_HIT):
            return CONTINUE
        domain = domain_of(ctx.sender)
        if not domain:
            return CONTINUE
        if self.rfc2606 and reserved_domain(domain):
            return Verdict(Action.REJECT, 128, flags=Flag.DELAY)
        if self.unknown_tld and not domain.startswith("[") and not self.tlds.valid(domain):
            return Verdict(Action.REJECT, 129, flags=Flag.DELAY)
        return CONTINUE
