"""The only importer of the kubernetes client: read what exists, apply changes idempotently."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from conveyor.api.base import GROUP, VERSION
from conveyor.core.task import unit_key
from conveyor.kube.timestamps import parse_timestamp
from conveyor.manifests.names import LABEL_ATTEMPT, LABEL_ITEM, LABEL_RUN, LABEL_STEP, label_value

log = logging.getLogger("conveyor.kube")


CONNECTIONS = 64
"""Kept-alive connections to the API server per client. The client's default (5 per CPU) is below the
operator's worker threads: a request over it opened a fresh TLS connection and threw it away after."""


def load_kube_config() -> client.ApiClient:
    """In-cluster credentials when running in a pod, else $KUBECONFIG / ~/.kube/config."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    settings = client.Configuration.get_default_copy()
    settings.connection_pool_maxsize = max(settings.connection_pool_maxsize, CONNECTIONS)
    return client.ApiClient(settings)


@dataclass(frozen=True)
class JobObservation:
    """What a step attempt's Job and pod show: still going, or finished with a termination message."""

    step: str
    attempt: int
    name: str
    finished: bool
    succeeded: bool
    termination_message: str | None
    reason: str | None
    finished_at: datetime | None = None
    """When the step's container stopped (1-second resolution), not when we noticed."""
    cache_key: str | None = None
    """The cache key of the attempt the Job runs (from the task it was given)."""
    started: bool = False
    """A pod of the Job has started (running, or already ended)."""
    waiting: str | None = None
    """What a pod of the Job that has not started waits for, in the kubelet's or the scheduler's words."""


def task_cache_key(job: dict[str, Any]) -> str | None:
    """The cache key in the task a step Job's container was given (its CONVEYOR_TASK variable)."""
    for container in job.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
        for var in container.get("env", []):
            if var.get("name") == "CONVEYOR_TASK" and var.get("value"):
                try:
                    key = json.loads(var["value"]).get("cache_key")
                except (ValueError, AttributeError):
                    return None
                return key if isinstance(key, str) else None
    return None


def pod_job_name(pod: dict[str, Any]) -> str | None:
    """The Job a pod belongs to, from the label the Job controller sets (its older name too)."""
    labels = pod["metadata"].get("labels") or {}
    name: str | None = labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")
    return name


def observe_jobs(
    jobs: Iterable[dict[str, Any]], pods: Iterable[dict[str, Any]]
) -> dict[tuple[str, int], JobObservation]:
    """What a Run's Jobs and their pods show, keyed by (state key, attempt): from a LIST or a watch cache."""
    # A step is over when its pod's container has terminated: the Job controller only marks the Job
    # Complete about a second later (its sync batch period), and every step would wait for that.
    ended: dict[str, tuple[bool, str | None, str | None, datetime | None]] = {}
    started: set[str] = set()
    waiting: dict[str, str] = {}
    for pod in pods:
        owner = pod_job_name(pod)
        if owner:
            if pod_started(pod):
                started.add(owner)
            elif (why := pod_waiting(pod)) is not None:
                waiting[owner] = why
        for cs in pod.get("status", {}).get("containerStatuses", []):
            term = cs.get("state", {}).get("terminated")
            if term is not None and owner and pod_stopped(pod):
                at = term.get("finishedAt")
                ended[owner] = (
                    pod_succeeded(pod),
                    term.get("message"),
                    term.get("reason"),
                    parse_timestamp(at),
                )
    out = {}
    for job in jobs:
        labels = job["metadata"].get("labels", {})
        step, attempt = labels.get(LABEL_STEP), labels.get(LABEL_ATTEMPT)
        if step is None or attempt is None:
            continue
        if LABEL_ITEM in labels:
            step = unit_key(step, int(labels[LABEL_ITEM]))
        conditions = {c["type"]: c for c in job.get("status", {}).get("conditions", [])}
        complete = conditions.get("Complete", {}).get("status") == "True"
        failed = conditions.get("Failed", {}).get("status") == "True"
        pod_ok, message, term_reason, finished_at = ended.get(job["metadata"]["name"], (False, None, None, None))
        pod_done = job["metadata"]["name"] in ended
        out[(step, int(attempt))] = JobObservation(
            step=step,
            attempt=int(attempt),
            name=job["metadata"]["name"],
            finished=complete or failed or pod_done,
            succeeded=complete or (pod_done and pod_ok and not failed),
            termination_message=message,
            reason=conditions.get("Failed", {}).get("reason") or term_reason,
            finished_at=finished_at,
            cache_key=task_cache_key(job),
            started=job["metadata"]["name"] in started or pod_done,
            waiting=waiting.get(job["metadata"]["name"]),
        )
    return out


