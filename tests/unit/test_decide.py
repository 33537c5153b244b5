"""The decision layer on its own: verdicts and downstream results in, decisions out."""

from __future__ import annotations

import pytest

from barricade.client import ClientInfo
from barricade.decide.aggregate import combine, succeeded
from barricade.decide.identity import xclient_identity
from barricade.decide.outcome import Downstream
from barricade.decide.rules import Rules
from barricade.net.forward import DownstreamError, DownstreamReply
from barricade.policy.pipeline import Context
from barricade.policy.verdict import Action, Flag, Verdict
from barricade.replies import Catalogue

CATALOGUE = Catalogue()


def ok(code: int = 250) -> DownstreamReply:
    return DownstreamReply(code, ("ok",))


def no(code: int = 550) -> DownstreamReply:
    return DownstreamReply(code, ("5.7.1 no" if code >= 500 else "4.7.1 later",))


class Routes:
    """The route map's answers the rules ask for."""

    local = object()

    def for_recipient(self, rcpt):
        return None if rcpt.endswith("@elsewhere.example") else self.local

    def is_relay(self, ip, name):
        return ip == "10.0.0.1"


def rules(**kw) -> Rules:
    return Rules(CATALOGUE, Routes(), "mx.test", **kw)


def context() -> Context:
    return Context(session_id="S1", client=ClientInfo("192.0.2.1", 25))


@pytest.mark.parametrize("results, expect, lost, rid, drop", [
    ([ok(), no()], 250, 902, 307, False),  # mixed: temporary
    ([no(554), no(550)], 250, 902, 306, False),  # all refused: permanent
    ([no(550), no(451)], 250, 902, 307, False),  # not all permanent
    ([ok(), DownstreamError("lost", "h")], 250, 902, 902, True),
    ([DownstreamError("lost", "h")], 354, 903, 903, False),
    ([ok(), DownstreamError("timeout", "h")], 250, 902, 904, True),
])
def test_combined_results(results, expect, lost, rid, drop):
    combined = combine(results, expect, lost)
    assert (combined.reply_id, combined.drop) == (rid, drop)


def test_one_refusal_is_relayed_as_it_came_with_relay_reply():
    combined = combine([no()], 250, 902, relay_reply=True)
    assert combined.reply_id == 299 and combined.relayed.code == 550


def test_success_needs_every_route():
    assert succeeded([ok(), ok()], 250)
    assert not succeeded([], 250)
    assert not succeeded([ok(), DownstreamError("lost", "h")], 250)
    assert succeeded([ok(354)], 354) and not succeeded([ok(250)], 354)


def test_delivered_is_250_only_when_all_said_250():
    r, ctx = rules(), context()
    ctx.qid = "Q1"
    assert r.delivered(ctx, [ok(), ok()]).message == "accept"
    out = r.delivered(ctx, [ok(), no()])
    assert out.reply.id == 307 and out.message == "downstream-fail"
    assert r.delivered(ctx, [DownstreamError("lost", "h")]).reply.code == 421


def test_a_held_refusal_waits_for_the_rcpt_and_a_white_listed_recipient_passes():
    r, ctx = rules(delay_checks=True), context()
    ctx.sender = "fred@example.net"
    refusal = Verdict(Action.REJECT, 856, flags=Flag.DELAY)
    assert r.mail(ctx, refusal).reply.id == 507
    held = r.rcpt(ctx, Verdict(), "john@example.com", Routes.local)
    assert held.reply.id == 856 and held.downstream is Downstream.KEEP
    white = r.rcpt(ctx, Verdict(Action.ACCEPT), "postmaster@example.com", Routes.local)
    assert white.downstream is Downstream.RELAY and white.route is Routes.local
    r.new_transaction()
    assert r.rcpt(ctx, Verdict(), "john@example.com", Routes.local).downstream is Downstream.RELAY


def test_ireject_and_unflagged_refusals_are_never_held():
    r, ctx = rules(delay_checks=True), context()
    assert r.mail(ctx, Verdict(Action.IREJECT, 856)).reply.id == 856
    assert r.connect(ctx, Verdict(Action.REJECT, 120)).reply.id == 120


