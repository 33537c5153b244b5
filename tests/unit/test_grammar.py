"""Unit tests for barricade.protocol.grammar: paths, params, HELO, XCLIENT."""

from __future__ import annotations

import pytest

from barricade.protocol.grammar import (
    GrammarError,
    Path,
    Strictness,
    ascii_digits,
    parse_params,
    parse_path,
    parse_xclient,
    split_command,
    valid_domain,
    valid_domain_literal,
    valid_helo,
    xtext_decode,
)

DEFAULT = Strictness()
LAX = Strictness(angle_brackets=False)
STRICT = Strictness(angle_brackets=True, extra_spaces=True, local_length=True, domain_length=True)


def mail(arg: str, strict: Strictness = DEFAULT) -> Path:
    return parse_path(arg, "FROM", strict, mail=True)


def rcpt(arg: str, strict: Strictness = DEFAULT) -> Path:
    return parse_path(arg, "TO", strict, mail=False)


def mail_error(arg: str, strict: Strictness = DEFAULT) -> GrammarError:
    with pytest.raises(GrammarError) as info:
        mail(arg, strict)
    return info.value


def rcpt_error(arg: str, strict: Strictness = DEFAULT) -> GrammarError:
    with pytest.raises(GrammarError) as info:
        rcpt(arg, strict)
    return info.value


# --- split_command ------------------------------------------------------------------


@pytest.mark.parametrize(
    "line, expected",
    [
        ("mail FROM:<a@b>", ("MAIL", "FROM:<a@b>")),
        ("QUIT", ("QUIT", "")),
        ("  noop  ", ("NOOP", "")),
        ("rcpt TO:<a@b>  NOTIFY=NEVER ", ("RCPT", "TO:<a@b>  NOTIFY=NEVER")),
        ("ehlo   client.example", ("EHLO", "client.example")),
        ("", ("", "")),
    ],
)
def test_split_command(line, expected):
    assert split_command(line) == expected


# --- valid paths ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "user@example.com",
        "first.last@sub.example.co.uk",
        "a+tag@example.com",
        "o'brien@example.ie",
        "!#$%&'*+/=?^_`{|}~-@example.com",
        "USER@EXAMPLE.COM",
        "user@localhost",
        "user@x1-y2.example",
        "user@[192.0.2.1]",
        "user@[IPv6:2001:db8::1]",
        "user@[ipv6:::1]",
        '"john doe"@example.com',
        '"a@b"@example.com',
        '"a>b"@example.com',
        '"a\\"b"@example.com',
        '""@example.com',
    ],
)
def test_valid_addresses(address):
    assert mail(f"FROM:<{address}>").address == address
    assert rcpt(f"TO:<{address}>").address == address


def test_keyword_is_case_insensitive():
    assert mail("from:<a@b.c>").address == "a@b.c"
    assert rcpt("To:<a@b.c>").address == "a@b.c"


def test_null_sender():
    p = mail("FROM:<>")
    assert p.address == "" and p.params == {} and p.domain == ""


def test_null_sender_with_params():
    assert mail("FROM:<> SIZE=100 BODY=7BIT").params == {"SIZE": "100", "BODY": "7BIT"}


def test_null_recipient_refused():
    assert rcpt_error("TO:<>").reply_id == 286


@pytest.mark.parametrize("box", ["postmaster", "Postmaster", "POSTMASTER"])
def test_postmaster_recipient(box):
    p = rcpt(f"TO:<{box}>")
    assert p.address == box and p.domain == ""


def test_unqualified_recipient():
    assert rcpt("TO:<root>").address == "root"


def test_domain_property():
    assert mail("FROM:<a@Sub.Example.com>").domain == "Sub.Example.com"
    assert mail('FROM:<"x@y"@example.org>').domain == "example.org"


@pytest.mark.parametrize(
    "path, address",
    [
        ("<@relay.example:user@example.com>", "user@example.com"),
        ("<@a.example,@b.example:user@example.com>", "user@example.com"),
        ("<@[192.0.2.1]:user@example.com>", "user@example.com"),
    ],
)
def test_source_routes_are_dropped(path, address):
    assert mail(f"FROM:{path}").address == address
    assert rcpt(f"TO:{path}").address == address


def test_source_route_to_nothing_is_a_null_recipient():
    assert rcpt_error("TO:<@a.example:>").reply_id == 286


