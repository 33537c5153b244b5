"""Does a PTR name look built from the client's IPv4 address?  (``client-ip-in-ptr``)

Dynamic and residential address space is named after the address:
``adsl-198-51-100-7.pool.example``, ``c6336407.dsl.example``,
``7.100.51.198.dyn.example``.  Such a host should send mail through its
provider's relay, so smtpf refuses mail from it (#418) unless it turns out
to be an MX of the sender's domain (``client-is-mx``).  This module is the
heuristic behind that flag (libsnert's ``isIPv4InClientName``), pure and
without I/O, so that it can be tested table by table.

It looks for the address in the name, in turn:

1. in hexadecimal, decimal and octal: the whole 32-bit number
   (``%08x``, ``%u``, ``%o``), either 16-bit half when it is above 255
   (``%x``, ``%u``, ``%o``), or two adjacent octets written together in
   either order (``%02x%02x``, ``%03u%03u``, ``%03o%03o``);
2. two adjacent octets, either order, with one separator between them
   (``%02x-%02x``, ``%u-%u``, ``%03o-%03o``);
3. a name that starts with the last octet: two hexadecimal digits and then
   no third, or up to three decimal digits;
4. the last octet between a ``-`` and a separator, zero-padded to three
   digits or not (``-007.``, ``-7.``);
5. the third octet and then, somewhere after where it starts, the last one
   (``241net98.example`` for 194.117.241.98).

"Somewhere in the name" is libsnert's lenient substring match: separators
(any punctuation) in the name are skipped where the pattern wants a digit,
and a separator in the pattern matches any one separator in the name; the
first character of the pattern must be there as it is.  So ``198051``
finds ``198.051`` and ``198-51`` finds ``198_51``.

:func:`ip_in_name` answers smtpf's rule number (as above: 1 hex, 2 decimal,
3 octal, 10-12 separated pairs, 5 and 6 leading octet, 7 and 8 bracketed
last octet, 9 third-then-fourth), 0 for no match, so logs can say which
rule fired.  IPv4 only, as in smtpf: an IPv6 address is never "in" a name.

The rules are broad by design (rule 9 matches ``mx100.example7.net`` for
198.51.100.7); that is why smtpf leaves ``client-ip-in-ptr`` off by default
and offers ``client-is-mx`` to soften it.
"""

from __future__ import annotations

import ipaddress
import string

from barricade.client import ClientInfo, normal_ip

_PUNCT = frozenset(string.punctuation)
_HEX = frozenset(string.hexdigits)
_DIGITS = frozenset(string.digits)


def find(name: str, pattern: str, start: int = 0) -> int:
    """Where ``pattern`` occurs in ``name`` from ``start``, libsnert's way; -1 if nowhere.

    The first pattern character must match exactly.  After it, a separator
    in the name is skipped while the pattern expects a (hex) digit, and a
    separator in the pattern matches any separator in the name.
    """
    if not pattern:
        return start
    first = pattern[0]
    at = name.find(first, start)
    while at != -1:
        d, p = at + 1, 1
        while p < len(pattern) and d < len(name):
            got, want = name[d], pattern[p]
            if got in _PUNCT and want in _HEX:
                d += 1  # a separator where a digit is expected: skip it
                continue
            if got in _PUNCT and want in _PUNCT:
                d += 1
                p += 1
                continue
            if got != want:
                break
            d += 1
            p += 1
        if p == len(pattern):
            return at
        at = name.find(first, at + 1)
    return -1


def _formats(base: str) -> tuple[str, str, str]:
    """The whole number, a 16-bit half, a pair of octets written together."""
    if base == "x":
        return "{:08x}", "{:x}", "{:02x}{:02x}"
    if base == "u":
        return "{:d}", "{:d}", "{:03d}{:03d}"
    return "{:o}", "{:o}", "{:03o}{:03o}"


def _pairs(octets: tuple[int, ...]) -> list[tuple[int, int]]:
    """Adjacent octets forwards (1-2, 2-3, 3-4), then backwards (4-3, 3-2, 2-1)."""
    a, b, c, d = octets
    return [(a, b), (b, c), (c, d), (d, c), (c, b), (b, a)]


def _octets_found(name: str, octets: tuple[int, ...], number: str | None, half: str | None,
                  pair: str) -> bool:
    """libsnert's ``find_octets``: the whole number, a half above 255, a pair."""
    a, b, c, d = octets
    if number is not None and find(name, number.format((a << 24) | (b << 16) | (c << 8) | d)) >= 0:
        return True
    if half is not None:
        # Only halves above 255: 0.128.c.d would otherwise match a lone "128".
        for value in ((a << 8) | b, (c << 8) | d):
            if value > 255 and find(name, half.format(value)) >= 0:
                return True
    return any(find(name, pair.format(x, y)) >= 0 for x, y in _pairs(octets))


def _leading_number(name: str, digits: frozenset[str], width: int) -> str:
    out = ""
    for ch in name[:width]:
        if ch not in digits:
            break
        out += ch
    return out


def ip_in_name(name: str, ip: str) -> int:
    """smtpf's rule number when ``name`` looks built from IPv4 ``ip``, else 0.

    ``name`` is compared in lower case without a trailing dot; an IPv6 or
    unparsable ``ip`` and an empty name give 0.
    """
    addr = normal_ip(ip)
    if not isinstance(addr, ipaddress.IPv4Address):
        return 0
    name = name.strip().rstrip(".").lower()
    if not name:
        return 0
    octets = tuple(addr.packed)
    for rule, base in ((1, "x"), (2, "u"), (3, "o")):
        if _octets_found(name, octets, *_formats(base)):
            return rule
    for rule, pair in ((10, "{:02x}-{:02x}"), (11, "{:d}-{:d}"), (12, "{:03o}-{:03o}")):
        if _octets_found(name, octets, None, None, pair):
            return rule
    last = octets[3]
    # The name starts with the last octet: two hex digits and no third ...
    head = _leading_number(name, _HEX, 3)
    if len(head) == 2 and int(head, 16) == last:
        return 5
    # ... or up to three decimal digits.
    head = _leading_number(name, _DIGITS, 3)
    if head and int(head) == last:
        return 6
    # The last octet between a dash and a separator, zero-padded or not.
    if find(name, f"-{last:03d}.") >= 0:
        return 7
    if find(name, f"-{last:d}.") >= 0:
        return 8
    # The third octet, then the last one after where it starts (241net98.example).
    at = find(name, str(octets[2]))
    if at >= 0 and find(name, str(last), at + 1) >= 0:
        return 9
    return 0


def client_ip_in_ptr(client: ClientInfo) -> int:
    """smtpf's CLIENT_IS_IP_IN_PTR for a session's client: the rule number, or 0.

    The PTR name is the first one, whether it resolves back or not (smtpf
    tests the name DNS gave).  Route-map RELAY clients are never flagged.
    """
    if client.relay or not client.ptr:
        return 0
    return ip_in_name(client.ptr, client.ip)
