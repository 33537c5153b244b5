"""Unit tests for barricade.maps: smtpf text maps, lookup order, route map."""

from __future__ import annotations

import os
import re

import pytest

from barricade import maps
from barricade.maps import (
    KeyValueMap,
    MapError,
    Route,
    RouteMap,
    client_keys,
    domain_keys,
    ip_keys,
    mail_keys,
    map_path,
    parse_host_list,
    parse_map_text,
    parse_route,
)


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def write_map(path, text: str, mtime: float | None = None):
    path.write_text(text, encoding="utf-8")
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


BASIC_ROUTES = """\
# Barricade route map
route:local           FORWARD: 127.0.0.1:26
route:127.0.0.1       FORWARD: 127.0.0.1:26; RELAY
route:192.0.2         RELAY
route:mx.relay.example RELAY
route:FE80:0000       RELAY
route:example.com     FORWARD: 127.0.0.1:2601, 192.168.0.9
route:sub.example.com FORWARD: mx.sub.example:2602; RCPT: in.our.net
route:other.example   RELAY; FORWARD: mx.other.example:8025
route:john@some.tld   FORWARD: mx1.baka.tld mx2.baka.tld
route:some.tld        FORWARD: mx.some.tld
route:relayonly.example RELAY
"""


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def routes(tmp_path, clock):
    path = write_map(tmp_path / "route-map", BASIC_ROUTES)
    return RouteMap(str(path), clock=clock)


# --- parsing --------------------------------------------------------------------


def test_parse_map_text_basic():
    entries = parse_map_text(
        "# comment\n"
        "\n"
        "Connect:192.0.2   OK\n"
        "   From:Grandma@AOL.com\t  OK  Keep Case  \n"
        "  # indented comment\n"
    )
    assert entries == {"connect:192.0.2": "OK", "from:grandma@aol.com": "OK  Keep Case"}


def test_parse_map_text_later_duplicate_wins():
    assert parse_map_text("a:x 1\nA:X 2\n") == {"a:x": "2"}


def test_parse_map_text_bare_tag_key():
    assert parse_map_text("route: FORWARD: h\n") == {"route:": "FORWARD: h"}


@pytest.mark.parametrize(
    "text, lineno",
    [
        ("a:b 1\nnocolon value\n", 2),
        ("# c\n\nroute:local\n", 3),  # key without a value
        ("a:b 1\nc:d 2\n\n  lonely:key   \n", 4),
    ],
)
def test_parse_errors_name_source_and_line(text, lineno):
    with pytest.raises(MapError) as info:
        parse_map_text(text, "/etc/barricade/access-map")
    assert str(info.value).startswith(f"/etc/barricade/access-map:{lineno}: ")


def test_map_file_parse_error_names_file_and_line(tmp_path, clock):
    path = write_map(tmp_path / "access", "connect:10 OK\n\nbroken\n")
    with pytest.raises(MapError) as info:
        KeyValueMap(str(path), clock=clock)
    assert f"{path}:3:" in str(info.value)


@pytest.mark.parametrize("prefix", ["", "text!", "TEXT!", "file!"])
def test_map_path_forms(prefix):
    assert str(map_path(prefix + "/etc/barricade/route-map")) == "/etc/barricade/route-map"


@pytest.mark.parametrize("location", ["sql!/var/db/access.sq3", "socketmap!127.0.0.1:7953"])
def test_map_path_refuses_other_types(location):
    with pytest.raises(MapError, match="not supported"):
        map_path(location)


def test_missing_map_file(tmp_path, clock):
    with pytest.raises(MapError, match=r"cannot read map .*nothere"):
        KeyValueMap(str(tmp_path / "nothere"), clock=clock)


def test_non_utf8_map_file(tmp_path, clock):
    path = tmp_path / "latin"
    path.write_bytes(b"from:caf\xe9@example.com OK\n")
    with pytest.raises(MapError, match="not UTF-8"):
        KeyValueMap(str(path), clock=clock)


