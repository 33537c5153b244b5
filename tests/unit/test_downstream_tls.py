"""The downstream STARTTLS policy and its route-map spelling."""

from __future__ import annotations

import pytest

from barricade.maps import MapError, parse_route
from barricade.protocol.downstream_tls import PLAIN, REFUSE, STARTTLS, TlsPolicy, decide, parse_policy


def test_parse_policy():
    assert parse_policy("may") == TlsPolicy("may")
    assert parse_policy(" Verify:mx.example.com ") == TlsPolicy("verify", "mx.example.com")
    assert parse_policy("require").required and parse_policy("encrypt").required
    assert not parse_policy("may").required and parse_policy("verify").verify
    for bad in ("sometimes", "may:x", ""):
        with pytest.raises(ValueError):
            parse_policy(bad)


def test_decide():
    assert decide(TlsPolicy("none"), True) == PLAIN
    assert decide(TlsPolicy("may"), True) == STARTTLS and decide(TlsPolicy("may"), False) == PLAIN
    assert decide(TlsPolicy("require"), False) == REFUSE
    assert decide(TlsPolicy("verify"), True) == STARTTLS and decide(TlsPolicy("verify"), False) == REFUSE


def test_route_map_tls_parameter():
    route = parse_route("route:example.com", "FORWARD: 192.0.2.25; TLS: verify:mx.example.com")
    assert route.extra["TLS"] == "verify:mx.example.com" and route.forward == (("192.0.2.25", 25),)
    with pytest.raises(MapError, match="TLS policy"):
        parse_route("route:example.com", "FORWARD: 192.0.2.25; TLS: maybe")
