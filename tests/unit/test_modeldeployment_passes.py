"""A ModelDeployment's pass on the Runs' control model, against a fake API server and an injected clock: it reads
the object from the watch cache, writes status only over the version it read and folds the result back, is redone
on a fresh read when that write is refused as stale (posting its Events once, after the write), and asks the work
queue for its next pass when the core says a decision falls due (a canary step's pause ending), not at the resync.
"""

from __future__ import annotations

import copy
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conveyor.controller import metrics
from conveyor.controller.config import OperatorConfig
from conveyor.controller.modeldeployments import ModelDeploymentReconciler, _Watch
from conveyor.controller.requeue import Requeue
from conveyor.core.monitoring import FeatureWindow
from conveyor.kube.cluster import StaleObject
from conveyor.kube.watchcache import WatchCache
from conveyor.manifests import serving
from conveyor.manifests.names import ANNOTATION_MODEL_DIGEST
from testenv.mergepatch import apply_merge_patch as merge

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
OLD = {"uri": "s3://models/old", "digest": "sha256:" + "a" * 64, "version": "a" * 12}
NEW = {"uri": "s3://models/new", "digest": "sha256:" + "b" * 64, "version": "b" * 12}


class FakeCluster:
    """One ModelDeployment behind an API server that honours resourceVersion preconditions (409 → StaleObject)."""

    def __init__(self, md: dict[str, Any]) -> None:
        self.md = md
        self.gets = 0
        self.preconditions: list[str | None] = []
        self.refused = 0
        self.direct_events: list[str] = []
        self.written = threading.Event()
        self.on_write: Any = None

    def edit(self, change: Any) -> None:
        """Someone else changes the object: a new resourceVersion (and generation, for a spec change)."""
        change(self.md)
        self.md["metadata"]["resourceVersion"] = str(int(self.md["metadata"]["resourceVersion"]) + 1)

    def get_custom(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        assert plural == "modeldeployments"
        self.gets += 1
        return copy.deepcopy(self.md)

    def patch_status(
        self, plural: str, namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]:
        self.preconditions.append(resource_version)
        if resource_version != self.md["metadata"]["resourceVersion"]:
            self.refused += 1
            raise StaleObject(f"{plural} {namespace}/{name} changed since version {resource_version}")
        self.md["status"] = merge(self.md.get("status") or {}, status)
        self.md["metadata"]["resourceVersion"] = str(int(self.md["metadata"]["resourceVersion"]) + 1)
        if self.on_write is not None:
            self.on_write(self.md)
        return copy.deepcopy(self.md)

    def event(self, obj: dict[str, Any], kind: str, type_: str, reason: str, message: str) -> None:
        self.direct_events.append(reason)


class FakeWorkloads:
    """Applied Deployments are at once rolled out and ready (a real cluster takes a moment; the pass only looks)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.deleted: list[tuple[str, str]] = []

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return []

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.objects.get((kind, name)))

    def apply(self, manifest: dict[str, Any], keep: tuple[str, ...] = ()) -> dict[str, Any]:
        obj = copy.deepcopy(manifest)
        if obj["kind"] == "Deployment":
            n = obj["spec"].get("replicas", 1)
            obj["metadata"]["generation"] = 1
            obj["status"] = {
                "replicas": n,
                "readyReplicas": n,
                "updatedReplicas": n,
                "observedGeneration": 1,
            }
        self.objects[(obj["kind"], obj["metadata"]["name"])] = obj
        return obj

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        self.deleted.append((kind, name))
        return self.objects.pop((kind, name), None) is not None

    def has_group(self, group_version: str, ttl: float = 60.0) -> bool:
        return False

    def digest_of(self, name: str) -> str | None:
        dep = self.objects.get(("Deployment", name))
        return None if dep is None else dep["spec"]["template"]["metadata"]["annotations"][ANNOTATION_MODEL_DIGEST]


def md_body(spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "m", "namespace": "ns", "uid": "u-1", "generation": 1, "resourceVersion": "5"},
        "spec": spec or {"model": {"uri": NEW["uri"], "digest": NEW["digest"]}},
    }
    if status is not None:
        body["status"] = status
    return body


class World:
    def __init__(
        self, body: dict[str, Any], clock: Any = lambda: T0, resync: float = 300.0, cache: WatchCache | None = None
    ) -> None:
        self.cluster = FakeCluster(body)
        self.workloads = FakeWorkloads()
        self.cache = cache or WatchCache()
        self.cache.object_event("modeldeployments", "ADDED", copy.deepcopy(body))
        self.asked: list[float | None] = []
        self.events: list[str] = []
        self.reconciler = ModelDeploymentReconciler(
            self.cluster,  # type: ignore[arg-type]
            self.workloads,  # type: ignore[arg-type]
            OperatorConfig(resync_seconds=resync),
            clock=clock,
            watched=self.cache,
            requeue=lambda ns, name, wait: self.asked.append(wait),
            events=lambda obj, kind, type_, reason, message: self.events.append(reason),
        )

    def held(self) -> dict[str, Any]:
        held = self.cache.object("modeldeployments", "ns", "m")
        assert held is not None
        return held


def test_a_pass_reads_the_watch_cache_and_writes_status_over_the_version_it_read() -> None:
    world = World(md_body())
    assert world.reconciler.reconcile("ns", "m") == 300.0  # creates the Deployment; nothing falls due before
    assert world.reconciler.reconcile("ns", "m") == 300.0  # sees it rolled out: serving
    assert world.cluster.gets == 0  # both passes read the cached object
    assert world.cluster.preconditions == ["5", "6"]  # the second read the first's write, folded into the cache
    assert world.cluster.md["status"]["current"]["digest"] == NEW["digest"]
    assert world.held()["metadata"]["resourceVersion"] == "7"
    assert world.held()["status"]["current"]["digest"] == NEW["digest"]
    assert world.events == ["Deployed"]  # through the injected recorder, not the cluster
    assert world.cluster.direct_events == []
    assert world.asked == [300.0, 300.0]
    assert world.workloads.deleted == []  # no canary Deployment was seen, so none is deleted (no DELETE answered 404)


def test_a_steady_deployment_is_read_from_the_cache_for_several_resyncs_then_afresh() -> None:
    seconds = [0.0]
    world = World(md_body(), resync=10.0, cache=WatchCache(clock=lambda: seconds[0]))
    world.reconciler.reconcile("ns", "m")
    world.reconciler.reconcile("ns", "m")  # serving; nothing more to write from here on
    for _ in range(5):
        seconds[0] += 10.0  # a resync pass every 10 s
        world.reconciler.reconcile("ns", "m")
    assert world.cluster.gets == 0  # 50 s after the last write: still the cached copy
    seconds[0] += 11.0
    world.reconciler.reconcile("ns", "m")
    assert world.cluster.gets == 1  # not seen for over 6 resyncs: read afresh, in case a watch missed something
    seconds[0] += 10.0
    world.reconciler.reconcile("ns", "m")
    assert world.cluster.gets == 1  # the GET renewed the cached copy


def test_a_write_refused_as_stale_redoes_the_pass_on_a_fresh_read_and_loses_nothing() -> None:
    world = World(md_body())
    world.reconciler.reconcile("ns", "m")
    # Someone scales the deployment up; the watch event of it has not come yet, so the cache holds version 6.
    world.cluster.edit(
        lambda md: (
            md["spec"].update(autoscaling={"minReplicas": 2, "maxReplicas": 4}),
            md["metadata"].update(generation=2),
        )
    )
    stale_before = metrics.STALE_WRITES.labels("ModelDeployment")._value.get()

    assert world.reconciler.reconcile("ns", "m") == 300.0

    assert metrics.STALE_WRITES.labels("ModelDeployment")._value.get() == stale_before + 1
    assert world.cluster.preconditions == ["5", "6", "7"]  # refused over 6, written over 7
    assert world.cluster.gets == 1  # the redo read afresh
    md = world.cluster.md
    assert md["spec"]["autoscaling"]["minReplicas"] == 2  # the edit made meanwhile stands
    assert md["status"]["observedGeneration"] == 2  # and the redone pass acted on it
    assert md["status"]["current"]["digest"] == NEW["digest"]
    assert world.workloads.objects[("HorizontalPodAutoscaler", "m")]["spec"]["minReplicas"] == 2
    assert world.events == ["Deployed"]  # the refused pass posted nothing; the redo posted it once
    assert world.held()["metadata"]["resourceVersion"] == "8"


def test_a_pass_that_keeps_meeting_changes_asks_again_soon() -> None:
    world = World(md_body())
    real = world.cluster.patch_status

    def always_changed(*args: Any, **kwargs: Any) -> dict[str, Any]:
        world.cluster.edit(lambda md: md["metadata"].setdefault("labels", {}).update(x="y"))
        return real(*args, **kwargs)

    world.cluster.patch_status = always_changed  # type: ignore[method-assign]
    assert world.reconciler.reconcile("ns", "m") == 1.0
    assert world.cluster.refused == 2
    assert world.asked == [1.0]
    assert world.events == []


def canary_md(step_started_at: datetime | None) -> dict[str, Any]:
    spec = {
        "model": {"uri": NEW["uri"], "digest": NEW["digest"]},
        "rollout": {
            "strategy": "Canary",
            "steps": [{"weight": 50, "pauseSeconds": 30}, {"weight": 100, "pauseSeconds": 30}],
            "analysis": {"minRequests": 0},
        },
    }
    canary: dict[str, Any] = {"model": NEW, "step": 0}
    if step_started_at is not None:
        canary["stepStartedAt"] = step_started_at.isoformat().replace("+00:00", "Z")
    status = {"observedGeneration": 1, "current": OLD, "canary": canary}
    return md_body(spec, status)


def serving_old_and_canary(world: World) -> None:
    """The stable Deployment serves the old model and the canary's is rolled out (as the last pass left them)."""
    for track, model in ((serving.STABLE, OLD), (serving.CANARY, NEW)):
        world.workloads.apply(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": serving.deployment_name("m", track), "namespace": "ns"},
                "spec": {
                    "replicas": 1,
                    "template": {"metadata": {"annotations": {ANNOTATION_MODEL_DIGEST: model["digest"]}}},
                },
            }
        )


