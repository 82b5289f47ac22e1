"""Security on the real control plane: step pods admitted at the "restricted" PodSecurity level, no credential
in anything the operator writes, and a tampered artifact refused inside a Run.

The credential canary is the MinIO secret key itself: testenv generates a fresh random token per session,
the operator holds it in its environment and every step pod receives it from the namespace's Secret, so
it is a recognisable string that must never show up in a Run's status, an Event, a Job or Pod object, the
operator's log, the node agent's logs (its own and every step container's), or any object in the store.
(A separate MinIO user would prove nothing more: the secret a leak would expose is this one.)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s_client

from conveyor.storage.digest import hex_of
from conveyor.storage.store import blob_key
from e2e import test_operator
from e2e.test_operator import GROUP, VERSION, Operator, create, get_run, jobs_of, steps, wait_done
from testenv.controlplane import ControlPlane
from testenv.minio import S3Endpoint
from testenv.processes import wait_until

pytestmark = pytest.mark.e2e

# The operator process and the namespace with the artifact Secret, as tests/e2e/test_operator.py sets them up.
operator = test_operator.operator
ns = test_operator.ns


def _py(name: str, code: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "container": {"image": "local", "command": [sys.executable, "-c", code]}, **extra}


def _inline_run(name: str, steps_: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Run",
        "metadata": {"name": name},
        "spec": {"pipelineSpec": {"steps": steps_, **spec}},
    }


def _failed_creates(api: k8s_client.ApiClient, namespace: str) -> list[str]:
    events = k8s_client.CoreV1Api(api).list_namespaced_event(namespace).items
    return [
        f"{e.involved_object.kind}/{e.involved_object.name}: {e.message}" for e in events if e.reason == "FailedCreate"
    ]


def test_every_step_pod_is_admitted_at_the_restricted_level(
    api: k8s_client.ApiClient, ns: str, operator: Operator
) -> None:
    core = k8s_client.CoreV1Api(api)
    core.patch_namespace(
        ns,
        {
            "metadata": {
                "labels": {
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                }
            }
        },
    )
    # Admission really is on: a pod without the restricted settings is refused in this namespace.
    bare = {
        "metadata": {"name": "bare"},
        "spec": {"containers": [{"name": "c", "image": "local", "command": ["true"]}]},
    }
    with pytest.raises(k8s_client.ApiException) as refused:
        core.create_namespaced_pod(ns, bare)
    assert refused.value.status == 403 and "violates PodSecurity" in str(refused.value.body)

    create(api, ns, "runs", _inline_run("container", [_py("hello", "print('hello from a restricted pod')")]))
    # The breast-cancer example's first two steps: built-in components, an artifact passed between pods.
    example = [
        # no cache: earlier tests in the session ran the same steps, and a hit would create no pod to admit
        {"name": "ingest", "uses": "ingest", "with": {"source": "sklearn://breast_cancer"}, "cache": {"enabled": False}},
        {
            "name": "validate",
            "uses": "validate",
            "with": {"label": "target"},
            "inputs": [{"name": "dataset", "step": "ingest", "output": "dataset"}],
            "cache": {"enabled": False},
        },
    ]
    create(api, ns, "runs", _inline_run("example", example))
    for name in ("container", "example"):
        run = wait_done(api, ns, name, operator, timeout=240)
        assert run["status"]["phase"] == "Succeeded", (name, run["status"], _failed_creates(api, ns))
        jobs = jobs_of(api, ns, name)
        assert sorted(j.metadata.labels["conveyor.dev/step"] for j in jobs) == sorted(steps(run))
        # each Job's pod was created, admitted and ran (the Job controller's count can lag the Run)
        wait_until(
            lambda n=name: all(j.status.succeeded == 1 for j in jobs_of(api, ns, n)),
            timeout=60,
            what=f"the Jobs of {name} to count their pod as succeeded",
        )
    assert _failed_creates(api, ns) == []


def _store_texts(minio: S3Endpoint) -> dict[str, str]:
    """Every object in the bucket (records, results, logs under runs/, cache entries, blobs), as text."""
    client = minio.client()
    texts: dict[str, str] = {}
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=minio.bucket):
            for obj in page.get("Contents", []):
                if obj["Size"] <= 16 * 1024 * 1024:
                    body = client.get_object(Bucket=minio.bucket, Key=obj["Key"])["Body"].read()
                    texts[obj["Key"]] = body.decode(errors="replace")
    finally:
        client.close()
    return texts


def test_no_credential_leaks_into_status_events_logs_or_the_store(
    api: k8s_client.ApiClient, ns: str, operator: Operator, minio: S3Endpoint, control_plane: ControlPlane
) -> None:
    canary = minio.secret_key
    assert len(canary) >= 16
    write = _py("write", "import sys; open(sys.argv[1], 'w').write('data')", outputs=[{"name": "out"}])
    write["container"]["args"] = ["{{ outputs.out }}"]
    read = _py(
        "read",
        "import sys; print(open(sys.argv[1]).read())",
        inputs=[{"name": "data", "step": "write", "output": "out"}],
    )
    read["container"]["args"] = ["{{ inputs.data }}"]
    boom = _py(
        "boom",
        "raise RuntimeError('a step that fails, with a traceback in its log')",
        retries={"limit": 1, "backoff": {"initialSeconds": 1}},
    )
    missing = _py("missing", "print('never')", inputs=[{"name": "x", "uri": "file:///var/empty/no-such-file"}])
    ingest = {"name": "ingest", "uses": "ingest", "with": {"source": "sklearn://iris"}}
    create(api, ns, "runs", _inline_run("canary", [write, read, boom, missing, ingest], failFast=False))
    run = wait_done(api, ns, "canary", operator, timeout=240)
    by_step = steps(run)
    assert run["status"]["phase"] == "Failed"
    assert {n: s["phase"] for n, s in by_step.items()} == {
        "write": "Succeeded",
        "read": "Succeeded",
        "boom": "Failed",
        "missing": "Failed",
        "ingest": "Succeeded",
    }
    wait_done(api, ns, "canary", operator)  # the record is written once the Run is final
    core, batch = k8s_client.CoreV1Api(api), k8s_client.BatchV1Api(api)
    serialize = api.sanitize_for_serialization
    scanned: dict[str, str] = {
        "run status": json.dumps(get_run(api, ns, "canary")),
        "events": json.dumps(serialize(core.list_namespaced_event(ns))),
        "jobs": json.dumps(serialize(batch.list_namespaced_job(ns))),
        "pods": json.dumps(serialize(core.list_namespaced_pod(ns))),
        "operator log": operator.log(),
    }
    logs = [control_plane.log_dir / "node-agent.log", *sorted((control_plane.work_dir / "node-agent").rglob("*.log"))]
    for path in logs:
        scanned[f"log {path.name} ({path.parent.name})"] = Path(path).read_text(errors="replace")
    store = _store_texts(minio)
    scanned.update({f"store {k}": v for k, v in store.items()})
    run_docs = [k for k in store if f"/runs/{run['metadata']['uid']}/" in f"/{k}" or "runs/" in k]
    assert run_docs, "the store holds no run documents to scan"
    assert any("Traceback" in v or "RuntimeError" in v for k, v in store.items() if "runs/" in k), "no step log stored"
    leaks = [where for where, text in scanned.items() if canary in text]
    print(
        f"canary scan: {len(scanned)} sources, {len(store)} store objects, {len(logs)} log files, "
        f"{sum(len(t) for t in scanned.values())} characters"
    )
    assert leaks == [], f"the secret key appears in: {leaks}"


def test_a_tampered_artifact_fails_the_step_that_reads_it(
    api: k8s_client.ApiClient, ns: str, operator: Operator, minio: S3Endpoint
) -> None:
    """Run 1 stores a model; someone overwrites its blob in MinIO; in Run 2 the cache refuses the entry and the
    next step's runtime refuses the content with a message naming the digest."""
    make = _py(
        "make",
        "import sys; open(sys.argv[1], 'w').write('model bytes, evaluated ' + 'x' * 64)",
        outputs=[{"name": "model"}],
    )
    make["container"]["args"] = ["{{ outputs.model }}"]

    def reader(code: str) -> dict[str, Any]:
        step = _py("serve", code, inputs=[{"name": "model", "step": "make", "output": "model"}])
        step["container"]["args"] = ["{{ inputs.model }}"]
        return step

    create(api, ns, "runs", _inline_run("trusted", [make, reader("import sys; print(len(open(sys.argv[1]).read()))")]))
    first = wait_done(api, ns, "trusted", operator)
    assert first["status"]["phase"] == "Succeeded", first["status"]
    (model,) = steps(first)["make"]["outputs"]
    client = minio.client()
    try:
        key = model["uri"].split(f"s3://{minio.bucket}/", 1)[1]
        assert key.endswith(blob_key(hex_of(model["digest"])))
        client.put_object(Bucket=minio.bucket, Key=key, Body=b"a model someone swapped in")
    finally:
        client.close()
    create(api, ns, "runs", _inline_run("tampered", [make, reader("import sys; print('loaded', sys.argv[1])")]))
    second = wait_done(api, ns, "tampered", operator)
    by_step = steps(second)
    # The cache re-hashes an artifact before its first reuse in a process, so it refuses the tampered one and
    # the step runs again; the store keeps the bytes it already has under that digest (a put of identical
    # content is a no-op), so the reader still meets the tampered blob and refuses it by digest.
    assert by_step["make"]["cacheHit"] is False
    assert second["status"]["phase"] == "Failed" and by_step["serve"]["phase"] == "Failed"
    message = by_step["serve"]["message"]
    assert f"artifact {model['digest']} is corrupt in the store: its content hashes to sha256:" in message, message
