"""RCPT-phase tests of the recipient (smtpf ``accessRcpt`` and ``rcptTestsRcpt``).

Two checks, in smtpf's order around the access map's ``To:`` lookups:

* :class:`RcptAddress`, before the access map and for every client, even
  white-listed ones: a ``%`` (the ``user%other@our.domain`` routing hack,
  #131, ``reject-percent-relay``), a ``!`` (a UUCP path, #132,
  ``reject-uucp-route``), an ``@`` inside a quoted local part (#133,
  ``reject-quoted-at-sign``).
* :class:`RcptTests`, after it: when the access map had no entry for the
  recipient and the client is not LAN, localhost or RELAY, a reserved
  domain (#140) or an unknown top-level domain (#141; address literals and
  ``postmaster`` pass); then, for every client that is not white-listed, a
  second recipient for the null sender (#441, ``one-rcpt-per-null``: a DSN
  or MDN goes to one address).

The null recipient ``RCPT TO:<>`` (#286) is a grammar error, refused by the
session before any check.  ``helo-is-ptr`` with ``client-is-mx`` follows
:class:`RcptTests` at RCPT (:class:`barricade.policy.helo.HeloIsPtr`).
"""

from __future__ import annotations

from barricade.maps import strip_detail
from barricade.options import Config
from barricade.policy.access import RCPT_HIT
from barricade.policy.domains import TopLevelDomains, domain_of, local_part, reserved_domain, usual_suspect
from barricade.policy.pipeline import Check, Context, immediate
from barricade.policy.verdict import CONTINUE, Verdict, reject
from barricade.replies import ReplyId


class RcptAddress(Check):
    """#131, #132, #133: recipient forms that only serve to relay."""

    name = "rcpt-address"
    always = True  # smtpf tests them before any white list applies

    def __init__(self, config: Config):
        self.percent = config["reject-percent-relay"]
        self.uucp = config["reject-uucp-route"]
        self.quoted_at = config["reject-quoted-at-sign"]

    @immediate
    def rcpt(self, ctx: Context, rcpt: str) -> Verdict:
        if self.percent and "%" in rcpt:
            return reject(ReplyId.RECIPIENT_ROUTED_ADDRESS)
        if self.uucp and "!" in rcpt:
            return reject(ReplyId.RECIPIENT_UUCP_ADDRESS)
        if self.quoted_at and "@" in local_part(rcpt):
            return reject(ReplyId.RECIPIENT_QUOTED_AT)
        return CONTINUE


class RcptTests(Check):
    """#140 (reserved domain), #141 (unknown TLD), #441 (one recipient per null sender)."""

    name = "rcpt-tests"

    def __init__(self, config: Config, tlds: TopLevelDomains):
        self.rfc2606 = config["rfc2606-special-domains"]
        self.unknown_tld = config["reject-unknown-tld"]
        self.one_per_null = config["one-rcpt-per-null"]
        self.tlds = tlds

    @immediate
    def rcpt(self, ctx: Context, rcpt: str) -> Verdict:
        if not (usual_suspect(ctx.client) or ctx.notes.get(RCPT_HIT)):
            domain = domain_of(rcpt)
            if domain and self.rfc2606 and reserved_domain(domain):
                return reject(ReplyId.RECIPIENT_RESERVED_DOMAIN)
            if (domain and self.unknown_tld and not domain.startswith("[")
                    and strip_detail(local_part(rcpt)).lower() != "postmaster"
                    and not self.tlds.valid(domain)):
                return reject(ReplyId.RECIPIENT_UNKNOWN_TLD)
        if self.one_per_null and ctx.sender == "" and ctx.rcpts:
            return reject(ReplyId.NULL_SENDER_RECIPIENTS)
        return CONTINUE
