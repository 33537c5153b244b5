"""Access map parsing and lookup order (docs/smtpf.md, "Access map"), table driven."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from barricade.maps import MapError, mail_keys
from barricade.policy.access import (
    FAMILIES,
    AccessAction,
    AccessMap,
    family_of,
    glob_regex,
    parse_action,
    parse_value,
)
from barricade.replies import Catalogue


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_map(tmp_path, text: str, literal_plus: bool = False) -> AccessMap:
    path = tmp_path / "access"
    path.write_text(text)
    return AccessMap(str(path), literal_plus=literal_plus, clock=Clock())


# --- parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize("key,family", [
    ("connect:192.0.2.1", "connect"),
    ("connect:2001:0db8:0:0:0:0:0:1", "connect"),
    ("connect:", "connect"),
    ("helo:example.com", "helo"),
    ("from:a@example.com", "from"),
    ("to:example.com", "to"),
    ("connect:192.0.2:from:a@example.com", "connect:from"),
    ("connect:example.net:to:example.com", "connect:to"),
    ("from:a@example.org:to:b@example.com", "from:to"),
    ("body:example.com", "body"),
    ("spamd:example.com", None),
    ("rate-connect:192.0.2", None),
    ("route:example.com", None),
])
def test_family_of(key, family):
    assert family_of(key) == family


@pytest.mark.parametrize("value,family,default,patterns", [
    ("OK", "connect", AccessAction("OK"), 0),
    ("ok", "from", AccessAction("OK"), 0),
    ("OK+AV", "to", AccessAction("OK+AV"), 0),
    ("REJECT", "body", AccessAction("REJECT"), 0),
    ('REJECT:"go away now"', "from", AccessAction("REJECT", "go away now"), 0),
    ('DISCARD:"log this"', "to", AccessAction("DISCARD", "log this"), 0),
    ("TEMPFAIL", "connect:to", AccessAction("TEMPFAIL"), 0),
    ("IREJECT", "connect:from", AccessAction("IREJECT"), 0),
    ("CONTENT", "helo", AccessAction("CONTENT"), 0),
    ("PROTOCOL", "from:to", AccessAction("PROTOCOL"), 0),
    ("SPF-PASS", "from", AccessAction("SPF-PASS"), 0),
    ("POLICY-OK", "connect:from", AccessAction("POLICY-OK"), 0),
    ('SAVE:"/var/spool/x"', "to", AccessAction("SAVE", "/var/spool/x"), 0),
    ("TRAP TAG", "to", None, -1),  # text after the default
    ("DUNNO", "to", AccessAction("DUNNO"), 0),
    ("!adsl-*-*.usr.hananet.net!REJECT", "connect", None, 1),
    ("!smtp*.hananet.net!OK !www*.hananet.net!OK REJECT", "connect", AccessAction("REJECT"), 2),
    ("/^[a-zA-Z0-9!#$&'*+=?^_`{|}~.-]{3,16}@aol.com$/NEXT REJECT", "from", AccessAction("REJECT"), 1),
    ("[192.0.2.0/24]REJECT [2001:db8::/32]OK DUNNO", "connect", AccessAction("DUNNO"), 2),
    ("[192.0.2.1] OK", "connect", AccessAction("OK"), 1),  # an empty action is SKIP
])
def test_parse_value(value, family, default, patterns):
    if patterns < 0:
        with pytest.raises(MapError):
            parse_value(value, family)
        return
    parsed = parse_value(value, family)
    assert parsed.default == default
    assert len(parsed.patterns) == patterns


@pytest.mark.parametrize("value,family,why", [
    ("FROBNICATE", "connect", "unknown action"),
    ("CONTENT", "from", "not allowed on From:"),
    ("IREJECT", "to", "not allowed on To:"),
    ("OK+AV", "body", "not allowed on Body:"),
    ("SPF-PASS", "connect", "not allowed on Connect:"),
    ("[192.0.2.0/33]REJECT", "connect", "bad network"),
    ("/a(b/REJECT", "from", "bad regular expression"),
    ("!abc REJECT", "connect", "no closing"),
    ("!abc!FOO", "connect", "unknown action"),
])
def test_parse_errors(value, family, why):
    with pytest.raises(MapError, match=why):
        parse_value(value, family)


def test_pattern_empty_action_is_skip():
    assert parse_value("!x*!", "to").patterns[0].action == AccessAction("SKIP")


@pytest.mark.parametrize("glob,text,match", [
    ("abc", "abc", True), ("abc", "abcd", False), ("abc*", "abcdef", True),
    ("*abc", "xxabc", True), ("abc*def", "abc-x-def", True), ("*abc*def*", "1abc2def3", True),
    ("a?c", "abc", True), ("a?c", "ac", False), ("a\\*c", "a*c", True), ("a\\*c", "abc", False),
    ("ADSL-*", "adsl-1", True),
])
def test_glob(glob, text, match):
    assert bool(glob_regex(glob).fullmatch(text)) is match


def test_action_argument_keeps_case():
    assert parse_action('REJECT:"Go Away"', "from") == AccessAction("REJECT", "Go Away")


# --- the map: bad lines, reload --------------------------------------------------------


def test_bad_line_names_file_and_line(tmp_path):
    with pytest.raises(MapError, match=r"access:3: to:x@example.com: action IREJECT"):
        make_map(tmp_path, "# c\nconnect:192.0.2 OK\nto:x@example.com IREJECT\n")


def test_other_tags_are_not_parsed(tmp_path):
    m = make_map(tmp_path, "spamd:example.com someuser\nrate-connect: 5\nmsg-limit-from:x 150/30m\n")
    assert m.get("spamd:example.com") == "someuser"


def test_bad_reload_keeps_the_previous_map(tmp_path):
    m = make_map(tmp_path, "from:a@example.com REJECT\n")
    (tmp_path / "access").write_text("from:a@example.com OK\nfrom:b@example.com [bad]REJECT\n")
    assert m.reload() is False
    assert m.sender("a@example.com").word == "REJECT"
    (tmp_path / "access").write_text("from:a@example.com OK\n")
    assert m.reload() is True
    assert m.sender("a@example.com").word == "OK"


# --- lookup order ----------------------------------------------------------------------


@pytest.mark.parametrize("entries,ip,name,key", [
    (["connect:192.0.2.9", "connect:192.0.2", "connect:192", "connect:"], "192.0.2.9", None,
     "connect:192.0.2.9"),
    (["connect:192.0.2", "connect:192.0", "connect:example.com"], "192.0.2.9", "mx.example.com",
     "connect:192.0.2"),
    (["connect:192", "connect:mx.example.com"], "192.0.2.9", "mx.example.com", "connect:192"),
    (["connect:example.com", "connect:com", "connect:"], "192.0.2.9", "mx.example.com",
     "connect:example.com"),
    (["connect:com", "connect:"], "192.0.2.9", "mx.example.com", "connect:com"),
    (["connect:"], "192.0.2.9", "mx.example.com", "connect:"),
    (["connect:[192.0.2.9]", "connect:"], "192.0.2.9", None, "connect:[192.0.2.9]"),
    (["connect:2001:0db8:0000:0000:0000:0000:0000:0001", "connect:2001:0db8"], "2001:db8::1", None,
     "connect:2001:0db8:0000:0000:0000:0000:0000:0001"),
    (["connect:2001:0db8", "connect:2001"], "2001:db8::1", None, "connect:2001:0db8"),
    (["connect:192.0.2"], "::ffff:192.0.2.9", None, "connect:192.0.2"),
])
def test_connect_lookup_order(tmp_path, entries, ip, name, key):
    m = make_map(tmp_path, "".join(f"{e} OK\n" for e in entries))
    assert m.connect(ip, name).key == key


@pytest.mark.parametrize("entries,address,key,literal", [
    (["from:user+x@sub.example.com", "from:user@sub.example.com"], "user+x@sub.example.com",
     "from:user+x@sub.example.com", False),
    (["from:user@sub.example.com", "from:sub.example.com"], "user+x@sub.example.com",
     "from:user@sub.example.com", False),
    (["from:user@sub.example.com", "from:sub.example.com"], "user+x@sub.example.com",
     "from:sub.example.com", True),
    (["from:example.com", "from:com"], "a@sub.example.com", "from:example.com", False),
    (["from:com", "from:a@"], "a@sub.example.com", "from:com", False),
    (["from:a@", "from:"], "a+b@sub.example.com", "from:a@", False),
    (["from:a+b@", "from:"], "a+b@sub.example.com", "from:a+b@", True),
    (["from:"], "a@example.com", "from:", False),
    (["from:"], "", "from:", False),  # the null sender meets only the default
    (["from:USER@Example.COM"], "user@example.com", "from:user@example.com", False),
])
def test_mail_lookup_order(tmp_path, entries, address, key, literal):
    m = make_map(tmp_path, "".join(f"{e} REJECT\n" for e in entries), literal_plus=literal)
    assert m.sender(address).key == key


def test_mail_keys_literal_plus():
    assert list(mail_keys("to", "a+b@x.org", literal_plus=False)) == [
        "to:a+b@x.org", "to:a@x.org", "to:x.org", "to:org", "to:a@", "to:"]
    assert list(mail_keys("to", "a+b@x.org")) == ["to:a+b@x.org", "to:x.org", "to:org", "to:a+b@", "to:"]
    assert list(mail_keys("to", "+b@x.org", literal_plus=False))[0:2] == ["to:+b@x.org", "to:x.org"]


def test_combo_order_ip_then_mail_then_ptr(tmp_path):
    m = make_map(tmp_path, "connect:192.0.2:from:a@example.org REJECT\n"
                           "connect:192.0.2.1:from:example.org OK\n"
                           "connect:outside.example:from:a@example.org TEMPFAIL\n")
    hit = m.connect_sender("192.0.2.1", "mx.outside.example", "a@example.org")
    assert (hit.key, hit.word) == ("connect:192.0.2.1:from:example.org", "OK")
    hit = m.connect_sender("192.0.2.7", "mx.outside.example", "a@example.org")
    assert hit.key == "connect:192.0.2:from:a@example.org"
    hit = m.connect_sender("198.51.100.1", "mx.outside.example", "a@example.org")
    assert hit.word == "TEMPFAIL"
    assert m.connect_sender("198.51.100.1", None, "a@example.org") is None


def test_combo_has_no_blank_elements(tmp_path):
    m = make_map(tmp_path, "from:a@example.org REJECT\nto:b@example.com REJECT\n")
    assert m.sender_recipient("a@example.org", "b@example.com") is None
    m = make_map(tmp_path, "from:example.org:to:b@ OK\n")
    assert m.sender_recipient("x@sub.example.org", "b+z@example.com").key == "from:example.org:to:b@"
    assert m.connect_recipient("192.0.2.1", None, "b@example.com") is None


def test_helo_lookups(tmp_path):
    m = make_map(tmp_path, "helo:192.0.2 REJECT\nhelo:example.com OK\nhelo: TEMPFAIL\n")
    assert m.helo("[192.0.2.5]").key == "helo:192.0.2"
    assert m.helo("mx.example.com").key == "helo:example.com"
    assert m.helo("other.net").key == "helo:"


def test_body_lookups_have_no_default(tmp_path):
    m = make_map(tmp_path, "body:localhost OK\nbody:example.com REJECT\nbody: REJECT\n")
    assert m.body("localhost").word == "OK"
    assert m.body("www.example.com").word == "REJECT"
    assert m.body("x@mail.example.com").word == "REJECT"
    assert m.body("other.org") is None


# --- patterns, NEXT and SKIP -------------------------------------------------------------


def test_patterns_match_name_then_ip(tmp_path):
    m = make_map(tmp_path, "connect:hananet.net !smtp*.hananet.net!OK [192.0.2.0/24]TEMPFAIL REJECT\n")
    assert m.connect("192.0.2.1", "smtp1.hananet.net").word == "OK"
    assert m.connect("192.0.2.1", "adsl.hananet.net").word == "TEMPFAIL"
    assert m.connect("198.51.100.1", "adsl.hananet.net").word == "REJECT"


def test_cidr_only_matches_ips(tmp_path):
    m = make_map(tmp_path, "from:example.org [192.0.2.0/24]REJECT\n")
    assert m.sender("a@example.org") is None


def test_next_resumes_and_skip_stops(tmp_path):
    text = ("from:aol.com /^[a-z0-9.]{3,16}@aol.com$/NEXT REJECT\n"
            "from:com OK\n"
            "from:example.com DUNNO\n")
    m = make_map(tmp_path, text)
    assert m.sender("fred@aol.com").key == "from:com"
    assert m.sender("x@aol.com").word == "REJECT"
    assert m.sender("a@example.com") is None  # DUNNO stops before from:com


def test_no_match_without_default_resumes(tmp_path):
    m = make_map(tmp_path, "to:b@example.com !c*!REJECT\nto:example.com TEMPFAIL\n")
    assert m.recipient("b@example.com").word == "TEMPFAIL"


def test_empty_action_after_a_match_is_skip(tmp_path):
    m = make_map(tmp_path, "to:b@example.com /^b@/ REJECT\nto:example.com TEMPFAIL\n")
    assert m.recipient("b@example.com") is None


# --- hypothesis: any generated map parses and looks up without surprises ---------------

WORDS = ["OK", "REJECT", "DISCARD", "TEMPFAIL", "SKIP", "DUNNO", "NEXT", "TAG", "SAVE", "TRAP"]
label = st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True)
domain = st.builds(lambda ls: ".".join(ls), st.lists(label, min_size=1, max_size=3))
mailbox = st.builds(lambda local, d: f"{local}@{d}", label, domain)
octets = st.lists(st.integers(0, 255), min_size=1, max_size=4).map(lambda o: ".".join(map(str, o)))
text = st.from_regex(r'[A-Za-z0-9 .,!?-]{0,30}', fullmatch=True)
action = st.one_of(
    st.sampled_from(WORDS),
    st.builds(lambda w, t: f'{w}:"{t}"', st.sampled_from(["REJECT", "TEMPFAIL", "DISCARD"]), text),
)
pattern = st.one_of(
    st.builds(lambda g, a: f"!{g}!{a}", st.from_regex(r"[a-z*?.]{1,10}", fullmatch=True), action),
    st.builds(lambda n, a: f"[192.0.{n}.0/24]{a}", st.integers(0, 255), action),
    st.builds(lambda r, a: f"/{r}/{a}", st.sampled_from(["^a", "b$", "[0-9]+", "x|y"]), action),
)
value = st.builds(lambda ps, d: " ".join([*ps, *([d] if d else [])]),
                  st.lists(pattern, max_size=3), st.one_of(st.none(), action)).filter(bool)
key = st.one_of(
    st.builds("connect:{}".format, st.one_of(octets, domain)),
    st.builds("from:{}".format, st.one_of(mailbox, domain)),
    st.builds("to:{}".format, st.one_of(mailbox, domain)),
    st.builds("from:{}:to:{}".format, mailbox, mailbox),
    st.just("connect:"), st.just("from:"), st.just("to:"),
)


@given(entries=st.dictionaries(key, value, max_size=8), sender=mailbox, rcpt=mailbox,
       ip=octets.filter(lambda s: s.count(".") == 3))
def test_generated_maps_parse_and_look_up(tmp_path_factory, entries, sender, rcpt, ip):
    path = tmp_path_factory.mktemp("h") / "access"
    path.write_text("".join(f"{k} {v}\n" for k, v in entries.items()))
    m = AccessMap(str(path), clock=Clock())
    for hit in (m.connect(ip, "mx.example.com"), m.sender(sender), m.recipient(rcpt),
                m.sender_recipient(sender, rcpt)):
        if hit is not None:
            assert hit.key in entries
            assert hit.word not in ("NEXT", "SKIP", "DUNNO")


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40))
def test_arbitrary_values_parse_or_raise_map_error(value):
    try:
        parse_value(value, "from")
    except MapError:
        pass


# --- the catalogue's custom text -----------------------------------------------------


def test_custom_text_keeps_code_status_and_id():
    reply = Catalogue().reply(127, sender="a@b", custom_text="sender <a@b> go\r\naway")
    assert (reply.code, reply.status, reply.id) == (550, "5.7.1", 127)
    assert reply.encode() == b"550 5.7.1 sender <a@b> go??away #127\r\n"


# --- POSIX classes, bad lines, ignored values ---------------------------------------------


@pytest.mark.parametrize("pattern, hay, matches", [
    ("/^[[:alpha:]]+@aol.com$/", "fred@aol.com", True),
    ("/^[[:alpha:]]+@aol.com$/", "fred1@aol.com", False),
    ("/^[[:alnum:]._]{3,16}@aol.com$/", "a.b_1@aol.com", True),
    ("/[[:digit:]]{4}/", "mx1234.example", True),
    ("/^[^[:space:]]+$/", "a b", False),
    ("/[[:punct:]]/", "abc", False),
    ("/[[:upper:]]/", "aBc", True),
])
def test_posix_classes_in_regex_patterns(pattern, hay, matches):
    value = parse_value(f"{pattern}OK REJECT", "from")
    assert value.evaluate([hay]).word == ("OK" if matches else "REJECT")


def test_unknown_posix_class_is_a_map_error():
    with pytest.raises(MapError, match=r"bad regular expression /\[\[:nope:\]\]/: invalid character class range"):
        parse_value("/[[:nope:]]/OK", "from")
    with pytest.raises(MapError, match="bad regular expression"):
        parse_value("/(a)\\1/OK", "from")  # a back-reference: no linear-time engine has them


def test_a_regex_pattern_runs_in_time_linear_in_the_text():
    """A backtracking engine took 0.6 s for this at 24 characters, four times more for
    every two more (so this test would never end); a client chooses its MAIL FROM."""
    value = parse_value("/^([a-z0-9]+\\.?)+@example\\.com$/REJECT OK", "from")
    assert value.evaluate(["a" * 5000 + "!@example.com"]).word == "OK"
    assert value.evaluate(["a.b.c@example.com"]).word == "REJECT"


@pytest.mark.parametrize("glob, hay, matches", [
    ("adsl-[0-9]*.hananet.net", "adsl-12.hananet.net", True),
    ("adsl-[0-9]*.hananet.net", "adsl-x2.hananet.net", False),
    ("mx[^0-9].example", "mxa.example", True),
    ("mx[!0-9].example", "mx1.example", False),
    ("a[]]b", "a]b", True),
    ("a[\\]b", "a\\b", True),
    ("a[b", "a[b", True),  # no closing bracket: literal
])
def test_glob_character_sets(glob, hay, matches):
    assert bool(glob_regex(glob).fullmatch(hay)) is matches


def test_access_map_names_every_bad_line_and_reports_bad_numbers_once(tmp_path):
    from twisted.logger import globalLogPublisher

    bad = tmp_path / "bad-access"
    bad.write_text("connect:192.0.2 OK\nfrom:a.example BOGUS\nto:b.example OK   # white list\n")
    with pytest.raises(MapError) as err:
        AccessMap(str(bad))
    assert f"{bad}:2:" in str(err.value) and f"{bad}:3:" in str(err.value)
    assert "'#' starts a comment only at the start of a line" in str(err.value)
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        path = tmp_path / "access"
        path.write_text("rate-connect: lots\nmsg-limit-from:a.example 10/fortnight\n"
                        "length-to:b.example 10M\nconcurrent-connect:192.0.2 5\n")
        AccessMap(str(path))
    finally:
        globalLogPublisher.removeObserver(events.append)
    warned = [e for e in events if "ignored" in e.get("log_format", "")]
    assert len(warned) == 1 and warned[0]["n"] == 2
    assert f"{path}:1: rate-connect:" in warned[0]["problems"]
    assert f"{path}:2: msg-limit-from:a.example" in warned[0]["problems"]


# --- lookups in a family the map has no key of ------------------------------------------


def _every_key(m: AccessMap, name: str, *args: str) -> object:
    """The answer of a full walk of the keys, the family shortcut switched off."""
    m._families = frozenset(FAMILIES)
    try:
        return getattr(m, name)(*args)
    finally:
        m._families = frozenset(family_of(k) for k in m._values)


@given(entries=st.dictionaries(key, value, max_size=8), sender=mailbox, rcpt=mailbox,
       ip=octets.filter(lambda s: s.count(".") == 3))
def test_skipping_families_the_map_lacks_changes_no_answer(tmp_path_factory, entries, sender,
                                                             rcpt, ip):
    path = tmp_path_factory.mktemp("f") / "access"
    path.write_text("".join(f"{k} {v}\n" for k, v in entries.items()))
    m = AccessMap(str(path), clock=Clock())
    for name, args in (("connect", (ip, "mx.example.com")), ("helo", ("mx.example.com",)),
                       ("sender", (sender,)), ("recipient", (rcpt,)),
                       ("connect_sender", (ip, "mx.example.com", sender)),
                       ("connect_recipient", (ip, "mx.example.com", rcpt)),
                       ("sender_recipient", (sender, rcpt)), ("body", ("example.com",))):
        assert getattr(m, name)(*args) == _every_key(m, name, *args), name


def test_odd_addresses_fall_in_the_combination_families_and_are_still_found(tmp_path):
    m = make_map(tmp_path, 'from:"a:to:b"@example.com REJECT\n'
                           'connect:192.0.2.9:to:"x:from:y"@example.com DISCARD\n')
    assert m.sender('"a:to:b"@example.com').word == "REJECT"
    assert m.connect_recipient("192.0.2.9", None, '"x:from:y"@example.com').word == "DISCARD"


def test_a_family_added_by_a_reload_is_looked_up(tmp_path):
    m = make_map(tmp_path, "connect:192.0.2 OK\n")
    assert m.sender_recipient("a@example.org", "b@example.com") is None
    assert m.helo("mx.example.net") is None
    (tmp_path / "access").write_text("connect:192.0.2 OK\nfrom:a@example.org:to:b@example.com REJECT\n"
                                     "helo:example.net DISCARD\n")
    assert m.reload() is True
    assert m.sender_recipient("a@example.org", "b@example.com").word == "REJECT"
    assert m.helo("mx.example.net").word == "DISCARD"
