"""The per-phase pipeline: order, white-listing, anti-virus, timeouts and failures."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock

from barricade.plugin import ScannerError
from barricade.policy.pipeline import Check, Context, Pipeline, immediate
from barricade.policy.verdict import CONTINUE, Action, Verdict, reject
from barricade.protocol.events import ClientInfo


class Recorder(Check):
    def __init__(self, name: str, verdict: Verdict = CONTINUE, antivirus: bool = False, log=None):
        self.name = name
        self.verdict = verdict
        self.antivirus = antivirus
        self.log = log if log is not None else []

    async def connect(self, ctx):
        self.log.append((self.name, "connect"))
        return self.verdict

    async def end_of_data(self, ctx):
        self.log.append((self.name, "end_of_data"))
        return self.verdict


def ctx() -> Context:
    return Context("SID", ClientInfo("192.0.2.1", 1))


def run(pipeline: Pipeline, phase: str, context: Context, *args) -> Verdict:
    d = defer.ensureDeferred(pipeline.run(phase, context, *args))
    return pytest_twisted.blockon(d) if not d.called else d.result


def test_checks_run_in_order_and_the_first_decisive_verdict_wins():
    log: list = []
    checks = [Recorder("a", log=log), Recorder("b", reject(120), log=log), Recorder("c", log=log)]
    v = run(Pipeline(checks, MemoryReactorClock(), 5), "connect", ctx())
    assert v.action is Action.REJECT and v.reply_id == 120 and v.check == "b"
    assert log == [("a", "connect"), ("b", "connect")]


def test_accept_at_connect_white_lists_the_session_but_antivirus_still_runs():
    log: list = []
    checks = [Recorder("white", Verdict(Action.ACCEPT), log=log), Recorder("policy", log=log),
              Recorder("av", antivirus=True, log=log)]
    p = Pipeline(checks, MemoryReactorClock(), 5)
    c = ctx()
    assert run(p, "connect", c).action is Action.ACCEPT and c.white_session
    log.clear()
    run(p, "end_of_data", c)
    assert log == [("av", "end_of_data")]  # smtpf: anti-virus runs even for white-listed mail
    c.white_av = True  # OK+AV
    log.clear()
    run(p, "end_of_data", c)
    assert log == []


def test_content_verdict_skips_envelope_checks_only():
    log: list = []
    content = Recorder("content", Verdict(Action.CONTENT), log=log)
    p = Pipeline([content, Recorder("x", log=log)], MemoryReactorClock(), 5)
    c = ctx()
    run(p, "connect", c)
    assert c.white_envelope and not c.trusted
    content.verdict = CONTINUE
    log.clear()
    run(p, "end_of_data", c)
    assert ("x", "end_of_data") in log


def test_content_at_connect_holds_for_every_transaction():
    """smtpf's CONTENT (Connect: CONTENT, dns-gl) at connect: each MAIL starts trusted
    for the envelope again."""
    p = Pipeline([Recorder("content", Verdict(Action.CONTENT))], MemoryReactorClock(), 5)
    c = ctx()
    run(p, "connect", c)
    for _ in range(2):
        c.reset_transaction()
        assert c.white_envelope and not c.trusted
    other = ctx()
    other.reset_transaction()
    assert not other.white_envelope and not other.white_envelope_session


def test_reset_transaction_forgets_the_transaction_and_keeps_the_session():
    c = ctx()
    c.sender, c.mail_params, c.rcpts = "a@example.com", {"SIZE": "10"}, ["b@example.com"]
    c.headers, c.header_block, c.subject_tag = [("Subject", "x")], b"Subject: x\r\n", "[SPAM]"
    c.add_header("X-A", "1")
    c.remove_header("X-B")
    c.tags.append(Verdict(Action.TAG))
    c.notes.update({"mine": 1, "session.kept": 2})
    c.session_notes["s"] = 3
    c.delivered, c.reply_lost = "Q1", True
    held = c.rcpts, c.headers, c.added_headers, c.removed_headers, c.tags, c.mail_params
    c.reset_transaction()
    assert (c.sender, c.mail_params, c.rcpts, c.headers, c.header_block) == (None, {}, [], [], b"")
    assert (c.added_headers, c.removed_headers, c.subject_tag, c.tags) == ([], set(), "", [])
    assert c.notes == {"session.kept": 2} and c.session_notes == {"s": 3}
    assert (c.delivered, c.reply_lost) == ("Q1", True)
    # Whoever held the transaction's containers still sees what they held.
    assert held == (["b@example.com"], [("Subject", "x")], [("X-A", "1")], {"x-b"},
                    [Verdict(Action.TAG)], {"SIZE": "10"})
    c.rcpts.append("c@example.com")
    assert held[0] == ["b@example.com"]
    c.reset_transaction()  # nothing held: nothing changes
    assert c.notes == {"session.kept": 2} and c.rcpts == [] and c.sender is None


def test_a_hanging_check_times_out_with_its_error_reply():
    class Hangs(Check):
        name = "hangs"
        timeout = 2
        error_reply = 186

        async def connect(self, ctx):
            await defer.Deferred()

    clock = MemoryReactorClock()
    d = defer.ensureDeferred(Pipeline([Hangs()], clock, 30).run("connect", ctx()))
    assert not d.called
    clock.advance(2.1)
    v = d.result
    assert (v.action, v.reply_id, v.check) == (Action.TEMPFAIL, 186, "hangs")


def test_scanner_errors_become_their_numbered_tempfail():
    class Broken(Check):
        name = "broken"

        async def connect(self, ctx):
            raise ScannerError(180, "Connection refused", 111)

    v = run(Pipeline([Broken()], MemoryReactorClock(), 5), "connect", ctx())
    assert (v.action, v.reply_id, v.fields) == (Action.TEMPFAIL, 180,
                                                {"error": "Connection refused", "errno": 111})


def test_an_unexpected_exception_is_907():
    class Bug(Check):
        name = "bug"

        async def connect(self, ctx):
            return 1 / 0

    v = run(Pipeline([Bug()], MemoryReactorClock(), 5), "connect", ctx())
    assert (v.action, v.reply_id) == (Action.TEMPFAIL, 907)


def test_transaction_reset_keeps_session_state():
    c = ctx()
    c.white_session = True
    c.white = True
    c.notes["session.rdns"] = "x"
    c.notes["grey"] = "y"
    c.add_header("X-A", "1")
    c.reset_transaction()
    assert c.white_session and not c.white and c.notes == {"session.rdns": "x"} and not c.added_headers


def test_protocol_limits_run_even_for_white_listed_mail():
    from barricade.options import REGISTRY
    from barricade.policy.limits import HopLimit

    c = ctx()
    c.white_session = c.white_av = True
    c.headers = [("Received", "x")] * 30
    v = run(Pipeline([HopLimit(REGISTRY.parse([]))], MemoryReactorClock(), 5), "headers", c)
    assert (v.action, v.reply_id) == (Action.REJECT, 911)


def test_a_check_is_skipped_unrun_for_the_clients_it_exempts():
    log: list = []

    class LocalExempt(Recorder):
        exempt_client = staticmethod(lambda client: client.localhost)

    p = Pipeline([LocalExempt("exempt", reject(550), log=log)], MemoryReactorClock(), 5)
    local = Context("SID", ClientInfo("127.0.0.1", 1, localhost=True))
    assert run(p, "connect", local).action is Action.CONTINUE
    assert log == []  # not run at all
    assert run(p, "connect", ctx()).action is Action.REJECT
    assert log == [("exempt", "connect")]
    traced: list = []
    d = defer.ensureDeferred(p.run("connect", local, trace=lambda c, v: traced.append(v)))
    assert d.result.action is Action.REJECT  # an explanation runs every check as it is
    assert len(log) == 2 and traced


def test_exemption_is_judged_again_when_the_session_becomes_another_client():
    """XCLIENT (or the PTR lookup) replaces ctx.client: the exemptions follow it,
    and each distinct exemption test is asked once per client, not per check."""
    log: list = []
    asked: list = []

    def local(client):
        asked.append(client.ip)
        return client.localhost

    class LocalExempt(Recorder):
        exempt_client = staticmethod(local)

    p = Pipeline([LocalExempt("one", reject(550), log=log), LocalExempt("two", reject(550), log=log)],
                 MemoryReactorClock(), 5)
    c = Context("SID", ClientInfo("127.0.0.1", 1, localhost=True))
    for phase in ("connect", "helo", "mail"):
        assert run(p, phase, c).action is Action.CONTINUE
    assert log == [] and asked == ["127.0.0.1"]
    c.client = ClientInfo("192.0.2.9", 1)  # XCLIENT ADDR=192.0.2.9
    assert run(p, "connect", c).action is Action.REJECT
    assert log == [("one", "connect")] and asked == ["127.0.0.1", "192.0.2.9"]


# --- hooks that wait -------------------------------------------------------------------


class Waits(Check):
    """A hook that awaits the Deferreds it is handed, one after the other."""

    name = "waits"
    timeout = 5
    error_reply = 186

    def __init__(self, *steps: defer.Deferred, swallow: bool = False, then: object = CONTINUE):
        self.steps, self.swallow, self.then, self.seen = list(steps), swallow, then, []

    async def connect(self, ctx):
        for step in self.steps:
            try:
                self.seen.append(await step)
            except defer.CancelledError:
                self.seen.append("cancelled")
                if not self.swallow:
                    raise
                await defer.Deferred()  # and waits on, past its timeout
        if isinstance(self.then, Exception):
            raise self.then
        return self.then


def started(check: Check, clock=None) -> tuple[defer.Deferred, MemoryReactorClock]:
    clock = clock or MemoryReactorClock()
    return defer.ensureDeferred(Pipeline([check], clock, 30).run("connect", ctx())), clock


def test_a_waiting_hook_is_resumed_by_each_deferred_and_its_verdict_counts():
    first, second = defer.Deferred(), defer.Deferred()
    hook = Waits(first, second, then=reject(120))
    d, clock = started(hook)
    first.callback("a")
    assert not d.called and hook.seen == ["a"]
    second.callback("b")
    v = d.result
    assert hook.seen == ["a", "b"] and (v.action, v.reply_id, v.check) == (Action.REJECT, 120, "waits")
    clock.advance(30)  # the timeout went with it: the shared timer finds nothing due
    assert clock.getDelayedCalls() == [] and d.result is v


def test_a_failure_after_a_wait_is_the_hooks_failure():
    gate = defer.Deferred()
    d, _ = started(Waits(gate, then=ZeroDivisionError("late")))
    gate.callback(None)
    assert (d.result.action, d.result.reply_id) == (Action.TEMPFAIL, 186)  # its error reply


def test_a_failed_deferred_is_raised_where_the_hook_waits():
    gate = defer.Deferred()
    d, _ = started(Waits(gate))
    gate.errback(ScannerError(180, "Connection refused", 111))
    assert (d.result.action, d.result.reply_id) == (Action.TEMPFAIL, 180)


def test_a_timeout_cancels_what_the_hook_awaits_and_answers_even_if_the_hook_waits_on():
    gate = defer.Deferred()
    hook = Waits(gate, swallow=True)
    d, clock = started(hook)
    clock.advance(5.1)
    assert hook.seen == ["cancelled"]  # it heard the cancel, caught it, and waits again
    v = d.result
    assert (v.action, v.reply_id, v.check) == (Action.TEMPFAIL, 186, "waits")


def test_a_hook_that_gives_up_on_the_cancel_is_timed_out_too():
    gate = defer.Deferred()
    hook = Waits(gate)
    d, clock = started(hook)
    clock.advance(5.1)
    assert hook.seen == ["cancelled"] and d.result.reply_id == 186


def test_close_hooks_that_wait_are_driven_and_bounded():
    class Holds(Check):
        name = "holds"
        timeout = 3

        def __init__(self, gate):
            self.gate, self.closed = gate, False

        async def close(self, ctx):
            await self.gate
            self.closed = True

    quick, stuck = Holds(defer.Deferred()), Holds(defer.Deferred())
    clock = MemoryReactorClock()
    d = defer.ensureDeferred(Pipeline([quick, stuck], clock, 30).close(ctx()))
    quick.gate.callback(None)
    assert quick.closed and not d.called
    clock.advance(3.1)  # the stuck one is given up (and logged), close ends
    assert d.called and not stuck.closed


def test_which_checks_a_white_list_skips_for_every_trust_and_phase():
    """smtpf's rule, for every pair of session and transaction trust: a check that is
    not ``always`` is skipped at WHITE (at CONTENT already in an envelope phase),
    unless it is anti-virus and the trust is below FULL; the flags agree."""
    from barricade.policy.pipeline import ENVELOPE_PHASES, Trust

    for phase in ("connect", "end_of_data"):
        for always in (False, True):
            for antivirus in (False, True):
                check = Recorder("c", antivirus=antivirus)
                check.always = always
                p = Pipeline([check], MemoryReactorClock(), 5)
                for session in Trust:
                    for trust in Trust:
                        c = ctx()
                        c.session_trust, c.trust = session, trust
                        check.log.clear()
                        run(p, phase, c)
                        level = max(session, trust)
                        white = level >= Trust.WHITE or (phase in ENVELOPE_PHASES and level >= Trust.CONTENT)
                        skipped = not always and white and (not antivirus or level >= Trust.FULL)
                        assert check.log == ([] if skipped else [("c", phase)]), (phase, always, antivirus,
                                                                                   session, trust)
                        assert c.trust_level == level
                        assert c.trusted == (level >= Trust.WHITE)
                        assert c.white_envelope == (level >= Trust.CONTENT)
                        assert c.white_av == (level >= Trust.FULL)
                        assert c.white == (trust >= Trust.WHITE)
                        assert c.white_session == (session >= Trust.WHITE)
                        assert c.white_envelope_session == (session >= Trust.CONTENT)


class Plain(Check):
    """Hooks marked immediate: plain functions, run as such by the pipeline."""

    name = "plain"

    def __init__(self, verdict: Verdict = CONTINUE, fail: Exception | None = None):
        self.verdict, self.fail, self.seen = verdict, fail, []

    @immediate
    def rcpt(self, ctx, rcpt):
        """The recipient's hook."""
        self.seen.append(rcpt)
        if self.fail is not None:
            raise self.fail
        return self.verdict


