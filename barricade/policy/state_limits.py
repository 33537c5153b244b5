"""Connect-time limits kept in the shared store: ``Rate-Connect:`` and
``Concurrent-Connect:`` (README, "Limits").

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
  session lives and released by the ``close`` hook when it ends (the hook
  sends the release and does not wait for it); a killed
  worker's leases expire by themselves.  Over the limit: ``421 4.7.1`` #329.

When the client has both limits, ``Rate-Connect:`` makes one store call for
both (:meth:`Store.connect`: the count, then the lease unless the count is
over the rate limit, atomically) and leaves the lease for
``Concurrent-Connect:``, which comes next: one round trip instead of two.

Either refusal waits ``rate-421-delay``/``concurrent-421-delay`` seconds
first (a timer: other sessions go on), then drops the connection, or with
``-rate-drop``/``-concurrent-drop`` leaves it in smtpf's sink state
(:data:`~barricade.protocol.session.SINK`) until the client quits.

When the store fails, ``state-failure`` decides, per family of checks
(:func:`failure_policy`): ``tempfail`` answers #944 (421, the connection
closes) here and #945 (451) in later phases, both naming the family whose
store failed, ``skip`` lets the client
through; both log a line and count ``barricade_state_failures_total``.
Like smtpf these run before the access map's ``Connect:``, and for
everybody (``always``): a white list does not lift a flood limit.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Coroutine, Iterable
from typing import Any, NamedTuple, TypeVar

from twisted.internet import task
from twisted.logger import Logger

from barricade.aio import aio
from barricade.maps import KeyValueMap
from barricade.options import Config, OptionError
from barricade.policy.pipeline import Check, Context, immediate
from barricade.policy.verdict import CONTINUE, Action, Flag, Verdict, drop, tempfail
from barricade.replies import ReplyId
from barricade.state import Store, StoreError

log = Logger()

T = TypeVar("T")

# --- state-failure: temp-fail or skip, per family of checks ------------------------------

#: The families of store-backed checks ``state-failure`` names (Length- needs no store).
FAILURE_FAMILIES = ("grey", "rate", "concurrent", "msg-limit", "null-rate", "dupmsg")
FAILURE_POLICIES = ("tempfail", "skip")


def parse_failure_policy(value: str | Iterable[str]) -> dict[str, str]:
    """``state-failure`` as ``{family: policy}`` for every family.

    Items are ``policy`` (the default for the families not named; the last
    one wins) or ``family:policy``, separated by commas, semicolons or
    spaces: ``tempfail`` alone keeps its old meaning, all families.
    Raises :class:`OptionError` naming the option.
    """
    items = re.split(r"[,;\s]+", value) if isinstance(value, str) else list(value)
    # dupmsg only saves a duplicate: it skips unless named, whatever the default.
    default, chosen = "tempfail", {"dupmsg": "skip"}
    for item in (i.strip().lower() for i in items):
        if not item:
            continue
        family, _, policy = item.rpartition(":")
        if policy not in FAILURE_POLICIES:
            raise OptionError(f"option state-failure: {item!r}: the policy must be tempfail or skip")
        if family and family not in FAILURE_FAMILIES:
            raise OptionError(f"option state-failure: {item!r}: unknown family {family!r} "
                              f"(known: {', '.join(FAILURE_FAMILIES)})")
        if family:
            chosen[family] = policy
        else:
            default = policy
    return {family: chosen.get(family, default) for family in FAILURE_FAMILIES}


def failure_policy(config: Config, family: str) -> str:
    """``tempfail`` or ``skip``: what a check of ``family`` does when the store fails."""
    if family not in FAILURE_FAMILIES:
        raise ValueError(f"state-failure has no family {family!r}")
    return parse_failure_policy(config["state-failure"])[family]

#: Where a session keeps its lease (``session.`` notes survive RSET/MAIL).
LEASE_NOTE = "session.concurrent-connect.lease"
#: Set by the close hook: a lease granted after the session ended goes straight back.
CLOSED_NOTE = "session.concurrent-connect.closed"
#: Rate-Connect's answer for Concurrent-Connect: (key, limit, lease or None), see store_checks.
TAKEN_NOTE = "session.concurrent-connect.taken"


def client_key(ctx: Context) -> str:
    """The store key of a client: its IP (smtpf counts per address)."""
    return f"connect:{ctx.client.ip}"


class StoreCheck(Check):
    """A limit read from the access map and counted in the store.

    Subclasses name their ``state-failure`` ``family``; ``failure_reply``
    and ``failure_drops`` say how ``tempfail`` answers in their phase
    (421 and close at connect, 451 later).
    """

    tag = ""
    family = ""  # the state-failure family; "" for a check that keeps nothing in the store
    always = True  # runs before Connect: as in smtpf; a white list does not lift it
    failure_reply = ReplyId.STATE_UNAVAILABLE_CLOSE
    failure_drops = True

    def __init__(self, config: Config, access_map: KeyValueMap | None, store: Store, metrics=None):
        self.map = access_map
        self.store = store
        self.metrics = metrics
        self.policy = failure_policy(config, self.family) if self.family else "tempfail"

    def stored(self, operation: Coroutine[Any, Any, T]) -> Awaitable[T]:
        """A store operation for a hook to await.

        On an ``immediate`` store it is the operation itself: a hook runs
        under the pipeline's driver, which resumes it straight from the
        future of a Redis reply (:mod:`barricade.drive`), where :func:`aio`
        would put a Deferred and a driver of its own between them on every
        wait.  So an immediate store's operations must await nothing but
        asyncio futures (:attr:`Store.immediate` says so); anything else
        would reach the driver's general way, which cannot carry asyncio
        code on.  Any other store's operation runs in a task, through aio.
        """
        return operation if self.store.immediate else aio(operation)

    def client_value(self, ctx: Context, tag: str | None = None) -> tuple[str, str] | None:
        """The access-map entry for the client: IP, ``[ip]``, PTR domains, bare tag."""
        return self.map.client_entry(tag or self.tag, ctx.client)

    def mail_value(self, tag: str, address: str) -> tuple[str, str] | None:
        """The access-map entry for a mail address: address, domains, ``local@``, bare tag."""
        return self.map.mail_entry(tag, address, getattr(self.map, "literal_plus", True))

    def number(self, hit: tuple[str, str] | None) -> int | None:
        """The entry's value as a whole number; None without an entry or when
        the value is not a number (that is logged and the entry ignored)."""
        if hit is None:
            return None
        key, value = hit
        try:
            return int(value.split()[0])
        except (ValueError, IndexError):
            self.bad_value(key, value)
            return None

    def limit(self, ctx: Context) -> int:
        """The client's limit (0: none); a value that is not a number is logged and ignored."""
        return max(0, self.number(self.client_value(ctx)) or 0)

    def bad_value(self, key: str, value: str) -> None:
        """Ignored here: the access map reported the line once when it loaded
        (:mod:`barricade.policy.map_values`), not at every session."""

    def hit(self) -> None:
        if self.metrics is not None:
            self.metrics.count(self.metrics.limit_hits, self.name)

    def failed(self, ctx: Context, exc: StoreError) -> Verdict:
        """Apply ``state-failure`` (this check's family) to a store failure."""
        log.error("session {sid}: {check}: store failed, {policy}: {err}", sid=ctx.session_id,
                  check=self.name, policy=self.policy, err=str(exc))
        if self.metrics is not None:
            self.metrics.state_failures.labels(self.name, self.policy).inc()
        if self.policy == "skip":
            return CONTINUE
        named = self.failure_reply in (ReplyId.STATE_UNAVAILABLE_CLOSE, ReplyId.STATE_UNAVAILABLE)
        fields = {"check": self.family} if named else {}
        if self.failure_drops:
            return drop(self.failure_reply, **fields)
        return tempfail(self.failure_reply, **fields)


