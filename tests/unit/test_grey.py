"""Grey-listing without sockets: smtpf's key building (table-driven), the
period from Grey-Connect:/Grey-To:, exemptions, the DATA decisions on a
MemoryStore with a steppable clock, and the grey-content hash."""

from __future__ import annotations

import email
import email.utils

import pytest
import pytest_twisted

from barricade.maps import KeyValueMap
from barricade.options import REGISTRY, OptionError
from barricade.policy.grey import (
    KEYS_NOTE,
    GreyContent,
    GreyKey,
    GreyList,
    content_digest,
    domain_suffix,
    grey_checks,
    mailbox,
    make_key,
    ptr_numbers,
    report,
)
from barricade.policy.pipeline import Context
from barricade.policy.verdict import Action
from barricade.protocol.events import ClientInfo
from barricade.state import MemoryStore, StoreError
from barricade.state.base import Grey, GreyStatus
from barricade.state.known import KnownTuples
from tests.state import FakeClock

# --- key building --------------------------------------------------------------------------

ENV = dict(ip="192.0.2.9", ptr="mail.pool1.Example.com", helo="MX1.Sender.net",
           sender="Fred+news@Sender.net", rcpt="john@acme.org")

KEYS = [
    # grey-key words, overrides of ENV, expected tuple, expected host part
    ("ptr,mail,rcpt", {}, "pool1.example.com,fred@sender.net,john@acme.org", "pool1.example.com"),
    ("rcpt,mail,ptr", {}, "pool1.example.com,fred@sender.net,john@acme.org", "pool1.example.com"),
    ("ptr,mail,rcpt", {"ptr": None}, "192.0.2.9,fred@sender.net,john@acme.org", "192.0.2.9"),
    ("ptr,mail,rcpt", {"ptr": "example.com"}, "example.com,fred@sender.net,john@acme.org",
     "example.com"),
    ("ptr,mail,rcpt", {"ptr": "pcspecialist.co.uk"},
     "pcspecialist.co.uk,fred@sender.net,john@acme.org", "pcspecialist.co.uk"),
    ("ptr,mail,rcpt", {"ptr": "smtp.pcspecialist.co.uk"},
     "pcspecialist.co.uk,fred@sender.net,john@acme.org", "pcspecialist.co.uk"),
    ("ptr,mail", {"ptr": "gateway42"}, "gateway42,fred@sender.net", "gateway42"),  # no domain
    ("ip,mail,rcpt", {}, "192.0.2.9,fred@sender.net,john@acme.org", "192.0.2.9"),
    ("ip,mail,rcpt", {"ip": "2001:db8::1"}, "2001:db8::1,fred@sender.net,john@acme.org",
     "2001:db8::1"),
    ("ptrn,mail", {"ptr": "dsl-81-2-3-4.pool7.isp42.net"}, "dsl-#-#-#-#.pool#.isp42.net,fred@sender.net",
     "dsl-#-#-#-#.pool#.isp42.net"),
    ("ptrn,mail", {"ptr": None}, "192.0.2.9,fred@sender.net", "192.0.2.9"),
    ("helo,mail,rcpt", {}, "mx1.sender.net,fred@sender.net,john@acme.org", None),
    ("helos,mail", {}, "sender.net,fred@sender.net", None),
    ("helos,mail", {"helo": "[192.0.2.9]"}, "[192.0.2.9],fred@sender.net", None),
    ("ip,helos,mail,rcpt", {}, "192.0.2.9,sender.net,fred@sender.net,john@acme.org",
     "192.0.2.9,sender.net"),
    ("ip,helo,mail", {}, "192.0.2.9,mx1.sender.net,fred@sender.net", "192.0.2.9"),
    ("mail,rcpt", {}, "fred@sender.net,john@acme.org", None),
    ("ip", {}, "192.0.2.9", None),  # the key is the host: no separate short-cut
    ("ip,mail,rcpt", {"sender": ""}, "192.0.2.9,@,john@acme.org", "192.0.2.9"),
    ("ip,mail,rcpt", {"rcpt": None}, "192.0.2.9,fred@sender.net", "192.0.2.9"),
    ("ip,p0f,mail", {}, "192.0.2.9,fred@sender.net", "192.0.2.9"),
]


