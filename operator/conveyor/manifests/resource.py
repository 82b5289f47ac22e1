"""Builds the object of one resource-step attempt: the rendered manifest, named, labelled and owned by its Run."""

from __future__ import annotations

import copy
from typing import Any

from conveyor.core.task import TaskSpec
from conveyor.manifests.job import owner_reference
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


def object_name(run_name: str, key: str, attempt: int) -> str:
    """One object per attempt, named like the Job a container step's attempt gets (deterministic, at most 63)."""
    return job_name(run_name, key, attempt)


def step_object(*, run_name: str, run_uid: str, namespace: str, task: TaskSpec) -> dict[str, Any]:
    """The object for `task` (a resource step's attempt). The manifest's own labels and annotations are kept; name,
    namespace, owner and Conveyor's labels are ours (validation refuses a manifest setting the first three)."""
    assert task.resource is not None
    body = copy.deepcopy(task.resource)
    meta = dict(body.get("metadata") or {})
    labels = {
        **(meta.get("labels") or {}),
        LABEL_RUN: label_value(run_name),
        LABEL_STEP: label_value(task.step),
        LABEL_ATTEMPT: str(task.attempt),
        LABEL_MANAGED: MANAGER,
    }
    if task.item_index is not None:
        labels[LABEL_ITEM] = str(task.item_index)
    meta.update(
        name=object_name(run_name, task.key, task.attempt),
        namespace=namespace,
        labels=labels,
        ownerReferences=[owner_reference("Run", run_name, run_uid)],
    )
    body["metadata"] = meta
    return body
