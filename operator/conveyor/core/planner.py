"""The run planner: (pipeline, parameters, what has happened so far, now) → what to do next.

Pure and level-triggered: it re-derives every decision from the observed step states, so a
shell may call it after any event, twice, or after a crash, and get the same answer. Both the
local runner and the operator drive it; only how a Launch is carried out differs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from conveyor.api.pipeline import PipelineSpec, Step
from conveyor.api.run import ArtifactRef, Decision, RunPhase, StepApproval, StepPhase
from conveyor.api.store import CacheEntry as CacheEntry  # noqa: PLC0414 - re-exported: its home was here
from conveyor.api.store import CacheLookup
from conveyor.core.cachekey import cache_key
from conveyor.core.dag import Dag
from conveyor.core.retry import Outcome, Stop, after_failure, after_stop, backoff_seconds, step_timeout_message
from conveyor.core.task import CollectionItem, StoreConfig, TaskInput, TaskResult, TaskSpec, step_of, unit_key
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
class RunContext:
    run_id: str
    name: str
    namespace: str
    code_version: str
    store: StoreConfig


# ---------------------------------------------------------------- actions


class _Keyed:
    """Actions name the state entry they act on: the step, or `step[i]` for one item of a fan-out."""

    step: str
    unit: str | None

    @property
    def key(self) -> str:
        return self.unit or self.step


@dataclass(frozen=True)
class Launch(_Keyed):
    step: str
    task: TaskSpec
    unit: str | None = None


@dataclass(frozen=True)
class ReuseCached(_Keyed):
    step: str
    entry: CacheEntry
    unit: str | None = None


@dataclass(frozen=True)
class Skip(_Keyed):
    step: str
    reason: str
    unit: str | None = None


@dataclass(frozen=True)
class Kill(_Keyed):
    step: str
    reason: str
    unit: str | None = None
    stop: Stop = Stop.STEP_TIMEOUT
    """Why: it decides what becomes of the stopped attempt (`killed`), the same on both shells."""

    @property
    def run_cancelled(self) -> bool:
        """The run was cancelled: the stopped attempt is Cancelled, not Failed."""
        return self.stop is Stop.RUN_CANCELLED


@dataclass(frozen=True)
class FailStep(_Keyed):
    """A step that cannot even start (its template or condition cannot be resolved)."""

    step: str
    reason: str
    unit: str | None = None


@dataclass(frozen=True)
class CancelStep(_Keyed):
    step: str
    unit: str | None = None


Action = Launch | ReuseCached | Skip | Kill | FailStep | CancelStep


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    phase: RunPhase
    reason: str = ""
    message: str = ""
    wake_at: datetime | None = None
    """Plan again no later than this (a retry's backoff ends, a timeout expires)."""
    states: Mapping[str, StepState] = field(default_factory=dict)
    """Every step's (and fan-out item's) state after this plan's decisions: what the shell keeps."""
    exit_reason: str = ""
    """Where the onExit steps are ("" when the pipeline has none): one of the EXIT_* reasons."""
    exit_message: str = ""
    """What the onExit steps did, for the ExitStepsSucceeded condition."""

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


def adopt_launched(
    states: Mapping[str, StepState], launched: Iterable[tuple[str, int, str | None]], now: datetime
) -> dict[str, StepState]:
    """The states with every attempt that was launched but never recorded marked as running.

    `launched` names the attempts whose process exists (state key, attempt, its cache key). A shell that
    launches and then records can die in between; the next plan would otherwise decide afresh for that
    step: launch the same attempt again (harmless, a shell's launch is idempotent) or, if its cache key
    has meanwhile been stored, take a cache hit and leave the launched attempt running unaccounted for.
    Only the next attempt of a step that is pending or waiting is adopted: anything else is already known.
    """
    out = dict(states)
    for key, attempt, key_of_attempt in launched:
        state = out.get(key, StepState())
        if state.phase in (StepPhase.PENDING, StepPhase.WAITING) and attempt == state.attempts + 1:
            out[key] = replace(started(state, now, key_of_attempt or ""), cache_key=key_of_attempt or state.cache_key)
    return out


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
    return _ended(state, step, after_failure(step.retries, state.attempts), result.message, now)


def killed(state: StepState, step: Step, kill: Kill, now: datetime) -> StepState:
    """An attempt stopped by `kill`, as `core.retry.after_stop` decides: a step timeout is a failed attempt
    under the step's retry policy, a run timeout fails it for good, a cancel cancels it. Both shells call
    this once the attempt has stopped."""
    return _ended(state, step, after_stop(step.retries, state.attempts, kill.stop), kill.reason, now)


def _ended(state: StepState, step: Step, outcome: Outcome, message: str | None, now: datetime) -> StepState:
    if outcome is Outcome.RETRY:
        delay = backoff_seconds(step.retries, state.attempts)
        return replace(
            state,
            phase=StepPhase.WAITING,
            finished_at=now,
            message=message,
            next_attempt_at=now + timedelta(seconds=delay),
        )
    phase = StepPhase.CANCELLED if outcome is Outcome.CANCEL else StepPhase.FAILED
    return replace(state, phase=phase, finished_at=now, message=message)


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


# ---------------------------------------------------------------- fan-out


def units_of(states: Mapping[str, StepState], step: str) -> list[tuple[str, StepState]]:
    """The items of a fanned-out step present in `states`, in item order, as (state key, state)."""
    prefix = f"{step}["
    keyed = [(int(k[len(prefix) : -1]), k, v) for k, v in states.items() if k.startswith(prefix)]
    return [(k, v) for _, k, v in sorted(keyed)]


def fan_items(step: Step, params: Mapping[str, Any]) -> list[Any]:
    """The items of a fanned-out step: a literal list, a list parameter, or a grid's cartesian product."""
    fe = step.for_each
    assert fe is not None
    if fe.items is not None:
        return list(fe.items)
    if fe.parameter is not None:
        value = params[fe.parameter]
        if not isinstance(value, list):
            raise ValueError(f"parameter {fe.parameter!r} is not a list")
        return list(value)
    assert fe.grid is not None
    keys = list(fe.grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(fe.grid[k] for k in keys))]


