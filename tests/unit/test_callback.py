"""Call-back without sockets: the false address, the Luhn digit, strict greetings,
MX address pruning, smtpf's verdict table, exemptions, and the cached paths
(MemoryStore; a cached answer never touches DNS or an MX)."""

from __future__ import annotations

import pytest
import pytest_twisted

from barricade.options import REGISTRY, OptionError
from barricade.policy.callback import (
    ACCEPT,
    REJECT,
    TEMPFAIL,
    CallBack,
    Decision,
    callable_address,
    callback_checks,
    decide,
    false_local_part,
    greeting_names_host,
    luhn_digit,
    parse_networks,
    result_of,
    verification_failed,
)
from barricade.policy.grey import SKIP_NOTE, GreyList
from barricade.policy.pipeline import Context
from barricade.policy.verdict import Action
from barricade.protocol.events import ClientInfo
from barricade.state import MemoryStore

# --- the false address ----------------------------------------------------------------------


def luhn_valid(text: str) -> bool:
    return luhn_digit(text[:-1]) == int(text[-1])


@pytest.mark.parametrize("text, digit", [
    ("7992739871", 3),  # the textbook example
    ("US037833100", 5),  # an ISIN (US0378331005): letters are base-36 digits
    ("", 0),
])
def test_luhn_digit(text, digit):
    assert luhn_digit(text) == digit


def test_luhn_digit_ignores_case_and_counts_other_characters_as_zero():
    assert luhn_digit("eod.nhoj") == luhn_digit("EOD0NHOJ")


@pytest.mark.parametrize("local, false", [
    ("john.doe", "eod.nhoj"),
    ("a", "a"),
    (".dotty.", "yttod"),  # a dot-atom cannot start or end with a dot
    ('"john doe"', '"eod nhoj'),  # stays quoted
    ('"a\\"b"', '"ba'),  # escapes and inner quotes dropped
])
def test_false_local_part(local, false):
    made = false_local_part(local)
    assert made.startswith(false)
    digits = made.strip('"')
    assert digits[-1].isdigit() and luhn_valid(digits)
    assert made != local


def test_false_local_part_stays_within_64_octets():
    made = false_local_part("x" * 200)
    assert len(made) <= 64 and luhn_valid(made)
    assert len(false_local_part('"' + "y" * 200 + '"')) <= 64


# --- strict greeting --------------------------------------------------------------------------


@pytest.mark.parametrize("text, ok", [
    ("mx.example.com ESMTP Postfix", True),
    ("MX1.Example.COM", True),
    ("[192.0.2.1] ready", True),
    ("[IPv6:2001:db8::1] ready", True),
    ("smtp-sink ESMTP", False),  # one label
    ("192.0.2.1 ESMTP", False),  # a bare IP
    ("mx.example.com. ESMTP", False),  # trailing dot
    ("[not-an-ip]", False),
    ("-bad.example.com", False),
    ("", False),
    ("   ", False),
])
def test_greeting_names_host(text, ok):
    assert greeting_names_host(text) is ok


# --- MX address pruning -----------------------------------------------------------------------


@pytest.mark.parametrize("address, ok", [
    ("8.8.8.8", True),
    ("2a00:1450:4001::1", True),
    ("127.0.0.1", False),  # localhost
    ("10.0.0.25", False),  # LAN
    ("192.168.1.1", False),
    ("169.254.1.1", False),  # link-local
    ("100.64.0.1", False),  # shared address space
    ("198.51.100.25", False),  # documentation
    ("224.0.0.1", False),  # multicast
    ("0.0.0.0", False),
    ("::1", False),
    ("fd00::1", False),
    ("2001:db8::1", False),
    ("::ffff:127.0.0.1", False),
    ("not an address", False),
])
def test_callable_address(address, ok):
    assert callable_address(address) is ok


def test_allowed_networks_let_private_mx_through():
    allowed = parse_networks(["127.0.0.0/8", "10.0.0.0/8", "fd00::/8"])
    assert callable_address("127.0.0.61", allowed)
    assert callable_address("10.1.2.3", allowed)
    assert callable_address("fd00::25", allowed)
    assert not callable_address("192.168.1.1", allowed)
    assert not callable_address("198.51.100.25", allowed)


def test_bad_allowed_network_names_the_option():
    with pytest.raises(OptionError, match="call-back-allow-networks"):
        parse_networks(["10.0.0.0/33"])


# --- the verdict table (smtpf sav.c) --------------------------------------------------------------


@pytest.mark.parametrize("rcpt, false, expected", [
    # sender answer only: the false address was not asked
    (250, None, Decision(ACCEPT, True, True, None, "sender answer 250")),
    (550, None, Decision(REJECT, False, True, None, "sender answer 550")),
    (451, None, Decision(TEMPFAIL, False, True, None, "sender answer 451")),
    # the false address refused (or the MX hung up on it): not a dumb host
    (250, 550, Decision(ACCEPT, True, True, REJECT, "sender answer 250, not a dumb mail host")),
    (250, 0, Decision(ACCEPT, True, True, REJECT, "sender answer 250, not a dumb mail host")),
    (450, 550, Decision(TEMPFAIL, False, True, REJECT, "sender answer 450, not a dumb mail host")),
    # the false address accepted: a dumb host, the sender passes unverified, uncached
    (250, 250, Decision(ACCEPT, False, False, ACCEPT, "dumb mail host found")),
    (450, 250, Decision(ACCEPT, False, False, ACCEPT, "dumb mail host found")),
    # the false address temp-failed: smtpf takes it for grey-listing and temp-fails
    (250, 450, Decision(TEMPFAIL, False, True, None, "dumb mail host inconclusive")),
])
def test_decide(rcpt, false, expected):
    assert decide(rcpt, false) == expected


