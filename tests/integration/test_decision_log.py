"""The decision log through a real Barricade and smtp-sink: one line per decision
that ends a recipient or a message, found by the session id its reply carries,
in the text log and as JSON lines (``log-format=json``), also through workers."""

from __future__ import annotations

import json
import re

import pytest

from barricade.decision_log import FIELDS
from tests.conftest import routes_to
from tests.daemons import wait_for
from tests.smtpclient import Client

BODY = b"Subject: decision\r\n\r\nhello\r\n"


def sid_of(reply) -> str:
    return re.search(r"#\d+ (\S+)", reply.text).group(1)


def text_decisions(proxy, sid: str) -> list[str]:
    return [line for line in proxy.log_text().splitlines()
            if f"session {sid}: " in line and "[barricade.decision#info]" in line]


def json_records(proxy) -> list[dict]:
    out = []
    for line in proxy.log_text().splitlines():
        if line.strip():
            out.append(json.loads(line))  # every line of the JSON log is one object
    return out


def json_decisions(proxy, sid: str) -> list[dict]:
    return [r for r in json_records(proxy) if r.get("event") == "decision" and r["sid"] == sid]


def decisions(proxy, fmt: str, sid: str, count: int = 1):
    """Wait for ``count`` decisions of session ``sid`` in the log, and return them."""
    get = (lambda: text_decisions(proxy, sid)) if fmt == "text" else (lambda: json_decisions(proxy, sid))
    wait_for(lambda: len(get()) >= count, timeout=10, what=f"{count} decision(s) of {sid}")
    found = get()
    assert len(found) == count, found
    return found


def deliver(port: int, rcpts=("b@example.com",)) -> str:
    with Client(port) as c:
        c.ehlo("client.example.org")
        reply = c.message("a@example.org", list(rcpts), BODY)
        assert reply.code == 250, reply
        return sid_of(reply)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_accepted_message_is_one_line_with_envelope_size_and_downstream(sink, make_proxy, fmt):
    proxy = make_proxy(routes_to(sink), f"log-format={fmt}")
    sid = deliver(proxy.port, ("b@example.com", "c@example.com"))
    [found] = decisions(proxy, fmt, sid)
    if fmt == "text":
        assert f"session {sid}: {sid}01: accept: DOT from " in found
        assert "[127.0.0.1]: 250 2.0.0 " in found and "#554;" in found
        assert "from=<a@example.org> to=<b@example.com>,<c@example.com> nrcpt=2 size=" in found
        assert "proto=ESMTP helo=<client.example.org> check=downstream delay=" in found
    else:
        assert list(found)[:3] == ["time", "level", "event"]
        assert set(FIELDS) <= set(found)
        assert found["qid"] == f"{sid}01" and found["action"] == "accept" and found["stage"] == "dot"
        assert found["sender"] == "a@example.org"
        assert found["rcpts"] == ["b@example.com", "c@example.com"] and found["nrcpt"] == 2
        assert found["size"] > len(BODY) - 3 and found["code"] == 250 and found["reply_id"] == 554
        assert found["client_ip"] == "127.0.0.1" and found["helo"] == "client.example.org"
        assert found["check"] == "downstream" and found["delay"] >= 0
        assert found["downstream"].startswith("250")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_refused_recipient_has_its_line_found_by_the_replys_session_id(sink, make_proxy, fmt):
    proxy = make_proxy(routes_to(sink), f"log-format={fmt}")
    with Client(proxy.port) as c:
        c.ehlo("client.example.org")
        c.cmd("MAIL FROM:<a@example.org>")
        refused = c.cmd("RCPT TO:<x@elsewhere.example>")
        assert refused.id == 288
        sid = sid_of(refused)  # what a bounce quotes
        c.cmd("QUIT")
    [found] = decisions(proxy, fmt, sid)
    if fmt == "text":
        assert f"session {sid}: NOQUEUE: reject: RCPT from " in found
        assert "550 5.7.1 recipient <x@elsewhere.example> relaying denied #288;" in found
        assert "from=<a@example.org> to=<x@elsewhere.example> proto=ESMTP" in found
        assert "check=route" in found
    else:
        assert (found["action"], found["stage"], found["qid"]) == ("reject", "rcpt", None)
        assert found["rcpts"] == ["x@elsewhere.example"] and found["reply_id"] == 288
        assert found["status"] == "5.7.1" and found["check"] == "route"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_temp_failed_message_at_the_dot(make_sink, make_proxy, fmt):
    sink = make_sink("-r", ".")  # the downstream answers the dot with a 4xx
    proxy = make_proxy(routes_to(sink), f"log-format={fmt}")
    with Client(proxy.port) as c:
        c.ehlo()
        reply = c.message("a@example.org", ["b@example.com"], BODY)
        assert 400 <= reply.code < 500
        sid = sid_of(reply)
    [found] = decisions(proxy, fmt, sid)
    if fmt == "text":
        assert f"session {sid}: {sid}01: tempfail: DOT from " in found
        assert "to=<b@example.com> nrcpt=1" in found and "check=downstream" in found
    else:
        assert (found["action"], found["stage"], found["qid"]) == ("tempfail", "dot", f"{sid}01")
        assert found["downstream"].startswith("4")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_discarded_message_names_the_check(access, sink, fmt):
    proxy = access("from:junk@example.org DISCARD\n", f"log-format={fmt}")
    with Client(proxy.port) as c:
        c.ehlo()
        reply = c.message("junk@example.org", ["b@example.com"], BODY)
        assert reply.code == 250
        sid = sid_of(reply)
    [found] = decisions(proxy, fmt, sid)
    if fmt == "text":
        assert f"session {sid}: {sid}01: discard: DOT from " in found
        assert "from=<junk@example.org>" in found and "check=-" not in found
    else:
        assert (found["action"], found["stage"]) == ("discard", "dot")
        assert found["check"] not in (None, "downstream")
    sink.assert_nothing_from("junk@example.org", timeout=1)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_dropped_session_ends_its_recipients_with_a_line(sink, make_proxy, fmt):
    proxy = make_proxy(routes_to(sink), "+smtp-drop-unknown", f"log-format={fmt}")
    with Client(proxy.port) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<a@example.org>")
        assert c.cmd("RCPT TO:<b@example.com>").code == 250
        dropped = c.cmd("XYZZY")
        assert dropped.code >= 500
        sid = sid_of(dropped)
    [found] = decisions(proxy, fmt, sid)
    if fmt == "text":
        assert f"session {sid}: NOQUEUE: drop: PROTOCOL from " in found
        assert "from=<a@example.org> to=<b@example.com>" in found and "check=protocol" in found
    else:
        assert (found["action"], found["stage"], found["check"]) == ("drop", "protocol", "protocol")
        assert found["rcpts"] == ["b@example.com"]