def collection_ref(step: str, output: str, items: list[Any], units: list[StepState]) -> ArtifactRef:
    """A fan-in artifact: the ordered list of the items' outputs, addressed by the digest of that list."""
    manifest = [{"item": item, "digest": u.outputs[output].digest} for item, u in zip(items, units, strict=True)]
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"), default=str).encode()
    return ArtifactRef(
        name=output,
        uri=f"collection:{step}/{output}",
        digest=f"sha256:{hashlib.sha256(canonical).hexdigest()}",
        size=len(items),
    )


@dataclass
class _Budget:
    """Launch slots left in this pass, and whether a failure stops new launches."""

    slots: int
    stop: bool


# ---------------------------------------------------------------- onExit steps

EXIT_WAITING = "WaitingForSteps"
EXIT_RUNNING = "Running"
EXIT_SUCCEEDED = "AllSucceeded"
EXIT_FAILED = "StepFailed"
EXIT_CANCELLED = "Cancelled"


def step_order(spec: PipelineSpec) -> list[str]:
    """Every step a Run shows, in the order it shows them: the steps' DAG order, then the onExit steps'."""
    return Dag.of(spec.steps).order() + Dag.of(spec.on_exit or []).order()


@dataclass(frozen=True)
class DagOutcome:
    """How the steps (not the onExit steps) ended: the Run's phase, and what onExit steps read as `run.*`."""

    phase: RunPhase
    reason: str
    message: str
    failed_steps: tuple[str, ...]

    def template_values(self) -> dict[str, str]:
        """{{ run.phase }}, {{ run.failedSteps }} (comma-separated, "" when none) and {{ run.message }}."""
        return {"phase": self.phase.value, "failedSteps": ",".join(self.failed_steps), "message": self.message}

    def when_values(self) -> dict[str, Any]:
        """run.phase, run.failedSteps (a list) and run.message in an onExit step's `when`."""
        return {"phase": self.phase.value, "failedSteps": list(self.failed_steps), "message": self.message}


def exit_steps_ready(main: Plan, order: Iterable[str]) -> DagOutcome | None:
    """The one decision of when onExit steps may start, whichever shell asks: once the plan of the steps (in
    `order`) is final, every step terminal (succeeded, failed, skipped or cancelled, after a cancel or the Run's
    timeout too). Returns the outcome they read, or None while any step may still run."""
    if not main.done:
        return None
    failed = tuple(n for n in order if main.states.get(n, StepState()).phase is StepPhase.FAILED)
    return DagOutcome(main.phase, main.reason, main.message, failed)