def test_keyvalue_map_get_case_insensitive_keys_case_sensitive_values(tmp_path, clock):
    path = write_map(tmp_path / "m", "From:A@Example.COM REJECT:\"Go Away\"\n")
    m = KeyValueMap("text!" + str(path), clock=clock)
    assert len(m) == 1
    assert m.get("from:a@example.com") == 'REJECT:"Go Away"'
    assert m.get("FROM:A@EXAMPLE.COM") == 'REJECT:"Go Away"'
    assert m.get("from:b@example.com") is None


# --- key variants / lookup order ------------------------------------------------------


def test_ip_keys_ipv4():
    assert list(ip_keys("connect", "192.0.2.9")) == [
        "connect:192.0.2.9", "connect:192.0.2", "connect:192.0", "connect:192",
    ]


def test_ip_keys_ipv6_exploded_form():
    assert list(ip_keys("connect", "2001:DB8::1234:5678")) == [
        "connect:2001:0db8:0000:0000:0000:0000:1234:5678",
        "connect:2001:0db8:0000:0000:0000:0000:1234",
        "connect:2001:0db8:0000:0000:0000:0000",
        "connect:2001:0db8:0000:0000:0000",
        "connect:2001:0db8:0000:0000",
        "connect:2001:0db8:0000",
        "connect:2001:0db8",
        "connect:2001",
    ]


def test_ip_keys_ipv4_mapped_ipv6_uses_ipv4():
    assert list(ip_keys("t", "::ffff:192.0.2.9")) == ["t:192.0.2.9", "t:192.0.2", "t:192.0", "t:192"]


def test_ip_keys_strip_zone_id():
    keys = list(ip_keys("t", "fe80::1%eth0"))
    assert keys[0] == "t:fe80:0000:0000:0000:0000:0000:0000:0001"
    assert keys[-1] == "t:fe80"
    assert len(keys) == 8


@pytest.mark.parametrize("bad", ["", "not-an-ip", "300.1.1.1", "mx.example.com"])
def test_ip_keys_invalid_ip_yields_nothing(bad):
    assert list(ip_keys("t", bad)) == []


def test_domain_keys_order():
    assert list(domain_keys("to", "Sub.Domain.TLD.")) == [
        "to:sub.domain.tld", "to:domain.tld", "to:tld", "to:",
    ]
    assert list(domain_keys("to", "example.com", bare=False)) == ["to:example.com", "to:com"]


def test_domain_keys_empty_domain():
    assert list(domain_keys("to", "")) == ["to:"]
    assert list(domain_keys("to", ".", bare=False)) == []


def test_mail_keys_order():
    """Address, domain, parent domains, local@, then the bare tag."""
    assert list(mail_keys("from", "Left+Right@Sub.Domain.TLD")) == [
        "from:left+right@sub.domain.tld",
        "from:sub.domain.tld",
        "from:domain.tld",
        "from:tld",
        "from:left+right@",
        "from:",
    ]


def test_mail_keys_without_bare():
    assert list(mail_keys("to", "a@b.c", bare=False)) == ["to:a@b.c", "to:b.c", "to:c", "to:a@"]


def test_mail_keys_unqualified():
    assert list(mail_keys("to", "postmaster")) == ["to:postmaster@", "to:"]


def test_mail_keys_null_sender():
    assert list(mail_keys("from", "")) == ["from:"]


def test_client_keys_order():
    assert list(client_keys("connect", "192.0.2.9", "MX.Example.com")) == [
        "connect:192.0.2.9", "connect:192.0.2", "connect:192.0", "connect:192",
        "connect:[192.0.2.9]",
        "connect:mx.example.com", "connect:example.com", "connect:com",
        "connect:",
    ]


def test_client_keys_without_name_or_bare():
    assert list(client_keys("c", "10.1.2.3", None, bare=False)) == [
        "c:10.1.2.3", "c:10.1.2", "c:10.1", "c:10", "c:[10.1.2.3]",
    ]