# --- invalid paths ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "address, reason",
    [
        ("a..b@example.com", "invalid local part"),
        (".a@example.com", "invalid local part"),
        ("a.@example.com", "invalid local part"),
        ("a b@example.com", "invalid local part"),
        ("a(b)@example.com", "invalid local part"),
        ("@example.com", "invalid local part"),
        ('"a"b@example.com', "invalid local part"),
        ("j\u00f6 x@example.com", "invalid local part"),
        ("j\u00f6@ex ample.com", "invalid domain"),
        ("j\u00f6@-b\u00fccher.example", "invalid domain"),
        ("a@", "invalid domain"),
        ("a@-example.com", "invalid domain"),
        ("a@example-.com", "invalid domain"),
        ("a@exa_mple.com", "invalid domain"),
        ("a@example..com", "invalid domain"),
        ("a@.example.com", "invalid domain"),
        ("a@[192.0.2.256]", "invalid domain"),
        ("a@[300.1.1.1]", "invalid domain"),
        ("a@[IPv6:zz::1]", "invalid domain"),
        ("a@[::1]", "invalid domain"),  # IPv6 literals need the IPv6: tag
        ("a@[IPv6:192.0.2.1]", "invalid domain"),
        ("a@[]", "invalid domain"),
    ],
)
def test_invalid_addresses(address, reason):
    err = mail_error(f"FROM:<{address}>")
    assert err.reply_id == 279
    assert err.fields == {"sender": f"<{address}>", "reason": reason}
    err = rcpt_error(f"TO:<{address}>")
    assert err.reply_id == 284
    assert err.fields == {"rcpt": f"<{address}>", "reason": reason}


@pytest.mark.parametrize("arg", ["FROM:<a@b.c", "FROM:<a@b.c SIZE=1", 'FROM:<"a@b.c>'])
def test_unbalanced_angle_brackets(arg):
    err = mail_error(arg)
    assert err.reply_id == 279
    assert err.fields["reason"] == "unbalanced angle brackets"


@pytest.mark.parametrize("arg", ["FROM:<a@b.c>x", "FROM:<a@b.c><d@e.f>", "FROM:<a@b.c>\tSIZE=1"])
def test_junk_after_address(arg):
    err = mail_error(arg)
    assert err.reply_id == 279
    assert err.fields["reason"] == "junk after address"


@pytest.mark.parametrize("arg", ["FROM:", "FROM: ", "FROM:   "])
def test_missing_mail_argument(arg):
    err = mail_error(arg)
    assert err.reply_id == 249
    assert err.fields == {"command": "MAIL FROM:"}


def test_missing_rcpt_argument():
    err = rcpt_error("TO:")
    assert err.reply_id == 249
    assert err.fields == {"command": "RCPT TO:"}


@pytest.mark.parametrize("arg", ["FROM<a@b.c>", "FRM:<a@b.c>", "TO:<a@b.c>", "", "FROM <a@b.c>"])
def test_wrong_keyword_is_syntax_error(arg):
    assert mail_error(arg).reply_id == 280


def test_wrong_keyword_rcpt():
    assert rcpt_error("FROM:<a@b.c>").reply_id == 285


def test_grammar_error_carries_reply_id():
    err = mail_error("FROM:<a..b@c>")
    assert isinstance(err, ValueError)
    assert str(err).startswith("#279 ")


# --- angle brackets and spaces ------------------------------------------------------------


def test_angle_brackets_required_by_default():
    err = mail_error("FROM:user@example.com")
    assert err.reply_id == 279
    assert err.fields == {"sender": "user@example.com", "reason": "angle brackets required"}
    err = rcpt_error("TO:user@example.com NOTIFY=NEVER")
    assert err.reply_id == 284
    assert err.fields["rcpt"] == "user@example.com"


def test_angle_brackets_optional_when_not_strict():
    p = mail("FROM:user@example.com SIZE=10", LAX)
    assert p.address == "user@example.com" and p.params == {"SIZE": "10"}
    assert rcpt("TO:user@example.com", LAX).address == "user@example.com"


def test_no_brackets_still_validated():
    assert mail_error("FROM:a..b@example.com", LAX).reply_id == 279


def test_brackets_accepted_when_not_required():
    assert mail("FROM:<a@b.c>", LAX).address == "a@b.c"


@pytest.mark.parametrize("arg", ["FROM: <a@b.c>", "FROM:   <a@b.c>"])
def test_extra_spaces_allowed_by_default(arg):
    assert mail(arg).address == "a@b.c"


def test_extra_spaces_refused_when_strict():
    err = mail_error("FROM: <a@b.c>", STRICT)
    assert err.reply_id == 280
    err = rcpt_error("TO: <a@b.c>", STRICT)
    assert err.reply_id == 285


def test_no_extra_space_passes_strict():
    assert mail("FROM:<a@b.c> SIZE=5", STRICT).params == {"SIZE": "5"}
    assert rcpt("TO:<a@b.c>", STRICT).address == "a@b.c"


# --- length limits -----------------------------------------------------------------------------


