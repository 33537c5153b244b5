"""Value syntax of the limit tags (``N/t``, ``N[K|M|G]``, -1), the per-family
``state-failure`` policy, and the Msg-Limit/Length/Null-Rate/dupmsg checks
on MemoryStore without sockets."""

from __future__ import annotations

import asyncio

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.logger import formatEvent, globalLogPublisher

from barricade.maps import KeyValueMap
from barricade.net.server import AcceptThrottle
from barricade.options import REGISTRY, OptionError
from barricade.policy.dupmsg import PENDING, DuplicateMessage
from barricade.policy.limits import builtin_checks
from barricade.policy.message_limits import (
    LengthLimit,
    MessageRate,
    MsgLimit,
    NullRateTo,
    parse_message_rate,
    parse_size,
)
from barricade.policy.pipeline import Context
from barricade.policy.state_limits import FAILURE_FAMILIES, failure_policy, parse_failure_policy
from barricade.policy.verdict import Action
from barricade.protocol.events import ClientInfo
from barricade.state import MemoryStore, StoreError

# --- value syntax -------------------------------------------------------------------------


@pytest.mark.parametrize("text, messages, seconds, period", [
    ("150/30m", 150, 1800, "30 minutes"),
    ("10/1h", 10, 3600, "1 hour"),
    ("1/1d", 1, 86400, "1 day"),
    ("7/2w", 7, 14 * 86400, "2 weeks"),
    ("5/45s", 5, 45, "45 seconds"),
    ("3/30minutes", 3, 1800, "30 minutes"),  # only the first letter of the unit counts
    ("3/2H", 3, 7200, "2 hours"),
    ("4/h", 4, 3600, "1 hour"),  # no number: 1
    ("20/90", 20, 90, "90 seconds"),  # no unit: seconds
    ("5", 5, 1, "1 second"),  # smtpf: without /t the window is one second
    ("150/30m other words", 150, 1800, "30 minutes"),
])
def test_message_rate(text, messages, seconds, period):
    rate = parse_message_rate(text)
    assert (rate.messages, rate.seconds, rate.period) == (messages, seconds, period)
    assert rate.enabled


@pytest.mark.parametrize("text", ["-1", "-1/1h", "0/1h", "0"])
def test_message_rate_zero_or_negative_disables(text):
    assert not parse_message_rate(text).enabled


@pytest.mark.parametrize("text", ["", "lots", "10/5x", "10/0m", "/1h", "ten/1h"])
def test_message_rate_refuses_garbage(text):
    with pytest.raises(ValueError):
        parse_message_rate(text)


def test_message_rate_reply_fields_singular_and_plural():
    assert MessageRate(1, 600, "m").reply_fields("a@b") == {
        "who": "a@b", "limit": 1, "s": "", "period": "10 minutes"}
    assert MessageRate(2, 3600, "h").reply_fields("x")["s"] == "s"


@pytest.mark.parametrize("text, octets", [
    ("500", 500), ("10K", 10240), ("10k", 10240), ("10M", 10 * 1024**2), ("2G", 2 * 1024**3),
    ("0", 0), ("-1", None), ("-5M", None), ("", None), ("  ", None), ("1M comment", 1024**2),
])
def test_size(text, octets):
    assert parse_size(text) == octets


@pytest.mark.parametrize("text", ["lots", "10X", "10MB", "1.5M"])
def test_size_refuses_garbage(text):
    with pytest.raises(ValueError):
        parse_size(text)


# --- state-failure per family ----------------------------------------------------------------


def test_failure_policy_one_word_means_every_family_but_dupmsg():
    for word in ("tempfail", "skip"):
        config = REGISTRY.parse([f"state-failure={word}"])
        assert {failure_policy(config, f) for f in FAILURE_FAMILIES if f != "dupmsg"} == {word}
        assert failure_policy(config, "dupmsg") == "skip"  # fails open unless named
    assert failure_policy(REGISTRY.parse([]), "grey") == "tempfail"  # the default
    assert failure_policy(REGISTRY.parse(["state-failure=dupmsg:tempfail"]), "dupmsg") == "tempfail"