class Refusal:
    """How a connect limit refuses: wait ``*-421-delay``, then 421 and drop, or sink.

    The wait is a reactor timer, so other sessions go on; it is capped below
    ``smtp-command-timeout`` (the client's patience for our greeting), and
    the check's own timeout is extended by it so it never reads as a hung
    check.  A client that leaves meanwhile gets nothing (the session is gone).
    """

    def __init__(self, config: Config, drop_option: str, delay_option: str, reactor=None):
        self.drop = config[drop_option]
        self.delay = float(min(config[delay_option], max(0, config["smtp-command-timeout"] - 1)))
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor

    async def __call__(self, reply_id: int, **fields: object) -> Verdict:
        if self.delay > 0:
            await task.deferLater(self.reactor, self.delay)
        if self.drop:
            return drop(reply_id, **fields)
        return Verdict(Action.TEMPFAIL, reply_id, fields, Flag.SINK)


class RateConnect(StoreCheck):
    """``Rate-Connect:``: connections per 60 s from one IP (#522)."""

    name = "rate-connect"
    tag = "rate-connect"
    family = "rate"
    exempt_client = staticmethod(lambda client: client.localhost)  # connect() counts nothing for them

    def __init__(self, config: Config, access_map: KeyValueMap, store: Store, metrics=None,
                 reactor=None):
        super().__init__(config, access_map, store, metrics)
        self.refuse = Refusal(config, "rate-drop", "rate-421-delay", reactor)
        self.timeout = config["check-timeout"] + self.refuse.delay
        #: The Concurrent-Connect check that runs next, whose lease this one takes
        #: with the count (:func:`store_checks`); None: count only.
        self.concurrent: ConcurrentConnect | None = None

    async def connect(self, ctx: Context) -> Verdict:
        if ctx.client.localhost:
            return CONTINUE
        limit = self.limit(ctx)
        if limit <= 0:
            return CONTINUE
        key = client_key(ctx)
        concurrent = self.concurrent
        # A lease still held (XCLIENT) is given back first by Concurrent-Connect: count only.
        conc_limit = concurrent.limit(ctx) if concurrent is not None and LEASE_NOTE not in ctx.notes else 0
        try:
            if conc_limit > 0:
                count, lease = await self.stored(
                    self.store.connect(key, rate_limit=limit, limit=conc_limit, ttl=concurrent.ttl))
                if count <= limit:
                    ctx.notes[TAKEN_NOTE] = (key, conc_limit, lease)
                    if lease is not None and ctx.notes.get(CLOSED_NOTE):  # the client has left
                        concurrent.give_back(ctx.session_id, key, lease)
                        del ctx.notes[TAKEN_NOTE]
            else:
                count = await self.stored(self.store.rate(key))
        except StoreError as exc:
            return self.failed(ctx, exc)
        if count > limit:
            log.info("session {sid}: {ip} connections {n} exceed {limit}/60s", sid=ctx.session_id,
                     ip=ctx.client.ip, n=count, limit=limit)
            self.hit()
            return await self.refuse(ReplyId.CONNECT_RATE_EXCEEDED, count=count, limit=limit)
        return CONTINUE


