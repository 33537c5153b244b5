"""A test kit for Barricade and its plugins: real daemons on loopback.

``Sink`` runs Postfix's smtp-sink as the downstream MTA (its dump files
show what was delivered), ``Proxy`` runs ``twistd -n barricade`` the way
an operator does, and ``Client`` speaks SMTP byte by byte.  The pytest
fixtures ``sink``, ``make_sink`` and ``make_proxy`` start them in a temp
directory on free ports and stop them by pid::

    # conftest.py of a plugin package
    from barricade.testing import make_proxy, make_sink, sink  # noqa: F401

    def test_my_plugin(sink, make_proxy):
        proxy = make_proxy(routes_to(sink), "plugins=mypkg.plugin:MyPlugin",
                           pythonpath=[Path(__file__).parent.parent])
        with Client(proxy.port) as c:
            ...

``Proxy`` starts with ``grey-key=`` (grey-listing off; it is on by default,
as in smtpf, and would temp-fail every message from an XCLIENT outside
client); a test of grey-listing passes its own ``grey-key=...``.  It also
starts with ``spf-mail-policy=`` (SPF off; smtpf's default checks every
outside sender's domain, which would ask DNS about the tests' example
domains); a test of SPF passes its own.

Needs smtp-sink (Debian: postfix) and pytest.
"""


from __future__ import annotations

import os
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

try:  # the daemons and the client work without pytest (the benchmarks use them)
    import pytest
except ImportError:  # pragma: no cover
    pytest = None

# Where the barricade package lives (a checkout or site-packages): the proxy
# subprocess must import this very copy.
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
REPO = PACKAGE_ROOT


def lf(data: bytes) -> bytes:
    """Message bytes as smtp-sink's dump shows them."""
    return data.replace(b"\r\n", b"\n")


#: Ports handed out by :func:`free_port` in this process: never twice.
_HANDED_OUT: set[int] = set()

#: Where :func:`free_port` picks from when the kernel's ephemeral range
#: cannot be read (Linux's default range starts at 32768).
_DEFAULT_EPHEMERAL_LOW = 32768
_LOWEST = 10000


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return _DEFAULT_EPHEMERAL_LOW


def _bindable(port: int) -> bool:
    """Free for TCP and UDP (a name server listens on both)."""
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:  # no SO_REUSEADDR: TIME_WAIT counts as taken
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_port(bus_offset: int = 0) -> int:
    """A loopback TCP port for a daemon a test is about to start.

    Not a port from ``bind(0)``: that one lies in the kernel's ephemeral
    range, which outgoing connections draw their local ports from.  Between
    the test closing it and the daemon binding it, any connection the suite
    makes (a proxy's downstream, a client) can take it, and the daemon exits
    with "Address already in use".  Ports below the ephemeral range are
    never given to outgoing connections, and none is handed out twice by one
    process; which of them is picked is random, so two processes seldom meet.

    ``bus_offset``: the port that far above must be free too (a Redis Cluster
    node listens on its port and on port + 10000).
    """
    low = _ephemeral_low()
    below = low - bus_offset - _LOWEST >= 1000  # else an unusual kernel range: bind(0) is all there is
    while True:
        if below:
            port = random.randrange(_LOWEST, low - bus_offset)
        else:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        ports = {port, port + bus_offset}
        if port + bus_offset < 65536 and not ports & _HANDED_OUT and all(map(_bindable, ports)):
            _HANDED_OUT.update(ports)
            return port


def wait_started(proc: subprocess.Popen, ready, timeout: float = 10.0, what: str = "daemon") -> bool:
    """Wait until ``ready()`` or the process exits; True if it is up.

    A daemon that neither comes up nor exits in time is stopped before the
    TimeoutError, so a failed start never leaves a process behind (the
    caller's clean-up does not run when its constructor raises).
    """
    try:
        wait_for(lambda: ready() or proc.poll() is not None, timeout=timeout, what=what)
    except TimeoutError:
        stop(proc)
        raise
    return proc.poll() is None


