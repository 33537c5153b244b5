"""Unit tests for barricade.protocol.data (DATA decoder) and forward.stuff().

The decoder is where SMTP smuggling is stopped: only CRLF "." CRLF ends the
data, bare CR / LF become CRLF, and what it emits, once re-stuffed by
forward.stuff(), can never contain an end-of-data the decoder did not see.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from barricade.net.forward import stuff
from barricade.protocol.data import SEGMENT, DataDecoder

END = b"\r\n.\r\n"


# --- helpers ------------------------------------------------------------------------


def chunked(data: bytes, sizes: list[int]) -> list[bytes]:
    """Split ``data`` into pieces of the given sizes, cycling through them."""
    if not sizes:
        sizes = [len(data) or 1]
    out, pos, i = [], 0, 0
    while pos < len(data):
        n = sizes[i % len(sizes)]
        out.append(data[pos : pos + n])
        pos += n
        i += 1
    return out


class Run:
    """The result of feeding a wire through one decoder, chunk by chunk."""

    def __init__(self, wire: bytes, sizes: list[int]):
        self.decoder = dec = DataDecoder()
        self.pieces: list[bytes] = []
        self.done_after: int | None = None  # bytes fed when done first became true
        self.max_buffer = 0
        fed = 0
        for chunk in chunked(wire, sizes):
            dec.feed(chunk)
            fed += len(chunk)
            piece = dec.decode()
            if piece:
                self.pieces.append(piece)
            self.max_buffer = max(self.max_buffer, len(dec.buffer))
            if dec.done and self.done_after is None:
                self.done_after = fed
        self.output = b"".join(self.pieces)


def decode_all(wire: bytes, sizes: list[int] | None = None) -> Run:
    return Run(wire, sizes or [len(wire) or 1])


def restuff(pieces: list[bytes]) -> bytes:
    """What forward.Downstream writes: each chunk stuffed, then the final dot."""
    at_line_start = True
    out = bytearray()
    for chunk in pieces:
        out += stuff(chunk, at_line_start)
        at_line_start = chunk.endswith(b"\r\n")
    out += b".\r\n" if at_line_start else b"\r\n.\r\n"
    return bytes(out)


def client_stuff(lines: list[bytes]) -> bytes:
    """A correct client: CRLF lines, a leading dot doubled."""
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)


def model(wire: bytes) -> tuple[bytes, int, int, int]:
    """Reference semantics: (output, bytes consumed, bare count, longest line).

    Physical lines end at LF; a line that is exactly "." and ends in CRLF,
    after a line that also ended in CRLF, ends the data.  A leading dot is removed; each remaining CR inside the line
    is a (bare) line break, as is an LF without CR.
    """
    out = bytearray()
    bare = longest = 0
    pos = 0
    prev_crlf = True  # the start of the data is a line start
    while True:
        nl = wire.find(b"\n", pos)
        assert nl >= 0, "model needs a terminated wire"
        line = wire[pos:nl]
        pos = nl + 1
        crlf = line.endswith(b"\r")
        if crlf:
            line = line[:-1]
        if crlf and prev_crlf and line == b".":
            return bytes(out), pos, bare, longest
        prev_crlf = crlf
        if not crlf:
            bare += 1
        if line.startswith(b".") and len(line.split(b"\r")[0]) > 1:  # a lone "." is kept
            line = line[1:]
        parts = line.split(b"\r")
        bare += len(parts) - 1
        for part in parts:
            out += part + b"\r\n"
            longest = max(longest, len(part))


def assert_no_early_end(stuffed_body: bytes) -> None:
    """The re-stuffed body (before our final dot) never ends the data."""
    assert END not in b"\r\n" + stuffed_body


# --- basics ---------------------------------------------------------------------------


def test_simple_message():
    run = decode_all(b"Subject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    dec = run.decoder
    assert run.output == b"Subject: hi\r\n\r\nbody\r\n"
    assert dec.done
    assert bytes(dec.buffer) == b"QUIT\r\n"
    assert dec.bare == 0
    assert dec.size == len(run.output)
    assert dec.longest_line == len(b"Subject: hi")


def test_empty_message():
    run = decode_all(b".\r\nMAIL FROM:<>\r\n")
    assert run.output == b""
    assert run.decoder.done and bytes(run.decoder.buffer) == b"MAIL FROM:<>\r\n"
    assert run.decoder.size == 0 and run.decoder.longest_line == 0


def test_not_done_without_final_dot():
    dec = DataDecoder()
    dec.feed(b"line one\r\nline two\r\n")
    assert dec.decode() == b"line one\r\nline two\r\n"
    assert not dec.done
    assert dec.buffer == b""


def test_partial_line_is_held_back():
    dec = DataDecoder()
    dec.feed(b"abc")
    assert dec.decode() == b""
    dec.feed(b"def\r")
    assert dec.decode() == b""
    dec.feed(b"\n")
    assert dec.decode() == b"abcdef\r\n"
    assert dec.bare == 0


def test_decode_after_done_returns_nothing():
    dec = DataDecoder()
    dec.feed(b"x\r\n.\r\n")
    assert dec.decode() == b"x\r\n"
    dec.feed(b"y\r\n.\r\n")
    assert dec.decode() == b""
    assert bytes(dec.buffer) == b"y\r\n.\r\n"


def test_dot_unstuffing():
    run = decode_all(b"..\r\n..leading\r\n.x\r\nmid.dle\r\n...\r\n.\r\n")
    assert run.output == b".\r\n.leading\r\nx\r\nmid.dle\r\n..\r\n"


def test_dot_not_at_line_start_is_kept():
    assert decode_all(b"a.\r\n a\r\n.\r\n").output == b"a.\r\n a\r\n"


def test_restuff_round_trip_of_dot_lines():
    lines = [b".", b"..", b".x", b"x.", b"", b"..."]
    wire = client_stuff(lines) + b".\r\n"
    run = decode_all(wire)
    assert run.output == b"".join(line + b"\r\n" for line in lines)
    assert restuff(run.pieces) == wire


def test_longest_line_counts_unstuffed_octets():
    run = decode_all(b"..abc\r\nab\r\n.\r\n")
    assert run.decoder.longest_line == 4  # ".abc"


def test_longest_line_excludes_crlf():
    run = decode_all(b"x" * 1000 + b"\r\nshort\r\n.\r\n")
    assert run.decoder.longest_line == 1000


def test_size_counts_output_octets():
    run = decode_all(b"a\r\nbb\r\n..c\r\n.\r\n")
    assert run.decoder.size == len(b"a\r\nbb\r\n.c\r\n") == len(run.output)


# --- bare CR / LF normalisation ----------------------------------------------------------


@pytest.mark.parametrize(
    "wire, output, bare",
    [
        (b"a\nb\r\n.\r\n", b"a\r\nb\r\n", 1),
        (b"a\rb\r\n.\r\n", b"a\r\nb\r\n", 1),
        (b"a\r\rb\r\n.\r\n", b"a\r\n\r\nb\r\n", 2),
        (b"a\r\r\n.\r\n", b"a\r\n\r\n", 1),
        (b"a\n\n\r\n.\r\n", b"a\r\n\r\n\r\n", 2),
        (b"a\rb\nc\r\n.\r\n", b"a\r\nb\r\nc\r\n", 2),
        (b"\r\r\r\n.\r\n", b"\r\n\r\n\r\n", 2),
    ],
)
def test_bare_cr_lf_normalised_and_counted(wire, output, bare):
    run = decode_all(wire)
    assert run.output == output
    assert run.decoder.bare == bare
    assert run.decoder.done


def test_bare_lines_count_towards_longest_line():
    run = decode_all(b"abcdef\rxy\nz\r\n.\r\n")
    assert run.output == b"abcdef\r\nxy\r\nz\r\n"
    assert run.decoder.longest_line == 6
    assert run.decoder.bare == 2


def test_crlf_split_across_chunks_is_not_bare():
    run = decode_all(b"abc\r\n.\r\n", [4, 1, 1, 1])  # "abc\r" | "\n" | ...
    assert run.output == b"abc\r\n" and run.decoder.bare == 0


def test_dot_after_bare_cr_is_not_unstuffed():
    # the CR is not a line end on the client's side, so the dot is content
    run = decode_all(b"a\r.b\r\n.\r\n")
    assert run.output == b"a\r\n.b\r\n"
    assert restuff(run.pieces) == b"a\r\n..b\r\n.\r\n"


@pytest.mark.parametrize(
    "wire, output",
    [
        (b"a\r\n.\rtext\r\n.\r\n", b"a\r\n.\r\ntext\r\n"),  # the fake end CRLF "." CR
        (b".\rtext\r\n.\r\n", b".\r\ntext\r\n"),
        (b"a\r\n.\r\r\n.\r\n", b"a\r\n.\r\n\r\n"),
        (b"a\r\n..\rtext\r\n.\r\n", b"a\r\n.\r\ntext\r\n"),  # stuffed: one dot goes
        (b"a\r\n.x\rtext\r\n.\r\n", b"a\r\nx\r\ntext\r\n"),
    ],
)
@pytest.mark.parametrize("chunk", [1, 2, 4096])
def test_lone_dot_before_a_bare_cr_is_kept_as_a_line(wire, output, chunk):
    run = decode_all(wire, [chunk])
    assert run.output == output and run.decoder.done
    assert decode_all(restuff(run.pieces)).output == output  # what downstream stores


def test_long_line_lone_dot_before_bare_cr_is_kept():
    run = decode_all(b".\r" + b"x" * (SEGMENT + 10) + b"\r\n.\r\n", [4096])
    assert run.output == b".\r\n" + b"x" * (SEGMENT + 10) + b"\r\n"


# --- smuggling ------------------------------------------------------------------------------

SMUGGLE = b"MAIL FROM:<admin@victim.example>\r\nRCPT TO:<x@victim.example>\r\nDATA\r\nforged\r\n"

NOT_AN_END = [
    pytest.param(b"\n.\n", id="LF.LF"),
    pytest.param(b"\r\n.\n", id="CRLF.LF"),
    pytest.param(b"\r.\r", id="CR.CR"),
    pytest.param(b"\r\n.\r\r\n", id="CRLF.CRCRLF"),
    pytest.param(b"\r.\r\n", id="CR.CRLF"),
    pytest.param(b"\n.\r", id="LF.CR"),
    pytest.param(b"\r\n.\r", id="CRLF.CR"),
    pytest.param(b"\r\n \r\n", id="CRLF-space-CRLF"),
    pytest.param(b"\n.\r\n", id="LF.CRLF"),  # the classic smuggling sequence
]


@pytest.mark.parametrize("sequence", NOT_AN_END)
@pytest.mark.parametrize("chunk", [1, 3, 4096])
def test_smuggling_sequences_do_not_end_data(sequence, chunk):
    wire = b"Subject: x\r\n\r\nbody" + sequence + SMUGGLE + b".\r\nQUIT\r\n"
    run = decode_all(wire, [chunk])
    dec = run.decoder
    assert dec.done
    assert bytes(dec.buffer) == b"QUIT\r\n", "data ended early: smuggled commands would run"
    assert b"MAIL FROM:<admin@victim.example>\r\n" in run.output
    end = len(wire) - len(b"QUIT\r\n")
    assert run.done_after is not None and end <= run.done_after < end + chunk
    # nothing the downstream sees ends the data before our final dot
    stuffed = restuff(run.pieces)
    assert stuffed.endswith(END)
    assert_no_early_end(stuffed[: -len(b".\r\n")])
    # and the decoder output is canonical: no bare CR or LF
    assert not re.search(rb"\r(?!\n)|(?<!\r)\n", run.output)
    assert dec.bare >= 1 or sequence == b"\r\n \r\n"


@pytest.mark.parametrize("sequence", NOT_AN_END)
def test_smuggling_sequences_restuffed_never_contain_end(sequence):
    dec = DataDecoder()
    dec.feed(b"x" + sequence + b"y\r\n")
    out = dec.decode()
    assert not dec.done
    assert_no_early_end(stuff(out, True))


# --- long lines and bounded memory ------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1000, 4096, 65536, 100_000])
def test_one_megabyte_line_is_segmented(chunk):
    size = 1 << 20
    body = bytes(range(33, 127)) * (size // 94 + 1)
    body = body[:size]
    assert b"\r" not in body and b"\n" not in body
    wire = body + b"\r\n.\r\nQUIT\r\n"
    run = decode_all(wire, [chunk])
    dec = run.decoder
    assert run.output == body + b"\r\n"
    assert dec.done and bytes(dec.buffer) == b"QUIT\r\n"
    assert run.max_buffer <= SEGMENT + chunk
    assert max(len(p) for p in run.pieces) <= SEGMENT + chunk + 2
    assert len(run.pieces) > 1  # it was passed through, not held until the end
    assert dec.longest_line == size
    assert dec.bare == 0


def test_long_line_output_starts_before_line_ends():
    dec = DataDecoder()
    total = b""
    for _ in range(20):
        dec.feed(b"y" * 10_000)
        total += dec.decode()
        assert len(dec.buffer) < SEGMENT + 10_000
    assert len(total) >= 200_000 - SEGMENT
    assert set(total) == {ord("y")}


def test_long_line_leading_dot_unstuffed_once():
    body = b".." + b"z" * (3 * SEGMENT)
    run = decode_all(body + b"\r\n.\r\n", [5000])
    assert run.output == body[1:] + b"\r\n"
    assert run.decoder.longest_line == len(body) - 1


def test_long_line_dot_after_segment_is_content():
    body = b"z" * (SEGMENT + 10)
    run = decode_all(body + b".\r\n.\r\n", [SEGMENT + 10, 3, 2])
    assert run.output == body + b".\r\n"
    assert run.decoder.done


def test_long_line_trailing_cr_waits_for_lf():
    dec = DataDecoder()
    dec.feed(b"x" * (SEGMENT + 100) + b"\r")
    first = dec.decode()
    assert not first.endswith(b"\r") and b"\r" not in first
    assert bytes(dec.buffer).endswith(b"\r")
    dec.feed(b"\n.\r\n")
    rest = dec.decode()
    assert first + rest == b"x" * (SEGMENT + 100) + b"\r\n"
    assert dec.bare == 0 and dec.done


def test_long_line_with_bare_cr_inside_segment():
    body = b"a" * SEGMENT + b"\r" + b"b" * SEGMENT
    run = decode_all(body + b"\r\n.\r\n", [SEGMENT + 7])
    assert run.output == b"a" * SEGMENT + b"\r\n" + b"b" * SEGMENT + b"\r\n"
    assert run.decoder.bare == 1
    assert run.decoder.longest_line == SEGMENT


def test_long_line_restuffed_has_no_early_end():
    body = b"q" * SEGMENT + b"\r.\r" + b"q" * SEGMENT
    run = decode_all(body + b"\r\n.\r\nRSET\r\n", [SEGMENT - 1])
    assert bytes(run.decoder.buffer) == b"RSET\r\n"
    stuffed = restuff(run.pieces)
    assert_no_early_end(stuffed[:-3])


def test_many_short_lines_buffer_stays_small():
    dec = DataDecoder()
    for _ in range(5000):
        dec.feed(b"short line\r\n")
        dec.decode()
        assert len(dec.buffer) == 0
    assert dec.size == 5000 * 12


# --- forward.stuff -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "chunk, at_start, expected",
    [
        (b".x\r\n", True, b"..x\r\n"),
        (b".x\r\n", False, b".x\r\n"),
        (b"a\r\n.\r\n.b\r\n", True, b"a\r\n..\r\n..b\r\n"),
        (b"no dots\r\n", True, b"no dots\r\n"),
        (b"", True, b""),
    ],
)
def test_stuff(chunk, at_start, expected):
    assert stuff(chunk, at_start) == expected


# --- properties ----------------------------------------------------------------------------------

LINE_BYTES = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
DOTTY_LINE = st.one_of(
    LINE_BYTES,
    st.sampled_from([b"", b".", b"..", b".x", b"...", b"x.", b". "]),
    LINE_BYTES.map(lambda b: b"." + b),
)
CHUNK_SIZES = st.one_of(
    st.just([1]),
    st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=12),
)
TRAILER = st.sampled_from([b"", b"QUIT\r\n", b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n", b"\r\n.\r\n", b"x"])

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(lines=st.lists(DOTTY_LINE, max_size=30), sizes=CHUNK_SIZES, trailer=TRAILER)
@example(lines=[b"."], sizes=[1], trailer=b"QUIT\r\n")
@example(lines=[], sizes=[1], trailer=b"")
def test_property_clean_messages(lines, sizes, trailer):
    """Client-stuffed CRLF messages come back exactly, whatever the chunking."""
    canonical = b"".join(line + b"\r\n" for line in lines)
    wire = client_stuff(lines) + b".\r\n" + trailer
    end = len(wire) - len(trailer)
    run = Run(wire, sizes)
    dec = run.decoder
    assert run.output == canonical
    assert dec.done
    assert bytes(dec.buffer) == trailer
    assert run.done_after is not None and run.done_after >= end
    assert run.done_after - end < max(sizes)  # done in the call that fed the final LF
    assert dec.bare == 0
    assert dec.size == len(canonical)
    assert dec.longest_line == max((len(line) for line in lines), default=0)
    # re-stuffing gives back exactly what the client sent
    assert restuff(run.pieces) == wire[:end]


TERMINATORS = st.sampled_from([b"\r\n", b"\n", b"\r"])


@SETTINGS
@given(
    body=st.lists(st.tuples(DOTTY_LINE, TERMINATORS), max_size=25),
    sizes=CHUNK_SIZES,
    trailer=TRAILER,
)
def test_property_bare_line_ends(body, sizes, trailer):
    """Lines ended by CRLF, bare LF or bare CR decode to canonical CRLF lines.

    The client stuffs after CRLF and bare LF (the decoder's line starts);
    after a bare CR the next piece is content of the same physical line.
    """
    wire = bytearray()
    expected = bytearray()
    bare = longest = 0
    prev = b"\r\n"
    for line, term in body:
        if prev == b"\r" and line == b"" and term == b"\n":
            term = b"\r\n"  # CR + LF would read as one CRLF
        at_line_start = prev != b"\r"
        wire += (b"." + line if at_line_start and line.startswith(b".") else line) + term
        expected += line + b"\r\n"
        bare += term != b"\r\n"
        longest = max(longest, len(line))
        prev = term
    if prev != b"\r\n":  # the message must end with CRLF before the dot
        wire += b"\r\n"
        expected += b"\r\n"
    wire += b".\r\n"
    end = len(wire)
    wire += trailer
    run = Run(bytes(wire), sizes)
    dec = run.decoder
    assert dec.done
    assert bytes(dec.buffer) == trailer
    assert run.output == bytes(expected)
    assert dec.bare == bare
    assert dec.longest_line == longest
    assert run.done_after is not None and end <= run.done_after < end + max(sizes)
    stuffed = restuff(run.pieces)
    assert_no_early_end(stuffed[:-3])


SMUGGLY = st.binary(max_size=60).map(
    lambda b: bytes(b"\r\n.x "[c % 5] for c in b)
)


@SETTINGS
@given(body=SMUGGLY, sizes=CHUNK_SIZES, trailer=TRAILER)
@example(body=b"\r.\r\n.\n", sizes=[1], trailer=b"")
@example(body=b"\r\n.\r\r\n", sizes=[2], trailer=b"QUIT\r\n")
@example(body=b".\r\n", sizes=[1], trailer=b"")
def test_property_arbitrary_bytes_match_model(body, sizes, trailer):
    """Any byte soup: the decoder agrees with the reference model, ends at the
    first real CRLF.CRLF, and its re-stuffed output never ends early."""
    wire = body + END + trailer
    expected, consumed, bare, longest = model(wire)
    run = Run(wire, sizes)
    dec = run.decoder
    assert dec.done
    assert run.output == expected
    assert bytes(dec.buffer) == wire[consumed:]
    assert dec.bare == bare
    assert dec.longest_line == longest
    # the end is the first CRLF "." CRLF (the start of data counts as a line start)
    assert consumed == (b"\r\n" + wire).find(END) - 2 + 5
    assert not re.search(rb"\r(?!\n)|(?<!\r)\n", run.output)
    assert_no_early_end(restuff(run.pieces)[:-3])


@SETTINGS
@given(body=SMUGGLY, sizes=CHUNK_SIZES)
def test_property_chunking_does_not_matter(body, sizes):
    wire = body + END + b"NEXT\r\n"
    whole = decode_all(wire)
    parts = Run(wire, sizes)
    assert parts.output == whole.output
    assert bytes(parts.decoder.buffer) == bytes(whole.decoder.buffer)
    assert parts.decoder.bare == whole.decoder.bare
    assert parts.decoder.longest_line == whole.decoder.longest_line
    assert parts.decoder.size == whole.decoder.size


@SETTINGS
@given(body=SMUGGLY, sizes=CHUNK_SIZES)
def test_property_decoding_is_idempotent_after_restuff(body, sizes):
    """What goes downstream decodes to the same message and is clean."""
    wire = body + END
    first = Run(wire, sizes)
    second = Run(restuff(first.pieces), sizes)
    assert second.decoder.done
    assert second.output == first.output
    assert second.decoder.bare == 0
    assert bytes(second.decoder.buffer) == b""
