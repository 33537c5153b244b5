"""barricade.dns.Resolver against a real nsd (tests/zones) and a server that never answers."""

from __future__ import annotations

import pytest
import pytest_twisted

from barricade.aio import aio
from barricade.dns import ClientName, DnsList, MxRecord, Resolver, Status
from barricade.metrics import Metrics
from barricade.replies import Catalogue

pytestmark = pytest.mark.integration


def resolver(nsd, **kw) -> Resolver:
    kw.setdefault("max_timeout", 5)
    return Resolver([("127.0.0.1", nsd.port)], **kw)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


# --- answer, NXDOMAIN, NODATA, temporary failures -----------------------------------------------


@pytest_twisted.ensureDeferred
async def test_answer_nxdomain_nodata_are_told_apart(nsd):
    r = resolver(nsd)
    a = await aio(r.a("mail.clients.test"))
    assert (a.status, a.records, a.ttl) == (Status.ANSWER, ("198.51.100.10",), 60)
    assert a.found and not a.missing and not a.tempfail
    aaaa = await aio(r.aaaa("mail.clients.test"))
    assert aaaa.records == ("2001:db8::10",)
    nx = await aio(r.a("ghost.clients.test"))
    assert nx.status is Status.NXDOMAIN and nx.missing
    assert nx.ttl == 30  # RFC 2308: min(SOA TTL 60, SOA minimum 30)
    nodata = await aio(r.aaaa("liar.clients.test"))
    assert nodata.status is Status.NODATA and nodata.missing and nodata.ttl == 30


@pytest_twisted.ensureDeferred
async def test_cname_is_followed(nsd):
    result = await aio(resolver(nsd).a("alias.clients.test"))
    assert result.records == ("198.51.100.10",)


@pytest_twisted.ensureDeferred
async def test_servfail_and_refused_are_temporary_failures(nsd):
    r = resolver(nsd)
    servfail = await aio(r.a("host.servfail.test"))
    assert (servfail.status, servfail.error, servfail.label) == (Status.TEMPFAIL, "servfail", "servfail")
    refused = await aio(r.a("www.not-served.example"))  # nsd refuses zones it does not serve
    assert (refused.status, refused.error) == (Status.TEMPFAIL, "refused")


@pytest_twisted.ensureDeferred
async def test_a_silent_server_times_out_within_dns_max_timeout(dns_blackhole):
    metrics = Metrics(Catalogue())
    r = Resolver([("127.0.0.1", dns_blackhole.port)], max_timeout=1, metrics=metrics)
    result = await aio(r.a("mail.clients.test"))
    assert (result.status, result.error) == (Status.TEMPFAIL, "timeout")
    assert sample(metrics, "barricade_dns_lookups_total", type="A", result="timeout") == 1
    name = await aio(r.client_name("198.51.100.10"))
    assert name == ClientName(error=True)


@pytest_twisted.ensureDeferred
async def test_a_lookup_its_check_gave_up_on_is_counted_too(dns_blackhole):
    """A check's own time limit (check-timeout, SPF's budget) cancels the lookup; during
    a DNS outage those were the lookups missing from the series."""
    import asyncio

    metrics = Metrics(Catalogue())
    r = Resolver([("127.0.0.1", dns_blackhole.port)], max_timeout=5, metrics=metrics)
    with pytest.raises(asyncio.TimeoutError):
        await aio(asyncio.wait_for(r.a("cut.clients.test"), 0.2))
    assert sample(metrics, "barricade_dns_lookups_total", type="A", result="cancelled") == 1
    assert sample(metrics, "barricade_dns_seconds_count", type="A") == 1


@pytest_twisted.ensureDeferred
async def test_bad_names_are_nxdomain_without_a_query(nsd):
    metrics = Metrics(Catalogue())
    r = resolver(nsd, metrics=metrics)
    for bad in ("a..b.test", "x" * 64 + ".test"):
        result = await aio(r.a(bad))
        assert (result.status, result.error) == (Status.NXDOMAIN, "bad-name")
    assert sample(metrics, "barricade_dns_seconds_count", type="A") == 0


