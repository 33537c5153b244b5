"""barricade.drive: a coroutine run to its end at once when it never waits, continued
from the callbacks of the Deferreds it awaits, the general way for anything else;
the policy's form with a timeout that cancels what it awaits."""

from __future__ import annotations

import asyncio
import types

import hiredis
import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.python.failure import Failure

from barricade.drive import Deadlines, Drive, deferred, drive
from barricade.state.resp import Reply, RespError


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


async def stored(reply: asyncio.Future):
    """A store operation as a hook awaits it: coroutines down to a reply's future."""
    return await reply


async def fallible(reply: asyncio.Future):
    try:
        return await stored(reply) + 1
    except KeyError as exc:
        return f"failed: {exc}"


def test_a_reply_awaited_with_no_deferred_between_resumes_the_hook_as_it_is_resolved():
    outcomes: list = []
    reply = Reply(loop=asyncio.new_event_loop())
    run = Drive(*started(fallible(reply)), outcomes.append)
    assert run.awaited is reply and outcomes == []
    reply.resolve(41)  # the hook goes on here, not at a later turn of the loop
    assert outcomes == [42]
    failing = Reply(loop=reply.get_loop())
    Drive(*started(fallible(failing)), outcomes.append)
    failing.resolve(hiredis.ReplyError("WRONGTYPE"))
    assert outcomes[-1].check(RespError)  # what the hook does not catch ends it
    reply.get_loop().close()


@pytest_twisted.ensureDeferred
async def test_an_ordinary_future_resumes_the_hook_from_its_done_callback():
    loop = asyncio.get_running_loop()
    outcomes: list = []
    ok, failing = loop.create_future(), loop.create_future()
    Drive(*started(fallible(ok)), outcomes.append)
    Drive(*started(fallible(failing)), outcomes.append)
    ok.set_result(41)
    failing.set_exception(KeyError("gone"))
    assert outcomes == []  # an asyncio future's callbacks run at the loop's next turn
    await task.deferLater(reactor, 0)
    assert outcomes == [42, "failed: 'gone'"]


@pytest.mark.parametrize("how", ["timeout", "cancel"])
def test_a_hook_awaiting_a_reply_is_stopped_with_twisteds_error(how):
    """The timeout, or cancelling the Deferred (its canceller), cancels the reply; the
    hook hears asyncio's CancelledError there.  The outcome is Twisted's TimeoutError
    or CancelledError, as for any wait, which the pipeline's ``except Exception``
    catches (asyncio's CancelledError is a BaseException)."""
    clock = task.Clock()
    heard: list = []

    async def hook(reply):
        try:
            return await stored(reply)
        except asyncio.CancelledError:
            heard.append("cancelled")
            raise

    reply = Reply(loop=asyncio.new_event_loop())
    coro = hook(reply)
    outcomes: list = []
    d = deferred(coro, coro.send(None), timeout=2.0, deadlines=Deadlines(clock))
    d.addBoth(outcomes.append)
    if how == "timeout":
        clock.advance(2.0)
    else:
        d.cancel()
    assert reply.cancelled() and heard == ["cancelled"]
    expected = defer.TimeoutError if how == "timeout" else defer.CancelledError
    assert len(outcomes) == 1 and type(outcomes[0].value) is expected
    reply.get_loop().close()


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


async def awaits_drive(hook, then: defer.Deferred | None = None, made: list | None = None, **kw):
    """Awaits a Drive of ``hook`` as the pipeline does, then maybe something more."""
    run = Drive(*started(hook), **kw)
    if made is not None:
        made.append(run)
    outcome = await run
    if then is not None:
        outcome = (outcome, await then)
    return outcome


