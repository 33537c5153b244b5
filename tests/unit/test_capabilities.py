"""What the downstreams offer and what we advertise: the sans-IO rules."""

from __future__ import annotations

from barricade.protocol.capabilities import (
    EIGHTBIT_ALWAYS,
    EIGHTBIT_FOLLOW,
    EIGHTBIT_NEVER,
    UNKNOWN,
    Capabilities,
    CapabilityCache,
    dsn_mail_error,
    dsn_rcpt_error,
    mail_parameters,
    make_offer,
    rcpt_parameters,
)

POSTFIX = {"PIPELINING": "", "SIZE": "10240000", "VRFY": "", "ETRN": "", "STARTTLS": "",
           "ENHANCEDSTATUSCODES": "", "8BITMIME": "", "DSN": "", "SMTPUTF8": "", "CHUNKING": "",
           "XCLIENT": "NAME ADDR PROTO HELO", "XFORWARD": "NAME ADDR PROTO HELO SOURCE PORT IDENT"}
SINK = {"PIPELINING": "", "8BITMIME": "", "DSN": "", "XCLIENT": "NAME HELO"}


def test_postfix_ehlo():
    caps = Capabilities.from_keywords(POSTFIX)
    assert caps.esmtp and caps.pipelining and caps.eightbitmime and caps.dsn and caps.etrn
    assert caps.size == 10240000
    assert caps.xclient == {"NAME", "ADDR", "PROTO", "HELO"}
    assert "IDENT" in caps.xforward


def test_size_without_a_number_means_no_limit():
    assert Capabilities.from_keywords({"SIZE": ""}).size == 0
    for odd in ("\u00b2", "\u0661\u0662"):  # digits to str.isdigit only: not a number on the wire
        assert Capabilities.from_keywords({"SIZE": odd}).size == 0
    assert Capabilities.from_keywords({}).size is None


def test_offer_size_is_the_smallest_positive():
    caps = [Capabilities.from_keywords(POSTFIX), Capabilities.from_keywords({"SIZE": "0"})]
    assert make_offer(caps, 52428800, EIGHTBIT_FOLLOW).size == 10240000
    assert make_offer(caps, 1000, EIGHTBIT_FOLLOW).size == 1000
    assert make_offer(caps, 0, EIGHTBIT_FOLLOW).size == 10240000  # ours disabled: theirs
    assert make_offer([Capabilities.from_keywords(SINK)], 0, EIGHTBIT_FOLLOW).size == 0


def test_offer_needs_every_downstream():
    both = [Capabilities.from_keywords(POSTFIX), Capabilities.from_keywords(SINK)]
    offer = make_offer(both, 0, EIGHTBIT_FOLLOW)
    assert offer.eightbitmime and offer.dsn
    one_short = [*both, Capabilities.from_keywords({"PIPELINING": ""})]
    offer = make_offer(one_short, 0, EIGHTBIT_FOLLOW)
    assert not offer.eightbitmime and not offer.dsn
    assert not make_offer([UNKNOWN], 0, EIGHTBIT_FOLLOW).dsn
    assert not make_offer([], 0, EIGHTBIT_FOLLOW).eightbitmime


def test_8bitmime_levels_force_either_way():
    plain = [Capabilities.from_keywords({})]
    rich = [Capabilities.from_keywords(POSTFIX)]
    assert make_offer(plain, 0, EIGHTBIT_ALWAYS).eightbitmime
    assert not make_offer(rich, 0, EIGHTBIT_NEVER).eightbitmime
    assert make_offer(rich, 0, EIGHTBIT_FOLLOW).eightbitmime


def test_etrn_follows_the_local_route_only():
    rich = Capabilities.from_keywords(POSTFIX)
    assert make_offer([rich], 0, 2, local=rich).etrn
    assert not make_offer([rich], 0, 2, local=Capabilities.from_keywords(SINK)).etrn
    assert not make_offer([rich], 0, 2, local=None).etrn


def test_dsn_values():
    assert not dsn_mail_error("RET", "hdrs") and not dsn_mail_error("RET", "FULL")
    assert dsn_mail_error("RET", "ALL") and dsn_mail_error("RET", None)
    assert not dsn_mail_error("ENVID", "QQ314159+2B")
    assert dsn_mail_error("ENVID", "a+zz") and dsn_mail_error("ENVID", "x" * 101)
    assert dsn_mail_error("ENVID", None) and dsn_mail_error("ENVID", "caf\u00e9")
    assert not dsn_rcpt_error("NOTIFY", "NEVER") and not dsn_rcpt_error("NOTIFY", "success,delay")
    for bad in ("NEVER,SUCCESS", "SOMETIMES", "", None, "SUCCESS,SUCCESS", "SUCCESS,"):
        assert dsn_rcpt_error("NOTIFY", bad), bad
    assert not dsn_rcpt_error("ORCPT", "rfc822;a+2Bb@example.com")
    for bad in ("a@example.com", "rfc822;", ";a@b", "rfc822;a b", "rfc 822;a@b", "rfc822;" + "x" * 600):
        assert dsn_rcpt_error("ORCPT", bad), bad


def test_parameters_relayed_only_where_offered():
    params = {"BODY": "8BITMIME", "SIZE": "500", "RET": "HDRS", "ENVID": "E1"}
    rich, bare = Capabilities.from_keywords(POSTFIX), Capabilities.from_keywords({})
    assert mail_parameters(params, rich) == " BODY=8BITMIME SIZE=500 RET=HDRS ENVID=E1"
    assert mail_parameters(params, bare) == ""
    rparams = {"NOTIFY": "NEVER", "ORCPT": "rfc822;a@b"}
    assert rcpt_parameters(rparams, rich) == " NOTIFY=NEVER ORCPT=rfc822;a@b"
    assert rcpt_parameters(rparams, bare) == ""


def test_cache_probes_when_due_and_learns_from_relays():
    cache = CapabilityCache(ttl=600, retry=60)
    key = (("127.0.0.1", 25),)
    assert cache.due(key, 0)
    cache.start(key, 0)
    assert not cache.due(key, 1)  # one probe at a time
    cache.failed(key, 5)
    assert cache.get(key) is None and not cache.due(key, 30) and cache.due(key, 66)
    cache.learn(key, POSTFIX, 100)
    assert cache.get(key).dsn and not cache.due(key, 699) and cache.due(key, 700)
    cache.start(key, 700)
    cache.failed(key, 701)  # a refresh failed: what was known stays a while
    assert cache.get(key).dsn
    cache.failed(key, 761)
    assert cache.get(key) is None  # older than ttl + retry: forgotten


def test_cache_offer_is_conservative_for_unknown_routes():
    cache = CapabilityCache(ttl=600)
    a, b = (("127.0.0.1", 25),), (("127.0.0.2", 25),)
    cache.learn(a, POSTFIX, 0)
    assert cache.offer([a], a, 0, EIGHTBIT_FOLLOW).dsn
    assert not cache.offer([a, b], a, 0, EIGHTBIT_FOLLOW).dsn


def test_smtputf8_needs_every_downstream_and_is_relayed_where_offered():
    rich, sink = Capabilities.from_keywords(POSTFIX), Capabilities.from_keywords(SINK)
    assert make_offer([rich], 0, EIGHTBIT_FOLLOW).smtputf8
    assert not make_offer([rich, sink], 0, EIGHTBIT_FOLLOW).smtputf8
    assert mail_parameters({"SMTPUTF8": None}, rich) == " SMTPUTF8"
    assert mail_parameters({"SMTPUTF8": None}, sink) == ""