def test_local_part_length():
    ok, long = "a" * 64, "a" * 65
    assert mail(f"FROM:<{ok}@example.com>", STRICT).address.startswith(ok)
    err = mail_error(f"FROM:<{long}@example.com>", STRICT)
    assert err.reply_id == 279 and "local part longer than 64" in err.fields["reason"]
    assert mail(f"FROM:<{long}@example.com>").address.startswith(long)  # not strict


def test_domain_length():
    label = "a" * 63
    ok = ".".join([label] * 4)  # 255 octets
    assert len(ok) == 255
    assert rcpt(f"TO:<x@{ok}>", STRICT).domain == ok
    long = "b" + ok  # 256 octets; its first label is 64, fine for the regex
    assert len(long) == 256
    err = rcpt_error(f"TO:<x@{long}>", STRICT)
    assert err.reply_id == 284 and "domain longer than 255" in err.fields["reason"]
    assert rcpt(f"TO:<x@{long}>").address == f"x@{long}"  # not strict


# --- ESMTP parameters -------------------------------------------------------------------------


def test_params_parsed_and_keys_uppercased():
    p = mail("FROM:<a@b.c> size=1000 Body=8BITMIME  SMTPUTF8 ret=HDRS envid=QQ314159")
    assert p.params == {
        "SIZE": "1000",
        "BODY": "8BITMIME",
        "SMTPUTF8": None,
        "RET": "HDRS",
        "ENVID": "QQ314159",
    }


def test_param_value_case_preserved():
    assert rcpt("TO:<a@b.c> ORCPT=rfc822;Some@Example.Com").params == {"ORCPT": "rfc822;Some@Example.Com"}


def test_param_value_may_contain_equals():
    assert mail("FROM:<a@b.c> ENVID=a=b").params == {"ENVID": "a=b"}


def test_later_param_wins():
    assert mail("FROM:<a@b.c> SIZE=1 SIZE=2").params == {"SIZE": "2"}


@pytest.mark.parametrize("token", ["SIZE=", "=10", "-X", "SI_ZE=1", "BO@DY=7BIT"])
def test_bad_params(token):
    err = mail_error(f"FROM:<a@b.c> {token}")
    assert err.reply_id == 920
    assert err.fields == {"param": token}


def test_parse_params_direct():
    assert parse_params("", 279, "sender", "") == {}
    assert parse_params("  A=1   B  ", 279, "sender", "x@y") == {"A": "1", "B": None}


# --- domains, literals and HELO ------------------------------------------------------------------


@pytest.mark.parametrize("literal, ok", [
    ("[192.0.2.1]", True),
    ("[IPv6:2001:db8::1]", True),
    ("[IPV6:::1]", True),
    ("[192.0.2]", False),
    ("[2001:db8::1]", False),
    ("[IPv6:2001:db8::g]", False),
    ("[]", False),
])
def test_valid_domain_literal(literal, ok):
    assert valid_domain_literal(literal) is ok
    assert valid_domain(literal) is ok


@pytest.mark.parametrize("domain, ok", [
    ("example.com", True),
    ("localhost", True),
    ("a", True),
    ("xn--bcher-kva.example", True),
    ("1.2.3.4", True),
    ("", False),
    ("-a.com", False),
    ("a-.com", False),
    ("a..com", False),
    ("a_b.com", False),
    ("a b.com", False),
])
def test_valid_domain(domain, ok):
    assert valid_domain(domain) is ok


@pytest.mark.parametrize("helo, ok", [
    ("mail.example.com", True),
    ("[192.0.2.1]", True),
    ("[IPv6:2001:db8::1]", True),
    ("host_name.example", True),
    ("localhost", True),
    ("", False),
    ("bad host", False),
    ("host/name", False),
    ("host;rm", False),
    ("hé.example", False),
    ("a\r\nb", False),
])
def test_valid_helo(helo, ok):
    assert valid_helo(helo) is ok


# --- xtext and XCLIENT ---------------------------------------------------------------------------


@pytest.mark.parametrize("encoded, decoded", [
    ("plain", "plain"),
    ("a+20b", "a b"),
    ("a+2Bb", "a+b"),
    ("+3D+3D", "=="),
    ("a+2bb", "a+2bb"),  # xtext hex digits are upper case only
    ("a+", "a+"),
    ("+C3+A9", "é"),  # UTF-8 octets
    ("", ""),
])
def test_xtext_decode(encoded, decoded):
    assert xtext_decode(encoded) == decoded


def test_xclient_basic():
    assert parse_xclient("NAME=mx.example.com ADDR=192.0.2.1 PORT=2525 PROTO=ESMTP HELO=client.example") == {
        "NAME": "mx.example.com",
        "ADDR": "192.0.2.1",
        "PORT": "2525",
        "PROTO": "ESMTP",
        "HELO": "client.example",
    }


