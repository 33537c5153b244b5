"""Shared fixtures: a real smtp-sink downstream and a real Barricade process."""

from __future__ import annotations

import pytest

from tests.daemons import Proxy, Sink


@pytest.fixture
def sink(tmp_path):
    s = Sink(tmp_path)
    yield s
    s.stop()


@pytest.fixture
def make_sink(tmp_path):
    """Factory: ``make_sink("-f", "RCPT")`` for a sink that refuses RCPT."""
    started = []

    def make(*args: str, port: int | None = None) -> Sink:
        s = Sink(tmp_path, *args, port=port)
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


@pytest.fixture
def make_proxy(tmp_path):
    """Factory: ``make_proxy(route_map_text, "opt=value", ...)``."""
    started = []

    def make(route_map: str, *args: str) -> Proxy:
        p = Proxy(tmp_path, route_map, *args)
        started.append(p)
        return p

    yield make
    for p in started:
        p.stop()


def routes_to(*sinks: Sink, relay: bool = False) -> str:
    """A route map: route:local and example.com to the first sink, example.N to sink N."""
    first = sinks[0]
    lines = [f"route:local FORWARD: 127.0.0.1:{first.port}",
             f"route:example.com FORWARD: 127.0.0.1:{first.port}"]
    for i, s in enumerate(sinks):
        lines.append(f"route:example{i}.net FORWARD: 127.0.0.1:{s.port}")
    if relay:
        lines.append("route:127.0.0.1 RELAY")
    return "\n".join(lines) + "\n"
