"""Client, HELO, MAIL and RCPT tests without sockets: the predicates, the TLD
list, each check's decisions and exemptions, and their order in the pipeline."""

from __future__ import annotations

import ipaddress
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock

from barricade.client import unmap
from barricade.maps import RouteMap
from barricade.options import REGISTRY
from barricade.policy.access import CONNECT_HIT, MAIL_HIT, RCPT_HIT, AccessMap
from barricade.policy.client import ClientTests
from barricade.policy.domains import (
    RESERVED_TLDS,
    TldFileError,
    TopLevelDomains,
    client_name,
    domain_of,
    literal_ip,
    local_part,
    parse_tlds,
    reserved_domain,
    usual_suspect,
)
from barricade.policy.helo import HeloTests, fqdn_or_literal, interface_ips
from barricade.policy.limits import builtin_checks
from barricade.policy.mail import MailTests
from barricade.policy.pipeline import Context, Pipeline
from barricade.policy.rcpt import RcptAddress, RcptTests
from barricade.policy.verdict import Action, Flag, Verdict
from barricade.protocol.events import ClientInfo
from barricade.protocol.grammar import Strictness, parse_path
from tests.coroutines import finished as done  # these checks are pure

ON = ("+rfc2606-special-domains", "+reject-unknown-tld")
TLDS = TopLevelDomains(["com", "net", "org", "uk"], "test")

OUTSIDE = ClientInfo("192.0.2.1", 25, name="mail.outside.org")
LOCALHOST = ClientInfo("127.0.0.1", 25, name="localhost", localhost=True, private=True)
LAN = ClientInfo("10.1.2.3", 25, name="printer.example", private=True)
RELAY = ClientInfo("192.0.2.128", 25, name="relay.example", relay=True)


def config(*args: str):
    return REGISTRY.parse(list(args))


def ctx(client: ClientInfo = OUTSIDE, **fields) -> Context:
    c = Context("SID", client)
    for key, value in fields.items():
        setattr(c, key, value)
    return c


def rid(verdict: Verdict) -> int | None:
    return verdict.reply_id if verdict.decisive else None


# --- reserved domains ---------------------------------------------------------------


@pytest.mark.parametrize("name, reserved, in_helo", [
    ("host.test", True, True),
    ("a.b.EXAMPLE", True, True),
    ("x.invalid", True, True),
    ("foo.localhost", True, True),
    ("box.localdomain", True, True),
    ("printer.local", True, False),  # allowed in HELO only
    ("nas.lan", True, False),
    ("example.com", True, True),
    ("Example.Org", True, True),
    ("mx.example.net", True, True),
    ("user@example.co", True, True),  # an address: its domain decides
    ("host.test.", True, True),  # the root dot
    ("myexample.com", False, False),
    ("my-example.com", False, False),
    ("example.co.uk", False, False),  # only example.<tld>
    ("example", False, False),  # no dot, as smtpf
    ("localhost", False, False),
    ("test.com", False, False),
    ("mail.outside.org", False, False),
    ("[192.0.2.1]", False, False),
    ("", False, False),
])
def test_reserved_domain(name, reserved, in_helo):
    assert reserved_domain(name) is reserved
    assert reserved_domain(name, helo=True) is in_helo


LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
DOMAIN = st.lists(LABEL, min_size=1, max_size=4).map(".".join)


@given(st.lists(LABEL, min_size=1, max_size=4))
def test_reserved_domain_is_the_tld_or_example_dot_tld(labels):
    name = ".".join(labels)
    expected = len(labels) >= 2 and (labels[-1] in RESERVED_TLDS or labels[-2] == "example")
    assert reserved_domain(name) is expected
    assert reserved_domain(name.upper()) is expected
    assert reserved_domain(name + ".") is expected
    assert reserved_domain("user@" + name) is expected


@given(DOMAIN, st.sampled_from(sorted(RESERVED_TLDS)))
def test_anything_under_a_reserved_tld_is_reserved(domain, tld):
    assert reserved_domain(f"{domain}.{tld}")
    assert reserved_domain(f"{domain}.example.{tld}")


# --- the TLD list ----------------------------------------------------------------------


def test_builtin_list_has_the_iana_tlds_and_none_of_the_reserved():
    tlds = TopLevelDomains.builtin()
    assert len(tlds) > 1000
    for tld in ("com", "org", "net", "arpa", "uk", "de", "museum", "xn--p1ai", "xn--fiqs8s"):
        assert tlds.valid(f"mail.{tld}"), tld
    for tld in ("test", "example", "invalid", "localhost", "localdomain", "local", "lan", "nosuchtld"):
        assert not tlds.valid(f"mail.{tld}"), tld


