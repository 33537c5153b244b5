"""Barricade's test kit provides the real downstream and the real proxy."""

from barricade.testing import make_proxy, make_sink, sink  # noqa: F401
