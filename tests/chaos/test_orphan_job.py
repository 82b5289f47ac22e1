"""Half-finished facts a crash leaves behind, built exactly, then handed to the operator.

A Job created by a pass the operator did not live to record is that attempt, even when the cache could answer.

The operator creates a step's Job before status records it, so a SIGKILL in between leaves a Job that
status does not know. The next pass launches the same attempt again, which is a no-op thanks to the
Job's deterministic name. But when the step's cache key has meanwhile been stored by another Run, that
pass would take the cache hit instead and leave the Job running unrecorded: a pod nobody accounts for,
and a status that claims no attempt was made. This test builds exactly that world, with the operator's
own planner and Job builder, while the operator is stopped.

A step whose container reported success and was then killed (OOM) before it exited is a failed attempt,
as its pod and Job say: the retry policy applies, and the Run's status never contradicts its Jobs.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import client as k8s_client

from conveyor import __version__
from conveyor.api.pipeline import Pipeline
from conveyor.core.planner import Launch, RunContext, RunPlanner
from conveyor.core.task import StoreConfig
from conveyor.core.validation import resolve_parameters
from conveyor.manifests.job import step_job
from e2e.test_operator import Operator, _py_pipeline, _py_step, create, jobs_of, run_body, steps, wait_done
from testenv.controlplane import ControlPlane
from testenv.minio import S3Endpoint
from testenv.nodeagent import NodeAgentProcess

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]


@pytest.fixture
def orphan_operator(
    control_plane: ControlPlane, minio: S3Endpoint, node_agent: NodeAgentProcess, install_crds: list[str]
) -> Iterator[Operator]:
    op = Operator(
        control_plane, minio, control_plane.log_dir, name="orphan-operator", extra_env={"CONVEYOR_S3_PREFIX": "chaos"}
    ).start()
    yield op
    op.stop()


def _the_job_the_operator_would_create(
    run: dict[str, Any], pipeline: dict[str, Any], minio: S3Endpoint, command: list[str] | None = None
) -> Any:
    """The first pass's Launch of the Run's first step, rendered as the operator renders it (see Operator's env);
    `command` replaces what its container runs."""
    spec = Pipeline.model_validate(pipeline).spec
    params, issues = resolve_parameters(spec, {}, "spec.parameters")
    assert not issues
    meta = run["metadata"]
    planner = RunPlanner(
        spec,
        params,
        RunContext(
            run_id=meta["uid"],
            name=meta["name"],
            namespace=meta["namespace"],
            code_version=__version__,
            store=StoreConfig(kind="s3", endpoint=minio.endpoint, bucket=minio.bucket),
        ),
    )
    plan = planner.plan({}, datetime.now(UTC), cache={})
    launch = next(a for a in plan.actions if isinstance(a, Launch))
    step = spec.steps[0]
    assert step.container is not None
    job = step_job(
        run_name=meta["name"],
        run_uid=meta["uid"],
        namespace=meta["namespace"],
        task=launch.task,
        image=step.container.image,
        command=[sys.executable, "-m", "conveyor.runtime"],
        credentials_secret="conveyor-artifacts",
    )
    if command is not None:
        job["spec"]["template"]["spec"]["containers"][0]["command"] = command
    return job


def _store_secret(api: k8s_client.ApiClient, ns: str, minio: S3Endpoint) -> None:
    k8s_client.CoreV1Api(api).create_namespaced_secret(
        ns,
        k8s_client.V1Secret(
            metadata=k8s_client.V1ObjectMeta(name="conveyor-artifacts"),
            string_data={"accessKey": minio.access_key, "secretKey": minio.secret_key},
        ),
    )


def test_a_job_status_never_recorded_is_adopted_not_replaced_by_a_cache_hit(
    api: k8s_client.ApiClient, namespace: str, orphan_operator: Operator, minio: S3Endpoint
) -> None:
    ns, op = namespace, orphan_operator
    _store_secret(api, ns, minio)
    pipeline = create(api, ns, "pipelines", _py_pipeline("orphans", [_py_step("work", "print('worked')")]))
    create(api, ns, "runs", run_body("first", "orphans"))
    assert wait_done(api, ns, "first", op)["status"]["phase"] == "Succeeded"  # the step's result is now cached

    op.stop()  # what a SIGKILL between "create the Job" and "record it in status" leaves behind:
    second = create(api, ns, "runs", run_body("second", "orphans"))
    k8s_client.BatchV1Api(api).create_namespaced_job(ns, _the_job_the_operator_would_create(second, pipeline, minio))
    op.start()

    run = wait_done(api, ns, "second", op)
    assert run["status"]["phase"] == "Succeeded", run["status"]
    work = steps(run)["work"]
    attempts = sorted(int(j.metadata.labels["conveyor.dev/attempt"]) for j in jobs_of(api, ns, "second"))
    assert attempts == [1], attempts
    assert work["attempts"] == 1 and not work["cacheHit"], work  # status accounts for the pod that ran


# What the step runtime does last (its report in the termination message), then a SIGKILL before it exits.
REPORTED_THEN_KILLED = (
    "import json, os, pathlib, signal; "
    "pathlib.Path(os.environ['CONVEYOR_TERMINATION_LOG']).write_text(json.dumps({'ok': True})); "
    "os.kill(os.getpid(), signal.SIGKILL)"
)


def test_a_step_killed_after_it_reported_success_is_a_failed_attempt_and_retried(
    api: k8s_client.ApiClient, namespace: str, orphan_operator: Operator, minio: S3Endpoint
) -> None:
    ns, op = namespace, orphan_operator
    _store_secret(api, ns, minio)
    step = _py_step("work", "print('worked')", retries={"limit": 1, "backoff": {"initialSeconds": 1}})
    pipeline = create(api, ns, "pipelines", _py_pipeline("killed-late", [step]))
    op.stop()
    run = create(api, ns, "runs", run_body("late", "killed-late"))
    job = _the_job_the_operator_would_create(run, pipeline, minio, [sys.executable, "-c", REPORTED_THEN_KILLED])
    k8s_client.BatchV1Api(api).create_namespaced_job(ns, job)
    op.start()

    run = wait_done(api, ns, "late", op)
    assert run["status"]["phase"] == "Succeeded", run["status"]
    work = steps(run)["work"]
    assert work["attempts"] == 2, work  # the killed attempt failed and the retry policy ran the step again
    attempts = sorted(int(j.metadata.labels["conveyor.dev/attempt"]) for j in jobs_of(api, ns, "late"))
    assert attempts == [1, 2], attempts
    events = k8s_client.CoreV1Api(api).list_namespaced_event(ns, field_selector="involvedObject.name=late").items
    assert any("after its step reported success" in (e.message or "") for e in events), [e.message for e in events]
