"""Client deadlines that partial input cannot stretch (in process, fake clock)."""

from __future__ import annotations

from barricade.net.forward import DownstreamReply
from tests.unit.test_server import Hangs, Session, _FakeDownstream


def trickle(s: Session, data: bytes, every: float) -> bytes:
    """Send ``data`` one byte every ``every`` seconds; what came back."""
    out = b""
    for byte in data:
        if s.transport.disconnecting:
            break
        out += s.send(bytes([byte]))
        s.clock.advance(every)
        out += s.output()
    return out


def test_a_command_typed_slowly_times_out_from_its_first_byte(tmp_path):
    s = Session(tmp_path, (), "smtp-command-timeout=30")
    s.output()
    out = trickle(s, b"EHLO client.example.org\r\n", 5)
    assert out.startswith(b"421 4.4.7 connection timeout exceeded #905")
    assert s.transport.disconnecting
    assert s.clock.seconds() <= 35  # 30 s from the first byte, not re-armed per byte


def test_idle_then_slow_command_is_bounded_by_twice_the_timeout(tmp_path):
    s = Session(tmp_path, (), "smtp-command-timeout=30")
    s.output()
    s.clock.advance(29)  # idle: the wait for the first byte
    out = trickle(s, b"NOOP" + b" " * 20 + b"\r\n", 4)
    assert out.startswith(b"421 4.4.7 connection timeout exceeded #905")
    assert s.clock.seconds() <= 29 + 30 + 4


def test_a_command_in_one_piece_restarts_the_clock(tmp_path):
    s = Session(tmp_path, (), "smtp-command-timeout=30")
    s.output()
    for _ in range(5):
        s.clock.advance(25)
        assert s.send(b"NOOP\r\n").startswith(b"250 2.0.0 OK #547")
    assert not s.transport.disconnecting


def test_a_pipelined_partial_command_gets_its_own_deadline(tmp_path):
    s = Session(tmp_path, (), "smtp-command-timeout=30")
    s.output()
    assert s.send(b"NOOP\r\nNO").startswith(b"250 ")
    s.clock.advance(20)
    assert s.send(b"O").startswith(b"") and s.output() == b""
    s.clock.advance(11)
    assert s.output().startswith(b"421 4.4.7 connection timeout exceeded #905")


class _Downstream(_FakeDownstream):
    """A route that accepted a recipient and takes the message."""

    def __init__(self) -> None:
        self.written = b""

    async def data(self, chunking: bool = False):
        return DownstreamReply(354, ("go ahead",))

    def write(self, data: bytes) -> None:
        self.written += data


def _in_data(s: Session) -> None:
    s.output()
    s.send(b"EHLO client.example\r\n")
    s.send(b"MAIL FROM:<a@b.example>\r\n")
    s.proto.proxy.txn["fake"] = _Downstream()
    s.proto.session.rcpt_count = 1


def test_data_lines_trickled_byte_by_byte_time_out(tmp_path):
    s = Session(tmp_path, (), "smtp-data-line-timeout=20", "smtp-command-timeout=300")
    _in_data(s)
    assert s.send(b"DATA\r\n").startswith(b"354 ")
    out = trickle(s, b"Subject: slow\r\n" * 5, 3)
    assert out.startswith(b"421 4.4.7 connection timeout exceeded #905")
    assert s.clock.seconds() < 20 + 3 * 16  # the first line is 15 bytes: 45 s, then 20 s


def test_data_lines_that_complete_restart_the_line_clock(tmp_path):
    s = Session(tmp_path, (), "smtp-data-line-timeout=20")
    _in_data(s)
    assert s.send(b"DATA\r\n").startswith(b"354 ")
    for _ in range(10):
        s.clock.advance(15)
        s.send(b"a line\r\n")
    assert s.output() == b"" and not s.transport.disconnecting


def test_session_time_limit(tmp_path):
    s = Session(tmp_path, (), "smtp-session-timeout=100", "smtp-command-timeout=30")
    s.output()
    for _ in range(3):
        s.clock.advance(25)
        assert s.send(b"NOOP\r\n").startswith(b"250 ")
    s.clock.advance(26)
    assert s.output().startswith(b"421 4.4.7 session time limit exceeded, max=100s #940")
    assert s.transport.disconnecting


