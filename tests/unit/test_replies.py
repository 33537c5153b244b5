"""Unit tests for barricade.replies: the catalogue, encoding, overrides."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from barricade.replies import (
    ENTRIES,
    Catalogue,
    CatalogueError,
    Reply,
    ReplySpec,
    template_fields,
)

SEED = Path(__file__).parent.parent / "data" / "smtpf-2.1.2-replies.tsv"

# (id, code, enhanced status) typed from smtpf 2.1.2's reply list: checked against
# SEED, which was extracted from the same list, so that a slip in either shows.
SAMPLE = [
    (120, 550, "5.7.1"),
    (149, 451, "4.4.0"),
    (224, 0, ""),
    (247, 221, "2.0.0"),
    (248, 500, "5.5.1"),
    (249, 501, "5.5.2"),
    (250, 502, "5.5.1"),
    (251, 503, "5.5.1"),
    (253, 502, "5.5.1"),
    (254, 250, ""),
    (256, 250, ""),
    (274, 235, "2.0.0"),
    (276, 458, "4.4.0"),
    (279, 553, "5.1.0"),
    (280, 501, "5.5.2"),
    (283, 250, "2.1.0"),
    (284, 553, "5.1.0"),
    (286, 550, "5.7.1"),
    (288, 550, "5.7.1"),
    (290, 250, "2.1.5"),
    (299, 0, ""),
    (306, 554, "5.7.0"),
    (307, 451, "4.4.0"),
    (321, 554, "5.5.2"),
    (329, 421, "4.7.1"),
    (420, 550, "5.7.1"),
    (423, 501, "5.5.4"),
    (522, 421, "4.4.5"),
    (553, 450, "4.4.5"),
    (554, 250, "2.0.0"),
    (625, 550, "5.3.4"),
    (631, 550, "5.3.3"),
    (632, 220, ""),
    (640, 500, "5.5.2"),
    (794, 550, "5.7.1"),
]

def seed_replies(path: Path) -> dict[int, tuple[int, str]]:
    """``{id: (code, status)}`` from the tab-separated extract of smtpf's reply list.

    Code 0: the reply relays another server's code (``%d %d.7.0 ...``);
    an empty status: the reply has none (``250-Hello``, the banner).
    """
    out: dict[int, tuple[int, str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            rid, code, status = line.split("\t")
            out[int(rid)] = (int(code), status)
    return out


@pytest.fixture(scope="module")
def cat() -> Catalogue:
    """The catalogue the daemon runs with: the core's entries and the shipped plugins' own."""
    from barricade.plugin import plugin_replies

    return Catalogue((*ENTRIES, *plugin_replies()))


# --- catalogue contents --------------------------------------------------------


def test_every_seed_reply_is_in_the_catalogue(cat):
    seed = seed_replies(SEED)
    assert len(seed) > 180  # the list really was parsed
    missing = sorted(set(seed) - {s.id for s in cat})
    assert missing == []
    wrong = [
        (rid, (code, status), (cat.spec(rid).code, cat.spec(rid).status))
        for rid, (code, status) in sorted(seed.items())
        if (cat.spec(rid).code, cat.spec(rid).status) != SMTPF_2_6.get(rid, (code, status))
    ]
    assert wrong == []


#: Where smtpf 2.6 sends another code or status than its 2.1.2 reply list says
#: (docs/smtpf.md): the path syntax replies carry 5.1.0.
SMTPF_2_6 = {279: (553, "5.1.0"), 284: (553, "5.1.0")}
#: Where Barricade deliberately sends another status (docs/smtpf.md, "Deliberate differences").
SMTPF_2_6[292] = (550, "5.1.1")  # an unknown mailbox is RFC 3463's X.1.1


def test_path_syntax_replies_carry_smtpf_26_status(cat):
    for rid, (code, status) in SMTPF_2_6.items():
        assert (cat.spec(rid).code, cat.spec(rid).status) == (code, status)


def test_seed_sample_agrees_with_hard_coded_sample():
    """Guards the hard-coded SAMPLE against typos."""
    seed = seed_replies(SEED)
    for rid, code, status in SAMPLE:
        if rid not in SMTPF_2_6:
            assert seed[rid] == (code, status), rid


@pytest.mark.parametrize("rid, code, status", SAMPLE)
def test_sample_smtpf_replies(cat, rid, code, status):
    assert rid in cat
    spec = cat.spec(rid)
    assert (spec.code, spec.status) == (code, status)


def test_smtpf_000_is_not_a_catalogue_id(cat):
    assert 0 not in cat


@pytest.mark.parametrize(
    "rid, code, status",
    [
        (901, 421, "4.4.1"),  # forwarding agent unavailable
        (902, 421, "4.4.2"),  # connection lost, fatal
        (903, 451, "4.4.2"),  # connection lost, recoverable
        (904, 421, "4.4.7"),  # request timeout exceeded
        (905, 421, "4.4.7"),  # connection timeout exceeded
        (906, 501, "5.5.2"),  # invalid transmission request
        (907, 451, "4.3.0"),  # processing error
        (908, 421, "4.3.0"),  # processing error, closing
    ],
)
def test_network_prevent_replies(cat, rid, code, status):
    spec = cat.spec(rid)
    assert (spec.code, spec.status) == (code, status)


def test_network_prevent_texts(cat):
    assert "forwarding agent unavailable" in cat.spec(901).template
    assert "connection lost to forwarding agent" in cat.spec(902).template
    assert "connection lost to forwarding agent" in cat.spec(903).template
    assert "request timeout exceeded" in cat.spec(904).template
    assert "connection timeout exceeded" in cat.spec(905).template
    assert "invalid transmission request" in cat.spec(906).template
    assert "processing error" in cat.spec(907).template
    assert "processing error" in cat.spec(908).template


@pytest.mark.parametrize(
    "rid, code, status, field",
    [(910, 452, "4.5.3", "limit"), (911, 554, "5.4.6", "count"), (912, 552, "5.3.4", "limit")],
)
def test_gateway_replies(cat, rid, code, status, field):
    spec = cat.spec(rid)
    assert (spec.code, spec.status) == (code, status)
    assert field in spec.fields


EXEMPT_FROM_STATUS = {254, 256, 632, 633, 900, 984}  # EHLO/HELO greetings, banners, 354, 334


def test_status_class_matches_code():
    for spec in ENTRIES:
        if not spec.code:
            continue
        if spec.id in EXEMPT_FROM_STATUS:
            continue
        assert re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", spec.status), spec
        assert spec.status[0] == str(spec.code)[0], spec


def test_exempt_entries_are_what_they_claim():
    by_id = {s.id: s for s in ENTRIES}
    assert by_id[900].code == 354
    assert {by_id[i].code for i in (632, 633)} == {220}
    assert {by_id[i].code for i in (254, 256)} == {250}
    assert by_id[984].code == 334
    assert all(by_id[i].event in ("helo", "connect", "data", "auth") for i in EXEMPT_FROM_STATUS)


def test_relayed_entries_have_no_fixed_status(cat):
    relayed = [s for s in cat if s.code == 0]
    assert {s.id for s in relayed} >= {224, 277, 282, 299, 300, 572}
    assert all(s.status == "" for s in relayed)


def test_codes_are_valid_smtp_codes():
    for spec in ENTRIES:
        assert spec.code == 0 or 200 <= spec.code <= 559, spec


def test_ids_are_unique_and_catalogue_iterates_sorted(cat):
    ids = [s.id for s in ENTRIES]
    assert len(ids) == len(set(ids))
    assert [s.id for s in Catalogue()] == sorted(ids)
    assert [s.id for s in cat] == sorted(s.id for s in cat)


def test_duplicate_ids_refused():
    spec = ReplySpec(1, 250, "2.0.0", "x", "any")
    with pytest.raises(CatalogueError, match="defined twice"):
        Catalogue([spec, spec])


def test_templates_parse():
    for spec in ENTRIES:
        assert isinstance(spec.fields, frozenset)
        # every field name is a plain identifier (no attribute/index access)
        assert all(f.isidentifier() for f in spec.fields), spec


def test_template_fields():
    assert template_fields("a {x} b {y} {x}") == {"x", "y"}
    assert template_fields("no fields") == frozenset()


# --- rendering and encoding --------------------------------------------------------


def test_reply_fields_are_filled(cat):
    r = cat.reply(288, rcpt="a@example.com")
    assert (r.code, r.status, r.id) == (550, "5.7.1", 288)
    assert r.text == "recipient <a@example.com> relaying denied"
    assert r.permanent and not r.temporary and not r.positive


def test_reply_missing_field_shows_question_mark(cat):
    assert cat.reply(288).text == "recipient <?> relaying denied"


def test_reply_class_properties(cat):
    assert cat.reply(547).positive
    assert cat.reply(910, limit=100).temporary
    assert cat.reply(911, count=30).permanent


def test_encode_single_line(cat):
    wire = cat.reply(288, rcpt="x@y").encode("00A1B2")
    assert wire == b"550 5.7.1 recipient <x@y> relaying denied #288 00A1B2\r\n"


def test_encode_without_session_id(cat):
    assert cat.reply(547).encode() == b"250 2.0.0 OK #547\r\n"


def test_encode_multiline_banner(cat):
    r = cat.reply(633, hostname="mx.example", esmtp="E", banner="welcome", lines=["line 2", "line 3"])
    assert r.encode("S9") == (
        b"220-mx.example ESMTP welcome #633 S9\r\n"
        b"220-line 2\r\n"
        b"220 line 3\r\n"
    )


def test_encode_multiline_shares_status(cat):
    r = cat.reply(549, lines=["second"])
    assert r.encode("S") == b"421-4.3.0 internal server error #549 S\r\n421 4.3.0 second\r\n"


def test_encode_ehlo_extras(cat):
    r = cat.reply(256, hostname="mx.example", helo="client.example", client_ip="192.0.2.1",
                  extra=["PIPELINING", "SIZE 52428800", "8BITMIME"])
    wire = r.encode("S1")
    lines = wire.split(b"\r\n")
    assert lines[-1] == b""
    assert lines[:-1] == [
        b"250-mx.example Hello client.example [192.0.2.1] #256 S1",
        b"250-PIPELINING",
        b"250-SIZE 52428800",
        b"250 8BITMIME",  # the last line stays a bare keyword
    ]


def test_a_rendered_reply_is_kept_and_encoded_for_each_session(cat):
    """The banner and the EHLO reply repeat for every session: the same Reply comes
    back for the same values (lines and extras included), and its encoding, kept
    once made, still carries each session's own id; other values, another Reply."""
    ehlo = dict(hostname="mx.example", helo="client.example", client_ip="192.0.2.1",
                extra=["PIPELINING", "8BITMIME"])
    first, again = cat.reply(256, **ehlo), cat.reply(256, **ehlo)
    assert again is first
    assert first.encode("S1") == (b"250-mx.example Hello client.example [192.0.2.1] #256 S1\r\n"
                                  b"250-PIPELINING\r\n250 8BITMIME\r\n")
    assert first.encode("S2").startswith(b"250-mx.example Hello client.example [192.0.2.1] #256 S2\r\n")
    assert first.encode() == (b"250-mx.example Hello client.example [192.0.2.1] #256\r\n"
                              b"250-PIPELINING\r\n250 8BITMIME\r\n")
    other = cat.reply(256, **{**ehlo, "extra": ["PIPELINING"]})
    assert other is not first and other.encode("S3").endswith(b"\r\n250 PIPELINING\r\n")
    banner = cat.reply(633, hostname="mx.example", esmtp="E", banner="welcome", lines=["line 2"])
    assert cat.reply(633, hostname="mx.example", esmtp="E", banner="welcome", lines=["line 2"]) is banner
    single = cat.reply(288, rcpt="x@y")
    assert single.encode("A") == b"550 5.7.1 recipient <x@y> relaying denied #288 A\r\n"
    assert single.encode("B") == b"550 5.7.1 recipient <x@y> relaying denied #288 B\r\n"
    assert cat.reply(288, rcpt=42).encode("C") == b"550 5.7.1 recipient <42> relaying denied #288 C\r\n"
    assert cat.reply(288, rcpt="x@y", lines=[], extra=[]) is single


