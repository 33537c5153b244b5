"""SMTP AUTH in the sans-IO layers: the SASL exchange (PLAIN, LOGIN) and the session's
AUTH state: offers, sequence, cancel, broken base64, smuggled continuations."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from barricade.decide import auth as policy
from barricade.maps import RouteMap
from barricade.protocol import auth as sasl
from barricade.protocol import events as ev
from barricade.protocol.session import AUTH, CLOSED, COMMAND, SessionConfig
from barricade.replies import ReplyId
from tests.unit.test_session import CAT, converse, ehlo, make, reply_ids

ON = SessionConfig(hostname="mx.test", auth=True, auth_tls=False)
PLAIN = base64.b64encode(b"\0fred@example.com\0s3cret").decode()


def b64(text: str) -> bytes:
    return base64.b64encode(text.encode())


def authenticate(s) -> bytes:
    """AUTH PLAIN, answered 235 as the proxy does after the downstream's 235."""
    s.receive_data(b"AUTH PLAIN " + PLAIN.encode() + b"\r\n")
    assert isinstance(s.next_event(), ev.Auth)
    return s.respond(CAT.reply(ReplyId.AUTHENTICATED))


# --- the SASL exchange -------------------------------------------------------------


def test_plain_with_initial_response():
    creds = sasl.Exchange("plain").start(PLAIN)
    assert creds == sasl.Credentials("fred@example.com", "s3cret")
    assert creds.domain == "example.com"
    assert creds.plain() == PLAIN


def test_plain_without_initial_response_asks_with_an_empty_challenge():
    x = sasl.Exchange("PLAIN")
    assert x.start(None) == ""
    assert x.respond(PLAIN).authcid == "fred@example.com"


def test_login_prompts_and_converts_to_plain():
    x = sasl.Exchange("LOGIN")
    assert base64.b64decode(x.start(None)) == b"Username:"
    assert base64.b64decode(x.respond(b64("fred").decode())) == b"Password:"
    creds = x.respond(b64("pw").decode())
    assert creds.plain() == base64.b64encode(b"\0fred\0pw").decode()
    assert creds.domain == ""


def test_login_with_initial_response_skips_the_username_prompt():
    x = sasl.Exchange("LOGIN")
    assert base64.b64decode(x.start(b64("fred").decode())) == b"Password:"


def test_password_is_not_in_repr_or_str():
    creds = sasl.Credentials("fred", "s3cret")
    assert "s3cret" not in repr(creds) and "s3cret" not in str(creds)
    event = ev.Auth("PLAIN", creds)
    assert "s3cret" not in repr(event)


@pytest.mark.parametrize("line,rid", [
    ("*", ReplyId.AUTH_CANCELLED),
    ("!!!notbase64", ReplyId.AUTH_BAD_RESPONSE),
    ("Zm9v=x", ReplyId.AUTH_BAD_RESPONSE),
    (b64("no nul at all").decode(), ReplyId.AUTH_BAD_RESPONSE),
    (base64.b64encode(b"\0\0pw").decode(), ReplyId.AUTH_BAD_RESPONSE),  # empty authcid
    (base64.b64encode(b"\0fred\0").decode(), ReplyId.AUTH_BAD_RESPONSE),  # empty password
    (base64.b64encode(b"\0fred\0pw\0x").decode(), ReplyId.AUTH_BAD_RESPONSE),
    (base64.b64encode(b"\0fr\xffed\0pw").decode(), ReplyId.AUTH_BAD_RESPONSE),  # not UTF-8
    (base64.b64encode(b"\0fred\r\nMAIL\0pw").decode(), ReplyId.AUTH_BAD_RESPONSE),
    (base64.b64encode(b"\0" + b"u" * 300 + b"\0pw").decode(), ReplyId.AUTH_BAD_RESPONSE),
])
def test_plain_refusals(line, rid):
    with pytest.raises(sasl.AuthError) as info:
        sasl.Exchange("PLAIN").respond(line)
    assert info.value.reply_id == rid


def test_login_cancel_has_its_own_number():
    x = sasl.Exchange("LOGIN")
    x.start(None)
    with pytest.raises(sasl.AuthError) as info:
        x.respond("*")
    assert info.value.reply_id == ReplyId.AUTH_CANCELLED_LOGIN


def test_unknown_mechanism():
    with pytest.raises(sasl.AuthError) as info:
        sasl.Exchange("CRAM-MD5")
    assert info.value.reply_id == ReplyId.AUTH_UNKNOWN_MECHANISM


@given(st.text(max_size=200))
def test_any_response_gives_credentials_or_a_catalogue_refusal(line):
    for mech in sasl.MECHANISMS:
        x = sasl.Exchange(mech)
        x.start(None)
        try:
            x.respond(line)
        except sasl.AuthError as exc:
            assert exc.reply_id in CAT


# --- the session -------------------------------------------------------------------


def test_auth_offered_only_when_enabled():
    s = make()
    ehlo(s)
    assert "AUTH PLAIN LOGIN" not in s.ehlo_keywords()
    _, out = converse(s, b"AUTH PLAIN\r\n")
    assert reply_ids(out) == [ReplyId.NOT_IMPLEMENTED]


