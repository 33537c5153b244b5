"""fpscand plugin, end to end: client → twistd barricade → smtp-sink, with FakeFpscand.

FakeFpscand (tests/scanners.py) answers F-PROT 6's ``SCAN FILE`` protocol
byte for byte and really opens the file it is sent.  Every reply the
plugin can give (#367–#376) is produced here over a real SMTP session, and
the one request line the plugin sends is checked exactly (the protocol plugins/fpscand.py shows).
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

from barricade.plugin import ScannerConnection
from barricade.testing import PACKAGE_ROOT, Proxy, lf, routes_to, wait_for
from plugins.fpscand import Fpscand, parse_result
from tests.scanners import (
    CLEAN,
    MIME_CLEAN,
    MIME_EICAR,
    MIME_PATTERN,
    FakeFpscand,
    assert_reply,
    assert_scanner_metrics,
    delivered_body,
    reply_when_no_socket_is_left,
    send_message,
)

TIMEOUT = 1  # fpscand-timeout for the stalling modes

def _discovered() -> bool:
    """Does the proxy (PYTHONPATH=checkout) discover the shipped fpscand plugin by itself?

    Asked in a subprocess with the proxy's PYTHONPATH, the way the proxy
    asks.  Then fpscand switches itself on when fpscand-socket is set, as
    installed; otherwise it is loaded by module path.  Never both: two
    plugin classes would scan every message twice.
    """
    probe = subprocess.run(
        [sys.executable, "-c",
         "import sys; from barricade.plugin import discover; sys.exit('fpscand' not in discover())"],
        env=dict(os.environ, PYTHONPATH=str(PACKAGE_ROOT)), capture_output=True, cwd="/", timeout=30)
    return probe.returncode == 0


@functools.cache
def plugin_args() -> tuple[str, ...]:
    """What the proxy needs on its command line to run the plugin once."""
    return () if _discovered() else ("plugins=plugins.fpscand:Fpscand",)


class DroppedFpscand(Fpscand):
    """Loaded into the proxy by one test: the daemon connection is gone before the request.

    fpscand has no greeting, so the request is written the moment the
    connection is up and a real daemon cannot make that write fail on cue.
    This double closes its own side first, so the plugin's real write path
    meets a closed connection (#372).  Named in ``plugins=``, it takes the
    place of the discovered fpscand (one instance per plugin name).
    """

    async def _connect(self) -> ScannerConnection:
        conn = await super()._connect()
        conn.stream.transport.loseConnection()
        await conn.read_to_eof()
        return conn



def padded(message: bytes, size: int) -> bytes:
    """``message`` grown to exactly ``size`` bytes by a filler line in its first part."""
    anchor = b"Please find the file attached.\r\n"
    assert anchor in message and size >= len(message) + 3
    filler = b"x" * (size - len(message) - 2) + b"\r\n"
    out = message.replace(anchor, anchor + filler, 1)
    assert len(out) == size
    return out


@pytest.fixture
def spool_dir(tmp_path) -> Path:
    d = tmp_path / "spool"
    d.mkdir()
    return d


@pytest.fixture
def fpscand():
    """Factory: ``fpscand("mode")`` starts a fake daemon, stopped after the test."""
    started: list[FakeFpscand] = []

    def make(mode: str = "ok") -> FakeFpscand:
        fake = FakeFpscand(mode)
        started.append(fake)
        return fake

    yield make
    for fake in started:
        fake.stop()


@pytest.fixture
def start(sink, make_proxy, spool_dir):
    """Factory: a proxy scanning with ``fake`` (or at ``socket``), extra options after."""

    def make(fake: FakeFpscand | None, *options: str, socket: str | None = None,
             plugins: tuple[str, ...] | None = None) -> Proxy:
        where = socket if socket is not None else f"127.0.0.1:{fake.port}"
        return make_proxy(routes_to(sink), *(plugin_args() if plugins is None else plugins),
                          f"fpscand-socket={where}", f"save-dir={spool_dir}", *options)

    return make



def scan_request(spool_dir: Path, qid: str, raw: bytes) -> bytes:
    """The one request the plugin sent, checked against the spool file naming."""
    m = re.fullmatch(rb"SCAN FILE (\S+)\n", raw)
    assert m, raw
    path = Path(os.fsdecode(m.group(1)))
    assert path.parent == spool_dir and path.name.startswith(f"{qid}-") and path.suffix == ".tmp"
    return raw





# --- the result line, read as smtpf reads it ------------------------------------------


@pytest.mark.parametrize("line, parsed", [
    (b"0 <clean> /s/m.tmp", (0, "<clean>")),
    (b"1 <infected: EICAR_Test_File> /s/m.tmp", (1, "<infected: EICAR_Test_File>")),
    (b"1 <contains infected objects: EICAR_Test_File> /s/m.tmp",
     (1, "<contains infected objects: EICAR_Test_File>")),
    (b"16 <Stream is too long>", (16, "<Stream is too")),  # no object: cut at the last space anyway
    (b"0", (0, "")),
    (b"?? not a result", None),
    (b"", None),
    (b"200 OK", None),  # another protocol on the port: no description in angle brackets
    (b"256 <clean> /s/m.tmp", None),  # beyond every bit fpscand defines
    (b"64 <not scanned: encrypted> /s/m.tmp", (64, "<not scanned: encrypted>")),
    (b"220 mx.example ESMTP Postfix", None),
    (b"0 clean /s/m.tmp", None),  # the text is in angle brackets
])
def test_parse_result(line, parsed):
    assert parse_result(line) == parsed


# --- verdicts ------------------------------------------------------------------------


@pytest.mark.parametrize("message, text", [
    (MIME_EICAR, "<contains infected objects: EICAR_Test_File>"),
    (MIME_PATTERN, "<infected: Barricade_Test_Pattern>"),
])
def test_infected_multipart_is_rejected_with_fpscand_text(fpscand, start, sink, spool_dir,
                                                          message, text):
    fake = fpscand()
    proxy = start(fake)
    reply, sid = send_message(proxy, message)
    qid = f"{sid}01"
    assert_reply(reply, 550, "5.7.1", 376, f"message {qid} is {text}")
    [raw] = fake.received
    assert raw == scan_request(spool_dir, qid, raw)  # one line, no QUIT
    sink.assert_nothing_from()
    assert list(spool_dir.iterdir()) == []


def test_clean_multipart_is_scanned_and_delivered_byte_exact(fpscand, start, sink, spool_dir):
    fake = fpscand()
    proxy = start(fake)
    reply, sid = send_message(proxy, MIME_CLEAN)
    assert_reply(reply, 250, "2.0.0", 554)
    [raw] = fake.received
    assert raw == scan_request(spool_dir, f"{sid}01", raw)
    assert delivered_body(sink) == lf(MIME_CLEAN)


def test_message_that_is_not_multipart_mixed_is_not_scanned(fpscand, start, sink):
    fake = fpscand()
    proxy = start(fake)
    reply, _ = send_message(proxy, CLEAN)
    assert_reply(reply, 250, "2.0.0", 554)
    assert fake.connections == 0 and fake.received == []
    assert delivered_body(sink) == lf(CLEAN)


def test_virus_bit_with_other_bits_still_counts(fpscand, start, sink):
    """Code 9 (1+8: infected, some objects skipped): bits 1|2 decide."""
    proxy = start(fpscand("code9"))
    reply, sid = send_message(proxy, MIME_CLEAN)
    assert_reply(reply, 550, "5.7.1", 376, f"message {sid}01 is <infected: EICAR_Test_File>")
    sink.assert_nothing_from()


@pytest.mark.parametrize("mode, text", [("code16", "16 <read error>"),
                                        ("code32", "32 <internal engine error>")])
def test_a_message_the_daemon_could_not_scan_is_temp_failed(fpscand, start, sink, mode, text):
    """smtpf passes it (fail-open); it was not scanned, so Barricade answers 451 #373."""
    proxy = start(fpscand(mode))
    reply, _ = send_message(proxy, MIME_EICAR)
    assert_reply(reply, 451, "4.4.0", 373, f"fpscand read error: could not scan the message: {text} (0)")
    sink.assert_nothing_from()
    assert proxy.metric("barricade_scanner_results_total", scanner="fpscand", result="error") == 1
    wait_for(lambda: "fpscand could not scan message" in proxy.log_text(), timeout=5,
             what="the log line")


def test_an_unscanned_part_passes_as_in_smtpf(fpscand, start, sink):
    """Bit 64: the daemon scanned the message and could not open a part of it."""
    proxy = start(fpscand("code64"))
    reply, _ = send_message(proxy, MIME_EICAR)
    assert_reply(reply, 250, "2.0.0", 554)
    assert delivered_body(sink) == lf(MIME_EICAR)
    assert proxy.metric("barricade_scanner_results_total", scanner="fpscand", result="clean") == 1


def test_host_name_socket_is_resolved(fpscand, start):
    fake = fpscand()
    proxy = start(None, socket=f"localhost:{fake.port}")
    assert send_message(proxy, MIME_EICAR)[0].id == 376


# --- fpscand-max-size ----------------------------------------------------------------


def test_max_size_skips_larger_messages(fpscand, start, sink):
    """fpscand-max-size is in KB: 1024 bytes are scanned, 1025 pass unscanned."""
    fake = fpscand()
    proxy = start(fake, "fpscand-max-size=1")
    at_limit, over = padded(MIME_EICAR, 1024), padded(MIME_EICAR, 1025)
    assert_reply(send_message(proxy, at_limit)[0], 550, "5.7.1", 376)
    assert fake.connections == 1
    assert_reply(send_message(proxy, over)[0], 250, "2.0.0", 554)
    assert fake.connections == 1
    assert delivered_body(sink) == lf(over)
    assert proxy.metric("barricade_scanner_results_total", scanner="fpscand", result="skipped") == 1


def test_max_size_zero_means_no_limit(fpscand, start):
    fake = fpscand()
    proxy = start(fake, "fpscand-max-size=0")
    assert send_message(proxy, padded(MIME_EICAR, 200_000))[0].id == 376
    assert fake.connections == 1


# --- policies ------------------------------------------------------------------------


def test_policy_discard_accepts_and_drops_the_message(fpscand, start, sink):
    fake = fpscand()
    proxy = start(fake, "fpscand-policy=discard")
    reply, sid = send_message(proxy, MIME_EICAR)
    assert_reply(reply, 250, "2.0.0", 554)
    assert len(fake.received) == 1
    sink.assert_nothing_from()
    wait_for(lambda: f"#375 message {sid}01 is <contains infected objects: EICAR_Test_File>"
             in proxy.log_text(), timeout=5, what="#375 in the log")


def test_policy_none_logs_and_delivers(fpscand, start, sink):
    fake = fpscand()
    proxy = start(fake, "fpscand-policy=none")
    reply, sid = send_message(proxy, MIME_EICAR)
    assert_reply(reply, 250, "2.0.0", 554)
    assert len(fake.received) == 1
    assert delivered_body(sink) == lf(MIME_EICAR)
    wait_for(lambda: f"#375 message {sid}01 is" in proxy.log_text(), timeout=5,
             what="#375 in the log")


# --- daemon failures: each gives smtpf's numbered 451 at the dot -----------------------


@pytest.mark.parametrize("mode, rid, text, sent", [
    ("refuse", 369, "fpscand connect error: Connection refused (111)", None),
    ("close", 373, "fpscand read error: connection closed", "any"),
    ("hang", 373, "fpscand read error: timed out", "scan"),
    ("close-scan", 373, "fpscand read error: connection closed", "scan"),
    # smtpf's strtol would read this as code 0, clean; Barricade will not pass it unscanned
    ("garbage", 373, "fpscand read error: unexpected answer (0)", "scan"),
])
def test_daemon_failure_gives_its_own_451(fpscand, start, sink, spool_dir, mode, rid, text, sent):
    fake = fpscand(mode)
    proxy = start(fake, f"fpscand-timeout={TIMEOUT}")
    started = time.monotonic()
    reply, sid = send_message(proxy, MIME_EICAR)
    assert_reply(reply, 451, "4.4.0", rid)
    assert reply.text.startswith(f"4.4.0 {text}"), reply
    assert time.monotonic() - started < 3 * TIMEOUT + 2
    sink.assert_nothing_from()
    if sent is None:
        assert fake.received == []
    elif sent == "scan":
        fake.wait_received(lambda r: len(r) == 1 and r[0].endswith(b"\n"))
        [raw] = fake.received
        assert raw == scan_request(spool_dir, f"{sid}01", raw)
    else:  # "close" shuts the socket before reading whatever was sent
        assert fake.connections == 1


def test_connection_lost_before_the_request_is_a_write_error(fpscand, start, sink):
    fake = fpscand("hang")
    proxy = start(fake, plugins=("plugins=tests.integration.test_plugin_fpscand:DroppedFpscand",))
    reply, _ = send_message(proxy, MIME_EICAR)
    assert_reply(reply, 451, "4.4.0", 372, "fpscand write error: connection closed (32)")
    fake.wait_received(lambda r: len(r) == 1)
    assert fake.received == [b""]
    sink.assert_nothing_from()


@pytest.mark.parametrize("where, text", [
    # longer than sun_path: no sockaddr can hold it
    ("unix", "File name too long (36)"),
    # a 70-octet label is no DNS name; it is refused before any lookup leaves the host
    ("x" * 70 + ".example:5037", "host not found (0)"),
])
def test_unusable_socket_address_is_an_address_error(start, sink, tmp_path, where, text):
    """smtpf's #367: the daemon's address cannot even be formed."""
    if where == "unix":
        where = str(tmp_path / ("d" * 60) / ("s" * 60) / "fpscand.sock")
    proxy = start(None, socket=where)
    reply, _ = send_message(proxy, MIME_EICAR)
    assert_reply(reply, 451, "4.4.0", 367, f"fpscand address error: {text}")
    sink.assert_nothing_from()


def test_request_longer_than_smtpf_line_buffer_is_a_buffer_overflow(fpscand, sink, make_proxy,
                                                                    tmp_path):
    """``SCAN FILE <path>\\n`` must fit smtpf's 512-byte buffer (#370)."""
    deep = tmp_path / ("a" * 200) / ("b" * 200) / ("c" * 100)
    deep.mkdir(parents=True)
    fake = fpscand()
    proxy = make_proxy(routes_to(sink), *plugin_args(), f"fpscand-socket=127.0.0.1:{fake.port}",
                       f"save-dir={deep}")
    reply, _ = send_message(proxy, MIME_EICAR)
    assert_reply(reply, 451, "4.4.0", 370, "fpscand buffer overflow")
    fake.wait_received(lambda r: len(r) == 1)
    assert fake.received == [b""]  # connected, nothing sent
    sink.assert_nothing_from()



def test_no_socket_left_is_an_open_error(fpscand, start, sink, spool_dir):
    """socket() failing (EMFILE) is smtpf's "open error" #368, not a connect error."""
    fake = fpscand()
    proxy = start(fake, "spool-memory-limit=0")
    reply = reply_when_no_socket_is_left(proxy, spool_dir)
    assert_reply(reply, 451, "4.4.0", 368, "fpscand open error: Too many open files (24)")
    assert len(fake.received) == 1  # only the warm-up message reached the daemon
    assert len(sink.messages()) == 1


# --- metrics -------------------------------------------------------------------------


def test_scanner_metrics_count_each_outcome(fpscand, start):
    fake = fpscand()
    assert_scanner_metrics(start(fake), fake, "fpscand", infected=376, unreachable=369)
