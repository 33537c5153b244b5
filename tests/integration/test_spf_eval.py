"""barricade.spf.Evaluator against a real nsd: the records of tests/zones/spf.test.zone.

Clients are in 198.51.100.0/24 (the reverse zone gives 198.51.100.10 the
confirmed name mail.clients.test, 198.51.100.11 a forged one) and
2001:db8::/32; 203.0.113.0/24 is outside every record.
"""

from __future__ import annotations

import pytest
import pytest_twisted

from barricade.aio import aio
from barricade.dns import Resolver
from barricade.metrics import Metrics
from barricade.replies import Catalogue
from barricade.spf import NEUTRAL, NONE, PASS, PERMERROR, TEMPERROR, Evaluator

pytestmark = pytest.mark.integration

IN, OUT = "198.51.100.10", "203.0.113.1"


def evaluator(nsd, **kw) -> Evaluator:
    metrics = kw.pop("metrics", None)
    return Evaluator(Resolver([("127.0.0.1", nsd.port)], max_timeout=5, metrics=metrics),
                     "barricade.test", **kw)


async def check(nsd, ip, domain, sender="", helo="helo.example", **kw):
    return await aio(evaluator(nsd, **kw).check_host(ip, domain, sender, helo))


# (client ip, domain, sender, helo, result, matching mechanism or a piece of the problem)
CASES = [
    # the basic results
    (IN, "pass.spf.test", "", "h.example", "pass", "ip4:198.51.100.0/24"),
    (OUT, "pass.spf.test", "", "h.example", "fail", "-all"),
    ("2001:db8::10", "pass.spf.test", "", "h.example", "pass", "ip6:2001:db8::/32"),
    ("2001:db9::1", "pass.spf.test", "", "h.example", "fail", "-all"),
    ("::ffff:198.51.100.10", "pass.spf.test", "", "h.example", "pass", "ip4:198.51.100.0/24"),
    (IN, "fail.spf.test", "", "h.example", "fail", "-all"),
    (IN, "softfail.spf.test", "", "h.example", "softfail", "~all"),
    (IN, "neutral.spf.test", "", "h.example", "neutral", "?all"),
    (IN, "none.spf.test", "", "h.example", "none", ""),  # TXT, but no SPF record
    (IN, "nx.spf.test", "", "h.example", "none", ""),  # NXDOMAIN
    (IN, "spf.test", "", "h.example", "none", ""),  # no TXT at all
    (IN, "split.spf.test", "", "h.example", "pass", "ip4:198.51.100.10"),  # strings joined
    (IN, "upper.spf.test", "", "h.example", "pass", "IP4:198.51.100.0/24"),
    (IN, "unknown-mod.spf.test", "", "h.example", "pass", "ip4:198.51.100.0/24"),
    # include and redirect
    (IN, "include2.spf.test", "", "h.example", "pass", "include:include.spf.test"),
    (IN, "include-fail.spf.test", "", "h.example", "softfail", "~all"),  # an include's fail never matches
    (IN, "include-none.spf.test", "", "h.example", "permerror", "include:none.spf.test has no SPF"),
    (IN, "redirect.spf.test", "", "h.example", "pass", "ip4:198.51.100.0/24"),
    (IN, "redirect-fail.spf.test", "", "h.example", "fail", "-all"),
    (IN, "redirect-all.spf.test", "", "h.example", "neutral", "?all"),  # all first: redirect ignored
    (IN, "redirect-none.spf.test", "", "h.example", "permerror", "has no SPF record"),
    # a, mx, ptr, exists, with prefix lengths
    (IN, "a.spf.test", "", "h.example", "pass", "a"),
    ("198.51.100.77", "a-cidr.spf.test", "", "h.example", "pass", "a:a.spf.test/24"),
    (OUT, "a-cidr.spf.test", "", "h.example", "fail", "-all"),
    ("2001:db8::ffff", "a-cidr6.spf.test", "", "h.example", "pass", "a:mail.clients.test//64"),
    ("2001:db8:1::10", "a-cidr6.spf.test", "", "h.example", "fail", "-all"),
    ("198.51.100.1", "a-cidr6.spf.test", "", "h.example", "fail", "-all"),  # /32 for IPv4
    ("198.51.100.1", "a-dual.spf.test", "", "h.example", "pass", "a:mail.clients.test/24//64"),
    (IN, "mx.spf.test", "", "h.example", "pass", "mx"),
    ("198.51.100.77", "mx-cidr.spf.test", "", "h.example", "pass", "mx:mx.test/24"),
    ("198.51.100.27", "mx-implicit.spf.test", "", "h.example", "fail", "-all"),  # no implicit MX
    (IN, "mx-null.spf.test", "", "h.example", "fail", "-all"),
    (IN, "mx10.spf.test", "", "h.example", "pass", "mx"),  # the 10th MX name matches
    (IN, "mx11.spf.test", "", "h.example", "permerror", "more than 10 MX names"),
    (IN, "ptr.spf.test", "", "h.example", "pass", "ptr:clients.test"),
    ("198.51.100.11", "ptr.spf.test", "", "h.example", "fail", "-all"),  # forged PTR: not validated
    ("198.51.100.14", "ptr.spf.test", "", "h.example", "fail", "-all"),  # no PTR
    ("198.51.100.15", "ptr.spf.test", "", "h.example", "fail", "-all"),  # forward lookup fails: skipped
    ("2001:db8::10", "ptr.spf.test", "", "h.example", "pass", "ptr:clients.test"),
    (IN, "exists.spf.test", "", "h.example", "pass", "exists:%{i}.allow.spf.test"),
    ("198.51.100.11", "exists.spf.test", "", "h.example", "fail", "-all"),
    ("2001:db8::10", "exists6.spf.test", "", "h.example", "pass", "exists:allow6.spf.test"),  # A, not AAAA
    # macros
    (IN, "macro.spf.test", "strong-bad@macro.spf.test", "h.example", "pass", "exists:"),
    (IN, "macro.spf.test", "weak-bad@macro.spf.test", "h.example", "fail", "-all"),
    (IN, "macro-upper.spf.test", "a+b@macro-upper.spf.test", "h.example", "pass", "exists:%{L}"),
    ("2001:db8::10", "macro-v6.spf.test", "", "h.example", "pass", "exists:%{ir}.%{v}"),
    (IN, "macro-p.spf.test", "", "h.example", "pass", "exists:%{p}"),
    ("198.51.100.11", "macro-p.spf.test", "", "h.example", "fail", "-all"),  # %{p} is "unknown"
    (IN, "macro-h.spf.test", "", "good.example", "pass", "exists:%{h}"),
    (IN, "macro-h.spf.test", "", "bad.example", "fail", "-all"),
    (IN, "macro-s.spf.test", "fred@macro-s.spf.test", "h.example", "pass", "exists:%{l}.%{o}"),
    # limits
    (IN, "void2.spf.test", "", "h.example", "pass", "ip4:198.51.100.0/24"),
    (IN, "void3.spf.test", "", "h.example", "permerror", "more than 2 void lookups"),
    (IN, "ten.spf.test", "", "h.example", "pass", "ip4:198.51.100.0/24"),
    (IN, "eleven.spf.test", "", "h.example", "permerror", "more than 10 DNS lookups"),
    (IN, "over-include.spf.test", "", "h.example", "permerror", "more than 10 DNS lookups"),
    (IN, "loop.spf.test", "", "h.example", "permerror", "more than 10 DNS lookups"),
    # errors
    (IN, "twice.spf.test", "", "h.example", "permerror", "has 2 SPF records"),
    (IN, "bad.spf.test", "", "h.example", "permerror", "bad network"),
    (IN, "late-error.spf.test", "", "h.example", "permerror", "bad network"),  # even after +all
    (IN, "toplabel.spf.test", "", "h.example", "permerror", "bad domain"),
    (IN, "tempfail.spf.test", "", "h.example", "temperror", "servfail looking up TXT host.servfail.test"),
    (IN, "a-servfail.spf.test", "", "h.example", "temperror", "servfail looking up A host.servfail.test"),
    (IN, "servfail.test", "", "h.example", "temperror", "servfail looking up TXT servfail.test"),
    (IN, "not-served.example", "", "h.example", "temperror", "refused"),
    # domains check_host does not start from
    (IN, "[198.51.100.10]", "", "h.example", "none", "not a domain"),
    (IN, "localhost", "", "h.example", "none", "not a domain"),
]


