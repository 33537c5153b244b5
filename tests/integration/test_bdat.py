"""End to end: CHUNKING/BDAT (RFC 3030) from clients, relayed to smtp-sink as DATA."""

from __future__ import annotations

import smtplib

from tests.conftest import routes_to
from tests.daemons import lf
from tests.smtpclient import Client


def begin(c: Client) -> None:
    assert "CHUNKING" in c.ehlo().lines
    assert c.cmd("MAIL FROM:<a@example.org>").code == 250
    assert c.cmd("RCPT TO:<b@example.com>").code == 250


def bdat(c: Client, data: bytes, last: bool = False):
    c.send(b"BDAT %d%s\r\n" % (len(data), b" LAST" if last else b"") + data)
    return c.read()


def test_chunks_are_one_message_relayed_as_dot_stuffed_data(sink, make_proxy):
    proxy = make_proxy(routes_to(sink))
    body = b"Subject: chunked\r\n\r\n.leading dot\r\n..two\r\n.\r\nend\r\n"
    with Client(proxy.port) as c:
        begin(c)
        r = bdat(c, body[:10])
        assert (r.code, r.status, r.id) == (250, "2.0.0", 962)
        assert r.text.startswith("2.0.0 10 octets received #962")
        assert bdat(c, body[10:30]).id == 962
        r = bdat(c, body[30:], last=True)
        assert (r.code, r.id) == (250, 554)
        assert c.cmd("QUIT").code == 221
    [only] = sink.bodies()
    assert only.endswith(lf(body))  # the lone "." line and the leading dots arrive as sent
    # the 354 that begins a BDAT transaction inside the proxy never reaches the client
    assert proxy.metric("barricade_replies_total", id="900") is None
    assert proxy.metric("barricade_replies_total", id="962") == 2


def test_smuggling_through_bdat_stays_one_message(sink, make_proxy):
    proxy = make_proxy(routes_to(sink))
    smuggle = (b"Subject: outer\r\n\r\nhello\n.\nMAIL FROM:<ceo@example.com>\nRCPT TO:<b@example.com>\n"
               b"DATA\nSubject: smuggled\n\nhi\n.\r\nQUIT\r\n")
    with Client(proxy.port) as c:
        begin(c)
        assert bdat(c, smuggle, last=True).id == 554
        assert c.cmd("QUIT").code == 221
    assert len(sink.messages()) == 1
    [only] = sink.bodies()
    assert only.endswith(b"hello\n.\nMAIL FROM:<ceo@example.com>\nRCPT TO:<b@example.com>\n"
                         b"DATA\nSubject: smuggled\n\nhi\n.\nQUIT\n")


def test_pipelined_bdat_and_bdat_0_last(sink, make_proxy):
    proxy = make_proxy(routes_to(sink))
    with Client(proxy.port) as c:
        begin(c)
        head = b"Subject: p\r\n\r\n"
        c.send(b"BDAT %d\r\n" % len(head) + head + b"BDAT 3\r\nx\r\nBDAT 0 LAST\r\nNOOP\r\n")
        assert [c.read().id for _ in range(4)] == [962, 962, 554, 547]
    assert sink.bodies()[0].endswith(b"Subject: p\n\nx\n")


def test_sequence_errors_read_the_chunk_first(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "smtp-drop-after=0")
    with Client(proxy.port) as c:
        c.ehlo()
        r = bdat(c, b"QUIT\r\n")  # without MAIL: the chunk is data, never a command
        assert (r.code, r.status, r.id) == (503, "5.5.1", 251)
        assert c.cmd("MAIL FROM:<a@example.org>").code == 250
        r = bdat(c, b"xyz", last=True)
        assert (r.code, r.status, r.id) == (554, "5.5.1", 923)
        assert c.cmd("RCPT TO:<b@example.com>").code == 250
        assert bdat(c, b"Subject: mixed\r\n\r\n").id == 962
        r = c.cmd("DATA")
        assert (r.code, r.id) == (503, 251)
        assert c.cmd("RSET").code == 250  # the half-sent message is dropped downstream
        assert c.message("a@example.org", ["b@example.com"], b"Subject: after\r\n\r\nx\r\n").code == 250
    [only] = sink.bodies()
    assert b"Subject: after" in only and b"mixed" not in only


