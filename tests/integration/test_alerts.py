"""The chart's alerts (templates/prometheusrule.yaml): rendered by the pinned helm, checked by
`promtool check rules`, and unit-tested by `promtool test rules` with synthetic series that fire
each alert and healthy series that must not (tests/integration/promtool/).

The rules are tested as users get them, from `helm template` with the default values, so a
template or values change that breaks an alert fails here. promtool and Prometheus are built from
their Go module by hack/install-testenv.sh; a missing promtool or helm fails these tests, never
skips them.
"""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
from prometheus_client.metrics import MetricWrapperBase

from conveyor.api.modeldeployment import DriftStatus, ModelDeploymentStatus
from conveyor.controller import metrics as operator_metrics
from conveyor.serving.metrics import ServerMetrics
from testenv.binaries import Binaries
from testenv.processes import free_port, wait_until
from testenv.prometheus import PrometheusServer, prometheus_config, static_job

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "conveyor"
RUNBOOKS = ROOT / "docs" / "alerts.md"
UNIT_TESTS = Path(__file__).resolve().parent / "promtool" / "conveyor-alerts.test.yaml"
RULES_FILE = "conveyor-alerts.rules.yaml"  # what the unit tests' rule_files name
ENABLED = {"metrics": {"prometheusRule": {"enabled": True}}}
EXPECTED_ALERTS = {
    "ConveyorRunsFailing",
    "ConveyorStepOverheadHigh",
    "ConveyorStepsWaitingToStart",
    "ConveyorArtifactStoreErrors",
    "ConveyorModelNotReady",
    "ConveyorCanaryFailing",
    "ConveyorModelDrift",
    "ConveyorModelMonitoringDropped",
}
# Labels a series gets from its scrape target rather than from the code: the model servers are
# scraped per pod, with the pod's namespace (the operator's own series carry `namespace` themselves).
TARGET_LABELS = {"namespace", "pod", "instance", "job"}


