"""The spamd plugin end to end: client → barricade (spool mode) → spamd → smtp-sink.

The real spamd (tests/scanners.py) scores the samples: GTUBE is 1000 points
against a required score of 5, the clean sample about 0.  A small recording
fake stands in where the exact request bytes matter or spamd must misbehave.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time

import pytest

from barricade.plugin import Plugin
from barricade.policy.verdict import CONTINUE
from tests.conftest import routes_to
from tests.daemons import PACKAGE_ROOT, lf, wait_for
from tests.scanners import CLEAN, GTUBE, FakeAvastd, Spamd
from tests.smtpclient import Client

SENDER = "sender@example.org"
RCPT = "rcpt@example.com"
HAM = b"SPAMD/1.1 0 EX_OK\r\nSpam: False ; 1.5 / 5.0\r\n\r\n"


# --------------------------------------------------------------------------
# helpers


def _plugins_discoverable() -> bool:
    """Does the proxy subprocess find the shipped spamd plugin by itself?

    Asked the way the proxy asks (``discover()``, same PYTHONPATH), since an
    installed, an editable and a bare checkout differ.  When it does not, the
    tests name the class instead; naming it when discovery also finds it
    would run spamd twice.
    """
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_ROOT))
    code = "import sys; from barricade.plugin import discover; sys.exit('spamd' not in discover())"
    probe = subprocess.run([sys.executable, "-c", code], env=env, cwd="/", capture_output=True,
                           timeout=30)
    return probe.returncode == 0


@pytest.fixture(scope="module")
def plugin_specs() -> list[str]:
    """The module:Class specs ``plugins=`` needs besides any extra plugins."""
    return [] if _plugins_discoverable() else ["plugins.spamd:Spamd"]


@pytest.fixture(scope="module")
def spamd():
    s = Spamd()
    yield s
    s.stop()


@pytest.fixture
def proxy_for(sink, make_proxy, plugin_specs):
    """``proxy_for(port_or_socket, "opt=value", ..., extra_plugins=[...])``."""

    def make(socket_value, *args: str, extra_plugins: tuple[str, ...] = ()):
        specs = [*plugin_specs, *extra_plugins]
        opts = [f"spamd-socket={socket_value}", "spamd-timeout=5", *args]
        if specs:
            opts.insert(0, "plugins=" + ",".join(specs))
        return make_proxy(routes_to(sink), *opts)

    return make


def send(proxy, body: bytes, sender: str = SENDER):
    """One transaction; returns the reply to the dot."""
    with Client(proxy.port) as c:
        c.ehlo()
        return c.message(sender, [RCPT], body)


def delivered(sink) -> bytes:
    """The one delivered message without our Received header (3 lines), LF line ends."""
    [body] = sink.bodies()
    lines = body.split(b"\n", 3)
    assert lines[0].startswith(b"Received: from "), body[:200]
    return lines[3]


def headers_of(message: bytes) -> list[bytes]:
    """Header fields, folded lines joined back (the report header is folded)."""
    fields: list[bytes] = []
    for line in message.split(b"\n\n", 1)[0].split(b"\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += b"\n" + line
        else:
            fields.append(line)
    return fields


def scanner_results(proxy, result: str) -> float:
    """barricade_scanner_results_total for spamd and ``result`` (0 when absent)."""
    value = proxy.metric(f'barricade_scanner_results_total{{result="{result}",scanner="spamd"}}')
    return value or 0.0


def with_headers(message: bytes, *lines: bytes) -> bytes:
    """``message`` with header lines added on top."""
    return b"".join(line + b"\r\n" for line in lines) + message


def padded(message: bytes, size: int) -> bytes:
    """``message`` with filler body lines appended until it is at least ``size`` bytes."""
    filler = b"filler line to make the message larger than the limit\r\n"
    return message + filler * (size // len(filler) + 1)


class FakeSpamd:
    """Records each request (to EOF, as spamd reads without Content-length) and answers ``answer``.

    Where the real spamd cannot be made to misbehave, or where the exact
    request bytes must be seen.  ``answer=None`` closes without a byte;
    ``hang=True`` reads the request and then says nothing, connection open.
    (The common fakes' "hang" mode closes at the client's half-close, which
    is the end of a spamd request, so it would not hang here.)
    """

    def __init__(self, answer: bytes | None = HAM, hang: bool = False):
        self.answer = answer
        self.hang = hang
        self.requests: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                self.requests.append(self._read(conn))
                if self.hang:
                    self._stop.wait(30)
                elif self.answer is not None:
                    conn.sendall(self.answer)

    @staticmethod
    def _read(conn: socket.socket) -> bytes:
        data = b""
        try:
            while chunk := conn.recv(65536):
                data += chunk
        except OSError:
            pass
        return data

    def stop(self) -> None:
        self._stop.set()
        self.listener.close()
        self._thread.join(5)


@pytest.fixture
def fake_spamd():
    started: list[FakeSpamd] = []

    def make(answer: bytes | None = HAM, hang: bool = False) -> FakeSpamd:
        f = FakeSpamd(answer, hang)
        started.append(f)
        return f

    yield make
    for f in started:
        f.stop()


class Tagger(Plugin):
    """A test plugin that tags every Subject before spamd runs (for spamd-skip-tagged)."""

    name = "test-tagger"
    order = 100

    async def end_of_data(self, ctx):
        ctx.tag_subject("[TAGGED]")
        return CONTINUE


# --------------------------------------------------------------------------
# scores: reject, tag, deliver


def test_gtube_is_rejected_with_its_score_693(spamd, sink, proxy_for):
    proxy = proxy_for(f"127.0.0.1:{spamd.port}")
    with Client(proxy.port) as c:
        c.ehlo()
        assert c.cmd(f"MAIL FROM:<{SENDER}>").code == 250
        assert c.cmd(f"RCPT TO:<{RCPT}>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(GTUBE + b".\r\n")
        dot = c.read()
        assert (dot.code, dot.status, dot.id) == (550, "5.7.1", 693)
        m = re.match(r"5\.7\.1 message (\S+) junk mail score 1000\.00/5\.00 #693 ", dot.text)
        assert m, dot.text
        # The session goes on: the next message is scanned and delivered.
        assert c.message(SENDER, [RCPT], CLEAN).code == 250
    assert len(sink.messages()) == 1
    assert scanner_results(proxy, "spam") == 1
    assert scanner_results(proxy, "clean") == 1


def test_clean_mail_gets_x_spam_headers_and_arrives_byte_exact(spamd, sink, proxy_for):
    proxy = proxy_for(f"127.0.0.1:{spamd.port}")
    dot = send(proxy, CLEAN)
    assert (dot.code, dot.status, dot.id) == (250, "2.0.0", 554)
    message = delivered(sink)
    head, rest = message.split(b"\n", 3)[:3], message.split(b"\n", 3)[3]
    assert head[0] == b"X-Spam-Flag: NO"
    m = re.fullmatch(rb"X-Spam-Status: NO, score=(-?\d+\.\d\d) required=5\.00", head[1])
    assert m, head[1]
    score = float(m.group(1))
    assert score < 5
    assert head[2] == b"X-Spam-Level: " + b"x" * max(0, int(score))
    assert rest == lf(CLEAN)
    assert scanner_results(proxy, "clean") == 1


def test_spam_below_the_reject_score_is_tagged_and_delivered(spamd, sink, proxy_for):
    proxy = proxy_for(f"127.0.0.1:{spamd.port}", "spamd-score-reject=2000")
    dot = send(proxy, GTUBE)
    assert (dot.code, dot.id) == (250, 554)
    message = delivered(sink)
    headers = headers_of(message)
    assert headers[:3] == [b"X-Spam-Flag: YES", b"X-Spam-Status: YES, score=1000.00 required=5.00",
                           b"X-Spam-Level: " + b"x" * 50]  # capped, as SpamAssassin caps it
    assert b"Precedence: bulk" in headers
    assert b"Subject: [SPAM] GTUBE test" in headers
    assert b"Subject: GTUBE test" not in headers
    body = message.split(b"\n\n", 1)[1]
    assert body == lf(GTUBE).split(b"\n\n", 1)[1]
    assert scanner_results(proxy, "tagged") == 1


def test_never_reject_and_own_header_names_and_level_character(spamd, sink, proxy_for):
    proxy = proxy_for(f"127.0.0.1:{spamd.port}", "spamd-score-reject=-1", "spamd-subject-tag=",
                      "spamd-flag-header=", "spamd-status-header=X-Junk-Status",
                      "spamd-level-character=*")
    assert send(proxy, GTUBE).code == 250
    headers = headers_of(delivered(sink))
    assert headers[:2] == [b"X-Junk-Status: YES, score=1000.00 required=5.00",
                           b"X-Spam-Level: " + b"*" * 50]
    assert not any(h.startswith(b"X-Spam-Flag") for h in headers)
    assert b"Subject: GTUBE test" in headers  # an empty tag leaves the Subject alone


def test_symbols_list_the_rules_in_status_and_report(spamd, sink, proxy_for):
    proxy = proxy_for(f"127.0.0.1:{spamd.port}", "spamd-command=SYMBOLS", "spamd-score-reject=2000")
    assert send(proxy, GTUBE).code == 250
    headers = headers_of(delivered(sink))
    status = next(h for h in headers if h.startswith(b"X-Spam-Status: "))
    assert re.fullmatch(rb"X-Spam-Status: YES, score=1000\.00 required=5\.00 tests=[A-Z0-9_,]*GTUBE[A-Z0-9_,]*",
                        status), status
    report = next(h for h in headers if h.startswith(b"X-Spam-Report: "))
    assert report.startswith(b"X-Spam-Report: score=1000.00 required=5.00")
    assert b"GTUBE" in report


def test_report_puts_spamds_report_in_a_header(spamd, sink, proxy_for):
    proxy = proxy_for(f"127.0.0.1:{spamd.port}", "spamd-command=REPORT")
    assert send(proxy, CLEAN).code == 250
    message = delivered(sink)
    head = message.split(b"\n\n", 1)[0]
    assert b"X-Spam-Report: score=" in head
    assert b"Content analysis details:" in head and b"NO_RELAYS" in head
    assert message.endswith(lf(CLEAN))


# --------------------------------------------------------------------------
# the sender's own X-Spam headers


def test_sender_status_with_a_score_over_the_reject_score_678(spamd, sink, proxy_for):
    proxy = proxy_for(f"127.0.0.1:{spamd.port}")
    body = with_headers(CLEAN, b"X-Spam-Status: Yes, score=15.3 required=5.0 tests=FOO")
    dot = send(proxy, body)
    assert (dot.code, dot.status, dot.id) == (550, "5.7.1", 678)
    assert "message was already marked as spam by sender" in dot.text
    sink.assert_nothing_from()
    assert scanner_results(proxy, "sender-marked") == 1


def test_sender_flag_yes_679(spamd, sink, proxy_for):
    proxy = proxy_for(f"127.0.0.1:{spamd.port}")
    dot = send(proxy, with_headers(CLEAN, b"X-Spam-Flag: YES"))
    assert (dot.code, dot.status, dot.id) == (550, "5.7.1", 679)
    assert "message was already marked as spam by sender" in dot.text
    sink.assert_nothing_from()


def test_sender_status_below_the_reject_score_outweighs_the_flag(fake_spamd, sink, proxy_for):
    fake = fake_spamd()
    proxy = proxy_for(f"127.0.0.1:{fake.port}")
    body = with_headers(CLEAN, b"X-Spam-Status: No, hits=2.0", b"X-Spam-Flag: YES")
    assert send(proxy, body).code == 250  # smtpf: the status header decides
    [request] = fake.requests
    assert b"X-Spam-" not in request  # spamd does not see the sender's verdict


def test_sender_marked_spam_check_can_be_turned_off(spamd, sink, proxy_for):
    proxy = proxy_for(f"127.0.0.1:{spamd.port}", "-spamd-reject-sender-marked-spam")
    assert send(proxy, with_headers(CLEAN, b"X-Spam-Flag: YES")).code == 250
    assert headers_of(delivered(sink))[0] == b"X-Spam-Flag: NO"


# --------------------------------------------------------------------------
# what spamd is sent


def test_request_bytes(fake_spamd, sink, proxy_for):
    fake = fake_spamd()
    proxy = proxy_for(f"127.0.0.1:{fake.port}")
    body = with_headers(CLEAN, b"X-Spam-Score: 99", b"X-Spam-Checker-Version: evil\r\n\tfolded")
    assert send(proxy, body).code == 250
    [request] = fake.requests
    head, _, message = request.partition(b"\r\n\r\n")
    expected = b"Return-Path: <" + SENDER.encode() + b">\r\n" + CLEAN
    assert head == b"CHECK SPAMC/1.5\r\nContent-length: %d\r\nUser: nobody" % len(expected)
    assert message == expected
    headers = headers_of(delivered(sink))
    assert headers[:2] == [b"X-Spam-Flag: NO", b"X-Spam-Status: NO, score=1.50 required=5.00"]
    assert headers[2] == b"X-Spam-Level: x"


def test_spamd_user_from_the_access_map(fake_spamd, sink, proxy_for, tmp_path):
    fake = fake_spamd()
    access = tmp_path / "access.cf"
    access.write_text(f"Spamd:{SENDER} alice\nSpamd:example.net bob\nSpamd:skip.example OK\n")
    proxy = proxy_for(f"127.0.0.1:{fake.port}", f"access-map={access}")
    for sender in (SENDER, "carol@mx.example.net", "dave@other.example"):
        assert send(proxy, CLEAN, sender=sender).code == 250
    users = [re.search(rb"\r\nUser: ([^\r]*)\r\n", r).group(1) for r in fake.requests]
    assert users == [b"alice", b"bob", b"nobody"]
    assert send(proxy, CLEAN, sender="eve@skip.example").code == 250  # OK: not scanned
    assert len(fake.requests) == 3
    assert not headers_of(sink.bodies("eve@skip.example")[0].split(b"\n", 3)[3])[0].startswith(b"X-Spam")
    assert scanner_results(proxy, "skipped") == 1


# --------------------------------------------------------------------------
# not scanned


def test_message_over_max_size_is_not_scanned(spamd, sink, proxy_for):
    proxy = proxy_for(f"127.0.0.1:{spamd.port}", "spamd-max-size=1")
    big = padded(GTUBE, 1100)
    assert len(big) > 1024
    dot = send(proxy, big)
    assert (dot.code, dot.id) == (250, 554)  # GTUBE, but spamd never saw it
    assert delivered(sink) == lf(big)
    assert scanner_results(proxy, "skipped") == 1


def test_message_under_max_size_is_scanned(spamd, sink, proxy_for):
    proxy = proxy_for(f"127.0.0.1:{spamd.port}", "spamd-max-size=4")
    dot = send(proxy, padded(GTUBE, 3000))
    assert (dot.code, dot.id) == (550, 693)


def test_skip_tagged(fake_spamd, sink, proxy_for):
    fake = fake_spamd()
    tagger = "tests.integration.test_plugin_spamd:Tagger"
    proxy = proxy_for(f"127.0.0.1:{fake.port}", "+spamd-skip-tagged", extra_plugins=(tagger,))
    assert send(proxy, CLEAN).code == 250
    assert fake.requests == []
    message = delivered(sink)
    assert b"Subject: [TAGGED] meeting notes" in headers_of(message)
    assert b"X-Spam" not in message


# --------------------------------------------------------------------------
# failures: 451, never a message that escaped the check


def assert_processing_error(dot) -> None:
    assert (dot.code, dot.status, dot.id) == (451, "4.3.0", 907), dot


def test_spamd_down_907(sink, proxy_for):
    with FakeAvastd("refuse") as closed_port:  # bound, not listening: connection refused
        proxy = proxy_for(f"127.0.0.1:{closed_port.port}")
        assert_processing_error(send(proxy, CLEAN))
    sink.assert_nothing_from()
    assert scanner_results(proxy, "error") == 1


def test_spamd_unix_socket_missing_907(sink, proxy_for, tmp_path):
    proxy = proxy_for(str(tmp_path / "no-such-spamd.sock"))
    assert_processing_error(send(proxy, CLEAN))
    sink.assert_nothing_from()


def test_spamd_timeout_907(fake_spamd, sink, proxy_for):
    silent = fake_spamd(hang=True)
    proxy = proxy_for(f"127.0.0.1:{silent.port}", "spamd-timeout=1")
    started = time.monotonic()
    dot = send(proxy, CLEAN)
    elapsed = time.monotonic() - started
    assert_processing_error(dot)
    assert silent.requests[0].endswith(CLEAN)  # the whole request went out first
    assert 0.9 < elapsed < 4
    sink.assert_nothing_from()
    assert "timed out" in proxy.log_text()


@pytest.mark.parametrize("answer", [
    b"?? this is not a reply line \x01\x02\r\n",
    b"SPAMD/1.0 76 Bad header line: (Content-Length mismatch: Expected 217 bytes, got 167 bytes)\r\n",
    b"SPAMD/1.0 79 Timeout: (30 second socket timeout reading input from client)\r\n",
    b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1000.0 / 5.0\r\n",  # EOF before the blank line
    b"SPAMD/1.1 0 EX_OK\r\nSpam: maybe\r\n\r\n",
    b"SPAMD/1.1 0 EX_OK\r\n\r\n",  # no Spam line
    None,  # closed without a byte
    b"SPAMD/1.1 0 EX_OK\r\nSpam: False ; -" + b"9" * 400 + b" / 5.0\r\n\r\n",  # a float's inf
], ids=["garbage", "protocol-error", "timeout-error", "no-blank-line", "bad-spam-line", "no-spam-line",
        "closed", "infinite-score"])
def test_bad_answers_907(fake_spamd, sink, proxy_for, answer):
    fake = fake_spamd(answer)
    proxy = proxy_for(f"127.0.0.1:{fake.port}")
    assert_processing_error(send(proxy, CLEAN))
    sink.assert_nothing_from()
    assert scanner_results(proxy, "error") == 1


def test_named_without_a_socket_is_a_start_up_error(sink, make_proxy, plugin_specs):
    spec = ",".join(plugin_specs) or "spamd"
    with pytest.raises(RuntimeError, match="spamd-socket"):
        make_proxy(routes_to(sink), f"plugins={spec}")


def test_spool_file_gone_550(spamd, sink, proxy_for, tmp_path):
    """smtpf's #682 case: the spooled message cannot be read back for spamd."""
    save = tmp_path / "save"
    save.mkdir()
    proxy = proxy_for(f"127.0.0.1:{spamd.port}", f"save-dir={save}", "spool-memory-limit=0")
    with Client(proxy.port) as c:
        c.ehlo()
        assert c.cmd(f"MAIL FROM:<{SENDER}>").code == 250
        assert c.cmd(f"RCPT TO:<{RCPT}>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(CLEAN)
        wait_for(lambda: any(save.iterdir()), timeout=5, what="spool file")
        for path in save.iterdir():
            # A dangling symlink: reading fails, but the spool's own unlink at
            # the end of the transaction still works (a plain unlink would make
            # Spool.close() fail in the core, see the plugin report).
            path.unlink()
            path.symlink_to(save / "gone")
        c.send(b".\r\n")
        dot = c.read()
    assert (dot.code, dot.status, dot.id) == (451, "4.3.0", 550)
    sink.assert_nothing_from()