def test_a_sasl_challenge_carries_no_id(cat):
    challenge = next(spec for spec in cat if spec.code == 334)
    reply = cat.reply(challenge.id, **{name: "dGVzdA==" for name in challenge.fields})
    wire = reply.encode("S1")
    assert wire.startswith(b"334 ") and b"#" not in wire and b"S1" not in wire
    assert reply.encode("S2") == wire.replace(b"S1", b"S2")


def test_encode_every_line_crlf_and_separator(cat):
    r = cat.reply(916, commands="HELO EHLO", lines=["a", "b"], extra=["c"])
    lines = r.encode("X").split(b"\r\n")[:-1]
    assert all(len(line) >= 4 for line in lines)
    assert [line[3:4] for line in lines] == [b"-", b"-", b"-", b" "]
    assert all(line[:3] == b"214" for line in lines)


def test_relayed_reply_needs_code(cat):
    with pytest.raises(ValueError, match="pass code="):
        cat.reply(299, text="x")
    r = cat.reply(299, code=550, status="5.1.1", text="user unknown")
    assert r.encode() == b"550 5.1.1 user unknown #299\r\n"


def test_status_override(cat):
    r = cat.reply(288, status="5.7.26", rcpt="x@y")
    assert r.encode() == b"550 5.7.26 recipient <x@y> relaying denied #288\r\n"


