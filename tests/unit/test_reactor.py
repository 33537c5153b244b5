"""Barricade's asyncio reactor: socket events without the legacy log context, and a
loop wake-up moved only when a new call is really earlier."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest
from twisted.python.log import callWithLogger

from barricade.net import reactor as barricade_reactor


def spin(loop: asyncio.AbstractEventLoop, seconds: float) -> None:
    """Run ``loop`` for a while in a thread of its own (the test runner's loop runs in this one)."""
    t = threading.Thread(target=loop.run_until_complete, args=(asyncio.sleep(seconds),))
    t.start()
    t.join(10)


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def test_registration_drops_twisteds_log_wrapper_and_keeps_anything_else(loop):
    seen: list = []
    register = barricade_reactor._direct(lambda fd, cb, *args: seen.append((fd, cb, args)))
    selectable, readOrWrite = object(), print
    register(5, callWithLogger, selectable, readOrWrite, selectable, True)
    register(6, len, "as asyncio got it")
    assert seen == [(5, readOrWrite, (selectable, True)), (6, len, ("as asyncio got it",))]


def test_the_wake_up_moves_only_for_a_call_due_well_before_it(loop):
    r = barricade_reactor.Reactor(loop)
    ran: list = []
    r.callLater(10, ran.append, "late")
    first = r._scheduledAt
    r.callLater(10 - barricade_reactor.SLACK / 2, ran.append, "nearly as late")
    assert r._scheduledAt == first  # within SLACK: it runs at the same wake-up
    r.callLater(0.01, ran.append, "soon")
    assert r._scheduledAt < first - 9  # well before: the wake-up moves
    spin(loop, 0.05)
    assert ran == ["soon"]


def test_socket_events_reach_the_protocol_and_a_failure_is_logged_not_raised(loop):
    r = barricade_reactor.Reactor(loop)
    a, b = socket.socketpair()
    a.setblocking(False)
    events: list = []

    class Reader:
        def fileno(self):
            return a.fileno()

        def doRead(self):
            events.append(a.recv(10))
            raise RuntimeError("a bug in a protocol")

        def connectionLost(self, reason):
            events.append("lost")

        def logPrefix(self):
            return "test"

    loop.add_reader = barricade_reactor._direct(loop.add_reader)
    reader = Reader()
    r.addReader(reader)
    b.send(b"x")
    spin(loop, 0.05)
    assert events[:2] == [b"x", "lost"]  # Twisted disconnects it; nothing escaped to asyncio
    r.removeAll()
    a.close()
    b.close()


def test_a_second_stop_signal_while_stopping_is_one_info_line_not_a_critical_error(loop):
    from twisted.logger import globalLogPublisher

    r = barricade_reactor.Reactor(loop)
    stops: list = []
    r.stop = lambda: stops.append("stop")  # the reactor is not running in this test
    r._stopped = False  # as while it runs
    seen: list = []
    globalLogPublisher.addObserver(seen.append)
    try:
        r.sigTerm(15)
        r.sigTerm(15)  # an impatient init script
        r.sigInt(2)  # Ctrl-C on top
        spin(loop, 0.02)  # the loop's turn: what callFromThread queued
    finally:
        globalLogPublisher.removeObserver(seen)
    assert stops == ["stop"]  # stop() once: a second call would raise ReactorNotRunning
    assert r._exitSignal == 15
    ours = [e for e in seen if e.get("log_namespace") == barricade_reactor.log.namespace]
    assert [(e["log_level"].name, e["signal"]) for e in ours] == [
        ("info", "SIGTERM"), ("info", "SIGTERM"), ("info", "SIGINT")]
    assert "stopping already" in ours[1]["log_format"]


def test_a_stop_signal_after_a_stop_from_code_stops_nothing_twice(loop):
    r = barricade_reactor.Reactor(loop)
    stops: list = []
    r.stop = lambda: stops.append("stop")
    r._stopped = True  # reactor.stop() was called by the service meanwhile
    r.sigTerm(15)
    spin(loop, 0.02)
    assert stops == []
