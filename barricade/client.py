"""Who is on the other end: the client's identity, address forms and network kinds.

One place for three things every layer needs: :class:`ClientInfo` (what the
policy knows about the client), the one table of special address ranges
(each range tagged with its kind, so the LAN test of the session, the
header-IP filter of ``dns-bl-headers``, the HELO test and the MX
reachability test are unions of kinds of one table), and the one address
normalisation (brackets, ``IPv6:`` literals, IPv4-mapped IPv6 as IPv4).
Pure data and functions: no I/O, no Twisted.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class ClientInfo:
    """Who is on the other end, as the policy sees it (XCLIENT may change it)."""

    ip: str
    port: int
    name: str = "unknown"  # the forward-confirmed PTR name (or XCLIENT NAME)
    relay: bool = False  # route-map RELAY
    localhost: bool = False
    private: bool = False  # RFC 1918 / RFC 4193 / loopback
    proto: str = "SMTP"
    ptr: str = ""  # the first PTR name, confirmed or not ("" without a PTR)
    forged: bool = False  # PTR names exist and none resolves back to ip
    ptr_error: bool = False  # DNS failed temporarily: the name is unknown for now

    @property
    def xclient_allowed(self) -> bool:
        return self.localhost or self.relay


class Kind(enum.Flag):
    """What a special address range is (libsnert's IS_IP_* classes, by name)."""

    THIS_NET = enum.auto()  # 0.0.0.0/8
    UNSPECIFIED = enum.auto()  # ::/128
    LAN = enum.auto()  # RFC 1918, RFC 4193 unique local
    LOOPBACK = enum.auto()
    LINK_LOCAL = enum.auto()
    SITE_LOCAL = enum.auto()  # fec0::/10, deprecated but still refused
    DOCUMENTATION = enum.auto()  # TEST-NET-1..3, 2001:db8::/32
    BENCHMARK = enum.auto()  # 198.18.0.0/15
    MULTICAST = enum.auto()
    RESERVED = enum.auto()  # class E and broadcast; ::/8 (IPv4-compatible and the like)


#: The one table of special ranges.  Python's ``is_private`` mixes LAN,
#: documentation and benchmarking ranges, which a mail gateway must tell apart.
NETWORKS: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, Kind], ...] = tuple(
    (ipaddress.ip_network(net), kind) for net, kind in (
        ("0.0.0.0/8", Kind.THIS_NET),
        ("10.0.0.0/8", Kind.LAN), ("172.16.0.0/12", Kind.LAN), ("192.168.0.0/16", Kind.LAN),
        ("127.0.0.0/8", Kind.LOOPBACK),
        ("169.254.0.0/16", Kind.LINK_LOCAL),
        ("192.0.2.0/24", Kind.DOCUMENTATION), ("198.51.100.0/24", Kind.DOCUMENTATION),
        ("203.0.113.0/24", Kind.DOCUMENTATION),
        ("198.18.0.0/15", Kind.BENCHMARK),
        ("224.0.0.0/4", Kind.MULTICAST),
        ("240.0.0.0/4", Kind.RESERVED),
        ("::/128", Kind.UNSPECIFIED),
        ("::1/128", Kind.LOOPBACK),
        ("::/8", Kind.RESERVED),
        ("fc00::/7", Kind.LAN),
        ("fe80::/10", Kind.LINK_LOCAL),
        ("fec0::/10", Kind.SITE_LOCAL),
        ("2001:db8::/32", Kind.DOCUMENTATION),
        ("ff00::/8", Kind.MULTICAST),
    )
)

#: The client is on our side: LAN, loopback, link-local (``ClientInfo.private``).
PRIVATE = Kind.LAN | Kind.LOOPBACK | Kind.LINK_LOCAL
#: Not a host the Internet can reach (the MX and call-back tests).
UNROUTABLE = Kind(sum(k.value for k in Kind))


def kind_of(addr: IpAddress) -> Kind:
    """Every kind of range ``addr`` falls in (empty for a global address)."""
    found = Kind(0)
    for net, kind in NETWORKS:
        if net.version == addr.version and addr in net:
            found |= kind
    return found


def in_kinds(addr: IpAddress, kinds: Kind) -> bool:
    """Is ``addr`` in a range of one of ``kinds``?"""
    return any(kind & kinds and net.version == addr.version and addr in net for net, kind in NETWORKS)


def unmap(addr: IpAddress) -> IpAddress:
    """The one address form: IPv4-mapped IPv6 (``::ffff:192.0.2.1``) is IPv4."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


@functools.lru_cache(maxsize=4096)
def ip_of(text: str) -> IpAddress:
    """``ipaddress.ip_address`` with IPv4-mapped IPv6 unmapped, remembered.

    The same few addresses are parsed several times per session (the
    classification, the access map's keys, the load-balancer test), and
    the stdlib parses them in Python.  A ValueError is not remembered.
    """
    return unmap(ipaddress.ip_address(text))


@functools.lru_cache(maxsize=4096)
def _ranges(addr: IpAddress) -> tuple[bool, bool]:
    """(loopback, private): asked for every session, answered by the stdlib in Python."""
    return addr.is_loopback, in_kinds(addr, PRIVATE)


def parse_ip(text: str) -> IpAddress:
    """An address as written anywhere (``[1.2.3.4]``, ``IPv6:…``, ``::ffff:1.2.3.4``).

    IPv4-mapped IPv6 becomes IPv4, so one client has one form in maps,
    DNS lists and logs.  Raises ValueError when ``text`` is no address.
    """
    text = text.strip().strip("[]")
    if text[:5].lower() == "ipv6:":
        text = text[5:]
    return ip_of(text)


def normal_ip(text: str) -> IpAddress | None:
    """:func:`parse_ip`, or None when ``text`` is not an address."""
    try:
        return parse_ip(text)
    except ValueError:
        return None


@functools.lru_cache(maxsize=4096)
def address_text(text: str) -> str:
    """An address as the one text form logs, maps and limits use (``::ffff:1.2.3.4`` is
    ``1.2.3.4``); text that is no address is returned as it is.

    Remembered: every connection asks about its peer, and the stdlib writes
    an address out in Python.
    """
    addr = normal_ip(text)
    return str(addr) if addr is not None else text


def classify(ip: str, port: int, name: str, is_relay: Callable[[str, str | None], bool],
             proto: str = "SMTP") -> ClientInfo:
    """The identity of a new client (a connection or an XCLIENT ADDR).

    ``is_relay`` is the route map's RELAY test for (ip, name or None); a
    loopback client without a PTR name is called ``localhost``.
    """
    addr = normal_ip(ip)
    loopback, private = _ranges(addr) if addr is not None else (False, False)
    if loopback and name == "unknown":
        name = "localhost"
    relay = is_relay(ip, name if name != "unknown" else None)
    return ClientInfo(ip=ip, port=port, name=name, relay=relay, localhost=loopback,
                      private=private, proto=proto)
