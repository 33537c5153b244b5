"""The client, HELO and MAIL tests that need DNS, without sockets: the IP-in-PTR
heuristic table by table, HELO addresses, MX pruning, the client-is-mx notes,
each check's decisions and exemptions, and their place in the pipeline."""

from __future__ import annotations

import pytest
from twisted.internet.testing import MemoryReactorClock

from barricade.dns import Resolver, Status
from barricade.maps import RouteMap
from barricade.options import REGISTRY
from barricade.policy.client import ClientPtrTests, ClientPtrTestsAtMail, client_ptr_checks, questionable
from barricade.policy.helo import HeloIsPtr, HeloTests, helo_address, helo_ip_mismatch
from barricade.policy.ip_in_ptr import client_ip_in_ptr, find, ip_in_name
from barricade.policy.limits import builtin_checks
from barricade.policy.mail import MailMxTests
from barricade.policy.mx import CLIENT_IS_MX, SPF_MAIL, SenderMx, routable, spf_result, vouched_for
from barricade.policy.pipeline import Context, Pipeline
from barricade.policy.verdict import Action, Flag, Verdict
from barricade.protocol.events import ClientInfo
from tests.coroutines import finished as done

POLICY = Flag.DELAY | Flag.SESSION

NO_PTR = ClientInfo("198.51.100.14", 25)
PTR_ERROR = ClientInfo("198.51.100.15", 25, ptr_error=True)
FORGED = ClientInfo("198.51.100.11", 25, ptr="liar.clients.test", forged=True)
NAMED = ClientInfo("198.51.100.10", 25, name="mail.clients.test", ptr="mail.clients.test")
DYNAMIC = ClientInfo("198.51.100.16", 25, name="adsl-198-51-100-16.clients.test",
                     ptr="adsl-198-51-100-16.clients.test")
DYNAMIC_FORGED = ClientInfo("100.64.0.29", 25, ptr="6440001d.pool.mxcheck.test", forged=True)
LOCALHOST = ClientInfo("127.0.0.1", 25, name="localhost", localhost=True, private=True)
LAN = ClientInfo("10.1.2.3", 25, private=True)
RELAY = ClientInfo("198.51.100.16", 25, ptr="adsl-198-51-100-16.clients.test", relay=True)


def config(*args: str):
    return REGISTRY.parse(list(args))


def ctx(client: ClientInfo = NAMED, **kw) -> Context:
    return Context("SID", client, **kw)


def said(verdict: Verdict) -> tuple[Action, int | None, Flag]:
    return verdict.action, verdict.reply_id, verdict.flags


# --- the IP-in-PTR heuristic (libsnert isIPv4InClientName) -------------------------------------

IP_IN_NAME = [
    # (name, ip, smtpf's rule)
    ("c6336410.dyn.example", "198.51.100.16", 1),  # the whole address in hex
    ("pool-c633.example", "198.51.100.16", 1),  # the upper 16 bits in hex
    ("x-6410.example", "198.51.100.16", 1),  # the lower 16 bits in hex
    ("ip-3364.example", "198.51.100.16", 1),  # octets 2 and 3 in hex
    ("1064.dsl.example", "198.51.100.16", 1),  # octets 4 and 3, reversed, in hex
    ("3325256720.example", "198.51.100.16", 2),  # the whole address in decimal
    ("pool-50739.example", "198.51.100.16", 2),  # the upper half in decimal
    ("h198051.example", "198.51.100.16", 2),  # two octets zero-padded together
    ("h198.051.example", "198.51.100.16", 2),  # ... separators in the name are skipped
    ("16.100.51.198.dyn.example", "198.51.100.16", 2),  # reversed: 0[51.198] reads as 051198
    ("x-30614662020.example", "198.51.100.16", 3),  # the whole address in octal
    ("h306063.example", "198.51.100.16", 3),  # octets 1 and 2 in octal, zero-padded
    ("adsl-198-51-100-16.clients.test", "198.51.100.16", 11),  # "198-51": decimal with a separator
    ("host_51_100.example", "198.51.100.16", 11),  # any separator matches "-"
    ("100-64-0-26.dyn.mxcheck.test", "100.64.0.26", 11),
    # Rules 10 and 12 (hex and zero-padded octal pairs around a separator)
    # never fire first: rules 1 and 3 skip the separator and find them.
    ("c6.33.example", "198.51.100.16", 1),
    ("h306-063.example", "198.51.100.16", 3),
    ("7b.example", "203.0.113.123", 5),  # starts with the last octet in hex, then no hex digit
    ("123.example.com", "203.0.113.123", 6),  # starts with the last octet in decimal
    ("dsl-016.example", "203.0.113.16", 7),  # -NNN. zero-padded
    ("host-16.pool.example", "203.0.113.16", 8),  # -N.
    ("241net98.net.zeork.com.pl", "194.117.241.98", 9),  # octet 3, then octet 4 after it
    ("mx100.example7.net", "198.51.100.7", 9),  # broad: why the option is off by default
    ("6440001d.pool.mxcheck.test", "100.64.0.29", 1),
    ("C6336410.DYN.EXAMPLE.", "198.51.100.16", 1),  # case and the root dot do not matter
    # not built from the address
    ("mail.clients.test", "198.51.100.10", 0),
    ("ns1.ipandmore.de", "213.252.1.1", 0),  # smtpf's own counter-example
    ("smtp-out.west-vlaanderen.be", "193.190.238.226", 0),  # "eren.be" is not "eebe"
    ("mx1.example.net", "198.51.100.7", 0),
    ("mail.google.com", "209.85.128.27", 0),
    ("host-16", "203.0.113.16", 0),  # rule 8 needs a separator after the octet
    ("16dsl.example", "203.0.113.61", 0),
    ("", "198.51.100.16", 0),
    ("c6336410.dyn.example", "2001:db8::10", 0),  # IPv6: never
    ("c6336410.dyn.example", "not-an-ip", 0),
    ("c6336410.dyn.example", "::ffff:198.51.100.16", 1),  # IPv4-mapped is IPv4
]