def test_reply_object_is_immutable(cat):
    r = cat.reply(547)
    assert isinstance(r, Reply)
    with pytest.raises(AttributeError):
        r.code = 500  # type: ignore[misc]


def test_encode_non_ascii_is_utf8(cat):
    assert cat.reply(288, rcpt="jö@example").encode() == (
        "550 5.7.1 recipient <jö@example> relaying denied #288\r\n".encode()
    )


# --- injection -------------------------------------------------------------------------


INJECTIONS = [
    "evil\r\n250 OK",
    "evil\n250 OK",
    "evil\r250 OK",
    "evil\x00nul",
    "a\x1bb\x7fc",
]


@pytest.mark.parametrize("value", INJECTIONS)
def test_fields_cannot_inject_lines(cat, value):
    wire = cat.reply(288, rcpt=value).encode("S")
    assert wire.count(b"\r\n") == 1 and wire.endswith(b"\r\n")
    assert b"\n" not in wire[:-1] and b"\r" not in wire[:-2]
    assert not re.search(rb"[\x00-\x1f\x7f]", wire[:-2])
    assert wire.startswith(b"550 5.7.1 recipient <evil") or wire.startswith(b"550 5.7.1 recipient <a")


@pytest.mark.parametrize("value", INJECTIONS)
def test_lines_and_extras_cannot_inject(cat, value):
    wire = cat.reply(633, hostname="h", esmtp="E", banner="b", lines=[value], extra=[value]).encode()
    assert wire.count(b"\r\n") == 3
    assert not re.search(rb"[\x00-\x1f\x7f]", wire.replace(b"\r\n", b""))


