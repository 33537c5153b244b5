"""End to end: client → twistd barricade → Postfix smtp-sink, all on loopback."""

from __future__ import annotations

import smtplib
import subprocess
import time

from tests.conftest import routes_to
from tests.daemons import free_port, lf
from tests.smtpclient import Client

MESSAGE = (
    b"From: a@example.org\r\nTo: b@example.com\r\nSubject: relay test\r\n"
    b"Message-ID: <1@example.org>\r\n\r\n"
    b"first line\r\n..a line that starts with a dot\r\n.\r\n"  # not the end: wire form below
)


def wire(body: bytes) -> bytes:
    """Dot-stuff as a client must, and add CRLF.CRLF."""
    lines = body.split(b"\r\n")
    if lines and lines[-1] == b"":
        lines = lines[:-1]
    return b"".join((b"." + x if x.startswith(b".") else x) + b"\r\n" for x in lines)


def test_message_arrives_byte_exact_with_our_received_header(sink, make_proxy):
    proxy = make_proxy(routes_to(sink))
    body = b"Subject: exact\r\n\r\n.leading dot\r\n\ttab line \r\n\r\nlast\r\n"
    with Client(proxy.port) as c:
        assert c.banner.code == 220 and c.banner.id == 632  # localhost: the one-line banner
        assert c.banner.text.startswith("barricade.test ESMTP")
        ehlo = c.ehlo()
        assert ehlo.code == 250 and ehlo.id == 254
        assert "ENHANCEDSTATUSCODES" in ehlo.lines and "PIPELINING" in ehlo.lines
        mail = c.cmd("MAIL FROM:<a@example.org>")
        assert (mail.code, mail.status, mail.id) == (250, "2.1.0", 283)
        rcpt = c.cmd("RCPT TO:<b@example.com>")
        assert (rcpt.code, rcpt.status, rcpt.id) == (250, "2.1.5", 297)
        data = c.cmd("DATA")
        assert (data.code, data.id) == (354, 900)
        c.send(wire(body) + b".\r\n")
        dot = c.read()
        assert (dot.code, dot.status, dot.id) == (250, "2.0.0", 554)
        qid = dot.text.split()[2]
        quit_ = c.cmd("QUIT")
        assert (quit_.code, quit_.status, quit_.id) == (221, "2.0.0", 247)
    [delivered] = sink.bodies()
    received, rest = delivered.split(b"\n", 3)[:3], delivered.split(b"\n", 3)[3]
    assert received[0] == b"Received: from client.example.org (localhost [127.0.0.1])"
    assert received[1] == b"\tby barricade.test (Barricade) with ESMTP id " + qid.encode()
    assert received[2].startswith(b"\tfor <b@example.com>; ")
    assert rest == lf(body)
    envelope = sink.messages()[0]
    assert b"X-Mail-Args: <a@example.org>" in envelope and b"X-Rcpt-Args: <b@example.com>" in envelope
    assert b"X-Helo-Args: barricade.test" in envelope


def test_relaying_denied_without_route(sink, make_proxy):
    proxy = make_proxy(routes_to(sink))
    with Client(proxy.port) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<a@example.org>")
        r = c.cmd("RCPT TO:<someone@elsewhere.example>")
        assert (r.code, r.status, r.id) == (550, "5.7.1", 288)
        assert r.text.startswith("5.7.1 recipient <someone@elsewhere.example> relaying denied")
        assert c.cmd("RCPT TO:<b@example.com>").code == 250
    sink.assert_nothing_from()  # nothing was delivered: no DATA


def test_relay_client_goes_to_local_route(sink, make_proxy):
    proxy = make_proxy(routes_to(sink, relay=True))
    with Client(proxy.port) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<a@example.com>")
        r = c.cmd("RCPT TO:<someone@elsewhere.example>")
        assert (r.code, r.status, r.id) == (250, "2.1.5", 297)
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: out\r\n\r\nbye\r\n.\r\n")
        assert c.read().id == 554
    assert b"X-Rcpt-Args: <someone@elsewhere.example>" in sink.messages()[0]


def test_unqualified_recipient_goes_to_local_route(sink, make_proxy):
    proxy = make_proxy(routes_to(sink))
    with Client(proxy.port) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<>")
        assert c.cmd("RCPT TO:<postmaster>").code == 250


