"""The external-program plugin (cli-envelope, cli-content) over real SMTP sessions.

Every test runs ``twistd -n barricade`` in front of Postfix's smtp-sink and
small shell scripts written into the test's temp directory; the scripts
copy their standard input to a file, print a reply text and exit with the
status smtpf gives a meaning to.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import routes_to
from tests.daemons import PACKAGE_ROOT, lf, wait_for
from tests.smtpclient import Client

MESSAGE = b"From: a@example.org\r\nTo: b@example.com\r\nSubject: cli test\r\n\r\nbody line\r\n.dot line\r\n"


def wire(body: bytes) -> bytes:
    """Dot-stuff as a client must."""
    return b"".join((b"." + x if x.startswith(b".") else x) + b"\r\n" for x in body.split(b"\r\n")[:-1])


def _shipped_plugins_importable() -> bool:
    """Does the proxy (PYTHONPATH=checkout) find barricade.plugins.cli by itself?"""
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_ROOT))
    probe = subprocess.run([sys.executable, "-c", "import barricade.plugins.cli"], env=env,
                           capture_output=True, cwd="/")
    return probe.returncode == 0


# Installed, the plugin switches itself on when cli-envelope or cli-content is
# set; from a bare checkout (plugins/ is not yet barricade/plugins) it is
# loaded by module path instead.
PLUGIN = () if _shipped_plugins_importable() else ("plugins=plugins.cli:Cli",)


def script(tmp: Path, name: str, body: str) -> Path:
    path = tmp / name
    path.write_text("#!/bin/sh\n" + body.strip() + "\n")
    path.chmod(0o755)
    return path


def start(make_proxy, sink, *options: str):
    return make_proxy(routes_to(sink), *PLUGIN, *options)


def envelope(c: Client, rcpts=("b@example.com",), sender: str = "a@example.org"):
    """EHLO, MAIL and RCPTs; returns the reply to DATA."""
    c.ehlo()
    assert c.cmd(f"MAIL FROM:<{sender}>").code == 250
    for r in rcpts:
        assert c.cmd(f"RCPT TO:<{r}>").code == 250
    return c.cmd("DATA")


def qid_of(reply) -> str:
    m = re.search(r"message (\S+) accepted", reply.text)
    assert m, reply
    return m.group(1)


def assert_gone(pid: int) -> None:
    """The process no longer exists (Twisted reaped it, so no zombie either)."""
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=5, what=f"pid {pid} to go")


# --- cli-envelope ---------------------------------------------------------------------


def test_envelope_exit_0_continues_with_smtpf_stdin_lines(tmp_path, sink, make_proxy):
    out = tmp_path / "envelope.in"
    prog = script(tmp_path, "env.sh", f'cat >> "{out}"; echo looks fine; exit 0')
    proxy = start(make_proxy, sink, f"cli-envelope={prog}")
    with Client(proxy.port) as c:
        port = c.sock.getsockname()[1]
        data = envelope(c, rcpts=("b@example.com", "c@example.com"))
        assert (data.code, data.id) == (354, 900)
        c.send(wire(MESSAGE) + b".\r\n")
        dot = c.read()
        assert (dot.code, dot.status, dot.id) == (250, "2.0.0", 554)
        first = qid_of(dot)
        # A second transaction in the session gets the next queue id, and a null sender.
        assert c.cmd("MAIL FROM:<>").code == 250
        assert c.cmd("RCPT TO:<d@example.com>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(wire(MESSAGE) + b".\r\n")
        second = qid_of(c.read())
    expected = (
        f"127.0.0.1\n{port}\nlocalhost\nclient.example.org\na@example.org\n{first}\n"
        f"b@example.com\nc@example.com\n"
        f"127.0.0.1\n{port}\nlocalhost\nclient.example.org\n\n{second}\nd@example.com\n"
    )
    assert out.read_text() == expected
    bodies = sink.bodies()
    assert len(bodies) == 2 and all(b.endswith(lf(MESSAGE)) for b in bodies)
    assert "cli-envelope[" in proxy.log_text() and "exit status=0" in proxy.log_text()
    assert "looks fine" in proxy.log_text()


def test_envelope_exit_4_is_451_with_the_program_text(tmp_path, sink, make_proxy):
    prog = script(tmp_path, "env.sh", "cat >/dev/null; echo 'greylisted, try later'; exit 4")
    proxy = start(make_proxy, sink, f"cli-envelope={prog}")
    with Client(proxy.port) as c:
        data = envelope(c)
        assert (data.code, data.status, data.id) == (451, "4.7.0", 224)
        assert data.text.startswith("4.7.0 greylisted, try later #224")
        assert len(data.lines) == 1
        # The session goes on.
        assert c.cmd("RSET").code == 250
        assert c.cmd("MAIL FROM:<a@example.org>").code == 250
    sink.assert_nothing_from()


def test_envelope_exit_5_is_550_with_stdout_and_stderr_lines(tmp_path, sink, make_proxy):
    prog = script(tmp_path, "env.sh", """