@pytest.mark.parametrize("name, ip, rule", IP_IN_NAME)
def test_ip_in_name(name, ip, rule):
    assert ip_in_name(name, ip) == rule


@pytest.mark.parametrize("name, pattern, start, at", [
    ("abc-123", "123", 0, 4),
    ("1.2.3", "123", 0, 0),  # separators skipped where a digit is wanted
    ("1-2", "1.2", 0, 0),  # a separator matches any separator
    ("x-12", "-12", 0, 1),
    ("x.12", "-12", 0, -1),  # the first character must be there as it is
    ("12.x", "123", 0, -1),
    ("123", "12345", 0, -1),  # the name ends first
    ("1x1y", "1y", 1, 2),
    ("abc", "", 0, 0),
])
def test_find_is_libsnerts_lenient_substring(name, pattern, start, at):
    assert find(name, pattern, start) == at


def test_client_flag_uses_the_ptr_confirmed_or_not_and_spares_relays():
    assert client_ip_in_ptr(DYNAMIC) == 11
    assert client_ip_in_ptr(DYNAMIC_FORGED) == 1
    assert client_ip_in_ptr(RELAY) == 0
    assert client_ip_in_ptr(NO_PTR) == 0
    assert client_ip_in_ptr(NAMED) == 0


# --- HELO addresses ---------------------------------------------------------------------------


@pytest.mark.parametrize("helo, address", [
    ("[198.51.100.7]", "198.51.100.7"),
    ("198.51.100.7", "198.51.100.7"),
    ("[IPv6:2001:db8::7]", "2001:db8::7"),
    ("[IPv6:::ffff:198.51.100.7]", "198.51.100.7"),
    ("3405803785", "203.0.113.9"),  # decimal, as strtol reads it after octal fails
    ("3325256711", "27.85.93.201"),  # only octal digits: octal first, as smtpf
    ("0xc6336407", "198.51.100.7"),
    ("c6336407", "198.51.100.7"),  # hexadecimal without 0x
    ("123", "0.0.0.83"),  # octal first, as smtpf
    ("4294967296", "0.0.0.0"),  # modulo 2**32
    ("99999999999999999999", "255.255.255.255"),  # strtol saturates
    ("mail.example.com", None),
    ("0x", None),
    ("mail", None),
    ("[mail]", None),
])
def test_helo_address(helo, address):
    assert helo_address(helo) == address