def test_a_connect_refusal_held_for_the_session_survives_a_new_transaction():
    r, ctx = rules(delay_checks=True), context()
    assert r.connect(ctx, Verdict(Action.REJECT, 120, flags=Flag.DELAY)).reply.id == 633
    r.new_transaction()
    assert r.rcpt(ctx, Verdict(), "john@example.com", Routes.local).reply.id == 120
    r.new_client()
    assert r.rcpt(ctx, Verdict(), "john@example.com", Routes.local).downstream is Downstream.RELAY


def test_routing_comes_before_the_checks_and_a_broken_transaction_refuses():
    r, ctx = rules(), context()
    assert r.before_rcpt_checks(ctx, "x@elsewhere.example").reply.id == 288
    assert r.before_rcpt_checks(ctx, "x@example.com") is Routes.local
    assert r.rcpt_lost(ctx, "lost", "x@example.com", had_recipients=True, other_routes=False).reply.id == 903
    assert r.before_rcpt_checks(ctx, "y@example.com").reply.id == 903
    assert r.before_data_checks(ctx, recipients=True).reply.id == 903


@pytest.mark.parametrize("kind, others, rid", [
    ("timeout", False, 904), ("connect", False, 901), ("connect", True, 295), ("protocol", False, 903),
])
def test_a_downstream_failing_at_rcpt(kind, others, rid):
    assert rules().rcpt_lost(context(), kind, "x@example.com", False, others).reply.id == rid


def test_rcpt_gets_250_only_for_a_downstream_250():
    r, ctx = rules(), context()
    assert r.relayed_rcpt(ctx, ok(), "a@example.com").reply.id == 297
    assert ctx.rcpts == ["a@example.com"]
    refused = r.relayed_rcpt(ctx, no(), "b@example.com").reply
    assert (refused.id, refused.code, refused.status) == (300, 550, "5.7.1")
    assert ctx.rcpts == ["a@example.com"]



@pytest.mark.parametrize("line, ours, relayed, text", [
    ("4.7.1 try later", "5.1.0", "5.0.0", "try later"),  # the class contradicts the code: ours goes
    ("5.1.1 no such user", "5.1.1", "5.1.1", "no such user"),
    ("no status here", "5.1.0", "5.0.0", "no status here"),
])
def test_a_refused_recipient_has_a_status_of_its_code_class(line, ours, relayed, text):
    refused = rules().relayed_rcpt(context(), DownstreamReply(550, (line,)), "b@example.com").reply
    assert (refused.id, refused.code, refused.status) == (300, 550, ours)
    passed = rules(relay_reply=True).relayed_rcpt(context(), DownstreamReply(550, (line,)), "b@example.com")
    assert (passed.reply.id, passed.reply.code, passed.reply.status, passed.reply.text) == (299, 550, relayed, text)


def test_no_354_without_recipients_or_a_354_from_every_route():
    r, ctx = rules(), context()
    assert r.before_data_checks(ctx, recipients=False).reply.id == 923
    assert r.data_started(ctx, [ok(354), ok(354)]).reply.id == 900
    assert r.data_started(ctx, []).reply.id == 900  # spooling: DATA goes downstream at the dot
    failed = r.data_started(ctx, [ok(354), no(554)])
    assert failed.reply.id == 307 and failed.downstream is Downstream.ABORT


def test_end_of_data_discard_is_a_250_with_nothing_delivered():
    r, ctx = rules(), context()
    out = r.end_of_data(ctx, Verdict(Action.DISCARD, 554))
    assert out.reply.code == 250 and out.downstream is Downstream.ABORT and out.message == "discard"
    assert r.end_of_data(ctx, Verdict()) is None


def test_a_verdict_without_a_reply_id_is_907():
    assert rules().verdict_outcome(context(), Verdict(Action.REJECT)).reply.id == 907


@pytest.mark.parametrize("code, sink, drop", [(220, False, False), (550, False, True), (421, True, False)])
def test_xclient_outcome_carries_the_new_identity_accepted_or_not(code, sink, drop):
    """The conductor never writes into the protocol session: the adapter applies the outcome's client."""
    ctx = context()
    ctx.client = ClientInfo("10.0.0.1", 25, "mx.example", ptr="mx.example")
    rid = {220: 633, 550: 120, 421: 329}[code]
    connect = rules().say(ctx, rid, client_name="mx.example", client_ip="10.0.0.1", hostname="mx.test")
    connect.sink = sink
    outcome = rules().xclient(ctx, connect, "helo.example")
    assert (outcome.reply.code, outcome.drop, outcome.sink) == (code, drop, sink)
    assert outcome.client is ctx.client and outcome.client_helo == "helo.example"