# --- cache and metrics ----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_answers_are_cached_and_counted(nsd):
    metrics = Metrics(Catalogue())
    r = resolver(nsd, metrics=metrics)
    first = await aio(r.a("mail.clients.test"))
    second = await aio(r.a("MAIL.clients.test."))  # same question, other spelling
    assert first.records == second.records
    await aio(r.a("ghost.clients.test"))
    await aio(r.a("ghost.clients.test"))  # negative answers are cached too
    assert sample(metrics, "barricade_dns_lookups_total", type="A", result="answer") == 2
    assert sample(metrics, "barricade_dns_lookups_total", type="A", result="nxdomain") == 2
    assert sample(metrics, "barricade_dns_cache_hits_total", type="A") == 2
    assert sample(metrics, "barricade_dns_seconds_count", type="A") == 2  # only real queries timed
    assert len(r.cache) == 2


@pytest_twisted.ensureDeferred
async def test_temporary_failures_are_not_cached(nsd):
    metrics = Metrics(Catalogue())
    r = resolver(nsd, metrics=metrics)
    await aio(r.a("host.servfail.test"))
    await aio(r.a("host.servfail.test"))
    assert sample(metrics, "barricade_dns_seconds_count", type="A") == 2
    assert len(r.cache) == 0


@pytest_twisted.ensureDeferred
async def test_cache_size_zero_asks_every_time(nsd):
    metrics = Metrics(Catalogue())
    r = resolver(nsd, metrics=metrics, cache_size=0)
    await aio(r.a("mail.clients.test"))
    await aio(r.a("mail.clients.test"))
    assert sample(metrics, "barricade_dns_seconds_count", type="A") == 2


# --- client names (PTR, forward-confirmed) ------------------------------------------------------


@pytest.mark.parametrize("ip, expected", [
    ("198.51.100.10", ClientName("mail.clients.test", "mail.clients.test")),
    ("198.51.100.11", ClientName(None, "liar.clients.test", forged=True)),  # resolves elsewhere
    ("198.51.100.12", ClientName(None, "ghost.clients.test", forged=True)),  # does not exist
    ("198.51.100.13", ClientName("multi2.clients.test", "multi2.clients.test")),  # 2nd PTR confirms
    ("198.51.100.14", ClientName()),  # no PTR
    ("198.51.100.15", ClientName(None, "host.servfail.test", error=True)),  # forward lookup failed
    ("198.51.100.18", ClientName()),  # the PTR is not a host name
    ("192.0.2.1", ClientName()),
    ("2001:db8::10", ClientName("mail.clients.test", "mail.clients.test")),
    ("::ffff:198.51.100.10", ClientName("mail.clients.test", "mail.clients.test")),
    ("127.0.0.2", ClientName("loop2.clients.test", "loop2.clients.test")),
    ("127.0.0.3", ClientName(None, "loop3.clients.test", forged=True)),
    ("127.0.0.4", ClientName()),
    ("10.9.9.9", ClientName(error=True)),  # nsd refuses 9.9.10.in-addr.arpa: temporary
])
@pytest_twisted.ensureDeferred
async def test_client_name(nsd, ip, expected):
    assert await aio(resolver(nsd).client_name(ip)) == expected


@pytest_twisted.ensureDeferred
async def test_ptr_lists_every_name(nsd):
    result = await aio(resolver(nsd).ptr("198.51.100.13"))
    assert sorted(result.records) == ["multi1.clients.test", "multi2.clients.test"]


# --- MX ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("domain, status, hosts, implicit, null", [
    ("mx.test", Status.ANSWER, ((10, "mx1.mx.test"), (20, "mx2.mx.test")), False, False),
    ("sorted.mx.test", Status.ANSWER, ((5, "mx1.mx.test"), (30, "mx2.mx.test")), False, False),
    ("implicit.mx.test", Status.ANSWER, ((0, "implicit.mx.test"),), True, False),
    ("implicit6.mx.test", Status.ANSWER, ((0, "implicit6.mx.test"),), True, False),
    ("null.mx.test", Status.ANSWER, (), False, True),
    ("loopback.mx.test", Status.ANSWER, ((10, "lo.mx.test"),), False, False),
    ("nomx.mx.test", Status.NODATA, (), False, False),
    ("nowhere.mx.test", Status.NXDOMAIN, (), False, False),
    ("x.servfail.test", Status.TEMPFAIL, (), False, False),
])
@pytest_twisted.ensureDeferred
async def test_mx(nsd, domain, status, hosts, implicit, null):
    mx = await aio(resolver(nsd).mx(domain))
    assert (mx.status, mx.hosts, mx.implicit, mx.null) == (
        status, tuple(MxRecord(*h) for h in hosts), implicit, null)