def test_two_routes_two_downstream_connections(make_sink, make_proxy):
    s0, s1 = make_sink(), make_sink()
    proxy = make_proxy(routes_to(s0, s1))
    with smtplib.SMTP("127.0.0.1", proxy.port, timeout=10) as c:
        c.ehlo("client.example.org")
        refused = c.sendmail("a@example.org", ["x@example0.net", "y@example1.net", "z@example0.net"],
                             b"Subject: two routes\r\n\r\nhello\r\n")
        assert refused == {}
    m0, m1 = s0.messages(), s1.messages()
    assert len(m0) == 1 and len(m1) == 1
    assert b"X-Rcpt-Args: <x@example0.net>" in m0[0] and b"X-Rcpt-Args: <z@example0.net>" in m0[0]
    assert b"X-Rcpt-Args: <y@example1.net>" in m1[0]
    assert s0.bodies()[0].endswith(b"\nSubject: two routes\n\nhello\n")


def test_several_messages_in_one_session_reuse_the_connection(sink, make_proxy):
    proxy = make_proxy(routes_to(sink))
    with Client(proxy.port) as c:
        c.ehlo()
        for i in range(3):
            assert c.message("a@example.org", ["b@example.com"], b"Subject: %d\r\n\r\nx\r\n" % i).id == 554
        assert c.cmd("RSET").id == 547
        assert c.cmd("NOOP").id == 547
    assert sorted(m.split(b"Subject: ")[1][:1] for m in sink.bodies()) == [b"0", b"1", b"2"]
    assert proxy.metric('barricade_downstream_seconds_count{command="connect"}') == 1


def test_pipelined_commands_answered_in_order(sink, make_proxy):
    proxy = make_proxy(routes_to(sink))
    with Client(proxy.port) as c:
        c.ehlo()
        c.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\n"
               b"RCPT TO:<nobody@nowhere.example>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n")
        replies = [c.read() for _ in range(5)]
        assert [r.id for r in replies] == [283, 297, 288, 297, 900]
        c.send(b"Subject: p\r\n\r\nbody\r\n.\r\nQUIT\r\n")
        assert [c.read().id, c.read().id] == [554, 247]
    assert b"X-Rcpt-Args: <b@example.com>\nX-Rcpt-Args: <c@example.com>\n" in sink.messages()[0]


def test_downstream_rcpt_refusals(make_sink, make_proxy):
    soft, hard = make_sink("-r", "RCPT"), make_sink("-f", "RCPT")
    proxy = make_proxy(routes_to(soft, hard))
    with Client(proxy.port) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<a@example.org>")
        r = c.cmd("RCPT TO:<x@example0.net>")
        assert (r.code, r.status, r.id) == (450, "4.3.0", 300)
        assert r.text.startswith("4.3.0 recipient <x@example0.net> denied")
        r = c.cmd("RCPT TO:<x@example1.net>")
        assert (r.code, r.status, r.id) == (500, "5.3.0", 300)
        r = c.cmd("DATA")
        assert (r.code, r.id) == (554, 923)  # no valid recipients, nothing sent anywhere


def test_relay_reply_passes_downstream_text(make_sink, make_proxy):
    hard = make_sink("-f", "RCPT")
    proxy = make_proxy(routes_to(hard), "+relay-reply")
    with Client(proxy.port) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<a@example.org>")
        r = c.cmd("RCPT TO:<x@example.com>")
        assert (r.code, r.status, r.id) == (500, "5.3.0", 299)
        assert r.text.startswith("5.3.0 Error: command failed")