@pytest.mark.parametrize(("words", "changes", "expected", "host"), KEYS)
def test_make_key(words, changes, expected, host):
    key = make_key(frozenset(words.split(",")), **{**ENV, **changes})
    assert key == GreyKey(expected, host)
    assert key.name == "grey:" + expected


@pytest.mark.parametrize(("name", "suffix", "numbers"), [
    ("host.example.com", "example.com", "host.example.com"),
    ("example.com", "example.com", "example.com"),
    ("a.b.example.com.", "b.example.com", "a.b.example.com"),
    ("localhost", "", "localhost"),
    ("mx9.example.co.uk", "example.co.uk", "mx#.example.co.uk"),
    ("10-0-0-1.static.host99.de", "static.host99.de", "#-#-#-#.static.host99.de"),
])
def test_domain_suffix_and_ptr_numbers(name, suffix, numbers):
    assert domain_suffix(name) == suffix
    assert ptr_numbers(name) == numbers


@pytest.mark.parametrize(("address", "box"), [
    ("john@acme.org", "john@acme.org"),
    ("john+list@acme.org", "john@acme.org"),
    ("+only@acme.org", "+only@acme.org"),
    ("", "@"),
    ("postmaster", "postmaster@"),
])
def test_mailbox(address, box):
    assert mailbox(address) == box


def test_report_header_format():
    status = GreyStatus(Grey.PASS, created=1_700_000_000.0, now=1_700_003_725.6, period=600)
    text = report(status, GreyKey("192.0.2.9,fred@sender.net,john@acme.org", "192.0.2.9"))
    when = email.utils.formatdate(1_700_000_000.0, localtime=True)
    assert text == f'age=3725 (01:02:05) key=grey:192.0.2.9,fred@sender.net,john@acme.org at="{when}"'


def test_grey_key_words_are_checked_at_start_up():
    assert REGISTRY.parse([])["grey-key"] == ["ptr", "mail", "rcpt"]  # smtpf's default
    assert REGISTRY.parse(["grey-key=IP,Mail"])["grey-key"] == ["ip", "mail"]  # as declared
    assert REGISTRY.parse(["grey-key="])["grey-key"] == []
    with pytest.raises(OptionError, match="grey-key: sender not among"):
        REGISTRY.parse(["grey-key=ip,sender"])


def test_no_check_when_disabled_and_content_flavour():
    store = MemoryStore()
    assert grey_checks(REGISTRY.parse(["grey-key="]), None, store) == []
    assert grey_checks(REGISTRY.parse([]), None, None) == []
    assert type(grey_checks(REGISTRY.parse([]), None, store)[0]) is GreyList
    assert type(grey_checks(REGISTRY.parse(["+grey-content"]), None, store)[0]) is GreyContent


# --- the check on a MemoryStore ----------------------------------------------------------


def config(*args: str):
    return REGISTRY.parse(["grey-temp-fail-period=600", *args])


def access(tmp_path, text: str) -> KeyValueMap:
    path = tmp_path / "access-map"
    path.write_text(text)
    return KeyValueMap(str(path))


def ctx(rcpts=("john@acme.org",), ip="192.0.2.9", name="mail.pool1.example.com", **client) -> Context:
    c = Context(session_id="s1", client=ClientInfo(ip=ip, port=25, name=name, **client))
    c.helo, c.sender, c.rcpts = "mx1.sender.net", "fred@sender.net", list(rcpts)
    return c


class FailingStore(MemoryStore):
    async def grey(self, *args, **kw):
        raise StoreError("down")


def test_period_grey_connect_then_smallest_grey_to(tmp_path):
    amap = access(tmp_path, "grey-connect:192.0.2 900\ngrey-connect:example.net 0\n"
                            "grey-to:fast@acme.org 30\ngrey-to:acme.org 300\ngrey-to:slow@acme.org 5000\n"
                            "grey-to:bad@acme.org soon\n")
    check = GreyList(config(), amap, MemoryStore())
    assert check.period(ctx(rcpts=["x@other.org"])) == 900  # Grey-Connect: replaces the default
    assert check.period(ctx(rcpts=["x@other.org", "slow@acme.org"])) == 900  # Grey-To only lowers
    assert check.period(ctx(rcpts=["x@other.org", "john@acme.org"])) == 300
    assert check.period(ctx(rcpts=["slow@acme.org", "fast@acme.org", "x@acme.org"])) == 30
    assert check.period(ctx(rcpts=["bad@acme.org"])) == 900  # not a number: ignored, lookup stops
    assert check.period(ctx(ip="198.51.100.1", name="mx.example.net", rcpts=["x@o.org"])) == 0
    assert check.period(ctx(ip="198.51.100.1", name="unknown", rcpts=["x@o.org"])) == 600
    assert GreyList(config(), None, MemoryStore()).period(ctx()) == 600


