"""A real Prometheus server for tests, and a small client for its HTTP API (test harness code).

Prometheus and promtool are built from their Go module by hack/install-testenv.sh, like the other
test environment binaries (``Binaries.locate()`` finds them; a missing one is an error naming the
build command, never a skip). Each server gets its own config file and data dir in a temp dir,
listens on a loopback address (or one given, e.g. the pod-network gateway), runs in its own
process group, and ``stop()`` kills the group and deletes the dir: a stopped server leaves no
process, port or file behind.

Pods are found by Prometheus's own ``kubernetes_sd_configs`` (role pod), watching the test API
server through a kubeconfig or a URL, CA and bearer-token file (``KubernetesAPI``). Scraping the
operator and model-server pods on the real node (Prometheus dials the pod IPs itself, so run it on
the node's host, where they route)::

    cp = control_plane  # testenv.controlplane.ControlPlane
    config = prometheus_config([
        # honor_labels: keep the operator's Run namespace label, as the chart's ServiceMonitor does.
        kubernetes_pods_job("operator", cp.kubeconfig, namespaces=[system_ns], port_name="metrics",
                            label_selector="app.kubernetes.io/name=conveyor", honor_labels=True),
        kubernetes_pods_job("servers", cp.kubeconfig, namespaces=[ns], port_name="http",
                            label_selector="conveyor.dev/model-deployment"),
    ])
    with PrometheusServer(config, log_dir) as prom:
        prom.wait_for_targets("servers", count=1)
        ...  # the scenario
        prom.wait_for_data('sum(conveyor_server_requests_total{code="200"})', lambda r: r[0].value >= n)
        for q in dashboard_queries({"namespace": [ns]}):  # testenv.dashboards
            assert prom.query(q.expr), f"panel {q.panel!r} ({q.ref_id}) returned no data: {q.expr}"

``wait_for_data`` polls until a query's result is accepted; a query Prometheus refuses raises
QueryError naming it at once. With ``prometheus_config(..., rule_files=[...])`` (e.g. the chart's
rendered PrometheusRule groups), ``rules()`` tells each rule's health and ``alerts()`` the pending
and firing alerts. Static targets: ``static_job("name", ["127.0.0.1:8000"])``. A service account
instead of a kubeconfig: ``KubernetesAPI(api_server=url, ca_file=ca, token_file=path)`` (the
account needs list and watch on pods).
"""

from __future__ import annotations

import http.client
import json
import shutil
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import yaml

from testenv.binaries import Binaries
from testenv.processes import ServerProcess, free_port, http_ok, owned_temp_dir, wait_until

# ------------------------------------------------------------------ configuration


def prometheus_config(
    scrape_configs: Sequence[Mapping[str, Any]],
    *,
    scrape_interval: str = "1s",
    evaluation_interval: str = "1s",
    rule_files: Sequence[Path] = (),
) -> dict[str, Any]:
    """A whole prometheus.yml: fast intervals by default, so a test sees its scenario within seconds."""
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": scrape_interval,
            "scrape_timeout": scrape_interval,
            "evaluation_interval": evaluation_interval,
        },
        "scrape_configs": [dict(c) for c in scrape_configs],
    }
    if rule_files:
        config["rule_files"] = [str(p) for p in rule_files]
    return config


def static_job(job: str, targets: Sequence[str], *, metrics_path: str = "/metrics", **extra: Any) -> dict[str, Any]:
    """A scrape job over fixed host:port targets; ``extra`` goes into the job as is (honor_labels, ...)."""
    return {"job_name": job, "metrics_path": metrics_path, "static_configs": [{"targets": list(targets)}], **extra}


@dataclass(frozen=True)
class KubernetesAPI:
    """How Prometheus's Kubernetes discovery reaches an API server: a kubeconfig (client
    certificates or a token in it), or the server's URL with its CA and a bearer-token file."""

    kubeconfig: Path | None = None
    api_server: str | None = None
    ca_file: Path | None = None
    token_file: Path | None = None

    def __post_init__(self) -> None:
        if (self.kubeconfig is None) == (self.api_server is None):
            raise ValueError("give exactly one of kubeconfig and api_server")
        if self.kubeconfig is not None and (self.ca_file or self.token_file):
            raise ValueError("ca_file and token_file go with api_server; a kubeconfig carries its own")

    def sd_fields(self) -> dict[str, Any]:
        """The connection fields of one kubernetes_sd_configs entry."""
        if self.kubeconfig is not None:
            return {"kubeconfig_file": str(self.kubeconfig)}
        fields: dict[str, Any] = {"api_server": self.api_server}
        if self.ca_file is not None:
            fields["tls_config"] = {"ca_file": str(self.ca_file)}
        if self.token_file is not None:
            fields["authorization"] = {"type": "Bearer", "credentials_file": str(self.token_file)}
        return fields


