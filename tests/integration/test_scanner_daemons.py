"""The scanner fixtures themselves: real clamd/spamd answer as documented, fakes speak byte for byte.

Plugin tests trust these fixtures, so they are checked here against the
exact bytes of the daemons' protocols before any plugin is.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest

from tests.scanners import (
    CLAMD_EICAR_NAME,
    CLAMD_PATTERN_NAME,
    CLEAN,
    EICAR,
    GTUBE,
    MIME_EICAR,
    MIME_PATTERN,
    PATTERN,
    Clamd,
    FakeAvastd,
    FakeFpscand,
    Spamd,
    children_of,
    clamd_command,
    clamd_instream,
    find_virus,
    pid_alive,
    spamd_request,
)

T = 2.0  # socket timeout for answers that must come
SHORT = 0.4  # socket timeout where silence is the expected outcome


# --------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def clamd():
    c = Clamd()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def small_clamd():
    c = Clamd(stream_max_length="64K")
    yield c
    c.stop()


@pytest.fixture(scope="module")
def spamd():
    s = Spamd()
    yield s
    s.stop()


@pytest.fixture
def samples(tmp_path: Path) -> dict[str, bytes]:
    """Sample spool files, as absolute paths (bytes) a fake daemon is asked to scan."""
    out = {}
    for name, data in [("clean", CLEAN), ("eicar", EICAR), ("mime_eicar", MIME_EICAR),
                       ("mime_pattern", MIME_PATTERN)]:
        p = tmp_path / f"{name}.tmp"
        p.write_bytes(data)
        out[name] = os.fsencode(p)
    spaced = tmp_path / "a dir with spaces"
    spaced.mkdir()
    (spaced / "msg 1.tmp").write_bytes(MIME_EICAR)
    out["spaced"] = os.fsencode(spaced / "msg 1.tmp")
    out["missing"] = os.fsencode(tmp_path / "no-such-file.tmp")
    return out


@pytest.fixture
def make_fake():
    started = []

    def make(cls, mode="ok"):
        f = cls(mode)
        started.append(f)
        return f

    yield make
    for f in started:
        f.stop()


def connect(fake, timeout: float = T) -> socket.socket:
    return socket.create_connection(fake.address, timeout=timeout)


def expect(s: socket.socket, expected: bytes) -> None:
    """Read exactly len(expected) bytes (or to EOF) and compare."""
    data = b""
    while len(data) < len(expected):
        chunk = s.recv(len(expected) - len(data))
        if not chunk:
            break
        data += chunk
    assert data == expected


def assert_eof(s: socket.socket) -> None:
    try:
        assert s.recv(100) == b""
    except ConnectionResetError:
        pass


# --------------------------------------------------------------------------
# samples


def test_samples_are_crlf_messages():
    for msg in (CLEAN, GTUBE, MIME_EICAR, MIME_PATTERN):
        assert b"\r\n\r\n" in msg
        assert b"\n" not in msg.replace(b"\r\n", b"")
        assert msg.endswith(b"\r\n")
    assert len(EICAR) == 68
    assert b'multipart/mixed; boundary=' in MIME_EICAR
    assert EICAR not in MIME_EICAR  # only the base64 form: scanners must decode it
    assert PATTERN in MIME_PATTERN
    assert find_virus(CLEAN) is None and find_virus(GTUBE) is None
    assert find_virus(EICAR) == ("eicar", False)
    assert find_virus(MIME_EICAR) == ("eicar", True)
    assert find_virus(MIME_PATTERN) == ("pattern", False)


# --------------------------------------------------------------------------
# clamd


@pytest.fixture(params=["tcp", "unix"])
def clamd_address(request, clamd):
    return clamd.address if request.param == "tcp" else clamd.socket_path


def test_clamd_sockets(clamd):
    assert len(os.fsencode(clamd.socket_path)) < 108
    assert clamd_command(clamd.address, b"zPING\0") == b"PONG\0"
    assert clamd_command(clamd.socket_path, b"zPING\0") == b"PONG\0"
    assert clamd_command(clamd.address, b"zVERSION\0").startswith(b"ClamAV ")
    assert clamd_command(clamd.address, b"INSTREAM\n") == b"UNKNOWN COMMAND\n"


def test_clamd_clean(clamd_address):
    assert clamd_instream(clamd_address, CLEAN) == b"stream: OK\0"
    assert clamd_instream(clamd_address, GTUBE) == b"stream: OK\0"


@pytest.mark.parametrize("sample,name", [
    (EICAR, CLAMD_EICAR_NAME),
    (MIME_EICAR, CLAMD_EICAR_NAME),
    (MIME_PATTERN, CLAMD_PATTERN_NAME),
], ids=["eicar", "mime_eicar", "mime_pattern"])
def test_clamd_found(clamd_address, sample, name):
    assert clamd_instream(clamd_address, sample) == f"stream: {name} FOUND\0".encode()


def test_clamd_found_whatever_the_chunking(clamd):
    # smtpf sends every header line as its own chunk; one byte per chunk is the extreme.
    assert clamd_instream(clamd.address, MIME_EICAR, chunk_size=1) == \
        f"stream: {CLAMD_EICAR_NAME} FOUND\0".encode()


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_clamd_stream_max_length(small_clamd, transport):
    address = small_clamd.address if transport == "tcp" else small_clamd.socket_path
    # Exactly StreamMaxLength is still scanned; one byte more is refused.
    assert clamd_instream(address, b"x" * 65536) == b"stream: OK\0"
    assert clamd_instream(address, b"x" * 65537) == b"INSTREAM size limit exceeded. ERROR\0"
    big = MIME_EICAR + b"x" * 200_000
    assert clamd_instream(address, big, chunk_size=4096) == b"INSTREAM size limit exceeded. ERROR\0"


def test_clamd_stop_ends_the_process(tmp_path):
    c = Clamd(tmp_path)
    pid, address = c.pid, c.address
    c.stop()
    assert not pid_alive(pid)
    with pytest.raises(ConnectionRefusedError):
        clamd_command(address, b"zPING\0", timeout=1)


# --------------------------------------------------------------------------
# spamd


def test_spamd_ping(spamd):
    assert spamd_request(spamd.port, "PING") == b"SPAMD/1.5 0 PONG\r\n"


def test_spamd_gtube_is_spam(spamd):
    assert spamd_request(spamd.port, "CHECK", GTUBE) == \
        b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1000.0 / 5.0\r\n\r\n"


def test_spamd_clean_is_ham(spamd):
    reply = spamd_request(spamd.port, "CHECK", CLEAN)
    assert re.fullmatch(rb"SPAMD/1\.1 0 EX_OK\r\nSpam: False ; -?\d+\.\d / 5\.0\r\n\r\n", reply), reply


def test_spamd_symbols_smtpf_style(spamd):
    # smtpf speaks SPAMC/1.2 with "Content-Length" (capital L), which spamd ignores.
    head = f"SYMBOLS SPAMC/1.2\r\nContent-Length: {len(GTUBE)}\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", spamd.port), timeout=30) as s:
        s.sendall(head + GTUBE)
        s.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    assert reply.startswith(b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1000.0 / 5.0\r\n\r\n")
    assert b"GTUBE" in reply


def test_spamd_stop_ends_parent_and_children(tmp_path):
    s = Spamd(tmp_path)
    workers = children_of(s.pid)
    assert workers, "spamd should have pre-forked workers"
    s.stop()
    assert not pid_alive(s.pid)
    assert not any(pid_alive(w) for w in workers)


# --------------------------------------------------------------------------
# fake avastd

GREETING = b"220 Welcome to avast! Virus scanning daemon 4.7 (VPS 0801-1 08.01.2008)\r\n"


def test_avastd_dialogue(make_fake, samples):
    fake = make_fake(FakeAvastd)
    sent = b""
    with connect(fake) as s:
        expect(s, GREETING)
        for key, result in [
            ("clean", b"\t[+]"),
            ("eicar", b"\t[L]\tEICAR Test-NOT virus!!!"),
            ("mime_eicar", b"\t[L]\tEICAR Test-NOT virus!!!"),
            ("mime_pattern", b"\t[L]\tBarricade Test-Pattern"),
            ("spaced", b"\t[L]\tEICAR Test-NOT virus!!!"),
            ("missing", b"\t[E]\t2 No such file or directory"),
        ]:
            req = b"SCAN " + samples[key] + b"\r\n"
            s.sendall(req)
            sent += req
            expect(s, b"200 OK\r\n" + samples[key] + result + b"\r\n\r\n")
        for req, reply in [
            (b"SCAN\r\n", b"501 Syntax error in arguments\r\n"),
            (b"VER\r\n", b"200 OK\r\n4.7\r\n"),
            (b"VPS\r\n", b"200 OK\r\n0801-1 08.01.2008\r\n"),
            (b"scan " + samples["clean"] + b"\r\n", b"500 Syntax error, command unrecognized\r\n"),
            (b"NOOP\r\n", b"500 Syntax error, command unrecognized\r\n"),
            # bare LF ends a line too
            (b"SCAN " + samples["clean"] + b"\n", b"200 OK\r\n" + samples["clean"] + b"\t[+]\r\n\r\n"),
            (b"QUIT\r\n", b"221 Service closing transmission channel\r\n"),
        ]:
            s.sendall(req)
            sent += req
            expect(s, reply)
        assert_eof(s)
    fake.wait_received(lambda r: r == [sent])


def test_avastd_garbage(make_fake, samples):
    fake = make_fake(FakeAvastd, "garbage")
    with connect(fake) as s:
        expect(s, GREETING)
        s.sendall(b"SCAN " + samples["eicar"] + b"\r\n")
        expect(s, FakeAvastd.GARBAGE)


def test_avastd_garbage_greeting(make_fake):
    with connect(make_fake(FakeAvastd, "garbage-greeting")) as s:
        expect(s, FakeAvastd.GARBAGE)


def test_avastd_unavailable(make_fake):
    with connect(make_fake(FakeAvastd, "unavailable")) as s:
        expect(s, b"421 Service not available\r\n")
        assert_eof(s)


def test_avastd_engine_error(make_fake, samples):
    with connect(make_fake(FakeAvastd, "engine-error")) as s:
        expect(s, GREETING)
        s.sendall(b"SCAN " + samples["eicar"] + b"\r\n")
        expect(s, b"451 Engine error 2\r\n")


def test_avastd_scan_error(make_fake, samples):
    with connect(make_fake(FakeAvastd, "scan-error")) as s:
        expect(s, GREETING)
        s.sendall(b"SCAN " + samples["eicar"] + b"\r\n")
        expect(s, b"200 OK\r\n" + samples["eicar"] + b"\t[E]\t42110 The file is a decompression bomb\r\n\r\n")


def test_avastd_no_blank_line(make_fake, samples):
    with connect(make_fake(FakeAvastd, "no-blank")) as s:
        expect(s, GREETING)
        s.sendall(b"SCAN " + samples["eicar"] + b"\r\n")
        expect(s, b"200 OK\r\n" + samples["eicar"] + b"\t[L]\tEICAR Test-NOT virus!!!\r\n")
        assert_eof(s)


def test_avastd_2014_dialect(make_fake, samples):
    with connect(make_fake(FakeAvastd, "avast2014")) as s:
        expect(s, GREETING)
        s.sendall(b"SCAN " + samples["clean"] + b"\r\n")
        expect(s, b"210 SCAN DATA\r\nSCAN " + samples["clean"] + b"\t[+]\r\n200 SCAN OK\r\n")


@pytest.mark.parametrize("mode", ["hang", "hang-scan"])
def test_avastd_hang(make_fake, samples, mode):
    fake = make_fake(FakeAvastd, mode)
    req = b"SCAN " + samples["eicar"] + b"\r\n"
    with connect(fake, timeout=SHORT) as s:
        if mode == "hang-scan":
            expect(s, GREETING)
        s.sendall(req)
        with pytest.raises(TimeoutError):
            s.recv(100)
    fake.wait_received(lambda r: r == [req])


def test_avastd_close(make_fake):
    with connect(make_fake(FakeAvastd, "close")) as s:
        assert_eof(s)


def test_avastd_close_after_scan(make_fake, samples):
    with connect(make_fake(FakeAvastd, "close-scan")) as s:
        expect(s, GREETING)
        s.sendall(b"SCAN " + samples["eicar"] + b"\r\n")
        assert_eof(s)


# --------------------------------------------------------------------------
# fake fpscand


def test_fpscand_file_requests(make_fake, samples):
    fake = make_fake(FakeFpscand)
    sent = b""
    with connect(fake) as s:
        for req, reply in [
            (b"SCAN FILE %s\n", b"0 <clean> %s\n"),
            (b"SCAN FILE %s\n" % samples["eicar"], b"1 <infected: EICAR_Test_File> %s\n" % samples["eicar"]),
            (b"SCAN FILE %s\n" % samples["mime_eicar"],
             b"1 <contains infected objects: EICAR_Test_File> %s\n" % samples["mime_eicar"]),
            (b"SCAN FILE %s\n" % samples["mime_pattern"],
             b"1 <infected: Barricade_Test_Pattern> %s\n" % samples["mime_pattern"]),
            (b"SCAN FILE %s\n" % samples["spaced"],
             b"1 <contains infected objects: EICAR_Test_File> %s\n" % samples["spaced"]),
            (b"SCAN FILE %s\n" % samples["missing"],
             b"16 <could not open file: No such file or directory> %s\n" % samples["missing"]),
            # options are skipped, keywords are case-insensitive, FU's double space works
            (b"SCAN --scanlevel=2 --archive=2 --adware FILE %s\n", b"0 <clean> %s\n"),
            (b"scan file %s\n", b"0 <clean> %s\n"),
            (b"SCAN  FILE %s\n", b"0 <clean> %s\n"),
            # empty lines are ignored; unknown requests get a code-16 line
            (b"\nBOGUS\n", b"16 <unrecognized request>\n"),
            (b"HELP\n", FakeFpscand.HELP),
        ]:
            if b"%s" in req:
                req, reply = req % samples["clean"], reply % samples["clean"]
            s.sendall(req)
            sent += req
            expect(s, reply)
        s.sendall(b"QUIT\n")
        sent += b"QUIT\n"
        assert_eof(s)
    fake.wait_received(lambda r: r == [sent])


def test_fpscand_crlf_is_part_of_the_path(make_fake, samples):
    # fpscand lines end at LF: a client that sends CRLF asks for "<path>\r".
    with connect(make_fake(FakeFpscand)) as s:
        s.sendall(b"SCAN FILE %s\r\n" % samples["clean"])
        expect(s, b"16 <could not open file: No such file or directory> %s\r\n" % samples["clean"])


def test_fpscand_stream(make_fake):
    fake = make_fake(FakeFpscand)
    with connect(fake) as s:
        s.sendall(b"SCAN STREAM msg.eml SIZE %d\n" % len(MIME_EICAR) + MIME_EICAR + b"\n")  # rspamd's stray LF
        expect(s, b"1 <contains infected objects: EICAR_Test_File> msg.eml\n")
        s.sendall(b"SCAN --archive=2 STREAM clean.eml SIZE %d\n" % len(CLEAN) + CLEAN)
        expect(s, b"0 <clean> clean.eml\n")
        s.sendall(b"SCAN STREAM big SIZE %d\n" % (10 * 1024 * 1024 + 1))
        expect(s, b"16 <Stream is too long>\n")
        assert_eof(s)


def test_fpscand_garbage(make_fake, samples):
    with connect(make_fake(FakeFpscand, "garbage")) as s:
        s.sendall(b"SCAN FILE %s\n" % samples["eicar"])
        expect(s, FakeFpscand.GARBAGE)


@pytest.mark.parametrize("mode,reply", [
    ("code16", b"16 <read error>"),
    ("code32", b"32 <internal engine error>"),
    ("code64", b"64 <clean, but some objects were not scanned>"),
    ("code9", b"9 <infected: EICAR_Test_File>"),
])
def test_fpscand_forced_codes(make_fake, samples, mode, reply):
    with connect(make_fake(FakeFpscand, mode)) as s:
        s.sendall(b"SCAN FILE %s\n" % samples["clean"])
        expect(s, reply + b" " + samples["clean"] + b"\n")


def test_fpscand_hang(make_fake, samples):
    fake = make_fake(FakeFpscand, "hang")
    req = b"SCAN FILE %s\n" % samples["eicar"]
    with connect(fake, timeout=SHORT) as s:
        s.sendall(req)
        with pytest.raises(TimeoutError):
            s.recv(100)
    fake.wait_received(lambda r: r == [req])


@pytest.mark.parametrize("mode", ["close", "close-scan"])
def test_fpscand_close(make_fake, samples, mode):
    with connect(make_fake(FakeFpscand, mode)) as s:
        try:
            s.sendall(b"SCAN FILE %s\n" % samples["eicar"])
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert_eof(s)


# --------------------------------------------------------------------------
# common to both fakes


@pytest.mark.parametrize("cls", [FakeAvastd, FakeFpscand])
def test_fake_refuse(make_fake, cls):
    fake = make_fake(cls, "refuse")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(fake.address, timeout=T)
    assert fake.received == []


@pytest.mark.parametrize("cls", [FakeAvastd, FakeFpscand])
def test_fake_records_each_connection(make_fake, samples, cls):
    fake = make_fake(cls)
    line = b"SCAN FILE %s\n" if cls is FakeFpscand else b"SCAN %s\r\n"
    reqs = [line % samples["clean"], line % samples["eicar"]]
    for req in reqs:
        with connect(fake) as s:
            if cls is FakeAvastd:
                expect(s, GREETING)
            s.sendall(req)
            assert s.recv(4096)
    fake.wait_received(lambda r: r == reqs)
    assert fake.connections == 2


@pytest.mark.parametrize("cls", [FakeAvastd, FakeFpscand])
def test_fake_stop_frees_the_port_and_threads(cls):
    fake = cls("hang")
    s = connect(fake, timeout=SHORT)
    fake.stop()
    assert_eof(s)
    s.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(fake.address, timeout=T)


def test_fake_unknown_mode():
    with pytest.raises(ValueError, match="unknown mode"):
        FakeAvastd("sometimes")