class Lease(NamedTuple):
    """A session's concurrency lease: the store key it counts under, and its id.

    (A named tuple, made by one call; a frozen dataclass sets each field
    through ``object.__setattr__``, and every session with a limit takes one.)
    """

    key: str
    lease: str


class LeaseKeeper:
    """Refreshes every lease a worker holds, on one timer for all of them.

    A lease expires ``ttl`` seconds after its last refresh, so that a killed
    worker's sessions stop counting by themselves, and a live session's lease
    is refreshed once ``ttl / 3`` has passed since it was taken or last
    refreshed.  One timer per session would be set and cancelled for every
    connection, though nearly all sessions end long before their first
    refresh is due; so one timer ticks every ``ttl / 12`` and refreshes the
    leases that are due then, oldest first (each within ``5 * ttl / 12``):
    the refreshes of many long sessions are spread over the ticks, not sent
    in one burst.  The timer stops at a tick that finds nothing held and
    starts again with the next lease.
    """

    def __init__(self, store: Store, ttl: float, reactor=None):
        self.store = store
        self.ttl = ttl
        #: lease id -> (session id, store key, when taken or last refreshed), oldest first
        self.held: dict[str, tuple[str, str, float]] = {}
        self._ticker = task.LoopingCall(self._tick)
        if reactor is not None:
            self._ticker.clock = reactor
        self._clock = self._ticker.clock

    @property
    def running(self) -> bool:
        return self._ticker.running

    def keep(self, sid: str, held: Lease) -> None:
        self.held[held.lease] = (sid, held.key, self._clock.seconds())
        if not self._ticker.running:
            self._ticker.start(self.ttl / 12, now=False)

    def drop(self, held: Lease) -> None:
        self.held.pop(held.lease, None)

    def _tick(self) -> None:
        if not self.held:
            self._ticker.stop()
            return
        now = self._clock.seconds()
        due_before = now - self.ttl / 3
        due = []
        for lease, (sid, key, since) in self.held.items():
            if since > due_before:
                break  # the rest were taken or refreshed later
            due.append((lease, sid, key))
        for lease, sid, key in due:
            del self.held[lease]
            self.held[lease] = (sid, key, now)  # to the end: the newest
            self._refresh(sid, key, lease)

    def _refresh(self, sid: str, key: str, lease: str) -> None:
        def done(alive: bool) -> None:
            if not alive:  # e.g. Redis restarted empty: the session is no longer counted
                log.warn("session {sid}: concurrency lease on {key} had expired", sid=sid, key=key)

        def failed(failure) -> None:  # tried again when it is next due, a third of the TTL on
            log.error("session {sid}: concurrency lease refresh failed: {err}", sid=sid,
                      err=failure.getErrorMessage())

        aio(self.store.refresh(key, lease, ttl=self.ttl), immediate=self.store.immediate
            ).addCallbacks(done, failed)