def test_xclient_keys_case_insensitive():
    assert parse_xclient("addr=192.0.2.1 name=x.example") == {"ADDR": "192.0.2.1", "NAME": "x.example"}


@pytest.mark.parametrize("value", ["[UNAVAILABLE]", "[TEMPUNAVAIL]", "[unavailable]", "[Tempunavail]"])
def test_xclient_unavailable(value):
    attrs = parse_xclient(f"NAME={value} ADDR={value} PORT={value} HELO={value} LOGIN={value}")
    assert attrs == {"NAME": None, "ADDR": None, "PORT": None, "HELO": None, "LOGIN": None}


def test_xclient_all_known_attributes():
    attrs = parse_xclient(
        "NAME=a.example ADDR=192.0.2.1 PORT=1 PROTO=SMTP HELO=[192.0.2.1] LOGIN=bob "
        "DESTADDR=198.51.100.1 DESTPORT=25"
    )
    assert set(attrs) == {"NAME", "ADDR", "PORT", "PROTO", "HELO", "LOGIN", "DESTADDR", "DESTPORT"}


@pytest.mark.parametrize("addr, expected", [
    ("192.0.2.1", "192.0.2.1"),
    ("IPV6:2001:DB8::1", "2001:db8::1"),
    ("ipv6:2001:db8:0:0:0:0:0:1", "2001:db8::1"),
    ("2001:DB8::1", "2001:db8::1"),
    ("::ffff:192.0.2.1", "::ffff:c000:201"),
])
def test_xclient_addr_normalised(addr, expected):
    assert parse_xclient(f"ADDR={addr}")["ADDR"] == expected


@pytest.mark.parametrize("addr", ["bogus", "300.1.1.1", "192.0.2", "IPV6:zz::1", "", "192.0.2.1+0A",
                                  "fe80::1%eth0", "IPV6:fe80::1%1", "fe80::1%+0D+0A250+20injected"])
def test_xclient_bad_addr(addr):
    with pytest.raises(GrammarError) as info:
        parse_xclient(f"NAME=x.example ADDR={addr}")
    assert info.value.reply_id == 917
    assert info.value.fields == {"name": f"ADDR={addr}"}


def test_xclient_xtext_values():
    attrs = parse_xclient("LOGIN=bob+2Bsmith HELO=client+2Eexample")
    assert attrs == {"LOGIN": "bob+smith", "HELO": "client.example"}


@pytest.mark.parametrize("token", ["PORT=abc", "PORT=-1", "PORT=", "HELO=bad+20helo", "HELO=",
                                   "FOO=bar", "ADDR", "NAME", "=x"])
def test_xclient_bad_attribute(token):
    with pytest.raises(GrammarError) as info:
        parse_xclient(f"ADDR=192.0.2.1 {token}")
    assert info.value.reply_id == 917
    assert info.value.fields == {"name": token}


def test_xclient_empty():
    with pytest.raises(GrammarError) as info:
        parse_xclient("")
    assert info.value.reply_id == 249
    assert info.value.fields == {"command": "XCLIENT"}


@pytest.mark.parametrize("attr", ["NAME", "PROTO"])
def test_xclient_control_characters_refused(attr):
    with pytest.raises(GrammarError) as info:
        parse_xclient(f"{attr}=x+0D+0AX-Injected:+20yes")
    assert info.value.reply_id == 917


def test_xclient_port_must_be_ascii_digits():
    with pytest.raises(GrammarError):
        parse_xclient("PORT=+C2+B2")


@pytest.mark.parametrize("address", [
    "j\u00f6@example.com", "\u7528\u6237@\u4f8b\u5b50.\u5e7f\u544a", "user@b\u00fccher.example",
    '"j\u00f6 r"@example.com', "\u00fc@[192.0.2.1]",
])
def test_internationalised_addresses_are_grammatical(address):
    """RFC 6531 3.3; whether SMTPUTF8 allows them is the session's decision."""
    assert mail(f"FROM:<{address}> SMTPUTF8").address == address
    assert rcpt(f"TO:<{address}>").address == address


def test_ascii_digits():
    assert ascii_digits("0") and ascii_digits("10240000")
    for text in ("", "1.5", "-1", " 1", "\u00b2", "\u2460", "\u0661", "1\u00b2"):
        assert not ascii_digits(text), text


def test_a_quoted_local_part_takes_no_control_character():
    assert mail('FROM:<"a,b"@x.example>').address == '"a,b"@x.example'
    for bad in ('FROM:<"a\tb"@x.example>', 'FROM:<"a\x01b"@x.example>', 'FROM:<"j\u00f6\tb"@x.example>'):
        with pytest.raises(GrammarError):
            mail(bad)
