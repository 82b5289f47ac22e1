"""Small manifest builders and waits shared by the integration tests (test code)."""

from __future__ import annotations

import sys
from typing import Any

from kubernetes import client as k8s_client

from testenv.processes import wait_until

Json = dict[str, Any]


def python_container(name: str, code: str, **extra: Any) -> Json:
    """A container that runs ``code`` with this venv's python (images are ignored by the node agent)."""
    return {"name": name, "image": "python:3.11", "command": [sys.executable, "-c", code], **extra}


def job_manifest(name: str, container: Json, backoff_limit: int = 0) -> Json:
    """A batch/v1 Job with one pod that is never restarted in place."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {"spec": {"restartPolicy": "Never", "containers": [container]}},
        },
    }


def pods_of(core: k8s_client.CoreV1Api, namespace: str, selector: str) -> list[Any]:
    """Pods matching a label selector."""
    return list(core.list_namespaced_pod(namespace, label_selector=selector).items)


def job_condition(batch: k8s_client.BatchV1Api, namespace: str, name: str, kind: str) -> Any:
    """The Job's condition of type ``kind`` once it is True, else None."""
    job = batch.read_namespaced_job_status(name, namespace)
    for cond in job.status.conditions or []:
        if cond.type == kind and cond.status == "True":
            return job
    return None


def wait_job(batch: k8s_client.BatchV1Api, namespace: str, name: str, kind: str, timeout: float = 90) -> Any:
    """Wait until the Job is Complete or Failed (``kind``); fail fast if it ends the other way."""
    other = "Failed" if kind == "Complete" else "Complete"

    def done() -> Any:
        if job_condition(batch, namespace, name, other) is not None:
            raise AssertionError(f"job {name} ended {other}, expected {kind}")
        return job_condition(batch, namespace, name, kind)

    return wait_until(done, timeout=timeout, what=f"job {namespace}/{name} {kind}")


def pod_ready(pod: Any) -> bool:
    """The pod's Ready condition is True."""
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))
