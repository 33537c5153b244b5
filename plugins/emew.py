"""smtpf's EMEW: watermark outgoing Message-IDs, and know our own mail when it comes back.

With ``emew-secret`` set (or an access-map ``Emew:`` entry for the sender,
which overrides it), mail from route-map RELAY clients gets an EMEW
Message-ID (:mod:`barricade.content.emew`) and its original id appended to
References.  Inbound:

* a reply whose References (the last id) or In-Reply-To holds a valid EMEW
  for one of its recipients is white-washed through the content filters
  (they are skipped, anti-virus excepted);
* a DSN or MDN (``MAIL FROM:<>``) must quote, in the first 64 KiB of its
  body, a Message-ID with a valid EMEW for its recipient: a stale one is
  refused (#357, older than ``emew-ttl``), and with
  ``emew-dsn-policy=reject`` so is one without ours (#358): backscatter
  from mail we never sent.

smtpf's older EMEW1 and EMEW2 forms are not recognised, and ids made by
smtpf itself validate only if their layout matches this one's.
"""

from __future__ import annotations

import time
from typing import ClassVar

from twisted.logger import Logger

from barricade.content import emew
from barricade.maps import mail_keys
from barricade.options import Config
from barricade.plugin import Plugin, PluginOption, Services
from barricade.policy.pipeline import Context, immediate
from barricade.policy.verdict import CONTINUE, Action, Verdict, reject

log = Logger()

OLD, FOREIGN = 357, 358
FIRST_BYTES = 65536  # of a DSN's body searched for the quoted Message-ID
NOTE = "emew.body"


class Emew(Plugin):
    name = "emew"
    order = 150  # before the other content plugins: a white-washed reply skips them
    options: ClassVar[tuple[PluginOption, ...]] = (
        PluginOption("emew-secret", "", "Secret of the EMEW Message-ID watermark; empty disables EMEW. "
                     "An access-map Emew:<sender or domain> entry overrides it."),
        PluginOption("emew-ttl", 604800, "Seconds an EMEW stays valid in a DSN or MDN (#357 after).",
                     kind="int", minimum=0),
        PluginOption("emew-dsn-policy", "none", "reject: refuse a DSN or MDN that quotes no valid EMEW of "
                     "ours (#358); none: let it through.", choices=("none", "reject")),
    )

    @classmethod
    def enabled(cls, config: Config) -> bool:
        return bool(config.get("emew-secret"))

    def __init__(self, config: Config, services: Services):
        super().__init__(config, services)
        self.ttl = int(config.get("emew-ttl", 604800))
        self.policy = config.get("emew-dsn-policy", "none")
        self.clock = time.time

    def secret(self, address: str) -> str:
        access = self.services.access_map
        if access is not None and address:
            found = access.first(mail_keys("emew", address, bare=False))
            if found is not None:
                return found[1]
        return self.config.get("emew-secret", "")

    def _status(self, rcpts: list[str], text: str) -> str:
        """The best verdict over the recipients: valid, expired, invalid or none."""
        now = self.clock()
        found = {emew.check(self.secret(rcpt), rcpt, text, now, self.ttl) for rcpt in rcpts}
        return next((s for s in ("valid", "expired", "invalid") if s in found), "none")

    @immediate
    def headers(self, ctx: Context) -> Verdict:
        if ctx.client.relay:
            self._watermark(ctx)
            return CONTINUE
        if ctx.sender == "":
            ctx.notes[NOTE] = bytearray()
            return CONTINUE
        for name in ("References", "In-Reply-To"):
            value = ctx.header(name)
            for msgid in emew.ids_in(value or "")[:1]:
                if msgid.startswith(emew.PREFIX) and self._status(ctx.rcpts, msgid) == "valid":
                    log.info("session {sid}: emew: {name} names our message: content filters skipped",
                             sid=ctx.session_id, name=name)
                    return Verdict(Action.ACCEPT)
        return CONTINUE

    def _watermark(self, ctx: Context) -> None:
        sender = ctx.sender or ""
        secret = self.secret(sender)
        original = (ctx.header("Message-ID") or "").strip()
        if not secret or not sender or not original.startswith("<") or original.startswith("<" + emew.PREFIX):
            return
        bare = original.strip("<>")
        ctx.remove_header("Message-ID")
        ctx.add_header("Message-ID", emew.make(secret, sender, bare, self.clock()))
        references = ctx.header("References")
        ctx.remove_header("References")
        ctx.add_header("References", f"{references} {original}" if references else original)

    @immediate
    def body(self, ctx: Context, chunk: bytes) -> Verdict:
        seen = ctx.notes.get(NOTE)
        if seen is not None and len(seen) < FIRST_BYTES:
            seen += chunk[: FIRST_BYTES - len(seen)]
        return CONTINUE

    @immediate
    def end_of_data(self, ctx: Context) -> Verdict:
        seen = ctx.notes.get(NOTE)
        if seen is None:
            return CONTINUE
        m = emew.QUOTED_ID.search(bytes(seen))
        status = self._status(ctx.rcpts, m.group(1).decode("latin-1")) if m else "none"
        if status == "valid":
            return CONTINUE
        if status == "expired":
            log.warn("session {sid}: emew: DSN or MDN for a message older than emew-ttl (#357)",
                     sid=ctx.session_id)
            return reject(OLD)
        if self.policy == "reject":
            log.warn("session {sid}: emew: DSN or MDN without a valid EMEW of ours ({status}, #358)",
                     sid=ctx.session_id, status=status)
            return reject(FOREIGN)
        return CONTINUE