def test_json_log_has_only_json_lines_and_no_decision_for_accepted_recipients(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "log-format=json")
    sid = deliver(proxy.port)
    decisions(proxy, "json", sid)  # exactly one: the message, not its recipient too
    records = json_records(proxy)
    assert any(r["event"] == "log" and "listening on" in r["msg"] for r in records)
    assert all({"time", "level", "event"} <= set(r) for r in records)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_workers_relay_structured_events_to_the_master(sink, make_proxy, fmt):
    proxy = make_proxy(routes_to(sink), "workers=2", f"log-format={fmt}")
    wait_for(lambda: proxy.log_text().count("barricade: listening on") == 2, what="2 workers serving")
    sids = [deliver(proxy.port) for _ in range(4)]
    for sid in sids:
        [found] = decisions(proxy, fmt, sid)
        if fmt == "text":
            assert re.search(r"\[barricade\.decision#info\] worker \d \[\d+\] session ", found)
            assert f"{sid}01: accept: DOT from " in found
        else:
            assert isinstance(found["worker"], int) and isinstance(found["pid"], int)
            assert found["qid"] == f"{sid}01" and found["rcpts"] == ["b@example.com"]
    if fmt == "json":
        # The workers' other events keep their level and namespace.
        listening = [r for r in json_records(proxy) if "listening on" in r.get("msg", "")]
        assert len(listening) == 2 and {r["level"] for r in listening} == {"info"}
        assert all(r["ns"] == "barricade.service" for r in listening)


def test_a_message_cut_by_a_timeout_is_a_dropped_decision(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "smtp-data-line-timeout=1")
    with Client(proxy.port) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<a@example.org>")
        c.cmd("RCPT TO:<b@example.com>")
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: slow\r\n\r\nthen nothing")
        cut = c.read()
        assert cut.code == 421
        sid = sid_of(cut)
    [found] = decisions(proxy, "text", sid)
    assert f"session {sid}: {sid}01: drop: DATA from " in found
    assert "to=<b@example.com>" in found and "check=smtp-data-line-timeout" in found