@pytest.mark.parametrize("helo, client, mismatch", [
    ("[198.51.100.8]", "198.51.100.7", True),
    ("[198.51.100.7]", "198.51.100.7", False),
    ("198.51.100.8", "198.51.100.7", True),  # a bare IP too
    ("[127.0.0.1]", "198.51.100.7", True),  # loopback is not LAN
    ("[192.168.1.10]", "198.51.100.7", False),  # a NATed host's inside address
    ("[10.0.0.1]", "198.51.100.7", False),
    ("[169.254.1.1]", "198.51.100.7", False),
    ("[0.1.2.3]", "198.51.100.7", False),  # "this" network
    ("cafe", "198.51.100.7", False),  # 0.0.202.254: this network
    ("[IPv6:2001:db8::7]", "198.51.100.7", True),
    ("[IPv6:2001:db8::7]", "2001:db8::7", False),
    ("[198.51.100.7]", "::ffff:198.51.100.7", False),
    ("mail.example.com", "198.51.100.7", False),  # a name is never a mismatch here
])
def test_helo_ip_mismatch(helo, client, mismatch):
    assert helo_ip_mismatch(helo, client) is mismatch


# --- MX pruning and the client-is-mx notes -------------------------------------------------------


@pytest.mark.parametrize("ip, ok", [
    ("100.64.0.25", True), ("8.8.8.8", True), ("2a00:1450::1", True),
    ("127.0.0.1", False), ("10.0.0.25", False), ("172.16.1.1", False), ("192.168.0.1", False),
    ("169.254.0.1", False), ("0.0.0.0", False), ("192.0.2.1", False), ("198.51.100.25", False),
    ("203.0.113.1", False), ("198.18.0.1", False), ("224.0.0.1", False), ("255.255.255.255", False),
    ("::1", False), ("::", False), ("fe80::1", False), ("fd00::1", False), ("2001:db8::1", False),
    ("ff02::1", False), ("::ffff:127.0.0.1", False), ("::ffff:100.64.0.25", True), ("mx.example", False),
])
def test_routable(ip, ok):
    assert routable(ip) is ok


def test_sender_mx_has_compares_normalised_addresses():
    found = SenderMx("ok.example", Status.ANSWER, addresses=frozenset({"100.64.0.25"}))
    assert found.has("100.64.0.25") and found.has("::ffff:100.64.0.25")
    assert not found.has("100.64.0.26") and not found.has("junk")


@pytest.mark.parametrize("note, result", [
    ("pass", "pass"), ("Pass", "pass"), (None, ""),
    (type("R", (), {"result": "pass"})(), "pass"),  # a result object
    (type("E", (), {"value": "fail"})(), "fail"),  # an enum member
])
def test_spf_result_reads_the_note_whatever_its_form(note, result):
    assert spf_result(note) == result


def test_vouched_for():
    assert vouched_for({CLIENT_IS_MX: True})
    assert vouched_for({SPF_MAIL: "pass"})
    assert not vouched_for({SPF_MAIL: "softfail"})
    assert not vouched_for({})


# --- client-ptr-required, client-ip-in-ptr -----------------------------------------------------------


def test_415_and_416_no_ptr():
    check = ClientPtrTests(config("+client-ptr-required"))
    assert said(done(check.connect(ctx(NO_PTR)))) == (Action.DROP, 416, POLICY)
    assert said(done(check.connect(ctx(PTR_ERROR)))) == (Action.TEMPFAIL, 415, POLICY)
    assert done(check.connect(ctx(FORGED))).action is Action.CONTINUE  # a forged PTR is a PTR
    assert done(check.connect(ctx(NAMED))).action is Action.CONTINUE
    assert done(check.connect(ctx(DYNAMIC))).action is Action.CONTINUE  # client-ip-in-ptr is off


def test_418_ip_in_ptr_names_the_ptr():
    check = ClientPtrTests(config("+client-ip-in-ptr"))
    verdict = done(check.connect(ctx(DYNAMIC)))
    assert said(verdict) == (Action.DROP, 418, POLICY)
    assert verdict.fields == {"client_name": "adsl-198-51-100-16.clients.test"}
    assert done(check.connect(ctx(DYNAMIC_FORGED))).fields == {"client_name": "6440001d.pool.mxcheck.test"}
    assert done(check.connect(ctx(NO_PTR))).action is Action.CONTINUE  # client-ptr-required is off
    assert done(check.connect(ctx(NAMED))).action is Action.CONTINUE


@pytest.mark.parametrize("client", [LOCALHOST, LAN, RELAY, ClientInfo("10.1.2.3", 25, ptr_error=True, private=True)])
def test_ptr_tests_spare_the_usual_suspects(client):
    check = ClientPtrTests(config("+client-ptr-required", "+client-ip-in-ptr"))
    assert done(check.connect(ctx(client))).action is Action.CONTINUE


