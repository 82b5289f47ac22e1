"""A pipeline written in Python with the SDK, compiled by `conveyor compile`, applied and run on the real control
plane: function steps wired by an output, a step reading a Secret through valueFrom and a ConfigMap through a
volume, and an onExit function step given the Run's outcome. Each step is a Job whose pod the node agent really
runs; what a step saw is what its own process wrote to the artifact store.

The Secret's value reaches the step's process (it writes the value's digest) and nothing else: not the Run's status,
its record, the namespace's Events, the Job or the operator's log. A second Run of the same Pipeline fails a step
on purpose, and the onExit step still runs and sees Failed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sdk_cluster_pipeline as source
import test_operator
from kubernetes import client as k8s_client
from test_operator import GROUP, VERSION, Operator, create, jobs_of, run_body, steps, wait_done

from testenv.controlplane import ControlPlane
from testenv.minio import S3Endpoint

pytestmark = pytest.mark.e2e

# The operator process and the namespace with the artifact Secret, as test_operator.py sets them up.
operator = test_operator.operator
ns = test_operator.ns

PIPELINE_SOURCE = Path(source.__file__).resolve()
GREETING = "hello-from-the-configmap"


@pytest.fixture
def password(api: k8s_client.ApiClient, ns: str) -> str:
    """A Secret and a ConfigMap for the steps; the Secret's value is random, so finding it anywhere is a leak."""
    value = "e2e-" + secrets.token_urlsafe(24)
    core = k8s_client.CoreV1Api(api)
    core.create_namespaced_secret(
        ns,
        k8s_client.V1Secret(
            metadata=k8s_client.V1ObjectMeta(name=source.SECRET_NAME), string_data={source.SECRET_KEY: value}
        ),
    )
    core.create_namespaced_config_map(
        ns,
        k8s_client.V1ConfigMap(
            metadata=k8s_client.V1ObjectMeta(name=source.SETTINGS_CONFIG_MAP), data={"greeting": GREETING}
        ),
    )
    return value


@pytest.fixture
def compiled(tmp_path: Path, control_plane: ControlPlane, api: k8s_client.ApiClient, ns: str) -> dict[str, Any]:
    """`conveyor compile file.py:sdk_e2e -o pipeline.yaml`, then `kubectl apply` of that file: the Pipeline object."""
    out = tmp_path / "pipeline.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "conveyor.cli.main", "compile", f"{PIPELINE_SOURCE}:sdk_e2e", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    # the compiled YAML carries the functions' source and references the Secret by name and key
    assert "def check_rows(" in text and "secretKeyRef" in text
    control_plane.kubectl("apply", "-n", ns, "-f", str(out))
    obj: Any = k8s_client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, ns, "pipelines", "sdk-e2e")
    return dict(obj)


def stored(uri: str, minio: S3Endpoint) -> bytes:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    s3 = minio.client()
    try:
        return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    finally:
        s3.close()


def output_of(run: dict[str, Any], step: str, output: str, minio: S3Endpoint) -> Any:
    (ref,) = [o for o in steps(run)[step]["outputs"] if o["name"] == output]
    return json.loads(stored(ref["uri"], minio))


def assert_never_leaked(
    value: str, run: dict[str, Any], api: k8s_client.ApiClient, ns: str, operator: Operator, minio: S3Endpoint
) -> None:
    """Neither the value nor its base64 (a Secret's wire form) in the status, record, Events, Jobs or operator log."""
    forms = (value, base64.b64encode(value.encode()).decode())
    events = k8s_client.CoreV1Api(api).list_namespaced_event(ns).items
    assert events, "the operator posts Events on the Run: without any, this check would look at nothing"
    jobs = jobs_of(api, ns, run["metadata"]["name"])
    assert jobs
    places = {
        "the Run's status": json.dumps(run["status"]),
        "the run record": stored(run["status"]["recordUri"], minio).decode(),
        "the Events": json.dumps(api.sanitize_for_serialization(events)),  # type: ignore[no-untyped-call]
        "the Jobs": json.dumps(api.sanitize_for_serialization(jobs)),  # type: ignore[no-untyped-call]
        "the operator log": operator.log(),
    }
    for where, text in places.items():
        for form in forms:
            assert form not in text, f"the Secret's value is in {where}"


def job_env(api: k8s_client.ApiClient, ns: str, run: str, step: str) -> dict[str, Any]:
    (job,) = [j for j in jobs_of(api, ns, run) if j.metadata.labels["conveyor.dev/step"] == step]
    container: Any = job.spec.template.spec.containers[0]
    return {e.name: e for e in container.env}


