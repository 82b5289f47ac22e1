"""Builds the Job that runs one step attempt: one pod, the step runtime, restricted security defaults."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from conveyor.api.pipeline import Resources
from conveyor.api.pod import PodSettings
from conveyor.core.redact import SECRETS_ENV, secret_sources
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


def _k8s(models: list[Any]) -> list[dict[str, Any]]:
    """Kubernetes' own JSON of pod-setting models; defaults left out (Kubernetes defaults them the same way)."""
    return [m.model_dump(mode="json", by_alias=True, exclude_defaults=True) for m in models]


def _one(model: BaseModel) -> dict[str, Any]:
    return _k8s([model])[0]


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
    pod: PodSettings | None = None,
) -> dict[str, Any]:
    """The Job for `task`. Retries are the operator's (backoffLimit 0), so every attempt is its own Job.
    `pod` is the step's effective pod settings (merge_pod_settings); the security settings stay ours."""
    pod = pod or PodSettings()
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
    user_env = _k8s(pod.env)
    # Names (never values) of what comes from Secrets, so the runtime keeps those values out of what it reports.
    sources = secret_sources(env + user_env, _k8s(pod.env_from), _k8s(pod.volume_mounts), _k8s(pod.volumes))
    env.append({"name": SECRETS_ENV, "value": json.dumps(sources, sort_keys=True, separators=(",", ":"))})
    env += user_env
    container: dict[str, Any] = {
        "name": "step",
        "image": image,
        "command": command,
        "env": env,
        "securityContext": CONTAINER_SECURITY,
        "terminationMessagePolicy": "File",
        "volumeMounts": [{"name": "scratch", "mountPath": "/tmp"}, *_k8s(pod.volume_mounts)],  # noqa: S108
    }
    if pod.env_from:
        container["envFrom"] = _k8s(pod.env_from)
    if res := _resources(resources):
        container["resources"] = res
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "securityContext": POD_SECURITY,
        "containers": [container],
        "volumes": [{"name": "scratch", "emptyDir": {}}, *_k8s(pod.volumes)],
        "automountServiceAccountToken": False,
    }
    if pod.service_account_name or service_account:
        pod_spec["serviceAccountName"] = pod.service_account_name or service_account
    if pod.node_selector:
        pod_spec["nodeSelector"] = dict(pod.node_selector)
    if pod.tolerations:
        pod_spec["tolerations"] = _k8s(pod.tolerations)
    if pod.affinity is not None:
        pod_spec["affinity"] = _one(pod.affinity)
    if pod.image_pull_secrets:
        pod_spec["imagePullSecrets"] = _k8s(pod.image_pull_secrets)
    if pod.priority_class_name:
        pod_spec["priorityClassName"] = pod.priority_class_name
    template_meta: dict[str, Any] = {"labels": {**pod.labels, **labels}}  # ours win (validation refuses clashes)
    if pod.annotations:
        template_meta["annotations"] = dict(pod.annotations)
    spec: dict[str, Any] = {
        "backoffLimit": 0,
        "ttlSecondsAfterFinished": 3600,
        "template": {"metadata": template_meta, "spec": pod_spec},
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