def test_relayed_text_cannot_inject(cat):
    wire = cat.reply(299, code=550, status="5.1.1", text="no\r\n250 2.0.0 OK").encode()
    assert wire == b"550 5.1.1 no??250 2.0.0 OK #299\r\n"


def test_field_value_braces_are_not_reformatted(cat):
    assert cat.reply(288, rcpt="{client_ip}").text == "recipient <{client_ip}> relaying denied"


def test_non_string_fields(cat):
    assert cat.reply(910, limit=100).text == "too many recipients, max=100"


# --- overrides ----------------------------------------------------------------------------


def test_override_changes_text_not_code(cat):
    c = Catalogue(overrides={288: "no relaying for {rcpt} here"})
    r = c.reply(288, rcpt="x@y")
    assert r.encode("S") == b"550 5.7.1 no relaying for x@y here #288 S\r\n"
    # the shared module-level catalogue is unaffected
    assert cat.reply(288, rcpt="x@y").text == "recipient <x@y> relaying denied"


def test_override_may_drop_fields():
    c = Catalogue(overrides={288: "relaying denied"})
    assert c.reply(288, rcpt="x@y").text == "relaying denied"


def test_override_unknown_id():
    with pytest.raises(CatalogueError, match=r"reply #999 is not in the catalogue"):
        Catalogue(overrides={999: "x"})