@pytest.mark.parametrize("domain, valid", [
    ("mail.example.com", True),
    ("MAIL.EXAMPLE.COM", True),
    ("example.com.", True),
    ("com", True),  # a single label is its own TLD
    ("co.uk", True),
    ("localhost", False),
    ("host.nosuchtld", False),
    ("com.nosuchtld", False),
    ("", False),
    (".", False),
])
def test_valid_tld(domain, valid):
    assert TLDS.valid(domain) is valid


@given(DOMAIN, st.sampled_from(["com", "net", "org", "uk", "xyz", "nosuch"]))
def test_valid_is_the_last_label(domain, tld):
    assert TLDS.valid(f"{domain}.{tld}") is (tld in ("com", "net", "org", "uk"))
    assert TLDS.valid(f"{domain}.{tld}".upper() + ".") is TLDS.valid(f"{domain}.{tld}")


def test_parse_tlds_accepts_smtpf_files_and_comments():
    assert parse_tlds("biz com\tinfo\n.net ORG\n# Version 2024\nuk # a comment\n\n") == {
        "biz", "com", "info", "net", "org", "uk"}


def test_tld_file_replaces_the_list(tmp_path):
    path = tmp_path / "tlds"
    path.write_text("internal\ncom\n")
    tlds = TopLevelDomains.from_option(str(path))
    assert tlds.valid("host.internal") and not tlds.valid("host.org")
    assert TopLevelDomains.from_option("") is TopLevelDomains.builtin()


@pytest.mark.parametrize("text", [None, "", "# nothing but a comment\n"])
def test_tld_file_errors(tmp_path, text):
    path = tmp_path / "tlds"
    if text is not None:
        path.write_text(text)
    with pytest.raises(TldFileError, match="tld-level-one-file"):
        TopLevelDomains.from_file(path)


# --- session helpers ------------------------------------------------------------------------


@pytest.mark.parametrize("name, expected", [
    ("mail.outside.org", "mail.outside.org"), ("unknown", ""), ("Unknown", ""), ("", ""),
    ("[192.0.2.1]", ""),
])
def test_client_name(name, expected):
    assert client_name(ClientInfo("192.0.2.1", 25, name=name)) == expected


@pytest.mark.parametrize("client, suspect", [(OUTSIDE, False), (LOCALHOST, True), (LAN, True), (RELAY, True)])
def test_usual_suspects(client, suspect):
    assert usual_suspect(client) is suspect


@pytest.mark.parametrize("text, ip", [
    ("[192.0.2.1]", "192.0.2.1"), ("192.0.2.1", "192.0.2.1"), ("[IPv6:2001:DB8::1]", "2001:db8::1"),
    ("[ipv6:::ffff:192.0.2.1]", "192.0.2.1"), ("2001:db8::1", "2001:db8::1"),
    ("mx.example", None), ("[mx.example]", None), ("", None),
])
def test_literal_ip(text, ip):
    assert literal_ip(text) == ip


def _literal_ip_by_the_stdlib(text: str) -> str | None:
    """What literal_ip answers, asked of ipaddress every time (no short cut, no memory)."""
    inner = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    if inner[:5].lower() == "ipv6:":
        inner = inner[5:]
    try:
        return str(unmap(ipaddress.ip_address(inner)))
    except ValueError:
        return None


@given(st.one_of(
    st.text(alphabet="0123456789.:abcdefABCDEF[]%v6iIpP٣²x-", max_size=24),
    st.ip_addresses().map(str), st.ip_addresses().map(lambda a: f"[{a}]"),
    st.ip_addresses(v=6).map(lambda a: f"[IPv6:{a}]")))
def test_literal_ip_short_cut_answers_as_the_stdlib(text):
    """A name with neither a colon nor only digits and dots is answered None without
    asking ipaddress: the same answer it gives, for every string."""
    assert literal_ip(text) == _literal_ip_by_the_stdlib(text)


# Address pieces: what the grammar parses, the checks split the same way.
ATEXT = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-"
ATOM = st.text(ATEXT, min_size=1, max_size=8)
DOT_ATOM = st.lists(ATOM, min_size=1, max_size=3).map(".".join)
QUOTED = st.text(st.sampled_from(string.ascii_letters + string.digits + "@. !%"), max_size=10).map(
    lambda s: f'"{s}"')


