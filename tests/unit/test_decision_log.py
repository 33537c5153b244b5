"""The decision log's record, its text line, the JSON log and the workers' relay: no daemon."""

from __future__ import annotations

import inspect
import io
import json
import re
import sys
from dataclasses import dataclass, field

import pytest
from twisted.logger import LogLevel, formatEvent, formatEventAsClassicLogText
from twisted.python.failure import Failure

from barricade import decision_log as dl
from barricade import logs
from barricade.client import ClientInfo
from barricade.decide.outcome import Outcome
from barricade.protocol import events as ev
from barricade.protocol.grammar import Path
from barricade.replies import Catalogue, ReplyId
from tests.unit.test_session import converse, make

CAT = Catalogue()


class Stopped:
    """A reactor that is not running: the log writers write each line at once."""

    running = False


STOPPED = Stopped()


@dataclass
class Env:
    """What the builder reads of a session (the checks' Context has more)."""

    session_id: str = "1MGABC000"
    client: ClientInfo = field(default_factory=lambda: ClientInfo("192.0.2.7", 4000, "mx.example.net"))
    helo: str = "mx.example.net"
    esmtp: bool = True
    tls: bool = False
    sender: str | None = "a@example.org"
    rcpts: list[str] = field(default_factory=list)
    qid: str = ""
    # What must never reach the log: a command's other arguments, the checks' notes.
    mail_params: dict = field(default_factory=lambda: {"AUTH": "<s3cr3t-mail-auth>"})
    notes: dict = field(default_factory=lambda: {"auth.password": "hunter2-secret"})
    password: str = "hunter2-secret"


def relaying_denied(rcpt: str = "x@elsewhere.example"):
    return CAT.reply(ReplyId.RELAYING_DENIED, rcpt=rcpt)


def test_action_follows_the_reply_and_the_fate():
    ok, temp, perm = CAT.reply(ReplyId.OK), CAT.reply(ReplyId.NO_FORWARDER), relaying_denied()
    assert [dl.action_of(r) for r in (ok, temp, perm)] == ["accept", "tempfail", "reject"]
    assert dl.action_of(perm, drop=True) == "drop"
    assert dl.action_of(ok, message="discard") == "discard"


def test_record_has_every_field_in_order_and_names_what_decided():
    rec = dl.decision("rcpt", Env(), relaying_denied(), rcpts=["x@elsewhere.example"], delay=0.00123)
    assert tuple(rec) == dl.FIELDS
    assert rec["qid"] is None and rec["action"] == "reject" and rec["stage"] == "rcpt"
    assert (rec["reply_id"], rec["code"], rec["status"]) == (288, 550, "5.7.1")
    assert rec["check"] == "route" and rec["nrcpt"] == 1 and rec["proto"] == "ESMTP"
    assert dl.decision("rcpt", Env(), relaying_denied(), check="dns-bl")["check"] == "dns-bl"
    accepted = dl.decision("dot", Env(qid="Q01"), CAT.reply(ReplyId.MESSAGE_ACCEPTED, qid="Q01"),
                           message="accept")
    assert accepted["check"] == "downstream" and accepted["qid"] == "Q01"
    with pytest.raises(ValueError):
        dl.decision("auth", Env(), None)


def test_text_reads_like_postfix_smtpd():
    rec = dl.decision("rcpt", Env(), relaying_denied(), rcpts=["x@elsewhere.example"], delay=0.00123)
    assert dl.text(rec) == (
        "session 1MGABC000: NOQUEUE: reject: RCPT from mx.example.net[192.0.2.7]: "
        "550 5.7.1 recipient <x@elsewhere.example> relaying denied #288; "
        "from=<a@example.org> to=<x@elsewhere.example> proto=ESMTP helo=<mx.example.net> "
        "check=route delay=0.001")
    msg = dl.decision("dot", Env(qid="1MGABC00001", tls=True), CAT.reply(ReplyId.MESSAGE_ACCEPTED,
                      qid="1MGABC00001"), message="accept", rcpts=["b@example.com", "c@example.com"],
                      size=4096, delay=0.0123, downstream="250 2.0.0 Ok: queued as 4Xy")
    assert dl.text(msg) == (
        "session 1MGABC000: 1MGABC00001: accept: DOT from mx.example.net[192.0.2.7]: "
        "250 2.0.0 message 1MGABC00001 accepted #554; from=<a@example.org> "
        "to=<b@example.com>,<c@example.com> nrcpt=2 size=4096 proto=ESMTPS helo=<mx.example.net> "
        "check=downstream delay=0.012 downstream=(250 2.0.0 Ok: queued as 4Xy)")


