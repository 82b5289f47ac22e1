"""Cron schedules on the real control plane: Pipelines create Runs on time, under their concurrency policy,
within their history limits, and are judged by the operator (the API server accepts any cron text).

Each minute of cron waiting is expensive, so one test runs every timed case side by side in one namespace.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from typing import Any

import pytest
import test_operator
from kubernetes import client as k8s_client
from test_operator import GROUP, VERSION, Operator, create, get_run

from testenv.processes import wait_until

pytestmark = pytest.mark.e2e

DONE = ("Succeeded", "Failed", "Cancelled")

# The operator process and the namespace with the artifact Secret, as test_operator.py sets them up.
operator = test_operator.operator
ns = test_operator.ns


def scheduled_pipeline(name: str, code: str, **schedule: Any) -> dict[str, Any]:
    step = {"name": "main", "container": {"image": "local", "command": [sys.executable, "-c", code]}}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Pipeline",
        "metadata": {"name": name},
        "spec": {"steps": [step], "schedule": {"cron": "* * * * *", **schedule}},
    }


def get_pipeline(api: k8s_client.ApiClient, ns: str, name: str) -> dict[str, Any]:
    obj: Any = k8s_client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, ns, "pipelines", name)
    return dict(obj)


def runs_of(api: k8s_client.ApiClient, ns: str, pipeline: str) -> list[dict[str, Any]]:
    """The pipeline's scheduled Runs, oldest scheduled time first."""
    obj: Any = k8s_client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, ns, "runs", label_selector=f"conveyor.dev/pipeline={pipeline}"
    )
    return sorted(obj["items"], key=lambda r: int(r["metadata"]["labels"]["conveyor.dev/scheduled-at"]))


def phase(run: dict[str, Any]) -> str:
    return str(run.get("status", {}).get("phase", "Pending"))


def ready(pipeline: dict[str, Any]) -> dict[str, Any] | None:
    return next((c for c in pipeline.get("status", {}).get("conditions", []) if c["type"] == "Ready"), None)


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def events_of(api: k8s_client.ApiClient, ns: str, name: str) -> list[tuple[str | None, str | None, str | None]]:
    events = k8s_client.CoreV1Api(api).list_namespaced_event(ns, field_selector=f"involvedObject.name={name}").items
    return [(e.type, e.reason, e.message) for e in events]


def test_invalid_cron_is_rejected_by_the_operator(api: k8s_client.ApiClient, ns: str, operator: Operator) -> None:
    create(api, ns, "pipelines", scheduled_pipeline("bad-cron", "print(1)", cron="61 * * * *"))

    def judged() -> dict[str, Any] | None:
        return ready(get_pipeline(api, ns, "bad-cron"))

    cond: Any = wait_until(judged, timeout=30, what="the Ready condition")
    assert cond["status"] == "False" and cond["reason"] == "InvalidSpec"
    assert "spec.schedule.cron: invalid cron expression '61 * * * *'" in cond["message"]
    # The Event follows the status write that made the condition visible: wait for it rather than race it.
    wait_until(
        lambda: ("Warning", "InvalidSpec", cond["message"]) in events_of(api, ns, "bad-cron"),
        timeout=30,
        what="the InvalidSpec Event",
    )
    # fixed by an edit: Ready again, and the schedule would run
    k8s_client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP, VERSION, ns, "pipelines", "bad-cron", {"spec": {"schedule": {"cron": "0 3 * * *"}}}
    )
    fixed: Any = wait_until(
        lambda: (c := judged()) and c["status"] == "True" and c, timeout=30, what="Ready=True after the fix"
    )
    assert fixed["reason"] == "Valid" and get_pipeline(api, ns, "bad-cron")["status"]["observedGeneration"] == 2
    assert runs_of(api, ns, "bad-cron") == []


def test_schedules_create_runs_on_time_forbid_overlap_and_keep_history(
    api: k8s_client.ApiClient, ns: str, operator: Operator
) -> None:
    """Side by side: `quick` (history limit 1) and `slow` (Forbid, each Run longer than a minute)."""
    t0 = datetime.now(UTC)
    create(api, ns, "pipelines", scheduled_pipeline("quick", "print('tick')", successfulRunsHistoryLimit=1))
    create(api, ns, "pipelines", scheduled_pipeline("slow", "import time; time.sleep(70)", concurrencyPolicy="Forbid"))

    # a Run within ~70 s of creating the Pipeline, which succeeds
    first: Any = wait_until(lambda: runs_of(api, ns, "quick"), timeout=75, what="the first scheduled Run")
    first = first[0]
    created = when(first["metadata"]["creationTimestamp"])
    assert (created - t0).total_seconds() <= 72, (t0, created)
    assert first["spec"]["pipelineRef"] == {"name": "quick"}
    assert first["metadata"]["ownerReferences"][0]["kind"] == "Pipeline"
    scheduled_at = int(first["metadata"]["labels"]["conveyor.dev/scheduled-at"])
    assert scheduled_at % 60 == 0 and first["metadata"]["name"] == f"quick-{scheduled_at // 60}"
    name = first["metadata"]["name"]
    wait_until(lambda: phase(get_run(api, ns, name)) in DONE, timeout=60, what=f"run {name} to finish")
    assert phase(get_run(api, ns, name)) == "Succeeded"
    status = get_pipeline(api, ns, "quick")["status"]
    assert status["lastRun"] == name and when(status["lastScheduledTime"]).timestamp() == scheduled_at
    assert ready(get_pipeline(api, ns, "quick"))["status"] == "True"  # type: ignore[index]

    # Forbid: while slow's first Run sleeps through the next minute, no second Run starts
    slow_first: Any = wait_until(lambda: runs_of(api, ns, "slow"), timeout=30, what="slow's first Run")
    slow_name = slow_first[0]["metadata"]["name"]
    slow_at = int(slow_first[0]["metadata"]["labels"]["conveyor.dev/scheduled-at"])
    next_minute = slow_at + 60
    time.sleep(max(0.0, next_minute + 8 - time.time()))  # past the next scheduled time, plus resync slack
    assert phase(get_run(api, ns, slow_name)) == "Running"
    assert [r["metadata"]["name"] for r in runs_of(api, ns, "slow")] == [slow_name]

    # history limit 1: once the next quick Run succeeds, only it remains
    def only_newest_left() -> list[dict[str, Any]] | None:
        runs = runs_of(api, ns, "quick")
        newest_done = len(runs) == 1 and runs[0]["metadata"]["name"] != name and phase(runs[0]) == "Succeeded"
        return runs if newest_done else None

    wait_until(only_newest_left, timeout=75, what="the older quick Run to be collected")
    assert any(reason == "DeletedRun" and name in (msg or "") for _, reason, msg in events_of(api, ns, "quick"))

    # ...and the time Forbid held back starts once slow's first Run has finished
    wait_until(lambda: len(runs_of(api, ns, "slow")) == 2, timeout=60, what="slow's held-back Run")
    done, second = runs_of(api, ns, "slow")
    assert phase(done) == "Succeeded"
    assert int(second["metadata"]["labels"]["conveyor.dev/scheduled-at"]) >= next_minute
    assert when(second["metadata"]["creationTimestamp"]) >= when(done["status"]["finishedAt"]).replace(microsecond=0)

    # deleting a Pipeline deletes its scheduled Runs (owner references, garbage collector)
    k8s_client.CustomObjectsApi(api).delete_namespaced_custom_object(GROUP, VERSION, ns, "pipelines", "slow")
    wait_until(lambda: runs_of(api, ns, "slow") == [], timeout=90, what="garbage collection of slow's Runs")