def test_result_of_and_the_572_codes():
    assert [result_of(c) for c in (250, 251, 354, 421, 450, 550, 553)] == ["2", "2", "4", "4", "4", "5", "5"]
    soft, hard = verification_failed(TEMPFAIL, "a@b.example"), verification_failed(REJECT, "a@b.example")
    assert (soft.action, soft.reply_id, soft.fields["code"], soft.fields["status"]) == (
        Action.TEMPFAIL, 572, 451, "4.7.0")
    assert (hard.action, hard.reply_id, hard.fields["code"], hard.fields["status"]) == (
        Action.REJECT, 572, 550, "5.7.0")
    assert hard.fields["sender"] == "a@b.example"


# --- the check ---------------------------------------------------------------------------------------


def config(*args: str):
    return REGISTRY.parse(["+call-back", *args])


def ctx(sender: str | None = "fred@sender.example", **client) -> Context:
    info = dict(ip="192.0.2.9", port=25, name="mail.outside.example") | client
    c = Context(session_id="s1", client=ClientInfo(**info))
    c.helo, c.sender, c.rcpts = "mail.outside.example", sender, ["john@example.com"]
    return c


def test_off_by_default_and_on_with_the_option():
    assert callback_checks(REGISTRY.parse([]), MemoryStore(), object(), "gw.example") == []
    [check] = callback_checks(config(), MemoryStore(), object(), "gw.example")
    assert check.name == "call-back"
    assert check.timeout > config()["call-back-timeout"]  # its own budget, not check-timeout


@pytest.mark.parametrize("sender, client, white, reason", [
    ("", {}, False, "null sender"),
    (None, {}, False, "null sender"),
    ("Postmaster@sender.example", {}, False, "postmaster"),
    ('"postmaster"@sender.example', {}, False, "postmaster"),
    ("fred@[192.0.2.1]", {}, False, "address literal"),
    ("fred", {}, False, "no domain"),
    ("fred@sender.example", dict(ip="127.0.0.1", localhost=True), False, "localhost, LAN or relay client"),
    ("fred@sender.example", dict(ip="10.0.0.1", private=True), False, "localhost, LAN or relay client"),
    ("fred@sender.example", dict(relay=True), False, "localhost, LAN or relay client"),
    ("fred@sender.example", {}, True, "content"),
    ("fred@sender.example", {}, False, None),
])
def test_exemptions(sender, client, white, reason):
    c = ctx(sender, **client)
    c.white_envelope = white
    check = CallBack(config(), None, None, "gw.example")
    assert check.exempt(c) == reason


@pytest_twisted.ensureDeferred
async def test_cached_answers_decide_without_dns_and_pass_grey_is_noted():
    """resolver=None: any DNS lookup would fail the test."""
    store = MemoryStore()
    await store.set("sav:known@sender.example", ACCEPT, ttl=60)
    await store.set("sav:gone@sender.example", REJECT, ttl=60)
    await store.set("sav:later@sender.example", TEMPFAIL, ttl=60)
    await store.set("sav:dumb.example", ACCEPT, ttl=60)
    check = CallBack(config("+call-back-pass-grey"), store, None, "gw.example")

    c = ctx("Known@Sender.example")
    assert (await check.data(c)).action is Action.CONTINUE
    assert c.notes[SKIP_NOTE] == "call-back"
    assert GreyList(REGISTRY.parse([]), None, store).exempt(c) == "call-back"

    gone = await check.data(ctx("gone@sender.example"))
    assert (gone.action, gone.reply_id, gone.fields["code"]) == (Action.REJECT, 572, 550)
    later = await check.data(ctx("later@sender.example"))
    assert (later.action, later.reply_id, later.fields["code"]) == (Action.TEMPFAIL, 572, 451)

    c = ctx("anyone@dumb.example")  # an accept-all MX: skipped, and not a pass for grey-listing
    assert (await check.data(c)).action is Action.CONTINUE
    assert SKIP_NOTE not in c.notes


@pytest_twisted.ensureDeferred
async def test_without_pass_grey_nothing_is_noted():
    store = MemoryStore()
    await store.set("sav:known@sender.example", ACCEPT, ttl=60)
    check = CallBack(config(), store, None, "gw.example")
    c = ctx("known@sender.example")
    assert (await check.data(c)).action is Action.CONTINUE
    assert SKIP_NOTE not in c.notes
    assert GreyList(REGISTRY.parse([]), None, store).exempt(c) is None


@pytest_twisted.ensureDeferred
async def test_a_sender_with_thousands_of_mx_hosts_costs_a_bounded_number_of_lookups():
    """The MX answer is the sender's to write: two thousand hosts were four thousand
    address lookups for one MAIL FROM (a DNS amplifier), where the MX checks look at ten."""
    from barricade.aio import aio
    from barricade.dns import MxRecord, MxResult, Result, Status
    from barricade.policy.mx import MAX_HOSTS

    asked: list[str] = []

    class Resolver:
        async def mx(self, domain: str) -> MxResult:
            hosts = tuple(MxRecord(10, f"mx{i}.{domain}") for i in range(2000))
            return MxResult(domain, Status.ANSWER, hosts)

        async def addresses(self, name: str) -> Result:
            asked.append(name)
            return Result(name, "A", Status.ANSWER, (f"11.0.0.{len(asked)}",))  # global: callable

    check = CallBack(config(), None, Resolver(), "gw.example")
    found = await aio(check.exchangers("sender.example"))
    assert asked == [f"mx{i}.sender.example" for i in range(MAX_HOSTS)]
    assert [host for host, _ in found] == asked
