"""SPF without sockets: record parsing, macros (RFC 7208 7.4's examples), the
policy words, the Received-SPF header and the engine's options.

Evaluation against real DNS is in tests/integration/test_spf_eval.py.
"""

from __future__ import annotations

import ipaddress
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from barricade.decide.rules import Rules
from barricade.dns import Resolver
from barricade.options import REGISTRY, OptionError
from barricade.policy.access import AccessMail, AccessMap
from barricade.policy.helo import HeloTests
from barricade.policy.limits import builtin_checks
from barricade.policy.pipeline import Context
from barricade.policy.rcpt import RcptTests
from barricade.policy.spf import (
    _HELO_KEY,
    HELO_NOTE,
    MAIL_NOTE,
    RESULT_NAMES,
    TAG_NOTE,
    Policy,
    Spf,
    SpfHelo,
    SpfMail,
    SpfPolicy,
    reason,
    received_spf,
)
from barricade.policy.verdict import Action, Flag
from barricade.protocol.events import ClientInfo
from barricade.replies import Catalogue
from barricade.spf import (
    FAIL,
    NEUTRAL,
    PASS,
    PERMERROR,
    RESULTS,
    SOFTFAIL,
    Evaluator,
    SpfError,
    SpfResult,
    Term,
    _State,
    address,
    check_domain_spec,
    fit_domain,
    parse_record,
    split_sender,
    transform,
    valid_domain,
)
from tests.coroutines import finished as done  # expansion without %{p} asks no DNS

# --- parsing -----------------------------------------------------------------------------

VALID = [
    ("v=spf1", ()),
    ("v=spf1 -all", (("all", FAIL),)),
    ("v=spf1 +all", (("all", PASS),)),
    ("v=spf1 ~all", (("all", SOFTFAIL),)),
    ("v=spf1 ?all", (("all", NEUTRAL),)),
    ("V=SPF1 MX -ALL", (("mx", PASS), ("all", FAIL))),
    ("v=spf1  a   mx  ", (("a", PASS), ("mx", PASS))),  # 1*SP and trailing spaces
    ("v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all", (("ip4", PASS), ("ip6", PASS), ("all", FAIL))),
    ("v=spf1 a:mail.example.com/24//64 mx/16 ptr:example.com exists:%{ir}.x.example -all",
     (("a", PASS), ("mx", PASS), ("ptr", PASS), ("exists", PASS), ("all", FAIL))),
    ("v=spf1 include:_spf.%{d2} -all", (("include", PASS), ("all", FAIL))),
    ("v=spf1 a:%{d}", (("a", PASS),)),
    ("v=spf1 a:example.com.", (("a", PASS),)),  # a trailing dot
    ("v=spf1 a:foo-bar.com-net", (("a", PASS),)),  # a top label with a hyphen
    ("v=spf1 foo=bar other.mod=%{d} -all", (("all", FAIL),)),  # unknown modifiers: ignored
    ("v=spf1 redirect=_spf.example.com", ()),
]


@pytest.mark.parametrize("text, terms", VALID)
def test_valid_records_parse(text, terms):
    record = parse_record(text)
    assert tuple((t.name, t.result) for t in record.mechanisms) == terms


INVALID = [
    "v=spf1 ip4:not-an-address",
    "v=spf1 +all ip4:bad",  # RFC 7208 4.6: anywhere, even after a match
    "v=spf1 ip4:192.0.2.1/33",
    "v=spf1 ip4:192.0.2.1/024",  # no leading zeros in a prefix length
    "v=spf1 ip4:192.0.2.1//64",
    "v=spf1 ip4:2001:db8::1",  # wrong family
    "v=spf1 ip6:192.0.2.1",
    "v=spf1 ip6:2001:db8::/129",
    "v=spf1 ip4",
    "v=spf1 ip4:",
    "v=spf1 a:",  # empty domain-spec
    "v=spf1 a:museum",  # one label
    "v=spf1 a:example.123",  # numeric top label
    "v=spf1 a/33",
    "v=spf1 a//129",
    "v=spf1 a/24/64",
    "v=spf1 mx:example.com/",
    "v=spf1 include",
    "v=spf1 include:",
    "v=spf1 include:example.com/24",  # prefixes only on a and mx
    "v=spf1 ptr/24",
    "v=spf1 exists",
    "v=spf1 all:x",
    "v=spf1 all/8",
    "v=spf1 -foo",  # unknown mechanism
    "v=spf1 foo:bar=baz",  # neither mechanism nor modifier
    "v=spf1 redirect=a.example redirect=b.example",
    "v=spf1 exp=a.example exp=b.example",
    "v=spf1 exp=",
    "v=spf1 redirect=",
    "v=spf1 -redirect=a.example",
    "v=spf1 exists:%{x}.example.com",  # no such macro letter
    "v=spf1 exists:%{c}.example.com",  # c, r, t only in explanations
    "v=spf1 exists:%{d0}.example.com",  # zero labels
    "v=spf1 exists:%{d}%.example.com",  # a lone %
    "v=spf1 exists:%x.example.com",
    "v=spf1 foo=%abc",  # unknown modifiers must still be macro strings
    "v=spf1 a:%{d" + "1" * 5000 + "}.example.com -all",  # int() refuses it: ValueError, not PermError
    "v=spf1 foo=%{d" + "1" * 11 + "}",
    "v=spf1 a:exa\tmple.com",
    "spf1 -all",
    "v=spf10 -all",
]


