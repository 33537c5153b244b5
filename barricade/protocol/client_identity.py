"""Telling the downstream who the real client is: Postfix's XCLIENT and XFORWARD.

Behind a proxy the downstream MTA sees every message come from the proxy's
address.  XCLIENT (once per connection, after EHLO) makes a Postfix smtpd
act as if the client had connected to it directly, restrictions included;
XFORWARD (before each MAIL) only changes what it logs and records.  Both
send only the attributes the downstream named in its EHLO, xtext-encoded,
in commands no longer than Postfix accepts.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from barricade.protocol import events as ev

COMMAND_LIMIT = 512  # CRLF included (Postfix's line_length_limit is larger; RFC 5321 is not)
UNAVAILABLE = "[UNAVAILABLE]"

#: What each command carries, in the order sent.
XCLIENT_ATTRS = ("NAME", "ADDR", "PORT", "PROTO", "HELO")
XFORWARD_ATTRS = ("NAME", "ADDR", "PORT", "PROTO", "HELO", "SOURCE", "IDENT")


def xtext(value: str) -> str:
    """RFC 3461 xtext: ``+``, ``=``, controls, space and non-ASCII as ``+HH``."""
    out = []
    for byte in value.encode("utf-8"):
        if 0x21 <= byte <= 0x7E and byte not in (0x2B, 0x3D):
            out.append(chr(byte))
        else:
            out.append(f"+{byte:02X}")
    return "".join(out)


def _addr(ip: str) -> str:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return UNAVAILABLE
    if addr.version == 6:
        return f"IPV6:{addr.compressed}" if not addr.ipv4_mapped else str(addr.ipv4_mapped)
    return str(addr)


def identity(client: ev.ClientInfo, helo: str, esmtp: bool, qid: str = "") -> dict[str, str]:
    """The attribute values for ``client`` (not yet xtext-encoded).

    SOURCE is LOCAL for route-map RELAY clients (our own users) and REMOTE
    for everyone else; IDENT is our queue id, so the two logs can be joined.
    """
    return {
        "NAME": client.name if client.name and client.name != "unknown" else UNAVAILABLE,
        "ADDR": _addr(client.ip),
        "PORT": str(client.port) if client.port else UNAVAILABLE,
        "PROTO": "ESMTP" if esmtp else "SMTP",
        "HELO": helo or UNAVAILABLE,
        "SOURCE": "LOCAL" if client.relay else "REMOTE",
        "IDENT": qid or UNAVAILABLE,
    }


def _commands(verb: str, order: Iterable[str], offered: frozenset[str], values: dict[str, str]) -> list[str]:
    """``VERB A=1 B=2`` lines, split so that none exceeds :data:`COMMAND_LIMIT`."""
    lines: list[str] = []
    line = verb
    for name in order:
        if name not in offered:
            continue
        value = values[name]
        token = f" {name}={value if value == UNAVAILABLE else xtext(value)}"
        if len(verb) + len(token) + 2 > COMMAND_LIMIT:
            # Too long for a line of its own (a 500-octet HELO, xtext-escaped): cut, it
            # would name another host, or split an escape; the downstream hears "unknown".
            token = f" {name}={UNAVAILABLE}"
        if len(line) + len(token) + 2 > COMMAND_LIMIT and line != verb:
            lines.append(line)
            line = verb
        line += token
    if line != verb:
        lines.append(line)
    return lines


def xclient_commands(offered: frozenset[str], values: dict[str, str]) -> list[str]:
    """XCLIENT lines for a downstream announcing ``XCLIENT <offered>``."""
    return _commands("XCLIENT", XCLIENT_ATTRS, offered, values)


def xforward_commands(offered: frozenset[str], values: dict[str, str]) -> list[str]:
    """XFORWARD lines for a downstream announcing ``XFORWARD <offered>``."""
    return _commands("XFORWARD", XFORWARD_ATTRS, offered, values)
