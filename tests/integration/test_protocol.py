"""End to end: protocol rules, limits, TLS, XCLIENT and hostile input."""

from __future__ import annotations

import os
import socket
import subprocess
import urllib.request

from tests.conftest import routes_to
from tests.daemons import free_port, lf, wait_for
from tests.smtpclient import Client


def start(c: Client, rcpts: list[str] = ("b@example.com",)) -> None:
    c.ehlo()
    assert c.cmd("MAIL FROM:<a@example.org>").code == 250
    for r in rcpts:
        assert c.cmd(f"RCPT TO:<{r}>").code == 250


def test_too_many_recipients(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "message-rcpt-limit=2")
    with Client(proxy.port) as c:
        start(c, ["r1@example.com", "r2@example.com"])
        r = c.cmd("RCPT TO:<r3@example.com>")
        assert (r.code, r.status, r.id) == (452, "4.5.3", 910)
        assert r.text.startswith("4.5.3 too many recipients, max=2")
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: two\r\n\r\nx\r\n.\r\n")
        assert c.read().code == 250
    assert b"r3@" not in sink.messages()[0]


def test_mail_loop_is_refused_and_nothing_delivered(sink, make_proxy):
    proxy = make_proxy(routes_to(sink))
    hops = b"".join(b"Received: from hop%d.example by x; Mon, 1 Jan 2024 00:00:00 +0000\r\n" % i
                    for i in range(26))
    with Client(proxy.port) as c:
        start(c)
        assert c.cmd("DATA").code == 354
        c.send(hops + b"Subject: loop\r\n\r\nbody\r\n.\r\n")
        r = c.read()
        assert (r.code, r.status, r.id) == (554, "5.4.6", 911)
        assert r.text.startswith("5.4.6 mail loop detected, 26 Received headers")
        assert c.cmd("NOOP").code == 250
    with Client(proxy.port) as c:  # 25 hops still pass
        start(c)
        assert c.cmd("DATA").code == 354
        c.send(hops.split(b"\r\n", 1)[1] + b"Subject: ok\r\n\r\nbody\r\n.\r\n")
        assert c.read().code == 250
    assert len(sink.messages()) == 1 and b"Subject: ok" in sink.messages()[0]