@given(st.one_of(DOT_ATOM, QUOTED), DOMAIN)
def test_address_pieces_match_the_grammar(local, domain):
    address = f"{local}@{domain}"
    path = parse_path(f"TO:<{address}>", "TO", Strictness(), mail=False)
    assert path.address == address
    assert domain_of(path.address) == path.domain == domain
    assert local_part(path.address) == local


@given(st.one_of(DOT_ATOM, QUOTED), DOMAIN)
def test_rcpt_address_refuses_exactly_the_routing_forms(local, domain):
    check = RcptAddress(config())
    address = f"{local}@{domain}"
    verdict = done(check.rcpt(ctx(), address))
    if "%" in local:
        assert rid(verdict) == 131
    elif "!" in local:
        assert rid(verdict) == 132
    elif "@" in local:
        assert rid(verdict) == 133
    else:
        assert rid(verdict) is None


def test_unqualified_and_null_addresses():
    assert domain_of("postmaster") == "" and local_part("postmaster") == "postmaster"
    assert domain_of("") == domain_of(None) == ""


# --- HELO predicates --------------------------------------------------------------------------


@pytest.mark.parametrize("helo, ok", [
    ("mail.outside.org", True),
    ("a.b", True),
    (".com", True),  # smtpf: the first dot must not end the name
    ("a..b", True),
    ("[192.0.2.1]", True),
    ("[IPv6:2001:db8::1]", True),  # smtpf would refuse: it has no dot
    ("myhost", False),
    ("myhost.", False),
    ("192.0.2.1", False),  # a bare IP
    ("2001:db8::1", False),
    ("[IPv6:2001:db8::zz]", False),
    ("", False),
])
def test_fqdn_or_literal(helo, ok):
    assert fqdn_or_literal(helo) is ok


def test_interface_ips_skip_wildcards_and_names():
    assert interface_ips(["0.0.0.0:25", "[::0]:25", "[::]:25", "192.0.2.25:25", "[2001:DB8::25]:2525",
                          "mx.example:25", "127.0.0.1"]) == {"192.0.2.25", "2001:db8::25", "127.0.0.1"}


@pytest.fixture
def routes(tmp_path) -> RouteMap:
    path = tmp_path / "route-map"
    path.write_text("route:local FORWARD: 127.0.0.1:25\nroute:ours.net FORWARD: 127.0.0.1:25\n"
                    "route:[192.0.2.25] FORWARD: 127.0.0.1:25\nroute:192.0.2.128 RELAY\n"
                    "route:relay-only.net RELAY\n")
    return RouteMap(str(path))


@pytest.mark.parametrize("domain, ours", [
    ("ours.net", True), ("MX.Ours.Net.", True), ("a.b.ours.net", True), ("[192.0.2.25]", True),
    ("notours.net", False), ("net", False), ("local", False), ("host.local", False),
    ("relay-only.net", False), ("192.0.2.128", False), ("", False),
])
def test_route_map_knows_our_domains(routes, domain, ours):
    assert routes.is_our_domain(domain) is ours


# --- the checks ----------------------------------------------------------------------------------

POLICY_DROP = Flag.DELAY | Flag.SESSION


@pytest.mark.parametrize("client, expected", [
    (ClientInfo("192.0.2.1", 25, name="mail.outside.example"), 121),
    (ClientInfo("192.0.2.1", 25, name="mail.outside.local"), 121),  # .local counts here
    (ClientInfo("192.0.2.1", 25, name="mail.outside.nosuchtld"), 122),
    (ClientInfo("192.0.2.1", 25, name="unknown"), None),
    (ClientInfo("192.0.2.1", 25, name="mail.outside.org"), None),
    (ClientInfo("10.0.0.1", 25, name="mail.outside.example", private=True), None),
    (ClientInfo("192.0.2.1", 25, name="mail.outside.example", relay=True), None),  # RELAY
    (LOCALHOST, None),
])
def test_client_tests(client, expected):
    verdict = done(ClientTests(config(*ON), TLDS).connect(ctx(client)))
    assert rid(verdict) == expected
    if expected:
        assert verdict.action is Action.DROP and verdict.flags == POLICY_DROP


