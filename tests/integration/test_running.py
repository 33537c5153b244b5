"""Running Barricade for real: the systemd unit's command, the README's twistd
invocation, logrotate.  As root (as a gateway starts it), port 25 style: a
privileged port is bound before twistd drops to an unprivileged user."""

from __future__ import annotations

import configparser
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from barricade.testing import PACKAGE_ROOT, Client, Sink, banner_ready, stop, wait_for

pytestmark = pytest.mark.integration

UNIT = PACKAGE_ROOT / "conf/systemd/barricade.service"
TWISTD = Path(sys.executable).with_name("twistd")
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="binds a privileged port and drops privileges")


def privileged_port() -> int:
    """A free port below 1024 on 127.0.0.1 (only root may bind it)."""
    for port in range(700, 1000):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip("no free privileged port")


def world_readable_dir() -> Path:
    """A directory the dropped-privilege process can read (pytest's are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="barricade-run-"))
    path.chmod(0o755)
    return path


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(UNIT)
    return parser


def uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


@pytest.fixture
def run_dir():
    path = world_readable_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def write_config(run_dir: Path, port: int, sink: Sink, *extra: str) -> Path:
    routes = run_dir / "route-map"
    routes.write_text(f"route:local FORWARD: 127.0.0.1:{sink.port}\n"
                      f"route:example.com FORWARD: 127.0.0.1:{sink.port}\n")
    conf = run_dir / "barricade.cf"
    conf.write_text("\n".join([
        f"interfaces=127.0.0.1:{port}", f"route-map={routes}", "interface-name=barricade.test",
        "metrics-interface=", "dns-servers=127.0.0.1:9", "-mail-require-mx", "spf-mail-policy=",
        "grey-key=", "-rfc2606-special-domains", "workers=1", "shutdown-timeout=10", *extra]) + "\n")
    (run_dir / "route-map").chmod(0o644)
    conf.chmod(0o644)
    return conf


def test_unit_file_is_valid_for_systemd():
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    text = UNIT.read_text().replace("/opt/barricade/bin/twistd", str(TWISTD))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "barricade.service")
        path.write_text(text)
        run = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True)
    problems = [ln for ln in run.stderr.splitlines() if "barricade.service" in ln]
    assert run.returncode == 0 and problems == [], run.stderr
    service = unit()["Service"]
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["KillMode"] == "mixed" and int(service["TimeoutStopSec"]) > 30  # > shutdown-timeout


@root_only
def test_unit_command_binds_as_root_drops_privileges_reloads_and_drains(run_dir, tmp_path):
    sink = Sink(tmp_path)
    port = privileged_port()
    conf = write_config(run_dir, port, sink)
    argv = shlex.split(unit()["Service"]["ExecStart"])
    argv = [str(TWISTD), *(a.replace("=barricade", "=nobody" if a.startswith("--uid") else "=nogroup")
                           if a.startswith(("--uid", "--gid")) else a for a in argv[1:])]
    argv[argv.index("/etc/barricade/barricade.cf")] = str(conf)
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_ROOT))
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            cwd=str(run_dir))
    try:
        wait_for(lambda: banner_ready(port) or proc.poll() is not None, 20, "barricade")
        assert proc.poll() is None, proc.stdout.read().decode()
        assert uid_of(proc.pid) == pwd.getpwnam("nobody").pw_uid  # the sockets were bound as root
        with Client(port) as c:  # localhost may not relay: the route map decides
            c.ehlo()
            c.cmd("MAIL FROM:<a@outside.org>")
            assert c.cmd("RCPT TO:<b@new.example>").id == 288
        routes = run_dir / "route-map"
        before = routes.stat()
        routes.write_text(f"route:local FORWARD: 127.0.0.1:{sink.port}\n"
                          f"route:new.example FORWARD: 127.0.0.1:{sink.port}\n")
        os.utime(routes, ns=(before.st_atime_ns, before.st_mtime_ns))  # only SIGHUP can see it
        proc.send_signal(signal.SIGHUP)  # ExecReload

        def relays() -> bool:
            with Client(port) as c:
                c.ehlo()
                c.cmd("MAIL FROM:<a@outside.org>")
                return c.cmd("RCPT TO:<b@new.example>").code == 250

        wait_for(relays, 10, "the SIGHUP reload")
        with Client(port) as c:
            c.ehlo()
            c.cmd("MAIL FROM:<a@outside.org>")
            assert c.cmd("RCPT TO:<b@new.example>").code == 250  # read as nobody after the drop
            assert c.cmd("DATA").code == 354
            c.send(b"Subject: in flight\r\n\r\nfirst half\r\n")
            proc.send_signal(signal.SIGTERM)  # KillSignal, to the master alone (KillMode=mixed)
            time.sleep(0.5)
            c.send(b"second half\r\n.\r\n")
            assert c.read().id == 554  # delivered, not cut off
            assert c.read().id == 909
        assert proc.wait(15) in (0, -15)
        assert sink.bodies()[0].endswith(b"first half\nsecond half\n")
    finally:
        stop(proc)
        sink.stop()


@root_only
def test_readme_twistd_invocation_daemonizes_and_removes_its_pid_file(run_dir, tmp_path):
    """twistd's options before the subcommand; the pid file in a directory the
    user owns, so that twistd, no longer root, can delete it when it stops."""
    sink = Sink(tmp_path)
    port = privileged_port()
    conf = write_config(run_dir, port, sink)
    pid_dir = run_dir / "run"
    pid_dir.mkdir()
    shutil.chown(pid_dir, "nobody", "nogroup")
    readme = (PACKAGE_ROOT / "README.md").read_text()
    line = next(ln for ln in readme.splitlines() if ln.startswith("twistd --uid"))
    argv = shlex.split(line.split("  #")[0])
    argv[0] = str(TWISTD)
    argv = [a.replace("barricade:barricade", "nobody:nogroup") for a in argv]
    argv = [{"barricade": "nobody"}.get(a, a) if argv[i - 1] == "--uid" else a for i, a in enumerate(argv)]
    argv = [{"barricade": "nogroup"}.get(a, a) if argv[i - 1] == "--gid" else a for i, a in enumerate(argv)]
    argv = [a.replace("/run/barricade", str(pid_dir)).replace("/etc/barricade/barricade.cf", str(conf))
            .replace("/var/log/barricade", str(run_dir)) for a in argv]
    assert argv.index("barricade") > argv.index("--uid")  # twistd's options first
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_ROOT))
    run = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=str(run_dir), timeout=30)
    assert run.returncode == 0, run.stdout + run.stderr
    pid_file = pid_dir / "barricade.pid"
    try:
        wait_for(lambda: banner_ready(port), 20, "barricade")
        pid = int(pid_file.read_text())
        assert uid_of(pid) == pwd.getpwnam("nobody").pw_uid
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), 20, "barricade to stop")
        assert not pid_file.exists()  # no "No permission to delete pid file"
    finally:
        if pid_file.exists():  # a daemon left running; a pid file left behind names nothing
            stale = int(pid_file.read_text())
            cmdline = Path(f"/proc/{stale}/cmdline")
            if cmdline.exists() and b"twistd" in cmdline.read_bytes():
                os.kill(stale, signal.SIGKILL)
        sink.stop()


def test_logrotate_config_rotates_and_signals(tmp_path):
    if shutil.which("logrotate") is None:
        pytest.skip("logrotate not installed")
    log = tmp_path / "barricade.log"
    log.write_text("a line\n")
    marker = tmp_path / "postrotate-ran"
    text = (PACKAGE_ROOT / "conf/barricade.logrotate").read_text()
    assert "/usr/lib/rsyslog/rsyslog-rotate" in text
    text = (text.replace("/var/log/barricade/barricade.log", str(log))
            .replace("/usr/lib/rsyslog/rsyslog-rotate", f"touch {marker}")
            .replace("create 0640 root adm", "create 0640 root root"))
    conf = tmp_path / "logrotate.conf"
    conf.write_text(text)
    conf.chmod(0o644)
    run = subprocess.run(["logrotate", "-f", "-s", str(tmp_path / "state"), str(conf)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "barricade.log.1").read_text() == "a line\n"
    assert log.exists() and log.read_text() == "" and marker.exists()
