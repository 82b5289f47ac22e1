"""The test environment's Prometheus (testenv.prometheus) and dashboard query extractor
(testenv.dashboards), against real things: Prometheus built from its module scraping a real HTTP
exporter (prometheus-client on 127.0.0.1), finding pods with its own Kubernetes service discovery
on the test API server, and the chart's real dashboard, whose every filled-in query Prometheus must
accept.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from kubernetes import client as k8s_client
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from testenv.controlplane import ControlPlane
from testenv.dashboards import ALL, DASHBOARDS, UnfilledVariableError, dashboard_queries, seconds
from testenv.processes import free_port, pid_alive, wait_until
from testenv.prometheus import (
    Alert,
    KubernetesAPI,
    PrometheusServer,
    QueryError,
    kubernetes_pods_job,
    prometheus_config,
    static_job,
)

pytestmark = pytest.mark.integration


@dataclass
class Exporter:
    """A real /metrics endpoint with a counter and a gauge the tests set."""

    port: int
    requests: Counter
    temperature: Gauge

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def exporter() -> Iterator[Exporter]:
    registry = CollectorRegistry()
    requests = Counter("testenv_requests", "Requests by code.", ["code"], registry=registry)
    temperature = Gauge("testenv_temperature", "A gauge.", registry=registry)
    requests.labels("200").inc(7)
    requests.labels("500").inc(2)
    temperature.set(21.5)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        yield Exporter(port, requests, temperature)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture(scope="module")
def prometheus(exporter: Exporter, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    config = prometheus_config([static_job("exporter", [exporter.target])])
    with PrometheusServer(config, tmp_path_factory.mktemp("prometheus-logs")) as server:
        server.wait_for_targets("exporter")
        yield server


def value_of(samples: list[Any]) -> float:
    (sample,) = samples
    return float(sample.value)


# ------------------------------------------------------------------ the server and its client


def test_an_instant_query_returns_the_scraped_values(prometheus: PrometheusServer, exporter: Exporter) -> None:
    (ok,) = prometheus.wait_for_data('testenv_requests_total{code="200"}')
    assert ok.value == 7
    assert ok.labels == {
        "__name__": "testenv_requests_total",
        "code": "200",
        "job": "exporter",
        "instance": exporter.target,
    }
    assert value_of(prometheus.query("sum(testenv_requests_total)")) == 9
    (scalar,) = prometheus.query("scalar(testenv_temperature) * 2")
    assert scalar.labels == {} and scalar.value == 43
    assert abs(scalar.time - time.time()) < 60


def test_a_new_value_is_scraped_and_a_range_query_shows_the_change(
    prometheus: PrometheusServer, exporter: Exporter
) -> None:
    before = value_of(prometheus.wait_for_data('testenv_requests_total{code="500"}'))
    exporter.requests.labels("500").inc(5)
    after = prometheus.wait_for_data(
        'testenv_requests_total{code="500"}', lambda r: bool(r) and r[0].value == before + 5, timeout=30
    )
    end = after[0].time
    (series,) = prometheus.query_range('testenv_requests_total{code="500"}', end - 10, end, 1)
    values = [v for _, v in series.values]
    assert series.labels["code"] == "500"
    assert values[-1] == before + 5 and set(values) <= {before, before + 5}, values
    times = [t for t, _ in series.values]
    assert times == sorted(times) and times[-1] == end


def test_an_error_answer_raises_naming_the_query(prometheus: PrometheusServer) -> None:
    with pytest.raises(QueryError, match=r"query 'sum\(testenv_requests_total' *: bad_data"):
        prometheus.query("sum(testenv_requests_total")
    with pytest.raises(QueryError, match=r"range query 'rate\(testenv_temperature\)'"):
        prometheus.query_range("rate(testenv_temperature)", time.time() - 10, time.time(), 1)
    began = time.monotonic()
    with pytest.raises(QueryError, match="nosuchfunction"):
        prometheus.wait_for_data("nosuchfunction(testenv_temperature)", timeout=30)
    assert time.monotonic() - began < 10, "a bad query must fail at once, not wait for data"


def test_reload_swaps_the_scrape_jobs(prometheus: PrometheusServer, exporter: Exporter) -> None:
    prometheus.reload(
        prometheus_config([static_job("exporter", [exporter.target]), static_job("again", [exporter.target])])
    )
    (target,) = prometheus.wait_for_targets("again")
    assert target.scrape_url == f"http://{exporter.target}/metrics"
    assert value_of(prometheus.wait_for_data('testenv_temperature{job="again"}')) == 21.5
    with pytest.raises(RuntimeError, match="refused the new config"):
        prometheus.reload({"scrape_configs": [{"job_name": "broken", "static_configs": "not a list"}]})


def test_rules_are_loaded_evaluated_and_their_alerts_listed(tmp_path: Path, exporter: Exporter) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "testenv",
                        "rules": [
                            {
                                "alert": "TemperatureHigh",
                                "expr": "testenv_temperature > 20",
                                "labels": {"severity": "warning"},
                                "annotations": {"summary": "{{ $value }} degrees"},
                            },
                            {"alert": "Never", "expr": "testenv_temperature > 1000"},
                            {"record": "testenv:requests:sum", "expr": "sum(testenv_requests_total)"},
                        ],
                    }
                ]
            }
        )
    )
    config = prometheus_config([static_job("exporter", [exporter.target])], rule_files=[rules])
    with PrometheusServer(config, tmp_path / "logs") as prom:
        (alert,) = cast(list[Alert], wait_until(prom.alerts, timeout=30, what="an alert", interval=0.5))
        assert (alert.name, alert.state, alert.value) == ("TemperatureHigh", "firing", 21.5)
        assert alert.labels["severity"] == "warning" and alert.annotations == {"summary": "21.5 degrees"}
        assert {(r.name, r.kind, r.health) for r in prom.rules()} == {
            ("TemperatureHigh", "alerting", "ok"),
            ("Never", "alerting", "ok"),
            ("testenv:requests:sum", "recording", "ok"),
        }
        assert value_of(prom.wait_for_data("testenv:requests:sum")) >= 9


def test_stop_leaves_no_process_port_or_file(tmp_path: Path, exporter: Exporter) -> None:
    server = PrometheusServer(prometheus_config([static_job("exporter", [exporter.target])]), tmp_path).start()
    assert server.process is not None
    pid, work_dir = server.process.pid, server.work_dir
    assert (work_dir / "data").is_dir()
    server.stop()
    assert not pid_alive(pid)
    assert not work_dir.exists()
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect((server.host, server.port))
    assert "Server is ready to receive web requests" in (tmp_path / "prometheus.log").read_text()


# ------------------------------------------------------------------ Kubernetes service discovery


def exporter_pod(name: str, port: int, labels: dict[str, str] | None = None) -> Any:
    """A pod object whose container port is the exporter's; never scheduled, whatever nodes the session has."""
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "nodeSelector": {"conveyor.dev/test": "no-such-node"},
            "containers": [
                {
                    "name": "main",
                    "image": "example.invalid/none",
                    "ports": [{"name": "metrics", "containerPort": port}, {"name": "other", "containerPort": 1}],
                }
            ],
        },
    }