def test_client_tests_skip_clients_the_access_map_listed():
    c = ctx(ClientInfo("192.0.2.1", 25, name="mail.outside.example"))
    c.notes[CONNECT_HIT] = True
    assert rid(done(ClientTests(config(*ON), TLDS).connect(c))) is None


@pytest.mark.parametrize("options, name, expected", [
    (("-rfc2606-special-domains",), "mail.outside.example", 122),  # then it is an unknown TLD
    (("-rfc2606-special-domains", "-reject-unknown-tld"), "mail.outside.example", None),
    (("-reject-unknown-tld",), "mail.outside.nosuchtld", None),
])
def test_client_tests_options(options, name, expected):
    check = ClientTests(config(*ON, *options), TLDS)
    assert rid(done(check.connect(ctx(ClientInfo("192.0.2.1", 25, name=name))))) == expected


def helo_check(*options: str, routes: RouteMap | None = None) -> HeloTests:
    return HeloTests(config(*ON, "interfaces=192.0.2.25:25;0.0.0.0:2525", "interface-name=mx.ours.net",
                            *options), routes, "gw.ours.net")


@pytest.mark.parametrize("helo, expected", [
    ("mail.outside.org", None),
    ("host.test", 427),
    ("printer.local", None),
    ("myhost", 428),
    ("192.0.2.1", 428),
    ("[192.0.2.1]", None),
    ("mx.ours.net", 430),  # interface-name
    ("GW.ours.net", 430),  # the host name
    ("[192.0.2.25]", 430),  # the address we listen on
    ("192.0.2.25", 428),  # bare: not even a literal
    ("other.ours.net", 430),  # a route-map domain
    ("[0.0.0.0]", None),  # a wildcard is not an address of ours
    ("", None),
])
def test_helo_tests(routes, helo, expected):
    verdict = done(helo_check(routes=routes).helo(ctx(helo=helo)))
    assert rid(verdict) == expected
    if expected:
        assert verdict.action is Action.DROP and verdict.flags == POLICY_DROP


@pytest.mark.parametrize("client", [LOCALHOST, LAN, RELAY])
def test_helo_tests_spare_our_own_clients(routes, client):
    for helo in ("host.test", "myhost", "mx.ours.net"):
        assert rid(done(helo_check(routes=routes).helo(ctx(client, helo=helo)))) is None


def test_helo_claims_us_spares_hosts_with_a_ptr_in_our_domains(routes):
    client = ClientInfo("192.0.2.1", 25, name="backup.ours.net")
    assert rid(done(helo_check(routes=routes).helo(ctx(client, helo="mx.ours.net")))) is None


@pytest.mark.parametrize("options, helo", [
    (("-rfc2606-special-domains",), "host.test"),
    (("-rfc2821-strict-helo",), "myhost"),
    (("-helo-claims-us",), "mx.ours.net"),
])
def test_helo_tests_options(routes, options, helo):
    assert rid(done(helo_check(*options, routes=routes).helo(ctx(helo=helo)))) is None


@pytest.mark.parametrize("client, sender, expected", [
    (OUTSIDE, "a@example.org", 128),
    (OUTSIDE, "a@mail.outside.invalid", 128),
    (OUTSIDE, "a@outside.nosuchtld", 129),
    (OUTSIDE, "a@[192.0.2.1]", None),
    (OUTSIDE, "a@outside.org", None),
    (OUTSIDE, "", None),
    (OUTSIDE, "postmaster", None),
    (LOCALHOST, "a@example.org", None),
    (LAN, "a@example.org", None),
    (RELAY, "a@outside.nosuchtld", None),
])
def test_mail_tests(client, sender, expected):
    verdict = done(MailTests(config(*ON), TLDS).mail(ctx(client, sender=sender)))
    assert rid(verdict) == expected
    if expected:
        assert verdict.action is Action.REJECT and verdict.flags == Flag.DELAY


def test_mail_tests_skip_senders_the_access_map_listed():
    c = ctx(sender="a@example.org")
    c.notes[MAIL_HIT] = True
    assert rid(done(MailTests(config(*ON), TLDS).mail(c))) is None


