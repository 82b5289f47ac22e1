"""The console over a cluster: Runs from the API server, records and archived logs from the artifact store.

The runs list is one LIST of Runs (cluster-wide, or one per namespace given) kept for `ttl` seconds, so
a page and its polls cost one API call a few seconds whatever the number of Runs; a Run page adds one
LIST of its step pods (same lifetime) for the attempts they show. A Run that has ended and whose record
is stored (status.recordUri) is shown from its record, read once: records never change. One still going,
or whose record is not stored yet, is shown from its status (objects.live_record), its fan-out items
from the store's units document, its DAG's edges from its spec (inline, or its Pipeline).

A log is the archived one when the store has it (the step runtime archives its log as the attempt ends,
and it outlives the pod), else the pod's own log while the pod exists (a running step). The console
reads no Secret: the store's credentials are the process's own (AWS_* variables).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError

from conveyor.api.pipeline import PipelineSpec
from conveyor.cli.records import checked_record
from conveyor.console.models import deployment_id, deployment_view, deployments_view
from conveyor.console.objects import (
    attempts_from_pods,
    conditions_of,
    console_id,
    edges_of,
    live_record,
    log_names,
    pod_of,
    run_row_of,
    split_id,
)
from conveyor.console.source import NotFound, StoredRecords, Unavailable, plot_json
from conveyor.console.views import FINAL_PHASES, RunRow, run_view
from conveyor.core.planner import StepState
from conveyor.core.record import LOG_LIMIT_BYTES, log_document, record_document
from conveyor.core.redact import redact_text
from conveyor.core.status import state_from_wire
from conveyor.core.task import units_document
from conveyor.core.validation import InvalidSpec

if TYPE_CHECKING:
    from conveyor.kube.reader import ClusterReader
    from conveyor.storage.store import ArtifactStore

log = logging.getLogger("conveyor.console")

TTL_SECONDS = 2.0
KEPT_KEYS = 512
STEP_CONTAINER = "step"

Body = dict[str, Any]
T = TypeVar("T")


class _Timed:
    """Values kept for `ttl` seconds of `clock`, each made by one caller while others wait for it."""

    def __init__(self, ttl: float, clock: Callable[[], float]) -> None:
        self.ttl, self.clock = ttl, clock
        self._held: dict[Any, tuple[float, Any]] = {}
        self._locks: dict[Any, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, key: Any, make: Callable[[], Any]) -> Any:
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:  # one request per key at a time: concurrent polls share its answer
            held = self._held.get(key)
            if held is not None and self.clock() - held[0] < self.ttl:
                return held[1]
            value = make()
            now = self.clock()
            self._held[key] = (now, value)
        if len(self._held) > KEPT_KEYS:  # runs looked at once: forget what is long stale
            with self._lock:
                for k in [k for k, (t, _) in self._held.items() if now - t >= self.ttl]:
                    self._held.pop(k, None)
                    self._locks.pop(k, None)
        return value

    def drop(self, key: Any) -> None:
        with self._lock:
            self._held.pop(key, None)


class ClusterSource(StoredRecords):
    """Runs in the namespaces given (every namespace when none) of the cluster `reader` reads."""

    def __init__(
        self,
        reader: ClusterReader,
        store: ArtifactStore,
        namespaces: Sequence[str] = (),
        *,
        ttl: float = TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(store)
        self.reader = reader
        self.namespaces = tuple(dict.fromkeys(namespaces))
        where = f"namespaces {', '.join(self.namespaces)}" if self.namespaces else "all namespaces"
        self.description = f"cluster {reader.host}, {where}"
        self._timed = _Timed(ttl, clock)
        self._records: dict[str, dict[str, Any]] = {}  # by Run uid: a stored record never changes
        self._views: dict[str, dict[str, Any]] = {}  # by Run uid, once it has its record
        self._unreadable: set[tuple[str, str]] = set()  # pods whose log the API server could not read

    # ------------------------------------------------------------ Runs

    def _bodies(self) -> dict[str, Body]:
        def list_runs() -> dict[str, Body]:
            bodies = []
            for ns in self.namespaces or (None,):
                bodies += _asked(partial(self.reader.list_custom, "runs", ns))
            return {console_id(b): b for b in bodies}

        held: dict[str, Body] = self._timed.get("runs", list_runs)
        return held

    def _body(self, run_id: str) -> Body:
        where = split_id(run_id)
        if where is None or (self.namespaces and where[0] not in self.namespaces):
            raise NotFound(f"run {run_id!r} does not exist (runs are named namespace/name)")
        body = self._bodies().get(run_id)
        if body is None:  # created since the last LIST
            body = _asked(lambda: self.reader.get_custom("runs", *where))
            if body is None:
                raise NotFound(f"run {run_id!r} does not exist")
            self._timed.drop("runs")
        return body

    def rows(self) -> list[RunRow]:
        return [run_row_of(b) for b in self._bodies().values()]

    def changed(self) -> None:
        """An action changed the cluster: the next page reads it again instead of the kept LIST."""
        self._timed.drop("runs")

    def _record(self, body: Body) -> dict[str, Any] | None:
        """The Run's stored record (its runId the console's name for it), or None while it has none."""
        uid = str(body["metadata"]["uid"])
        if uid in self._records:
            return self._records[uid]
        if not (body.get("status") or {}).get("recordUri"):
            return None  # the operator sets recordUri once the record is stored: no store read before
        name = console_id(body)
        try:
            stored = checked_record(name, lambda: self.store.get_document(record_document(uid)))
        except InvalidSpec:
            return None  # a corrupt record: the Run is shown from its status
        if stored is None:
            return None
        record = {**stored, "runId": name}
        with self._lock:
            self._records[uid] = record
        return record

    def _pods(self, body: Body) -> list[Body]:
        meta = body["metadata"]
        pods: list[Body] = self._timed.get(
            ("pods", meta["uid"]), lambda: _asked(lambda: self.reader.run_pods(meta["namespace"], meta["name"]))
        )
        return pods

    def _units(self, body: Body) -> dict[str, StepState]:
        """The per-item states of the Run's fan-outs (kept in the store by the operator), if it has any."""
        steps = (body.get("status") or {}).get("steps") or []
        if not any(s.get("fanOut") for s in steps):
            return {}
        doc = self.store.get_document(units_document(str(body["metadata"]["uid"]))) or {}
        return {str(k): state_from_wire(v) for k, v in (doc.get("units") or {}).items()}

    def _spec_of(self, body: Body) -> PipelineSpec | None:
        """What the Run runs: its inline spec, or its Pipeline's (None when neither can be read)."""
        spec = body.get("spec") or {}
        wire = spec.get("pipelineSpec")
        if wire is None and (spec.get("pipelineRef") or {}).get("name"):
            ns, name = body["metadata"]["namespace"], spec["pipelineRef"]["name"]
            pipeline = self._timed.get(
                ("pipeline", ns, name), lambda: _asked(lambda: self.reader.get_custom("pipelines", ns, name))
            )
            wire = (pipeline or {}).get("spec")
        try:
            return PipelineSpec.model_validate(wire) if isinstance(wire, dict) else None
        except ValidationError:
            return None

    def run(self, run_id: str) -> dict[str, Any]:
        body = self._body(run_id)
        uid = str(body["metadata"]["uid"])
        if uid in self._views:
            return self._views[uid]
        attempts = attempts_from_pods(self._pods(body))
        conditions = conditions_of(body)
        record = self._record(body)
        if record is None:
            spec = self._spec_of(body)
            live = live_record(body, self._units(body))
            edges = edges_of(spec, with_inputs=True) if spec is not None else {}
            return run_view(live, edges, attempts=attempts, live=True, conditions=conditions)
        plots = [plot_json(run_id, p) for p, _ in self._plots_of(record)]
        view = run_view(record, self._depends_on(record), plots, attempts, conditions=conditions)
        if record.get("phase") in FINAL_PHASES:
            with self._lock:
                self._views[uid] = view
        return view

    def records(self, run_ids: Sequence[str]) -> list[dict[str, Any]]:
        out = []
        for run_id in run_ids:
            body = self._body(run_id)
            record = self._record(body)
            if record is None:
                phase = (body.get("status") or {}).get("phase") or "Pending"
                raise NotFound(
                    f"run {run_id!r} has no record yet (phase {phase}): runs are compared once they have one"
                )
            out.append(record)
        return out

    def _all_records(self) -> list[dict[str, Any]]:
        out = []
        for body in self._bodies().values():
            record = self._record(body)
            if record is not None:
                out.append(record)
        return out

    # ------------------------------------------------------------ logs and plots

    def log(self, run_id: str, key: str, attempt: int) -> str | None:
        body = self._body(run_id)
        uid = str(body["metadata"]["uid"])
        record = self._record(body)
        known: Sequence[str] = (
            [n for s in record.get("steps", []) for n in s.get("logs", [])]
            if record is not None
            else log_names(body, self._units(body))
        )
        name = log_document(uid, key, attempt)
        if name not in known:
            raise NotFound(f"run {run_id!r} has no attempt {attempt} of {key!r}")
        text = self.store.get_text(name)
        if text is None:  # not archived yet: the pod's own log while the pod exists
            pod = pod_of(self._pods(body), key, attempt)
            if pod is not None:
                text = self._pod_log(body["metadata"]["namespace"], pod)
        return None if text is None else redact_text(text)

    def _pod_log(self, namespace: str, pod: str) -> str | None:
        """The pod's log, or None when it cannot be read (the node's kubelet unreachable, say), said once a pod."""
        from conveyor.kube.reader import ReadRefused  # noqa: PLC0415

        try:
            return self.reader.pod_log(namespace, pod, STEP_CONTAINER, LOG_LIMIT_BYTES)
        except ReadRefused as e:
            if (namespace, pod) not in self._unreadable:
                self._unreadable.add((namespace, pod))
                log.warning("%s; the step's log shows once it is archived", e)
            return None

    def plot_png(self, run_id: str, step: str, index: int) -> bytes:
        return self._plot_in(self._record(self._body(run_id)), run_id, step, index)

    # ------------------------------------------------------------ ModelDeployments

    def _deployment_bodies(self) -> dict[str, Body]:
        def list_them() -> dict[str, Body]:
            bodies = []
            for ns in self.namespaces or (None,):
                bodies += _asked(partial(self.reader.list_custom, "modeldeployments", ns))
            return {deployment_id(b): b for b in bodies}

        held: dict[str, Body] = self._timed.get("modeldeployments", list_them)
        return held

    def deployments(self) -> dict[str, Any]:
        return deployments_view(self._deployment_bodies().values())

    def deployment(self, deployment: str) -> dict[str, Any]:
        where = split_id(deployment)
        if where is None or (self.namespaces and where[0] not in self.namespaces):
            raise NotFound(f"model deployment {deployment!r} does not exist (they are named namespace/name)")
        body = self._deployment_bodies().get(deployment)
        if body is None:  # created since the last LIST
            body = _asked(lambda: self.reader.get_custom("modeldeployments", *where))
            if body is None:
                raise NotFound(f"model deployment {deployment!r} does not exist")
            self._timed.drop("modeldeployments")
        events = self._timed.get(
            ("events", *where), lambda: _asked(lambda: self.reader.events_of(where[0], "ModelDeployment", where[1]))
        )
        retraining = ((body.get("status") or {}).get("retraining") or {}).get("run")
        run = self._bodies().get(f"{where[0]}/{retraining}") if retraining else None
        phase = str((run.get("status") or {}).get("phase") or "Pending") if run is not None else None
        return deployment_view(body, events, phase)


def _asked(read: Callable[[], T]) -> T:
    """`read()`, a refusal of the API server's turned into the app's 503 (naming what was refused)."""
    from conveyor.kube.reader import ReadRefused  # noqa: PLC0415

    try:
        return read()
    except ReadRefused as e:
        raise Unavailable(str(e)) from None
