"""HAProxy's PROXY protocol (versions 1 and 2): the header a load balancer sends first.

Behind a TCP load balancer every connection comes from the balancer; the
header it writes before any SMTP byte names the real client, and a
connection from a listed balancer is read as if that client had connected
directly.  Only listed balancers are believed (``proxy-protocol-hosts``):
from anyone else the same bytes are just a bad SMTP command.

:func:`parse` is pure: bytes in, a :class:`ProxyHeader` (or ``None``: more
bytes needed) out; a malformed header raises :class:`ProxyHeaderError`,
and the caller drops the connection without a reply.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from barricade.protocol.grammar import ascii_digits

V1_PREFIX = b"PROXY "
V1_LIMIT = 107  # the longest v1 line, CRLF included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16  # signature, version/command, family/transport, length
V2_LIMIT = 4096  # more TLV data than any balancer sends; beyond it the header is refused
HEADER_TIMEOUT = 10.0  # seconds a listed balancer has to send the whole header

_V2_ADDRESSES = {0x1: (4, 12), 0x2: (16, 36)}  # family: (address octets, block length)
_V2_BLOCK = {0x0: 0, 0x1: 12, 0x2: 36, 0x3: 216}


class ProxyHeaderError(ValueError):
    """Not a PROXY header, or a malformed one (the reason is the message)."""


@dataclass(frozen=True)
class ProxyHeader:
    """A complete header.

    ``client`` is the source ``(ip, port)`` of a proxied TCP connection, or
    ``None`` when the real connection's own endpoints stand: the LOCAL
    command (the balancer's health checks) and UNKNOWN/UNSPEC/UNIX families.
    ``length`` is the header's size; what follows it is SMTP.
    """

    version: int
    client: tuple[str, int] | None
    length: int


def parse(data: bytes) -> ProxyHeader | None:
    """The header at the start of ``data``; ``None`` if it is not complete yet."""
    if data[: len(V1_PREFIX)] == V1_PREFIX[: len(data)] and data[:1] == b"P":
        return _parse_v1(data)
    if data[: len(V2_SIGNATURE)] == V2_SIGNATURE[: len(data)]:
        return _parse_v2(data)
    raise ProxyHeaderError(f"no PROXY header: {bytes(data[:16])!r}")


def _port(text: str) -> int:
    if not ascii_digits(text) or len(text) > 5 or (len(text) > 1 and text[0] == "0") or int(text) > 65535:
        raise ProxyHeaderError(f"bad port {text[:8]!r}")
    return int(text)


def _address(text: str, version: int) -> str:
    if "%" in text:  # a zone (fe80::1%eth0) names an interface of the balancer's host
        raise ProxyHeaderError(f"address with a zone {text[:48]!r}")
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyHeaderError(f"bad address {text[:48]!r}") from None
    if addr.version != version:
        raise ProxyHeaderError(f"address {text} is not IPv{version}")
    return _plain(addr)


def _plain(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        return str(addr.ipv4_mapped)  # as a direct IPv4 client on a dual-stack socket
    return str(addr)


def _parse_v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, V1_LIMIT)
    if end < 0:
        if len(data) >= V1_LIMIT or b"\n" in data[:V1_LIMIT]:
            raise ProxyHeaderError("PROXY v1 line without CRLF within 107 octets")
        return None
    try:
        line = data[:end].decode("ascii")
    except UnicodeDecodeError:
        raise ProxyHeaderError("PROXY v1 line is not ASCII") from None
    parts = line.split(" ")
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        return ProxyHeader(1, None, end + 2)
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError(f"bad PROXY v1 line {line[:60]!r}")
    version = 4 if parts[1] == "TCP4" else 6
    source = _address(parts[2], version)
    _address(parts[3], version)
    port = _port(parts[4])
    _port(parts[5])
    return ProxyHeader(1, (source, port), end + 2)


def _parse_v2(data: bytes) -> ProxyHeader | None:
    if len(data) < V2_FIXED:
        return None
    ver_cmd, fam_proto, length = data[12], data[13], struct.unpack("!H", data[14:16])[0]
    if ver_cmd >> 4 != 2:
        raise ProxyHeaderError(f"PROXY v2 header with version {ver_cmd >> 4}")
    command, family, transport = ver_cmd & 0xF, fam_proto >> 4, fam_proto & 0xF
    if command not in (0, 1):
        raise ProxyHeaderError(f"PROXY v2 header with command {command}")
    if family not in _V2_BLOCK or transport > 2:
        raise ProxyHeaderError(f"PROXY v2 header with family/transport 0x{fam_proto:02x}")
    if length > V2_LIMIT:
        raise ProxyHeaderError(f"PROXY v2 header of {length} octets")
    if len(data) < V2_FIXED + length:
        return None
    total = V2_FIXED + length
    if command == 0:  # LOCAL: the balancer speaks for itself; the block is skipped
        return ProxyHeader(2, None, total)
    if length < _V2_BLOCK[family]:
        raise ProxyHeaderError(f"PROXY v2 address block of {length} octets for family {family}")
    if family not in _V2_ADDRESSES or transport != 1:
        return ProxyHeader(2, None, total)  # UNSPEC, UNIX or datagram: nothing to believe
    size, _ = _V2_ADDRESSES[family]
    block = data[V2_FIXED:]
    raw = block[:size]
    source = ipaddress.ip_address(bytes(raw))
    port = struct.unpack("!H", block[2 * size:2 * size + 2])[0]
    return ProxyHeader(2, (_plain(source), port), total)


Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


def parse_hosts(items: Iterable[str]) -> Networks:
    """``proxy-protocol-hosts`` entries (addresses or prefixes); ValueError names a bad one."""
    nets = []
    for item in items:
        try:
            nets.append(ipaddress.ip_network(item.replace("[", "").replace("]", ""), strict=False))
        except ValueError:
            raise ValueError(f"proxy-protocol-hosts: {item!r} is not an address or prefix") from None
    return tuple(nets)


def listed(ip: str, networks: Networks) -> bool:
    """Is ``ip`` (the connection's peer) one of the load balancers?"""
    if not networks:
        return False
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return any(addr in net for net in networks if net.version == addr.version)
