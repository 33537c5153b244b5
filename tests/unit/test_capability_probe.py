"""The probe's waiting rules, on a clock that only moves when told (no network)."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock

from barricade.maps import RouteMap
from barricade.net.capability_probe import CapabilityProbe
from barricade.net.forward import Timeouts
from barricade.protocol.capabilities import EIGHTBIT_FOLLOW

POSTFIX = {"SIZE": "10240000", "8BITMIME": "", "DSN": "", "ETRN": ""}


def make(tmp_path) -> tuple[MemoryReactorClock, CapabilityProbe]:
    path = tmp_path / "routes"
    path.write_text("route:local FORWARD: 127.0.0.1:2525\nroute:example.com FORWARD: 127.0.0.1:2526\n")
    reactor = MemoryReactorClock()
    return reactor, CapabilityProbe(reactor, RouteMap(str(path)), "mx.test", Timeouts(), ttl=600)


def test_a_slow_first_probe_is_waited_for_once(tmp_path):
    reactor, probe = make(tmp_path)
    d = defer.ensureDeferred(probe.offer(52428800, EIGHTBIT_FOLLOW))
    assert not d.called and len(reactor.tcpClients) == 2  # both downstreams are being asked
    reactor.advance(5)
    offer = d.result
    assert (offer.size, offer.eightbitmime, offer.dsn) == (52428800, False, False)
    d = defer.ensureDeferred(probe.offer(52428800, EIGHTBIT_FOLLOW))
    assert d.called  # the probes are still out, but nobody waits for them again
    assert len(reactor.tcpClients) == 2  # and no second probe is started


def test_learnt_capabilities_make_the_offer(tmp_path):
    reactor, probe = make(tmp_path)
    probe.learn((("127.0.0.1", 2525),), POSTFIX)
    probe.learn((("127.0.0.1", 2526),), {"8BITMIME": "", "SIZE": "20000000"})
    offer = defer.ensureDeferred(probe.offer(52428800, EIGHTBIT_FOLLOW)).result
    assert (offer.size, offer.eightbitmime, offer.dsn, offer.etrn) == (10240000, True, False, True)
    assert reactor.tcpClients == []  # fresh answers: no probe
    reactor.advance(601)
    d = defer.ensureDeferred(probe.offer(52428800, EIGHTBIT_FOLLOW))
    assert d.called and len(reactor.tcpClients) == 2  # stale: refreshed in the background
    assert d.result.size == 10240000  # the old answer serves meanwhile