def mail_map(tmp_path, clock, text: str) -> KeyValueMap:
    return KeyValueMap(str(write_map(tmp_path / "access", text)), clock=clock)


MAIL_ENTRIES = {
    "address": "to:john@sub.example.com ADDRESS\n",
    "domain": "to:sub.example.com DOMAIN\n",
    "parent": "to:example.com PARENT\n",
    "tld": "to:com TLD\n",
    "local": "to:john@ LOCAL\n",
    "bare": "to: BARE\n",
}


@pytest.mark.parametrize("n", range(len(MAIL_ENTRIES)))
def test_mail_lookup_most_specific_wins(tmp_path, clock, n):
    """address beats domain beats parent domain beats TLD beats local@ beats bare."""
    order = list(MAIL_ENTRIES)
    present = order[n:]
    # write the less specific entries first so file order cannot explain the result
    text = "".join(MAIL_ENTRIES[k] for k in reversed(present))
    m = mail_map(tmp_path, clock, text)
    hit = m.first(mail_keys("to", "John@Sub.Example.COM"))
    assert hit is not None
    assert hit[1] == order[n].upper()


def test_mail_lookup_miss(tmp_path, clock):
    m = mail_map(tmp_path, clock, "to:other.org X\nto:jane@ Y\n")
    assert m.first(mail_keys("to", "john@example.com")) is None


def test_first_returns_lowercased_key(tmp_path, clock):
    m = mail_map(tmp_path, clock, "To:Example.COM Value\n")
    assert m.first(mail_keys("to", "a@EXAMPLE.com")) == ("to:example.com", "Value")


def test_ipv4_lookup_most_specific_wins(tmp_path, clock):
    m = mail_map(tmp_path, clock, "connect:192 A\nconnect:192.0.2 C\nconnect:192.0 B\n")
    assert m.first(ip_keys("connect", "192.0.2.9")) == ("connect:192.0.2", "C")
    assert m.first(ip_keys("connect", "192.0.3.9")) == ("connect:192.0", "B")
    assert m.first(ip_keys("connect", "192.1.3.9")) == ("connect:192", "A")
    assert m.first(ip_keys("connect", "193.0.2.9")) is None


def test_ipv4_lookup_does_not_match_partial_octets(tmp_path, clock):
    m = mail_map(tmp_path, clock, "connect:192.0.2 X\n")
    assert m.first(ip_keys("connect", "192.0.22.1")) is None


def test_ipv6_lookup_uses_exploded_words(tmp_path, clock):
    m = mail_map(tmp_path, clock, "connect:2001:0DB8:0000:0000 NET\nconnect:2001:db8::1 NO\n")
    assert m.first(ip_keys("connect", "2001:db8::1")) == ("connect:2001:0db8:0000:0000", "NET")
    # a compressed key in the map never matches
    assert m.first(ip_keys("connect", "2001:db8:1::1")) is None


# --- host lists and routes ------------------------------------------------------------


def test_parse_host_list_forms():
    assert parse_host_list("a, b:26 [::1]:27 [2001:db8::1], ::1,,c", "k") == [
        ("a", 25), ("b", 26), ("::1", 27), ("2001:db8::1", 25), ("::1", 25), ("c", 25),
    ]


def test_parse_host_list_empty():
    assert parse_host_list("  ", "k") == []


@pytest.mark.parametrize(
    "item",
    ["host:0", "host:65536", "host:abc", "host:", "[::1", "[::1]x", "[::1]:", "[]:25", ":25",
     "[::1]:99999"],
)
def test_parse_host_list_errors(item):
    with pytest.raises(MapError) as info:
        parse_host_list(item, "route:x")
    assert str(info.value).startswith("route:x: bad ")
    assert repr(item) in str(info.value)


def test_parse_host_list_max_port():
    assert parse_host_list("h:65535 [::1]:1", "k") == [("h", 65535), ("::1", 1)]