def test_a_compiled_python_pipeline_runs_with_a_secret_a_volume_and_an_exit_step(
    api: k8s_client.ApiClient,
    ns: str,
    operator: Operator,
    minio: S3Endpoint,
    password: str,
    compiled: dict[str, Any],
) -> None:
    create(api, ns, "runs", run_body("sdk-ok", "sdk-e2e", count=7))
    run = wait_done(api, ns, "sdk-ok", operator)
    status = run["status"]
    assert status["phase"] == "Succeeded", status
    assert [s["name"] for s in status["steps"]] == ["make-rows", "check-rows", "notify"]
    by_name = steps(run)
    assert all(s["phase"] == "Succeeded" for s in by_name.values()), by_name
    # the function steps' returned dicts are their metrics
    assert by_name["make-rows"]["metrics"] == {"rows": 7.0}
    assert by_name["check-rows"]["metrics"] == {"lines": 7.0}
    # make-rows' output reached check-rows, which also read the mounted ConfigMap and the Secret's value
    report = output_of(run, "check-rows", "report", minio)
    assert report["lines"] == [f"row-{i}" for i in range(7)]
    assert report["greeting"] == GREETING
    assert report["passwordSha256"] == hashlib.sha256(password.encode()).hexdigest()
    # the onExit step ran after the others, with the Run's outcome as its arguments
    assert output_of(run, "notify", "seen", minio) == {
        "phase": "Succeeded",
        "failedSteps": "",
        "message": next(c["message"] for c in status["conditions"] if c["type"] == "Succeeded"),
    }
    exits = next(c for c in status["conditions"] if c["type"] == "ExitStepsSucceeded")
    assert exits["status"] == "True", exits
    # the Job asks the kubelet for the Secret; the operator never read it
    env = job_env(api, ns, "sdk-ok", "check-rows")
    assert env["DB_PASSWORD"].value is None
    assert env["DB_PASSWORD"].value_from.secret_key_ref.name == source.SECRET_NAME
    assert "DB_PASSWORD" not in job_env(api, ns, "sdk-ok", "make-rows")  # a step's own pod settings stay its own
    assert status.get("pipelineVersion", {}).get("generation") == 1, status.get("pipelineVersion")
    assert_never_leaked(password, run, api, ns, operator, minio)


def test_a_failing_step_of_the_compiled_pipeline_still_runs_its_exit_step(
    api: k8s_client.ApiClient,
    ns: str,
    operator: Operator,
    minio: S3Endpoint,
    password: str,
    compiled: dict[str, Any],
) -> None:
    create(api, ns, "runs", run_body("sdk-fails", "sdk-e2e", count=3, reject=True))
    run = wait_done(api, ns, "sdk-fails", operator)
    status = run["status"]
    assert status["phase"] == "Failed", status
    by_name = steps(run)
    assert by_name["make-rows"]["phase"] == "Succeeded"
    assert by_name["check-rows"]["phase"] == "Failed"
    assert "rows rejected on purpose" in by_name["check-rows"]["message"], by_name["check-rows"]
    # the step printed, logged and raised with the Secret's value: the message keeps the other lines, not the value
    assert "looked at 3 rows" in by_name["check-rows"]["message"], by_name["check-rows"]
    assert password not in by_name["check-rows"]["message"]
    assert by_name["notify"]["phase"] == "Succeeded", by_name["notify"]
    seen = output_of(run, "notify", "seen", minio)
    assert (seen["phase"], seen["failedSteps"]) == ("Failed", "check-rows")
    assert "step 'check-rows' failed" in seen["message"]
    succeeded = next(c for c in status["conditions"] if c["type"] == "Succeeded")
    assert (succeeded["status"], succeeded["reason"]) == ("False", "StepFailed")
    exits = next(c for c in status["conditions"] if c["type"] == "ExitStepsSucceeded")
    assert exits["status"] == "True", exits
    env = job_env(api, ns, "sdk-fails", "check-rows")
    assert env["DB_PASSWORD"].value is None and env["DB_PASSWORD"].value_from.secret_key_ref.key == source.SECRET_KEY
    ran = {"check-rows", "notify"} | (set() if by_name["make-rows"].get("cacheHit") else {"make-rows"})
    assert {j.metadata.labels["conveyor.dev/step"] for j in jobs_of(api, ns, "sdk-fails")} == ran
    assert_never_leaked(password, run, api, ns, operator, minio)
