"""avastd plugin, end to end: client → twistd barricade → smtp-sink, with FakeAvastd.

FakeAvastd (tests/scanners.py) speaks the avast4 dialect byte for byte and
really opens the file it is sent, so these tests prove the spool file
exists and holds the message.  Every reply the plugin can give (#149–#162)
is produced here over a real SMTP session, and the bytes the plugin sends
to the daemon are checked exactly (the dialect plugins/avastd.py shows).
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from barricade.testing import PACKAGE_ROOT, Client, Proxy, lf, routes_to, wait_for
from tests.scanners import (
    CLEAN,
    MIME_CLEAN,
    MIME_EICAR,
    MIME_PATTERN,
    RCPT,
    SENDER,
    FakeAvastd,
    _Conn,
    assert_reply,
    assert_scanner_metrics,
    delivered_body,
    reply_when_no_socket_is_left,
    send_message,
    wire,
)

TIMEOUT = 1  # avastd-timeout for the stalling modes: each wait on the daemon

def _discovered() -> bool:
    """Does the proxy (PYTHONPATH=checkout) discover the shipped avastd plugin by itself?

    Asked in a subprocess with the proxy's PYTHONPATH, the way the proxy
    asks.  Then avastd switches itself on when avastd-socket is set, as
    installed; otherwise it is loaded by module path.  Never both: two
    plugin classes would scan every message twice.
    """
    probe = subprocess.run(
        [sys.executable, "-c",
         "import sys; from barricade.plugin import discover; sys.exit('avastd' not in discover())"],
        env=dict(os.environ, PYTHONPATH=str(PACKAGE_ROOT)), capture_output=True, cwd="/", timeout=30)
    return probe.returncode == 0


@functools.cache
def plugin_args() -> tuple[str, ...]:
    """What the proxy needs on its command line to run the plugin once."""
    return () if _discovered() else ("plugins=plugins.avastd:Avastd",)



class Avastd(FakeAvastd):
    """FakeAvastd plus two faults it lacks.

    ``"hang-results"``: greet, answer SCAN with ``200 OK`` and one result
    line, then stall (the wait for the rest of the list times out: #160).
    ``"greet-close"``: send a greeting without its CRLF and close; smtpf's
    line reader returns a partial line at EOF, so the 220 counts, and the
    SCAN request then meets a closed connection (#156).
    """

    MODES = FakeAvastd.MODES + ("hang-results", "greet-close")

    def serve(self, io: _Conn) -> None:
        if self.mode == "greet-close":
            io.send(self.GREETING.rstrip(b"\r\n"))
            return
        if self.mode == "hang-results":
            io.send(self.GREETING)
            path = io.readline().rstrip(b"\r\n").partition(b" ")[2]
            io.send(b"200 OK\r\n" + path + b"\t[+]\r\n")
            io.hang()
        super().serve(io)


@pytest.fixture
def spool_dir(tmp_path) -> Path:
    d = tmp_path / "spool"
    d.mkdir()
    return d


@pytest.fixture
def avastd():
    """Factory: ``avastd("mode")`` starts a fake daemon, stopped after the test."""
    started: list[Avastd] = []

    def make(mode: str = "ok") -> Avastd:
        fake = Avastd(mode)
        started.append(fake)
        return fake

    yield make
    for fake in started:
        fake.stop()


@pytest.fixture
def start(sink, make_proxy, spool_dir):
    """Factory: a proxy scanning with ``fake`` (or at ``socket``), extra options after."""

    def make(fake: Avastd | None, *options: str, socket: str | None = None) -> Proxy:
        where = socket if socket is not None else f"127.0.0.1:{fake.port}"
        return make_proxy(routes_to(sink), *plugin_args(), f"avastd-socket={where}",
                          f"save-dir={spool_dir}", *options)

    return make



def scan_request(spool_dir: Path, qid: str, raw: bytes) -> bytes:
    """The one SCAN line the plugin sent, checked against the spool file naming."""
    m = re.fullmatch(rb"SCAN (\S+)\r\n", raw.split(b"\r\n", 1)[0] + b"\r\n")
    assert m, raw
    path = Path(os.fsdecode(m.group(1)))
    assert path.parent == spool_dir and path.name.startswith(f"{qid}-") and path.suffix == ".tmp"
    return m.group(0)




# --- verdicts ------------------------------------------------------------------------


@pytest.mark.parametrize("message, virus", [(MIME_EICAR, "EICAR Test-NOT virus!!!"),
                                            (MIME_PATTERN, "Barricade Test-Pattern")])
def test_infected_multipart_is_rejected_with_the_virus_name(avastd, start, sink, spool_dir,
                                                            message, virus):
    fake = avastd()
    proxy = start(fake)
    reply, sid = send_message(proxy, message)
    qid = f"{sid}01"
    assert_reply(reply, 550, "5.7.1", 162, f"message {qid} is INFECTED with {virus}")
    fake.wait_received(lambda got: len(got) == 1 and got[0].endswith(b"QUIT\r\n"))
    [raw] = fake.received
    # smtpf's dialogue: SCAN <path>, then QUIT once the list is read.
    assert raw == scan_request(spool_dir, qid, raw) + b"QUIT\r\n"
    sink.assert_nothing_from()
    assert list(spool_dir.iterdir()) == []  # the spool file is gone with the transaction


def test_clean_multipart_is_scanned_and_delivered_byte_exact(avastd, start, sink, spool_dir):
    fake = avastd()
    proxy = start(fake)
    reply, sid = send_message(proxy, MIME_CLEAN)
    assert_reply(reply, 250, "2.0.0", 554)
    fake.wait_received(lambda got: len(got) == 1 and got[0].endswith(b"QUIT\r\n"))
    [raw] = fake.received
    assert raw == scan_request(spool_dir, f"{sid}01", raw) + b"QUIT\r\n"
    assert delivered_body(sink) == lf(MIME_CLEAN)


def test_message_that_is_not_multipart_mixed_is_not_scanned(avastd, start, sink):
    fake = avastd()
    proxy = start(fake)
    reply, _ = send_message(proxy, CLEAN)
    assert_reply(reply, 250, "2.0.0", 554)
    assert fake.connections == 0 and fake.received == []
    assert delivered_body(sink) == lf(CLEAN)


def test_each_message_of_a_session_is_scanned_on_its_own(avastd, start, sink, spool_dir):
    fake = avastd()
    proxy = start(fake)
    with Client(proxy.port) as c:
        c.ehlo()
        first = c.message(SENDER, [RCPT], wire(MIME_EICAR))
        second = c.message(SENDER, [RCPT], wire(MIME_CLEAN))
        sid = first.text.rsplit(" ", 1)[-1]
    assert_reply(first, 550, "5.7.1", 162, f"message {sid}01 is INFECTED with EICAR Test-NOT virus!!!")
    assert_reply(second, 250, "2.0.0", 554)
    fake.wait_received(lambda got: len(got) == 2 and all(x.endswith(b"QUIT\r\n") for x in got))
    one, two = fake.received
    assert one == scan_request(spool_dir, f"{sid}01", one) + b"QUIT\r\n"
    assert two == scan_request(spool_dir, f"{sid}02", two) + b"QUIT\r\n"
    assert delivered_body(sink) == lf(MIME_CLEAN)


def test_a_message_the_daemon_could_not_scan_is_temp_failed(avastd, start, sink):
    """``[E]`` as the message's own result: smtpf passes it; it was not scanned, so
    Barricade answers 451 #160, and logs the line (#163)."""
    proxy = start(avastd("scan-error"))
    reply, _ = send_message(proxy, MIME_EICAR)
    assert_reply(reply, 451, "4.4.0", 160,
                 "avastd read error: could not scan the message: 42110 The file is a decompression bomb (0)")
    sink.assert_nothing_from()
    wait_for(lambda: "#163 avastd error:" in proxy.log_text(), timeout=5, what="#163 in the log")
    assert proxy.metric("barricade_scanner_results_total", scanner="avastd", result="error") == 1


def test_an_error_about_a_part_is_logged_and_a_list_without_results_is_an_error(avastd, start, sink):
    fake = avastd("part-error")
    proxy = start(fake)
    reply, _ = send_message(proxy, MIME_CLEAN)
    assert_reply(reply, 250, "2.0.0", 554)
    wait_for(lambda: "#163 avastd error:" in proxy.log_text(), timeout=5, what="#163 in the log")
    fake.mode = "no-results"
    reply, _ = send_message(proxy, MIME_CLEAN)
    assert_reply(reply, 451, "4.4.0", 160, "avastd read error: no result for the message (0)")
    assert len(sink.messages()) == 1


def test_eof_instead_of_the_blank_line_ends_the_result_list(avastd, start, sink):
    proxy = start(avastd("no-blank"))
    reply, sid = send_message(proxy, MIME_EICAR)
    assert_reply(reply, 550, "5.7.1", 162, f"message {sid}01 is INFECTED with EICAR Test-NOT virus!!!")
    clean, _ = send_message(proxy, MIME_CLEAN)
    assert_reply(clean, 250, "2.0.0", 554)


def test_host_name_socket_is_resolved(avastd, start):
    fake = avastd()
    proxy = start(None, socket=f"localhost:{fake.port}")
    reply, _ = send_message(proxy, MIME_EICAR)
    assert reply.id == 162


# --- policies ------------------------------------------------------------------------


def test_policy_discard_accepts_and_drops_the_message(avastd, start, sink):
    fake = avastd()
    proxy = start(fake, "avastd-policy=discard")
    reply, sid = send_message(proxy, MIME_EICAR)
    assert_reply(reply, 250, "2.0.0", 554)
    assert len(fake.received) == 1
    sink.assert_nothing_from()
    wait_for(lambda: f"#161 message {sid}01 is INFECTED with EICAR Test-NOT virus!!!"
             in proxy.log_text(), timeout=5, what="#161 in the log")


def test_policy_none_logs_and_delivers(avastd, start, sink):
    fake = avastd()
    proxy = start(fake, "avastd-policy=none")
    reply, sid = send_message(proxy, MIME_EICAR)
    assert_reply(reply, 250, "2.0.0", 554)
    assert len(fake.received) == 1
    assert delivered_body(sink) == lf(MIME_EICAR)
    wait_for(lambda: f"#161 message {sid}01 is INFECTED" in proxy.log_text(), timeout=5,
             what="#161 in the log")


# --- daemon failures: each gives smtpf's numbered 451 at the dot -----------------------


@pytest.mark.parametrize("mode, rid, text, sent", [
    # nothing listens: connect error
    ("refuse", 151, "avastd connect error: Connection refused (111)", None),
    # no usable greeting: #153
    ("close", 153, "avastd read error: connection closed", b""),
    ("hang", 153, "avastd read error: timed out", b""),
    ("garbage-greeting", 153, "avastd read error: unexpected greeting (0)", b""),
    ("unavailable", 153, "avastd read error: unexpected greeting (0)", b""),
    # the request meets a closed connection: #156
    ("greet-close", 156, "avastd write error: connection closed", b""),
    # no 200 to SCAN: #158 (avast 2014+ answers 210, which smtpf cannot parse either)
    ("garbage", 158, "avastd read error: unexpected reply to SCAN (0)", "scan"),
    ("engine-error", 158, "avastd read error: unexpected reply to SCAN (0)", "scan"),
    ("avast2014", 158, "avastd read error: unexpected reply to SCAN (0)", "scan"),
    ("hang-scan", 158, "avastd read error: timed out", "scan"),
    ("close-scan", 158, "avastd read error: connection closed", "scan"),
    # the result list stalls: #160
    ("hang-results", 160, "avastd read error: timed out", "scan"),
])
def test_daemon_failure_gives_its_own_451(avastd, start, sink, spool_dir, mode, rid, text, sent):
    fake = avastd(mode)
    proxy = start(fake, f"avastd-timeout={TIMEOUT}")
    started = time.monotonic()
    reply, sid = send_message(proxy, MIME_EICAR)
    assert_reply(reply, 451, "4.4.0", rid)
    assert reply.text.startswith(f"4.4.0 {text}"), reply
    assert time.monotonic() - started < 3 * TIMEOUT + 2
    sink.assert_nothing_from()
    if sent is None:
        assert fake.received == []
    elif sent == "scan":
        fake.wait_received(lambda r: len(r) == 1 and r[0].endswith(b"\r\n"))
        [raw] = fake.received
        assert raw == scan_request(spool_dir, f"{sid}01", raw)  # no QUIT after a failure
    else:
        fake.wait_received(lambda r: len(r) == 1)
        assert fake.received == [sent]


@pytest.mark.parametrize("where, text", [
    # longer than sun_path: no sockaddr can hold it
    ("unix", "File name too long (36)"),
    # a 70-octet label is no DNS name; it is refused before any lookup leaves the host
    ("x" * 70 + ".example:5037", "host not found (0)"),
])
def test_unusable_socket_address_is_an_address_error(start, sink, tmp_path, where, text):
    """smtpf's #149: the daemon's address cannot even be formed."""
    if where == "unix":
        where = str(tmp_path / ("d" * 60) / ("s" * 60) / "avastd.sock")
    proxy = start(None, socket=where)
    reply, _ = send_message(proxy, MIME_EICAR)
    assert_reply(reply, 451, "4.4.0", 149, f"avastd address error: {text}")
    sink.assert_nothing_from()


def test_request_longer_than_smtpf_line_buffer_is_a_buffer_overflow(avastd, sink, make_proxy, tmp_path):
    """``SCAN <path>\\r\\n`` must fit smtpf's 512-byte buffer (#154); checked after the greeting."""
    deep = tmp_path / ("a" * 200) / ("b" * 200) / ("c" * 100)
    deep.mkdir(parents=True)
    fake = avastd()
    proxy = make_proxy(routes_to(sink), *plugin_args(), f"avastd-socket=127.0.0.1:{fake.port}",
                       f"save-dir={deep}")
    reply, _ = send_message(proxy, MIME_EICAR)
    assert_reply(reply, 451, "4.4.0", 154, "avastd buffer overflow")
    fake.wait_received(lambda r: len(r) == 1)
    assert fake.received == [b""]  # connected and greeted, nothing sent
    sink.assert_nothing_from()




def test_no_socket_left_is_an_open_error(avastd, start, sink, spool_dir):
    """socket() failing (EMFILE) is smtpf's "open error" #150, not a connect error."""
    fake = avastd()
    proxy = start(fake, "spool-memory-limit=0")
    reply = reply_when_no_socket_is_left(proxy, spool_dir)
    assert_reply(reply, 451, "4.4.0", 150, "avastd open error: Too many open files (24)")
    assert len(fake.received) == 1  # only the warm-up message reached the daemon
    assert len(sink.messages()) == 1


# --- metrics -------------------------------------------------------------------------


def test_scanner_metrics_count_each_outcome(avastd, start):
    fake = avastd()
    assert_scanner_metrics(start(fake), fake, "avastd", infected=162, unreachable=151)
