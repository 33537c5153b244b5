"""Duplicate-message memory: don't deliver twice what the client never saw acknowledged.

The problem: the downstream accepted a message, but the client never read
our 250 for it, so it sends the message again and the recipients get it
twice.  The one case where we *know* the reply was lost is a client that
left while the final dot was downstream (its own end-of-data timeout ran
out while a slow MTA or scanner worked): the proxy lets that dot finish, and
when the downstream accepted, the message was delivered and never
acknowledged.  A client that read our 250 and then closed without QUIT (an
MTA closing a cached connection) is not such a case: a later copy of the
same message is a new message (``postsuper -r``, a monitoring probe, a user
sending again) and is delivered.  A duplicate is better than a loss; a 250
followed by no delivery is never a side effect of this check.

A message is known by the MD5 of its body (headers change between retries),
its Message-ID and its envelope sender, together with its first accepted
recipient (MTAs that split envelopes send the same message once per
recipient): ``dupmsg:<md5>,<rcpt>``.  A message without a Message-ID is not
tracked.  At the dot, before anything goes downstream, one
:meth:`Store.add` asks "seen before?" and remembers the message as
*pending* in the same atomic step, so two workers (or gateways) receiving
the same message at once cannot both take it:

* known as **discard** — delivered by us, and the client left before our
  250 could be written: the copy is answered ``250 message … accepted``
  (#554) and not delivered.  That 250 is true: the message was delivered;
* known as **reject** (``+dupmsg-track-all``, an operator's policy):
  ``550 5.3.4 duplicate message rejected`` (#340), so the sender learns it;
* **pending** — another session is delivering this very message right now:
  ``451 4.7.0 try again later`` (#552); nothing is lost, the client retries.

When the transaction's fate is known (the client's next MAIL, or the end of
the session) the pending record becomes:

* **discard**, kept ``dupmsg-ttl`` seconds, if every downstream accepted the
  message after the client had gone (``Context.reply_lost``);
* **reject**, kept ``dupmsg-ttl``, with ``+dupmsg-track-all`` for a delivered
  message from anyone but localhost, RELAY and white-listed clients;
* nothing otherwise: the record is deleted, so a message that was refused,
  not delivered, or delivered and acknowledged can always be sent again.

dupmsg is an optimisation, not a policy: a store failure at the dot lets
the message through (``state-failure`` family ``dupmsg``, ``skip`` unless
the operator names ``dupmsg:tempfail``, which answers #960).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from twisted.logger import Logger

from barricade.options import Config
from barricade.policy.pipeline import Context, immediate
from barricade.policy.state_limits import StoreCheck
from barricade.policy.verdict import CONTINUE, Action, Verdict, reject, tempfail
from barricade.replies import ReplyId
from barricade.state import Store, StoreError

log = Logger()

DIGEST = "dupmsg.md5"  # this transaction's running MD5 of the body
PENDING = "session.dupmsg.pending"  # the last message's record, until its fate is known


@dataclass(frozen=True)
class Pending:
    key: str
    qid: str
    track: bool  # +dupmsg-track-all applies to this client


def message_id(ctx: Context) -> str:
    """The Message-ID as smtpf takes it: from ``<`` to the first space ("" if none)."""
    value = ctx.header("Message-ID") or ""
    start = value.find("<")
    return value[start:].split()[0] if start >= 0 else ""


class DuplicateMessage(StoreCheck):
    """dupmsg: swallow the retry of a message whose 250 the client may not have seen."""

    name = "dupmsg"
    family = "dupmsg"
    always = True  # smtpf tracks everyone's messages; only track-all spares the usual suspects
    failure_reply = ReplyId.DUPMSG_STORE_UNAVAILABLE
    failure_drops = False

    def __init__(self, config: Config, store: Store, metrics=None):
        super().__init__(config, None, store, metrics)
        self.ttl = float(config["dupmsg-ttl"])
        self.track_all = config["dupmsg-track-all"]
        # A pending record lives until the dot's reply and the next command are settled.
        self.pending_ttl = min(self.ttl, float(config["smtp-dot-timeout"] + config["smtp-command-timeout"]))

    @immediate
    def body(self, ctx: Context, chunk: bytes) -> Verdict:
        digest = ctx.notes.get(DIGEST)
        if digest is None:
            digest = ctx.notes[DIGEST] = hashlib.md5(usedforsecurity=False)
        digest.update(chunk)
        return CONTINUE

    def key(self, ctx: Context) -> str:
        digest = ctx.notes.pop(DIGEST, None) or hashlib.md5(usedforsecurity=False)
        digest.update(message_id(ctx).encode("utf-8", "surrogateescape"))
        digest.update(b"\0" + (ctx.sender or "").lower().encode("utf-8", "surrogateescape"))
        return f"dupmsg:{digest.hexdigest()},{ctx.rcpts[0].lower()}"

    async def end_of_data(self, ctx: Context) -> Verdict:
        self._settle(ctx)  # the previous message, if no MAIL settled it
        if not ctx.rcpts or not message_id(ctx):
            return CONTINUE
        key = self.key(ctx)
        try:
            added = await self.stored(self.store.add(key, f"pending {ctx.session_id}", ttl=self.pending_ttl))
            known = None if added else await self.stored(self.store.get(key))
        except StoreError as exc:
            return self.failed(ctx, exc)
        if added:
            suspect = ctx.client.localhost or ctx.client.relay or ctx.trusted
            ctx.notes[PENDING] = Pending(key, ctx.qid, self.track_all and not suspect)
            return CONTINUE
        word, _, session = (known or "").partition(" ")
        if not word:
            return CONTINUE  # expired between add and get: not a duplicate any more
        self.hit()
        log.info("session {sid}: message {qid} is a duplicate ({word}, first seen in session {first}): {key}",
                 sid=ctx.session_id, qid=ctx.qid, word=word, first=session or "?", key=key)
        if word == "discard":
            return Verdict(Action.DISCARD)
        if word == "reject":
            return reject(ReplyId.DUPLICATE_MESSAGE)
        return tempfail(ReplyId.GREY_LISTED)

    @immediate
    def mail(self, ctx: Context) -> Verdict:
        self._settle(ctx)
        return CONTINUE

    @immediate
    def close(self, ctx: Context) -> None:
        self._settle(ctx)

    def _settle(self, ctx: Context) -> None:
        """Turn the last message's pending record into discard, reject or nothing.

        Not waited for: nothing the client is answered depends on it, and the
        store runs one connection's commands in the order they were sent, so
        the same message sent again in this session is asked about after its
        record was settled.  (While Redis reconnects, or on a store that could
        reorder them, the lookup could come first: it would at worst find the
        record still pending and answer 451, and the client tries again.)
        """
        pending: Pending | None = ctx.notes.pop(PENDING, None)
        if pending is None:
            return
        delivered = ctx.delivered == pending.qid
        if delivered and ctx.reply_lost:
            value = "discard"
        elif delivered and pending.track:
            value = "reject"
        else:
            value = None
        sid, qid = ctx.session_id, pending.qid

        def settled(error: StoreError | None) -> None:
            if error is not None:
                log.error("session {sid}: dupmsg: store failed, message {qid} not remembered: {err}",
                          sid=sid, qid=qid, err=str(error))
            elif value is not None:
                log.info("session {sid}: message {qid} remembered for {ttl:g}s as {value}: {key}",
                         sid=sid, qid=qid, ttl=self.ttl, value=value, key=pending.key)

        if value is None:
            self.store.delete_nowait(pending.key, settled)
        else:
            self.store.set_nowait(pending.key, f"{value} {sid}", ttl=self.ttl, done=settled)


def dupmsg_checks(config: Config, store: Store | None, metrics=None) -> list[DuplicateMessage]:
    """The dupmsg check, unless ``dupmsg-ttl=0`` or there is no store."""
    if store is None or config["dupmsg-ttl"] <= 0:
        return []
    return [DuplicateMessage(config, store, metrics)]
