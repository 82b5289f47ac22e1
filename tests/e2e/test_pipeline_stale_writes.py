"""Pipelines surviving stale reads on the real API server: a pass whose status write is refused with a real 409
(the Pipeline changed through the API server between the pass's read and its write) writes nothing, is redone on
a fresh read, and nothing is lost or done twice: the edit stands and is acted on, the scheduled Run is created
exactly once and recorded, and its Event is posted once, after the write."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from typing import Any

import pytest
from kubernetes import client as k8s_client

from conveyor.api.base import GROUP, VERSION
from conveyor.controller import metrics
from conveyor.controller.config import OperatorConfig
from conveyor.controller.pipelines import LABEL_PIPELINE, PipelineReconciler
from conveyor.core.schedule import run_name
from conveyor.kube.cluster import Cluster
from conveyor.kube.timestamps import format_timestamp, parse_timestamp
from conveyor.kube.watchcache import WatchCache

pytestmark = pytest.mark.e2e


def _pipeline(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Pipeline",
        "metadata": {"name": name},
        "spec": {
            "steps": [{"name": "a", "container": {"image": "i", "command": ["true"]}}],
            "schedule": {"cron": "* * * * *", "concurrencyPolicy": "Allow"},
        },
    }


def _custom(api: k8s_client.ApiClient) -> k8s_client.CustomObjectsApi:
    return k8s_client.CustomObjectsApi(api)


def _get(api: k8s_client.ApiClient, ns: str, name: str) -> dict[str, Any]:
    obj: Any = _custom(api).get_namespaced_custom_object(GROUP, VERSION, ns, "pipelines", name)
    return dict(obj)


def _create(api: k8s_client.ApiClient, ns: str, body: dict[str, Any]) -> dict[str, Any]:
    obj: Any = _custom(api).create_namespaced_custom_object(GROUP, VERSION, ns, "pipelines", body)
    return dict(obj)


def _runs(api: k8s_client.ApiClient, ns: str, pipeline: str) -> list[dict[str, Any]]:
    obj: Any = _custom(api).list_namespaced_custom_object(
        GROUP, VERSION, ns, "runs", label_selector=f"{LABEL_PIPELINE}={pipeline}"
    )
    return list(obj["items"])


def _stale() -> float:
    return float(metrics.STALE_WRITES.labels("Pipeline")._value.get())


def _due(created: dict[str, Any]) -> tuple[datetime, datetime]:
    """(a scheduled minute after the Pipeline's creation, a moment after it): the clock the passes are given, so
    the test need not wait for a real minute."""
    born = parse_timestamp(created["metadata"]["creationTimestamp"])
    assert born is not None
    minute = born.replace(second=0, microsecond=0) + timedelta(minutes=1)
    return minute, minute + timedelta(seconds=5)


class Recorder:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def __call__(self, obj: dict[str, Any], kind: str, type_: str, reason: str, message: str) -> None:
        self.reasons.append(reason)


class CountingCluster(Cluster):
    """The real client, counting the LISTs of Runs; `on_create` runs before the first Run is created."""

    def __init__(self, api: k8s_client.ApiClient) -> None:
        super().__init__(api)
        self.lists = 0
        self.on_create: Any = None

    def list_runs(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        self.lists += 1
        return super().list_runs(namespace, selector)

    def create_run(self, run: dict[str, Any]) -> bool:
        if self.on_create is not None:
            self.on_create()
            self.on_create = None
        return super().create_run(run)


def test_a_status_write_refused_because_the_pipeline_changed_meanwhile_is_redone_and_the_run_created_once(
    api: k8s_client.ApiClient, namespace: str, install_crds: list[str]
) -> None:
    created = _create(api, namespace, _pipeline("p"))
    minute, now = _due(created)
    cache = WatchCache()
    cache.object_event("pipelines", "ADDED", created)
    cluster = CountingCluster(api)
    edits: list[str] = []

    def someone_edits() -> None:
        """While the pass acts on its schedule, someone limits the history through the API server (a real edit
        between the pass's read and its status write)."""
        edited: Any = _custom(api).patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "pipelines", "p", {"spec": {"schedule": {"successfulRunsHistoryLimit": 3}}}
        )
        edits.append(edited["metadata"]["resourceVersion"])

    cluster.on_create = someone_edits
    events = Recorder()
    asked: list[float | None] = []
    reconciler = PipelineReconciler(
        cluster,
        OperatorConfig(resync_seconds=10, credentials_secret=None),
        clock=lambda: now,
        requeue=lambda ns, name, wait: asked.append(wait),
        watched=cache,
        events=events,
    )
    stale_before = _stale()

    assert reconciler.reconcile(namespace, "p") == 10.0

    assert _stale() == stale_before + 1  # the first write met a real 409
    assert len(edits) == 1
    pipeline = _get(api, namespace, "p")
    assert pipeline["metadata"]["generation"] == 2
    assert pipeline["spec"]["schedule"]["successfulRunsHistoryLimit"] == 3  # the edit stands
    status = pipeline["status"]
    assert status["observedGeneration"] == 2  # the redone pass validated it
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True" and ready["observedGeneration"] == 2
    name = run_name("p", minute)
    runs = _runs(api, namespace, "p")
    assert [r["metadata"]["name"] for r in runs] == [name]  # created once, though the pass ran twice
    assert (status["lastRun"], status["lastScheduledTime"]) == (name, format_timestamp(minute))  # and recorded
    assert int(pipeline["metadata"]["resourceVersion"]) > int(edits[0])  # written after the edit, over it
    held = cache.object("pipelines", namespace, "p")  # the redo's GET and its write were folded in
    assert held is not None and held["metadata"]["resourceVersion"] == pipeline["metadata"]["resourceVersion"]
    assert events.reasons == ["ScheduledRun"]  # the refused pass's Event, posted once after the redo's write
    assert asked == [10.0]
    assert cluster.lists == 1

    reconciler.reconcile(namespace, "p")  # the next pass: both from the caches, nothing to write
    assert cluster.lists == 1
    assert _get(api, namespace, "p")["metadata"]["resourceVersion"] == pipeline["metadata"]["resourceVersion"]
    assert len(_runs(api, namespace, "p")) == 1
    assert events.reasons == ["ScheduledRun"]


def test_a_pass_over_a_stale_cached_pipeline_is_redone_on_a_fresh_read_and_creates_nothing_more(
    api: k8s_client.ApiClient, namespace: str, install_crds: list[str]
) -> None:
    """A second operator whose watch cache still holds the Pipeline as created (the first one's status write has
    not reached its watch yet): its write is refused, its redo reads afresh, finds the Run, and adds nothing."""
    created = _create(api, namespace, _pipeline("s"))
    minute, now = _due(created)
    config = OperatorConfig(resync_seconds=10, credentials_secret=None)
    first_events, second_events = Recorder(), Recorder()
    first_cache = WatchCache()
    first_cache.object_event("pipelines", "ADDED", created)
    first = PipelineReconciler(Cluster(api), config, clock=lambda: now, watched=first_cache, events=first_events)
    first.reconcile(namespace, "s")
    after_first = _get(api, namespace, "s")
    assert after_first["status"]["lastRun"] == run_name("s", minute)

    stale_cache = WatchCache()
    stale_cache.object_event("pipelines", "ADDED", copy.deepcopy(created))
    second = PipelineReconciler(Cluster(api), config, clock=lambda: now, watched=stale_cache, events=second_events)
    stale_before = _stale()
    second.reconcile(namespace, "s")

    assert _stale() == stale_before + 1
    now_ = _get(api, namespace, "s")
    assert now_["status"] == after_first["status"]  # the redo found the first's status and had nothing to change
    assert now_["metadata"]["resourceVersion"] == after_first["metadata"]["resourceVersion"]
    assert [r["metadata"]["name"] for r in _runs(api, namespace, "s")] == [run_name("s", minute)]
    held = stale_cache.object("pipelines", namespace, "s")
    assert held is not None and held["status"] == after_first["status"]
    assert first_events.reasons == ["ScheduledRun"]
    assert second_events.reasons == []  # it created nothing, so it says nothing
