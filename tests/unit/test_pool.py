"""The pool of idle downstream connections: what is kept, for how long, and what is handed out."""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock

from barricade.net.pool import DownstreamPool


class Conn:
    """The part of a Downstream the pool uses."""

    def __init__(self, alive: bool = True, in_transaction: bool = False, reusable: bool = True):
        self.alive = alive
        self.in_transaction = in_transaction
        self.reusable = reusable
        self.quits = 0

    async def quit(self) -> None:
        self.quits += 1
        self.alive = False


def test_a_parked_connection_serves_the_next_session_once():
    pool = DownstreamPool(MemoryReactorClock(), size=2, idle=5)
    conn = Conn()
    pool.give("mx", conn)
    assert len(pool) == 1
    assert pool.take("other") is None
    assert pool.take("mx") is conn
    assert pool.take("mx") is None
    assert conn.quits == 0


def test_an_idle_connection_is_quit_after_the_idle_time():
    clock = MemoryReactorClock()
    pool = DownstreamPool(clock, size=2, idle=5)
    conn = Conn()
    pool.give("mx", conn)
    clock.advance(4.9)
    assert conn.quits == 0
    clock.advance(0.2)
    assert conn.quits == 1
    assert pool.take("mx") is None


def test_a_taken_connection_is_not_quit_by_its_old_idle_timer():
    clock = MemoryReactorClock()
    pool = DownstreamPool(clock, size=2, idle=5)
    conn = Conn()
    pool.give("mx", conn)
    assert pool.take("mx") is conn
    clock.advance(10)
    assert conn.quits == 0


def test_the_bound_per_destination_quits_the_surplus():
    pool = DownstreamPool(MemoryReactorClock(), size=1, idle=5)
    first, second = Conn(), Conn()
    pool.give("mx", first)
    pool.give("mx", second)
    assert (first.quits, second.quits) == (0, 1)
    pool.give("other", Conn())
    assert len(pool) == 2


def test_connections_that_cannot_be_reused_are_quit_not_parked():
    pool = DownstreamPool(MemoryReactorClock(), size=4, idle=5)
    busy, personal = Conn(in_transaction=True), Conn(reusable=False)
    pool.give("mx", busy)
    pool.give("mx", personal)
    assert (busy.quits, personal.quits) == (1, 1)
    assert pool.take("mx") is None
    off = DownstreamPool(MemoryReactorClock(), size=0, idle=5)
    conn = Conn()
    off.give("mx", conn)
    assert conn.quits == 1


def test_a_connection_the_downstream_closed_while_parked_is_never_handed_out():
    pool = DownstreamPool(MemoryReactorClock(), size=4, idle=5)
    old, fresh = Conn(), Conn()
    pool.give("mx", old)
    pool.give("mx", fresh)
    fresh.alive = False  # the downstream closed it (e.g. its own idle timeout)
    assert pool.take("mx") is old
    assert pool.take("mx") is None


def test_close_quits_every_idle_connection():
    clock = MemoryReactorClock()
    pool = DownstreamPool(clock, size=4, idle=5)
    conns = [Conn(), Conn()]
    for conn in conns:
        pool.give("mx", conn)
    pool.close()
    assert [c.quits for c in conns] == [1, 1]
    assert not clock.getDelayedCalls()


def test_one_timer_expires_connections_parked_at_different_times():
    clock = MemoryReactorClock()
    pool = DownstreamPool(clock, size=4, idle=5)
    early, late, other = Conn(), Conn(), Conn()
    pool.give("mx", early)
    clock.advance(2)
    pool.give("mx", late)
    pool.give("backup", other)
    assert len(clock.getDelayedCalls()) == 1  # not one per connection
    clock.advance(3.1)
    assert (early.quits, late.quits, other.quits) == (1, 0, 0)
    assert len(clock.getDelayedCalls()) == 1  # set again, for the next one due
    clock.advance(2)
    assert (late.quits, other.quits) == (1, 1)
    assert not clock.getDelayedCalls() and len(pool) == 0


def test_a_connection_past_its_idle_time_is_not_handed_out_even_before_the_sweep():
    clock = MemoryReactorClock()
    pool = DownstreamPool(clock, size=4, idle=5)
    conn = Conn()
    pool.give("mx", conn)
    clock.rightNow += 6  # time passed, the timer has not run yet
    assert pool.take("mx") is None
    assert conn.quits == 1
