"""A Pipeline's pass on the Runs' control model, against a fake API server and an injected clock: it reads the
Pipeline from the watch cache and its Runs from the Run watch (one LIST on first sight, not one every pass),
writes status only over the version it read and folds the result back, and is redone on a fresh read when that
write is refused as stale, with nothing lost and nothing done twice: a schedule that fired is not fired again, a
trigger that fired keeps its Run on record, and each Event is posted once, after the write, through the recorder.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import kubernetes
import pytest

from conveyor.controller import main, metrics
from conveyor.controller.config import OperatorConfig
from conveyor.controller.pipelines import (
    LABEL_PIPELINE,
    LABEL_SCHEDULED_AT,
    PipelineReconciler,
    PipelineRuns,
    scheduled_run,
)
from conveyor.core.schedule import run_name
from conveyor.kube.cluster import StaleObject
from conveyor.kube.timestamps import format_timestamp
from conveyor.kube.watchcache import WatchCache
from testenv.mergepatch import apply_merge_patch as merge

MINUTE = datetime(2026, 1, 1, 12, 1, tzinfo=UTC)
STEPS = [{"name": "a", "container": {"image": "i", "command": ["true"]}}]


def pipeline_body(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": "Pipeline",
        "metadata": {
            "name": "nightly",
            "namespace": "ns",
            "uid": "u-1",
            "generation": 1,
            "resourceVersion": "5",
            "creationTimestamp": "2026-01-01T11:59:10Z",
        },
        "spec": {"steps": STEPS, **spec},
    }


class FakeCluster:
    """One Pipeline and its Runs behind an API server that honours resourceVersion preconditions (409 →
    StaleObject); a ModelDeployment for drift triggers."""

    def __init__(self, pipeline: dict[str, Any]) -> None:
        self.pipeline = pipeline
        self.runs: dict[str, dict[str, Any]] = {}
        self.model_deployments: dict[str, dict[str, Any]] = {}
        self.rv = 100
        self.gets: list[str] = []
        self.lists = 0
        self.creates: list[str] = []
        self.deletes: list[str] = []
        self.cancels: list[str] = []
        self.preconditions: list[str | None] = []
        self.refused = 0
        self.direct_events: list[str] = []
        self.before_write: Any = None

    def next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def edit(self, change: Any) -> None:
        """Someone else changes the Pipeline: a new resourceVersion (and generation, for a spec change)."""
        change(self.pipeline)
        self.pipeline["metadata"]["resourceVersion"] = str(int(self.pipeline["metadata"]["resourceVersion"]) + 1)

    def get_custom(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.gets.append(plural)
        if plural == "pipelines":
            return copy.deepcopy(self.pipeline)
        assert plural == "modeldeployments"
        return copy.deepcopy(self.model_deployments.get(name))

    def list_runs(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        self.lists += 1
        assert selector == f"{LABEL_PIPELINE}=nightly"
        return [copy.deepcopy(r) for r in self.runs.values() if LABEL_PIPELINE in r["metadata"].get("labels", {})]

    def add_run(self, body: dict[str, Any]) -> dict[str, Any]:
        run = copy.deepcopy(body)
        run["metadata"].setdefault("creationTimestamp", format_timestamp(MINUTE))
        run["metadata"]["resourceVersion"] = self.next_rv()
        self.runs[run["metadata"]["name"]] = run
        return copy.deepcopy(run)

    def create_run(self, body: dict[str, Any]) -> bool:
        if body["metadata"]["name"] in self.runs:
            return False
        self.creates.append(body["metadata"]["name"])
        self.add_run(body)
        return True

    def create_generated_run(self, body: dict[str, Any]) -> str:
        name = f"{body['metadata']['generateName']}{len(self.creates)}"
        self.creates.append(name)
        self.add_run({**body, "metadata": {**body["metadata"], "name": name}})
        return name

    def patch_run_spec(self, namespace: str, name: str, spec: dict[str, Any]) -> bool:
        self.cancels.append(name)
        self.runs[name]["spec"].update(spec)
        self.runs[name]["metadata"]["resourceVersion"] = self.next_rv()
        return True

    def delete_run(self, namespace: str, name: str) -> None:
        self.deletes.append(name)
        self.runs.pop(name, None)

    def patch_status(
        self, plural: str, namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]:
        assert plural == "pipelines"
        if self.before_write is not None:
            self.before_write()
        self.preconditions.append(resource_version)
        if resource_version != self.pipeline["metadata"]["resourceVersion"]:
            self.refused += 1
            raise StaleObject(f"{plural} {namespace}/{name} changed since version {resource_version}")
        self.pipeline["status"] = merge(self.pipeline.get("status") or {}, status)
        self.pipeline["metadata"]["resourceVersion"] = str(int(self.pipeline["metadata"]["resourceVersion"]) + 1)
        return copy.deepcopy(self.pipeline)

    def event(self, obj: dict[str, Any], kind: str, type_: str, reason: str, message: str) -> None:
        self.direct_events.append(reason)


class World:
    def __init__(self, spec: dict[str, Any], now: datetime = MINUTE + timedelta(seconds=5)) -> None:
        self.now = now
        self.seconds = 0.0
        self.cluster = FakeCluster(pipeline_body(spec))
        self.cache = WatchCache()
        self.cache.object_event("pipelines", "ADDED", copy.deepcopy(self.cluster.pipeline))
        self.asked: list[float | None] = []
        self.events: list[str] = []
        self.reconciler = PipelineReconciler(
            self.cluster,  # type: ignore[arg-type]
            OperatorConfig(resync_seconds=10),
            clock=lambda: self.now,
            requeue=lambda ns, name, wait: self.asked.append(wait),
            watched=self.cache,
            events=lambda obj, kind, type_, reason, message: self.events.append(reason),
            runs=PipelineRuns(clock=lambda: self.seconds),
        )

    def reconcile(self) -> float | None:
        return self.reconciler.reconcile("ns", "nightly")

    def held(self) -> dict[str, Any]:
        held = self.cache.object("pipelines", "ns", "nightly")
        assert held is not None
        return held

    def watch(self, event: str, name: str) -> None:
        """The Run watch brings the Run as the API server holds it now."""
        body = self.cluster.runs.get(name) or {"metadata": {"name": name, "namespace": "ns"}}
        self.reconciler.run_event(event, copy.deepcopy(body))

    def finish(self, name: str, phase: str = "Succeeded") -> None:
        run = self.cluster.runs[name]
        run["status"] = {"phase": phase}
        run["metadata"]["resourceVersion"] = self.cluster.next_rv()
        self.watch("MODIFIED", name)


def every_minute(**schedule: Any) -> dict[str, Any]:
    return {"schedule": {"cron": "* * * * *", **schedule}}


def test_a_pass_reads_the_caches_and_writes_status_over_the_version_it_read() -> None:
    world = World(every_minute())
    assert world.reconcile() == 10.0  # the next minute is 55 s away; the resync comes first
    name = run_name("nightly", MINUTE)
    assert world.cluster.creates == [name]
    assert world.cluster.gets == []  # the Pipeline came from the watch cache
    assert world.cluster.lists == 1  # its Runs, listed once on first sight
    assert world.cluster.preconditions == ["5"]
    status = world.cluster.pipeline["status"]
    assert (status["lastScheduledTime"], status["lastRun"]) == (format_timestamp(MINUTE), name)
    assert world.held()["metadata"]["resourceVersion"] == "6"  # the write, folded into the cache
    assert world.held()["status"]["lastRun"] == name
    assert world.events == ["ScheduledRun"]  # through the recorder, once the status was written
    assert world.cluster.direct_events == []

    world.now += timedelta(seconds=10)
    world.seconds += 10
    world.reconcile()
    assert world.cluster.lists == 1  # the second pass read the Runs from the watch, not a LIST
    assert world.cluster.gets == []
    assert world.cluster.preconditions == ["5"]  # nothing changed, nothing written
    assert world.cluster.creates == [name]
    assert world.events == ["ScheduledRun"]


def test_a_write_refused_as_stale_is_redone_on_a_fresh_read_and_the_run_is_created_once() -> None:
    world = World(every_minute())
    edits: list[int] = []

    def someone_edits() -> None:
        if not edits:  # between the pass's read and its write, someone limits the history
            edits.append(1)
            world.cluster.edit(
                lambda p: (
                    p["spec"]["schedule"].update(successfulRunsHistoryLimit=3),
                    p["metadata"].update(generation=2),
                )
            )

    world.cluster.before_write = someone_edits
    stale_before = metrics.STALE_WRITES.labels("Pipeline")._value.get()

    assert world.reconcile() == 10.0

    assert metrics.STALE_WRITES.labels("Pipeline")._value.get() == stale_before + 1
    assert world.cluster.refused == 1
    assert world.cluster.preconditions == ["5", "6"]  # refused over 5, written over 6
    assert world.cluster.gets == ["pipelines"]  # the redo read afresh
    name = run_name("nightly", MINUTE)
    assert world.cluster.creates == [name]  # the redo found the Run the refused pass created: not created twice
    pipeline = world.cluster.pipeline
    assert pipeline["spec"]["schedule"]["successfulRunsHistoryLimit"] == 3  # the edit stands
    assert pipeline["status"]["observedGeneration"] == 2  # and the redone pass acted on it
    assert pipeline["status"]["lastRun"] == name  # the fired schedule is on record
    assert pipeline["status"]["lastScheduledTime"] == format_timestamp(MINUTE)
    assert world.events == ["ScheduledRun"]  # the refused pass's Event, posted once after the redo's write
    assert world.held()["metadata"]["resourceVersion"] == "7"
    assert world.asked == [10.0]


def test_a_pass_that_keeps_meeting_changes_asks_again_soon_and_says_nothing_until_written() -> None:
    world = World(every_minute())
    world.cluster.before_write = lambda: world.cluster.edit(lambda p: p["metadata"].setdefault("labels", {}))
    assert world.reconcile() == 1.0
    assert world.cluster.refused == 2
    assert world.events == []
    name = run_name("nightly", MINUTE)
    assert world.cluster.creates == [name]

    world.cluster.before_write = None
    world.reconcile()  # the pass asked for, a second later
    assert world.cluster.creates == [name]
    assert world.cluster.pipeline["status"]["lastRun"] == name
    assert world.events == ["ScheduledRun"]  # kept until a write recorded the Run, then said once


def test_forbid_holds_a_time_back_until_the_watch_shows_the_run_finished() -> None:
    world = World(every_minute(concurrencyPolicy="Forbid"))
    world.reconcile()
    first = run_name("nightly", MINUTE)
    world.watch("ADDED", first)
    world.now += timedelta(minutes=1)
    world.seconds += 10
    assert world.reconcile() == 10.0  # held back: look again at the resync
    assert world.cluster.creates == [first]

    world.finish(first)
    world.seconds += 10
    world.reconcile()
    second = run_name("nightly", MINUTE + timedelta(minutes=1))
    assert world.cluster.creates == [first, second]
    assert world.cluster.lists == 1  # every pass after the first read the Runs from the watch


def test_history_limits_count_finished_runs_from_the_watch_and_delete_each_once() -> None:
    world = World(every_minute(successfulRunsHistoryLimit=1, suspend=True))
    uid = world.cluster.pipeline["metadata"]["uid"]
    for minutes in (-3, -2, -1):
        at = MINUTE + timedelta(minutes=minutes)
        run = scheduled_run(world.cluster.pipeline, run_name("nightly", at), at)
        run["metadata"]["creationTimestamp"] = format_timestamp(at)
        run["status"] = {"phase": "Succeeded"}
        world.cluster.add_run(run)
    assert all(r["metadata"]["ownerReferences"][0]["uid"] == uid for r in world.cluster.runs.values())
    before = copy.deepcopy(world.cluster.runs)
    assert world.reconcile() is None  # suspended: nothing falls due
    oldest = [run_name("nightly", MINUTE + timedelta(minutes=m)) for m in (-3, -2)]
    assert world.cluster.deletes == oldest
    assert world.events == ["DeletedRun", "DeletedRun"]

    # The watch has not shown the deletions yet (a late MODIFIED of one comes first): nothing is deleted twice.
    world.reconciler.run_event("MODIFIED", before[oldest[0]])
    world.reconcile()
    assert world.cluster.deletes == oldest
    assert world.cluster.lists == 1


def test_the_runs_are_listed_afresh_once_not_renewed_for_several_resyncs() -> None:
    world = World(every_minute())
    world.reconcile()
    for _ in range(6):
        world.seconds += 10
        world.reconcile()
    assert world.cluster.lists == 1
    world.seconds += 1
    world.reconcile()
    assert world.cluster.lists == 2  # a watch that missed an event is trusted no longer than six resyncs


def test_a_deletion_the_watch_showed_during_a_list_is_not_brought_back_by_its_answer() -> None:
    runs = PipelineRuns(clock=lambda: 5.0)
    body = {
        "metadata": {
            "name": "r1",
            "namespace": "ns",
            "resourceVersion": "10",
            "labels": {LABEL_PIPELINE: "p", LABEL_SCHEDULED_AT: "60"},
        },
        "spec": {"pipelineRef": {"name": "p"}},
    }
    since = runs.listing("ns", "p")
    runs.event("DELETED", body)  # the watch shows the deletion while the LIST is on its way
    assert runs.listed("ns", "p", [copy.deepcopy(body)], since) == []
    assert runs.runs("ns", "p", max_age=60) == []
    runs.event("ADDED", {**body, "metadata": {**body["metadata"], "name": "r2", "resourceVersion": "11"}})
    held = runs.runs("ns", "p", max_age=60)
    assert held is not None and [r["metadata"]["name"] for r in held] == ["r2"]
    runs.event(
        "ADDED", {**body, "metadata": {**body["metadata"], "name": "other"}, "spec": {"pipelineRef": {"name": "q"}}}
    )
    assert runs.sizes() == (1, 1)  # Runs of Pipelines not reconciled here are not held


def drift_world() -> World:
    world = World({"triggers": [{"drift": {"modelDeployment": "m"}}]})
    md = {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "m", "namespace": "ns", "resourceVersion": "50"},
        "spec": {},
        "status": {
            "drift": {"score": 0.6, "aboveSince": "2026-01-01T11:50:00Z"},
            "conditions": [
                {
                    "type": "Drifting",
                    "status": "True",
                    "reason": "Drift",
                    "message": "m",
                    "lastTransitionTime": "2026-01-01T11:55:00Z",
                }
            ],
        },
    }
    world.cluster.model_deployments["m"] = md
    world.cache.object_event("modeldeployments", "ADDED", copy.deepcopy(md))
    return world


def test_a_trigger_that_fired_in_a_refused_pass_is_not_fired_again_and_its_run_is_kept() -> None:
    world = drift_world()
    edits: list[int] = []

    def someone_edits() -> None:
        if not edits:
            edits.append(1)
            world.cluster.edit(lambda p: p["metadata"].setdefault("annotations", {}).update(a="b"))

    world.cluster.before_write = someone_edits
    assert world.reconcile() == 10.0
    assert world.cluster.refused == 1
    assert len(world.cluster.creates) == 1  # one drift episode, one Run, though the pass ran twice
    (trigger,) = world.cluster.pipeline["status"]["triggers"]
    assert trigger["lastRun"] == world.cluster.creates[0]  # the refused pass's Run is on record
    assert trigger["episode"] == "2026-01-01T11:50:00Z"
    assert world.events == ["TriggeredRun"]
    assert world.cluster.gets == ["pipelines"]  # the ModelDeployment came from the watch cache

    world.cluster.before_write = None
    world.seconds += 10
    world.reconcile()
    assert len(world.cluster.creates) == 1
    assert world.events == ["TriggeredRun"]


def test_the_operator_wires_the_pipeline_reconciler_to_its_cache_recorder_and_queue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(main, "load_kube_config", kubernetes.client.ApiClient)
    op = main.Operator.build(OperatorConfig(s3_endpoint="http://127.0.0.1:9"), standalone=True)
    try:
        assert op.pipelines.watched is op.watched
        assert op.pipelines.post_event is op.events
        assert op.pipelines.requeue == op.pipeline_queue.after
    finally:
        op.events.stop()