@pytest.mark.parametrize(
    ("started", "expected", "events"),
    [
        (T0 - timedelta(seconds=12), 18.0, []),  # the pause ends in 18 s: then, not at the 300 s resync
        (T0 - timedelta(seconds=29.8), 0.5, []),  # due in a moment: no sooner than half a second
        (None, 30.0, ["CanaryStep"]),  # the step's pause starts now
    ],
)
def test_a_canary_pass_asks_for_the_next_at_its_pause_end(
    started: datetime | None, expected: float, events: list[str]
) -> None:
    world = World(canary_md(started))
    serving_old_and_canary(world)
    wait = world.reconciler.reconcile("ns", "m")
    assert wait == pytest.approx(expected)
    assert world.asked == [wait]
    assert world.events == events
    assert world.cluster.md["status"]["canary"]["step"] == 0
    assert world.cluster.md["status"]["readyReplicas"] == 2  # the stable and the canary pod, as observed
    assert world.workloads.digest_of(serving.deployment_name("m", serving.CANARY)) == NEW["digest"]
    assert world.workloads.digest_of(serving.deployment_name("m", serving.STABLE)) == OLD["digest"]


def test_a_canary_given_up_has_its_deployment_deleted() -> None:
    body = canary_md(T0 - timedelta(seconds=12))
    body["spec"]["model"] = {"uri": OLD["uri"], "digest": OLD["digest"]}  # back to the model serving now
    world = World(body)
    serving_old_and_canary(world)
    world.reconciler.reconcile("ns", "m")
    assert world.workloads.deleted == [("Deployment", serving.deployment_name("m", serving.CANARY))]
    assert "canary" not in world.cluster.md["status"]


