"""The Grafana dashboard shipped in the chart: a well-formed dashboard model whose queries name only
metrics the operator really exports (read from prometheus_client's registry, so a renamed metric
fails here rather than as an empty panel on someone's wall).
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

import conveyor.controller.metrics  # noqa: F401  (registers the operator's metrics)

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "conveyor"
DASHBOARD = CHART / "dashboards" / "conveyor.json"

# The PromQL functions and aggregations the dashboard may call; anything else before "(" fails the
# test, so a typo cannot pass as a function.
PROMQL_FUNCTIONS = {
    "sum",
    "avg",
    "max",
    "min",
    "count",
    "topk",
    "rate",
    "irate",
    "increase",
    "histogram_quantile",
    "clamp_min",
    "clamp_max",
    "vector",
}
PROMQL_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
}
# Series about the operator itself, without a Run namespace: not filtered by $namespace.
OPERATOR_WIDE = {
    "conveyor_reconcile_duration_seconds_bucket",
    "conveyor_reconcile_errors_total",
    "conveyor_run_reads_total",
    "conveyor_job_views_total",
    "conveyor_stale_status_writes_total",
    "conveyor_events_dropped_total",
}

SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "summary": ("", "_sum", "_count"),
    "info": ("_info",),
}


def exported_series_names() -> set[str]:
    """Every series name the operator's process (the default registry) and a model server with a
    loaded model (its own registry) expose on /metrics."""
    from conveyor.serving.metrics import ServerMetrics

    server = ServerMetrics("m", "v1")
    names: set[str] = set()
    for registry in (REGISTRY, server.registry):
        for family in registry.collect():
            names.update(family.name + s for s in SUFFIXES.get(family.type, ("",)))
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (Grafana variables and label matchers removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals: label values, regexes
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables: $namespace, $__rate_interval
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)  # label lists
    names: set[str] = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", text):
        word, call = match.group(1), match.group(2)
        if call:
            assert word in PROMQL_FUNCTIONS, f"unknown PromQL function {word!r} in {expr!r}"
        elif word not in PROMQL_KEYWORDS:
            names.add(word)
    return names


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, expr) of every panel target and every query variable."""
    found = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            # label_values(<series selector>, <label>): the selector is the PromQL part.
            selector = re.fullmatch(r"label_values\((.+),\s*\w+\)", query)
            assert selector, f"variable {var['name']}: {query!r} is not label_values(selector, label)"
            found.append((f"variable {var['name']}", selector.group(1)))
    return found