def exit_input_problem(step: Step, states: Mapping[str, StepState], main_steps: Iterable[str]) -> str | None:
    """Why an onExit step cannot run for want of a step's output: it reads an output of a step that did not
    succeed (a failed training has no model to clean up after). None when every such input is there."""
    main = set(main_steps)
    for i in step.inputs:
        if i.step in main and states.get(i.step, StepState()).phase is not StepPhase.SUCCEEDED:
            phase = states.get(i.step, StepState()).phase.value
            return f"input {i.name!r} reads output {i.output!r} of step {i.step!r}, which did not succeed ({phase})"
    return None


# ---------------------------------------------------------------- the planner


def outside_content(step: Step, template: Mapping[str, Any], external: Mapping[str, str]) -> dict[str, str] | None:
    """The digests of the outside data a component step reads besides its inputs (a `file://` source),
    for its cache key; None when it reads data that nothing pins down (a URL, a query, or a file this
    shell could not digest): such a step is never a cache hit."""
    if step.uses is None:
        return {}
    from conveyor.components.registry import UnknownComponentError, get_component  # noqa: PLC0415

    try:
        component = get_component(step.uses)
    except UnknownComponentError:
        return {}
    config = template.get("with", {})
    if component.reads_outside_world(config):
        return None
    digests = {uri: external.get(uri) for uri in component.content_uris(config)}
    if any(d is None for d in digests.values()):
        return None
    return {f"content:{uri}": str(d) for uri, d in digests.items()}


_NAME_OR_KEY = r"(?:\.\s*([A-Za-z_][A-Za-z0-9_]*)|\[\s*['\"]([^'\"]+)['\"]\s*\])"
_METRIC_REF = re.compile(rf"steps\s*{_NAME_OR_KEY}\s*\.\s*metrics\s*{_NAME_OR_KEY}")
"""`steps.train.metrics.acc` or `steps['train'].metrics['acc']` in a condition: groups (step, step, metric, metric)."""


def _evaluate_when(
    expression: str,
    params: Mapping[str, Any],
    states: Mapping[str, StepState],
    run: Mapping[str, Any] | None = None,
) -> bool:
    import cel  # noqa: PLC0415 - only needed for steps with conditions

    context: dict[str, Any] = {
        "params": dict(params),
        "steps": {n: {"phase": s.phase.value, "metrics": dict(s.metrics)} for n, s in states.items()},
    }
    if run is not None:
        context["run"] = dict(run)
    try:
        value = cel.evaluate(expression, context)
    except KeyError:
        for ref in _METRIC_REF.finditer(expression):
            step, metric = ref.group(1) or ref.group(2), ref.group(3) or ref.group(4)
            if step in states and metric not in states[step].metrics:
                known = ", ".join(sorted(states[step].metrics)) or "none"
                raise ValueError(f"step {step!r} has no metric {metric!r} (its metrics: {known})") from None
        raise
    if not isinstance(value, bool):
        raise ValueError(f"condition {expression!r} evaluated to {value!r}, not a boolean")
    return value


