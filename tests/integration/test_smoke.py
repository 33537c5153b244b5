import smtplib

from tests.conftest import routes_to
from tests.daemons import lf


def test_message_passes_through(sink, make_proxy):
    proxy = make_proxy(routes_to(sink))
    with smtplib.SMTP("127.0.0.1", proxy.port, timeout=10) as c:
        c.ehlo("client.example.org")
        refused = c.sendmail("a@example.org", ["b@example.com"], b"Subject: t\r\n\r\nhello\r\n")
        assert refused == {}
    body = sink.bodies()[0]
    assert body.startswith(b"Received: from client.example.org (localhost [127.0.0.1])\n")
    assert body.endswith(lf(b"\r\nSubject: t\r\n\r\nhello\r\n"))