def pod_stopped(pod: dict[str, Any]) -> bool:
    """Whether a step pod is over: its phase says so, or every container has terminated.

    The kubelet reports a container's end about a second before the pod's phase (it tears the pod down
    first: 1.09 s at p50 on the real node, bench/node_bench.py), and a step pod's container never runs again
    once terminated (restartPolicy Never, backoffLimit 0), so the step's outcome is known from the first.
    """
    status = pod.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed"):
        return True
    statuses = status.get("containerStatuses") or []
    return bool(statuses) and all((cs.get("state") or {}).get("terminated") is not None for cs in statuses)


def pod_succeeded(pod: dict[str, Any]) -> bool:
    """Whether a stopped step pod succeeded: its phase, or before the phase comes, every container's exit code 0."""
    status = pod.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed"):
        return bool(status["phase"] == "Succeeded")
    return all(
        ((cs.get("state") or {}).get("terminated") or {}).get("exitCode") == 0
        for cs in status.get("containerStatuses") or []
    )


def pod_started(pod: dict[str, Any]) -> bool:
    """Whether the pod's container has run (or the pod ended). The container states decide before the phase: a
    container that never started (every state `waiting`, no restart) has not, whatever phase a node reports."""
    status = pod.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed"):
        return True
    statuses = status.get("containerStatuses") or []
    for cs in statuses:
        state, last = cs.get("state") or {}, cs.get("lastState") or {}
        if state.get("running") is not None or state.get("terminated") is not None:
            return True
        if last.get("terminated") is not None or cs.get("restartCount"):
            return True
    if statuses and all((cs.get("state") or {}).get("waiting") is not None for cs in statuses):
        return False
    return status.get("phase") == "Running"


def pod_waiting(pod: dict[str, Any]) -> str | None:
    """Why a pod that has not started waits: a container's waiting reason (ImagePullBackOff,
    CreateContainerConfigError...), else the scheduler's (Unschedulable), else None."""
    status = pod.get("status") or {}
    for cs in status.get("containerStatuses") or []:
        state = (cs.get("state") or {}).get("waiting") or {}
        if state.get("reason") and state["reason"] != "ContainerCreating":
            return f"{state['reason']}: {state.get('message') or ''}".rstrip(": ")
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return f"{cond.get('reason') or 'Unschedulable'}: {cond.get('message') or ''}".rstrip(": ")
    return None


class ClusterRefused(Exception):
    """The API server refused a request for good (forbidden, invalid, over quota): retrying alone will not help."""


class StaleObject(Exception):
    """A write made with a resourceVersion precondition found the object changed (or deleted) since it was read."""


def _api_message(e: ApiException) -> str:
    try:
        body = json.loads(e.body or "{}")
    except ValueError:
        body = {}
    return f"{e.status} {e.reason}: {body.get('message', '')}".strip().rstrip(":")


