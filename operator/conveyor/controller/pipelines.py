"""The Pipeline reconciler: gather (Pipeline, its Runs) → plan (conveyor.core) → apply (Runs, status, Events).

Every pass validates the Pipeline into its Ready condition and, when it has a schedule, lets
conveyor.core.schedule decide which Run to create, cancel or delete. Runs are created before
status records them; their deterministic names make a repeated create a no-op, and the next pass
recognises a Run that exists for the due time, so a crash in between costs nothing.

Passes follow the control model of the other kinds (controller.passes): the Pipeline is read from the
watch cache (a GET when the cache has not seen it lately, or when the pass is redone), its status is
written only over the version the pass read and folded back, and a write refused as stale redoes the
pass on a fresh read. What a refused pass did is not lost and not done twice: the Run its schedule
created exists under its deterministic name (the redo finds it), and the trigger decisions that pass
made (a fired trigger's Run, a new watermark) are carried into the redo and every later pass until a
status write records them. Events are posted through the background recorder once the status is
written, the refused pass's among them. A pass asks its work queue for the next at the schedule's next
time, or at the resync for a schedule or triggers to keep.

A Pipeline's Runs (scheduled and triggered ones, finished or not) come from `PipelineRuns`, fed by the
Run watch; it is filled by one LIST of the Pipeline's Runs on the Pipeline's first pass in this process
and renewed by a LIST only every CACHE_TRUST_RESYNCS resyncs, not a LIST every pass.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from conveyor.api.base import API_VERSION, Condition, ConditionStatus
from conveyor.api.modeldeployment import ModelDeploymentStatus
from conveyor.api.pipeline import Pipeline, PipelineStatus, Schedule, Trigger, TriggerStatus
from conveyor.api.run import RunPhase
from conveyor.controller.config import OperatorConfig
from conveyor.controller.locks import ObjectLocks
from conveyor.controller.passes import HeldObjects, StatusObjects, timed_pass
from conveyor.core.documents import object_problem
from conveyor.core.schedule import CancelRun, CreateRun, DeleteRun, ScheduledRun, SchedulePlan, plan_schedule
from conveyor.core.status import set_condition
from conveyor.core.support import OPERATOR, unsupported
from conveyor.core.triggers import ObjectSeen, TriggerDecision, drift_decision, s3_decision
from conveyor.core.validation import Issue, issues_from_pydantic, issues_text, validate_pipeline
from conveyor.kube.cluster import Cluster, ClusterRefused
from conveyor.kube.timestamps import format_timestamp, parse_timestamp
from conveyor.kube.watchcache import WatchCache
from conveyor.manifests.job import owner_reference
from conveyor.manifests.names import LABEL_MANAGED, MANAGER, label_value
from conveyor.storage.factory import open_location
from conveyor.storage.store import StoreUnavailable

log = logging.getLogger("conveyor.pipelines")

LABEL_PIPELINE = "conveyor.dev/pipeline"
LABEL_SCHEDULED_AT = "conveyor.dev/scheduled-at"
"""Unix seconds of the scheduled time a Run was created for."""
ANNOTATION_SCHEDULED_TIME = "conveyor.dev/scheduled-time"
"""The same time, readable by people."""
LABEL_TRIGGER = "conveyor.dev/trigger"
"""Why a Run was started by the operator: S3, Drift (a Pipeline trigger) or Drift, AccuracyDropped (a
ModelDeployment's retraining)."""
FINISHED_PHASES = ("Succeeded", "Failed", "Cancelled")
TRIGGER_LIST_LIMIT = 100_000
"""At most this many objects are listed under a trigger's watched prefix per poll."""
CACHE_TRUST_RESYNCS = 6
"""A cached Pipeline is read afresh (GET), and its Runs listed afresh (LIST), once not renewed for this many
resyncs: a watch that missed an event (a deletion among them) is trusted no longer than this."""
Body = dict[str, Any]
Post = Callable[[Body, str, str, str, str], None]


def scheduled_run(pipeline: dict[str, Any], name: str, scheduled_at: datetime) -> dict[str, Any]:
    """The Run a schedule creates: owned by the Pipeline, so deleting the Pipeline deletes its scheduled Runs."""
    meta = pipeline["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": "Run",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": {
                LABEL_PIPELINE: label_value(meta["name"]),
                LABEL_SCHEDULED_AT: str(int(scheduled_at.timestamp())),
                LABEL_MANAGED: MANAGER,
            },
            "annotations": {ANNOTATION_SCHEDULED_TIME: format_timestamp(scheduled_at)},
            "ownerReferences": [owner_reference("Pipeline", meta["name"], meta["uid"])],
        },
        "spec": {"pipelineRef": {"name": meta["name"]}},
    }


