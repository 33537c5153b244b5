"""The order the checks of each phase run in, as data.

smtpf runs each SMTP phase through a filter table in a fixed, documented
order; this is Barricade's.  Each phase names its built-in checks (by
their ``name``) in the order they run; a check listed here runs only when
it is configured.  Plugins slot in by name: a plugin whose class says
``before = "dns-bl"`` (or ``after = "access-connect"``) runs at that place
in every phase where that check is listed, so a plugin may white-list a
client before the DNS lists are asked.  Plugins without a place, and
checks this table does not name, run after the listed ones, in their given
order (plugins: by ``order``, then name).  Each row says why the check
sits where it does; ``docs/check-order.md`` is rendered from this table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

#: Each phase's built-in checks, in order, with the reason for each position.
ORDER: dict[str, tuple[tuple[str, str], ...]] = {
    "connect": (
        ("tls-policy", "the access map's Tls-Connect: (SKIP withholds STARTTLS, REQUIRE) is read first"),
        ("rate-connect", "Rate-Connect: before the access map's Connect:, as in smtpf's connect table"),
        ("concurrent-connect", "Concurrent-Connect: likewise, after the rate"),
        ("access-connect", "the access map's Connect: entries (white, black, grey lists by hand)"),
        ("dns-wl", "DNS white lists: after the access map, before any DNS black list"),
        ("dns-gl", "DNS grey lists: a listed client skips the later connect tests"),
        ("client-ptr", "client-ptr-required and client-ip-in-ptr, between dns-gl and dns-bl"),
        ("dns-bl", "DNS black lists"),
        ("client-tests", "the client tests follow the access map and skip what it listed"),
    ),
    "helo": (
        ("access-helo", "the access map's Helo: entries"),
        ("helo-tests", "the HELO tests, after the access map"),
        ("spf-helo", "the SPF HELO identity, after the HELO tests"),
        ("helo-is-ptr", "helo-is-ptr follows the HELO tests"),
    ),
    "mail": (
        ("tls-policy", "the access map's Tls-Connect:/Tls-From: REQUIRE first: a protocol rule "
                       "no white list lifts"),
        ("dupmsg", "a duplicate message's state starts with the transaction"),
        ("spf", "SPF is computed before the access map's From: (its SPF words read it) and "
                "before mail-require-mx and client-is-mx (which read it too)"),
        ("access-session", "the access map's session-wide state"),
        ("access-mail", "the access map's From: and Connect:From: entries"),
        ("mail-tests", "the sender tests, after the access map"),
        ("mail-require-mx", "the sender's MX lookup (notes whether the client is one of them)"),
        ("client-is-mx", "with client-is-mx the PTR tests wait for the sender's MX lookup"),
    ),
    "rcpt": (
        ("rcpt-limit", "a protocol limit first: a white-listed recipient must not lift it"),
        ("tls-policy", "Tls-To: REQUIRE, a protocol rule too"),
        ("msg-limit", "Msg-Limit-* before the access map's To: (smtpf.md section 2.F)"),
        ("length", "Length-To: likewise"),
        ("rcpt-address", "the recipient-form tests (#131-#133) precede the access map's To:, "
                         "as in smtpf's accessRcpt"),
        ("access-rcpt", "the access map's To:, Connect:To: and From:To: entries"),
        ("rcpt-tests", "the recipient tests, after the access map"),
        ("helo-is-ptr", "with client-is-mx, helo-is-ptr runs with the recipient tests"),
        ("spf-policy", "SPF is enforced at RCPT, after the recipient tests (smtpf section 2.F)"),
        ("null-rate-to", "Null-Rate-To: after the recipient tests"),
    ),
    "data": (
        ("access-message", "the access map's message check"),
        ("call-back", "the call-back follows it, as in smtpf's data table"),
        ("grey", "then grey-listing"),
    ),
    "headers": (
        ("length", "the size limits"),
        ("spf", "the Received-SPF header"),
        ("access-copy", "copies and traps see the message as received"),
        ("access-message", "the access map's message check"),
        ("dns-bl-headers", "addresses in headers looked up in the DNS lists"),
        ("hop-limit", "the Received: count"),
    ),
    "body": (
        ("dupmsg", "the message digest"),
        ("length", "the size limits"),
        ("access-copy", "copies and traps"),
        ("grey", "grey-content's digest"),
    ),
    "end_of_data": (
        ("msg-limit", "the message counts"),
        ("dupmsg", "at the dot dupmsg comes first"),
        ("length", "then the size"),
        ("access-copy", "copies and traps"),
        ("access-message", "then the access map's DISCARD"),
        ("grey", "grey-content"),
    ),
    "close": (
        ("concurrent-connect", "the connection's lease is given back"),
        ("dupmsg", "a delivered message whose 250 may have been lost is remembered"),
    ),
}


class OrderError(ValueError):
    """A plugin's ``before``/``after`` names no check."""