@pytest.mark.parametrize("text", INVALID)
def test_invalid_records_are_permerror(text):
    with pytest.raises(SpfError) as err:
        parse_record(text)
    assert err.value.result == PERMERROR


def test_terms_keep_what_evaluation_needs():
    record = parse_record("v=spf1 a:mail.example.com/24//64 ip4:192.0.2.9/28 exp=why.%{d} -all")
    a, ip4, _ = record.mechanisms
    assert (a.spec, a.cidr4, a.cidr6) == ("mail.example.com", 24, 64)
    assert ip4.network == ipaddress.ip_network("192.0.2.0/28")
    assert record.exp == "why.%{d}" and record.redirect is None
    assert parse_record("v=spf1 mx").mechanisms[0] == Term("mx", "mx", PASS)


@pytest.mark.parametrize("spec, ok", [
    ("example.com", True), ("%{d}", True), ("_spf.%{d2}", True), ("%{ir}.%{v}._spf.%{d2}", True),
    ("example.com.", True), ("x.y-z", True), ("foo", False), ("foo.", False), ("foo.1", False),
    ("foo.-bar", False), ("%{d}.", False), ("%{l}.%{c}.example.com", False), ("a.b%", False),
])
def test_domain_spec_syntax(spec, ok):
    if ok:
        check_domain_spec(spec)
    else:
        with pytest.raises(SpfError):
            check_domain_spec(spec)


@given(st.text(max_size=80))
def test_any_text_parses_or_is_an_spf_error(text):
    try:
        parse_record("v=spf1 " + text)
    except SpfError as exc:
        assert exc.result == PERMERROR


_name = st.from_regex(r"[a-z][a-z0-9]{0,8}\.(com|net|example)", fullmatch=True)
_cidr4 = st.integers(0, 32)
_term = st.one_of(
    st.sampled_from(["-all", "~all", "?all", "+all", "a", "mx", "ptr"]),
    st.builds(lambda n, c: f"a:{n}/{c}", _name, _cidr4),
    st.builds(lambda n, c: f"mx:{n}//{c}", _name, st.integers(0, 128)),
    st.builds(lambda n: f"include:{n}", _name),
    st.builds(lambda n: f"exists:%{{i}}.{n}", _name),
    st.builds(lambda a, c: f"ip4:{ipaddress.IPv4Address(a)}/{c}", st.integers(0, 2**32 - 1), _cidr4),
    st.builds(lambda n: f"unknown-mod={n}", _name),
)


@given(st.lists(_term, max_size=12))
def test_generated_records_parse_term_by_term(terms):
    record = parse_record(" ".join(["v=spf1", *terms]))
    assert [t.text for t in record.mechanisms] == [t for t in terms if not t.startswith("unknown-mod=")]


# --- macros ------------------------------------------------------------------------------

SENDER = "strong-bad@email.example.com"


def expand(text: str, ip: str = "192.0.2.3", sender: str = SENDER, helo: str = "mx.example.org",
           explain: bool = False) -> str:
    local, domain = split_sender(sender, helo)
    state = _State(address(ip), local, domain, helo, "receiver.example")
    return done(Evaluator(None).expand(state, text, domain, explain=explain))