def kubernetes_pods_job(
    job: str,
    api: KubernetesAPI | Path,
    *,
    namespaces: Sequence[str] = (),
    label_selector: str | None = None,
    port_name: str | None = None,
    honor_labels: bool = False,
    metrics_path: str = "/metrics",
) -> dict[str, Any]:
    """A scrape job over the pods Prometheus's kubernetes_sd (role pod) watches on ``api`` (a
    ``KubernetesAPI`` or a kubeconfig path), one target per container port.

    ``namespaces`` (all when none) and ``label_selector`` (a Kubernetes label selector, applied by
    the API server) narrow the pods; ``port_name`` keeps only container ports of that name. The
    targets get ``namespace``, ``pod`` and ``container`` labels and the pod's labels (sanitised,
    e.g. conveyor_dev_model_deployment). Finished pods are dropped. ``honor_labels`` keeps a
    scraped ``namespace`` label (the operator's Run namespaces) over the target's, as the chart's
    ServiceMonitor does.
    """
    access = api if isinstance(api, KubernetesAPI) else KubernetesAPI(kubeconfig=api)
    sd: dict[str, Any] = {"role": "pod", **access.sd_fields()}
    if namespaces:
        sd["namespaces"] = {"names": list(namespaces)}
    if label_selector:
        sd["selectors"] = [{"role": "pod", "label": label_selector}]
    relabel: list[dict[str, Any]] = [
        {"source_labels": ["__meta_kubernetes_pod_phase"], "regex": "Succeeded|Failed", "action": "drop"},
    ]
    if port_name:
        relabel.append(
            {"source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": port_name, "action": "keep"}
        )
    relabel += [
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
        {"regex": "__meta_kubernetes_pod_label_(.+)", "action": "labelmap"},
    ]
    return {
        "job_name": job,
        "metrics_path": metrics_path,
        "honor_labels": honor_labels,
        "kubernetes_sd_configs": [sd],
        "relabel_configs": relabel,
    }


# ------------------------------------------------------------------ query results


class QueryError(RuntimeError):
    """Prometheus answered a query with an error; the message names the query."""


@dataclass(frozen=True)
class Sample:
    """One series of an instant query's result (a scalar result is one Sample without labels)."""

    labels: dict[str, str]
    value: float
    time: float


@dataclass(frozen=True)
class Series:
    """One series of a range query's result: (time, value) pairs, oldest first."""

    labels: dict[str, str]
    values: list[tuple[float, float]]


@dataclass(frozen=True)
class Target:
    """An active scrape target as Prometheus reports it."""

    job: str
    labels: dict[str, str]
    scrape_url: str
    health: str
    last_error: str


@dataclass(frozen=True)
class Alert:
    """An alert Prometheus's rules produced: pending (its `for` not yet over) or firing."""

    name: str
    labels: dict[str, str]
    annotations: dict[str, str]
    state: str
    value: float


@dataclass(frozen=True)
class Rule:
    """A loaded rule and how its last evaluation went."""

    group: str
    name: str
    kind: str
    """"alerting" or "recording"."""
    health: str
    """"ok", "err" or "unknown" (not evaluated yet)."""
    last_error: str


# ------------------------------------------------------------------ the server