def test_period_with_one_kind_of_entry_or_none(tmp_path):
    """The default needs no lookup when the map has neither Grey-Connect: nor Grey-To:
    entries; either kind alone still applies."""
    only_to = GreyList(config(), access(tmp_path, "grey-to:acme.org 300\n"), MemoryStore())
    assert only_to.period(ctx(rcpts=["x@acme.org"])) == 300
    (tmp_path / "other").mkdir()
    only_connect = GreyList(config(), access(tmp_path / "other", "grey-connect:192.0.2 900\n"), MemoryStore())
    assert only_connect.period(ctx(rcpts=["x@acme.org"])) == 900
    (tmp_path / "none").mkdir()
    neither = GreyList(config(), access(tmp_path / "none", "connect:192.0.2.9 OK\n"), MemoryStore())
    assert neither.period(ctx(rcpts=["x@acme.org"])) == 600


def test_a_message_of_a_known_correspondent_gets_the_remembered_key():
    """Tuples are remembered by what makes them: the next message from the same
    client, sender and recipient shares its (immutable) key, which is what a new one
    would be."""
    check = GreyList(config(), None, MemoryStore())
    first, again = check.keys(ctx()), check.keys(ctx())
    assert first == again and first[0] is again[0]
    assert first[0] == make_key(check.words, ip="192.0.2.9", ptr="mail.pool1.example.com",
                                helo="mx1.sender.net", sender="fred@sender.net", rcpt="john@acme.org")


@pytest.mark.parametrize(("client", "white", "reason"), [
    (dict(ip="127.0.0.1", name="localhost", localhost=True), {}, "localhost"),
    (dict(relay=True), {}, "relay"),
    ({}, {"white_session": True}, "white-listed"),
    ({}, {"white": True}, "white-listed"),
    ({}, {"white_envelope": True}, "content"),
    ({}, {}, None),
])
def test_exemptions(client, white, reason):
    c = ctx(**client)
    for attr, value in white.items():
        setattr(c, attr, value)
    assert GreyList(config(), None, MemoryStore()).exempt(c) == reason


@pytest_twisted.ensureDeferred
async def test_new_early_pass_known_and_the_host_short_cut():
    clock = FakeClock()
    store = MemoryStore(clock)
    check = GreyList(config(), None, store)
    clock.at(0)
    first = await check.data(ctx())
    assert (first.action, first.reply_id) == (Action.DROP, 552)  # ptr in the key: dropped
    clock.at(599)
    assert (await check.data(ctx())).reply_id == 552
    clock.at(600)
    passed = ctx()
    assert (await check.data(passed)).action is Action.CONTINUE
    (name, value), = passed.added_headers
    assert name == "X-Grey-Report"
    assert value.startswith("age=600 (00:10:00) key=grey:pool1.example.com,fred@sender.net,john@acme.org at=")
    again = ctx()
    assert (await check.data(again)).action is Action.CONTINUE and again.added_headers == []
    other = ctx(rcpts=["mary@other.org"], name="mx7.pool1.example.com")  # same PTR domain
    assert (await check.data(other)).action is Action.CONTINUE  # the host short-cut


@pytest_twisted.ensureDeferred
async def test_first_passing_recipient_lets_the_message_through():
    clock = FakeClock()
    store = MemoryStore(clock)
    check = GreyList(config("grey-key=mail,rcpt", "grey-report-header="), None, store)
    clock.at(0)
    refused = await check.data(ctx(rcpts=["a@acme.org", "b@acme.org"]))
    assert (refused.action, refused.reply_id) == (Action.TEMPFAIL, 552)  # no host: no drop
    clock.at(600)
    both = ctx(rcpts=["c@acme.org", "b@acme.org", "a@acme.org"])
    assert (await check.data(both)).action is Action.CONTINUE
    assert both.added_headers == []  # grey-report-header= adds none
    assert (await store.grey("fred@sender.net,c@acme.org", period=600, temp_fail_ttl=90000,
                             accept_ttl=604800)).result is Grey.EARLY  # tried first, recorded
    # a later message to a not yet passed recipient is grey-listed: no host short-cut here
    assert (await check.data(ctx(rcpts=["d@acme.org"]))).reply_id == 552