def wait_for(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


def banner_ready(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as s:
            s.settimeout(2)
            return s.recv(512).startswith(b"220")
    except OSError:
        return False


def children(pid: int) -> set[int]:
    """The pids of a process's children (a master's workers); none once it is gone."""
    try:
        return {int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except (OSError, ValueError):
        return set()


def stop(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """SIGTERM this one pid (never by name), then SIGKILL it if it does not go in time.

    A SIGKILLed master cannot stop its workers: they are killed with it,
    by the pids it had as children, so that none keeps the port or the CPU.
    """
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            workers = children(proc.pid)
            proc.kill()
            for child in workers:
                try:
                    os.kill(child, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait()


def mail_args(lines: list[bytes]) -> bytes:
    """smtp-sink's record of the MAIL command of one dump file."""
    for line in lines:
        if line.startswith(b"X-Mail-Args: "):
            return line[len(b"X-Mail-Args: "):]
        if not line.startswith(b"X-"):
            break
    return b""


class Sink:
    """Postfix's smtp-sink; ``dump`` holds one file per delivered transaction."""

    def __init__(self, tmp: Path, *args: str, port: int | None = None, verbose: bool = False,
                 host: str = "127.0.0.1"):
        """``verbose``: smtp-sink's -v, every command it receives logged (see :meth:`commands`).

        ``host``: another loopback address (127.0.0.0/8) to listen on, so that
        several sinks can share a port number (call-back tests: an MX has no port).
        """
        if shutil.which("smtp-sink") is None:
            raise RuntimeError("smtp-sink not installed (apt-get install postfix)")
        self.host = host
        self.port = port or free_port()
        # smtp-sink writes as "nobody": pytest's 0700 tmp dirs are out of its reach.
        self.dump = Path(tempfile.mkdtemp(prefix=f"barricade-sink-{self.port}-"))
        if os.geteuid() == 0:
            shutil.chown(self.dump, "nobody")
        cmd = ["smtp-sink"]
        if os.geteuid() == 0:
            cmd += ["-u", "nobody"]
        cmd += ["-d", f"{self.dump}/%H%M%S.", *(["-v"] if verbose else []), *args,
                f"{host}:{self.port}", "1000"]
        self.log = self.dump.with_suffix(".log")
        with self.log.open("wb") as err:  # a file: a chatty sink never blocks on a full pipe
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        if not wait_started(self.proc, lambda: banner_ready(self.port, host), what="smtp-sink"):
            raise RuntimeError(f"smtp-sink failed: {self.log.read_text(errors='replace')}")

    def assert_nothing_from(self, sender: str | None = None, timeout: float = 5.0) -> None:
        """Nothing (from ``sender``) was delivered.

        A message refused at the dot has already streamed into smtp-sink's
        dump file; the file goes when smtp-sink sees the connection drop
        without a dot, so wait for that instead of racing it.
        """
        try:
            wait_for(lambda: self.bodies(sender) == [], timeout=timeout,
                     what="smtp-sink to drop the refused message")
        except TimeoutError:
            assert self.bodies(sender) == []

    def commands(self) -> list[str]:
        """The SMTP commands received so far (needs ``verbose=True``)."""
        found = re.findall(r"^smtp-sink: ((?:HELO|EHLO|MAIL|RCPT|DATA|QUIT|RSET)\b.*)$",
                           self.log.read_text(errors="replace"), re.MULTILINE)
        return found

    def dots(self) -> int:
        """How many final dots arrived so far (needs ``verbose=True``).

        smtp-sink logs the dot when it arrives, before any ``-W .:delay``
        holds its reply back: a test can wait for the dot to be downstream.
        """
        return len(re.findall(r"^smtp-sink: \.$", self.log.read_text(errors="replace"), re.MULTILINE))

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

    def bodies(self, sender: str | None = None) -> list[bytes]:
        """The messages as delivered, without smtp-sink's own X- and Received lines.

        smtp-sink stores lines with LF endings and adds one LF after the
        message; both are undone here except the CRLF → LF conversion,
        so compare with ``lf(expected)``. File times are as coarse as the
        kernel's clock tick, so messages sent in quick succession may come
        out of order: pick one by its envelope ``sender`` instead of by place.
        """
        out = []
        for raw in self.messages():
            lines = raw.split(b"\n")
            if sender is not None and not mail_args(lines).startswith(f"<{sender}>".encode()):
                continue
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
        self.log.unlink(missing_ok=True)


#: Options every test proxy starts with, before the test's own (which win).
#: Tests use the reserved names .example, .test and example.com/org/net
#: throughout, as RFC 2606 asks, and XCLIENT to play outside clients: the
#: reserved-domain and unknown-TLD tests (on by default, as in smtpf) would
#: refuse them.  Tests about those options pass ``+rfc2606-special-domains``
#: or ``+reject-unknown-tld``.
#: Grey-listing is on by default too (smtpf's ``grey-key=ptr,mail,rcpt``):
#: tests that want it set ``grey-key``.  So is the SPF check of MAIL FROM
#: (``spf-mail-policy=fail-reject``): tests that want it set ``spf-mail-policy``.
#: ``mail-require-mx`` (on by default) would look up the MX of every sender
#: domain, and the test name server knows only the ``tests/zones`` domains:
#: tests about it pass ``+mail-require-mx``.
TEST_DEFAULTS = ("-rfc2606-special-domains", "-reject-unknown-tld", "grey-key=", "-mail-require-mx",
                 "spf-mail-policy=")


UNHANDLED = re.compile(r"unhandled error", re.IGNORECASE)


class Proxy:
    """``twistd -n barricade`` in a subprocess, the way an operator runs it.

    Starts with :data:`TEST_DEFAULTS`, then ``args``.  ``host`` is the
    loopback address it listens on (metrics stay on 127.0.0.1).
    """

    def __init__(self, tmp: Path, route_map: str, *args: str, port: int | None = None,
                 pythonpath: list[str | Path] = (), host: str = "127.0.0.1",
                 nofile: tuple[int, int] | None = None, config_file: Path | None = None):
        """``nofile``: the daemon's (soft, hard) file descriptor limit, set in
        the child only (the machine's limits are never touched).  ``config_file``:
        given as ``--config``; ``args`` still win over it."""
        self.host = host
        self.port = port or free_port()
        self.metrics_port = free_port()
        self.tmp = tmp
        self.route_map = tmp / f"route-map-{self.port}"
        self.route_map.write_text(route_map)
        self.log = tmp / f"barricade-{self.port}.log"
        self.args = [
            *(["--config", str(config_file)] if config_file else []),
            f"interfaces={host}:{self.port}",
            f"route-map={self.route_map}",
            "interface-name=barricade.test",
            f"metrics-interface=127.0.0.1:{self.metrics_port}",
            "workers=1",  # one process unless a test asks for more
            *TEST_DEFAULTS,
            *args,
        ]
        paths = [str(PACKAGE_ROOT), *map(str, pythonpath)]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
             "-n", "--pidfile=", "--logfile", str(self.log), "barricade", *self.args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=str(tmp),
            preexec_fn=(lambda: resource.setrlimit(resource.RLIMIT_NOFILE, nofile)) if nofile else None,
        )
        if not wait_started(self.proc, lambda: banner_ready(self.port, host), 20, "barricade"):
            raise RuntimeError(f"barricade failed to start (exit {self.proc.returncode}): "
                               f"{self.proc.stdout.read().decode()}{self._log_tail()}")

    def metric(self, series: str, **labels: str) -> float | None:
        """One sample from /metrics.

        ``metric('barricade_sessions_total')``, or by name and labels in any
        order: ``metric('barricade_replies_total', id="288", code="550")``
        (the exposition sorts labels, which is easy to get wrong by hand).
        """
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        for m in re.finditer(r"^(\w+)(\{.*\})? (\S+)$", text, re.MULTILINE):
            name, braces, value = m.group(1), m.group(2) or "", m.group(3)
            if not labels and name + braces == series:
                return float(value)
            found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', braces))
            if labels and name == series and labels.items() <= found.items():
                return float(value)
        return None

    def _log_tail(self, lines: int = 40) -> str:
        """The end of the daemon's log: where twistd says why it did not start."""
        tail = self.log_text().splitlines()[-lines:]
        return f"\n{self.log} ends:\n" + "\n".join(tail) if tail else ""

    def log_text(self) -> str:
        """The daemon's whole log, the files it rotated away (at 1 MB) first."""
        rotated = sorted((p for p in self.log.parent.glob(self.log.name + ".*") if p.suffix[1:].isdigit()),
                         key=lambda p: -int(p.suffix[1:]))
        return "".join(p.read_text(errors="replace") for p in (*rotated, self.log) if p.exists())

    def unhandled_errors(self) -> list[str]:
        """Log excerpts of errors nothing handled (a failed Deferred left to the
        garbage collector, an exception Twisted caught at the top): each is a bug."""
        lines = self.log_text().splitlines()
        return ["\n".join(lines[i:i + 25]) for i, line in enumerate(lines)
                if UNHANDLED.search(line)]

    def stop(self, check_log: bool = True) -> None:
        """Stop the daemon; with ``check_log`` an unhandled error in its log fails the test."""
        stop(self.proc)
        if check_log:
            found = self.unhandled_errors()
            if found:
                raise AssertionError(f"{self.log}: unhandled error(s) in the daemon log:\n"
                                     + "\n---\n".join(found))


def stop_all(proxies: list[Proxy]) -> None:
    """Stop every proxy, then fail on the first one whose log shows an unhandled error."""
    failures = []
    for p in proxies:
        try:
            p.stop()
        except AssertionError as exc:
            failures.append(exc)
    if failures:
        raise failures[0]


# --- a raw SMTP client ---------------------------------------------------------------




REPLY = re.compile(r"^(\d{3})([ -])(.*)$")


class Reply:
    def __init__(self, code: int, lines: list[str]):
        self.code = code
        self.lines = lines

    @property
    def text(self) -> str:
        return self.lines[0] if self.lines else ""

    @property
    def status(self) -> str:
        return self.text.split(" ", 1)[0]

    @property
    def id(self) -> int | None:
        m = re.search(r"#(\d+)", self.text)
        return int(m.group(1)) if m else None

    def __repr__(self) -> str:
        return f"<Reply {self.code} {self.lines}>"


class Client:
    def __init__(self, port: int, timeout: float = 10.0, greet: bool = True):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.banner = self.read() if greet else None

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self) -> Reply:
        lines: list[str] = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"closed by server after {lines!r} (buffer {self.buf!r})")
                self.buf += chunk
            raw, self.buf = self.buf.split(b"\r\n", 1)
            m = REPLY.match(raw.decode("utf-8", "replace"))
            assert m, f"malformed reply line {raw!r}"
            lines.append(m.group(3))
            if m.group(2) == " ":
                return Reply(int(m.group(1)), lines)

    def cmd(self, line: str | bytes) -> Reply:
        if isinstance(line, str):
            line = line.encode()
        self.send(line + b"\r\n")
        return self.read()

    def ehlo(self, name: str = "client.example.org") -> Reply:
        return self.cmd(f"EHLO {name}")

    def message(self, sender: str, rcpts: list[str], body: bytes) -> Reply:
        """MAIL, RCPTs, DATA and the body; returns the reply to the dot."""
        assert self.cmd(f"MAIL FROM:<{sender}>").code == 250
        for r in rcpts:
            reply = self.cmd(f"RCPT TO:<{r}>")
            assert reply.code == 250, reply
        assert self.cmd("DATA").code == 354
        self.send(body + b".\r\n")
        return self.read()

    def closed(self) -> bool:
        """True once the server has closed the connection (pending bytes are read)."""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- pytest fixtures -----------------------------------------------------------------

if pytest is not None:

    @pytest.fixture
    def sink(tmp_path):
        s = Sink(tmp_path)
        yield s
        s.stop()


    @pytest.fixture
    def make_sink(tmp_path):
        """Factory: ``make_sink("-f", "RCPT")`` for a sink that refuses RCPT."""
        started = []

        def make(*args: str, port: int | None = None) -> Sink:
            s = Sink(tmp_path, *args, port=port)
            started.append(s)
            return s

        yield make
        for s in started:
            s.stop()


    @pytest.fixture
    def make_proxy(tmp_path):
        """Factory: ``make_proxy(route_map_text, "opt=value", ..., pythonpath=[...])``."""
        started = []

        def make(route_map: str, *args: str, pythonpath: list[str | Path] = ()) -> Proxy:
            p = Proxy(tmp_path, route_map, *args, pythonpath=pythonpath)
            started.append(p)
            return p

        yield make
        stop_all(started)


def routes_to(*sinks: Sink, relay: bool = False) -> str:
    """A route map: route:local and example.com to the first sink, example.N to sink N."""
    first = sinks[0]
    lines = [f"route:local FORWARD: 127.0.0.1:{first.port}",
             f"route:example.com FORWARD: 127.0.0.1:{first.port}"]
    for i, s in enumerate(sinks):
        lines.append(f"route:example{i}.net FORWARD: 127.0.0.1:{s.port}")
    if relay:
        lines.append("route:127.0.0.1 RELAY")
    return "\n".join(lines) + "\n"