def create_exporter_pods(control_plane: ControlPlane, namespace: str, port: int, *names: str) -> None:
    """Pods (``exporter*`` ones labelled app=exporter) whose status says they run at 127.0.0.1: no
    kubelet runs them, so the exporter on 127.0.0.1 answers for them."""
    with control_plane.api_client() as client:
        core = k8s_client.CoreV1Api(client)
        for name in names:
            labels = {"app": "exporter", "conveyor.dev/x": "y"} if name.startswith("exporter") else {}
            core.create_namespaced_pod(namespace, exporter_pod(name, port, labels))
            status: Any = {"status": {"phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}]}}
            core.patch_namespaced_pod_status(name, namespace, status)


def pods_of(prom: PrometheusServer, job: str) -> list[str]:
    return sorted(t.labels["pod"] for t in prom.targets() if t.job == job)


def test_prometheus_discovers_pods_on_the_test_api_server_and_scrapes_them(
    control_plane: ControlPlane, namespace: str, exporter: Exporter, tmp_path: Path
) -> None:
    """Prometheus's own kubernetes_sd, through the admin kubeconfig: the selected pods' named port
    is scraped with the pod's labels, and the watch follows a pod added and one deleted later."""
    create_exporter_pods(control_plane, namespace, exporter.port, "exporter", "unlabelled")
    job = kubernetes_pods_job(
        "pods", control_plane.kubeconfig, namespaces=[namespace], label_selector="app=exporter", port_name="metrics"
    )
    assert job["kubernetes_sd_configs"] == [
        {
            "role": "pod",
            "kubeconfig_file": str(control_plane.kubeconfig),
            "namespaces": {"names": [namespace]},
            "selectors": [{"role": "pod", "label": "app=exporter"}],
        }
    ]
    with PrometheusServer(prometheus_config([job]), tmp_path) as prom:
        (target,) = prom.wait_for_targets("pods", timeout=60)
        assert target.scrape_url == f"http://{exporter.target}/metrics"
        assert {k: target.labels[k] for k in ("namespace", "pod", "container", "app", "conveyor_dev_x")} == {
            "namespace": namespace,
            "pod": "exporter",
            "container": "main",
            "app": "exporter",
            "conveyor_dev_x": "y",
        }
        # Only the labelled pod's port named metrics: not the other port, not the other pod.
        assert pods_of(prom, "pods") == ["exporter"]
        (sample,) = prom.wait_for_data(f'testenv_temperature{{namespace="{namespace}", pod="exporter"}}')
        assert sample.value == 21.5

        create_exporter_pods(control_plane, namespace, exporter.port, "exporter-2")
        prom.wait_for_targets("pods", count=2, timeout=60)
        with control_plane.api_client() as client:
            k8s_client.CoreV1Api(client).delete_namespaced_pod("exporter", namespace, grace_period_seconds=0)
        wait_until(lambda: pods_of(prom, "pods") == ["exporter-2"], timeout=60, what="the deleted pod's target gone")


def test_discovery_with_a_service_account_token_needs_the_right_to_list_and_watch_pods(
    control_plane: ControlPlane, namespace: str, exporter: Exporter, tmp_path: Path
) -> None:
    create_exporter_pods(control_plane, namespace, exporter.port, "exporter")
    assert control_plane.ca is not None
    token_file = tmp_path / "token"
    with control_plane.api_client() as client:
        core = k8s_client.CoreV1Api(client)
        account: Any = {"metadata": {"name": "prometheus"}}
        core.create_namespaced_service_account(namespace, account)
        request: Any = {"spec": {"audiences": [], "expirationSeconds": 3600}}
        issued: Any = core.create_namespaced_service_account_token("prometheus", namespace, request)
        token_file.write_text(issued.status.token)
        access = KubernetesAPI(
            api_server=control_plane.server_url, ca_file=control_plane.ca.cert, token_file=token_file
        )
        job = kubernetes_pods_job("pods", access, namespaces=[namespace], port_name="metrics")
        assert job["kubernetes_sd_configs"][0]["authorization"] == {
            "type": "Bearer",
            "credentials_file": str(token_file),
        }
        with PrometheusServer(prometheus_config([job]), tmp_path / "logs") as prom:
            log = tmp_path / "logs" / "prometheus.log"
            wait_until(lambda: "forbidden" in log.read_text(), timeout=60, what="the refused pod list in the log")
            assert pods_of(prom, "pods") == []
            rbac = k8s_client.RbacAuthorizationV1Api(client)
            role: Any = {
                "metadata": {"name": "list-pods"},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}],
            }
            rbac.create_namespaced_role(namespace, role)
            binding: Any = {
                "metadata": {"name": "prometheus-list-pods"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "list-pods"},
                "subjects": [{"kind": "ServiceAccount", "name": "prometheus", "namespace": namespace}],
            }
            rbac.create_namespaced_role_binding(namespace, binding)
            # client-go's retry backs off up to 30 s between lists.
            (target,) = prom.wait_for_targets("pods", timeout=90)
            assert target.labels["pod"] == "exporter"
            assert target.scrape_url == f"http://{exporter.target}/metrics"