def test_parse_route_full():
    r = parse_route("route:x", " RELAY ; FORWARD: a:26, [::1]:27; RCPT: b c ;")
    assert r == Route("route:x", (("a", 26), ("::1", 27)), (("b", 25), ("c", 25)), True)
    assert r.name == "a:26,::1:27"


def test_parse_route_forward_only():
    r = parse_route("route:x", "FORWARD: mx.example")
    assert r.forward == (("mx.example", 25),)
    assert r.rcpt == () and r.relay is False


def test_parse_route_repeated_forward_accumulates():
    r = parse_route("route:x", "FORWARD: a; FORWARD: b")
    assert r.forward == (("a", 25), ("b", 25))


@pytest.mark.parametrize("value", ["relay", "FORWARDING: a", "Forward: a", "BOGUS", "FORWARD: a; OK"])
def test_parse_route_unknown_parameter(value):
    with pytest.raises(MapError, match=r"route:x: unknown route parameter"):
        parse_route("route:x", value)


def test_parse_route_bad_host_names_key():
    with pytest.raises(MapError, match=r"route:x: bad port"):
        parse_route("route:x", "FORWARD: a:0")


# --- RouteMap -----------------------------------------------------------------------


def test_route_map_local(routes):
    assert routes.local.key == "route:local"
    assert routes.local.forward == (("127.0.0.1", 26),)


def test_route_map_for_recipient_domain(routes):
    r = routes.for_recipient("anyone@example.com")
    assert r is not None and r.key == "route:example.com"
    assert r.forward == (("127.0.0.1", 2601), ("192.168.0.9", 25))


def test_route_map_for_recipient_subdomain_beats_parent(routes):
    r = routes.for_recipient("x@sub.example.com")
    assert r.key == "route:sub.example.com"
    assert r.rcpt == (("in.our.net", 25),)


def test_a_u_label_domain_is_routed_by_its_uts46_a_labels(tmp_path, clock):
    """IDNA 2003 (Python's codec) read straße.de as strasse.de: a different domain for
    Postfix and the registries (IDNA 2008, UTS #46 non-transitional)."""
    path = write_map(tmp_path / "route-map", "route:local FORWARD: 127.0.0.1:26\n"
                     "route:strasse.de FORWARD: 127.0.0.3:25\n"
                     "route:xn--bcher-kva.example FORWARD: 127.0.0.4:25\n")
    rm = RouteMap(str(path), clock=clock)
    assert rm.for_recipient("u@stra\u00dfe.de") is None
    assert rm.for_recipient("u@b\u00fccher.example").key == "route:xn--bcher-kva.example"
    assert rm.for_recipient("u@\uff42\u00fccher.example").key == "route:xn--bcher-kva.example"  # fullwidth b
    assert rm.for_recipient("u@b\u00fccher.example\u200d") is None  # a joiner where none may be
    write_map(path, "route:local FORWARD: 127.0.0.1:26\nroute:xn--strae-oqa.de FORWARD: 127.0.0.5:25\n")
    rm = RouteMap(str(path), clock=clock)
    assert rm.for_recipient("u@stra\u00dfe.de").key == "route:xn--strae-oqa.de"


def test_route_map_for_recipient_parent_domain(routes):
    assert routes.for_recipient("x@deep.down.example.com").key == "route:example.com"


def test_route_map_address_beats_domain(routes):
    assert routes.for_recipient("John@Some.TLD").key == "route:john@some.tld"
    assert routes.for_recipient("john@some.tld").forward == (("mx1.baka.tld", 25), ("mx2.baka.tld", 25))
    assert routes.for_recipient("jane@some.tld").key == "route:some.tld"


def test_route_map_unqualified_goes_local(routes):
    assert routes.for_recipient("postmaster") is routes.local
    assert routes.for_recipient("root") is routes.local


def test_route_map_unknown_domain(routes):
    assert routes.for_recipient("x@nowhere.example") is None


def test_route_map_relay_only_entry_routes_nothing(routes):
    assert routes.for_recipient("x@relayonly.example") is None


