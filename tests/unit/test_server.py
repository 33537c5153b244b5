"""The Twisted adapter and the proxy, in process: StringTransport and a fake clock."""

from __future__ import annotations

import pytest
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher

from barricade import plugin
from barricade.net.server import SmtpServerFactory
from barricade.options import REGISTRY
from barricade.policy.pipeline import Check, Pipeline
from barricade.policy.verdict import Action, Verdict
from barricade.service import build_context
from tests.inprocess import ClientSide


class Raises(Check):
    name = "raises"

    async def helo(self, ctx):
        raise RuntimeError("boom")


class Hangs(Check):
    name = "hangs"

    async def mail(self, ctx):
        await defer.Deferred()  # never fires


class NoReplyId(Check):
    name = "no-reply-id"

    async def rcpt(self, ctx, rcpt):
        return Verdict(Action.REJECT)


class Drops(Check):
    name = "drops"

    async def connect(self, ctx):
        return Verdict(Action.DROP, 551)


class Session(ClientSide):
    def __init__(self, tmp_path, checks=(), *args: str):
        routes = tmp_path / "routes"
        routes.write_text("route:local FORWARD: 127.0.0.1:25\nroute:example.com FORWARD: 127.0.0.1:25\n")
        plugin.prepare([])
        config = REGISTRY.parse([f"route-map={routes}", "interface-name=mx.test", "metrics-interface=",
                                 "check-timeout=5", *args])
        self.clock = MemoryReactorClock()
        ctx = build_context(config, reactor=self.clock)
        ctx.pipeline = Pipeline(checks, self.clock, 5, ctx.metrics)
        ctx.resolver = None  # no DNS in process: the client name stays unknown
        ctx.capabilities = None  # no downstream probes in process: the EHLO follows the options
        self.ctx = ctx
        self.proto = SmtpServerFactory(ctx).buildProtocol(None)
        self.transport = StringTransport(peerAddress=_Peer())
        self.proto.makeConnection(self.transport)



class _Peer:
    host, port = "192.0.2.10", 5555


def test_greeting_and_ehlo(tmp_path):
    s = Session(tmp_path)
    assert s.output().startswith(b"220 mx.test ESMTP Barricade ready #633 ")
    out = s.send(b"EHLO client.example\r\n")
    assert out.startswith(b"250-mx.test Hello client.example [192.0.2.10] #254")


def test_failing_check_is_a_temporary_failure_not_a_traceback(tmp_path):
    s = Session(tmp_path, [Raises()])
    s.output()
    out = s.send(b"EHLO client.example\r\n")
    assert out.startswith(b"451 4.3.0 processing error #907")
    assert b"boom" not in out and not s.transport.disconnecting


def test_check_timeout(tmp_path):
    s = Session(tmp_path, [Hangs()])
    s.output()
    s.send(b"EHLO client.example\r\n")
    assert s.send(b"MAIL FROM:<a@b.example>\r\n") == b""  # waiting on the check
    s.clock.advance(5.1)
    assert s.output().startswith(b"451 4.3.0 processing error #907")
    out = s.send(b"NOOP\r\n")
    assert out.startswith(b"250 2.0.0 OK #547")


def test_verdict_without_reply_id_becomes_907(tmp_path):
    s = Session(tmp_path, [NoReplyId()])
    s.output()
    s.send(b"EHLO client.example\r\n")
    s.send(b"MAIL FROM:<a@b.example>\r\n")
    assert s.send(b"RCPT TO:<x@example.com>\r\n").startswith(b"451 4.3.0 processing error #907")


def test_drop_at_connect(tmp_path):
    s = Session(tmp_path, [Drops()])
    assert s.output().startswith(b"421 4.3.2 system resources exceeded #551")
    assert s.transport.disconnecting


def test_internal_error_closes_with_908(tmp_path, monkeypatch):
    s = Session(tmp_path)
    s.output()

    async def broken(self, event, session):
        raise KeyError("bug")

    monkeypatch.setattr(type(s.proto.proxy), "on_noop", broken)
    out = s.send(b"NOOP\r\n")
    assert out.startswith(b"421 4.3.0 processing error, closing connection #908")
    assert s.transport.disconnecting


def test_auth_delay_checks_does_not_put_off_tls_connect(tmp_path):
    """Tls-Connect: is a protocol rule no white list lifts: with auth-delay-checks its
    connect step ran only at MAIL, and never for a client that authenticated, so SKIP
    still offered STARTTLS and REQUIRE or VERIFY let an authenticated MAIL through."""
    from barricade.policy.access import AccessMap
    from barricade.policy.tls_policy import NOTE, TlsPolicy

    access = tmp_path / "access"
    access.write_text("tls-connect:192.0.2.10 SKIP\n")
    s = Session(tmp_path, [TlsPolicy(AccessMap(str(access)))], "+smtp-auth-enable", "+auth-delay-checks")
    s.output()
    assert s.proto.proxy.ctx.notes.get(NOTE) == "SKIP"
    s.send(b"EHLO client.example\r\n")
    assert s.proto.session.config.tls_available is False


