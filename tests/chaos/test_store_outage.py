"""The artifact store down when a Run arrives: the Run says why it waits and starts as soon as the store is back.

Regression test for a defect the chaos test found: a reconcile pass that met an unreachable store raised to
kopf, which dropped the event and put the Run's resync timer into its one-minute error backoff, so Runs sat
idle (with no word in their status) for up to a minute after the store had come back.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s_client

from e2e.test_operator import Operator, _py_pipeline, _py_step, create, get_run, run_body
from testenv.controlplane import ControlPlane
from testenv.minio import MinioServer, S3Endpoint
from testenv.nodeagent import NodeAgentProcess
from testenv.processes import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]


@pytest.fixture
def outage_operator(
    control_plane: ControlPlane, minio: S3Endpoint, node_agent: NodeAgentProcess, install_crds: list[str]
) -> Iterator[Operator]:
    op = Operator(
        control_plane, minio, control_plane.log_dir, name="outage-operator", extra_env={"CONVEYOR_S3_PREFIX": "chaos"}
    ).start()
    yield op
    op.stop()


def _succeeded_condition(run: dict[str, Any]) -> dict[str, Any]:
    return next((c for c in run.get("status", {}).get("conditions", []) if c["type"] == "Succeeded"), {})


def test_run_waits_for_the_store_visibly_and_resumes_at_once(
    api: k8s_client.ApiClient, namespace: str, outage_operator: Operator, minio_server: MinioServer
) -> None:
    ns = namespace
    k8s_client.CoreV1Api(api).create_namespaced_secret(
        ns,
        k8s_client.V1Secret(
            metadata=k8s_client.V1ObjectMeta(name="conveyor-artifacts"),
            string_data={"accessKey": minio_server.access_key, "secretKey": minio_server.secret_key},
        ),
    )
    create(api, ns, "pipelines", _py_pipeline("after-outage", [_py_step("hello", "print('hello')")]))
    minio_server.outage()
    try:
        create(api, ns, "runs", run_body("waits", "after-outage"))
        cond = wait_until(
            lambda: (
                _succeeded_condition(get_run(api, ns, "waits")).get("reason") == "StoreUnavailable"
                and _succeeded_condition(get_run(api, ns, "waits"))
            ),
            timeout=60,
            what="the Run to say it waits for the artifact store",
        )
        assert "unreachable" in cond["message"], cond  # type: ignore[index]
        assert get_run(api, ns, "waits")["status"].get("phase", "Pending") == "Pending"
        time.sleep(5)  # several passes meet the outage (each once fed kopf's error backoff)
    finally:
        minio_server.recover()
    back = time.monotonic()

    def done() -> bool:
        return get_run(api, ns, "waits").get("status", {}).get("phase") in ("Succeeded", "Failed")

    wait_until(done, timeout=120, what="the Run to finish after the store came back", interval=0.5)
    took = time.monotonic() - back
    run = get_run(api, ns, "waits")
    assert run["status"]["phase"] == "Succeeded", run["status"]
    assert _succeeded_condition(run)["reason"] == "AllStepsSucceeded"
    # kopf's error backoff was 60 s; a pass every resync (2 s here) plus one step's pod takes far less
    assert took < 45, f"the Run took {took:.0f}s after the store came back"
    print(f"\n[store outage] the Run finished {took:.1f}s after the store came back")
