"""The sans-IO session: bytes in, events out, replies in, bytes out. No sockets."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from barricade.protocol import events as ev
from barricade.protocol.grammar import Strictness
from barricade.protocol.session import CLOSED, DATA, NEED_DATA, PAUSED, Session, SessionConfig
from barricade.replies import Catalogue

CAT = Catalogue()
REPLY_LINE = re.compile(rb"^[2-5]\d\d[ -].*\r\n$")


def make(config: SessionConfig | None = None, *, local: bool = False, relay: bool = False,
         private: bool = False, greet: bool = True) -> Session:
    ip = "127.0.0.1" if local else "192.0.2.7"
    client = ev.ClientInfo(ip, 4000, "client.example", relay=relay, localhost=local,
                           private=private or local)
    s = Session(config or SessionConfig(hostname="mx.test"), client, CAT, "SID")
    if greet:
        out = s.greet(CAT.reply(633, hostname="mx.test", esmtp="E", banner="ready"))
        assert out.startswith(b"220 mx.test ESMTP ready #633")
    return s


def ok_reply(event: ev.Event, s: Session):
    """What a permissive proxy answers, per event type."""
    if isinstance(event, ev.Violation):
        return event.reply
    if isinstance(event, ev.Data):
        return CAT.reply(900)
    if isinstance(event, ev.EndOfData):
        return event.violation or CAT.reply(554, qid="Q")
    if isinstance(event, ev.Quit):
        return CAT.reply(247, hostname="mx.test")
    if isinstance(event, ev.StartTls):
        return CAT.reply(913)
    if isinstance(event, ev.Helo):
        rid = 254 if event.verb == "EHLO" else 256
        return CAT.reply(rid, hostname="mx.test", helo=event.domain, client_ip="192.0.2.7",
                         extra=s.ehlo_keywords() if rid == 254 else ())
    return CAT.reply(547)


def converse(s: Session, data: bytes) -> tuple[list[ev.Event], bytes]:
    """Feed ``data``, answer every command permissively; return events and output."""
    s.receive_data(data)
    events, out = [], b""
    while True:
        e = s.next_event()
        if e is NEED_DATA or e is PAUSED:
            return events, out
        events.append(e)
        if isinstance(e, ev.Command):
            reply = ok_reply(e, s)
            drop = isinstance(e, (ev.Violation, ev.EndOfData)) and e.drop
            out += s.respond(reply, drop=drop)


def reply_ids(out: bytes) -> list[int]:
    return [int(m) for m in re.findall(rb"#(\d+) SID", out)]


def ehlo(s: Session) -> None:
    events, out = converse(s, b"EHLO client.example\r\n")
    assert isinstance(events[0], ev.Helo) and out.startswith(b"250-mx.test Hello")


def test_full_transaction_events_and_state():
    s = make()
    events, out = converse(
        s,
        b"EHLO client.example\r\nMAIL FROM:<a@b.example> SIZE=10\r\nRCPT TO:<c@d.example>\r\nDATA\r\n",
    )
    assert [type(e) for e in events] == [ev.Helo, ev.Mail, ev.Rcpt, ev.Data]
    assert events[1].path.address == "a@b.example" and events[1].path.params == {"SIZE": "10"}
    assert s.state == DATA and s.rcpt_count == 1
    events, out = converse(s, b"Subject: x\r\n\r\n..leading dot\r\n.\r\nQUIT\r\n")
    chunks = b"".join(e.data for e in events if isinstance(e, ev.DataChunk))
    assert chunks == b"Subject: x\r\n\r\n.leading dot\r\n"
    eod = [e for e in events if isinstance(e, ev.EndOfData)][0]
    assert eod.size == len(chunks) and eod.violation is None
    assert isinstance(events[-1], ev.Quit)
    assert s.state == CLOSED and s.closing and s.messages == 1
    assert reply_ids(out) == [554, 247]


def test_ehlo_keywords_follow_options():
    s = make(SessionConfig(hostname="mx.test", size_limit=1000, eightbitmime=True, tls_available=True))
    _, out = converse(s, b"EHLO x.example\r\n")
    assert b"250-PIPELINING\r\n" in out and b"250-SIZE 1000\r\n" in out
    assert b"250-8BITMIME\r\n" in out and b"250-STARTTLS\r\n" in out
    assert out.endswith(b"250 ENHANCEDSTATUSCODES\r\n")
    assert b"XCLIENT" not in out  # not a local or relay client
    s = make(SessionConfig(hostname="mx.test", pipelining=False), local=True)
    _, out = converse(s, b"EHLO x.example\r\n")
    assert b"PIPELINING" not in out and b"250-XCLIENT NAME ADDR PORT PROTO HELO\r\n" in out


def test_pre_greeting_traffic_is_refused():
    s = make(greet=False)
    s.receive_data(b"EHLO early.example\r\n")
    assert s.next_event() is NEED_DATA  # nothing is parsed before the banner
    out = s.greet(CAT.reply(633, hostname="mx.test", esmtp="E", banner="ready"))
    assert out.startswith(b"550 5.7.1 client.example [192.0.2.7] sent pre-greeting traffic #420")
    assert s.closing


def test_connect_refusal_closes():
    s = make(greet=False)
    out = s.greet(CAT.reply(551))
    assert out.startswith(b"421 4.3.2 system resources exceeded #551") and s.closing


def test_unknown_command_and_drop_unknown():
    s = make()
    _, out = converse(s, b"FOO bar\r\n")
    assert out.startswith(b"500 5.5.1 FOO command unknown #248") and not s.closing
    s = make(SessionConfig(hostname="mx.test", drop_unknown=True))
    _, out = converse(s, b"FOO bar\r\n")
    assert reply_ids(out) == [248] and s.closing


def test_missing_argument():
    s = make()
    for line, text in [(b"HELO", b"HELO"), (b"EHLO", b"EHLO"), (b"VRFY", b"VRFY")]:
        _, out = converse(s, line + b"\r\n")
        assert out.startswith(b"501 5.5.2 " + text + b" missing argument #249")
    s = make()
    ehlo(s)
    _, out = converse(s, b"MAIL\r\n")
    assert out.startswith(b"501 5.5.2 MAIL FROM: missing argument #249")


def test_not_implemented():
    s = make(SessionConfig(hostname="mx.test", chunking=False))  # BDAT: see test_session_bdat.py
    ehlo(s)
    for verb in (b"AUTH PLAIN", b"EXPN staff", b"ETRN example.com", b"BDAT 10"):
        _, out = converse(s, verb + b"\r\n")
        assert out.startswith(b"502 5.5.1 " + verb.split()[0] + b" not implemented #250"), out


def test_out_of_sequence():
    s = make(SessionConfig(hostname="mx.test", drop_after=0))
    for line, verb in [(b"MAIL FROM:<a@b.example>", b"MAIL"), (b"RCPT TO:<a@b.example>", b"RCPT"),
                       (b"DATA", b"DATA")]:
        _, out = converse(s, line + b"\r\n")
        assert out.startswith(b"503 5.5.1 " + verb + b" out of sequence #251"), out
    ehlo(s)
    converse(s, b"MAIL FROM:<a@b.example>\r\n")
    _, out = converse(s, b"MAIL FROM:<a@b.example>\r\n")
    assert reply_ids(out) == [251]
    _, out = converse(s, b"DATA\r\n")
    assert out.startswith(b"554 5.5.1 no valid recipients #923")


def test_schizophrenic_helo():
    s = make()
    ehlo(s)
    _, out = converse(s, b"EHLO client.example\r\n")  # same name again is fine
    assert out.startswith(b"250-")
    _, out = converse(s, b"HELO other.example\r\n")
    assert out.startswith(b"550 5.7.1 client client.example [192.0.2.7] is schizophrenic #252")
    assert not s.closing
    s = make(SessionConfig(hostname="mx.test", helo_schizo=2))
    ehlo(s)
    _, out = converse(s, b"EHLO other.example\r\n")
    assert reply_ids(out) == [252] and s.closing  # after EHLO: #252, as smtpf
    s = make(SessionConfig(hostname="mx.test", helo_schizo=2))
    converse(s, b"HELO client.example\r\n")
    _, out = converse(s, b"HELO other.example\r\n")
    assert reply_ids(out) == [255] and s.closing  # after HELO: #255
    s = make()
    converse(s, b"HELO client.example\r\n")
    _, out = converse(s, b"EHLO other.example\r\n")
    assert reply_ids(out) == [255] and not s.closing
    s = make(SessionConfig(hostname="mx.test", helo_schizo=0))
    ehlo(s)
    events, _ = converse(s, b"EHLO other.example\r\n")
    assert isinstance(events[0], ev.Helo)


def test_ehlo_refused_without_esmtp_except_private_clients():
    cfg = SessionConfig(hostname="mx.test", esmtp=False)
    s = make(cfg)
    _, out = converse(s, b"EHLO client.example\r\n")
    assert out.startswith(b"502 5.5.1 EHLO not supported #253")
    events, _ = converse(s, b"HELO client.example\r\n")
    assert isinstance(events[0], ev.Helo)
    s = make(cfg, private=True)
    events, _ = converse(s, b"EHLO client.example\r\n")
    assert isinstance(events[0], ev.Helo)


def test_invalid_helo_drops():
    s = make()
    _, out = converse(s, b"HELO bad/name!\r\n")
    assert out.startswith(b"501 5.5.4 invalid HELO bad/name! #423") and s.closing


def test_command_length_limits():
    s = make(SessionConfig(hostname="mx.test", command_length=True))
    _, out = converse(s, b"NOOP " + b"x" * 600 + b"\r\n")
    assert out.startswith(b"500 5.5.2 RFC 2821 max. command line length exceeded (607) #640")
    assert not s.closing
    s = make()  # without the option 600 octets pass, but never 5000
    events, _ = converse(s, b"NOOP " + b"x" * 600 + b"\r\n")
    assert isinstance(events[0], ev.Noop)
    _, out = converse(s, b"NOOP " + b"x" * 5000)
    assert out.startswith(b"501 5.5.2 invalid transmission request #906") and s.closing


def test_one_megabyte_line_is_refused_with_bounded_memory():
    s = make()
    for _ in range(16):
        s.receive_data(b"A" * 65536)
        if s.next_event() is not NEED_DATA:
            break
    assert s.closing is False  # the event is pending until answered
    assert len(s._buffer) < 2 * 65536


def test_non_printable_characters():
    s = make()
    _, out = converse(s, b"HELO caf\xc3\xa9.example\r\n")
    assert out.startswith(b"500 5.5.2 client.example [192.0.2.7] sent non-printable characters in SMTP command #641")
    _, out = converse(s, b"NOOP \x00\r\n")
    assert reply_ids(out) == [641]


def test_pipelining_without_the_extension():
    s = make()
    _, out = converse(s, b"HELO client.example\r\nMAIL FROM:<a@b.example>\r\n")
    assert reply_ids(out) == [256, 643] if b"#256" in out else reply_ids(out)[-1] == 643
    assert b"550 5.3.3 pipelining not allowed #643" in out and s.closing  # after HELO: smtpf's #643


def test_pipelining_allowed_after_ehlo():
    s = make()
    events, out = converse(
        s, b"EHLO client.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nRSET\r\nNOOP\r\n"
    )
    assert [type(e) for e in events] == [ev.Helo, ev.Mail, ev.Rcpt, ev.Rset, ev.Noop]
    assert not s.closing


def test_pipelining_when_disabled_by_option():
    s = make(SessionConfig(hostname="mx.test", pipelining=False))
    _, out = converse(s, b"EHLO client.example\r\nNOOP\r\n")
    assert b"#631" in out and s.closing


def test_data_after_data_command_before_354():
    s = make()
    ehlo(s)
    converse(s, b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n")
    _, out = converse(s, b"DATA\r\nSubject: too early\r\n\r\nbody\r\n.\r\n")
    assert out.startswith(b"354 ")
    assert b"550 5.3.3 pipelining not allowed #643" in out and s.closing


def test_commands_after_final_dot_need_pipelining():
    s = make()
    converse(s, b"HELO client.example\r\n")
    converse(s, b"MAIL FROM:<a@b.example>\r\n")
    converse(s, b"RCPT TO:<c@d.example>\r\n")
    converse(s, b"DATA\r\n")
    _, out = converse(s, b"body\r\n.\r\nQUIT\r\n")
    assert reply_ids(out) == [554, 643]


def _in_data(config: SessionConfig) -> Session:
    s = make(config)
    ehlo(s)
    converse(s, b"MAIL FROM:<a@b.example>\r\n")
    converse(s, b"RCPT TO:<c@d.example>\r\n")
    converse(s, b"DATA\r\n")
    assert s.state == DATA
    return s


def test_long_data_line_policy():
    long_line = b"x" * 1200 + b"\r\n"
    s = _in_data(SessionConfig(hostname="mx.test"))
    events, out = converse(s, long_line + b".\r\n")
    assert reply_ids(out) == [554]  # 0: passed through
    s = _in_data(SessionConfig(hostname="mx.test", line_length=1))
    events, out = converse(s, long_line + b".\r\n")
    assert out.startswith(b"554 5.5.2 content line too long (1202); RFC 2821 section 4.5.3.1 #321")
    assert not s.closing
    s = _in_data(SessionConfig(hostname="mx.test", line_length=2))
    _, out = converse(s, long_line + b".\r\n")
    assert reply_ids(out) == [321] and s.closing


def test_bare_newlines_normalised_or_refused():
    s = _in_data(SessionConfig(hostname="mx.test"))
    events, out = converse(s, b"a\nb\r\n.\nMAIL FROM:<evil@x.example>\n.\r\n.\r\n")
    data = b"".join(e.data for e in events if isinstance(e, ev.DataChunk))
    # ".\n" is not the end; a lone dot is no stuffing, so it stays a "." line.
    # nor is "<LF>.<CRLF>": the dot ends DATA only after a real CRLF.
    assert data == b"a\r\nb\r\n.\r\nMAIL FROM:<evil@x.example>\r\n.\r\n"
    eod = [e for e in events if isinstance(e, ev.EndOfData)][0]
    assert eod.bare_newlines == 3 and reply_ids(out) == [554]
    s = _in_data(SessionConfig(hostname="mx.test", strict_dot=True))
    _, out = converse(s, b"a\nb\r\n.\r\n")
    assert out.startswith(b"554 5.6.0 message contains bare CR or LF; RFC 5321 section 2.3.8 #921")


def test_message_size_limit():
    s = make(SessionConfig(hostname="mx.test", size_limit=100))
    ehlo(s)
    _, out = converse(s, b"MAIL FROM:<a@b.example> SIZE=101\r\n")
    assert out.startswith(b"552 5.3.4 message too big, max. 100 bytes #912")
    converse(s, b"MAIL FROM:<a@b.example> SIZE=50\r\n")
    converse(s, b"RCPT TO:<c@d.example>\r\nDATA\r\n")
    events, out = converse(s, b"x" * 60 + b"\r\n" + b"y" * 60 + b"\r\n.\r\n")
    assert reply_ids(out) == [912]
    assert sum(len(e.data) for e in events if isinstance(e, ev.DataChunk)) <= 100


def test_mail_parameters():
    s = make()
    ehlo(s)
    _, out = converse(s, b"MAIL FROM:<a@b.example> SIZE=abc\r\n")
    assert out.startswith(b"501 5.5.4 invalid parameter SIZE=abc #920")
    # Digits to str.isdigit, not to int() ("²", "①") or not ASCII ("١٢"): refused, not raised.
    for size in ("\u00b2", "\u2460", "\u0661\u0662", "1\u00b2"):
        fresh = make()
        ehlo(fresh)
        _, out = converse(fresh, f"MAIL FROM:<a@b.example> SIZE={size}\r\n".encode())
        assert reply_ids(out) == [920] and not fresh.closing, size
    _, out = converse(s, b"MAIL FROM:<a@b.example> BODY=8BITMIME\r\n")
    assert out.startswith(b"555 5.5.4 unsupported parameter BODY=8BITMIME #919")
    _, out = converse(s, b"MAIL FROM:<a@b.example> SMTPUTF8\r\n")
    assert reply_ids(out) == [919]
    _, out = converse(s, b"MAIL FROM: <a@b.example>\r\n")  # extra space allowed by default
    assert reply_ids(out) == [547]


def test_address_syntax_replies():
    s = make()
    ehlo(s)
    _, out = converse(s, b"MAIL FROM:a@b.example\r\n")
    assert out.startswith(b"553 5.1.0 rejected sender a@b.example angle brackets required #279")
    converse(s, b"MAIL FROM:<>\r\n")
    _, out = converse(s, b"RCPT TO:<>\r\n")
    assert out.startswith(b"550 5.7.1 null recipient invalid #286")
    _, out = converse(s, b"RCPT TO:<a@@b>\r\n")
    assert reply_ids(out) == [284]


def test_starttls_discards_plaintext_injection():
    s = make(SessionConfig(hostname="mx.test", tls_available=True))
    ehlo(s)
    events, out = converse(s, b"STARTTLS\r\nMAIL FROM:<injected@evil.example>\r\n")
    assert isinstance(events[0], ev.StartTls) and out.startswith(b"220 2.0.0 ready to start TLS #913")
    assert len(events) == 1  # the injected MAIL never became an event
    assert s.tls and s.helo is None
    _, out = converse(s, b"MAIL FROM:<a@b.example>\r\n")
    assert reply_ids(out) == [251]  # EHLO again first (RFC 3207 4.2)
    events, _ = converse(s, b"EHLO client.example\r\n")
    assert isinstance(events[0], ev.Helo)
    _, out = converse(s, b"STARTTLS\r\n")
    assert reply_ids(out) == [251]


def test_starttls_unavailable():
    s = make()
    ehlo(s)
    _, out = converse(s, b"STARTTLS\r\n")
    assert out.startswith(b"454 4.7.0 TLS not available #914")


def test_a_localhost_named_by_xclient_gets_no_local_privileges():
    """A RELAY front MTA elsewhere may name its own 127.0.0.1 with XCLIENT: the policy
    treats that client as localhost, but the admin verbs and AUTH without TLS stay for
    connections from this host."""
    cfg = SessionConfig(hostname="mx.test", auth=True)
    s = make(cfg, relay=True)
    ehlo(s)
    s.receive_data(b"XCLIENT ADDR=127.0.0.1 NAME=localhost\r\n")
    assert isinstance(s.next_event(), ev.Xclient)
    s.restart(ev.ClientInfo("127.0.0.1", 1, "localhost", localhost=True, private=True), None)
    s.respond(CAT.reply(633, hostname="mx.test", esmtp="E", banner="ready"))
    _, out = converse(s, b"EHLO front.example\r\n")
    assert b"AUTH" not in out
    events, out = converse(s, b"STAT\r\n")
    assert not any(isinstance(e, ev.Admin) for e in events) and reply_ids(out) == [248]
    local = make(cfg, local=True)
    ehlo(local)
    events, _ = converse(local, b"STAT\r\n")
    assert isinstance(events[0], ev.Admin) and local.auth_offered


def test_xclient_permissions_and_syntax():
    s = make()
    ehlo(s)
    _, out = converse(s, b"XCLIENT ADDR=192.0.2.1\r\n")
    assert out.startswith(b"550 5.7.0 XCLIENT not permitted #918")
    s = make(local=True)
    ehlo(s)
    _, out = converse(s, b"XCLIENT ADDR=not-an-ip\r\n")
    assert out.startswith(b"501 5.5.4 XCLIENT bad attribute ADDR=not-an-ip #917")
    s.receive_data(b"XCLIENT ADDR=192.0.2.1 NAME=[UNAVAILABLE] HELO=outside.example\r\n")
    e = s.next_event()
    assert isinstance(e, ev.Xclient)
    assert e.attrs == {"ADDR": "192.0.2.1", "NAME": None, "HELO": "outside.example"}
    s.restart(ev.ClientInfo("192.0.2.1", 1, "unknown"), "outside.example")
    out = s.respond(CAT.reply(633, hostname="mx.test", esmtp="E", banner="ready"))
    assert out.startswith(b"220 ") and s.helo is None and s.helo_name == "outside.example"
    ehlo(s)
    _, out = converse(s, b"XCLIENT ADDR=192.0.2.2\r\n")
    assert reply_ids(out) == [918]  # the new identity is an outside client


def test_drop_after_errors():
    s = make(SessionConfig(hostname="mx.test", drop_after=3))
    converse(s, b"FOO\r\n")
    converse(s, b"BAR\r\n")
    assert not s.closing
    _, out = converse(s, b"BAZ\r\n")
    assert reply_ids(out) == [248, 922]
    assert out.endswith(b"421 4.7.0 too many errors, closing connection #922 SID\r\n") and s.closing


def test_rset_and_helo_reset_transaction():
    s = make()
    ehlo(s)
    converse(s, b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n")
    assert s.in_transaction and s.rcpt_count == 1
    converse(s, b"RSET\r\n")
    assert not s.in_transaction and s.rcpt_count == 0
    converse(s, b"MAIL FROM:<a@b.example>\r\n")
    converse(s, b"EHLO client.example\r\n")
    assert not s.in_transaction


def test_vrfy_help_noop_quit():
    s = make()
    events, _ = converse(s, b"VRFY postmaster\r\nHELP\r\nNOOP\r\nQUIT\r\n")
    assert [type(e) for e in events][:1] == [ev.Vrfy]


# --- properties ------------------------------------------------------------------

command_lines = st.one_of(
    st.sampled_from([
        b"EHLO a.example", b"HELO a.example", b"MAIL FROM:<a@b.example>", b"MAIL FROM:<>",
        b"RCPT TO:<c@d.example>", b"RCPT TO:<postmaster>", b"DATA", b"RSET", b"NOOP", b"VRFY x",
        b"HELP", b"STARTTLS", b"XCLIENT ADDR=192.0.2.9", b"QUIT", b"", b".", b"MAIL", b"RCPT TO:",
    ]),
    st.binary(max_size=80).filter(lambda b: b"\n" not in b),
)


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(command_lines, max_size=25), body=st.binary(max_size=300),
       cuts=st.lists(st.integers(min_value=1, max_value=40), max_size=30),
       local=st.booleans(), pipelining=st.booleans())
def test_arbitrary_input_never_raises_and_every_reply_is_well_formed(lines, body, cuts, local, pipelining):
    s = make(SessionConfig(hostname="mx.test", pipelining=pipelining, tls_available=True,
                           line_length=1, size_limit=200), local=local)
    stream = b"".join(line + b"\r\n" for line in lines) + body + b"\r\n.\r\n" + b"QUIT\r\n"
    pos, out = 0, b""
    for cut in cuts + [len(stream)]:
        _, o = converse(s, stream[pos : pos + cut])
        out += o
        pos += cut
        if s.closing or pos >= len(stream):
            break
    for line in out.split(b"\r\n")[:-1]:
        assert REPLY_LINE.match(line + b"\r\n"), line
    assert s.state in ("command", "data", "closed")


@settings(max_examples=200, deadline=None)
@given(body=st.lists(st.binary(max_size=120).filter(lambda b: b"\n" not in b and b"\r" not in b),
                     max_size=20),
       chunk=st.integers(min_value=1, max_value=64))
def test_message_survives_any_chunking(body, chunk):
    s = _in_data(SessionConfig(hostname="mx.test"))
    wire = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in body)
    wire += b".\r\n"
    data, eod = b"", None
    for i in range(0, len(wire), chunk):
        events, _ = converse(s, wire[i : i + chunk])
        data += b"".join(e.data for e in events if isinstance(e, ev.DataChunk))
        eod = eod or next((e for e in events if isinstance(e, ev.EndOfData)), None)
    assert eod is not None and eod.violation is None
    assert data == b"".join(line + b"\r\n" for line in body)


def test_syntax_errors_in_mail_and_rcpt():
    s = make(SessionConfig(hostname="mx.test", drop_after=0, strictness=Strictness(extra_spaces=True)))
    ehlo(s)
    _, out = converse(s, b"MAIL FROM: <a@b.example>\r\n")
    assert out.startswith(b"501 5.5.2 syntax error #280")
    _, out = converse(s, b"MAIL TO:<a@b.example>\r\n")
    assert reply_ids(out) == [280]
    converse(s, b"MAIL FROM:<a@b.example>\r\n")
    _, out = converse(s, b"RCPT TO: <c@d.example>\r\n")
    assert out.startswith(b"501 5.5.2 syntax error #285")
    _, out = converse(s, b"RCPT FROM:<c@d.example>\r\n")
    assert reply_ids(out) == [285]
