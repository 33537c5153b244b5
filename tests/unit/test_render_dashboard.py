"""scripts/render-dashboard (the picture in docs/running.md) draws every panel
of the Grafana dashboard with every one of its queries: none is left out
silently, and no dashboard variable is left for Prometheus to choke on."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import re
import sys

import pytest

from barricade.testing import PACKAGE_ROOT

DASHBOARD = PACKAGE_ROOT / "conf/grafana/barricade-dashboard.json"


@pytest.fixture(scope="module")
def render():
    path = PACKAGE_ROOT / "scripts/render-dashboard"
    loader = importlib.machinery.SourceFileLoader("render_dashboard", str(path))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    sys.modules[loader.name] = module  # dataclasses look their module up there
    try:
        loader.exec_module(module)
        yield module
    finally:
        del sys.modules[loader.name]


def test_every_panel_and_every_target_of_the_dashboard_is_extracted(render):
    dashboard = json.loads(DASHBOARD.read_text())
    found = render.panels(dashboard, step=2.0)
    assert [p.title for p in found] == [p["title"] for p in dashboard["panels"]]
    for panel, source in zip(found, dashboard["panels"], strict=True):
        assert [t.ref for t in panel.targets] == [t["refId"] for t in source["targets"]]
        assert [t.legend for t in panel.targets] == [t.get("legendFormat", "") for t in source["targets"]]
        assert panel.grid == source["gridPos"]
        assert panel.unit == source["fieldConfig"]["defaults"]["unit"]
        for target, raw in zip(panel.targets, source["targets"], strict=True):
            assert "$" not in target.expr and "[[" not in target.expr
            # the query is the dashboard's own, only the variables filled in
            assert target.expr == raw["expr"].replace("$__rate_interval", "4s")
    assert sum(len(p.targets) for p in found) == sum(len(p["targets"]) for p in dashboard["panels"])


@pytest.mark.parametrize(("step", "expected"), [(1.0, "4s"), (2.0, "4s"), (5.0, "6s"), (30.0, "31s")])
def test_rate_interval(render, step, expected):
    assert render.rate_interval(step, scrape=1.0) == expected


def test_panels_inside_rows_and_template_variables(render):
    dashboard = {
        "templating": {"list": [
            {"name": "job", "current": {"value": "barricade"}},
            {"name": "worker", "current": {"value": "$__all"}},
        ]},
        "panels": [
            {"type": "row", "title": "Sessions", "collapsed": True, "gridPos": {"x": 0, "y": 0, "w": 24, "h": 1},
             "panels": [
                 {"type": "timeseries", "title": "inside", "gridPos": {"x": 0, "y": 1, "w": 12, "h": 8},
                  "targets": [{"refId": "A", "expr": 'rate(x_total{job="$job",w=~"${worker}"}[$__rate_interval])',
                               "legendFormat": "{{job}}"}]},
             ]},
            {"type": "timeseries", "title": "outside", "gridPos": {"x": 12, "y": 1, "w": 12, "h": 8},
             "targets": [{"refId": "A", "expr": "sum(y{job='[[job]]'})"}]},
        ],
    }
    found = render.panels(dashboard, step=5.0)
    assert [p.title for p in found] == ["inside", "outside"]
    assert found[0].targets[0].expr == 'rate(x_total{job="barricade",w=~".*"}[6s])'
    assert found[0].unit == "short"
    assert found[1].targets[0].expr == "sum(y{job='barricade'})"


@pytest.mark.parametrize("panel", [
    {"type": "stat", "title": "not drawn", "gridPos": {}, "targets": [{"expr": "up"}]},
    {"type": "timeseries", "title": "no query", "gridPos": {}, "targets": []},
    {"type": "timeseries", "title": "unknown variable", "gridPos": {}, "targets": [{"expr": "x{a='$nope'}"}]},
])
def test_a_panel_that_cannot_be_drawn_is_an_error_not_a_gap(render, panel):
    with pytest.raises(ValueError, match=re.escape(panel["title"]) + "|nope"):
        render.panels({"panels": [panel]}, step=2.0)


def test_legend_formats(render):
    labels = {"outcome": "accepted", "code": "250"}
    assert render.legend("{{outcome}} ({{ code }})", labels, "e") == "accepted (250)"
    assert render.legend("", labels, "e") == '{code="250", outcome="accepted"}'
    assert render.legend("", {}, "sum(x)") == "sum(x)"


def test_legend_rows_flow_and_units(render):
    rows = render.legend_layout(["a" * 20] * 6, width=300)
    assert sum(len(r) for r in rows) == 6 and len(rows) > 1
    assert render.legend_layout([], width=300) == []
    assert render.tick_format("s", 0.0123) == "12.3 ms"
    assert render.tick_format("s", 2) == "2 s"
    assert render.tick_format("short", 1500) == "1.5 K"
    assert render.tick_format("percentunit", 0.25) == "25%"
