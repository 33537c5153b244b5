"""Test a plugin in process: one SMTP session, no daemon, no downstream MTA.

:class:`PluginHarness` drives a plugin (alone, or beside other checks)
through connect, HELO, MAIL, RCPT, DATA, the headers, the body and the end
of data with a message you give, using Barricade's own pipeline and
decision rules, and tells you what a client would have seen: every
verdict, every reply, and the message as it would be delivered (headers
added, Subject tagged).  The downstream is imagined to accept everything.
It needs a running reactor (``pytest --reactor=asyncio`` with
pytest-twisted) only when the plugin awaits something::

    import pytest_twisted
    from barricade.api import PluginHarness

    @pytest_twisted.ensureDeferred
    async def test_rejects_viagra():
        harness = PluginHarness(KeywordFilter, "keywords-reject=viagra")
        result = await harness.message(b"Subject: offer\\r\\n\\r\\ncheap viagra\\r\\n")
        assert result.reply.id == 1000 and not result.delivered
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from twisted.internet import defer

from barricade.client import classify
from barricade.decide.outcome import Downstream, Outcome
from barricade.decide.rules import Rules
from barricade.options import REGISTRY, Config
from barricade.plugin import Plugin, Services, check_reply, register_options
from barricade.policy.order import ORDER
from barricade.policy.pipeline import Check, Context, Pipeline
from barricade.policy.verdict import Verdict
from barricade.protocol.message import HeaderCollector, edit_headers, parse_headers
from barricade.replies import ENTRIES, Catalogue, Reply, check_catalogue
from barricade.spool import Spool


@dataclass
class Accepted:
    """A downstream's 250, as the decision rules read it."""

    code: int = 250
    lines: tuple[str, ...] = ("2.0.0 ok",)
    status: str = "2.0.0"
    text: str = "ok"
    ok: bool = True


@dataclass
class Step:
    """One event of the session: what each check said, and the reply the client got."""

    event: str  # "connect", "helo", "mail", "rcpt b@example.com", "data", "headers", "body", "dot"
    verdicts: list[tuple[str, Verdict | None]] = field(default_factory=list)  # None: skipped
    reply: Reply | None = None


@dataclass
class Result:
    """What the session came to."""

    steps: list[Step]
    context: Context
    delivered: bytes | None = None  # the message as delivered, or None when it was not

    @property
    def reply(self) -> Reply | None:
        """The last reply: the refusal that ended the session, or the answer to the dot."""
        replies = [s.reply for s in self.steps if s.reply is not None]
        return replies[-1] if replies else None

    @property
    def replies(self) -> list[tuple[str, Reply]]:
        return [(s.event, s.reply) for s in self.steps if s.reply is not None]

    def verdicts(self, check: str | None = None) -> list[tuple[str, Verdict]]:
        """(event, verdict) of every check, or of the one named; skipped checks left out."""
        return [(s.event, v) for s in self.steps for name, v in s.verdicts
                if v is not None and (check is None or name == check)]

    @property
    def added_headers(self) -> list[tuple[str, str]]:
        return list(self.context.added_headers)

    @property
    def headers(self) -> list[tuple[str, str]]:
        """The delivered header fields, in order (empty when nothing was delivered)."""
        if self.delivered is None:
            return []
        collector = HeaderCollector()
        collector.feed(self.delivered)
        return parse_headers(bytes(collector.buffer))