def test_auth_needs_tls_by_default_except_for_localhost():
    cfg = SessionConfig(hostname="mx.test", auth=True)
    s = make(cfg)
    ehlo(s)
    assert "AUTH PLAIN LOGIN" not in s.ehlo_keywords()
    _, out = converse(s, b"AUTH PLAIN " + PLAIN.encode() + b"\r\n")
    assert out.startswith(b"538 5.7.11 ") and reply_ids(out) == [ReplyId.AUTH_NEEDS_TLS]
    s.tls = True
    assert "AUTH PLAIN LOGIN" in s.ehlo_keywords()
    local = make(cfg, local=True)
    ehlo(local)
    assert "AUTH PLAIN LOGIN" in local.ehlo_keywords()


def test_auth_plain_initial_response():
    s = make(ON)
    ehlo(s)
    s.receive_data(b"AUTH PLAIN " + PLAIN.encode() + b"\r\n")
    assert s.next_event() == ev.Auth("PLAIN", sasl.Credentials("fred@example.com", "s3cret"))


def test_auth_login_exchange_and_success():
    s = make(ON)
    ehlo(s)
    s.receive_data(b"AUTH LOGIN\r\n")
    e = s.next_event()
    assert isinstance(e, ev.AuthChallenge)
    assert s.respond(e.reply) == b"334 VXNlcm5hbWU6\r\n"
    assert s.state == AUTH
    s.receive_data(b64("fred") + b"\r\n")
    e = s.next_event()
    assert s.respond(e.reply) == b"334 UGFzc3dvcmQ6\r\n"
    s.receive_data(b64("pw") + b"\r\n")
    e = s.next_event()
    assert e == ev.Auth("LOGIN", sasl.Credentials("fred", "pw"))
    out = s.respond(CAT.reply(ReplyId.AUTHENTICATED))
    assert out.startswith(b"235 2.0.0 authenticated #274")
    assert s.authenticated == "fred" and s.state == COMMAND
    _, out = converse(s, b"AUTH PLAIN " + PLAIN.encode() + b"\r\n")
    assert out.startswith(b"503 5.5.1 already authenticated #267")


def test_plain_without_initial_response_gets_an_empty_334():
    s = make(ON)
    ehlo(s)
    s.receive_data(b"AUTH PLAIN\r\n")
    e = s.next_event()
    assert s.respond(e.reply) == b"334 \r\n"
    s.receive_data(PLAIN.encode() + b"\r\n")
    assert isinstance(s.next_event(), ev.Auth)


def test_cancel_and_broken_base64_keep_the_session():
    s = make(ON)
    ehlo(s)
    _, out = converse(s, b"AUTH LOGIN\r\n")
    assert out == b"334 VXNlcm5hbWU6\r\n"
    _, out = converse(s, b"*\r\n")
    assert out.startswith(b"501 5.5.1 AUTH cancelled #264")
    _, out = converse(s, b"AUTH PLAIN\r\n")
    _, out = converse(s, b"%%%%\r\n")
    assert out.startswith(b"501 5.5.2 cannot decode AUTH response #987")
    _, out = converse(s, b"AUTH PLAIN =\r\n")  # "=": the empty response, not PLAIN
    assert reply_ids(out) == [ReplyId.AUTH_BAD_RESPONSE]
    assert s.state == COMMAND and not s.closing
    _, out = converse(s, b"NOOP\r\n")
    assert reply_ids(out) == [547]


def test_non_ascii_response_is_refused():
    s = make(ON)
    ehlo(s)
    converse(s, b"AUTH PLAIN\r\n")
    _, out = converse(s, "fréd\r\n".encode())
    assert reply_ids(out) == [ReplyId.AUTH_BAD_RESPONSE] and s.state == COMMAND


def test_auth_sequence():
    s = make(ON)
    _, out = converse(s, b"AUTH PLAIN " + PLAIN.encode() + b"\r\n")  # before EHLO
    assert out.startswith(b"503 5.5.1 AUTH out of sequence #251")
    converse(s, b"HELO client.example\r\n")
    _, out = converse(s, b"AUTH PLAIN " + PLAIN.encode() + b"\r\n")  # RFC 4954: EHLO only
    assert reply_ids(out) == [ReplyId.OUT_OF_SEQUENCE]
    ehlo(s)
    converse(s, b"MAIL FROM:<a@example.com>\r\n")
    _, out = converse(s, b"AUTH PLAIN " + PLAIN.encode() + b"\r\n")  # in a transaction
    assert reply_ids(out) == [ReplyId.OUT_OF_SEQUENCE]
    converse(s, b"RSET\r\n")
    _, out = converse(s, b"AUTH\r\n")
    assert reply_ids(out) == [ReplyId.MISSING_ARGUMENT]
    _, out = converse(s, b"AUTH CRAM-MD5\r\n")
    assert out.startswith(b"504 5.5.4 unknown AUTH mechanism #269")


