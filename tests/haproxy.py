"""PROXY protocol headers byte for byte as HAProxy writes them (``send-proxy``/``send-proxy-v2``)."""

from __future__ import annotations

import ipaddress
import struct

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(src: str, dst: str, sport: int, dport: int) -> bytes:
    family = "TCP6" if ":" in src else "TCP4"
    return f"PROXY {family} {src} {dst} {sport} {dport}\r\n".encode()


def v2(src: str, dst: str, sport: int, dport: int, tlvs: bytes = b"") -> bytes:
    """A v2 PROXY command over TCP; ``tlvs`` as HAProxy appends them (e.g. :func:`unique_id`)."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    family = 0x11 if s.version == 4 else 0x21
    block = s.packed + d.packed + struct.pack("!HH", sport, dport) + tlvs
    return SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(block)) + block


def v2_local() -> bytes:
    """HAProxy's health checks: the LOCAL command, family UNSPEC, no addresses."""
    return SIGNATURE + b"\x20\x00\x00\x00"


def unique_id(value: bytes) -> bytes:
    """PP2_TYPE_UNIQUE_ID (0x05), sent with ``proxy-v2-options unique-id``."""
    return b"\x05" + struct.pack("!H", len(value)) + value
