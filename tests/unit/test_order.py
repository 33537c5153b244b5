"""The check order table: it reproduces the built-in order, places plugins by name,
and renders the docs."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest
from twisted.internet.testing import MemoryReactorClock

import barricade.policy
from barricade.maps import RouteMap
from barricade.options import REGISTRY
from barricade.policy.access import AccessMap
from barricade.policy.limits import builtin_checks
from barricade.policy.order import ORDER, OrderError, arrange, render_markdown, validate
from barricade.policy.pipeline import PHASES, Check, Pipeline
from barricade.state import MemoryStore

ROOT = Path(__file__).resolve().parents[2]


class Resolver:
    """Enough of a resolver for the checks that need one to be built (none is asked here)."""


def every_check(tmp_path, *settings: str) -> list[Check]:
    amap = tmp_path / "access-map"
    amap.write_text("connect:192.0.2.9 OK\n")
    routes = tmp_path / "route-map"
    routes.write_text("route:local FORWARD: 127.0.0.1:25\n")
    config = REGISTRY.parse(["dns-bl=bl.test", "dns-wl=wl.test", "dns-gl=gl.test",
                             "dns-bl-headers=Received", "+call-back", "spf-helo-policy=fail-reject",
                             "spf-mail-policy=fail-reject", *settings])
    return builtin_checks(config, AccessMap(str(amap)), MemoryStore(), routes=RouteMap(str(routes)),
                          hostname="gw.test", resolver=Resolver())


@pytest.mark.parametrize("settings", [
    (), ("+client-ptr-required", "+helo-is-ptr"), ("+client-ptr-required", "+client-is-mx",
                                                   "+helo-is-ptr", "+grey-content"),
])
def test_the_table_reproduces_the_built_in_order(tmp_path, settings):
    checks = every_check(tmp_path, *settings)
    assert len(checks) > 25
    plain = Pipeline(checks, MemoryReactorClock(), 5)
    ordered = Pipeline(checks, MemoryReactorClock(), 5, order=ORDER)
    for phase in PHASES:
        assert ordered.order(phase) == plain.order(phase), phase


def test_every_built_in_check_is_placed_in_each_phase_it_has_a_hook_for():
    for info in pkgutil.iter_modules(barricade.policy.__path__):
        importlib.import_module(f"barricade.policy.{info.name}")
    todo, seen = [Check], []
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if sub.__module__.startswith("barricade.policy.") and sub.name != "check":
                seen.append(sub)
    assert len(seen) > 25
    for cls in seen:
        for phase in PHASES:
            if getattr(cls, phase) is not getattr(Check, phase):
                assert cls.name in [n for n, _ in ORDER[phase]], (cls.__name__, phase)


class Named(Check):
    def __init__(self, name: str, before: str = "", after: str = ""):
        self.name, self.before, self.after = name, before, after

    async def connect(self, ctx):
        return None


def names(checks) -> list[str]:
    return [c.name for c in checks]


def test_plugins_slot_in_by_name_and_may_run_before_built_in_checks():
    built = [Named(n) for n in ("access-connect", "dns-wl", "dns-bl", "client-tests")]
    white = Named("my-white-list", before="dns-wl")
    late = Named("late")
    after_bl = Named("after-bl", after="dns-bl")
    after_bl2 = Named("after-bl-2", after="dns-bl")
    out = arrange("connect", [*built, white, late, after_bl, after_bl2])
    assert names(out) == ["access-connect", "my-white-list", "dns-wl", "dns-bl", "after-bl",
                          "after-bl-2", "client-tests", "late"]


def test_a_place_next_to_an_unconfigured_check_keeps_its_rank():
    built = [Named("access-connect"), Named("client-tests")]  # no DNS lists configured
    out = arrange("connect", [*built, Named("mine", before="dns-bl")])
    assert names(out) == ["access-connect", "mine", "client-tests"]
    # A check placed next to one this phase does not list runs after the listed ones.
    out = arrange("connect", [*built, Named("mine", after="hop-limit")])
    assert names(out) == ["access-connect", "client-tests", "mine"]


def test_a_place_naming_no_check_is_a_start_up_error():
    with pytest.raises(OrderError, match="before='dns-black' names no check"):
        validate([Named("mine", before="dns-black")])
    validate([Named("mine", before="dns-bl"), Named("other", after="mine")])


def test_the_docs_are_generated_from_the_table():
    assert (ROOT / "docs/check-order.md").read_text() == render_markdown(), "regenerate: scripts/regen"
