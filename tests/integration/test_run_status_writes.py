"""Conditional status writes against the real API server: a pass that read a stale Run writes nothing, is
redone on a fresh read, and launches no second Job; `Cluster.patch_status` honours its precondition."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kubernetes import client as k8s_client

from conveyor.api.base import GROUP, VERSION
from conveyor.controller import metrics
from conveyor.controller.config import OperatorConfig
from conveyor.controller.runs import RunReconciler
from conveyor.kube.cluster import Cluster, StaleObject
from conveyor.kube.watchcache import WatchCache
from conveyor.storage.s3 import S3Store
from testenv.minio import S3Endpoint

pytestmark = pytest.mark.integration


def _create(api: k8s_client.ApiClient, ns: str, plural: str, body: dict[str, Any]) -> dict[str, Any]:
    obj: Any = k8s_client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, ns, plural, body)
    return dict(obj)


def _run(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Run",
        "metadata": {"name": name},
        "spec": {"pipelineRef": {"name": "p"}},
    }


def _pipeline() -> dict[str, Any]:
    step = {"name": "only", "container": {"image": "local", "command": ["true"]}, "cache": {"enabled": False}}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Pipeline",
        "metadata": {"name": "p"},
        "spec": {"steps": [step]},
    }


def test_patch_status_writes_only_over_the_version_it_was_given(
    api: k8s_client.ApiClient, namespace: str, install_crds: list[str]
) -> None:
    cluster = Cluster(api)
    created = _create(api, namespace, "runs", _run("r"))
    first_version = created["metadata"]["resourceVersion"]

    written = cluster.patch_status("runs", namespace, "r", {"phase": "Pending"}, resource_version=first_version)
    assert written["status"]["phase"] == "Pending"
    assert written["metadata"]["resourceVersion"] != first_version

    with pytest.raises(StaleObject, match="changed since version"):
        cluster.patch_status("runs", namespace, "r", {"phase": "Running"}, resource_version=first_version)
    assert cluster.get_custom("runs", namespace, "r")["status"]["phase"] == "Pending"  # type: ignore[index]

    cluster.delete_run(namespace, "r")
    with pytest.raises(StaleObject, match="is gone"):
        cluster.patch_status(
            "runs", namespace, "r", {"phase": "Running"}, resource_version=written["metadata"]["resourceVersion"]
        )


def test_a_pass_over_a_stale_cached_run_is_redone_and_launches_nothing_twice(
    api: k8s_client.ApiClient, namespace: str, install_crds: list[str], minio: S3Endpoint
) -> None:
    cluster = Cluster(api)
    store = S3Store(minio.bucket, "stale-test", minio.endpoint, client=minio.client())
    config = OperatorConfig(s3_endpoint=minio.endpoint, s3_bucket=minio.bucket, credentials_secret=None)
    _create(api, namespace, "pipelines", _pipeline())
    created = _create(api, namespace, "runs", _run("r"))
    events: list[str] = []

    def post(obj: dict[str, Any], kind: str, type_: str, reason: str, message: str) -> None:
        events.append(reason)

    fresh = WatchCache()
    fresh.run_event("ADDED", created)
    first = RunReconciler(cluster, store, config, watched=fresh, events=post)
    first.reconcile(namespace, "r")  # starts the Run: one Job, status Running
    after_first = cluster.get_custom("runs", namespace, "r")
    assert after_first is not None and after_first["status"]["phase"] == "Running"
    assert events == ["Started"]

    # A second reconciler whose cache still holds the Run as created (its watch event of the write is late):
    stale = WatchCache()
    stale.run_event("ADDED", copy.deepcopy(created))
    second = RunReconciler(cluster, store, config, watched=stale, events=post)
    stale_before = metrics.STALE_WRITES.labels("Run")._value.get()
    second.reconcile(namespace, "r")

    assert metrics.STALE_WRITES.labels("Run")._value.get() == stale_before + 1
    jobs = k8s_client.BatchV1Api(api).list_namespaced_job(namespace).items
    assert [j.metadata.name for j in jobs if j.metadata] == [after_first["status"]["steps"][0]["jobName"]]  # no second attempt
    now = cluster.get_custom("runs", namespace, "r")
    assert now is not None
    assert now["status"]["startedAt"] == after_first["status"]["startedAt"]
    assert now["status"]["steps"] == after_first["status"]["steps"]
    assert events == ["Started"]  # the stale pass posted nothing: its write was refused before any Event
    held = stale.run(namespace, "r")  # the redo's GET replaced the stale copy
    assert held is not None and held["status"]["phase"] == "Running"
