"""Whether a step's pod has started, and what it waits for if not: from a LIST or the watch cache alike."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor.kube.cluster import observe_jobs, pod_started, pod_waiting
from conveyor.kube.watchcache import WatchCache


def pod(phase: str, state: dict[str, Any] | None = None, conditions: list[dict[str, Any]] | None = None) -> Any:
    status: dict[str, Any] = {"phase": phase}
    if state is not None:
        status["containerStatuses"] = [{"name": "step", "state": state, "image": "x"}]
    if conditions is not None:
        status["conditions"] = conditions
    return {
        "metadata": {"name": "p", "namespace": "ns", "labels": {"conveyor.dev/run": "r1", "job-name": "j"}},
        "status": status,
    }


UNSCHEDULABLE = {
    "type": "PodScheduled",
    "status": "False",
    "reason": "Unschedulable",
    "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
}


@pytest.mark.parametrize(
    ("the_pod", "started", "waiting"),
    [
        (pod("Pending"), False, None),  # just created: nothing to say yet
        (
            pod("Pending", conditions=[UNSCHEDULABLE]),
            False,
            "Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
        ),
        (pod("Pending", {"waiting": {"reason": "ContainerCreating"}}), False, None),  # the normal way in
        (
            pod("Pending", {"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "nope:1"'}}),
            False,
            'ImagePullBackOff: Back-off pulling image "nope:1"',
        ),
        (pod("Pending", {"waiting": {"reason": "CreateContainerConfigError"}}), False, "CreateContainerConfigError"),
        (pod("Running", {"running": {"startedAt": "2026-11-22T12:00:00Z"}}), True, None),
        (pod("Pending", {"running": {}}), True, None),  # the kubelet's container state ahead of the phase
        (pod("Succeeded", {"terminated": {"exitCode": 0}}), True, None),
        (pod("Failed"), True, None),
    ],
)
def test_pod_started_and_what_it_waits_for(the_pod: Any, started: bool, waiting: str | None) -> None:
    assert pod_started(the_pod) is started
    if not started:
        assert pod_waiting(the_pod) == waiting


JOB = {
    "metadata": {
        "name": "j",
        "namespace": "ns",
        "labels": {"conveyor.dev/run": "r1", "conveyor.dev/step": "train", "conveyor.dev/attempt": "1"},
    },
    "status": {},
}


@pytest.mark.parametrize(
    ("pods", "started", "waiting"),
    [
        ([], False, None),  # no pod at all: a ResourceQuota or an admission policy refusing it
        (
            [pod("Pending", {"waiting": {"reason": "ErrImagePull", "message": "not found"}})],
            False,
            "ErrImagePull: not found",
        ),
        (
            [pod("Pending", conditions=[UNSCHEDULABLE])],
            False,
            "Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
        ),
        ([pod("Running", {"running": {}})], True, None),
    ],
)
def test_the_watch_cache_observes_starts_as_a_list_does(pods: list[Any], started: bool, waiting: str | None) -> None:
    listed = observe_jobs([JOB], pods)[("train", 1)]
    cache = WatchCache()
    cache.job_event("ADDED", JOB)
    for p in pods:
        cache.pod_event("ADDED", p)
    cached = observe_jobs(*cache.run_objects("ns", "r1"))[("train", 1)]
    assert (listed.started, listed.waiting) == (started, waiting)
    assert (cached.started, cached.waiting) == (started, waiting)
    assert not listed.finished and not cached.finished
