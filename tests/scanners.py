"""Content scanners for tests: real clamd and spamd, fake avastd and fpscand.

clamd and spamd are free software and start in about 0.15 s and 1.1 s, so
tests talk to the real daemons (with a tiny signature DB and ``--local``)
instead of imitations that could drift from the real wire format.  avast and
F-Prot are proprietary and cannot be installed here, so ``FakeAvastd`` and
``FakeFpscand`` imitate them byte for byte, following
the protocols the plugin docstrings show (the avast4 dialect that smtpf
speaks, and fpscand's ``SCAN FILE`` protocol).  Like the real ones,
the fakes open and read the file whose path they are sent, so a plugin under
test must really write its spool file where the daemon can read it.

Everything listens on 127.0.0.1 only, every socket has a timeout, and every
real daemon is stopped by pid.
"""

from __future__ import annotations

import binascii
import email
import email.policy
import errno
import os
import re
import resource
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self

from barricade.testing import Client
from tests.daemons import free_port, stop, wait_for

# --------------------------------------------------------------------------
# Samples

#: The standard 68-byte EICAR test file (no trailing newline: its md5 is the
#: well-known 44d88612fea8a8f36de82e1278abb02f that the .hdb entry matches).
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"

#: A harmless ASCII marker that the test clamd DB (and the fakes) call a virus,
#: so tests can have a "virus" in a plain text part that no MIME decoding hides.
PATTERN = b"BARRICADE-TEST-VIRUS-PATTERN"

#: SpamAssassin's Generic Test for Unsolicited Bulk Email (score 1000).
GTUBE_STRING = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

#: Names the test clamd DB gives; clamd appends ".UNOFFICIAL" to custom sigs.
CLAMD_EICAR_NAME = "Test.EICAR.HDB.UNOFFICIAL"
CLAMD_PATTERN_NAME = "Test.BarricadePattern.UNOFFICIAL"


def _crlf(text: str) -> bytes:
    """Write samples with \\n for readability; the wire and the spool use CRLF."""
    return text.replace("\n", "\r\n").encode("ascii")


_HEAD = (
    "Return-Path: <sender@example.org>\n"
    "From: Sender <sender@example.org>\n"
    "To: Recipient <rcpt@example.com>\n"
    "Date: Mon, 01 Jan 2024 12:00:00 +0000\n"
)

#: A plain, harmless message: clamd says OK, spamd says ``Spam: False``.
CLEAN = _crlf(
    _HEAD
    + "Subject: meeting notes\n"
    "Message-ID: <clean.1@example.org>\n"
    "MIME-Version: 1.0\n"
    "Content-Type: text/plain; charset=us-ascii\n"
    "Content-Transfer-Encoding: 7bit\n"
    "\n"
    "Hello,\n"
    "\n"
    "the notes from this morning are below.  Nothing here should trouble a\n"
    "virus scanner or a spam filter.\n"
    "\n"
    "Regards,\n"
    "Sender\n"
)

#: A message whose body holds GTUBE: spamd says ``Spam: True ; 1000.0 / 5.0``.
GTUBE = _crlf(
    _HEAD
    + "Subject: GTUBE test\n"
    "Message-ID: <gtube.1@example.org>\n"
    "MIME-Version: 1.0\n"
    "Content-Type: text/plain; charset=us-ascii\n"
    "\n"
    "This is the GTUBE, the Generic Test for Unsolicited Bulk Email.\n"
    "\n"
    + GTUBE_STRING.decode()
    + "\n"
)

_BOUNDARY = "=_barricade_test_boundary_0001"

#: multipart/mixed with EICAR as a base64 attachment: avastd and fpscand only
#: scan multipart/mixed messages, and base64 proves the scanner decodes MIME.
MIME_EICAR = _crlf(
    _HEAD
    + "Subject: invoice attached\n"
    "Message-ID: <mime-eicar.1@example.org>\n"
    "MIME-Version: 1.0\n"
    f'Content-Type: multipart/mixed; boundary="{_BOUNDARY}"\n'
    "\n"
    "This is a multi-part message in MIME format.\n"
    "\n"
    f"--{_BOUNDARY}\n"
    "Content-Type: text/plain; charset=us-ascii\n"
    "Content-Transfer-Encoding: 7bit\n"
    "\n"
    "Please find the file attached.\n"
    "\n"
    f"--{_BOUNDARY}\n"
    'Content-Type: application/octet-stream; name="eicar.com"\n'
    "Content-Transfer-Encoding: base64\n"
    'Content-Disposition: attachment; filename="eicar.com"\n'
    "\n"
    + binascii.b2a_base64(EICAR, newline=False).decode()
    + "\n"
    "\n"
    f"--{_BOUNDARY}--\n"
)