# RFC 7208 7.4, the examples, verbatim.
RFC_EXAMPLES = [
    ("%{s}", "strong-bad@email.example.com"),
    ("%{o}", "email.example.com"),
    ("%{d}", "email.example.com"),
    ("%{d4}", "email.example.com"),
    ("%{d3}", "email.example.com"),
    ("%{d2}", "example.com"),
    ("%{d1}", "com"),
    ("%{dr}", "com.example.email"),
    ("%{d2r}", "example.email"),
    ("%{l}", "strong-bad"),
    ("%{l-}", "strong.bad"),
    ("%{lr}", "strong-bad"),
    ("%{lr-}", "bad.strong"),
    ("%{l1r-}", "strong"),
    ("%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com"),
    ("%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com"),
    ("%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", "bad.strong.lp.3.2.0.192.in-addr._spf.example.com"),
    ("%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", "3.2.0.192.in-addr.strong.lp._spf.example.com"),
    ("%{d2}.trusted-domains.example.net", "example.com.trusted-domains.example.net"),
]


@pytest.mark.parametrize("text, expected", RFC_EXAMPLES)
def test_rfc_7208_macro_examples(text, expected):
    assert expand(text) == expected


def test_rfc_7208_ipv6_example():
    assert expand("%{ir}.%{v}._spf.%{d2}", ip="2001:db8::cb01") == (
        "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com")


@pytest.mark.parametrize("text, expected", [
    ("%%", "%"), ("%_", " "), ("%-", "%20"), ("a%%b", "a%b"),
    ("%{h}", "mx.example.org"), ("%{c}", "192.0.2.3"), ("%{r}", "receiver.example"),
    ("%{L}", "strong-bad"), ("%{S}", "strong-bad%40email.example.com"),
    ("%{D2R}", "example.email"), ("%{l+}", "strong-bad"),
])
def test_escapes_upper_case_and_explanation_letters(text, expected):
    assert expand(text, explain=True) == expected


def test_ipv6_c_macro_is_the_compressed_address():
    assert expand("%{c}", ip="2001:db8::cb01", explain=True) == "2001:db8::cb01"


def test_ipv4_mapped_client_is_ipv4():
    assert expand("%{i} %{v}", ip="::ffff:192.0.2.3") == "192.0.2.3 in-addr"


def test_t_macro_is_a_time_stamp():
    assert expand("%{t}", explain=True).isdigit()


def test_null_sender_is_postmaster_at_helo():
    assert split_sender("", "mx.example.org") == ("postmaster", "mx.example.org")
    assert split_sender("@example.com", "h") == ("postmaster", "example.com")
    assert split_sender("example.com", "h") == ("postmaster", "example.com")
    assert expand("%{s} %{l} %{o}", sender="") == "postmaster@mx.example.org postmaster mx.example.org"


def test_crt_outside_an_explanation_is_permerror():
    with pytest.raises(SpfError):
        expand("%{c}.example.com")


_macro = st.builds(
    lambda letter, upper, digits, reverse, delims: "%{" + (letter.upper() if upper else letter)
    + (str(digits) if digits else "") + ("r" if reverse else "") + delims + "}",
    st.sampled_from("slodihv"), st.booleans(), st.integers(0, 12), st.booleans(),
    st.text(alphabet="-.+,/_=", max_size=3))
_piece = st.one_of(_macro, st.sampled_from(["%%", "%_", "%-"]),
                   st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7e,
                                                  blacklist_characters="%"), max_size=6))


@given(st.lists(_piece, max_size=6))
def test_generated_macro_strings_check_and_expand(pieces):
    text = "".join(pieces)
    check_domain_spec(text + ".example.com")  # well formed, so never a PermError ...
    out = expand(text)  # ... and it expands to printable text whatever the macros
    assert all(0x20 <= ord(ch) < 0x7f for ch in out)
    assert all(p in out for p in pieces if not p.startswith("%"))  # literals stay as written


@given(st.lists(st.from_regex(r"[a-z0-9]{1,5}", fullmatch=True), min_size=1, max_size=8),
       st.integers(1, 10), st.booleans())
def test_transform_keeps_right_hand_parts(labels, digits, reverse):
    value = ".".join(labels)
    parts = list(reversed(labels)) if reverse else labels
    assert transform(value, str(digits), reverse, "") == ".".join(parts[-digits:])
    assert transform(value.replace(".", "-"), "", reverse, "-") == ".".join(parts)