def test_oversize_chunk_and_lying_arguments(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "message-size-limit=1000", "smtp-command-timeout=2")
    with Client(proxy.port) as c:
        begin(c)
        c.send(b"BDAT 100000000000 LAST\r\n")
        r = c.read()
        assert (r.code, r.status, r.id) == (552, "5.3.4", 912)
        assert c.closed()
    with Client(proxy.port) as c:
        begin(c)
        c.send(b"BDAT ten\r\n")
        assert c.read().id == 920 and c.closed()
    with Client(proxy.port) as c:  # a size that lies: we wait for the octets, then time out
        begin(c)
        c.send(b"BDAT 500 LAST\r\nSubject: short\r\n\r\nx\r\n")
        r = c.read()
        assert (r.code, r.id) == (421, 905) and c.closed()
    sink.assert_nothing_from()
    assert "Traceback" not in proxy.log_text()


def test_checks_see_bdat_messages(sink, make_proxy):
    proxy = make_proxy(routes_to(sink))
    hops = b"".join(b"Received: from hop%d.example by x; Mon, 1 Jan 2024 00:00:00 +0000\r\n" % i
                    for i in range(26))
    with Client(proxy.port) as c:
        begin(c)
        assert bdat(c, hops).id == 962
        r = bdat(c, b"Subject: loop\r\n\r\nbody\r\n", last=True)
        assert (r.code, r.status, r.id) == (554, "5.4.6", 911)
    sink.assert_nothing_from()


def test_smtplib_speaks_bdat(sink, make_proxy):
    """smtplib has no BDAT method; its low-level calls send one as any client would."""
    proxy = make_proxy(routes_to(sink))
    with smtplib.SMTP("127.0.0.1", proxy.port, local_hostname="client.example.org", timeout=10) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("chunking")
        assert smtp.mail("a@example.org")[0] == 250 and smtp.rcpt("b@example.com")[0] == 250
        body = b"Subject: smtplib\r\n\r\nchunked\r\n"
        smtp.send(b"BDAT %d LAST\r\n" % len(body) + body)
        code, text = smtp.getreply()
        assert code == 250 and b"#554" in text
    assert sink.bodies()[0].endswith(b"Subject: smtplib\n\nchunked\n")


def test_relayed_as_bdat_where_the_downstream_offers_chunking(make_proxy):
    from tests.recorder import Recorder

    down = Recorder(chunking=True)
    try:
        proxy = make_proxy(f"route:local FORWARD: 127.0.0.1:{down.port}\n"
                           f"route:example.com FORWARD: 127.0.0.1:{down.port}\n")
        body = b"Subject: chunked\r\n\r\n.leading dot\r\n.\r\nend\r\n"
        with Client(proxy.port) as c:
            begin(c)
            assert bdat(c, body[:25]).id == 962
            assert bdat(c, body[25:], last=True).id == 554
            # a DATA message to the same downstream stays DATA
            assert c.message("a@example.org", ["b@example.com"], b"Subject: plain\r\n\r\n..x\r\n").id == 554
        chunked, plain = down.messages
        assert chunked[3].endswith(body)  # sent as octets: no dot-stuffing to undo
        assert plain[3].endswith(b"Subject: plain\r\n\r\n.x\r\n")
        assert down.bdats[-1] == "0 LAST" and len(down.bdats) >= 3
        assert all(not arg.endswith("LAST") for arg in down.bdats[:-1])
    finally:
        down.stop()


def test_spooled_bdat_message_for_a_content_scanner(sink, make_proxy, tmp_path):
    """A scanner that needs the whole message: the chunks are spooled, relayed at LAST."""
    from tests.integration.test_plugin_cli import PLUGIN, script

    seen = tmp_path / "scanned"
    prog = script(tmp_path, "scan.sh", f'cat > "{seen}"\nexit 0')
    proxy = make_proxy(routes_to(sink), *PLUGIN, f"cli-content={prog}")
    body = b"Subject: spooled\r\n\r\n.one\r\ntwo\r\n"
    with Client(proxy.port) as c:
        begin(c)
        assert bdat(c, body[:12]).id == 962
        assert bdat(c, body[12:], last=True).id == 554
    assert sink.bodies()[0].endswith(lf(body))
    assert seen.read_bytes().endswith(body)
