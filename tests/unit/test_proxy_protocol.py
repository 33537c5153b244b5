"""PROXY protocol header parsing: the headers HAProxy writes, and broken ones."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from barricade.protocol.proxy_protocol import ProxyHeaderError, listed, parse, parse_hosts
from tests.haproxy import SIGNATURE, unique_id, v1, v2, v2_local


def test_v1_ipv4_and_the_bytes_after_it():
    data = v1("192.0.2.7", "198.51.100.1", 56324, 25) + b"EHLO x\r\n"
    header = parse(data)
    assert (header.version, header.client) == (1, ("192.0.2.7", 56324))
    assert data[header.length:] == b"EHLO x\r\n"


def test_v1_ipv6_and_unknown():
    assert parse(v1("2001:db8::7", "2001:db8::1", 1024, 25)).client == ("2001:db8::7", 1024)
    assert parse(b"PROXY UNKNOWN\r\n").client is None
    assert parse(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n").client is None


def test_v2_ipv4_ipv6_tlvs_and_local():
    header = parse(v2("192.0.2.7", "198.51.100.1", 56324, 25, unique_id(b"abc")) + b"rest")
    assert (header.version, header.client) == (2, ("192.0.2.7", 56324))
    assert parse(v2("2001:db8::7", "2001:db8::1", 65535, 25)).client == ("2001:db8::7", 65535)
    assert parse(v2("::ffff:192.0.2.9", "::1", 7, 25)).client == ("192.0.2.9", 7)
    local = parse(v2_local() + b"x")
    assert local.client is None and local.length == 16


@pytest.mark.parametrize("whole", [
    v1("192.0.2.7", "198.51.100.1", 56324, 25),
    v2("192.0.2.7", "198.51.100.1", 56324, 25, unique_id(b"abc")),
    v2("2001:db8::7", "2001:db8::1", 1, 25),
    v2_local(),
])
def test_truncated_headers_wait_for_more(whole):
    for cut in range(len(whole)):
        assert parse(whole[:cut]) is None, cut
    assert parse(whole) is not None


@pytest.mark.parametrize("bad", [
    b"EHLO client.example\r\n",
    b"PROXY TCP4 192.0.2.7 198.51.100.1 56324\r\n",
    b"PROXY TCP4 2001:db8::7 198.51.100.1 1 25\r\n",
    b"PROXY TCP6 192.0.2.7 2001:db8::1 1 25\r\n",
    b"PROXY TCP6 fe80::7%eth0 2001:db8::1 1 25\r\n",  # a zone: an interface of the balancer's host
    b"PROXY TCP4 192.0.2.777 198.51.100.1 1 25\r\n",
    b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 25\r\n",
    b"PROXY TCP4 192.0.2.7 198.51.100.1 01 25\r\n",
    b"PROXY TCP4 192.0.2.7 198.51.100.1 -1 25\r\n",
    b"PROXY TCP4  192.0.2.7 198.51.100.1 1 25\r\n",
    b"PROXY TCP4 192.0.2.7 198.51.100.1 1 25\n",
    b"PROXY UDP4 192.0.2.7 198.51.100.1 1 25\r\n",
    b"PROXY " + b"x" * 200,
    b"PROXY TCP4 \xff\r\n",
    SIGNATURE + b"\x11\x11\x00\x0c" + bytes(12),  # version 1 in a v2 header
    SIGNATURE + b"\x22\x11\x00\x0c" + bytes(12),  # command 2
    SIGNATURE + b"\x21\x41\x00\x0c" + bytes(12),  # family 4
    SIGNATURE + b"\x21\x11\x00\x08" + bytes(8),  # too short for two IPv4 addresses
    SIGNATURE + b"\x21\x11\xff\xff",  # 64 KB of TLVs announced
    b"\r\n\r\nX",
])
def test_malformed_headers(bad):
    with pytest.raises(ProxyHeaderError):
        parse(bad)


@given(st.binary(max_size=300))
def test_any_bytes_give_a_header_none_or_an_error(data):
    try:
        header = parse(data)
    except ProxyHeaderError:
        return
    assert header is None or 0 < header.length <= len(data)


def test_listed_hosts():
    nets = parse_hosts(["10.1.0.0/16", "::1", "[2001:db8::]/32", "192.0.2.1"])
    assert listed("10.1.2.3", nets) and listed("::1", nets) and listed("192.0.2.1", nets)
    assert listed("::ffff:10.1.0.1", nets) and listed("2001:db8::5", nets)
    assert not listed("10.2.0.1", nets) and not listed("127.0.0.1", nets) and not listed("junk", nets)
    assert not listed("10.1.2.3", ())
    with pytest.raises(ValueError, match="proxy-protocol-hosts: 'lb.example'"):
        parse_hosts(["lb.example"])
