"""Reproduction and the artifact lifecycle on the real control plane and MinIO, through the `conveyor` CLI and
the operator's collector function.

The example runs twice with different parameters; `rerun` creates a Run from the recorded spec with the cache
disabled and reproduces the model digest; a ModelDeployment serves the first run's model; after the first run
and its rerun are deleted and a tiny grace period passes, their unshared artifacts are gone while the shared
and the served ones stay, and the operator's cache recomputes instead of handing out a deleted artifact.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import test_operator
import yaml
from botocore.exceptions import ClientError
from kubernetes import client as k8s_client
from test_operator import EXAMPLE, Operator, create, get_run, run_body, wait_done

from conveyor.controller.artifact_gc import collect
from conveyor.kube.cluster import Cluster
from conveyor.storage.s3 import S3Store
from testenv.controlplane import ControlPlane
from testenv.minio import S3Endpoint
from testenv.processes import wait_until

pytestmark = pytest.mark.e2e

ns = test_operator.ns

# A seed no other test uses, and a key prefix of their own, so these runs' artifacts and cache entries are theirs
# alone (the bucket is shared by the session, and this module garbage-collects what it finds).
SEED = 20261122
PREFIX = "lifecycle"


@pytest.fixture(scope="module")
def operator(
    control_plane: ControlPlane, minio: S3Endpoint, node_agent: Any, install_crds: list[str]
) -> Iterator[Operator]:
    op = Operator(
        control_plane, minio, control_plane.log_dir, name="lifecycle-operator",
        extra_env={"CONVEYOR_S3_PREFIX": PREFIX},
    ).start()  # fmt: skip
    yield op
    op.stop()


def cli(
    control_plane: ControlPlane, minio: S3Endpoint, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "KUBECONFIG": str(control_plane.kubeconfig),
        "AWS_ACCESS_KEY_ID": minio.access_key,
        "AWS_SECRET_ACCESS_KEY": minio.secret_key,
        "AWS_DEFAULT_REGION": minio.region,
        "CONVEYOR_S3_PREFIX": PREFIX,
    }
    return subprocess.run(
        [sys.executable, "-m", "conveyor.cli.main", *args, "--s3-endpoint", minio.endpoint, "--bucket", minio.bucket],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        cwd=cwd,
    )


def outputs(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{s['name']}.{o['name']}": o for s in run["status"]["steps"] for o in s["outputs"]}


def steps(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in run["status"]["steps"]}


def stored(minio: S3Endpoint, uri: str) -> bool:
    s3 = minio.client()
    try:
        s3.head_object(Bucket=minio.bucket, Key=uri.split(f"s3://{minio.bucket}/", 1)[1])
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    finally:
        s3.close()
    return True


def test_rerun_reproduces_then_gc_keeps_only_what_is_used(
    api: k8s_client.ApiClient,
    ns: str,
    operator: Operator,
    minio: S3Endpoint,
    control_plane: ControlPlane,
    tmp_path: Path,
) -> None:
    pipeline = yaml.safe_load(EXAMPLE.read_text())["metadata"]["name"]
    control_plane.kubectl("apply", "-n", ns, "-f", str(EXAMPLE))
    create(api, ns, "runs", run_body("lc-a", pipeline, seed=SEED))
    create(api, ns, "runs", run_body("lc-b", pipeline, seed=SEED, n_estimators=50))
    a, b = wait_done(api, ns, "lc-a", operator), wait_done(api, ns, "lc-b", operator)
    assert a["status"]["phase"] == b["status"]["phase"] == "Succeeded", (a["status"], b["status"])
    wait_until(lambda: get_run(api, ns, "lc-a")["status"].get("recordUri"), timeout=60, what="lc-a's record")
    old, kept = outputs(a), outputs(b)
    model = old["train.model"]

    # compare: parameters and metrics differ
    compare = cli(control_plane, minio, "compare", "lc-a", "lc-b", "-n", ns)
    assert compare.returncode == 0, compare.stderr
    rows = {ln.split("│")[3].strip(): ln for ln in compare.stdout.splitlines() if ln.count("│") >= 5}
    assert "≠" in rows["n_estimators"] and "≠" in rows["train.model"] and "≠" not in rows["seed"]

    # rerun: a new Run from the recorded spec and parameters, cache disabled, the same model digest
    rerun = cli(control_plane, minio, "rerun", "lc-a", "--name", "lc-a-again", "-n", ns)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:] + operator.log()[-3000:]
    again = get_run(api, ns, "lc-a-again")
    assert again["metadata"]["labels"]["conveyor.dev/rerun-of"] == "lc-a"
    assert again["spec"]["parameters"] == a["status"]["parameters"]
    assert all(not s["cacheHit"] and s["attempts"] == 1 for s in again["status"]["steps"]), again["status"]["steps"]
    assert {k: o["digest"] for k, o in outputs(again).items()} == {k: o["digest"] for k, o in old.items()}
    (model_row,) = [ln for ln in rerun.stdout.splitlines() if ln.split()[:2] == ["train", "model"]]
    assert model_row.split()[2:] == [model["digest"], model["digest"], "="]

    # the first run's model is served; lineage of the deployment names the dataset, parameters and run
    create(
        api,
        ns,
        "modeldeployments",
        {
            "apiVersion": "conveyor.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "lc-md"},
            "spec": {"model": {"uri": model["uri"], "digest": model["digest"]}},
        },
    )
    lineage = cli(control_plane, minio, "lineage", "md/lc-md", "-n", ns, "--graph", "lineage.svg", cwd=tmp_path)
    assert lineage.returncode == 0, lineage.stderr
    assert f"model {model['digest']} was made by run lc-a, step output train.model" in lineage.stdout
    assert f"dataset ← ingest.dataset  {old['ingest.dataset']['digest']}" in lineage.stdout
    assert f"seed={SEED}" in lineage.stdout and "n_estimators=200" in lineage.stdout
    svg = ET.parse(tmp_path / "lineage.svg").getroot()
    assert any(g.get("data-id") == "out:train.model" for g in svg.iter("{http://www.w3.org/2000/svg}g"))
    report = cli(control_plane, minio, "report", "lc-b", "-n", ns, "-o", "lc-b.html", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "lc-b.html").read_text()
    assert page.count('class="bar"') == 6 and 'src="data:image/png;base64,' in page and "Bad input" not in page

    # the first run and its rerun go; after the grace period, only what nobody uses is deleted
    for run in ("lc-a", "lc-a-again"):
        assert cli(control_plane, minio, "delete", run, "-n", ns).returncode == 0
    wait_until(
        lambda: not {"lc-a", "lc-a-again"} & {r["metadata"]["name"] for r in Cluster(api).list_custom("runs", ns)},
        timeout=60,
        what="the runs to be deleted",
    )
    shared = {k for k in old if old[k]["digest"] == kept[k]["digest"]}
    unshared = {k for k in old if old[k]["digest"] not in {o["digest"] for o in kept.values()}} - {"train.model"}
    assert {"ingest.dataset", "split.train", "preprocess.transformer"} <= shared
    assert {"evaluate.metrics", "evaluate.plots"} <= unshared

    dry = cli(control_plane, minio, "gc", "--dry-run", "--grace", "1s", "-n", ns)
    assert dry.returncode == 0, dry.stderr
    would = {ln.split()[2].rstrip(":") for ln in dry.stdout.splitlines() if ln.startswith("would mark")}
    assert {old[k]["digest"] for k in unshared} <= would and model["digest"] not in would
    assert all(stored(minio, old[k]["uri"]) for k in unshared)

    marked = cli(control_plane, minio, "gc", "--grace", "1s", "-n", ns)  # marks them
    assert marked.returncode == 0 and all(old[k]["digest"] in marked.stdout for k in unshared), marked.stdout
    assert all(stored(minio, old[k]["uri"]) for k in unshared)
    time.sleep(1.5)
    # the pass the operator runs on its timer
    s3 = minio.client()
    try:
        result = collect(
            Cluster(api),
            S3Store(minio.bucket, PREFIX, client=s3),
            SimpleNamespace(artifact_gc_grace_seconds=1.0, namespaces=[]),
            datetime.now(UTC),
        )
    finally:
        s3.close()
    assert {old[k]["digest"] for k in unshared} <= result.deleted
    assert not any(stored(minio, old[k]["uri"]) for k in unshared)
    assert stored(minio, model["uri"]) and "deployment" in " ".join(result.plan.kept[model["digest"]])
    assert all(stored(minio, old[k]["uri"]) for k in shared)
    assert all(stored(minio, o["uri"]) for o in kept.values())
    s3 = minio.client()
    try:
        marks = json.loads(s3.get_object(Bucket=minio.bucket, Key=f"{PREFIX}/docs/gc/marks.json")["Body"].read())[
            "marks"
        ]
    finally:
        s3.close()
    assert not {old[k]["digest"] for k in unshared} & set(marks)

    # the cache never hands out a deleted artifact: evaluate runs again, train (its model served) is a hit
    create(api, ns, "runs", run_body("lc-c", pipeline, seed=SEED))
    c = wait_done(api, ns, "lc-c", operator)
    assert c["status"]["phase"] == "Succeeded", c["status"]
    assert steps(c)["train"]["cacheHit"] and not steps(c)["evaluate"]["cacheHit"]
    assert outputs(c)["evaluate.metrics"]["digest"] == old["evaluate.metrics"]["digest"]
    assert stored(minio, old["evaluate.metrics"]["uri"])

    # an artifact lost behind Conveyor's back: lineage names it and what depends on it; the cache recomputes it
    transformer = kept["preprocess.transformer"]
    s3 = minio.client()
    try:
        s3.delete_object(Bucket=minio.bucket, Key=transformer["uri"].split(f"s3://{minio.bucket}/", 1)[1])
    finally:
        s3.close()
    bad = cli(control_plane, minio, "lineage", "lc-b", "-n", ns)
    assert bad.returncode == 1
    assert (
        f"bad input: preprocess.transformer {transformer['digest']} is missing; depends on it: train, evaluate"
    ) in bad.stdout
    create(api, ns, "runs", run_body("lc-d", pipeline, seed=SEED, n_estimators=50))
    d = wait_done(api, ns, "lc-d", operator)
    assert d["status"]["phase"] == "Succeeded", d["status"]
    assert not steps(d)["preprocess"]["cacheHit"] and steps(d)["split"]["cacheHit"]
    assert outputs(d)["preprocess.transformer"]["digest"] == transformer["digest"] and stored(minio, transformer["uri"])
