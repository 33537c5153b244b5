"""The Grafana dashboard (conf/grafana/barricade-dashboard.json) queries only
series Barricade exports: checked against the metrics module and a live scrape."""

from __future__ import annotations

import json
import re
import urllib.request

from prometheus_client import CollectorRegistry

from barricade.metrics import Metrics
from barricade.replies import Catalogue
from barricade.testing import PACKAGE_ROOT, Client, routes_to, wait_for

DASHBOARD = PACKAGE_ROOT / "conf/grafana/barricade-dashboard.json"
SERIES = re.compile(r"\bbarricade_[a-z0-9_]+")
#: The master's own series (barricade.workers.WorkerMaster), served with the workers' sums.
MASTER = {"barricade_workers": "gauge", "barricade_worker_restarts": "counter"}


def queried() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 20
    return {name for expr in exprs for name in SERIES.findall(expr)}


def exported() -> set[str]:
    """Every sample name the metrics module (and the worker master) can expose."""
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
    families = {m.name: m.type for m in Metrics(Catalogue(), CollectorRegistry()).registry.collect()}
    families.update(MASTER)
    return {name + s for name, kind in families.items() for s in suffixes[kind]}


def test_every_query_names_an_exported_series():
    unknown = queried() - exported()
    assert unknown == set()


def test_the_dashboard_covers_the_families_an_operator_watches():
    names = queried()
    for family in ("barricade_sessions_total", "barricade_replies_total", "barricade_messages_total",
                   "barricade_downstream_seconds_bucket", "barricade_downstream_errors_total",
                   "barricade_state_failures_total", "barricade_dns_lookups_total", "barricade_workers"):
        assert family in names


def test_queried_series_appear_in_a_live_scrape(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "workers=2")
    with Client(proxy.port) as c:
        c.ehlo()
        assert c.message("a@example.org", ["b@example.com"], b"Subject: m\r\n\r\nbody\r\n").code == 250
    url = f"http://127.0.0.1:{proxy.metrics_port}/metrics"
    text: list[str] = []

    def scraped() -> bool:
        text[:] = [urllib.request.urlopen(url, timeout=10).read().decode()]
        return "barricade_messages_total" in text[0]

    wait_for(scraped, 10, "the message in /metrics")
    live = {m.group(1) for m in re.finditer(r"^(barricade_[a-z0-9_]+)[{ ]", text[0], re.M)}
    # what one delivered message and a session must have produced, through the master
    for name in ("barricade_sessions_total", "barricade_sessions_active", "barricade_replies_total",
                 "barricade_messages_total", "barricade_downstream_seconds_bucket",
                 "barricade_checks_total", "barricade_check_seconds_bucket", "barricade_workers",
                 "barricade_worker_restarts_total"):
        assert name in live and name in queried(), name
    # the module knows every series the daemon serves (_created: prometheus_client's own)
    assert {n for n in live if not n.endswith("_created")} <= exported()