def test_connect_refusal_before_helo_has_no_helo_nor_proto():
    rec = dl.decision("connect", Env(helo="", sender=None), CAT.reply(ReplyId.NO_FORWARDER))
    line = dl.text(rec)
    assert ": tempfail: CONNECT from mx.example.net[192.0.2.7]: 421 " in line
    assert "helo=" not in line and "proto=" not in line and "from=<" not in line


def test_no_secret_has_a_way_into_the_record():
    params = set(inspect.signature(dl.decision).parameters)
    assert params == {"stage", "env", "reply", "drop", "message", "check", "rcpts", "size", "delay",
                      "qid", "downstream", "sender"}
    env = Env()
    rec = dl.decision("mail", env, CAT.reply(ReplyId.NO_FORWARDER))
    out = dl.text(rec) + dl.json_line(rec) + json.dumps(logs.record({logs.RECORD: rec}))
    assert "hunter2" not in out and "s3cr3t" not in out


def test_line_is_built_once_and_only_when_asked(monkeypatch):
    calls = []
    real = dl.text
    monkeypatch.setattr(dl, "text", lambda rec: calls.append(1) or real(rec))
    line = dl.Line(dl.decision("rcpt", Env(), relaying_denied(), rcpts=["x@elsewhere.example"]))
    assert calls == []
    assert f"{line}" == str(line) and "NOQUEUE: reject: RCPT" in str(line)
    assert calls == [1]


def test_pending_takes_the_envelope_before_the_handler_resets_it():
    env = Env(rcpts=["b@example.com"], qid="OLD01")
    dot = dl.Pending("dot", env, ev.EndOfData(4096), 10.0)
    env.sender, env.rcpts = None, []  # what the handler's end of transaction does
    rec = dot.record(env, CAT.reply(ReplyId.MESSAGE_ACCEPTED, qid="OLD01"), 10.25, message="accept")
    assert (rec["sender"], rec["rcpts"], rec["size"], rec["qid"]) == (
        "a@example.org", ["b@example.com"], 4096, "OLD01")
    assert rec["delay"] == 0.25

    env = Env(qid="OLD01")
    mail = dl.Pending("mail", env, ev.Mail(Path("new@example.org", {})), 0.0)
    assert mail.record(env, CAT.reply(ReplyId.SENDER_ACCEPTED), 0.1) is None  # nothing ended
    rec = mail.record(env, CAT.reply(ReplyId.NO_FORWARDER), 0.1)
    assert rec["sender"] == "new@example.org" and rec["qid"] is None  # not the last message's

    rcpt = dl.Pending("rcpt", env, ev.Rcpt(Path("b@example.com", {})), 0.0)
    assert rcpt.record(env, CAT.reply(ReplyId.RECIPIENT_ACCEPTED, rcpt="b@example.com"), 0.1) is None
    assert rcpt.record(env, relaying_denied(), 0.1)["rcpts"] == ["b@example.com"]

    data = dl.Pending("data", env, ev.Data(), 0.0)
    env.qid = "NEW01"  # DATA named the message, then a check refused it
    assert data.record(env, CAT.reply(ReplyId.NO_FORWARDER), 0.1)["qid"] == "NEW01"
    dropped = dl.Pending("data", env, None, 0.0, in_message=True)
    rec = dropped.record(env, CAT.reply(ReplyId.LOST_DURING_DATA), 0.0, drop=True)
    assert (rec["action"], rec["qid"], rec["check"]) == ("drop", "NEW01", "downstream")


def test_outcome_carries_the_deciding_check():
    assert Outcome(None).check == ""
    assert Outcome(None, check="dns-bl").check == "dns-bl"


def test_every_reply_names_the_session_id():
    s = make()
    out = b""
    for data in (b"EHLO client.example\r\n", b"MAIL FROM:<a@example.org>\r\n", b"RCPT TO:<b@example.com>\r\n",
                 b"BOGUS\r\n", b"VRFY x\r\n", b"DATA\r\n", b"hi\r\n.\r\n", b"RSET\r\n", b"NOOP\r\n",
                 b"HELP\r\n", b"QUIT\r\n"):
        out += converse(s, data)[1]
    lines = out.split(b"\r\n")[:-1]
    firsts = [line for i, line in enumerate(lines) if i == 0 or lines[i - 1][3:4] == b" "]
    assert len(firsts) == 11
    assert all(re.search(rb" #\d+ SID$", line) for line in firsts), firsts


