"""Test daemons: kept as an import path for the suite; the kit is barricade.testing."""

from barricade.testing import (  # noqa: F401
    PACKAGE_ROOT,
    REPO,
    Proxy,
    Sink,
    banner_ready,
    children,
    free_port,
    lf,
    stop,
    wait_for,
)
