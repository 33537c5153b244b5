"""What a misbehaving downstream can no longer make the client believe.

The real server, conductor and :class:`~barricade.net.forward.Downstream`,
with the downstream's side on StringTransport: every reply below is one a
broken or hostile MTA can send.  The rule they all test: the client gets 250
for a RCPT or the dot only after the downstream's own 2xx to it, and a
connection that is out of step or half set up is dropped, not kept.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock, StringTransport

from barricade import plugin
from barricade.net import conductor as proxy_mod
from barricade.net.forward import Downstream, DownstreamError, SmtpClientProtocol, Timeouts
from barricade.net.server import SmtpServerFactory
from barricade.options import REGISTRY
from barricade.policy.pipeline import Check, Pipeline
from barricade.policy.verdict import CONTINUE
from barricade.protocol.downstream_tls import TlsPolicy
from barricade.service import build_context
from tests.inprocess import ClientSide


class _TlsTransport(StringTransport):
    tls_started = False

    def startTLS(self, creator) -> None:  # noqa: N802 - Twisted's name
        self.tls_started = True


class Spooler(Check):
    """A check that needs the whole message: spool mode."""

    name = "spooler"
    needs_message = True

    async def end_of_data(self, ctx):
        return CONTINUE


class _Peer:
    host, port = "192.0.2.10", 5555


class Relay(ClientSide):
    """A client session through the real proxy; each downstream a real Downstream."""

    def __init__(self, tmp_path: Path, monkeypatch, *args: str, checks=(), keywords=None, hold=False):
        routes = tmp_path / "routes"
        routes.write_text("route:local FORWARD: 127.0.0.1:25\nroute:a.example FORWARD: 127.0.0.2:25\n")
        plugin.prepare([])
        config = REGISTRY.parse([f"route-map={routes}", "interface-name=mx.test", "metrics-interface=",
                                 f"save-dir={tmp_path}", "downstream-pool-size=0", *args])
        self.clock = MemoryReactorClock()
        ctx = build_context(config, reactor=self.clock)
        ctx.pipeline = Pipeline(list(checks), self.clock, 5, ctx.metrics)
        ctx.resolver = None
        ctx.capabilities = None
        self.downs: list[Downstream] = []
        self.opening: list[defer.Deferred] = []
        offered = dict(keywords if keywords is not None else {"PIPELINING": ""})

        def make(host: str, timeouts, observe) -> Downstream:
            proto = SmtpClientProtocol(self.clock, host)
            proto.makeConnection(_TlsTransport())
            down = Downstream(proto, host, timeouts, observe)
            down.keywords = dict(offered)
            self.downs.append(down)
            return down

        async def open_(reactor, forward, hostname, timeouts, observe=None):
            if hold:  # the connect takes a while: the test says when it is done
                opened: defer.Deferred = defer.Deferred()
                self.opening.append(opened)
                await opened
            return make(forward[0][0], timeouts, observe)

        monkeypatch.setattr(proxy_mod.Downstream, "open", staticmethod(open_))
        self.proto = SmtpServerFactory(ctx).buildProtocol(None)
        self.transport = StringTransport(peerAddress=_Peer())
        self.proto.makeConnection(self.transport)
        self.output()
        self.send(b"EHLO client.example\r\n")


    def down_got(self) -> bytes:
        transport = self.downs[-1].proto.transport
        out = transport.value()
        transport.clear()
        return out

    def answer(self, data: bytes) -> bytes:
        self.downs[-1].proto.dataReceived(data)
        return self.output()

    def to_rcpt(self) -> bytes:
        self.send(b"MAIL FROM:<fred@sender.example>\r\n")
        self.send(b"RCPT TO:<john@a.example>\r\n")
        assert self.down_got() == b"MAIL FROM:<fred@sender.example>\r\nRCPT TO:<john@a.example>\r\n"
        return self.answer(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n")


def test_a_3xx_to_a_rcpt_is_no_acceptance(tmp_path, monkeypatch):
    c = Relay(tmp_path, monkeypatch)
    c.send(b"MAIL FROM:<fred@sender.example>\r\n")
    c.send(b"RCPT TO:<john@a.example>\r\n")
    out = c.answer(b"250 2.1.0 ok\r\n354 go ahead\r\n")
    assert out.startswith(b"451 4.4.2 connection lost to forwarding agent #903")
    assert c.downs[-1].proto.transport.disconnecting


@pytest.mark.parametrize("dot_reply", [b"334 huh\r\n", b"354 again\r\n", b"199 early\r\n"])
def test_a_reply_to_the_dot_that_is_neither_yes_nor_no_is_no_acceptance(tmp_path, monkeypatch, dot_reply):
    c = Relay(tmp_path, monkeypatch)
    assert c.to_rcpt().startswith(b"250 2.1.5")
    c.send(b"DATA\r\n")
    assert c.down_got() == b"DATA\r\n"
    assert c.answer(b"354 go\r\n").startswith(b"354 ")
    c.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")
    out = c.answer(dot_reply)
    assert b"250 " not in out and out.startswith(b"421 4.4.2")
    assert not c.proto.proxy.ctx.delivered


@pytest.mark.parametrize("data_reply", [b"250 2.0.0 ok\r\n", b"334 what\r\n"])
def test_spool_mode_data_answered_without_a_go_ahead_is_not_a_delivery(tmp_path, monkeypatch, data_reply):
    """The DATA reply was taken for the dot's: 250, the message never sent."""
    c = Relay(tmp_path, monkeypatch, checks=[Spooler()])
    assert c.to_rcpt().startswith(b"250 2.1.5")
    assert c.send(b"DATA\r\n").startswith(b"354 ")
    c.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")
    assert c.down_got() == b"DATA\r\n"
    out = c.answer(data_reply)
    assert out.startswith(b"421 4.4.2 connection lost to forwarding agent #902")
    assert c.down_got() == b"" and not c.proto.proxy.ctx.delivered


