"""The forwarding rules, in process: the real conductor and decision layer, a fake
clock and fake downstream hosts whose every answer the test gives by hand.

Each rule is shown at the moment it matters: while the downstream has not
answered, the client has no reply at all.
"""

from __future__ import annotations

import gc
import weakref

import pytest
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock, StringTransport

from barricade import plugin
from barricade.net import conductor as proxy_mod
from barricade.net.forward import DownstreamError, DownstreamReply
from barricade.net.server import SmtpServerFactory
from barricade.options import REGISTRY
from barricade.policy.pipeline import Check, Pipeline
from barricade.policy.verdict import Action, Flag, Verdict, tag
from barricade.protocol.capabilities import Capabilities
from barricade.service import build_context
from tests.inprocess import ClientSide


def reply(code: int, text: str = "ok") -> DownstreamReply:
    return DownstreamReply(code, (text,))


class FakeDownstream:
    """One downstream host: each command returns a Deferred the test fires (or an auto answer)."""

    def __init__(self, host: str, clock, auto: dict[str, object] | None = None):
        self.host = host
        self.clock = clock
        self.auto = dict(auto or {})
        self.pending: dict[str, defer.Deferred] = {}
        self.alive = True
        self.in_transaction = False
        self.reusable = True
        self.reused = False
        self.recipients: list[str] = []
        self.written = b""
        self.log: list[str] = []
        self.keywords: dict[str, str] = {}  # offers nothing: no STARTTLS, XCLIENT, CHUNKING
        self.capabilities = Capabilities.from_keywords(self.keywords)
        self.tls_attempted = False
        self.flushed = 0

    async def starttls(self, policy, hostname, context):
        return ""  # not offered: plaintext, as forward-tls=may allows

    def _answer(self, command: str) -> defer.Deferred:
        self.log.append(command)
        d: defer.Deferred = defer.Deferred()
        if command in self.auto:
            value = self.auto[command]
            (d.errback if isinstance(value, Exception) else d.callback)(value)
        else:
            self.pending[command] = d
        return d

    def fire(self, command: str, value: object) -> None:
        d = self.pending.pop(command)
        (d.errback if isinstance(value, Exception) else d.callback)(value)

    def timeout(self, command: str, seconds: float) -> defer.Deferred:
        """An answer that never comes: the fake clock's timeout turns it into #904."""
        d = self._answer(command)

        def timed_out(failure):
            failure.trap(defer.CancelledError, defer.TimeoutError)
            raise DownstreamError("timeout", self.host, command)

        return d.addTimeout(seconds, self.clock).addErrback(timed_out)

    async def begin(self, sender, params, rcpt, rcpt_params=None):
        self.in_transaction = True
        self.recipients = []
        mail = await self._answer("mail")
        if not mail.ok:
            return mail, None
        return mail, await self.rcpt(rcpt)

    async def rcpt(self, rcpt, params=None):
        if "rcpt-timeout" in self.auto:
            answer = await self.timeout("rcpt", self.auto["rcpt-timeout"])
        else:
            answer = await self._answer("rcpt")
        if answer.ok:
            self.recipients.append(rcpt)
        return answer

    async def data(self, chunking: bool = False):
        return await self._answer("data")

    def write(self, chunk: bytes) -> None:
        self.written += chunk

    def flush(self) -> None:
        self.flushed = len(self.written)  # how much had been written at the last flush

    async def dot(self):
        try:
            return await self._answer("dot")
        finally:
            self.in_transaction = False
            self.recipients = []

    async def rset(self):
        self.log.append("rset")
        self.in_transaction = False
        self.recipients = []
        return True

    async def quit(self):
        self.log.append("quit")

    def abort(self):
        self.log.append("abort")
        self.alive = False
        self.in_transaction = False


class HoldMail(Check):
    """A MAIL refusal smtp-delay-checks may hold (as the access map's REJECT)."""

    name = "hold-mail"

    async def mail(self, ctx):
        return Verdict(Action.REJECT, 856, flags=Flag.DELAY)

    async def rcpt(self, ctx, rcpt):
        return Verdict(Action.ACCEPT) if rcpt.startswith("postmaster@") else Verdict()