def test_route_map_relay_and_forward(routes):
    r = routes.for_recipient("x@other.example")
    assert r.relay is True and r.forward == (("mx.other.example", 8025),)


def test_route_map_bare_default_route(tmp_path, clock):
    path = write_map(tmp_path / "rm", "route:local FORWARD: l\nroute: FORWARD: default.example\n")
    rm = RouteMap(str(path), clock=clock)
    assert rm.for_recipient("x@anything.example").forward == (("default.example", 25),)


@pytest.mark.parametrize("ip", ["192.0.2.1", "192.0.2.254", "127.0.0.1"])
def test_is_relay_by_ip_prefix(routes, ip):
    assert routes.is_relay(ip) is True


@pytest.mark.parametrize("ip", ["192.0.3.1", "10.0.0.1", "127.0.0.2", "not-an-ip"])
def test_is_not_relay_by_ip(routes, ip):
    assert routes.is_relay(ip) is False


def test_is_relay_ipv6_prefix(routes):
    assert routes.is_relay("fe80::1") is True
    assert routes.is_relay("fe81::1") is False


def test_is_relay_by_ptr_name(routes):
    assert routes.is_relay("198.51.100.7", "mx.relay.example") is True
    assert routes.is_relay("198.51.100.7", "host.mx.relay.example") is True
    assert routes.is_relay("198.51.100.7", "relay.example") is False
    assert routes.is_relay("198.51.100.7", None) is False


def test_is_relay_ptr_domain_with_relay_flag(routes):
    assert routes.is_relay("198.51.100.7", "smtp.other.example") is True


def test_is_relay_forward_only_entry_is_not_relay(routes):
    assert routes.is_relay("198.51.100.7", "mx.example.com") is False


def test_is_relay_first_hit_stops_lookup(tmp_path, clock):
    """smtpf semantics: the most specific entry decides, even without RELAY."""
    path = write_map(tmp_path / "rm",
                     "route:local FORWARD: l\nroute:192.0.2.9 FORWARD: h\nroute:192.0.2 RELAY\n")
    rm = RouteMap(str(path), clock=clock)
    assert rm.is_relay("192.0.2.8") is True
    assert rm.is_relay("192.0.2.9") is False


def test_is_relay_ignores_bare_default(tmp_path, clock):
    path = write_map(tmp_path / "rm", "route:local FORWARD: l\nroute: RELAY; FORWARD: x\n")
    rm = RouteMap(str(path), clock=clock)
    assert rm.is_relay("203.0.113.1", "anything.example") is False


def test_missing_route_local_is_an_error(tmp_path, clock):
    path = write_map(tmp_path / "rm", "route:example.com FORWARD: mx\n")
    with pytest.raises(MapError, match=r"route:local with a FORWARD: host is required") as info:
        RouteMap(str(path), clock=clock)
    assert str(path) in str(info.value)


def test_route_local_without_forward_is_an_error(tmp_path, clock):
    path = write_map(tmp_path / "rm", "route:local RELAY\nroute:example.com FORWARD: mx\n")
    with pytest.raises(MapError, match="route:local"):
        RouteMap(str(path), clock=clock)


@pytest.mark.parametrize("key", ["route:127.0.0.1", "route:::1"])
def test_local_route_fallback_keys(tmp_path, clock, key):
    path = write_map(tmp_path / "rm", f"{key} FORWARD: [::1]:26\n")
    rm = RouteMap(str(path), clock=clock)
    assert rm.local.key == key
    assert rm.local.forward == (("::1", 26),)


def test_route_local_preferred_over_fallback(tmp_path, clock):
    path = write_map(tmp_path / "rm", "route:127.0.0.1 FORWARD: a\nroute:local FORWARD: b\n")
    assert RouteMap(str(path), clock=clock).local.forward == (("b", 25),)


def test_route_map_ignores_other_tags(tmp_path, clock):
    path = write_map(tmp_path / "rm", "route:local FORWARD: l\nconnect:10 OK\n")
    rm = RouteMap(str(path), clock=clock)
    assert len(rm) == 2
    assert rm.for_recipient("x@10") is None