def test_an_unsolicited_reply_drops_the_connection(tmp_path, monkeypatch):
    """An extra 250 to a pipelined MAIL made the RCPT's 550 arrive unasked for: it was
    logged and dropped, and the message went on to a 250 without that recipient."""
    c = Relay(tmp_path, monkeypatch)
    c.send(b"MAIL FROM:<fred@sender.example>\r\n")
    c.send(b"RCPT TO:<john@a.example>\r\n")
    c.down_got()
    c.answer(b"250 2.1.0 ok\r\n250 2.1.0 ok\r\n550 5.1.1 john unknown\r\n")
    down = c.downs[-1]
    assert down.proto.transport.disconnecting and not down.alive
    out = c.send(b"RCPT TO:<jane@a.example>\r\n")
    assert out[:1] == b"4" and c.down_got() == b""
    out = c.send(b"DATA\r\n") + c.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")
    assert b"250 2.0.0" not in out and not c.proto.proxy.ctx.delivered


def test_plaintext_after_the_starttls_go_ahead_is_refused():
    """RFC 3207 5: what follows the 220 in plaintext would have been read as the EHLO
    reply inside TLS (XCLIENT, PIPELINING injected by a man in the middle)."""
    clock = MemoryReactorClock()
    proto = SmtpClientProtocol(clock, "d:25")
    proto.makeConnection(_TlsTransport())
    down = Downstream(proto, "d:25", Timeouts())
    down.keywords = {"STARTTLS": ""}
    outcome: list = []
    defer.ensureDeferred(down.starttls(TlsPolicy("encrypt"), "mx.test", object())).addBoth(outcome.append)
    proto.dataReceived(b"220 go ahead\r\n250-evil.example\r\n250-XCLIENT NAME ADDR\r\n250 PIPELINING\r\n")
    [failure] = outcome
    assert failure.check(DownstreamError) and failure.value.kind == "protocol"
    assert not proto.transport.tls_started and proto.transport.disconnecting
    assert "XCLIENT" not in down.keywords


@pytest.mark.parametrize("offered, reply", [
    ({"PIPELINING": "", "STARTTLS": ""}, b"454 4.7.0 TLS not available\r\n"),
    ({"PIPELINING": ""}, None),
])
def test_a_connection_that_cannot_be_secured_as_required_is_closed(tmp_path, monkeypatch, offered, reply):
    c = Relay(tmp_path, monkeypatch, "forward-tls=encrypt", keywords=offered)
    c.send(b"MAIL FROM:<fred@sender.example>\r\n")
    out = c.send(b"RCPT TO:<john@a.example>\r\n")
    if reply is not None:
        assert c.down_got() == b"STARTTLS\r\n"
        out = c.answer(reply)
    assert out.startswith(b"421 4.4.1 forwarding agent unavailable #901")
    assert c.downs[-1].proto.transport.disconnecting


def test_a_connection_opened_after_the_client_left_is_closed_unused(tmp_path, monkeypatch):
    c = Relay(tmp_path, monkeypatch, hold=True)
    c.send(b"MAIL FROM:<fred@sender.example>\r\n")
    c.send(b"RCPT TO:<john@a.example>\r\n")
    c.transport.loseConnection()
    c.proto.connectionLost(None)
    c.opening.pop().callback(None)
    assert c.down_got() == b"" and c.downs[-1].proto.transport.disconnecting
