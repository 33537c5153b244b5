"""End to end in front of a real Postfix: the EHLO it gets, DSN, 8BITMIME, SIZE,
XFORWARD/XCLIENT as Postfix logs them, BDAT relayed as BDAT, ETRN."""

from __future__ import annotations

import re

import pytest

from tests.daemons import wait_for
from tests.postfix import Postfix, available
from tests.smtpclient import Client

pytestmark = pytest.mark.skipif(not available(), reason="needs root and Postfix")


@pytest.fixture
def postfix():
    p = Postfix()
    yield p
    p.stop()


def routes(p: Postfix) -> str:
    return f"route:local FORWARD: 127.0.0.1:{p.port}\nroute:example.com FORWARD: 127.0.0.1:{p.port}\n"


def outside(c: Client) -> None:
    assert c.cmd("XCLIENT ADDR=192.0.2.7 NAME=mail.example.org").code == 220
    c.ehlo("helo.example.org")


def test_the_ehlo_follows_postfix(postfix, make_proxy):
    proxy = make_proxy(routes(postfix))
    with Client(proxy.port) as c:
        lines = c.ehlo().lines
        for word in ("SIZE 10240000", "8BITMIME", "DSN", "SMTPUTF8", "ETRN", "CHUNKING"):
            assert word in lines, word
        r = c.cmd("MAIL FROM:<a@example.org> SIZE=20000000")
        assert (r.code, r.id) == (552, 912)
        assert c.cmd("MAIL FROM:<a@example.org> BODY=8BITMIME RET=HDRS ENVID=E1").code == 250
        assert c.cmd("RCPT TO:<b@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@example.com").code == 250
        assert c.cmd("DATA").code == 354
        c.send("Subject: caf\u00e9\r\n\r\nna\u00efve\r\n.\r\n".encode())
        assert c.read().code == 250
    [msg] = postfix.delivered()
    assert "na\u00efve".encode() in msg  # 8-bit, not re-encoded
    # NOTIFY=SUCCESS reached Postfix: it sends the sender a success notification
    wait_for(lambda: "sender delivery status notification" in postfix.log_text(), timeout=20,
             what="Postfix's success DSN")


def test_xforward_names_the_client_and_our_queue_id(postfix, make_proxy):
    proxy = make_proxy(routes(postfix), "+forward-xforward")
    with Client(proxy.port) as c:
        outside(c)
        r = c.message("a@example.org", ["b@example.com"], b"Subject: xf\r\n\r\nx\r\n")
        assert r.code == 250
    qid = re.search(r"message (\S+) accepted", r.text).group(1)
    [msg] = postfix.delivered()
    assert b"from helo.example.org (mail.example.org [192.0.2.7])" in msg
    # Postfix applies its checks to us, logs the real client and our queue id
    assert f"client=unknown[127.0.0.1], orig_queue_id={qid}, orig_client=mail.example.org[192.0.2.7]" \
        in postfix.log_text()


def test_xclient_makes_postfix_see_the_client(postfix, make_proxy):
    proxy = make_proxy(routes(postfix), "+forward-xclient")
    with Client(proxy.port) as c:
        outside(c)
        assert c.message("a@example.org", ["b@example.com"], b"Subject: xc\r\n\r\nx\r\n").code == 250
    [msg] = postfix.delivered()
    assert b"(mail.example.org [192.0.2.7])" in msg
    assert re.search(r": client=mail\.example\.org\[192\.0\.2\.7\]", postfix.log_text())  # as if direct


def test_xclient_subjects_the_client_to_postfix_restrictions(make_proxy):
    postfix = Postfix("smtpd_client_restrictions=check_client_access inline:{192.0.2.7=REJECT}")
    try:
        proxy = make_proxy(routes(postfix), "+forward-xclient")
        with Client(proxy.port) as c:
            outside(c)
            assert c.cmd("MAIL FROM:<a@example.org>").code == 250
            r = c.cmd("RCPT TO:<b@example.com>")
            assert (r.code, r.status, r.id) == (554, "5.7.1", 300)  # Postfix refused the client
    finally:
        postfix.stop()


def test_bdat_goes_on_as_bdat(postfix, make_proxy):
    proxy = make_proxy(routes(postfix))
    body = b"Subject: chunks\r\n\r\n.dot\r\n.\r\nend\r\n"
    with Client(proxy.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@example.org>").code == 250
        assert c.cmd("RCPT TO:<b@example.com>").code == 250
        c.send(b"BDAT 20\r\n" + body[:20])
        assert c.read().id == 962
        c.send(b"BDAT %d LAST\r\n" % len(body[20:]) + body[20:])
        assert c.read().code == 250
    [msg] = postfix.delivered()
    msg = msg.replace(b"\r\n", b"\n")
    assert b"\nSubject: chunks\n" in msg and msg.endswith(b"\n\n.dot\n.\nend\n")
    wait_for(lambda: re.search(r"smtpd\[\d+\]: disconnect from .* bdat=\d+", postfix.log_text()),
             timeout=20, what="Postfix counting BDAT commands (not DATA)")


def test_etrn_reaches_postfix(postfix, make_proxy):
    proxy = make_proxy(routes(postfix))
    with Client(proxy.port) as c:
        c.ehlo()
        r = c.cmd("ETRN example.com")
        assert r.id == 277 and r.code == 250, r  # Postfix: "250 Queuing started"
        assert "Queuing started" in r.text
