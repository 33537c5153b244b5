"""The one result type of every check and plugin hook.

A check answers with a :class:`Verdict`: an action, and for anything but
CONTINUE/ACCEPT/CONTENT the catalogue reply that explains it.  The
pipeline turns the first decisive verdict of a phase into the client's
reply.  A check that cannot decide (its scanner is down) raises
:class:`CheckError`, which carries the reply the client gets instead.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Action(enum.Enum):
    CONTINUE = "continue"  # no opinion; run the next check
    ACCEPT = "accept"  # white-listed: skip the remaining checks of the phase
    CONTENT = "content"  # white-listed for envelope checks, content still scanned
    TEMPFAIL = "tempfail"  # 4xx
    REJECT = "reject"  # 5xx
    DISCARD = "discard"  # accept and throw away
    DROP = "drop"  # reply, then close the connection
    TAG = "tag"  # deliver, marked (Subject prefix, X-Spam-Flag/X-Spam-Reason); the phase goes on
    #: smtpf's IREJECT is a REJECT without the DELAY flag (smtp-delay-checks never holds it);
    #: kept as a name for REJECT so that older plugins still load.
    IREJECT = "reject"


class Flag(enum.Flag):
    NONE = 0
    DELAY = enum.auto()  # may be postponed to RCPT by smtp-delay-checks (without it: smtpf's IREJECT)
    SESSION = enum.auto()  # holds for the rest of the session
    SINK = enum.auto()  # connect refusal that keeps the connection: only NOOP and QUIT are served


# A tuple: ``in`` compares members by identity, without Enum's Python-level __hash__.
DECISIVE = (Action.TEMPFAIL, Action.REJECT, Action.DISCARD, Action.DROP)


@dataclass(frozen=True)
class Verdict:
    action: Action = Action.CONTINUE
    reply_id: int | None = None
    fields: dict[str, object] = field(default_factory=dict, hash=False)
    flags: Flag = Flag.NONE
    check: str = ""

    @property
    def decisive(self) -> bool:
        return self.action in DECISIVE


CONTINUE = Verdict()


def reject(reply_id: int, **fields: object) -> Verdict:
    """A permanent refusal that smtp-delay-checks never holds (smtpf's IREJECT)."""
    return Verdict(Action.REJECT, reply_id, fields)


ireject = reject


def delayable_reject(reply_id: int, **fields: object) -> Verdict:
    """A permanent policy refusal that ``+smtp-delay-checks`` may hold until RCPT."""
    return Verdict(Action.REJECT, reply_id, fields, Flag.DELAY)


def tempfail(reply_id: int, **fields: object) -> Verdict:
    return Verdict(Action.TEMPFAIL, reply_id, fields)


def drop(reply_id: int, **fields: object) -> Verdict:
    return Verdict(Action.DROP, reply_id, fields)


def tag(reply_id: int | None = None, *, reason: str = "", **fields: object) -> Verdict:
    """Deliver the message marked instead of refusing it.

    The X-Spam-Reason is ``reason``, or the text of catalogue reply
    ``reply_id`` rendered with ``fields``.  The first tag of a message wins.
    """
    if reason:
        fields = {**fields, "reason": reason}
    return Verdict(Action.TAG, reply_id, fields)


class CheckError(Exception):
    """A check could not decide; the client gets ``reply_id`` (a 4xx by default).

    The pipeline logs the message with the check's name and phase and turns
    the error into :meth:`verdict`; anything else a hook raises is #907.
    """

    def __init__(self, reply_id: int, message: str = "", action: Action = Action.TEMPFAIL,
                 **fields: object):
        super().__init__(message or f"reply #{reply_id}")
        self.reply_id = reply_id
        self.action = action
        self.fields = fields

    def verdict(self) -> Verdict:
        return Verdict(self.action, self.reply_id, dict(self.fields))


#: The notes an access-map DISCARD entry leaves, for the session or this message.
SESSION_DISCARD_NOTE = "session.access.discard"
DISCARD_NOTE = "access.discard"


def discarding(ctx) -> bool:
    """Whether an access-map DISCARD marked this message: smtpf then accepts
    recipients with #290 instead of #297 (the message will be dropped)."""
    return bool(ctx.notes.get(SESSION_DISCARD_NOTE) or ctx.notes.get(DISCARD_NOTE))