def test_message_too_big(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "message-size-limit=1000")
    with Client(proxy.port) as c:
        ehlo = c.ehlo()
        assert "SIZE 1000" in ehlo.lines
        r = c.cmd("MAIL FROM:<a@example.org> SIZE=5000")
        assert (r.code, r.status, r.id) == (552, "5.3.4", 912)
        assert c.cmd("MAIL FROM:<a@example.org> SIZE=500").code == 250
        assert c.cmd("RCPT TO:<b@example.com>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 50 + b".\r\n")
        r = c.read()
        assert (r.code, r.status, r.id) == (552, "5.3.4", 912)
    sink.assert_nothing_from()


def test_long_lines_policy(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "rfc2821-line-length=1")
    with Client(proxy.port) as c:
        start(c)
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: long\r\n\r\n" + b"y" * 2000 + b"\r\n.\r\n")
        r = c.read()
        assert (r.code, r.status, r.id) == (554, "5.5.2", 321)
    sink.assert_nothing_from()


def test_smuggled_second_message_stays_inside_the_first(sink, make_proxy):
    """CVE-2023-51764 family: "\\n.\\n" must not end DATA, here or downstream."""
    proxy = make_proxy(routes_to(sink))
    smuggle = (b"Subject: outer\r\n\r\nhello\n.\nMAIL FROM:<ceo@example.com>\nRCPT TO:<b@example.com>\n"
               b"DATA\nSubject: smuggled\n\nhi\n.\r\nQUIT\r\n\r\n.\r\n")
    with Client(proxy.port) as c:
        start(c)
        assert c.cmd("DATA").code == 354
        c.send(smuggle)
        r = c.read()
        assert r.code == 250 and r.id == 554
        assert c.cmd("QUIT").code == 221
    [only] = sink.bodies()
    assert only.endswith(b"Subject: outer\n\nhello\n.\nMAIL FROM:<ceo@example.com>\nRCPT TO:<b@example.com>\n"
                         b"DATA\nSubject: smuggled\n\nhi\n.\nQUIT\n\n")
    assert len(sink.messages()) == 1


def test_strict_dot_refuses_bare_newlines(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "+rfc2821-strict-dot")
    with Client(proxy.port) as c:
        start(c)
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: bare\r\n\r\nline\nline\r\n.\r\n")
        r = c.read()
        assert (r.code, r.status, r.id) == (554, "5.6.0", 921)
    sink.assert_nothing_from()


def test_garbage_binary_and_huge_lines(sink, make_proxy):
    proxy = make_proxy(routes_to(sink))
    with Client(proxy.port) as c:
        r = c.cmd(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a TLS hello on the plain port
        assert (r.code, r.status, r.id) == (500, "5.5.2", 641)
    with Client(proxy.port) as c:
        # Four times the line limit, which the kernel takes at once: on loopback the
        # proxy reads it all before it answers and closes, so no reset takes the reply.
        c.send(b"X" * (4 * 4096))
        r = c.read()
        assert (r.code, r.status, r.id) == (501, "5.5.2", 906)
        assert c.closed()
    with Client(proxy.port) as c:
        # A megabyte: the proxy answers and closes while the client is still sending,
        # and the unread rest may reset the connection under the client's feet.
        try:
            c.send(b"X" * (1 << 20))
            r = c.read()
            assert (r.code, r.status, r.id) == (501, "5.5.2", 906)
        except ConnectionError:  # a broken pipe or a reset
            pass
        assert c.closed()
    with Client(proxy.port) as c:
        r = c.cmd("XYZZY")
        assert (r.code, r.status, r.id) == (500, "5.5.1", 248)
    with Client(proxy.port) as c:  # half-close: the session just ends
        c.sock.shutdown(socket.SHUT_WR)
        assert c.closed()
    assert "Traceback" not in proxy.log_text()


def test_drop_after_errors_and_drop_unknown(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "smtp-drop-after=2", "+smtp-drop-unknown")
    with Client(proxy.port) as c:
        r = c.cmd("FOO")
        assert r.id == 248 and c.closed()
    proxy2 = make_proxy(routes_to(sink), "smtp-drop-after=2")
    with Client(proxy2.port) as c:
        assert c.cmd("FOO").id == 248
        assert c.cmd("BAR").id == 248
        r = c.read()
        assert (r.code, r.status, r.id) == (421, "4.7.0", 922)
        assert c.closed()


def test_pipelining_violations(sink, make_proxy):
    proxy = make_proxy(routes_to(sink))
    with Client(proxy.port) as c:
        c.send(b"HELO client.example.org\r\nMAIL FROM:<a@example.org>\r\n")
        assert c.read().id == 256
        r = c.read()
        assert (r.code, r.status, r.id) == (550, "5.3.3", 643)  # after a plain HELO, as smtpf
        assert c.closed()
    with Client(proxy.port) as c:
        start(c)
        c.send(b"DATA\r\nSubject: early\r\n\r\nbody\r\n.\r\n")
        assert c.read().code == 354
        r = c.read()
        assert (r.code, r.status, r.id) == (550, "5.3.3", 643)
    sink.assert_nothing_from()


def test_greet_pause_catches_early_talkers(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "smtp-greet-pause=800")
    with Client(proxy.port, greet=False) as c:
        c.send(b"EHLO impatient.example\r\n")
        r = c.read()
        assert (r.code, r.status, r.id) == (550, "5.7.1", 420)
        assert "sent pre-greeting traffic" in r.text
        assert c.closed()
    # The reply counted and the decision logged are the #420 the client got, not the banner.
    sid = r.text.split()[-1]
    wait_for(lambda: f"session {sid}: NOQUEUE: drop: CONNECT from " in proxy.log_text(),
             timeout=10, what="the early talker's decision line")
    line = next(x for x in proxy.log_text().splitlines() if f"session {sid}: NOQUEUE: drop" in x)
    assert "#420;" in line and "check=early-talker" in line
    assert proxy.metric("barricade_replies_total", id="420") == 1
    with Client(proxy.port) as c:  # a patient client is served
        assert c.banner.code == 220


def test_esmtp_disabled(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "-smtp-enable-esmtp")
    with Client(proxy.port) as c:
        assert c.cmd("XCLIENT ADDR=192.0.2.50").code == 220  # become an outside client first
        r = c.cmd("EHLO client.example.org")
        assert (r.code, r.status, r.id) == (502, "5.5.1", 253)
        assert c.cmd("HELO client.example.org").code == 250


def test_schizophrenic_helo_and_sequence(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "smtp-drop-after=0")
    with Client(proxy.port) as c:
        r = c.cmd("MAIL FROM:<a@example.org>")
        assert (r.code, r.status, r.id) == (503, "5.5.1", 251)
        r = c.cmd("HELO")
        assert (r.code, r.status, r.id) == (501, "5.5.2", 249)
        assert c.cmd("EHLO one.example").code == 250
        r = c.cmd("EHLO two.example")
        assert (r.code, r.status, r.id) == (550, "5.7.1", 252)
        r = c.cmd("AUTH PLAIN AGFAYQ==")
        assert (r.code, r.status, r.id) == (502, "5.5.1", 250)
        r = c.cmd("VRFY postmaster")
        assert (r.code, r.status, r.id) == (252, "2.5.0", 915)
        r = c.cmd("HELP")
        assert (r.code, r.status, r.id) == (214, "2.0.0", 916)


def test_xclient_makes_the_session_an_outside_client(sink, make_proxy):
    proxy = make_proxy(routes_to(sink, relay=True) + "route:192.0.2.128 RELAY\n")
    with Client(proxy.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@example.org>").code == 250
        assert c.cmd("RCPT TO:<x@elsewhere.example>").code == 250  # localhost is RELAY here
        c.cmd("RSET")
        r = c.cmd("XCLIENT ADDR=192.0.2.1 NAME=mail.outside.example HELO=outside.example")
        assert (r.code, r.id) == (220, 633)  # a new greeting, as Postfix does
        ehlo = c.ehlo("proxy.example")
        assert not any(x.startswith("XCLIENT") for x in ehlo.lines)
        c.cmd("MAIL FROM:<a@outside.example>")
        r = c.cmd("RCPT TO:<x@elsewhere.example>")
        assert (r.code, r.id) == (550, 288)  # no longer a relay client
        assert c.cmd("RCPT TO:<b@example.com>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: via xclient\r\n\r\nx\r\n.\r\n")
        assert c.read().code == 250
        r = c.cmd("XCLIENT ADDR=192.0.2.2")
        assert (r.code, r.status, r.id) == (550, "5.7.0", 918)
    assert sink.bodies()[-1].startswith(
        b"Received: from outside.example (mail.outside.example [192.0.2.1])")
    with Client(proxy.port) as c:  # a RELAY identity through XCLIENT
        c.ehlo()
        assert c.cmd("XCLIENT ADDR=192.0.2.128").code == 220
        c.ehlo()
        c.cmd("MAIL FROM:<a@example.com>")
        assert c.cmd("RCPT TO:<x@elsewhere.example>").id == 297


def test_xclient_refused_when_disabled(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "-smtp-xclient-enable")
    with Client(proxy.port) as c:
        c.ehlo()
        assert c.cmd("XCLIENT ADDR=192.0.2.1").id == 918


def make_cert(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "2", "-subj", "/CN=barricade.test"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def test_starttls_with_swaks(sink, make_proxy, tmp_path):
    cert, key = make_cert(tmp_path)
    proxy = make_proxy(routes_to(sink), f"tls-server-cert={cert}", f"tls-server-key={key}")
    with Client(proxy.port) as c:
        assert "STARTTLS" in c.ehlo().lines
    run = subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(proxy.port), "--tls", "--from",
         "a@example.org", "--to", "b@example.com", "--helo", "client.example.org",
         "--header", "Subject: over tls", "--body", "secret"],
        capture_output=True, timeout=60, text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "220 2.0.0 ready to start TLS #913" in run.stdout
    assert "<~  250 2.0.0 message" in run.stdout  # the dot reply came over TLS
    body = sink.bodies()[0]
    assert b"with ESMTPS id" in body and b"Subject: over tls" in body


def test_reply_overrides_and_welcome_file(sink, make_proxy, tmp_path):
    overrides = tmp_path / "replies"
    overrides.write_text("# our wording\n288 <{rcpt}> is not a domain we accept mail for\n")
    welcome = tmp_path / "welcome"
    welcome.write_text("Example Corp mail gateway\nNo unsolicited mail.\n")
    proxy = make_proxy(routes_to(sink), f"reply-file={overrides}", f"smtp-welcome-file={welcome}")
    with Client(proxy.port) as c:
        assert c.banner.id == 632 and len(c.banner.lines) == 1  # localhost: smtpf's one-line banner
        r = c.cmd("XCLIENT ADDR=192.0.2.1")  # an outside client gets the welcome file
        assert r.lines[0].startswith("barricade.test ESMTP Example Corp mail gateway #633")
        assert r.lines[1] == "No unsolicited mail."
        c.ehlo()
        c.cmd("MAIL FROM:<a@example.org>")
        r = c.cmd("RCPT TO:<x@elsewhere.example>")
        assert (r.code, r.status, r.id) == (550, "5.7.1", 288)
        assert r.text.startswith("5.7.1 <x@elsewhere.example> is not a domain we accept mail for #288")


def test_metrics_endpoint(sink, make_proxy):
    port = free_port()
    proxy = make_proxy(routes_to(sink), f"metrics-interface=127.0.0.1:{port}")
    with Client(proxy.port) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<a@example.org>")
        c.cmd("RCPT TO:<x@elsewhere.example>")
        assert c.cmd("RCPT TO:<b@example.com>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: m\r\n\r\nx\r\n.\r\n")
        assert c.read().code == 250
        c.cmd("QUIT")
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'barricade_replies_total{code="550",event="rcpt",id="288",status="5.7.1"} 1.0' in text
    assert 'barricade_replies_total{code="250",event="dot",id="554",status="2.0.0"} 1.0' in text
    assert "barricade_sessions_total 2.0" in text  # the fixture's readiness probe and ours
    assert 'barricade_downstream_seconds_count{command="dot"} 1.0' in text
    assert 'barricade_messages_total{outcome="accept"} 1.0' in text
    assert "barricade_sessions_active 0.0" in text


def test_sighup_reloads_route_map(sink, make_proxy):
    proxy = make_proxy(routes_to(sink))

    def rcpt() -> int:
        with Client(proxy.port) as c:
            c.ehlo()
            c.cmd("MAIL FROM:<a@example.org>")
            return c.cmd("RCPT TO:<x@new.example>").id

    assert rcpt() == 288
    before = proxy.route_map.stat()
    proxy.route_map.write_text(routes_to(sink) + f"route:new.example FORWARD: 127.0.0.1:{sink.port}\n")
    os.utime(proxy.route_map, ns=(before.st_atime_ns, before.st_mtime_ns))  # only SIGHUP can see it
    os.kill(proxy.proc.pid, 1)
    # The reload runs in the daemon's loop, in the call that logs this line.
    wait_for(lambda: "SIGHUP, reloading maps" in proxy.log_text(), timeout=10, what="the SIGHUP reload")
    assert rcpt() == 297


def test_swaks_end_to_end(sink, make_proxy):
    proxy = make_proxy(routes_to(sink))
    run = subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(proxy.port), "--from", "a@example.org",
         "--to", "b@example.com", "--helo", "client.example.org", "--header", "Subject: swaks",
         "--body", "hello from swaks"], capture_output=True, timeout=60, text=True)
    assert run.returncode == 0, run.stdout
    assert "<-  250 2.0.0 message" in run.stdout and "accepted #554" in run.stdout
    assert lf(b"\r\n\r\nhello from swaks\r\n") in sink.bodies()[0]


def test_the_reply_that_ends_a_session_of_errors_is_counted(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "smtp-drop-after=2")
    with Client(proxy.port) as c:
        c.ehlo()
        assert c.cmd("FOO").id == 248
        c.send(b"BAR\r\n")
        assert [c.read().id, c.read().id] == [248, 922]
        assert c.closed()
    assert proxy.metric("barricade_replies_total", id="922", code="421") == 1
    assert proxy.metric("barricade_replies_total", id="248") == 2
