"""The admin commands' parsing, option changes and replies (sans-IO), and the session's dispatch."""

from __future__ import annotations

import json
import re

import pytest
from prometheus_client import CollectorRegistry, Counter
from twisted.internet import defer, task
from twisted.internet.testing import StringTransport

from barricade.admin import (
    ADMIN_VERBS,
    AdminError,
    Answers,
    Request,
    apply_option,
    counter_totals,
    option_lines,
    parse,
    render,
    verb_change,
)
from barricade.client import ClientInfo
from barricade.net.control import ControlServer, _Pending, _WorkerLink
from barricade.options import REGISTRY, OptionError
from barricade.protocol import events as ev
from barricade.protocol.session import HELP_COMMANDS, Session, SessionConfig
from barricade.replies import Catalogue, ReplyId

CAT = Catalogue()


# --- parsing ---------------------------------------------------------------------------

@pytest.mark.parametrize("verb, arg, want", [
    ("STAT", "", Request("STAT")),
    ("conn", "", Request("CONN")),
    ("INFO", " ", Request("INFO")),
    ("HELP", "KILL", Request("HELP")),
    ("KILL", "1MGXX08MG000", Request("KILL", "", ("1MGXX08MG000",))),
    ("CACHE", "get call-ahead:x@example.com", Request("CACHE", "GET", ("call-ahead:x@example.com",))),
    ("CACHE", "PUT k a value with spaces", Request("CACHE", "PUT", ("k", "a value with spaces"))),
    ("CACHE", "DELETE k", Request("CACHE", "DELETE", ("k",))),
    ("OPTN", "", Request("OPTN")),
    ("OPTN", "+rfc2920-pipelining", Request("OPTN", "set", ("+rfc2920-pipelining",))),
    ("OPTN", "smtp-drop-after=3", Request("OPTN", "set", ("smtp-drop-after=3",))),
    ("VERB", "", Request("VERB")),
    ("VERB", "debug -net.server", Request("VERB", "set", ("debug", "-net.server"))),
])
def test_parse(verb, arg, want):
    assert parse(verb, arg) == want


@pytest.mark.parametrize("verb, arg, problem", [
    ("STAT", "H", "takes no argument"),
    ("KILL", "", "needs one session id"),
    ("KILL", "a b", "needs one session id"),
    ("KILL", "x" * 41, "needs one session id"),
    ("KILL", "1MG;rm", "needs one session id"),
    ("CACHE", "", "expected GET, PUT or DELETE"),
    ("CACHE", "FLUSH all", "expected GET, PUT or DELETE"),
    ("CACHE", "GET", "needs a key"),
    ("CACHE", "GET a b", "GET takes one key"),
    ("CACHE", "PUT k", "PUT needs a value"),
    ("CACHE", "GET " + "k" * 201, "key longer than 200"),
    ("CACHE", "PUT k " + "v" * 1001, "value longer than 1000"),
    ("CACHE", "PUT k v\x01", "not printable"),
    ("OPTN", "smtp-drop-after", "expected +name, -name or name=value"),
    ("OPTN", "+a=b", "expected +name, -name or name=value"),
    ("OPTN", "x=" + "9" * 2000, "too long"),
    ("VERB", "loud", "expected a level"),
    ("VERB", "x=loud", "expected a level"),
    ("VERB", "+a/b", "dotted module name"),
    ("VERB", " ".join(["debug"] * 17), "at most 16"),
])
def test_parse_refuses_with_the_problem(verb, arg, problem):
    with pytest.raises(AdminError, match=re.escape(problem)):
        parse(verb, arg)


def test_verb_words():
    assert verb_change("DEBUG") == ("", "debug")
    assert verb_change("+policy") == ("barricade.policy", "debug")
    assert verb_change("-net.server") == ("barricade.net.server", "warn")
    assert verb_change("plugins.clamd=error") == ("plugins.clamd", "error")
    assert verb_change("barricade.dns=info") == ("barricade.dns", "info")


def test_which_requests_go_to_every_worker():
    assert parse("STAT", "").fanout and parse("CONN", "").fanout and parse("KILL", "x").fanout
    assert parse("OPTN", "-smtp-drop-unknown").fanout and parse("VERB", "info").fanout
    assert not parse("OPTN", "").fanout and not parse("VERB", "").fanout
    assert not parse("CACHE", "GET k").fanout and not parse("INFO", "").fanout


def test_request_round_trips_through_the_channel_and_refuses_garbage():
    req = parse("CACHE", "PUT k v w")
    assert Request.from_dict(json.loads(json.dumps(req.to_dict()))) == req
    for bad in ({"verb": "SHUTDOWN"}, {"verb": "KILL", "args": [1]}, {"verb": 3}, {"verb": "STAT", "args": "x"}):
        with pytest.raises(AdminError):
            Request.from_dict(bad)


