"""Builds the Job that runs one step attempt: one pod, the step runtime, restricted security defaults."""

from __future__ import annotations

from typing import Any

from conveyor.api.pipeline import Resources
from conveyor.core.task import TaskSpec
from conveyor.manifests.names import (
    LABEL_ATTEMPT,
    LABEL_ITEM,
    LABEL_MANAGED,
    LABEL_RUN,
    LABEL_STEP,
    MANAGER,
    job_name,
    label_value,
)

# The pod security the API server's "restricted" PodSecurity level demands, set once here.
POD_SECURITY: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "fsGroup": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
}


def owner_reference(kind: str, name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _resources(resources: Resources | None) -> dict[str, Any]:
    if resources is None:
        return {}
    amounts: dict[str, Any] = {}
    if resources.cpu:
        amounts["cpu"] = resources.cpu
    if resources.memory:
        amounts["memory"] = resources.memory
    if resources.gpu:
        amounts["nvidia.com/gpu"] = str(resources.gpu)
    return {"requests": dict(amounts), "limits": dict(amounts)} if amounts else {}


def step_job(
    *,
    run_name: str,
    run_uid: str,
    namespace: str,
    task: TaskSpec,
    image: str,
    command: list[str],
    credentials_secret: str | None,
    resources: Resources | None = None,
    timeout_seconds: int | None = None,
    service_account: str | None = None,
) -> dict[str, Any]:
    """The Job for `task`. Retries are the operator's (backoffLimit 0), so every attempt is its own Job."""
    name = job_name(run_name, task.key, task.attempt)
    labels = {
        LABEL_RUN: label_value(run_name),
        LABEL_STEP: label_value(task.step),
        LABEL_ATTEMPT: str(task.attempt),
        LABEL_MANAGED: MANAGER,
    }
    if task.item_index is not None:
        labels[LABEL_ITEM] = str(task.item_index)
    env: list[dict[str, Any]] = [
        {"name": "CONVEYOR_TASK", "value": task.model_dump_json(exclude_none=True)},
        {"name": "TMPDIR", "value": "/tmp"},  # noqa: S108 - an emptyDir, the root filesystem is read-only
        {"name": "HOME", "value": "/tmp"},  # noqa: S108
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    if credentials_secret:
        env += [
            {"name": var, "valueFrom": {"secretKeyRef": {"name": credentials_secret, "key": key}}}
            for var, key in (("AWS_ACCESS_KEY_ID", "accessKey"), ("AWS_SECRET_ACCESS_KEY", "secretKey"))
        ]
    container: dict[str, Any] = {
        "name": "step",
        "image": image,
        "command": command,
        "env": env,
        "securityContext": CONTAINER_SECURITY,
        "terminationMessagePolicy": "File",
        "volumeMounts": [{"name": "scratch", "mountPath": "/tmp"}],  # noqa: S108
    }
    if res := _resources(resources):
        container["resources"] = res
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "securityContext": POD_SECURITY,
        "containers": [container],
        "volumes": [{"name": "scratch", "emptyDir": {}}],
        "automountServiceAccountToken": False,
    }
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    spec: dict[str, Any] = {
        "backoffLimit": 0,
        "ttlSecondsAfterFinished": 3600,
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
    }
    if timeout_seconds:
        spec["activeDeadlineSeconds"] = timeout_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [owner_reference("Run", run_name, run_uid)],
        },
        "spec": spec,
    }