def test_route_map_bad_value_is_an_error_naming_file_and_key(tmp_path, clock):
    path = write_map(tmp_path / "rm", "route:local FORWARD: l\nroute:bad.example FORWARD: h:99999\n")
    with pytest.raises(MapError) as info:
        RouteMap(str(path), clock=clock)
    assert str(path) in str(info.value)
    assert "route:bad.example" in str(info.value)


def test_route_map_bad_value_names_line(tmp_path, clock):
    path = write_map(tmp_path / "rm", "route:local FORWARD: l\n\nroute:bad.example FORWARD: h:0\n")
    with pytest.raises(MapError, match=re.escape(f"{path}:3:")):
        RouteMap(str(path), clock=clock)


# --- reload -----------------------------------------------------------------------


def test_refresh_reloads_after_interval_when_file_changes(tmp_path, clock):
    path = write_map(tmp_path / "access", "to:example.com OLD\n", mtime=1_000_000)
    m = KeyValueMap(str(path), clock=clock)
    write_map(path, "to:example.com NEW\n", mtime=1_000_100)

    clock.now += maps.CHECK_INTERVAL / 2  # rate limited: not looked at yet
    assert m.first(domain_keys("to", "example.com"))[1] == "OLD"

    clock.now += maps.CHECK_INTERVAL  # now it is
    assert m.first(domain_keys("to", "example.com"))[1] == "NEW"


def test_remembered_route_answers_follow_a_changed_map(tmp_path, clock):
    """is_relay and for_recipient keep their answers only until the file changes."""
    path = write_map(tmp_path / "rm", "route:local FORWARD: l\nroute:example.com FORWARD: a\n",
                     mtime=1_000_000)
    rm = RouteMap(str(path), clock=clock)
    assert rm.for_recipient("u@example.com").forward == (("a", 25),)
    assert rm.is_relay("192.0.2.8") is False
    write_map(path, "route:local FORWARD: l\nroute:example.com FORWARD: b\nroute:192.0.2 RELAY\n",
              mtime=1_000_100)
    clock.now += maps.CHECK_INTERVAL + 0.1
    assert rm.for_recipient("u@example.com").forward == (("b", 25),)
    assert rm.is_relay("192.0.2.8") is True
    write_map(path, "route:local FORWARD: l\n", mtime=1_000_100)  # same mtime: only SIGHUP sees it
    assert rm.reload() is True
    assert rm.for_recipient("u@example.com") is None  # no route for the domain any more
    assert rm.is_relay("192.0.2.8") is False


def test_remembered_client_entries_follow_a_changed_map(tmp_path, clock, monkeypatch):
    """client_entry keeps its answer per client until the map changes, and keeps at
    most CLIENT_MEMO clients."""
    path = write_map(tmp_path / "access", "rate-connect: 10\nrate-connect:192.0.2 5\n", mtime=1_000_000)
    m = KeyValueMap(str(path), clock=clock)
    client, other = _Client("192.0.2.9", "mx.example.net"), _Client("198.51.100.1", "unknown")
    assert m.client_entry("rate-connect", client) == ("rate-connect:192.0.2", "5")
    assert m.client_entry("rate-connect", other) == ("rate-connect:", "10")
    write_map(path, "rate-connect: 10\nrate-connect:example.net 7\n", mtime=1_000_100)
    clock.now += maps.CHECK_INTERVAL + 0.1
    assert m.client_entry("rate-connect", client) == ("rate-connect:example.net", "7")
    write_map(path, "rate-connect: 3\n", mtime=1_000_100)  # same mtime: only SIGHUP sees it
    assert m.reload() is True
    assert m.client_entry("rate-connect", client) == ("rate-connect:", "3")
    assert m.client_entry("rate-connect", _Client("192.0.2.9", "")) == ("rate-connect:", "3")
    monkeypatch.setattr(maps, "CLIENT_MEMO", 2)
    for n in range(5):
        assert m.client_entry("rate-connect", _Client(f"203.0.113.{n}", "")) == ("rate-connect:", "3")
        assert len(m._clients) <= 2