def test_client_is_mx_moves_the_ptr_tests_to_mail():
    cfg = config("+client-ptr-required", "+client-ip-in-ptr", "+client-is-mx")
    assert done(ClientPtrTests(cfg).connect(ctx(NO_PTR))).action is Action.CONTINUE
    at_mail = ClientPtrTestsAtMail(cfg)
    assert said(done(at_mail.mail(ctx(NO_PTR, sender="a@ok.example")))) == (Action.DROP, 416, POLICY)
    assert done(at_mail.mail(ctx(NO_PTR, sender="a@ok.example", notes={CLIENT_IS_MX: True}))).action \
        is Action.CONTINUE
    assert done(at_mail.mail(ctx(DYNAMIC, sender="a@ok.example", notes={SPF_MAIL: "pass"}))).action \
        is Action.CONTINUE
    assert done(at_mail.mail(ctx(DYNAMIC, sender="a@ok.example", notes={SPF_MAIL: "fail"}))).reply_id == 418
    assert said(done(at_mail.mail(ctx(PTR_ERROR, sender="")))) == (Action.TEMPFAIL, 415, POLICY)
    # without client-is-mx the MAIL-phase check has nothing to do
    assert done(ClientPtrTestsAtMail(config("+client-ptr-required")).mail(ctx(NO_PTR))).action \
        is Action.CONTINUE


def test_client_ptr_checks_by_option():
    assert client_ptr_checks(config()) == ([], [])
    connect, mail = client_ptr_checks(config("+client-ip-in-ptr"))
    assert [c.name for c in connect] == ["client-ptr"] and mail == []
    connect, mail = client_ptr_checks(config("+client-ptr-required", "+client-is-mx"))
    assert connect == [] and [c.name for c in mail] == ["client-is-mx"]


def test_questionable_clients_are_the_ones_client_is_mx_vouches_for():
    assert questionable(NO_PTR) and questionable(PTR_ERROR) and questionable(DYNAMIC)
    assert questionable(DYNAMIC_FORGED)
    assert not questionable(NAMED) and not questionable(FORGED)
    assert not questionable(LOCALHOST) and not questionable(LAN) and not questionable(RELAY)


# --- helo-ip-mismatch, helo-is-ptr ---------------------------------------------------------------


def test_424_helo_address_of_another_host():
    check = HeloTests(config("+helo-ip-mismatch"))
    assert said(done(check.helo(ctx(NAMED, helo="[198.51.100.99]")))) == (Action.DROP, 424, POLICY)
    assert done(check.helo(ctx(NAMED, helo="[198.51.100.10]"))).action is Action.CONTINUE
    assert done(check.helo(ctx(LAN, helo="[198.51.100.99]"))).action is Action.CONTINUE
    assert done(check.helo(ctx(RELAY, helo="[198.51.100.99]"))).action is Action.CONTINUE
    off = HeloTests(config("-rfc2821-strict-helo"))
    assert done(off.helo(ctx(NAMED, helo="[198.51.100.99]"))).action is Action.CONTINUE


def test_424_comes_before_the_strict_helo_test():
    check = HeloTests(config("+helo-ip-mismatch"))
    assert done(check.helo(ctx(NAMED, helo="198.51.100.99"))).reply_id == 424  # not #428


def test_432_helo_is_the_ip_in_ptr_name():
    check = HeloIsPtr(config("+helo-is-ptr"))
    helo = "adsl-198-51-100-16.clients.test"
    assert said(done(check.helo(ctx(DYNAMIC, helo=helo)))) == (Action.DROP, 432, POLICY)
    assert said(done(check.helo(ctx(DYNAMIC, helo=helo.upper() + ".")))) == (Action.DROP, 432, POLICY)
    assert done(check.helo(ctx(DYNAMIC, helo="mail.clients.test"))).action is Action.CONTINUE
    assert done(check.helo(ctx(NAMED, helo="mail.clients.test"))).action is Action.CONTINUE  # not IP-in-PTR
    assert done(check.helo(ctx(RELAY, helo=helo))).action is Action.CONTINUE
    assert done(check.rcpt(ctx(DYNAMIC, helo=helo), "b@ours.example")).action is Action.CONTINUE


def test_432_with_client_is_mx_waits_for_rcpt():
    check = HeloIsPtr(config("+helo-is-ptr", "+client-is-mx"))
    helo = "adsl-198-51-100-16.clients.test"
    assert done(check.helo(ctx(DYNAMIC, helo=helo))).action is Action.CONTINUE
    assert done(check.rcpt(ctx(DYNAMIC, helo=helo), "b@ours.example")).reply_id == 432
    vouched = ctx(DYNAMIC, helo=helo, notes={CLIENT_IS_MX: True})
    assert done(check.rcpt(vouched, "b@ours.example")).action is Action.CONTINUE