#: multipart/mixed with the ASCII ``PATTERN`` in a 7bit text part.
MIME_PATTERN = _crlf(
    _HEAD
    + "Subject: pattern test\n"
    "Message-ID: <mime-pattern.1@example.org>\n"
    "MIME-Version: 1.0\n"
    f'Content-Type: multipart/mixed; boundary="{_BOUNDARY}"\n'
    "\n"
    "This is a multi-part message in MIME format.\n"
    "\n"
    f"--{_BOUNDARY}\n"
    "Content-Type: text/plain; charset=us-ascii\n"
    "Content-Transfer-Encoding: 7bit\n"
    "\n"
    "An innocent first part.\n"
    "\n"
    f"--{_BOUNDARY}\n"
    "Content-Type: text/plain; charset=us-ascii\n"
    "Content-Transfer-Encoding: 7bit\n"
    'Content-Disposition: attachment; filename="pattern.txt"\n'
    "\n"
    "The marker follows: " + PATTERN.decode() + " (end of marker).\n"
    "\n"
    f"--{_BOUNDARY}--\n"
)


# --------------------------------------------------------------------------
# Helpers shared by the real daemons


def binary(name: str, package: str) -> str:
    """Absolute path of a daemon, or a clear error naming the package.

    Daemons live in /usr/sbin, which a non-login PATH may lack, so look
    there too.  A missing binary is an error, not a skip: scripts/setup-env
    installs these packages, so a skip would only hide a broken setup.
    """
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        raise RuntimeError(
            f"{name} is not installed: run scripts/setup-env (or apt-get install {package})"
        )
    return found


