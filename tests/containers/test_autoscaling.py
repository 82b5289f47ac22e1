"""A ModelDeployment's HPA scales on real CPU: metrics-server reading the real kubelet, 1 → ≥2 → 1.

On the container stack (a control plane serving on the pod bridge's gateway, a kubelet with
containerd, MinIO): metrics-server built from its Go module runs on the host and is registered as
the APIService v1beta1.metrics.k8s.io (testenv.metricsserver); the chart is installed by helm from
the project's images (testenv.release). A model built in this process is stored in MinIO as a
train step stores it, and a ModelDeployment serves it with ``autoscaling: {minReplicas: 1,
maxReplicas: 3}``, a CPU target and fast ``behavior``. A bounded request loop (testenv.autoscaling)
turns CPU-heavy for a while and then light again: the HPA must add replicas under the load, remove
them after it, and no request may fail throughout. The same on requests per second: a real Prometheus
scrapes the servers and the custom-metrics adapter (testenv.custommetrics, a stand-in for
prometheus-adapter, which cannot be fetched here) serves its per-pod query as custom.metrics.k8s.io.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s_client
from kubernetes.utils import parse_quantity

from testenv.autoscaling import (
    GROUP,
    VERSION,
    deployment_body,
    hpa_cpu_utilization,
    hpa_pods_metric,
    hpa_status,
    scale_up_and_down,
    stored_model,
)
from testenv.containerstack import ContainerStack
from testenv.custommetrics import CustomMetricsAdapter
from testenv.images import ProjectImages, build_project_images
from testenv.metricsserver import MetricsServer
from testenv.processes import wait_until
from testenv.prometheus import PrometheusServer, kubernetes_pods_job, prometheus_config
from testenv.release import RELEASE_NS, Release, install

pytestmark = pytest.mark.containers

MD = "scaled"
# Percent of the 200m request. Low, so a busy machine (the pod's CPU share shrinks with everyone
# else's load) still lifts the loaded pod above it; the light stream alone stays near 1 %.
TARGET = 20


@pytest.fixture(scope="module")
def images() -> ProjectImages:
    return build_project_images()


@pytest.fixture(scope="module")
def release(container_stack: ContainerStack, images: ProjectImages) -> Iterator[Release]:
    rel = install(container_stack, images)
    yield rel
    rel.uninstall()


@pytest.fixture
def api(release: Release) -> Iterator[k8s_client.ApiClient]:
    with release.api() as client:
        yield client


def test_the_metrics_api_reports_cpu_and_memory_of_a_real_pod_from_the_kubelet(
    release: Release, metrics_server: MetricsServer
) -> None:
    """What `kubectl top pod` reads: metrics.k8s.io, served by metrics-server from the kubelet's figures."""
    pod = release.operator_pods()[0].metadata.name

    def busy() -> dict[str, dict[str, str]] | None:
        usage = metrics_server.pod_metrics(RELEASE_NS, pod)
        return usage if usage and all(parse_quantity(u["cpu"]) > 0 for u in usage.values()) else None

    usage = wait_until(busy, timeout=60, what=f"non-zero CPU of pod {pod} from metrics.k8s.io", interval=1.0)
    assert isinstance(usage, dict) and usage, usage
    for container, figures in usage.items():
        cpu, memory = parse_quantity(figures["cpu"]), parse_quantity(figures["memory"])
        # an idle kopf operator: some millicores, tens of MiB resident; well under a core and its limit
        assert 0 < cpu < 2, (container, figures)
        assert 10 * 2**20 < memory < 2 * 2**30, (container, figures)
    node = metrics_server.node_metrics()[release.stack.node.node_name]
    assert parse_quantity(node["cpu"]) > 0 and parse_quantity(node["memory"]) > 100 * 2**20, node
    # the aggregator answers kubectl as it would on a cluster
    top = release.kubectl("top", "pod", "-n", RELEASE_NS, pod, "--no-headers")
    assert top.stdout.split()[0] == pod, top.stdout