def names(phase: str, table: Mapping[str, Sequence[tuple[str, str]]] = ORDER) -> list[str]:
    return [name for name, _ in table.get(phase, ())]


def known(table: Mapping[str, Sequence[tuple[str, str]]] = ORDER) -> set[str]:
    """Every check name the table places."""
    return {name for rows in table.values() for name, _ in rows}


def validate(checks: Iterable[Any], table: Mapping[str, Sequence[tuple[str, str]]] = ORDER) -> None:
    """Every ``before``/``after`` names a check of the table or another check; raises OrderError."""
    checks = list(checks)
    valid = known(table) | {c.name for c in checks}
    for check in checks:
        for attr in ("before", "after"):
            target = getattr(check, attr, "") or ""
            if target and target not in valid:
                raise OrderError(f"check {check.name}: {attr}={target!r} names no check")
        if getattr(check, "before", "") and getattr(check, "after", ""):
            raise OrderError(f"check {check.name}: give before= or after=, not both")


def arrange(phase: str, checks: Sequence[Any],
            table: Mapping[str, Sequence[tuple[str, str]]] = ORDER) -> list[Any]:
    """The checks that run in ``phase`` (already filtered to those with the hook), in order.

    Listed checks first in table order; then, each at its anchor, checks
    with ``before``/``after``; the rest keep their given order at the end.
    """
    listed = names(phase, table)
    rank = {name: i for i, name in enumerate(listed)}
    placed = sorted((c for c in checks if c.name in rank and not _anchor(c)),
                    key=lambda c: rank[c.name])
    rest = [c for c in checks if c.name not in rank and not _anchor(c)]
    out = placed + rest
    pending = [c for c in checks if _anchor(c)]
    while pending:
        progress = False
        for check in list(pending):
            where, target = _anchor(check)
            index = _position(out, target, where, listed)
            if index is None:
                continue
            out.insert(index, check)
            pending.remove(check)
            progress = True
        if not progress:  # the anchor is not configured, nor listed in this phase: run last
            out.extend(pending)
            break
    return out


def _anchor(check: Any) -> tuple[str, str] | None:
    before = getattr(check, "before", "") or ""
    after = getattr(check, "after", "") or ""
    if before:
        return "before", before
    if after:
        return "after", after
    return None


def _position(out: list[Any], target: str, where: str, listed: list[str]) -> int | None:
    """Where a check anchored to ``target`` goes in ``out``; None: not yet known."""
    hits = [i for i, c in enumerate(out) if c.name == target]
    if hits:
        if where == "before":
            return hits[0]
        # After the target and after the checks already anchored behind it.
        index = hits[-1] + 1
        while index < len(out) and _anchor(out[index]) == ("after", target):
            index += 1
        return index
    if target not in listed:
        return None
    # The target is listed here but not configured: keep its place among the listed ones.
    rank = listed.index(target)
    later = [i for i, c in enumerate(out) if c.name in listed and listed.index(c.name) > rank
             and not _anchor(c)]
    if later:
        return later[0]
    earlier = [i for i, c in enumerate(out) if c.name in listed and not _anchor(c)]
    return earlier[-1] + 1 if earlier else 0


def render_markdown(table: Mapping[str, Sequence[tuple[str, str]]] = ORDER) -> str:
    """The table as ``docs/check-order.md``."""
    out = [
        "# Check order",
        "",
        "The order in which the built-in checks of each phase run (smtpf's filter tables).",
        "A check runs only when it is configured; white-listed sessions skip all but the",
        "anti-virus and protocol-limit checks. A plugin slots in with `before = \"name\"` or",
        "`after = \"name\"`; plugins without a place run after the built-in checks, by `order`",
        "then name. Generated by `scripts/regen` from `barricade/policy/order.py`; do not edit.",
    ]
    for phase, rows in table.items():
        out += ["", f"## {phase}", "", "| # | check | why here |", "|---:|---|---|"]
        for i, (name, why) in enumerate(rows, 1):
            out.append(f"| {i} | `{name}` | {why} |")
    return "\n".join(out) + "\n"
