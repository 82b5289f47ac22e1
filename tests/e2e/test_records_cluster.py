"""Run records and archived logs on the real control plane: the record is in MinIO, status.recordUri points at it,
and a step's log is still readable with `conveyor logs` after the Run's pods are gone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import test_operator
from kubernetes import client as k8s_client
from test_operator import Operator, create, get_run, run_body, wait_done

from testenv.controlplane import ControlPlane
from testenv.minio import MinioServer, S3Endpoint
from testenv.processes import wait_until

pytestmark = pytest.mark.e2e

# The operator process and the namespace with the artifact Secret, as test_operator.py sets them up.
operator = test_operator.operator
ns = test_operator.ns


def cli(control_plane: ControlPlane, minio: S3Endpoint, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "KUBECONFIG": str(control_plane.kubeconfig),
        "AWS_ACCESS_KEY_ID": minio.access_key,
        "AWS_SECRET_ACCESS_KEY": minio.secret_key,
        "AWS_DEFAULT_REGION": minio.region,
    }
    return subprocess.run(
        [sys.executable, "-m", "conveyor.cli.main", *args, "--s3-endpoint", minio.endpoint, "--bucket", minio.bucket],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def py_step(name: str, code: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "container": {"image": "local", "command": [sys.executable, "-c", code]}, **extra}


def pipeline() -> dict[str, Any]:
    make = py_step(
        "make",
        "import sys; print('making', sys.argv[2], 'rows'); open(sys.argv[1], 'w').write('x' * int(sys.argv[2]))",
        outputs=[{"name": "data"}],
    )
    make["container"]["args"] = ["{{ outputs.data }}", "{{ params.rows }}"]
    measure = py_step(
        "measure",
        "import sys, json, os; n = len(open(sys.argv[1]).read()); print('measured', n, 'bytes'); "
        "json.dump({'bytes': n}, open(os.environ['CONVEYOR_METRICS_FILE'], 'w'))",
        inputs=[{"name": "data", "step": "make", "output": "data"}],
    )
    measure["container"]["args"] = ["{{ inputs.data }}"]
    return {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": "recorded"},
        "spec": {"parameters": [{"name": "rows", "type": "integer", "default": 3}], "steps": [make, measure]},
    }


def pods_of(api: k8s_client.ApiClient, ns: str, run: str) -> list[Any]:
    return list(k8s_client.CoreV1Api(api).list_namespaced_pod(ns, label_selector=f"conveyor.dev/run={run}").items)


def test_record_in_the_store_and_logs_after_the_pods_are_gone(
    api: k8s_client.ApiClient, ns: str, operator: Operator, minio: S3Endpoint, control_plane: ControlPlane
) -> None:
    create(api, ns, "pipelines", pipeline())
    create(api, ns, "runs", run_body("rec-a", "recorded"))
    create(api, ns, "runs", run_body("rec-b", "recorded", rows=7))
    runs = {name: wait_done(api, ns, name, operator) for name in ("rec-a", "rec-b")}
    for run in runs.values():
        assert run["status"]["phase"] == "Succeeded", run["status"]

    # the record is in MinIO, where status.recordUri says, and tells the whole story
    first = runs["rec-a"]
    uid = first["metadata"]["uid"]
    uri = first["status"]["recordUri"]
    assert uri == f"s3://{minio.bucket}/docs/runs/{uid}/record.json"
    s3 = minio.client()
    try:
        record = json.loads(s3.get_object(Bucket=minio.bucket, Key=uri.split("/", 3)[3])["Body"].read())
    finally:
        s3.close()
    assert record["kind"] == "RunRecord" and record["name"] == "rec-a" and record["namespace"] == ns
    assert record["pipeline"] == "recorded" and record["parameters"] == {"rows": 3}
    assert record["pipelineSpecDigest"].startswith("sha256:") and record["codeVersion"]
    steps = {s["name"]: s for s in record["steps"]}
    made = steps["make"]["outputs"][0]["digest"]
    assert steps["measure"]["inputs"] == [{"name": "data", "step": "make", "output": "data", "digest": made}]
    assert steps["measure"]["metrics"] == {"bytes": 3.0} and steps["make"]["parameters"] == {"rows": 3}
    assert steps["make"]["logs"] == [f"runs/{uid}/logs/make-1.log"]
    assert "secret" not in json.dumps(record).lower() and minio.secret_key not in json.dumps(record)

    # the pods go away; their logs stay readable
    control_plane.kubectl("delete", "pods", "-n", ns, "-l", "conveyor.dev/run=rec-a", "--wait=true", timeout=120)
    wait_until(lambda: pods_of(api, ns, "rec-a") == [], timeout=60, what="the pods to be deleted")
    logs = cli(control_plane, minio, "logs", "rec-a", "make", "-n", ns)
    assert logs.returncode == 0, logs.stderr
    assert "making 3 rows" in logs.stdout and "step make succeeded" in logs.stdout
    every = cli(control_plane, minio, "logs", "rec-a", "-n", ns)
    assert "==> make (attempt 1) <==" in every.stdout and "measured 3 bytes" in every.stdout

    # the other commands read the same record
    got = cli(control_plane, minio, "get", "runs", "-n", ns)
    assert got.returncode == 0, got.stderr
    table = {ln.split()[0]: ln.split() for ln in got.stdout.splitlines()}
    assert table["NAME"] == ["NAME", "PIPELINE", "PHASE", "STEPS", "AGE"]
    assert table["rec-a"][1:4] == ["recorded", "Succeeded", "2/2"]
    lineage = cli(control_plane, minio, "lineage", "rec-a", "-n", ns)
    assert lineage.returncode == 0, lineage.stderr
    assert f"data ← make.data  {made}" in lineage.stdout and "rows=3" in lineage.stdout
    compare = cli(control_plane, minio, "compare", "rec-a", "rec-b", "-n", ns)
    assert compare.returncode == 0, compare.stderr
    rows = {ln.split("│")[3].strip(): ln for ln in compare.stdout.splitlines() if ln.count("│") >= 5}
    assert "≠" in rows["rows"] and "≠" in rows["measure.bytes"] and "7" in rows["measure.bytes"]
    missing = cli(control_plane, minio, "lineage", "nope", "-n", ns)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_record_written_once_the_store_is_back(
    api: k8s_client.ApiClient, ns: str, operator: Operator, minio_server: MinioServer
) -> None:
    """The store is down when a Run finishes: its final status is kept without recordUri, and the record is
    stored (and recordUri set) on a later pass once the store is back."""
    # Not under /tmp: step pods mount an emptyDir there, and the node agent maps it to a pod directory.
    marker_dir = Path(tempfile.mkdtemp(prefix="conveyor-record-", dir="/var/tmp"))
    started = marker_dir / "started"
    step = py_step("wait", f"import time, pathlib; pathlib.Path({str(started)!r}).touch(); time.sleep(4)")
    step["cache"] = {"enabled": False}  # a cache entry would need the store before the Run could finish
    create(
        api,
        ns,
        "pipelines",
        {
            "apiVersion": "conveyor.dev/v1alpha1",
            "kind": "Pipeline",
            "metadata": {"name": "late-record"},
            "spec": {"steps": [step]},
        },
    )
    create(api, ns, "runs", run_body("late", "late-record"))
    wait_until(started.exists, timeout=60, what="the step to start")
    minio_server.outage()
    try:
        run = wait_done(api, ns, "late", operator, timeout=180)
        assert run["status"]["phase"] == "Succeeded", run["status"]
        assert "recordUri" not in run["status"]
        assert "could not store the record of run" in operator.log()
    finally:
        minio_server.recover()
        shutil.rmtree(marker_dir)

    def record_uri() -> str | None:
        return get_run(api, ns, "late")["status"].get("recordUri")  # type: ignore[no-any-return]

    uri = wait_until(record_uri, timeout=90, what="the record to be stored after the outage")
    assert uri == f"s3://{minio_server.bucket}/docs/runs/{run['metadata']['uid']}/record.json"
    s3 = minio_server.endpoint.client()
    try:
        record = json.loads(s3.get_object(Bucket=minio_server.bucket, Key=str(uri).split("/", 3)[3])["Body"].read())
    finally:
        s3.close()
    assert record["phase"] == "Succeeded" and record["finishedAt"] is not None
    assert record["steps"][0]["attempts"] == 1
