"""The run planner: (pipeline, parameters, what has happened so far, now) → what to do next.

Pure and level-triggered: it re-derives every decision from the observed step states, so a
shell may call it after any event, twice, or after a crash, and get the same answer. Both the
local runner and the operator drive it; only how a Launch is carried out differs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from conveyor.api.pipeline import PipelineSpec, Step
from conveyor.api.run import ArtifactRef, RunPhase, StepPhase
from conveyor.core.cachekey import cache_key
from conveyor.core.dag import Dag
from conveyor.core.retry import backoff_seconds, may_retry
from conveyor.core.task import StoreConfig, TaskInput, TaskResult, TaskSpec
from conveyor.core.templates import render_text, render_value

TERMINAL = frozenset({StepPhase.SUCCEEDED, StepPhase.FAILED, StepPhase.SKIPPED, StepPhase.CANCELLED})


@dataclass(frozen=True)
class StepState:
    """What is known about one step; the planner's only memory (kept in Run status or the record)."""

    phase: StepPhase = StepPhase.PENDING
    attempts: int = 0
    cache_key: str | None = None
    cache_hit: bool = False
    outputs: Mapping[str, ArtifactRef] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    next_attempt_at: datetime | None = None
    message: str | None = None


@dataclass(frozen=True)
class CacheEntry:
    """An earlier successful execution under a cache key (offered only if its artifacts still exist)."""

    key: str
    outputs: tuple[ArtifactRef, ...]
    metrics: Mapping[str, float]


@dataclass(frozen=True)
class RunContext:
    run_id: str
    name: str
    namespace: str
    code_version: str
    store: StoreConfig


# ---------------------------------------------------------------- actions


@dataclass(frozen=True)
class Launch:
    step: str
    task: TaskSpec


@dataclass(frozen=True)
class ReuseCached:
    step: str
    entry: CacheEntry


@dataclass(frozen=True)
class Skip:
    step: str
    reason: str


@dataclass(frozen=True)
class Kill:
    step: str
    reason: str


@dataclass(frozen=True)
class FailStep:
    """A step that cannot even start (its template or condition cannot be resolved)."""

    step: str
    reason: str


@dataclass(frozen=True)
class CancelStep:
    step: str


Action = Launch | ReuseCached | Skip | Kill | FailStep | CancelStep


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    phase: RunPhase
    reason: str = ""
    message: str = ""
    wake_at: datetime | None = None
    """Plan again no later than this (a retry's backoff ends, a timeout expires)."""

    @property
    def done(self) -> bool:
        return self.phase in (RunPhase.SUCCEEDED, RunPhase.FAILED, RunPhase.CANCELLED)


# ---------------------------------------------------------------- state transitions (pure)


def started(state: StepState, now: datetime, key: str) -> StepState:
    return replace(
        state,
        phase=StepPhase.RUNNING,
        attempts=state.attempts + 1,
        cache_key=key,
        created_at=state.created_at or now,
        started_at=now,
        finished_at=None,
        next_attempt_at=None,
        message=None,
    )


def finished(state: StepState, step: Step, result: TaskResult, now: datetime) -> StepState:
    """Record an attempt's result: success, a retry after backoff, or final failure."""
    if result.ok:
        return replace(
            state,
            phase=StepPhase.SUCCEEDED,
            finished_at=now,
            outputs={o.name: o for o in result.outputs},
            metrics=dict(result.metrics),
            message=None,
        )
    if may_retry(step.retries, state.attempts):
        delay = backoff_seconds(step.retries, state.attempts)
        return replace(
            state,
            phase=StepPhase.WAITING,
            finished_at=now,
            message=result.message,
            next_attempt_at=now + timedelta(seconds=delay),
        )
    return replace(state, phase=StepPhase.FAILED, finished_at=now, message=result.message)


def reused(state: StepState, entry: CacheEntry, now: datetime) -> StepState:
    return replace(
        state,
        phase=StepPhase.SUCCEEDED,
        cache_hit=True,
        cache_key=entry.key,
        created_at=state.created_at or now,
        started_at=now,
        finished_at=now,
        outputs={o.name: o for o in entry.outputs},
        metrics=dict(entry.metrics),
    )