def test_long_names_lose_labels_on_the_left():
    name = ".".join(["x" * 60] * 5) + ".example.com."
    fitted = fit_domain(name)
    assert len(fitted) <= 253 and fitted.endswith(".example.com") and not fitted.endswith(".")


@given(st.lists(st.text(alphabet="ab", min_size=0, max_size=300), min_size=1, max_size=12), st.booleans())
def test_fitting_a_name_is_dropping_left_labels_one_by_one(labels, dot):
    """fit_domain finds its cut at once (label by label, kilobytes of expanded macros cost
    their length squared); the answer is the label-by-label one."""
    name = ".".join(labels) + ("." if dot else "")
    slow = name[:-1] if name.endswith(".") else name
    while len(slow) > 253 and "." in slow:
        slow = slow.split(".", 1)[1]
    assert fit_domain(name) == slow


@pytest.mark.parametrize("domain, ok", [
    ("example.com", True), ("example.com.", True), ("a+b.example.com", True), ("com", False),
    ("[192.0.2.1]", False), ("192.0.2.1", False), ("a..b.com", False), ("x" * 64 + ".com", False), ("", False),
])
def test_which_domains_check_host_starts_from(domain, ok):
    assert valid_domain(domain) is ok


# --- the policy words ----------------------------------------------------------------------


@pytest.mark.parametrize("words, fail, softfail", [
    ([], "", ""),
    (["fail-reject"], "reject", ""),
    (["softfail-reject", "fail-reject"], "reject", "reject"),
    (["fail-tag"], "tag", ""),
    (["fail-reject", "fail-tag"], "tag", ""),  # smtpf: tag wins
    (["softfail-tag", "FAIL-REJECT"], "reject", "tag"),
])
def test_policy_words(words, fail, softfail):
    policy = Policy.parse(words)
    assert (policy.fail, policy.softfail) == (fail, softfail)
    assert policy.active is bool(words)
    assert policy.action(FAIL) == fail and policy.action(SOFTFAIL) == softfail
    assert all(policy.action(r) == "" for r in RESULTS if r not in (FAIL, SOFTFAIL))


def test_only_a_rejecting_policy_temp_fails():
    assert Policy.parse(["fail-reject"]).rejects
    assert not Policy.parse(["fail-tag", "softfail-tag"]).rejects


def test_option_defaults_are_smtpf_s():
    config = REGISTRY.parse([])
    assert config["spf-mail-policy"] == ["fail-reject"]
    assert config["spf-helo-policy"] == []
    assert config["spf-received-spf-headers"] is True
    assert config["spf-temp-error-dns"] is True
    assert config["spf-best-guess-txt"] == ""


def test_bad_policy_words_and_best_guess_stop_start_up():
    with pytest.raises(OptionError, match="spf-mail-policy"):
        REGISTRY.parse(["spf-mail-policy=fail-bounce"])
    with pytest.raises(OptionError, match="spf-best-guess-txt"):
        Spf(REGISTRY.parse(["spf-best-guess-txt=v=spf1 a/99"]), resolver=None)
    spf = Spf(REGISTRY.parse(["spf-best-guess-txt=a/24 mx/24 ptr"]), resolver=None)  # v=spf1 implied
    assert [t.text for t in spf.best_guess.mechanisms] == ["a/24", "mx/24", "ptr"]


# --- replies and headers -------------------------------------------------------------------


def test_reply_reason_prefers_the_domain_s_explanation():
    r = SpfResult(FAIL, "example.com", "-all", explanation="go away", sender="a@example.com")
    assert reason(r, "192.0.2.1") == "go away"
    plain = SpfResult(FAIL, "example.com", "-all")
    assert reason(plain, "192.0.2.1") == "example.com does not designate 192.0.2.1 as permitted sender"
    assert reason(SpfResult("temperror", "x.example", problem="DNS timeout"), "192.0.2.1") == "DNS timeout"
    assert RESULT_NAMES[SOFTFAIL] == "SoftFail"


_KV = re.compile(r'(\S+?)=("(?:[^"\\]|\\.)*"|[^;\s]+);')


