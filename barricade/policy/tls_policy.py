"""The access map's TLS tags: who must use STARTTLS (smtpf ``Tls-Connect:``, ``Tls-From:``, ``Tls-To:``).

``Tls-Connect:<ip|domain>`` ``SKIP`` withholds STARTTLS from that client
(some clients cannot do TLS and never fall back); ``REQUIRE`` makes it
STARTTLS before MAIL; ``VERIFY`` also asks for a client certificate that
verifies against ``tls-cert-chain-file`` / ``tls-cert-dir``, and
``VERIFY:CN=name`` for one that names ``name``.  ``Tls-From:<mail>`` and
``Tls-To:<mail>`` ask the same of a transaction from that sender or of a
recipient.  Refusals: #963 (RFC 3207 4: ``530 5.7.0``) without TLS,
#988/#989/#990 for a missing, unverified or misnamed certificate; the
decision itself is :func:`barricade.protocol.client_cert.judge`.
"""

from __future__ import annotations

from twisted.logger import Logger

from barricade.maps import KeyValueMap
from barricade.policy.pipeline import Check, Context, immediate
from barricade.policy.verdict import CONTINUE, Action, Verdict
from barricade.protocol.client_cert import REQUIRE, SKIP, VERIFY, Requirement, judge, parse

log = Logger()

NOTE = "session.tls-connect"  # the client's Tls-Connect: word, for the session
REQUIREMENT = "session.tls-connect-requirement"  # ... and the whole Requirement (VERIFY:CN=)

__all__ = ["NOTE", "REQUIRE", "SKIP", "VERIFY", "TlsPolicy", "satisfied", "tls_checks", "word"]


def word(value: str | None) -> str:
    """``"verify:CN=mx"`` → ``"VERIFY"``; unknown words are no word."""
    return parse(value).word


def satisfied(required: str, tls: bool, cert=None) -> bool:
    """Does a session with (``tls``) or without TLS, and client certificate ``cert``, meet ``required``?"""
    return judge(Requirement(required), tls, cert) is None


class TlsPolicy(Check):
    """``Tls-Connect:`` at connect (noted for EHLO and MAIL), ``Tls-From:`` at MAIL, ``Tls-To:`` at RCPT."""

    name = "tls-policy"
    always = True  # a white list does not lift a TLS requirement

    def __init__(self, access_map: KeyValueMap):
        self.map = access_map

    @immediate
    def connect(self, ctx: Context) -> Verdict:
        hit = self.map.client_entry("tls-connect", ctx.client)
        required = parse(hit[1]) if hit else Requirement()
        ctx.notes[NOTE] = required.word
        ctx.notes[REQUIREMENT] = required
        return CONTINUE

    @immediate
    def mail(self, ctx: Context) -> Verdict:
        required = ctx.notes.get(REQUIREMENT) or Requirement(ctx.notes.get(NOTE, ""))
        verdict = self._judge(ctx, required, f"Tls-Connect: {required.word}")
        if verdict is not None:
            return verdict
        hit = self.map.mail_entry("tls-from", ctx.sender or "")
        if hit:
            verdict = self._judge(ctx, parse(hit[1]), f"{hit[0]} {hit[1]}")
        return verdict or CONTINUE

    @immediate
    def rcpt(self, ctx: Context, rcpt: str) -> Verdict:
        hit = self.map.mail_entry("tls-to", rcpt)
        verdict = self._judge(ctx, parse(hit[1]), f"{hit[0]} {hit[1]}", rcpt=rcpt) if hit else None
        return verdict or CONTINUE

    def _judge(self, ctx: Context, required: Requirement, entry: str, **fields: object) -> Verdict | None:
        refusal = judge(required, ctx.tls, ctx.client_cert)
        if refusal is None:
            return None
        log.info("session {sid}: {entry} refused: {why}", sid=ctx.session_id, entry=entry.strip(),
                 why=refusal.why)
        return Verdict(Action.REJECT, refusal.reply, {**fields, **refusal.fields})


def tls_checks(access_map: KeyValueMap | None) -> list[Check]:
    """The TLS policy check, when there is an access map to read it from."""
    return [TlsPolicy(access_map)] if access_map is not None else []