def test_a_canary_short_of_requests_after_its_pause_waits_for_the_resync_not_in_a_loop() -> None:
    body = canary_md(T0 - timedelta(seconds=60))
    body["spec"]["rollout"]["analysis"]["minRequests"] = 20  # no server has answered any yet
    world = World(body)
    serving_old_and_canary(world)
    assert world.reconciler.reconcile("ns", "m") == 300.0
    assert world.cluster.md["status"]["canary"]["step"] == 0


@pytest.mark.parametrize(
    ("monitoring", "drift", "retraining", "expected"),
    [
        ({"drift": {"windowSeconds": 600}}, {"score": 0.5, "aboveSince": T0 - timedelta(seconds=100)}, None, 500),
        ({"drift": {"windowSeconds": 600}}, {"score": 0.5, "aboveSince": T0 - timedelta(seconds=700)}, None, None),
        ({"drift": {"windowSeconds": 600}}, {"score": 0.1}, None, None),
        ({"retrain": {"pipeline": "p", "minIntervalSeconds": 3600}}, None, T0 - timedelta(seconds=600), 3000),
        (
            {"drift": {"windowSeconds": 600}, "retrain": {"pipeline": "p", "minIntervalSeconds": 3600}},
            {"score": 0.5, "aboveSince": T0 - timedelta(seconds=100)},
            T0 - timedelta(seconds=3500),
            100,
        ),
        ({}, None, None, None),
    ],
)
def test_monitoring_decisions_fall_due(
    monitoring: dict[str, Any], drift: dict[str, Any] | None, retraining: datetime | None, expected: float | None
) -> None:
    from conveyor.api.modeldeployment import DriftStatus, Monitoring, RetrainingStatus
    from conveyor.core.monitoring import decision_due

    last = RetrainingStatus(run="r", reason="Drift", at=retraining) if retraining is not None else None
    due = decision_due(
        Monitoring.model_validate(monitoring),
        DriftStatus.model_validate(drift) if drift is not None else None,
        last,
        T0,
    )
    assert (None if due is None else (due - T0).total_seconds()) == expected