cat >/dev/null
echo 'first line of the verdict'
sleep 0.1
echo 'second line, from stderr' >&2
sleep 0.1
printf '\\n\\tthird\\tline  \\n'
exit 5
""")
    proxy = start(make_proxy, sink, f"cli-envelope={prog}")
    with Client(proxy.port) as c:
        data = envelope(c)
    assert (data.code, data.status, data.id) == (550, "5.7.0", 224)
    assert data.lines[0].startswith("5.7.0 first line of the verdict #224 ")
    assert data.lines[1:] == ["5.7.0 second line, from stderr", "5.7.0 third line"]
    sink.assert_nothing_from()


def test_envelope_exit_5_without_output_says_message_rejected(tmp_path, sink, make_proxy):
    prog = script(tmp_path, "env.sh", "exit 5")  # does not even read its input
    proxy = start(make_proxy, sink, f"cli-envelope={prog}")
    with Client(proxy.port) as c:
        data = envelope(c)
    assert (data.code, data.status, data.id) == (550, "5.7.0", 224)
    assert data.text.startswith("5.7.0 message rejected #224")


def test_envelope_exit_6_discards_after_a_250(tmp_path, sink, make_proxy):
    prog = script(tmp_path, "env.sh", "cat >/dev/null; echo 'into the bin'; exit 6")
    proxy = start(make_proxy, sink, f"cli-envelope={prog}")
    with Client(proxy.port) as c:
        data = envelope(c)
        assert (data.code, data.id) == (354, 900)
        c.send(wire(MESSAGE) + b".\r\n")
        dot = c.read()
        assert (dot.code, dot.status, dot.id) == (250, "2.0.0", 554)
        assert c.cmd("QUIT").code == 221
    time.sleep(0.3)
    sink.assert_nothing_from()
    assert "into the bin" in proxy.log_text()


def test_envelope_exit_7_replies_and_drops_the_connection(tmp_path, sink, make_proxy):
    prog = script(tmp_path, "env.sh", "cat >/dev/null; echo 'go away'; exit 7")
    proxy = start(make_proxy, sink, f"cli-envelope={prog}")
    with Client(proxy.port) as c:
        data = envelope(c)
        assert (data.code, data.status, data.id) == (550, "5.7.0", 224)
        assert data.text.startswith("5.7.0 go away #224")
        assert c.closed()
    sink.assert_nothing_from()


def test_envelope_timeout_kills_the_program_and_tempfails(tmp_path, sink, make_proxy):
    pidfile = tmp_path / "pid"
    prog = script(tmp_path, "env.sh", f'echo $$ > "{pidfile}"; exec sleep 30')
    proxy = start(make_proxy, sink, f"cli-envelope={prog}", "cli-timeout=1")
    with Client(proxy.port) as c:
        started = time.monotonic()
        data = envelope(c)
        took = time.monotonic() - started
        assert (data.code, data.status, data.id) == (451, "4.3.0", 907)
        assert c.cmd("RSET").code == 250
    assert 0.9 < took < 5
    assert_gone(int(pidfile.read_text()))
    assert "still running after 1s: killed" in proxy.log_text()


def test_a_program_ignoring_sigterm_gets_sigkill(tmp_path, sink, make_proxy):
    pidfile = tmp_path / "pid"
    prog = script(tmp_path, "env.sh", f"""
