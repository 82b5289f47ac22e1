"""The Run reconciler: gather (Run, Pipeline, Jobs) → plan (conveyor.core) → apply (Jobs, status, Events).

Level-triggered: every pass re-derives everything from the Run's status and the Jobs that exist,
so a missed event, a duplicate event, or an operator killed mid-pass costs nothing. Jobs are
created before status records them; a crash in between is healed on the next pass because the
Job's deterministic name makes the repeated create a no-op.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from conveyor import __version__
from conveyor.api.base import ConditionStatus
from conveyor.api.pipeline import Pipeline, PipelineSpec
from conveyor.api.pod import merge_pod_settings
from conveyor.api.run import PipelineVersion, Run, RunPhase, RunStatus, StepPhase
from conveyor.controller import metrics
from conveyor.controller.config import OperatorConfig
from conveyor.controller.locks import Coalescer
from conveyor.controller.passes import HeldRuns, StatusObjects, timed_pass
from conveyor.core.concurrency import RunSlot, may_start
from conveyor.core.documents import object_problem
from conveyor.core.planner import (
    EXIT_FAILED,
    Kill,
    Launch,
    Plan,
    ReuseCached,
    RunContext,
    RunPlanner,
    Skip,
    StepState,
    adopt_launched,
    finished,
    killed,
)
from conveyor.core.podstart import POD_CONDITION, WaitingPod, pods_started_condition
from conveyor.core.record import record_document, run_record, spec_digest
from conveyor.core.redact import redact_text
from conveyor.core.resources import kind_refusal, resource_outcome
from conveyor.core.resourcesteps import objects_to_delete
from conveyor.core.retry import step_timeout_message
from conveyor.core.status import (
    EXIT_CONDITION,
    exit_condition,
    progress,
    set_condition,
    state_from_wire,
    state_to_wire,
    states_from_status,
    step_statuses,
    succeeded_condition,
)
from conveyor.core.support import OPERATOR, unsupported_steps
from conveyor.core.task import StoreConfig, TaskResult, result_document, step_of, units_document
from conveyor.core.validation import issues_from_pydantic, issues_text, resolve_parameters, validate_pipeline
from conveyor.kube.cluster import Cluster, ClusterRefused, JobObservation, StaleObject, observe_jobs
from conveyor.kube.objects import DeleteFailed, StepObjects
from conveyor.kube.timestamps import parse_timestamp
from conveyor.kube.watchcache import WatchCache
from conveyor.lifecycle.specs import store_spec
from conveyor.manifests.job import step_job
from conveyor.manifests.names import job_name
from conveyor.manifests.resource import object_name, step_object
from conveyor.storage.cache import StoreCache
from conveyor.storage.store import ArtifactStore, StoreUnavailable

log = logging.getLogger("conveyor.runs")

DONE = (RunPhase.SUCCEEDED, RunPhase.FAILED, RunPhase.CANCELLED)
IDLE_RESYNC_FACTOR = 6


def idle_resync(previous: float | None, changed: bool, base: float) -> float:
    """The Run's resync: `base` after a pass that did something, doubling after each pass that found nothing
    to do, up to `IDLE_RESYNC_FACTOR` times `base`. Events drive progress and the resync only catches what
    they missed: a Run waiting for its pods should not cost a pass every interval."""
    if changed or previous is None:
        return base
    return min(previous * 2, base * IDLE_RESYNC_FACTOR)


@dataclass(frozen=True)
class Resolved:
    spec: PipelineSpec
    pipeline_name: str
    params: dict[str, Any]
    version: PipelineVersion | None = None
    """The Pipeline's generation (None for an inline spec) and the spec's digest."""


class SpecProblem(Exception):
    """The Run cannot start: a missing Pipeline (reason, retry) or an invalid one (final)."""

    def __init__(self, reason: str, message: str, final: bool) -> None:
        super().__init__(message)
        self.reason, self.message, self.final = reason, message, final


class RunReconciler:
    """One pass over one Run. Thread-safe per Run; different Runs reconcile concurrently."""

    def __init__(
        self,
        cluster: Cluster,
        store: ArtifactStore,
        config: OperatorConfig,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        watched: WatchCache | None = None,
        requeue: Callable[[str, str, float | None], None] | None = None,
        events: Callable[[dict[str, Any], str, str, str, str], None] | None = None,
        objects: StepObjects | None = None,
    ) -> None:
        self.cluster = cluster
        self._step_objects = objects
        """Resource steps' objects (built on first need from the cluster's API client)."""
        self._gone_objects: dict[tuple[str, str], set[tuple[str, int]]] = {}
        """Per Run, the resource-step objects (key, attempt) deleted or found gone: the rest are asked again."""
        self.store = store
        self.cache = StoreCache(store)
        self.config = config
        self.clock = clock
        self.watched = watched
        self.requeue = requeue
        """Told after every pass when the Run next wants one (None: never), whatever started the pass."""
        self.post_event = events or cluster.event
        """Posts an Event (the operator's is asynchronous: `controller.events.EventRecorder`)."""
        self._objects = StatusObjects(
            cluster, "runs", "Run", HeldRuns(watched) if watched is not None else None, config.resync_seconds
        )
        """The Run as passes read it (the watch cache, else a GET) and write its status (conditionally)."""
        self._passes = Coalescer()
        self._listed: set[tuple[str, str]] = set()
        """Runs whose Jobs the watch cache holds: LISTed once in this process, or created while it watched."""
        self._idle: dict[tuple[str, str], float] = {}
        self._validated: dict[tuple[str, str, str], tuple[PipelineSpec | None, SpecProblem | None]] = {}
        self._digests: dict[tuple[str, str, str], str] = {}
        """The spec digest of each Pipeline resourceVersion (a pass would otherwise re-serialize the spec)."""
        self._guard = threading.Lock()

    def born_watched(self, namespace: str, name: str) -> None:
        """The Run was created while this process's watches ran (a watch ADDED, not the initial listing), and
        no other process acts on Runs (standalone): every Job of it was created by this process after the
        watches started, so the watch cache has seen or will see each one, and its first pass need not LIST."""
        with self._guard:
            self._listed.add((namespace, name))

    def forget(self, namespace: str, name: str) -> None:
        self._passes.forget(namespace, name)
        with self._guard:
            self._listed.discard((namespace, name))
            self._idle.pop((namespace, name), None)
        self._gone_objects.pop((namespace, name), None)  # its objects go with it (owner reference)
        if self.watched is not None:
            self.watched.forget_run(namespace, name)

    def _jobs(
        self, namespace: str, name: str, states: Mapping[str, StepState], spec: PipelineSpec
    ) -> dict[tuple[str, int], JobObservation]:
        """The Run's Jobs, from the watch cache when it cannot mislead, else from two LISTs.

        The first pass of a Run in this process LISTs (the watches may still be delivering their initial
        listing). Later passes read the cache, unless a step this Run believes running has no Job there
        yet (a Job created a moment ago whose watch event is on its way: concluding "its Job disappeared"
        would retry a step that is running), or its Job looks finished without its pod's result (the
        pod's event is on its way: concluding "no result" would fail it); then the pass LISTs."""
        key = (namespace, name)
        if self.watched is not None:
            with self._guard:
                listed_before = key in self._listed
            if listed_before:
                seen = observe_jobs(*self.watched.run_objects(namespace, name))
                # fan-outs and resource steps have no Job of their own
                jobless = {s.name for s in spec.all_steps() if s.for_each is not None or s.resource is not None}
                running = [
                    (k, st.attempts) for k, st in states.items() if st.phase is StepPhase.RUNNING and k not in jobless
                ]
                # The Job and pod watches are separate streams: a Job may show Complete before its pod's
                # termination message has arrived here; such a step is read from the LIST.
                if all(r in seen and (not seen[r].finished or seen[r].termination_message) for r in running):
                    metrics.JOB_VIEWS.labels("watch").inc()
                    return seen
        jobs = self.cluster.run_jobs(namespace, name)
        metrics.JOB_VIEWS.labels("list").inc()
        with self._guard:
            self._listed.add(key)
        return jobs

    # ------------------------------------------------------------------ gather

    def _resolve(self, run: Run, namespace: str) -> Resolved:
        if run.spec.pipeline_spec is not None:
            spec, pipeline_name, path = run.spec.pipeline_spec, "(inline)", "spec.pipelineSpec"
        else:
            assert run.spec.pipeline_ref is not None
            pipeline_name, path = run.spec.pipeline_ref.name, f"pipeline {run.spec.pipeline_ref.name}: spec"
            body = self.watched.pipeline(namespace, pipeline_name) if self.watched is not None else None
            if body is None:
                body = self.cluster.get_custom("pipelines", namespace, pipeline_name)
            if body is None:
                raise SpecProblem("PipelineNotFound", f"pipeline {pipeline_name!r} does not exist", final=False)
            spec = self._validated_pipeline(namespace, pipeline_name, body, path)
            resolved = self._with_params(run, spec, pipeline_name)
            version = PipelineVersion(
                generation=body.get("metadata", {}).get("generation"),
                spec_digest=self._digest(namespace, pipeline_name, body, spec),
            )
            return Resolved(resolved.spec, resolved.pipeline_name, resolved.params, version)
        if (too_deep := object_problem(spec.to_wire())) is not None:
            raise SpecProblem("InvalidSpec", f"{path}: {too_deep}", final=True)
        issues = validate_pipeline(spec, path) + unsupported_steps(spec, OPERATOR, path)
        recorded_params = run.status.parameters if run.status and run.status.parameters else None
        params, param_issues = resolve_parameters(spec, recorded_params or run.spec.parameters, "spec.parameters")
        issues += param_issues
        if issues:
            raise SpecProblem("InvalidSpec", issues_text(issues), final=True)
        return Resolved(spec, pipeline_name, params, PipelineVersion(spec_digest=spec_digest(spec)))

    def _digest(self, namespace: str, name: str, body: dict[str, Any], spec: PipelineSpec) -> str:
        key = (namespace, name, str(body.get("metadata", {}).get("resourceVersion", "")))
        with self._guard:
            digest = self._digests.get(key)
        if digest is None:
            digest = spec_digest(spec)
            with self._guard:
                if len(self._digests) > 1000:
                    self._digests.clear()
                self._digests[key] = digest
        return digest

    def _validated_pipeline(self, namespace: str, name: str, body: dict[str, Any], path: str) -> PipelineSpec:
        """The Pipeline's spec, parsed and validated once per resourceVersion (a pass at 200 concurrent Runs
        otherwise spends much of its CPU re-validating the same object); raises SpecProblem."""
        key = (namespace, name, str(body.get("metadata", {}).get("resourceVersion", "")))
        with self._guard:
            hit = self._validated.get(key)
        if hit is None and (too_deep := object_problem(body.get("spec"))) is not None:
            hit = (None, SpecProblem("InvalidPipeline", f"spec: {too_deep}", final=True))
        if hit is None:
            try:
                hit = (Pipeline.model_validate(body).spec, None)
            except ValidationError as e:
                hit = (None, SpecProblem("InvalidPipeline", issues_text(issues_from_pydantic(e)), final=True))
            else:
                issues = validate_pipeline(hit[0], path) + unsupported_steps(hit[0], OPERATOR, path)
                if issues:
                    hit = (None, SpecProblem("InvalidSpec", issues_text(issues), final=True))
            with self._guard:
                if len(self._validated) > 1000:
                    self._validated.clear()
                self._validated[key] = hit
        spec, problem = hit
        if problem is not None:
            raise problem
        assert spec is not None
        return spec

    def _with_params(self, run: Run, spec: PipelineSpec, pipeline_name: str) -> Resolved:
        recorded_params = run.status.parameters if run.status and run.status.parameters else None
        params, param_issues = resolve_parameters(spec, recorded_params or run.spec.parameters, "spec.parameters")
        if param_issues:
            raise SpecProblem("InvalidSpec", issues_text(param_issues), final=True)
        return Resolved(spec, pipeline_name, params)

    def _start_limit(self, step: Any) -> float:
        """Seconds an attempt's pod may take to start (0: no limit)."""
        return float(step.start_timeout_seconds or self.config.pod_start_timeout_seconds)

    def _start_deadline(self, step: Any, state: StepState) -> datetime | None:
        """When an attempt whose pod has not started fails (None: never)."""
        limit = self._start_limit(step)
        if not limit or state.started_at is None:
            return None
        return state.started_at + timedelta(seconds=limit)

    def _not_started(self, state: StepState, step: Any, obs: JobObservation | None, now: datetime) -> TaskResult | None:
        """The attempt's failure if its pod is past its start deadline (a ResourceQuota refusing pods, an image that
        cannot be pulled, nowhere to schedule): without it, such a step waits forever."""
        deadline = self._start_deadline(step, state)
        if obs is None or obs.finished or obs.started or deadline is None or now < deadline:
            return None
        limit = self._start_limit(step)
        why = (
            f": {obs.waiting}"
            if obs.waiting
            else " (no pod exists: is a ResourceQuota or an admission policy refusing it? "
            f"kubectl describe job {obs.name})"
        )
        return TaskResult(ok=False, message=f"the pod of Job {obs.name} did not start within {limit:g}s{why}")

    @property
    def objects(self) -> StepObjects:
        if self._step_objects is None:
            self._step_objects = StepObjects(self.cluster.api)
        return self._step_objects

    def _object_result(self, namespace: str, run_name: str, key: str, state: StepState, step: Any) -> TaskResult | None:
        """What the attempt's object says now (None: still running), read with a GET: nothing watches its kind."""
        manifest = step.resource.manifest
        name = object_name(run_name, key, state.attempts)
        try:
            obj = self.objects.get(str(manifest["apiVersion"]), str(manifest["kind"]), namespace, name)
        except ClusterRefused as e:
            return TaskResult(ok=False, message=f"cannot read {manifest['kind']} {name}: {e}")
        return resource_outcome(step.resource, obj, f"{manifest['kind']} {name}")

    def _delete_object(self, namespace: str, run_name: str, key: str, attempt: int, step: Any) -> None:
        """Delete one attempt's object; once deleted (or found gone) it is remembered, else the next pass asks again
        (core objects_to_delete), so a delete refused or failed once does not leak the object."""
        manifest = step.resource.manifest
        name = object_name(run_name, key, attempt)
        try:
            self.objects.delete(str(manifest["apiVersion"]), str(manifest["kind"]), namespace, name)
        except (ClusterRefused, DeleteFailed) as e:  # retried next pass; the Run's deletion takes it anyway
            log.warning("%s step %s: could not delete %s %s: %s", namespace, key, manifest["kind"], name, e)
            return
        self._gone_objects.setdefault((namespace, run_name), set()).add((key, attempt))
        log.info("deleted %s %s of %s/%s step %s", manifest["kind"], name, namespace, run_name, key)

    def _observe(
        self,
        namespace: str,
        run_id: str,
        states: dict[str, StepState],
        spec: PipelineSpec,
        jobs: Mapping[tuple[str, int], JobObservation],
        run_name: str = "",
    ) -> list[tuple[str, StepState]]:
        """Fold finished Jobs (and resource steps' objects) into the step states, and fail attempts whose pod did not
        start in time (deleting their Job, so a late pod cannot run the step beside the retry); returns the steps
        that finished in this pass."""
        steps = {s.name: s for s in spec.all_steps()}
        now = self.clock()
        done = []
        for key, state in list(states.items()):
            step = steps.get(step_of(key))
            if state.phase is not StepPhase.RUNNING or step is None:
                continue
            if step.for_each is not None and key == step.name:
                continue  # a fan-out's own state is derived from its items by the planner
            if step.resource is not None:
                outcome = self._object_result(namespace, run_name, key, state, step)
                if outcome is None:
                    continue
                new = finished(state, step, outcome, self._finish_time(state, outcome, None, now))
                states[key] = new
                done.append((key, new))
                if new.phase is StepPhase.SUCCEEDED and new.cache_key and step.cache.enabled:
                    self.cache.record(new.cache_key, run_id, key, new.outputs, new.metrics)
                continue
            obs = jobs.get((key, state.attempts))
            late = self._not_started(state, step, obs, now)
            if late is not None and obs is not None:
                self.cluster.delete_job(namespace, obs.name)
                log.warning("%s step %s: %s", namespace, key, late.message)
                result = late
            elif obs is None:
                result = TaskResult(ok=False, message=f"the Job of attempt {state.attempts} disappeared")
            elif not obs.finished:
                continue
            else:
                result = self._result_of(run_id, key, state.attempts, obs)
            at = self._finish_time(state, result, obs, now)
            if obs is not None and obs.reason == "DeadlineExceeded" and not result.ok:
                # The Job controller enforced the step's timeout (the Job's activeDeadlineSeconds) before the
                # planner's Kill did: the same stop, decided the same way.
                new = killed(state, step, Kill(step.name, step_timeout_message(step.timeout_seconds), key), at)
            else:
                new = finished(state, step, result, at)
            states[key] = new
            done.append((key, new))
            if new.phase is StepPhase.SUCCEEDED and new.cache_key and step.cache.enabled:
                self.cache.record(new.cache_key, run_id, key, new.outputs, new.metrics)
        return done

    @staticmethod
    def _finish_time(state: StepState, result: TaskResult, obs: JobObservation | None, now: datetime) -> datetime:
        """When the step ended: its own report, else its pod's (1 s resolution), else now; never before it started."""
        at = result.finished_at or (obs.finished_at if obs else None) or now
        if state.started_at is not None and at < state.started_at:
            at = state.started_at
        return min(at, now)

    def _result_of(self, run_id: str, step: str, attempt: int, obs: JobObservation) -> TaskResult:
        """The runtime's report: the termination message, else its copy in the store, else the Job's reason."""
        reported: TaskResult | None = None
        if obs.termination_message:
            with contextlib.suppress(ValidationError):
                reported = TaskResult.model_validate_json(obs.termination_message)
        if reported is None:
            try:
                doc = self.store.get_document(result_document(run_id, step, attempt))
            except StoreUnavailable:
                doc = None
            reported = TaskResult.model_validate(doc) if doc is not None else None
        if reported is not None and reported.ok and not obs.succeeded:
            # The step reported success, then its container died before exiting cleanly (OOM-killed, node
            # trouble): the attempt failed, as its Job says. Taking the report would leave a Succeeded step over
            # a Failed Job, and the retry policy would never see the kill.
            return TaskResult(
                ok=False,
                message=f"Job {obs.name} failed ({obs.reason or 'Failed'}) after its step reported success",
                finished_at=reported.finished_at,
            )
        if reported is not None:
            # Defence in depth: the runtime redacted it, but an older image or a hand-written report may not have.
            if reported.message:
                reported = reported.model_copy(update={"message": redact_text(reported.message)})
            return reported
        if obs.succeeded:
            return TaskResult(ok=False, message=f"Job {obs.name} succeeded but left no result")
        reason = obs.reason or "Failed"
        # Not a runtime report (it redacts its own): raw container output, so keep credential-looking text out.
        tail = f": {redact_text(obs.termination_message[-1500:])}" if obs.termination_message else ""
        return TaskResult(ok=False, message=f"Job {obs.name} failed ({reason}){tail}")

    # ------------------------------------------------------------------ the pass

    def reconcile(self, namespace: str, name: str) -> float | None:
        """Bring one Run one step closer to done; returns seconds until it wants another pass (None: finished)."""
        return self._passes.run(namespace, name, lambda: self._timed_pass(namespace, name))

    def _timed_pass(self, namespace: str, name: str) -> float | None:
        return timed_pass(
            "Run",
            namespace,
            name,
            lambda fresh: self._reconcile(namespace, name, fresh=fresh),
            resync=self.config.resync_seconds,
            requeue=self.requeue,
            waiting=lambda message: self._waiting_for_store(namespace, name, message),
        )

    def _waiting_for_store(self, namespace: str, name: str, message: str) -> None:
        """The Run's Succeeded condition says StoreUnavailable until a pass gets through (it then says Running)."""
        body = self.cluster.get_custom("runs", namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        old = Run.model_validate(body).status or RunStatus()
        current = next((c for c in old.conditions if c.type == "Succeeded"), None)
        if old.phase in DONE or (current is not None and current.reason == "StoreUnavailable"):
            return
        generation = body["metadata"].get("generation")
        condition = succeeded_condition(old.phase, "StoreUnavailable", message, self.clock(), generation)
        try:
            self._write_status(
                body, old, old.model_copy(update={"conditions": set_condition(old.conditions, condition)})
            )
        except StaleObject:
            return  # changed meanwhile; the next pass says it again if the store is still away
        self.post_event(body, "Run", "Warning", "StoreUnavailable", message)

    def _run_body(self, namespace: str, name: str, fresh: bool) -> dict[str, Any] | None:
        return self._objects.read(namespace, name, fresh)

    def _reconcile(self, namespace: str, name: str, fresh: bool = False) -> float | None:
        body = self._run_body(namespace, name, fresh)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        run = Run.model_validate(body)
        old_status = run.status or RunStatus()
        if old_status.phase in DONE:
            if old_status.record_uri is None and old_status.started_at is not None:
                return self._record_again(body, run, old_status)
            return None
        now = self.clock()
        generation = body["metadata"].get("generation")
        uid = body["metadata"]["uid"]
        try:
            resolved = self._resolve(run, namespace)
        except SpecProblem as p:
            return self._spec_problem(body, old_status, p, now, generation)

        limit = resolved.spec.max_concurrent_runs
        if limit is not None and old_status.started_at is None and run.spec.pipeline_ref is not None:
            allowed, running = self._concurrency(namespace, name, run.spec.pipeline_ref.name, limit)
            if not allowed:
                message = f"{running} of at most {limit} runs of pipeline {resolved.pipeline_name!r} are running"
                problem = SpecProblem("WaitingForConcurrencyLimit", message, final=False)
                return self._spec_problem(body, old_status, problem, now, generation)

        run_id = uid
        states = states_from_status(old_status.steps)
        old_units = self._load_units(run_id) if any(s.for_each for s in resolved.spec.all_steps()) else {}
        states.update(old_units)
        jobs = self._jobs(namespace, name, states, resolved.spec)
        # A Job created by a pass that died before recording it is that attempt, whatever the cache says now.
        known = {s.name for s in resolved.spec.all_steps()}
        states = adopt_launched(
            states, [(k, a, obs.cache_key) for (k, a), obs in jobs.items() if k in states or k in known], now
        )
        finished_now = self._observe(namespace, run_id, states, resolved.spec, jobs, name)
        waiting_pods = self._waiting_pods(states, resolved.spec, jobs)
        started_at = old_status.started_at or now
        planner = RunPlanner(
            resolved.spec,
            resolved.params,
            RunContext(
                run_id=run_id,
                name=name,
                namespace=namespace,
                code_version=__version__,
                store=StoreConfig(
                    kind="s3",
                    endpoint=self.config.s3_endpoint,
                    bucket=self.config.s3_bucket,
                    prefix=self.config.s3_prefix,
                ),
            ),
        )
        approvals = {a.step: a for a in run.spec.approvals}
        plan = planner.plan(
            states, now, cache=self.cache, cancel=run.spec.cancel, run_started_at=started_at, approvals=approvals
        )
        before = dict(states)
        states = dict(plan.states)
        refused = self._apply(plan, body, resolved, states, before, now)

        order = [s.name for s in resolved.spec.all_steps()]
        kinds = {s.name: str(s.resource.manifest["kind"]) for s in resolved.spec.all_steps() if s.resource is not None}
        units = {k: v for k, v in states.items() if k not in order}
        if units != old_units:
            self._save_units(run_id, units)
        conditions = set_condition(
            old_status.conditions,
            succeeded_condition(plan.phase, plan.reason or "Running", plan.message, now, generation)
            if not refused
            else succeeded_condition(RunPhase.RUNNING, "JobCreateRefused", "; ".join(refused), now, generation),
        )
        if (exits := exit_condition(plan, now, generation)) is not None:
            conditions = set_condition(conditions, exits)
        old_pods = next((c for c in old_status.conditions if c.type == POD_CONDITION), None)
        if (pods := pods_started_condition(waiting_pods, old_pods, now, generation)) is not None:
            conditions = set_condition(conditions, pods)
        status = old_status.model_copy(
            update={
                "observed_generation": generation,
                "phase": plan.phase,
                "pipeline": resolved.pipeline_name,
                "pipeline_version": resolved.version,
                "parameters": resolved.params,
                "started_at": started_at,
                "finished_at": now if plan.done else None,
                "progress": progress(states, order),
                "steps": self._step_statuses(name, run_id, order, states, kinds),
                "conditions": conditions,
            }
        )
        record_uri = self._write_record(body, resolved, status, states) if plan.done else None
        if record_uri is not None:
            status = status.model_copy(update={"record_uri": record_uri})
        self._write_status(body, old_status, status)
        self._delete_ended_objects(namespace, name, resolved.spec, states, plan.done)
        if refused and refused != [self._condition_message(old_status)]:
            self.post_event(body, "Run", "Warning", "JobCreateRefused", "; ".join(refused))
        newly_waiting = pods is not None and pods.status is ConditionStatus.FALSE
        if pods is not None and newly_waiting and pods.message != (old_pods.message if old_pods else None):
            self.post_event(body, "Run", "Warning", pods.reason, pods.message)
        self._events(body, old_status, plan, finished_now)
        if plan.done:
            return None if record_uri is not None else self.config.resync_seconds
        wait = self._idle_wait(
            (namespace, name), changed=bool(plan.actions) or status.to_wire() != old_status.to_wire()
        )
        if plan.wake_at is not None:
            wait = min(wait, max(0.5, (plan.wake_at - self.clock()).total_seconds()))
        if any(
            s.resource is not None and states.get(s.name, StepState()).phase is StepPhase.RUNNING
            for s in resolved.spec.all_steps()
        ):
            wait = min(wait, self.config.resource_poll_seconds)  # nothing watches its object: look again soon
        start_deadline = self._earliest_start_deadline(resolved.spec, states, jobs)
        if start_deadline is not None:
            wait = min(wait, max(0.5, (start_deadline - self.clock()).total_seconds()))
        return wait

    def _delete_ended_objects(
        self, namespace: str, run_name: str, spec: PipelineSpec, states: Mapping[str, StepState], run_over: bool
    ) -> None:
        """Every pass, the objects of ended resource-step attempts (all of them once the Run is over) that are not
        yet known gone: the Run no longer needs them once their outcome (and metrics) are in its status, so they go
        after the status write, never before; a delete that failed is asked again next pass. A retry's next attempt
        gets an object of its own name."""
        steps = {s.name: s for s in spec.all_steps() if s.resource is not None}
        gone = self._gone_objects.get((namespace, run_name), set())
        for key, attempt in objects_to_delete(states, steps, run_over, gone):
            self._delete_object(namespace, run_name, key, attempt, steps[step_of(key)])

    def _waiting_pods(
        self, states: Mapping[str, StepState], spec: PipelineSpec, jobs: Mapping[tuple[str, int], JobObservation]
    ) -> list[WaitingPod]:
        """Running attempts whose pod exists but waits (a missing Secret, an image, no node), in the pod's words."""
        steps = {s.name: s for s in spec.all_steps()}
        out = []
        for key, state in states.items():
            step = steps.get(step_of(key))
            obs = jobs.get((key, state.attempts))
            running = state.phase is StepPhase.RUNNING and step is not None
            if running and obs is not None and obs.waiting and not obs.started and not obs.finished:
                out.append(WaitingPod(key, obs.name, obs.waiting, self._start_limit(step)))
        return out

    def _earliest_start_deadline(
        self, spec: PipelineSpec, states: Mapping[str, StepState], jobs: Mapping[tuple[str, int], JobObservation]
    ) -> datetime | None:
        """The first start deadline of an attempt whose pod has not started: the pass must look again then."""
        steps = {s.name: s for s in spec.all_steps()}
        deadlines = []
        for key, state in states.items():
            step = steps.get(step_of(key))
            obs = jobs.get((key, state.attempts))
            if state.phase is StepPhase.RUNNING and step is not None and obs is not None and not obs.started:
                deadline = self._start_deadline(step, state)
                if deadline is not None:
                    deadlines.append(deadline)
        return min(deadlines, default=None)

    def _idle_wait(self, key: tuple[str, str], changed: bool) -> float:
        with self._guard:
            wait = idle_resync(self._idle.get(key), changed, self.config.resync_seconds)
            self._idle[key] = wait
        return wait

    # ------------------------------------------------------------------ the run record

    def _write_record(
        self, body: dict[str, Any], resolved: Resolved, status: RunStatus, states: Mapping[str, StepState]
    ) -> str | None:
        """Store the finished Run's record; None when the store failed (the next pass tries again)."""
        meta = body["metadata"]
        succeeded = next((c for c in status.conditions if c.type == "Succeeded"), None)
        exits = next((c for c in status.conditions if c.type == EXIT_CONDITION), None)
        record = run_record(
            run_id=meta["uid"],
            run_name=meta["name"],
            namespace=meta["namespace"],
            pipeline=resolved.pipeline_name,
            spec=resolved.spec,
            parameters=resolved.params,
            code_version=__version__,
            states=states,
            phase=status.phase,
            reason=succeeded.reason if succeeded else "",
            message=succeeded.message if succeeded else "",
            started_at=status.started_at,
            finished_at=status.finished_at,
            step_image=self.config.step_image,
            exit_steps=(exits.reason, exits.message) if exits is not None else None,
            pipeline_generation=status.pipeline_version.generation if status.pipeline_version else None,
        )
        try:
            store_spec(self.store, resolved.spec, resolved.pipeline_name)  # `conveyor rerun` finds it by digest
            uri = self.store.put_document(record_document(meta["uid"]), record)
        except (StoreUnavailable, OSError) as e:
            log.warning("could not store the record of run %s/%s, will retry: %s", meta["namespace"], meta["name"], e)
            return None
        log.info("stored the record of run %s/%s at %s", meta["namespace"], meta["name"], uri)
        return uri

    def _record_again(self, body: dict[str, Any], run: Run, status: RunStatus) -> float | None:
        """A finished Run whose record could not be stored when it finished: store it from its final status."""
        meta = body["metadata"]
        try:
            resolved = self._resolve(run, meta["namespace"])
        except SpecProblem as p:
            log.warning("cannot record run %s/%s: %s", meta["namespace"], meta["name"], p.message)
            return None
        states = states_from_status(status.steps)
        if any(s.for_each for s in resolved.spec.all_steps()):
            try:
                states.update(self._load_units(meta["uid"]))
            except StoreUnavailable as e:
                log.warning("could not read the items of run %s/%s, will retry: %s", meta["namespace"], meta["name"], e)
                return self.config.resync_seconds
        uri = self._write_record(body, resolved, status, states)
        if uri is None:
            return self.config.resync_seconds
        self._patch_status(body, {"recordUri": uri})
        return None

    def _concurrency(self, namespace: str, name: str, pipeline: str, limit: int) -> tuple[bool, int]:
        slots = []
        for other in self.cluster.list_runs(namespace, ""):
            if other.get("spec", {}).get("pipelineRef", {}).get("name") != pipeline:
                continue
            status = other.get("status", {})
            slots.append(
                RunSlot(
                    name=other["metadata"]["name"],
                    created=datetime.fromisoformat(other["metadata"]["creationTimestamp"].replace("Z", "+00:00")),
                    started=bool(status.get("startedAt")),
                    finished=status.get("phase") in ("Succeeded", "Failed", "Cancelled"),
                )
            )
        return may_start(name, slots, limit)

    def _step_statuses(
        self,
        run: str,
        run_id: str,
        order: list[str],
        states: Mapping[str, StepState],
        kinds: Mapping[str, str] | None = None,
    ) -> list[Any]:
        """`kinds`: the object kind of each resource step (they have an object, not a Job)."""
        out = []
        for status in step_statuses(order, states):
            update: dict[str, Any] = {}
            if status.attempts and kinds and status.name in kinds:
                update["resource_name"] = f"{kinds[status.name]}/{object_name(run, status.name, status.attempts)}"
            elif status.attempts:
                update["job_name"] = job_name(run, status.name, status.attempts)
            if status.fan_out is not None:
                update["fan_out"] = status.fan_out.model_copy(update={"record_uri": units_document(run_id)})
            out.append(status.model_copy(update=update))
        return out

    def _load_units(self, run_id: str) -> dict[str, StepState]:
        """Per-item states of fan-outs: kept in the store so the Run object stays small however wide."""
        doc = self.store.get_document(units_document(run_id))
        if doc is None:
            return {}
        return {k: state_from_wire(v) for k, v in doc["units"].items()}

    def _save_units(self, run_id: str, units: Mapping[str, StepState]) -> None:
        self.store.put_document(units_document(run_id), {"units": {k: state_to_wire(v) for k, v in units.items()}})

    @staticmethod
    def _condition_message(status: RunStatus) -> str | None:
        return next((c.message for c in status.conditions if c.type == "Succeeded"), None)

    def _apply(
        self,
        plan: Plan,
        body: dict[str, Any],
        resolved: Resolved,
        states: dict[str, StepState],
        before: Mapping[str, StepState],
        now: datetime,
    ) -> list[str]:
        """Carry out the plan; returns what the API server refused (those steps stay unlaunched, to retry)."""
        refused: list[str] = []
        meta = body["metadata"]
        steps = {s.name: s for s in resolved.spec.all_steps()}
        for action in plan.actions:
            state = states.get(action.key, StepState())
            if isinstance(action, Launch) and steps[action.step].resource is not None:
                obj = step_object(
                    run_name=meta["name"], run_uid=meta["uid"], namespace=meta["namespace"], task=action.task
                )
                try:
                    kind = self.objects.kind_of(str(obj["apiVersion"]), str(obj["kind"]))
                    why = kind_refusal(kind.api_version, kind.kind, kind.plural, self.config.resource_kinds)
                    if why is not None:  # before any create: the operator's own grants must not serve Pipelines
                        raise ClusterRefused(why)
                    created = self.objects.create(obj)
                except ClusterRefused as e:
                    log.warning("%s/%s step %s: %s", meta["namespace"], meta["name"], action.key, e)
                    refused.append(str(e))
                    states[action.key] = before.get(action.key, StepState())
                    continue
                log.info(
                    "%s %s %s for %s/%s step %s",
                    "created" if created else "found existing",
                    obj["kind"],
                    obj["metadata"]["name"],
                    meta["namespace"],
                    meta["name"],
                    action.key,
                )
                if created:
                    self._observe_overhead(meta["namespace"], steps[action.step], states, now, body)
            elif isinstance(action, Launch):
                step = steps[action.step]
                image = step.container.image if step.container is not None else self.config.step_image
                job = step_job(
                    run_name=meta["name"],
                    run_uid=meta["uid"],
                    namespace=meta["namespace"],
                    task=action.task,
                    image=image,
                    command=list(self.config.step_command),
                    credentials_secret=self.config.credentials_secret,
                    resources=step.resources,
                    timeout_seconds=step.timeout_seconds,
                    service_account=self.config.step_service_account,
                    pod=merge_pod_settings(resolved.spec.pod, step.pod),
                )
                try:
                    created = self.cluster.create_job(job)
                except ClusterRefused as e:
                    log.warning("%s/%s step %s: %s", meta["namespace"], meta["name"], action.key, e)
                    refused.append(str(e))
                    states[action.key] = before.get(action.key, StepState())
                    continue
                log.info(
                    "%s Job %s for %s/%s step %s",
                    "created" if created else "found existing",
                    job["metadata"]["name"],
                    meta["namespace"],
                    meta["name"],
                    action.key,
                )
                if created:
                    self._observe_overhead(meta["namespace"], step, states, now, body)
            elif isinstance(action, Kill):
                # Deleting the Job (or the resource step's object: its engine stops the work) stops the attempt at
                # once, so its outcome is decided now (core killed(): a step timeout retries under the step's
                # policy, as the local runner does).
                if steps[action.step].resource is not None:
                    self._delete_object(meta["namespace"], meta["name"], action.key, state.attempts, steps[action.step])
                else:
                    self.cluster.delete_job(meta["namespace"], job_name(meta["name"], action.key, state.attempts))
                states[action.key] = killed(state, steps[action.step], action, now)
        return refused

    def _observe_overhead(
        self, namespace: str, step: Any, states: Mapping[str, StepState], now: datetime, body: dict[str, Any]
    ) -> None:
        """Time from what this step waited for (its upstream steps, or the Run's creation) to its Job."""
        from conveyor.core.dag import step_dependencies  # noqa: PLC0415

        ends = [states[d].finished_at for d in step_dependencies(step) if d in states and states[d].finished_at]
        ready_at = max((e for e in ends if e is not None), default=None)
        if ready_at is None and not step_dependencies(step):
            created = body["metadata"].get("creationTimestamp")
            ready_at = parse_timestamp(created)
        if ready_at is not None:
            metrics.STEP_OVERHEAD.labels(namespace).observe(max(0.0, (now - ready_at).total_seconds()))
        metrics.ACTIVE_STEPS.labels(namespace).inc()

    def _write_status(self, body: dict[str, Any], old: RunStatus, new: RunStatus) -> None:
        old_wire, new_wire = old.to_wire(), new.to_wire()
        if old_wire == new_wire:
            return
        self._patch_status(body, new_wire)

    def _patch_status(self, body: dict[str, Any], status: dict[str, Any]) -> None:
        self._objects.write_status(body, status)

    def _events(
        self, body: dict[str, Any], old: RunStatus, plan: Plan, finished_now: list[tuple[str, StepState]]
    ) -> None:
        ns = body["metadata"]["namespace"]
        if old.started_at is None:
            self.post_event(body, "Run", "Normal", "Started", "the run started")
        for _, state in finished_now:
            result = {StepPhase.SUCCEEDED: "succeeded", StepPhase.FAILED: "failed"}.get(state.phase, "retried")
            metrics.STEPS.labels(ns, result).inc()
            metrics.ACTIVE_STEPS.labels(ns).dec()
            if state.started_at and state.finished_at:
                metrics.STEP_DURATION.labels(ns).observe((state.finished_at - state.started_at).total_seconds())
        for action in plan.actions:
            if isinstance(action, ReuseCached):
                metrics.CACHE_HITS.labels(ns).inc()
                metrics.STEPS.labels(ns, "cached").inc()
            elif isinstance(action, Skip):
                metrics.STEPS.labels(ns, "skipped").inc()
        for step, state in finished_now:
            if state.phase is StepPhase.FAILED:
                self.post_event(body, "Run", "Warning", "StepFailed", f"step {step} failed: {state.message}")
            elif state.phase is StepPhase.WAITING:
                self.post_event(
                    body, "Run", "Warning", "StepRetrying", f"step {step} failed, retrying: {state.message}"
                )
        if plan.done and old.phase not in DONE:
            metrics.RUNS.labels(ns, plan.phase.value.lower()).inc()
            type_ = "Normal" if plan.phase is RunPhase.SUCCEEDED else "Warning"
            self.post_event(body, "Run", type_, plan.reason or plan.phase.value, plan.message)
            if plan.exit_reason == EXIT_FAILED:  # the phase does not say it: a cleanup failed
                self.post_event(body, "Run", "Warning", "ExitStepFailed", plan.exit_message)

    def _spec_problem(
        self, body: dict[str, Any], old: RunStatus, problem: SpecProblem, now: datetime, generation: int | None
    ) -> float | None:
        phase = RunPhase.FAILED if problem.final else RunPhase.PENDING
        condition = succeeded_condition(phase, problem.reason, problem.message, now, generation)
        if not problem.final:
            condition = condition.model_copy(update={"status": ConditionStatus.UNKNOWN})
        status = old.model_copy(
            update={
                "observed_generation": generation,
                "phase": phase,
                "finished_at": now if problem.final else None,
                "conditions": set_condition(old.conditions, condition),
            }
        )
        if status.to_wire() != old.to_wire():
            self._write_status(body, old, status)
            self.post_event(body, "Run", "Warning", problem.reason, problem.message)
        return None if problem.final else self.config.resync_seconds
