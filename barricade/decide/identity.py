"""Who the client is after XCLIENT: the new identity, decided from the attributes alone."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

from barricade.client import ClientInfo, classify


def xclient_identity(old: ClientInfo, attrs: Mapping[str, str | None],
                     is_relay: Callable[[str, str | None], bool]) -> tuple[ClientInfo, bool]:
    """The client XCLIENT describes, and whether its PTR must be looked up.

    A new ADDR without NAME is looked up, as for a real connection; a NAME
    is the upstream MTA's verified name (Postfix semantics); attributes not
    given keep their old values.
    """
    ip = attrs.get("ADDR", old.ip) if "ADDR" in attrs else old.ip
    lookup = "ADDR" in attrs and "NAME" not in attrs
    name = attrs.get("NAME") if "NAME" in attrs else ("unknown" if lookup else old.name)
    port = int(attrs["PORT"]) if attrs.get("PORT") else old.port
    proto = (attrs.get("PROTO") or old.proto).upper()
    client = classify(ip or old.ip, port, name or "unknown", is_relay, proto)
    if "NAME" in attrs:
        client = replace(client, ptr=attrs["NAME"] or "")
    elif not lookup:
        client = replace(client, ptr=old.ptr, forged=old.forged, ptr_error=old.ptr_error)
    return client, lookup
