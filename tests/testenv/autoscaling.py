"""A ModelDeployment's HorizontalPodAutoscaler under a bounded CPU-heavy request loop (test harness code).

Shared by tests/containers/test_autoscaling.py and bench/autoscaling_bench.py. The model is built
in this process and stored in the stack's MinIO as a Run's train step would store it (cheaper
than a Run); ``deployment_body`` asks for CPU autoscaling with fast behaviour settings.
``RequestLoop`` keeps one light request stream going throughout (so "0 failed requests" covers
scale-down too) and adds heavy ones, many rows per request from several threads, while ``heavy``
is set. It is bounded in requests and in time and stops by itself at either bound.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
from kubernetes import client as k8s_client
from kubernetes.utils import parse_quantity

from testenv.minio import S3Endpoint
from testenv.processes import wait_until
from testenv.service import Router, infer_body

GROUP, VERSION = "conveyor.dev", "v1alpha1"

# Fast in both directions: up by up to 2 pods every 5 s at once, down to the minimum within 10 s of
# the load ending (Kubernetes' default waits 300 s before scaling down).
FAST_BEHAVIOR: dict[str, Any] = {
    "scaleUp": {"stabilizationWindowSeconds": 0, "policies": [{"type": "Pods", "value": 2, "periodSeconds": 5}]},
    "scaleDown": {
        "stabilizationWindowSeconds": 10,
        "policies": [{"type": "Percent", "value": 100, "periodSeconds": 5}],
    },
}


def stored_model(minio: S3Endpoint) -> tuple[dict[str, str], np.ndarray]:
    """A servable model (scaled logistic regression on breast_cancer) in MinIO: ({uri, digest}, its rows)."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline as SkPipeline
    from sklearn.preprocessing import StandardScaler

    from conveyor.components.modelio import ArtifactMetadata, FeatureSpec, class_path, save_artifact
    from conveyor.storage.s3 import S3Store

    x, y = load_breast_cancer(return_X_y=True, as_frame=True)
    model = SkPipeline([("scale", StandardScaler()), ("model", LogisticRegression(max_iter=1000))]).fit(x, y)
    meta = ArtifactMetadata(
        kind="model",
        estimator=class_path(model.steps[-1][1]),
        task="classification",
        label="target",
        classes=[0, 1],
        inputs=[FeatureSpec(name=str(c), dtype="float64") for c in x.columns],
    )
    with tempfile.TemporaryDirectory(prefix="conveyor-model-") as tmp:
        save_artifact(model, Path(tmp) / "model", meta)
        store = S3Store(minio.bucket, "autoscaling", client=minio.client())
        try:
            stored = store.put_file(Path(tmp) / "model")
        finally:
            store.client.close()
    return {"uri": stored.uri, "digest": stored.digest}, x.to_numpy()


