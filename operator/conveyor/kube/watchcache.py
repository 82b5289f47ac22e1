"""What the watches have shown of unfinished Runs, step Jobs and pods, Pipelines and ModelDeployments, so a
pass need not GET or LIST them.

The kopf handlers already receive every event of Jobs and pods labelled with a Run, and of
Pipelines; they feed this cache, and a Run's pass reads its Jobs and pods here instead of making
two LIST calls (the bulk of a pass's API time at 200 concurrent Runs). Only what observation needs
is kept (names, labels, status, a step Job's cache key), so the cache stays small.

A watch can lag the API server by a moment, so the reconciler trusts the cache only where a lag
cannot mislead it: see `RunReconciler._jobs` (a step it believes running whose Job the cache has
not seen yet is looked up with a LIST before anything is concluded). A Run read from here is written
back with its resourceVersion as a precondition, so a stale one costs a conflict and a GET, never a
lost update; the reconciler's own status writes are folded in from their responses at once.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from conveyor.kube.cluster import pod_job_name, pod_stopped, task_cache_key
from conveyor.manifests.names import LABEL_RUN

Body = dict[str, Any]


def _trim_job(job: Body) -> Body:
    meta = job.get("metadata", {})
    key = task_cache_key(job)
    env = [{"name": "CONVEYOR_TASK", "value": json.dumps({"cache_key": key})}] if key else []
    return {
        "metadata": {"name": meta.get("name"), "labels": dict(meta.get("labels") or {})},
        "status": {"conditions": list((job.get("status") or {}).get("conditions") or [])},
        "spec": {"template": {"spec": {"containers": [{"env": env}]}}},
    }


def _trim_pod(pod: Body) -> Body:
    meta = pod.get("metadata", {})
    status = pod.get("status") or {}
    containers = []
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        if state.get("terminated"):
            containers.append({"state": {"terminated": state["terminated"]}})
        elif "running" in state:
            containers.append({"state": {"running": {}}})
        elif state.get("waiting"):
            waiting = state["waiting"]
            containers.append(
                {"state": {"waiting": {"reason": waiting.get("reason"), "message": waiting.get("message")}}}
            )
    trimmed: Body = {
        "metadata": {"name": meta.get("name"), "labels": dict(meta.get("labels") or {})},
        "status": {"phase": status.get("phase"), "containerStatuses": containers},
    }
    unscheduled = [
        c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled" and c.get("status") == "False"
    ]
    if unscheduled:
        trimmed["status"]["conditions"] = [{k: unscheduled[0].get(k) for k in ("type", "status", "reason", "message")}]
    return trimmed


RUN_DONE = ("Succeeded", "Failed", "Cancelled")


def _trim_run(run: Body) -> Body:
    meta = run.get("metadata", {})
    kept = ("name", "namespace", "uid", "generation", "resourceVersion", "creationTimestamp", "deletionTimestamp")
    out: Body = {k: v for k, v in run.items() if k not in ("metadata", "status")}
    out["metadata"] = {k: meta[k] for k in kept if k in meta}
    if run.get("status"):
        out["status"] = run["status"]
    return out


def _trim_object(body: Body) -> Body:
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}
    return {**body, "metadata": meta}


def _newer(candidate: Body, held: Body | None) -> bool:
    """Whether `candidate` is a later version than `held`. resourceVersions are opaque by contract but etcd's
    revisions in practice; when they do not compare as numbers the later arrival wins (a wrong guess costs
    a conflict on the next status write, not a lost update)."""
    if held is None:
        return True
    a = candidate.get("metadata", {}).get("resourceVersion", "")
    b = held.get("metadata", {}).get("resourceVersion", "")
    try:
        return int(a) >= int(b)
    except ValueError:
        return True


class WatchCache:
    """Thread-safe: kopf's handler threads write, reconcile passes read."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._runs: dict[tuple[str, str], tuple[dict[str, Body], dict[str, Body]]] = {}
        self._pipelines: dict[tuple[str, str], Body] = {}
        self._run_bodies: dict[tuple[str, str], tuple[Body, float]] = {}
        self._finished_runs: dict[tuple[str, str], str] = {}
        self._objects: dict[tuple[str, str, str], tuple[Body, float]] = {}

    # ------------------------------------------------------------------ Runs

    def run_event(self, event: str | None, body: Body) -> None:
        """Fold in a Run's event. Only unfinished Runs are held whole. A Run seen finishing leaves its
        resourceVersion behind until it is deleted (so a late event of an older version is not taken for
        news); a Run first seen finished leaves nothing, and its pass, if any, makes one GET."""
        key = self._run_key(body)
        with self._lock:
            if event == "DELETED":
                self._run_bodies.pop(key, None)
                self._finished_runs.pop(key, None)
                return
            self._fold_run(key, body, only_known=False)

    def run_written(self, body: Body) -> None:
        """Fold in a Run as a write or a GET returned it, unless the Run was deleted (forgotten) meanwhile."""
        key = self._run_key(body)
        with self._lock:
            self._fold_run(key, body, only_known=True)

    @staticmethod
    def _run_key(body: Body) -> tuple[str, str]:
        meta = body.get("metadata", {})
        return meta.get("namespace", ""), meta.get("name", "")

    def _fold_run(self, key: tuple[str, str], body: Body, only_known: bool) -> None:
        """Caller holds the lock."""
        status = body.get("status") or {}
        entry = self._run_bodies.get(key)
        held = entry[0] if entry is not None else None
        if held is None and key in self._finished_runs:
            held = {"metadata": {"resourceVersion": self._finished_runs[key]}}
        if only_known and held is None:
            return
        if not _newer(body, held):
            return
        finished = status.get("phase") in RUN_DONE and (status.get("recordUri") or not status.get("startedAt"))
        if finished:
            if held is not None:
                self._finished_runs[key] = str(body.get("metadata", {}).get("resourceVersion", ""))
            self._run_bodies.pop(key, None)
        else:
            self._run_bodies[key] = (_trim_run(body), self._clock())
            self._finished_runs.pop(key, None)

    def run(self, namespace: str, name: str, max_age: float | None = None) -> Body | None:
        """The Run as last seen (read-only: shared with other passes), or None; None too when it has not been
        seen for `max_age` seconds (a Run's resync pass then reads it afresh, in case a watch missed something)."""
        with self._lock:
            entry = self._run_bodies.get((namespace, name))
        if entry is None or (max_age is not None and self._clock() - entry[1] > max_age):
            return None
        return entry[0]

    # ------------------------------------------------------------------ step Jobs and pods

    @staticmethod
    def _key(body: Body) -> tuple[str, str] | None:
        meta = body.get("metadata", {})
        run = (meta.get("labels") or {}).get(LABEL_RUN)
        if not run or not meta.get("namespace"):
            return None
        return meta["namespace"], run

    def job_event(self, event: str | None, body: Body) -> bool:
        """Fold in a Job's event; True if what observation reads of it changed (most events change nothing)."""
        return self._event(event, body, 0, _trim_job)

    def pod_event(self, event: str | None, body: Body) -> bool:
        """Fold in a pod's event; True if what observation reads of it changed."""
        return self._event(event, body, 1, _trim_pod)

    def _event(self, event: str | None, body: Body, which: int, trim: Any) -> bool:
        name = body.get("metadata", {}).get("name")
        key = self._key(body)
        if key is None or not name:
            return False
        with self._lock:
            if event == "DELETED":
                bucket = self._runs.get(key)
                if bucket is None or bucket[which].pop(name, None) is None:
                    return False
                if not bucket[0] and not bucket[1]:
                    del self._runs[key]  # a deleted Run's objects leave nothing behind
                return True
            objects = self._runs.setdefault(key, ({}, {}))[which]
            trimmed = trim(body)
            if objects.get(name) == trimmed:
                return False
            objects[name] = trimmed
            return True

    def run_objects(self, namespace: str, run: str) -> tuple[list[Body], list[Body]]:
        """(jobs, pods) of a Run as the watches last showed them."""
        with self._lock:
            jobs, pods = self._runs.get((namespace, run), ({}, {}))
            return list(jobs.values()), list(pods.values())

    def pod_stopped(self, namespace: str, run: str, job: str) -> bool:
        """The watch has shown the Job's pod stopped, with its container's end (a pass has been owed since)."""
        with self._lock:
            pods = self._runs.get((namespace, run), ({}, {}))[1]
            return any(
                pod_stopped(pod)
                and any("terminated" in cs["state"] for cs in pod["status"]["containerStatuses"])
                and pod_job_name(pod) == job
                for pod in pods.values()
            )

    def forget_run(self, namespace: str, run: str) -> None:
        with self._lock:
            self._runs.pop((namespace, run), None)
            self._run_bodies.pop((namespace, run), None)
            self._finished_runs.pop((namespace, run), None)

    # ------------------------------------------------------------------ objects held whole (ModelDeployments)

    def object_event(self, plural: str, event: str | None, body: Body) -> None:
        """Fold in an event of an object whose passes read it whole (all but `managedFields`)."""
        key = (plural, *self._run_key(body))
        with self._lock:
            held = self._objects.get(key)
            if event == "DELETED":
                self._objects.pop(key, None)
            elif _newer(body, held[0] if held is not None else None):
                self._objects[key] = (_trim_object(body), self._clock())

    def object_written(self, plural: str, body: Body) -> None:
        """Fold in an object as a write or a GET returned it, unless it was deleted (forgotten) meanwhile."""
        key = (plural, *self._run_key(body))
        with self._lock:
            held = self._objects.get(key)
            if held is not None and _newer(body, held[0]):
                self._objects[key] = (_trim_object(body), self._clock())

    def object(self, plural: str, namespace: str, name: str, max_age: float | None = None) -> Body | None:
        """The object as last seen (read-only: shared with other passes), or None; None too when it has not been
        seen for `max_age` seconds (its resync pass then reads it afresh, in case a watch missed something)."""
        with self._lock:
            entry = self._objects.get((plural, namespace, name))
        if entry is None or (max_age is not None and self._clock() - entry[1] > max_age):
            return None
        return entry[0]

    def forget_object(self, plural: str, namespace: str, name: str) -> None:
        with self._lock:
            self._objects.pop((plural, namespace, name), None)

    # ------------------------------------------------------------------ pipelines

    def pipeline_event(self, event: str | None, body: Body) -> None:
        meta = body.get("metadata", {})
        key = (meta.get("namespace", ""), meta.get("name", ""))
        with self._lock:
            if event == "DELETED":
                self._pipelines.pop(key, None)
            else:
                self._pipelines[key] = {k: v for k, v in body.items() if k != "status"}

    def pipeline(self, namespace: str, name: str) -> Body | None:
        with self._lock:
            return self._pipelines.get((namespace, name))

    def sizes(self) -> tuple[int, int, int, int]:
        """(Runs, Jobs, pods, Pipelines) held: for tests and the memory benchmark."""
        with self._lock:
            jobs = sum(len(j) for j, _ in self._runs.values())
            pods = sum(len(p) for _, p in self._runs.values())
            return len(self._run_bodies), jobs, pods, len(self._pipelines)
