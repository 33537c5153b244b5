"""The one result type of every check and plugin hook.

A check answers with a :class:`Verdict`: an action, and for anything but
CONTINUE/ACCEPT the catalogue reply that explains it.  The pipeline turns
the first decisive verdict of a phase into the client's reply.
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
    IREJECT = "ireject"  # 5xx that smtp-delay-checks may not postpone
    DISCARD = "discard"  # accept and throw away
    DROP = "drop"  # reply, then close the connection
    TAG = "tag"  # deliver, marked


class Flag(enum.Flag):
    NONE = 0
    DELAY = enum.auto()  # may be postponed to RCPT by smtp-delay-checks
    SESSION = enum.auto()  # holds for the rest of the session
    SINK = enum.auto()  # connect refusal that keeps the connection: only NOOP and QUIT are served


DECISIVE = {Action.TEMPFAIL, Action.REJECT, Action.IREJECT, Action.DISCARD, Action.DROP}


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
    return Verdict(Action.REJECT, reply_id, fields)


def tempfail(reply_id: int, **fields: object) -> Verdict:
    return Verdict(Action.TEMPFAIL, reply_id, fields)


def drop(reply_id: int, **fields: object) -> Verdict:
    return Verdict(Action.DROP, reply_id, fields)