# --- the JSON log and the workers' relay --------------------------------------------------


def event(**kw) -> dict:
    base = {"log_level": LogLevel.info, "log_namespace": "barricade.test", "log_time": 1_700_000_000.5,
            "log_format": "session {sid}: {what}", "sid": "1MGABC000", "what": "hello", "n": 3,
            "obj": object()}
    base.update(kw)
    return base


def test_record_of_a_plain_event_has_text_sid_and_scalar_fields():
    rec = logs.record(event())
    assert rec["time"] == "2023-11-14T22:13:20.500+00:00" and rec["level"] == "info"
    assert (rec["event"], rec["ns"], rec["msg"], rec["sid"]) == (
        "log", "barricade.test", "session 1MGABC000: hello", "1MGABC000")
    assert rec["fields"] == {"sid": "1MGABC000", "what": "hello", "n": 3}


def test_record_of_a_failure_keeps_the_traceback():
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        failure = Failure()
    rec = logs.record(event(log_level=LogLevel.critical, log_failure=failure))
    assert rec["level"] == "critical" and "RuntimeError: boom" in rec["msg"]


def test_json_observer_writes_one_object_per_line():
    out = io.StringIO()
    observer = logs.json_observer(out, reactor=STOPPED)
    rec = dl.decision("rcpt", Env(), relaying_denied(), rcpts=["x@elsewhere.example"])
    observer(event())
    observer({"log_level": LogLevel.info, "log_time": 1.0, "log_format": "{barricade_line}",
              "barricade_line": dl.Line(rec), logs.RECORD: rec})
    first, second = (json.loads(x) for x in out.getvalue().splitlines())
    assert first["msg"] == "session 1MGABC000: hello"
    assert list(second)[:3] == ["time", "level", "event"] and second["reply_id"] == 288


def test_emit_decision_is_a_structured_event(monkeypatch):
    seen = []
    monkeypatch.setattr(logs, "globalLogPublisher", seen.append)
    rec = dl.decision("rcpt", Env(), relaying_denied(), rcpts=["x@elsewhere.example"])
    logs.emit_decision(rec)
    [e] = seen
    assert e[logs.RECORD] is rec and e["log_namespace"] == logs.DECISION_NAMESPACE
    assert formatEvent(e).startswith("session 1MGABC000: NOQUEUE: reject: RCPT")


def test_the_master_relays_a_workers_events_with_their_fields():
    out = io.StringIO()
    worker = logs.worker_observer(out, reactor=STOPPED)
    rec = dl.decision("dot", Env(qid="Q01"), CAT.reply(ReplyId.MESSAGE_ACCEPTED, qid="Q01"),
                      message="accept", rcpts=["b@example.com"], size=10)
    worker({"log_level": LogLevel.info, "log_namespace": logs.DECISION_NAMESPACE, "log_time": 5.0,
            "log_format": "{barricade_line}", "barricade_line": dl.Line(rec), logs.RECORD: rec})
    worker(event(log_level=LogLevel.error))
    decision_line, error_line = out.getvalue().encode().splitlines()

    relayed = logs.relayed_event(decision_line, 1, 4242)
    assert relayed[logs.RECORD]["qid"] == "Q01" and relayed[logs.RECORD]["worker"] == 1
    assert relayed["log_time"] == 5.0 and relayed["log_level"] is LogLevel.info
    assert formatEvent(relayed).startswith("worker 1 [4242] session 1MGABC000: Q01: accept: DOT")
    assert logs.record(relayed)["pid"] == 4242  # the JSON log writes it as it came, plus slot/pid

    relayed = logs.relayed_event(error_line, 0, 7)
    assert relayed["log_level"] is LogLevel.error and relayed["log_namespace"] == "barricade.test"
    assert formatEvent(relayed) == "worker 0 [7] session 1MGABC000: hello"
    assert logs.record(relayed)["fields"]["n"] == 3


