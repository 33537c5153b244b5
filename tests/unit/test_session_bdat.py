"""The session and CHUNKING (RFC 3030): BDAT chunks, their octets, their replies."""

from __future__ import annotations

from barricade.protocol import events as ev
from barricade.protocol.chunking import BdatCommand, ChunkDecoder, parse_bdat
from barricade.protocol.session import BDAT, CLOSED, COMMAND, NEED_DATA, PAUSED, Session, SessionConfig
from barricade.replies import Catalogue
from tests.unit.test_session import converse, ehlo, make, reply_ids

CAT = Catalogue()
CFG = SessionConfig(hostname="mx.test", drop_after=0)


def transaction(config: SessionConfig = CFG) -> Session:
    s = make(config)
    ehlo(s)
    converse(s, b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n")
    return s


def feed(s: Session, data: bytes, refuse_data=None) -> tuple[list[ev.Event], bytes]:
    """Like converse, with BDAT's replies (and an optional refusal of the first BDAT)."""
    s.receive_data(data)
    events, out = [], b""
    while True:
        e = s.next_event()
        if e is NEED_DATA or e is PAUSED:
            return events, out
        events.append(e)
        if isinstance(e, ev.Data):
            out += s.respond(refuse_data or CAT.reply(900))
        elif isinstance(e, ev.ChunkReceived):
            out += s.respond(CAT.reply(962, size=e.size))
        elif isinstance(e, ev.EndOfData):
            out += s.respond(e.violation or CAT.reply(554, qid="Q"), drop=e.drop)
        elif isinstance(e, ev.Violation):
            out += s.respond(e.reply, drop=e.drop)
        elif isinstance(e, ev.Command):
            out += s.respond(CAT.reply(547))


def chunks(events) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, ev.DataChunk))


def test_chunking_offered():
    _, out = converse(make(CFG), b"EHLO client.example\r\n")
    assert b"250-CHUNKING\r\n" in out
    _, out = converse(make(SessionConfig(hostname="mx.test", chunking=False)), b"EHLO client.example\r\n")
    assert b"CHUNKING" not in out


def test_parse_bdat():
    assert parse_bdat("1000") == BdatCommand(1000, False)
    assert parse_bdat("0 last").last and parse_bdat("12  LAST").size == 12
    for bad in ("", "ten", "-1", "1 FIRST", "1 LAST x", "9" * 21, "1.5"):
        assert parse_bdat(bad) is None, bad


def test_two_chunks_one_message():
    s = transaction()
    events, out = feed(s, b"BDAT 7\r\nSubject")
    assert isinstance(events[0], ev.Data) and events[0].chunking
    assert out.startswith(b"250 2.0.0 7 octets received #962")
    events, out = feed(s, b"BDAT 11 LAST\r\n: x\r\n\r\nhi\r\n")
    assert chunks(events) == b": x\r\n\r\nhi\r\n"
    eod = events[-1]
    assert isinstance(eod, ev.EndOfData) and eod.size == 18 and eod.bare_newlines == 0
    assert reply_ids(out) == [554] and s.state == COMMAND and not s.in_transaction


def test_octets_split_anywhere_and_pipelined_chunks():
    s = transaction()
    whole = b"BDAT 3\r\nabcBDAT 0\r\nBDAT 4 LAST\r\nd\r\nx"
    events, out = [], b""
    for i in range(len(whole)):
        e, o = feed(s, whole[i:i + 1])
        events += e
        out += o
    assert chunks(events) == b"abcd\r\nx"
    assert reply_ids(out) == [962, 962, 554]


def test_bare_cr_lf_are_repaired_and_counted_across_chunks():
    s = transaction(SessionConfig(hostname="mx.test", strict_dot=True))
    events, out = feed(s, b"BDAT 6\r\nline1\rBDAT 7 LAST\r\n\na\nb\r.\n")
    assert chunks(events) == b"line1\r\na\r\nb\r\n.\r\n"  # the CRLF split over two chunks is whole
    eod = events[-1]
    assert eod.bare_newlines == 3 and reply_ids(out) == [962, 921]


