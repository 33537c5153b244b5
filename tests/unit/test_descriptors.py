"""Descriptors as a managed resource: admission, per-client caps, EMFILE downstream."""

from __future__ import annotations

import errno

import pytest
from twisted.internet import defer, error
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import formatEvent

from barricade import logs
from barricade.descriptors import PER_SESSION, Admission, exhausted, raise_file_limit
from barricade.net.forward import Downstream, DownstreamError, Timeouts
from barricade.net.server import SmtpServerFactory
from tests.unit.test_server import Session


def test_admission_keeps_room_for_each_sessions_downstream():
    adm = Admission(limit=200, base=20, reserve=60, per_client=0)
    assert adm.capacity == (200 - 20 - 60) // PER_SESSION == 60
    for i in range(60):
        assert adm.admit(f"192.0.2.{i}") is None
    assert adm.room == 0 and adm.admit("192.0.2.200") == "descriptors"
    adm.release("192.0.2.3")
    assert adm.room == 1 and adm.admit("192.0.2.200") is None


def test_admission_per_client_cap_and_exemption():
    adm = Admission(limit=10000, base=0, reserve=0, per_client=2)
    assert adm.admit("192.0.2.1") is None and adm.admit("192.0.2.1") is None
    assert adm.admit("192.0.2.1") == "per-client"
    assert adm.admit("192.0.2.2") is None
    assert adm.admit("127.0.0.1", exempt=True) is None
    assert adm.admit("127.0.0.1", exempt=True) is None
    assert adm.admit("127.0.0.1", exempt=True) is None
    adm.release("192.0.2.1")
    assert adm.admit("192.0.2.1") is None


def test_raise_file_limit_reports_soft_and_hard():
    before, soft, hard = raise_file_limit()
    assert before <= soft and (soft == hard or hard < 0 or soft <= hard)


@pytest.mark.parametrize("exc", [
    OSError(errno.EMFILE, "Too many open files"),
    OSError(errno.ENFILE, "Too many open files in system"),
    error.ConnectBindError(errno.EMFILE, "Too many open files"),
])
def test_descriptor_shortage_is_recognised(exc):
    assert exhausted(exc)


def test_other_connect_errors_are_not_a_shortage():
    assert not exhausted(error.ConnectionRefusedError())
    assert not exhausted(OSError(errno.ECONNREFUSED, "Connection refused"))


class _Peer:
    def __init__(self, host: str):
        self.host, self.port = host, 4000


def _connect(factory: SmtpServerFactory, host: str = "192.0.2.10"):
    proto = factory.buildProtocol(None)
    transport = StringTransport(peerAddress=_Peer(host))
    proto.makeConnection(transport)
    return proto, transport


def test_per_client_cap_answers_927_before_closing(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(logs, "globalLogPublisher", seen.append)
    s = Session(tmp_path, (), "client-max-sessions=2")
    factory = s.proto.factory
    second, _ = _connect(factory, "192.0.2.10")  # the Session's own peer is 192.0.2.10
    third, transport = _connect(factory, "192.0.2.10")
    out = transport.value()
    assert out.startswith(b"421 4.3.2 too many connections from [192.0.2.10], max=2 #943")
    assert transport.disconnecting
    other, transport = _connect(factory, "192.0.2.11")
    assert not transport.disconnecting
    assert s.ctx.metrics.refused.labels("per-client")._value.get() == 1
    # The refusal is a connect decision in the log, though no session began.
    [rec] = [e[logs.RECORD] for e in seen if logs.RECORD in e]
    assert (rec["stage"], rec["action"], rec["reply_id"], rec["check"], rec["client_ip"]) == (
        "connect", "drop", 943, "admission-per-client", "192.0.2.10")
    assert formatEvent(seen[-1]).startswith(f"session {rec['sid']}: NOQUEUE: drop: CONNECT from ")
    third.connectionLost()
    s.proto.connectionLost()
    fourth, transport = _connect(factory, "192.0.2.10")
    assert not transport.disconnecting


def test_a_single_process_without_room_answers_925(tmp_path):
    s = Session(tmp_path, (), "workers=1")
    factory = s.proto.factory
    factory.admission.capacity = 1  # the Session's own connection fills it
    _, transport = _connect(factory, "192.0.2.20")
    assert transport.value().startswith(b"421 4.3.2 mx.test busy, try again later #941")
    assert transport.disconnecting
    assert s.ctx.metrics.refused.labels("descriptors")._value.get() == 1


class _Port:
    numberAccepts = 100
    reading = True
    connected, disconnecting = True, False

    def doRead(self):
        pass

    def stopReading(self):
        self.reading = False

    def startReading(self):
        self.reading = True


def test_a_full_worker_stops_accepting_and_resumes_when_a_session_ends(tmp_path):
    s = Session(tmp_path, (), "workers=2")
    factory = s.proto.factory
    port = _Port()
    factory.add_port(port)
    factory.admission.capacity = 2
    proto, transport = _connect(factory, "192.0.2.30")
    assert not transport.disconnecting  # admitted: it fills the worker
    assert not port.reading and factory.full
    port.doRead()
    assert port.numberAccepts == 1  # no accept burst beyond the room left
    proto.connectionLost()
    assert port.reading and not factory.full


def test_downstream_connect_out_of_descriptors_is_its_own_error():
    class Reactor(MemoryReactorClock):
        def connectTCP(self, *args, **kwargs):
            raise OSError(errno.EMFILE, "Too many open files")

    failures = []
    d = defer.ensureDeferred(Downstream.open(Reactor(), [("127.0.0.1", 25), ("127.0.0.2", 25)],
                                             "mx.test", Timeouts()))
    d.addErrback(failures.append)
    assert failures and failures[0].check(DownstreamError)
    assert failures[0].value.kind == "descriptors"


def test_rcpt_when_the_downstream_cannot_get_a_descriptor_gets_926(tmp_path, monkeypatch):
    async def no_descriptors(*args, **kwargs):
        raise DownstreamError("descriptors", "127.0.0.1:25", "Too many open files")

    monkeypatch.setattr(Downstream, "open", no_descriptors)
    s = Session(tmp_path)
    s.output()
    s.send(b"EHLO client.example\r\n")
    s.send(b"MAIL FROM:<a@b.example>\r\n")
    out = s.send(b"RCPT TO:<x@example.com>\r\n")
    assert out.startswith(b"421 4.3.2 local resources exhausted, try again later #942")
    assert s.transport.disconnecting
