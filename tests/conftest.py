"""Shared fixtures: a real smtp-sink downstream and a real Barricade process."""

from barricade.testing import make_proxy, make_sink, routes_to, sink  # noqa: F401