def test_received_spf_follows_rfc_7208_9_1():
    r = SpfResult(PASS, "example.com", "ip4:192.0.2.0/24", sender="a@example.com")
    value = received_spf(r, "mailfrom", "192.0.2.1", "mx.example.com", "gw.example.net")
    head, tail = value.split("\r\n\t")
    assert head == "pass (gw.example.net: domain of a@example.com designates 192.0.2.1 as permitted sender)"
    assert dict(_KV.findall(tail)) == {
        "client-ip": "192.0.2.1", "envelope-from": '"a@example.com"', "helo": "mx.example.com",
        "receiver": "gw.example.net", "identity": "mailfrom", "mechanism": '"ip4:192.0.2.0/24"'}


def test_received_spf_quotes_and_escapes_what_is_not_an_atom():
    r = SpfResult("permerror", "example.com", problem='bad "term" (x)\\', sender='"odd guy"@example.com')
    value = received_spf(r, "helo", "2001:db8::1", "", "gw.example.net")
    assert "\\(" not in value.split("\r\n\t")[1]  # parentheses are escaped only inside the comment
    pairs = dict(_KV.findall(value.split("\r\n\t")[1]))
    assert pairs["client-ip"] == '"2001:db8::1"'  # a colon is not atext
    assert pairs["helo"] == "unknown"
    assert pairs["problem"] == '"bad \\"term\\" (x)\\\\"'
    assert "\r" not in value.replace("\r\n\t", "") and "\n" not in value.replace("\r\n\t", "")


def test_best_guess_is_said_in_the_header():
    r = SpfResult(PASS, "example.com", "a/24", sender="a@example.com", best_guess=True)
    assert "permitted sender, by the best-guess record)" in received_spf(r, "mailfrom", "192.0.2.1", "h.example", "gw.example")


# --- the engine's decisions at RCPT (sans-IO: results put in the notes by hand) ---------------


CLIENT = ClientInfo("192.0.2.1", 25, name="mail.outside.example")


def engine(*args: str) -> Spf:
    return Spf(REGISTRY.parse(list(args)), resolver=None, hostname="gw.example")


def ctx_with(helo: SpfResult | None = None, mail: SpfResult | None = None, sender: str = "a@x.example",
             client: ClientInfo = CLIENT, helo_name: str = "h.example") -> Context:
    ctx = Context("S1", client, helo=helo_name, sender=sender)
    if helo is not None:
        ctx.notes[HELO_NOTE] = helo
        ctx.notes[_HELO_KEY] = (client.ip, helo_name)
    if mail is not None:
        ctx.notes[MAIL_NOTE] = mail
    return ctx


def result(name: str, domain: str = "x.example", **kw) -> SpfResult:
    return SpfResult(name, domain, **kw)


@pytest.mark.parametrize("helo_r, mail_r, rid, code, status", [
    (None, "fail", 702, 550, "5.7.1"),
    ("fail", "pass", 701, 550, "5.7.1"),
    ("fail", "fail", 701, 550, "5.7.1"),  # HELO first
    ("temperror", "pass", 701, 451, "4.4.3"),
    ("pass", "temperror", 702, 451, "4.4.3"),
    ("softfail", "softfail", 701, 550, "5.7.1"),
])
def test_refusals_at_rcpt(helo_r, mail_r, rid, code, status):
    spf = engine("spf-helo-policy=fail-reject,softfail-reject", "spf-mail-policy=fail-reject,softfail-reject")
    ctx = ctx_with(result(helo_r) if helo_r else None, result(mail_r))
    verdict = spf.decide(ctx)
    assert (verdict.action, verdict.reply_id) == (Action.TEMPFAIL if code == 451 else Action.REJECT, rid)
    assert (verdict.fields["code"], verdict.fields["status"]) == (code, status)
    assert verdict.flags == Flag.DELAY


@pytest.mark.parametrize("mail_r", ["pass", "none", "neutral", "permerror", "softfail"])
def test_what_fail_reject_lets_through(mail_r):
    assert engine("spf-mail-policy=fail-reject").decide(ctx_with(mail=result(mail_r))).action is Action.CONTINUE


def test_a_helo_pass_lets_a_dsn_through_without_the_mail_check():
    spf = engine("spf-helo-policy=fail-reject", "spf-mail-policy=fail-reject")
    assert spf.decide(ctx_with(result("pass"), result("fail"), sender="")).action is Action.CONTINUE
    assert spf.decide(ctx_with(result("pass"), result("fail"))).reply_id == 702


def test_a_helo_result_for_another_helo_is_not_used():
    spf = engine("spf-helo-policy=fail-reject", "spf-mail-policy=")
    ctx = ctx_with(result("fail"))
    ctx.helo = "other.example"  # a new HELO (or XCLIENT) since it was computed
    assert spf.decide(ctx).action is Action.CONTINUE


