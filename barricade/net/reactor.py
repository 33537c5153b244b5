"""Twisted's asyncio reactor, with socket events delivered without the legacy log context.

Twisted registers every reader and writer with asyncio as
``callWithLogger(selectable, reactor._readOrWrite, selectable, read)``:
each socket event first pushes a context for ``twisted.python.log``
(a copied dictionary, the selectable's ``logPrefix()``, three more calls)
so that a legacy ``log.msg`` made inside it is labelled with the
connection.  Barricade logs through ``twisted.logger`` with its own
namespaces and session ids, and a relayed message is a dozen socket
events, so that context cost about a tenth of a millisecond per message
for a label nothing reads.

:func:`install` gives the loop an ``add_reader``/``add_writer`` that drop
that wrapper when Twisted passes it (anything else, e.g. redis.asyncio,
goes through untouched), and the reactor's ``_readOrWrite`` logs what
would otherwise escape to asyncio's exception handler, as
``callWithLogger`` did.

Twisted's ``callLater`` also moves the loop's wake-up whenever the new call
looks earlier than the one scheduled, comparing the loop's monotonic
clock with a delay taken from the wall clock: the two disagree by
microseconds, so most calls (a session arms a few deadlines per command)
cancelled and re-pushed an asyncio timer for nothing.  Here the wake-up
moves only when the new call is due more than :data:`SLACK` before it.

A second SIGTERM or SIGINT while the process is already stopping (an
impatient init script, a postmaster pressing Ctrl-C twice) made Twisted
call ``stop()`` again, which raises ReactorNotRunning and was logged at
critical level with a traceback.  Here it is one info line: the stop
under way goes on (sessions closing with their replies, workers waited
for), and SIGKILL stays the way to end it at once.

twistd's own ``--reactor=asyncio`` still works, without these shortcuts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from twisted.internet.asyncioreactor import AsyncioSelectorReactor
from twisted.internet.posixbase import _NO_FILEDESC, PosixReactorBase
from twisted.logger import Logger
from twisted.python.log import callWithLogger

log = Logger()

#: A call due less than this before the scheduled wake-up runs at that wake-up.
SLACK = 0.001


class Reactor(AsyncioSelectorReactor):
    _stopping = False  # a stop signal was received

    def callLater(self, delay: float, callable: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        call = PosixReactorBase.callLater(self, delay, callable, *args, **kw)
        scheduled = self._scheduledAt
        if scheduled is None or self._asyncioEventloop.time() + delay < scheduled - SLACK:
            self._reschedule()
        return call

    def sigInt(self, number: int, frame: Any = None) -> None:
        self._stop_requested("SIGINT", number)

    def sigTerm(self, number: int, frame: Any = None) -> None:
        self._stop_requested("SIGTERM", number)

    def sigBreak(self, number: int, frame: Any = None) -> None:
        self._stop_requested("SIGBREAK", number)

    def _stop_requested(self, name: str, number: int) -> None:
        """What Twisted's handlers do, once: stop from the loop, on the first request only."""
        if self._stopping:
            log.info("received {signal} while stopping already; the stop goes on "
                     "(SIGKILL ends the process at once)", signal=name)
            return
        self._stopping = True
        log.info("received {signal}, shutting down", signal=name)
        self._exitSignal = number
        self.callFromThread(self._stop_once)

    def _stop_once(self) -> None:
        if not self._stopped:  # stopped meanwhile some other way (reactor.stop() in code)
            self.stop()

    def _readOrWrite(self, selectable: Any, read: bool) -> None:
        # Twisted's own, in one frame with the catch-all callWithLogger had.
        try:
            if selectable.fileno() == -1:
                self._disconnectSelectable(selectable, _NO_FILEDESC, read)
                return
            try:
                why = selectable.doRead() if read else selectable.doWrite()
            except Exception as e:  # noqa: BLE001 - the selectable is dropped, as Twisted does
                why = e
                self._log.failure(None)
            if why:
                self._disconnectSelectable(selectable, why, read)
        except BaseException:  # noqa: BLE001 - what callWithLogger caught and logged
            log.failure("socket event of {what}", what=type(selectable).__name__)


def _direct(register: Callable[..., Any]) -> Callable[..., Any]:
    def add(fd: int, callback: Callable[..., Any], *args: Any) -> Any:
        if callback is callWithLogger:  # (selectable, function, *its args)
            return register(fd, *args[1:])
        return register(fd, callback, *args)

    return add


def install(loop: asyncio.AbstractEventLoop) -> Reactor:
    """Install :class:`Reactor` on ``loop`` as the global reactor."""
    from twisted.internet.main import installReactor

    loop.add_reader = _direct(loop.add_reader)  # type: ignore[method-assign]
    loop.add_writer = _direct(loop.add_writer)  # type: ignore[method-assign]
    reactor = Reactor(loop)
    installReactor(reactor)
    return reactor