# --- mail-require-mx: which domain is asked -------------------------------------------------------


def test_mx_domain_of_the_sender_or_the_null_senders_helo(tmp_path):
    routes_file = tmp_path / "route-map"
    routes_file.write_text("route:local FORWARD: 127.0.0.1:25\nroute:ours.example FORWARD: 127.0.0.1:25\n")
    check = MailMxTests(config("+client-is-mx"), Resolver([("127.0.0.1", 53)]), RouteMap(str(routes_file)))
    assert check.domain(ctx(sender="a@Sender.Example.")) == ("sender.example", True)
    assert check.domain(ctx(sender="a@ours.example")) == ("", False)  # ours: split DNS
    assert check.domain(ctx(sender="a@[198.51.100.1]")) == ("", False)
    assert check.domain(ctx(sender="", helo="Mail.Example")) == ("mail.example", False)
    assert check.domain(ctx(sender="", helo="[198.51.100.1]")) == ("", False)
    assert check.domain(ctx(sender="", helo="198.51.100.1")) == ("", False)
    assert MailMxTests(config("-mail-require-mx"), Resolver([("127.0.0.1", 53)])).domain(
        ctx(sender="a@sender.example")) == ("sender.example", False)


def test_mx_check_timeout_covers_two_rounds_of_lookups():
    check = MailMxTests(config("dns-max-timeout=10", "check-timeout=5"), Resolver([("127.0.0.1", 53)]))
    assert check.timeout == 22


def test_mx_check_skips_without_asking_dns():
    """No lookup for exempt clients, the null sender without client-is-mx, ours, literals."""
    check = MailMxTests(config("+client-is-mx"), Resolver([("127.0.0.1", 1)]))
    for c in (ctx(LOCALHOST, sender="a@x.example"), ctx(RELAY, sender="a@x.example"),
              ctx(NAMED, sender="", helo="mail.clients.test"),  # a named client needs no vouching
              ctx(NO_PTR, sender="a@[198.51.100.1]"), ctx(NO_PTR)):
        assert done(check.mail(c)).action is Action.CONTINUE


# --- the order in the pipeline ---------------------------------------------------------------------


def names(checks, phase: str) -> list[str]:
    return [c.name for c in Pipeline(checks, MemoryReactorClock(), 5)._hooks[phase]]


def test_order_without_client_is_mx():
    cfg = config("+client-ptr-required", "+client-ip-in-ptr", "+helo-ip-mismatch", "+helo-is-ptr",
                 "+mail-require-mx", "dns-wl=wl.test", "dns-gl=gl.test", "dns-bl=bl.test")
    checks = builtin_checks(cfg, resolver=Resolver([("127.0.0.1", 53)]))
    assert names(checks, "connect")[-5:] == ["dns-wl", "dns-gl", "client-ptr", "dns-bl", "client-tests"]
    assert names(checks, "helo")[-2:] == ["helo-tests", "helo-is-ptr"]
    assert names(checks, "mail")[-2:] == ["mail-tests", "mail-require-mx"]
    # docs/smtpf.md, "Filter order": rcpt tests, helo-is-ptr, then SPF enforcement
    assert names(checks, "rcpt")[-3:] == ["rcpt-tests", "helo-is-ptr", "spf-policy"]
    assert names(checks, "mail").index("spf") < names(checks, "mail").index("mail-require-mx")


def test_order_with_client_is_mx():
    cfg = config("+client-ptr-required", "+helo-is-ptr", "+client-is-mx", "-mail-require-mx")
    checks = builtin_checks(cfg, resolver=Resolver([("127.0.0.1", 53)]))
    assert "client-ptr" not in names(checks, "connect")
    assert names(checks, "mail")[-3:] == ["mail-tests", "mail-require-mx", "client-is-mx"]
    assert names(checks, "rcpt")[-3:] == ["rcpt-tests", "helo-is-ptr", "spf-policy"]


def test_defaults_are_smtpfs():
    cfg = config()
    assert cfg["mail-require-mx"] is True
    for name in ("client-ptr-required", "client-ip-in-ptr", "client-is-mx", "helo-ip-mismatch", "helo-is-ptr"):
        assert cfg[name] is False, name


def test_no_dns_checks_by_default_without_a_resolver():
    checks = builtin_checks(config())
    every = {c.name for c in checks}
    assert not every & {"client-ptr", "client-is-mx", "helo-is-ptr", "mail-require-mx"}