def test_failure_policy_per_family_and_default_word():
    config = REGISTRY.parse(["state-failure=grey:skip,rate:tempfail;concurrent:skip dupmsg:skip"])
    policies = parse_failure_policy(config["state-failure"])
    assert policies == {"grey": "skip", "rate": "tempfail", "concurrent": "skip",
                        "msg-limit": "tempfail", "null-rate": "tempfail", "dupmsg": "skip"}
    config = REGISTRY.parse(["state-failure=skip", "state-failure+=rate:tempfail"])
    assert failure_policy(config, "rate") == "tempfail"
    assert failure_policy(config, "msg-limit") == "skip"
    assert parse_failure_policy("rate:tempfail skip")["dupmsg"] == "skip"  # order does not matter
    with pytest.raises(ValueError):
        failure_policy(config, "length")  # needs no store: not a family


@pytest.mark.parametrize("value", ["maybe", "grey:maybe", "colour:skip", "grey:"])
def test_bad_failure_policy_stops_start_up(value):
    with pytest.raises(OptionError, match="state-failure"):
        parse_failure_policy(value)
    with pytest.raises(OptionError, match="state-failure"):
        builtin_checks(REGISTRY.parse([f"state-failure={value}"]))


# --- rate-throttle ------------------------------------------------------------------------------


def test_accept_throttle_counts_per_wall_clock_second():
    throttle = AcceptThrottle(3)
    assert [throttle.accept(100.0), throttle.accept(100.2), throttle.accept(100.9)] == [False, False, True]
    assert throttle.accept(100.95)  # still at or above the threshold
    assert not throttle.accept(101.0)  # a new second starts at 1
    off = AcceptThrottle(0)
    assert not any(off.accept(5.0) for _ in range(50))
    assert off.count == 50  # counted anyway


# --- the checks on MemoryStore ------------------------------------------------------------------


class FailingStore(MemoryStore):
    async def msg_limit(self, key, **kw):
        raise StoreError("down")

    async def rate(self, key, **kw):
        raise StoreError("down")

    async def add(self, key, value, *, ttl):
        raise StoreError("down")


def access(tmp_path, text: str) -> KeyValueMap:
    path = tmp_path / "access-map"
    path.write_text(text)
    return KeyValueMap(str(path))


def ctx(sender: str | None = "a@example.org", ip: str = "192.0.2.1", localhost: bool = False,
        rcpts: list[str] = ()) -> Context:
    c = Context(session_id="s1", client=ClientInfo(ip=ip, port=25, name="mail.outside.example",
                                                   localhost=localhost))
    c.sender, c.rcpts = sender, list(rcpts)
    return c


def config(*args: str):
    return REGISTRY.parse(list(args))


@pytest_twisted.ensureDeferred
async def test_msg_limit_most_specific_decides_and_every_found_limit_counts(tmp_path):
    amap = access(tmp_path, "msg-limit-connect:192.0.2.1 3/1h\nmsg-limit-from:a@example.org 1/10m\n"
                            "msg-limit-to:vip@example.com -1\n")
    store = MemoryStore()
    check = MsgLimit(config(), amap, store)
    c = ctx()
    assert (await check.rcpt(c, "x1@example.com")).action is Action.CONTINUE
    refused = await check.rcpt(c, "x2@example.com")  # From: 2 > 1
    assert (refused.action, refused.reply_id) == (Action.TEMPFAIL, 475)
    assert refused.fields == {"who": "a@example.org", "limit": 1, "s": "", "period": "10 minutes"}
    assert (await check.rcpt(c, "vip@example.com")).action is Action.CONTINUE  # To: -1 exempts
    other = ctx("b@example.org")  # no From: limit: the client's 3/1h, already at 3
    verdict = await check.rcpt(other, "y@example.com")
    assert verdict.fields["who"] == "192.0.2.1" and verdict.fields["limit"] == 3
    assert await store.msg_limit("msg-limit-connect:192.0.2.1", period=3600, increment=0) == 4
    assert await store.msg_limit("msg-limit-from:a@example.org", period=600, increment=0) == 3
    null = ctx("")  # the null sender has no Msg-Limit-From:
    assert (await check.rcpt(null, "z@example.com")).fields["who"] == "192.0.2.1"