def test_a_canary_step_advances_within_two_seconds_of_its_pause_end() -> None:
    """The real work queue and a wall clock: one pass 1.5 s before the pause ends; nothing else (no event, no
    timer) starts a pass, and the resync is 300 s away."""
    start = time.monotonic()

    def clock() -> datetime:
        return T0 - timedelta(seconds=1.5) + timedelta(seconds=time.monotonic() - start)

    world = World(canary_md(T0 - timedelta(seconds=30)), clock=clock)
    serving_old_and_canary(world)
    advanced: list[datetime] = []
    done = threading.Event()

    def on_write(md: dict[str, Any]) -> None:
        if md["status"].get("canary", {}).get("step") == 1 and not advanced:
            advanced.append(clock())
            done.set()

    world.cluster.on_write = on_write
    queue = Requeue(world.reconciler.reconcile, workers=1)
    world.reconciler.requeue = queue.after
    queue.start()
    try:
        queue.now("ns", "m")
        assert done.wait(timeout=6), "the canary never moved to its next step"
    finally:
        queue.stop()
    assert T0 <= advanced[0] <= T0 + timedelta(seconds=2), advanced
    assert world.cluster.gets == 0


def test_a_forked_watch_leaves_the_windows_it_measured_untouched() -> None:
    """A pass folds into a fork of the monitoring state, kept only once its status is written."""
    held = _Watch(window={"x": FeatureWindow(10, 5.0, 3.0)}, counters={"pod": {"x": FeatureWindow(10, 5.0, 3.0)}})
    fork = held.fork()
    fork.window["x"].add(FeatureWindow(5, 1.0, 1.0))
    fork.window["y"] = FeatureWindow(1, 1.0, 1.0)
    fork.counters["pod"] = {"x": FeatureWindow(15, 6.0, 4.0)}
    assert held.window == {"x": FeatureWindow(10, 5.0, 3.0)}
    assert held.counters == {"pod": {"x": FeatureWindow(10, 5.0, 3.0)}}
    assert fork.window["x"] == FeatureWindow(15, 6.0, 4.0)