@pytest.mark.parametrize("client, sender, rcpts, rcpt, expected", [
    (OUTSIDE, "a@outside.org", [], "b@example.com", 140),
    (OUTSIDE, "a@outside.org", [], "b@corp.nosuchtld", 141),
    (OUTSIDE, "a@outside.org", [], "postmaster@corp.nosuchtld", None),
    (OUTSIDE, "a@outside.org", [], "Postmaster+x@corp.nosuchtld", None),
    (OUTSIDE, "a@outside.org", [], "postmaster@example.com", 140),  # reserved: no exemption
    (OUTSIDE, "a@outside.org", [], "b@[192.0.2.1]", None),
    (OUTSIDE, "a@outside.org", [], "postmaster", None),
    (OUTSIDE, "", [], "b@ours.net", None),
    (OUTSIDE, "", ["b@ours.net"], "c@ours.net", 441),
    (OUTSIDE, "a@outside.org", ["b@ours.net"], "c@ours.net", None),
    (LOCALHOST, "a@outside.org", [], "b@example.com", None),
    (RELAY, "a@outside.org", [], "b@corp.nosuchtld", None),
    (LOCALHOST, "", ["b@ours.net"], "c@ours.net", 441),  # only white lists lift it
])
def test_rcpt_tests(client, sender, rcpts, rcpt, expected):
    verdict = done(RcptTests(config(*ON), TLDS).rcpt(ctx(client, sender=sender, rcpts=rcpts), rcpt))
    assert rid(verdict) == expected
    if expected:
        assert verdict.action is Action.REJECT and verdict.flags == Flag.NONE


def test_rcpt_tests_skip_recipients_the_access_map_listed():
    c = ctx(sender="a@outside.org")
    c.notes[RCPT_HIT] = True
    assert rid(done(RcptTests(config(*ON), TLDS).rcpt(c, "b@example.com"))) is None


def test_rcpt_options_off():
    c = ctx(sender="", rcpts=["a@ours.net"])
    assert rid(done(RcptTests(config("-one-rcpt-per-null"), TLDS).rcpt(c, "b@ours.net"))) is None
    check = RcptAddress(config("-reject-percent-relay", "-reject-uucp-route", "-reject-quoted-at-sign"))
    for rcpt in ("a%b@ours.net", "a!b@ours.net", '"a@b"@ours.net'):
        assert rid(done(check.rcpt(c, rcpt))) is None


# --- the order in the pipeline ---------------------------------------------------------------------


def test_builtin_order_per_phase(tmp_path, routes):
    path = tmp_path / "access-map"
    path.write_text("connect:192.0.2.9 OK\n")
    checks = builtin_checks(config(), AccessMap(str(path)), routes=routes, hostname="gw.ours.net")
    hooks = Pipeline(checks, MemoryReactorClock(), 5)._hooks
    names = {phase: [c.name for c in hooks[phase]] for phase in ("connect", "helo", "mail", "rcpt")}
    assert names["connect"][-2:] == ["access-connect", "client-tests"]
    assert names["helo"] == ["access-helo", "helo-tests"]
    # the Tls- tags first: a TLS requirement is a protocol rule no white list lifts
    assert names["mail"] == ["tls-policy", "access-session", "access-mail", "mail-tests"]
    # Length-To: comes before the access map's To: (docs/smtpf.md, "Filter order")
    assert names["rcpt"] == ["rcpt-limit", "tls-policy", "length", "rcpt-address", "access-rcpt",
                             "rcpt-tests"]


def test_white_listed_sessions_skip_all_but_the_routing_forms():
    pipeline = Pipeline(builtin_checks(config(*ON)), MemoryReactorClock(), 5)
    c = ctx(ClientInfo("192.0.2.1", 25, name="mail.outside.example"), helo="host.test",
            sender="", rcpts=["a@ours.net"])

    def run(phase: str, *args) -> Verdict:
        d = defer.ensureDeferred(pipeline.run(phase, c, *args))
        assert d.called  # nothing here waits
        return d.result

    assert run("connect").reply_id == 121  # not white-listed yet
    c.white_session = True
    assert run("connect").action is Action.CONTINUE
    assert run("helo").action is Action.CONTINUE
    assert run("rcpt", "b@example.com").action is Action.CONTINUE
    assert run("rcpt", "b%x@example.com").reply_id == 131


def test_builtin_tlds_come_from_the_publicsuffixlist_package():
    from importlib import metadata

    builtin = TopLevelDomains.builtin()
    assert builtin.source == f"publicsuffixlist {metadata.version('publicsuffixlist')}"
    assert len(builtin) > 1000
    for name in ("a.com", "a.org", "a.de", "a.xn--p1ai", "a.museum", "a.zip", "a.ck"):
        assert builtin.valid(name), name
    for name in ("a.nosuchtld", "a.local", "a.example"):
        assert not builtin.valid(name), name
