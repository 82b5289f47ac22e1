"""Pipeline triggers on the real control plane: new objects under an S3 prefix in MinIO start Runs."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s_client
from test_operator import GROUP, VERSION, Operator, create, ns, wait_done

from testenv.controlplane import ControlPlane
from testenv.minio import S3Endpoint
from testenv.nodeagent import NodeAgentProcess
from testenv.processes import wait_until

pytestmark = pytest.mark.e2e
__all__ = ["ns"]


@pytest.fixture(scope="module")
def trigger_operator(
    control_plane: ControlPlane, minio: S3Endpoint, node_agent: NodeAgentProcess, install_crds: list[str]
) -> Iterator[Operator]:
    op = Operator(control_plane, minio, control_plane.log_dir, name="trigger-operator").start()
    yield op
    op.stop()


def triggered_runs(api: k8s_client.ApiClient, namespace: str) -> list[dict[str, Any]]:
    obj: Any = k8s_client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, "runs", label_selector="conveyor.dev/trigger=S3"
    )
    return sorted(obj["items"], key=lambda r: r["metadata"]["creationTimestamp"])


def pipeline_status(api: k8s_client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    obj: Any = k8s_client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, "pipelines", name
    )
    return dict(obj.get("status") or {})


def test_new_objects_under_a_prefix_start_one_run_each_time(
    api: k8s_client.ApiClient, ns: str, trigger_operator: Operator, minio: S3Endpoint
) -> None:
    prefix = f"incoming-{uuid.uuid4().hex[:8]}/"
    s3 = minio.client()
    s3.put_object(Bucket=minio.bucket, Key=prefix + "already-there.csv", Body=b"x\n1\n")
    create(
        api,
        ns,
        "pipelines",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Pipeline",
            "metadata": {"name": "on-new-data"},
            "spec": {
                "parameters": [{"name": "source", "type": "string", "default": "none"}],
                "steps": [
                    {
                        "name": "announce",
                        "container": {
                            "image": "local",
                            "command": [
                                sys.executable,
                                "-c",
                                "import sys; print('new data', sys.argv[1])",
                                "{{ params.source }}",
                            ],
                        },
                    }
                ],
                "triggers": [
                    {
                        "s3": {"uri": f"s3://{minio.bucket}/{prefix}", "pollSeconds": 10},
                        "parameters": {"source": prefix},
                    }
                ],
            },
        },
    )
    # The first look records what is there, without a Run for it.
    wait_until(
        lambda: (pipeline_status(api, ns, "on-new-data").get("triggers") or [{}])[0].get("watermark"),
        timeout=60,
        what="the trigger's first look",
    )
    time.sleep(3)
    assert triggered_runs(api, ns) == []

    s3.put_object(Bucket=minio.bucket, Key=prefix + "batch-1.csv", Body=b"x\n2\n")
    s3.put_object(Bucket=minio.bucket, Key=prefix + "batch-2.csv", Body=b"x\n3\n")
    runs = wait_until(lambda: triggered_runs(api, ns), timeout=60, what="a Run started by new data")
    assert len(runs) == 1, [r["metadata"]["name"] for r in runs]
    first = runs[0]
    assert first["spec"]["parameters"] == {"source": prefix}
    assert first["metadata"]["ownerReferences"][0]["name"] == "on-new-data"
    done = wait_done(api, ns, first["metadata"]["name"], trigger_operator)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    status = pipeline_status(api, ns, "on-new-data")["triggers"][0]
    assert status["lastRun"] == first["metadata"]["name"]

    # Nothing new: no second Run over the next poll.
    time.sleep(14)
    assert len(triggered_runs(api, ns)) == 1

    s3.put_object(Bucket=minio.bucket, Key=prefix + "batch-3.csv", Body=b"x\n4\n")
    wait_until(lambda: len(triggered_runs(api, ns)) == 2, timeout=60, what="a second Run for the third batch")
    s3.close()
    events = k8s_client.CoreV1Api(api).list_namespaced_event(ns, field_selector="involvedObject.name=on-new-data")
    messages = [e.message for e in events.items if e.reason == "TriggeredRun"]
    assert any("2 new object(s)" in m and "batch-1.csv" in m for m in messages), messages