trap '' TERM
echo $$ > "{pidfile}"
while :; do sleep 0.1; done
""")
    proxy = start(make_proxy, sink, f"cli-envelope={prog}", "cli-timeout=1")
    with Client(proxy.port) as c:
        data = envelope(c)
    assert (data.code, data.status, data.id) == (451, "4.3.0", 907)
    assert_gone(int(pidfile.read_text()))


@pytest.mark.parametrize(("body", "logged"), [
    ("exit 3", "exit status=3 out of range"),
    ("exit 1", "exit status=1 out of range"),
    ("kill -SEGV $$", "terminated on signal SIGSEGV"),
])
def test_envelope_other_endings_are_451_processing_error(tmp_path, sink, make_proxy, body, logged):
    prog = script(tmp_path, "env.sh", f"cat >/dev/null; echo 'some output'; {body}")
    proxy = start(make_proxy, sink, f"cli-envelope={prog}")
    with Client(proxy.port) as c:
        data = envelope(c)
    assert (data.code, data.status, data.id) == (451, "4.3.0", 907)
    assert logged in proxy.log_text()


def test_a_missing_program_is_451_processing_error(tmp_path, sink, make_proxy):
    proxy = start(make_proxy, sink, f"cli-envelope={tmp_path}/no-such-program")
    with Client(proxy.port) as c:
        data = envelope(c)
    assert (data.code, data.status, data.id) == (451, "4.3.0", 907)
    assert "cannot find" in proxy.log_text()


def test_the_program_gets_only_path_in_its_environment(tmp_path, sink, make_proxy):
    out = tmp_path / "env.out"
    prog = script(tmp_path, "env.sh", f'cat >/dev/null; env > "{out}"')
    proxy = start(make_proxy, sink, f"cli-envelope={prog}")
    with Client(proxy.port) as c:
        assert envelope(c).code == 354
    names = {line.split("=", 1)[0] for line in out.read_text().splitlines()}
    assert names <= {"PATH", "PWD", "SHLVL", "_"}  # the last three are the shell's own
    assert "PATH" in names


def test_a_command_line_with_shell_syntax_runs_under_sh(tmp_path, sink, make_proxy):
    out = tmp_path / "rcpts"
    command = f"tail -n +7 > {out} && echo 'rcpts noted' && exit 5"
    proxy = start(make_proxy, sink, f"cli-envelope={command}")
    with Client(proxy.port) as c:
        data = envelope(c, rcpts=("b@example.com", "c@example.com"))
    assert (data.code, data.status, data.id) == (550, "5.7.0", 224)
    assert data.text.startswith("5.7.0 rcpts noted #224")
    assert out.read_text() == "b@example.com\nc@example.com\n"


def test_a_command_line_with_arguments_runs_without_a_shell(tmp_path, sink, make_proxy):
    out = tmp_path / "args"
    prog = script(tmp_path, "env.sh", f'cat >/dev/null; printf "%s|" "$@" > "{out}"')
    proxy = start(make_proxy, sink, f"cli-envelope={prog} 'two words' plain")
    with Client(proxy.port) as c:
        assert envelope(c).code == 354
    assert out.read_text() == "two words|plain|"


# --- cli-content ------------------------------------------------------------------------

CONTENT = """
cat > "{out}"
code=$(sed -n 's/^X-Exit: \\([0-9]*\\).*/\\1/p' "{out}" | head -n 1)
echo "content verdict $code"
[ -n "$code" ] && exit "$code"
exit 0
"""


def content_proxy(tmp_path, sink, make_proxy, *options: str):
    out = tmp_path / "content.in"
    prog = script(tmp_path, "content.sh", CONTENT.format(out=out))
    return start(make_proxy, sink, f"cli-content={prog}", *options), out


def send(proxy, body: bytes, rcpts=("b@example.com",)):
    with Client(proxy.port) as c:
        c.ehlo()
        return c.message("a@example.org", list(rcpts), wire(body))


def test_content_stdin_is_return_path_received_then_the_message(tmp_path, sink, make_proxy):
    proxy, out = content_proxy(tmp_path, sink, make_proxy)
    dot = send(proxy, MESSAGE)
    assert (dot.code, dot.status, dot.id) == (250, "2.0.0", 554)
    qid = qid_of(dot)
    fed = out.read_bytes()
    lines = fed.split(b"\r\n", 4)
    assert lines[0] == b"Return-Path: <a@example.org>"
    assert lines[1] == b"Received: from client.example.org (localhost [127.0.0.1])"
    assert lines[2] == b"\tby barricade.test (Barricade) with ESMTP id " + qid.encode()
    assert lines[3].startswith(b"\tfor <b@example.com>; ")
    assert lines[4] == MESSAGE
    [delivered] = sink.bodies()
    assert delivered.endswith(lf(MESSAGE)) and b"Return-Path" not in delivered


@pytest.mark.parametrize(("code", "reply"), [
    (4, (451, "4.7.0", 224)),
    (5, (550, "5.7.0", 224)),
])
def test_content_exit_4_and_5_refuse_the_message_with_its_text(tmp_path, sink, make_proxy, code, reply):
    proxy, _ = content_proxy(tmp_path, sink, make_proxy)
    dot = send(proxy, b"X-Exit: %d\r\nSubject: no\r\n\r\nbody\r\n" % code)
    assert (dot.code, dot.status, dot.id) == reply
    assert dot.text.startswith(f"{reply[1]} content verdict {code} #224")
    sink.assert_nothing_from()


def test_content_exit_6_discards(tmp_path, sink, make_proxy):
    proxy, _ = content_proxy(tmp_path, sink, make_proxy)
    dot = send(proxy, b"X-Exit: 6\r\nSubject: bin\r\n\r\nbody\r\n")
    assert (dot.code, dot.status, dot.id) == (250, "2.0.0", 554)
    time.sleep(0.3)
    sink.assert_nothing_from()


def test_content_exit_7_drops(tmp_path, sink, make_proxy):
    proxy, _ = content_proxy(tmp_path, sink, make_proxy)
    with Client(proxy.port) as c:
        c.ehlo()
        dot = c.message("a@example.org", ["b@example.com"], wire(b"X-Exit: 7\r\n\r\nbody\r\n"))
        assert (dot.code, dot.status, dot.id) == (550, "5.7.0", 224)
        assert c.closed()
    sink.assert_nothing_from()


def test_content_timeout_tempfails_and_kills(tmp_path, sink, make_proxy):
    pidfile = tmp_path / "pid"
    prog = script(tmp_path, "content.sh", f'echo $$ > "{pidfile}"; cat >/dev/null; exec sleep 30')
    proxy = start(make_proxy, sink, f"cli-content={prog}", "cli-timeout=1")
    dot = send(proxy, MESSAGE)
    assert (dot.code, dot.status, dot.id) == (451, "4.3.0", 907)
    assert_gone(int(pidfile.read_text()))
    sink.assert_nothing_from()


def test_a_timed_out_program_whose_child_holds_stdin_is_answered_at_its_own_timeout(tmp_path, sink, make_proxy):
    """sh's foreground child inherits stdin and never reads it; sh is killed at
    cli-timeout. Its unwritten stdin was then kept, waiting to be written, so the answer
    waited for the pipeline's check-timeout instead (and the pipe for the child)."""
    prog = script(tmp_path, "content.sh", "sleep 31.7; exit 0")  # sh waits for its foreground child
    proxy = start(make_proxy, sink, f"cli-content={prog}", "cli-timeout=1", "check-timeout=60")
    body = b"Subject: big\r\n\r\n" + (b"x" * 76 + b"\r\n") * 30000  # far more than a pipe holds
    try:
        dot = send(proxy, body)
        assert (dot.code, dot.status, dot.id) == (451, "4.3.0", 907)
        log = proxy.log_text()
        assert "still running after 1s: killed" in log and "timed out in end_of_data" not in log
    finally:
        subprocess.run(["pkill", "-KILL", "-f", "sleep 31.7"], check=False)
    sink.assert_nothing_from()