class ConcurrentConnect(StoreCheck):
    """``Concurrent-Connect:``: simultaneous sessions from one IP (#329)."""

    name = "concurrent-connect"
    tag = "concurrent-connect"
    family = "concurrent"

    def __init__(self, config: Config, access_map: KeyValueMap, store: Store, metrics=None,
                 reactor=None):
        super().__init__(config, access_map, store, metrics)
        self.ttl = 2.0 * config["smtp-command-timeout"]
        self.keeper = LeaseKeeper(store, self.ttl, reactor)
        self.refuse = Refusal(config, "concurrent-drop", "concurrent-421-delay", reactor)
        self.timeout = config["check-timeout"] + self.refuse.delay

    async def connect(self, ctx: Context) -> Verdict:
        if LEASE_NOTE in ctx.notes:  # XCLIENT restarts the session as another client
            await self._release(ctx)
        if ctx.client.localhost:
            return CONTINUE
        taken = ctx.notes.pop(TAKEN_NOTE, None)
        key = client_key(ctx)
        if taken is not None and taken[0] == key:  # Rate-Connect asked the store for us
            _, limit, lease = taken
        else:
            limit = self.limit(ctx)
            if limit <= 0:
                return CONTINUE
            try:
                lease = await self.stored(self.store.acquire(key, limit=limit, ttl=self.ttl))
            except StoreError as exc:
                return self.failed(ctx, exc)
        if lease is None:
            log.info("session {sid}: {ip} too many concurrent connections, max={limit}",
                     sid=ctx.session_id, ip=ctx.client.ip, limit=limit)
            self.hit()
            return await self.refuse(ReplyId.TOO_MANY_CONCURRENT, limit=limit)
        held = ctx.notes[LEASE_NOTE] = Lease(key, lease)
        self.keeper.keep(ctx.session_id, held)
        if ctx.notes.get(CLOSED_NOTE):  # the client left while we waited for the store
            await self._release(ctx)
        return CONTINUE

    @immediate
    def close(self, ctx: Context) -> None:
        """Give the lease back without waiting for the store: nothing the client
        gets depends on it, and a failure is logged (the lease then expires)."""
        ctx.notes[CLOSED_NOTE] = True
        taken = ctx.notes.pop(TAKEN_NOTE, None)
        if taken is not None and taken[2] is not None:  # taken for a connect phase that never came
            self.give_back(ctx.session_id, taken[0], taken[2])
        held: Lease | None = ctx.notes.pop(LEASE_NOTE, None)
        if held is not None:
            self.keeper.drop(held)
            self.give_back(ctx.session_id, held.key, held.lease)

    def give_back(self, sid: str, key: str, lease: str) -> None:
        """Release a lease, not waited for; a failure is logged (the lease then expires)."""
        def released(error: StoreError | None) -> None:
            if error is not None:
                log.warn("session {sid}: releasing the concurrency lease failed: {err}",
                         sid=sid, err=str(error))

        self.store.release_nowait(key, lease, released)

    async def _release(self, ctx: Context) -> None:
        held: Lease | None = ctx.notes.pop(LEASE_NOTE, None)
        if held is None:
            return
        self.keeper.drop(held)
        try:
            await self.stored(self.store.release(held.key, held.lease))
        except StoreError as exc:  # the lease expires by itself
            log.warn("session {sid}: releasing the concurrency lease failed: {err}",
                     sid=ctx.session_id, err=str(exc))


def store_checks(config: Config, access_map: KeyValueMap | None, store: Store | None,
                 metrics=None, reactor=None) -> list[Check]:
    """Rate, then concurrency (smtpf's connect table); none without a map or a store."""
    if access_map is None or store is None:
        return []
    rate = RateConnect(config, access_map, store, metrics, reactor)
    rate.concurrent = ConcurrentConnect(config, access_map, store, metrics, reactor)
    return [rate, rate.concurrent]