# --- options ---------------------------------------------------------------------------

def test_live_options_change_in_place_the_rest_need_a_restart():
    config = REGISTRY.parse([])
    assert apply_option(config, REGISTRY, "smtp-drop-after=2") == "smtp-drop-after=2"
    assert config["smtp-drop-after"] == 2
    assert apply_option(config, REGISTRY, "-rfc2920-pipelining") == "-rfc2920-pipelining"
    assert config["rfc2920-pipelining"] is False
    with pytest.raises(PermissionError):
        apply_option(config, REGISTRY, "route-map=/etc/passwd")
    with pytest.raises(KeyError):
        apply_option(config, REGISTRY, "no-such-option=1")
    with pytest.raises(OptionError):
        apply_option(config, REGISTRY, "smtp-drop-after=lots")
    assert config["smtp-drop-after"] == 2  # a refused change changes nothing
    # Too large for a float: every session after it failed (#908) or hung in its start.
    for change in ("smtp-session-timeout=" + "9" * 400, "smtp-greet-pause=" + "9" * 20):
        with pytest.raises(OptionError, match="is larger than 2147483647"):
            apply_option(config, REGISTRY, change)
    with pytest.raises(OptionError):
        config.update_live("interfaces", ["x"])


def test_option_listing_marks_the_live_ones():
    config = REGISTRY.parse([])
    lines = dict(option_lines(config, REGISTRY))
    assert lines["+rfc2920-pipelining"] is True
    assert lines["workers=0"] is False
    live = {opt.name for opt in REGISTRY if opt.live}
    assert "smtp-drop-after" in live and "route-map" not in live and "redis-url" not in live


def test_option_listing_never_shows_a_password():
    config = REGISTRY.parse(["tls-server-key-pass=hunter2", "redis-url=redis://user:s3cret@127.0.0.1:6379/0"])
    text = " ".join(line for line, _ in option_lines(config, REGISTRY))
    assert "hunter2" not in text and "s3cret" not in text
    assert "tls-server-key-pass=(set, not shown)" in text
    assert "redis-url=redis://user:***@127.0.0.1:6379/0" in text


# --- replies ---------------------------------------------------------------------------

def stat(active: int, replies: float, start: float = 1000.0) -> dict:
    return {"start": start, "now": 1100.0, "active": active, "counters": {"sessions": active, "replies{id=288}": replies}}


def session_row(sid: str, age: float) -> dict:
    return {"id": sid, "state": "command", "name": "localhost", "ip": "127.0.0.1", "port": 4000,
            "age": age, "idle": 1.5, "octets": 42}


def test_stat_sums_the_workers_and_names_the_silent_one():
    answers = Answers({"0": stat(2, 3), "1": stat(1, 4, start=900.0), "2": None}, 5.0)
    reply, drop = render(parse("STAT", ""), answers, CAT)
    assert reply.id == ReplyId.ADMIN_LISTING and reply.code == 214 and not drop
    assert "active-connections=3" in reply.lines and "replies{id=288}=7" in reply.lines
    assert "workers=2" in reply.lines and "age=200" in reply.lines
    assert reply.lines[-1] == "worker 2: no answer within 5s"
    wire = reply.encode("S1").decode()
    assert wire.startswith("214-2.0.0 statistics #993 S1\r\n") and wire.endswith("214 2.0.0 worker 2: no answer within 5s\r\n")


def test_conn_lists_every_worker_oldest_first():
    answers = Answers({"0": {"sessions": [session_row("A", 3)]}, "1": {"sessions": [session_row("B", 9)]}}, 5.0)
    reply, _ = render(parse("CONN", ""), answers, CAT)
    assert reply.lines[1] == "sessions=2"
    assert reply.lines[2] == "B command localhost [127.0.0.1]:4000 age=9s idle=1s octets=42 worker=1"
    assert reply.lines[3].startswith("A command") and reply.lines[3].endswith("worker=0")
    single, _ = render(parse("CONN", ""), Answers.single({"sessions": [session_row("A", 3)]}), CAT)
    assert "worker=" not in single.lines[2]


