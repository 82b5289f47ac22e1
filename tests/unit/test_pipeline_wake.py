"""A Pipeline's pass asks the work queue for the next one at the schedule's next time, so a Run is created at
its minute, not at the next resync; shown with the real `Requeue` and an injected wall clock."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from conveyor.controller.config import OperatorConfig
from conveyor.controller.pipelines import LABEL_SCHEDULED_AT, PipelineReconciler
from conveyor.controller.requeue import Requeue

MINUTE = datetime(2026, 1, 1, 12, 1, tzinfo=UTC)


class FakeCluster:
    """The few calls a Pipeline pass makes, over one scheduled Pipeline and the Runs it creates."""

    def __init__(self) -> None:
        self.pipeline: dict[str, Any] = {
            "apiVersion": "conveyor.dev/v1alpha1",
            "kind": "Pipeline",
            "metadata": {
                "name": "nightly",
                "namespace": "ns",
                "uid": "u-1",
                "generation": 1,
                "creationTimestamp": "2026-01-01T12:00:10Z",
            },
            "spec": {
                "steps": [{"name": "a", "container": {"image": "i", "command": ["true"]}}],
                "schedule": {"cron": "* * * * *"},
            },
        }
        self.runs: list[dict[str, Any]] = []
        self.created = threading.Event()

    def get_custom(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        assert plural == "pipelines"
        return self.pipeline

    def list_runs(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return list(self.runs)

    def create_run(self, body: dict[str, Any]) -> bool:
        self.runs.append({**body, "metadata": {**body["metadata"], "creationTimestamp": "2026-01-01T12:01:00Z"}})
        self.created.set()
        return True

    def patch_status(self, plural: str, namespace: str, name: str, status: dict[str, Any], **_: Any) -> dict[str, Any]:
        self.pipeline = {**self.pipeline, "status": status}
        return self.pipeline

    def event(self, *_: Any) -> None:
        pass


def test_a_pass_asks_for_the_next_one_at_the_scheduled_minute() -> None:
    asked: list[tuple[str, str, float | None]] = []
    cluster = FakeCluster()
    reconciler = PipelineReconciler(
        cluster,  # type: ignore[arg-type]
        OperatorConfig(resync_seconds=300),
        clock=lambda: MINUTE - timedelta(seconds=20),
        requeue=lambda ns, name, wait: asked.append((ns, name, wait)),
    )
    assert reconciler.reconcile("ns", "nightly") == 20.0
    assert asked == [("ns", "nightly", 20.0)]  # not the 300 s resync
    assert cluster.runs == []


def test_a_schedule_fires_within_two_seconds_of_its_minute() -> None:
    """The first pass runs 1.5 s before the minute; nothing else (no event, no timer) starts a pass."""
    start = time.monotonic()

    def clock() -> datetime:
        return MINUTE - timedelta(seconds=1.5) + timedelta(seconds=time.monotonic() - start)

    cluster = FakeCluster()
    reconciler: PipelineReconciler

    def one_pass(namespace: str, name: str) -> None:
        reconciler.reconcile(namespace, name)

    queue = Requeue(one_pass, workers=1)
    reconciler = PipelineReconciler(
        cluster,  # type: ignore[arg-type]
        OperatorConfig(resync_seconds=300),
        clock=clock,
        requeue=queue.after,
    )
    queue.start()
    try:
        queue.now("ns", "nightly")
        assert cluster.created.wait(timeout=5), "no Run was created"
        fired = clock()
    finally:
        queue.stop()
    assert MINUTE <= fired <= MINUTE + timedelta(seconds=2), fired
    (run,) = cluster.runs
    assert run["metadata"]["labels"][LABEL_SCHEDULED_AT] == str(int(MINUTE.timestamp()))
    assert cluster.pipeline["status"]["lastScheduledTime"] == "2026-01-01T12:01:00Z"