class Client(ClientSide):
    """A client session against the real proxy, with fake downstream hosts per route."""

    def __init__(self, tmp_path, monkeypatch, checks=(), *args: str, auto=None):
        routes = tmp_path / "routes"
        routes.write_text("route:local FORWARD: 127.0.0.1:25\n"
                          "route:a.example FORWARD: 127.0.0.2:25\n"
                          "route:b.example FORWARD: 127.0.0.3:25\n")
        plugin.prepare([])
        config = REGISTRY.parse([f"route-map={routes}", "interface-name=mx.test", "metrics-interface=",
                                 "check-timeout=5", *args])
        self.clock = MemoryReactorClock()
        ctx = build_context(config, reactor=self.clock)
        ctx.pipeline = Pipeline(checks, self.clock, 5, ctx.metrics)
        ctx.resolver = None
        ctx.capabilities = None  # no downstream probes in process: the EHLO follows the options
        self.hosts: dict[str, FakeDownstream] = {}
        auto = auto or {}

        async def open_(reactor, forward, hostname, timeouts, observe):
            host = forward[0][0]
            down = FakeDownstream(host, self.clock, auto.get(host))
            self.hosts[host] = down
            return down

        monkeypatch.setattr(proxy_mod.Downstream, "open", staticmethod(open_))
        self.factory = SmtpServerFactory(ctx)
        self.reconnect()

    def reconnect(self) -> None:
        """A new client session on the same listener (the old one is left as it is)."""
        self.proto = self.factory.buildProtocol(None)
        self.transport = StringTransport(peerAddress=_Peer())
        self.proto.makeConnection(self.transport)
        self.output()


    def envelope(self, *rcpts: str) -> None:
        assert self.send(b"EHLO client.example\r\n").startswith(b"250-")
        assert self.send(b"MAIL FROM:<fred@sender.example>\r\n").startswith(b"250 ")
        for rcpt in rcpts:
            assert self.send(b"RCPT TO:<%s>\r\n" % rcpt.encode()).startswith(b"250 ")


class _Peer:
    host, port = "192.0.2.10", 5555


OK = {"mail": reply(250), "rcpt": reply(250), "data": reply(354, "go on")}


def test_rcpt_gets_250_only_after_the_downstream_250(tmp_path, monkeypatch):
    c = Client(tmp_path, monkeypatch, auto={"127.0.0.2": {"mail": reply(250)}})
    c.send(b"EHLO client.example\r\nMAIL FROM:<fred@sender.example>\r\n")
    assert c.send(b"RCPT TO:<john@a.example>\r\n") == b""  # the downstream has not answered
    c.hosts["127.0.0.2"].fire("rcpt", reply(250))
    assert c.output().startswith(b"250 2.1.5 recipient <john@a.example> accepted #297")


def test_a_downstream_refusal_is_the_clients_refusal(tmp_path, monkeypatch):
    c = Client(tmp_path, monkeypatch, auto={"127.0.0.2": {"mail": reply(250), "rcpt": reply(550, "5.1.1 no")}})
    c.send(b"EHLO client.example\r\nMAIL FROM:<fred@sender.example>\r\n")
    assert c.send(b"RCPT TO:<john@a.example>\r\n").startswith(b"550 5.1.1 recipient <john@a.example> ")
    assert c.send(b"DATA\r\n").startswith(b"554 5.5.1 no valid recipients #923")


def test_354_only_when_every_downstream_said_354(tmp_path, monkeypatch):
    c = Client(tmp_path, monkeypatch, auto={"127.0.0.2": {"mail": reply(250), "rcpt": reply(250)},
                                            "127.0.0.3": {"mail": reply(250), "rcpt": reply(250)}})
    c.envelope("john@a.example", "jane@b.example")
    assert c.send(b"DATA\r\n") == b""
    c.hosts["127.0.0.2"].fire("data", reply(354))
    assert c.output() == b""  # one route is not ready yet
    c.hosts["127.0.0.3"].fire("data", reply(354))
    assert c.output().startswith(b"354 ")


