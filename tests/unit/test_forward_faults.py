"""Downstream faults leave no failed Deferred behind for the garbage collector to report."""

from __future__ import annotations

import gc

from twisted.internet import defer
from twisted.internet.error import ConnectionLost
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from barricade.net.forward import Downstream, DownstreamError, SmtpClientProtocol, Timeouts


def _unhandled(run) -> list[dict]:
    seen: list[dict] = []

    def observer(event: dict) -> None:
        if event.get("isError") or "Unhandled" in str(event.get("log_format", "")):
            seen.append(event)

    globalLogPublisher.addObserver(observer)
    try:
        run()
        gc.collect()
    finally:
        globalLogPublisher.removeObserver(observer)
    return seen


def test_downstream_lost_between_pipelined_mail_and_rcpt():
    failures: list[Failure] = []

    def run() -> None:
        clock = MemoryReactorClock()
        proto = SmtpClientProtocol(clock, "sink:25")
        proto.makeConnection(StringTransport())
        down = Downstream(proto, "sink:25", Timeouts())
        down.keywords["PIPELINING"] = ""
        d = defer.ensureDeferred(down.begin("a@example.org", {}, "b@example.com"))
        d.addErrback(failures.append)
        assert proto.transport.value() == b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\n"
        proto.connectionLost(Failure(ConnectionLost("killed")))

    assert _unhandled(run) == []
    assert failures and failures[0].check(DownstreamError)
    assert failures[0].value.kind == "lost"


def test_downstream_timeout_between_pipelined_mail_and_rcpt():
    failures: list[Failure] = []

    def run() -> None:
        clock = MemoryReactorClock()
        proto = SmtpClientProtocol(clock, "sink:25")
        proto.makeConnection(StringTransport())
        down = Downstream(proto, "sink:25", Timeouts(command=5))
        down.keywords["PIPELINING"] = ""
        defer.ensureDeferred(down.begin("a@example.org", {}, "b@example.com")).addErrback(failures.append)
        clock.advance(6)

    assert _unhandled(run) == []
    assert failures and failures[0].value.kind == "timeout"


def test_a_reply_code_of_digits_that_are_not_ascii_is_a_protocol_error():
    """"²50" passes str.isdigit and not int(): the reply line is refused, nothing raises."""
    failures: list[Failure] = []

    def run() -> None:
        proto = SmtpClientProtocol(MemoryReactorClock(), "sink:25")
        proto.makeConnection(StringTransport())
        down = Downstream(proto, "sink:25", Timeouts())
        defer.ensureDeferred(down.begin("a@example.org", {}, "b@example.com")).addErrback(failures.append)
        proto.dataReceived("\u00b250 2.1.0 Ok\r\n".encode())

    assert _unhandled(run) == []
    assert failures and failures[0].value.kind == "protocol"


def test_a_utf8_address_is_never_sent_to_a_downstream_without_smtputf8():
    """Our EHLO offer comes from what the downstreams offered before; this connection
    (another forward host, or after XCLIENT) may offer less (RFC 6531 3.4)."""
    def downstream(keywords: dict[str, str]) -> Downstream:
        proto = SmtpClientProtocol(MemoryReactorClock(), "sink:25")
        proto.makeConnection(StringTransport())
        down = Downstream(proto, "sink:25", Timeouts())
        down.keywords = keywords
        return down

    outcome: list = []
    down = downstream({"PIPELINING": ""})
    defer.ensureDeferred(down.begin("jos\u00e9@b\u00fccher.example", {}, "b@example.com")).addBoth(outcome.append)
    [(mail, rcpt)] = outcome
    assert (mail.code, rcpt) == (553, None) and down.proto.transport.value() == b""
    outcome.clear()
    defer.ensureDeferred(down.rcpt("\u00fc@b\u00fccher.example")).addBoth(outcome.append)
    assert outcome[0].code == 553 and down.proto.transport.value() == b""
    down = downstream({"PIPELINING": "", "SMTPUTF8": ""})
    defer.ensureDeferred(down.begin("jos\u00e9@b\u00fccher.example", {"SMTPUTF8": None}, "b@example.com"))
    assert down.proto.transport.value().startswith("MAIL FROM:<jos\u00e9@b\u00fccher.example>".encode())