def deployment_body(
    name: str,
    model: dict[str, str],
    *,
    min_replicas: int = 1,
    max_replicas: int = 3,
    target_cpu: int = 20,
    cpu: str = "200m",
    behavior: dict[str, Any] | None = None,
    custom_metric: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A ModelDeployment autoscaled on CPU (and `custom_metric`, a per-pod metric: {name, targetAverageValue})
    between ``min_replicas`` and ``max_replicas``, fast by default."""
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": model,
            "server": {"cpu": cpu},
            "autoscaling": {
                "minReplicas": min_replicas,
                "maxReplicas": max_replicas,
                "targetCpuUtilization": target_cpu,
                "behavior": FAST_BEHAVIOR if behavior is None else behavior,
            },
        },
    }
    if custom_metric is not None:
        body["spec"]["autoscaling"]["customMetric"] = custom_metric
    return body


class RequestLoop:
    """One light request stream for the whole block, plus ``threads`` heavy ones while ``heavy`` is set.

    Light: one row a request, ``light_pause`` seconds apart (well under the CPU target). Heavy: ``rows``
    rows a request, back to back. Stops by itself after ``limit`` requests or ``max_seconds``.
    ``failures`` lists every answer that was not a 200 and every error.
    """

    def __init__(
        self,
        router: Router,
        model: str,
        rows: np.ndarray,
        *,
        threads: int = 3,
        batch: int = 100,
        light_pause: float = 0.2,
        limit: int = 50_000,
        max_seconds: float = 300,
    ) -> None:
        self.router, self.model, self.rows = router, model, rows
        self.batch, self.light_pause, self.limit, self.max_seconds = batch, light_pause, limit, max_seconds
        self.heavy = threading.Event()
        self.ok = 0
        self.sent = 0
        self.failures: list[str] = []
        self.heavy_started: float | None = None
        self._count = threading.Lock()
        self._stop = threading.Event()
        self._deadline = 0.0
        self._threads = [threading.Thread(target=self._loop, args=(i,), daemon=True) for i in range(threads + 1)]

    def __enter__(self) -> RequestLoop:
        self._deadline = time.monotonic() + self.max_seconds
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def start_heavy(self) -> float:
        """Turn the heavy streams on; returns the monotonic time they started."""
        self.heavy_started = time.monotonic()
        self.heavy.set()
        return self.heavy_started

    def stop_heavy(self) -> None:
        self.heavy.clear()

    @property
    def bounded_out(self) -> bool:
        """True once the loop stopped at its request or time bound (then it no longer loads anything)."""
        return self.sent >= self.limit or time.monotonic() >= self._deadline

    def _take(self) -> bool:
        with self._count:
            if self._stop.is_set() or self.bounded_out:
                return False
            self.sent += 1
            return True

    def _loop(self, index: int) -> None:
        light = index == 0
        i = index * 97
        while not self._stop.is_set() and not self.bounded_out:
            if not light and not self.heavy.wait(0.2):
                continue
            if not self._take():
                return
            size = 1 if light else self.batch
            start = i % (len(self.rows) - size)
            i += size
            try:
                status, body = self.router.request(
                    "POST", f"/v2/models/{self.model}/infer", infer_body(self.rows[start : start + size]), timeout=30
                )
                if status == 200:
                    with self._count:
                        self.ok += 1
                else:
                    self.failures.append(f"{status}: {str(body)[:300]}")
            except Exception as e:
                self.failures.append(f"{type(e).__name__}: {e}")
            if light:
                self._stop.wait(self.light_pause)


def hpa_status(api: k8s_client.ApiClient, ns: str, name: str) -> dict[str, Any]:
    """The HPA's status as a dict (currentReplicas, desiredReplicas, currentMetrics, conditions)."""
    hpa = k8s_client.AutoscalingV2Api(api).read_namespaced_horizontal_pod_autoscaler(name, ns)
    return cast(dict[str, Any], api.sanitize_for_serialization(hpa.status) or {})


def hpa_cpu_utilization(status: dict[str, Any]) -> int | None:
    """The HPA's current average CPU utilization (percent of requests), None before metrics came in."""
    for m in status.get("currentMetrics") or []:
        if m.get("type") == "Resource" and m["resource"]["name"] == "cpu":
            value = m["resource"]["current"].get("averageUtilization")
            return int(value) if value is not None else None
    return None


def hpa_pods_metric(status: dict[str, Any], metric: str) -> float | None:
    """The HPA's current average of a per-pod metric, None before it came in."""
    for m in status.get("currentMetrics") or []:
        if m.get("type") == "Pods" and m["pods"]["metric"]["name"] == metric:
            value = m["pods"]["current"].get("averageValue")
            return float(parse_quantity(value)) if value is not None else None
    return None


def ready_replicas(api: k8s_client.ApiClient, ns: str, deployment: str) -> tuple[int, int]:
    """(spec.replicas, ready and not terminating pods counted by the Deployment) of a Deployment."""
    dep = k8s_client.AppsV1Api(api).read_namespaced_deployment(deployment, ns)
    return int(dep.spec.replicas or 0), int(dep.status.ready_replicas or 0)


def live_pods(api: k8s_client.ApiClient, ns: str, selector: str) -> list[Any]:
    """Pods matching ``selector`` that are not being deleted."""
    pods = k8s_client.CoreV1Api(api).list_namespaced_pod(ns, label_selector=selector).items
    return [p for p in pods if p.metadata.deletion_timestamp is None]


@dataclass
class ScalingTry:
    """What one scale-up-and-down showed; times in seconds."""

    deployment: str
    baseline_cpu: int
    """The HPA's CPU utilization (percent of the request) under the light stream alone."""
    decided_s: float
    """Heavy load started → the HPA's desiredReplicas ≥ 2."""
    scaled_up_s: float
    """Heavy load started → a second replica ready and in the router's endpoints."""
    scaled_down_s: float
    """Heavy load stopped → one replica left (spec and live pods)."""
    peak: dict[str, Any]
    """The HPA's status when it first asked for ≥ 2 replicas."""
    heavy_ok: int
    ok: int
    failures: list[str]
    rescales: list[str] = field(default_factory=list)
    """The HPA's SuccessfulRescale event messages."""

    def summary(self) -> str:
        return (
            f"baseline {self.baseline_cpu}% CPU; desiredReplicas ≥2 {self.decided_s:.1f}s after the heavy load "
            f"started (HPA then: {hpa_cpu_utilization(self.peak)}% CPU, desired {self.peak.get('desiredReplicas')}); "
            f"a second replica ready and routed {self.scaled_up_s:.1f}s after; back to one "
            f"{self.scaled_down_s:.1f}s after the load stopped; {self.ok} requests answered 200, "
            f"{len(self.failures)} failed"
        )


def scale_up_and_down(
    api: k8s_client.ApiClient,
    ns: str,
    name: str,
    rows: np.ndarray,
    *,
    diagnose: Callable[[], str] = lambda: "",
    hold_seconds: float = 5,
    batch: int = 100,
) -> ScalingTry:
    """With the ModelDeployment ``name`` created (min 1 replica): wait for its one replica and the HPA's
    first CPU figure, then light load, heavy load until a second replica serves (plus ``hold_seconds``),
    light load until the HPA is back at one replica; `batch`: rows per heavy request (1: many cheap requests,
    for a requests-per-second metric). Raises TimeoutError (with ``diagnose()``
    printed) when a phase does not come; the request loop's bounds end every phase in time."""

    def wait(check: Callable[[], Any], what: str, timeout: float) -> Any:
        try:
            return wait_until(check, timeout=timeout, what=what, interval=1.0)
        except Exception:
            print(diagnose())
            raise

    def status() -> dict[str, Any]:
        return hpa_status(api, ns, name)

    wait(lambda: hpa_status(api, ns, name) is not None, "the HPA", 120)
    hpa = k8s_client.AutoscalingV2Api(api).read_namespaced_horizontal_pod_autoscaler(name, ns)
    target = hpa.spec.scale_target_ref.name
    wait(lambda: ready_replicas(api, ns, target) == (1, 1), "one ready server replica", 180)
    first = wait(lambda: (s := status()) and hpa_cpu_utilization(s) is not None and s, "the HPA's first CPU figure", 90)
    with (
        Router(api, ns, name) as router,
        RequestLoop(router, name, rows, batch=batch, limit=60_000, max_seconds=420) as load,
    ):
        wait_until(lambda: router.endpoints, timeout=30, what="the server's endpoint")
        time.sleep(3)  # the light stream alone for a moment: it must not scale anything
        baseline = hpa_cpu_utilization(status()) or hpa_cpu_utilization(first) or 0
        began = load.start_heavy()
        wait(lambda: not load.bounded_out and (status().get("desiredReplicas") or 0) >= 2,
             "the HPA to ask for a second replica under load", 150)  # fmt: skip
        decided = time.monotonic() - began
        peak = status()
        wait(lambda: not load.bounded_out and ready_replicas(api, ns, target)[1] >= 2 and len(router.endpoints) >= 2,
             "a second ready replica serving", 180)  # fmt: skip
        scaled_up = time.monotonic() - began
        time.sleep(hold_seconds)  # the new replica takes heavy traffic too
        load.stop_heavy()
        heavy_ok = load.ok
        stopped = time.monotonic()
        selector = f"conveyor.dev/model-deployment={name}"
        wait(lambda: not load.bounded_out and ready_replicas(api, ns, target)[0] == 1
             and len(live_pods(api, ns, selector)) == 1, "the HPA back at one replica after the load", 150)  # fmt: skip
        scaled_down = time.monotonic() - stopped
        time.sleep(3)  # the light stream goes on against the last replica
    rescales = [e.message or "" for e in k8s_client.CoreV1Api(api).list_namespaced_event(ns).items
                if e.involved_object.kind == "HorizontalPodAutoscaler" and e.involved_object.name == name
                and e.reason == "SuccessfulRescale"]  # fmt: skip
    return ScalingTry(target, baseline, decided, scaled_up, scaled_down, peak, heavy_ok, load.ok,
                      list(load.failures), rescales)  # fmt: skip