def test_the_dot_gets_250_only_after_the_downstream_250(tmp_path, monkeypatch):
    c = Client(tmp_path, monkeypatch, auto={"127.0.0.2": OK})
    c.envelope("john@a.example")
    assert c.send(b"DATA\r\n").startswith(b"354 ")
    assert c.send(b"Subject: hi\r\n\r\nbody\r\n.\r\n") == b""
    down = c.hosts["127.0.0.2"]
    assert b"Subject: hi\r\n" in down.written and down.log[-1] == "dot"
    down.fire("dot", reply(250, "2.0.0 queued"))
    assert c.output().startswith(b"250 2.0.0 ")
    assert c.proto.proxy.ctx.delivered


class WaitAtTheDot(Check):
    """An end-of-data check that waits (a store or a scanner) until the test answers."""

    name = "wait-at-the-dot"

    def __init__(self):
        self.answer: defer.Deferred = defer.Deferred()

    async def end_of_data(self, ctx):
        return await self.answer


@pytest.mark.parametrize("verdict", [Verdict(), Verdict(Action.REJECT, 340)])  # 340: 550 duplicate
def test_the_last_piece_of_a_message_waits_for_the_dot_while_its_checks_decide(
        tmp_path, monkeypatch, verdict):
    """The body goes downstream as it comes, each piece when the client's input runs
    out; the piece that ends with the dot waits for the end-of-data checks and leaves
    with the dot in one write, or with the connection when they refuse."""
    check = WaitAtTheDot()
    c = Client(tmp_path, monkeypatch, [check], auto={"127.0.0.2": {**OK, "dot": reply(250)}})
    c.envelope("john@a.example")
    assert c.send(b"DATA\r\n").startswith(b"354 ")
    down = c.hosts["127.0.0.2"]
    assert c.send(b"Subject: hi\r\n\r\nfirst piece\r\n") == b""
    assert down.flushed == len(down.written) and b"first piece" in down.written
    assert c.send(b"last piece\r\n.\r\n") == b""
    assert b"last piece" in down.written and down.flushed < len(down.written)
    assert "dot" not in down.log
    check.answer.callback(verdict)
    if verdict.action == Action.REJECT:
        assert c.output().startswith(b"550 ") and down.log[-1] == "abort"
    else:
        assert c.output().startswith(b"250 ") and down.log[-1] == "dot"
        assert down.flushed < len(down.written)  # the dot took it, not a flush


def test_the_decisions_log_line_follows_the_reply_it_records(tmp_path, monkeypatch):
    """The client does not wait for the log: when the dot's decision is published,
    its 250 is already written; a refusal's line follows its reply too, and the
    lines keep the order of the decisions."""
    c = Client(tmp_path, monkeypatch, auto={"127.0.0.2": {**OK, "dot": reply(250, "2.0.0 queued")}})
    seen: list[tuple[str, bytes]] = []
    monkeypatch.setattr(proxy_mod, "emit_decision",
                        lambda rec: seen.append((rec["stage"], c.transport.value())))
    c.envelope("john@a.example")
    assert c.send(b"DATA\r\n").startswith(b"354 ")
    c.proto.dataReceived(b"Subject: hi\r\n\r\nbody\r\n.\r\n"
                         b"MAIL FROM:<fred@sender.example>\r\nRCPT TO:<x@nowhere.invalid>\r\n")
    assert [stage for stage, _ in seen] == ["dot", "rcpt"]
    dot, rcpt = seen[0][1], seen[1][1]
    assert dot.startswith(b"250 2.0.0 ") and dot.count(b"\r\n") == 1  # the 250, and nothing after it
    refusal = rcpt.split(b"\r\n")[-2]
    assert refusal.startswith(b"5") and b"x@nowhere.invalid" in refusal  # answered, then logged
    assert c.output() == rcpt


