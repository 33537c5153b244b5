"""Who the client is: its forward-confirmed PTR name, looked up at connect.

smtpf looks the client up before any connect test (``checkClientIP``): the
PTR of the address, then the PTR name's A (or AAAA) record, which must give
the address back.  Barricade does the same, with one deliberate
difference: the session's client name (``ctx.client.name``, used by the
Received header, the access map's ``Connect:`` name lookups, route-map
RELAY by name and reply texts) is set only when the name is confirmed.
A PTR that does not resolve back is *forged*: the client stays "unknown",
as in Postfix and Sendmail, because anyone who controls a reverse zone can
claim any name, and a name must not white-list or relay on its own say-so.
The unconfirmed name stays in ``ctx.client.ptr`` (logs, and checks that
want it, such as grey-listing's PTR key).

A DNS failure or timeout (bounded by ``dns-max-timeout``) leaves the name
unknown and sets ``ptr_error``; the session goes on.  localhost is not
looked up (smtpf names it itself).
"""

from __future__ import annotations

from dataclasses import replace

from twisted.internet import defer
from twisted.logger import Logger

from barricade.aio import aio
from barricade.client import ClientInfo
from barricade.dns import ClientName, Resolver
from barricade.maps import RouteMap

log = Logger()


async def resolve_client(resolver: Resolver, client: ClientInfo, routes: RouteMap,
                         session_id: str = "", reactor=None) -> ClientInfo:
    """``client`` with its confirmed name, PTR and flags filled in from DNS.

    Two lookups (PTR, then A/AAAA), each bounded by the resolver; with a
    ``reactor`` the whole is bounded once more, so that not even a stalled
    event loop can hold the banner back for good.
    """
    if client.localhost:
        return client
    d = aio(resolver.client_name(client.ip))
    if reactor is not None:
        d.addTimeout(2 * resolver.max_timeout + 1, reactor)
    try:
        found = await d
    except defer.TimeoutError:
        found = ClientName(error=True)
    name = found.name or "unknown"
    if found.forged:
        log.info("session {sid}: client [{ip}] PTR {ptr} does not resolve back: forged, name unknown",
                 sid=session_id, ip=client.ip, ptr=found.ptr)
    elif found.error:
        log.info("session {sid}: client [{ip}] PTR lookup failed (DNS temporary failure): name unknown",
                 sid=session_id, ip=client.ip)
    return replace(
        client, name=name, ptr=found.ptr or "", forged=found.forged, ptr_error=found.error,
        relay=client.relay or routes.is_relay(client.ip, found.name),
    )
