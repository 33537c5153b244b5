"""Operator reports by mail (smtpf's ``send_report``): short notices such as
"message limit exceeded" sent to ``report-to``.

A report is a plain-text message from the null sender (so that it can never
bounce back into a loop), delivered through the route map like any relayed
mail: an address with a domain goes to that domain's route (else
``route:local``), an address without one (``postmaster``) to
``route:local``, and ``postmaster@`` means the postmaster of the domain of
the sender that triggered the report.  Sending happens in the background:
a report that cannot be delivered is logged and never delays or fails the
client's session.
"""

from __future__ import annotations

import socket
import time
from email.utils import formatdate, make_msgid

from twisted.internet import defer
from twisted.logger import Logger

from barricade.maps import Route, RouteMap
from barricade.net.forward import Downstream, DownstreamError, Timeouts
from barricade.options import Config

log = Logger()


class Reporter:
    """Sends reports to ``report-to`` through ``routes``."""

    def __init__(self, config: Config, routes: RouteMap, reactor):
        self.recipients = list(config["report-to"])
        self.routes = routes
        self.reactor = reactor
        self.hostname = config["interface-name"] or socket.getfqdn()
        self.timeouts = Timeouts(connect=config["smtp-connect-timeout"],
                                 command=config["smtp-command-timeout"],
                                 dot=config["smtp-dot-timeout"])

    def addresses(self, sender: str = "") -> list[str]:
        """``report-to`` with ``postmaster@`` made the sender domain's postmaster."""
        out = []
        for item in self.recipients:
            if item.endswith("@"):
                domain = sender.rpartition("@")[2] if "@" in sender else ""
                if not domain:
                    continue  # no sender domain (null sender): nobody to tell
                item = f"{item}{domain}"
            if item not in out:
                out.append(item)
        return out

    def route(self, address: str) -> Route | None:
        if "@" in address:
            return self.routes.for_recipient(address) or self.routes.local
        return self.routes.local

    def message(self, subject: str, text: str, rcpts: list[str]) -> bytes:
        head = [
            f"From: Barricade <MAILER-DAEMON@{self.hostname}>",
            f"To: {', '.join(rcpts)}",
            f"Subject: {subject}",
            f"Date: {formatdate(time.time(), localtime=True)}",
            f"Message-ID: {make_msgid(domain=self.hostname)}",
            "Auto-Submitted: auto-generated",
            "MIME-Version: 1.0",
            "Content-Type: text/plain; charset=utf-8",
        ]
        body = text.replace("\r\n", "\n").replace("\n", "\r\n")
        if not body.endswith("\r\n"):
            body += "\r\n"
        return ("\r\n".join(head) + "\r\n\r\n" + body).encode("utf-8", "replace")

    def send(self, subject: str, text: str, sender: str = "") -> defer.Deferred:
        """Deliver in the background; the Deferred fires with the number of routes that took it."""
        def failed(failure) -> int:
            log.failure("report {s!r} failed", failure, s=subject)
            return 0

        return defer.ensureDeferred(self._send(subject, text, sender)).addErrback(failed)

    async def _send(self, subject: str, text: str, sender: str) -> int:
        by_route: dict[str, tuple[Route, list[str]]] = {}
        for address in self.addresses(sender):
            route = self.route(address)
            if route is None:
                log.warn("report {s!r}: no route for {rcpt}", s=subject, rcpt=address)
                continue
            by_route.setdefault(route.name, (route, []))[1].append(address)
        delivered = 0
        for route, rcpts in by_route.values():
            if await self._deliver(route, rcpts, self.message(subject, text, rcpts), subject):
                delivered += 1
        return delivered

    async def _deliver(self, route: Route, rcpts: list[str], data: bytes, subject: str) -> bool:
        try:
            down = await Downstream.open(self.reactor, route.forward, self.hostname, self.timeouts)
        except DownstreamError as exc:
            log.warn("report {s!r} to {rcpts}: {err}", s=subject, rcpts=rcpts, err=str(exc))
            return False
        try:
            mail, reply = await down.begin("", {}, rcpts[0])
            for rcpt in rcpts[1:]:
                await down.rcpt(rcpt)
            if not down.recipients:
                log.warn("report {s!r} refused: {reply}", s=subject, reply=str(reply or mail))
                return False
            reply = await down.data()
            if reply.code != 354:
                log.warn("report {s!r} refused at DATA: {reply}", s=subject, reply=str(reply))
                return False
            down.write(data)
            reply = await down.dot()
            if not reply.ok:
                log.warn("report {s!r} refused at the dot: {reply}", s=subject, reply=str(reply))
                return False
            log.info("report {s!r} sent to {rcpts}", s=subject, rcpts=", ".join(down.recipients or rcpts))
            return True
        except DownstreamError as exc:
            log.warn("report {s!r} to {rcpts}: {err}", s=subject, rcpts=rcpts, err=str(exc))
            down.abort()
            return False
        finally:
            if down.alive:
                await down.quit()
