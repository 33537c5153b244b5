"""Connect-phase tests of the client's name (smtpf ``accessConnect``'s tail).

After the access map's ``Connect:`` lookup, and only when it had no entry
for the client, smtpf refuses a PTR name in a reserved domain (#121,
``rfc2606-special-domains``) or under an unknown top-level domain (#122,
``reject-unknown-tld``).  Both drop the connection and are policy
refusals: ``smtp-delay-checks`` holds them until RCPT.  LAN, localhost and
route-map RELAY clients are exempt, as smtpf's usual suspects are.

The name is the client's confirmed PTR name (``ClientInfo.name``), which
the proxy looks up before the connect checks (or XCLIENT NAME= gives).

Then the tests of the PTR itself (smtpf ``noPtr`` and ``ipInPtr``), after
``dns-gl`` and before ``dns-bl`` as in smtpf's connect table:

* ``client-ptr-required``: a client without a PTR record is refused
  (554 5.7.1, #416, dropped); when the PTR lookup failed (timeout,
  SERVFAIL) the reply is 421 4.4.3 (#415), a temporary one.  A PTR that
  does not resolve back (forged) is a PTR: it passes.
* ``client-ip-in-ptr``: a PTR name built from the IPv4 address (dynamic
  space: :mod:`barricade.policy.ip_in_ptr`) is refused (550 5.7.1, #418,
  dropped).

Both are policy refusals (``smtp-delay-checks`` holds them until RCPT).
localhost, LAN and route-map RELAY clients are exempt, as are white-listed
ones (the pipeline skips them); an access-map entry that is not a white
list does not exempt (smtpf runs these outside ``accessConnect``).

``client-is-mx`` softens both: they move from connect to MAIL
(:class:`ClientPtrTestsAtMail`, after the sender tests), where a client that
is an MX of the sender's domain (:class:`~barricade.policy.mail.MailMxTests`
notes it) or passes the sender's SPF goes on.  The replies stay #415,
#416 and #418 there, as in smtpf 2.6.10 (2.1.2's "(2)" variants #449 and
#450 are not used).  A client given by XCLIENT with NAME=[UNAVAILABLE] or
NAME=[TEMPUNAVAIL] has no PTR (the two are not told apart).
"""

from __future__ import annotations

from twisted.logger import Logger

from barricade.client import ClientInfo
from barricade.options import Config
from barricade.policy.access import CONNECT_HIT
from barricade.policy.domains import (
    TopLevelDomains,
    client_name,
    reserved_domain,
    usual_suspect,
)
from barricade.policy.ip_in_ptr import client_ip_in_ptr
from barricade.policy.mx import vouched_for
from barricade.policy.pipeline import Check, Context, immediate
from barricade.policy.verdict import CONTINUE, Action, Flag, Verdict
from barricade.replies import ReplyId

log = Logger()

POLICY_DROP = Flag.DELAY | Flag.SESSION


class ClientTests(Check):
    """#121 (reserved domain) and #122 (unknown TLD) for the client's PTR name."""

    name = "client-tests"
    exempt_client = staticmethod(usual_suspect)

    def __init__(self, config: Config, tlds: TopLevelDomains):
        self.rfc2606 = config["rfc2606-special-domains"]
        self.unknown_tld = config["reject-unknown-tld"]
        self.tlds = tlds

    @immediate
    def connect(self, ctx: Context) -> Verdict:
        if usual_suspect(ctx.client) or ctx.notes.get(CONNECT_HIT):
            return CONTINUE
        name = client_name(ctx.client)
        if not name:
            return CONTINUE
        if self.rfc2606 and reserved_domain(name):
            return Verdict(Action.DROP, ReplyId.CLIENT_RESERVED_DOMAIN, flags=POLICY_DROP)
        if self.unknown_tld and not self.tlds.valid(name):
            return Verdict(Action.DROP, ReplyId.CLIENT_UNKNOWN_TLD, flags=POLICY_DROP)
        return CONTINUE


def questionable(client: ClientInfo) -> bool:
    """No PTR, or an IP-in-PTR one: a client ``client-is-mx`` may have to vouch for."""
    return not usual_suspect(client) and (not client.ptr or client_ip_in_ptr(client) > 0)


class _PtrTests(Check):
    """``client-ptr-required`` (#415, #416) and ``client-ip-in-ptr`` (#418)."""

    def __init__(self, config: Config):
        self.ptr_required = config["client-ptr-required"]
        self.ip_in_ptr = config["client-ip-in-ptr"]
        self.client_is_mx = config["client-is-mx"]

    def test(self, ctx: Context) -> Verdict:
        client = ctx.client
        if usual_suspect(client):
            return CONTINUE
        if self.ptr_required and not client.ptr:
            if client.ptr_error:
                return Verdict(Action.TEMPFAIL, ReplyId.PTR_LOOKUP_ERROR, flags=POLICY_DROP)
            return Verdict(Action.DROP, ReplyId.PTR_MISSING, flags=POLICY_DROP)
        if self.ip_in_ptr:
            rule = client_ip_in_ptr(client)
            if rule:
                log.info("session {sid}: client [{ip}] PTR {ptr} looks built from the address (rule {rule})",
                         sid=ctx.session_id, ip=client.ip, ptr=client.ptr, rule=rule)
                return Verdict(Action.DROP, ReplyId.IP_IN_PTR, {"client_name": client.ptr}, flags=POLICY_DROP)
        return CONTINUE


class ClientPtrTests(_PtrTests):
    """At connect, unless ``client-is-mx`` moves them to MAIL."""

    name = "client-ptr"

    @immediate
    def connect(self, ctx: Context) -> Verdict:
        return CONTINUE if self.client_is_mx else self.test(ctx)


class ClientPtrTestsAtMail(_PtrTests):
    """``client-is-mx``: at each MAIL, unless the client is an MX of the sender's domain or passes SPF."""

    name = "client-is-mx"

    @immediate
    def mail(self, ctx: Context) -> Verdict:
        if not self.client_is_mx or vouched_for(ctx.notes):
            return CONTINUE
        return self.test(ctx)


def client_ptr_checks(config: Config) -> tuple[list[Check], list[Check]]:
    """The connect-phase and MAIL-phase PTR checks, when an option asks for them."""
    if not (config["client-ptr-required"] or config["client-ip-in-ptr"]):
        return [], []
    if config["client-is-mx"]:
        return [], [ClientPtrTestsAtMail(config)]
    return [ClientPtrTests(config)], []