def triggered_run(pipeline: dict[str, Any], trigger: Trigger, kind: str) -> dict[str, Any]:
    """The Run a trigger starts: named by the API server, owned by the Pipeline, labelled with why."""
    meta = pipeline["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": "Run",
        "metadata": {
            "generateName": f"{meta['name'][:40]}-{kind.lower()}-",
            "namespace": meta["namespace"],
            "labels": {LABEL_PIPELINE: label_value(meta["name"]), LABEL_TRIGGER: kind, LABEL_MANAGED: MANAGER},
            "ownerReferences": [owner_reference("Pipeline", meta["name"], meta["uid"])],
        },
        "spec": {"pipelineRef": {"name": meta["name"]}, "parameters": dict(trigger.parameters)},
    }


def observed_run(body: dict[str, Any]) -> ScheduledRun:
    """The schedule core's view of a Run object (defensive: a Run's status is not trusted to be well-formed)."""
    meta = body["metadata"]
    status = body.get("status") or {}
    try:
        phase = RunPhase(status.get("phase", RunPhase.PENDING.value))
    except ValueError:
        phase = RunPhase.PENDING
    created_at = parse_timestamp(meta.get("creationTimestamp")) or datetime.now(UTC)
    try:
        scheduled_at: datetime | None = datetime.fromtimestamp(int(meta["labels"][LABEL_SCHEDULED_AT]), UTC)
    except (KeyError, ValueError, OverflowError):
        scheduled_at = None
    cancel = bool((body.get("spec") or {}).get("cancel"))
    return ScheduledRun(meta["name"], phase, created_at, scheduled_at, cancel)


def _run_pipeline(body: Body) -> tuple[str, str] | None:
    """(namespace, Pipeline) of a Run the operator started for a Pipeline (labelled with it), else None."""
    meta = body.get("metadata") or {}
    if LABEL_PIPELINE not in (meta.get("labels") or {}):
        return None
    ref = ((body.get("spec") or {}).get("pipelineRef") or {}).get("name")
    if not ref or not meta.get("namespace") or not meta.get("name"):
        return None
    return meta["namespace"], ref


def _trim_run(run: Body) -> Body:
    """What the schedule core and the triggers read of a Run, and what tells a namesake's Runs apart."""
    meta = run.get("metadata") or {}
    spec = run.get("spec") or {}
    kept = ("name", "namespace", "resourceVersion", "creationTimestamp", "deletionTimestamp")
    labels = meta.get("labels") or {}
    out: Body = {
        "metadata": {
            **{k: meta[k] for k in kept if meta.get(k)},
            "labels": {k: labels[k] for k in (LABEL_PIPELINE, LABEL_SCHEDULED_AT, LABEL_TRIGGER) if k in labels},
            "ownerReferences": [{"uid": o.get("uid")} for o in meta.get("ownerReferences") or []],
        },
        "spec": {"pipelineRef": dict(spec.get("pipelineRef") or {}), "cancel": bool(spec.get("cancel"))},
    }
    phase = (run.get("status") or {}).get("phase")
    if phase:
        out["status"] = {"phase": phase}
    return out


def _later(candidate: Body, held: Body) -> bool:
    """Whether `candidate` is a later version than `held` (etcd revisions; a copy the pass made itself, with no
    resourceVersion, is older than anything the API server returned)."""
    a = candidate["metadata"].get("resourceVersion")
    b = held["metadata"].get("resourceVersion")
    if not b:
        return True
    if not a:
        return False
    try:
        return int(a) >= int(b)
    except ValueError:
        return True