def test_kill_found_not_found_and_unknown_because_a_worker_is_silent():
    req = parse("KILL", "S9")
    reply, drop = render(req, Answers({"0": {"killed": False}, "1": {"killed": True}}), CAT)
    assert (reply.id, reply.code, drop) == (ReplyId.ADMIN_KILLING, 214, False)
    assert reply.text == "killing session S9"
    reply, drop = render(req, Answers({"0": {"killed": True, "self": True}}), CAT)
    assert reply.id == 324 and drop  # the asking session goes once it has its answer
    reply, _ = render(req, Answers({"0": {"killed": False}, "1": {"killed": False}}), CAT)
    assert (reply.id, reply.code) == (326, 504)
    reply, _ = render(req, Answers({"0": {"killed": False}, "1": None}, 5.0), CAT)
    assert (reply.id, reply.code) == (996, 451) and "no answer from 1" in reply.text


def test_no_answer_at_all_is_a_temporary_failure():
    reply, _ = render(parse("CONN", ""), Answers({}, 7.0), CAT)
    assert (reply.id, reply.code, reply.status) == (996, 451, "4.3.0")
    assert "the master did not answer" in reply.text


def test_option_change_replies():
    req = parse("OPTN", "smtp-drop-after=3")
    ok = {"setting": "smtp-drop-after=3"}
    reply, _ = render(req, Answers({"0": ok, "1": ok}), CAT)
    assert (reply.id, reply.text) == (994, "OPTN smtp-drop-after=3 in 2 workers")
    reply, _ = render(req, Answers({"0": ok, "1": None}, 5.0), CAT)
    assert reply.id == 996 and "no answer from 1" in reply.text
    reply, _ = render(parse("OPTN", "interfaces=x"), Answers.single({"refused": "restart", "option": "interfaces"}), CAT)
    assert (reply.id, reply.code, reply.text) == (323, 501, "interfaces requires restart")
    reply, _ = render(parse("OPTN", "nope=1"), Answers.single({"refused": "unknown", "option": "nope"}), CAT)
    assert (reply.id, reply.code, reply.text) == (997, 504, "option nope not found")
    reply, _ = render(req, Answers.single({"refused": "option smtp-drop-after: 'x' is not a number"}), CAT)
    assert (reply.id, reply.code) == (995, 501)


def test_cache_replies():
    reply, _ = render(parse("CACHE", "GET k"), Answers.single({"value": "v 1"}), CAT)
    assert (reply.id, reply.lines) == (993, ("CACHE k", "v 1"))
    reply, _ = render(parse("CACHE", "GET k"), Answers.single({"missing": True}), CAT)
    assert (reply.id, reply.text) == (997, "key k not found")
    reply, _ = render(parse("CACHE", "PUT k v"), Answers.single({"ok": True}), CAT)
    assert (reply.id, reply.text) == (994, "CACHE k stored")
    reply, _ = render(parse("CACHE", "DELETE k"), Answers.single({"error": "shared store unavailable"}), CAT)
    assert (reply.id, reply.code) == (996, 451)


def test_help_lists_smtp_and_admin_commands():
    reply, _ = render(parse("HELP", ""), Answers.single({"ok": True}), CAT, smtp_commands=HELP_COMMANDS)
    assert reply.id == ReplyId.HELP
    assert all(verb in reply.text for verb in ADMIN_VERBS) and "EHLO" in reply.text
    assert any(line.startswith("KILL <session-id>") for line in reply.lines)


def test_client_text_in_a_listing_cannot_break_the_reply():
    reply, _ = render(parse("CACHE", "GET k"), Answers.single({"value": "a\r\n250 forged"}), CAT)
    assert reply.encode().count(b"\r\n") == 2


def test_counter_totals_names_and_sums():
    registry = CollectorRegistry()
    replies = Counter("barricade_replies", "r", ["id"], registry=registry)
    replies.labels("288").inc(2)
    Counter("barricade_sessions", "s", registry=registry).inc(5)
    totals = counter_totals(registry.collect())
    assert totals == {"replies{id=288}": 2, "sessions": 5}


def test_the_admin_replies_are_catalogued_with_names():
    for rid in (323, 324, 325, 326, 993, 994, 995, 996, 997):
        assert rid in CAT and CAT.spec(rid).event == "admin"
        assert rid in {int(r) for r in ReplyId}


# --- the session: localhost only --------------------------------------------------------

def session(ip: str, localhost: bool) -> Session:
    client = ClientInfo(ip=ip, port=4000, name="localhost" if localhost else "x.example", localhost=localhost)
    s = Session(SessionConfig(), client, CAT, "S1")
    s.greet(CAT.reply(ReplyId.GREETING, hostname="h"))
    return s


@pytest.mark.parametrize("line", [b"STAT", b"conn", b"KILL S2", b"CACHE GET k", b"OPTN", b"VERB", b"INFO", b"HELP"])
def test_localhost_gets_admin_events(line):
    s = session("127.0.0.1", True)
    s.receive_data(line + b"\r\n")
    event = s.next_event()
    assert isinstance(event, ev.Admin) and event.verb == line.split()[0].decode().upper()


