"""The URI list decisions against a resolver that answers from a table (no I/O)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from barricade.content.uri import Found
from barricade.content.uribl import Asker, Judge, Settings, choose, envelope_names
from barricade.dns import DnsList, Result, Status
from barricade.options import OptionError


class TableResolver:
    """Answers A/NS/PTR/SOA from a dict; everything else is NXDOMAIN. Counts questions."""

    def __init__(self, table: dict[tuple[str, str], object]):
        self.table = table
        self.asked: list[tuple[str, str]] = []

    async def query(self, name: str, rdtype: str) -> Result:
        self.asked.append((name, rdtype))
        await asyncio.sleep(0)
        value = self.table.get((name, rdtype))
        if value == "tempfail":
            return Result(name, rdtype, Status.TEMPFAIL, error="timeout")
        if value == "nodata":
            return Result(name, rdtype, Status.NODATA)
        if value is None:
            return Result(name, rdtype, Status.NXDOMAIN)
        return Result(name, rdtype, Status.ANSWER, tuple(value))


def judge(settings: Settings, table: dict, found: list[Found], body=None):
    resolver = TableResolver(table)
    j = Judge(settings, Asker(resolver), body)
    with ThreadPoolExecutor(1) as pool:  # the test run's own loop is Twisted's: use another
        return pool.submit(asyncio.run, j.first_hit(found)).result(), resolver


def url(host: str, kind: str = "url") -> Found:
    return Found(host, f"http://{host}/", kind)


SURBL = (DnsList("surbl.test"),)


def test_first_hit_in_message_order_and_each_question_once():
    table = {("b.test.surbl.test", "A"): ["127.0.0.2"], ("a.test.surbl.test", "A"): ["127.0.0.4"]}
    found = [url("www.clean.test"), url("x.a.test"), url("y.a.test"), url("b.test")]
    hit, resolver = judge(Settings(uri_bl=SURBL), table, found)
    assert (hit.reply_id, hit.fields, hit.reason) == (762, {"domain": "a.test", "list": "surbl.test"}, "uri-bl")
    assert hit.found.host == "x.a.test"
    assert resolver.asked.count(("a.test.surbl.test", "A")) == 1


def test_cite_list_off_and_masks():
    table = {("a.test.surbl.test", "A"): ["127.0.0.2"]}
    hit, _ = judge(Settings(uri_bl=SURBL, cite_list=False), table, [url("a.test")])
    assert hit.fields["list"] == "a URI black list"
    hit, _ = judge(Settings(uri_bl=(DnsList("surbl.test", 0x04),)), table, [url("a.test")])
    assert hit is None


def test_body_tag_ok_passes_and_reject_refuses_before_any_lookup():
    table = {("a.test.surbl.test", "A"): ["127.0.0.2"]}
    words = {"a.test": "OK", "b.test": "REJECT"}
    hit, resolver = judge(Settings(uri_bl=SURBL), table, [url("a.test"), url("b.test")], words.get)
    assert (hit.reply_id, hit.fields) == (763, {"host": "b.test"})
    assert ("a.test.surbl.test", "A") not in resolver.asked


def test_heuristics_on_addresses():
    table = {("h.test", "A"): ["198.51.100.7"], ("7.100.51.198.in-addr.arpa", "PTR"): ["dsl-198-51-100-7.isp.test"],
             ("n.test", "A"): ["198.51.100.8"], ("slow.test", "A"): "tempfail"}
    s = Settings(ip_in_ptr=1, require_ptr=1)
    assert judge(s, table, [url("h.test")])[0].reply_id == 758
    assert judge(s, table, [url("n.test")])[0].reply_id == 760
    assert judge(Settings(reject_unknown=True), table, [url("gone.test")])[0].reply_id == 757
    assert judge(Settings(reject_unknown=True), table, [url("gone.test", "mail")])[0] is None
    assert judge(Settings(reject_on_timeout=True), table, [url("slow.test")])[0].reply_id == 756
    assert judge(Settings(reject_unknown=True), table, [url("slow.test")])[0] is None
    assert judge(Settings(require_domain=True), table, [url("192.0.2.1")])[0].reply_id == 765
    assert judge(Settings(require_domain=True), table, [url("192.0.2.1", "host")])[0] is None


def test_valid_soa_and_name_servers():
    table = {("bad.test", "SOA"): "nodata", ("ok.test", "SOA"): ["x"], ("ok.test", "NS"): ["ns.ok.test"],
             ("ns.ok.test.nsbl.test", "A"): ["127.0.0.2"], ("ns.ok.test", "A"): ["192.0.2.9"],
             ("9.2.0.192.bl.test", "A"): ["127.0.0.2"]}
    hit, _ = judge(Settings(valid_soa=True), table, [url("www.bad.test")])
    assert (hit.reply_id, hit.fields) == (745, {"domain": "bad.test", "reason": "no SOA record"})
    hit, _ = judge(Settings(ns_bl=(DnsList("nsbl.test"),)), table, [url("www.ok.test")])
    assert (hit.reply_id, hit.fields["ns"]) == (788, "ns.ok.test")
    hit, _ = judge(Settings(ns_a_bl=(DnsList("bl.test"),)), table, [url("www.ok.test")])
    assert hit.fields["reason"] == "address 192.0.2.9 black listed by bl.test"


def test_choose_counts_distinct_registered_domains():
    found = [url("a.one.test"), url("b.one.test"), url("two.test"), url("three.test"), url("c.one.test")]
    assert [f.host for f in choose(found, 2)] == ["a.one.test", "b.one.test", "two.test", "c.one.test"]
    assert len(choose(found, 0)) == 5


def test_envelope_names_and_settings():
    assert envelope_names("[192.0.2.1]") == []
    assert [f.host for f in envelope_names("MX.Spammer.Test")] == ["mx.spammer.test"]
    s = Settings.from_config({"uri-bl": ["surbl.test/0x04"], "uri-max-test": 3})
    assert s.uri_bl == (DnsList("surbl.test", 4),) and s.max_test == 3 and s.active
    assert not Settings.from_config({}).active
    with pytest.raises(OptionError):
        Settings.from_config({"domain-bl": ["bad list!"]})