@dataclass(frozen=True)
class RunPlanner:
    spec: PipelineSpec
    params: Mapping[str, Any]
    context: RunContext
    parallelism: int | None = None

    def _template(
        self, step: Step, item: Any = None, has_item: bool = False, outcome: DagOutcome | None = None
    ) -> dict[str, Any]:
        """The step's template with params, item and run resolved (an onExit step's run.* includes the steps'
        outcome); inputs/outputs stay for the runtime."""
        run = {"name": self.context.name, "namespace": self.context.namespace, "id": self.context.run_id}
        ctx: dict[str, Any] = {
            "params": dict(self.params),
            "run": {**run, **(outcome.template_values() if outcome is not None else {})},
            "inputs": {i.name: f"{{{{ inputs.{i.name} }}}}" for i in step.inputs},
            "outputs": {o: f"{{{{ outputs.{o} }}}}" for o in self._outputs(step)},
        }
        if has_item:
            ctx["item"] = item
        if step.uses is not None:
            return {"uses": step.uses, "with": render_value(step.with_ or {}, ctx)}
        if step.resource is not None:
            return {"resource": render_value(step.resource.manifest, ctx)}
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

    def _inputs(
        self,
        step: Step,
        states: Mapping[str, StepState],
        external: Mapping[str, str],
        steps: Mapping[str, Step],
    ) -> list[TaskInput]:
        out = []
        for i in step.inputs:
            if i.step is not None:
                assert i.output is not None
                ref = states[i.step].outputs.get(i.output)
                if ref is None:
                    raise ValueError(f"step {i.step!r} succeeded without recording output {i.output!r}")
                upstream = steps[i.step]
                if upstream.for_each is None:
                    out.append(TaskInput(name=i.name, digest=ref.digest))
                    continue
                # fan-in: every item's output, in item order
                items = fan_items(upstream, self.params)
                members = [
                    CollectionItem(item=item, digest=states[unit_key(i.step, k)].outputs[i.output].digest)
                    for k, item in enumerate(items)
                ]
                out.append(TaskInput(name=i.name, digest=ref.digest, collection=True, items=members))
            else:
                assert i.uri is not None
                out.append(TaskInput(name=i.name, uri=i.uri, digest=i.digest or external.get(i.uri)))
        return out

    def plan(
        self,
        states: Mapping[str, StepState],
        now: datetime,
        *,
        cache: CacheLookup,
        external_digests: Mapping[str, str] | None = None,
        cancel: bool = False,
        run_started_at: datetime | None = None,
        approvals: Mapping[str, StepApproval] | None = None,
        cancel_exit: bool = False,
    ) -> Plan:
        """Decide the next actions. `states` holds one entry per step and, for fanned-out steps, one per
        item under `unit_key(step, i)`; the returned Plan.states is the whole new picture.

        The steps are planned first; once their plan is final (`exit_steps_ready`) the onExit steps are. A
        cancel or the Run's timeout ends the steps, not the onExit steps (they are the cleanup); `cancel_exit`
        stops those too (a second Ctrl-C of the local runner)."""
        main_names = {s.name for s in self.spec.steps}
        main = self._plan_steps(
            {k: v for k, v in states.items() if step_of(k) in main_names},
            now,
            cache=cache,
            external=external_digests or {},
            cancel=cancel or cancel_exit,
            run_started_at=run_started_at,
            approvals=approvals or {},
        )
        if not self.spec.on_exit:
            return main
        exit_states = {k: v for k, v in states.items() if step_of(k) not in main_names}
        return self._plan_exit(main, exit_states, now, cache, external_digests or {}, cancel_exit)

    def _plan_steps(
        self,
        states: Mapping[str, StepState],
        now: datetime,
        *,
        cache: CacheLookup,
        external: Mapping[str, str],
        cancel: bool,
        run_started_at: datetime | None,
        approvals: Mapping[str, StepApproval],
    ) -> Plan:
        """The plan of the steps (spec.steps) alone."""
        steps = {s.name: s for s in self.spec.steps}
        dag = Dag.of(self.spec.steps)
        order = dag.order()
        progressed: dict[str, StepState] = dict(states)
        for n in order:
            progressed.setdefault(n, StepState())
        actions: list[Action] = []
        wake: list[datetime] = []
        # A fanned-out step's own entry only summarises its items: it holds no process and takes no slot.
        fanned = {n for n in order if steps[n].for_each is not None}
        running = [k for k, st in progressed.items() if st.phase is StepPhase.RUNNING and k not in fanned]

        timed_out = (
            self.spec.timeout_seconds is not None
            and run_started_at is not None
            and now >= run_started_at + timedelta(seconds=self.spec.timeout_seconds)
        )
        if cancel or timed_out:
            for key in running:
                stop = Stop.RUN_CANCELLED if cancel else Stop.RUN_TIMEOUT
                actions.append(Kill(step_of(key), "run cancelled" if cancel else "run timed out", key, stop))
            for key, st in list(progressed.items()):
                if st.phase not in TERMINAL and key not in running:
                    actions.append(CancelStep(step_of(key), key))
                    progressed[key] = recorded(st, CancelStep(step_of(key), key), now)
            if running:
                return Plan(tuple(actions), RunPhase.RUNNING, states=progressed)
            if cancel:
                return Plan(tuple(actions), RunPhase.CANCELLED, "Cancelled", "the run was cancelled", states=progressed)
            return Plan(
                tuple(actions),
                RunPhase.FAILED,
                "RunTimedOut",
                f"the run exceeded its timeout of {self.spec.timeout_seconds}s",
                states=progressed,
            )
        if run_started_at is not None and self.spec.timeout_seconds is not None:
            wake.append(run_started_at + timedelta(seconds=self.spec.timeout_seconds))

        failed = [n for n in order if progressed[n].phase is StepPhase.FAILED]
        limit = self.parallelism or self.spec.parallelism
        budget = _Budget(slots=(limit - len(running)) if limit else 1 << 30, stop=bool(failed) and self.spec.fail_fast)

        for n in order:
            step, st = steps[n], progressed[n]
            if step.for_each is None:
                self._check_timeout(n, step, st, now, actions, wake)
            if st.phase in TERMINAL or (st.phase is StepPhase.RUNNING and step.for_each is None):
                continue
            if not self._upstream_done(n, step, dag.upstream[n], progressed, actions, now):
                continue
            self._advance(n, step, progressed, steps, actions, wake, budget, cache, external, now, approvals, None)
            if self.spec.fail_fast and progressed[n].phase is StepPhase.FAILED:
                budget.stop = True  # failed in this pass (a fan-out item): decide the rest as the next pass would

        return self._summarize(order, progressed, tuple(actions), wake)

    def _plan_exit(
        self,
        main: Plan,
        states: Mapping[str, StepState],
        now: datetime,
        cache: CacheLookup,
        external: Mapping[str, str],
        cancel_exit: bool,
    ) -> Plan:
        """The onExit steps, after the steps' plan `main`: pending while any step may run, then a DAG of their
        own. Every one runs whatever the steps did (fail-fast does not stop them: each cleanup is independent),
        none is a cache hit (a notification must not be skipped because an identical one was sent before), and
        one that reads an output of a step that did not succeed is skipped, saying which."""
        assert self.spec.on_exit
        exit_steps = {s.name: s for s in self.spec.on_exit}
        dag = Dag.of(self.spec.on_exit)
        order = dag.order()
        progressed: dict[str, StepState] = {**main.states, **states}
        for n in order:
            progressed.setdefault(n, StepState())
        outcome = exit_steps_ready(main, Dag.of(self.spec.steps).order())
        if outcome is None:
            waiting = "waiting for the steps to finish"
            return replace(main, states=progressed, exit_reason=EXIT_WAITING, exit_message=waiting)
        actions: list[Action] = list(main.actions)
        wake: list[datetime] = []
        fanned = {n for n in order if exit_steps[n].for_each is not None}
        running = [
            k
            for k, st in progressed.items()
            if step_of(k) in exit_steps and st.phase is StepPhase.RUNNING and k not in fanned
        ]
        if cancel_exit:
            for key in running:
                actions.append(Kill(step_of(key), "run cancelled", key, Stop.RUN_CANCELLED))
            for key, st in list(progressed.items()):
                if step_of(key) in exit_steps and st.phase not in TERMINAL and key not in running:
                    self._decide(
                        progressed, actions, CancelStep(step_of(key), key if key != step_of(key) else None), now
                    )
        else:
            limit = self.parallelism or self.spec.parallelism
            budget = _Budget(slots=(limit - len(running)) if limit else 1 << 30, stop=False)
            all_steps = {s.name: s for s in self.spec.all_steps()}
            for n in order:
                step, st = exit_steps[n], progressed[n]
                if step.for_each is None:
                    self._check_timeout(n, step, st, now, actions, wake)
                if st.phase in TERMINAL or (st.phase is StepPhase.RUNNING and step.for_each is None):
                    continue
                missing = exit_input_problem(step, progressed, (s.name for s in self.spec.steps))
                if missing is not None:
                    self._decide(progressed, actions, Skip(n, missing), now)
                    continue
                # its upstream onExit steps (every step has finished by now)
                if not self._upstream_done(n, step, dag.upstream[n], progressed, actions, now):
                    continue
                self._advance(n, step, progressed, all_steps, actions, wake, budget, cache, external, now, {}, outcome)
        return self._summarize_exit(main, order, progressed, tuple(actions), wake)

    def _advance(
        self,
        n: str,
        step: Step,
        progressed: dict[str, StepState],
        steps: Mapping[str, Step],
        actions: list[Action],
        wake: list[datetime],
        budget: _Budget,
        cache: CacheLookup,
        external: Mapping[str, str],
        now: datetime,
        approvals: Mapping[str, StepApproval],
        outcome: DagOutcome | None,
    ) -> None:
        """A step whose upstream steps are done: its condition, its approval, then its launch, cache hit or items.
        `outcome` is the steps' outcome when `step` is an onExit step (None for a step)."""
        st = progressed[n]
        if step.when is not None and st.phase is StepPhase.PENDING and not units_of(progressed, n):
            if budget.stop:
                return
            try:
                go = _evaluate_when(
                    step.when,
                    self.params,
                    {k: v for k, v in progressed.items() if k in steps},
                    outcome.when_values() if outcome is not None else None,
                )
            except (ValueError, KeyError, TypeError) as e:
                self._decide(
                    progressed, actions, FailStep(n, f"cannot evaluate when of step {n!r} ({step.when}): {e}"), now
                )
                return
            if not go:
                self._decide(progressed, actions, Skip(n, f"condition is false: {step.when}"), now)
                return
        if step.approval is not None and step.approval.required and st.attempts == 0 and not budget.stop:
            decision = approvals.get(n)
            if decision is None:
                waiting = f"waiting for approval{': ' + step.approval.message if step.approval.message else ''}"
                progressed[n] = replace(st, phase=StepPhase.WAITING, message=waiting, next_attempt_at=None)
                return
            if decision.decision is Decision.REJECT:
                who = f" by {decision.by}" if decision.by else ""
                why = f": {decision.comment}" if decision.comment else ""
                self._decide(progressed, actions, FailStep(n, f"rejected{who}{why}"), now)
                return
            if st.phase is StepPhase.WAITING:
                progressed[n] = st = replace(st, phase=StepPhase.PENDING, message=None)
        try:
            inputs = self._inputs(step, progressed, external, steps)
        except (ValueError, KeyError) as e:
            self._decide(progressed, actions, FailStep(n, str(e)), now)
            return
        reuse = step.cache.enabled and outcome is None
        if step.for_each is None:
            self._plan_unit(
                n, n, step, None, None, inputs, external, progressed, cache, now, actions, wake, budget, outcome, reuse
            )
            return
        try:
            items = fan_items(step, self.params)
        except (ValueError, KeyError, TypeError) as e:
            self._decide(progressed, actions, FailStep(n, f"cannot expand forEach: {e}"), now)
            return
        cap = step.for_each.max_concurrency
        for i, item in enumerate(items):
            key = unit_key(n, i)
            unit = progressed.setdefault(key, StepState())
            self._check_timeout(key, step, unit, now, actions, wake)
            if cap is not None and unit.phase in (StepPhase.PENDING, StepPhase.WAITING):
                in_flight = sum(1 for _, u in units_of(progressed, n) if u.phase is StepPhase.RUNNING)
                if in_flight >= cap:
                    continue
            self._plan_unit(
                key, n, step, i, item, inputs, external, progressed, cache, now, actions, wake, budget, outcome, reuse
            )
        progressed[n] = self._fan_in(n, step, items, progressed, now)

    # ---------------------------------------------------------------- pieces of a pass

    def _upstream_done(
        self,
        n: str,
        step: Step,
        ups: Iterable[str],
        progressed: dict[str, StepState],
        actions: list[Action],
        now: datetime,
    ) -> bool:
        """Whether the steps `n` waits for let it go ahead now. One it reads from was skipped: it is skipped too.
        One failed or was cancelled: it never runs (cancelled when the run, or its onExit steps, finish)."""
        ups = list(ups)
        readers_of = {i.step for i in step.inputs}
        if any(progressed[u].phase is StepPhase.SKIPPED for u in ups if u in readers_of):
            self._decide(progressed, actions, Skip(n, "an upstream step it reads from was skipped"), now)
            return False
        if any(progressed[u].phase in (StepPhase.FAILED, StepPhase.CANCELLED) for u in ups):
            return False
        return all(progressed[u].phase in (StepPhase.SUCCEEDED, StepPhase.SKIPPED) for u in ups)

    @staticmethod
    def _decide(progressed: dict[str, StepState], actions: list[Action], action: Action, now: datetime) -> None:
        actions.append(action)
        progressed[action.key] = recorded(progressed.get(action.key, StepState()), action, now)

    @staticmethod
    def _check_timeout(
        key: str, step: Step, st: StepState, now: datetime, actions: list[Action], wake: list[datetime]
    ) -> None:
        if st.phase is StepPhase.RUNNING and step.timeout_seconds and st.started_at:
            deadline = st.started_at + timedelta(seconds=step.timeout_seconds)
            if now >= deadline:
                actions.append(Kill(step.name, step_timeout_message(step.timeout_seconds), key))
            else:
                wake.append(deadline)

    def _plan_unit(
        self,
        key: str,
        name: str,
        step: Step,
        index: int | None,
        item: Any,
        inputs: list[TaskInput],
        external: Mapping[str, str],
        progressed: dict[str, StepState],
        cache: CacheLookup,
        now: datetime,
        actions: list[Action],
        wake: list[datetime],
        budget: _Budget,
        outcome: DagOutcome | None = None,
        reuse: bool = True,
    ) -> None:
        """One execution unit (a step, or one item of a fanned-out step): cache hit, launch, or wait. `reuse`:
        whether a cache hit may stand in for it; `outcome`: an onExit step's run.* values."""
        st = progressed[key]
        if st.phase in TERMINAL or st.phase is StepPhase.RUNNING:
            return
        if budget.stop and (st.phase is StepPhase.WAITING or key != name):
            # fail-fast: a retry, or an item of a fanned-out step, that will never be allowed to start is
            # cancelled, so the run can end (a pending step is cancelled when the run is summarised; a pending
            # item would keep its step Running)
            self._decide(progressed, actions, CancelStep(name, key if key != name else None), now)
            return
        if st.phase is StepPhase.WAITING and st.next_attempt_at and now < st.next_attempt_at:
            wake.append(st.next_attempt_at)
            return
        if budget.stop:
            return
        try:
            template = self._template(step, item, index is not None, outcome)
        except (ValueError, KeyError) as e:
            self._decide(progressed, actions, FailStep(name, str(e), key), now)
            return
        content = outside_content(step, template, external)
        ck = cache_key(
            template=template,
            input_digests={**{i.name: i.digest or i.uri or "" for i in inputs}, **(content or {})},
            item=item,
            code_version=self.context.code_version,
        )
        hit = cache.get(ck) if reuse and st.attempts == 0 and content is not None else None
        if hit is not None:
            self._decide(progressed, actions, ReuseCached(name, hit, key), now)
            return
        if budget.slots <= 0:
            return
        budget.slots -= 1
        task = TaskSpec(
            run_id=self.context.run_id,
            step=name,
            attempt=st.attempts + 1,
            item_index=index,
            item=item,
            component=step.uses,
            config=template.get("with", {}),
            command=template.get("command", []),
            env=template.get("env", {}),
            resource=template.get("resource"),
            inputs=inputs,
            outputs=self._outputs(step),
            store=self.context.store,
            cache_key=ck,
        )
        actions.append(Launch(name, task, key))
        progressed[key] = started(st, now, ck)

    def _fan_in(
        self, name: str, step: Step, items: list[Any], progressed: Mapping[str, StepState], now: datetime
    ) -> StepState:
        """The fanned-out step's own state, derived from its items: one collection per output."""
        units = [progressed.get(unit_key(name, i), StepState()) for i in range(len(items))]
        parent = progressed[name]
        started_times = [u.started_at for u in units if u.started_at]
        base = replace(parent, started_at=min(started_times) if started_times else parent.started_at)
        if any(u.phase in (StepPhase.RUNNING, StepPhase.WAITING) for u in units):
            return replace(base, phase=StepPhase.RUNNING, created_at=parent.created_at or now)
        failed = [(i, u) for i, u in enumerate(units) if u.phase is StepPhase.FAILED]
        if failed:
            i, u = failed[0]
            return replace(base, phase=StepPhase.FAILED, finished_at=now, message=f"item {i} failed: {u.message}")
        if all(u.phase is StepPhase.SUCCEEDED for u in units):
            outputs = {o: collection_ref(name, o, items, units) for o in self._outputs(step)}
            ends = [u.finished_at for u in units if u.finished_at]
            return replace(
                base,
                phase=StepPhase.SUCCEEDED,
                finished_at=max(ends) if ends else now,
                outputs=outputs,
                cache_hit=bool(units) and all(u.cache_hit for u in units),
                metrics={"items": float(len(units))},
                created_at=parent.created_at or now,
            )
        cancelled = [i for i, u in enumerate(units) if u.phase is StepPhase.CANCELLED]
        if cancelled and all(u.phase in TERMINAL for u in units):
            # every item ended and one was cancelled (fail-fast after another step failed, or a stop): the
            # step is cancelled too; left Running it would hold the Run open forever
            message = f"item {cancelled[0]} was cancelled"
            return replace(base, phase=StepPhase.CANCELLED, finished_at=now, message=message)
        if any(u.phase is not StepPhase.PENDING for u in units):
            return replace(base, phase=StepPhase.RUNNING)
        return parent

    def _summarize(
        self, order: list[str], states: Mapping[str, StepState], actions: tuple[Action, ...], wake: list[datetime]
    ) -> Plan:
        wake_at = min(wake) if wake else None
        phases = [states[n].phase for n in order]
        active = any(p in (StepPhase.RUNNING, StepPhase.WAITING) for p in phases)
        failed = [n for n in order if states[n].phase is StepPhase.FAILED]
        if active:
            awaiting = [n for n in order if states[n].phase is StepPhase.WAITING and states[n].next_attempt_at is None]
            if awaiting and not any(s.phase is StepPhase.RUNNING for s in states.values()):
                return Plan(
                    actions,
                    RunPhase.RUNNING,
                    "WaitingForApproval",
                    f"step {awaiting[0]!r} {states[awaiting[0]].message}",
                    wake_at=wake_at,
                    states=states,
                )
            return Plan(actions, RunPhase.RUNNING, wake_at=wake_at, states=states)
        if failed:
            # Nothing running: whatever has not started never will (fail-fast, or blocked upstream).
            leftovers = tuple(CancelStep(n) for n in order if states[n].phase is StepPhase.PENDING)
            final = dict(states)
            for c in leftovers:
                final[c.key] = replace(final[c.key], phase=StepPhase.CANCELLED)
            first = failed[0]
            message = f"step {first!r} failed"
            if states[first].message:
                message += f": {states[first].message}"
            return Plan(actions + leftovers, RunPhase.FAILED, "StepFailed", message, states=final)
        if all(p in TERMINAL for p in phases):
            return Plan(
                actions, RunPhase.SUCCEEDED, "AllStepsSucceeded", "every step succeeded or was skipped", states=states
            )
        return Plan(actions, RunPhase.RUNNING, wake_at=wake_at, states=states)

    def _summarize_exit(
        self,
        main: Plan,
        order: list[str],
        states: Mapping[str, StepState],
        actions: tuple[Action, ...],
        wake: list[datetime],
    ) -> Plan:
        """The Run while and after its onExit steps run: Running until every one is terminal, then the steps'
        phase, reason and message (an onExit failure is added to the message and has its own condition, but
        turns neither a Failed Run into a Succeeded one nor a Succeeded one into a Failed one)."""
        if any(s.phase in (StepPhase.RUNNING, StepPhase.WAITING) for k, s in states.items() if step_of(k) in order):
            message = f"{main.message}; running the onExit steps" if main.message else "running the onExit steps"
            return Plan(
                actions,
                RunPhase.RUNNING,
                "RunningExitSteps",
                message,
                wake_at=min(wake) if wake else None,
                states=states,
                exit_reason=EXIT_RUNNING,
                exit_message=f"the steps ended {main.phase.value}: running the onExit steps",
            )
        # Nothing running: an onExit step still pending waits for one that failed or was cancelled; it never runs.
        leftovers = tuple(CancelStep(n) for n in order if states[n].phase is StepPhase.PENDING)
        final = dict(states)
        for c in leftovers:
            final[c.key] = replace(
                final[c.key], phase=StepPhase.CANCELLED, message="an onExit step it waits for did not succeed"
            )
        failed = [n for n in order if final[n].phase is StepPhase.FAILED]
        cancelled = [n for n in order if final[n].phase is StepPhase.CANCELLED]
        if failed:
            first = failed[0]
            exit_reason = EXIT_FAILED
            exit_message = f"onExit step {first!r} failed" + (
                f": {final[first].message}" if final[first].message else ""
            )
            message = f"{main.message}; {exit_message}" if main.message else exit_message
        elif cancelled:
            exit_reason, exit_message, message = EXIT_CANCELLED, "the onExit steps were cancelled", main.message
        else:
            exit_reason, exit_message, message = (
                EXIT_SUCCEEDED,
                "every onExit step succeeded or was skipped",
                main.message,
            )
        return Plan(
            actions + leftovers,
            main.phase,
            main.reason,
            message,
            states=final,
            exit_reason=exit_reason,
            exit_message=exit_message,
        )