def test_a_large_message_is_streamed_to_the_program(tmp_path, sink, make_proxy):
    proxy, out = content_proxy(tmp_path, sink, make_proxy, "spool-memory-limit=65536")
    body = b"Subject: big\r\n\r\n" + b"".join(b"line %07d of a long message\r\n" % i for i in range(80000))
    dot = send(proxy, body)
    assert dot.code == 250
    assert out.read_bytes().endswith(body) and len(body) > 2_000_000
    assert sink.bodies()[0].endswith(lf(body))


def test_a_program_that_stops_reading_early_still_decides(tmp_path, sink, make_proxy):
    prog = script(tmp_path, "content.sh", "head -c 100 >/dev/null; echo 'seen enough'; exit 5")
    proxy = start(make_proxy, sink, f"cli-content={prog}")
    body = b"Subject: big\r\n\r\n" + (b"x" * 76 + b"\r\n") * 30000  # far more than a pipe holds
    dot = send(proxy, body)
    assert (dot.code, dot.status, dot.id) == (550, "5.7.0", 224)
    assert dot.text.startswith("5.7.0 seen enough #224")


def test_output_is_capped(tmp_path, sink, make_proxy):
    prog = script(tmp_path, "content.sh", "cat >/dev/null; head -c 300000 /dev/zero | tr '\\0' 'a'; exit 5")
    proxy = start(make_proxy, sink, f"cli-content={prog}")
    dot = send(proxy, MESSAGE)
    assert (dot.code, dot.status, dot.id) == (550, "5.7.0", 224)
    assert len(dot.lines) == 1 and len(dot.lines[0]) < 512
    assert "wrote more than 65536 bytes" in proxy.log_text()