@pytest.mark.parametrize("second, expect", [
    (reply(250), b"250 2.0.0 "),
    (reply(550, "5.7.1 no"), b"451 4.4.0 "),  # mixed results: a temporary failure (#307)
])
def test_results_differing_between_routes_are_a_temporary_failure(tmp_path, monkeypatch, second, expect):
    c = Client(tmp_path, monkeypatch, auto={"127.0.0.2": OK, "127.0.0.3": OK})
    c.envelope("john@a.example", "jane@b.example")
    assert c.send(b"DATA\r\n").startswith(b"354 ")
    c.send(b"Subject: hi\r\n\r\nbody\r\n.\r\n")
    c.hosts["127.0.0.2"].fire("dot", reply(250))
    assert c.output() == b""
    c.hosts["127.0.0.3"].fire("dot", second)
    out = c.output()
    assert out.startswith(expect), out
    if expect.startswith(b"451"):
        assert b"#307" in out.split(b"\r\n")[0]
        assert not c.proto.proxy.ctx.delivered


def test_every_route_refusing_the_dot_is_a_permanent_refusal(tmp_path, monkeypatch):
    c = Client(tmp_path, monkeypatch, auto={"127.0.0.2": OK, "127.0.0.3": OK})
    c.envelope("john@a.example", "jane@b.example")
    c.send(b"DATA\r\n")
    c.send(b"Subject: hi\r\n\r\nbody\r\n.\r\n")
    c.hosts["127.0.0.2"].fire("dot", reply(554, "5.7.1 no"))
    c.hosts["127.0.0.3"].fire("dot", reply(550, "5.7.1 no"))
    assert b"#306" in c.output().split(b"\r\n")[0]


def test_a_downstream_lost_before_data_is_903_and_the_transaction_stays_broken(tmp_path, monkeypatch):
    c = Client(tmp_path, monkeypatch, auto={"127.0.0.2": {"mail": reply(250), "rcpt": reply(250)}})
    c.envelope("john@a.example")
    del c.hosts["127.0.0.2"].auto["rcpt"]  # the next RCPT waits for the test
    assert c.send(b"RCPT TO:<jim@a.example>\r\n") == b""
    c.hosts["127.0.0.2"].fire("rcpt", DownstreamError("lost", "127.0.0.2", "gone"))
    assert b"#903" in c.output()
    # A recipient was accepted on the lost connection: no DATA, no further RCPT.
    assert b"#903" in c.send(b"RCPT TO:<joe@b.example>\r\n")
    assert c.send(b"DATA\r\n").startswith(b"451 4.4.2 connection lost to forwarding agent #903")


def test_a_downstream_lost_during_data_is_902_and_closes(tmp_path, monkeypatch):
    c = Client(tmp_path, monkeypatch, auto={"127.0.0.2": OK})
    c.envelope("john@a.example")
    c.send(b"DATA\r\n")
    c.send(b"Subject: hi\r\n\r\n")
    c.hosts["127.0.0.2"].alive = False  # the connection went away mid-transfer
    out = c.send(b"more body\r\n")
    assert out.startswith(b"421 4.4.2 connection lost to forwarding agent #902")
    assert c.transport.disconnecting


def test_a_downstream_lost_at_the_dot_is_902(tmp_path, monkeypatch):
    c = Client(tmp_path, monkeypatch, auto={"127.0.0.2": OK})
    c.envelope("john@a.example")
    c.send(b"DATA\r\n")
    c.send(b"Subject: hi\r\n\r\nbody\r\n.\r\n")
    c.hosts["127.0.0.2"].fire("dot", DownstreamError("lost", "127.0.0.2", "gone"))
    assert c.output().startswith(b"421 4.4.2 connection lost to forwarding agent #902")
    assert c.transport.disconnecting
    assert not c.proto.proxy.ctx.delivered


def test_a_downstream_timeout_on_the_fake_clock_is_904(tmp_path, monkeypatch):
    c = Client(tmp_path, monkeypatch, auto={"127.0.0.2": {"mail": reply(250), "rcpt-timeout": 30}})
    c.send(b"EHLO client.example\r\nMAIL FROM:<fred@sender.example>\r\n")
    assert c.send(b"RCPT TO:<john@a.example>\r\n") == b""
    c.clock.advance(29)
    assert c.output() == b""
    c.clock.advance(2)
    assert c.output().startswith(b"421 4.4.7 request timeout exceeded #904")