@pytest_twisted.ensureDeferred
async def test_msg_limit_report_modes_and_store_failure(tmp_path):
    amap = access(tmp_path, "msg-limit-to: 1/1h\nmsg-limit-to:bad@example.com lots\n")
    only = MsgLimit(config("msg-limit-report=report-only"), amap, MemoryStore())
    assert (await only.rcpt(ctx(), "b@example.com")).action is Action.CONTINUE
    assert (await only.rcpt(ctx(), "b@example.com")).action is Action.CONTINUE
    discard = MsgLimit(config("msg-limit-report=report-discard"), amap, MemoryStore())
    c = ctx()
    await discard.rcpt(c, "b@example.com")
    assert (await discard.end_of_data(c)).action is Action.CONTINUE
    await discard.rcpt(c, "b@example.com")
    assert (await discard.end_of_data(c)).action is Action.DISCARD
    plain = MsgLimit(config(), amap, MemoryStore())
    for _ in range(3):  # a value that does not parse is ignored: the bare tag is not used either
        assert (await plain.rcpt(ctx(), "bad@example.com")).action is Action.CONTINUE
    failing = MsgLimit(config(), amap, FailingStore())
    assert (await failing.rcpt(ctx(), "b@example.com")).reply_id == 945  # 451 4.3.0
    skip = MsgLimit(config("state-failure=msg-limit:skip"), amap, FailingStore())
    assert (await skip.rcpt(ctx(), "b@example.com")).action is Action.CONTINUE


@pytest_twisted.ensureDeferred
async def test_null_rate_counts_per_map_key_for_the_null_sender_only(tmp_path):
    amap = access(tmp_path, "null-rate-to:example.com 2\nnull-rate-to:vip@example.com -1\n")
    store = MemoryStore()
    check = NullRateTo(config(), amap, store)
    dsn = ctx("")
    assert (await check.rcpt(dsn, "a@example.com")).action is Action.CONTINUE
    assert (await check.rcpt(dsn, "b@example.com")).action is Action.CONTINUE
    verdict = await check.rcpt(dsn, "c@example.com")  # the domain's key counts all three
    assert (verdict.action, verdict.reply_id, verdict.fields) == (Action.REJECT, 505,
                                                                  {"count": 3, "limit": 2})
    assert (await check.rcpt(dsn, "vip@example.com")).action is Action.CONTINUE
    assert (await check.rcpt(ctx("someone@example.org"), "d@example.com")).action is Action.CONTINUE
    assert (await check.rcpt(ctx("", ip="127.0.0.1", localhost=True), "d@example.com")).action \
        is Action.CONTINUE
    assert await store.rate("null:null-rate-to:example.com", increment=0) == 3
    failing = NullRateTo(config("state-failure=null-rate:tempfail,skip"), amap, FailingStore())
    assert (await failing.rcpt(dsn, "a@example.com")).reply_id == 945


