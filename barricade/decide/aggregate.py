"""Several downstream results, one reply to the client.

A transaction may be relayed to several routes.  The client gets one
answer, and it must never claim more than every route did: anything but a
unanimous success is a failure, a permanent one only when every route
refused permanently; otherwise a temporary one (#307), so that a retry may
duplicate mail for the routes that accepted, never lose it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from barricade.replies import ReplyId as R

TIMEOUT, ALL_REFUSED, MIXED, PASSTHROUGH = (R.DOWNSTREAM_TIMEOUT, R.ALL_ROUTES_REFUSED,
                                           R.ROUTES_DISAGREE, R.DOWNSTREAM_REPLY)


@dataclass(frozen=True)
class Combined:
    """The one answer: a reply id, the downstream reply to relay (#299), whether to close."""

    reply_id: int
    relayed: Any = None  # the DownstreamReply that #299 passes through
    drop: bool = False


def succeeded(results: Sequence[Any], expect: int) -> bool:
    """Did every route give the expected reply (for 250: any 2xx)?

    A result is the downstream's reply (``code``, ``ok``) or the exception
    that stood for it (a lost or timed-out connection).
    """
    return bool(results) and all(not isinstance(r, Exception) and _ok(r, expect) for r in results)


def combine(results: Sequence[Any], expect: int, lost: int, relay_reply: bool = False) -> Combined:
    """One reply for results that did not all succeed.

    ``lost`` is the reply when a connection went away: LOST_DOWNSTREAM
    before DATA (the client may retry at once), LOST_DURING_DATA after it
    (the transfer is broken and the session is closed).  A timeout always
    closes (DOWNSTREAM_TIMEOUT).
    """
    errors = [r for r in results if isinstance(r, Exception)]
    if any(getattr(e, "kind", "") == "timeout" for e in errors):
        return Combined(TIMEOUT, drop=True)
    if errors:
        return Combined(lost, drop=lost == R.LOST_DURING_DATA)
    failed = [r for r in results if not _ok(r, expect)]
    if len(results) == 1 and failed and relay_reply:
        return Combined(PASSTHROUGH, relayed=failed[0])
    if failed and len(failed) == len(results) and all(r.code >= 500 for r in failed):
        return Combined(ALL_REFUSED)
    return Combined(MIXED)


def _ok(reply: Any, expect: int) -> bool:
    return reply.code == expect or (expect == 250 and reply.ok)