def test_envelope_discard_skips_the_content_program(tmp_path, sink, make_proxy):
    ran = tmp_path / "content-ran"
    env_prog = script(tmp_path, "env.sh", "cat >/dev/null; exit 6")
    content_prog = script(tmp_path, "content.sh", f'cat >/dev/null; touch "{ran}"')
    proxy = start(make_proxy, sink, f"cli-envelope={env_prog}", f"cli-content={content_prog}")
    dot = send(proxy, MESSAGE)
    assert (dot.code, dot.status, dot.id) == (250, "2.0.0", 554)
    time.sleep(0.3)
    sink.assert_nothing_from()
    assert not ran.exists()


def test_both_programs_pass_and_the_mail_arrives(tmp_path, sink, make_proxy):
    env_in, content_in = tmp_path / "env.in", tmp_path / "content.in"
    env_prog = script(tmp_path, "env.sh", f'cat > "{env_in}"')
    content_prog = script(tmp_path, "content.sh", f'cat > "{content_in}"')
    proxy = start(make_proxy, sink, f"cli-envelope={env_prog}", f"cli-content={content_prog}")
    dot = send(proxy, MESSAGE)
    assert (dot.code, dot.id) == (250, 554)
    qid = qid_of(dot)
    assert env_in.read_text().splitlines()[5] == qid  # the same id the content program sees
    assert b" id " + qid.encode() in content_in.read_bytes()
    assert sink.bodies()[0].endswith(lf(MESSAGE))