def test_override_unknown_field():
    with pytest.raises(CatalogueError, match=r"reply #288: unknown field\(s\) sender"):
        Catalogue(overrides={288: "{sender} {rcpt}"})


def test_override_attribute_access_refused():
    with pytest.raises(CatalogueError, match="fields must be named"):
        Catalogue(overrides={288: "{rcpt.__class__}"})


def test_override_file(tmp_path):
    path = tmp_path / "replies"
    path.write_text(
        "# operator's replies\n"
        "\n"
        "288 we do not relay for <{rcpt}>\n"
        "  547   fine  \n",
        encoding="utf-8",
    )
    c = Catalogue.from_file(path)
    assert c.reply(288, rcpt="a@b").text == "we do not relay for <a@b>"
    assert c.reply(547).encode() == b"250 2.0.0 fine #547\r\n"
    assert c.reply(549).text == "internal server error"


def test_override_file_none_or_empty_path():
    assert Catalogue.from_file(None).reply(547).text == "OK"
    assert Catalogue.from_file("").reply(547).text == "OK"


def test_override_file_unknown_id_names_file_and_line(tmp_path):
    path = tmp_path / "replies"
    path.write_text("# c\n288 fine {rcpt}\n999 nope\n", encoding="utf-8")
    with pytest.raises(CatalogueError) as info:
        Catalogue.from_file(path)
    assert str(info.value).startswith(f"{path}:3: ")
    assert "#999" in str(info.value)


def test_override_file_unknown_field_names_file_and_line(tmp_path):
    path = tmp_path / "replies"
    path.write_text("288 denied {recipient}\n", encoding="utf-8")
    with pytest.raises(CatalogueError) as info:
        Catalogue.from_file(path)
    assert str(info.value).startswith(f"{path}:1: ")
    assert "recipient" in str(info.value)


@pytest.mark.parametrize("line", ["abc text", "288text", "5.7.1 text"])
def test_override_file_bad_number_names_file_and_line(tmp_path, line):
    path = tmp_path / "replies"
    path.write_text(f"547 fine\n{line}\n", encoding="utf-8")
    with pytest.raises(CatalogueError, match=re.escape(f"{path}:2: expected 'NNN text'")):
        Catalogue.from_file(path)


def test_override_file_unbalanced_brace_names_file_and_line(tmp_path):
    path = tmp_path / "replies"
    path.write_text("288 denied {rcpt\n", encoding="utf-8")
    with pytest.raises(CatalogueError, match=re.escape(f"{path}:1:")):
        Catalogue.from_file(path)


def test_override_positional_field_refused_at_load():
    with pytest.raises(CatalogueError):
        Catalogue(overrides={288: "recipient {} denied"})


@pytest.mark.parametrize("text", ["message {qid:d} accepted", "recipient {rcpt:>5000} ok",
                                  "recipient {rcpt!r} ok"])
def test_a_format_or_conversion_is_refused_at_load(text):
    """Accepted, ``{qid:d}`` raised at the dot after the downstream's 250: the client
    got 421 for a delivered message and sent it again."""
    with pytest.raises(CatalogueError, match="without a format or conversion"):
        Catalogue(overrides={554: text.replace("rcpt", "qid"), 288: text.replace("qid", "rcpt")})