class PipelineRuns:
    """The Runs the operator started for each Pipeline (its label: scheduled and triggered, finished or not), as
    the Run watch shows them, so a pass need not LIST them.

    The operator's watch cache holds unfinished Runs only, and a schedule's history limits need the finished
    ones too, so this index holds every labelled Run of the Pipelines this process reconciles, trimmed to a
    few hundred bytes each (finished scheduled Runs are bounded by the history limits). A Pipeline's Runs are
    trusted only once LISTed in this process (its first pass), and for CACHE_TRUST_RESYNCS resyncs from a LIST;
    in between every Run event, and every Run the pass itself creates, cancels or deletes, is folded in at
    once. Thread-safe: the Run handler writes, passes read.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._runs: dict[tuple[str, str], dict[str, tuple[Body, float]]] = {}
        """(namespace, Pipeline) → Run name → (trimmed Run, when folded in). A key exists once its LIST began."""
        self._listed: dict[tuple[str, str], float] = {}
        self._deleted: dict[tuple[str, str], dict[str, float]] = {}
        """Runs whose deletion the watch showed since the last LIST began (a LIST answered before it is not
        allowed to bring them back)."""

    def event(self, event: str | None, body: Body) -> None:
        """Fold in a Run's watch event (Runs of Pipelines no pass here has listed are left out)."""
        key = _run_pipeline(body)
        if key is None:
            return
        name = body["metadata"]["name"]
        with self._lock:
            held = self._runs.get(key)
            if held is None:
                return
            if event == "DELETED":
                held.pop(name, None)
                self._deleted.setdefault(key, {})[name] = self._clock()
            else:
                self._fold(held, _trim_run(body))

    def _fold(self, held: dict[str, tuple[Body, float]], run: Body) -> None:
        """Caller holds the lock. A cancel asked for, or a deletion begun, stays (neither is ever undone)."""
        name = run["metadata"]["name"]
        entry = held.get(name)
        if entry is not None:
            if not _later(run, entry[0]):
                return
            before = entry[0]
            run["spec"]["cancel"] = run["spec"]["cancel"] or before["spec"]["cancel"]
            if "deletionTimestamp" in before["metadata"]:
                run["metadata"].setdefault("deletionTimestamp", before["metadata"]["deletionTimestamp"])
        held[name] = (run, self._clock())

    def runs(self, namespace: str, pipeline: str, max_age: float) -> list[Body] | None:
        """The Pipeline's Runs (read-only), or None when they were not LISTed within `max_age` seconds."""
        key = (namespace, pipeline)
        with self._lock:
            listed = self._listed.get(key)
            if listed is None or self._clock() - listed > max_age:
                return None
            return [run for run, _ in self._runs.get(key, {}).values()]

    def listing(self, namespace: str, pipeline: str) -> float:
        """A LIST of the Pipeline's Runs is about to be sent: from now on its Runs' events are folded in."""
        with self._lock:
            self._runs.setdefault((namespace, pipeline), {})
            self._deleted.setdefault((namespace, pipeline), {})
            return self._clock()

    def listed(self, namespace: str, pipeline: str, items: list[Body], since: float) -> list[Body]:
        """Fold in what a LIST begun at `since` answered: Runs it did not name are gone unless an event or the
        pass brought them in after it began, and Runs deleted since then stay gone."""
        key = (namespace, pipeline)
        with self._lock:
            held = self._runs.setdefault(key, {})
            deleted = self._deleted.get(key, {})
            named = set()
            for item in items:
                if _run_pipeline(item) != key:
                    continue
                name = item["metadata"]["name"]
                named.add(name)
                if deleted.get(name, -1.0) < since:
                    self._fold(held, _trim_run(item))
            for name in [n for n, (_, at) in held.items() if n not in named and at < since]:
                del held[name]
            self._deleted[key] = {n: at for n, at in deleted.items() if at >= since}
            self._listed[key] = since
            return [run for run, _ in held.values()]

    def created(self, run: Body) -> None:
        """A Run the pass created (as sent, with the name the API server gave it): held until the watch shows it."""
        key = _run_pipeline(run)
        with self._lock:
            held = self._runs.get(key) if key is not None else None
            if held is not None:
                trimmed = _trim_run(run)
                trimmed["metadata"].pop("resourceVersion", None)
                self._fold(held, trimmed)

    def mark(self, namespace: str, pipeline: str, name: str, *, cancel: bool = False, deleted: bool = False) -> None:
        """The pass asked a Run to cancel, or deleted it: so the next pass does neither again."""
        with self._lock:
            entry = self._runs.get((namespace, pipeline), {}).get(name)
            if entry is None:
                return
            run = entry[0]
            run = {**run, "metadata": dict(run["metadata"]), "spec": dict(run["spec"])}
            if cancel:
                run["spec"]["cancel"] = True
            if deleted:
                run["metadata"].setdefault("deletionTimestamp", format_timestamp(datetime.now(UTC)))
            self._runs[(namespace, pipeline)][name] = (run, entry[1])

    def forget(self, namespace: str, pipeline: str) -> None:
        with self._lock:
            self._runs.pop((namespace, pipeline), None)
            self._listed.pop((namespace, pipeline), None)
            self._deleted.pop((namespace, pipeline), None)

    def sizes(self) -> tuple[int, int]:
        """(Pipelines, Runs) held: for tests."""
        with self._lock:
            return len(self._runs), sum(len(r) for r in self._runs.values())