@pytest.mark.parametrize("ip, domain, sender, helo, result, detail", CASES,
                         ids=[f"{c[1]}-{c[0]}" for c in CASES])
@pytest_twisted.ensureDeferred
async def test_check_host(nsd, ip, domain, sender, helo, result, detail):
    out = await check(nsd, ip, domain, sender, helo)
    assert out.result == result, out
    if result in (TEMPERROR, PERMERROR, NONE) and detail:
        assert detail in out.problem, out
    elif detail:
        assert out.mechanism.startswith(detail), out
    assert out.domain and out.sender


@pytest_twisted.ensureDeferred
async def test_sender_is_postmaster_at_helo_for_the_null_sender(nsd):
    out = await check(nsd, IN, "fail.spf.test", "", "helo.spf.test")
    assert out.sender == "postmaster@helo.spf.test"
    out = await check(nsd, IN, "fail.spf.test", "x@fail.spf.test")
    assert out.sender == "x@fail.spf.test"


# --- exp= (RFC 7208 6.2) --------------------------------------------------------------------


@pytest.mark.parametrize("domain, explanation", [
    ("exp.spf.test", "198.51.100.10 is not one of exp.spf.test's designated mail servers."),
    ("exp-crt.spf.test", "198.51.100.10 refused by barricade.test"),
    ("exp-two.spf.test", ""),  # two TXT records: no explanation
    ("exp-bad.spf.test", ""),  # a bad macro: no explanation, never an error
    # redirect: the target's exp= (with the target as %{d}), not the redirecting domain's
    ("exp-redirect.spf.test", "198.51.100.10 is not one of exp.spf.test's designated mail servers."),
    ("exp-include.spf.test", ""),  # an included record's exp= is never used
])
@pytest_twisted.ensureDeferred
async def test_explanations(nsd, domain, explanation):
    out = await check(nsd, IN, domain)
    assert (out.result, out.explanation) == ("fail", explanation)


