"""The clamd plugin end to end: client → twistd barricade (+clamd) → smtp-sink.

The virus verdicts come from the real clamd (tests/scanners.py, a tiny
signature DB with EICAR and an ASCII pattern), over TCP and over its Unix
socket, in both modes: INSTREAM while DATA arrives and SCAN of the spool
file.  Failures clamd cannot be made to produce on demand (garbage, a hang,
a hang-up) come from ``FakeClamd`` below, which speaks INSTREAM/SCAN byte
for byte as clamd's documentation (clamd(8)) describes.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import routes_to
from tests.daemons import PACKAGE_ROOT, free_port, lf, wait_for
from tests.scanners import (
    CLAMD_EICAR_NAME,
    CLAMD_PATTERN_NAME,
    CLEAN,
    MIME_EICAR,
    MIME_PATTERN,
    Clamd,
    _Closed,
    _Conn,
    _FakeServer,
    short_tmpdir,
)
from tests.smtpclient import Client

pytestmark = pytest.mark.integration

SENDER = "sender@example.org"
RCPT = "rcpt@example.com"


# --------------------------------------------------------------------------
# a byte-faithful fake clamd for the failures


class FakeClamd(_FakeServer):
    """clamd on TCP: one command per connection, answer, close (clamd(8)).

    ``ok`` reads ``zINSTREAM\\0`` and its chunks up to the zero-length one
    (or ``zSCAN <path>\\0``) and answers ``stream: OK\\0`` (``<path>: OK\\0``).
    Extra modes: ``eof`` reads everything and closes without a word,
    ``error`` answers ``stream: Can't allocate memory ERROR\\0`` (clamd's
    engine-error shape); ``garbage`` answers ``GARBAGE`` and closes;
    ``flood`` sends 100 KB with no terminator.
    """

    NAME = "clamd"
    MODES = _FakeServer.MODES + ("eof", "error", "flood")

    def serve(self, io: _Conn) -> None:
        command = self._read_to_nul(io)
        if command.startswith(b"zINSTREAM"):
            self._read_chunks(io)
            obj = b"stream"
        elif command.startswith(b"zSCAN "):
            obj = command[len(b"zSCAN "):]
        else:
            io.send(b"UNKNOWN COMMAND\n")
            return
        if self.mode == "eof":
            return
        if self.mode == "garbage":
            io.send(self.GARBAGE)
        elif self.mode == "flood":
            io.send(b"x" * 100_000)
            io.hang()
        elif self.mode == "error":
            io.send(obj + b": Can't allocate memory ERROR\0")
        else:
            io.send(obj + b": OK\0")

    @staticmethod
    def _read_to_nul(io: _Conn) -> bytes:
        while b"\0" not in io.buf:
            if not io.recv():
                raise _Closed
        line, _, io.buf = io.buf.partition(b"\0")
        return line

    @staticmethod
    def _read_chunks(io: _Conn) -> None:
        while True:
            (n,) = struct.unpack("!L", io.read_exactly(4))
            if n == 0:
                return
            io.read_exactly(n)


def instream_payload(raw: bytes) -> bytes:
    """What an INSTREAM request carried: the chunks joined (asserts the framing)."""
    assert raw.startswith(b"zINSTREAM\0"), raw[:20]
    rest, out = raw[len(b"zINSTREAM\0"):], b""
    while True:
        (n,) = struct.unpack("!L", rest[:4])
        if n == 0:
            assert rest == b"\0\0\0\0", "bytes after the zero-length chunk"
            return out
        out, rest = out + rest[4 : 4 + n], rest[4 + n :]


# --------------------------------------------------------------------------
# fixtures and helpers


def _shipped_plugin_discovered() -> bool:
    """Does the proxy (PYTHONPATH=checkout) discover the shipped clamd plugin by itself?

    Then clamd switches itself on when clamd-socket is set, as installed;
    otherwise it is loaded by module path.  Never both: that would be two
    plugin classes and every message scanned twice.
    """
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_ROOT))
    probe = subprocess.run(
        [sys.executable, "-c",
         "import sys; from barricade.plugin import discover; sys.exit('clamd' not in discover())"],
        env=env, capture_output=True, cwd="/", timeout=30)
    return probe.returncode == 0


PLUGIN = () if _shipped_plugin_discovered() else ("plugins=plugins.clamd:Clamd",)


@pytest.fixture
def make_proxy(make_proxy):
    """The kit's make_proxy, with the clamd plugin loadable from a checkout."""

    def make(route_map: str, *args: str):
        return make_proxy(route_map, *PLUGIN, *args)

    return make


