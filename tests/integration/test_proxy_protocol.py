"""End to end: connections from a listed load balancer begin with a PROXY header."""

from __future__ import annotations

import socket

import pytest

from tests.conftest import routes_to
from tests.haproxy import unique_id, v1, v2, v2_local
from tests.smtpclient import Client

BALANCER = "proxy-protocol-hosts=127.0.0.2"  # the load balancer; the test kit itself is 127.0.0.1


class Balancer(Client):
    """A connection from the load balancer's address, 127.0.0.2."""

    def __init__(self, port: int, greet: bool = False):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10,
                                             source_address=("127.0.0.2", 0))
        self.buf = b""
        self.banner = self.read() if greet else None


def behind(port: int, header: bytes) -> Client:
    c = Balancer(port)
    c.send(header)
    c.banner = c.read()
    return c


@pytest.mark.parametrize("header, ip", [
    (v1("192.0.2.7", "127.0.0.1", 40000, 25), "192.0.2.7"),
    (v1("2001:db8::7", "::1", 40000, 25), "2001:db8::7"),
    (v2("192.0.2.7", "127.0.0.1", 40000, 25, unique_id(b"id-1")), "192.0.2.7"),
    (v2("2001:db8::7", "::1", 40000, 25), "2001:db8::7"),
    (v2_local(), "127.0.0.2"),
    (b"PROXY UNKNOWN\r\n", "127.0.0.2"),
], ids=["v1-ipv4", "v1-ipv6", "v2-ipv4-tlv", "v2-ipv6", "v2-local", "v1-unknown"])
def test_the_client_is_the_one_the_header_names(sink, make_proxy, header, ip):
    proxy = make_proxy(routes_to(sink), BALANCER)
    with behind(proxy.port, header) as c:
        assert c.banner.code == 220
        assert c.ehlo().text.startswith(f"barricade.test Hello client.example.org [{ip}]")
        assert c.message("a@example.org", ["b@example.com"], b"Subject: lb\r\n\r\nx\r\n").code == 250
    [body] = sink.bodies()
    assert f"[{ip}]".encode() in body.split(b"\n", 1)[0]  # our Received: header names the client
    if ip != "127.0.0.2":
        assert f"PROXY v{1 if header.startswith(b'PROXY') else 2} header from 127.0.0.2: client {ip}:40000" \
            in proxy.log_text()


def test_checks_see_the_real_client(access):
    proxy = access("connect:192.0.2 REJECT\n", BALANCER)
    with behind(proxy.port, v2("192.0.2.7", "127.0.0.1", 40000, 25)) as c:
        assert c.banner.code == 550 and c.banner.id == 120
        assert "[192.0.2.7]" in c.banner.text
        assert c.closed()
    with behind(proxy.port, v1("198.51.100.7", "127.0.0.1", 40000, 25)) as c:
        assert c.banner.code == 220
        r = c.cmd("XCLIENT ADDR=192.0.2.50")  # no longer localhost: no XCLIENT
        assert (r.code, r.id) == (550, 918)


@pytest.mark.parametrize("bad", [
    b"EHLO client.example.org\r\n",  # no header at all
    b"PROXY TCP4 192.0.2.777 127.0.0.1 1 25\r\n",
    b"PROXY TCP4 192.0.2.7 127.0.0.1 1 25\n",
    b"PROXY " + b"A" * 10240 + b"\r\n",  # a 10 KB line
    v2("192.0.2.7", "127.0.0.1", 1, 25)[:12] + b"\x11" + v2("192.0.2.7", "127.0.0.1", 1, 25)[13:],
], ids=["missing", "bad-address", "bare-lf", "10kb", "v2-bad-version"])
def test_a_listed_host_without_a_valid_header_is_dropped(sink, make_proxy, bad):
    proxy = make_proxy(routes_to(sink), BALANCER)
    with Balancer(proxy.port) as c:
        c.send(bad)
        assert c.closed() and c.buf == b""  # not even a banner
    assert "connection dropped" in proxy.log_text()
    assert "Traceback" not in proxy.log_text()


@pytest.mark.parametrize("cut", [5, 20, 30])
def test_a_truncated_header_is_dropped_after_a_while(sink, make_proxy, cut):
    proxy = make_proxy(routes_to(sink), BALANCER, "smtp-command-timeout=2")
    with Balancer(proxy.port) as c:
        c.send(v2("2001:db8::7", "::1", 1, 25, unique_id(b"x"))[:cut])
        assert c.closed() and c.buf == b""
    assert "no complete header in time; connection dropped" in proxy.log_text()


def test_client_data_sent_with_the_header_is_an_early_talker(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), BALANCER)
    with Balancer(proxy.port) as c:
        c.send(v1("192.0.2.7", "127.0.0.1", 40000, 25) + b"EHLO client.example.org\r\n")
        r = c.read()
        assert r.id == 420 and c.closed()


def test_from_anyone_else_the_header_is_a_bad_command(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "proxy-protocol-hosts=10.0.0.0/8")
    with Client(proxy.port) as c:
        assert c.banner.code == 220
        r = c.cmd(v1("192.0.2.7", "127.0.0.1", 40000, 25).rstrip(b"\r\n"))
        assert (r.code, r.status, r.id) == (500, "5.5.1", 248)
        assert c.ehlo().text.startswith("barricade.test Hello client.example.org [127.0.0.1]")
    with Client(proxy.port) as c:
        # the v2 signature is CRLF CRLF NUL CRLF "QUIT" LF by design: an SMTP server refuses
        # the empty line, and the lines sent with it are pipelining without EHLO: dropped
        c.send(v2("192.0.2.7", "127.0.0.1", 40000, 25))
        r = c.read()
        assert (r.code, r.id) == (500, 248)
        r = c.read()
        assert (r.code, r.id) == (550, 631)
        assert c.closed()
    assert "Traceback" not in proxy.log_text()


def test_a_bad_host_list_stops_start_up(sink, tmp_path):
    from tests.daemons import Proxy

    with pytest.raises(RuntimeError, match="proxy-protocol-hosts: 'lb.example' is not an address"):
        Proxy(tmp_path, routes_to(sink), "proxy-protocol-hosts=lb.example")