class PluginHarness:
    """One plugin (and optional other checks) in an in-process session.

    ``settings`` are option overrides in ``barricade.cf`` syntax
    (``"keywords-reject=viagra"``, ``"+smtp-delay-checks"``); the plugin's
    own options are registered first.  ``services`` replaces the shared
    services (give a ``store`` or a ``resolver`` to a plugin that needs one).
    Start-up checks run as in the daemon: the plugin's replies must be
    well formed and must not collide with the catalogue.
    """

    def __init__(self, plugin: type[Plugin] | Plugin, *settings: str, checks: Iterable[Check] = (),
                 services: Services | None = None, reactor: Any = None, hostname: str = "mx.test"):
        if reactor is None:
            from twisted.internet import reactor
        cls = plugin if isinstance(plugin, type) else type(plugin)
        # A registry of its own: the plugin's options stay out of the process's (a test
        # suite's other tests, `help`, see only the options they registered).
        registry = REGISTRY.copy()
        register_options([cls], registry)
        self.config: Config = registry.parse(list(settings))
        for spec in cls.replies:
            problem = check_reply(spec)
            if problem:
                raise ValueError(f"plugin {cls.name}: {problem}")
        self.catalogue = Catalogue((*ENTRIES, *cls.replies))
        check_catalogue(self.catalogue)
        self.services = services or Services(reactor=reactor, metrics=None,
                                             save_dir=tempfile.gettempdir())
        self.plugin = plugin if isinstance(plugin, Plugin) else plugin(self.config, self.services)
        self.pipeline = Pipeline([*checks, self.plugin], reactor, self.config["check-timeout"],
                                 order=ORDER, stall=self.config["event-loop-stall"] / 1000)
        self.hostname = hostname
        self._started = False

    async def start(self) -> None:
        if not self._started:
            self._started = True
            await defer.ensureDeferred(self.plugin.start())

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await defer.ensureDeferred(self.plugin.stop())

    async def message(self, message: bytes, *, sender: str = "sender@example.org",
                      rcpts: Sequence[str] = ("rcpt@example.com",), helo: str = "mail.example.org",
                      client_ip: str = "192.0.2.1", client_name: str = "mail.example.org",
                      relay: bool = False) -> Result:
        """One session that sends ``message`` (CRLF or LF lines; headers, blank line, body).

        The session stops at the first refusal, as a client would.
        """
        await self.start()
        client = classify(client_ip, 25000, client_name, lambda ip, name: relay)
        ctx = Context(session_id="harness", client=replace(client, ptr=client_name))
        rules = Rules(self.catalogue, _AllRoutes(), self.hostname,
                      delay_checks=self.config["smtp-delay-checks"],
                      relay_reply=self.config["relay-reply"],
                      subject_tag=self.config.get("spamd-subject-tag", "[SPAM]") or "[SPAM]")
        steps: list[Step] = []
        result = Result(steps, ctx)
        try:
            await self._session(ctx, rules, steps, result, _crlf(message), sender, list(rcpts), helo)
        finally:
            await defer.ensureDeferred(self.pipeline.close(ctx))
            ctx.reset_transaction()
        return result

    async def _run(self, steps: list[Step], event: str, phase: str, ctx: Context, *args: Any) -> Verdict:
        step = Step(event)
        steps.append(step)
        return await defer.ensureDeferred(self.pipeline.run(
            phase, ctx, *args, trace=lambda check, verdict: step.verdicts.append((check.name, verdict))))

    async def _session(self, ctx: Context, rules: Rules, steps: list[Step], result: Result,
                       message: bytes, sender: str, rcpts: list[str], helo: str) -> None:
        def answer(outcome: Outcome | None) -> bool:
            """Record the reply; True when the session goes on."""
            if outcome is not None and outcome.reply is not None:
                steps[-1].reply = outcome.reply
                return outcome.reply.positive and not outcome.drop and not outcome.sink
            return True

        if not answer(rules.connect(ctx, await self._run(steps, "connect", "connect", ctx))):
            return
        ctx.helo, ctx.esmtp = helo, True
        if not answer(rules.helo(ctx, await self._run(steps, "helo", "helo", ctx), True)):
            return
        ctx.reset_transaction()
        rules.new_transaction()
        ctx.sender = sender
        if not answer(rules.mail(ctx, await self._run(steps, "mail", "mail", ctx))):
            return
        for rcpt in rcpts:
            verdict = await self._run(steps, f"rcpt {rcpt}", "rcpt", ctx, rcpt)
            outcome = rules.rcpt(ctx, verdict, rcpt, rules.routes.local)
            if outcome.downstream is Downstream.RELAY:
                outcome = rules.relayed_rcpt(ctx, Accepted(), rcpt)
            answer(outcome)
        if not answer(rules.before_data_checks(ctx, bool(ctx.rcpts))):
            return
        ctx.qid = "harness01"
        if not answer(rules.data(ctx, await self._run(steps, "data", "data", ctx))):
            return
        steps[-1].reply = rules.data_started(ctx, []).reply
        if self.pipeline.needs_message:
            ctx.spool = Spool(self.services.save_dir, self.config["spool-memory-limit"], prefix="harness-")
        collector = HeaderCollector()  # as the proxy splits it: header lines, then the rest
        body = collector.feed(message)
        block = bytes(collector.buffer)
        ctx.header_block, ctx.headers = block, parse_headers(block)
        refused = rules.content(ctx, await self._run(steps, "headers", "headers", ctx))
        if not answer(refused):
            return
        rules.apply_tags(ctx)
        if ctx.spool is not None:
            ctx.spool.write(block + body)
        if body and self.pipeline.has("body"):
            if not answer(rules.content(ctx, await self._run(steps, "body", "body", ctx, body))):
                return
        refused = rules.end_of_data(ctx, await self._run(steps, "dot", "end_of_data", ctx))
        if refused is not None:
            answer(refused)
            return
        if ctx.spool is not None:
            rules.apply_tags(ctx)
        else:
            rules.late_tags(ctx)
        result.delivered = edit_headers(ctx.header_block, ctx.subject_tag, ctx.added_headers,
                                        ctx.removed_headers) + body
        answer(rules.delivered(ctx, [Accepted()]))


class _AllRoutes:
    """Every recipient has a route; no client may relay unless the harness says so."""

    local = "local"

    def for_recipient(self, rcpt: str) -> str:
        return self.local


def _crlf(message: bytes) -> bytes:
    return message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