@pytest.mark.parametrize("driver", ["drive", "ensureDeferred"])
def test_a_drive_without_finish_is_awaited_by_any_driver(driver):
    """drive() continues the awaiting coroutine straight from the hook's end (no
    Deferred between them); ensureDeferred sends the Drive back and gets a Deferred."""
    d, then = defer.Deferred(), defer.Deferred()
    outcomes: list = []
    made: list[Drive] = []
    if driver == "drive":
        drive(awaits_drive(waits(d), then, made), outcomes.append)
        assert type(made[0].awaiter) is tuple  # drive() itself continues the awaiter
    else:
        defer.ensureDeferred(awaits_drive(waits(d), then, made)).addBoth(outcomes.append)
        assert isinstance(made[0].awaiter, defer.Deferred)
    d.callback(5)
    assert outcomes == []  # the awaiting coroutine went on, and waits for ``then`` now
    then.callback("next")
    assert outcomes == [(5, "next")]


@pytest.mark.parametrize("driver", ["drive", "ensureDeferred"])
def test_a_drive_failure_or_timeout_is_raised_in_its_awaiter(driver):
    clock = task.Clock()
    d, stuck = defer.Deferred(), defer.Deferred()
    outcomes: list = []

    async def both():
        raised = []
        for hook, kw in ((waits(d), {}), (waits(stuck), {"timeout": 2.0, "deadlines": Deadlines(clock)})):
            try:
                await awaits_drive(hook, **kw)
            except Exception as exc:  # noqa: BLE001 - what each awaiter heard
                raised.append(type(exc))
        return raised

    if driver == "drive":
        drive(both(), outcomes.append)
    else:
        defer.ensureDeferred(both()).addBoth(outcomes.append)
    d.errback(ValueError("bad"))
    assert outcomes == []
    clock.advance(2.0)
    assert outcomes == [[ValueError, defer.TimeoutError]]


@pytest.mark.parametrize("driver", ["drive", "ensureDeferred"])
def test_a_drive_that_ended_before_it_was_awaited_answers_at_once(driver):
    """What the hook awaited was answered before anyone awaited its Drive: awaiting
    it returns (or raises) without a wait."""
    outcomes: list = []

    async def awaits_later(run: Drive):
        try:
            return await run
        except ValueError as exc:
            return str(exc)

    for answer_with in (lambda d: d.callback(3), lambda d: d.errback(ValueError("raised"))):
        d = defer.Deferred()
        run = Drive(*started(waits(d)))
        answer_with(d)
        if driver == "drive":
            drive(awaits_later(run), outcomes.append)
        else:
            defer.ensureDeferred(awaits_later(run)).addBoth(outcomes.append)
    assert outcomes == [3, "raised"]


def test_cancelling_the_deferred_an_other_driver_waits_on_cancels_the_hook():
    d = defer.Deferred()
    heard: list = []

    async def hook():
        try:
            return await d
        except defer.CancelledError:
            heard.append("cancelled")
            raise

    outer = defer.ensureDeferred(awaits_drive(hook()))
    outcomes: list = []
    outer.addBoth(outcomes.append)
    outer.cancel()
    assert heard == ["cancelled"] and outcomes[0].check(defer.CancelledError)


def test_an_awaiter_whose_finish_raises_stops_no_other_hook_timing_out():
    """The hook's end continues its awaiter in the caller's stack (here, the one timer
    of every hook due): what the awaiter's finish raises is logged there, and the
    next hook due still times out."""
    from twisted.logger import globalLogPublisher

    clock = task.Clock()
    deadlines = Deadlines(clock)
    timed_out: list[str] = []
    logged: list[dict] = []

    async def stubborn(d, later):
        try:
            return await d
        except defer.CancelledError:
            return await later  # lives on after the cancel

    async def awaiter(name):
        try:
            await Drive(*started(stubborn(defer.Deferred(), defer.Deferred())), timeout=2.0,
                        deadlines=deadlines)
        except defer.TimeoutError:
            timed_out.append(name)

    def broken(_outcome):
        raise RuntimeError("finish failed")

    def observe(event):
        if event.get("log_failure") is not None:
            logged.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        drive(awaiter("a"), broken)
        drive(awaiter("b"), broken)
        clock.advance(2.0)
    finally:
        globalLogPublisher.removeObserver(observe)
    assert timed_out == ["a", "b"]
    assert [e["log_failure"].check(RuntimeError) for e in logged] == [RuntimeError, RuntimeError]
