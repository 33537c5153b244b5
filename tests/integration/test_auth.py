"""End to end: SMTP AUTH (RFC 4954) proxied to a downstream that really authenticates.

swaks (AUTH PLAIN, AUTH LOGIN, with and without STARTTLS) and a raw client
talk to a real Barricade; the downstream is the aiosmtpd recorder with
users, which keeps every AUTH attempt, every RSET and, per message, the
user its connection authenticated as.
"""

from __future__ import annotations

import base64
import subprocess
import urllib.request

import pytest

from tests.integration.test_protocol import make_cert
from tests.recorder import Recorder
from tests.smtpclient import Client

USERS = {"fred@example.com": "fred-s3cret", "joe": "joe-pa55word", "sue@other.example": "sue-pw-42"}
PASSWORDS = list(USERS.values())


def plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


@pytest.fixture
def queue():
    r = Recorder(users=USERS)
    yield r
    r.stop()


def routes(local: Recorder, **extra: Recorder) -> str:
    text = f"route:local FORWARD: 127.0.0.1:{local.port}\nroute:example.com FORWARD: 127.0.0.1:{local.port}\n"
    for domain, rec in extra.items():
        text += f"route:{domain.replace('_', '.')} FORWARD: 127.0.0.1:{rec.port}\n"
    return text


def swaks(proxy, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(proxy.port), "--helo", "client.example.org",
         "--from", "fred@example.com", "--to", "someone@elsewhere.example",
         "--header", "Subject: authenticated", "--body", "sent after AUTH", *args],
        capture_output=True, timeout=60, text=True)


def assert_no_secrets(proxy) -> None:
    """Neither a password nor the base64 credentials reach the log or the metrics."""
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{proxy.metrics_port}/metrics", timeout=10).read().decode()
    assert "barricade_auth_total" in metrics
    for text in (proxy.log_text(), metrics):
        assert "AUTH as" in text or "barricade_auth" in text
        for user, password in USERS.items():
            assert password not in text
            assert plain(user, password) not in text
            assert base64.b64encode(password.encode()).decode() not in text


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_swaks_auth_relays_through_the_authenticated_connection(queue, make_proxy, mechanism):
    proxy = make_proxy(routes(queue), "+smtp-auth-enable")
    run = swaks(proxy, "--auth", mechanism, "--auth-user", "fred@example.com",
                "--auth-password", USERS["fred@example.com"])
    assert run.returncode == 0, run.stdout + run.stderr
    assert "AUTH PLAIN LOGIN" in run.stdout
    assert "235 2.0.0 authenticated #274" in run.stdout
    assert "accepted #554" in run.stdout
    # LOGIN became PLAIN downstream; the message (to a domain we do not route: relayed)
    # went over the connection that authenticated.
    assert queue.auths == [("PLAIN", "fred@example.com", True)]
    assert queue.authenticated == ["fred@example.com"]
    assert queue.messages[0][2] == ["someone@elsewhere.example"]
    assert b"with ESMTPA id" in queue.messages[0][3]  # RFC 3848
    assert proxy.metric("barricade_auth_total", outcome="pass") == 1
    assert_no_secrets(proxy)


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_swaks_auth_over_starttls(queue, make_proxy, tmp_path, mechanism):
    cert, key = make_cert(tmp_path)
    proxy = make_proxy(routes(queue), "+smtp-auth-enable", f"tls-server-cert={cert}", f"tls-server-key={key}")
    run = swaks(proxy, "--tls", "--auth", mechanism, "--auth-user", "joe", "--auth-password", USERS["joe"])
    assert run.returncode == 0, run.stdout + run.stderr
    assert "220 2.0.0 ready to start TLS #913" in run.stdout
    assert "235 2.0.0 authenticated #274" in run.stdout
    assert queue.auths == [("PLAIN", "joe", True)]
    assert queue.authenticated == ["joe"]
    assert b"with ESMTPSA id" in queue.messages[0][3]
    assert_no_secrets(proxy)


def test_auth_needs_tls_for_clients_other_than_localhost(queue, make_proxy):
    proxy = make_proxy(routes(queue), "+smtp-auth-enable")
    with Client(proxy.port) as c:
        assert "AUTH PLAIN LOGIN" in c.ehlo().lines  # localhost: no TLS needed
        assert c.cmd("XCLIENT ADDR=192.0.2.1").code == 220  # now an outside client
        assert not any(line.startswith("AUTH") for line in c.ehlo().lines)
        r = c.cmd("AUTH PLAIN " + plain("joe", USERS["joe"]))
        assert (r.code, r.status, r.id) == (538, "5.7.11", 983)
    assert queue.auths == []


