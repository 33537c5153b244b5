"""Keeps the downstream capability cache filled: EHLO probes under Twisted.

A probe is a relay connection that stops after EHLO (greeting, EHLO or
HELO, QUIT).  Routes are probed at start-up and whenever their entry is
older than ``forward-capabilities-ttl``; EHLOs during a route's very
first probe wait for it a few seconds rather than advertise nothing (later
probes are never waited for).
The decisions (what is due, what to offer) are in
:mod:`barricade.protocol.capabilities`.
"""

from __future__ import annotations

from collections.abc import Mapping

from twisted.internet import defer
from twisted.logger import Logger

from barricade.maps import RouteMap
from barricade.net.forward import Downstream, DownstreamError, Timeouts
from barricade.protocol.capabilities import CapabilityCache, Key, Offer

log = Logger()

FIRST_WAIT = 5.0  # seconds an EHLO waits for a first probe before offering without it


class CapabilityProbe:
    """One per process: the cache, and the probes that keep it current."""

    def __init__(self, reactor, routes: RouteMap, hostname: str, timeouts: Timeouts, ttl: float,
                 first_wait: float = FIRST_WAIT):
        self.reactor = reactor
        self.routes = routes
        self.hostname = hostname
        self.timeouts = timeouts
        self.cache = CapabilityCache(ttl, retry=min(ttl, 60.0))
        self.first_wait = first_wait
        self._waiters: dict[Key, list[defer.Deferred]] = {}
        self._settled: set[Key] = set()  # keys whose first probe is over: nobody waits for them again

    def learn(self, key: Key, keywords: Mapping[str, str]) -> None:
        """A relay connection's EHLO reply: as good as a probe."""
        self.cache.learn(key, keywords, self.reactor.seconds())
        self._settled.add(key)

    def start(self) -> None:
        """Probe every route now (at start-up); nothing waits for the answers."""
        for key in self.routes.forwards():
            self._probe(key)

    async def offer(self, size_limit: int, eightbitmime: int) -> Offer:
        """What a client may be offered now; starts the probes that are due."""
        now = self.reactor.seconds()
        keys = self.routes.forwards()
        for key in keys:
            if self.cache.due(key, now):
                self._probe(key)
        unknown = [key for key in keys if key in self._waiters and key not in self._settled]
        if unknown:
            await self._wait(unknown)
        return self.cache.offer(keys, self.routes.local.forward, size_limit, eightbitmime)

    def _probe(self, key: Key) -> None:
        if key in self._waiters:
            return
        self._waiters[key] = []
        self.cache.start(key, self.reactor.seconds())
        defer.ensureDeferred(self._run(key)).addErrback(
            lambda f: log.failure("capability probe of {key}", f, key=key))

    async def _run(self, key: Key) -> None:
        name = ",".join(f"{h}:{p}" for h, p in key)
        try:
            down = await Downstream.open(self.reactor, key, self.hostname, self.timeouts)
        except DownstreamError as exc:
            self.cache.failed(key, self.reactor.seconds())
            log.warn("capability probe: no downstream answered for {name}: {err}", name=name,
                     err=str(exc))
        else:
            caps = self.cache.learn(key, down.keywords, self.reactor.seconds())
            log.info("capability probe: {name} offers size={size} 8bitmime={eight} dsn={dsn} "
                     "xclient={xc} xforward={xf}", name=name, size=caps.size,
                     eight=caps.eightbitmime, dsn=caps.dsn, xc=" ".join(sorted(caps.xclient)) or "-",
                     xf=" ".join(sorted(caps.xforward)) or "-")
            defer.ensureDeferred(down.quit())
        finally:
            self._settled.add(key)
            for waiter in self._waiters.pop(key, []):
                if not waiter.called:
                    waiter.callback(None)

    async def _wait(self, keys: list[Key]) -> None:
        """Until the probes of ``keys`` end, or ``first_wait`` seconds."""
        waits = []
        for key in keys:
            d: defer.Deferred = defer.Deferred()
            self._waiters[key].append(d)
            waits.append(d)
        def give_up() -> None:
            self._settled.update(keys)  # a slow first probe: later EHLOs do not wait for it
            for w in waits:
                if not w.called:
                    w.callback(None)

        both = defer.DeferredList(waits)
        timer = self.reactor.callLater(self.first_wait, give_up)
        await both
        if timer.active():
            timer.cancel()
