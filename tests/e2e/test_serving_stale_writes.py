"""ModelDeployments surviving stale reads on the real API server: a pass whose status write is refused with a real
409 (the object changed between the pass's read and its write) writes nothing, is redone on a fresh read, and
nothing is lost: the change made meanwhile stands and is acted on, and each Event is posted once."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kubernetes import client as k8s_client

from conveyor.api.base import GROUP, VERSION
from conveyor.controller import metrics
from conveyor.controller.config import OperatorConfig
from conveyor.controller.modeldeployments import ModelDeploymentReconciler
from conveyor.kube.cluster import Cluster
from conveyor.kube.watchcache import WatchCache
from conveyor.kube.workloads import Workloads

pytestmark = pytest.mark.e2e

DIGEST = "sha256:" + "c" * 64


def _md(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": "s3://models/blobs/c", "digest": DIGEST},
            "autoscaling": {"minReplicas": 1, "maxReplicas": 2},
        },
    }


def _custom(api: k8s_client.ApiClient) -> k8s_client.CustomObjectsApi:
    return k8s_client.CustomObjectsApi(api)


def _get(api: k8s_client.ApiClient, ns: str, name: str) -> dict[str, Any]:
    obj: Any = _custom(api).get_namespaced_custom_object(GROUP, VERSION, ns, "modeldeployments", name)
    return dict(obj)


def _create(api: k8s_client.ApiClient, ns: str, body: dict[str, Any]) -> dict[str, Any]:
    obj: Any = _custom(api).create_namespaced_custom_object(GROUP, VERSION, ns, "modeldeployments", body)
    return dict(obj)


def _stale() -> float:
    return float(metrics.STALE_WRITES.labels("ModelDeployment")._value.get())


class Recorder:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def __call__(self, obj: dict[str, Any], kind: str, type_: str, reason: str, message: str) -> None:
        self.reasons.append(reason)


def test_a_status_write_refused_because_the_object_changed_meanwhile_is_redone_and_nothing_is_lost(
    api: k8s_client.ApiClient, namespace: str, install_crds: list[str]
) -> None:
    created = _create(api, namespace, _md("m"))
    cache = WatchCache()
    cache.object_event("modeldeployments", "ADDED", created)
    workloads = Workloads(api)
    edits: list[str] = []

    class EditingWorkloads:
        """The real workloads client; while the pass applies its first object, someone else scales the
        ModelDeployment up through the API server (a real edit, between the pass's read and its write)."""

        def __getattr__(self, name: str) -> Any:
            return getattr(workloads, name)

        def apply(self, manifest: dict[str, Any], keep: tuple[str, ...] = ()) -> dict[str, Any]:
            if not edits:
                edited: Any = _custom(api).patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    namespace,
                    "modeldeployments",
                    "m",
                    {"spec": {"autoscaling": {"minReplicas": 2, "maxReplicas": 3}}},
                )
                edits.append(edited["metadata"]["resourceVersion"])
            return workloads.apply(manifest, keep)

    events = Recorder()
    asked: list[float | None] = []
    reconciler = ModelDeploymentReconciler(
        Cluster(api),
        EditingWorkloads(),  # type: ignore[arg-type]
        OperatorConfig(resync_seconds=300, credentials_secret=None),
        watched=cache,
        requeue=lambda ns, name, wait: asked.append(wait),
        events=events,
    )
    stale_before = _stale()

    assert reconciler.reconcile(namespace, "m") == 300.0

    assert _stale() == stale_before + 1  # the first write met a real 409
    assert len(edits) == 1
    md = _get(api, namespace, "m")
    assert md["metadata"]["generation"] == 2
    scaling = md["spec"]["autoscaling"]
    assert (scaling["minReplicas"], scaling["maxReplicas"]) == (2, 3)  # the edit stands
    status = md["status"]
    assert status["observedGeneration"] == 2  # the redone pass planned from it
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "Starting" and ready["observedGeneration"] == 2
    hpa = workloads.get("autoscaling/v2", "HorizontalPodAutoscaler", namespace, "m")
    assert hpa is not None and (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 3)
    assert workloads.get("apps/v1", "Deployment", namespace, "m") is not None  # the stable one
    assert int(md["metadata"]["resourceVersion"]) > int(edits[0])  # written after the edit, over it
    held = cache.object("modeldeployments", namespace, "m")  # the redo's GET and its write were folded in
    assert held is not None and held["metadata"]["resourceVersion"] == md["metadata"]["resourceVersion"]
    assert asked == [300.0]
    assert events.reasons == []  # nothing to say yet; a refused pass says nothing either way


def test_a_pass_over_a_stale_cached_model_deployment_is_redone_on_a_fresh_read_and_changes_nothing(
    api: k8s_client.ApiClient, namespace: str, install_crds: list[str]
) -> None:
    """A second operator whose watch cache still holds the ModelDeployment as created (the first one's status
    write has not reached its watch yet): its write is refused, its redo reads afresh and finds nothing to add."""
    created = _create(api, namespace, _md("s"))
    config = OperatorConfig(resync_seconds=300, credentials_secret=None)
    first_events, second_events = Recorder(), Recorder()
    first_cache = WatchCache()
    first_cache.object_event("modeldeployments", "ADDED", created)
    first = ModelDeploymentReconciler(Cluster(api), Workloads(api), config, watched=first_cache, events=first_events)
    first.reconcile(namespace, "s")
    after_first = _get(api, namespace, "s")
    assert after_first["status"]["observedGeneration"] == 1

    stale_cache = WatchCache()
    stale_cache.object_event("modeldeployments", "ADDED", copy.deepcopy(created))
    second = ModelDeploymentReconciler(Cluster(api), Workloads(api), config, watched=stale_cache, events=second_events)
    stale_before = _stale()
    second.reconcile(namespace, "s")

    assert _stale() == stale_before + 1
    now = _get(api, namespace, "s")
    assert now["status"] == after_first["status"]  # the redo found the first's status and had nothing to change
    assert now["metadata"]["resourceVersion"] == after_first["metadata"]["resourceVersion"]
    held = stale_cache.object("modeldeployments", namespace, "s")
    assert held is not None and held["status"] == after_first["status"]
    assert first_events.reasons == second_events.reasons == []