def test_metric_name_extraction_sees_through_promql() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, kind) (rate(a_bucket{kind=~"Run|x_y", ns="$namespace"}'
        "[$__rate_interval]))) / on (kind) group_left b_total offset 5m + 1e3"
    )
    assert metric_names(expr) == {"a_bucket", "b_total"}
    with pytest.raises(AssertionError, match="unknown PromQL function 'rat'"):
        metric_names("rat(x_total[5m])")


def test_exported_names_follow_the_exposition_format() -> None:
    names = exported_series_names()
    assert {"conveyor_runs_total", "conveyor_step_duration_seconds_bucket", "conveyor_steps_running"} <= names
    assert "conveyor_runs" not in names  # a counter is exposed with _total only


def test_dashboard_is_a_grafana_dashboard_model(dashboard: dict[str, Any]) -> None:
    assert dashboard["title"] == "Conveyor"
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", dashboard["uid"])
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert "__inputs" not in dashboard  # import-time placeholders would break provisioning by the sidecar
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["namespace"]["type"] == "query"
    assert variables["namespace"]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert variables["namespace"]["includeAll"] and variables["namespace"]["multi"]

    panels = dashboard["panels"]
    assert len(panels) >= 10
    assert len({p["id"] for p in panels}) == len(panels)
    assert len({p["title"] for p in panels}) == len(panels)
    for p in panels:
        assert p["type"] in {"timeseries", "stat", "gauge", "bargauge", "table"}, p["title"]
        assert p["title"] and p["description"], p
        grid = p["gridPos"]
        assert set(grid) == {"x", "y", "w", "h"}, p["title"]
        assert grid["x"] >= 0 and grid["y"] >= 0 and grid["w"] > 0 and grid["h"] > 0, p["title"]
        assert grid["x"] + grid["w"] <= 24, f"{p['title']} is wider than the 24-column grid"
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"]), p["title"]
        for t in p["targets"]:
            assert t["expr"].strip(), p["title"]
            assert t["datasource"] == p["datasource"], p["title"]


def test_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    for a, b in itertools.combinations(dashboard["panels"], 2):
        ga, gb = a["gridPos"], b["gridPos"]
        apart = (
            ga["x"] + ga["w"] <= gb["x"]
            or gb["x"] + gb["w"] <= ga["x"]
            or ga["y"] + ga["h"] <= gb["y"]
            or gb["y"] + gb["h"] <= ga["y"]
        )
        assert apart, f"{a['title']!r} overlaps {b['title']!r}"


def test_every_query_names_only_exported_metrics(dashboard: dict[str, Any]) -> None:
    exported = exported_series_names()
    used: set[str] = set()
    for where, expr in queries(dashboard):
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        missing = names - exported
        assert not missing, f"{where}: {sorted(missing)} not exported by the operator (exported: {sorted(exported)})"
        used |= names
    # What the people watching the cluster asked for is on the dashboard.
    assert {
        "conveyor_runs_total",
        "conveyor_steps_total",
        "conveyor_step_duration_seconds_bucket",
        "conveyor_step_overhead_seconds_bucket",
        "conveyor_cache_hits_total",
        "conveyor_steps_running",
        "conveyor_reconcile_duration_seconds_bucket",
        "conveyor_reconcile_errors_total",
        # per model: requests, errors, latency, replicas, drift, the version serving now
        "conveyor_server_requests_total",
        "conveyor_server_request_duration_seconds_bucket",
        "conveyor_model_ready_replicas",
        "conveyor_model_drift_score",
        "conveyor_model_info",
    } <= used


def test_namespaced_queries_filter_by_the_namespace_variable(dashboard: dict[str, Any]) -> None:
    for p in dashboard["panels"]:
        for t in p["targets"]:
            if metric_names(t["expr"]) <= OPERATOR_WIDE:
                continue
            selectors = re.findall(r"\b(conveyor_\w+)(\{[^}]*\})?", t["expr"])
            for name, matchers in selectors:
                assert 'namespace=~"$namespace"' in matchers, f"{p['title']}: {name} is not filtered by $namespace"


def test_quantile_panels_read_histogram_buckets(dashboard: dict[str, Any]) -> None:
    for p in dashboard["panels"]:
        for t in p["targets"]:
            if "histogram_quantile" in t["expr"]:
                assert re.search(r"sum by \(le(, \w+)*\) \(rate\(\w+_bucket", t["expr"]), t["expr"]


def test_the_chart_ships_the_same_file() -> None:
    template = (CHART / "templates" / "dashboards.yaml").read_text()
    assert '.Files.Get "dashboards/conveyor.json"' in template
    ignored = [line.strip() for line in (CHART / ".helmignore").read_text().splitlines()]
    assert not any(pattern in ("dashboards", "dashboards/", "*.json") for pattern in ignored)


def test_error_series_of_every_kind_exist_at_zero_before_any_error() -> None:
    """So the error panels read 0, not "No data", and an alert's increase() sees the first error."""
    from conveyor.controller.metrics import KINDS

    for metric in ("conveyor_reconcile_errors_total", "conveyor_stale_status_writes_total"):
        for kind in KINDS:
            assert REGISTRY.get_sample_value(metric, {"kind": kind}) is not None, (metric, kind)