def test_wrong_password_and_the_brute_force_guard(queue, make_proxy, backend):
    """On MemoryStore and on a real redis-server (the count is in the shared store)."""
    proxy = make_proxy(routes(queue), "+smtp-auth-enable", "smtp-auth-max-failures=3",
                       "smtp-drop-after=0", *backend)
    with Client(proxy.port) as c:
        c.ehlo()
        for attempt in range(2):
            r = c.cmd("AUTH PLAIN " + plain("joe", f"guess{attempt}"))
            assert (r.code, r.status, r.id) == (535, "5.7.0", 275), r
        r = c.cmd("AUTH PLAIN " + plain("joe", "guess2"))  # the third failure reaches the limit
        assert (r.code, r.id) == (421, 986), r
        assert "too many failed authentication attempts from [127.0.0.1]" in r.text
        assert c.closed()
    with Client(proxy.port) as c:  # the count is the client address's, across sessions
        c.ehlo()
        r = c.cmd("AUTH PLAIN " + plain("joe", USERS["joe"]))
        assert (r.code, r.id) == (421, 986)
    assert [ok for _, _, ok in queue.auths] == [False, False, False]  # never asked again
    assert proxy.metric("barricade_auth_total", outcome="fail") == 2
    assert proxy.metric("barricade_auth_total", outcome="blocked") == 2
    assert "AUTH as joe from [127.0.0.1]: blocked" in proxy.log_text()
    assert "guess" not in proxy.log_text()


def test_auth_domain_picks_the_route(queue, make_proxy):
    other = Recorder(users=USERS)
    try:
        proxy = make_proxy(routes(queue, other_example=other), "+smtp-auth-enable")
        with Client(proxy.port) as c:
            c.ehlo()
            r = c.cmd("AUTH PLAIN " + plain("sue@other.example", USERS["sue@other.example"]))
            assert r.id == 274, r
            # every recipient, even one routed to the local route, goes over that connection
            assert c.message("sue@other.example", ["x@example.com", "y@far.example"],
                             b"Subject: hi\r\n\r\nhi\r\n").id == 554
            assert c.cmd("RSET").code == 250
        assert other.auths == [("PLAIN", "sue@other.example", True)]
        assert other.authenticated == ["sue@other.example"]
        assert other.messages[0][2] == ["x@example.com", "y@far.example"]
        assert other.rsets[-1] == "sue@other.example"  # RSET relayed to the authenticated connection
        assert queue.messages == [] and queue.auths == []
    finally:
        other.stop()


def test_pooled_connections_never_cross_authentication(queue, make_proxy):
    proxy = make_proxy(routes(queue), "+smtp-auth-enable", "downstream-pool-size=4")
    body = b"Subject: pool\r\n\r\npool\r\n"
    with Client(proxy.port) as c:  # an unauthenticated connection is parked after this
        c.ehlo()
        assert c.message("a@example.org", ["x@example.com"], body).id == 554
    with Client(proxy.port) as c:  # ... and not used for an authenticated session
        c.ehlo()
        assert c.cmd("AUTH PLAIN " + plain("joe", USERS["joe"])).id == 274
        assert c.message("joe@example.com", ["x@example.com"], body).id == 554
    with Client(proxy.port) as c:  # the authenticated connection was not parked for this one
        c.ehlo()
        assert c.message("a@example.org", ["x@example.com"], body).id == 554
    assert queue.authenticated == [None, "joe", None]


def test_hostile_exchanges(queue, make_proxy):
    proxy = make_proxy(routes(queue), "+smtp-auth-enable", "smtp-drop-after=0")
    with Client(proxy.port) as c:
        r = c.cmd("AUTH PLAIN " + plain("joe", USERS["joe"]))  # before EHLO
        assert (r.code, r.id) == (503, 251)
        c.ehlo()
        assert c.cmd("AUTH LOGIN").lines == ["VXNlcm5hbWU6"]
        r = c.cmd("*")
        assert (r.code, r.id) == (501, 264)
        assert c.cmd("AUTH PLAIN").lines == [""]
        r = c.cmd("not base64!")
        assert (r.code, r.status, r.id) == (501, "5.5.2", 987)
        r = c.cmd("AUTH DIGEST-MD5")
        assert (r.code, r.id) == (504, 269)
        assert c.cmd("MAIL FROM:<joe@example.com>").code == 250
        r = c.cmd("AUTH PLAIN " + plain("joe", USERS["joe"]))  # during a transaction
        assert (r.code, r.id) == (503, 251)
        assert c.cmd("RSET").code == 250
        assert c.cmd("AUTH PLAIN " + plain("joe", USERS["joe"])).id == 274
        r = c.cmd("AUTH PLAIN " + plain("joe", USERS["joe"]))  # twice
        assert (r.code, r.id) == (503, 267)
    with Client(proxy.port) as c:  # a 10 KB AUTH line
        c.ehlo()
        r = c.cmd("AUTH PLAIN " + "QUFB" * 2560)
        assert (r.code, r.id) == (501, 906) and c.closed()
    with Client(proxy.port) as c:  # the continuation smuggled with the AUTH line
        c.ehlo()
        c.send(b"AUTH LOGIN\r\n" + base64.b64encode(b"joe") + b"\r\n")
        r = c.read()
        assert (r.code, r.id) == (550, 631) and c.closed()
    assert queue.auths == [("PLAIN", "joe", True)]
    assert proxy.unhandled_errors() == []