@pytest_twisted.ensureDeferred
async def test_reject_record_exempt_period_and_store_failure(tmp_path):
    clock = FakeClock()
    store = MemoryStore(clock)
    amap = access(tmp_path, "grey-to:postmaster@acme.org 0\n")
    check = GreyList(config(), amap, store)
    await store.grey_reject(host="pool1.example.com", ttl=60)
    verdict = await check.data(ctx())
    assert (verdict.action, verdict.reply_id) == (Action.REJECT, 388)
    assert (await check.data(ctx(rcpts=["john@acme.org", "postmaster@acme.org"]))).action is Action.CONTINUE
    failing = await GreyList(config(), None, FailingStore()).data(ctx())
    assert (failing.action, failing.reply_id) == (Action.TEMPFAIL, 945)  # 451, the session goes on
    skipped = await GreyList(config("state-failure=skip"), None, FailingStore()).data(ctx())
    assert skipped.action is Action.CONTINUE


class Remembering(MemoryStore):
    """Remembers passed tuples as RedisStore does (barricade/state/known.py) and
    counts the lookups that reached the store."""

    def __init__(self, clock):
        super().__init__(clock)
        self.known = KnownTuples(30, clock=clock)
        self.asked: list[str] = []
        self.answers: list[Grey] = []

    async def grey(self, tuple_key, **kw):
        self.asked.append(tuple_key)
        asked = self.known.asking()
        status = await super().grey(tuple_key, **kw)
        self.known.remember(tuple_key, kw.get("host"), status, kw["accept_ttl"], asked)
        self.answers.append(status.result)
        return status

    def known_grey(self, tuple_key, *, host=None, period=0.0):
        return self.known.get(tuple_key, host, period)


@pytest_twisted.ensureDeferred
async def test_a_remembered_tuple_passes_without_asking_the_store():
    clock = FakeClock()
    store = Remembering(clock)
    check = GreyList(config(), None, store)
    clock.at(0)
    assert (await check.data(ctx())).reply_id == 552
    clock.at(600)
    assert (await check.data(ctx())).action is Action.CONTINUE
    assert len(store.asked) == 2
    again = ctx()
    clock.at(629)
    assert (await check.data(again)).action is Action.CONTINUE and again.added_headers == []
    assert len(store.asked) == 2  # answered from memory
    clock.at(630)
    assert (await check.data(ctx())).action is Action.CONTINUE
    assert len(store.asked) == 3 and store.answers[-1] is Grey.KNOWN  # the memory ended: the store decides
    clock.at(631)
    assert (await check.data(ctx())).action is Action.CONTINUE
    assert len(store.asked) == 3  # and its answer is remembered again


@pytest_twisted.ensureDeferred
async def test_grey_content_with_a_remembered_tuple():
    """grey-content: a tuple that passed (at its dot) is remembered, and the next
    message passes at DATA without being held for the dot or asking the store."""
    clock = FakeClock()
    store = Remembering(clock)
    check = GreyContent(config("+grey-content"), None, store)
    message = b"Subject: hello\r\nMessage-ID: <1@x>\r\n\r\nsame text\r\n"
    clock.at(0)
    first = ctx()
    assert (await check.data(first)).action is Action.CONTINUE  # NEW: held for the dot
    first.header_block = message
    assert (await check.end_of_data(first)).reply_id == 552
    clock.at(600)
    retry = ctx()
    assert (await check.data(retry)).action is Action.CONTINUE
    retry.header_block = message
    assert (await check.end_of_data(retry)).action is Action.CONTINUE
    assert store.answers[-2:] == [Grey.DUE, Grey.PASS]
    asked = len(store.asked)
    clock.at(610)
    later = ctx()
    assert (await check.data(later)).action is Action.CONTINUE
    assert KEYS_NOTE not in later.notes  # passed at DATA: nothing left for the dot
    assert (await check.end_of_data(later)).action is Action.CONTINUE
    assert len(store.asked) == asked