@pytest.fixture(scope="module")
def clamd():
    c = Clamd()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def small_clamd():
    """StreamMaxLength 64K, for clamd's own size limit."""
    c = Clamd(stream_max_length="64K")
    yield c
    c.stop()


@pytest.fixture
def fake():
    """Factory: ``fake("hang")``; every fake is stopped afterwards."""
    started: list[FakeClamd] = []

    def make(mode: str = "ok") -> FakeClamd:
        f = FakeClamd(mode)
        started.append(f)
        return f

    yield make
    for f in started:
        f.stop()


def tcp(c: Clamd | FakeClamd) -> str:
    host, port = c.address
    return f"clamd-socket={host}:{port}"


def wire(body: bytes) -> bytes:
    """Dot-stuffed, as a client sends it (without the final dot)."""
    lines = body.split(b"\r\n")
    if lines and lines[-1] == b"":
        lines = lines[:-1]
    return b"".join((b"." + x if x.startswith(b".") else x) + b"\r\n" for x in lines)


def send(port: int, body: bytes, client: Client | None = None):
    """One transaction; returns the reply to the dot."""
    own = client is None
    c = client or Client(port)
    try:
        if own:
            c.ehlo()
        return c.message(SENDER, [RCPT], wire(body))
    finally:
        if own:
            c.cmd("QUIT")
            c.close()


def delivered(sink) -> list[bytes]:
    """Delivered messages without our 3-line Received header (LF line ends)."""
    return [parts[3] for b in sink.bodies() if len(parts := b.split(b"\n", 3)) == 4]


def assert_delivered(sink, expected: list[bytes]) -> None:
    """Exactly these messages arrived, in any order (dump file times are coarse).

    Partial dumps of aborted transactions may linger briefly, hence the wait.
    """
    try:
        wait_for(lambda: sorted(delivered(sink)) == sorted(expected), timeout=5,
                 what="the expected deliveries")
    except TimeoutError:
        assert sorted(delivered(sink)) == sorted(expected)


def results(proxy, result: str) -> float:
    """barricade_scanner_results_total{scanner="clamd",result=...} (labels as exposed: sorted)."""
    return proxy.metric(f'barricade_scanner_results_total{{result="{result}",scanner="clamd"}}') or 0


def assert_reply(reply, code: int, status: str, rid: int, text: str | None = None) -> None:
    assert (reply.code, reply.status, reply.id) == (code, status, rid), reply
    if text is not None:
        assert reply.text.startswith(f"{status} {text} #{rid} "), reply


