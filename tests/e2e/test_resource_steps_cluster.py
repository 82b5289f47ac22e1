"""Resource steps on the real control plane: a small CRD (`Engine`) stands for an engine's kind (a RayJob, ...), and
this test plays the engine that serves it, writing the object's status the way such an engine does. The operator
under test creates the objects, reads them, retries, times out, reads a metric and deletes them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s_client
from test_operator import GROUP, VERSION, Operator, create, run_body, steps, wait_done

from testenv.controlplane import ControlPlane
from testenv.minio import S3Endpoint
from testenv.processes import wait_until

pytestmark = pytest.mark.e2e

ENGINE_GROUP, ENGINE_VERSION, ENGINES = "testing.conveyor.dev", "v1", "engines"
ENGINE_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{ENGINES}.{ENGINE_GROUP}"},
    "spec": {
        "group": ENGINE_GROUP,
        "scope": "Namespaced",
        "names": {"plural": ENGINES, "singular": "engine", "kind": "Engine"},
        "versions": [
            {
                "name": ENGINE_VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                        },
                    }
                },
            }
        ],
    },
}


@pytest.fixture(scope="module")
def engine_crd(control_plane: ControlPlane) -> Iterator[None]:
    with control_plane.api_client() as api:
        ext = k8s_client.ApiextensionsV1Api(api)
        try:
            ext.create_custom_resource_definition(ENGINE_CRD)
        except k8s_client.ApiException as e:
            if e.status != 409:
                raise

        def established() -> bool:
            crd = ext.read_custom_resource_definition(ENGINE_CRD["metadata"]["name"])  # type: ignore[index]
            return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])

        wait_until(established, timeout=30, what="the Engine CRD to be established")
    yield


@pytest.fixture(scope="module")
def operator(
    control_plane: ControlPlane, minio: S3Endpoint, install_crds: list[str], engine_crd: None
) -> Iterator[Operator]:
    """The operator alone (resource steps start no pods: no node agent), reading objects every second, allowed to
    create Engines and nothing else."""
    op = Operator(
        control_plane,
        minio,
        control_plane.log_dir,
        name="operator-resource-steps",
        # the chart's resourceSteps.allowed as the operator reads it: the test CRD only
        extra_env={"CONVEYOR_RESOURCE_POLL_SECONDS": "1", "CONVEYOR_RESOURCE_KINDS": f"{ENGINE_GROUP}/{ENGINES}"},
    ).start()
    yield op
    op.stop()


def engines(api: k8s_client.ApiClient, ns: str, run: str) -> dict[int, dict[str, Any]]:
    """The Run's Engine objects by attempt."""
    listed: Any = k8s_client.CustomObjectsApi(api).list_namespaced_custom_object(
        ENGINE_GROUP, ENGINE_VERSION, ns, ENGINES, label_selector=f"conveyor.dev/run={run}"
    )
    return {int(o["metadata"]["labels"]["conveyor.dev/attempt"]): o for o in listed["items"]}


def wait_engine(api: k8s_client.ApiClient, ns: str, run: str, attempt: int, op: Operator) -> dict[str, Any]:
    try:
        found = wait_until(
            lambda: engines(api, ns, run).get(attempt), timeout=60, what=f"{run}'s attempt {attempt}", interval=0.3
        )
    except Exception:
        print(op.log()[-5000:])
        raise
    return found  # type: ignore[no-any-return]


def engine_writes_status(api: k8s_client.ApiClient, ns: str, name: str, status: dict[str, Any]) -> None:
    """What the engine serving the kind does when its work ends."""
    k8s_client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        ENGINE_GROUP, ENGINE_VERSION, ns, ENGINES, name, {"status": status}
    )


def pipeline(name: str, **step: Any) -> dict[str, Any]:
    resource = {
        "manifest": {
            "apiVersion": f"{ENGINE_GROUP}/{ENGINE_VERSION}",
            "kind": "Engine",
            "metadata": {"labels": {"team": "ml"}},
            "spec": {"workers": "{{ params.workers }}", "submittedBy": "{{ run.name }}"},
        },
        "successWhen": {"condition": "Succeeded"},
        "failureWhen": {"expression": "has(self.status.state) && self.status.state == 'Failed'"},
        "metrics": [{"name": "score", "fieldPath": "status.result.score"}],
    }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Pipeline",
        "metadata": {"name": name},
        "spec": {
            "parameters": [{"name": "workers", "type": "integer", "default": 2}],
            "steps": [{"name": "train", "resource": resource, "cache": {"enabled": False}, **step}],
        },
    }