def test_a_session_that_cannot_begin_is_closed_with_908(tmp_path, monkeypatch):
    """Half begun, a connection had no timer to end it: it held its place for ever."""
    import barricade.net.server as server

    def broken(*args, **kwargs):
        raise OverflowError("int too large to convert to float")

    monkeypatch.setattr(server, "Session", broken)
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        s = Session(tmp_path)
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert s.output().startswith(b"421 4.3.0 processing error, closing connection #908")
    assert s.transport.disconnecting
    assert [e for e in events if "could not begin" in e.get("log_format", "")]


@pytest.mark.parametrize("where", ["next_event", "receive_data"])
def test_a_parser_that_raises_closes_with_908(tmp_path, monkeypatch, where):
    """A bug in the sans-IO session (it raised on SIZE=² before) is answered like a
    handler's: #908 and the connection closed, not a close without a reply."""
    s = Session(tmp_path)
    s.output()
    session_type = type(s.proto.session)
    original = getattr(session_type, where)

    def broken(self, *args):
        if self.state != "closed" and b"MAIL" in bytes(self._buffer) + b"".join(
                a for a in args if isinstance(a, bytes)):
            raise ValueError("bug")
        return original(self, *args)

    monkeypatch.setattr(session_type, where, broken)
    s.send(b"EHLO client.example\r\n")
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        out = s.send(b"MAIL FROM:<a@example.org>\r\n")
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert out.startswith(b"421 4.3.0 processing error, closing connection #908")
    assert s.transport.disconnecting
    [logged] = [e for e in events if "internal error" in e.get("log_format", "")]
    assert logged["log_failure"].check(ValueError)


def test_idle_client_times_out(tmp_path):
    s = Session(tmp_path, (), "smtp-command-timeout=30")
    s.output()
    s.clock.advance(29)
    assert s.output() == b""
    s.send(b"NOOP\r\n")
    s.clock.advance(29)
    assert s.output() == b""  # the timer restarted with the command
    s.clock.advance(2)
    assert s.output().startswith(b"421 4.4.7 connection timeout exceeded #905")
    assert s.transport.disconnecting


@pytest.mark.parametrize("line", [b"\x00\xff" * 10, b"MAIL FROM:<\xe9@x>", b"\xef\xbb\xbfHELO x"])
def test_binary_commands_get_641(tmp_path, line):
    s = Session(tmp_path)
    s.output()
    assert s.send(line + b"\r\n").startswith(b"500 5.5.2 unknown [192.0.2.10] sent non-printable")


def test_shutdown_notice(tmp_path):
    s = Session(tmp_path)
    s.output()
    s.proto.shutdown()
    assert s.output().startswith(b"421 4.3.2 mx.test service shutting down, try again later #909")
    assert s.transport.disconnecting


class RefusesData(Check):
    name = "refuses-data"

    async def data(self, ctx):
        return Verdict(Action.TEMPFAIL, 552)


def test_refused_data_ends_the_transaction_and_a_second_data_is_not_accepted(tmp_path):
    """Regression: a second DATA once got 354 and then 250 with nothing delivered."""
    s = Session(tmp_path, [RefusesData()])
    s.output()
    s.send(b"EHLO client.example\r\n")
    s.send(b"MAIL FROM:<a@b.example>\r\n")
    s.proto.proxy.txn["fake"] = _FakeDownstream()  # a route that accepted the recipient
    s.proto.session.rcpt_count = 1
    assert s.send(b"DATA\r\n").startswith(b"451 4.7.0 try again later #552")
    out = s.send(b"DATA\r\n")
    assert out.startswith(b"503 5.5.1 DATA out of sequence #251")
    assert s.send(b"MAIL FROM:<a@b.example>\r\n").startswith(b"250 2.1.0")


def test_data_without_a_downstream_recipient_is_refused(tmp_path):
    s = Session(tmp_path)
    s.output()
    s.send(b"EHLO client.example\r\n")
    s.send(b"MAIL FROM:<a@b.example>\r\n")
    s.proto.session.rcpt_count = 1  # the session believes in a recipient the proxy lost
    assert s.send(b"DATA\r\n").startswith(b"554 5.5.1 no valid recipients #923")


class _FakeDownstream:
    recipients = ["x@example.com"]
    alive = True
    in_transaction = True

    async def rset(self):
        return True

    def abort(self):
        pass

    def flush(self):
        pass


def test_a_client_far_ahead_of_us_is_paused_then_resumed(tmp_path):
    s = Session(tmp_path, [Hangs()])
    s.output()
    s.send(b"EHLO client.example\r\n")
    s.send(b"MAIL FROM:<a@b.example>\r\n")  # in flight: the check hangs
    s.proto.dataReceived(b"NOOP\r\n" * 50000)  # 300 KB pipelined behind it
    assert s.transport.producerState == "paused"
    s.clock.advance(5.1)  # the check times out; the queue drains
    assert s.transport.producerState == "producing"
    assert s.output().startswith(b"451 4.3.0 processing error #907")


def test_write_now_leaves_other_transports_to_their_own_write():
    from twisted.internet.testing import StringTransport

    from barricade.net.sendnow import write_now

    transport = StringTransport()
    write_now(transport, b"250 ok\r\n")
    assert transport.value() == b"250 ok\r\n"