class WaitsInPlain(Plain):
    """A subclass that waits in the hook its parent marks immediate."""

    name = "waits-in-plain"

    async def rcpt(self, ctx, rcpt):
        await defer.succeed(None)
        return await super().rcpt(ctx, rcpt)  # the parent's, awaited as any hook


def test_an_immediate_hook_is_called_as_a_plain_function_and_counted(monkeypatch):
    from barricade.metrics import Metrics
    from barricade.replies import Catalogue

    metrics = Metrics(Catalogue())
    made: list = []
    real = Plain.rcpt  # the awaitable form: the pipeline must not make its coroutine
    monkeypatch.setattr(Plain, "rcpt", lambda *a: made.append(a) or real(*a))
    Plain.rcpt.immediate = real.immediate
    check = Plain(reject(550))
    v = run(Pipeline([check], MemoryReactorClock(), 5, metrics=metrics), "rcpt", ctx(), "a@example.org")
    assert (v.action, v.reply_id, v.check) == (Action.REJECT, 550, "plain")
    assert check.seen == ["a@example.org"] and made == []
    assert metrics.tally.checks[("plain", "rcpt", "reject")][2] == 1


def test_an_immediate_hook_is_still_awaitable_and_keeps_its_name():
    check = Plain()
    d = defer.ensureDeferred(check.rcpt(ctx(), "b@example.org"))
    assert d.result is CONTINUE and check.seen == ["b@example.org"]
    assert Plain.rcpt.__name__ == "rcpt" and Plain.rcpt.__doc__ == "The recipient's hook."


