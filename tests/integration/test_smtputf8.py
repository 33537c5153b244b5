"""End to end: SMTPUTF8 (RFC 6531) with smtplib, an aiosmtpd downstream that offers it, and smtp-sink that does not."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage

import pytest

from tests.conftest import routes_to
from tests.recorder import Recorder
from tests.smtpclient import Client

JOSE = "jos\u00e9@b\u00fccher.example"


@pytest.fixture
def recorder():
    r = Recorder()
    yield r
    r.stop()


def message(sender: str, rcpt: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, rcpt, "gr\u00fc\u00dfe"
    msg.set_content("Gr\u00fc\u00dfe aus K\u00f6ln\n")
    return msg


def test_smtplib_sends_utf8_addresses_through(recorder, make_proxy):
    # the recipient's domain is keyed by its A-labels in the route map
    proxy = make_proxy(f"route:local FORWARD: 127.0.0.1:{recorder.port}\n"
                       f"route:xn--bcher-kva.example FORWARD: 127.0.0.1:{recorder.port}\n"
                       f"route:\u4f8b\u5b50.\u5e7f\u544a FORWARD: 127.0.0.1:{recorder.port}\n")
    with smtplib.SMTP("127.0.0.1", proxy.port, local_hostname="client.example.org", timeout=10) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("smtputf8")
        smtp.send_message(message("\u00f8le@example.org", JOSE))  # smtplib adds SMTPUTF8 itself
        refused = smtp.sendmail("a@example.org", ["\u7528\u6237@\u4f8b\u5b50.\u5e7f\u544a"],
                                b"Subject: x\r\n\r\ny\r\n", mail_options=["SMTPUTF8"])
        assert refused == {}
    first, second = recorder.messages
    assert first[:3] == ("\u00f8le@example.org", ["BODY=8BITMIME", "SMTPUTF8"], [JOSE])
    assert second[2] == ["\u7528\u6237@\u4f8b\u5b50.\u5e7f\u544a"]
    assert f"for <{JOSE}>".encode() in first[3]  # our Received: header, in UTF-8
    assert f"from=<\u00f8le@example.org> to=<{JOSE}>" in proxy.log_text()  # logs in UTF-8


def test_not_offered_when_a_downstream_lacks_it(sink, make_proxy):
    proxy = make_proxy(routes_to(sink))
    with Client(proxy.port) as c:
        assert "SMTPUTF8" not in c.ehlo().lines
        r = c.cmd(f"MAIL FROM:<{JOSE}>".encode())
        assert (r.code, r.status, r.id) == (553, "5.6.7", 961)
        assert r.text.startswith(f"5.6.7 non-ASCII address <{JOSE}> not permitted without SMTPUTF8")
        r = c.cmd("MAIL FROM:<a@example.org> SMTPUTF8")
        assert (r.code, r.id) == (555, 919)
        assert c.cmd("MAIL FROM:<a@example.org>").code == 250
        r = c.cmd(f"RCPT TO:<{JOSE}>".encode())
        assert (r.code, r.id) == (553, 961)
    with smtplib.SMTP("127.0.0.1", proxy.port, local_hostname="client.example.org", timeout=10) as smtp:
        with pytest.raises(smtplib.SMTPNotSupportedError):
            smtp.send_message(message("a@example.org", JOSE))
    assert sink.messages() == []


def test_mixed_routes_do_not_offer_it(sink, recorder, make_proxy):
    proxy = make_proxy(routes_to(sink) + f"route:b\u00fccher.example FORWARD: 127.0.0.1:{recorder.port}\n")
    with Client(proxy.port) as c:
        assert "SMTPUTF8" not in c.ehlo().lines


def test_hostile_utf8_lines(recorder, make_proxy):
    proxy = make_proxy(f"route:local FORWARD: 127.0.0.1:{recorder.port}\n", "smtp-drop-after=0")
    with Client(proxy.port) as c:
        c.ehlo()
        r = c.cmd(b"MAIL FROM:<jos\xe9@example.org> SMTPUTF8")  # Latin-1, not UTF-8
        assert (r.code, r.id) == (500, 641)
        r = c.cmd(b"MAIL FROM:<\xf0\x9f\x92\xa9@" + "\u00e9".encode() * 3000 + b".example> SMTPUTF8")
        assert r.code == 501 and r.id == 906 and c.closed()  # 6 KB: over the line limit
    with Client(proxy.port) as c:
        c.ehlo()
        r = c.cmd("MAIL FROM:<\u00e9\u00e9@-x.example> SMTPUTF8".encode())
        assert (r.code, r.id) == (553, 279)
        r = c.cmd("MAIL FROM:<\u00e9@example.org> SMTPUTF8".encode())
        assert r.code == 250
        r = c.cmd("RCPT TO:<\u202e@example.org>".encode())  # no route for it here: refused, not crashed
        assert r.code in (250, 550)
    assert "Traceback" not in proxy.log_text()


def test_access_map_keys_in_utf8(recorder, make_proxy, tmp_path):
    access = tmp_path / "access-utf8"
    access.write_text(f"from:{JOSE} REJECT\nto:b\u00fccher.example TEMPFAIL\n", encoding="utf-8")
    proxy = make_proxy(f"route:local FORWARD: 127.0.0.1:{recorder.port}\n"
                       f"route:b\u00fccher.example FORWARD: 127.0.0.1:{recorder.port}\n", f"access-map={access}")
    with Client(proxy.port) as c:
        assert "SMTPUTF8" in c.ehlo().lines
        r = c.cmd(f"MAIL FROM:<{JOSE}> SMTPUTF8".encode())
        assert (r.code, r.id) == (550, 127)
        assert r.text.startswith(f"5.7.1 sender <{JOSE}> black listed #127")
        assert c.cmd("MAIL FROM:<a@example.org> SMTPUTF8").code == 250
        r = c.cmd("RCPT TO:<ren\u00e9@B\u00dcCHER.example>".encode())
        assert (r.code, r.id) == (450, 818)
