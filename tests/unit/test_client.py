"""The client identity module: one range table, one address form."""

from __future__ import annotations

import ipaddress

import pytest

from barricade.client import (
    PRIVATE,
    UNROUTABLE,
    Kind,
    address_text,
    classify,
    in_kinds,
    kind_of,
    normal_ip,
    parse_ip,
)
from barricade.policy.dnsbl import header_ips
from barricade.policy.helo import helo_ip_mismatch
from barricade.policy.mx import routable


@pytest.mark.parametrize("text, expect", [
    ("192.0.2.1", "192.0.2.1"), ("::ffff:192.0.2.1", "192.0.2.1"), ("[192.0.2.1]", "192.0.2.1"),
    ("[IPv6:2001:db8::1]", "2001:db8::1"), (" ipv6:::ffff:10.1.2.3 ", "10.1.2.3"),
])
def test_one_address_form(text, expect):
    assert str(parse_ip(text)) == expect


def test_not_an_address():
    assert normal_ip("mx.example") is None
    with pytest.raises(ValueError):
        parse_ip("300.1.1.1")


@pytest.mark.parametrize("ip, kinds", [
    ("10.1.2.3", Kind.LAN), ("127.0.0.1", Kind.LOOPBACK), ("::1", Kind.LOOPBACK | Kind.RESERVED),
    ("192.0.2.7", Kind.DOCUMENTATION), ("8.8.8.8", Kind(0)), ("fd00::1", Kind.LAN),
    ("::", Kind.UNSPECIFIED | Kind.RESERVED), ("fec0::1", Kind.SITE_LOCAL),
])
def test_kinds(ip, kinds):
    assert kind_of(ipaddress.ip_address(ip)) == kinds


def test_private_is_lan_loopback_and_link_local_only():
    for ip, private in [("10.0.0.1", True), ("169.254.1.1", True), ("fe80::1", True),
                        ("192.0.2.1", False), ("198.18.0.1", False), ("0.1.2.3", False)]:
        assert in_kinds(ipaddress.ip_address(ip), PRIVATE) is private, ip


def test_the_checks_use_the_one_table():
    assert not routable("192.0.2.1") and not routable("::1") and routable("8.8.8.8")
    assert in_kinds(ipaddress.ip_address("240.0.0.1"), UNROUTABLE)
    assert list(header_ips("from [10.0.0.1] by 0.0.0.0 via 8.8.4.4 and :: ::ffff:8.8.8.8")) == \
        ["8.8.4.4", "8.8.8.8"]
    assert not helo_ip_mismatch("[10.9.9.9]", "192.0.2.1")  # a LAN HELO is not held against it
    assert helo_ip_mismatch("[127.0.0.2]", "192.0.2.1")  # loopback is not in the HELO LAN set


def test_classify():
    c = classify("::ffff:127.0.0.1", 25, "unknown", lambda ip, name: name == "localhost")
    assert c.localhost and c.private and c.relay and c.name == "localhost"
    c = classify("192.0.2.1", 25, "unknown", lambda ip, name: False)
    assert not (c.localhost or c.private or c.relay)


def test_address_text_is_the_one_text_form_of_a_peer():
    assert address_text("::ffff:192.0.2.1") == "192.0.2.1"  # the socket's IPv4-mapped form
    assert address_text("2001:DB8:0:0::1") == "2001:db8::1"
    assert address_text("192.0.2.1") == "192.0.2.1"
    assert address_text("not-an-address") == "not-an-address"