def test_refresh_does_not_reload_unchanged_mtime(tmp_path, clock):
    path = write_map(tmp_path / "access", "to:example.com OLD\n", mtime=1_000_000)
    m = KeyValueMap(str(path), clock=clock)
    write_map(path, "to:example.com NEW\n", mtime=1_000_000)  # same mtime
    clock.now += 10 * maps.CHECK_INTERVAL
    assert m.first(domain_keys("to", "example.com"))[1] == "OLD"
    assert m.reload() is True  # an explicit reload (SIGHUP) always reads
    assert m.first(domain_keys("to", "example.com"))[1] == "NEW"


def test_refresh_with_vanished_file_keeps_contents(tmp_path, clock):
    path = write_map(tmp_path / "access", "to:example.com OLD\n", mtime=1_000_000)
    m = KeyValueMap(str(path), clock=clock)
    path.unlink()
    clock.now += 10 * maps.CHECK_INTERVAL
    assert m.first(domain_keys("to", "example.com"))[1] == "OLD"


def test_failed_reload_keeps_old_contents(tmp_path, clock):
    path = write_map(tmp_path / "access", "to:example.com OLD\n", mtime=1_000_000)
    m = KeyValueMap(str(path), clock=clock)
    write_map(path, "to:example.com NEW\nthis line is broken\n", mtime=1_000_100)
    clock.now += 10 * maps.CHECK_INTERVAL
    assert m.first(domain_keys("to", "example.com")) == ("to:example.com", "OLD")
    assert m.reload() is False
    assert len(m) == 1 and m.get("to:example.com") == "OLD"


def test_failed_explicit_reload_missing_file(tmp_path, clock):
    path = write_map(tmp_path / "access", "to:example.com OLD\n")
    m = KeyValueMap(str(path), clock=clock)
    path.unlink()
    assert m.reload() is False
    assert m.get("to:example.com") == "OLD"


def test_route_map_reloads_on_change(tmp_path, clock):
    path = write_map(tmp_path / "rm", BASIC_ROUTES, mtime=1_000_000)
    rm = RouteMap(str(path), clock=clock)
    assert rm.for_recipient("x@new.example") is None
    write_map(path, BASIC_ROUTES + "route:new.example FORWARD: mx.new.example:2525\n",
              mtime=1_000_100)
    clock.now += maps.CHECK_INTERVAL + 0.1
    assert rm.for_recipient("x@new.example").forward == (("mx.new.example", 2525),)


def test_route_map_failed_reload_syntax_error_keeps_routes(tmp_path, clock):
    path = write_map(tmp_path / "rm", BASIC_ROUTES, mtime=1_000_000)
    rm = RouteMap(str(path), clock=clock)
    write_map(path, "route:local FORWARD: elsewhere\ngarbage\n", mtime=1_000_100)
    clock.now += maps.CHECK_INTERVAL + 0.1
    assert rm.for_recipient("x@example.com").key == "route:example.com"
    assert rm.local.forward == (("127.0.0.1", 26),)


def test_route_map_failed_reload_missing_local_keeps_routes(tmp_path, clock):
    path = write_map(tmp_path / "rm", BASIC_ROUTES, mtime=1_000_000)
    rm = RouteMap(str(path), clock=clock)
    write_map(path, "route:other.example FORWARD: mx.other\n", mtime=1_000_100)
    clock.now += maps.CHECK_INTERVAL + 0.1
    route = rm.for_recipient("x@example.com")
    assert route is not None and route.key == "route:example.com"
    assert len(rm) == len(parse_map_text(BASIC_ROUTES))


# --- problems: every bad line, once per change of the file ------------------------------