def test_session_time_limit_waits_for_the_command_in_flight(tmp_path):
    s = Session(tmp_path, [Hangs()], "smtp-session-timeout=3", "check-timeout=5")
    s.output()
    s.send(b"EHLO client.example\r\n")
    assert s.send(b"MAIL FROM:<a@b.example>\r\n") == b""  # the check hangs
    s.clock.advance(3.5)
    assert s.output() == b""
    s.clock.advance(2)  # the check times out: its reply, then #940
    out = s.output()
    assert out.startswith(b"451 4.3.0 processing error #907")
    assert b"421 4.4.7 session time limit exceeded, max=3s #940" in out
    assert s.transport.disconnecting


def test_close_is_made_hard_when_the_peer_does_not_finish_it(tmp_path):
    s = Session(tmp_path, (), "smtp-command-timeout=30")
    s.output()
    s.clock.advance(31)
    assert s.output().startswith(b"421 4.4.7 connection timeout exceeded #905")
    assert s.transport.disconnecting and not s.transport.disconnected
    s.clock.advance(6)
    assert s.transport.disconnected  # StringTransport: abortConnection was called


def test_over_limit_recipients_do_not_count_toward_drop_after():
    from tests.unit.test_session import CAT, make

    s = make()
    s.receive_data(b"EHLO client.example\r\n")
    assert s.next_event() is not None
    s.respond(CAT.reply(254, hostname="mx.test", helo="client.example", client_ip="192.0.2.7"))
    s.receive_data(b"MAIL FROM:<a@b.example>\r\n")
    s.next_event()
    s.respond(CAT.reply(283, sender="a@b.example"))
    for _ in range(50):
        s.receive_data(b"RCPT TO:<x@example.com>\r\n")
        s.next_event()
        out = s.respond(CAT.reply(910, limit=100))
        assert out.startswith(b"452 4.5.3") and b"#922" not in out
    assert not s.closing and s.errors == 0


# --- the Deadline under them -----------------------------------------------------------


def _deadline():
    from twisted.internet.task import Clock

    from barricade.net.deadline import Deadline

    clock, fired = Clock(), []
    return clock, fired, Deadline(clock, lambda: fired.append(clock.seconds()))


def test_a_deadline_moved_later_fires_at_the_new_time_with_one_timer():
    clock, fired, d = _deadline()
    d.set(10)
    for _ in range(50):
        clock.advance(1)
        d.set(10)  # each command moves it: only a number changes
        assert len(clock.getDelayedCalls()) == 1
    clock.advance(9.5)
    assert fired == []  # the first timer came and went: set again for the rest
    clock.advance(0.5)
    assert fired == [60.0] and d.due is None and clock.getDelayedCalls() == []


def test_a_deadline_moved_earlier_fires_then_not_at_the_old_time():
    clock, fired, d = _deadline()
    d.set(300)
    d.set(5)
    assert [c.getTime() for c in clock.getDelayedCalls()] == [5.0]  # the old timer is cancelled
    clock.advance(5)
    assert fired == [5.0]
    clock.advance(300)
    assert fired == [5.0]


def test_a_cleared_deadline_never_fires_and_can_be_set_again():
    clock, fired, d = _deadline()
    d.set(5)
    d.clear()
    assert d.due is None and clock.getDelayedCalls() == []
    clock.advance(10)
    assert fired == []
    d.set(5)
    clock.advance(5)
    assert fired == [15.0]



def test_a_closed_deadline_lets_go_of_its_callback_and_never_calls_it():
    import weakref

    clock, fired, d = _deadline()
    d.set(5)
    owner = weakref.ref(d._call)
    d.close()
    assert owner() is None and clock.getDelayedCalls() == []  # nothing holds the owner's method
    d.set(5)  # a late move, after the owner's end: harmless
    clock.advance(10)
    assert fired == []
