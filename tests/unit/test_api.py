"""The plugin API: one module, the in-process harness, services awaited directly,
blocking work in the thread pool, and the stall watchdog."""

from __future__ import annotations

import threading
import time

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher

from barricade.api import (
    CONTINUE,
    Context,
    Plugin,
    PluginHarness,
    PluginOption,
    ReplySpec,
    Services,
    reject,
    tag,
)
from barricade.client import ClientInfo
from barricade.policy.pipeline import Check, Pipeline
from barricade.state import MemoryStore


class PerDomainCap(Plugin):
    """A recipient cap per domain, counted in the shared store."""

    name = "test-cap"
    options = (PluginOption("test-cap-limit", 2, "Recipients per domain per transaction.", minimum=1),)
    replies = (ReplySpec(1500, 452, "4.5.3", "too many recipients at {domain}", "rcpt"),)

    async def rcpt(self, ctx: Context, rcpt: str):
        domain = rcpt.rpartition("@")[2]
        key = f"cap:{ctx.session_id}:{domain}"
        count = int(await self.state.get(key) or 0) + 1
        await self.state.set(key, str(count), ttl=60)
        if count > self.config["test-cap-limit"]:
            return tempfail_1500(domain)
        return CONTINUE


def tempfail_1500(domain: str):
    from barricade.api import tempfail

    return tempfail(1500, domain=domain)


class SubjectTagger(Plugin):
    name = "test-tagger"
    replies = (ReplySpec(1501, 550, "5.7.1", "offer from {sender}", "dot"),)

    async def headers(self, ctx: Context):
        if "offer" in (ctx.header("Subject") or "").lower():
            return tag(1501, sender=ctx.sender)
        return CONTINUE


class RejectsWord(Plugin):
    name = "test-word"
    needs_message = True
    replies = (ReplySpec(1502, 550, "5.7.1", "the word {word} is refused", "dot"),)

    async def end_of_data(self, ctx: Context):
        if b"casino" in ctx.spool.read():
            return reject(1502, word="casino")
        ctx.add_header("X-Checked", "yes")
        return CONTINUE


MESSAGE = b"Subject: Special offer\nFrom: a@example.org\n\nHello.\n"


@pytest_twisted.ensureDeferred
async def test_the_harness_shows_verdicts_and_replies_and_the_store_is_awaited_directly():
    harness = PluginHarness(PerDomainCap, services=Services(reactor=reactor, metrics=None,
                                                            store=MemoryStore()))
    result = await harness.message(MESSAGE, rcpts=["a@x.example", "b@x.example", "c@x.example",
                                                   "d@y.example"])
    replies = [(event, r.code, r.id) for event, r in result.replies]
    assert replies[:5] == [("connect", 220, 633), ("helo", 250, 254), ("mail", 250, 283),
                           ("rcpt a@x.example", 250, 297), ("rcpt b@x.example", 250, 297)]
    assert replies[5] == ("rcpt c@x.example", 452, 1500)
    assert "too many recipients at x.example" in result.replies[5][1].text
    assert result.reply.code == 250 and result.delivered is not None
    assert [v.action.value for _, v in result.verdicts("test-cap")] == ["continue"] * 2 + ["tempfail", "continue"]


@pytest_twisted.ensureDeferred
async def test_a_tag_verdict_marks_the_delivered_message():
    result = await PluginHarness(SubjectTagger).message(MESSAGE)
    assert ("Subject", "[SPAM] Special offer") in result.headers
    assert ("X-Spam-Reason", "offer from sender@example.org") in result.headers
    assert result.reply.id == 554


@pytest_twisted.ensureDeferred
async def test_a_spooled_plugin_refuses_at_the_dot_or_adds_a_header():
    harness = PluginHarness(RejectsWord)
    refused = await harness.message(b"Subject: x\n\ncasino night\n")
    assert (refused.reply.code, refused.reply.id) == (550, 1502) and refused.delivered is None
    clean = await harness.message(b"Subject: x\n\nlunch\n")
    assert clean.delivered.startswith(b"X-Checked: yes\r\nSubject: x\r\n\r\nlunch\r\n")


class Blocks(Plugin):
    name = "test-blocks"

    async def rcpt(self, ctx, rcpt):
        self.thread = await self.blocking(threading.get_ident)
        return CONTINUE


@pytest_twisted.ensureDeferred
async def test_blocking_work_runs_in_the_pool_not_in_the_event_loop():
    harness = PluginHarness(Blocks, "plugin-threads=2")
    result = await harness.message(MESSAGE)
    assert result.reply.code == 250
    assert harness.plugin.thread != threading.get_ident()


def test_a_hook_that_stalls_the_loop_is_logged_with_check_hook_and_session():
    class Sleeps(Check):
        name = "sleeper"

        async def helo(self, ctx):
            time.sleep(0.05)  # the mistake the watchdog is for
            return CONTINUE

    said: list[str] = []
    observer = lambda event: said.append(formatEvent(event))  # noqa: E731
    globalLogPublisher.addObserver(observer)
    try:
        coro = Pipeline([Sleeps()], MemoryReactorClock(), 5, stall=0.01).run(
            "helo", Context("S9", ClientInfo("192.0.2.1", 25)))
        try:
            coro.send(None)
        except StopIteration:
            pass
    finally:
        globalLogPublisher.removeObserver(observer)
    assert any(line.startswith("check sleeper kept the event loop busy") and "in its helo hook (session S9)"
               in line for line in said), said


def test_the_scanners_standard_options_are_generated_once():
    from barricade import plugin

    plugin.prepare([])
    classes = plugin.discover()
    for name in ("clamd", "avastd", "fpscand", "spamd"):
        options = {o.name: o for o in classes[name].options}
        assert {f"{name}-socket", f"{name}-timeout", f"{name}-connections"} <= set(options)
        assert options[f"{name}-connections"].help == plugin.scanner_options(name, "")[-1].help
    assert classes["clamd"].options[2] == plugin.scanner_options("clamd", "")[2]  # clamd-policy
