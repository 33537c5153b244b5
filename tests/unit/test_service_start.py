"""The service's start-up order around plugins, on a fake reactor: the listeners open
once every plugin's ``start()`` has finished, a stop meanwhile gives up on it quietly,
and a failure to listen after the wait stops the process instead of leaving it deaf."""

from __future__ import annotations

import errno
import socket

from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock

from barricade import plugin
from barricade.api import Plugin
from barricade.options import REGISTRY
from barricade.policy.pipeline import Pipeline
from barricade.service import BarricadeService, build_context


class Starting(Plugin):
    """A plugin whose start() ends when the test says."""

    name = "starting"

    def __init__(self, config, services=None):
        super().__init__(config, services)
        self.started: defer.Deferred = defer.Deferred()

    async def start(self) -> None:
        await self.started


class Port:
    """What the service and the factory use of an adopted port."""

    numberAccepts = 100

    def doRead(self) -> None:  # noqa: N802 - Twisted's name
        pass

    def stopListening(self) -> None:  # noqa: N802 - Twisted's name
        pass


def service(tmp_path, monkeypatch) -> tuple[BarricadeService, MemoryReactorClock, Starting]:
    routes = tmp_path / "route-map"
    routes.write_text("route:local FORWARD: 127.0.0.1:26\n")
    plugin.prepare([])
    config = REGISTRY.parse([f"route-map={routes}", "interface-name=mx.test", "metrics-interface=",
                             "check-timeout=5", "dns-servers=127.0.0.1:9"])
    reactor = MemoryReactorClock()
    reactor.adopted = []
    reactor.adoptStreamPort = lambda fileno, family, factory: reactor.adopted.append(fileno) or Port()
    ctx = build_context(config, reactor=reactor)
    starting = Starting(config)
    ctx.pipeline = Pipeline([starting], reactor, 5, ctx.metrics)
    ctx.capabilities = None
    monkeypatch.setattr("barricade.service.freeze_startup", lambda: None)  # not this process's
    svc = BarricadeService(ctx)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    svc.sockets = [sock]
    return svc, reactor, starting


def messages(events: list[dict]) -> str:
    return "\n".join(str(e.get("log_format", "")).format(**{k: v for k, v in e.items()
                                                             if isinstance(k, str)}) for e in events)


def test_the_listeners_open_when_the_plugin_has_started(tmp_path, monkeypatch):
    svc, reactor, starting = service(tmp_path, monkeypatch)
    svc.startService()
    assert reactor.adopted == [] and svc.ports == []
    starting.started.callback(None)
    assert len(reactor.adopted) == 1 and len(svc.ports) == 1 and svc.sockets == []
    svc.stopService()


def test_a_stop_while_a_plugin_starts_closes_the_sockets_and_says_nothing_later(
        tmp_path, monkeypatch, logged):
    svc, reactor, starting = service(tmp_path, monkeypatch)
    sock = svc.sockets[0]
    svc.startService()
    svc.stopService()
    assert sock.fileno() == -1 and svc.sockets == []
    reactor.advance(10)  # past check-timeout: its timer went with the stop
    starting.started.callback(None)
    assert reactor.adopted == []
    assert "has not started" not in messages(logged)


def test_failing_to_listen_after_the_wait_stops_the_process(tmp_path, monkeypatch, logged):
    svc, reactor, starting = service(tmp_path, monkeypatch)

    def no_descriptors(*_args):
        raise OSError(errno.EMFILE, "Too many open files")

    reactor.adoptStreamPort = no_descriptors
    svc.startService()
    starting.started.callback(None)
    assert reactor.hasStopped
    assert "cannot listen; stopping" in messages(logged)
    svc.sockets[0].close()