def test_length_most_specific_family_wins(tmp_path):
    amap = access(tmp_path, "length-connect:192.0.2.1 300\nlength-from:big@example.org 1K\n"
                            "length-from:tiny@example.org 100\nlength-to:small@example.com 200\n"
                            "length-to:large@example.com 2K\nlength-to:huge@example.com -1\n"
                            "length-to:odd@example.com lots\n")
    check = LengthLimit(config(), amap)
    assert check.limit_for(ctx(), ["b@example.com"]) == 300
    assert check.limit_for(ctx("big@example.org"), ["b@example.com"]) == 1024
    assert check.limit_for(ctx("tiny@example.org"), ["b@example.com"]) == 100  # From over Connect
    assert check.limit_for(ctx("big@example.org"), ["small@example.com"]) == 200  # To over From
    assert check.limit_for(ctx(), ["small@example.com", "large@example.com"]) == 2048  # largest To
    assert check.limit_for(ctx(), ["small@example.com", "huge@example.com"]) is None
    assert check.limit_for(ctx(), ["odd@example.com"]) == 300  # a bad value is ignored
    assert check.limit_for(ctx(ip="192.0.2.7"), ["b@example.com"]) is None


# --- dupmsg -----------------------------------------------------------------------------------


def message_ctx(body: bytes = b"\r\nhello\r\n", msgid: str = "<1@example.org>") -> Context:
    c = ctx(rcpts=["Rcpt@Example.com", "other@example.com"])
    c.qid = "Q1"
    c.headers = [("Message-ID", f"{msgid} (comment)")]
    return c


async def deliver(check: DuplicateMessage, c: Context, body: bytes = b"\r\nhello\r\n"):
    await check.body(c, body[:3])
    await check.body(c, body[3:])
    return await check.end_of_data(c)


@pytest_twisted.ensureDeferred
async def test_dupmsg_lost_reply_read_reply_and_track_all():
    store = MemoryStore()
    check = DuplicateMessage(config(), store)
    first = message_ctx()
    assert (await deliver(check, first)).action is Action.CONTINUE
    key = first.notes[PENDING].key
    assert key.endswith(",rcpt@example.com") and (await store.get(key)).startswith("pending ")
    retry = message_ctx()
    assert (await deliver(check, retry)).reply_id == 552  # being delivered right now: 451
    first.delivered, first.reply_lost = "Q1", True  # the client left before the 250, then accepted
    await check.close(first)
    assert (await store.get(key)).startswith("discard ")
    assert (await deliver(check, message_ctx())).action is Action.DISCARD
    from_other = message_ctx()
    from_other.sender = "other@example.org"  # the same message from another sender: not a retry
    assert (await deliver(check, from_other)).action is Action.CONTINUE
    await check.close(from_other)
    other = message_ctx(msgid="<2@example.org>")
    assert (await deliver(check, other)).action is Action.CONTINUE  # another Message-ID
    other_key = other.notes[PENDING].key
    assert other_key != key
    other.delivered = "Q1"  # accepted, and the 250 was written: forgotten at the close
    await check.close(other)  # (with or without QUIT: closing proves nothing)
    assert await store.get(other_key) is None
    resent = message_ctx(msgid="<2@example.org>")  # sent again later: a new message, delivered
    assert (await deliver(check, resent)).action is Action.CONTINUE
    await check.close(resent)
    refused = message_ctx(body=b"\r\nother body\r\n")
    await deliver(check, refused, b"\r\nother body\r\n")
    pending_key = refused.notes[PENDING].key
    await check.mail(refused)  # not delivered (refused downstream): forgotten at the next MAIL
    assert await store.get(pending_key) is None

    tracking = DuplicateMessage(config("+dupmsg-track-all"), MemoryStore())
    sent = message_ctx()
    await deliver(tracking, sent)
    sent.delivered = "Q1"
    await tracking.close(sent)
    assert (await deliver(tracking, message_ctx())).reply_id == 340
    local = DuplicateMessage(config("+dupmsg-track-all"), MemoryStore())
    mine = message_ctx()
    mine.client = ClientInfo(ip="127.0.0.1", port=25, name="localhost", localhost=True)
    await deliver(local, mine)
    mine.delivered = "Q1"
    await local.close(mine)
    assert (await deliver(local, message_ctx())).action is Action.CONTINUE  # localhost: not tracked


