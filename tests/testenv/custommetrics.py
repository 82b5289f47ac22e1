"""A custom-metrics adapter for the container stack, serving custom.metrics.k8s.io from Prometheus (test
harness code).

prometheus-adapter cannot be fetched here (the Go module proxy refuses every path it has had), so this
runs a named stand-in built on the same upstream library, sigs.k8s.io/custom-metrics-apiserver: the
program in tests/testenv/metricsadapter/ (built by hack/install-testenv.sh, cached by a digest of its
sources). It serves one per-pod metric, each pod's value being a PromQL query's sample with that
pod's ``pod`` label, as one prometheus-adapter rule would. It runs on the host and is registered
through the aggregation layer exactly as metrics-server is (testenv.metricsserver: the test CA's
certificates, upstream's RBAC for its user, a selector-less Service with an Endpoints at the gateway).

    with CustomMetricsAdapter(stack, prometheus_url, metric, query) as adapter:
        adapter.pod_values(ns)   # {pod: value}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

from kubernetes.client.rest import ApiException
from kubernetes.utils import parse_quantity

from testenv.containerstack import ContainerStack
from testenv.metricsserver import MetricsServer
from testenv.processes import wait_until


class CustomMetricsAdapter(MetricsServer):
    """The adapter on the bridge gateway, registered as the APIService v1beta2.custom.metrics.k8s.io."""

    name, group, version = "custom-metrics-adapter", "custom.metrics.k8s.io", "v1beta2"
    user, binary_field = "conveyor-testenv:custom-metrics-adapter", "metrics_adapter"

    def __init__(self, stack: ContainerStack, prometheus_url: str, metric: str, query: str) -> None:
        """`query` yields one sample per pod (a ``pod`` label); ``{{.Namespace}}`` in it is the asked namespace."""
        super().__init__(stack)
        self.prometheus_url, self.metric, self.query = prometheus_url, metric, query

    def _command(self, kubeconfig: Path, cert: Path, key: Path, ca: Path) -> list[str]:
        return [
            str(self.binary),
            f"--lister-kubeconfig={kubeconfig}",
            *self._serving_args(kubeconfig, cert, key),
            f"--prometheus-url={self.prometheus_url}",
            f"--metric={self.metric}",
            f"--query={self.query}",
            "--v=1",
        ]

    def _wait_serving(self, timeout: float) -> None:
        wait_until(self._lists_the_metric, timeout=timeout, what=f"{self.metric} listed by {self.apiservice}",
                   process=self.process, interval=1.0)  # fmt: skip

    def _get(self, path: str) -> dict[str, Any]:
        """GET a path of the API server as JSON (the aggregator proxies it to the adapter)."""
        with self.stack.control_plane.api_client() as api:
            request = api.param_serialize("GET", path, header_params={"Accept": "application/json"})
            resp = api.call_api(*request)
            resp.read()  # type: ignore[no-untyped-call]
            text = resp.data.decode() if resp.data else ""
            if not 200 <= resp.status <= 299:
                raise ApiException.from_response(http_resp=resp, body=text, data=None)
        return cast(dict[str, Any], json.loads(text or "{}"))

    def _lists_the_metric(self) -> bool:
        found = self._get(f"/apis/{self.group}/{self.version}")
        return any(r.get("name") == f"pods/{self.metric}" for r in found.get("resources", []))

    def pod_values(self, namespace: str) -> dict[str, float]:
        """{pod: value} of every pod of `namespace` the metric has a sample for, as the HPA reads them."""
        try:
            got = self._get(f"/apis/{self.group}/{self.version}/namespaces/{namespace}/pods/*/{self.metric}")
        except ApiException as exc:
            if exc.status == 404:
                return {}
            raise
        return {i["describedObject"]["name"]: float(parse_quantity(i["value"])) for i in got.get("items", [])}