# --- -spf-temp-error-dns: DNS failures are skipped ---------------------------------------------


@pytest.mark.parametrize("domain, result", [
    ("tempfail.spf.test", "fail"),  # the broken include does not match; -all does
    ("a-servfail.spf.test", "pass"),  # the failing a is skipped; ip4 matches
    ("servfail.test", "neutral"),  # the domain's own record cannot be had
])
@pytest_twisted.ensureDeferred
async def test_lax_dns_never_gives_temperror(nsd, domain, result):
    out = await check(nsd, IN, domain, strict_dns=False)
    assert out.result == result, out
    assert "servfail" in out.problem and "ignored" in out.problem


@pytest_twisted.ensureDeferred
async def test_a_silent_server_is_temperror_within_the_budget(dns_blackhole):
    e = Evaluator(Resolver([("127.0.0.1", dns_blackhole.port)], max_timeout=1), budget=0.5)
    out = await aio(e.check_host(IN, "pass.spf.test", "", "h.example"))
    assert out.result == TEMPERROR and "longer than 0.5s" in out.problem
    lax = Evaluator(Resolver([("127.0.0.1", dns_blackhole.port)], max_timeout=1), budget=0.5,
                    strict_dns=False)
    out = await aio(lax.check_host(IN, "pass.spf.test", "", "h.example"))
    assert out.result == NEUTRAL


# --- a given record: the best-guess case ---------------------------------------------------------


@pytest.mark.parametrize("domain, record, result", [
    ("guess.spf.test", "v=spf1 a/24 mx/24 ptr", PASS),  # no SPF record of its own
    ("none.spf.test", "v=spf1 a/24 mx/24 ptr", NEUTRAL),  # no address either
    ("fail.spf.test", "v=spf1 ip4:198.51.100.0/24", PASS),  # the record replaces the domain's
])
@pytest_twisted.ensureDeferred
async def test_a_given_record_is_evaluated_for_the_domain(nsd, domain, record, result):
    out = await aio(evaluator(nsd).check_host("198.51.100.77", domain, "", "h.example", record=record))
    assert out.result == result, out


@pytest_twisted.ensureDeferred
async def test_lookups_go_through_the_resolver_metrics(nsd):
    metrics = Metrics(Catalogue())
    out = await check(nsd, IN, "include2.spf.test", metrics=metrics)
    assert out.result == PASS
    txt = metrics.registry.get_sample_value("barricade_dns_lookups_total", {"type": "TXT", "result": "answer"})
    assert txt == 3  # include2 -> include -> pass