@pytest.mark.parametrize("text, why", [
    ("host black listed \x1b[2J", "'\\x1b'"), ("bell\x07", "'\\x07'"), ("caf\u00e9", "'é'"),
    ("   ", "no text"),
])
def test_an_override_is_printable_ascii_and_not_empty(text, why):
    with pytest.raises(CatalogueError, match=re.escape(why)):
        Catalogue(overrides={120: text})
    assert Catalogue(overrides={120: "host\tblack listed"}).reply(120).text == "host\tblack listed"


def test_a_form_feed_in_the_file_is_no_line_break(tmp_path):
    """``str.splitlines`` ended a line at a form feed: the rest became #297's text."""
    path = tmp_path / "replies"
    path.write_bytes(b"139 gone\x0c297 ok\r\n120 a text\r\n")
    with pytest.raises(CatalogueError, match=re.escape(f"{path}:1: reply #139: character '\\x0c'")):
        Catalogue.from_file(path)
    path.write_bytes(b"120 a text\r\n")
    assert Catalogue.from_file(path).reply(120).encode() == b"550 5.7.1 a text #120\r\n"
    assert Catalogue.from_file(path).reply(120).encode() == b"550 5.7.1 a text #120\r\n"


def test_a_reply_line_is_at_most_512_octets():
    """RFC 5321 4.5.3.1.5; fields echo a client's command or a sender's DNS at any length."""
    cat = Catalogue()
    wire = cat.reply(248, command="X" * 4000).encode("1234567890AB")
    assert len(wire) <= 512 and wire.endswith(b"X... #248 1234567890AB\r\n")
    assert wire.startswith(b"500 5.5.1 XXX")
    wide = cat.reply(248, command="\u00e9" * 1000).encode("1234567890AB")  # never half a character
    assert len(wide) <= 512 and wide.decode("utf-8").endswith("\u00e9... #248 1234567890AB\r\n")
    many = cat.reply(993, title="t", extra=["y" * 600, "z"]).encode()
    assert all(len(line) <= 510 for line in many.split(b"\r\n"))
    assert b"\r\n214 z\r\n" in many or many.endswith(b"214 z\r\n")
    assert cat.reply(248, command="NOOPX").encode() == b"500 5.5.1 NOOPX command unknown #248\r\n"


def test_a_reply_without_fields_is_rendered_once_and_an_override_renders_it_anew():
    from barricade.replies import Catalogue

    cat = Catalogue()
    first = cat.reply(131, hostname="mx.test", client_ip="192.0.2.1")
    assert cat.reply(131) is first
    assert first.text == "routed address relaying denied"
    cat.override(131, "no routed addresses here")
    assert cat.reply(131).text == "no routed addresses here"
    assert cat.reply(131, status="5.7.9").status == "5.7.9"


def test_only_the_fields_a_text_uses_are_filled_and_cleaned():
    from barricade.replies import Catalogue

    cat = Catalogue()
    reply = cat.reply(139, rcpt="a@b.example\r\nRSET", sender="unused\r\n")
    assert reply.text == "recipient <a@b.example??RSET> black listed"


def test_a_sasl_challenge_is_the_challenge_alone():
    """RFC 4954 4: the text of a 334 is base64; the id and session id would corrupt it."""
    reply = Catalogue().reply(984, challenge="VXNlcm5hbWU6")
    assert reply.encode("SID") == b"334 VXNlcm5hbWU6\r\n"


def test_replies_rendered_from_the_same_text_fields_are_made_once():
    cat = Catalogue()
    first = cat.reply(632, hostname="mx.example", esmtp="E", client_ip="192.0.2.1")
    assert cat.reply(632, hostname="mx.example", esmtp="E", client_ip="192.0.2.9") is first  # unused field
    other = cat.reply(632, hostname="mx2.example", esmtp="E")
    assert other is not first and "mx2.example" in other.text
    assert cat.reply(943, client_ip="192.0.2.1", limit=5).text == cat.reply(943, client_ip="192.0.2.1", limit="5").text
    assert cat.reply(943, client_ip="192.0.2.1", limit=True).text != cat.reply(943, client_ip="192.0.2.1", limit=1).text
    cat.override(632, "{hostname} at your service")
    assert cat.reply(632, hostname="mx.example", esmtp="E").text == "mx.example at your service"