def padding(size: int) -> bytes:
    line = b"padding padding padding padding padding padding padding padding\r\n"
    return line * (size // len(line) + 1)


# --------------------------------------------------------------------------
# infected, clean, policies (the real clamd)


def test_eicar_attachment_rejected_over_tcp(clamd, sink, make_proxy):
    proxy = make_proxy(routes_to(sink), tcp(clamd))
    reply = send(proxy.port, MIME_EICAR)
    assert_reply(reply, 550, "5.7.1", 208, CLAMD_EICAR_NAME)
    sink.assert_nothing_from()
    assert results(proxy, "infected") == 1
    assert "INFECTED with Test.EICAR.HDB.UNOFFICIAL (clamd-policy=reject)" in proxy.log_text()


def test_pattern_rejected_over_unix_socket(clamd, sink, make_proxy):
    proxy = make_proxy(routes_to(sink), f"clamd-socket={clamd.socket_path}")
    reply = send(proxy.port, MIME_PATTERN)
    assert_reply(reply, 550, "5.7.1", 208, CLAMD_PATTERN_NAME)
    sink.assert_nothing_from()


def test_clean_mail_delivered_byte_exact(clamd, sink, make_proxy):
    proxy = make_proxy(routes_to(sink), tcp(clamd))
    body = CLEAN + b".a line that starts with a dot\r\n"
    with Client(proxy.port) as c:
        c.ehlo()
        assert_reply(send(proxy.port, body, c), 250, "2.0.0", 554)
        # A second transaction in the same session gets its own scan.
        assert_reply(send(proxy.port, MIME_EICAR, c), 550, "5.7.1", 208)
        assert_reply(send(proxy.port, CLEAN, c), 250, "2.0.0", 554)
    assert_delivered(sink, [lf(body), lf(CLEAN)])
    assert results(proxy, "clean") == 2
    assert results(proxy, "infected") == 1


def test_policy_discard_accepts_and_drops(clamd, sink, make_proxy):
    proxy = make_proxy(routes_to(sink), tcp(clamd), "clamd-policy=discard")
    reply = send(proxy.port, MIME_EICAR)
    assert (reply.code, reply.status, reply.id) == (250, "2.0.0", 554)
    time.sleep(0.2)
    sink.assert_nothing_from()
    assert results(proxy, "infected") == 1
    assert "(clamd-policy=discard)" in proxy.log_text()


def test_policy_none_delivers_and_logs(clamd, sink, make_proxy):
    proxy = make_proxy(routes_to(sink), tcp(clamd), "clamd-policy=none")
    assert_reply(send(proxy.port, MIME_EICAR), 250, "2.0.0", 554)
    assert_delivered(sink, [lf(MIME_EICAR)])
    assert results(proxy, "infected") == 1
    assert "INFECTED with Test.EICAR.HDB.UNOFFICIAL (clamd-policy=none)" in proxy.log_text()


# --------------------------------------------------------------------------
# streaming while DATA arrives


def test_stream_starts_at_end_of_headers_and_is_byte_exact(fake, sink, make_proxy):
    """Cut-through: clamd has the header block before the client sends the body."""
    f = fake("ok")
    proxy = make_proxy(routes_to(sink), tcp(f))
    head, sep, rest = CLEAN.partition(b"\r\n\r\n")
    with Client(proxy.port) as c:
        c.ehlo()
        c.cmd(f"MAIL FROM:<{SENDER}>")
        c.cmd(f"RCPT TO:<{RCPT}>")
        assert c.cmd("DATA").code == 354
        c.send(wire(head + b"\r\n") + b"\r\n")
        f.wait_received(lambda r: len(r) == 1 and b"Message-ID: <clean.1@example.org>\r\n" in r[0])
        c.send(wire(rest))
        c.send(b".\r\n")
        assert_reply(c.read(), 250, "2.0.0", 554)
    [raw] = f.received
    assert instream_payload(raw) == CLEAN
    assert_delivered(sink, [lf(CLEAN)])


def test_cut_through_not_spooled(fake, sink, make_proxy, tmp_path):
    """INSTREAM does not make the proxy spool: the body is downstream before the dot."""
    f = fake("ok")
    save = tmp_path / "save"
    save.mkdir()
    proxy = make_proxy(routes_to(sink), tcp(f), f"save-dir={save}", "spool-memory-limit=0")
    body = CLEAN + padding(100_000)
    with Client(proxy.port) as c:
        c.ehlo()
        c.cmd(f"MAIL FROM:<{SENDER}>")
        c.cmd(f"RCPT TO:<{RCPT}>")
        assert c.cmd("DATA").code == 354
        c.send(wire(body))
        # smtp-sink writes what it receives: the body is there while the dot is not sent.
        wait_for(lambda: any(b"padding padding\n" in m for m in sink.messages()), timeout=5,
                 what="the body downstream before the dot")
        assert list(save.iterdir()) == []
        c.send(b".\r\n")
        assert_reply(c.read(), 250, "2.0.0", 554)
    assert instream_payload(f.received[0]) == body
    assert_delivered(sink, [lf(body)])


# --------------------------------------------------------------------------
# failures


def test_clamd_down_is_451_at_the_dot(sink, make_proxy):
    port = free_port()  # nothing listens there
    proxy = make_proxy(routes_to(sink), f"clamd-socket=127.0.0.1:{port}")
    with Client(proxy.port) as c:
        c.ehlo()
        reply = send(proxy.port, MIME_EICAR, c)
        assert_reply(reply, 451, "4.4.0", 180, "clamd connect error: Connection refused (111)")
        # The session goes on; the next message fails the same way.
        assert_reply(send(proxy.port, CLEAN, c), 451, "4.4.0", 180)
    sink.assert_nothing_from()
    assert results(proxy, "error") == 2


def _established_to(port: int) -> bool:
    """Some connection to 127.0.0.1:``port`` is established (the kernel's table)."""
    wanted = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as table:
        next(table)
        return any(f[2] == wanted and f[3] == "01" for f in (line.split() for line in table))


def test_clamd_stopped_mid_session(sink, make_proxy):
    c_ = Clamd()
    try:
        proxy = make_proxy(routes_to(sink), tcp(c_))
        with Client(proxy.port) as c:
            c.ehlo()
            assert_reply(send(proxy.port, CLEAN, c), 250, "2.0.0", 554)
            c.cmd(f"MAIL FROM:<{SENDER}>")
            c.cmd(f"RCPT TO:<{RCPT}>")
            assert c.cmd("DATA").code == 354
            head, _, rest = MIME_EICAR.partition(b"\r\n\r\n")
            c.send(wire(head + b"\r\n") + b"\r\n")
            # The headers hook has connected (and sent the header block just after).
            wait_for(lambda: _established_to(c_.port), timeout=10, what="the proxy's clamd connection")
            time.sleep(0.3)
            c_.stop()  # clamd goes away in the middle of the stream
            time.sleep(0.3)
            c.send(wire(rest) + b".\r\n")
            reply = c.read()
            assert_reply(reply, 451, "4.4.0", 185,
                         "clamd write error: connection closed by clamd (32)")
            # Still down for the next message: now the connect fails.
            assert_reply(send(proxy.port, CLEAN, c), 451, "4.4.0", 180)
    finally:
        c_.stop()
    assert_delivered(sink, [lf(CLEAN)])


def test_hang_up_before_the_end_is_a_write_error(fake, sink, make_proxy):
    f = fake("close")
    proxy = make_proxy(routes_to(sink), tcp(f))
    with Client(proxy.port) as c:
        c.ehlo()
        c.cmd(f"MAIL FROM:<{SENDER}>")
        c.cmd(f"RCPT TO:<{RCPT}>")
        c.cmd("DATA")
        c.send(b"Subject: x\r\n\r\n")
        wait_for(lambda: f.connections == 1, timeout=5, what="clamd connection")
        time.sleep(0.3)
        c.send(b"body\r\n.\r\n")
        assert_reply(c.read(), 451, "4.4.0", 185, "clamd write error: connection closed by clamd (32)")
    sink.assert_nothing_from()


def test_timeout_is_a_read_error(fake, sink, make_proxy):
    f = fake("hang")
    proxy = make_proxy(routes_to(sink), tcp(f), "clamd-timeout=1")
    started = time.monotonic()
    reply = send(proxy.port, CLEAN)
    assert_reply(reply, 451, "4.4.0", 186, "clamd read error: timed out (110)")
    assert 0.9 < time.monotonic() - started < 5
    sink.assert_nothing_from()
    assert results(proxy, "error") == 1


def test_close_without_answer_is_a_read_error(fake, sink, make_proxy):
    f = fake("eof")
    proxy = make_proxy(routes_to(sink), tcp(f))
    reply = send(proxy.port, CLEAN)
    assert_reply(reply, 451, "4.4.0", 186, "clamd read error: connection closed (104)")
    sink.assert_nothing_from()


def test_endless_answer_is_a_read_error(fake, sink, make_proxy):
    f = fake("flood")
    proxy = make_proxy(routes_to(sink), tcp(f))
    reply = send(proxy.port, CLEAN)
    assert_reply(reply, 451, "4.4.0", 186, "clamd read error: answer too long (90)")
    sink.assert_nothing_from()


def test_missing_unix_socket_is_a_connect_error(sink, make_proxy, tmp_path):
    proxy = make_proxy(routes_to(sink), f"clamd-socket={tmp_path}/no-clamd.sock")
    reply = send(proxy.port, CLEAN)
    assert_reply(reply, 451, "4.4.0", 180)
    assert reply.text.startswith("4.4.0 clamd connect error: ")
    assert "No such file or directory" in reply.text and "(2) #180 " in reply.text
    sink.assert_nothing_from()


def test_bad_socket_option_stops_start_up(sink, make_proxy):
    with pytest.raises(RuntimeError, match="clamd-socket"):
        make_proxy(routes_to(sink), "clamd-socket=127.0.0.1:notaport")


def test_garbage_answer_is_unexpected(fake, sink, make_proxy):
    f = fake("garbage")
    proxy = make_proxy(routes_to(sink), tcp(f))
    reply = send(proxy.port, CLEAN)
    assert_reply(reply, 451, "4.4.0", 206, "unexpected clamd result: ?? this is not a reply line ??")
    sink.assert_nothing_from()
    assert results(proxy, "error") == 1


def test_error_answer_is_unexpected_not_clean(fake, sink, make_proxy):
    """smtpf passes ``stream: ... ERROR``; we refuse to call an engine error clean."""
    f = fake("error")
    proxy = make_proxy(routes_to(sink), tcp(f))
    reply = send(proxy.port, CLEAN)
    assert_reply(reply, 451, "4.4.0", 206,
                 "unexpected clamd result: stream: Can't allocate memory ERROR")
    sink.assert_nothing_from()


def test_no_free_connection_waits_then_451(fake, sink, make_proxy):
    """clamd-connections bounds concurrent scans; a waiter gives up after clamd-timeout."""
    f = fake("hang")
    proxy = make_proxy(routes_to(sink), tcp(f), "clamd-connections=1", "clamd-timeout=1")
    with Client(proxy.port) as a, Client(proxy.port) as b:
        for c in (a, b):
            c.ehlo()
            c.cmd(f"MAIL FROM:<{SENDER}>")
            c.cmd(f"RCPT TO:<{RCPT}>")
            assert c.cmd("DATA").code == 354
        a.send(b"Subject: a\r\n\r\n")  # a holds the only connection
        wait_for(lambda: f.connections == 1, timeout=5, what="first scan")
        b.send(b"Subject: b\r\n\r\nbody\r\n.\r\n")
        for _ in range(8):  # a keeps its stream busy (an idle one is given up)
            a.send(b"more of a\r\n")
            time.sleep(0.2)
        assert_reply(b.read(), 451, "4.4.0", 180, "clamd connect error: too many scans waiting (11)")
        a.send(b".\r\n")
        assert_reply(a.read(), 451, "4.4.0", 186)
    assert f.connections == 1
    sink.assert_nothing_from()
    # both waits are in the histogram, the one that ran out (about clamd-timeout) too
    assert proxy.metric("barricade_scanner_wait_seconds_count", scanner="clamd") == 2
    assert proxy.metric("barricade_scanner_wait_seconds_sum", scanner="clamd") >= 0.9


def test_idle_client_gives_the_stream_up(fake, sink, make_proxy):
    """A stream with no message data for clamd-timeout is dropped (clamd would too)."""
    f = fake("ok")
    proxy = make_proxy(routes_to(sink), tcp(f), "clamd-timeout=1")
    with Client(proxy.port) as c:
        c.ehlo()
        c.cmd(f"MAIL FROM:<{SENDER}>")
        c.cmd(f"RCPT TO:<{RCPT}>")
        c.cmd("DATA")
        c.send(b"Subject: slow\r\n\r\n")
        wait_for(lambda: f.connections == 1, timeout=5, what="the stream to clamd")
        time.sleep(2.5)  # over clamd-timeout from when the stream had its last data
        c.send(b"body\r\n.\r\n")
        assert_reply(c.read(), 451, "4.4.0", 185, "clamd write error: no message data for 1s (110)")
    sink.assert_nothing_from()


def test_connection_released_when_the_dot_never_reaches_clamd(fake, sink, make_proxy):
    """A message refused before clamd's dot hook (here: too big) frees its connection at once."""
    f = fake("ok")
    proxy = make_proxy(routes_to(sink), tcp(f), "clamd-connections=1", "clamd-timeout=10",
                       "message-size-limit=2000")
    with Client(proxy.port) as c:
        c.ehlo()
        refused = send(proxy.port, CLEAN + padding(5000), c)
        assert refused.code // 100 == 5 and refused.id != 208, refused
        started = time.monotonic()
        assert_reply(send(proxy.port, CLEAN, c), 250, "2.0.0", 554)
        assert time.monotonic() - started < 5  # no wait for the only connection (clamd-timeout)
    assert f.connections == 2
    assert_delivered(sink, [lf(CLEAN)])


def test_connection_released_when_the_client_goes_away(fake, sink, make_proxy):
    f = fake("ok")
    proxy = make_proxy(routes_to(sink), tcp(f), "clamd-connections=1", "clamd-timeout=10")
    with Client(proxy.port) as c:
        c.ehlo()
        c.cmd(f"MAIL FROM:<{SENDER}>")
        c.cmd(f"RCPT TO:<{RCPT}>")
        c.cmd("DATA")
        c.send(b"Subject: gone\r\n\r\nhalf a bo")
        wait_for(lambda: f.connections == 1, timeout=5, what="first scan")
    started = time.monotonic()
    assert_reply(send(proxy.port, CLEAN), 250, "2.0.0", 554)
    assert time.monotonic() - started < 5  # held, the connection would free at clamd-timeout
    assert_delivered(sink, [lf(CLEAN)])


# --------------------------------------------------------------------------
# sizes


def test_over_clamd_max_size_is_skipped_and_delivered(clamd, sink, make_proxy):
    """Only clamd-max-size KB are streamed; nothing found there: delivered, "skipped"."""
    proxy = make_proxy(routes_to(sink), tcp(clamd), "clamd-max-size=1")
    body = CLEAN + padding(20_000)
    assert_reply(send(proxy.port, body), 250, "2.0.0", 554)
    assert_delivered(sink, [lf(body)])
    assert results(proxy, "skipped") == 1
    assert results(proxy, "clean") == 0
    assert "only the first 1024 bytes (clamd-max-size) scanned" in proxy.log_text()


def test_over_clamd_max_size_virus_in_the_scanned_part_still_rejected(clamd, sink, make_proxy):
    proxy = make_proxy(routes_to(sink), tcp(clamd), "clamd-max-size=1")
    body = MIME_PATTERN[:400] + b"The marker: BARRICADE-TEST-VIRUS-PATTERN\r\n" + padding(20_000)
    assert len(body.partition(b"PATTERN\r\n")[0]) < 1024
    assert_reply(send(proxy.port, body), 550, "5.7.1", 208, CLAMD_PATTERN_NAME)
    sink.assert_nothing_from()


def test_clamd_max_size_zero_sends_everything(fake, sink, make_proxy):
    f = fake("ok")
    proxy = make_proxy(routes_to(sink), tcp(f), "clamd-max-size=0")
    body = CLEAN + padding(200_000)
    assert_reply(send(proxy.port, body), 250, "2.0.0", 554)
    assert instream_payload(f.received[0]) == body
    assert results(proxy, "clean") == 1


def test_clamd_stream_max_length_exceeded(small_clamd, sink, make_proxy):
    """clamd's own limit (StreamMaxLength 64K) answers an ERROR line and hangs up: #206."""
    proxy = make_proxy(routes_to(sink), tcp(small_clamd), "clamd-max-size=0")
    reply = send(proxy.port, CLEAN + padding(300_000))
    if reply.id == 185:
        # clamd hangs up while we are still streaming; when its reset arrives
        # before we read its ERROR line the kernel drops the line: then the
        # message is refused as a write error instead.  Either way: 451.
        assert_reply(reply, 451, "4.4.0", 185, "clamd write error: connection closed by clamd (32)")
    else:
        assert_reply(reply, 451, "4.4.0", 206,
                     "unexpected clamd result: INSTREAM size limit exceeded. ERROR")
    sink.assert_nothing_from()
    assert results(proxy, "error") == 1


# --------------------------------------------------------------------------
# -clamd-scan-all


def test_scan_all_off_scans_only_multipart(fake, clamd, sink, make_proxy):
    f = fake("ok")
    proxy = make_proxy(routes_to(sink), tcp(f), "-clamd-scan-all")
    assert_reply(send(proxy.port, CLEAN), 250, "2.0.0", 554)
    time.sleep(0.2)
    assert f.connections == 0  # text/plain: not scanned
    assert results(proxy, "skipped") == 1
    proxy2 = make_proxy(routes_to(sink), tcp(clamd), "-clamd-scan-all")
    assert_reply(send(proxy2.port, MIME_PATTERN), 550, "5.7.1", 208, CLAMD_PATTERN_NAME)
    assert_delivered(sink, [lf(CLEAN)])


# --------------------------------------------------------------------------
# SCAN mode: clamd reads the spool file


@pytest.fixture
def save_dir():
    d = short_tmpdir("bcd-clamd-save-")
    yield d
    for p in d.iterdir():
        p.unlink()
    d.rmdir()


def test_scan_mode_reads_the_spool_file(clamd, sink, make_proxy, save_dir: Path):
    proxy = make_proxy(routes_to(sink), f"clamd-socket=SCAN:{clamd.socket_path}",
                       f"save-dir={save_dir}")
    with Client(proxy.port) as c:
        c.ehlo()
        assert_reply(send(proxy.port, MIME_EICAR, c), 550, "5.7.1", 208, CLAMD_EICAR_NAME)
        assert_reply(send(proxy.port, MIME_PATTERN, c), 550, "5.7.1", 208, CLAMD_PATTERN_NAME)
        assert_reply(send(proxy.port, CLEAN, c), 250, "2.0.0", 554)
    assert_delivered(sink, [lf(CLEAN)])
    # clamd opened our spool file by path (its log names it), and it is gone now.
    # clamd answers before it logs: wait for its line.
    wait_for(lambda: f"{CLAMD_EICAR_NAME} FOUND" in clamd.log_text(), timeout=10, what="clamd's log")
    assert f"{save_dir}/" in clamd.log_text()
    assert list(save_dir.iterdir()) == []
    assert results(proxy, "infected") == 2 and results(proxy, "clean") == 1


def test_scan_mode_bare_token_uses_port_3310(sink, make_proxy, save_dir: Path):
    """smtpf's ``clamd-socket=SCAN``: clamd on 127.0.0.1:3310."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT of a past run is fine
        try:
            s.bind(("127.0.0.1", 3310))
        except OSError:
            pytest.skip("127.0.0.1:3310 is taken by another process")
    c_ = Clamd(port=3310)
    try:
        proxy = make_proxy(routes_to(sink), "clamd-socket=SCAN", f"save-dir={save_dir}")
        assert_reply(send(proxy.port, MIME_EICAR), 550, "5.7.1", 208, CLAMD_EICAR_NAME)
        wait_for(lambda: f"{save_dir}/" in c_.log_text(), timeout=10, what="clamd's log of the file")
    finally:
        c_.stop()


def test_scan_mode_failures(fake, sink, make_proxy, save_dir: Path):
    hang = fake("hang")
    proxy = make_proxy(routes_to(sink), f"clamd-socket=SCAN:127.0.0.1:{hang.port}",
                       f"save-dir={save_dir}", "clamd-timeout=1")
    assert_reply(send(proxy.port, CLEAN), 451, "4.4.0", 186, "clamd read error: timed out (110)")
    assert hang.received[0].startswith(b"zSCAN " + str(save_dir).encode() + b"/")
    assert hang.received[0].endswith(b".tmp\0")
    garbage = fake("garbage")
    proxy = make_proxy(routes_to(sink), f"clamd-socket=SCAN:127.0.0.1:{garbage.port}",
                       f"save-dir={save_dir}")
    assert_reply(send(proxy.port, CLEAN), 451, "4.4.0", 206)
    down = free_port()
    proxy = make_proxy(routes_to(sink), f"clamd-socket=SCAN:127.0.0.1:{down}", f"save-dir={save_dir}")
    assert_reply(send(proxy.port, CLEAN), 451, "4.4.0", 180)
    sink.assert_nothing_from()


def test_scan_mode_over_max_size_not_scanned(fake, sink, make_proxy, save_dir: Path):
    f = fake("ok")
    proxy = make_proxy(routes_to(sink), f"clamd-socket=SCAN:127.0.0.1:{f.port}",
                       f"save-dir={save_dir}", "clamd-max-size=1")
    body = CLEAN + padding(5000)
    assert_reply(send(proxy.port, body), 250, "2.0.0", 554)
    assert f.connections == 0
    assert_delivered(sink, [lf(body)])
    assert results(proxy, "skipped") == 1


def test_unusable_unix_socket_path_is_an_address_error(sink, make_proxy):
    """A socket path longer than sun_path can hold: smtpf's address error, #178."""
    path = "/tmp/" + "x" * 120
    proxy = make_proxy(routes_to(sink), *PLUGIN, f"clamd-socket={path}")
    with Client(proxy.port) as c:
        c.ehlo()
        reply = c.message("a@example.org", ["b@example.com"], wire(CLEAN))
    assert (reply.code, reply.status, reply.id) == (451, "4.4.0", 178)
    assert "clamd address error: File name too long (36)" in reply.text
    sink.assert_nothing_from()
    assert proxy.metric("barricade_replies_total", id="178", code="451") == 1