def recorded(state: StepState, action: Action, now: datetime) -> StepState:
    """The state after a decision that needs no process: a cache hit, a skip, a failure to start, a cancel.
    Launch and Kill are carried out by the shell; their outcome arrives later through `finished`."""
    match action:
        case ReuseCached(entry=entry):
            return reused(state, entry, now)
        case Skip(reason=reason):
            return replace(state, phase=StepPhase.SKIPPED, message=reason)
        case FailStep(reason=reason):
            return replace(state, phase=StepPhase.FAILED, message=reason, finished_at=now)
        case CancelStep():
            return replace(state, phase=StepPhase.CANCELLED, finished_at=state.finished_at or now)
    return state


# ---------------------------------------------------------------- the planner


def _evaluate_when(expression: str, params: Mapping[str, Any], states: Mapping[str, StepState]) -> bool:
    import cel  # noqa: PLC0415 - only needed for steps with conditions

    context = {
        "params": dict(params),
        "steps": {n: {"phase": s.phase.value, "metrics": dict(s.metrics)} for n, s in states.items()},
    }
    value = cel.evaluate(expression, context)
    if not isinstance(value, bool):
        raise ValueError(f"condition {expression!r} evaluated to {value!r}, not a boolean")
    return value


@dataclass(frozen=True)
class RunPlanner:
    spec: PipelineSpec
    params: Mapping[str, Any]
    context: RunContext
    parallelism: int | None = None

    def _template(self, step: Step) -> dict[str, Any]:
        """The step's template with params, item and run resolved; inputs/outputs stay for the runtime."""
        ctx = {
            "params": dict(self.params),
            "run": {"name": self.context.name, "namespace": self.context.namespace, "id": self.context.run_id},
            "inputs": {i.name: f"{{{{ inputs.{i.name} }}}}" for i in step.inputs},
            "outputs": {o: f"{{{{ outputs.{o} }}}}" for o in self._outputs(step)},
        }
        if step.uses is not None:
            return {"uses": step.uses, "with": render_value(step.with_ or {}, ctx)}
        assert step.container is not None
        c = step.container
        return {
            "image": c.image,
            "command": [render_text(a, ctx) for a in c.command + c.args],
            "env": {e.name: render_text(e.value, ctx) for e in c.env},
        }

    def _outputs(self, step: Step) -> list[str]:
        from conveyor.core.validation import step_outputs  # noqa: PLC0415

        return sorted(step_outputs(step))

    def _inputs(self, step: Step, states: Mapping[str, StepState], external: Mapping[str, str]) -> list[TaskInput]:
        out = []
        for i in step.inputs:
            if i.step is not None:
                assert i.output is not None
                ref = states[i.step].outputs.get(i.output)
                if ref is None:
                    raise ValueError(f"step {i.step!r} succeeded without recording output {i.output!r}")
                out.append(TaskInput(name=i.name, digest=ref.digest))
            else:
                assert i.uri is not None
                out.append(TaskInput(name=i.name, uri=i.uri, digest=i.digest or external.get(i.uri)))
        return out

    def plan(
        self,
        states: Mapping[str, StepState],
        now: datetime,
        *,
        cache: Mapping[str, CacheEntry],
        external_digests: Mapping[str, str] | None = None,
        cancel: bool = False,
        run_started_at: datetime | None = None,
    ) -> Plan:
        external = external_digests or {}
        steps = {s.name: s for s in self.spec.steps}
        dag = Dag.of(self.spec.steps)
        order = dag.order()
        states = {n: states.get(n, StepState()) for n in order}
        actions: list[Action] = []
        wake: list[datetime] = []
        running = [n for n in order if states[n].phase is StepPhase.RUNNING]

        timed_out = (
            self.spec.timeout_seconds is not None
            and run_started_at is not None
            and now >= run_started_at + timedelta(seconds=self.spec.timeout_seconds)
        )
        if cancel or timed_out:
            for n in order:
                if states[n].phase is StepPhase.RUNNING:
                    actions.append(Kill(n, "run cancelled" if cancel else "run timed out"))
                elif states[n].phase not in TERMINAL:
                    actions.append(CancelStep(n))
            if running:
                return Plan(tuple(actions), RunPhase.RUNNING)
            if cancel:
                return Plan(tuple(actions), RunPhase.CANCELLED, "Cancelled", "the run was cancelled")
            return Plan(
                tuple(actions),
                RunPhase.FAILED,
                "RunTimedOut",
                f"the run exceeded its timeout of {self.spec.timeout_seconds}s",
            )
        if run_started_at is not None and self.spec.timeout_seconds is not None:
            wake.append(run_started_at + timedelta(seconds=self.spec.timeout_seconds))

        failed = [n for n in order if states[n].phase is StepPhase.FAILED]
        stop_launching = bool(failed) and self.spec.fail_fast
        limit = self.parallelism or self.spec.parallelism
        slots = (limit - len(running)) if limit else len(order)
        progressed: dict[str, StepState] = dict(states)

        for n in order:
            step, st = steps[n], progressed[n]
            if st.phase is StepPhase.RUNNING and step.timeout_seconds and st.started_at:
                deadline = st.started_at + timedelta(seconds=step.timeout_seconds)
                if now >= deadline:
                    actions.append(Kill(n, f"step exceeded its timeout of {step.timeout_seconds}s"))
                else:
                    wake.append(deadline)
            if st.phase in TERMINAL or st.phase is StepPhase.RUNNING:
                continue
            if st.phase is StepPhase.WAITING and st.next_attempt_at and now < st.next_attempt_at:
                wake.append(st.next_attempt_at)
                continue
            ups = dag.upstream[n]
            if any(progressed[u].phase in (StepPhase.SKIPPED,) for u in ups if u in {i.step for i in step.inputs}):
                actions.append(Skip(n, "an upstream step it reads from was skipped"))
                progressed[n] = replace(st, phase=StepPhase.SKIPPED)
                continue
            if any(progressed[u].phase in (StepPhase.FAILED, StepPhase.CANCELLED) for u in ups):
                continue  # never runs; cancelled when the run finishes
            if not all(progressed[u].phase in (StepPhase.SUCCEEDED, StepPhase.SKIPPED) for u in ups):
                continue
            if stop_launching:
                continue
            if step.when is not None:
                try:
                    go = _evaluate_when(step.when, self.params, progressed)
                except (ValueError, KeyError, TypeError) as e:
                    actions.append(FailStep(n, f"cannot evaluate when: {e}"))
                    progressed[n] = replace(st, phase=StepPhase.FAILED)
                    continue
                if not go:
                    actions.append(Skip(n, f"condition is false: {step.when}"))
                    progressed[n] = replace(st, phase=StepPhase.SKIPPED)
                    continue
            try:
                template = self._template(step)
                inputs = self._inputs(step, progressed, external)
            except (ValueError, KeyError) as e:
                actions.append(FailStep(n, str(e)))
                progressed[n] = replace(st, phase=StepPhase.FAILED)
                continue
            key = cache_key(
                template=template,
                input_digests={i.name: i.digest or i.uri or "" for i in inputs},
                code_version=self.context.code_version,
            )
            if step.cache.enabled and st.attempts == 0 and key in cache:
                entry = cache[key]
                actions.append(ReuseCached(n, entry))
                progressed[n] = reused(st, entry, now)
                continue
            if slots <= 0:
                continue
            slots -= 1
            task = TaskSpec(
                run_id=self.context.run_id,
                step=n,
                attempt=st.attempts + 1,
                component=step.uses,
                config=template.get("with", {}),
                command=template.get("command", []),
                env=template.get("env", {}),
                inputs=inputs,
                outputs=self._outputs(step),
                store=self.context.store,
                cache_key=key,
            )
            actions.append(Launch(n, task))
            progressed[n] = started(st, now, key)

        return self._summarize(order, progressed, tuple(actions), wake)

    def _summarize(
        self, order: list[str], states: Mapping[str, StepState], actions: tuple[Action, ...], wake: list[datetime]
    ) -> Plan:
        wake_at = min(wake) if wake else None
        phases = [states[n].phase for n in order]
        active = any(p in (StepPhase.RUNNING, StepPhase.WAITING) for p in phases)
        failed = [n for n in order if states[n].phase is StepPhase.FAILED]
        if active:
            return Plan(actions, RunPhase.RUNNING, wake_at=wake_at)
        if failed:
            # Nothing running: whatever has not started never will (fail-fast, or blocked upstream).
            leftovers = tuple(CancelStep(n) for n in order if states[n].phase is StepPhase.PENDING)
            first = failed[0]
            message = f"step {first!r} failed"
            if states[first].message:
                message += f": {states[first].message}"
            return Plan(actions + leftovers, RunPhase.FAILED, "StepFailed", message)
        if all(p in TERMINAL for p in phases):
            return Plan(actions, RunPhase.SUCCEEDED, "AllStepsSucceeded", "every step succeeded or was skipped")
        return Plan(actions, RunPhase.RUNNING, wake_at=wake_at)
