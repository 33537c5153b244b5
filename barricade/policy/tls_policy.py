"""The access map's TLS tags: who must use STARTTLS (smtpf ``Tls-Connect:``, ``Tls-From:``, ``Tls-To:``).

``Tls-Connect:<ip|domain>`` ``SKIP`` withholds STARTTLS from that client
(some clients cannot do TLS and never fall back); ``REQUIRE`` makes it
STARTTLS before MAIL.  ``Tls-From:<mail>`` and ``Tls-To:<mail>``
``REQUIRE`` ask the same of a transaction from that sender or of a
recipient.  A refusal is #963 (RFC 3207 4: ``530 5.7.0``).

``VERIFY`` (a verified client certificate) is not implemented: it fails
closed (the client is refused as if it had not used TLS, and the log says
why) rather than pass a client whose certificate nobody checked.
"""

from __future__ import annotations

from twisted.logger import Logger

from barricade.maps import KeyValueMap, client_keys, mail_keys
from barricade.policy.pipeline import Check, Context
from barricade.policy.verdict import CONTINUE, Action, Verdict
from barricade.replies import ReplyId

log = Logger()

NOTE = "session.tls-connect"  # the client's Tls-Connect: word, for the session
REQUIRE, VERIFY, SKIP = "REQUIRE", "VERIFY", "SKIP"


def word(value: str | None) -> str:
    """``"verify:CN=mx"`` → ``"VERIFY"``; unknown words are no word."""
    first = (value or "").strip().split(":")[0].upper()
    return first if first in (REQUIRE, VERIFY, SKIP, "DUNNO") else ""


def satisfied(required: str, tls: bool) -> bool:
    """Does a session with (``tls``) or without TLS meet ``required``?"""
    if required == REQUIRE:
        return tls
    return required != VERIFY  # VERIFY: client certificates are not checked, so never


class TlsPolicy(Check):
    """``Tls-Connect:`` at connect (noted for EHLO and MAIL), ``Tls-From:`` at MAIL, ``Tls-To:`` at RCPT."""

    name = "tls-policy"
    always = True  # a white list does not lift a TLS requirement

    def __init__(self, access_map: KeyValueMap):
        self.map = access_map

    async def connect(self, ctx: Context) -> Verdict:
        name = ctx.client.name if ctx.client.name not in ("", "unknown") else None
        hit = self.map.first(client_keys("tls-connect", ctx.client.ip, name))
        ctx.notes[NOTE] = word(hit[1]) if hit else ""
        return CONTINUE

    async def mail(self, ctx: Context) -> Verdict:
        required = ctx.notes.get(NOTE, "")
        if required in (REQUIRE, VERIFY) and not satisfied(required, ctx.tls):
            return self._refuse(ctx, f"Tls-Connect: {required}")
        hit = self.map.first(mail_keys("tls-from", ctx.sender or ""))
        required = word(hit[1]) if hit else ""
        if required in (REQUIRE, VERIFY) and not satisfied(required, ctx.tls):
            return self._refuse(ctx, f"{hit[0]} {required}")
        return CONTINUE

    async def rcpt(self, ctx: Context, rcpt: str) -> Verdict:
        hit = self.map.first(mail_keys("tls-to", rcpt))
        required = word(hit[1]) if hit else ""
        if required in (REQUIRE, VERIFY) and not satisfied(required, ctx.tls):
            return self._refuse(ctx, f"{hit[0]} {required}", rcpt=rcpt)
        return CONTINUE

    def _refuse(self, ctx: Context, why: str, **fields: object) -> Verdict:
        note = " (client certificates are not verified: VERIFY cannot be met)" if why.endswith(VERIFY) else ""
        log.info("session {sid}: {why} and the session is {tls}{note}", sid=ctx.session_id, why=why,
                 tls="TLS" if ctx.tls else "plaintext", note=note)
        return Verdict(Action.REJECT, ReplyId.TLS_REQUIRED, fields)


def tls_checks(access_map: KeyValueMap | None) -> list[Check]:
    """The TLS policy check, when there is an access map to read it from."""
    return [TlsPolicy(access_map)] if access_map is not None else []
