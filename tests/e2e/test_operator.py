"""The operator on the real control plane: Runs become Jobs whose pods really execute every step.

The operator runs as its own process (so it can be killed), the node agent runs each step pod
as a local process, and artifacts go to a real MinIO.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s_client

from testenv.controlplane import ControlPlane
from testenv.minio import MinioServer, S3Endpoint
from testenv.nodeagent import NodeAgentProcess
from testenv.processes import ServerProcess, free_port, wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "breast-cancer" / "pipeline.yaml"
GROUP, VERSION = "conveyor.dev", "v1alpha1"


class Operator:
    """`python -m conveyor.controller` as a separate process, restartable."""

    def __init__(
        self,
        cp: ControlPlane,
        minio: S3Endpoint,
        log_dir: Path,
        *,
        name: str = "operator",
        args: tuple[str, ...] = ("--standalone",),
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.name, self.args = name, args
        self.env = {
            **os.environ,
            "KUBECONFIG": str(cp.kubeconfig),
            "AWS_ACCESS_KEY_ID": minio.access_key,
            "AWS_SECRET_ACCESS_KEY": minio.secret_key,
            "AWS_DEFAULT_REGION": minio.region,
            "CONVEYOR_S3_ENDPOINT": minio.endpoint,
            "CONVEYOR_S3_BUCKET": minio.bucket,
            "CONVEYOR_STEP_COMMAND": json.dumps([sys.executable, "-m", "conveyor.runtime"]),
            "CONVEYOR_RESYNC_SECONDS": "2",
            "CONVEYOR_METRICS_PORT": str(free_port()),
            "CONVEYOR_HEALTH_PORT": str(free_port()),
            **(extra_env or {}),
        }
        self.log_dir = log_dir
        self.starts = 0
        self.process: ServerProcess | None = None

    def start(self) -> Operator:
        self.starts += 1
        self.process = ServerProcess(
            self.name,
            [sys.executable, "-m", "conveyor.controller", *self.args],
            self.log_dir / f"{self.name}.log",
            env=self.env,
        ).start()
        return self

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.stop(grace=1)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(grace=5)

    def metrics(self) -> str:
        port = self.env["CONVEYOR_METRICS_PORT"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            return str(resp.read().decode())

    def log(self) -> str:
        return (self.log_dir / f"{self.name}.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def operator(
    control_plane: ControlPlane, minio: S3Endpoint, node_agent: NodeAgentProcess, install_crds: list[str]
) -> Iterator[Operator]:
    op = Operator(control_plane, minio, control_plane.log_dir).start()
    yield op
    op.stop()


@pytest.fixture
def ns(namespace: str, api: k8s_client.ApiClient, minio: S3Endpoint) -> str:
    """A namespace with the artifact-store Secret the step pods read their credentials from."""
    k8s_client.CoreV1Api(api).create_namespaced_secret(
        namespace,
        k8s_client.V1Secret(
            metadata=k8s_client.V1ObjectMeta(name="conveyor-artifacts"),
            string_data={"accessKey": minio.access_key, "secretKey": minio.secret_key},
        ),
    )
    return namespace


def create(api: k8s_client.ApiClient, ns: str, plural: str, body: dict[str, Any]) -> dict[str, Any]:
    obj: Any = k8s_client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, ns, plural, body)
    return dict(obj)


def get_run(api: k8s_client.ApiClient, ns: str, name: str) -> dict[str, Any]:
    obj: Any = k8s_client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, ns, "runs", name)
    return dict(obj)


def run_body(name: str, pipeline: str, **params: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Run",
        "metadata": {"name": name},
        "spec": {"pipelineRef": {"name": pipeline}, "parameters": params},
    }


def wait_done(api: k8s_client.ApiClient, ns: str, name: str, op: Operator, timeout: float = 300) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        run = get_run(api, ns, name)
        return run if run.get("status", {}).get("phase") in ("Succeeded", "Failed", "Cancelled") else None

    try:
        return wait_until(done, timeout=timeout, what=f"run {name} to finish", interval=0.5)  # type: ignore[return-value]
    except Exception:
        print(op.log()[-5000:])
        raise


def jobs_of(api: k8s_client.ApiClient, ns: str, run: str) -> list[Any]:
    return list(k8s_client.BatchV1Api(api).list_namespaced_job(ns, label_selector=f"conveyor.dev/run={run}").items)


def steps(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in run["status"]["steps"]}


def test_example_runs_on_the_cluster_then_hits_the_cache(
    api: k8s_client.ApiClient, ns: str, operator: Operator, minio: S3Endpoint, control_plane: ControlPlane
) -> None:
    example = yaml.safe_load(EXAMPLE.read_text())
    control_plane.kubectl("apply", "-n", ns, "-f", str(EXAMPLE))
    create(api, ns, "runs", run_body("first", example["metadata"]["name"]))
    waited = control_plane.kubectl(
        "wait", "-n", ns, "--for=condition=Succeeded", "run/first", "--timeout=300s", check=False, timeout=320
    )
    first = get_run(api, ns, "first")
    assert waited.returncode == 0, (first.get("status"), operator.log()[-3000:])
    status = first["status"]
    assert status["phase"] == "Succeeded" and status["progress"] == "6/6"
    by_step = steps(first)
    assert by_step["evaluate"]["metrics"]["roc_auc"] >= 0.97
    # one Job per step, each really run by a pod
    jobs = jobs_of(api, ns, "first")
    assert sorted(j.metadata.labels["conveyor.dev/step"] for j in jobs) == sorted(by_step)
    # the operator acts on the pods; the Job controller marks the Jobs done up to a second later
    wait_until(lambda: all(j.status.succeeded == 1 for j in jobs_of(api, ns, "first")), timeout=30,
               what="every Job to be marked succeeded")
    # every recorded artifact is in MinIO with the recorded digest
    s3 = minio.client()
    try:
        import hashlib

        for step in by_step.values():
            for out in step["outputs"]:
                key = out["uri"].split(f"s3://{minio.bucket}/", 1)[1]
                data = s3.get_object(Bucket=minio.bucket, Key=key)["Body"].read()
                assert "sha256:" + hashlib.sha256(data).hexdigest() == out["digest"]
    finally:
        s3.close()

    create(api, ns, "runs", run_body("second", example["metadata"]["name"]))
    second = wait_done(api, ns, "second", operator)
    assert second["status"]["phase"] == "Succeeded"
    assert all(s["cacheHit"] and s["attempts"] == 0 for s in second["status"]["steps"]), second["status"]["steps"]
    assert jobs_of(api, ns, "second") == []  # a hit never schedules a pod

    create(api, ns, "runs", run_body("third", example["metadata"]["name"], scaling="minmax"))
    third = wait_done(api, ns, "third", operator)
    assert third["status"]["phase"] == "Succeeded"
    hits = {n for n, s in steps(third).items() if s["cacheHit"]}
    assert hits == {"ingest", "validate", "split"}
    assert sorted(j.metadata.labels["conveyor.dev/step"] for j in jobs_of(api, ns, "third")) == [
        "evaluate",
        "preprocess",
        "train",
    ]
    exported = operator.metrics()
    assert f'conveyor_steps_total{{namespace="{ns}",result="succeeded"}} 9.0' in exported
    assert f'conveyor_cache_hits_total{{namespace="{ns}"}} 9.0' in exported
    assert f'conveyor_runs_total{{namespace="{ns}",result="succeeded"}} 3.0' in exported
    assert f'conveyor_step_overhead_seconds_count{{namespace="{ns}"}} 9.0' in exported


def _py_pipeline(name: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Pipeline", "metadata": {"name": name}, "spec": {"steps": steps}}


def _py_step(name: str, code: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "container": {"image": "local", "command": [sys.executable, "-c", code]}, **extra}


def test_operator_killed_mid_run_completes_without_duplicate_steps(
    api: k8s_client.ApiClient, ns: str, operator: Operator
) -> None:
    def slow(name: str) -> str:  # distinct commands: identical steps would share one cache entry
        return f"import time; time.sleep(4); print('{name} done')"

    create(api, ns, "pipelines", _py_pipeline("slow", [
        _py_step("one", slow("one")),
        _py_step("two", slow("two"), dependsOn=["one"]),
        _py_step("three", slow("three"), dependsOn=["two"]),
    ]))
    create(api, ns, "runs", run_body("killed", "slow"))

    def step_running(name: str) -> bool:
        run = get_run(api, ns, "killed")
        return any(s["name"] == name and s["phase"] == "Running" for s in run.get("status", {}).get("steps", []))

    wait_until(lambda: step_running("one"), timeout=60, what="step one to start")
    operator.kill()
    time.sleep(5)  # step one finishes while no operator is watching
    operator.start()
    wait_until(lambda: step_running("two"), timeout=60, what="step two to start")
    operator.kill()
    operator.start()
    run = wait_done(api, ns, "killed", operator)
    assert run["status"]["phase"] == "Succeeded"
    jobs = jobs_of(api, ns, "killed")
    per_step = sorted((j.metadata.labels["conveyor.dev/step"], j.metadata.labels["conveyor.dev/attempt"]) for j in jobs)
    assert per_step == [("one", "1"), ("three", "1"), ("two", "1")]  # each step executed exactly once
    assert all(s["attempts"] == 1 for s in run["status"]["steps"])


def test_failing_step_is_retried_then_fails_the_run(api: k8s_client.ApiClient, ns: str, operator: Operator) -> None:
    create(api, ns, "pipelines", _py_pipeline("bad", [
        _py_step("boom", "import sys; print('about to fail'); sys.exit(7)",
                 retries={"limit": 1, "backoff": {"initialSeconds": 1}}),
        _py_step("after", "print(1)", dependsOn=["boom"]),
    ]))
    create(api, ns, "runs", run_body("bad", "bad"))
    run = wait_done(api, ns, "bad", operator)
    status = run["status"]
    assert status["phase"] == "Failed"
    cond = next(c for c in status["conditions"] if c["type"] == "Succeeded")
    assert cond["status"] == "False" and cond["reason"] == "StepFailed"
    assert "command exited with code 7" in cond["message"]
    assert steps(run)["boom"]["attempts"] == 2 and steps(run)["after"]["phase"] == "Cancelled"
    assert len(jobs_of(api, ns, "bad")) == 2


def test_a_step_past_its_timeout_is_retried_the_same_way_locally_and_on_the_cluster(
    api: k8s_client.ApiClient, ns: str, operator: Operator, tmp_path: Path
) -> None:
    from conveyor.api.pipeline import Pipeline
    from conveyor.local.runner import LocalRunner

    body = _py_pipeline("stuck", [
        _py_step("stuck", "import time; time.sleep(120)", timeoutSeconds=2,
                 retries={"limit": 1, "backoff": {"initialSeconds": 1}}),
        _py_step("after", "print(1)", dependsOn=["stuck"]),
    ])
    local = LocalRunner(Pipeline.model_validate(body).spec, {}, pipeline_name="stuck", state_dir=tmp_path).run()
    create(api, ns, "pipelines", body)
    create(api, ns, "runs", run_body("stuck", "stuck"))
    run = wait_done(api, ns, "stuck", operator, timeout=90)

    cond = next(c for c in run["status"]["conditions"] if c["type"] == "Succeeded")
    on_cluster = (run["status"]["phase"], cond["reason"], cond["message"],
                  {n: (s["phase"], s["attempts"], s.get("message")) for n, s in steps(run).items()})
    locally = (local.phase.value, local.reason, local.message,
               {n: (s.phase.value, s.attempts, s.message) for n, s in local.states.items()})
    timed_out = "step exceeded its timeout of 2s"
    assert locally == on_cluster == (
        "Failed", "StepFailed", f"step 'stuck' failed: {timed_out}",
        {"stuck": ("Failed", 2, timed_out), "after": ("Cancelled", 0, None)},
    )


def test_a_pod_that_cannot_start_fails_its_attempts_at_the_start_deadline(
    api: k8s_client.ApiClient, ns: str, operator: Operator
) -> None:
    # A real refusal: the namespace's ResourceQuota allows no pods, so the Job controller cannot create one.
    core = k8s_client.CoreV1Api(api)
    core.create_namespaced_resource_quota(
        ns, k8s_client.V1ResourceQuota(metadata=k8s_client.V1ObjectMeta(name="no-pods"), spec={"hard": {"pods": "0"}})
    )
    create(api, ns, "pipelines", _py_pipeline("starved", [
        _py_step("never", "print('never')", startTimeoutSeconds=3, retries={"limit": 1, "backoff": {"initialSeconds": 1}}),
        _py_step("after", "print(1)", dependsOn=["never"]),
    ]))
    create(api, ns, "runs", run_body("starved", "starved"))
    run = wait_done(api, ns, "starved", operator, timeout=90)
    status = run["status"]
    assert status["phase"] == "Failed", status
    cond = next(c for c in status["conditions"] if c["type"] == "Succeeded")
    assert cond["reason"] == "StepFailed"
    assert "did not start within 3s" in cond["message"] and "no pod exists" in cond["message"], cond["message"]
    assert steps(run)["never"]["attempts"] == 2 and steps(run)["after"]["phase"] == "Cancelled"
    # Both attempts' Jobs are deleted, so a pod the quota lets through later cannot run the step.
    wait_until(lambda: not [j for j in jobs_of(api, ns, "starved") if not j.metadata.deletion_timestamp],
               timeout=30, what="the starved Jobs deleted")
    assert core.list_namespaced_pod(ns, label_selector="conveyor.dev/run=starved").items == []


def test_invalid_pipeline_only_the_operator_can_see(api: k8s_client.ApiClient, ns: str, operator: Operator) -> None:
    create(api, ns, "pipelines", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "Pipeline", "metadata": {"name": "typo"},
        "spec": {"steps": [{"name": "t", "uses": "trian"}]},
    })
    create(api, ns, "runs", run_body("typo", "typo"))
    run = wait_done(api, ns, "typo", operator, timeout=60)
    cond = next(c for c in run["status"]["conditions"] if c["type"] == "Succeeded")
    assert cond["reason"] == "InvalidSpec" and "spec.steps[0].uses: unknown component 'trian'" in cond["message"]
    # the operator is still healthy: another Run in the same namespace succeeds
    create(api, ns, "pipelines", _py_pipeline("fine", [_py_step("ok", "print('ok')")]))
    create(api, ns, "runs", run_body("fine", "fine"))
    assert wait_done(api, ns, "fine", operator)["status"]["phase"] == "Succeeded"


def test_missing_pipeline_waits_then_runs(api: k8s_client.ApiClient, ns: str, operator: Operator) -> None:
    create(api, ns, "runs", run_body("early", "later"))

    def pending_reason() -> str | None:
        conds = get_run(api, ns, "early").get("status", {}).get("conditions", [])
        return next((c["reason"] for c in conds if c["type"] == "Succeeded"), None)

    assert wait_until(lambda: pending_reason() == "PipelineNotFound", timeout=30, what="PipelineNotFound")
    create(api, ns, "pipelines", _py_pipeline("later", [_py_step("ok", "print('ok')")]))
    assert wait_done(api, ns, "early", operator, timeout=60)["status"]["phase"] == "Succeeded"


def test_cancel_and_delete(api: k8s_client.ApiClient, ns: str, operator: Operator) -> None:
    create(api, ns, "pipelines", _py_pipeline("long", [_py_step("sleep", "import time; time.sleep(300)")]))
    create(api, ns, "runs", run_body("cancelled", "long"))
    wait_until(lambda: len(jobs_of(api, ns, "cancelled")) == 1, timeout=60, what="the Job")
    k8s_client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP, VERSION, ns, "runs", "cancelled", {"spec": {"cancel": True}}
    )
    run = wait_done(api, ns, "cancelled", operator, timeout=60)
    assert run["status"]["phase"] == "Cancelled"
    wait_until(lambda: jobs_of(api, ns, "cancelled") == [], timeout=60, what="the Job to be deleted")

    create(api, ns, "runs", run_body("deleted", "long"))
    wait_until(lambda: len(jobs_of(api, ns, "deleted")) == 1, timeout=60, what="the Job")
    k8s_client.CustomObjectsApi(api).delete_namespaced_custom_object(GROUP, VERSION, ns, "runs", "deleted")
    # owner references: the garbage collector removes the Job, and its pod's process is stopped
    wait_until(lambda: jobs_of(api, ns, "deleted") == [], timeout=90, what="garbage collection of the Job")


def test_fan_out_and_fan_in_on_the_cluster(api: k8s_client.ApiClient, ns: str, operator: Operator) -> None:
    square = _py_step("square", "import sys; open(sys.argv[1], 'w').write(str(int(sys.argv[2]) ** 2))",
                      outputs=[{"name": "value"}], forEach={"parameter": "xs", "maxConcurrency": 3})
    square["container"]["args"] = ["{{ outputs.value }}", "{{ item }}"]
    total = _py_step("total", "import sys, json, os, pathlib; d = pathlib.Path(sys.argv[1]); "
                     "items = json.loads((d / 'items.json').read_text()); "
                     "json.dump({'total': sum(int((d / i['path']).read_text()) for i in items)}, "
                     "open(os.environ['CONVEYOR_METRICS_FILE'], 'w'))",
                     inputs=[{"name": "values", "step": "square", "output": "value"}])
    total["container"]["args"] = ["{{ inputs.values }}"]
    body = _py_pipeline("fan", [square, total])
    body["spec"]["parameters"] = [{"name": "xs", "type": "list", "default": [1, 2, 3, 4, 5]}]
    create(api, ns, "pipelines", body)
    create(api, ns, "runs", run_body("fan", "fan"))
    run = wait_done(api, ns, "fan", operator)
    assert run["status"]["phase"] == "Succeeded", run["status"]
    by_step = steps(run)
    assert by_step["total"]["metrics"] == {"total": 55.0}
    assert by_step["square"]["fanOut"]["total"] == 5 and by_step["square"]["fanOut"]["succeeded"] == 5
    items = sorted(j.metadata.labels.get("conveyor.dev/item") for j in jobs_of(api, ns, "fan") if
                   j.metadata.labels["conveyor.dev/step"] == "square")
    assert items == ["0", "1", "2", "3", "4"]
    assert len(json.dumps(run)) < 20_000  # per-item detail is in the store, not the Run


def test_minio_outage_mid_step_is_retried_to_success(
    api: k8s_client.ApiClient, ns: str, operator: Operator, minio_server: MinioServer
) -> None:
    """Storage goes away while a step runs: its upload fails, it is retried with backoff, the Run succeeds."""
    # Not under /tmp: step pods mount an emptyDir there, and the node agent maps it to a pod directory.
    marker_dir = Path(tempfile.mkdtemp(prefix="conveyor-outage-", dir="/var/tmp"))
    started_file = marker_dir / "started"
    code = (
        f"import sys, time, pathlib; pathlib.Path({str(started_file)!r}).touch(); time.sleep(3); "
        "open(sys.argv[1], 'w').write('payload')"
    )
    step = _py_step("write", code, outputs=[{"name": "out"}], retries={"limit": 4, "backoff": {"initialSeconds": 3}})
    step["container"]["args"] = ["{{ outputs.out }}"]
    create(api, ns, "pipelines", _py_pipeline("outage", [step]))
    create(api, ns, "runs", run_body("outage", "outage"))
    wait_until(started_file.exists, timeout=60, what="the step to start")
    minio_server.outage()
    time.sleep(8)  # the step finishes its work while storage is down, so its upload fails
    minio_server.recover()
    run = wait_done(api, ns, "outage", operator, timeout=180)
    shutil.rmtree(marker_dir)
    assert run["status"]["phase"] == "Succeeded", run["status"]
    write = steps(run)["write"]
    assert write["attempts"] >= 2  # the first attempt could not store its output
    s3 = minio_server.endpoint.client()
    try:
        key = write["outputs"][0]["uri"].split(f"s3://{minio_server.bucket}/", 1)[1]
        assert s3.get_object(Bucket=minio_server.bucket, Key=key)["Body"].read() == b"payload"
    finally:
        s3.close()


def test_approval_pauses_the_run_until_a_person_decides(
    api: k8s_client.ApiClient, ns: str, operator: Operator, control_plane: ControlPlane
) -> None:
    create(api, ns, "pipelines", _py_pipeline("review", [
        _py_step("train", "print('trained')"),
        _py_step("deploy", "print('deployed')", dependsOn=["train"],
                 approval={"required": True, "message": "a data scientist reviews the metrics"}),
    ]))
    for name in ("approved", "rejected"):
        create(api, ns, "runs", run_body(name, "review"))

    def waiting(name: str) -> bool:
        conds = get_run(api, ns, name).get("status", {}).get("conditions", [])
        return any(c["type"] == "Succeeded" and c["reason"] == "WaitingForApproval" for c in conds)

    for name in ("approved", "rejected"):
        wait_until(lambda n=name: waiting(n), timeout=60, what=f"run {name} to wait for approval")  # type: ignore[misc]
    assert jobs_of(api, ns, "approved") and all(
        j.metadata.labels["conveyor.dev/step"] == "train" for j in jobs_of(api, ns, "approved")
    )
    env = {**os.environ, "KUBECONFIG": str(control_plane.kubeconfig)}
    ok = subprocess.run([sys.executable, "-m", "conveyor.cli.main", "approve", "approved", "deploy", "-n", ns,
                         "--by", "ana"], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert ok.returncode == 0, ok.stderr
    no = subprocess.run([sys.executable, "-m", "conveyor.cli.main", "approve", "rejected", "deploy", "-n", ns,
                         "--reject", "--comment", "AUC too low", "--by", "ana"],
                        env=env, capture_output=True, text=True, timeout=60, check=False)
    assert no.returncode == 0, no.stderr
    assert wait_done(api, ns, "approved", operator)["status"]["phase"] == "Succeeded"
    rejected = wait_done(api, ns, "rejected", operator)
    cond = next(c for c in rejected["status"]["conditions"] if c["type"] == "Succeeded")
    assert rejected["status"]["phase"] == "Failed" and "rejected by ana: AUC too low" in cond["message"]
    again = subprocess.run([sys.executable, "-m", "conveyor.cli.main", "approve", "approved", "deploy", "-n", ns],
                           env=env, capture_output=True, text=True, timeout=60, check=False)
    assert again.returncode == 2 and "not waiting for approval" in again.stderr


def test_max_concurrent_runs_queues_runs_of_a_pipeline(api: k8s_client.ApiClient, ns: str, operator: Operator) -> None:
    body = _py_pipeline("one-at-a-time", [_py_step("work", "import time; time.sleep(3)")])
    body["spec"]["maxConcurrentRuns"] = 1
    body["spec"]["steps"][0]["cache"] = {"enabled": False}
    create(api, ns, "pipelines", body)
    create(api, ns, "runs", run_body("first", "one-at-a-time"))
    time.sleep(0.5)
    create(api, ns, "runs", run_body("second", "one-at-a-time"))

    def queued() -> bool:
        conds = get_run(api, ns, "second").get("status", {}).get("conditions", [])
        return any(c["reason"] == "WaitingForConcurrencyLimit" for c in conds)

    wait_until(queued, timeout=60, what="the second run to queue")
    first, second = wait_done(api, ns, "first", operator), wait_done(api, ns, "second", operator)
    assert first["status"]["phase"] == second["status"]["phase"] == "Succeeded"
    assert second["status"]["startedAt"] >= first["status"]["finishedAt"]  # never both at once


def test_a_model_deployment_without_a_blessed_model_says_why(
    api: k8s_client.ApiClient, ns: str, operator: Operator
) -> None:
    """Serving itself is tests/e2e/test_serving.py; here: a source that names no model yet is reported, not ignored."""
    create(api, ns, "modeldeployments", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelDeployment", "metadata": {"name": "md"},
        "spec": {"model": {"pipeline": {"name": "no-such-pipeline"}}},
    })

    def ready_condition() -> dict[str, Any] | None:
        obj: Any = k8s_client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, ns, "modeldeployments", "md")
        return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == "Ready"), None)

    cond = wait_until(ready_condition, timeout=30, what="a Ready condition")
    assert cond["status"] == "False" and cond["reason"] == "ModelUnresolved"  # type: ignore[index]
    assert "no-such-pipeline" in cond["message"] and "does not exist" in cond["message"]  # type: ignore[index]
    apps = k8s_client.AppsV1Api(api)
    assert apps.list_namespaced_deployment(ns).items == []  # nothing is served until there is a model


def test_two_replicas_with_peering_one_active_then_fail_over(
    api: k8s_client.ApiClient, ns: str, operator: Operator, control_plane: ControlPlane, minio: S3Endpoint
) -> None:
    """HA: two replicas peer through kopf; only the higher priority one acts, the other takes over when it dies,
    and no step is executed twice."""
    operator.stop()  # the standalone operator of the other tests would not take part in peering
    peers = {"CONVEYOR_PEERING": "conveyor-ha-test", "CONVEYOR_PEERING_LIFETIME_SECONDS": "6"}
    active = Operator(control_plane, minio, control_plane.log_dir, name="replica-a", args=(),
                      extra_env={**peers, "CONVEYOR_PEERING_PRIORITY": "100"})
    standby = Operator(control_plane, minio, control_plane.log_dir, name="replica-b", args=(),
                       extra_env={**peers, "CONVEYOR_PEERING_PRIORITY": "50"})
    try:
        active.start()
        time.sleep(2)
        standby.start()
        time.sleep(3)  # both have announced themselves in the peering object

        def slow(name: str) -> str:
            return f"import time; time.sleep(3); print('{name}')"

        create(api, ns, "pipelines", _py_pipeline("ha", [
            _py_step("one", slow("one")),
            _py_step("two", slow("two"), dependsOn=["one"]),
            _py_step("three", slow("three"), dependsOn=["two"]),
        ]))
        create(api, ns, "runs", run_body("ha", "ha"))

        def step_running(name: str) -> bool:
            run = get_run(api, ns, "ha")
            return any(s["name"] == name and s["phase"] == "Running" for s in run.get("status", {}).get("steps", []))

        wait_until(lambda: step_running("one"), timeout=60, what="step one to start")
        assert "created Job" not in standby.log()  # the standby did nothing while the active one lived
        active.kill()
        run = wait_done(api, ns, "ha", standby, timeout=120)
        assert run["status"]["phase"] == "Succeeded", run["status"]
        assert "Resuming operations" in standby.log() and "created Job" in standby.log()  # it took over
        per_step = sorted(j.metadata.labels["conveyor.dev/step"] for j in jobs_of(api, ns, "ha"))
        assert per_step == ["one", "three", "two"]  # each step executed exactly once
    finally:
        active.stop()
        standby.stop()
        operator.start()
