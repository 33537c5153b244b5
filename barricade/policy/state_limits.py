"""Connect-time limits kept in the shared store: ``Rate-Connect:`` and
``Concurrent-Connect:`` (smtpf.md §2.I and §4).

The limit is the access-map value for the client: the IP and its prefixes,
``[ip]``, the PTR name's domains, then the bare tag (``concurrent-connect:``
is smtpf's site-wide per-IP limit); 0 or no entry disables it, localhost is
exempt.  Counts are per client IP and live in the :class:`~barricade.state.Store`,
so with ``redis-url`` they hold across workers and gateways.

* ``Rate-Connect:`` counts every connection in smtpf's sliding 60 s window
  (10 buckets of 6 s, the current connection included); a count above the
  limit gets ``421 4.4.5`` #522 and the connection is closed.
* ``Concurrent-Connect:`` takes a lease with a TTL of twice
  ``smtp-command-timeout``, refreshed every third of the TTL while the
  session lives and released by the ``close`` hook when it ends; a killed
  worker's leases expire by themselves.  Over the limit: ``421 4.7.1`` #329.

When the store fails, ``state-failure`` decides: ``tempfail`` answers #549
(421, the connection closes) and ``skip`` lets the client in; both log a
line and count ``barricade_state_failures_total``.  Like smtpf these run
before the access map's ``Connect:``, and for everybody (``always``): a
white list does not lift a flood limit.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from barricade.aio import aio
from barricade.maps import KeyValueMap, client_keys
from barricade.options import Config
from barricade.policy.pipeline import Check, Context
from barricade.policy.verdict import CONTINUE, Verdict, drop
from barricade.state import Store, StoreError

log = Logger()

#: Where a session keeps its lease (``session.`` notes survive RSET/MAIL).
LEASE_NOTE = "session.concurrent-connect.lease"
#: Set by the close hook: a lease granted after the session ended goes straight back.
CLOSED_NOTE = "session.concurrent-connect.closed"


def client_key(ctx: Context) -> str:
    """The store key of a client: its IP (smtpf counts per address)."""
    return f"connect:{ctx.client.ip}"


class StoreCheck(Check):
    """A connect-phase limit read from the access map and counted in the store."""

    tag = ""
    always = True  # runs before Connect: as in smtpf; a white list does not lift it

    def __init__(self, config: Config, access_map: KeyValueMap, store: Store, metrics=None):
        self.map = access_map
        self.store = store
        self.metrics = metrics
        self.policy = config["state-failure"]

    def limit(self, ctx: Context) -> int:
        """The client's limit (0: none); a value that is not a number is logged and ignored."""
        name = ctx.client.name if ctx.client.name not in ("", "unknown") else None
        hit = self.map.first(client_keys(self.tag, ctx.client.ip, name))
        if hit is None:
            return 0
        key, value = hit
        try:
            return max(0, int(value.split()[0]))
        except (ValueError, IndexError):
            log.warn("access map {key}: {value!r} is not a number; {tag} ignored",
                     key=key, value=value, tag=self.tag)
            return 0

    def hit(self) -> None:
        if self.metrics is not None:
            self.metrics.limit_hits.labels(self.name).inc()

    def failed(self, ctx: Context, exc: StoreError) -> Verdict:
        """Apply ``state-failure`` to a store failure."""
        log.error("session {sid}: {check}: store failed, {policy}: {err}", sid=ctx.session_id,
                  check=self.name, policy=self.policy, err=str(exc))
        if self.metrics is not None:
            self.metrics.state_failures.labels(self.name, self.policy).inc()
        if self.policy == "skip":
            return CONTINUE
        return drop(549)


