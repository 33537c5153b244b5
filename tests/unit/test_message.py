"""Header block collection, header parsing and our Received: header."""

from barricade.protocol.message import HeaderCollector, new_session_id, parse_headers, received_header


def test_header_collector_splits_at_blank_line_across_chunks():
    hc = HeaderCollector()
    assert hc.feed(b"Subject: a\r\nX-Long: b\r\n") == b"" and not hc.done
    assert hc.feed(b"\tcontinued\r\n\r\nbody\r\n") == b"\r\nbody\r\n" and hc.done
    assert bytes(hc.buffer) == b"Subject: a\r\nX-Long: b\r\n\tcontinued\r\n"
    assert parse_headers(bytes(hc.buffer)) == [("Subject", "a"), ("X-Long", "b continued")]


def test_message_without_headers():
    hc = HeaderCollector()
    assert hc.feed(b"\r\nbody only\r\n") == b"\r\nbody only\r\n" and hc.buffer == b""


def test_received_header_cannot_be_injected_into():
    h = received_header(helo="evil\r\nX-Injected: yes", client_name="a b", client_ip="192.0.2.1",
                        hostname="mx.test", proto="ESMTP", qid="Q1", rcpts=["x@y.example"], when=0)
    lines = h.decode().split("\r\n")
    assert lines[0] == "Received: from evil??X-Injected:?yes (a?b [192.0.2.1])"
    assert lines[1] == "\tby mx.test (Barricade) with ESMTP id Q1"
    assert lines[2].startswith("\tfor <x@y.example>; ") and lines[3] == ""
    assert all(len(x) < 78 for x in lines)


def test_received_header_without_single_recipient_has_no_for_clause():
    h = received_header(helo="h.example", client_name="n.example", client_ip="192.0.2.1",
                        hostname="mx.test", proto="ESMTPS", qid="Q1", rcpts=["a@b", "c@d"], when=0)
    assert b"for <" not in h and b"with ESMTPS id Q1;\r\n\t" in h


def test_session_ids_are_unique_and_short():
    ids = {new_session_id() for _ in range(5000)}
    assert len(ids) == 5000 and all(len(i) == 12 and i.isalnum() for i in ids)


def test_a_session_ids_counter_is_written_in_base_32():
    from barricade.protocol import message

    first = new_session_id()
    ids = [new_session_id() for _ in range(1 << 15)]  # the counter's whole cycle
    assert sorted({i[-3:] for i in ids}) == sorted(message._b32(n, 3) for n in range(1 << 15))
    assert ids[-1][-3:] == first[-3:] != ids[0][-3:]  # it wraps after 32,768 sessions


def test_edit_headers_removes_tags_and_adds():
    from barricade.protocol.message import edit_headers

    block = (b"X-Spam-Flag: YES\r\nSubject: hello\r\nX-Spam-Status: Yes,\r\n\tscore=9\r\n"
             b"From: a@b.example\r\n")
    out = edit_headers(block, "[SPAM]", [("X-Report", "line one\r\n  | line two\nbare")],
                       {"x-spam-flag", "x-spam-status"})
    assert out == (b"X-Report: line one\r\n  | line two bare\r\n"
                   b"Subject: [SPAM] hello\r\nFrom: a@b.example\r\n")
    assert edit_headers(b"From: a\r\n", "[T]", []) == b"Subject: [T]\r\nFrom: a\r\n"
    assert edit_headers(b"Subject: [T] x\r\n", "[T]", []) == b"Subject: [T] x\r\n"
    block = b"Subject: x\r\nX-A: 1\r\n folded\r\nFrom: a\r\n"
    assert edit_headers(block, "", []) == block  # nothing asked: the block as it came
    assert edit_headers(bytearray(block), "", [], set()) == block


def test_a_block_in_any_pieces_ends_where_it_ends_whole():
    """The search for the blank line goes on from where it stopped (the whole buffer was
    searched again for every piece: a megabyte sent 32 octets at a time took seconds)."""
    import random

    data = b"Subject: a\r\nX-Long: " + b"y" * 5000 + b"\r\n folded\r\n\r\nbody\r\n"
    whole = HeaderCollector()
    rest = whole.feed(data)
    rng = random.Random(7)
    for _ in range(50):
        hc, got, i = HeaderCollector(), b"", 0
        while not hc.done:
            n = rng.choice((1, 2, 3, 4, 7, 64))
            got = hc.feed(data[i:i + n])
            i += n
        assert (bytes(hc.buffer), got + data[i:]) == (bytes(whole.buffer), rest)


def test_folded_headers_unfold_to_one_value():
    block = b"A: 1\r\n 2\r\n\t3\r\nB: x\r\n" + b"Subject: s\r\n" + b" y\r\n" * 1000
    headers = parse_headers(block)
    assert headers[:2] == [("A", "1 2 3"), ("B", "x")]
    assert headers[2] == ("Subject", "s" + " y" * 1000)
