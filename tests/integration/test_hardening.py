"""End to end: slow clients, stuck handshakes, hostile pipelining and downstream faults."""

from __future__ import annotations

import os
import re
import selectors
import signal
import socket
import threading
import time

import pytest

from barricade.metrics import METRICS_CONNECTIONS
from tests.conftest import routes_to
from tests.daemons import wait_for
from tests.smtpclient import Client


def _trickle(port: int, count: int, every: float, give_up: float, data: bytes) -> dict:
    """``count`` connections each sending ``data`` one byte every ``every`` seconds.

    Returns per connection what the server sent and the seconds until it closed
    (None: still open after ``give_up`` seconds).
    """
    sel = selectors.DefaultSelector()
    started = time.monotonic()
    conns = {}
    for i in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.setblocking(False)
        conns[s] = {"got": b"", "closed": None, "sent": 0, "i": i, "banner_at": 0.0}
        sel.register(s, selectors.EVENT_READ)
    next_byte = time.monotonic()
    try:
        while time.monotonic() - started < give_up and any(c["closed"] is None for c in conns.values()):
            now = time.monotonic()
            if now >= next_byte:
                next_byte = now + every
                for s, c in conns.items():
                    if c["closed"] is None and c["sent"] < len(data) and b"\r\n" in c["got"]:
                        try:
                            s.send(data[c["sent"]:c["sent"] + 1])
                            c["sent"] += 1
                        except OSError:
                            pass
            for key, _ in sel.select(timeout=0.1):
                c = conns[key.fileobj]
                try:
                    chunk = key.fileobj.recv(4096)
                except ConnectionResetError:
                    chunk = b""
                except BlockingIOError:
                    continue
                if b"\r\n" not in c["got"] and b"\r\n" in c["got"] + chunk:  # the banner's line is in
                    c["banner_at"] = time.monotonic() - started
                c["got"] += chunk
                if not chunk:
                    c["closed"] = time.monotonic() - started
                    sel.unregister(key.fileobj)
    finally:
        for s in conns:
            s.close()
    return {c["i"]: c for c in conns.values()}


def test_clients_typing_one_byte_at_a_time_are_closed_with_a_reply(sink, make_proxy):
    timeout = 3
    proxy = make_proxy(routes_to(sink), f"smtp-command-timeout={timeout}")
    # The slack is for a loaded machine; without the fix these never close.
    result = _trickle(proxy.port, 40, 0.5, 4 * timeout + 10, b"EHLO " + b"x" * 200 + b"\r\n")
    for c in result.values():
        assert c["closed"] is not None, "a trickling client was never closed"
        # Within twice the timeout of the banner (plus a second for a loaded machine).
        assert c["closed"] - c["banner_at"] < 2 * timeout + 1, c
        assert b"#905" in c["got"] and b"421 4.4.7 connection timeout exceeded" in c["got"]
    assert proxy.metric("barricade_replies_total", id="905") == 40