def test_smuggled_continuation_is_dropped():
    """The LOGIN username sent with the AUTH line, before our 334: closed (RFC 4954 4)."""
    s = make(ON)
    ehlo(s)
    _, out = converse(s, b"AUTH LOGIN\r\n" + b64("fred") + b"\r\n")
    assert reply_ids(out) == [ReplyId.PIPELINING_NOT_ALLOWED] and s.state == CLOSED


def test_smuggled_password_is_dropped():
    s = make(ON)
    ehlo(s)
    converse(s, b"AUTH LOGIN\r\n")
    _, out = converse(s, b64("fred") + b"\r\n" + b64("pw") + b"\r\n")
    assert reply_ids(out) == [ReplyId.PIPELINING_NOT_ALLOWED] and s.state == CLOSED


def test_ten_kilobyte_auth_lines_are_refused_and_closed():
    for lines in ([b"AUTH PLAIN " + b"A" * 10240 + b"\r\n"], [b"AUTH PLAIN\r\n", b"A" * 10240 + b"\r\n"]):
        s = make(ON)
        ehlo(s)
        out = b""
        for line in lines:
            out += converse(s, line)[1]
        assert reply_ids(out)[-1] == ReplyId.INVALID_TRANSMISSION and s.state == CLOSED


def test_auth_line_is_exempt_from_the_512_octet_limit():
    """RFC 4954 4 allows AUTH lines up to 12288 octets; 4096 is our ceiling."""
    s = make(SessionConfig(hostname="mx.test", auth=True, auth_tls=False, command_length=True))
    ehlo(s)
    long_plain = base64.b64encode(b"\0" + b"u" * 200 + b"\0" + b"p" * 200).decode()
    events, _ = converse(s, b"AUTH PLAIN " + long_plain.encode() + b"\r\n")
    assert isinstance(events[-1], ev.Auth)


def test_starttls_and_xclient_after_auth_are_out_of_sequence():
    s = make(SessionConfig(hostname="mx.test", auth=True, auth_tls=False, tls_available=True), local=True)
    ehlo(s)
    assert authenticate(s).startswith(b"235 ")
    assert s.authenticated == "fred@example.com"
    for line in (b"STARTTLS\r\n", b"XCLIENT ADDR=192.0.2.1\r\n"):
        _, out = converse(s, line)
        assert reply_ids(out) == [ReplyId.OUT_OF_SEQUENCE]


def test_failed_auth_counts_toward_drop_after():
    s = make(SessionConfig(hostname="mx.test", auth=True, auth_tls=False, drop_after=2))
    ehlo(s)
    for _ in range(2):
        s.receive_data(b"AUTH PLAIN " + PLAIN.encode() + b"\r\n")
        assert isinstance(s.next_event(), ev.Auth)
        out = s.respond(CAT.reply(ReplyId.AUTH_FAILED))
    assert reply_ids(out) == [ReplyId.AUTH_FAILED, 922] and s.state == CLOSED
    assert s.authenticated is None


# --- the policy ----------------------------------------------------------------------


def routes(tmp_path, text: str) -> RouteMap:
    path = tmp_path / "route.map"
    path.write_text(text)
    return RouteMap(str(path))


def test_auth_route_by_domain_rcpt_host_first(tmp_path):
    rm = routes(tmp_path, "route:local FORWARD: 127.0.0.1:26\n"
                          "route:example.com FORWARD: 127.0.0.1:27; RCPT: 127.0.0.1:28\n"
                          "route:other.example FORWARD: 127.0.0.1:29\n")
    assert policy.auth_route(rm, "fred@example.com").forward == (("127.0.0.1", 28),)
    assert policy.auth_route(rm, "fred@other.example").forward == (("127.0.0.1", 29),)
    assert policy.auth_route(rm, "fred@unknown.example").forward == (("127.0.0.1", 26),)
    assert policy.auth_route(rm, "fred").forward == (("127.0.0.1", 26),)


def test_outcomes_and_guard():
    assert policy.outcome(235) == policy.PASS
    assert policy.outcome(535) == policy.FAIL
    assert policy.outcome(454) == policy.TEMPFAIL
    assert policy.outcome(535, "5.7.0") == policy.FAIL
    assert policy.outcome(554, "5.7.8") == policy.FAIL  # credentials invalid, whatever the code
    # Refusals that judged the downstream's setup, not the credentials: temporary.
    for code, status in [(504, "5.5.4"), (534, "5.7.9"), (538, "5.7.11"), (530, "5.7.0"),
                         (501, "5.5.2"), (554, "5.7.0"), (250, "")]:
        assert policy.outcome(code, status) == policy.TEMPFAIL, (code, status)
    assert policy.over_limit(5, 5) and not policy.over_limit(4, 5) and not policy.over_limit(99, 0)
    assert policy.failure_key("192.0.2.1") == "auth-fail:192.0.2.1"


def test_authenticated_client_may_relay():
    client = ev.ClientInfo("192.0.2.7", 4000)
    assert policy.authenticated_client(client).relay