@pytest.mark.parametrize("line", [b"STAT", b"KILL S2", b"CACHE GET k", b"OPTN +x"])
def test_anyone_else_gets_the_unknown_command_reply(line):
    s = session("192.0.2.1", False)
    s.receive_data(line + b"\r\n")
    event = s.next_event()
    assert isinstance(event, ev.Violation) and event.reply.id == ReplyId.COMMAND_UNKNOWN
    s = session("192.0.2.1", False)
    s.receive_data(b"HELP\r\n")
    assert isinstance(s.next_event(), ev.Help)


def test_after_xclient_the_new_client_counts():
    s = session("127.0.0.1", True)
    s.restart(ClientInfo(ip="192.0.2.1", port=1, name="x.example"), None)
    s.receive_data(b"STAT\r\n")
    assert s.next_event().reply.id == ReplyId.COMMAND_UNKNOWN


# --- the control channel ----------------------------------------------------------------

def test_pending_call_gives_none_after_its_timeout():
    clock = task.Clock()
    pending = _Pending(clock)
    call_id, d = pending.new(5.0)
    results = []
    d.addCallback(results.append)
    clock.advance(4.9)
    assert results == []
    clock.advance(0.2)
    assert results == [None] and not pending.calls
    pending.answer(call_id, {"late": True})  # a late answer is ignored
    assert results == [None]


def test_fan_out_merges_answers_and_marks_silent_and_missing_workers():
    clock = task.Clock()
    seen = []
    server = ControlServer(clock, lambda: ["0", "1", "2"], lambda req, ans: seen.append(ans), timeout=5.0)
    links = {}
    for slot in ("0", "1"):
        link = _WorkerLink(server)
        link.makeConnection(StringTransport())
        link.lineReceived(json.dumps({"op": "hello", "slot": slot}).encode())
        links[slot] = link
    d = defer.ensureDeferred(server.fan_out({"verb": "STAT", "op": "", "args": []}))
    sent = json.loads(links["0"].transport.value().decode().strip())
    assert sent["op"] == "do" and sent["request"]["verb"] == "STAT"
    links["0"].lineReceived(json.dumps({"op": "done", "id": sent["id"], "result": {"x": 1}}).encode())
    links["0"].lineReceived(b"not json")  # dropped, the link stays
    clock.advance(5.0)  # worker 1 never answers; worker 2 never connected
    answers = d.result
    assert answers.by_worker == {"0": {"x": 1}, "1": None, "2": None}
    assert seen == [answers]


def test_an_oversized_control_line_closes_the_link():
    server = ControlServer(task.Clock(), lambda: [])
    link = _WorkerLink(server)
    transport = StringTransport()
    link.makeConnection(transport)
    link.dataReceived(b"x" * (link.MAX_LENGTH + 2))
    assert transport.disconnecting


# --- VERB's levels ----------------------------------------------------------------------


def _verb(*words: str):
    from twisted.logger import LogLevel

    from barricade.net.admin import LogLevels

    passed: list[str] = []
    levels = LogLevels(publisher=lambda event: passed.append(event["log_namespace"]))
    levels.set(words)

    def logged(namespace: str | None, level: str | None) -> bool:
        before = len(passed)
        levels.observer({"log_namespace": namespace,
                         "log_level": None if level is None else LogLevel.levelWithName(level)})
        return len(passed) > before

    return levels, logged


def test_verb_sets_the_default_level_and_a_modules_by_dotted_prefix():
    levels, logged = _verb()
    assert logged("barricade.policy.grey", "info") and not logged("barricade.policy.grey", "debug")
    levels.set(("warn",))  # the default: it used to change nothing
    assert not logged("barricade.policy.grey", "info") and logged("barricade.policy.grey", "warn")
    levels.set(("debug",))
    assert logged("barricade.policy.grey", "debug")
    levels.set(("info", "+net.server"))  # +: debug for that module and those under it
    assert logged("barricade.net.server", "debug") and logged("barricade.net.server.sub", "debug")
    assert not logged("barricade.net.conductor", "debug") and logged("barricade.net.conductor", "info")
    levels.set(("-net.server",))  # -: warn
    assert not logged("barricade.net.server", "info") and logged("barricade.net.server", "error")
    assert levels.listing() == [["", "info"], ["barricade.net.server", "warn"]]


def test_an_event_without_a_level_or_a_namespace_is_not_logged():
    _, logged = _verb("debug")
    assert not logged(None, "error") and not logged("", "error") and not logged("barricade.x", None)
