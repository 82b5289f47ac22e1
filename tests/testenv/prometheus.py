"""A real Prometheus server for tests, and a small client for its HTTP API (test harness code).

The binary is Debian's (the `prometheus` package, with promtool; hack/install-prometheus.sh
installs it and keeps the packaged service from running). Each server gets its own config file
and data dir in a temp dir, listens on a loopback address (or one given, e.g. the pod-network
gateway), runs in its own process group, and ``stop()`` kills the group and deletes the dir: a
stopped server leaves no process, port or file behind. A missing binary is an error naming the
install script, never a skip.

Debian builds Prometheus without kubernetes_sd_configs (the Kubernetes client library is not
packaged there; its NEWS file says so), so pods are found by ``PodDiscovery``: an http_sd endpoint
in the test process that lists pods from the test API server at each refresh and answers with the
targets and ``__meta_kubernetes_pod_*`` labels the pod role would give. The relabelling of
``kubernetes_pods_job`` is the one a kubernetes_sd_configs job would use.

Scraping the operator and model-server pods on the real node (Prometheus dials the pod IPs itself,
so run it on the node's host, where they route)::

    with PodDiscovery(control_plane.kubeconfig) as pods:
        config = prometheus_config([
            # honor_labels: keep the operator's Run namespace label, as the chart's ServiceMonitor does.
            kubernetes_pods_job("operator", pods, namespaces=[system_ns], port_name="metrics",
                                label_selector="app.kubernetes.io/name=conveyor", honor_labels=True),
            kubernetes_pods_job("servers", pods, namespaces=[ns], port_name="http",
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
and firing alerts. Static targets: ``static_job("name", ["127.0.0.1:8000"])``. A token
instead of a kubeconfig: ``PodDiscovery(api_server=url, ca_file=ca, token_file=path)``.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import yaml
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from testenv.binaries import REPO_ROOT, MissingBinaryError
from testenv.processes import ServerProcess, free_port, http_ok, owned_temp_dir, wait_until

INSTALL_SCRIPT = REPO_ROOT / "hack" / "install-prometheus.sh"
_SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


def package_binary(name: str) -> Path:
    """``prometheus`` or ``promtool`` from PATH or the system directories; MissingBinaryError if absent."""
    found = shutil.which(name, path=os.environ.get("PATH", "") + os.pathsep + _SYSTEM_PATH)
    if found is None:
        raise MissingBinaryError(
            f"{name} is not installed: run {INSTALL_SCRIPT.relative_to(REPO_ROOT)} "
            "(Debian's prometheus package; needs root or sudo)"
        )
    return Path(found)


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


def kubernetes_pods_job(
    job: str,
    discovery: PodDiscovery,
    *,
    namespaces: Sequence[str] = (),
    label_selector: str | None = None,
    port_name: str | None = None,
    honor_labels: bool = False,
    metrics_path: str = "/metrics",
    refresh_interval: str = "2s",
) -> dict[str, Any]:
    """A scrape job over the pods ``discovery`` finds on its API server, one target per container port.

    ``namespaces`` and ``label_selector`` (a Kubernetes label selector) narrow the pods;
    ``port_name`` keeps only container ports of that name. The targets get ``namespace``, ``pod``
    and ``container`` labels and the pod's labels (sanitised, e.g. conveyor_dev_model_deployment).
    Finished pods are dropped. ``honor_labels`` keeps a scraped ``namespace`` label (the
    operator's Run namespaces) over the target's, as the chart's ServiceMonitor does.
    """
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
        "http_sd_configs": [{"url": discovery.url(namespaces, label_selector), "refresh_interval": refresh_interval}],
        "relabel_configs": relabel,
    }


# ------------------------------------------------------------------ pod discovery


_INVALID_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")


def _label_name(name: str) -> str:
    """A Kubernetes label or annotation key as Prometheus sanitises it into a label name."""
    return _INVALID_LABEL_CHARS.sub("_", name)


def pod_target_groups(pods: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Prometheus target groups for pods (API objects as JSON), as kubernetes_sd_configs' pod role makes
    them: one target per container port (one without a port for a container with none), addressed
    at the pod IP, with the same __meta_kubernetes_pod_* labels; pods without an IP have no target."""
    groups: list[dict[str, Any]] = []
    for pod in pods:
        meta, spec, status = pod["metadata"], pod.get("spec", {}), pod.get("status", {})
        ip = status.get("podIP")
        if not ip:
            continue
        ready = next((c["status"] for c in status.get("conditions", []) if c.get("type") == "Ready"), "unknown")
        common = {
            "__meta_kubernetes_namespace": meta["namespace"],
            "__meta_kubernetes_pod_name": meta["name"],
            "__meta_kubernetes_pod_uid": meta.get("uid", ""),
            "__meta_kubernetes_pod_ip": ip,
            "__meta_kubernetes_pod_node_name": spec.get("nodeName", ""),
            "__meta_kubernetes_pod_host_ip": status.get("hostIP", ""),
            "__meta_kubernetes_pod_phase": status.get("phase", ""),
            "__meta_kubernetes_pod_ready": str(ready).lower(),
        }
        for owner in meta.get("ownerReferences", []):
            if owner.get("controller"):
                common["__meta_kubernetes_pod_controller_kind"] = owner["kind"]
                common["__meta_kubernetes_pod_controller_name"] = owner["name"]
        for kind in ("label", "annotation"):
            for key, value in (meta.get(f"{kind}s") or {}).items():
                common[f"__meta_kubernetes_pod_{kind}_{_label_name(key)}"] = value
                common[f"__meta_kubernetes_pod_{kind}present_{_label_name(key)}"] = "true"
        for container in spec.get("containers", []):
            labels = {
                **common,
                "__meta_kubernetes_pod_container_name": container["name"],
                "__meta_kubernetes_pod_container_image": container.get("image", ""),
                "__meta_kubernetes_pod_container_init": "false",
            }
            ports = container.get("ports") or [None]
            for port in ports:
                address = ip if port is None else f"{ip}:{port['containerPort']}"
                port_labels = {}
                if port is not None:
                    port_labels = {
                        "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
                        "__meta_kubernetes_pod_container_port_number": str(port["containerPort"]),
                        "__meta_kubernetes_pod_container_port_protocol": port.get("protocol", "TCP"),
                    }
                groups.append({"targets": [address], "labels": {**labels, **port_labels}})
    return groups


class PodDiscovery:
    """HTTP service discovery for Prometheus over the pods of a Kubernetes API server.

    Debian's prometheus is built without kubernetes_sd_configs (its client library is not
    packaged), so this stands in for it: a small HTTP endpoint on a loopback port that lists the
    pods from the API server on every refresh and answers in Prometheus's http_sd format, with the
    targets and __meta_kubernetes_pod_* labels the pod role would give (``pod_target_groups``).
    Relabelling written for kubernetes_sd_configs works unchanged. Authenticates with a kubeconfig
    (client certificates or a token in it) or with ``api_server`` + ``ca_file`` + ``token_file``
    (read at each refresh, so a rotated token is picked up). A failed listing answers 500, which
    Prometheus logs while keeping the last targets; ``last_error`` holds it.
    """

    def __init__(
        self,
        kubeconfig: Path | None = None,
        *,
        api_server: str | None = None,
        ca_file: Path | None = None,
        token_file: Path | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        if (kubeconfig is None) == (api_server is None):
            raise ValueError("give exactly one of kubeconfig and api_server")
        self.kubeconfig = kubeconfig
        self.api_server = api_server
        self.ca_file = ca_file
        self.token_file = token_file
        self.host = host
        self.port = free_port(host)
        self.requests = 0
        self.last_error: str | None = None
        self._client: k8s_client.ApiClient | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def url(self, namespaces: Sequence[str] = (), label_selector: str | None = None) -> str:
        """The http_sd URL for pods in these namespaces (all when none) matching the selector."""
        query = [("namespace", n) for n in namespaces] + ([("labelSelector", label_selector)] if label_selector else [])
        return f"http://{self.host}:{self.port}/pods" + (f"?{urllib.parse.urlencode(query)}" if query else "")

    def _api_client(self) -> k8s_client.ApiClient:
        if self.kubeconfig is not None:
            if self._client is None:
                self._client = k8s_config.new_client_from_config(config_file=str(self.kubeconfig))  # type: ignore[no-untyped-call]
            return self._client
        if self._client is None:
            configuration = k8s_client.Configuration(host=self.api_server)
            if self.ca_file is not None:
                configuration.ssl_ca_cert = str(self.ca_file)
            self._client = k8s_client.ApiClient(configuration)
        if self.token_file is not None:
            token = self.token_file.read_text().strip()
            self._client.configuration.api_key = {"authorization": f"Bearer {token}"}
        return self._client

    def list_pods(self, namespaces: Sequence[str], label_selector: str | None) -> list[dict[str, Any]]:
        """The pods as JSON, straight from the API server (no typed models: the JSON is what is served)."""
        core = k8s_client.CoreV1Api(self._api_client())
        selector = label_selector or ""  # empty: every pod
        answers: list[Any] = (  # urllib3 responses (_preload_content=False), whatever the stubs say
            [core.list_namespaced_pod(n, label_selector=selector, _preload_content=False) for n in namespaces]
            if namespaces
            else [core.list_pod_for_all_namespaces(label_selector=selector, _preload_content=False)]
        )
        pods: list[dict[str, Any]] = []
        for answer in answers:
            try:
                pods += json.loads(answer.data)["items"]
            finally:
                answer.release_conn()
        return pods

    def start(self) -> PodDiscovery:
        """Serve /pods on a daemon thread."""
        discovery = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urllib.parse.urlsplit(self.path)
                params = urllib.parse.parse_qs(parts.query)
                discovery.requests += 1
                try:
                    if parts.path != "/pods":
                        raise LookupError(f"no such path {parts.path}")
                    pods = discovery.list_pods(
                        params.get("namespace", []), params.get("labelSelector", [""])[0] or None
                    )
                    body, status = json.dumps(pod_target_groups(pods)).encode(), 200
                    discovery.last_error = None
                except Exception as exc:  # reported to Prometheus (it logs it) and kept for the test
                    discovery.last_error = f"{type(exc).__name__}: {exc}"
                    body, status = discovery.last_error.encode(), 404 if isinstance(exc, LookupError) else 500
                self.send_response(status)
                self.send_header("Content-Type", "application/json" if status == 200 else "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: Prometheus polls every few seconds."""

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="pod-discovery", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the API client."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)
        if self._client is not None:
            self._client.close()  # type: ignore[no-untyped-call]
            self._client = None

    def __enter__(self) -> PodDiscovery:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


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
        self.binary = binary or package_binary("prometheus")
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