def test_every_bad_line_is_named_in_one_error(tmp_path, clock):
    path = write_map(tmp_path / "route-map", "route:local FORWARD: 127.0.0.1:26\nno-colon x\n"
                     "route:a.example FORWARD: h:99999\nroute:b.example BOGUS\n")
    with pytest.raises(MapError) as err:
        RouteMap(str(path), clock=clock)
    text = str(err.value)
    assert text.startswith(f"{path}: 3 bad lines: ")
    assert [f"{path}:{n}:" in text for n in (2, 3, 4)] == [True, True, True]
    assert text.index(f"{path}:2:") < text.index(f"{path}:3:") < text.index(f"{path}:4:")


def test_end_of_line_comment_gets_a_hint(tmp_path, clock):
    path = write_map(tmp_path / "route-map", "route:local FORWARD: 127.0.0.1:26   # required\n")
    with pytest.raises(MapError, match="'#' starts a comment only at the start of a line"):
        RouteMap(str(path), clock=clock)


def test_a_broken_file_is_reported_once_until_it_changes_again(tmp_path, clock):
    from twisted.logger import globalLogPublisher

    path = write_map(tmp_path / "route-map", BASIC_ROUTES, mtime=1000)
    rm = RouteMap(str(path), clock=clock)
    errors: list[dict] = []
    observer = errors.append
    globalLogPublisher.addObserver(observer)
    try:
        write_map(path, BASIC_ROUTES + "route:x.example FORWARD: h:0\nbad\n", mtime=2000)
        for _ in range(9):  # nine sessions look something up
            clock.now += maps.CHECK_INTERVAL + 1
            assert rm.for_recipient("a@example.com").forward == (("127.0.0.1", 2601), ("192.168.0.9", 25))
        failures = [e for e in errors if "map reload failed" in e.get("log_format", "")]
        assert len(failures) == 1
        assert ":13:" in failures[0]["err"] and ":14:" in failures[0]["err"]
        write_map(path, BASIC_ROUTES + "route:x.example FORWARD: h\n", mtime=3000)  # fixed
        clock.now += maps.CHECK_INTERVAL + 1
        assert rm.for_recipient("a@x.example").forward == (("h", 25),)
    finally:
        globalLogPublisher.removeObserver(observer)


class _Client:
    def __init__(self, ip: str, name: str):
        self.ip, self.name = ip, name


def test_client_and_mail_entries_of_a_tag_the_map_lacks_are_none_until_it_has_one(tmp_path, clock):
    path = write_map(tmp_path / "access", "rate-connect:192.0.2 5\nlength-from:example.org 1M\n",
                     mtime=1_000_000)
    m = KeyValueMap(str(path), clock=clock)
    client = _Client("192.0.2.9", "mx.example.net")
    assert m.client_entry("Rate-Connect", client) == ("rate-connect:192.0.2", "5")
    assert m.mail_entry("length-from", "a@example.org") == ("length-from:example.org", "1M")
    assert m.client_entry("tls-connect", client) is None
    assert m.mail_entry("length-to", "b@example.com") is None
    assert m.has_tag("rate-connect") and not m.has_tag("tls-connect")
    write_map(path, "rate-connect:192.0.2 5\ntls-connect:example.net REQUIRE\n", mtime=1_000_100)
    clock.now += maps.CHECK_INTERVAL + 0.1
    assert m.client_entry("tls-connect", client) == ("tls-connect:example.net", "REQUIRE")
    assert m.mail_entry("length-from", "a@example.org") is None
    unknown = _Client("192.0.2.9", "unknown")  # no PTR name: the IP's keys only
    assert m.client_entry("tls-connect", unknown) is None


@pytest.mark.parametrize("key", ["route:127", "route:127.0.0", "route:127.0.0.1", "route:::1"])
def test_the_local_route_may_be_a_127_prefix_as_in_smtpf(tmp_path, key):
    path = write_map(tmp_path / "route-map", f"{key} FORWARD: 127.0.0.1:26; RELAY\n")
    rm = RouteMap(str(path))
    assert rm.local is not None and rm.local.forward == (("127.0.0.1", 26),)
    assert rm.for_recipient("postmaster").forward == (("127.0.0.1", 26),)
