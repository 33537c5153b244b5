"""Call-ahead: a route-map ``RCPT:`` host is asked whether a recipient exists.

smtpf's route-map call-ahead (README, "Route map"): for a recipient whose route has ``RCPT: host…``, each host in
turn is asked (``HELO``, ``MAIL FROM:<>`` or the real sender with
``+call-ahead-as-sender``, ``RCPT TO``, ``QUIT``) until one answers the RCPT
with 2xx or 5xx.  A 5xx refuses the recipient with ``550 5.7.1 recipient <x>
unknown`` (#292) before anything is forwarded.  Answers are cached in the
shared store as ``rcpt:<addr>`` = ``2`` or ``5`` (accepts for
``cache-accept-ttl``, touched on use; rejects for ``cache-reject-ttl``);
temp-fails are not cached.  An inconclusive call-ahead (every host down,
4xx, a timeout) accepts the recipient and forwards it, as a backup MX
would: the downstream's own RCPT reply still decides.

Why a gateway wants this when it relays RCPT live anyway: the ``RCPT:``
host is usually the mailbox server behind a forward host that accepts
everything (a filter, a queue), and the cache answers repeat dictionary
attacks without touching either.
"""

from __future__ import annotations

import time

from twisted.logger import Logger

from barricade.aio import aio
from barricade.maps import Route
from barricade.net.probe import ProbeError, probe
from barricade.options import Config
from barricade.state import Store, StoreError

log = Logger()

ACCEPT, REJECT = "2", "5"


def cache_key(rcpt: str) -> str:
    return f"rcpt:{rcpt.lower()}"


class CallAhead:
    """Decides, for one recipient of a route with ``RCPT:`` hosts, if it is unknown."""

    def __init__(self, config: Config, store: Store | None, hostname: str, metrics=None):
        self.store = store
        self.hostname = hostname
        self.metrics = metrics
        self.timeout = float(config["call-ahead-command-timeout"])
        self.as_sender = config["call-ahead-as-sender"]
        self.accept_ttl = float(config["cache-accept-ttl"])
        self.reject_ttl = float(config["cache-reject-ttl"])

    async def unknown(self, route: Route, rcpt: str, sender: str, sid: str = "") -> bool:
        """True if a ``RCPT:`` host (or the cache) says the recipient does not exist."""
        cached = await self._cached(rcpt, sid)
        if cached is not None:
            self._count(f"cached-{'reject' if cached == REJECT else 'accept'}")
            if cached == ACCEPT:  # only accepts have their TTL touched (smtpf)
                await self._remember(rcpt, ACCEPT, self.accept_ttl, sid)
            return cached == REJECT
        mail_from = sender if self.as_sender else ""
        for host, port in route.rcpt:
            started = time.monotonic()
            try:
                result = await aio(probe(host, port, helo=self.hostname, sender=mail_from,
                                         rcpts=[rcpt], timeout=self.timeout))
            except ProbeError as exc:
                log.info("session {sid}: call-ahead {host}:{port} for <{rcpt}>: {err}", sid=sid,
                         host=host, port=port, rcpt=rcpt, err=str(exc))
                continue
            finally:
                if self.metrics is not None:
                    self.metrics.call_ahead_seconds.observe(time.monotonic() - started)
            answer = result.rcpts[0] if result.rcpts else None
            if answer is None or not (answer.accepted or answer.rejected):
                what = answer or result.mail
                log.info("session {sid}: call-ahead {host}:{port} for <{rcpt}> inconclusive: "
                         "{code} {text}", sid=sid, host=host, port=port, rcpt=rcpt,
                         code=what.code, text=what.text)
                continue
            log.info("session {sid}: call-ahead {host}:{port} <{rcpt}>: {code} {text}", sid=sid,
                     host=host, port=port, rcpt=rcpt, code=answer.code, text=answer.text)
            if answer.accepted:
                self._count("accept")
                await self._remember(rcpt, ACCEPT, self.accept_ttl, sid)
                return False
            self._count("reject")
            await self._remember(rcpt, REJECT, self.reject_ttl, sid)
            return True
        self._count("inconclusive")
        return False

    async def _cached(self, rcpt: str, sid: str) -> str | None:
        if self.store is None:
            return None
        try:
            value = await aio(self.store.get(cache_key(rcpt)), immediate=self.store.immediate)
        except StoreError as exc:  # a cache, not a limit: ask the host instead
            log.warn("session {sid}: call-ahead cache unavailable: {err}", sid=sid, err=str(exc))
            return None
        return value if value in (ACCEPT, REJECT) else None

    async def _remember(self, rcpt: str, value: str, ttl: float, sid: str) -> None:
        if self.store is None:
            return
        try:
            await aio(self.store.set(cache_key(rcpt), value, ttl=ttl),
                      immediate=self.store.immediate)
        except StoreError as exc:
            log.warn("session {sid}: call-ahead cache unavailable: {err}", sid=sid, err=str(exc))

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.count(self.metrics.call_aheads, result)