def test_the_hpa_scales_up_under_cpu_load_and_back_to_one_after_it_with_no_failed_request(
    release: Release, metrics_server: MetricsServer, api: k8s_client.ApiClient
) -> None:
    ns = release.run_ns
    model, rows = stored_model(release.stack.minio.endpoint)
    custom = k8s_client.CustomObjectsApi(api)
    body = deployment_body(MD, model, target_cpu=TARGET)
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, "modeldeployments", body)

    def diagnose() -> str:
        md: Any = custom.get_namespaced_custom_object(GROUP, VERSION, ns, "modeldeployments", MD)
        state = {"md": md.get("status"), "hpa": hpa_status(api, ns, MD)}
        return json.dumps(state, indent=1, default=str)[-5000:] + "\n" + release.operator_logs()[-4000:]

    hpa = wait_until(lambda: k8s_client.AutoscalingV2Api(api).read_namespaced_horizontal_pod_autoscaler(MD, ns),
                     timeout=120, what="the HPA", interval=1.0)  # fmt: skip
    spec = hpa.spec  # type: ignore[attr-defined]
    assert (spec.min_replicas, spec.max_replicas) == (1, 3)
    assert spec.behavior.scale_down.stabilization_window_seconds == 10, spec.behavior
    tried = scale_up_and_down(api, ns, MD, rows, diagnose=diagnose)
    print(f"\n[autoscaling] {tried.summary()}")
    assert tried.failures == [], tried.failures[:5]
    assert tried.baseline_cpu < TARGET, tried  # the light stream alone is under the target
    assert tried.heavy_ok > 100 and tried.ok > tried.heavy_ok, tried
    assert (tried.peak.get("desiredReplicas") or 0) >= 2 and (hpa_cpu_utilization(tried.peak) or 0) > TARGET, tried.peak
    assert len(tried.rescales) >= 2, tried.rescales  # up, then down: the HPA's own events
    custom.delete_namespaced_custom_object(GROUP, VERSION, ns, "modeldeployments", MD)


# A per-pod custom metric: requests per second from Prometheus, through the custom metrics API.
RPS = "conveyor_server_requests_per_second"
RPS_QUERY = 'sum by (pod) (rate(conveyor_server_requests_total{namespace="{{.Namespace}}"}[10s]))'
RPS_TARGET = 20  # per pod; the light stream alone sends about 5 a second


@pytest.fixture(scope="module")
def prometheus(release: Release) -> Iterator[PrometheusServer]:
    """A real Prometheus scraping the model-server pods by their pod IPs, every second."""
    cp = release.stack.control_plane
    config = prometheus_config([
        kubernetes_pods_job("servers", cp.kubeconfig, namespaces=[release.run_ns], port_name="http",
                            label_selector="conveyor.dev/model-deployment"),
    ])  # fmt: skip
    with PrometheusServer(config, cp.log_dir) as prom:
        yield prom


@pytest.fixture(scope="module")
def adapter(release: Release, prometheus: PrometheusServer) -> Iterator[CustomMetricsAdapter]:
    with CustomMetricsAdapter(release.stack, prometheus.url, RPS, RPS_QUERY) as served:
        print(f"[testenv] custom metrics adapter Available in {served.startup_seconds:.1f}s")
        yield served


def test_the_hpa_scales_on_requests_per_second_from_prometheus_and_back_with_no_failed_request(
    release: Release, metrics_server: MetricsServer, adapter: CustomMetricsAdapter, api: k8s_client.ApiClient
) -> None:
    """The HPA reads a per-pod custom metric (custom.metrics.k8s.io, from Prometheus) and scales on it alone:
    the CPU target is 100 % of the request, which a pod capped at its limit never exceeds."""
    ns, name = release.run_ns, "scaled-rps"
    model, rows = stored_model(release.stack.minio.endpoint)
    custom = k8s_client.CustomObjectsApi(api)
    metric = {"name": RPS, "targetAverageValue": str(RPS_TARGET)}
    custom.create_namespaced_custom_object(
        GROUP, VERSION, ns, "modeldeployments", deployment_body(name, model, target_cpu=100, custom_metric=metric)
    )

    def diagnose() -> str:
        state = {"hpa": hpa_status(api, ns, name), "adapter": adapter.pod_values(ns)}
        return json.dumps(state, indent=1, default=str)[-5000:] + "\n" + release.operator_logs()[-3000:]

    hpa = wait_until(lambda: k8s_client.AutoscalingV2Api(api).read_namespaced_horizontal_pod_autoscaler(name, ns),
                     timeout=120, what="the HPA", interval=1.0)  # fmt: skip
    assert [m.type for m in hpa.spec.metrics] == ["Resource", "Pods"], hpa.spec.metrics  # type: ignore[attr-defined]
    tried = scale_up_and_down(api, ns, name, rows, diagnose=diagnose, batch=1)
    print(f"\n[autoscaling rps] {tried.summary()}; requests per second at the peak: {hpa_pods_metric(tried.peak, RPS)}")
    assert tried.failures == [], tried.failures[:5]
    assert (tried.peak.get("desiredReplicas") or 0) >= 2, tried.peak
    assert (hpa_pods_metric(tried.peak, RPS) or 0) > RPS_TARGET, tried.peak
    # the HPA says which metric moved it: up on requests per second, then down
    assert any(f"pods metric {RPS} above target" in m for m in tried.rescales), tried.rescales
    assert len(tried.rescales) >= 2, tried.rescales
    custom.delete_namespaced_custom_object(GROUP, VERSION, ns, "modeldeployments", name)