class Cluster:
    """Typed operations on the objects Conveyor reads and writes."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.custom = client.CustomObjectsApi(api)
        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)

    # ---------------------------------------------------------- reading

    def get_custom(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj: Any = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return dict(obj)

    def _list(self, method: Any, namespace: str, selector: str) -> list[dict[str, Any]]:
        """List as plain JSON (the client's model deserialisation is slow and adds nothing here)."""
        resp = method(namespace, label_selector=selector, _preload_content=False)
        items: list[dict[str, Any]] = json.loads(resp.data)["items"]
        return items

    def run_jobs(self, namespace: str, run: str) -> dict[tuple[str, int], JobObservation]:
        """Every Job of the Run, keyed by (state key, attempt) — the key is `step[i]` for a fan-out item —
        with the termination message of finished ones (two LISTs; the reconciler prefers its watch cache)."""
        selector = f"{LABEL_RUN}={label_value(run)}"
        jobs = self._list(self.batch.list_namespaced_job, namespace, selector)
        pods = self._list(self.core.list_namespaced_pod, namespace, selector)
        return observe_jobs(jobs, pods)

    def list_runs(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """Runs matching a label selector, as plain JSON."""
        resp: Any = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, "runs", label_selector=selector, _preload_content=False
        )
        items: list[dict[str, Any]] = json.loads(resp.data)["items"]
        return items

    def list_custom(self, plural: str, namespace: str) -> list[dict[str, Any]]:
        """Every object of a Conveyor kind in a namespace, as plain JSON (for `conveyor get`)."""
        resp: Any = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural, _preload_content=False)
        items: list[dict[str, Any]] = json.loads(resp.data)["items"]
        return items

    def list_all(self, plural: str) -> list[dict[str, Any]]:
        """Every object of a Conveyor kind in every namespace, as plain JSON."""
        resp: Any = self.custom.list_cluster_custom_object(GROUP, VERSION, plural, _preload_content=False)
        items: list[dict[str, Any]] = json.loads(resp.data)["items"]
        return items

    # ---------------------------------------------------------- writing

    def create_job(self, job: dict[str, Any]) -> bool:
        """Create the Job; False when it already exists (a repeated create is a no-op). A refusal (no
        permission, a quota, admission) raises ClusterRefused with the API server's own words."""
        try:
            # Raw: building a typed V1Job from the answer costs more than the request. Read it all, or the
            # connection is dropped instead of going back to the pool.
            resp: Any = self.batch.create_namespaced_job(job["metadata"]["namespace"], job, _preload_content=False)  # type: ignore[arg-type]
            _ = resp.data
        except ApiException as e:
            if e.status == 409:
                return False
            if e.status is not None and 400 <= e.status < 500:
                raise ClusterRefused(f"creating Job {job['metadata']['name']} was refused: {_api_message(e)}") from None
            raise
        return True

    def delete_job(self, namespace: str, name: str) -> None:
        try:
            self.batch.delete_namespaced_job(name, namespace, propagation_policy="Background")
        except ApiException as e:
            if e.status != 404:
                raise

    def create_run(self, run: dict[str, Any]) -> bool:
        """Create the Run; False when it already exists (a repeated create is a no-op)."""
        try:
            self.custom.create_namespaced_custom_object(GROUP, VERSION, run["metadata"]["namespace"], "runs", run)
        except ApiException as e:
            if e.status == 409:
                return False
            raise
        return True

    def create_generated_run(self, run: dict[str, Any]) -> str:
        """Create a Run named by generateName; returns the name the API server gave it."""
        ns = run["metadata"]["namespace"]
        try:
            created: Any = self.custom.create_namespaced_custom_object(GROUP, VERSION, ns, "runs", run)
        except ApiException as e:
            if e.status is not None and 400 <= e.status < 500:
                raise ClusterRefused(f"creating a Run was refused: {_api_message(e)}") from None
            raise
        return str(created["metadata"]["name"])

    def patch_run_spec(self, namespace: str, name: str, spec: dict[str, Any]) -> bool:
        """Merge `spec` into the Run's spec; False when the Run is gone."""
        try:
            self.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, "runs", name, {"spec": spec})
        except ApiException as e:
            if e.status == 404:
                return False
            raise
        return True

    def delete_run(self, namespace: str, name: str) -> None:
        """Delete the Run (its Jobs follow by owner reference); already gone is fine."""
        try:
            self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, "runs", name, propagation_policy="Background"
            )
        except ApiException as e:
            if e.status != 404:
                raise

    def patch_status(
        self, plural: str, namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]:
        """Merge `status` into the object's status; returns the object as written. With `resource_version`, the
        write happens only if the object is still that version, else StaleObject (optimistic concurrency)."""
        patch: dict[str, Any] = {"status": status}
        if resource_version:
            patch["metadata"] = {"resourceVersion": resource_version}
        try:
            resp: Any = self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, plural, name, patch, _preload_content=False
            )
        except ApiException as e:
            if e.status in (404, 409) and resource_version:
                what = "is gone" if e.status == 404 else "changed"
                raise StaleObject(f"{plural} {namespace}/{name} {what} since version {resource_version}") from None
            raise
        written: dict[str, Any] = json.loads(resp.data)
        return written

    def event(self, obj: dict[str, Any], kind: str, type_: str, reason: str, message: str) -> None:
        """Post an Event about a Conveyor object; never fails the caller."""
        meta = obj["metadata"]
        now = datetime.now(UTC)
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{meta['name']}.", namespace=meta["namespace"]),
            involved_object=client.V1ObjectReference(
                api_version=f"{GROUP}/{VERSION}",
                kind=kind,
                name=meta["name"],
                namespace=meta["namespace"],
                uid=meta.get("uid"),
            ),
            type=type_,
            reason=reason,
            message=message[:1024],
            first_timestamp=now,
            last_timestamp=now,
            count=1,
            source=client.V1EventSource(component="conveyor"),
            reporting_component="conveyor.dev/operator",
            reporting_instance="conveyor",
        )
        try:
            resp: Any = self.core.create_namespaced_event(meta["namespace"], body, _preload_content=False)
            _ = resp.data  # read, so the connection goes back to the pool
        except ApiException as e:
            log.warning("could not post event %s on %s/%s: %s", reason, meta["namespace"], meta["name"], e.reason)

    def add_approval(self, namespace: str, run: str, approval: dict[str, Any]) -> dict[str, Any]:
        """Append a decision to a Run's spec.approvals; optimistic concurrency (resourceVersion) so two
        approvers never overwrite each other's decisions."""
        for _ in range(5):
            body = self.get_custom("runs", namespace, run)
            if body is None:
                raise LookupError(f"run {namespace}/{run} does not exist")
            approvals = list(body.get("spec", {}).get("approvals", []))
            if any(a.get("step") == approval["step"] for a in approvals):
                raise ValueError(f"step {approval['step']!r} of run {run!r} has been decided already")
            patch = {
                "metadata": {"resourceVersion": body["metadata"]["resourceVersion"]},
                "spec": {"approvals": [*approvals, approval]},
            }
            try:
                updated: Any = self.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, "runs", run, patch)
            except ApiException as e:
                if e.status == 409:
                    continue  # someone else changed the Run meanwhile: read again
                raise
            return dict(updated)
        raise RuntimeError(f"run {namespace}/{run} kept changing; try again")

    def ensure_peering(self, name: str, namespaces: list[str]) -> None:
        """Create kopf's peering object(s) if missing: cluster-wide, or one per watched namespace."""
        body = {"apiVersion": "kopf.dev/v1", "metadata": {"name": name}}
        creates: list[Any] = []
        if not namespaces:
            creates.append(
                lambda: self.custom.create_cluster_custom_object(
                    "kopf.dev", "v1", "clusterkopfpeerings", {**body, "kind": "ClusterKopfPeering"}
                )
            )
        for ns in namespaces:
            creates.append(
                lambda ns=ns: self.custom.create_namespaced_custom_object(
                    "kopf.dev", "v1", ns, "kopfpeerings", {**body, "kind": "KopfPeering"}
                )
            )
        for create in creates:
            try:
                create()
            except ApiException as e:
                if e.status != 409:
                    raise
