"""SMTP AUTH policy: where the credentials go, what the downstream's answer means,
the brute-force guard's arithmetic, and what an authenticated session may skip.

Sans-IO: the conductor (``barricade.net.authenticate``) opens the connection,
asks the store and the downstream, and applies these answers.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from barricade.client import ClientInfo
from barricade.replies import ReplyId

if TYPE_CHECKING:
    from barricade.maps import Route, RouteMap

PASS, FAIL, TEMPFAIL, BLOCKED = "pass", "fail", "tempfail", "blocked"
#: The reply the client gets for each outcome (smtpf #274 and #275; 985 and 986 are ours).
REPLIES = {PASS: ReplyId.AUTHENTICATED, FAIL: ReplyId.AUTH_FAILED,
           TEMPFAIL: ReplyId.AUTH_TEMPORARY, BLOCKED: ReplyId.AUTH_TOO_MANY_FAILURES}


def auth_route(routes: RouteMap, user: str) -> Route:
    """smtpf: ``route:<auth domain>`` (the user name's domain, looked up as a recipient
    address is), else the local route; the connection goes to its RCPT: hosts when it
    has some, else to its FORWARD: hosts (the returned route's ``forward``)."""
    route = routes.for_recipient(user) if "@" in user else None
    if route is None:
        route = routes.local
    hosts = route.rcpt or route.forward
    return replace(route, key=f"auth:{route.key}", forward=hosts, rcpt=())


def outcome(code: int, status: str = "") -> str:
    """The downstream's answer to AUTH, as the client hears it.

    235 passes.  A 535, or any 5xx with the enhanced status 5.7.8 (RFC 4954:
    the credentials are invalid), fails, and counts towards
    ``smtp-auth-max-failures``.  Anything else is temporary: a 4xx, and an
    answer that judged something other than the credentials (534 mechanism
    too weak, 538 encryption required, 530, a syntax error).  Those come from
    how the downstream is set up for Barricade's AUTH PLAIN, which the
    postmaster mends; telling the client its password is wrong would make a
    mail program ask its user for another one, and counting it would lock a
    client out for the gateway's own fault.  (smtpf answers 535 for all.)
    """
    if code == 235:
        return PASS
    if code == 535 or (code // 100 == 5 and status == "5.7.8"):
        return FAIL
    return TEMPFAIL


def failure_key(ip: str) -> str:
    """The shared-store counter of a client address's failed attempts."""
    return f"auth-fail:{ip}"


def over_limit(failures: int, limit: int) -> bool:
    """smtp-auth-max-failures reached (0: no guard)."""
    return limit > 0 and failures >= limit


def authenticated_client(client: ClientInfo) -> ClientInfo:
    """An authenticated session is treated as a route-map RELAY client from then on.

    smtpf lets AUTH sessions relay through the local route and exempts them
    from grey-listing; Barricade gives them everything RELAY clients get:
    relaying, no grey-listing, SPF, call-back, call-ahead, sender and
    recipient domain tests, Null-Rate-To: and client-name URI lists, and
    EMEW treats their mail as outbound.  (XCLIENT stays with the connection's
    own identity: the protocol session never sees this one.)
    """
    return replace(client, relay=True)
