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
import ipaddress
from dataclasses import dataclass

from barricade.dns import Resolver, Status

#: Most MX hosts whose addresses are looked up (lowest preferences first).
MAX_HOSTS = 10

#: Addresses that cannot be reached from the Internet (libsnert IS_IP_RESTRICTED | IS_IP_LAN).
UNROUTABLE = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8",  # "this" network
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",  # RFC 1918 LANs
    "127.0.0.0/8",  # loopback
    "169.254.0.0/16",  # link-local
    "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24",  # documentation (TEST-NET-1..3)
    "198.18.0.0/15",  # benchmarking
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # class E and the broadcast address
    "::/8",  # unspecified, loopback, IPv4-compatible
    "fc00::/7", "fe80::/10", "fec0::/10",  # unique local, link-local, site-local
    "2001:db8::/32",  # documentation
    "ff00::/8",  # multicast
))


def normal_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address, IPv4-mapped IPv6 as IPv4; None when ``text`` is not one."""
    try:
        addr = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def routable(ip: str) -> bool:
    """Can mail be delivered to this address from the Internet?"""
    addr = normal_ip(ip)
    if addr is None:
        return False
    return not any(addr in net for net in UNROUTABLE if net.version == addr.version)


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