def test_a_line_that_is_not_json_is_relayed_as_text():
    for line in (b"Traceback (most recent call last):", b"42", b"{broken"):
        relayed = logs.relayed_event(line, 2, 9)
        assert formatEvent(relayed) == f"worker 2 [9] {line.decode()}"
        assert logs.record(relayed)["msg"] == f"worker 2 [9] {line.decode()}"
        assert relayed["log_level"] is LogLevel.warn  # a traceback or a start-up failure's reason


def test_twistd_options_choose_where_the_log_goes(tmp_path):
    path = tmp_path / "barricade.log"
    observer = logs.twistd_observer("json", {"logfile": str(path), "nodaemon": True, "syslog": False})
    observer.writer.reactor = STOPPED
    observer(event())
    observer.writer.out.close()
    assert json.loads(path.read_text())["msg"] == "session 1MGABC000: hello"
    assert logs.twistd_observer("text", {"logfile": "-", "nodaemon": True}).writer.out is sys.stdout
    assert logs.twistd_observer("json", {"nodaemon": True}).fmt is logs.format_json
    assert isinstance(logs.twistd_observer("json", {"syslog": True, "prefix": "bx"}), logs.SyslogJson)
    assert logs.twistd_observer("text", {"syslog": True}) is None  # twistd's own syslog text


def test_text_lines_are_twistds_classic_lines():
    e = event(log_time=1_700_000_000.5)
    assert logs.text_line(e) == formatEventAsClassicLogText(e)
    relayed = logs.relayed_event(json.dumps(logs.record(e)).encode(), 1, 42)
    assert logs.text_line(relayed) == formatEventAsClassicLogText(relayed)
    assert "] worker 1 [42] session 1MGABC000: hello\n" in logs.text_line(relayed)
    multi = logs.relayed_event(b'{"time": "2023-11-14T22:13:20.500+00:00", "msg": "a\\nb"}', 0, 1)
    assert logs.text_line(multi).endswith("worker 0 [1] a\n\tb\n")


def test_the_log_is_written_at_once_and_a_workers_in_batches():
    class Clock:
        running = True

        def __init__(self):
            self.calls = []

        def callLater(self, delay, f):
            self.calls.append((delay, f))

    out, clock = io.StringIO(), Clock()
    logs.text_observer(out, reactor=clock)(event())
    assert out.getvalue().endswith("session 1MGABC000: hello\n") and clock.calls == []
    out = io.StringIO()
    observer = logs.worker_observer(out, reactor=clock)
    for _ in range(3):
        observer(event())
    assert out.getvalue() == "" and len(clock.calls) == 1
    assert clock.calls[0][0] == logs.WORKER_LOG_DELAY
    clock.calls[0][1]()
    assert out.getvalue().count('"msg":"session 1MGABC000: hello"') == 3
    clock.running = False  # stopping: written at once
    observer(event(what="bye"))
    assert '"msg":"session 1MGABC000: bye"' in out.getvalue().splitlines()[-1]


def test_the_top_service_hands_twistd_the_observer():
    from twisted.application import service
    from twisted.logger import ILogObserver

    from barricade.tap import _Logged

    observer = logs.json_observer(io.StringIO(), reactor=STOPPED)
    app = service.Application("barricade")
    _Logged(observer).setServiceParent(app)
    assert app.getComponent(ILogObserver) is observer


def test_client_text_cannot_forge_or_break_a_log_line():
    """A CR let a forged decision line show over the real one (a MIME file name, a
    call-back MX's reply); U+2028 in an SMTPUTF8 address cut a JSON record in three."""
    from barricade.logs import text_line

    forged = "x.exe\r2026-12-04T16:51:00+0000 [barricade.decision#info] session F: accept\x1b[1A"
    line = text_line({"barricade_line": f"session S: attachment {forged}", "log_namespace": "n", "log_time": 0})
    assert line.count("\n") == 1 and "\r" not in line and "\x1b" not in line
    assert "x.exe\\x0d2026" in line and "\\x1b[1A" in line
    classic = text_line({"log_format": "name {n}", "n": "a\u2028b\u202ec", "log_namespace": "n", "log_time": 0})
    assert classic.endswith("name a\\u2028b\\u202ec\n")
    record = dl.json_line({"to": 'x\u2028{"event":"decision"}\x85@example.net'})
    assert len(record.splitlines()) == 1 and json.loads(record)["to"].startswith("x\u2028")
