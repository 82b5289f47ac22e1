"""The Pipeline reconciler: gather (Pipeline, its scheduled Runs) → plan (conveyor.core) → apply (Runs, status, Events).

Every pass validates the Pipeline into its Ready condition and, when it has a schedule, lets
conveyor.core.schedule decide which Run to create, cancel or delete. Runs are created before
status records them; their deterministic names make a repeated create a no-op, and the next pass
recognises a Run that exists for the due time, so a crash in between costs nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from conveyor.api.base import API_VERSION, Condition, ConditionStatus
from conveyor.api.modeldeployment import ModelDeploymentStatus
from conveyor.api.pipeline import Pipeline, PipelineStatus, Schedule, Trigger, TriggerStatus
from conveyor.api.run import RunPhase
from conveyor.controller import metrics
from conveyor.controller.config import OperatorConfig
from conveyor.controller.locks import ObjectLocks
from conveyor.core.documents import object_problem
from conveyor.core.schedule import CancelRun, CreateRun, DeleteRun, ScheduledRun, SchedulePlan, plan_schedule
from conveyor.core.status import set_condition
from conveyor.core.support import OPERATOR, unsupported
from conveyor.core.triggers import ObjectSeen, TriggerDecision, drift_decision, s3_decision
from conveyor.core.validation import Issue, issues_from_pydantic, issues_text, validate_pipeline
from conveyor.kube.cluster import Cluster, ClusterRefused
from conveyor.kube.timestamps import format_timestamp, parse_timestamp
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


class PipelineReconciler:
    """One pass over one Pipeline. Thread-safe per Pipeline (the event handler and the timer may overlap)."""

    def __init__(
        self,
        cluster: Cluster,
        config: OperatorConfig,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        requeue: Callable[[str, str, float | None], None] | None = None,
    ) -> None:
        self.cluster = cluster
        self.config = config
        self.clock = clock
        self.requeue = requeue
        """Told after every pass when the Pipeline next wants one (its next scheduled time; None: never), so a
        schedule fires at its minute rather than at the next resync."""
        self._locks = ObjectLocks()
        self._polled: dict[tuple[str, str, int], datetime] = {}

    def forget(self, namespace: str, name: str) -> None:
        self._locks.forget(namespace, name)
        for key in [k for k in self._polled if k[:2] == (namespace, name)]:
            del self._polled[key]

    # ------------------------------------------------------------------ gather

    def _validate(self, body: dict[str, Any]) -> tuple[Pipeline | None, list[Issue]]:
        if (too_deep := object_problem(body.get("spec"))) is not None:
            return None, [Issue("spec", too_deep)]
        try:
            pipeline = Pipeline.model_validate({k: v for k, v in body.items() if k != "status"})
        except ValidationError as e:
            return None, issues_from_pydantic(e)
        return pipeline, validate_pipeline(pipeline.spec, "spec") + unsupported(pipeline.spec, OPERATOR, "spec")

    def _scheduled_runs(self, body: dict[str, Any]) -> list[ScheduledRun]:
        """This schedule's Runs: labelled by it, referring to it, and owned by this very Pipeline (not a namesake)."""
        meta = body["metadata"]
        selector = f"{LABEL_PIPELINE}={label_value(meta['name'])},{LABEL_SCHEDULED_AT}"
        out = []
        for run in self.cluster.list_runs(meta["namespace"], selector):
            ref = ((run.get("spec") or {}).get("pipelineRef") or {}).get("name")
            owners = {o.get("uid") for o in run["metadata"].get("ownerReferences", [])}
            if ref != meta["name"] or meta["uid"] not in owners or run["metadata"].get("deletionTimestamp"):
                continue
            out.append(observed_run(run))
        return out

    # ------------------------------------------------------------------ the pass

    def reconcile(self, namespace: str, name: str) -> float | None:
        """Validate one Pipeline and act on its schedule; returns seconds until it wants another pass (None: never)."""
        wait: float | None = self.config.resync_seconds  # also what a pass that raised asks for
        try:
            with self._locks.of(namespace, name), metrics.RECONCILE.labels("Pipeline").time():
                try:
                    wait = self._reconcile(namespace, name)
                except Exception:
                    metrics.RECONCILE_ERRORS.labels("Pipeline").inc()
                    raise
        finally:
            if self.requeue is not None:
                self.requeue(namespace, name, wait)
        return wait

    def _reconcile(self, namespace: str, name: str) -> float | None:
        body = self.cluster.get_custom("pipelines", namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        meta = body["metadata"]
        generation = meta.get("generation")
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
        if pipeline is not None and not issues and pipeline.spec.schedule is not None:
            schedule = pipeline.spec.schedule
            last = parse_timestamp(old.last_scheduled_time) or parse_timestamp(meta.get("creationTimestamp")) or now
            plan = plan_schedule(name, schedule, last, now, self._scheduled_runs(body))
            self._apply(body, schedule, plan)
            if plan.last_scheduled_time is not None:
                status = status.model_copy(
                    update={
                        "last_scheduled_time": format_timestamp(plan.last_scheduled_time),
                        "last_run": plan.last_run,
                    }
                )
            wake = self._wake(plan)
        if pipeline is not None and not issues and pipeline.spec.triggers:
            status = status.model_copy(update={"triggers": self._triggers(body, pipeline, old, now)})
            wake = min(wake or self.config.resync_seconds, self.config.resync_seconds)
        self._write_status(body, old, status)
        self._ready_events(body, old, ready)
        return wake

    # ------------------------------------------------------------------ triggers

    def _triggers(
        self, body: dict[str, Any], pipeline: Pipeline, old: PipelineStatus, now: datetime
    ) -> list[TriggerStatus]:
        """Look at each trigger's source and start a Run where core.triggers says so."""
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        known = {t.index: t for t in old.triggers}
        out = []
        for i, trigger in enumerate(pipeline.spec.triggers):
            status = known.get(i) or TriggerStatus(index=i)
            finished = True
            if status.last_run:
                run = self.cluster.get_custom("runs", ns, status.last_run)
                finished = run is None or (run.get("status") or {}).get("phase") in FINISHED_PHASES
            decision = self._decide(ns, name, i, trigger, status, finished, now)
            if decision is None:
                out.append(status)
                continue
            new = decision.status
            if decision.fire:
                kind = "S3" if trigger.s3 is not None else "Drift"
                try:
                    run_name = self.cluster.create_generated_run(triggered_run(body, trigger, kind))
                except ClusterRefused as e:
                    self.cluster.event(body, "Pipeline", "Warning", "TriggerRefused", str(e))
                    out.append(status)
                    continue
                new = new.model_copy(update={"last_run": run_name})
                log.info("trigger %d of %s/%s started run %s: %s", i, ns, name, run_name, decision.reason)
                self.cluster.event(
                    body, "Pipeline", "Normal", "TriggeredRun", f"started run {run_name}: {decision.reason}"
                )
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
        md = self.cluster.get_custom("modeldeployments", ns, trigger.drift.model_deployment)
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

    def _apply(self, body: dict[str, Any], schedule: Schedule, plan: SchedulePlan) -> None:
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
                    log.info("cancelled run %s/%s to start %s (concurrencyPolicy Replace)", ns, action.name, created)
                    self.cluster.event(
                        body,
                        "Pipeline",
                        "Normal",
                        "ReplacedRun",
                        f"cancelled run {action.name} to start {created} (concurrencyPolicy Replace)",
                    )
            elif isinstance(action, CreateRun):
                when = format_timestamp(action.scheduled_at)
                if self.cluster.create_run(scheduled_run(body, action.name, action.scheduled_at)):
                    missed = f"; passed over {plan.missed} earlier missed time(s)" if plan.missed else ""
                    log.info("created run %s/%s scheduled for %s%s", ns, action.name, when, missed)
                    self.cluster.event(
                        body, "Pipeline", "Normal", "ScheduledRun", f"created run {action.name} for {when}{missed}"
                    )
                else:
                    log.info("found existing run %s/%s scheduled for %s", ns, action.name, when)
            elif isinstance(action, DeleteRun):
                limit = (
                    schedule.successful_runs_history_limit
                    if action.phase is RunPhase.SUCCEEDED
                    else schedule.failed_runs_history_limit
                )
                self.cluster.delete_run(ns, action.name)
                log.info("deleted %s run %s/%s (history limit %d)", action.phase.value.lower(), ns, action.name, limit)
                self.cluster.event(
                    body,
                    "Pipeline",
                    "Normal",
                    "DeletedRun",
                    f"deleted {action.phase.value.lower()} run {action.name} (history limit {limit})",
                )

    def _write_status(self, body: dict[str, Any], old: PipelineStatus, new: PipelineStatus) -> None:
        if old.to_wire() == new.to_wire():
            return
        meta = body["metadata"]
        self.cluster.patch_status("pipelines", meta["namespace"], meta["name"], new.to_wire())

    def _ready_events(self, body: dict[str, Any], old: PipelineStatus, ready: Condition) -> None:
        """Events on transitions only: a newly invalid spec (or a different problem), and a repaired one."""
        before = next((c for c in old.conditions if c.type == "Ready"), None)
        if ready.status is ConditionStatus.FALSE:
            if before is None or before.status is not ConditionStatus.FALSE or before.message != ready.message:
                self.cluster.event(body, "Pipeline", "Warning", ready.reason, ready.message)
        elif before is not None and before.status is not ConditionStatus.TRUE:
            self.cluster.event(body, "Pipeline", "Normal", ready.reason, ready.message)