def short_tmpdir(prefix: str) -> Path:
    """A fresh directory directly under /tmp.

    Unix socket paths must fit sun_path (108 bytes), which pytest's deep
    tmp_path can exceed, and daemons that drop privileges need to reach the
    directory, which pytest's 0700 tmp_path does not allow.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


def _tail(path: Path, limit: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return "(no log)"


def _connect(address: tuple[str, int] | str | os.PathLike, timeout: float) -> socket.socket:
    """Connect to TCP ``(host, port)`` or to a Unix socket path, with a timeout."""
    if isinstance(address, tuple):
        return socket.create_connection(address, timeout=timeout)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(os.fspath(address))
    except OSError:
        s.close()
        raise
    return s


def _read_until(s: socket.socket, end: bytes | None, limit: int = 1 << 20) -> bytes:
    """Read until ``end`` is seen (``None``: until EOF); timeouts propagate."""
    data = b""
    while len(data) < limit:
        if end is not None and end in data:
            break
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


# --------------------------------------------------------------------------
# clamd


def clamd_command(address: tuple[str, int] | str, command: bytes, timeout: float = 10.0) -> bytes:
    """Send one clamd command (e.g. ``b'zPING\\0'``) and return the reply.

    Reads to the reply terminator or EOF (clamd closes after one command).
    """
    with _connect(address, timeout) as s:
        s.sendall(command)
        end = b"\0" if command.startswith(b"z") else b"\n"
        return _read_until(s, end)


def clamd_instream(address: tuple[str, int] | str, data: bytes,
                   chunk_size: int = 65536, timeout: float = 10.0) -> bytes:
    """Scan ``data`` with ``zINSTREAM`` and return clamd's reply, ``\\0`` included.

    When the stream exceeds StreamMaxLength clamd replies and closes while
    we are still sending; EPIPE/ECONNRESET on send is therefore not an
    error, only the cue to read the reply (as the reference notes).
    """
    with _connect(address, timeout) as s:
        try:
            s.sendall(b"zINSTREAM\0")
            for i in range(0, len(data), chunk_size):
                chunk = data[i:i + chunk_size]
                s.sendall(struct.pack("!L", len(chunk)) + chunk)
            s.sendall(struct.pack("!L", 0))
        except (BrokenPipeError, ConnectionResetError):
            pass
        return _read_until(s, b"\0")


def _ndb_hex(pattern: bytes) -> str:
    return binascii.hexlify(pattern).decode()


def _await_ready(daemon, name: str, timeout: float) -> None:
    """Wait for ``daemon._ready()``; a daemon that dies or stalls is stopped, with its log."""
    try:
        wait_for(lambda: daemon._ready() or daemon.proc.poll() is not None, timeout=timeout, what=name)
    except TimeoutError:
        daemon.stop()
        raise RuntimeError(f"{name} not ready after {timeout} s; log:\n{_tail(daemon.log)}") from None
    if daemon.proc.poll() is not None:
        log = _tail(daemon.log)
        daemon.stop()
        raise RuntimeError(f"{name} exited with {daemon.proc.returncode}; log:\n{log}")


class Clamd:
    """The real clamd with a two-signature test DB, on TCP and a Unix socket.

    ``stream_max_length`` is clamd's StreamMaxLength syntax (``"25M"``,
    ``"64K"``, plain bytes), so oversize handling can be tested with small
    messages.  ``tmp`` is accepted for symmetry with tests/daemons.py, but
    everything lives in a short /tmp directory (see ``short_tmpdir``).
    """

    def __init__(self, tmp: Path | None = None, *, stream_max_length: str = "25M",
                 port: int | None = None, timeout: float = 20.0):
        exe = binary("clamd", "clamav-daemon")
        self.port = port or free_port()
        self.dir = short_tmpdir("bcd-clamd-")
        self.socket_path = str(self.dir / "clamd.sock")
        self.log = self.dir / "clamd.log"
        db = self.dir / "db"
        db.mkdir()
        (db / "test.hdb").write_text("44d88612fea8a8f36de82e1278abb02f:68:Test.EICAR.HDB\n")
        (db / "test.ndb").write_text(f"Test.BarricadePattern:0:*:{_ndb_hex(PATTERN)}\n")
        self.conf = self.dir / "clamd.conf"
        self.conf.write_text(
            f"DatabaseDirectory {db}\n"
            f"TCPSocket {self.port}\n"
            "TCPAddr 127.0.0.1\n"
            f"LocalSocket {self.socket_path}\n"
            "LocalSocketMode 666\n"
            "Foreground yes\n"
            f"PidFile {self.dir / 'clamd.pid'}\n"
            f"LogFile {self.log}\n"
            "LogTime yes\n"
            f"StreamMaxLength {stream_max_length}\n"
            "MaxThreads 4\n"
            "SelfCheck 0\n"
        )
        self.proc = subprocess.Popen([exe, "-c", str(self.conf)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        _await_ready(self, "clamd", timeout)

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def _ready(self) -> bool:
        """Both sockets must answer: clamd opens them one after the other."""
        try:
            return (clamd_command(self.address, b"zPING\0", timeout=1) == b"PONG\0"
                    and clamd_command(self.socket_path, b"zPING\0", timeout=1) == b"PONG\0")
        except OSError:
            return False

    def log_text(self) -> str:
        return _tail(self.log, 1 << 20)

    def stop(self) -> None:
        stop(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------
# spamd


def spamd_request(port: int, command: str, message: bytes = b"", *, user: str | None = "nobody",
                  version: str = "1.5", timeout: float = 30.0) -> bytes:
    """One SPAMC/SPAMD request; returns the whole reply (spamd closes after it)."""
    head = f"{command} SPAMC/{version}\r\n"
    if command != "PING":
        head += f"Content-length: {len(message)}\r\n"
        if user is not None:
            head += f"User: {user}\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head.encode() + b"\r\n" + message)
        s.shutdown(socket.SHUT_WR)
        return _read_until(s, None)


def children_of(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (spamd's pre-forked workers)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split after ")".
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            out.append(int(entry.name))
    return out


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (exited, not yet reaped) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


class Spamd:
    """The real spamd, rules from /usr/share/spamassassin, no network tests.

    ``--local`` matters: without it spamd would send DNSBL queries to the
    non-loopback system resolver.  Run in the foreground so a crash at start
    shows up as an exit code, and stopped by the pid from its pidfile.
    """

    def __init__(self, tmp: Path | None = None, *, port: int | None = None,
                 children: int = 2, timeout: float = 60.0):
        exe = binary("spamd", "spamd")
        self.port = port or free_port()
        self.dir = short_tmpdir("bcd-spamd-")
        self.pidfile = self.dir / "spamd.pid"
        self.log = self.dir / "spamd.log"
        cmd = [exe, f"--listen=127.0.0.1:{self.port}", "--allowed-ips=127.0.0.1",
               "--nouser-config", "--local", "-m", str(children), "--min-children=1",
               f"--max-spare={children}", "-r", str(self.pidfile), "-s", str(self.log)]
        if os.geteuid() == 0:
            # As root without -u the children "fall back to nobody" with a warning.
            cmd[1:1] = ["-u", "debian-spamd"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT, cwd=self.dir)
        _await_ready(self, "spamd", timeout)
        wait_for(self.pidfile.exists, timeout=5, what="spamd pidfile")
        self.pid = int(self.pidfile.read_text().split()[0])

    def _ready(self) -> bool:
        try:
            return spamd_request(self.port, "PING", timeout=2).startswith(b"SPAMD/1.5 0 PONG")
        except OSError:
            return False

    def log_text(self) -> str:
        return _tail(self.log, 1 << 20)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the pidfile's pid, then wait for it and its workers to exit."""
        pid = None
        try:
            pid = int(self.pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
        if pid is None or not pid_alive(pid):
            pid = self.proc.pid
        workers = children_of(pid)
        if pid_alive(pid):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            if pid == self.proc.pid:
                self.proc.wait(timeout)
            else:
                wait_for(lambda: not pid_alive(pid), timeout=timeout, what="spamd exit")
            wait_for(lambda: not any(pid_alive(w) for w in workers), timeout=timeout,
                     what="spamd children exit")
        except (subprocess.TimeoutExpired, TimeoutError):
            for p in [pid, *workers]:
                if pid_alive(p):
                    try:
                        os.kill(p, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------
# Fake daemons (stdlib only)


def find_virus(data: bytes) -> tuple[str, bool] | None:
    """Which test virus ``data`` holds: ``("eicar"|"pattern", inside_mime_part)``.

    The raw bytes are searched first (a bare EICAR file); otherwise the data
    is parsed as a MIME message and each decoded leaf part is searched, as
    a real scanner treats a mail as an archive.  That is what makes the
    base64 attachment of ``MIME_EICAR`` count.
    """
    for name, needle in (("eicar", EICAR), ("pattern", PATTERN)):
        if needle in data:
            return name, False
    try:
        msg = email.message_from_bytes(data, policy=email.policy.compat32)
        parts = [p.get_payload(decode=True) or b"" for p in msg.walk() if not p.is_multipart()]
    except Exception:  # a scanner must not die on a malformed mail
        return None
    for name, needle in (("eicar", EICAR), ("pattern", PATTERN)):
        if any(needle in p for p in parts):
            return name, True
    return None


class _FakeServer:
    """Threaded loopback TCP server; subclasses implement ``serve(conn)``.

    ``mode`` selects behaviour; common to all fakes:

    - ``"ok"``: the normal protocol;
    - ``"garbage"``: a malformed line where the scan result belongs;
    - ``"hang"``: accept, read and record, never send a byte;
    - ``"close"``: accept and close at once, without reading;
    - ``"refuse"``: the port is bound but not listening, so connect() gets
      ECONNREFUSED (and no other process can take the port meanwhile).

    ``received`` holds the raw bytes each connection sent, in accept order.
    """

    MODES: tuple[str, ...] = ("ok", "garbage", "hang", "close", "refuse")
    GARBAGE = b"?? this is not a reply line \x01\x02\r\n"
    #: A client idle longer than this is dropped (the real daemons also time out).
    IDLE_TIMEOUT = 60.0
    NAME = "fake"

    def __init__(self, mode: str = "ok", *, port: int | None = None):
        if mode not in self.MODES:
            raise ValueError(f"{type(self).__name__}: unknown mode {mode!r}; one of {self.MODES}")
        self.mode = mode
        self._lock = threading.Lock()
        self._received: list[bytearray] = []
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port or 0))
        self.port: int = self.listener.getsockname()[1]
        self.listener.settimeout(0.2)
        if mode != "refuse":
            self.listener.listen(64)
            t = threading.Thread(target=self._accept_loop, name=f"{self.NAME}-accept", daemon=True)
            t.start()
            self._threads.append(t)

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def received(self) -> list[bytes]:
        with self._lock:
            return [bytes(b) for b in self._received]

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._received)

    def wait_received(self, predicate: Callable[[list[bytes]], bool], timeout: float = 5.0) -> None:
        """Wait until ``predicate(self.received)``: the server thread records asynchronously."""
        wait_for(lambda: predicate(self.received), timeout=timeout, what=f"{self.NAME} input")

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(0.2)
            buf = bytearray()
            with self._lock:
                self._received.append(buf)
                self._conns.append(conn)
            t = threading.Thread(target=self._run, args=(conn, buf), name=f"{self.NAME}-conn",
                                 daemon=True)
            with self._lock:
                self._threads.append(t)
            t.start()

    def _run(self, conn: socket.socket, buf: bytearray) -> None:
        io = _Conn(conn, buf, self._stopping, self.IDLE_TIMEOUT)
        try:
            if self.mode == "close":
                return
            if self.mode == "hang":
                while io.recv():
                    pass
                return
            self.serve(io)
        except (OSError, _Closed):
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def serve(self, io: _Conn) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self._stopping.set()
        self.listener.close()
        with self._lock:
            conns, threads = list(self._conns), list(self._threads)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in threads:
            t.join(5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Closed(Exception):
    """The peer closed, the server is stopping, or the client idled too long."""


class _Conn:
    """Buffered reads on an accepted socket, recording every byte received."""

    def __init__(self, sock: socket.socket, record: bytearray, stopping: threading.Event,
                 idle: float):
        self.sock, self.record, self.stopping, self.idle = sock, record, stopping, idle
        self.buf = b""

    def recv(self) -> bool:
        """Read more into the buffer; False at EOF, stop, or idle timeout."""
        deadline = time.monotonic() + self.idle
        while not self.stopping.is_set() and time.monotonic() < deadline:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return False
            if not data:
                return False
            self.record += data
            self.buf += data
            return True
        return False

    def readline(self) -> bytes:
        """One line including its ``\\n``; a partial line at EOF is returned as is."""
        while b"\n" not in self.buf:
            if not self.recv():
                if self.buf:
                    line, self.buf = self.buf, b""
                    return line
                raise _Closed
        line, _, self.buf = self.buf.partition(b"\n")
        return line + b"\n"

    def read_exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self.recv():
                raise _Closed
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def hang(self) -> None:
        """Keep reading (and recording) but never answer again."""
        while self.recv():
            pass
        raise _Closed


def _scan_file(path: bytes) -> bytes | OSError:
    """Open and read ``path`` the way a scanning daemon would; the error if it cannot."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        return e


class FakeAvastd(_FakeServer):
    """avast! 4 daemon, the dialect smtpf speaks (see plugins/avastd.py).

    Lines end CRLF; requests are read up to LF with one CR stripped.
    Keywords are matched exactly (upper case), as smtpf sends them.

    ``mode="ok"`` dialogue (``<p>`` = the path as sent)::

        -> 220 Welcome to avast! Virus scanning daemon 4.7 (VPS 0801-1 08.01.2008)\\r\\n
        <- SCAN <p>\\r\\n
        -> 200 OK\\r\\n<p>\\t[+]\\r\\n\\r\\n                        clean
        -> 200 OK\\r\\n<p>\\t[L]\\tEICAR Test-NOT virus!!!\\r\\n\\r\\n   EICAR
        -> 200 OK\\r\\n<p>\\t[L]\\tBarricade Test-Pattern\\r\\n\\r\\n    PATTERN
        -> 200 OK\\r\\n<p>\\t[E]\\t2 No such file or directory\\r\\n\\r\\n  unreadable
        <- SCAN\\r\\n  -> 501 Syntax error in arguments\\r\\n
        <- VER\\r\\n   -> 200 OK\\r\\n4.7\\r\\n
        <- VPS\\r\\n   -> 200 OK\\r\\n0801-1 08.01.2008\\r\\n
        <- QUIT\\r\\n  -> 221 Service closing transmission channel\\r\\n, then close
        <- other    -> 500 Syntax error, command unrecognized\\r\\n

    Extra modes beyond the common ones: ``"garbage-greeting"`` (malformed
    greeting), ``"unavailable"`` (``421 Service not available`` and close),
    ``"engine-error"`` (SCAN gets ``451 Engine error 2``), ``"scan-error"``
    (every SCAN gets an ``[E]`` line), ``"part-error"`` (an ``[E]`` line for a
    part, ``<p>|>part2``, then the message's own result), ``"no-results"``
    (``200 OK`` and the blank line, no result), ``"no-blank"`` (result line, then
    close before the blank line: smtpf takes EOF as the end), ``"hang-scan"``
    and ``"close-scan"`` (greet, read the SCAN line, then stall or close),
    ``"avast2014"`` (``210 SCAN DATA`` ... ``200 SCAN OK``, which smtpf
    cannot parse).  ``"garbage"`` greets normally and answers SCAN with
    ``GARBAGE``.
    """

    NAME = "avastd"
    MODES = _FakeServer.MODES + ("garbage-greeting", "unavailable", "engine-error", "scan-error",
                                 "part-error", "no-results", "no-blank", "hang-scan", "close-scan",
                                 "avast2014")
    GREETING = b"220 Welcome to avast! Virus scanning daemon 4.7 (VPS 0801-1 08.01.2008)\r\n"
    VIRUS_NAMES = {"eicar": b"EICAR Test-NOT virus!!!", "pattern": b"Barricade Test-Pattern"}
    SCAN_ERROR = b"42110 The file is a decompression bomb"

    def serve(self, io: _Conn) -> None:
        mode = self.mode
        if mode == "unavailable":
            io.send(b"421 Service not available\r\n")
            return
        io.send(self.GARBAGE if mode == "garbage-greeting" else self.GREETING)
        while True:
            line = io.readline()
            if not line.endswith(b"\n"):
                return  # EOF inside a line: nothing sensible to answer
            line = line[:-1]
            if line.endswith(b"\r"):
                line = line[:-1]
            cmd, _, arg = line.partition(b" ")
            if cmd == b"SCAN":
                if not arg:
                    io.send(b"501 Syntax error in arguments\r\n")
                    continue
                if mode == "hang-scan":
                    io.hang()
                if mode == "close-scan":
                    return
                if mode == "garbage":
                    io.send(self.GARBAGE)
                    continue
                if mode == "engine-error":
                    io.send(b"451 Engine error 2\r\n")
                    continue
                result = self.result_line(arg)
                if mode == "avast2014":
                    io.send(b"210 SCAN DATA\r\nSCAN " + result + b"200 SCAN OK\r\n")
                    continue
                io.send(b"200 OK\r\n" + result)
                if mode == "no-blank":
                    return
                io.send(b"\r\n")
            elif cmd == b"VER":
                io.send(b"200 OK\r\n4.7\r\n")
            elif cmd == b"VPS":
                io.send(b"200 OK\r\n0801-1 08.01.2008\r\n")
            elif cmd == b"QUIT":
                io.send(b"221 Service closing transmission channel\r\n")
                return
            else:
                io.send(b"500 Syntax error, command unrecognized\r\n")

    def result_line(self, path: bytes) -> bytes:
        """``<path>\\t[+]``, ``<path>\\t[L]\\t<name>`` or ``<path>\\t[E]\\t<code> <text>``."""
        if self.mode == "scan-error":
            return path + b"\t[E]\t" + self.SCAN_ERROR + b"\r\n"
        if self.mode == "no-results":
            return b""
        if self.mode == "part-error":
            return path + b"|>part2\t[E]\t" + self.SCAN_ERROR + b"\r\n" + path + b"\t[+]\r\n"
        data = _scan_file(path)
        if isinstance(data, OSError):
            text = f"{data.errno} {os.strerror(data.errno or errno.EIO)}".encode()
            return path + b"\t[E]\t" + text + b"\r\n"
        virus = find_virus(data)
        if virus is None:
            return path + b"\t[+]\r\n"
        return path + b"\t[L]\t" + self.VIRUS_NAMES[virus[0]] + b"\r\n"


class FakeFpscand(_FakeServer):
    """F-PROT 6 ``fpscand`` (see plugins/fpscand.py): no greeting, one line per request.

    Requests end LF (a CR before it is kept, as part of the path); keywords
    are case-insensitive; ``--opt[=v]`` tokens are skipped; empty lines are
    ignored; the connection stays open until ``QUIT`` or EOF.

    ``mode="ok"`` replies (``<p>`` = the path to end of line, spaces kept)::

        <- SCAN [--opts] FILE <p>\\n
        -> 0 <clean> <p>\\n
        -> 1 <infected: EICAR_Test_File> <p>\\n                 EICAR in the raw file
        -> 1 <contains infected objects: EICAR_Test_File> <p>\\n  only in a decoded MIME part
        -> 1 <infected: Barricade_Test_Pattern> <p>\\n           (likewise for PATTERN)
        -> 16 <could not open file: No such file or directory> <p>\\n   unreadable
        <- SCAN [--opts] STREAM <name> SIZE <n>\\n + n bytes
        -> the same lines with <name> as the object;
           n > 10 MB: 16 <Stream is too long>\\n, then close (the bytes are not read)
        <- HELP\\n -> FPSCAND:6.2.3 ENGINE:4.6.2 PROTOCOL:1.0 SIGNATURE:... UPTIME:...\\n
                      Send HELP COMMAND for help on each command\\n
        <- QUIT\\n -> close, no reply
        <- other -> 16 <unrecognized request>\\n

    The texts for unreadable files and unknown requests are not captured
    from a real fpscand; only their codes follow the documented bit field.

    Extra modes: ``"close-scan"`` (read a request, close without a line),
    ``"code16"``, ``"code32"``, ``"code64"`` (error / engine error / clean
    but unscanned, whatever the content), ``"code9"`` (infected plus a
    skipped object, 1+8).  ``"garbage"`` answers each request with
    ``GARBAGE``; note that smtpf's strtol parser would read it as code 0.
    """

    NAME = "fpscand"
    MODES = _FakeServer.MODES + ("close-scan", "code16", "code32", "code64", "code9")
    GARBAGE = b"?? this is not a reply line \x01\x02\n"
    STREAM_LIMIT = 10 * 1024 * 1024
    VIRUS_NAMES = {"eicar": b"EICAR_Test_File", "pattern": b"Barricade_Test_Pattern"}
    FORCED = {
        "code16": b"16 <read error>",
        "code32": b"32 <internal engine error>",
        "code64": b"64 <clean, but some objects were not scanned>",
        "code9": b"9 <infected: EICAR_Test_File>",
    }
    HELP = (b"FPSCAND:6.2.3 ENGINE:4.6.2 PROTOCOL:1.0 "
            b"SIGNATURE:201001010000+0123456789abcdef0123456789abcdef UPTIME:0:00:00:01\n"
            b"Send HELP COMMAND for help on each command\n")

    _SCAN = re.compile(rb"^SCAN((?:[ \t]+--\S+)*)[ \t]+(?:"
                       rb"FILE[ \t]+(?P<path>.+)"
                       rb"|STREAM[ \t]+(?P<name>\S+)[ \t]+SIZE[ \t]+(?P<size>\d+)[ \t]*)$",
                       re.IGNORECASE | re.DOTALL)

    def serve(self, io: _Conn) -> None:
        while True:
            line = io.readline()
            if not line.endswith(b"\n"):
                return
            line = line[:-1]
            if not line.strip():
                continue
            keyword = line.split(None, 1)[0].upper()
            if keyword == b"QUIT":
                return
            if keyword == b"HELP":
                io.send(self.HELP)
                continue
            m = self._SCAN.match(line)
            if m is None:
                io.send(b"16 <unrecognized request>\n")
                continue
            if m["path"] is not None:
                obj = m["path"]
                data = _scan_file(obj)
            else:
                obj, size = m["name"], int(m["size"])
                if size > self.STREAM_LIMIT:
                    io.send(b"16 <Stream is too long>\n")
                    return
                data = io.read_exactly(size)
            if self.mode == "close-scan":
                return
            if self.mode == "garbage":
                io.send(self.GARBAGE)
                continue
            io.send(self.verdict(data) + b" " + obj + b"\n")

    def verdict(self, data: bytes | OSError) -> bytes:
        """``<code> <<text>>`` for the scanned content (without the object)."""
        if self.mode in self.FORCED:
            return self.FORCED[self.mode]
        if isinstance(data, OSError):
            return f"16 <could not open file: {os.strerror(data.errno or errno.EIO)}>".encode()
        virus = find_virus(data)
        if virus is None:
            return b"0 <clean>"
        name, nested = virus
        what = b"contains infected objects" if nested else b"infected"
        return b"1 <" + what + b": " + self.VIRUS_NAMES[name] + b">"


# --- shared by the scanner plugins' end-to-end tests -----------------------------------

SENDER, RCPT = "sender@example.org", "rcpt@example.com"

_BOUNDARY = "=_barricade_clean_0001"
#: multipart/mixed with nothing a scanner objects to; a line starting with a
#: dot checks that the spooled message is delivered dot-unstuffed and intact.
MIME_CLEAN = (
    "From: Sender <sender@example.org>\r\n"
    "To: Recipient <rcpt@example.com>\r\n"
    "Subject: agenda attached\r\n"
    "Message-ID: <mime-clean.1@example.org>\r\n"
    "MIME-Version: 1.0\r\n"
    f'Content-Type: multipart/mixed;\r\n\tboundary="{_BOUNDARY}"\r\n'
    "\r\n"
    f"--{_BOUNDARY}\r\n"
    "Content-Type: text/plain; charset=us-ascii\r\n"
    "\r\n"
    "The agenda is attached.\r\n"
    ".a line that starts with a dot\r\n"
    f"--{_BOUNDARY}\r\n"
    'Content-Type: text/plain; name="agenda.txt"\r\n'
    'Content-Disposition: attachment; filename="agenda.txt"\r\n'
    "\r\n"
    "1. coffee\r\n2. more coffee\r\n"
    f"--{_BOUNDARY}--\r\n"
).encode("ascii")



def wire(message: bytes) -> bytes:
    """Dot-stuffed as a client sends it (the samples end with CRLF)."""
    return b"".join(b"." + x if x.startswith(b".") else x for x in message.splitlines(keepends=True))


def send_message(proxy, message: bytes):
    """One message in one session; the reply to the dot and the session id."""
    with Client(proxy.port) as c:
        assert c.ehlo().code == 250
        reply = c.message(SENDER, [RCPT], wire(message))
        assert c.cmd("QUIT").code == 221
    return reply, reply.text.rsplit(" ", 1)[-1]


def delivered_body(sink) -> bytes:
    """The one delivered message without our Received header (3 lines)."""
    [body] = sink.bodies()
    assert body.startswith(b"Received: from ")
    return body.split(b"\n", 3)[3]


def assert_reply(reply, code: int, status: str, rid: int, text: str | None = None) -> None:
    assert (reply.code, reply.status, reply.id) == (code, status, rid), reply
    if text is not None:
        assert reply.text.startswith(f"{status} {text} #{rid} "), reply


def lowest_free_fd(pid: int) -> int:
    """The descriptor number a process gets next (to make its next open() fail)."""
    used = {int(n) for n in os.listdir(f"/proc/{pid}/fd")}
    fd = 0
    while fd in used:
        fd += 1
    return fd


def reply_when_no_socket_is_left(proxy, spool_dir: Path):
    """The reply to a message whose scan finds no descriptor left (EMFILE).

    The spool goes to disk at once (the proxy runs with
    spool-memory-limit=0) and a first message warms every code path up;
    then, with the message in but before the dot, the proxy's descriptor
    limit is lowered so that the next descriptor it asks for, the scanner
    socket, is refused.
    """
    assert send_message(proxy, MIME_CLEAN)[0].id == 554
    pid = proxy.proc.pid
    limits = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    with Client(proxy.port) as c:
        c.ehlo()
        assert c.cmd(f"MAIL FROM:<{SENDER}>").code == 250
        assert c.cmd(f"RCPT TO:<{RCPT}>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(wire(MIME_EICAR))
        wait_for(lambda: any(spool_dir.iterdir()), timeout=5, what="the spool file")
        time.sleep(0.2)  # let the proxy settle before counting its descriptors
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (lowest_free_fd(pid), limits[1]))
        try:
            c.send(b".\r\n")
            return c.read()
        finally:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, limits)


def assert_scanner_metrics(proxy, fake, scanner: str, infected: int, unreachable: int) -> None:
    """One message per outcome (infected, clean, skipped, error), each counted once."""
    assert send_message(proxy, MIME_EICAR)[0].id == infected
    assert send_message(proxy, MIME_CLEAN)[0].id == 554
    assert send_message(proxy, CLEAN)[0].id == 554
    fake.stop()  # the port is free now: connect is refused
    assert send_message(proxy, MIME_CLEAN)[0].id == unreachable

    def results(outcome: str) -> float | None:
        return proxy.metric("barricade_scanner_results_total", scanner=scanner, result=outcome)

    assert [results(o) for o in ("infected", "clean", "skipped", "error")] == [1, 1, 1, 1]
    assert proxy.metric("barricade_scanner_seconds_count", scanner=scanner) == 4
    assert proxy.metric("barricade_replies_total", code="550", status="5.7.1", id=str(infected)) == 1
    assert proxy.metric("barricade_replies_total", code="451", status="4.4.0", id=str(unreachable)) == 1