class PrometheusServer:
    """One Prometheus process with its own config, data dir and port.

    ``config`` is a prometheus.yml as a mapping (see ``prometheus_config``). The lifecycle API is
    on, so ``reload(config)`` swaps the scrape jobs without a restart.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        log_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        binary: Path | None = None,
        name: str = "prometheus",
    ) -> None:
        self.binary = binary or Binaries.locate().prometheus
        self.host = host
        self.port = port or free_port(host)
        self.name = name
        self.work_dir = owned_temp_dir("conveyor-prometheus-")
        self.config_path = self.work_dir / "prometheus.yml"
        self.data_dir = self.work_dir / "data"
        self.log_path = log_dir / f"{name}.log"
        self.process: ServerProcess | None = None
        self.startup_seconds: float | None = None
        self._write_config(config)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _write_config(self, config: Mapping[str, Any]) -> None:
        self.config_path.write_text(yaml.safe_dump(dict(config), sort_keys=False))

    def start(self, timeout: float = 60) -> PrometheusServer:
        """Start Prometheus and wait for /-/ready (the config loaded, the TSDB open)."""
        began = time.monotonic()
        self.process = ServerProcess(
            self.name,
            [
                str(self.binary),
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.data_dir}",
                f"--web.listen-address={self.host}:{self.port}",
                "--web.enable-lifecycle",
                "--storage.tsdb.retention.time=1d",
                "--log.level=info",
            ],
            self.log_path,
            env={"PATH": "/usr/bin:/bin", "HOME": str(self.work_dir)},
            cwd=self.work_dir,
        ).start()
        try:
            wait_until(
                lambda: http_ok(f"{self.url}/-/ready"),
                timeout=timeout,
                what="Prometheus /-/ready",
                process=self.process,
            )
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def stop(self) -> None:
        """Kill Prometheus's process group and delete its config and data."""
        if self.process is not None:
            self.process.stop()
        shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> PrometheusServer:
        return self.start() if self.process is None else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def reload(self, config: Mapping[str, Any]) -> None:
        """Write a new config and have Prometheus load it (POST /-/reload); raise if it refuses it."""
        self._write_config(config)
        status, body = self._request("POST", "/-/reload", {})
        if status != 200:
            raise RuntimeError(f"Prometheus refused the new config ({status}): {body.decode(errors='replace')}")

    # -- HTTP API ---------------------------------------------------------------------------

    def _request(self, method: str, path: str, params: Mapping[str, str]) -> tuple[int, bytes]:
        """(status, body) of one request; the connection is always closed (no ResourceWarning)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            body = urllib.parse.urlencode(params)
            if method == "GET":
                conn.request("GET", f"{path}?{body}" if body else path)
            else:
                conn.request(method, path, body, {"Content-Type": "application/x-www-form-urlencoded"})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def _api(self, path: str, params: Mapping[str, str], what: str) -> Any:
        """The ``data`` of a /api/v1 answer; QueryError naming ``what`` on an error answer."""
        status, body = self._request("POST" if path in ("query", "query_range") else "GET", f"/api/v1/{path}", params)
        try:
            answer = json.loads(body)
        except ValueError:
            raise QueryError(f"{what}: HTTP {status}, not JSON: {body[:500]!r}") from None
        if answer.get("status") != "success":
            raise QueryError(f"{what}: {answer.get('errorType', f'HTTP {status}')}: {answer.get('error', body[:500])}")
        return answer["data"]

    def query(self, expr: str, at: float | None = None) -> list[Sample]:
        """An instant query (now, or at a Unix time); one Sample per series."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._api("query", params, f"query {expr!r}")
        kind, result = data["resultType"], data["result"]
        if kind == "vector":
            return [Sample(r["metric"], float(r["value"][1]), float(r["value"][0])) for r in result]
        if kind == "scalar":
            return [Sample({}, float(result[1]), float(result[0]))]
        raise QueryError(f"query {expr!r}: a {kind} result, not an instant vector or scalar")

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[Series]:
        """A range query from ``start`` to ``end`` (Unix times) every ``step`` seconds."""
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
        data = self._api("query_range", params, f"range query {expr!r}")
        return [
            Series(r["metric"], [(float(t), float(v)) for t, v in r["values"]])
            for r in data["result"]  # resultType is always matrix
        ]

    def rules(self) -> list[Rule]:
        """Every loaded rule (pass rule files to ``prometheus_config``)."""
        data = self._api("rules", {}, "rules")
        return [
            Rule(g["name"], r["name"], r["type"], r.get("health", "unknown"), r.get("lastError", ""))
            for g in data["groups"]
            for r in g["rules"]
        ]

    def alerts(self) -> list[Alert]:
        """The pending and firing alerts."""
        data = self._api("alerts", {}, "alerts")
        return [
            Alert(
                a["labels"].get("alertname", ""), a["labels"], a.get("annotations", {}), a["state"], float(a["value"])
            )
            for a in data["alerts"]
        ]

    def targets(self) -> list[Target]:
        """The active scrape targets."""
        data = self._api("targets", {"state": "active"}, "targets")
        return [
            Target(t["labels"].get("job", ""), t["labels"], t["scrapeUrl"], t["health"], t.get("lastError", ""))
            for t in data["activeTargets"]
        ]

    def wait_for_targets(self, job: str, count: int = 1, timeout: float = 60) -> list[Target]:
        """Wait until at least ``count`` targets of ``job`` were scraped successfully; their last errors on timeout."""

        def up() -> list[Target]:
            found = [t for t in self.targets() if t.job == job and t.health == "up"]
            return found if len(found) >= count else []

        try:
            what = f"{count} up targets of job {job}"
            result = cast(list[Target], wait_until(up, timeout=timeout, what=what, process=self.process))
        except TimeoutError as exc:
            seen = [f"{t.scrape_url} {t.health} {t.last_error}" for t in self.targets() if t.job == job]
            raise TimeoutError(f"{exc}; targets of {job}: {seen or 'none discovered'}") from None
        return result

    def wait_for_data(
        self, expr: str, accept: Callable[[list[Sample]], bool] = bool, timeout: float = 60
    ) -> list[Sample]:
        """Query until the result is accepted (by default: not empty); the last result on timeout."""
        last: list[Sample] = []

        def check() -> list[Sample] | None:
            nonlocal last
            try:
                last = self.query(expr)
            except QueryError as exc:
                raise AssertionError(str(exc)) from exc  # a bad query never gets better: stop waiting
            return last if accept(last) else None

        try:
            what = f"data for {expr!r}"
            result = cast(
                list[Sample], wait_until(check, timeout=timeout, what=what, interval=0.5, process=self.process)
            )
        except AssertionError as exc:
            if isinstance(exc.__cause__, QueryError):
                raise exc.__cause__ from None
            raise
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; last result: {last}") from None
        return result
