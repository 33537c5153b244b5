"""One way to run a coroutine on Twisted: from the callbacks of what it awaits.

The server's command handlers, the policy's hooks and the close hooks are
coroutines that nearly always end without waiting (a check answers at
once, a command needs no downstream round trip).  Each is run until it
ends or awaits; one that ends costs no Deferred and no timer.  One that
awaits a Deferred (a downstream reply, a store or DNS answer) is continued
from that Deferred's callback, which hands the result (or raises the
failure) into it, where Twisted's ``ensureDeferred`` would wrap every step
in a Deferred and ``inlineCallbacks`` machinery of its own.  A policy hook
may also await an asyncio future (a store operation's Redis reply,
``StoreCheck.stored``): it is continued from the future's callback, with no
Deferred and no second driver between (``aio``'s), on every store call.
Anything else it awaits goes the general way, :func:`resume` under
``ensureDeferred``.

Two forms: :func:`drive` for the server's handlers and the close hooks (no
timeout: the client's and the downstream's deadlines bound them), which
costs nothing but the callback per wait; and :class:`Drive` for the
policy's hooks, whose ``timeout`` (``check-timeout``) cancels what the hook
awaits when it passes (the hook hears ``CancelledError`` there) and ends it
with ``TimeoutError`` at once, whatever the hook does next, and whose
``watch`` hears when each step began (the stall watchdog).  The timeouts of
all the hooks waiting at a time are kept on one timer (:class:`Deadlines`).

The pipeline awaits a waiting hook's Drive itself; under :func:`drive`
(the server's handlers, which run the pipeline) the hook's end continues
the handler at once, with no Deferred between them.  :func:`deferred` gives
a Drive's outcome as a Deferred, for the close hooks and anything else.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Generator
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from barricade.net.deadline import Deadline

log = Logger()

#: Gets what the coroutine returned, or the Failure of what it raised; called once.
Finish = Callable[[Any], None]
#: Hears the monotonic time a step began, after the step.
Watch = Callable[[float], None]


def drive(coro: Any, finish: Finish) -> None:
    """Run ``coro`` until it ends (``finish`` gets the outcome at once) or awaits
    a Deferred, from whose callback it goes on (or a hook's :class:`Drive`, from
    that hook's end); no timeout, nothing to cancel.

    The server's handlers and the close hooks run so: a handler that waits
    on a downstream reply costs no object of its own, only the callback.
    """
    _continue(None, coro, finish)


def _continue(result: object, coro: Any, finish: Finish) -> None:
    try:
        if isinstance(result, Failure):
            awaited = result.throwExceptionIntoGenerator(coro)
        else:
            awaited = coro.send(result)
    except StopIteration as stop:
        finish(stop.value)
        return None
    except BaseException:  # noqa: BLE001 - every outcome of the coroutine goes to finish
        finish(Failure())
        return None
    if type(awaited) is Drive:  # a hook that waits: its end continues this coroutine
        awaited.awaiter = (coro, finish)
    elif isinstance(awaited, defer.Deferred):
        awaited.addBoth(_continue, coro, finish)
    else:
        defer.ensureDeferred(resume(coro, awaited)).addBoth(finish)
    return None  # the awaited Deferred's own chain ends here


def deferred(coro: Any, awaited: Any, *, watch: Watch | None = None, timeout: float | None = None,
             deadlines: Deadlines | None = None) -> defer.Deferred:
    """A Deferred of a started coroutine (it yielded ``awaited``), driven on;
    cancelling the Deferred cancels what the coroutine awaits."""
    done: defer.Deferred = defer.Deferred(lambda _: run.cancel())
    run = Drive(coro, awaited, functools.partial(_fire, done), watch=watch, timeout=timeout,
                deadlines=deadlines)
    return done


def _fire(done: defer.Deferred, outcome: Any) -> None:
    if done.called:  # cancelled: it has its CancelledError already
        return
    if isinstance(outcome, Failure):
        done.errback(outcome)
    else:
        done.callback(outcome)


class Drive:
    """Continues a started coroutine from the callback of each Deferred (or
    asyncio future) it awaits, with a timeout, cancellation and the watchdog:
    the policy's hooks.

    One object per hook that waits: its place among the :class:`Deadlines`,
    what it awaits now, whether it ended; :func:`drive` needs none of that.

    Its outcome goes to ``finish``, or, without one, to the coroutine that
    awaits the Drive itself (the pipeline's, for a hook that waits).  When
    :func:`drive` runs that coroutine, the hook's end continues it directly:
    a Deferred between them, fired and run through its callbacks, cost about
    a third of a wait's overhead, twice per message with a Redis store.  Any
    other driver (``ensureDeferred``) sends back what it does not know, and
    then gets a Deferred to wait on (:meth:`__await__`).
    """

    __slots__ = ("coro", "finish", "watch", "awaited", "deadlines", "timed_out", "ended",
                 "outcome", "awaiter")

    def __init__(self, coro: Any, awaited: Any, finish: Finish | None = None, *,
                 watch: Watch | None = None, timeout: float | None = None,
                 deadlines: Deadlines | None = None):
        """``timeout``: seconds, kept by ``deadlines`` (needed with it)."""
        self.coro = coro
        self.finish = finish
        self.watch = watch
        self.awaited: defer.Deferred | asyncio.Future | None = None
        self.timed_out = False
        self.ended = False
        self.outcome: Any = None  # kept until its awaiter comes, for a Drive without finish
        #: Who continues with the outcome: (coroutine, finish) of :func:`drive`, or a Deferred.
        self.awaiter: tuple[Any, Finish] | defer.Deferred | None = None
        self.deadlines = None
        if timeout is not None:
            self.deadlines = deadlines
            deadlines.add(self, timeout)
        self._wait(awaited)

    def cancel(self) -> None:
        """Cancel what the coroutine awaits: it hears ``CancelledError`` there."""
        awaited, self.awaited = self.awaited, None
        if awaited is not None:
            awaited.cancel()

    def _wait(self, awaited: Any) -> None:
        # A future first: Deferred is an abstract Awaitable, so isinstance() of
        # anything but a Deferred goes through ABCMeta, a store reply's every wait.
        if asyncio.isfuture(awaited):  # a store's reply, awaited with no Deferred between
            awaited._asyncio_future_blocking = False  # accepted, as a task does
            self.awaited = awaited
            direct = getattr(awaited, "add_direct_callback", None)
            (direct or awaited.add_done_callback)(self._resumed)
            return
        if isinstance(awaited, defer.Deferred):
            self.awaited = awaited
            awaited.addBoth(self._step)
            return
        general = self.awaited = defer.ensureDeferred(resume(self.coro, awaited, self.watch))
        general.addBoth(self._end)

    def _resumed(self, _done: asyncio.Future) -> None:
        """The awaited future is done: the coroutine's ``await`` returns its result or raises."""
        self._step(None)

    def _step(self, result: object) -> None:
        self.awaited = None
        t0 = time.monotonic() if self.watch is not None else 0.0
        try:
            if isinstance(result, Failure):
                awaited = result.throwExceptionIntoGenerator(self.coro)
            else:
                awaited = self.coro.send(result)
        except StopIteration as stop:
            self._end(stop.value)
            return None
        except BaseException:  # noqa: BLE001 - every outcome of the coroutine goes to finish
            self._end(Failure())
            return None
        finally:
            if self.watch is not None:
                self.watch(t0)
        self._wait(awaited)
        return None  # the awaited Deferred's own chain ends here

    def _end(self, outcome: object) -> None:
        self.awaited = None
        if self.deadlines is not None:
            self.deadlines.remove(self)
            self.deadlines = None
        if self.ended:
            return  # timed out meanwhile: finish has had its answer
        self.ended = True
        if isinstance(outcome, Failure) and outcome.check(defer.CancelledError, asyncio.CancelledError):
            if self.timed_out:  # the cancel was the timeout's
                outcome = Failure(defer.TimeoutError(None, "check"))
            elif outcome.check(asyncio.CancelledError):  # a cancelled future's: Twisted's, as for any Deferred
                outcome = Failure(defer.CancelledError())
        if self.finish is not None:
            self.finish(outcome)
            return
        awaiter, self.awaiter = self.awaiter, None
        if awaiter is None:  # ended before anyone awaited it: __await__ takes the outcome
            self.outcome = outcome
        elif type(awaiter) is tuple:
            try:
                _continue(outcome, *awaiter)
            except Exception:  # noqa: BLE001 - as a Deferred's callback chain would keep it
                # What the awaiter's own finish raised must not reach whoever ended
                # the hook (a Redis reply, the timer of every hook timing out).
                log.failure("after a policy hook ended")
        else:
            _fire(awaiter, outcome)

    def __await__(self) -> Generator[Any, Any, Any]:
        """The hook's outcome (a Failure raised), once it ends.

        Yields the Drive itself, which :func:`_continue` recognises; a driver
        that does not sends it back, and waits on a Deferred instead.
        """
        if not self.ended:
            outcome = yield self
            if outcome is self:
                waiting = self.awaiter = defer.Deferred(lambda _: self.cancel())
                outcome = yield waiting
            return outcome  # a Failure was thrown in at the yield, by either driver
        outcome, self.outcome = self.outcome, None
        if isinstance(outcome, Failure):
            outcome.raiseException()
        return outcome

    def time_out(self) -> None:
        """Its time is up (:class:`Deadlines`): cancel what it awaits, end with TimeoutError."""
        self.deadlines = None
        self.timed_out = True
        self.cancel()  # a hook that ends on the cancel ends here, with TimeoutError
        self._end(Failure(defer.TimeoutError(None, "check")))


class Deadlines:
    """The timeouts of every :class:`Drive` of one owner (the policy pipeline), on one timer.

    A hook that waits (a store or DNS answer) nearly always ends long before
    its ``check-timeout``; a reactor timer set and cancelled for each one cost
    about as much as a tenth of a Redis round trip.  Here a Drive's time is a
    number in a dict, and one :class:`~barricade.net.deadline.Deadline` runs
    for the earliest: when it fires, the Drives whose time is up are timed
    out and it is set for the next; a Drive that ends just leaves the dict.
    """

    __slots__ = ("_clock", "_due", "_deadline")

    def __init__(self, clock: Any):
        self._clock = clock
        self._due: dict[Drive, float] = {}
        self._deadline = Deadline(clock, self._expire)

    def add(self, drive: Drive, seconds: float) -> None:
        when = self._clock.seconds() + seconds
        self._due[drive] = when
        due = self._deadline.due
        if due is None or when < due:
            self._deadline.set(seconds)

    def remove(self, drive: Drive) -> None:
        self._due.pop(drive, None)  # the timer stays: it finds nothing due, or the next one

    def _expire(self) -> None:
        now = self._clock.seconds()
        late = [drive for drive, when in self._due.items() if when <= now]
        for drive in late:
            del self._due[drive]
        if self._due:
            self._deadline.set(min(self._due.values()) - now)
        for drive in late:
            try:
                drive.time_out()
            except Exception:  # noqa: BLE001 - the other hooks due now must still time out
                log.failure("timing out a policy hook")


async def resume(coro: Any, awaited: Any, watch: Watch | None = None) -> Any:
    """Drive a started coroutine on from what it yielded, under ``ensureDeferred``.

    The general way, for whatever is not a Deferred: a cancellation reaches
    the coroutine as the exception of what it awaits.  ``watch`` hears when
    each step started.
    """
    while True:
        try:
            value, raised = await awaited, None
        except BaseException as exc:  # noqa: BLE001 - every outcome goes back into the coroutine
            value, raised = None, exc
        t0 = time.monotonic()
        try:
            awaited = coro.send(value) if raised is None else coro.throw(raised)
        except StopIteration as done:
            return done.value
        finally:
            if watch is not None:
                watch(t0)
