"""The watch cache: what Job and pod events leave behind, and that it observes like a LIST does."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conveyor.kube.cluster import observe_jobs, pod_stopped, pod_succeeded
from conveyor.kube.watchcache import WatchCache


def job(name: str, step: str, attempt: int, complete: bool = False, cache_key: str = "sha256:" + "c" * 64) -> Any:
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "labels": {"conveyor.dev/run": "r1", "conveyor.dev/step": step, "conveyor.dev/attempt": str(attempt)},
            "annotations": {"big": "x" * 1000},
        },
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"env": [{"name": "CONVEYOR_TASK", "value": json.dumps({"cache_key": cache_key, "x": 1})}]}
                    ]
                }
            }
        },
        "status": {"conditions": [{"type": "Complete", "status": "True"}] if complete else []},
    }


def pod(name: str, job_name: str, phase: str, message: str | None = None) -> Any:
    statuses = []
    if phase in ("Succeeded", "Failed"):
        statuses = [
            {
                "state": {
                    "terminated": {
                        "exitCode": 0 if phase == "Succeeded" else 1,
                        "message": message,
                        "reason": "Completed",
                        "finishedAt": "2026-11-22T12:00:00Z",
                    }
                },
                "image": "x",
            }
        ]
    return {
        "metadata": {"name": name, "namespace": "ns", "labels": {"conveyor.dev/run": "r1", "job-name": job_name}},
        "spec": {"containers": [{"name": "step"}]},
        "status": {"phase": phase, "containerStatuses": statuses},
    }


def test_the_cache_observes_exactly_what_a_list_observes() -> None:
    jobs = [job("j-a", "a", 1, complete=True), job("j-b", "b", 1)]
    pods = [pod("p-a", "j-a", "Succeeded", '{"ok": true}'), pod("p-b", "j-b", "Running")]
    cache = WatchCache()
    for j in jobs:
        cache.job_event("ADDED", j)
    for p in pods:
        cache.pod_event(None, p)
    assert observe_jobs(*cache.run_objects("ns", "r1")) == observe_jobs(jobs, pods)
    seen = observe_jobs(*cache.run_objects("ns", "r1"))
    assert seen[("a", 1)].finished and seen[("a", 1)].termination_message == '{"ok": true}'
    assert seen[("a", 1)].cache_key == "sha256:" + "c" * 64
    assert not seen[("b", 1)].finished


def test_events_update_and_deletions_leave_nothing() -> None:
    cache = WatchCache()
    cache.job_event("ADDED", job("j-b", "b", 1))
    cache.pod_event("ADDED", pod("p-b", "j-b", "Running"))
    cache.pod_event("MODIFIED", pod("p-b", "j-b", "Failed", "boom"))
    seen = observe_jobs(*cache.run_objects("ns", "r1"))
    assert seen[("b", 1)].finished and not seen[("b", 1)].succeeded
    cache.pod_event("DELETED", pod("p-b", "j-b", "Failed"))
    cache.job_event("DELETED", job("j-b", "b", 1))
    assert cache.sizes() == (0, 0, 0, 0)
    assert cache.run_objects("ns", "r1") == ([], [])
    cache.job_event("DELETED", job("j-z", "z", 1))  # late deletions of a forgotten Run create nothing
    assert cache.sizes() == (0, 0, 0, 0)


def test_only_what_observation_needs_is_kept() -> None:
    cache = WatchCache()
    cache.job_event("ADDED", job("j-a", "a", 1))
    (kept,), _ = cache.run_objects("ns", "r1")
    assert "annotations" not in kept["metadata"]
    assert len(json.dumps(kept)) < 400


def test_pipelines_by_event() -> None:
    cache = WatchCache()
    body = {"metadata": {"name": "p", "namespace": "ns", "resourceVersion": "7"}, "spec": {"steps": []}, "status": {}}
    cache.pipeline_event("ADDED", body)
    got = cache.pipeline("ns", "p")
    assert got is not None and got["metadata"]["resourceVersion"] == "7" and "status" not in got
    cache.pipeline_event("DELETED", body)
    assert cache.pipeline("ns", "p") is None


def test_an_event_says_whether_it_changed_what_a_pass_reads() -> None:
    cache = WatchCache()
    assert cache.job_event("ADDED", job("r1-a-1", "a", 1)) is True
    running = job("r1-a-1", "a", 1)
    running["metadata"]["annotations"]["other"] = "a new resourceVersion, nothing a pass reads"
    assert cache.job_event("MODIFIED", running) is False
    assert cache.job_event("MODIFIED", job("r1-a-1", "a", 1, complete=True)) is True
    assert cache.job_event("MODIFIED", job("r1-a-1", "a", 1, complete=True)) is False  # ended, then tidied up

    assert cache.pod_event("ADDED", pod("r1-a-1-x", "r1-a-1", "Pending")) is True
    assert cache.pod_event("MODIFIED", pod("r1-a-1-x", "r1-a-1", "Pending")) is False
    assert cache.pod_event("MODIFIED", pod("r1-a-1-x", "r1-a-1", "Succeeded", '{"ok": true}')) is True
    assert cache.pod_event("MODIFIED", pod("r1-a-1-x", "r1-a-1", "Succeeded", '{"ok": true}')) is False

    assert cache.pod_event("DELETED", pod("r1-a-1-x", "r1-a-1", "Succeeded")) is True
    assert cache.pod_event("DELETED", pod("r1-a-1-x", "r1-a-1", "Succeeded")) is False  # already gone
    assert cache.job_event("MODIFIED", {"metadata": {"name": "unlabelled", "namespace": "ns"}}) is False


def test_pod_stopped_is_per_job_and_needs_the_containers_end() -> None:
    cache = WatchCache()
    assert not cache.pod_stopped("ns", "r1", "r1-a-1")
    cache.pod_event("ADDED", pod("p1", "r1-a-1", "Running"))
    assert not cache.pod_stopped("ns", "r1", "r1-a-1")
    cache.pod_event("MODIFIED", pod("p1", "r1-a-1", "Failed", "boom"))
    cache.pod_event("ADDED", pod("p2", "r1-b-1", "Running"))
    assert cache.pod_stopped("ns", "r1", "r1-a-1")
    assert not cache.pod_stopped("ns", "r1", "r1-b-1")
    assert not cache.pod_stopped("other", "r1", "r1-a-1")
    without_end = pod("p3", "r1-c-1", "Succeeded")
    without_end["status"]["containerStatuses"] = []  # phase set before the container's state arrived
    cache.pod_event("ADDED", without_end)
    assert not cache.pod_stopped("ns", "r1", "r1-c-1")


def run(rv: str, phase: str | None = None, record: bool = False, name: str = "r1", started: bool = True) -> Any:
    status: dict[str, Any] = {}
    if phase:
        status["phase"] = phase
        if started:
            status["startedAt"] = "2026-11-22T12:00:00Z"
    if record:
        status["recordUri"] = "s3://b/records/r1.json"
    return {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": "Run",
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": "u1",
            "resourceVersion": rv,
            "generation": 1,
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "x" * 1000},
        },
        "spec": {"pipelineRef": {"name": "p"}},
        "status": status,
    }


def test_a_run_is_held_trimmed_and_only_a_newer_version_replaces_it() -> None:
    cache = WatchCache()
    cache.run_event("ADDED", run("10"))
    held = cache.run("ns", "r1")
    assert held is not None
    assert set(held["metadata"]) == {"name", "namespace", "uid", "resourceVersion", "generation"}
    assert held["spec"] == {"pipelineRef": {"name": "p"}} and held["kind"] == "Run"
    cache.run_event("MODIFIED", run("12", "Running"))  # e.g. the response to the operator's own status write
    cache.run_event("MODIFIED", run("11", "Pending"))  # the watch's event of an older version, arriving late
    held = cache.run("ns", "r1")
    assert held is not None and held["metadata"]["resourceVersion"] == "12" and held["status"]["phase"] == "Running"
    assert cache.run("ns", "other") is None


def test_a_finished_run_leaves_only_its_version_behind() -> None:
    cache = WatchCache()
    cache.run_event("ADDED", run("10", "Running"))
    cache.run_event("MODIFIED", run("20", "Succeeded"))  # finished, record not yet stored: its pass still needs it
    assert cache.run("ns", "r1") is not None
    cache.run_event("MODIFIED", run("21", "Succeeded", record=True))
    assert cache.run("ns", "r1") is None
    assert cache.sizes()[0] == 0
    cache.run_event("MODIFIED", run("20", "Succeeded"))  # late event of the version before: not news
    cache.run_event("MODIFIED", run("15", "Running"))
    assert cache.run("ns", "r1") is None
    cache.run_event("MODIFIED", run("30", "Running"))  # a newer version (a rerun edits it back): held again
    assert cache.run("ns", "r1") is not None
    cache.run_event("DELETED", run("31", "Running"))
    assert cache.run("ns", "r1") is None
    cache.run_event("ADDED", run("5"))  # re-created under the same name: new object, any version
    assert cache.run("ns", "r1") is not None


def test_unnumbered_versions_take_the_later_arrival() -> None:
    cache = WatchCache()
    cache.run_event("ADDED", run("b"))
    cache.run_event("MODIFIED", run("a", "Running"))
    held = cache.run("ns", "r1")
    assert held is not None and held["metadata"]["resourceVersion"] == "a"


def test_a_run_first_seen_finished_leaves_nothing_and_a_write_never_resurrects_a_forgotten_one() -> None:
    cache = WatchCache()
    cache.run_event(None, run("40", "Succeeded", record=True))  # the start-up listing's history
    cache.run_event(None, run("41", "Failed", started=False, name="invalid"))  # failed before it started
    cache.run_written(run("42", "Running", name="never-seen"))
    assert cache.sizes() == (0, 0, 0, 0)
    assert (
        cache.run("ns", "r1") is None and cache.run("ns", "invalid") is None and cache.run("ns", "never-seen") is None
    )
    assert cache._finished_runs == {}  # no tombstones for Runs that were never held
    cache.run_event("ADDED", run("50"))
    cache.run_written(run("51", "Running"))  # the response to the pass's own status write
    held = cache.run("ns", "r1")
    assert held is not None and held["metadata"]["resourceVersion"] == "51"
    cache.forget_run("ns", "r1")  # deleted while a pass was writing
    cache.run_written(run("52", "Running"))
    assert cache.run("ns", "r1") is None


def test_a_run_not_heard_of_for_longer_than_max_age_is_read_afresh() -> None:
    now = [100.0]
    cache = WatchCache(clock=lambda: now[0])
    cache.run_event("ADDED", run("10"))
    now[0] += 9
    assert cache.run("ns", "r1", max_age=10) is not None
    now[0] += 2
    assert cache.run("ns", "r1", max_age=10) is None  # a resync pass GETs: the watch may have missed a deletion
    assert cache.run("ns", "r1") is not None
    cache.run_event("MODIFIED", run("10"))  # the same version again (a relist) refreshes it
    assert cache.run("ns", "r1", max_age=10) is not None


def terminated(exit_code: int, message: str | None = None) -> dict[str, Any]:
    return {"state": {"terminated": {"exitCode": exit_code, "message": message, "reason": "Completed"}}}


@pytest.mark.parametrize(
    ("phase", "statuses", "stopped", "succeeded"),
    [
        ("Pending", [], False, None),
        ("Running", [{"state": {"running": {}}}], False, None),
        # the kubelet reports the container's end about a second before the phase: the step is over already
        ("Running", [terminated(0)], True, True),
        ("Running", [terminated(1)], True, False),
        ("Running", [terminated(137)], True, False),  # OOMKilled or killed by a signal
        ("Running", [terminated(0), {"state": {"running": {}}}], False, None),  # one container still runs
        ("Succeeded", [terminated(0)], True, True),
        ("Failed", [terminated(1)], True, False),
        ("Failed", [terminated(0)], True, False),  # the phase decides once it is there (evicted, deadline)
        ("Succeeded", [], True, True),  # phase before the container's state: stopped (observation still waits)
    ],
)
def test_a_pod_is_stopped_when_its_containers_end_and_its_phase_decides_once_set(
    phase: str, statuses: list[dict[str, Any]], stopped: bool, succeeded: bool | None
) -> None:
    body = {"metadata": {"name": "p"}, "status": {"phase": phase, "containerStatuses": statuses}}
    assert pod_stopped(body) is stopped
    if succeeded is not None:
        assert pod_succeeded(body) is succeeded


def test_a_step_is_observed_finished_from_its_containers_end_before_the_pods_phase() -> None:
    cache = WatchCache()
    cache.job_event("ADDED", job("j-a", "a", 1))
    running = pod("p-a", "j-a", "Running")
    running["status"]["containerStatuses"] = [terminated(0, '{"ok": true}')]
    assert cache.pod_event("MODIFIED", running)
    seen = observe_jobs(*cache.run_objects("ns", "r1"))[("a", 1)]
    assert seen.finished and seen.succeeded and seen.termination_message == '{"ok": true}'
    assert cache.pod_stopped("ns", "r1", "j-a")
    failing = pod("p-a", "j-a", "Running")
    failing["status"]["containerStatuses"] = [terminated(2, "boom")]
    cache.pod_event("MODIFIED", failing)
    seen = observe_jobs(*cache.run_objects("ns", "r1"))[("a", 1)]
    assert seen.finished and not seen.succeeded and seen.termination_message == "boom"