def test_downstream_without_auth_or_silent(make_proxy):
    no_auth = Recorder()
    slow = Recorder(users=USERS)
    slow.handler.auth_delay = 4
    try:
        proxy = make_proxy(routes(no_auth), "+smtp-auth-enable")
        with Client(proxy.port) as c:
            c.ehlo()
            r = c.cmd("AUTH PLAIN " + plain("joe", USERS["joe"]))
            assert (r.code, r.status, r.id) == (454, "4.7.0", 985)
            assert c.cmd("NOOP").code == 250  # the session goes on
        assert "does not offer AUTH PLAIN" in proxy.log_text()
        proxy = make_proxy(routes(slow), "+smtp-auth-enable", "smtp-command-timeout=2")
        with Client(proxy.port) as c:
            c.ehlo()
            r = c.cmd("AUTH PLAIN " + plain("joe", USERS["joe"]))
            assert (r.code, r.id) == (454, 985)
        assert proxy.metric("barricade_auth_total", outcome="tempfail") == 1
        assert "AUTH as joe from [127.0.0.1]: tempfail" in proxy.log_text()
    finally:
        no_auth.stop()
        slow.stop()


def test_auth_delay_checks(queue, make_proxy, tmp_path):
    access = tmp_path / "access-map"
    access.write_text("Connect:127.0.0.1 REJECT\n")
    proxy = make_proxy(routes(queue), "+smtp-auth-enable", "+auth-delay-checks", f"access-map={access}")
    with Client(proxy.port) as c:  # greeted: the connect checks wait for MAIL
        assert c.banner.code == 220
        c.ehlo()
        r = c.cmd("MAIL FROM:<a@example.org>")
        assert (r.code, r.id) == (550, 120), r
        assert c.closed()  # as the connect refusal would have done
    with Client(proxy.port) as c:  # an authenticated client never meets them
        c.ehlo()
        assert c.cmd("AUTH PLAIN " + plain("joe", USERS["joe"])).id == 274
        assert c.message("joe@example.com", ["x@far.example"], b"Subject: x\r\n\r\nx\r\n").id == 554
    assert queue.authenticated == ["joe"]


def test_authenticated_sessions_skip_grey_listing_and_smtp_auth_white(queue, make_proxy, tmp_path):
    """An outside client (XCLIENT) is grey-listed and its sender black-listed; authenticated,
    it relays past the grey-list, and with +smtp-auth-white past the access map too."""
    access = tmp_path / "access-map"
    access.write_text("From:blocked@example.org REJECT\n")
    body = b"Subject: grey\r\n\r\nhello\r\n"
    for white in ("-smtp-auth-white", "+smtp-auth-white"):
        proxy = make_proxy(routes(queue), "+smtp-auth-enable", "-smtp-auth-tls", f"access-map={access}",
                           "grey-key=mail,rcpt", white)
        with Client(proxy.port) as c:
            assert c.cmd("XCLIENT ADDR=192.0.2.1 NAME=mail.outside.example").code == 220
            c.ehlo()
            c.cmd("MAIL FROM:<a@example.org>")
            assert c.cmd("RCPT TO:<x@example.com>").code == 250
            r = c.cmd("DATA")
            assert (r.code, r.id) == (451, 552), r  # grey-listed
            c.cmd("RSET")
            assert c.cmd("AUTH PLAIN " + plain("joe", USERS["joe"])).id == 274
            assert c.message("a@example.org", ["x@far.example"], body).id == 554  # not grey-listed
            r = c.cmd("MAIL FROM:<blocked@example.org>")
            if white == "+smtp-auth-white":
                assert r.code == 250, r
                c.cmd("RSET")
            else:
                assert r.code == 550, r
    assert queue.authenticated == ["joe", "joe"]


@pytest.mark.parametrize("refusal", ["538 5.7.11 Encryption required for requested authentication mechanism",
                                     "534 5.7.9 Authentication mechanism is too weak"])
def test_a_downstream_refusing_auth_plain_itself_is_no_wrong_password(queue, make_proxy, refusal):
    """The downstream refuses Barricade's AUTH PLAIN for its own reasons (it wants TLS,
    a stronger mechanism): the client is told to try later (#985), never that its
    password is wrong, nothing counts towards the brute-force guard, and the log
    says what the downstream said."""
    queue.handler.auth_refusal = refusal
    proxy = make_proxy(routes(queue), "+smtp-auth-enable", "smtp-auth-max-failures=2",
                       "smtp-drop-after=0")
    with Client(proxy.port) as c:
        c.ehlo()
        for _ in range(3):
            r = c.cmd("AUTH PLAIN " + plain("joe", USERS["joe"]))
            assert (r.code, r.status, r.id) == (454, "4.7.0", 985), r
        assert not c.closed()
    assert len(queue.auths) == 3  # asked every time: no failure was counted
    assert proxy.metric("barricade_auth_total", outcome="tempfail") == 3
    assert proxy.metric("barricade_auth_total", outcome="fail") is None
    code = refusal[:3]
    assert f"said {code} {refusal.split()[1]}, which is no verdict on the credentials" in proxy.log_text()