@dataclass
class _Unwritten:
    """What passes over one Pipeline did that no status write has recorded yet (the write was refused as stale,
    or the pass failed after acting): kept for the next pass, so a redo neither loses it nor does it again."""

    uid: str | None
    notes: list[tuple[str, str, str]] = field(default_factory=list)
    """Events (type, reason, message) about Runs created, cancelled and deleted: posted after the write."""
    triggers: dict[int, TriggerStatus] = field(default_factory=dict)
    """Each trigger's status as its last look decided (a fired trigger's new Run, a watermark moved on)."""


class PipelineReconciler:
    """One pass over one Pipeline. Thread-safe per Pipeline; different Pipelines reconcile concurrently."""

    def __init__(
        self,
        cluster: Cluster,
        config: OperatorConfig,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        requeue: Callable[[str, str, float | None], None] | None = None,
        watched: WatchCache | None = None,
        events: Post | None = None,
        runs: PipelineRuns | None = None,
    ) -> None:
        self.cluster = cluster
        self.config = config
        self.clock = clock
        self.requeue = requeue
        """Told after every pass when the Pipeline next wants one (its next scheduled time, the resync for a
        schedule or triggers to keep; None: never), so a schedule fires at its minute."""
        self.watched = watched
        self.post_event = events
        """Posts an Event (the operator's is asynchronous: `controller.events.EventRecorder`); else the cluster's."""
        self.runs = runs or PipelineRuns()
        trust = CACHE_TRUST_RESYNCS * config.resync_seconds
        self._trust = trust
        self._objects = StatusObjects(
            cluster, "pipelines", "Pipeline", HeldObjects(watched, "pipelines") if watched else None, trust
        )
        self._locks = ObjectLocks()
        self._polled: dict[tuple[str, str, int], datetime] = {}
        self._unwritten: dict[tuple[str, str], _Unwritten] = {}

    def forget(self, namespace: str, name: str) -> None:
        self._locks.forget(namespace, name)
        for key in [k for k in self._polled if k[:2] == (namespace, name)]:
            del self._polled[key]
        self._unwritten.pop((namespace, name), None)
        self.runs.forget(namespace, name)
        if self.watched is not None:
            self.watched.forget_object("pipelines", namespace, name)

    def run_event(self, event: str | None, body: Body) -> None:
        """A Run's watch event (the operator's Run handler feeds every one here)."""
        self.runs.event(event, body)

    def _event(self, body: Body, type_: str, reason: str, message: str) -> None:
        post = self.post_event or self.cluster.event
        post(body, "Pipeline", type_, reason, message)

    # ------------------------------------------------------------------ gather

    def _validate(self, body: Body) -> tuple[Pipeline | None, list[Issue]]:
        if (too_deep := object_problem(body.get("spec"))) is not None:
            return None, [Issue("spec", too_deep)]
        try:
            pipeline = Pipeline.model_validate({k: v for k, v in body.items() if k != "status"})
        except ValidationError as e:
            return None, issues_from_pydantic(e)
        return pipeline, validate_pipeline(pipeline.spec, "spec") + unsupported(pipeline.spec, OPERATOR, "spec")

    def _pipeline_runs(self, body: Body) -> list[Body]:
        """The Runs labelled with this Pipeline: from the Run watch, or one LIST when not listed lately."""
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        held = self.runs.runs(ns, name, self._trust)
        if held is not None:
            return held
        since = self.runs.listing(ns, name)
        listed = self.cluster.list_runs(ns, f"{LABEL_PIPELINE}={label_value(name)}")
        return self.runs.listed(ns, name, listed, since)

    @staticmethod
    def _scheduled_runs(body: Body, runs: list[Body]) -> list[ScheduledRun]:
        """This schedule's Runs: labelled by it, referring to it, and owned by this very Pipeline (not a namesake)."""
        meta = body["metadata"]
        out = []
        for run in runs:
            ref = ((run.get("spec") or {}).get("pipelineRef") or {}).get("name")
            owners = {o.get("uid") for o in run["metadata"].get("ownerReferences", [])}
            if LABEL_SCHEDULED_AT not in (run["metadata"].get("labels") or {}):
                continue
            if ref != meta["name"] or meta["uid"] not in owners or run["metadata"].get("deletionTimestamp"):
                continue
            out.append(observed_run(run))
        return out

    # ------------------------------------------------------------------ the pass

    def reconcile(self, namespace: str, name: str) -> float | None:
        """Validate one Pipeline and act on its schedule and triggers; returns seconds until it wants another pass
        (None: never), which the work queue is told whatever happened."""
        with self._locks.of(namespace, name):
            return timed_pass(
                "Pipeline",
                namespace,
                name,
                lambda fresh: self._pass(namespace, name, fresh),
                resync=self.config.resync_seconds,
                requeue=self.requeue,
            )

    def _pass(self, namespace: str, name: str, fresh: bool = False) -> float | None:
        body = self._objects.read(namespace, name, fresh)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        meta = body["metadata"]
        generation = meta.get("generation")
        unwritten = self._unwritten.get((namespace, name))
        if unwritten is None or unwritten.uid != meta.get("uid"):  # none, or a namesake's before it
            unwritten = self._unwritten[(namespace, name)] = _Unwritten(meta.get("uid"))
        try:
            old = PipelineStatus.model_validate(body.get("status") or {})
        except ValidationError:
            old = PipelineStatus()  # rewritten whole below
        now = self.clock()
        pipeline, issues = self._validate(body)
        ready = Condition(
            type="Ready",
            status=ConditionStatus.FALSE if issues else ConditionStatus.TRUE,
            reason="InvalidSpec" if issues else "Valid",
            message=issues_text(issues) if issues else "the spec is valid; Runs can start",
            last_transition_time=now,
            observed_generation=generation,
        )
        status = old.model_copy(
            update={"observed_generation": generation, "conditions": set_condition(old.conditions, ready)}
        )
        wake: float | None = None
        valid = pipeline is not None and not issues
        schedule = pipeline.spec.schedule if valid and pipeline is not None else None
        triggers = pipeline.spec.triggers if valid and pipeline is not None else []
        runs = self._pipeline_runs(body) if schedule is not None or triggers else []
        if schedule is not None:
            last = parse_timestamp(old.last_scheduled_time) or parse_timestamp(meta.get("creationTimestamp")) or now
            plan = plan_schedule(name, schedule, last, now, self._scheduled_runs(body, runs))
            self._apply(body, schedule, plan, unwritten)
            if plan.last_scheduled_time is not None:
                status = status.model_copy(
                    update={
                        "last_scheduled_time": format_timestamp(plan.last_scheduled_time),
                        "last_run": plan.last_run,
                    }
                )
            wake = self._wake(plan)
            if not schedule.suspend:  # Runs ending (a time Forbid held back, history limits) are seen at the resync
                wake = min(wake or self.config.resync_seconds, self.config.resync_seconds)
        refusals: list[tuple[str, str, str]] = []
        """Events of this pass alone (a refused create is decided again by a redo, so not carried)."""
        if pipeline is not None and triggers:
            looked = self._triggers(body, pipeline, old, now, runs, unwritten, refusals)
            status = status.model_copy(update={"triggers": looked})
            wake = min(wake or self.config.resync_seconds, self.config.resync_seconds)
        self._write_status(body, old, status)
        # Written (or nothing to write): what the passes did is on record, and may be said.
        del self._unwritten[(namespace, name)]
        for type_, reason, message in unwritten.notes + refusals:
            self._event(body, type_, reason, message)
        self._ready_events(body, old, ready)
        return wake

    # ------------------------------------------------------------------ triggers

    def _triggers(
        self,
        body: Body,
        pipeline: Pipeline,
        old: PipelineStatus,
        now: datetime,
        runs: list[Body],
        unwritten: _Unwritten,
        refusals: list[tuple[str, str, str]],
    ) -> list[TriggerStatus]:
        """Look at each trigger's source and start a Run where core.triggers says so."""
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        known = {t.index: t for t in old.triggers}
        known.update(unwritten.triggers)  # decided by a pass whose status write did not happen
        phases = {r["metadata"]["name"]: r for r in runs}
        out = []
        for i, trigger in enumerate(pipeline.spec.triggers):
            status = known.get(i) or TriggerStatus(index=i)
            finished = True
            if status.last_run:
                run = phases.get(status.last_run)  # not among the Pipeline's Runs: gone
                finished = (
                    run is None
                    or bool(run["metadata"].get("deletionTimestamp"))
                    or (run.get("status") or {}).get("phase") in FINISHED_PHASES
                )
            decision = self._decide(ns, name, i, trigger, status, finished, now)
            if decision is None:
                out.append(status)
                continue
            new = decision.status
            if decision.fire:
                kind = "S3" if trigger.s3 is not None else "Drift"
                manifest = triggered_run(body, trigger, kind)
                try:
                    run_name = self.cluster.create_generated_run(manifest)
                except ClusterRefused as e:
                    refusals.append(("Warning", "TriggerRefused", str(e)))
                    out.append(status)
                    continue
                manifest["metadata"]["name"] = run_name
                self.runs.created(manifest)
                new = new.model_copy(update={"last_run": run_name})
                log.info("trigger %d of %s/%s started run %s: %s", i, ns, name, run_name, decision.reason)
                unwritten.notes.append(("Normal", "TriggeredRun", f"started run {run_name}: {decision.reason}"))
            unwritten.triggers[i] = new
            out.append(new)
        return out

    def _decide(
        self, ns: str, name: str, i: int, trigger: Trigger, status: TriggerStatus, finished: bool, now: datetime
    ) -> TriggerDecision | None:
        if trigger.s3 is not None:
            last = self._polled.get((ns, name, i))
            if last is not None and (now - last).total_seconds() < trigger.s3.poll_seconds:
                return None
            store, prefix = open_location(trigger.s3.uri, self.config.s3_endpoint)
            try:
                listed = store.list_objects(prefix, limit=TRIGGER_LIST_LIMIT)
            except StoreUnavailable as e:
                log.warning("trigger %d of %s/%s cannot list %s: %s", i, ns, name, trigger.s3.uri, e)
                return None
            finally:
                store.close()
            self._polled[(ns, name, i)] = now
            return s3_decision(status, [ObjectSeen(o.key, o.modified) for o in listed], finished, now)
        assert trigger.drift is not None
        deployment = trigger.drift.model_deployment
        md = self.watched.object("modeldeployments", ns, deployment, self._trust) if self.watched else None
        if md is None:  # not watched here, or not heard of lately
            md = self.cluster.get_custom("modeldeployments", ns, deployment)
            if md is not None and self.watched is not None:
                self.watched.object_written("modeldeployments", md)  # renews a cached copy, adds none
        if md is None:
            return None
        try:
            md_status = ModelDeploymentStatus.model_validate(md.get("status") or {})
        except ValidationError:
            return None
        drifting = any(c.type == "Drifting" and c.status is ConditionStatus.TRUE for c in md_status.conditions)
        episode = md_status.drift.above_since if md_status.drift is not None else None
        return drift_decision(status, drifting, episode, finished, now, trigger.drift.model_deployment)

    def _wake(self, plan: SchedulePlan) -> float | None:
        if plan.blocked_by:
            return self.config.resync_seconds  # look again soon: the held-back time starts when the Run ends
        if plan.next_time is None:
            return None
        return max(0.5, (plan.next_time - self.clock()).total_seconds())

    # ------------------------------------------------------------------ apply

    def _apply(self, body: Body, schedule: Schedule, plan: SchedulePlan, unwritten: _Unwritten) -> None:
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        if plan.blocked_by:
            log.debug(
                "held back the run of %s/%s due at %s: concurrencyPolicy Forbid and %s unfinished",
                ns,
                name,
                plan.due,
                ", ".join(plan.blocked_by),
            )
        created = next((a.name for a in plan.actions if isinstance(a, CreateRun)), None)
        for action in plan.actions:
            if isinstance(action, CancelRun):
                if self.cluster.patch_run_spec(ns, action.name, {"cancel": True}):
                    self.runs.mark(ns, name, action.name, cancel=True)
                    log.info("cancelled run %s/%s to start %s (concurrencyPolicy Replace)", ns, action.name, created)
                    unwritten.notes.append(
                        (
                            "Normal",
                            "ReplacedRun",
                            f"cancelled run {action.name} to start {created} (concurrencyPolicy Replace)",
                        )
                    )
            elif isinstance(action, CreateRun):
                when = format_timestamp(action.scheduled_at)
                run = scheduled_run(body, action.name, action.scheduled_at)
                if self.cluster.create_run(run):
                    run["metadata"]["creationTimestamp"] = format_timestamp(self.clock())
                    self.runs.created(run)
                    missed = f"; passed over {plan.missed} earlier missed time(s)" if plan.missed else ""
                    log.info("created run %s/%s scheduled for %s%s", ns, action.name, when, missed)
                    unwritten.notes.append(("Normal", "ScheduledRun", f"created run {action.name} for {when}{missed}"))
                else:
                    log.info("found existing run %s/%s scheduled for %s", ns, action.name, when)
            elif isinstance(action, DeleteRun):
                limit = (
                    schedule.successful_runs_history_limit
                    if action.phase is RunPhase.SUCCEEDED
                    else schedule.failed_runs_history_limit
                )
                self.cluster.delete_run(ns, action.name)
                self.runs.mark(ns, name, action.name, deleted=True)
                log.info("deleted %s run %s/%s (history limit %d)", action.phase.value.lower(), ns, action.name, limit)
                unwritten.notes.append(
                    (
                        "Normal",
                        "DeletedRun",
                        f"deleted {action.phase.value.lower()} run {action.name} (history limit {limit})",
                    )
                )

    def _write_status(self, body: Body, old: PipelineStatus, new: PipelineStatus) -> None:
        """The whole status, over the version the pass read (StaleObject if it moved on), folded into the cache."""
        if old.to_wire() == new.to_wire():
            return
        self._objects.write_status(body, new.to_wire())

    def _ready_events(self, body: Body, old: PipelineStatus, ready: Condition) -> None:
        """Events on transitions only: a newly invalid spec (or a different problem), and a repaired one."""
        before = next((c for c in old.conditions if c.type == "Ready"), None)
        if ready.status is ConditionStatus.FALSE:
            if before is None or before.status is not ConditionStatus.FALSE or before.message != ready.message:
                self._event(body, "Warning", ready.reason, ready.message)
        elif before is not None and before.status is not ConditionStatus.TRUE:
            self._event(body, "Normal", ready.reason, ready.message)
