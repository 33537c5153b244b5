"""Shared fixtures: a real smtp-sink downstream and a real Barricade process."""

import pytest

from barricade.testing import make_proxy, make_sink, routes_to, sink  # noqa: F401


@pytest.fixture
def access(tmp_path, sink, make_proxy):  # noqa: F811
    """Factory: a proxy with this access map text (and options)."""

    def make(text: str, *args: str):
        path = tmp_path / "access-map"
        path.write_text(text)
        proxy = make_proxy(routes_to(sink), f"access-map={path}", *args)
        proxy.access_path = path
        return proxy

    return make