def test_an_unreachable_route_is_901_or_295_beside_another_route(tmp_path, monkeypatch):
    c = Client(tmp_path, monkeypatch, auto={
        "127.0.0.2": {"mail": reply(250), "rcpt": reply(250)},
        "127.0.0.3": {"mail": DownstreamError("connect", "127.0.0.3", "refused")},
    })
    c.envelope("john@a.example")
    out = c.send(b"RCPT TO:<jane@b.example>\r\n")
    assert b"#295" in out.split(b"\r\n")[0]  # only this recipient waits


def test_a_held_mail_refusal_answers_the_rcpt(tmp_path, monkeypatch):
    c = Client(tmp_path, monkeypatch, [HoldMail()], "+smtp-delay-checks",
               auto={"127.0.0.2": {"mail": reply(250), "rcpt": reply(250)}})
    c.send(b"EHLO client.example\r\n")
    assert c.send(b"MAIL FROM:<fred@sender.example>\r\n").startswith(b"250 2.0.0 proceed #507")
    out = c.send(b"RCPT TO:<john@a.example>\r\n")
    assert out.startswith(b"550 5.7.1 sender <fred@sender.example> black listed #856")
    assert "127.0.0.2" not in c.hosts  # nothing was relayed
    # A white-listed recipient overrides the held refusal and is relayed.
    assert c.send(b"RCPT TO:<postmaster@a.example>\r\n").startswith(b"250 ")
    assert c.hosts["127.0.0.2"].recipients == ["postmaster@a.example"]


def test_without_delay_checks_the_mail_refusal_is_immediate(tmp_path, monkeypatch):
    c = Client(tmp_path, monkeypatch, [HoldMail()])
    c.send(b"EHLO client.example\r\n")
    assert c.send(b"MAIL FROM:<fred@sender.example>\r\n").startswith(b"550 5.7.1 sender <fred@sender.example>")


class TagsAtRcpt(Check):
    name = "tags-at-rcpt"

    async def rcpt(self, ctx, rcpt):
        return tag(reason="suspicious sender")


def test_a_tag_verdict_marks_the_message_before_its_headers_go_downstream(tmp_path, monkeypatch):
    c = Client(tmp_path, monkeypatch, [TagsAtRcpt()], auto={"127.0.0.2": {**OK, "dot": reply(250)}})
    c.envelope("john@a.example")
    c.send(b"DATA\r\n")
    assert c.send(b"Subject: hi\r\n\r\nbody\r\n.\r\n").startswith(b"250 ")
    written = c.hosts["127.0.0.2"].written
    assert b"Subject: [SPAM] hi\r\n" in written
    assert b"X-Spam-Flag: YES\r\n" in written and b"X-Spam-Reason: suspicious sender\r\n" in written


def test_quit_is_answered_at_once_and_the_connection_serves_the_next_session(tmp_path, monkeypatch):
    c = Client(tmp_path, monkeypatch, auto={"127.0.0.2": {**OK, "dot": reply(250)}})
    c.envelope("john@a.example")
    c.send(b"DATA\r\n")
    assert c.send(b"Subject: hi\r\n\r\nbody\r\n.\r\n").startswith(b"250 ")
    first = c.hosts["127.0.0.2"]
    assert c.send(b"QUIT\r\n").startswith(b"221 ")
    assert "quit" not in first.log  # parked for the next session, not closed
    c.reconnect()
    c.envelope("jane@a.example")
    assert c.hosts["127.0.0.2"] is first  # no new connection was opened
    assert first.log[-2:] == ["mail", "rcpt"]


def test_without_a_pool_the_downstream_gets_quit(tmp_path, monkeypatch):
    c = Client(tmp_path, monkeypatch, (), "downstream-pool-size=0", auto={"127.0.0.2": OK})
    c.envelope("john@a.example")
    assert c.send(b"RSET\r\n").startswith(b"250 ")
    assert c.send(b"QUIT\r\n").startswith(b"221 ")
    assert c.hosts["127.0.0.2"].log[-2:] == ["rset", "quit"]