def test_downstream_refuses_sender(make_sink, make_proxy):
    sink = make_sink("-f", "MAIL")
    proxy = make_proxy(routes_to(sink))
    with Client(proxy.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@example.org>").id == 283  # routed at the first RCPT
        r = c.cmd("RCPT TO:<b@example.com>")
        assert (r.code, r.status, r.id) == (500, "5.3.0", 282)
        assert r.text.startswith("5.3.0 sender <a@example.org> denied")


def test_downstream_refuses_data_and_dot(make_sink, make_proxy):
    for args, code, status, rid in [
        (("-f", "DATA"), 554, "5.7.0", 306),
        (("-r", "DATA"), 451, "4.4.0", 307),
        (("-f", "."), 554, "5.7.0", 306),
        (("-r", "."), 451, "4.4.0", 307),
    ]:
        sink = make_sink(*args)
        proxy = make_proxy(routes_to(sink))
        with Client(proxy.port) as c:
            c.ehlo()
            c.cmd("MAIL FROM:<a@example.org>")
            assert c.cmd("RCPT TO:<b@example.com>").code == 250
            r = c.cmd("DATA")
            if args[1] == ".":
                assert r.code == 354
                c.send(b"Subject: x\r\n\r\ny\r\n.\r\n")
                r = c.read()
            assert (r.code, r.status, r.id) == (code, status, rid), (args, r)
            assert c.cmd("NOOP").code == 250  # the session goes on
        assert sink.messages() == [] or args[1] == "."


def test_downstream_unavailable(make_proxy, tmp_path):
    dead = free_port()
    proxy = make_proxy(f"route:local FORWARD: 127.0.0.1:{dead}\nroute:example.com FORWARD: 127.0.0.1:{dead}\n",
                       "smtp-connect-timeout=5")
    with Client(proxy.port) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<a@example.org>")
        r = c.cmd("RCPT TO:<b@example.com>")
        assert (r.code, r.status, r.id) == (421, "4.4.1", 901)
        assert c.closed()


def test_downstream_lost_before_data(make_sink, make_proxy):
    sink = make_sink("-q", "DATA")
    proxy = make_proxy(routes_to(sink))
    with Client(proxy.port) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<a@example.org>")
        assert c.cmd("RCPT TO:<b@example.com>").code == 250
        r = c.cmd("DATA")
        assert (r.code, r.status, r.id) == (451, "4.4.2", 903)
        assert c.cmd("NOOP").code == 250  # recoverable: the client may retry


def test_downstream_lost_at_the_dot(make_sink, make_proxy):
    sink = make_sink("-q", ".")
    proxy = make_proxy(routes_to(sink))
    with Client(proxy.port) as c:
        c.ehlo()
        r = c.message("a@example.org", ["b@example.com"], b"Subject: x\r\n\r\ny\r\n")
        assert (r.code, r.status, r.id) == (421, "4.4.2", 902)
        assert c.closed()


def test_downstream_dies_during_data(make_sink, make_proxy):
    sink = make_sink()
    proxy = make_proxy(routes_to(sink))
    with Client(proxy.port) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<a@example.org>")
        assert c.cmd("RCPT TO:<b@example.com>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: interrupted\r\n\r\nfirst part\r\n")
        time.sleep(0.3)
        sink.proc.kill()
        sink.proc.wait()
        deadline = time.monotonic() + 10
        reply = None
        while reply is None and time.monotonic() < deadline:
            try:
                c.send(b"more body " * 100 + b"\r\n")
            except OSError:
                break
            c.sock.settimeout(0.2)
            try:
                reply = c.read()
            except (TimeoutError, ConnectionError):
                pass
        assert reply is not None and (reply.code, reply.status, reply.id) == (421, "4.4.2", 902)
    sink.assert_nothing_from()


def test_downstream_reply_timeout(make_sink, make_proxy):
    sink = make_sink("-W", "RCPT:5")
    proxy = make_proxy(routes_to(sink), "smtp-command-timeout=1")
    with Client(proxy.port) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<a@example.org>")
        r = c.cmd("RCPT TO:<b@example.com>")
        assert (r.code, r.status, r.id) == (421, "4.4.7", 904)
        assert c.closed()


def test_dot_timeout(make_sink, make_proxy):
    sink = make_sink("-W", ".:5")
    proxy = make_proxy(routes_to(sink), "smtp-dot-timeout=1")
    with Client(proxy.port) as c:
        c.ehlo()
        r = c.message("a@example.org", ["b@example.com"], b"Subject: x\r\n\r\ny\r\n")
        assert (r.code, r.status, r.id) == (421, "4.4.7", 904)


def test_client_idle_timeout(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "smtp-command-timeout=1")
    with Client(proxy.port) as c:
        c.ehlo()
        r = c.read()
        assert (r.code, r.status, r.id) == (421, "4.4.7", 905)
        assert c.closed()


def test_data_line_timeout(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "smtp-data-line-timeout=1")
    with Client(proxy.port) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<a@example.org>")
        c.cmd("RCPT TO:<b@example.com>")
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: slow\r\n")
        r = c.read()
        assert (r.code, r.id) == (421, 905)
    sink.assert_nothing_from()  # the partial message was never ended downstream


def test_smtp_source_through_proxy(sink, make_proxy):
    proxy = make_proxy(routes_to(sink))
    run = subprocess.run(
        ["smtp-source", "-s", "4", "-m", "40", "-l", "2048", "-f", "a@example.org",
         "-t", "b@example.com", f"127.0.0.1:{proxy.port}"],
        capture_output=True, timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert len(sink.messages()) == 40


def test_rset_is_relayed_and_a_refused_rset_drops_the_connection(make_sink, make_proxy):
    sink = make_sink("-f", "RSET")
    proxy = make_proxy(routes_to(sink))
    with Client(proxy.port) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<a@example.org>")
        assert c.cmd("RCPT TO:<b@example.com>").code == 250
        assert c.cmd("RSET").id == 547
        # The downstream refused our RSET, so that connection was closed: the next
        # transaction must use a fresh one and still be delivered.
        assert c.message("a@example.org", ["b@example.com"], b"Subject: after rset\r\n\r\nx\r\n").id == 554
    assert len(sink.messages()) == 1
    assert proxy.metric('barricade_downstream_seconds_count{command="connect"}') == 2


def test_8bitmime_is_passed_downstream_when_enabled(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "+rfc1652-8bitmime")
    with Client(proxy.port) as c:
        assert "8BITMIME" in c.ehlo().lines
        assert c.cmd("MAIL FROM:<a@example.org> BODY=8BITMIME").code == 250
        assert c.cmd("RCPT TO:<b@example.com>").code == 250
        assert c.cmd("DATA").code == 354
        c.send("Subject: caf\u00e9\r\n\r\nna\u00efve\r\n.\r\n".encode())
        assert c.read().code == 250
    assert b"X-Mail-Args: <a@example.org> BODY=8BITMIME" in sink.messages()[0]
    assert "na\u00efve".encode() in sink.messages()[0]


def test_one_route_down_while_another_carries_the_transaction(sink, make_proxy):
    dead = free_port()
    proxy = make_proxy(routes_to(sink) + f"route:down.example FORWARD: 127.0.0.1:{dead}\n")
    with Client(proxy.port) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<a@example.org>")
        assert c.cmd("RCPT TO:<b@example.com>").code == 250
        r = c.cmd("RCPT TO:<x@down.example>")
        assert (r.code, r.status, r.id) == (451, "4.0.0", 295)
        assert r.text.startswith("4.0.0 cannot forward mail for <x@down.example> at this time")
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: partial\r\n\r\nx\r\n.\r\n")
        assert c.read().code == 250
    assert b"x@down.example" not in sink.messages()[0]


def test_shutdown_tells_connected_clients(sink, make_proxy):
    proxy = make_proxy(routes_to(sink))
    with Client(proxy.port) as c:
        c.ehlo()
        proxy.proc.terminate()
        r = c.read()
        assert (r.code, r.status, r.id) == (421, "4.3.2", 909)
        assert c.closed()
    assert proxy.proc.wait(10) in (0, -15)  # twistd re-raises SIGTERM to exit with it


def test_stopping_lets_a_transaction_in_progress_finish(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "shutdown-timeout=10")
    with Client(proxy.port) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<a@example.org>")
        assert c.cmd("RCPT TO:<b@example.com>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: in flight\r\n\r\nfirst half\r\n")
        proxy.proc.terminate()
        time.sleep(0.5)
        c.send(b"second half\r\n.\r\n")
        assert c.read().id == 554  # the message is delivered, not cut off
        r = c.read()
        assert (r.code, r.status, r.id) == (421, "4.3.2", 909)
        assert c.closed()
    assert sink.bodies()[0].endswith(b"first half\nsecond half\n")
    assert proxy.proc.wait(10) in (0, -15)


def _deliver(port: int, subject: str) -> None:
    with Client(port) as c:
        assert c.ehlo().code == 250
        assert c.cmd("MAIL FROM:<a@example.org>").code == 250
        assert c.cmd("RCPT TO:<b@example.com>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(wire(f"Subject: {subject}\r\n\r\nbody\r\n".encode()) + b".\r\n")
        assert c.read().code == 250
        assert c.cmd("QUIT").code == 221


def test_sessions_share_kept_downstream_connections_and_expired_ones_are_replaced(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "downstream-pool-idle=1")
    _deliver(proxy.port, "first")
    _deliver(proxy.port, "second")  # over the connection the first session left
    time.sleep(1.5)  # past downstream-pool-idle: that connection got QUIT
    _deliver(proxy.port, "third")
    subjects = sorted(m.split(b"Subject: ")[1].split(b"\n")[0] for m in sink.bodies())
    assert subjects == [b"first", b"second", b"third"]
