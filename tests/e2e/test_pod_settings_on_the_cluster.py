"""Pod settings on the real API server: a step reads a Secret through valueFrom and a mounted ConfigMap, and a
step whose Secret is missing shows the kubelet's CreateContainerConfigError on its Run until the Secret exists."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s_client
from test_operator import GROUP, VERSION, Operator, create, get_run, wait_done

from testenv.controlplane import ControlPlane
from testenv.minio import S3Endpoint
from testenv.nodeagent import NodeAgentProcess
from testenv.processes import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def ns(namespace: str, api: k8s_client.ApiClient, minio: S3Endpoint) -> str:
    """A namespace with the artifact-store Secret, a Secret and a ConfigMap for the steps to read."""
    core = k8s_client.CoreV1Api(api)
    for name, data in (
        ("conveyor-artifacts", {"accessKey": minio.access_key, "secretKey": minio.secret_key}),
        ("db", {"password": "s3cret-from-secret"}),
    ):
        core.create_namespaced_secret(
            namespace, k8s_client.V1Secret(metadata=k8s_client.V1ObjectMeta(name=name), string_data=data)
        )
    core.create_namespaced_config_map(
        namespace,
        k8s_client.V1ConfigMap(
            metadata=k8s_client.V1ObjectMeta(name="train-settings"),
            data={"greeting": "hello-from-configmap", "mode": "fast"},
        ),
    )
    return namespace


@pytest.fixture
def operator(
    control_plane: ControlPlane, minio: S3Endpoint, node_agent: NodeAgentProcess, install_crds: list[str], ns: str
) -> Iterator[Operator]:
    op = Operator(
        control_plane,
        minio,
        control_plane.log_dir,
        name="operator-pod-settings",
        args=("--standalone", "--namespace", ns),
    ).start()
    yield op
    op.stop()


def pipeline(name: str, code: str, pod: dict[str, Any], step_pod: dict[str, Any] | None = None) -> dict[str, Any]:
    step: dict[str, Any] = {
        "name": "read",
        "container": {"image": "local", "command": [sys.executable, "-c", code]},
        "startTimeoutSeconds": 120,
    }
    if step_pod is not None:
        step["pod"] = step_pod
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Pipeline",
        "metadata": {"name": name},
        "spec": {"pod": pod, "steps": [step]},
    }


def run_body(name: str, pipeline: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Run",
        "metadata": {"name": name},
        "spec": {"pipelineRef": {"name": pipeline}},
    }


def pod_condition(run: dict[str, Any]) -> dict[str, Any] | None:
    return next((c for c in run.get("status", {}).get("conditions", []) if c["type"] == "StepPodsStarted"), None)


READ = (
    "import os, sys; "
    "got = (os.environ.get('DB_PASSWORD'), open('/etc/train/greeting').read(), os.environ.get('CFG_mode')); "
    "print(got); "
    "sys.exit(0 if got == ('s3cret-from-secret', 'hello-from-configmap', 'fast') else 3)"
)


def test_a_step_reads_a_secret_through_value_from_and_a_mounted_config_map(
    api: k8s_client.ApiClient, ns: str, operator: Operator
) -> None:
    create(
        api,
        ns,
        "pipelines",
        pipeline(
            "reads",
            READ,
            pod={
                "env": [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}],
                "volumes": [{"name": "settings", "configMap": {"name": "train-settings"}}],
                "labels": {"team": "ml"},
            },
            step_pod={
                "volumeMounts": [{"name": "settings", "mountPath": "/etc/train"}],
                "envFrom": [{"prefix": "CFG_", "configMapRef": {"name": "train-settings"}}],
                "annotations": {"example.com/owner": "ana"},
            },
        ),
    )
    create(api, ns, "runs", run_body("reads", "reads"))
    run = wait_done(api, ns, "reads", operator, timeout=120)
    assert run["status"]["phase"] == "Succeeded", run["status"]
    (job,) = k8s_client.BatchV1Api(api).list_namespaced_job(ns, label_selector="conveyor.dev/run=reads").items
    template: Any = job.spec.template  # type: ignore[union-attr]
    assert template.metadata.labels["team"] == "ml" and template.metadata.labels["conveyor.dev/step"] == "read"
    assert template.metadata.annotations == {"example.com/owner": "ana"}
    assert template.spec.security_context.run_as_non_root is True  # the restricted defaults stay
    assert template.spec.containers[0].security_context.read_only_root_filesystem is True
    assert pod_condition(run) is None  # the pod started at once: nothing to report


def test_a_missing_secret_shows_on_the_run_until_it_exists(
    api: k8s_client.ApiClient, ns: str, operator: Operator
) -> None:
    create(
        api,
        ns,
        "pipelines",
        pipeline(
            "needs-secret",
            "import os, sys; sys.exit(0 if os.environ.get('TOKEN') == 'late' else 3)",
            pod={"env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "api-token", "key": "token"}}}]},
        ),
    )
    create(api, ns, "runs", run_body("needs-secret", "needs-secret"))

    def waiting() -> dict[str, Any] | None:
        cond = pod_condition(get_run(api, ns, "needs-secret"))
        return cond if cond is not None and cond["status"] == "False" else None

    try:
        cond: Any = wait_until(waiting, timeout=60, what="the Run to say why its pod cannot start", interval=0.5)
    except Exception:
        print(operator.log()[-5000:])
        print(get_run(api, ns, "needs-secret").get("status"))
        pods: Any = k8s_client.CoreV1Api(api).list_namespaced_pod(ns).items
        print([(p.metadata.name, p.status) for p in pods])
        raise
    assert cond["reason"] == "CreateContainerConfigError"
    assert "step 'read'" in cond["message"] and "api-token" in cond["message"] and "not found" in cond["message"]
    assert "fails if not started 120s after launch" in cond["message"]
    run = get_run(api, ns, "needs-secret")
    assert run["status"]["phase"] == "Running"  # not failed: the kubelet retries, the Secret may still come

    def warned() -> bool:
        events = k8s_client.CoreV1Api(api).list_namespaced_event(ns, field_selector="involvedObject.name=needs-secret")
        return any(e.reason == "CreateContainerConfigError" and e.type == "Warning" for e in events.items)

    wait_until(warned, timeout=15, what="a Warning event on the Run")  # posted from the operator's event thread

    k8s_client.CoreV1Api(api).create_namespaced_secret(
        ns, k8s_client.V1Secret(metadata=k8s_client.V1ObjectMeta(name="api-token"), string_data={"token": "late"})
    )
    run = wait_done(api, ns, "needs-secret", operator, timeout=120)
    assert run["status"]["phase"] == "Succeeded", run["status"]
    cond = pod_condition(run)
    assert cond is not None and (cond["status"], cond["reason"]) == ("True", "NoneWaiting")


def test_the_api_server_refuses_a_pod_setting_against_the_schema(api: k8s_client.ApiClient, ns: str) -> None:
    body = pipeline(
        "bad-volume", "print(1)", pod={"volumes": [{"name": "v", "configMap": {"name": "c"}, "emptyDir": {}}]}
    )
    with pytest.raises(k8s_client.ApiException) as e:
        create(api, ns, "pipelines", body)
    assert e.value.status == 422
    assert "exactly one of persistentVolumeClaim, configMap, secret or emptyDir" in str(e.value.body)
