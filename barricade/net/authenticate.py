"""SMTP AUTH for one client session: the Twisted side of it.

The protocol session collects the credentials (``barricade.protocol.auth``);
here they go, as AUTH PLAIN, over a new connection to the downstream that
``barricade.decide.auth`` names.  When it says 235 that connection becomes
the session's only relay connection (it is never parked for another
session, and no other connection carries this session's mail); failures
are counted per client address in the shared store.  Nothing here logs or
counts a password or the encoded credentials.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from twisted.logger import Logger

from barricade.aio import aio
from barricade.decide import auth as policy
from barricade.decide.outcome import Outcome
from barricade.net.forward import Downstream, DownstreamError
from barricade.policy.verdict import Verdict
from barricade.protocol import events as ev
from barricade.state import StoreError

if TYPE_CHECKING:
    from barricade.net.conductor import Proxy

log = Logger()

#: The phases auth-delay-checks postpones until MAIL.
DELAYED_PHASES = ("connect", "helo")


class Authenticator:
    """One session's AUTH state: the authenticated connection and the checks it postpones."""

    def __init__(self, proxy: Proxy):
        # A weak reference: the proxy owns this object, and every method here runs
        # awaited by one of the proxy's, which holds it.  A strong one would make a
        # cycle that only the garbage collector could free at the session's end.
        self.proxy = weakref.proxy(proxy)
        cfg = proxy.cfg
        self.enabled = cfg["smtp-auth-enable"]
        self.delay_checks = self.enabled and cfg["auth-delay-checks"]
        self.limit = cfg["smtp-auth-max-failures"]
        self.window = float(cfg["smtp-auth-failure-window"])
        self.down: Downstream | None = None  # the authenticated relay connection
        self.user = ""
        self._postponed: list[str] = []
        self._refusal: Outcome | None = None  # what the postponed checks said

    # --- auth-delay-checks ------------------------------------------------------------

    async def run(self, phase: str) -> Verdict:
        """The phase's checks, or (auth-delay-checks) only those no white list lifts now
        (Tls-Connect: is a protocol rule, for an authenticated client too) and the
        rest at MAIL."""
        if self.delay_checks and phase in DELAYED_PHASES:
            if phase not in self._postponed:
                self._postponed.append(phase)
            return await self.proxy.run_always(phase)
        return await self.proxy.run(phase)

    async def postponed(self) -> Outcome | None:
        """At MAIL: the postponed checks of a client that did not authenticate; a refusal or None.

        They run once; a refusal then answers every MAIL of the session (as
        it would have refused the session), unless the client authenticates.
        """
        if self.user:
            return None
        phases, self._postponed = self._postponed, []
        proxy = self.proxy
        for phase in phases:
            if self._refusal is not None:
                break
            self._refusal = proxy.rules.refusal(proxy.ctx, phase, await proxy.run(phase))
        return self._refusal

    # --- AUTH -------------------------------------------------------------------------

    async def authenticate(self, event: ev.Auth) -> Outcome:
        proxy = self.proxy
        user = event.credentials.authcid
        if policy.over_limit(await self._failures(0), self.limit):
            return self._done(policy.BLOCKED, user, "refused before asking the downstream")
        route = policy.auth_route(proxy.server.routes, user)
        try:
            down = await proxy._connect(route)
        except DownstreamError as exc:
            proxy.downstream_error(exc)
            return self._done(policy.TEMPFAIL, user, f"downstream unavailable ({exc.kind})")
        try:
            reply = await down.authenticate(event.credentials.plain())
        except DownstreamError as exc:
            proxy.downstream_error(exc)
            down.abort()
            return self._done(policy.TEMPFAIL, user, f"{down.host}: {exc.kind}")
        if proxy.ended:  # the client left meanwhile: nobody would use or close this connection
            down.abort()
            return self._done(policy.TEMPFAIL, user, "the client left")
        if reply is None:
            proxy._release(route.name, down)
            return self._done(policy.TEMPFAIL, user, f"{down.host} does not offer AUTH PLAIN")
        result = policy.outcome(reply.code, reply.status)
        why = f"{down.host} said {reply.code} {reply.status}".rstrip()
        if result == policy.TEMPFAIL and reply.code >= 500:
            log.error("session {sid}: AUTH: {why}, which is no verdict on the credentials: the "
                      "downstream refuses Barricade's AUTH PLAIN (TLS, mechanisms?); the client "
                      "is told to try later", sid=proxy.ctx.session_id, why=why)
        if result != policy.PASS:
            proxy._release(route.name, down)  # never kept: AUTH was sent on it
            if result == policy.FAIL and policy.over_limit(await self._failures(1), self.limit):
                result = policy.BLOCKED
            return self._done(result, user, why)
        # Connections opened before AUTH are not authenticated: none may carry this
        # session's mail; they go back to the pool (or QUIT) untouched.
        for name, old in list(proxy.pool.items()):
            proxy._release(name, old)
        proxy.pool = {route.name: down}
        self.down = down
        self.grant(user, route)
        return self._done(policy.PASS, user, why)

    def grant(self, user: str, route) -> None:
        """The session is ``user``'s from now on: its mail goes to ``route``, and it gets
        what authenticated sessions get (relaying, exemptions, smtp-auth-white)."""
        proxy = self.proxy
        ctx = proxy.ctx
        proxy.rules.auth_route = route
        self.user = user
        self._postponed = []
        ctx.auth = user
        ctx.client = policy.authenticated_client(ctx.client)
        if proxy.cfg["smtp-auth-white"]:
            ctx.white_session = True

    def _done(self, result: str, user: str, why: str) -> Outcome:
        proxy = self.proxy
        proxy.server.metrics.auth.labels(result).inc()
        sid, ip = proxy.ctx.session_id, proxy.ctx.client.ip
        if result == policy.PASS:
            log.info("session {sid}: AUTH as {user} from [{ip}]: pass ({why})", sid=sid, user=user, ip=ip, why=why)
        else:
            log.warn("session {sid}: AUTH as {user} from [{ip}]: {result} ({why})", sid=sid, user=user,
                     ip=ip, result=result, why=why)
        return Outcome(proxy.reply(policy.REPLIES[result]), drop=result == policy.BLOCKED)

    async def _failures(self, increment: int) -> int:
        """Count a failure (or just read, ``increment=0``); 0 when there is no guard or no store.

        A window that starts at the first failure and is kept (TTL'd) in the
        shared store: the same atomic counter as Msg-Limit's.  If the store
        cannot answer the guard is skipped: the downstream still checks the password.
        """
        store = self.proxy.server.store
        if not self.limit or store is None:
            return 0
        try:
            return await aio(store.msg_limit(policy.failure_key(self.proxy.ctx.client.ip),
                                             period=self.window, increment=increment))
        except StoreError as exc:
            self.proxy.server.metrics.state_failures.labels("auth", "skip").inc()
            log.warn("session {sid}: AUTH failure count unavailable ({err}); guard skipped",
                     sid=self.proxy.ctx.session_id, err=str(exc))
            return 0

    async def rset(self) -> None:
        """smtpf relays RSET to the authenticated connection even outside a transaction."""
        down = self.down
        if down is not None and down.alive and not down.in_transaction:
            try:
                await down.command("rset", "RSET")
            except DownstreamError as exc:
                self.proxy.downstream_error(exc)
