"""Fuzz targets for the sans-IO core: the session, the grammar, the DATA decoder.

Each target takes Hypothesis-generated input and checks what must hold
for any input at all: no exception but the documented ones, every reply
well formed, the decoder never ending a message early once re-stuffed.
``tests/unit/test_fuzz.py`` runs them briefly in the suite;
``bench/fuzz.py`` runs them for a million inputs or more.
"""

from __future__ import annotations

import re

from hypothesis import strategies as st

from barricade.net.forward import stuff
from barricade.protocol import events as ev
from barricade.protocol.data import DataDecoder
from barricade.protocol.grammar import (
    GrammarError,
    Strictness,
    parse_path,
    parse_xclient,
    split_command,
    valid_domain,
    valid_helo,
)
from barricade.protocol.session import CLOSED, NEED_DATA, PAUSED, Session, SessionConfig
from barricade.replies import Catalogue

CAT = Catalogue()
REPLY_LINE = re.compile(rb"^[2-5]\d\d[ -][^\r\n]*\r\n")

# Bytes that matter to SMTP, weighted towards the interesting ones.
_ALPHABET = b"\r\n.: <>@\"\\=+-MAILFROMRCPTTODAHELOQUITRSETxX0123456789\x00\x7f\xff\t"
SMTP_WORDS = [
    b"EHLO client.example\r\n", b"HELO x\r\n", b"MAIL FROM:<a@example.org>\r\n",
    b"MAIL FROM:<> SIZE=10\r\n", b"RCPT TO:<b@example.com>\r\n", b"RCPT TO:<\"q d\"@[192.0.2.1]>\r\n",
    b"DATA\r\n", b"RSET\r\n", b"NOOP\r\n", b"QUIT\r\n", b"STARTTLS\r\n", b"XCLIENT ADDR=192.0.2.1\r\n",
    b"VRFY x\r\n", b"HELP\r\n", b"BDAT 10\r\n", b".\r\n", b"\r\n.\r\n", b"\n.\n", b"\r\n.\r",
    b"Subject: x\r\n\r\n", b"..\r\n", b"\r", b"\n",
]

soup = st.binary(max_size=200).map(lambda b: bytes(_ALPHABET[c % len(_ALPHABET)] for c in b))
chunk = st.one_of(soup, st.sampled_from(SMTP_WORDS), st.binary(max_size=40))
streams = st.lists(chunk, max_size=30)
texts = st.one_of(
    st.text(max_size=120),
    soup.map(lambda b: b.decode("latin-1")),
)
strictness = st.builds(Strictness, st.booleans(), st.booleans(), st.booleans(), st.booleans())
configs = st.builds(
    SessionConfig,
    hostname=st.just("mx.test"),
    pipelining=st.booleans(),
    eightbitmime=st.booleans(),
    xclient=st.booleans(),
    tls_available=st.booleans(),
    command_length=st.booleans(),
    line_length=st.integers(0, 2),
    strict_dot=st.booleans(),
    strictness=strictness,
    drop_after=st.integers(0, 6),
    drop_unknown=st.booleans(),
    helo_schizo=st.integers(0, 2),
    size_limit=st.sampled_from([0, 50, 100000]),
)


def _answer(event: ev.Event, s: Session):
    """A permissive proxy's reply to ``event``."""
    if isinstance(event, ev.Violation):
        return event.reply
    if isinstance(event, ev.Data):
        return CAT.reply(900)
    if isinstance(event, ev.EndOfData):
        return event.violation or CAT.reply(554, qid="Q")
    if isinstance(event, ev.Quit):
        return CAT.reply(247, hostname="mx.test")
    if isinstance(event, ev.StartTls):
        return CAT.reply(913)
    if isinstance(event, ev.Rcpt) and len(event.path.address) % 7 == 0:
        return CAT.reply(910, limit=1)  # some recipients over the limit
    if isinstance(event, ev.Helo):
        rid = 254 if event.verb == "EHLO" else 256
        return CAT.reply(rid, hostname="mx.test", helo=event.domain, client_ip="192.0.2.7",
                         extra=s.ehlo_keywords() if rid == 254 else ())
    return CAT.reply(547)


def session_target(config: SessionConfig, stream: list[bytes]) -> None:
    """Any byte stream, any configuration: events and well-formed replies only."""
    client = ev.ClientInfo("192.0.2.7", 4000, "client.example")
    s = Session(config, client, CAT, "SID")
    out = s.greet(CAT.reply(633, hostname="mx.test", esmtp="E", banner="ready"))
    assert REPLY_LINE.match(out)
    for piece in stream:
        s.receive_data(piece)
        for _ in range(10000):
            event = s.next_event()
            if event is NEED_DATA or event is PAUSED:
                break
            assert s.buffered >= 0
            if isinstance(event, ev.DataChunk):
                assert event.data.endswith(b"\r\n") or b"\r" not in event.data[-1:]
                continue
            out = s.respond(_answer(event, s))
            for line in out.splitlines(keepends=True):
                assert REPLY_LINE.match(line), line
        else:
            raise AssertionError("the session handed out 10000 events for one chunk")
        if s.state == CLOSED:
            break


def grammar_target(text: str, strict: Strictness) -> None:
    """The grammar raises GrammarError (with a catalogue id) or answers; nothing else."""
    cat = CAT
    verb, arg = split_command(text)
    assert verb == verb.upper()
    valid_helo(text)
    valid_domain(text)
    for keyword, mail in (("FROM", True), ("TO", False)):
        try:
            path = parse_path(text, keyword, strict, mail=mail)
        except GrammarError as exc:
            assert exc.reply_id in cat
            continue
        assert isinstance(path.address, str) and isinstance(path.params, dict)
    try:
        attrs = parse_xclient(text)
    except GrammarError as exc:
        assert exc.reply_id in cat
    else:
        assert isinstance(attrs, dict)


def decoder_target(body: bytes, sizes: list[int]) -> None:
    """Any bytes: the decoder stops at the first CRLF.CRLF and its re-stuffed
    output never holds an end of data of its own (no smuggling)."""
    wire = body + b"\r\n.\r\n" + b"NEXT\r\n"
    dec = DataDecoder()
    pieces = []
    pos = i = 0
    while pos < len(wire) and not dec.done:
        n = sizes[i % len(sizes)] if sizes else len(wire)
        dec.feed(wire[pos:pos + n])
        pos += n
        i += 1
        piece = dec.decode()
        if piece:
            pieces.append(piece)
    assert dec.done
    out = b"".join(pieces)
    assert not re.search(rb"\r(?!\n)|(?<!\r)\n", out)  # only CRLF line ends
    stuffed, at_start = b"", True
    for piece in pieces:
        stuffed += stuff(piece, at_start)
        at_start = piece.endswith(b"\r\n")
    assert b"\r\n.\r\n" not in b"\r\n" + stuffed
    assert dec.size == len(out)


decoder_bodies = st.one_of(soup, st.binary(max_size=300))
chunk_sizes = st.lists(st.integers(1, 70), min_size=1, max_size=5)