def test_a_failed_attempt_is_retried_with_a_new_object_and_the_success_reports_its_metric(
    api: k8s_client.ApiClient, namespace: str, operator: Operator
) -> None:
    ns = namespace
    create(api, ns, "pipelines", pipeline("engine-retry", retries={"limit": 1, "backoff": {"initialSeconds": 1}}))
    run = create(api, ns, "runs", run_body("engine-retry-1", "engine-retry", workers=3))

    first = wait_engine(api, ns, "engine-retry-1", 1, operator)
    assert first["spec"] == {"workers": 3, "submittedBy": "engine-retry-1"}  # the templates, rendered
    labels = first["metadata"]["labels"]
    assert (labels["team"], labels["conveyor.dev/run"], labels["conveyor.dev/step"]) == (
        "ml",
        "engine-retry-1",
        "train",
    )
    (owner,) = first["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Run", "engine-retry-1", run["metadata"]["uid"])

    engine_writes_status(api, ns, first["metadata"]["name"], {"state": "Failed", "message": "worker 1 lost"})
    second = wait_engine(api, ns, "engine-retry-1", 2, operator)
    wait_until(lambda: 1 not in engines(api, ns, "engine-retry-1"), timeout=30, what="attempt 1's object deleted")

    engine_writes_status(
        api,
        ns,
        second["metadata"]["name"],
        {"conditions": [{"type": "Succeeded", "status": "True", "reason": "Done"}], "result": {"score": 0.93}},
    )
    done = wait_done(api, ns, "engine-retry-1", operator, timeout=60)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    train = steps(done)["train"]
    assert train["attempts"] == 2 and train["metrics"] == {"score": 0.93}
    assert train["resourceName"] == f"Engine/{second['metadata']['name']}" and "jobName" not in train
    wait_until(lambda: not engines(api, ns, "engine-retry-1"), timeout=30, what="the last object deleted")

    events: Any = k8s_client.CoreV1Api(api).list_namespaced_event(
        ns, field_selector="involvedObject.name=engine-retry-1"
    )
    retrying = [e.message for e in events.items if e.reason == "StepRetrying"]
    assert retrying and "worker 1 lost" in retrying[0], retrying


def test_an_attempt_past_its_timeout_is_deleted_and_fails_the_run(
    api: k8s_client.ApiClient, namespace: str, operator: Operator
) -> None:
    ns = namespace
    create(api, ns, "pipelines", pipeline("engine-timeout", timeoutSeconds=3))
    create(api, ns, "runs", run_body("engine-timeout-1", "engine-timeout"))
    wait_engine(api, ns, "engine-timeout-1", 1, operator)  # the engine never answers

    done = wait_done(api, ns, "engine-timeout-1", operator, timeout=60)
    assert done["status"]["phase"] == "Failed"
    train = steps(done)["train"]
    assert train["phase"] == "Failed" and train["attempts"] == 1 and "timeout" in train["message"], train
    assert not engines(api, ns, "engine-timeout-1")


def test_a_run_deleted_mid_attempt_takes_its_object(
    api: k8s_client.ApiClient, namespace: str, operator: Operator
) -> None:
    ns = namespace
    create(api, ns, "pipelines", pipeline("engine-gone"))
    create(api, ns, "runs", run_body("engine-gone-1", "engine-gone"))
    wait_engine(api, ns, "engine-gone-1", 1, operator)
    k8s_client.CustomObjectsApi(api).delete_namespaced_custom_object(
        GROUP, VERSION, ns, "runs", "engine-gone-1", propagation_policy="Background"
    )
    wait_until(lambda: not engines(api, ns, "engine-gone-1"), timeout=60, what="the object collected with its Run")


def test_a_run_whose_kind_is_not_served_says_so(api: k8s_client.ApiClient, namespace: str, operator: Operator) -> None:
    ns = namespace
    body = pipeline("engine-missing")
    body["spec"]["steps"][0]["resource"]["manifest"]["apiVersion"] = "missing.conveyor.dev/v1"
    create(api, ns, "pipelines", body)
    create(api, ns, "runs", run_body("engine-missing-1", "engine-missing"))

    def refused() -> str | None:
        run: Any = k8s_client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, ns, "runs", "engine-missing-1"
        )
        cond = next((c for c in run.get("status", {}).get("conditions", []) if c["type"] == "Succeeded"), None)
        return cond["message"] if cond and cond["reason"] == "JobCreateRefused" else None

    message = wait_until(refused, timeout=60, what="the refusal in the Run's condition")
    assert "missing.conveyor.dev/v1" in str(message), message


def test_a_kind_not_allowed_is_refused_and_nothing_is_created(
    api: k8s_client.ApiClient, namespace: str, operator: Operator
) -> None:
    """The operator's own grants (here: the control plane's admin) could create a Lease; it refuses to, since the
    chart did not allow it, and says which value to set."""
    ns = namespace
    body = pipeline("engine-not-allowed")
    body["spec"]["steps"][0]["resource"]["manifest"] = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "spec": {"holderIdentity": "{{ run.name }}"},
    }
    body["spec"]["steps"][0]["resource"]["metrics"] = []
    body["spec"]["steps"][0]["resource"]["failureWhen"] = {"expression": "false"}
    create(api, ns, "pipelines", body)
    create(api, ns, "runs", run_body("engine-not-allowed-1", "engine-not-allowed"))

    def refused() -> str | None:
        run: Any = k8s_client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, ns, "runs", "engine-not-allowed-1"
        )
        cond = next((c for c in run.get("status", {}).get("conditions", []) if c["type"] == "Succeeded"), None)
        return cond["message"] if cond and cond["reason"] == "JobCreateRefused" else None

    try:
        message = wait_until(refused, timeout=60, what="the refusal in the Run's condition")
    except Exception:
        print(operator.log()[-5000:])
        raise
    assert "coordination.k8s.io/leases" in str(message) and "resourceSteps.allowed" in str(message), message
    leases = k8s_client.CoordinationV1Api(api).list_namespaced_lease(
        ns, label_selector="conveyor.dev/run=engine-not-allowed-1"
    )
    assert leases.items == []
