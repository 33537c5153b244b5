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


def outcome(code: int) -> str:
    """The downstream's answer to AUTH: 235 passes, 4xx is temporary, anything else fails."""
    if code == 235:
        return PASS
    if 400 <= code < 500:
        return TEMPFAIL
    return FAIL


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
