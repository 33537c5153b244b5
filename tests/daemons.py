"""Start and stop the real daemons tests talk to (all on loopback).

Each helper starts its daemon on a free high port in a temp directory,
waits for a readiness probe with a deadline, and stops it by pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def lf(data: bytes) -> bytes:
    """Message bytes as smtp-sink's dump shows them."""
    return data.replace(b"\r\n", b"\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


def banner_ready(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.settimeout(2)
            return s.recv(512).startswith(b"220")
    except OSError:
        return False


def stop(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Sink:
    """Postfix's smtp-sink; ``dump`` holds one file per delivered transaction."""

    def __init__(self, tmp: Path, *args: str, port: int | None = None):
        if shutil.which("smtp-sink") is None:
            raise RuntimeError("smtp-sink not installed (apt-get install postfix)")
        self.port = port or free_port()
        # smtp-sink writes as "nobody": pytest's 0700 tmp dirs are out of its reach.
        self.dump = Path(tempfile.mkdtemp(prefix=f"barricade-sink-{self.port}-"))
        if os.geteuid() == 0:
            shutil.chown(self.dump, "nobody")
        cmd = ["smtp-sink"]
        if os.geteuid() == 0:
            cmd += ["-u", "nobody"]
        cmd += ["-d", f"{self.dump}/%H%M%S.", *args, f"127.0.0.1:{self.port}", "1000"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for(lambda: banner_ready(self.port) or self.proc.poll() is not None, what="smtp-sink")
        if self.proc.poll() is not None:
            raise RuntimeError(f"smtp-sink failed: {self.proc.stderr.read().decode()}")

    def messages(self) -> list[bytes]:
        """Delivered transactions (smtp-sink's dump files), oldest first."""
        found = []
        for path in self.dump.iterdir():
            try:  # smtp-sink removes the file of a transaction that ended without a message
                stamp, data = path.stat().st_mtime_ns, path.read_bytes()
            except FileNotFoundError:
                continue
            if data:  # opened at MAIL; still empty: no message (yet)
                found.append((stamp, path.name, data))
        return [data for _, _, data in sorted(found)]

    def bodies(self) -> list[bytes]:
        """The messages as delivered, without smtp-sink's own X- and Received lines.

        smtp-sink stores lines with LF endings and adds one LF after the
        message; both are undone here except the CRLF → LF conversion,
        so compare with ``lf(expected)``.
        """
        out = []
        for raw in self.messages():
            lines = raw.split(b"\n")
            # smtp-sink writes X-Client-*, X-Helo/Mail/Rcpt-Args, then its Received (3 lines).
            i = 0
            while i < len(lines) and lines[i].startswith(b"X-"):
                i += 1
            i += 3
            body = b"\n".join(lines[i:])
            out.append(body[:-1] if body.endswith(b"\n") else body)
        return out

    def stop(self) -> None:
        stop(self.proc)
        shutil.rmtree(self.dump, ignore_errors=True)


class Proxy:
    """``twistd -n barricade`` in a subprocess, the way an operator runs it."""

    def __init__(self, tmp: Path, route_map: str, *args: str, port: int | None = None):
        self.port = port or free_port()
        self.metrics_port = free_port()
        self.tmp = tmp
        self.route_map = tmp / f"route-map-{self.port}"
        self.route_map.write_text(route_map)
        self.log = tmp / f"barricade-{self.port}.log"
        self.args = [
            f"interfaces=127.0.0.1:{self.port}",
            f"route-map={self.route_map}",
            "interface-name=barricade.test",
            f"metrics-interface=127.0.0.1:{self.metrics_port}",
            *args,
        ]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
             "-n", "--pidfile=", "--logfile", str(self.log), "barricade", *self.args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=str(tmp),
        )
        wait_for(lambda: banner_ready(self.port) or self.proc.poll() is not None,
                 timeout=20, what="barricade")
        if self.proc.poll() is not None:
            raise RuntimeError(f"barricade failed to start: {self.proc.stdout.read().decode()}")

    def metric(self, series: str) -> float | None:
        """One sample from /metrics, e.g. ``barricade_sessions_total``."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        for line in text.splitlines():
            name, _, value = line.rpartition(" ")
            if name == series:
                return float(value)
        return None

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def stop(self) -> None:
        stop(self.proc)