@pytest_twisted.ensureDeferred
async def test_dupmsg_leaves_messages_without_message_id_alone():
    store = MemoryStore()
    check = DuplicateMessage(config("+dupmsg-track-all"), store)
    for _ in range(2):
        c = message_ctx()
        c.headers = [("Subject", "no id")]
        assert (await deliver(check, c)).action is Action.CONTINUE
        assert PENDING not in c.notes
        c.delivered, c.reply_lost = "Q1", True
        await check.close(c)


@pytest_twisted.ensureDeferred
async def test_dupmsg_store_failure_skips_unless_named():
    for setting in ("state-failure=tempfail", "state-failure=tempfail,dupmsg:skip"):
        skip = DuplicateMessage(config(setting), FailingStore())
        c = message_ctx()
        assert (await deliver(skip, c)).action is Action.CONTINUE  # fails open
        assert PENDING not in c.notes
    failing = DuplicateMessage(config("state-failure=skip,dupmsg:tempfail"), FailingStore())
    verdict = await deliver(failing, message_ctx())
    assert (verdict.action, verdict.reply_id) == (Action.TEMPFAIL, 960)


@pytest_twisted.ensureDeferred
async def test_dupmsg_settles_without_waiting_and_logs_a_failed_store():
    """The record's fate goes to the store without the session waiting for it: the
    client's next command or the session's end does not wait on Redis."""
    class Slow(MemoryStore):
        def __init__(self):
            super().__init__()
            self.answers: list[asyncio.Future] = []

        async def delete(self, key):
            answer = asyncio.get_running_loop().create_future()
            self.answers.append(answer)
            await answer

        async def set(self, key, value, *, ttl):
            raise StoreError("down")

    store = Slow()
    check = DuplicateMessage(config(), store)
    seen: list = []
    globalLogPublisher.addObserver(seen.append)
    try:
        c = message_ctx()
        await deliver(check, c)
        c.delivered = "Q1"
        closing = defer.ensureDeferred(check.close(c))
        assert closing.called and PENDING not in c.notes and len(store.answers) == 1
        store.answers[0].set_result(None)
        await task.deferLater(reactor, 0)
        assert not [e for e in seen if "dupmsg" in formatEvent(e)]  # the delete went through

        lost = message_ctx(msgid="<3@example.org>")
        await deliver(check, lost)
        lost.delivered, lost.reply_lost = "Q1", True
        assert (await check.mail(lost)).action is Action.CONTINUE
    finally:
        globalLogPublisher.removeObserver(seen.append)
    assert any("not remembered: down" in formatEvent(e) for e in seen)


# --- reports ------------------------------------------------------------------------------------


def test_report_recipients_and_message(tmp_path):
    from barricade.maps import RouteMap
    from barricade.report import Reporter

    routes = tmp_path / "route-map"
    routes.write_text("route:local FORWARD: 127.0.0.1:2526\nroute:example.com FORWARD: 127.0.0.9\n")
    reporter = Reporter(config("report-to=postmaster, postmaster@, ops@example.com, postmaster",
                               "interface-name=mx.test"), RouteMap(str(routes)), reactor=None)
    assert reporter.addresses("fred@sender.example") == [
        "postmaster", "postmaster@sender.example", "ops@example.com"]
    assert reporter.addresses("") == ["postmaster", "ops@example.com"]  # no sender domain
    assert reporter.route("postmaster").forward == (("127.0.0.1", 2526),)
    assert reporter.route("ops@example.com").forward == (("127.0.0.9", 25),)
    assert reporter.route("someone@elsewhere.example").key == "route:local"
    data = reporter.message("message limit exceeded", "line one\nline two", ["ops@example.com"])
    head, _, text = data.partition(b"\r\n\r\n")
    assert b"From: Barricade <MAILER-DAEMON@mx.test>" in head and b"Subject: message limit" in head
    assert text == b"line one\r\nline two\r\n"
