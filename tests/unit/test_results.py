"""One result convention: TAG is a verdict, IREJECT a REJECT without DELAY, one
exception type with its reply, typed note scopes, one trust value per scope."""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock

from barricade.client import ClientInfo
from barricade.decide.rules import Rules
from barricade.plugin import ScannerError
from barricade.policy.pipeline import Check, Context, Pipeline, Trust
from barricade.policy.verdict import Action, CheckError, Flag, Verdict, ireject, tag
from barricade.replies import Catalogue
from tests.coroutines import finished


def ctx() -> Context:
    return Context("SID", ClientInfo("192.0.2.1", 1))


def run(pipeline: Pipeline, phase: str, c: Context, *args):
    return finished(pipeline.run(phase, c, *args))


class Gives(Check):
    def __init__(self, name: str, verdict: Verdict, log: list | None = None):
        self.name, self.verdict, self.log = name, verdict, log if log is not None else []

    async def connect(self, ctx):
        self.log.append(self.name)
        return self.verdict

    async def rcpt(self, ctx, rcpt):
        self.log.append(self.name)
        return self.verdict


def test_tag_is_a_verdict_the_phase_goes_on_after():
    log: list = []
    p = Pipeline([Gives("tagger", tag(reason="looks like spam"), log), Gives("next", Verdict(), log)],
                 MemoryReactorClock(), 5)
    c = ctx()
    assert run(p, "rcpt", c, "a@example.com").action is Action.TAG
    assert log == ["tagger", "next"] and [v.check for v in c.tags] == ["tagger"]
    Rules(Catalogue(), None, "mx.test", subject_tag="[SPAM]").apply_tags(c)
    assert c.subject_tag == "[SPAM]"
    assert c.added_headers == [("X-Spam-Flag", "YES"), ("X-Spam-Reason", "looks like spam")]
    c.reset_transaction()
    assert c.tags == [] and c.added_headers == []


def test_a_tag_at_connect_marks_every_message_of_the_session_with_its_reply_text():
    p = Pipeline([Gives("tagger", tag(120))], MemoryReactorClock(), 5)
    c = ctx()
    run(p, "connect", c)
    rules = Rules(Catalogue(), None, "mx.test")
    for _ in range(2):
        c.reset_transaction()
        rules.apply_tags(c)
        assert ("X-Spam-Reason", "host unknown [192.0.2.1] black listed") in c.added_headers


def test_ireject_is_a_reject_smtp_delay_checks_does_not_hold():
    assert Action.IREJECT is Action.REJECT
    v = ireject(854)
    assert v.action is Action.REJECT and Flag.DELAY not in v.flags and v.decisive
    rules = Rules(Catalogue(), None, "mx.test", delay_checks=True)
    assert rules.refusal(ctx(), "connect", v).reply.id == 854


def test_one_exception_type_carries_the_reply():
    class Broken(Check):
        name = "broken"

        async def connect(self, ctx):
            raise CheckError(186, "backend down", detail="x")

    v = run(Pipeline([Broken()], MemoryReactorClock(), 5), "connect", ctx())
    assert (v.action, v.reply_id, v.fields, v.check) == (Action.TEMPFAIL, 186, {"detail": "x"}, "broken")
    assert issubclass(ScannerError, CheckError)
    assert ScannerError(180, "refused", 111).verdict() == Verdict(Action.TEMPFAIL, 180,
                                                                  {"error": "refused", "errno": 111})


def test_note_scopes():
    c = ctx()
    c.notes["mine"] = 1
    c.notes["session.old-spelling"] = 2
    c.session_notes["mine"] = 3
    c.reset_transaction()
    assert c.notes == {"session.old-spelling": 2} and c.session_notes == {"mine": 3}


def test_trust_is_one_value_per_scope():
    log: list = []
    p = Pipeline([Gives("white", Verdict(Action.ACCEPT), log)], MemoryReactorClock(), 5)
    c = ctx()
    run(p, "connect", c)
    assert (c.session_trust, c.trust) == (Trust.WHITE, Trust.NONE) and c.trusted
    c = ctx()
    run(Pipeline([Gives("content", Verdict(Action.CONTENT))], MemoryReactorClock(), 5), "rcpt", c, "a@b")
    assert (c.session_trust, c.trust) == (Trust.NONE, Trust.CONTENT) and not c.trusted
    c.white_av = True  # the older flags still read and write the one value
    assert c.trust is Trust.FULL and c.white and c.white_envelope
    c.reset_transaction()
    assert c.trust_level is Trust.NONE and not c.white_envelope
