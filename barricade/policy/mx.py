"""A sender domain's mail exchangers as ``mail-require-mx`` and ``client-is-mx`` need them.

smtpf fetches the MX hosts of the sender's domain (with the implicit MX: a
domain without MX records but with an address is its own exchanger), looks
up their addresses, and prunes what cannot be reached from the Internet:
loopback, RFC 1918 and link-local LAN space, the documentation and
benchmarking networks, multicast, class E (libsnert's ``IS_IP_RESTRICTED``
and ``IS_IP_LAN``).  What is left decides both tests: no address left means
the domain cannot take a bounce ("MX invalid", #439), and the client being
one of them means it is a mail server of the sender's domain
(``client-is-mx``).

:func:`routable` is pure; :func:`sender_mx` asks the resolver (the MX
query, then the A and AAAA records of at most :data:`MAX_HOSTS` hosts at
once, each bounded by ``dns-max-timeout``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from barricade.client import UNROUTABLE, in_kinds, normal_ip  # noqa: F401 - normal_ip: its old home
from barricade.dns import Resolver, Status

#: Most MX hosts whose addresses are looked up (lowest preferences first).
MAX_HOSTS = 10

def routable(ip: str) -> bool:
    """Can mail be delivered to this address from the Internet (libsnert IS_IP_RESTRICTED | IS_IP_LAN)?"""
    addr = normal_ip(ip)
    if addr is None:
        return False
    return not in_kinds(addr, UNROUTABLE)


@dataclass(frozen=True)
class SenderMx:
    """The outcome for one domain.

    ``status`` is the MX lookup's (with the implicit MX): ANSWER, NXDOMAIN
    (no such domain), NODATA (neither MX nor address), TEMPFAIL.  ``null``:
    an RFC 7505 null MX.  ``addresses``: the routable addresses of the hosts;
    ``pruned``: hosts left without one; ``failed``: some host's address
    lookup failed temporarily, so an empty ``addresses`` proves nothing.
    """

    domain: str
    status: Status
    null: bool = False
    addresses: frozenset[str] = frozenset()
    pruned: tuple[str, ...] = ()
    failed: bool = False
    error: str = ""

    def has(self, ip: str) -> bool:
        """Is ``ip`` one of the exchangers' routable addresses?"""
        addr = normal_ip(ip)
        return addr is not None and str(addr) in self.addresses


async def sender_mx(resolver: Resolver, domain: str) -> SenderMx:
    """The routable addresses of ``domain``'s mail exchangers."""
    mx = await resolver.mx(domain)
    if mx.status is not Status.ANSWER or mx.null:
        return SenderMx(mx.domain, mx.status, mx.null, error=mx.error)
    hosts = [h.host for h in mx.hosts[:MAX_HOSTS]]
    results = await asyncio.gather(*(resolver.addresses(h) for h in hosts))
    addresses: set[str] = set()
    pruned = []
    failed = False
    for host, result in zip(hosts, results, strict=True):
        failed = failed or result.tempfail
        usable = {str(normal_ip(a)) for a in result.records if routable(a)}
        if not usable:
            pruned.append(host)
        addresses |= usable
    return SenderMx(mx.domain, Status.ANSWER, False, frozenset(addresses), tuple(pruned), failed)


# --- client-is-mx: what the MAIL-phase tests tell the client tests ------------------------

#: Context note: the client is one of the sender domain's exchangers (this transaction).
CLIENT_IS_MX = "mx.client-is-mx"
#: Context note the SPF check leaves at MAIL: the sender's SPF result ("pass", ...).
SPF_MAIL = "spf.mail"


def spf_result(value: object) -> str:
    """The SPF note as a lower-case result name, whether a string, an enum or a result object."""
    if value is None:
        return ""
    result = getattr(value, "result", value)
    result = getattr(result, "value", result)  # an enum member
    return str(result).strip().lower()


def vouched_for(notes: dict) -> bool:
    """``client-is-mx``: the client is an MX of the sender's domain or passes its SPF."""
    return bool(notes.get(CLIENT_IS_MX)) or spf_result(notes.get(SPF_MAIL)) == "pass"