def test_tag_decides_once_and_reject_still_wins_for_the_other_identity():
    spf = engine("spf-helo-policy=fail-tag", "spf-mail-policy=fail-reject")
    ctx = ctx_with(result("fail", "h.example"), result("pass"))
    verdict = spf.decide(ctx)
    assert verdict.action is Action.TAG
    assert verdict.fields["reason"].startswith("HELO h.example from mail.outside.example [192.0.2.1] SPF result Fail;")
    assert TAG_NOTE in ctx.notes  # said once in the log
    ctx.notes[MAIL_NOTE] = result("fail")
    assert spf.decide(ctx).reply_id == 702


def test_temperror_is_ignored_by_a_tag_only_policy():
    assert engine("spf-mail-policy=fail-tag").decide(ctx_with(mail=result("temperror"))).action is Action.CONTINUE


def test_tagging_is_a_tag_verdict_applied_at_the_headers():
    spf = engine("spf-mail-policy=fail-tag")  # spamd-subject-tag, when the spamd plugin's options are known
    ctx = ctx_with(mail=result("fail"))
    verdict = done(SpfPolicy(spf).rcpt(ctx, "b@example.com"))
    assert verdict.action is Action.TAG and not verdict.decisive
    ctx.tags.append(verdict)  # what the pipeline does with it
    Rules(Catalogue(), None, "mx.test", subject_tag=spf.subject_tag).apply_tags(ctx)
    assert ctx.subject_tag == "[SPAM]"
    assert [n for n, _ in ctx.added_headers] == ["X-Spam-Flag", "X-Spam-Reason"]


def test_received_spf_headers_for_what_was_computed():
    spf = engine("spf-helo-policy=fail-reject")
    ctx = ctx_with(result("pass", sender="postmaster@h.example"), result("neutral", sender="a@x.example"))
    done(SpfMail(spf).headers(ctx))
    values = [v for n, v in ctx.added_headers if n == "Received-SPF"]
    assert [v.split(" ", 1)[0] for v in values] == ["pass", "neutral"]
    assert "identity=helo;" in values[0] and "identity=mailfrom;" in values[1]
    ctx = ctx_with(mail=result("pass", sender="a@x.example"))
    done(SpfMail(engine("-spf-received-spf-headers")).headers(ctx))
    assert ctx.added_headers == []


@pytest.mark.parametrize("client", [
    ClientInfo("127.0.0.1", 25, name="localhost", localhost=True, private=True),
    ClientInfo("192.0.2.9", 25, name="relay.example", relay=True),
])
def test_usual_suspects_are_exempt(client):
    spf = engine("spf-mail-policy=fail-reject")
    ctx = ctx_with(mail=result("fail"), client=client)
    assert done(SpfPolicy(spf).rcpt(ctx, "b@example.com")).action is Action.CONTINUE
    ctx.notes.clear()
    assert done(spf.mail_result(ctx)) is None and MAIL_NOTE not in ctx.notes
    white = ctx_with()
    white.white_session = True
    assert done(spf.mail_result(white)) is None


def test_checks_are_in_smtpf_s_order(tmp_path):
    amap = tmp_path / "access-map"
    amap.write_text("from:x.example SPF-PASS\n")
    resolver = Resolver([("127.0.0.1", 53)])
    checks = builtin_checks(REGISTRY.parse(["spf-helo-policy=fail-reject"]), AccessMap(str(amap)),
                            resolver=resolver)
    kinds = [type(c) for c in checks]
    assert kinds.index(SpfMail) < kinds.index(AccessMail)  # computed before From: needs it
    assert kinds.index(HeloTests) < kinds.index(SpfHelo)  # a refused HELO costs no lookup
    assert kinds.index(RcptTests) < kinds.index(SpfPolicy)  # enforced after the recipient tests
    access_mail = checks[kinds.index(AccessMail)]
    assert access_mail.spf is checks[kinds.index(SpfMail)].spf
    without = [type(c) for c in builtin_checks(REGISTRY.parse(["spf-mail-policy="]), resolver=resolver)]
    assert SpfMail in without and SpfHelo not in without and SpfPolicy not in without
    assert not any(k in (SpfMail, SpfHelo, SpfPolicy) for k in map(type, builtin_checks(REGISTRY.parse([]))))
