"""Plugin and check mistakes are caught where they are made: at start-up, or in a log
line that names the check, the hook or reply, and the session."""

from __future__ import annotations

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher

from barricade import plugin
from barricade.client import ClientInfo
from barricade.decide.rules import Rules
from barricade.options import OptionError
from barricade.policy.pipeline import Check, Context, Pipeline
from barricade.policy.verdict import Action, Verdict
from barricade.replies import (
    ENTRIES,
    Catalogue,
    CatalogueError,
    ReplyId,
    ReplySpec,
    check_catalogue,
)


class Said:
    """A log for the rules that keeps what was said."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def _say(self, fmt: str, **kw) -> None:
        self.lines.append(fmt.format(**kw))

    info = warn = error = _say


def ctx() -> Context:
    return Context("S1", ClientInfo("192.0.2.1", 25))


def rules(log: Said, *extra: ReplySpec) -> Rules:
    return Rules(Catalogue((*ENTRIES, *extra)), None, "mx.test", log=log)


def test_a_verdict_naming_an_undeclared_reply_is_907_and_said():
    log = Said()
    out = rules(log).verdict_outcome(ctx(), Verdict(Action.REJECT, 1600, check="my-plugin"))
    assert out.reply.id == 907
    assert log.lines == ["check my-plugin gave reject with reply 1600, which is not in the catalogue "
                         "(session S1): answered #907"]


def test_a_reply_rendered_without_a_field_of_its_template_is_said():
    log = Said()
    spec = ReplySpec(1600, 550, "5.7.1", "nope {why}", "rcpt")
    out = rules(log, spec).verdict_outcome(ctx(), Verdict(Action.REJECT, 1600, check="my-plugin"))
    assert out.reply.text == "nope ?"
    assert log.lines == ["check my-plugin: reply #1600 rendered without field(s) why (session S1)"]


def test_a_reject_with_a_temporary_reply_is_said():
    log = Said()
    spec = ReplySpec(1600, 451, "4.7.1", "later", "rcpt")
    rules(log, spec).verdict_outcome(ctx(), Verdict(Action.REJECT, 1600, check="my-plugin"))
    assert log.lines == ["check my-plugin gave reject with reply #1600 (451): reject needs a 5xx reply "
                         "(session S1)"]


def test_a_hook_returning_none_is_a_logged_tempfail():
    class Forgets(Check):
        name = "forgets"

        async def rcpt(self, ctx, rcpt):
            pass  # no return

    said: list[str] = []
    observer = lambda event: said.append(formatEvent(event))  # noqa: E731
    globalLogPublisher.addObserver(observer)
    try:
        coro = Pipeline([Forgets()], MemoryReactorClock(), 5).run("rcpt", ctx(), "a@b.example")
        with pytest.raises(StopIteration) as done:
            coro.send(None)
    finally:
        globalLogPublisher.removeObserver(observer)
    assert (done.value.value.action, done.value.value.reply_id) == (Action.TEMPFAIL, 907)
    assert "check forgets returned None from its rcpt hook, not a Verdict (session S1)" in said


class First(plugin.Plugin):
    name = "first"
    replies = (ReplySpec(1600, 550, "5.7.1", "nope", "rcpt"),)


class Second(plugin.Plugin):
    name = "second"
    replies = (ReplySpec(1600, 451, "4.7.1", "later", "rcpt"),)


def test_two_plugins_declaring_one_id_is_a_start_up_error(monkeypatch):
    monkeypatch.setattr(plugin, "discover", lambda: {"first": First, "second": Second})
    with pytest.raises(OptionError, match=r"^plugins first and second both declare reply #1600$"):
        plugin.plugin_replies()
    monkeypatch.setattr(plugin, "discover", lambda: {"first": First, "again": First})
    assert len(plugin.plugin_replies()) == 1  # the same declaration seen twice is one


@pytest.mark.parametrize("spec, message", [
    (ReplySpec(120, 550, "5.7.1", "mine", "rcpt"), "plugin bad: reply #120 is already the core catalogue's"),
    (ReplySpec(1601, 550, "4.7.1", "odd", "rcpt"),
     "plugin bad: reply #1601: enhanced status 4.7.1 does not fit code 550"),
    (ReplySpec(999, 550, "5.7.1", "mine", "rcpt"),  # a third party's start at 1000
     "plugin bad: reply #999: ids under 1000 are Barricade's own; a plugin's start at 1000"),
    (ReplySpec(1602, 550, "5.7.1", "odd", "recipient"),  # the event is a metrics label
     "plugin bad: reply #1602: event 'recipient' is not one of"),
])
def test_a_bad_plugin_reply_is_a_start_up_error(monkeypatch, spec, message):
    bad = type("Bad", (plugin.Plugin,), {"name": "bad", "replies": (spec,)})
    monkeypatch.setattr(plugin, "discover", lambda: {"bad": bad})
    with pytest.raises(OptionError) as exc:
        plugin.plugin_replies()
    assert str(exc.value).startswith(message)


def test_a_clash_among_plugins_that_are_only_installed_does_not_stop_start_up(monkeypatch):
    from barricade.options import REGISTRY

    monkeypatch.setattr(plugin, "discover", lambda: {"first": First, "second": Second})
    config = REGISTRY.parse([])  # neither runs: First's entry stands, Second's is said and left
    assert [s.id for s in plugin.plugin_replies(config)] == [1600]
    monkeypatch.setattr(plugin, "load_class", lambda spec: {"first": First, "second": Second}[spec])
    config = REGISTRY.parse(["plugins=second"])
    assert [s.code for s in plugin.plugin_replies(config)] == [451]  # the running one's
    config = REGISTRY.parse(["plugins=first,second"])
    with pytest.raises(OptionError, match="both declare reply #1600"):
        plugin.plugin_replies(config)


def test_an_option_a_plugin_shares_with_another_is_a_start_up_error():
    from barricade.options import Registry

    reg = Registry()
    reg.add("check-timeout", 30, "The core's.", section="general")
    mine = type("Mine", (plugin.Plugin,), {"name": "mine", "options": (
        plugin.PluginOption("check-timeout", 5, "Mine."),)})
    with pytest.raises(OptionError, match="plugin mine: option check-timeout is already general's"):
        plugin.register_options([mine], reg)
    ok = type("Ok", (plugin.Plugin,), {"name": "ok", "options": (plugin.PluginOption("ok-limit", 5, "Mine."),)})
    plugin.register_options([ok, ok], reg)  # the same plugin twice: once
    assert reg.get("ok-limit").section == "plugin ok"


@pytest.mark.parametrize("rid, message", [
    (1700, "plugin failing: error_reply #1700 is not in the catalogue"),
    (120, "plugin failing: error_reply #120 is a 550; a failure is answered with a 4xx"),
])
def test_a_plugin_error_reply_is_a_4xx_the_catalogue_has(rid, message):
    from barricade.service import StartupError, check_error_reply

    failing = type("Failing", (plugin.Plugin,), {"name": "failing", "error_reply": rid})
    with pytest.raises(StartupError) as exc:
        check_error_reply(failing.__new__(failing), Catalogue())
    assert str(exc.value).startswith(message)
    check_error_reply(Second.__new__(Second), Catalogue())  # the default #907


def test_every_named_reply_exists():
    check_catalogue(Catalogue())
    short = Catalogue([s for s in ENTRIES if s.id != ReplyId.MESSAGE_ACCEPTED])
    with pytest.raises(CatalogueError, match=r"reply #554 \(MESSAGE_ACCEPTED\) is not in the catalogue"):
        check_catalogue(short)


def test_an_entry_point_may_not_replace_a_shipped_plugin_and_is_named_either_way(monkeypatch):
    class EP:
        def __init__(self, name, cls):
            self.name, self.cls = name, cls

        def load(self):
            return self.cls

        def __str__(self):
            return f"{self.name} = tests:{self.cls.__name__}"

    fake_clamd = type("FakeClamd", (plugin.Plugin,), {"name": "clamd"})
    acme = type("Acme", (plugin.Plugin,), {"name": "acme_av"})
    monkeypatch.setattr(plugin, "entry_points", lambda group: [EP("clamd2", fake_clamd), EP("acme-av", acme)])
    monkeypatch.setattr(plugin, "_classes", None)
    monkeypatch.setattr(plugin, "_aliases", {})
    said: list[str] = []

    def observer(event):
        said.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    try:
        found = plugin.discover()
        assert found["clamd"] is not fake_clamd and found["clamd"].__name__ == "Clamd"
        assert any("the name clamd is taken by" in line and "not loaded" in line for line in said)
        assert plugin.load_class("acme-av") is acme and plugin.load_class("acme_av") is acme
    finally:
        globalLogPublisher.removeObserver(observer)
        plugin._classes = None  # the next discover() sees the real entry points