def test_xclient_identity():
    old = ClientInfo("127.0.0.1", 25, "localhost", localhost=True, ptr="localhost")
    client, lookup = xclient_identity(old, {"ADDR": "::ffff:10.0.0.1"}, Routes().is_relay)
    assert lookup and client.private and not client.localhost and client.name == "unknown"
    client, lookup = xclient_identity(old, {"ADDR": "10.0.0.1", "NAME": "mx.example"}, Routes().is_relay)
    assert not lookup and client.relay and client.ptr == "mx.example"


@pytest.mark.parametrize("phase", ["connect", "helo", "mail", "rcpt", "data"])
def test_a_discard_before_the_message_marks_it_and_the_session_goes_on(phase):
    """At MAIL it was a 250 with the transaction forgotten: the message then went
    through with a null sender."""
    from barricade.policy.verdict import discarding

    r, ctx = rules(), context()
    ctx.sender = "a@example.org"
    discard = Verdict(Action.DISCARD, 554, check="plugin")
    if phase == "connect":
        assert r.connect(ctx, discard).reply.id == 633  # the greeting
    elif phase == "helo":
        assert r.helo(ctx, discard, ehlo=True).reply.id == 254
    elif phase == "mail":
        assert r.mail(ctx, discard).reply.id == 283  # sender accepted, the transaction kept
        assert ctx.sender == "a@example.org"
    elif phase == "rcpt":
        outcome = r.rcpt(ctx, discard, "b@example.com", object())
        assert outcome.reply is None and outcome.route is not None  # relayed as usual
    else:
        assert r.data(ctx, discard) is None
    assert discarding(ctx)
    session_wide = ctx.notes.get("session.access.discard", False)
    assert session_wide is (phase in ("connect", "helo"))


def test_fields_that_shape_a_reply_cannot_turn_a_refusal_into_a_yes():
    """A plugin's reject(rid, code=250) sent '250 5.7.1 …'; status="…" made a label."""
    from barricade.replies import ENTRIES, ReplySpec

    cat = Catalogue((*ENTRIES, ReplySpec(1302, 550, "5.7.1", "error {why} from backend", "rcpt"),
                     ReplySpec(1303, 250, "2.0.0", "fine", "rcpt")))
    r = Rules(cat, Routes(), "mx.test")
    ctx = context()
    reply = r.verdict_outcome(ctx, Verdict(Action.REJECT, 1302, {"code": 250, "why": "x"})).reply
    assert (reply.code, reply.status, reply.id) == (550, "5.7.1", 1302)
    reply = r.verdict_outcome(ctx, Verdict(Action.REJECT, 1302, {"status": "infected by Eicar"})).reply
    assert (reply.code, reply.status) == (550, "5.7.1")
    reply = r.verdict_outcome(ctx, Verdict(Action.REJECT, 1302, {"status": "4.7.1"})).reply
    assert reply.status == "5.7.1"  # of another class than the code
    reply = r.verdict_outcome(ctx, Verdict(Action.REJECT, 1302, {"lines": "120"})).reply
    assert reply.lines == ("error ? from backend",)
    reply = r.verdict_outcome(ctx, Verdict(Action.REJECT, 1302, {"code": 554, "status": "5.7.9"})).reply
    assert (reply.code, reply.status) == (554, "5.7.9")  # what SPF and the external program do
    # a refusal whose own entry is a 2xx is answered #907, never a yes
    reply = r.verdict_outcome(ctx, Verdict(Action.REJECT, 1303)).reply
    assert (reply.code, reply.id) == (451, 907)


def test_a_relayed_reply_keeps_every_line():
    reply = DownstreamReply(550, ("5.7.1 Service unavailable; client host blocked",
                                  "5.7.1 see https://delist.example/x", "no status on this one"))
    relayed = rules(relay_reply=True).relayed_rcpt(context(), reply, "b@example.com").reply
    assert relayed.encode("S1") == (b"550-5.7.1 Service unavailable; client host blocked #299 S1\r\n"
                                    b"550-5.7.1 see https://delist.example/x\r\n"
                                    b"550 5.7.1 no status on this one\r\n")