@pytest_twisted.ensureDeferred
async def test_mx_hosts_addresses(nsd):
    r = resolver(nsd)
    assert (await aio(r.addresses("lo.mx.test"))).records == ("127.0.0.1",)
    assert (await aio(r.addresses("private.mx.test"))).records == ("10.0.0.25",)
    assert (await aio(r.addresses("dual.clients.test"))).records == ("198.51.100.10", "2001:db8::10")
    assert (await aio(r.addresses("nowhere.mx.test"))).status is Status.NXDOMAIN
    assert (await aio(r.addresses("host.servfail.test"))).status is Status.TEMPFAIL


# --- TXT (SPF records) --------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_txt(nsd):
    r = resolver(nsd)
    assert (await aio(r.txt("pass.spf.test"))).records == (
        "v=spf1 ip4:198.51.100.0/24 ip6:2001:db8::/32 -all",)
    assert (await aio(r.txt("split.spf.test"))).records == ("v=spf1 ip4:198.51.100.10 -all",)
    assert sorted((await aio(r.txt("twice.spf.test"))).records) == ["v=spf1 +all", "v=spf1 -all"]
    assert (await aio(r.txt("2.100.51.198.bl.test"))).records == ("listed: spam source",)
    assert (await aio(r.txt("ghost.spf.test"))).status is Status.NXDOMAIN


# --- DNS lists -----------------------------------------------------------------------------------


def lists(*texts: str) -> tuple[DnsList, ...]:
    return tuple(DnsList.parse(t) for t in texts)


@pytest.mark.parametrize("item, texts, listed_by, answer", [
    ("198.51.100.2", ["bl.test"], "bl.test", "127.0.0.2"),
    ("198.51.100.10", ["bl.test"], None, None),  # NXDOMAIN: not listed
    ("198.51.100.1", ["bl.test"], None, None),  # 127.0.0.1 never lists without a mask
    ("198.51.100.7", ["bl.test"], None, None),  # 10.0.0.2: outside 127/8
    ("198.51.100.2", ["bl.test/0x04"], None, None),
    ("198.51.100.4", ["bl.test/0x04"], "bl.test", "127.0.0.4"),
    ("198.51.100.6", ["bl.test/0x08"], "bl.test", "127.0.0.8"),  # one of two answers
    ("127.0.0.2", ["wl.test", "gl.test", "bl.test"], "wl.test", "127.0.0.2"),  # RFC 5782 test point
    ("198.51.100.20", ["gl.test", "wl.test", "bl.test"], "wl.test", "127.0.0.2"),  # list order
    ("198.51.100.20", ["bl.test", "wl.test"], "bl.test", "127.0.0.2"),
    ("2001:db8::2", ["bl.test"], "bl.test", "127.0.0.2"),  # IPv6 nibbles
    ("::ffff:198.51.100.2", ["bl.test"], "bl.test", "127.0.0.2"),
    ("spam.example.test", ["dbl.test"], "dbl.test", "127.0.0.2"),  # a domain list
    ("ham.example.test", ["dbl.test"], None, None),
])
@pytest_twisted.ensureDeferred
async def test_dnsbl(nsd, item, texts, listed_by, answer):
    result = await aio(resolver(nsd).dnsbl(item, lists(*texts)))
    assert result.failed == ()
    if listed_by is None:
        assert result.hit is None
    else:
        assert (result.hit.dnslist.suffix, result.hit.answer) == (listed_by, answer)
        assert result.hit.query.endswith("." + listed_by)


@pytest_twisted.ensureDeferred
async def test_dnsbl_reports_lists_that_fail_and_still_finds_the_others(nsd):
    result = await aio(resolver(nsd).dnsbl("198.51.100.2", lists("servfail.test", "bl.test")))
    assert result.hit.dnslist.suffix == "bl.test"
    assert [(f.name, f.error) for f in result.failed] == [("2.100.51.198.servfail.test", "servfail")]
    result = await aio(resolver(nsd).dnsbl("198.51.100.10", lists("servfail.test", "bl.test")))
    assert result.hit is None and len(result.failed) == 1