def test_a_trickled_message_body_is_cut_off_with_a_reply(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "smtp-data-line-timeout=2")
    with Client(proxy.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@example.org>").code == 250
        assert c.cmd("RCPT TO:<b@example.com>").code == 250
        assert c.cmd("DATA").code == 354
        c.sock.settimeout(0.5)
        reply = None
        for _ in range(40):  # 20 s at most: one byte every 0.5 s, no line end
            try:
                c.send(b"x")
                reply = c.read()
                break
            except TimeoutError:
                continue
        assert reply is not None and (reply.code, reply.id) == (421, 905)
    sink.assert_nothing_from()


def test_session_time_limit_ends_a_busy_session(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "smtp-session-timeout=2")
    with Client(proxy.port) as c:
        deadline = time.monotonic() + 20
        reply = None
        while time.monotonic() < deadline:
            reply = c.cmd("NOOP")
            if reply.code != 250:
                break
            time.sleep(0.2)
        assert (reply.code, reply.status, reply.id) == (421, "4.4.7", 940)
        assert c.closed()


def test_a_thousand_pipelined_recipients_are_delivered_in_batches(make_sink, make_proxy):
    """RFC 5321 4.5.3.1.10: past the limit the client delivers a batch and retries the rest."""
    sink = make_sink()
    proxy = make_proxy(routes_to(sink), "message-rcpt-limit=100", "smtp-drop-after=5")
    rcpts = [f"r{i}@example.com" for i in range(1000)]
    left = list(rcpts)
    with Client(proxy.port, timeout=60) as c:
        assert "PIPELINING" in c.ehlo().lines
        for _ in range(10):
            c.send(b"MAIL FROM:<a@example.org>\r\n" + b"".join(f"RCPT TO:<{r}>\r\n".encode() for r in left))
            assert c.read().code == 250
            replies = [c.read() for _ in left]
            accepted = [r for r, rep in zip(left, replies, strict=True) if rep.code == 250]
            refused = [rep for rep in replies if rep.code != 250]
            assert accepted and all((rep.code, rep.id) == (452, 910) for rep in refused)
            assert c.cmd("DATA").code == 354
            c.send(b"Subject: batch\r\n\r\nbody\r\n.\r\n")
            assert c.read().code == 250
            left = left[len(accepted):]
            if not left:
                break
        assert not left
        assert c.cmd("QUIT").code == 221
    delivered = set()
    for msg in sink.messages():
        delivered.update(re.findall(rb"X-Rcpt-Args: <([^>]+)>", msg))
    assert delivered == {r.encode() for r in rcpts}
    assert len(sink.messages()) == 10


def test_downstream_lost_between_pipelined_mail_and_rcpt_leaves_no_unhandled_error(make_sink, make_proxy):
    sink = make_sink("-q", "MAIL")  # drops the connection at MAIL: the pipelined RCPT fails too
    proxy = make_proxy(routes_to(sink))
    with Client(proxy.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@example.org>").code == 250
        r = c.cmd("RCPT TO:<b@example.com>")
        assert r.code in (421, 451) and r.id in (901, 903)
    time.sleep(0.5)  # let a garbage-collected Deferred show up in the log
    proxy.stop(check_log=False)
    assert proxy.unhandled_errors() == []
    assert "lost" in proxy.log_text() or "connect" in proxy.log_text()


def _client_hello() -> bytes:
    """A real TLS ClientHello, as the first bytes a TLS client sends."""
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="barricade.test")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def _closed_after(c: Client, limit: float, feed: bytes = b"", every: float = 0.5) -> float | None:
    """Seconds until the server closed ``c`` (feeding ``feed`` byte by byte), None past ``limit``."""
    started = time.monotonic()
    c.sock.settimeout(every)
    sent = 0
    while time.monotonic() - started < limit:
        if sent < len(feed):
            try:
                c.sock.send(feed[sent:sent + 1])
                sent += 1
            except OSError:
                return time.monotonic() - started
        try:
            if c.sock.recv(4096) == b"":
                return time.monotonic() - started
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - started
    return None


@pytest.mark.parametrize("after", ["silence", "plaintext", "slow-client-hello"])
def test_an_unfinished_tls_handshake_is_dropped_within_its_timeout(sink, make_proxy, tmp_path, after):
    from tests.integration.test_protocol import make_cert

    cert, key = make_cert(tmp_path)
    proxy = make_proxy(routes_to(sink), f"tls-server-cert={cert}", f"tls-server-key={key}",
                       "tls-handshake-timeout=2", "smtp-command-timeout=60")
    with Client(proxy.port) as c:
        assert "STARTTLS" in c.ehlo().lines
        assert c.cmd("STARTTLS").id == 913
        if after == "plaintext":
            c.send(b"EHLO client.example.org\r\n")
        feed = _client_hello() if after == "slow-client-hello" else b""
        took = _closed_after(c, 20, feed)
        assert took is not None, "the socket outlived the handshake timeout"
        assert took < 2 + 3  # the timeout, and slack for a loaded machine
    if after != "plaintext":  # plaintext fails the handshake by itself
        assert "TLS handshake not done in 2s" in proxy.log_text()


def _open_many(port: int, count: int, timeout: float = 10) -> tuple[list[socket.socket], list[bytes]]:
    """``count`` connections; each one's first reply line (b"" if closed without one)."""
    socks, firsts = [], []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        socks.append(s)
    for s in socks:
        got = b""
        try:
            while b"\r\n" not in got:
                chunk = s.recv(512)
                if not chunk:
                    break
                got += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        firsts.append(got)
    return socks, firsts


def test_out_of_descriptors_every_client_gets_a_reply_and_sessions_still_deliver(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "descriptor-reserve=32", nofile=(64, 160))
    text = proxy.log_text()
    assert "file descriptor limit raised from 64 to 160 (hard limit 160)" in text
    capacity = int(proxy.metric("barricade_session_capacity"))
    assert 0 < capacity < 80
    socks, firsts = _open_many(proxy.port, capacity + 40)
    try:
        banners = [f for f in firsts if f.startswith(b"220 ")]
        busy = [f for f in firsts if f.startswith(b"421 4.3.2 barricade.test busy, try again later #941")]
        assert len(banners) + len(busy) == len(firsts), "a connection was closed without a reply"
        assert len(banners) == capacity and len(busy) == 40
        assert proxy.metric("barricade_connections_refused_total", reason="descriptors") == 40
        # Every admitted session can still open its downstream connection: no #901.
        held = [s for s, f in zip(socks, firsts, strict=True) if f.startswith(b"220 ")]
        _deliver_on(held[0])
    finally:
        for s in socks:
            s.close()
    with Client(proxy.port) as c:  # room again once they are gone
        assert c.banner.code == 220
    assert "Too many open files" not in proxy.log_text()


def _deliver_on(c: socket.socket) -> None:
    """One message on an open session that has read its banner; every reply checked."""
    for line, code in ((b"EHLO client.example.org", b"250"), (b"MAIL FROM:<a@example.org>", b"250"),
                       (b"RCPT TO:<b@example.com>", b"250"), (b"DATA", b"354"),
                       (b"Subject: fd\r\n\r\nbody\r\n.", b"250")):
        c.sendall(line + b"\r\n")
        reply = b""
        while not re.search(rb"^\d{3} [^\r]*\r\n", reply, re.M):
            reply += c.recv(4096)
        assert reply.splitlines()[-1].startswith(code), reply


def test_idle_metrics_connections_cannot_take_the_descriptors_sessions_need(sink, make_proxy):
    """/metrics is served by the process that serves SMTP: its connections come out of
    ``descriptor-reserve``, so they are bounded (``METRICS_CONNECTIONS``)."""
    proxy = make_proxy(routes_to(sink), "descriptor-reserve=32", nofile=(160, 160))
    capacity = int(proxy.metric("barricade_session_capacity"))
    assert 0 < capacity < 80
    idle = [socket.create_connection(("127.0.0.1", proxy.metrics_port), timeout=5) for _ in range(100)]
    socks: list[socket.socket] = []
    try:
        time.sleep(0.5)
        closed = 0
        for s in idle:
            s.setblocking(False)
            try:
                closed += s.recv(1) == b""
            except BlockingIOError:
                pass
        assert closed == 100 - METRICS_CONNECTIONS
        socks, firsts = _open_many(proxy.port, capacity)
        assert all(f.startswith(b"220 ") for f in firsts), firsts
        for c in socks[:3]:  # each admitted session still opens its downstream: no #901
            _deliver_on(c)
    finally:
        for s in idle + socks:
            s.close()
    assert proxy.metric("barricade_messages_total", outcome="accept") == 3
    assert "Too many open files" not in proxy.log_text()


def test_a_full_worker_leaves_new_clients_to_the_other_worker(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "workers=2", "descriptor-reserve=32", nofile=(120, 120))
    time.sleep(1)  # both workers report their capacity
    capacity = int(proxy.metric("barricade_session_capacity"))
    assert capacity > 10
    socks, firsts = _open_many(proxy.port, capacity - 2, timeout=20)
    try:
        assert all(f.startswith(b"220 ") for f in firsts), [f for f in firsts if not f.startswith(b"220")]
    finally:
        for s in socks:
            s.close()


def _rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_client_that_never_reads_its_replies_cannot_grow_the_worker(sink, make_proxy):
    """Pipelined NOOPs with the replies never read: each reply was queued, and the
    worker grew by hundreds of megabytes; now it stops taking commands when its send
    buffer is full, and the client meets smtp-command-timeout."""
    proxy = make_proxy(routes_to(sink), "smtp-command-timeout=3")
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", proxy.port))
    try:
        assert s.recv(1000).startswith(b"220 ")
        s.sendall(b"EHLO client.example.org\r\n")
        time.sleep(0.3)
        assert b"250 " in s.recv(4000)
        s.setblocking(False)
        before, sent, closed = _rss_kib(proxy.proc.pid), 0, False
        started = time.monotonic()
        while sent < 40_000_000 and time.monotonic() - started < 30:
            try:
                sent += s.send(b"NOOP\r\n" * 1000)
            except BlockingIOError:
                time.sleep(0.01)
            except OSError:  # reset: the proxy closed it
                closed = True
                break
        grown = _rss_kib(proxy.proc.pid) - before
    finally:
        s.close()
    assert closed, f"still open after {sent} octets"
    assert grown < 16 * 1024, f"the worker grew by {grown} KiB"
    with Client(proxy.port) as c:  # and the worker serves on
        assert c.ehlo().code == 250


def test_a_slow_downstream_holds_the_client_instead_of_its_message_piling_up(make_sink, make_proxy):
    """A message streams to the downstream as it comes; one that takes nothing for a
    while (here: smtp-sink stopped) had the client's bytes pile up in the worker, up to
    message-size-limit per session.  Now the worker stops reading that client until
    the downstream drains, and the message is delivered whole."""
    sink = make_sink()
    proxy = make_proxy(routes_to(sink))
    body = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 30_000  # 30 MB
    with Client(proxy.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@example.org>").code == 250
        assert c.cmd("RCPT TO:<b@example.com>").code == 250
        assert c.cmd("DATA").code == 354
        os.kill(sink.proc.pid, signal.SIGSTOP)
        try:
            before = _rss_kib(proxy.proc.pid)
            sender = threading.Thread(target=c.send, args=(body + b".\r\n",), daemon=True)
            sender.start()
            time.sleep(3)
            grown = _rss_kib(proxy.proc.pid) - before
            assert sender.is_alive(), "the whole message was taken while the downstream took nothing"
        finally:
            os.kill(sink.proc.pid, signal.SIGCONT)
        sender.join(60)
        reply = c.read()
        assert (reply.code, reply.id) == (250, 554), reply
    assert grown < 16 * 1024, f"the worker grew by {grown} KiB while the downstream was stopped"
    wait_for(lambda: len(sink.messages()) == 1, timeout=30, what="the delivery")