@dataclass(frozen=True)
class Chart:
    helm: Path
    home: Path

    def run(self, command: str, values: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
        """helm COMMAND ... CHART -f VALUES with its caches in a temporary home."""
        values_file = self.home / f"values-{secrets.token_hex(4)}.yaml"
        values_file.write_text(yaml.safe_dump(values))
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.home),
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }
        argv = [str(self.helm), command, *args, str(CHART), "-f", str(values_file)]
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=False)

    def template(self, values: dict[str, Any], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = self.run("template", values, "conveyor", "--namespace", "monitoring")
        if check:
            assert done.returncode == 0, f"helm template failed:\n{done.stderr}"
        return done

    def rules(self, values: dict[str, Any]) -> list[dict[str, Any]]:
        """The PrometheusRule objects the chart renders with these values."""
        docs = [d for d in yaml.safe_load_all(self.template(values).stdout) if d]
        return [d for d in docs if d["kind"] == "PrometheusRule"]


@pytest.fixture(scope="module")
def chart(tmp_path_factory: pytest.TempPathFactory) -> Chart:
    return Chart(Binaries.locate().helm, tmp_path_factory.mktemp("helm"))


@pytest.fixture(scope="module")
def promtool() -> Path:
    return Binaries.locate().promtool


@pytest.fixture(scope="module")
def rule_object(chart: Chart) -> dict[str, Any]:
    (rule,) = chart.rules(ENABLED)
    return rule


def alerting_rules(rule: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for group in rule["spec"]["groups"]:
        yield from group["rules"]


def run_promtool_tests(promtool: Path, rule: dict[str, Any], workdir: Path) -> subprocess.CompletedProcess[str]:
    """promtool test rules over the unit tests, with the rendered groups as their rule file."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / RULES_FILE).write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    shutil.copy(UNIT_TESTS, workdir / UNIT_TESTS.name)
    return subprocess.run(
        [str(promtool), "test", "rules", UNIT_TESTS.name],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# ------------------------------------------------------------------ rendering


def test_the_rule_is_off_by_default_and_needs_metrics(chart: Chart) -> None:
    assert chart.rules({}) == []
    assert chart.rules({"metrics": {"enabled": False, "prometheusRule": {"enabled": True}}}) == []


def test_helm_lint_passes_with_the_alerts_on(chart: Chart) -> None:
    done = chart.run("lint", {"metrics": {"prometheusRule": {"enabled": True, "labels": {"a": "b"}}}}, "--strict")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_rule_carries_the_chart_labels_and_the_extra_ones(chart: Chart) -> None:
    (rule,) = chart.rules(
        {"metrics": {"prometheusRule": {"enabled": True, "labels": {"release": "kps"}, "alertLabels": {"team": "ml"}}}}
    )
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["namespace"] == "monitoring"
    assert rule["metadata"]["labels"]["release"] == "kps"
    assert rule["metadata"]["labels"]["app.kubernetes.io/part-of"] == "conveyor"
    for alert in alerting_rules(rule):
        assert alert["labels"]["team"] == "ml", alert["alert"]


@pytest.mark.parametrize(
    ("values", "path"),
    [
        ({"thresholds": {"runFailureRatio": 2}}, "runFailureRatio"),
        ({"thresholds": {"driftFor": "15 minutes"}}, "driftFor"),
        ({"thresholds": {"stepOverheadSeconds": 10}}, "stepOverheadSeconds"),
        ({"runbookBaseUrl": "docs/alerts.md"}, "runbookBaseUrl"),
    ],
)
def test_the_schema_refuses_bad_alert_values(chart: Chart, values: dict[str, Any], path: str) -> None:
    done = chart.template({"metrics": {"prometheusRule": {"enabled": True, **values}}}, check=False)
    assert done.returncode != 0
    assert "prometheusRule" in done.stderr and path in done.stderr, done.stderr


def test_every_alert_has_severity_summary_description_and_a_runbook_section(rule_object: dict[str, Any]) -> None:
    alerts = list(alerting_rules(rule_object))
    assert {a["alert"] for a in alerts} == EXPECTED_ALERTS
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", m.group(1).lower()).replace(" ", "-")
        for m in re.finditer(r"^## (.+)$", RUNBOOKS.read_text(), re.M)
    }
    for alert in alerts:
        name = alert["alert"]
        assert alert["labels"]["severity"] in {"critical", "warning"}, name
        annotations = alert["annotations"]
        assert annotations["summary"].strip() and annotations["description"].strip(), name
        base, _, anchor = annotations["runbook_url"].partition("#")
        assert base == "https://github.com/conveyor-dev/conveyor/blob/main/docs/alerts.md", name
        assert anchor == name.lower() and anchor in anchors, f"{name}: no section #{anchor} in docs/alerts.md"


# ------------------------------------------------------------------ the metrics are the code's


def exported_labels() -> dict[str, set[str]]:
    """Series name → label names, for every series the operator and a model server expose."""
    labels: dict[str, set[str]] = {}
    for obj in vars(operator_metrics).values():
        if isinstance(obj, MetricWrapperBase):
            names = set(obj._labelnames)  # the declared labels, without creating a series
            for family in obj.describe():
                suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
                for suffix in suffixes:
                    labels[family.name + suffix] = names | ({"le"} if suffix == "_bucket" else set())
    server = ServerMetrics("m", "v1", registry=CollectorRegistry())
    server.count(200)
    server.duration.observe(0.01)
    server.monitoring_dropped.inc()
    server.model_info.labels("m", "v1", "sha256:0").set(1)  # as model_loaded() does
    for family in server.registry.collect():
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels, TARGET_LABELS)
    return labels


def test_every_expression_reads_exported_metrics_and_their_labels(rule_object: dict[str, Any]) -> None:
    exported = exported_labels()
    for alert in alerting_rules(rule_object):
        expr = alert["expr"]
        used = set(re.findall(r"\bconveyor_\w+", expr))
        assert used, alert["alert"]
        unknown = used - exported.keys()
        assert not unknown, f"{alert['alert']} reads {sorted(unknown)}, which the code does not export"
        available = set().union(*(exported[name] for name in used))
        # label_replace(conveyor_model_info, "model", ...) adds `model` for matching the servers' series.
        available |= set(re.findall(r'label_replace\([^,]+,\s*"(\w+)"', expr))
        for name, matchers in re.findall(r"\b(conveyor_\w+)\{([^}]*)\}", expr):
            for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers):
                assert label in exported[name], f"{alert['alert']}: {name} has no label {label!r}"
        for clause in re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", expr):
            for label in re.findall(r"\w+", clause):
                assert label in available, f"{alert['alert']}: no series it reads has a label {label!r}"


# ------------------------------------------------------------------ promtool


def test_promtool_checks_the_rendered_rules(promtool: Path, rule_object: dict[str, Any], tmp_path: Path) -> None:
    rules = tmp_path / RULES_FILE
    rules.write_text(yaml.safe_dump({"groups": rule_object["spec"]["groups"]}, sort_keys=False))
    done = subprocess.run(
        [str(promtool), "check", "rules", str(rules)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(EXPECTED_ALERTS)} rules found" in done.stdout


def test_every_alert_has_a_unit_test_that_fires_it_and_one_that_does_not() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(UNIT_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert fired == EXPECTED_ALERTS, f"no firing test for {sorted(EXPECTED_ALERTS - fired)}"
    assert quiet == EXPECTED_ALERTS, f"no quiet test for {sorted(EXPECTED_ALERTS - quiet)}"


def test_promtool_unit_tests_pass(promtool: Path, rule_object: dict[str, Any], tmp_path: Path) -> None:
    done = run_promtool_tests(promtool, rule_object, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_unit_tests_catch_a_changed_threshold(promtool: Path, chart: Chart, tmp_path: Path) -> None:
    """The unit tests are not vacuous: with a threshold the firing series do not reach, they fail."""
    (rule,) = chart.rules({"metrics": {"prometheusRule": {"enabled": True, "thresholds": {"runFailureRatio": 0.9}}}})
    done = run_promtool_tests(promtool, rule, tmp_path)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "FAILED" in output and "ConveyorRunsFailing" in output, output


# ------------------------------------------------------------------ a real Prometheus


def test_the_rendered_alerts_fire_in_prometheus_on_the_operators_own_series(chart: Chart, tmp_path: Path) -> None:
    """The operator's real metric code exports a ModelDeployment with no ready replica and a drifted
    input; Prometheus, scraping it and loaded with the chart's rules (short `for`s), fires both alerts
    with their annotations filled in, and no other."""
    values = {"thresholds": {"modelNotReadyFor": "1s", "driftFor": "1s"}}
    (rule,) = chart.rules({"metrics": {"prometheusRule": {"enabled": True, **values}}})
    rules = tmp_path / RULES_FILE
    rules.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    namespace, name = "alerts-test", f"md-{secrets.token_hex(3)}"
    operator_metrics.observe_model_deployment(
        namespace, name, ModelDeploymentStatus(ready_replicas=0, drift=DriftStatus(score=0.5))
    )
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=REGISTRY)  # the operator's registry
    try:
        job = static_job("operator", [f"127.0.0.1:{port}"], honor_labels=True)
        with PrometheusServer(prometheus_config([job], rule_files=[rules]), tmp_path / "logs") as prom:

            def firing() -> dict[str, Any]:
                alerts = {a.name: a for a in prom.alerts() if a.labels.get("deployment") == name}
                done = all(
                    alerts.get(n) and alerts[n].state == "firing"
                    for n in ("ConveyorModelNotReady", "ConveyorModelDrift")
                )
                return alerts if done else {}

            alerts = wait_until(firing, timeout=60, what="ConveyorModelNotReady and ConveyorModelDrift firing")
            assert isinstance(alerts, dict) and set(alerts) == {"ConveyorModelNotReady", "ConveyorModelDrift"}
            assert alerts["ConveyorModelNotReady"].labels["severity"] == "critical"
            assert alerts["ConveyorModelNotReady"].annotations["summary"] == (
                f"ModelDeployment {namespace}/{name} has no ready server"
            )
            assert "has been 0.50, above 0.2, for 1s" in alerts["ConveyorModelDrift"].annotations["description"]
            unhealthy = [(r.name, r.last_error) for r in prom.rules() if r.health == "err"]
            assert not unhealthy, unhealthy
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
        operator_metrics.forget_model_deployment(namespace, name)