def test_an_immediate_hook_that_raises_is_its_failure():
    v = run(Pipeline([Plain(fail=ZeroDivisionError())], MemoryReactorClock(), 5), "rcpt", ctx(), "c@x")
    assert (v.action, v.reply_id, v.check) == (Action.TEMPFAIL, 907, "plain")
    v = run(Pipeline([Plain(fail=ScannerError(180, "refused", 111))], MemoryReactorClock(), 5),
            "rcpt", ctx(), "c@x")
    assert (v.action, v.reply_id) == (Action.TEMPFAIL, 180)


def test_a_subclass_that_waits_in_an_immediate_hook_is_driven_as_a_coroutine():
    check = WaitsInPlain(reject(550))
    v = run(Pipeline([check, Plain()], MemoryReactorClock(), 5), "rcpt", ctx(), "d@x")
    assert (v.action, v.check) == (Action.REJECT, "waits-in-plain") and check.seen == ["d@x"]


def test_a_trace_sees_immediate_hooks_too():
    seen: list = []
    p = Pipeline([Plain(), Plain(reject(550))], MemoryReactorClock(), 5)
    d = defer.ensureDeferred(p.run("rcpt", ctx(), "e@x", trace=lambda c, v: seen.append(v and v.action)))
    assert d.result.action is Action.REJECT and seen == [Action.CONTINUE, Action.REJECT]


def test_an_immediate_close_hook_runs_and_a_failing_one_does_not_stop_the_others():
    ran: list = []

    class Gives(Check):
        name = "gives"

        @immediate
        def close(self, ctx):
            ran.append("gives")

    class Breaks(Check):
        name = "breaks"

        @immediate
        def close(self, ctx):
            raise RuntimeError("a bug")

    d = defer.ensureDeferred(Pipeline([Breaks(), Gives()], MemoryReactorClock(), 5).close(ctx()))
    assert d.called and d.result is None and ran == ["gives"]


def test_a_hook_set_on_the_instance_is_the_one_that_runs():
    check = Plain()

    async def replaced(ctx, rcpt):
        return reject(550)

    check.rcpt = replaced
    v = run(Pipeline([check], MemoryReactorClock(), 5), "rcpt", ctx(), "f@x")
    assert v.action is Action.REJECT and check.seen == []
