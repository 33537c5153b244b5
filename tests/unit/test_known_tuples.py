"""A worker's memory of passed grey-list tuples (barricade/state/known.py)."""

from __future__ import annotations

import pytest

from barricade.state.base import Grey, GreyStatus
from barricade.state.known import KnownTuples
from tests.state import FakeClock

WEEK = 604800.0


def status(result: Grey, created: float = 1000.0, now: float = 1600.0) -> GreyStatus:
    return GreyStatus(result, created, now, 600.0)


def remember(known: KnownTuples, name: str, host: str | None, result: Grey,
             accept_ttl: float = WEEK) -> None:
    """Ask, and remember the answer at once."""
    known.remember(name, host, status(result), accept_ttl, known.asking())


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_a_pass_is_remembered_until_its_lifetime_ends(clock) -> None:
    known = KnownTuples(60, clock=clock)
    clock.at(0)
    remember(known, "a@x,b@y", None, Grey.PASS)
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
    remember(known, "a@x,b@y", None, result)
    assert known.get("a@x,b@y", None, 600) is None and len(known) == 0


def test_known_is_remembered_too_and_never_past_the_records_own_ttl(clock) -> None:
    known = KnownTuples(60, clock=clock)
    clock.at(0)
    remember(known, "a@x,b@y", None, Grey.KNOWN, accept_ttl=5)
    clock.at(4.999)
    assert known.get("a@x,b@y", None, 600) is not None
    clock.at(5)
    assert known.get("a@x,b@y", None, 600) is None


def test_lifetime_zero_remembers_nothing(clock) -> None:
    known = KnownTuples(0, clock=clock)
    remember(known, "a@x,b@y", None, Grey.PASS)
    assert known.get("a@x,b@y", None, 600) is None and len(known) == 0


def test_a_clock_that_goes_back_ends_the_memory(clock) -> None:
    known = KnownTuples(60, clock=clock)
    clock.at(10)
    remember(known, "a@x,b@y", None, Grey.PASS)
    clock.at(9)
    assert known.get("a@x,b@y", None, 600) is None


def test_the_host_is_part_of_the_name(clock) -> None:
    """The store keeps a tuple under its host: with and without it are two records."""
    known = KnownTuples(60, clock=clock)
    remember(known, "192.0.2.9,a@x", "192.0.2.9", Grey.PASS)
    assert known.get("192.0.2.9,a@x", None, 600) is None
    assert known.get("192.0.2.9,a@x", "192.0.2.9", 600) is not None


def test_forget_a_tuple_or_every_tuple_of_a_host(clock) -> None:
    known = KnownTuples(60, clock=clock)
    for name, host in [("h1,a", "h1"), ("h1,b", "h1"), ("h2,a", "h2"), ("a,b", None)]:
        remember(known, name, host, Grey.PASS)
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
        remember(known, f"t{n}", None, Grey.PASS)
    assert len(known) == 3
    assert known.get("t0", None, 600) is None
    assert all(known.get(f"t{n}", None, 600) is not None for n in (1, 2, 3))
    remember(known, "t1", None, Grey.KNOWN)  # again: the newest now, no eviction
    assert len(known) == 3
    remember(known, "t4", None, Grey.PASS)
    assert known.get("t2", None, 600) is None and known.get("t1", None, 600) is not None


def test_a_host_and_a_tuple_without_one_share_a_record(clock) -> None:
    """The store keeps the tuple ``X`` (no host) and host ``X``'s record under one
    key: a reject written for either forgets both (grey-key=ip makes such tuples)."""
    known = KnownTuples(60, clock=clock)
    remember(known, "192.0.2.9", None, Grey.PASS)
    remember(known, "192.0.2.9,a@x", "192.0.2.9", Grey.PASS)
    remember(known, "192.0.2.7", None, Grey.PASS)
    known.forget(host="192.0.2.9")
    assert known.get("192.0.2.9", None, 600) is None
    assert known.get("192.0.2.9,a@x", "192.0.2.9", 600) is None
    remember(known, "192.0.2.7,b@y", "192.0.2.7", Grey.PASS)
    known.forget(tuple_key="192.0.2.7")
    assert known.get("192.0.2.7", None, 600) is None
    assert known.get("192.0.2.7,b@y", "192.0.2.7", 600) is None
    assert len(known) == 0


def test_an_answer_to_a_question_asked_before_a_reject_is_not_remembered(clock) -> None:
    """A lookup on its way when a reject is written must not bring the tuple back."""
    known = KnownTuples(60, clock=clock)
    asked = known.asking()
    known.forget(host="192.0.2.9")  # the reject, written meanwhile
    known.remember("192.0.2.9,a@x", "192.0.2.9", status(Grey.KNOWN), WEEK, asked)
    assert len(known) == 0
    remember(known, "192.0.2.9,a@x", "192.0.2.9", Grey.KNOWN)  # asked afterwards: remembered
    assert len(known) == 1


def test_the_lifetime_counts_from_the_question(clock) -> None:
    """Redis computes the record's expiry when it runs the script, after the question
    left: counted from the answer, the memory could outlive a record whose
    cache-accept-ttl is shorter than the memory's lifetime."""
    known = KnownTuples(60, clock=clock)
    clock.at(0)
    asked = known.asking()
    clock.at(0.4)  # the answer arrives
    known.remember("a@x,b@y", None, status(Grey.PASS), 2, asked)
    clock.at(1.999)
    assert known.get("a@x,b@y", None, 600) is not None
    clock.at(2)
    assert known.get("a@x,b@y", None, 600) is None
