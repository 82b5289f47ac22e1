"""Fuzzing the run planner: every valid generated pipeline plans, executes in a simulated world where
attempts succeed, fail, time out or get cancelled at random, and converges, never launching a step early.

The simulation plays the operator's shell: it keeps each plan's `states`, carries out Launches (an
attempt finishes after 0-2 passes, successfully or not, as hypothesis draws) and Kills (the attempt
stops and core's `killed()` decides what becomes of it, as on both shells), and moves the clock to the
next wake-up.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conveyor.api.pipeline import PipelineSpec, Step
from conveyor.api.run import ArtifactRef, RunPhase, StepPhase
from conveyor.core.dag import Dag
from conveyor.core.planner import (
    TERMINAL,
    CacheEntry,
    Kill,
    Launch,
    Plan,
    RunContext,
    RunPlanner,
    StepState,
    fan_items,
    finished,
    killed,
    step_of,
)
from conveyor.core.task import StoreConfig, TaskResult
from conveyor.core.validation import InvalidSpec, parse_document, resolve_parameters
from fuzz.figures import FIGURES
from fuzz.strategies import valid_pipelines

FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def planner_of(doc: dict[str, Any]) -> RunPlanner | None:
    try:
        pipeline = parse_document(doc)
    except InvalidSpec:
        FIGURES["generated pipelines the validator refused (not planned)"] += 1
        return None
    spec = pipeline.spec
    assert isinstance(spec, PipelineSpec)
    params, issues = resolve_parameters(spec, {})
    assert not issues, issues  # every parameter of a generated valid pipeline has a default of its type
    if spec.on_exit:
        FIGURES["of them with onExit steps"] += 1
    context = RunContext("run-1", "r", "ns", "fuzz", StoreConfig(kind="local", root="/store"))
    return RunPlanner(spec, params, context)


def known_keys(p: RunPlanner) -> set[str]:
    """Every state key a plan may name: the steps, and `step[i]` for each item of a fan-out."""
    keys = set()
    for step in p.spec.all_steps():
        keys.add(step.name)
        if step.for_each is not None:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                keys |= {f"{step.name}[{i}]" for i in range(len(fan_items(step, p.params)))}
    return keys


def check_launches_respect_upstream(p: RunPlanner, plan: Plan) -> None:
    """A launched step's upstream steps have all succeeded, or been skipped when it only depends on them
    without reading their outputs."""
    main = {s.name for s in p.spec.steps}
    dag = Dag({**Dag.of(p.spec.steps).upstream, **Dag.of(p.spec.on_exit or []).upstream})
    steps = {s.name: s for s in p.spec.all_steps()}
    for action in plan.actions:
        if not isinstance(action, Launch):
            continue
        readers = {i.step for i in steps[action.step].inputs}
        if action.step not in main:  # an onExit step: only once every step is over, reading only what succeeded
            assert all(plan.states[m].phase in TERMINAL for m in main), f"{action.key} launched before the steps ended"
            for up in readers & main:
                assert plan.states[up].phase is StepPhase.SUCCEEDED, f"{action.key} launched reading {up}"
        for up in dag.upstream[action.step]:
            phase = plan.states[up].phase
            allowed = {StepPhase.SUCCEEDED} if up in readers else {StepPhase.SUCCEEDED, StepPhase.SKIPPED}
            assert phase in allowed, f"{action.key} launched while its upstream {up} is {phase}"


def check_idempotent(p: RunPlanner, plan: Plan, now: datetime, cancel: bool) -> None:
    """Planning again from the plan's own states, with nothing new observed, decides nothing new.
    A Kill repeats (it is level-triggered until the shell reports the attempt ended), so it is exempt."""
    again = p.plan(plan.states, now, cache={}, cancel=cancel)
    assert [a for a in again.actions if not isinstance(a, Kill)] == [], again.actions
    assert dict(again.states) == dict(plan.states)


@st.composite
def executions(draw: st.DrawFn) -> tuple[RunPlanner | None, st.DataObject]:
    return draw(valid_pipelines().map(planner_of)), draw(st.data())


def simulate(p: RunPlanner, data: st.DataObject) -> tuple[Plan, bool, bool]:
    """Run the plan to its end: (last plan, whether the run was cancelled, whether it hit the fail-fast stall)."""
    steps: dict[str, Step] = {s.name: s for s in p.spec.all_steps()}
    keys = known_keys(p)
    max_attempts = sum((steps[step_of(k)].retries.limit + 1) for k in keys)
    bound = 4 * max_attempts + 2 * len(keys) + 10
    states: dict[str, StepState] = {}
    cache: dict[str, CacheEntry] = {}
    running: dict[str, tuple[int, bool]] = {}  # key → (passes left, succeeds)
    now = NOW
    cancel = False
    for _ in range(bound):
        plan = p.plan(states, now, cache=cache, cancel=cancel)
        FIGURES["planning passes simulated"] += 1
        for action in plan.actions:
            assert action.key in keys, f"{action} names no known step or item"
        check_launches_respect_upstream(p, plan)
        check_idempotent(p, plan, now, cancel)
        if plan.done:
            assert not running, f"the run finished with attempts still running: {running}"
            return plan, cancel, False
        states = dict(plan.states)
        for action in plan.actions:
            if isinstance(action, Launch):
                FIGURES["attempts launched"] += 1
                running[action.key] = (data.draw(st.integers(0, 2)), data.draw(st.integers(0, 3)) > 0)
            elif isinstance(action, Kill):
                # Both shells stop the attempt (controller/runs.py deletes its Job, the local runner signals
                # it), then core decides its outcome with killed(): the one rule, not a copy of it here.
                FIGURES["kills carried out"] += 1
                running.pop(action.key, None)
                states[action.key] = killed(states[action.key], steps[action.step], action, now)
                if states[action.key].phase is StepPhase.WAITING:
                    FIGURES["killed attempts retried (step timeout)"] += 1
        for key, (left, ok) in list(running.items()):
            if left > 0:
                running[key] = (left - 1, ok)
                continue
            del running[key]
            step = steps[step_of(key)]
            if ok:
                outs = [
                    ArtifactRef(name=o, uri="u", digest="sha256:" + f"{hash(key) & 0xFFFF:064x}")
                    for o in sorted(p._outputs(step))
                ]
                result = TaskResult(ok=True, outputs=outs)
                launched_key = states[key].cache_key
                assert launched_key is not None
                cache[launched_key] = CacheEntry(launched_key, tuple(outs), {})
            else:
                FIGURES["attempts failed"] += 1
                result = TaskResult(ok=False, message="exit 1")
            states[key] = finished(states[key], step, result, now)
        if not cancel and data.draw(st.integers(0, 40)) == 0:
            cancel = True
            FIGURES["runs cancelled mid-way"] += 1
        # the clock: a step's worth of time while attempts run (now and then long enough for a step timeout),
        # else straight to the next wake-up
        later = now + timedelta(seconds=data.draw(st.sampled_from([30, 30, 30, 3600])))
        now = max(later, plan.wake_at) if not running and plan.wake_at else later
    raise AssertionError(f"no final phase after {bound} passes")


@settings(FUZZ, max_examples=500)
@given(executions())
def test_valid_pipelines_converge_and_never_launch_early(execution: tuple[RunPlanner | None, st.DataObject]) -> None:
    p, data = execution
    FIGURES["valid-leaning pipelines generated"] += 1
    if p is None:
        return
    FIGURES["pipelines planned and executed"] += 1
    first = p.plan({}, NOW, cache={})
    assert {a.key for a in first.actions} <= known_keys(p)
    plan, cancelled, stalled = simulate(p, data)
    if stalled:
        return
    FIGURES[f"runs ending {plan.phase.value}"] += 1
    final = plan.states
    for step in p.spec.steps:
        assert final[step.name].phase in TERMINAL, (step.name, final[step.name])
    if plan.phase is RunPhase.SUCCEEDED:
        assert all(final[s.name].phase in (StepPhase.SUCCEEDED, StepPhase.SKIPPED) for s in p.spec.steps)
    # a finished run stays finished: nothing to do, however late we look again
    again = p.plan(final, NOW + timedelta(days=30), cache={}, cancel=cancelled)
    assert again.actions == () and again.phase is plan.phase


def test_the_simulation_counts_a_retry() -> None:
    """The harness itself: a step that fails once with a retry left succeeds on its second attempt."""
    doc = {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": "p"},
        "spec": {"steps": [{"name": "a", "container": {"image": "i", "command": ["x"]}, "retries": {"limit": 1}}]},
    }
    p = planner_of(doc)
    assert p is not None
    plan = p.plan({}, NOW, cache={})
    (launch,) = plan.actions
    assert isinstance(launch, Launch)
    failed = finished(plan.states["a"], p.spec.steps[0], TaskResult(ok=False), NOW)
    assert failed.phase is StepPhase.WAITING
    retry = p.plan({"a": failed}, failed.next_attempt_at or NOW, cache={})
    assert [type(a).__name__ for a in retry.actions] == ["Launch"]
    done = finished(retry.states["a"], p.spec.steps[0], TaskResult(ok=True), NOW)
    assert p.plan({"a": replace(done)}, NOW, cache={}).phase is RunPhase.SUCCEEDED


def test_a_step_timeout_in_the_simulation_is_retried_under_the_steps_policy() -> None:
    """The harness's Kill follows core: a step past its timeoutSeconds with a retry left runs again, and
    fails for good once its retries are spent (as on both shells)."""
    doc = {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": "p"},
        "spec": {
            "steps": [
                {
                    "name": "a",
                    "container": {"image": "i", "command": ["x"]},
                    "timeoutSeconds": 60,
                    "retries": {"limit": 1},
                }
            ]
        },
    }
    p = planner_of(doc)
    assert p is not None
    step = p.spec.steps[0]
    states = dict(p.plan({}, NOW, cache={}).states)
    late = NOW + timedelta(seconds=61)
    (kill,) = p.plan(states, late, cache={}).actions
    assert isinstance(kill, Kill)
    first = killed(states["a"], step, kill, late)
    assert first.phase is StepPhase.WAITING and first.next_attempt_at is not None
    retry = p.plan({"a": first}, first.next_attempt_at, cache={})
    assert [type(a).__name__ for a in retry.actions] == ["Launch"]
    states = dict(retry.states)
    assert states["a"].attempts == 2
    later = first.next_attempt_at + timedelta(seconds=61)
    (kill,) = p.plan(states, later, cache={}).actions
    assert isinstance(kill, Kill)
    assert killed(states["a"], step, kill, later).phase is StepPhase.FAILED


def _two_independent_steps(**spec: Any) -> RunPlanner:
    doc = {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": "p"},
        "spec": {
            "steps": [
                {"name": "a", "container": {"image": "i", "command": ["a"]}},
                {"name": "b", "container": {"image": "i", "command": ["b"]}, "retries": {"limit": 1}},
            ],
            **spec,
        },
    }
    p = planner_of(doc)
    assert p is not None
    return p


def test_fail_fast_with_a_step_in_backoff_finishes_the_run() -> None:
    p = _two_independent_steps()
    first = p.plan({}, NOW, cache={})
    assert [a.key for a in first.actions] == ["a", "b"]
    states = dict(first.states)
    states["a"] = finished(states["a"], p.spec.steps[0], TaskResult(ok=False, message="exit 1"), NOW)
    states["b"] = finished(states["b"], p.spec.steps[1], TaskResult(ok=False, message="exit 1"), NOW)
    later = NOW + timedelta(hours=1)  # far past b's backoff
    plan = p.plan(states, later, cache={})
    assert plan.phase is RunPhase.FAILED, (plan.phase, {k: v.phase for k, v in plan.states.items()}, plan.wake_at)


def test_a_fan_out_under_a_parallelism_limit_finishes() -> None:
    doc = {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": "p"},
        "spec": {
            "parallelism": 1,
            "steps": [{"name": "fan", "container": {"image": "i", "command": ["f"]}, "forEach": {"items": [1, 2]}}],
        },
    }
    p = planner_of(doc)
    assert p is not None
    states: dict[str, StepState] = {}
    for _ in range(6):  # every launched item succeeds at once
        plan = p.plan(states, NOW, cache={})
        states = dict(plan.states)
        for action in plan.actions:
            if isinstance(action, Launch):
                states[action.key] = finished(states[action.key], p.spec.steps[0], TaskResult(ok=True), NOW)
        if plan.done:
            break
    assert plan.phase is RunPhase.SUCCEEDED, {k: v.phase.value for k, v in plan.states.items()}


def test_cancel_between_fan_out_attempts_finishes_with_the_local_runners_kill() -> None:
    doc = {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": "p"},
        "spec": {
            "steps": [
                {
                    "name": "fan",
                    "container": {"image": "i", "command": ["f", "{{ item }}"]},
                    "forEach": {"items": [1]},
                    "retries": {"limit": 1},
                }
            ]
        },
    }
    p = planner_of(doc)
    assert p is not None
    states = dict(p.plan({}, NOW, cache={}).states)
    states["fan[0]"] = finished(states["fan[0]"], p.spec.steps[0], TaskResult(ok=False), NOW)  # now in backoff
    for _ in range(5):  # the local runner: a Kill of a key with no live attempt changes nothing
        plan = p.plan(states, NOW, cache={}, cancel=True)
        states = dict(plan.states)
        if plan.done:
            break
    assert plan.phase is RunPhase.CANCELLED, [(type(a).__name__, a.key) for a in plan.actions]
