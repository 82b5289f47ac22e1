"""onExit steps on the real control plane: after a failed step, after a cancel, and a failing cleanup, each step a
Job whose pod really runs; what the onExit steps saw is written by their own processes."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

import pytest
import test_operator
from kubernetes import client as k8s_client
from test_operator import GROUP, VERSION, Operator, create, jobs_of, run_body, steps, wait_done

from testenv.minio import S3Endpoint
from testenv.processes import wait_until

pytestmark = pytest.mark.e2e

# The operator process and the namespace with the artifact Secret, as test_operator.py sets them up.
operator = test_operator.operator
ns = test_operator.ns

# Writes its arguments (what the templates resolved to) as JSON to its output `seen` (a pod's files are its own:
# the test reads what it saw from the artifact store).
REPORT = "import json,sys; open(sys.argv[1],'w').write(json.dumps(sys.argv[2:]))"


def reporter(name: str, *templates: str) -> dict[str, Any]:
    return py_step(name, REPORT, "{{ outputs.seen }}", *templates, outputs=[{"name": "seen"}])


def seen_by(run: dict[str, Any], step: str, minio: S3Endpoint) -> Any:
    (ref,) = [o for o in steps(run)[step]["outputs"] if o["name"] == "seen"]
    return stored_json(ref["uri"], minio)


def stored_json(uri: str, minio: S3Endpoint) -> Any:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    s3 = minio.client()
    try:
        return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    finally:
        s3.close()


def py_step(name: str, code: str, *args: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "container": {"image": "local", "command": [sys.executable, "-c", code, *args]}, **extra}


def pipeline(name: str, steps_: list[dict[str, Any]], on_exit: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Pipeline",
        "metadata": {"name": name},
        "spec": {"steps": steps_, "onExit": on_exit},
    }


def condition(run: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in run["status"]["conditions"] if c["type"] == type_)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_an_exit_step_runs_after_a_failed_step_and_sees_phase_failed(
    api: k8s_client.ApiClient, ns: str, operator: Operator, minio: S3Endpoint
) -> None:
    prepare = py_step("prepare", "import sys; open(sys.argv[1],'w').write('rows')", "{{ outputs.data }}")
    prepare["outputs"] = [{"name": "data"}]
    create(
        api,
        ns,
        "pipelines",
        pipeline(
            "exit-after-failure",
            [
                prepare,
                py_step(
                    "train",
                    "import sys; print('diverged'); sys.exit(5)",
                    inputs=[{"name": "d", "step": "prepare", "output": "data"}],
                    outputs=[{"name": "model"}],
                ),
            ],
            [
                reporter("notify", "{{ run.phase }}", "{{ run.failedSteps }}", "{{ run.message }}"),
                py_step(
                    "check-data",
                    "import sys; assert open(sys.argv[1]).read() == 'rows'",
                    "{{ inputs.d }}",
                    inputs=[{"name": "d", "step": "prepare", "output": "data"}],
                ),
                py_step(
                    "archive-model",
                    "print('never')",
                    inputs=[{"name": "m", "step": "train", "output": "model"}],
                ),
            ],
        ),
    )
    create(api, ns, "runs", run_body("exit-after-failure", "exit-after-failure"))
    run = wait_done(api, ns, "exit-after-failure", operator)

    assert run["status"]["phase"] == "Failed"
    succeeded = condition(run, "Succeeded")
    assert succeeded["status"] == "False" and succeeded["reason"] == "StepFailed"
    exits = condition(run, "ExitStepsSucceeded")
    assert exits["status"] == "True" and exits["reason"] == "AllSucceeded", exits
    by_name = steps(run)
    assert [s["name"] for s in run["status"]["steps"]] == ["prepare", "train", "notify", "check-data", "archive-model"]
    assert by_name["train"]["phase"] == "Failed"
    assert by_name["notify"]["phase"] == "Succeeded" and by_name["check-data"]["phase"] == "Succeeded"
    assert by_name["archive-model"]["phase"] == "Skipped"
    assert "output 'model' of step 'train', which did not succeed (Failed)" in by_name["archive-model"]["message"]
    phase, failed, message = seen_by(run, "notify", minio)  # written by the onExit step's own pod
    assert (phase, failed) == ("Failed", "train")
    assert "step 'train' failed" in message and "command exited with code 5" in message
    assert at(by_name["notify"]["startedAt"]) >= at(by_name["train"]["finishedAt"])
    # one Job per step that ran: prepare, train, and the two onExit steps that were not skipped
    assert sorted(j.metadata.labels["conveyor.dev/step"] for j in jobs_of(api, ns, "exit-after-failure")) == [
        "check-data",
        "notify",
        "prepare",
        "train",
    ]
    record = stored_json(run["status"]["recordUri"], minio)
    assert record["phase"] == "Failed" and record["exitSteps"]["reason"] == "AllSucceeded"
    assert [s["name"] for s in record["steps"]][2:] == ["notify", "check-data", "archive-model"]


def test_a_cancelled_run_runs_its_exit_step_then_ends_cancelled(
    api: k8s_client.ApiClient, ns: str, operator: Operator, minio: S3Endpoint
) -> None:
    create(
        api,
        ns,
        "pipelines",
        pipeline(
            "exit-after-cancel",
            [py_step("sleep", "import time; time.sleep(300)")],
            [reporter("cleanup", "{{ run.phase }}", "{{ run.failedSteps }}")],
        ),
    )
    create(api, ns, "runs", run_body("exit-after-cancel", "exit-after-cancel"))
    wait_until(lambda: len(jobs_of(api, ns, "exit-after-cancel")) == 1, timeout=60, what="the Job")
    k8s_client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP, VERSION, ns, "runs", "exit-after-cancel", {"spec": {"cancel": True}}
    )
    run = wait_done(api, ns, "exit-after-cancel", operator, timeout=120)
    assert run["status"]["phase"] == "Cancelled"
    assert steps(run)["sleep"]["phase"] == "Cancelled"
    assert steps(run)["cleanup"]["phase"] == "Succeeded"
    assert seen_by(run, "cleanup", minio) == ["Cancelled", ""]
    assert condition(run, "ExitStepsSucceeded")["status"] == "True"


def test_a_failing_exit_step_is_recorded_and_the_succeeded_run_stays_succeeded(
    api: k8s_client.ApiClient, ns: str, operator: Operator
) -> None:
    create(
        api,
        ns,
        "pipelines",
        pipeline(
            "exit-fails",
            [py_step("work", "print('fine')")],
            [py_step("flaky-cleanup", "import sys; print('bucket gone'); sys.exit(3)")],
        ),
    )
    create(api, ns, "runs", run_body("exit-fails", "exit-fails"))
    run = wait_done(api, ns, "exit-fails", operator)
    assert run["status"]["phase"] == "Succeeded"
    assert condition(run, "Succeeded")["status"] == "True"
    exits = condition(run, "ExitStepsSucceeded")
    assert exits["status"] == "False" and exits["reason"] == "StepFailed"
    assert "onExit step 'flaky-cleanup' failed" in exits["message"]
    assert steps(run)["flaky-cleanup"]["phase"] == "Failed"

    def warning() -> list[Any] | None:
        events = k8s_client.CoreV1Api(api).list_namespaced_event(ns, field_selector="involvedObject.name=exit-fails")
        found = [e for e in events.items if e.reason == "ExitStepFailed" and e.type == "Warning"]
        return found or None

    (event,) = wait_until(warning, timeout=30, what="the ExitStepFailed Event")
    assert "onExit step 'flaky-cleanup' failed" in event.message
