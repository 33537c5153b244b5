"""A worker's memory of passed grey-list tuples (barricade/state/known.py)."""

from __future__ import annotations

import pytest

from barricade.state.base import Grey, GreyStatus
from barricade.state.known import KnownTuples
from tests.state import FakeClock

WEEK = 604800.0


def status(result: Grey, created: float = 1000.0, now: float = 1600.0) -> GreyStatus:
    return GreyStatus(result, created, now, 600.0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_a_pass_is_remembered_until_its_lifetime_ends(clock) -> None:
    known = KnownTuples(60, clock=clock)
    clock.at(0)
    known.remember("a@x,b@y", None, status(Grey.PASS), WEEK)
    clock.at(59.5)
    found = known.get("a@x,b@y", None, 300)
    assert found == GreyStatus(Grey.KNOWN, 1000.0, 1659.5, 300)  # the store's time moved on
    assert found.passed and found.remaining == 0
    clock.at(60)
    assert known.get("a@x,b@y", None, 300) is None
    assert len(known) == 0  # an expired entry is dropped when it is asked for


@pytest.mark.parametrize("result", [Grey.NEW, Grey.EARLY, Grey.DUE, Grey.MISMATCH, Grey.REJECT])
def test_only_passes_are_remembered(clock, result) -> None:
    known = KnownTuples(60, clock=clock)
    known.remember("a@x,b@y", None, status(result), WEEK)
    assert known.get("a@x,b@y", None, 600) is None and len(known) == 0


def test_known_is_remembered_too_and_never_past_the_records_own_ttl(clock) -> None:
    known = KnownTuples(60, clock=clock)
    clock.at(0)
    known.remember("a@x,b@y", None, status(Grey.KNOWN), accept_ttl=5)
    clock.at(4.999)
    assert known.get("a@x,b@y", None, 600) is not None
    clock.at(5)
    assert known.get("a@x,b@y", None, 600) is None


def test_lifetime_zero_remembers_nothing(clock) -> None:
    known = KnownTuples(0, clock=clock)
    known.remember("a@x,b@y", None, status(Grey.PASS), WEEK)
    assert known.get("a@x,b@y", None, 600) is None and len(known) == 0


def test_a_clock_that_goes_back_ends_the_memory(clock) -> None:
    known = KnownTuples(60, clock=clock)
    clock.at(10)
    known.remember("a@x,b@y", None, status(Grey.PASS), WEEK)
    clock.at(9)
    assert known.get("a@x,b@y", None, 600) is None


def test_the_host_is_part_of_the_name(clock) -> None:
    """The store keeps a tuple under its host: with and without it are two records."""
    known = KnownTuples(60, clock=clock)
    known.remember("192.0.2.9,a@x", "192.0.2.9", status(Grey.PASS), WEEK)
    assert known.get("192.0.2.9,a@x", None, 600) is None
    assert known.get("192.0.2.9,a@x", "192.0.2.9", 600) is not None


def test_forget_a_tuple_or_every_tuple_of_a_host(clock) -> None:
    known = KnownTuples(60, clock=clock)
    for name, host in [("h1,a", "h1"), ("h1,b", "h1"), ("h2,a", "h2"), ("a,b", None)]:
        known.remember(name, host, status(Grey.PASS), WEEK)
    known.forget(tuple_key="a,b")
    assert known.get("a,b", None, 600) is None
    known.forget(host="h1")
    assert known.get("h1,a", "h1", 600) is None and known.get("h1,b", "h1", 600) is None
    assert known.get("h2,a", "h2", 600) is not None
    known.forget(host="h2", tuple_key="h2,b")  # another tuple of h2: h2,a stays
    assert known.get("h2,a", "h2", 600) is not None
    known.forget(host="h2", tuple_key="h2,a")
    assert len(known) == 0


def test_bounded_the_oldest_goes_first(clock) -> None:
    known = KnownTuples(60, size=3, clock=clock)
    for n in range(4):
        known.remember(f"t{n}", None, status(Grey.PASS), WEEK)
    assert len(known) == 3
    assert known.get("t0", None, 600) is None
    assert all(known.get(f"t{n}", None, 600) is not None for n in (1, 2, 3))
    known.remember("t1", None, status(Grey.KNOWN), WEEK)  # again: no eviction
    assert len(known) == 3 and known.get("t2", None, 600) is not None
