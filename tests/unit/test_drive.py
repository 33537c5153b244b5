"""barricade.drive: a coroutine run to its end at once when it never waits, continued
from the callbacks of the Deferreds it awaits, the general way for anything else;
the policy's form with a timeout that cancels what it awaits."""

from __future__ import annotations

import types

import pytest
from twisted.internet import defer, task
from twisted.python.failure import Failure

from barricade.drive import Deadlines, Drive, deferred, drive


async def answer(value):
    return value


async def boom():
    raise ValueError("boom")


async def waits(d: defer.Deferred, then: defer.Deferred | None = None):
    first = await d
    second = await then if then is not None else 0
    return first + second


def started(coro):
    """A coroutine and what it awaits first, as the pipeline hands them to a Drive."""
    return coro, coro.send(None)


def test_a_coroutine_that_never_waits_ends_at_once():
    outcomes: list = []
    drive(answer(42), outcomes.append)
    assert outcomes == [42]
    drive(boom(), outcomes.append)
    assert isinstance(outcomes[1], Failure) and outcomes[1].check(ValueError)


@pytest.mark.parametrize("supervised", [False, True])
def test_each_awaited_deferred_continues_it_from_its_callback(supervised):
    first, second = defer.Deferred(), defer.Deferred()
    outcomes: list = []
    if supervised:
        Drive(*started(waits(first, second)), outcomes.append)
    else:
        drive(waits(first, second), outcomes.append)
    assert outcomes == []
    first.callback(1)
    assert outcomes == []
    second.callback(2)
    assert outcomes == [3]


def test_a_failed_deferred_is_raised_where_the_coroutine_awaits():
    async def catches(d):
        try:
            await d
        except KeyError:
            return "caught"

    d = defer.Deferred()
    outcomes: list = []
    drive(catches(d), outcomes.append)
    d.errback(KeyError("k"))
    assert outcomes == ["caught"]
    unhandled = defer.Deferred()
    drive(waits(unhandled), outcomes.append)
    unhandled.errback(KeyError("k"))
    assert outcomes[1].check(KeyError)


def test_anything_but_a_deferred_goes_the_general_way():
    @types.coroutine
    def hands_over(awaitable):  # a foreign awaitable that yields something not a Deferred
        return (yield awaitable)

    async def foreign(d):
        return await hands_over(waits(d)) + 1

    d = defer.Deferred()
    outcomes: list = []
    drive(foreign(d), outcomes.append)
    assert outcomes == []
    d.callback(5)
    assert outcomes == [6]
    e = defer.Deferred()
    run = Drive(*started(foreign(e)), outcomes.append)
    assert run.awaited is not None
    e.callback(6)
    assert outcomes[-1] == 7

    async def refuses():
        return await hands_over(3)  # not awaitable at all: the coroutine hears the TypeError

    drive(refuses(), outcomes.append)
    assert outcomes[-1].check(TypeError)


def test_the_timeout_cancels_what_it_awaits_and_ends_with_timeout_error_at_once():
    clock = task.Clock()
    heard: list = []

    async def stubborn(d, later):
        try:
            await d
        except defer.CancelledError:
            heard.append("cancelled")
            return await later  # waits on after the cancel: its answer comes too late

    d, later = defer.Deferred(), defer.Deferred()
    outcomes: list = []
    Drive(*started(stubborn(d, later)), outcomes.append, timeout=2.0, deadlines=Deadlines(clock))
    clock.advance(2.0)
    assert heard == ["cancelled"] and len(outcomes) == 1 and outcomes[0].check(defer.TimeoutError)
    later.callback("late")
    assert len(outcomes) == 1  # finish is called once
    done: list = []
    ends = defer.Deferred()
    deadlines = Deadlines(clock)
    Drive(*started(waits(ends)), done.append, timeout=2.0, deadlines=deadlines)
    ends.callback(1)
    assert done == [1]
    clock.advance(2.0)  # an ended drive left the deadlines: the timer finds nothing due
    assert done == [1] and not clock.getDelayedCalls()


@pytest.mark.parametrize("cancel_first", [True, False])
def test_deferred_fires_once_and_its_cancel_reaches_the_coroutine(cancel_first):
    clock = task.Clock()
    d = defer.Deferred()
    coro = waits(d)
    awaited = coro.send(None)
    deadlines = Deadlines(clock)
    done = deferred(coro, awaited, timeout=5.0, deadlines=deadlines)
    results: list = []
    done.addBoth(results.append)
    if cancel_first:
        done.cancel()
        assert results[0].check(defer.CancelledError)
    else:
        d.callback(7)
        assert results == [7]
    clock.advance(5.0)  # its time passes: nothing more fires, and the timer is not set again
    assert len(results) == 1 and not clock.getDelayedCalls()


def test_one_timer_keeps_every_timeout_exactly():
    """Drives with different timeouts share one reactor timer; each times out at its
    own time, one that ended never does, and the timer is set again for the next."""
    clock = task.Clock()
    deadlines = Deadlines(clock)
    outcomes: dict[str, list] = {name: [] for name in ("a", "b", "c", "d")}
    waiting = {name: defer.Deferred() for name in outcomes}
    Drive(*started(waits(waiting["a"])), outcomes["a"].append, timeout=5.0, deadlines=deadlines)
    Drive(*started(waits(waiting["b"])), outcomes["b"].append, timeout=2.0, deadlines=deadlines)
    clock.advance(1.0)
    Drive(*started(waits(waiting["c"])), outcomes["c"].append, timeout=3.0, deadlines=deadlines)
    Drive(*started(waits(waiting["d"])), outcomes["d"].append, timeout=1.5, deadlines=deadlines)
    assert len(clock.getDelayedCalls()) == 1
    waiting["d"].callback(0)  # ends before its time (2.5)
    clock.advance(1.0)  # 2.0: b's time
    assert outcomes["b"][0].check(defer.TimeoutError) and outcomes["d"] == [0]
    assert not outcomes["a"] and not outcomes["c"] and len(clock.getDelayedCalls()) == 1
    clock.advance(1.9)  # 3.9: nobody's time yet (c at 4.0)
    assert not outcomes["c"]
    clock.advance(0.1)
    assert outcomes["c"][0].check(defer.TimeoutError) and not outcomes["a"]
    clock.advance(1.0)  # 5.0: a's time
    assert outcomes["a"][0].check(defer.TimeoutError)
    assert not clock.getDelayedCalls()


def test_watch_hears_every_step():
    steps: list = []
    d = defer.Deferred()
    Drive(*started(waits(d)), lambda _: None, watch=steps.append)
    d.callback(1)
    assert len(steps) == 1