def test_refused_bdat_octets_are_read_not_executed():
    s = make(CFG)
    ehlo(s)
    events, out = feed(s, b"BDAT 6\r\nQUIT\r\nNOOP\r\n")  # no MAIL: 503, and QUIT is chunk data
    assert reply_ids(out) == [251, 547] and s.state != CLOSED
    converse(s, b"MAIL FROM:<a@b.example>\r\n")
    _, out = feed(s, b"BDAT 4 LAST\r\nRSET")  # no RCPT
    assert out.startswith(b"554 5.5.1 no valid recipients #923")
    assert s.in_transaction


def test_a_refused_first_chunk_is_answered_after_its_octets():
    s = transaction()
    refusal = CAT.reply(306)
    events, out = feed(s, b"BDAT 5 LAST\r\nab", refuse_data=refusal)
    assert out == b"" and s.state == BDAT
    events, out = feed(s, b"cde")
    assert reply_ids(out) == [306] and not s.in_transaction and s.errors == 1


def test_data_after_bdat_and_bdat_0_last():
    s = transaction()
    feed(s, b"BDAT 2\r\nab")
    _, out = feed(s, b"DATA\r\n")
    assert out.startswith(b"503 5.5.1 DATA out of sequence #251")
    s = transaction()
    events, out = feed(s, b"BDAT 0 LAST\r\n")
    assert isinstance(events[-1], ev.EndOfData) and events[-1].size == 0 and reply_ids(out) == [554]


def test_sizes_over_the_limit_and_bad_arguments_close():
    s = transaction(SessionConfig(hostname="mx.test", size_limit=100))
    feed(s, b"BDAT 60\r\n" + b"x" * 60)
    _, out = feed(s, b"BDAT 41 LAST\r\n")  # 101 in all
    assert out.startswith(b"552 5.3.4 message too big, max. 100 bytes #912") and s.state == CLOSED
    s = transaction()
    _, out = feed(s, b"BDAT 99999999999999999999999\r\n")
    assert reply_ids(out) == [920] and s.state == CLOSED
    s = transaction()
    _, out = feed(s, b"BDAT\r\n")
    assert reply_ids(out) == [249] and s.state == COMMAND


def test_a_chunk_that_never_comes_waits_for_the_timeout():
    s = transaction()
    events, out = feed(s, b"BDAT 100 LAST\r\nshort")
    assert chunks(events) == b"short" and out == b"" and s.next_event() is NEED_DATA


def test_chunk_decoder_lines():
    dec = ChunkDecoder()
    out = dec.decode(b"a" * 10 + b"\r\n" + b"b" * 5) + dec.decode(b"b" * 5 + b"\r") + dec.finish()
    assert out == b"a" * 10 + b"\r\n" + b"b" * 10 + b"\r\n"
    assert dec.longest_line == 10 and dec.bare == 1 and dec.size == len(out)


def _bdat_waiting_for_downstream(whole_segment: bytes) -> tuple[Session, bytes]:
    """Pipelining off; the first BDAT's DATA step is in flight when ``whole_segment`` (its
    chunk, perhaps more) arrives; then the downstream's DATA reply, and what follows."""
    s = make(SessionConfig(hostname="mx.test", drop_after=0, pipelining=False))
    ehlo(s)
    converse(s, b"MAIL FROM:<a@b.example>\r\n")
    converse(s, b"RCPT TO:<c@d.example>\r\n")
    s.receive_data(b"BDAT 5 LAST\r\n")
    first = s.next_event()
    assert isinstance(first, ev.Data) and first.chunking and s.next_event() is PAUSED
    s.receive_data(whole_segment)  # while the downstream has not answered DATA yet
    out = s.respond(CAT.reply(900))
    _, more = feed(s, b"")
    return s, out + more


def test_a_chunk_arriving_while_bdat_waits_is_not_pipelining():
    s, out = _bdat_waiting_for_downstream(b"hello")
    assert reply_ids(out) == [554] and not s.closing
    _, out = feed(s, b"MAIL FROM:<a@b.example>\r\n")
    assert reply_ids(out) == [547] and not s.closing


def test_a_command_after_the_chunk_while_bdat_waits_is_pipelining():
    s, out = _bdat_waiting_for_downstream(b"helloMAIL FROM:<a@b.example>\r\n")
    assert reply_ids(out) == [554, 631] and s.closing