def test_a_parked_connection_found_closed_is_replaced_unseen(tmp_path, monkeypatch):
    c = Client(tmp_path, monkeypatch, auto={"127.0.0.2": OK})
    c.envelope("john@a.example")
    assert c.send(b"RSET\r\nQUIT\r\n").count(b"\r\n") == 2
    parked = c.hosts["127.0.0.2"]
    parked.auto["mail"] = DownstreamError("lost", "127.0.0.2", "closed while idle")
    c.reconnect()
    c.envelope("jane@a.example")  # every reply 250: the client never sees the stale one
    fresh = c.hosts["127.0.0.2"]
    assert fresh is not parked and "abort" in parked.log
    assert fresh.recipients == ["jane@a.example"]


def _client_protocol():
    from barricade.net.forward import SmtpClientProtocol

    clock = MemoryReactorClock()
    proto = SmtpClientProtocol(clock, "127.0.0.2:25")
    proto.makeConnection(StringTransport())
    return clock, proto


def test_one_downstream_timer_covers_the_oldest_waiting_command():
    clock, proto = _client_protocol()
    first, second = proto.commands(["MAIL FROM:<a@b.example>", "RCPT TO:<c@d.example>"], 5)
    assert proto.transport.value() == b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(4)
    proto.dataReceived(b"250 ok\r\n")
    assert first.result.code == 250
    clock.advance(4.9)  # the RCPT has its own 5 s from the MAIL's reply
    assert not second.called
    clock.advance(0.2)
    assert isinstance(second.result.value, DownstreamError) and second.result.value.kind == "timeout"
    second.addErrback(lambda f: None)
    assert proto.transport.disconnecting or proto.transport.disconnected


def test_an_idle_downstream_never_times_out_and_its_next_command_gets_a_full_timeout():
    clock, proto = _client_protocol()
    d = proto.command("NOOP", 5)
    proto.dataReceived(b"250 ok\r\n")
    assert d.result.code == 250
    clock.advance(60)  # idle: the old timer fires and finds nothing waiting
    assert not proto.transport.disconnecting
    d = proto.command("RSET", 5)
    clock.advance(4.9)
    assert not d.called
    proto.dataReceived(b"250 ok\r\n")
    assert d.result.code == 250


def _in_data(c: Client) -> None:
    c.envelope("john@a.example")
    assert c.send(b"DATA\r\n").startswith(b"354 ")


def _delivered(c: Client) -> None:
    _in_data(c)
    assert c.send(b"Subject: hi\r\n\r\nbody\r\n.\r\n").startswith(b"250 ")
    assert c.send(b"QUIT\r\n").startswith(b"221 ")


def _gone_in_data(c: Client) -> None:
    _in_data(c)
    c.send(b"Subject: hi\r\n\r\nhalf a bo")


def _refused(c: Client) -> None:
    assert c.send(b"EHLO client.example\r\n").startswith(b"250-")
    assert c.send(b"MAIL FROM:<fred@sender.example>\r\n").startswith(b"250 ")
    assert c.send(b"RCPT TO:<nobody@a.example>\r\n").startswith(b"550 ")


def _dot_downstream(c: Client) -> None:
    """The client leaves while the dot is downstream; the session ends with its reply."""
    _in_data(c)
    assert c.send(b"Subject: hi\r\n\r\nbody\r\n.\r\n") == b""
    c.proto.connectionLost(None)
    c.hosts["127.0.0.2"].fire("dot", reply(250))


@pytest.mark.parametrize("session", [_delivered, _gone_in_data, _refused, _dot_downstream])
def test_an_ended_session_is_freed_without_the_garbage_collector(tmp_path, monkeypatch, session):
    """A session's objects refer to each other only until it ends: then reference
    counting frees them.  Were they a cycle, every ended session would wait for
    the garbage collector, trigger its collections and lengthen them."""
    auto = {**OK, "dot": reply(250)}
    if session is _refused:
        auto["rcpt"] = reply(550, "no such user")
    if session is _dot_downstream:
        del auto["dot"]
    gc.collect()
    gc.disable()
    try:
        c = Client(tmp_path, monkeypatch, auto={"127.0.0.2": auto})
        session(c)
        c.proto.connectionLost(None)
        proxy = c.proto.proxy
        alive = [weakref.ref(o) for o in (c.proto, c.proto.session, proxy, proxy.ctx, proxy.auth)]
        del proxy
        c.proto = c.transport = None
        assert [ref() for ref in alive] == [None] * len(alive)
    finally:
        gc.enable()
