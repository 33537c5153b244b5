"""Unit tests for barricade.dns and the DNS list parsing: no sockets, no resolver."""

from __future__ import annotations

import pytest
from twisted.internet.testing import MemoryReactorClock

from barricade import plugin
from barricade.dns import (
    DEFAULT_MASK,
    Cache,
    DnsList,
    Resolver,
    Result,
    Status,
    dnsbl_query,
    hostname,
    parse_lists,
    ptr_query,
    reverse_ip,
)
from barricade.options import REGISTRY, OptionError
from barricade.plugin import Plugin
from barricade.policy.dnsbl import MAX_HEADER_IPS, DnsListCheck, header_ips
from barricade.service import StartupError, build_context

# --- names ------------------------------------------------------------------------------


@pytest.mark.parametrize("ip, reversed_", [
    ("192.0.2.1", "1.2.0.192"),
    ("127.0.0.2", "2.0.0.127"),
    ("10.20.30.40", "40.30.20.10"),
    ("::ffff:192.0.2.1", "1.2.0.192"),  # IPv4-mapped: the IPv4 address
    ("[192.0.2.9]", "9.2.0.192"),
    ("2001:db8::2", "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2"),
    ("2001:DB8:0:0:0:0:0:1", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2"),
    ("::1", ".".join("1" + "0" * 31)),
])
def test_reverse_ip(ip, reversed_):
    assert reverse_ip(ip) == reversed_


@pytest.mark.parametrize("bad", ["", "example.com", "192.0.2", "300.1.1.1", "2001:db8::zz"])
def test_reverse_ip_refuses_what_is_not_an_address(bad):
    with pytest.raises(ValueError):
        reverse_ip(bad)


@pytest.mark.parametrize("ip, name", [
    ("198.51.100.10", "10.100.51.198.in-addr.arpa"),
    ("2001:db8::10", "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"),
    ("::ffff:198.51.100.10", "10.100.51.198.in-addr.arpa"),
])
def test_ptr_query(ip, name):
    assert ptr_query(ip) == name


@pytest.mark.parametrize("item, suffix, name", [
    ("192.0.2.1", "bl.example", "1.2.0.192.bl.example"),
    ("192.0.2.1", ".bl.example.", "1.2.0.192.bl.example"),  # smtpf writes suffixes with a dot
    ("2001:db8::2", "bl.example",
     "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.example"),
    ("spam.example.test", "dbl.test", "spam.example.test.dbl.test"),  # domain lists
    ("spam.example.test.", "dbl.test", "spam.example.test.dbl.test"),
])
def test_dnsbl_query(item, suffix, name):
    assert dnsbl_query(item, suffix) == name


@pytest.mark.parametrize("text, expected", [
    ("mail.example.com", "mail.example.com"),
    ("Mail.Example.COM.", "mail.example.com"),
    ("adsl-198-51-100-16.clients.test", "adsl-198-51-100-16.clients.test"),
    ("_spf.example.com", "_spf.example.com"),
    ("localhost", "localhost"),
    ("", None),
    (".", None),
    ("bad\\032name.example", None),  # dnspython's escape of a space
    ("bad name.example", None),
    ("-leading.example", None),
    ("trailing-.example", None),
    ("a..b", None),
    ("x" * 64 + ".example", None),
    ("host.example\r\nX-Injected: 1", None),
])
def test_hostname(text, expected):
    assert hostname(text) == expected


# --- DNS list syntax and masks -------------------------------------------------------------


@pytest.mark.parametrize("text, suffix, mask", [
    ("bl.test", "bl.test", DEFAULT_MASK),
    (".bl.test", "bl.test", DEFAULT_MASK),
    ("BL.Test.", "bl.test", DEFAULT_MASK),
    ("bl.test/0x04", "bl.test", 0x04),
    ("bl.test/4", "bl.test", 4),
    ("bl.test/0x00FFFFFE", "bl.test", 0x00FFFFFE),
    ("multi.surbl.example/0b1010", "multi.surbl.example", 0b1010),
    (" bl.test/ 0x8 ", "bl.test", 8),
])
def test_dns_list_parse(text, suffix, mask):
    dl = DnsList.parse(text)
    assert (dl.suffix, dl.mask) == (suffix, mask)


@pytest.mark.parametrize("text", ["", "/0x04", "bl.test/", "bl.test/0", "bl.test/zz", "bl.test/-1",
                                  "bl.test/0x100000000", "bad list.test", "bl..test"])
def test_dns_list_parse_errors(text):
    with pytest.raises(ValueError):
        DnsList.parse(text)


def test_parse_lists_names_the_option():
    assert parse_lists("dns-bl", ["a.test", "b.test/2"]) == (DnsList("a.test"), DnsList("b.test", 2))
    with pytest.raises(OptionError, match="option dns-wl: bad mask"):
        parse_lists("dns-wl", ["a.test", "b.test/x"])


@pytest.mark.parametrize("mask, answer, listed", [
    # no mask: any 127.x.y.z answer except 127.0.0.0 and 127.0.0.1
    (DEFAULT_MASK, "127.0.0.2", True),
    (DEFAULT_MASK, "127.0.0.4", True),
    (DEFAULT_MASK, "127.0.0.255", True),
    (DEFAULT_MASK, "127.0.1.0", True),
    (DEFAULT_MASK, "127.1.0.0", True),
    (DEFAULT_MASK, "127.0.0.1", False),
    (DEFAULT_MASK, "127.0.0.0", False),
    # answers outside 127/8 never list (NXDOMAIN-rewriting resolvers, error codes)
    (DEFAULT_MASK, "10.0.0.2", False),
    (DEFAULT_MASK, "192.0.2.2", False),
    (DEFAULT_MASK, "2001:db8::2", False),
    (DEFAULT_MASK, "not an address", False),
    # aggregate lists: the low 24 bits ANDed with the mask
    (0x04, "127.0.0.4", True),
    (0x04, "127.0.0.6", True),
    (0x04, "127.0.0.2", False),
    (0x04, "127.0.0.8", False),
    (0x0A, "127.0.0.8", True),
    (0x0A, "127.0.0.2", True),
    (0x0A, "127.0.0.4", False),
    (0x01, "127.0.0.1", True),  # an explicit mask may ask for bit 0
    (0x010000, "127.1.0.0", True),
    (0xFF000000, "127.0.0.2", False),  # the top octet never takes part
])
def test_dns_list_listed(mask, answer, listed):
    assert DnsList("bl.test", mask).listed(answer) is listed


def test_dns_list_str_shows_a_mask_only_when_given():
    assert str(DnsList.parse("bl.test")) == "bl.test"
    assert str(DnsList.parse("bl.test/4")) == "bl.test/0x4"


# --- the cache -------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def answer(name: str = "a.test", ttl: int = 60, status: Status = Status.ANSWER) -> Result:
    return Result(name, "A", status, ("192.0.2.1",) if status is Status.ANSWER else (), ttl)


def test_cache_keeps_an_answer_for_its_ttl():
    clock = Clock()
    cache = Cache(10, clock)
    key = ("a.test.", "A")
    cache.put(key, answer(ttl=60))
    clock.now += 59.9
    assert cache.get(key) == answer(ttl=60)
    clock.now += 0.1
    assert cache.get(key) is None
    assert len(cache) == 0  # expired entries go when met


@pytest.mark.parametrize("result", [
    answer(ttl=0),
    Result("a.test", "A", Status.TEMPFAIL, error="timeout"),
    Result("a.test", "A", Status.TEMPFAIL, ttl=60, error="servfail"),
])
def test_cache_never_keeps_failures_or_ttl_zero(result):
    cache = Cache(10, Clock())
    cache.put(("a.test.", "A"), result)
    assert cache.get(("a.test.", "A")) is None


def test_cache_keeps_negative_answers_for_their_ttl():
    clock = Clock()
    cache = Cache(10, clock)
    nx = Result("nx.test", "A", Status.NXDOMAIN, ttl=30)
    cache.put(("nx.test.", "A"), nx)
    clock.now += 29
    assert cache.get(("nx.test.", "A")) is nx
    clock.now += 1
    assert cache.get(("nx.test.", "A")) is None


def test_cache_keys_are_name_and_type():
    cache = Cache(10, Clock())
    cache.put(("a.test.", "A"), answer())
    assert cache.get(("a.test.", "AAAA")) is None
    assert cache.get(("b.test.", "A")) is None


def test_cache_is_bounded_least_recently_used_first():
    cache = Cache(2, Clock())
    cache.put(("a.", "A"), answer("a"))
    cache.put(("b.", "A"), answer("b"))
    assert cache.get(("a.", "A")) is not None  # a is now the most recent
    cache.put(("c.", "A"), answer("c"))
    assert len(cache) == 2
    assert cache.get(("b.", "A")) is None
    assert cache.get(("a.", "A")) is not None and cache.get(("c.", "A")) is not None


def test_cache_size_zero_disables_it():
    cache = Cache(0, Clock())
    cache.put(("a.", "A"), answer())
    assert cache.get(("a.", "A")) is None and len(cache) == 0


@pytest.mark.parametrize("result, label", [
    (answer(), "answer"),
    (Result("x", "A", Status.NXDOMAIN), "nxdomain"),
    (Result("x", "A", Status.NODATA), "nodata"),
    (Result("x", "A", Status.TEMPFAIL, error="timeout"), "timeout"),
    (Result("x", "A", Status.TEMPFAIL, error="servfail"), "servfail"),
    (Result("x", "A", Status.TEMPFAIL), "tempfail"),
])
def test_result_metric_label(result, label):
    assert result.label == label


# --- configuration ---------------------------------------------------------------------------


def config(*args: str):
    return REGISTRY.parse(list(args))


def test_resolver_from_config_takes_ip_and_port():
    r = Resolver.from_config(config("dns-servers=127.0.0.1:5353; [::1]:53 127.0.0.2"))
    assert r.servers == ["127.0.0.1:5353", "[::1]:53", "127.0.0.2:53"]
    assert r.max_timeout == 45 and r.cache.size == 10000


@pytest.mark.parametrize("bad", ["ns1.example", "127.0.0.1:0", "127.0.0.1:x", "[::1", "::1:53:x"])
def test_resolver_from_config_refuses_names_and_bad_ports(bad):
    with pytest.raises(OptionError, match="dns-servers"):
        Resolver.from_config(config(f"dns-servers={bad}"))


def test_dns_options_have_smtpf_defaults():
    c = config()
    assert c["dns-max-timeout"] == 45 and c["dns-round-robin"] is False
    assert c["dns-bl"] == c["dns-wl"] == c["dns-gl"] == c["dns-bl-headers"] == [] == c["dns-servers"]


# --- dns-bl-headers: addresses in header values -------------------------------------------------


@pytest.mark.parametrize("value, ips", [
    ("from mx.example ([203.0.113.5]) by mx.test", ["203.0.113.5"]),
    ("[203.0.113.5]", ["203.0.113.5"]),
    ("from a (b [198.51.100.2]:1234) by c ([192.0.2.9])", ["198.51.100.2", "192.0.2.9"]),
    ("from a ([IPv6:2001:db8::2]) by b", ["2001:db8::2"]),
    ("from a (2001:db8::5) by b", ["2001:db8::5"]),
    ("from a ([::ffff:203.0.113.5])", ["203.0.113.5"]),
    # LAN, loopback, link-local, unspecified and multicast addresses are not looked up
    ("from a ([10.1.2.3]) from b ([192.168.1.1]) ([172.20.0.1]) ([127.0.0.2])", []),
    ("([169.254.1.1]) ([0.0.0.0]) ([224.0.0.1]) ([::1]) ([fe80::1]) ([fd00::1])", []),
    # not addresses
    ("id 1.2.3.4.5; version 10.0.0", []),
    ("at 12:34:56 +0000", []),
    ("300.1.2.3", []),
    ("no address here", []),
])
def test_header_ips(value, ips):
    assert list(header_ips(value)) == ips


def test_header_ip_limit_is_a_small_number():
    assert 1 <= MAX_HEADER_IPS <= 50


# --- one resolver per process, shared with plugins ----------------------------------------------


class ResolverProbe(Plugin):
    """A plugin that only looks at what it was given."""

    name = "resolver-probe"


def context(tmp_path, *args: str):
    routes = tmp_path / "routes"
    routes.write_text("route:local FORWARD: 127.0.0.1:25\n")
    settings = [f"route-map={routes}", "interface-name=mx.test", "metrics-interface=", *args]
    plugin.prepare(settings)
    return build_context(REGISTRY.parse(settings), reactor=MemoryReactorClock())


def test_checks_plugins_and_sessions_share_one_resolver(tmp_path):
    ctx = context(tmp_path, "dns-servers=127.0.0.1:5353", "dns-bl=bl.test", "dns-wl=wl.test",
                  "dns-gl=gl.test", "dns-bl-headers=Received",
                  "plugins=tests.unit.test_dns:ResolverProbe")
    assert ctx.resolver.servers == ["127.0.0.1:5353"]
    probe = next(c for c in ctx.pipeline.checks if isinstance(c, ResolverProbe))
    assert probe.services.resolver is ctx.resolver
    dns_checks = [c for c in ctx.pipeline.checks if isinstance(c, DnsListCheck)]
    assert [c.name for c in dns_checks] == ["dns-wl", "dns-gl", "dns-bl", "dns-bl-headers"]
    assert all(c.resolver is ctx.resolver for c in dns_checks)
    # each check's own timeout lets the resolver's (dns-max-timeout) come first
    assert all(c.timeout > ctx.resolver.max_timeout for c in dns_checks)


def test_dns_checks_come_after_the_access_map_in_the_connect_phase(tmp_path):
    access = tmp_path / "access"
    access.write_text("connect:192.0.2.1 OK\n")
    ctx = context(tmp_path, f"access-map={access}", "dns-bl=bl.test", "dns-wl=wl.test")
    names = [c.name for c in ctx.pipeline._hooks["connect"]]
    assert names.index("access-connect") < names.index("dns-wl") < names.index("dns-bl")


def test_no_dns_list_no_dns_check(tmp_path):
    ctx = context(tmp_path, "dns-servers=127.0.0.1")
    assert not [c for c in ctx.pipeline.checks if isinstance(c, DnsListCheck)]


@pytest.mark.parametrize("args, words", [
    (["dns-bl=bl.test/zz"], "option dns-bl: bad mask"),
    (["dns-wl=wl!.test"], "option dns-wl: bad DNS list suffix"),
    (["dns-servers=ns1.example"], "option dns-servers"),
])
def test_bad_dns_options_stop_start_up(tmp_path, args, words):
    with pytest.raises(StartupError, match=words):
        context(tmp_path, *args)