def test_kubernetes_api_needs_exactly_one_way_to_the_api_server(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        KubernetesAPI()
    with pytest.raises(ValueError, match="exactly one"):
        KubernetesAPI(tmp_path / "kubeconfig", api_server="https://127.0.0.1:6443")
    with pytest.raises(ValueError, match="carries its own"):
        KubernetesAPI(tmp_path / "kubeconfig", token_file=tmp_path / "token")


def test_prometheus_refuses_a_discovery_it_was_built_without(tmp_path: Path) -> None:
    """The build keeps only the Kubernetes, file and HTTP discoveries: a cloud one is an unknown field."""
    config = prometheus_config([{"job_name": "ec2", "ec2_sd_configs": [{"region": "eu-west-1"}]}])
    with pytest.raises(RuntimeError, match=r"prometheus exited with 2(.|\n)*ec2_sd_configs"):
        PrometheusServer(config, tmp_path).start(timeout=30)


# ------------------------------------------------------------------ the dashboards' queries


def dashboard_targets() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, raw expr) of every panel target, read straight from the JSON."""

    def walk(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in panels:
            yield panel
            yield from walk(panel.get("panels", []))

    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in walk(dashboard["panels"]):
            found += [(dashboard["title"], panel["title"], t["expr"]) for t in panel.get("targets", []) if "expr" in t]
    return found


LEFTOVER = re.compile(r"\$\{|\$[A-Za-z_]|\[\[")


def test_every_panel_target_of_the_dashboards_is_found_with_its_variables_filled() -> None:
    raw = dashboard_targets()
    assert len(raw) >= 20  # the shipped dashboard, not an empty directory
    queries = dashboard_queries({"namespace": ["team-a", "team-b"]}, range_="30m", rate_interval="2m")
    panels = [q for q in queries if q.kind == "panel"]
    assert [(q.dashboard, q.panel) for q in panels] == [(d, p) for d, p, _ in raw]
    for q, (_, _, expr) in zip(panels, raw, strict=True):
        assert not LEFTOVER.search(q.expr), f"{q.panel}: unfilled variable in {q.expr}"
        assert q.ref_id
        if "$namespace" in expr:
            assert 'namespace=~"(team-a|team-b)"' in q.expr, q.expr
        if "$__rate_interval" in expr:
            assert "[2m]" in q.expr, q.expr
        if "$__range" in expr:
            assert "[30m]" in q.expr, q.expr
    (variable,) = [q for q in queries if q.kind == "variable"]
    assert variable.panel == "variable namespace" and variable.expr == "conveyor_steps_total"


def test_one_value_all_and_escaping_are_formatted_as_grafana_does() -> None:
    one = {q.panel: q.expr for q in dashboard_queries({"namespace": "team-a"})}
    assert one["Steps running now"] == 'sum(conveyor_steps_running{namespace=~"team-a"})'
    everything = {q.panel: q.expr for q in dashboard_queries({"namespace": ALL})}
    assert everything["Steps running now"] == 'sum(conveyor_steps_running{namespace=~".*"})'
    # A regex special in a value is escaped for the regex, inside a PromQL string (so doubled).
    dotted = {q.panel: q.expr for q in dashboard_queries({"namespace": ["a.b", "c"]})}
    assert dotted["Steps running now"] == 'sum(conveyor_steps_running{namespace=~"(a\\\\.b|c)"})'
    assert seconds("1m30s") == 90 and seconds("250ms") == 0.25
    with pytest.raises(ValueError, match="not a duration"):
        seconds("5 minutes")


def test_a_variable_without_a_value_fails_naming_it_and_the_panel() -> None:
    with pytest.raises(UnfilledVariableError, match=r"Conveyor: panel '.+' target A: no value for \$namespace"):
        dashboard_queries({})


def test_prometheus_accepts_every_filled_dashboard_query(prometheus: PrometheusServer) -> None:
    """Filled in, each expression is valid PromQL (no data is expected here: no Conveyor runs)."""
    queries = dashboard_queries({"namespace": ["team-a", "team-b"]}, range_="5m", rate_interval="1m")
    for q in queries:
        try:
            prometheus.query(q.expr)
        except QueryError as exc:
            pytest.fail(f"{q.dashboard}: panel {q.panel!r} ({q.ref_id}): {exc}")