class RateConnect(StoreCheck):
    """``Rate-Connect:``: connections per 60 s from one IP (#522)."""

    name = "rate-connect"
    tag = "rate-connect"

    async def connect(self, ctx: Context) -> Verdict:
        if ctx.client.localhost:
            return CONTINUE
        limit = self.limit(ctx)
        if limit <= 0:
            return CONTINUE
        try:
            count = await aio(self.store.rate(client_key(ctx)))
        except StoreError as exc:
            return self.failed(ctx, exc)
        if count > limit:
            log.info("session {sid}: {ip} connections {n} exceed {limit}/60s", sid=ctx.session_id,
                     ip=ctx.client.ip, n=count, limit=limit)
            self.hit()
            return drop(522, count=count, limit=limit)
        return CONTINUE


@dataclass
class Lease:
    """A session's concurrency lease and the timer that keeps it alive."""

    key: str
    lease: str
    keeper: task.LoopingCall


class ConcurrentConnect(StoreCheck):
    """``Concurrent-Connect:``: simultaneous sessions from one IP (#329)."""

    name = "concurrent-connect"
    tag = "concurrent-connect"

    def __init__(self, config: Config, access_map: KeyValueMap, store: Store, metrics=None,
                 reactor=None):
        super().__init__(config, access_map, store, metrics)
        self.reactor = reactor
        self.ttl = 2.0 * config["smtp-command-timeout"]

    async def connect(self, ctx: Context) -> Verdict:
        await self._release(ctx)  # XCLIENT restarts the session as another client
        if ctx.client.localhost:
            return CONTINUE
        limit = self.limit(ctx)
        if limit <= 0:
            return CONTINUE
        key = client_key(ctx)
        try:
            lease = await aio(self.store.acquire(key, limit=limit, ttl=self.ttl))
        except StoreError as exc:
            return self.failed(ctx, exc)
        if lease is None:
            log.info("session {sid}: {ip} too many concurrent connections, max={limit}",
                     sid=ctx.session_id, ip=ctx.client.ip, limit=limit)
            self.hit()
            return drop(329, limit=limit)
        ctx.notes[LEASE_NOTE] = self._keep(ctx, key, lease)
        if ctx.notes.get(CLOSED_NOTE):  # the client left while we waited for the store
            await self._release(ctx)
        return CONTINUE

    async def close(self, ctx: Context) -> None:
        ctx.notes[CLOSED_NOTE] = True
        await self._release(ctx)

    def _keep(self, ctx: Context, key: str, lease: str) -> Lease:
        """Refresh the lease every TTL/3 so a long session keeps its slot."""
        keeper = task.LoopingCall(self._refresh, ctx.session_id, key, lease)
        if self.reactor is not None:
            keeper.clock = self.reactor
        keeper.start(self.ttl / 3, now=False)
        return Lease(key, lease, keeper)

    def _refresh(self, sid: str, key: str, lease: str) -> Deferred:
        def done(alive: bool) -> None:
            if not alive:  # e.g. Redis restarted empty: the session is no longer counted
                log.warn("session {sid}: concurrency lease on {key} had expired", sid=sid, key=key)

        def failed(failure) -> None:  # a LoopingCall stops on an error; the next tick retries
            log.error("session {sid}: concurrency lease refresh failed: {err}", sid=sid,
                      err=failure.getErrorMessage())

        d = aio(self.store.refresh(key, lease, ttl=self.ttl))
        return d.addCallbacks(done, failed)

    async def _release(self, ctx: Context) -> None:
        held: Lease | None = ctx.notes.pop(LEASE_NOTE, None)
        if held is None:
            return
        if held.keeper.running:
            held.keeper.stop()
        try:
            await aio(self.store.release(held.key, held.lease))
        except StoreError as exc:  # the lease expires by itself
            log.warn("session {sid}: releasing the concurrency lease failed: {err}",
                     sid=ctx.session_id, err=str(exc))


def store_checks(config: Config, access_map: KeyValueMap | None, store: Store | None,
                 metrics=None, reactor=None) -> list[Check]:
    """Rate, then concurrency (smtpf's connect table); none without a map or a store."""
    if access_map is None or store is None:
        return []
    return [RateConnect(config, access_map, store, metrics),
            ConcurrentConnect(config, access_map, store, metrics, reactor)]