# --- grey-content ---------------------------------------------------------------------------


def parse(text: str):
    return email.message_from_bytes(text.replace("\n", "\r\n").encode())


def test_content_digest_ignores_encoding_space_and_html_declarations():
    plain = parse("Subject: a\n\nHello   world,\nsee you.\n")
    qp = parse("Subject: b\nContent-Transfer-Encoding: quoted-printable\n\nHello =\nworld,\n see=20you.\n")
    b64 = parse("Subject: c\nContent-Transfer-Encoding: base64\n\nSGVsbG8gd29ybGQsIHNlZSB5b3Uu\n")
    assert content_digest(plain) == content_digest(qp) == content_digest(b64)
    assert content_digest(plain) != content_digest(parse("Subject: a\n\nHello world, see me.\n"))
    html_a = parse("Content-Type: text/html\n\n<!-- x81 --><p>Hi</p><!-- y -->\n")
    html_b = parse("Content-Type: text/html\n\n<p>Hi</p><!-- random 42 -->\n")
    assert content_digest(html_a) == content_digest(html_b)
    multi = ("Content-Type: multipart/mixed; boundary={b}\n\npreamble {b}\n--{b}\n\nHello world,\n"
             "--{b}\nContent-Type: application/ms-tnef\n\nTNEF{b}\n--{b}--\n")
    assert content_digest(parse(multi.format(b="AAA"))) == content_digest(parse(multi.format(b="BBB")))


@pytest_twisted.ensureDeferred
async def test_grey_content_holds_at_data_and_the_dot_decides():
    clock = FakeClock()
    store = MemoryStore(clock)
    check = GreyContent(config("grey-key=ip,mail,rcpt"), None, store)

    async def send(body: bytes, msgid: str = "<1@sender.net>"):
        c = ctx()
        data = await check.data(c)
        if data.action is not Action.CONTINUE:
            return c, data
        c.header_block = f"Message-ID: {msgid}\r\nSubject: hi\r\n".encode()
        c.headers = [("Message-ID", msgid), ("Subject", "hi")]
        await check.body(c, b"\r\n" + body[:3])
        await check.body(c, body[3:])
        return c, await check.end_of_data(c)

    clock.at(0)
    _, first = await send(b"Hello world\r\n")
    assert (first.action, first.reply_id) == (Action.DROP, 552)  # at the dot, after the message
    clock.at(10)
    c, early = await send(b"Hello world\r\n")
    assert (early.action, early.reply_id) == (Action.DROP, 552) and nothing_waits(c)
    clock.at(600)
    c, other = await send(b"Buy now\r\n", msgid="<2@sender.net>")
    assert (other.action, other.reply_id) == (Action.TEMPFAIL, 553)  # 450, no drop
    assert [n for n, _ in c.added_headers] == ["X-Grey-Report"]  # added at DATA, before the body
    c, same = await send(b"Hello   world\r\n")
    assert same.action is Action.CONTINUE
    c, later = await send(b"Anything\r\n")
    assert later.action is Action.CONTINUE and c.added_headers == []  # the host is known now


def nothing_waits(c: Context) -> bool:
    """An early tuple is refused at DATA: nothing waits for the dot."""
    return "grey.keys" not in c.notes


@pytest_twisted.ensureDeferred
async def test_grey_content_too_deep_to_hash_is_looked_up_by_its_tuple():
    """The stdlib parser recurses per nesting level: a message nested a thousand deep
    is grey-listed by its tuple alone (it raised RecursionError: #907 on every retry),
    and never skips the lookup."""
    clock = FakeClock()
    store = MemoryStore(clock)
    check = GreyContent(config("grey-key=ip,mail,rcpt"), None, store)
    deep = b"Content-Type: message/rfc822\r\n\r\n" * 1000 + b"Subject: x\r\n\r\nbody\r\n"

    async def send(at: int):
        clock.at(at)
        c = ctx()
        assert (await check.data(c)).action is Action.CONTINUE
        c.header_block = deep[:34]
        await check.body(c, deep[34:20000])
        await check.body(c, deep[20000:])
        return await check.end_of_data(c)

    first = await send(0)
    assert (first.action, first.reply_id) == (Action.DROP, 552)  # grey-listed, not #907
    assert (await send(600)).action is Action.CONTINUE  # its retry passes
